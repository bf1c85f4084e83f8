//! Desktop notifications (issue 16): opt-in, for messages received in a
//! conversation the user is not looking at. The decision is pure
//! ([`notification_for`]); showing one and asking for permission use the
//! browser's Notification API.

use roundtable_shared::api::{ChatMessage, Direction, Event};

/// Where the choice is kept: it is this browser's (its permission is too).
const KEY: &str = "roundtable.notifications";

/// What to show for `ev`, if anything: a received message, when the user
/// is not looking at its conversation (`looking_at`: the peer of the
/// conversation on screen while the page is visible).
pub fn notification_for(ev: &Event, looking_at: Option<&str>) -> Option<(String, String)> {
    let Event::Message { message } = ev else {
        return None;
    };
    let ChatMessage {
        direction,
        peer,
        text,
        verified,
        ..
    } = message;
    if *direction != Direction::In || looking_at == Some(peer.as_str()) {
        return None;
    }
    let title = if *verified {
        peer.clone()
    } else {
        format!("{peer} (unverified sender)")
    };
    let body: String = text.chars().take(140).collect();
    Some((title, body))
}

/// The peer whose conversation is on screen, if the page is visible.
pub fn looking_at() -> Option<String> {
    let window = web_sys::window()?;
    let doc = window.document()?;
    if doc.hidden() {
        return None;
    }
    let path = window.location().pathname().ok()?;
    let peer = path.strip_prefix("/chat/")?;
    js_sys::decode_uri_component(peer).ok()?.as_string()
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

/// Shows what [`notification_for`] decided, if notifications are on.
pub fn show(ev: &Event) {
    if !enabled() {
        return;
    }
    if let Some((title, body)) = notification_for(ev, looking_at().as_deref()) {
        let opts = web_sys::NotificationOptions::new();
        opts.set_body(&body);
        opts.set_tag(&title);
        let _ = web_sys::Notification::new_with_options(&title, &opts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::api::MessageState;

    fn received(peer: &str, dir: Direction, verified: bool) -> Event {
        Event::Message {
            message: ChatMessage {
                seq: 1,
                id: "a".into(),
                peer: peer.into(),
                direction: dir,
                text: "x".repeat(300),
                state: MessageState::Delivered,
                at: 0,
                verified,
            },
        }
    }

    #[test]
    fn only_received_messages_of_other_conversations_notify() {
        let (title, body) = notification_for(&received("bob", Direction::In, true), None).unwrap();
        assert_eq!(title, "bob");
        assert_eq!(body.chars().count(), 140);
        assert!(notification_for(&received("bob", Direction::In, true), Some("bob")).is_none());
        assert!(notification_for(&received("bob", Direction::In, true), Some("carol")).is_some());
        assert!(notification_for(&received("bob", Direction::Out, true), None).is_none());
        let (title, _) = notification_for(&received("bob", Direction::In, false), None).unwrap();
        assert_eq!(title, "bob (unverified sender)");
        assert!(notification_for(&Event::PeerGone { name: "bob".into() }, None).is_none());
    }
}
