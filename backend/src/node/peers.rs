//! Who the node knows, and whether the directory lists them right now.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use roundtable_shared::api::{Event, PeerInfo};
use tokio::sync::Notify;

use crate::events::Events;
use crate::store::chat::now_ms;

/// The peer table, fed by the directory client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peers {
    me: Arc<str>,
    table: Arc<RwLock<BTreeMap<String, PeerInfo>>>,
    events: Events,
    /// Signalled whenever some peer's presence or address changes.
    changed: Arc<Notify>,
    /// Signalled when someone wants the directory asked again right away.
    refresh: Arc<Notify>,
}

/// Parses a RESULT payload: `name,address,port` lines.
pub fn parse_result(payload: &[u8]) -> Vec<(String, String, u16)> {
    String::from_utf8_lossy(payload)
        .lines()
        .filter_map(|l| {
            let mut it = l.rsplitn(3, ',');
            let port = it.next()?.trim().parse().ok()?;
            let address = it.next()?.to_owned();
            let name = it.next()?.to_owned();
            Some((name, address, port))
        })
        .collect()
}

impl Peers {
    pub fn new(me: &str, events: Events) -> Self {
        Peers {
            me: me.into(),
            table: Arc::default(),
            events,
            changed: Arc::default(),
            refresh: Arc::default(),
        }
    }

    /// Asks the directory client for a QUERY now rather than at its next tick
    /// (e.g. a message is waiting for a peer we believe offline).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Completes when a refresh was requested.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    /// Applies a full `QUERY` answer: listed peers are online at their
    /// address, everyone else known is offline.
    pub fn apply_directory(&self, listed: &[(String, String, u16)]) {
        let now = now_ms();
        let mut changes = Vec::new();
        {
            let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
            let mut seen = std::collections::HashSet::new();
            for (name, address, port) in listed {
                if **name == *self.me {
                    continue;
                }
                seen.insert(name.as_str());
                let e = t.entry(name.clone()).or_insert_with(|| PeerInfo {
                    name: name.clone(),
                    address: None,
                    port: None,
                    online: false,
                    last_seen: None,
                });
                let moved = e.address.as_deref() != Some(address) || e.port != Some(*port);
                let was_online = e.online;
                e.address = Some(address.clone());
                e.port = Some(*port);
                e.online = true;
                e.last_seen = Some(now);
                if moved || !was_online {
                    changes.push(e.clone());
                }
            }
            for e in t.values_mut() {
                if e.online && !seen.contains(e.name.as_str()) {
                    e.online = false;
                    changes.push(e.clone());
                }
            }
        }
        if !changes.is_empty() {
            self.changed.notify_waiters();
        }
        for peer in changes {
            self.events.publish(Event::Peer { peer });
        }
    }

    /// Makes `name` known (offline) if it is not, e.g. when someone we have
    /// never seen in the directory writes to us.
    pub fn ensure(&self, name: &str) {
        if name == &*self.me {
            return;
        }
        let added = {
            let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
            if t.contains_key(name) {
                None
            } else {
                let p = PeerInfo {
                    name: name.to_owned(),
                    address: None,
                    port: None,
                    online: false,
                    last_seen: None,
                };
                t.insert(name.to_owned(), p.clone());
                Some(p)
            }
        };
        if let Some(peer) = added {
            self.events.publish(Event::Peer { peer });
        }
    }

    pub fn get(&self, name: &str) -> Option<PeerInfo> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Everyone, by name.
    pub fn list(&self) -> Vec<PeerInfo> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Completes at the next presence change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_results() {
        assert_eq!(
            parse_result(b"alice,127.0.0.1,5555\nbob,::1,6000\nbroken\n"),
            [
                ("alice".to_string(), "127.0.0.1".to_string(), 5555),
                ("bob".to_string(), "::1".to_string(), 6000)
            ]
        );
        assert!(parse_result(b"").is_empty());
    }

    #[tokio::test]
    async fn presence_follows_the_directory_and_is_published() {
        let events = Events::default();
        let mut rx = events.subscribe();
        let peers = Peers::new("me", events);
        peers.apply_directory(&[
            ("me".into(), "h".into(), 1),
            ("bob".into(), "127.0.0.1".into(), 5000),
        ]);
        assert!(peers.get("me").is_none());
        assert!(peers.get("bob").unwrap().online);
        match rx.try_recv().unwrap() {
            Event::Peer { peer } => assert!(peer.online && peer.name == "bob"),
            e => panic!("{e:?}"),
        }
        // Unchanged: nothing published.
        peers.apply_directory(&[("bob".into(), "127.0.0.1".into(), 5000)]);
        assert!(rx.try_recv().is_err());
        peers.apply_directory(&[]);
        let bob = peers.get("bob").unwrap();
        assert!(!bob.online);
        assert!(bob.last_seen.is_some());
        match rx.try_recv().unwrap() {
            Event::Peer { peer } => assert!(!peer.online),
            e => panic!("{e:?}"),
        }
    }
}
