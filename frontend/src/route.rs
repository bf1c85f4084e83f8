//! The dashboard's URLs. Its own module so that pages and components can
//! link to each other without importing the root component.

use yew_router::prelude::*;

/// The dashboard's pages; each can be reloaded or linked.
#[derive(Debug, Clone, PartialEq, Routable)]
pub enum Route {
    #[at("/")]
    Peers,
    #[at("/chat/:peer")]
    Chat { peer: String },
    /// The rooms are listed on the peers page: `/rooms` (typed, or a
    /// link's last step cut off) goes there.
    #[at("/rooms")]
    Rooms,
    /// A room (group conversation), by id.
    #[at("/rooms/:id")]
    Room { id: String },
    #[at("/trainings")]
    Trainings,
    #[at("/trainings/:uuid")]
    Training { uuid: String },
    /// Every file sent and received.
    #[at("/files")]
    Files,
    /// Full-text search over every conversation (`?q=words`).
    #[at("/search")]
    Search,
    #[not_found]
    #[at("/404")]
    NotFound,
}

/// A conversation's query string when it opens at one message (a search
/// hit): `/chat/bob?at=SEQ`, `/rooms/ID?at=SEQ`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct At {
    /// The message's `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_addresses_find_their_page() {
        assert_eq!(Route::recognize("/rooms"), Some(Route::Rooms));
        assert_eq!(
            Route::recognize("/rooms/r1"),
            Some(Route::Room { id: "r1".into() })
        );
        assert_eq!(Route::recognize("/nope"), Some(Route::NotFound));
    }
}
