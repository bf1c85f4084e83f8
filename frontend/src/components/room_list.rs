//! The rooms (group conversations) beside the peers: the list and the
//! "New room" form.

use std::rc::Rc;

use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::route::Route;
use crate::state::RoomRow;

#[derive(Properties, PartialEq)]
pub struct RoomListProps {
    /// Already sorted (most recent activity first).
    pub rows: Rc<Vec<RoomRow>>,
}

/// "3 members", "1 member".
pub fn members_words(n: usize) -> String {
    if n == 1 {
        "1 member".into()
    } else {
        format!("{n} members")
    }
}

/// The rooms, each a link to its page, with its member count and unread
/// badge. The list is there even when empty (and says so beside it).
#[component(RoomList)]
pub fn room_list(props: &RoomListProps) -> Html {
    html! {
        <>
            <ul class="rooms" id="room-list" aria-label="Rooms">
                { for props.rows.iter().map(|r| html! {
                    <li key={r.id.clone()} class={classes!("room-item", (!r.joined).then_some("left"))}
                        data-id={r.id.clone()}>
                        <Link<Route> to={Route::Room { id: r.id.clone() }} classes="room-link">
                            <span class="room-mark" aria-hidden="true">{ "#" }</span>
                            <span class="room-name">{ &r.name }</span>
                            <span class="room-count">{ members_words(r.members) }</span>
                            if r.training.is_some() {
                                <span class="room-kind">{ "training" }</span>
                            }
                            if !r.joined {
                                <span class="room-kind left">{ "you left" }</span>
                            }
                            if r.unread > 0 {
                                <span class="badge unread" aria-label={format!("{} unread", r.unread)}>
                                    { r.unread }
                                </span>
                            }
                        </Link<Route>>
                    </li>
                }) }
            </ul>
            if props.rows.is_empty() {
                <p class="empty" id="no-rooms">{ "No rooms yet: create one below, or start a training." }</p>
            }
        </>
    }
}

#[derive(Properties, PartialEq)]
pub struct NewRoomFormProps {
    /// The name and the members as typed (comma-separated).
    pub on_create: Callback<(String, String)>,
    /// The request is out.
    #[prop_or_default]
    pub busy: bool,
    /// Why the last attempt failed (the node's sentence).
    #[prop_or_default]
    pub error: Option<AttrValue>,
    /// Peers to name in the members field's example (never this node's
    /// own user, who is in every room they create).
    #[prop_or_default]
    pub examples: Vec<AttrValue>,
}

/// The members field's example: up to two of `examples`.
pub fn members_placeholder(examples: &[AttrValue]) -> String {
    match examples {
        [] => "Members: user names, comma-separated".into(),
        [a] => format!("Members: {a}"),
        [a, b, ..] => format!("Members: {a}, {b}"),
    }
}

/// "New room": a name and the members (comma-separated user names).
#[component(NewRoomForm)]
pub fn new_room_form(props: &NewRoomFormProps) -> Html {
    let name = use_node_ref();
    let members = use_node_ref();
    let onsubmit = {
        let (name, members) = (name.clone(), members.clone());
        let on_create = props.on_create.clone();
        let busy = props.busy;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let value = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let n = value(&name);
            if busy || n.trim().is_empty() {
                return;
            }
            on_create.emit((n.trim().to_owned(), value(&members)));
        })
    };
    html! {
        <form class="new-room" id="new-room" {onsubmit}>
            <label>
                <span class="visually-hidden">{ "Room name" }</span>
                <input id="new-room-name" type="text" ref={name} placeholder="Room name"
                       maxlength={roundtable_shared::room::MAX_NAME.to_string()} required=true />
            </label>
            <label class="grow">
                <span class="visually-hidden">{ "Members (comma-separated user names)" }</span>
                <input id="new-room-members" type="text" ref={members}
                       placeholder={members_placeholder(&props.examples)} />
            </label>
            <button type="submit" id="new-room-create" disabled={props.busy}>
                { if props.busy { "Creating…" } else { "New room" } }
            </button>
            if let Some(e) = &props.error {
                <p class="error" id="new-room-error" role="alert">{ e }</p>
            }
        </form>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_names_at_most_two_peers() {
        let names = |n: &[&str]| {
            n.iter()
                .map(|s| AttrValue::from(s.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            members_placeholder(&[]),
            "Members: user names, comma-separated"
        );
        assert_eq!(members_placeholder(&names(&["bob"])), "Members: bob");
        assert_eq!(
            members_placeholder(&names(&["alice", "carol", "dave"])),
            "Members: alice, carol"
        );
    }
}
