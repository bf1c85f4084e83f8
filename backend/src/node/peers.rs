//! Who the node knows, and whether the directory lists them right now.
//!
//! A peer the directory stops listing goes offline at once. If it stays
//! unlisted for [`FORGET_AFTER`] and we have exchanged no message with it
//! in this run ([`Peers::ensure`] is called on every send and receive), it
//! is forgotten ([`Event::PeerGone`]), so that `/api/peers` does not keep
//! everyone who was ever registered (the audit's 270 bogus registrations).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use roundtable_shared::api::{Event, PeerInfo, PeerTrust};
use roundtable_shared::directory::Entry;
use roundtable_shared::secure::PublicKey;
use tokio::sync::Notify;

use crate::events::Events;
use crate::store::chat::now_ms;

/// How long a peer may stay unlisted before it is forgotten (a restart,
/// or a liveness check missed under load, is much shorter).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Table {
    peers: BTreeMap<String, PeerInfo>,
    /// Peers we have a chat with: kept (offline) when the directory drops them.
    chatted: HashSet<String>,
    /// The identity keys the directory gave for peers.
    keys: HashMap<String, PublicKey>,
    /// Peers the last full `QUERY` listed (online with an address).
    listed: HashSet<String>,
    /// Peers the relay said it reaches (online through the relay).
    relayed: HashSet<String>,
}

/// A peer we know nothing about yet: offline, no address, no key.
fn unknown(name: &str) -> PeerInfo {
    PeerInfo::unknown(name)
}

/// The peer table, fed by the directory client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peers {
    me: Arc<str>,
    /// [`FORGET_AFTER`], in ms.
    forget_after_ms: i64,
    table: Arc<RwLock<Table>>,
    events: Events,
    /// Signalled whenever some peer's presence or address changes.
    changed: Arc<Notify>,
    /// Signalled when someone wants the directory asked again right away.
    refresh: Arc<Notify>,
}

impl Peers {
    pub fn new(me: &str, events: Events) -> Self {
        Peers {
            me: me.into(),
            forget_after_ms: FORGET_AFTER.as_millis() as i64,
            table: Arc::default(),
            events,
            changed: Arc::default(),
            refresh: Arc::default(),
        }
    }

