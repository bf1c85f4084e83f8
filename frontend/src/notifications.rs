//! Desktop notifications (issue 16): opt-in, for messages and files
//! received in a conversation the user is not looking at. The decision is pure
//! ([`notification_for`]); showing one and asking for permission use the
//! browser's Notification API.

use std::collections::BTreeMap;
use std::rc::Rc;

use roundtable_shared::api::{
    ChatMessage, Direction, Event, RoomSummary, TransferInfo, TransferState,
};

use crate::state::State;

/// Where the choice is kept: it is this browser's (its permission is too).
const KEY: &str = "roundtable.notifications";

/// The conversation on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looking {
    /// A direct conversation with this peer (`/chat/{peer}`).
    Chat(String),
    /// A room, by id (`/rooms/{id}`).
    Room(String),
}

impl Looking {
    /// What a page at `path` (`location.pathname`, still percent-encoded)
    /// shows, if it is a conversation.
    pub fn from_path(path: &str) -> Option<Looking> {
        let (make, rest): (fn(String) -> Looking, &str) =
            if let Some(peer) = path.strip_prefix("/chat/") {
                (Looking::Chat, peer)
            } else if let Some(room) = path.strip_prefix("/rooms/") {
                (Looking::Room, room)
            } else {
                return None;
            };
        let rest = rest.trim_end_matches('/');
        (!rest.is_empty() && !rest.contains('/')).then(|| make(decode(rest)))
    }
}

/// Percent-decodes a path segment (names and ids are ASCII; anything that
/// does not decode is kept as it is).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// What [`notification_for`] needs to know besides the event.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// This node's user (room messages notify only when they mention it).
    pub me: Option<&'a str>,
    /// The conversation on screen while the page is visible.
    pub looking_at: Option<&'a Looking>,
    /// The rooms known, by id (for their names).
    pub rooms: &'a BTreeMap<String, Rc<RoomSummary>>,
}

/// Whether `text` mentions the user `name` as a word, case-insensitively:
/// `@alice`, `alice,` or `Alice.` do; `alicebob` or `bob-alice` do not
/// (user names are made of letters, digits, `_`, `.` and `-`).
pub fn mentions(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let in_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    text.split(|c: char| !in_name(c)).any(|word| {
        // A sentence's full stop is not part of the name.
        word.eq_ignore_ascii_case(name) || word.trim_matches('.').eq_ignore_ascii_case(name)
    })
}

/// What to show for `ev`, if anything: a title and a body.
///
/// - A direct message received, when the user is not looking at its
///   conversation.
/// - A room post by someone else that mentions the user by name, when
///   the user is not looking at that room. Never our own posts, nor the
///   room's lines about itself ("alice added carol").
pub fn notification_for(ev: &Event, cx: &Context<'_>) -> Option<(String, String)> {
    let message = match ev {
        Event::Message { message } => message,
        Event::Transfer { transfer } => return file_notification(transfer, cx),
        _ => return None,
    };
    let ChatMessage {
        direction,
        peer,
        text,
        verified,
        room,
        event,
        ..
    } = message;
    if *direction != Direction::In || *event {
        return None;
    }
    let sender = if *verified {
        peer.clone()
    } else {
        format!("{peer} (unverified sender)")
    };
    let title = match room {
        None => {
            if cx.looking_at == Some(&Looking::Chat(peer.clone())) {
                return None;
            }
            sender
        }
        Some(room) => {
            let me = cx.me?;
            if peer == me
                || cx.looking_at == Some(&Looking::Room(room.clone()))
                || !mentions(text, me)
            {
                return None;
            }
            match cx.rooms.get(room) {
                Some(r) => format!("{sender} in {}", r.name),
                None => format!("{sender} in a room"),
            }
        }
    };
    let body: String = text.chars().take(140).collect();
    Some((title, body))
}

