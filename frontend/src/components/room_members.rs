//! A room's members, "Add member" and "Leave room".

use std::rc::Rc;

use roundtable_shared::api::RoomSummary;
use web_sys::HtmlInputElement;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct RoomMembersProps {
    pub room: Rc<RoomSummary>,
    /// This node's user (marked "you" in the list).
    #[prop_or_default]
    pub me: Option<AttrValue>,
    /// Adds the user name typed (trimmed, never empty).
    #[prop_or_default]
    pub on_add: Callback<String>,
    #[prop_or_default]
    pub on_leave: Callback<()>,
    /// A request (add, leave) is out.
    #[prop_or_default]
    pub busy: bool,
    /// Why the last one failed (the node's sentence).
    #[prop_or_default]
    pub error: Option<AttrValue>,
    /// Bumped by each member added: the name typed is then cleared (it
    /// stays, to be corrected, when the node refused it).
    #[prop_or_default]
    pub added: u64,
}

/// Who is in the room now (one `li.member` each), who left, and, while we
/// are in it, the means to add someone or to leave; once we left, it
/// says so.
#[component(RoomMembers)]
pub fn room_members(props: &RoomMembersProps) -> Html {
    let input = use_node_ref();
    {
        let input = input.clone();
        use_effect_with(props.added, move |_| {
            if let Some(el) = input.cast::<HtmlInputElement>() {
                el.set_value("");
            }
        });
    }
    let onsubmit = {
        let input = input.clone();
        let on_add = props.on_add.clone();
        let busy = props.busy;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(el) = input.cast::<HtmlInputElement>() else {
                return;
            };
            let name = el.value().trim().to_owned();
            if busy || name.is_empty() {
                return;
            }
            on_add.emit(name);
        })
    };
    let on_leave = {
        let on_leave = props.on_leave.clone();
        Callback::from(move |_: MouseEvent| on_leave.emit(()))
    };
    let r = &props.room;
    let me = props.me.as_deref();
    let present: Vec<&str> = r
        .members
        .iter()
        .filter(|m| m.present)
        .map(|m| m.name.as_str())
        .collect();
    let left: Vec<&str> = r
        .members
        .iter()
        .filter(|m| !m.present && Some(m.name.as_str()) != me)
        .map(|m| m.name.as_str())
        .collect();
    html! {
        <div class="room-people">
            <ul class="room-members" id="room-members" aria-label="Members">
                { for present.iter().map(|n| html! {
                    <li key={n.to_string()} class={classes!("member", (Some(*n) == me).then_some("me"))}
                        data-name={n.to_string()}>
                        { n.to_string() }
                        if Some(*n) == me {
                            <span class="you">{ " (you)" }</span>
                        }
                    </li>
                }) }
            </ul>
            if !left.is_empty() {
                <p class="room-gone" id="room-gone">{ format!("Left: {}", left.join(", ")) }</p>
            }
            if r.joined {
                <form class="add-member" {onsubmit}>
                    <label>
                        <span class="visually-hidden">{ "User name to add" }</span>
                        <input id="add-member-name" type="text" ref={input} placeholder="Add member: name" />
                    </label>
                    <button type="submit" id="add-member-button" disabled={props.busy}>{ "Add" }</button>
                    <button type="button" id="leave-room" class="secondary" disabled={props.busy}
                            onclick={on_leave}>
                        { "Leave room" }
                    </button>
                </form>
            } else {
                <p class="room-left-notice" id="room-left-notice" role="status">
                    { "You left this room: you keep its history, and can no longer post in it." }
                </p>
            }
            if let Some(e) = &props.error {
                <p class="error" id="room-error" role="alert">{ e }</p>
            }
        </div>
    }
}
