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
