//! The node's one event stream: services publish, `/ws` forwards.

use roundtable_shared::api::Event;
use tokio::sync::broadcast;

/// A cheap-to-clone handle on the node's event bus. Publishing never
/// blocks: a subscriber that falls more than `capacity` events behind
/// misses them (and is told so by `RecvError::Lagged`).
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Events {
    pub fn new(capacity: usize) -> Self {
        Events(broadcast::channel(capacity).0)
    }

    /// Sends `e` to every current subscriber (none is fine).
    pub fn publish(&self, e: Event) {
        let _ = self.0.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new(1024)
    }
}