/// A file received whole and verified (the node says so once), unless
/// its conversation is on screen: in a room, every member's file
/// notifies, as files are rarer than posts and each one is for everyone.
fn file_notification(t: &TransferInfo, cx: &Context<'_>) -> Option<(String, String)> {
    if t.direction != Direction::In || t.state != TransferState::Delivered {
        return None;
    }
    let what = format!("{} ({})", t.name, crate::view::size(t.size));
    if t.bare {
        return Some((
            format!("A file from {} (NVFlare)", t.peer),
            format!("{what}, CRC-32 checked"),
        ));
    }
    match &t.room {
        None => {
            if cx.looking_at == Some(&Looking::Chat(t.peer.clone())) {
                return None;
            }
            Some((t.peer.clone(), format!("sent you {what}, SHA-256 verified")))
        }
        Some(room) => {
            if cx.looking_at == Some(&Looking::Room(room.clone())) {
                return None;
            }
            let title = match cx.rooms.get(room) {
                Some(r) => format!("{} in {}", t.peer, r.name),
                None => format!("{} in a room", t.peer),
            };
            Some((title, format!("shared {what}, SHA-256 verified")))
        }
    }
}

/// The conversation on screen, if the page is visible.
pub fn looking_at() -> Option<Looking> {
    let window = web_sys::window()?;
    let doc = window.document()?;
    if doc.hidden() {
        return None;
    }
    Looking::from_path(&window.location().pathname().ok()?)
}

/// Whether the user turned notifications on in this browser (and it
/// still allows them).
pub fn enabled() -> bool {
    let chosen = web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|s| s.get_item(KEY).ok().flatten())
        .is_some_and(|v| v == "on");
    chosen && web_sys::Notification::permission() == web_sys::NotificationPermission::Granted
}