    /// Forgets unlisted peers after `d` instead of [`FORGET_AFTER`].
    pub fn with_forget_after(mut self, d: Duration) -> Self {
        self.forget_after_ms = d.as_millis().min(i64::MAX as u128) as i64;
        self
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
    /// address; everyone else known goes offline, and is forgotten once
    /// unlisted long enough if we have no chat with them.
    pub fn apply_directory(&self, listed: &[Entry]) {
        self.apply(listed, |_| true);
    }

    /// Applies the answers to single-user `QUERY`s for `asked`: only those
    /// names are affected (the directory said nothing about the others).
    pub fn apply_queried(&self, listed: &[Entry], asked: &HashSet<String>) {
        self.apply(listed, |n| asked.contains(n));
    }

    fn apply(&self, listed: &[Entry], in_scope: impl Fn(&str) -> bool) {
        let now = now_ms();
        let mut changes = Vec::new();
        let mut gone = Vec::new();
        {
            let mut t = self.write();
            let mut seen = HashSet::new();
            for Entry {
                name,
                address,
                port,
            } in listed
            {
                if **name == *self.me || !in_scope(name) {
                    continue;
                }
                seen.insert(name.as_str());
                let e = t.peers.entry(name.clone()).or_insert_with(|| unknown(name));
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
            for name in &seen {
                t.listed.insert((*name).to_owned());
            }
            let Table {
                peers,
                chatted,
                listed,
                relayed,
                ..
            } = &mut *t;
            let forget_before = now.saturating_sub(self.forget_after_ms);
            peers.retain(|name, e| {
                if seen.contains(name.as_str()) || !in_scope(name) {
                    return true;
                }
                listed.remove(name);
                if relayed.contains(name) {
                    // Online through the relay only.
                    return true;
                }
                if !chatted.contains(name) && e.last_seen.is_none_or(|t| t <= forget_before) {
                    gone.push(name.clone());
                    return false;
                }
                if e.online {
                    e.online = false;
                    changes.push(e.clone());
                }
                true
            });
        }
        if !changes.is_empty() || !gone.is_empty() {
            self.changed.notify_waiters();
        }
        for peer in changes {
            self.events.publish(Event::Peer { peer });
        }
        for name in gone {
            tracing::debug!(peer = %name, "peer left the directory, forgotten");
            self.events.publish(Event::PeerGone { name });
        }
    }

    /// Every peer name known, for asking the directory one at a time.
    pub fn names(&self) -> Vec<String> {
        self.read().peers.keys().cloned().collect()
    }

    /// Online peers whose identity key to ask the directory for: none
    /// known yet, or what we know may be stale (a key change is shown, or
    /// our pin differs from the directory's key we last heard).
    pub fn keys_wanted(&self) -> Vec<String> {
        self.read()
            .peers
            .values()
            .filter(|p| {
                p.online
                    && (p.fingerprint.is_none()
                        || p.trust == PeerTrust::KeyChanged
                        || p.pinned_fingerprint
                            .as_ref()
                            .is_some_and(|pin| Some(pin) != p.fingerprint.as_ref()))
            })
            .map(|p| p.name.clone())
            .collect()
    }

    /// Records the identity keys the directory gave for peers (as their
    /// fingerprints) and publishes the peers that changed.
    pub fn set_keys(&self, keys: &HashMap<String, PublicKey>) {
        let mut changed = Vec::new();
        {
            let mut t = self.write();
            for (name, key) in keys {
                t.keys.insert(name.clone(), *key);
                if let Some(p) = t.peers.get_mut(name) {
                    let fp = Some(key.fingerprint().to_string());
                    if p.fingerprint != fp {
                        p.fingerprint = fp;
                        changed.push(p.clone());
                    }
                }
            }
        }
        for peer in changed {
            self.events.publish(Event::Peer { peer });
        }
    }

    /// Applies a `RELAYRESULT`: who the directory's relay reaches now.
    /// Such a peer is online even with no listed address (`--chat none`).
    pub fn set_relay(&self, names: &[String]) {
        let now = now_ms();
        let mut changes = Vec::new();
        {
            let mut t = self.write();
            let names: HashSet<String> =
                names.iter().filter(|n| **n != *self.me).cloned().collect();
            for name in &names {
                if !t.peers.contains_key(name) {
                    t.peers.insert(name.clone(), unknown(name));
                }
            }
            let Table {
                peers,
                listed,
                relayed,
                ..
            } = &mut *t;
            for (name, p) in peers.iter_mut() {
                let relay = names.contains(name);
                let online = relay || listed.contains(name);
                if relay {
                    p.last_seen = Some(now);
                }
                if p.relay != relay || p.online != online {
                    p.relay = relay;
                    p.online = online;
                    changes.push(p.clone());
                }
            }
            *relayed = names;
        }
        if !changes.is_empty() {
            self.changed.notify_waiters();
        }
        for peer in changes {
            self.events.publish(Event::Peer { peer });
        }
    }

    /// Whether the last full `QUERY` listed `name` with an address.
    pub fn listed(&self, name: &str) -> bool {
        self.read().listed.contains(name)
    }

    /// The identity key the directory gave for `name`, if any.
    pub fn directory_key(&self, name: &str) -> Option<PublicKey> {
        self.read().keys.get(name).copied()
    }

    /// Changes what we know of `name` (making it known if it is not) and
    /// publishes it if anything changed.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut PeerInfo)) {
        if name == &*self.me {
            return;
        }
        let changed = {
            let mut t = self.write();
            let p = t
                .peers
                .entry(name.to_owned())
                .or_insert_with(|| unknown(name));
            let before = p.clone();
            f(p);
            (*p != before).then(|| p.clone())
        };
        if let Some(peer) = changed {
            self.changed.notify_waiters();
            self.events.publish(Event::Peer { peer });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `name` known (offline) if it is not, e.g. when someone we have
    /// never seen in the directory writes to us; either way, marks it as a
    /// peer we chat with, kept when the directory stops listing it.
    pub fn ensure(&self, name: &str) {
        if name == &*self.me {
            return;
        }
        let added = {
            let mut t = self.write();
            if !t.chatted.contains(name) {
                t.chatted.insert(name.to_owned());
            }
            if t.peers.contains_key(name) {
                None
            } else {
                let p = unknown(name);
                t.peers.insert(name.to_owned(), p.clone());
                Some(p)
            }
        };
        if let Some(peer) = added {
            self.events.publish(Event::Peer { peer });
        }
    }

    pub fn get(&self, name: &str) -> Option<PeerInfo> {
        self.read().peers.get(name).cloned()
    }

    /// Everyone, by name.
    pub fn list(&self) -> Vec<PeerInfo> {
        self.read().peers.values().cloned().collect()
    }

    /// Completes at the next presence change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, address: &str, port: u16) -> Entry {
        Entry {
            name: name.into(),
            address: address.into(),
            port,
        }
    }

    #[tokio::test]
    async fn presence_follows_the_directory_and_is_published() {
        let events = Events::default();
        let mut rx = events.subscribe();
        let peers = Peers::new("me", events);
        peers.apply_directory(&[entry("me", "h", 1), entry("bob", "127.0.0.1", 5000)]);
        peers.ensure("bob");
        assert!(peers.get("me").is_none());
        assert!(peers.get("bob").unwrap().online);
        match rx.try_recv().unwrap() {
            Event::Peer { peer } => assert!(peer.online && peer.name == "bob"),
            e => panic!("{e:?}"),
        }
        // Unchanged: nothing published.
        peers.apply_directory(&[entry("bob", "127.0.0.1", 5000)]);
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

    #[tokio::test]
    async fn peers_that_leave_are_forgotten_unless_we_chat_with_them() {
        // At first they only go offline.
        let peers = Peers::new("me", Events::default());
        peers.apply_directory(&[entry("bob", "127.0.0.1", 5000)]);
        peers.apply_directory(&[]);
        assert!(!peers.get("bob").unwrap().online);

        let events = Events::default();
        let peers = Peers::new("me", events.clone()).with_forget_after(Duration::ZERO);
        peers.apply_directory(&[
            entry("bob", "127.0.0.1", 5000),
            entry("carol", "127.0.0.1", 5001),
            entry("dave", "127.0.0.1", 5002),
        ]);
        peers.ensure("carol");
        let mut rx = events.subscribe();
        peers.apply_directory(&[entry("dave", "127.0.0.1", 5002)]);
        let names: Vec<_> = peers
            .list()
            .into_iter()
            .map(|p| (p.name, p.online))
            .collect();
        assert_eq!(
            names,
            [("carol".to_string(), false), ("dave".to_string(), true)]
        );
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        assert!(
            got.contains(&Event::PeerGone { name: "bob".into() }),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|e| matches!(e, Event::Peer { peer } if peer.name == "carol" && !peer.online)),
            "{got:?}"
        );
        // Single-user answers only concern the names asked.
        let asked: HashSet<String> = ["carol".to_string()].into();
        peers.apply_queried(&[], &asked);
        assert!(peers.get("dave").unwrap().online);
        assert!(!peers.get("carol").unwrap().online);
    }
}
