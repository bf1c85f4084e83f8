//! Presentational components: they render their props and hold no
//! request logic, so tests can render them with any state.

mod composer;
mod header;
mod message_list;
mod peer_list;
mod timeline;

pub use composer::{Composer, ComposerProps};
pub use header::{Header, HeaderProps};
pub use message_list::{MessageList, MessageListProps};
pub use peer_list::{PeerList, PeerListProps};
pub use timeline::{Timeline, TimelineProps};

/// Minutes to add to UTC for the browser's local time.
pub fn local_offset_min() -> i64 {
    if cfg!(target_arch = "wasm32") {
        -(js_sys::Date::new_0().get_timezone_offset() as i64)
    } else {
        0
    }
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    if cfg!(target_arch = "wasm32") {
        js_sys::Date::now() as i64
    } else {
        0
    }
}