/// Turns them on (asking the browser first) or off; answers whether they
/// are on afterwards.
pub async fn set(on: bool) -> bool {
    let store = web_sys::window().and_then(|w| w.local_storage().ok().flatten());
    if !on {
        if let Some(s) = &store {
            let _ = s.set_item(KEY, "off");
        }
        return false;
    }
    if web_sys::Notification::permission() != web_sys::NotificationPermission::Granted {
        let Ok(promise) = web_sys::Notification::request_permission() else {
            return false;
        };
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    let granted = web_sys::Notification::permission() == web_sys::NotificationPermission::Granted;
    if let Some(s) = &store {
        let _ = s.set_item(KEY, if granted { "on" } else { "off" });
    }
    granted
}

/// Shows what [`notification_for`] decided, if notifications are on
/// (`state`: the dashboard's, for our name and the rooms' names).
pub fn show(ev: &Event, state: &State) {
    if !enabled() {
        return;
    }
    let looking = looking_at();
    let cx = Context {
        me: state.me.as_ref().map(|m| m.name.as_str()),
        looking_at: looking.as_ref(),
        rooms: &state.rooms,
    };
    if let Some((title, body)) = notification_for(ev, &cx) {
        let opts = web_sys::NotificationOptions::new();
        opts.set_body(&body);
        opts.set_tag(&title);
        let _ = web_sys::Notification::new_with_options(&title, &opts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::api::{MessageState, RoomMember};

    const ROOM: &str = "0123456789abcdef0123456789abcdef";

    fn message(peer: &str, dir: Direction, text: &str) -> ChatMessage {
        ChatMessage {
            seq: 1,
            id: "a".into(),
            peer: peer.into(),
            direction: dir,
            text: text.into(),
            state: MessageState::Delivered,
            at: 0,
            verified: true,
            room: None,
            event: false,
        }
    }

    fn received(peer: &str, dir: Direction, verified: bool) -> Event {
        Event::Message {
            message: ChatMessage {
                verified,
                ..message(peer, dir, &"x".repeat(300))
            },
        }
    }

    fn in_room(peer: &str, text: &str) -> Event {
        let dir = if peer == "alice" {
            Direction::Out
        } else {
            Direction::In
        };
        Event::Message {
            message: ChatMessage {
                room: Some(ROOM.into()),
                ..message(peer, dir, text)
            },
        }
    }

    fn rooms() -> BTreeMap<String, Rc<RoomSummary>> {
        let r = RoomSummary {
            id: ROOM.into(),
            name: "Hospital B".into(),
            training: None,
            members: vec![RoomMember {
                name: "alice".into(),
                present: true,
            }],
            joined: true,
            last: None,
            count: 0,
            last_read: 0,
            unread: 0,
            created_at: 0,
        };
        BTreeMap::from([(ROOM.to_owned(), Rc::new(r))])
    }

    fn cx<'a>(
        looking_at: Option<&'a Looking>,
        rooms: &'a BTreeMap<String, Rc<RoomSummary>>,
    ) -> Context<'a> {
        Context {
            me: Some("alice"),
            looking_at,
            rooms,
        }
    }

    fn file(state: TransferState, direction: Direction, room: Option<&str>) -> Event {
        Event::Transfer {
            transfer: TransferInfo {
                seq: 3,
                id: "0".repeat(32),
                peer: "bob".into(),
                direction,
                name: "model.pt".into(),
                size: 3 << 20,
                sha256: "ab".repeat(32),
                state,
                bytes: 3 << 20,
                rate: None,
                error: None,
                created_at: 0,
                updated_at: 0,
                bare: false,
                downloadable: true,
                room: room.map(str::to_owned),
            },
        }
    }

    #[test]
    fn a_received_file_notifies_once_it_is_whole_unless_its_conversation_is_on_screen() {
        let rooms = rooms();
        let (title, body) = notification_for(
            &file(TransferState::Delivered, Direction::In, None),
            &cx(None, &rooms),
        )
        .unwrap();
        assert_eq!(title, "bob");
        assert_eq!(body, "sent you model.pt (3.0 MiB), SHA-256 verified");
        let bob = Looking::Chat("bob".into());
        let here = Looking::Room(ROOM.into());
        let ev = file(TransferState::Delivered, Direction::In, None);
        assert!(notification_for(&ev, &cx(Some(&bob), &rooms)).is_none());
        assert!(notification_for(&ev, &cx(Some(&here), &rooms)).is_some());
        // Still moving, or ours: nothing.
        for (state, dir) in [
            (TransferState::Sending, Direction::In),
            (TransferState::Failed, Direction::In),
            (TransferState::Delivered, Direction::Out),
        ] {
            assert!(notification_for(&file(state, dir, None), &cx(None, &rooms)).is_none());
        }
        // In a room: named after it, hidden while it is on screen.
        let ev = file(TransferState::Delivered, Direction::In, Some(ROOM));
        let (title, body) = notification_for(&ev, &cx(Some(&bob), &rooms)).unwrap();
        assert_eq!(title, "bob in Hospital B");
        assert!(body.starts_with("shared model.pt"), "{body}");
        assert!(notification_for(&ev, &cx(Some(&here), &rooms)).is_none());
    }

    #[test]
    fn only_received_messages_of_other_conversations_notify() {
        let none = BTreeMap::new();
        let bob = Looking::Chat("bob".into());
        let carol = Looking::Chat("carol".into());
        let (title, body) =
            notification_for(&received("bob", Direction::In, true), &cx(None, &none)).unwrap();
        assert_eq!(title, "bob");
        assert_eq!(body.chars().count(), 140);
        let ev = received("bob", Direction::In, true);
        assert!(notification_for(&ev, &cx(Some(&bob), &none)).is_none());
        assert!(notification_for(&ev, &cx(Some(&carol), &none)).is_some());
        // Looking at a room does not hide a direct message.
        let room = Looking::Room("bob".into());
        assert!(notification_for(&ev, &cx(Some(&room), &none)).is_some());
        let out = received("bob", Direction::Out, true);
        assert!(notification_for(&out, &cx(None, &none)).is_none());
        let unverified = received("bob", Direction::In, false);
        let (title, _) = notification_for(&unverified, &cx(None, &none)).unwrap();
        assert_eq!(title, "bob (unverified sender)");
        let gone = Event::PeerGone { name: "bob".into() };
        assert!(notification_for(&gone, &cx(None, &none)).is_none());
    }

    #[test]
    fn a_room_post_notifies_only_when_it_mentions_us() {
        let rooms = rooms();
        let cx = cx(None, &rooms);
        let (title, body) =
            notification_for(&in_room("bob", "@alice can you check round 3?"), &cx).unwrap();
        assert_eq!(title, "bob in Hospital B");
        assert_eq!(body, "@alice can you check round 3?");
        assert!(notification_for(&in_room("bob", "ALICE, look"), &cx).is_some());
        assert!(notification_for(&in_room("bob", "thanks alice."), &cx).is_some());
        // Not a mention: nobody named, or a longer name.
        assert!(notification_for(&in_room("bob", "round 3 is done"), &cx).is_none());
        assert!(notification_for(&in_room("bob", "ask alicebob"), &cx).is_none());
        assert!(notification_for(&in_room("bob", "ask bob-alice"), &cx).is_none());
        assert!(notification_for(&in_room("bob", "see alice.b"), &cx).is_none());
        // Never our own post, even naming ourselves.
        assert!(notification_for(&in_room("alice", "alice here"), &cx).is_none());
        let mut ours = in_room("alice", "alice here");
        if let Event::Message { message } = &mut ours {
            message.direction = Direction::In;
        }
        assert!(notification_for(&ours, &cx).is_none(), "from our name");
        // Never the room's lines about itself.
        let mut added = in_room("bob", "bob added alice");
        if let Event::Message { message } = &mut added {
            message.event = true;
        }
        assert!(notification_for(&added, &cx).is_none());
        // Not while looking at that room; yes while looking at another.
        let here = Looking::Room(ROOM.into());
        let there = Looking::Room("ffffffffffffffffffffffffffffffff".into());
        let chat = Looking::Chat("bob".into());
        let ev = in_room("bob", "hi @alice");
        assert!(notification_for(
            &ev,
            &Context {
                looking_at: Some(&here),
                ..cx
            }
        )
        .is_none());
        assert!(notification_for(
            &ev,
            &Context {
                looking_at: Some(&there),
                ..cx
            }
        )
        .is_some());
        assert!(notification_for(
            &ev,
            &Context {
                looking_at: Some(&chat),
                ..cx
            }
        )
        .is_some());
        // Without our name (not loaded yet), nothing can mention us.
        assert!(notification_for(&ev, &Context { me: None, ..cx }).is_none());
        // A room not known yet still says it is a room.
        let none = BTreeMap::new();
        let (title, _) = notification_for(&ev, &Context { rooms: &none, ..cx }).unwrap();
        assert_eq!(title, "bob in a room");
    }

    #[test]
    fn mentions_are_whole_names() {
        assert!(mentions("@alice", "alice"));
        assert!(mentions("hey Alice!", "alice"));
        assert!(mentions("(alice)", "alice"));
        assert!(mentions("alice", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("alice_2", "alice"));
        assert!(mentions("ping alice_2.", "alice_2"));
        assert!(mentions("ping dr.who", "dr.who"));
        assert!(!mentions("anything", ""));
    }

    #[test]
    fn the_conversation_on_screen_is_read_from_the_path() {
        assert_eq!(
            Looking::from_path("/chat/bob"),
            Some(Looking::Chat("bob".into()))
        );
        assert_eq!(
            Looking::from_path(&format!("/rooms/{ROOM}")),
            Some(Looking::Room(ROOM.into()))
        );
        assert_eq!(
            Looking::from_path("/chat/a%20b"),
            Some(Looking::Chat("a b".into()))
        );
        assert_eq!(Looking::from_path("/rooms/"), None);
        assert_eq!(Looking::from_path("/trainings/x"), None);
        assert_eq!(Looking::from_path("/"), None);
    }
}
