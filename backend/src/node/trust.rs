//! Whom this node believes: the pinned key of each Roundtable peer, checked
//! at every handshake and against the directory's answer, and the peer
//! table's trust marks that the dashboard shows.
//!
//! The rules (issue 13):
//! - A handshake must prove the pinned key; with no pin yet, the key the
//!   directory publishes for the peer, if any; with neither, any key, which
//!   is then pinned (trust on first use, shown as such).
//! - A different key (presented in a handshake, or listed by the
//!   directory) is recorded as *offered* and the peer is refused, its
//!   messages held, until the user accepts that very key
//!   ([`Trust::accept`]: the dashboard, or `roundtable node trust`).
//! - A peer with a pin or a published key is a Roundtable node: a plain
//!   connection claiming its name is not believed (see `chat.rs`), and we
//!   never send it anything in clear (a downgrade is refused).

use roundtable_shared::api::{PeerInfo, PeerPath, PeerTrust};
use roundtable_shared::secure::PublicKey;

use super::peers::Peers;
use crate::store::chat::now_ms;
use crate::store::pins::{AcceptError, Check, PinRecord, PinStore};
use crate::store::StoreError;

/// The trust decisions of one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trust {
    pins: PinStore,
    peers: Peers,
}

/// What a proven key means for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pinned (or newly pinned) key: go on.
    Trusted,
    /// Not the pinned key: refuse; the user has been told.
    Changed { pinned: PublicKey },
}

fn show(p: &mut PeerInfo, pin: &PinRecord) {
    p.pinned_fingerprint = Some(pin.key.fingerprint().to_string());
    p.pinned_by = Some(pin.source);
    p.offered_fingerprint = pin.offered.map(|k| k.fingerprint().to_string());
    p.trust = if pin.offered.is_some() {
        PeerTrust::KeyChanged
    } else {
        PeerTrust::Verified
    };
}

impl Trust {
    /// Loads the pins into the peer table's marks.
    pub fn load(pins: PinStore, peers: Peers) -> Result<Trust, StoreError> {
        for pin in pins.list()? {
            peers.ensure(&pin.name);
            peers.update(&pin.name, |p| show(p, &pin));
        }
        Ok(Trust { pins, peers })
    }

    /// The key a handshake with `peer` must prove (`None`: any, pinned on
    /// first use).
    pub fn expected(&self, peer: &str) -> Result<Option<PublicKey>, StoreError> {
        Ok(match self.pins.get(peer)? {
            Some(pin) => Some(pin.key),
            None => self.peers.directory_key(peer),
        })
    }

    /// Whether `peer` is known to be a Roundtable node (pinned, or a key
    /// published at the directory): then only its secure channel speaks
    /// for it.
    pub fn is_secure_peer(&self, peer: &str) -> bool {
        self.peers.directory_key(peer).is_some() || matches!(self.pins.get(peer), Ok(Some(_)))
    }

    /// Records the key `peer` proved in a handshake over `path` that we
    /// opened to its listed address or through the relay (so the key is
    /// what `peer`'s account presents: a different one is offered to the
    /// user).
    pub fn proven(
        &self,
        peer: &str,
        key: &PublicKey,
        path: PeerPath,
    ) -> Result<Verdict, StoreError> {
        self.verdict(peer, key, Some(path), true)
    }

    /// Like [`Trust::proven`] for a handshake someone opened to our chat
    /// port naming `peer`: anyone can, so a different key is refused but
    /// not offered (else a stranger could put a key up for acceptance in
    /// `peer`'s name).
    /// The path shown stays how *we* last reached the peer.
    pub fn claimed(&self, peer: &str, key: &PublicKey) -> Result<Verdict, StoreError> {
        self.verdict(peer, key, None, false)
    }

    fn verdict(
        &self,
        peer: &str,
        key: &PublicKey,
        path: Option<PeerPath>,
        offer: bool,
    ) -> Result<Verdict, StoreError> {
        let verdict = match self.pins.check(peer, key, now_ms(), offer)? {
            Check::Pinned => {
                tracing::info!(%peer, fingerprint = %key.fingerprint(), "peer key pinned on first contact");
                Verdict::Trusted
            }
            Check::Matches => Verdict::Trusted,
            Check::Changed { pinned } => {
                tracing::warn!(%peer, pinned = %pinned.fingerprint(), presented = %key.fingerprint(), "peer presented another key: refused until accepted");
                Verdict::Changed { pinned }
            }
        };
        let path = path.filter(|_| verdict == Verdict::Trusted);
        self.refresh(peer, path)?;
        Ok(verdict)
    }

    /// Records that a handshake we opened refused `peer`'s key `found`
    /// (the channel checked it against [`Trust::expected`] before we saw
    /// it).
    /// With no pin (the directory's key was expected and not proven),
    /// nothing is offered; the channel's error is logged by the caller.
    pub fn refused(&self, peer: &str, found: &PublicKey) -> Result<(), StoreError> {
        self.offer(peer, found)
    }

    /// Checks the directory's key for `peer` against our pin: a different
    /// one is a key change to show (and to accept or not).
    pub fn directory_says(&self, peer: &str, key: &PublicKey) -> Result<(), StoreError> {
        self.offer(peer, key)
    }

    /// Records `key` as offered for `peer` if another key is pinned for it.
    fn offer(&self, peer: &str, key: &PublicKey) -> Result<(), StoreError> {
        if self.pins.get(peer)?.is_some_and(|p| p.key != *key) {
            self.pins.check(peer, key, now_ms(), true)?;
            self.refresh(peer, None)?;
        }
        Ok(())
    }

    /// A classic peer answered at `peer`'s address: shown as unverified
    /// unless it is a Roundtable node (then it is a downgrade, refused by
    /// the caller, and the mark stays).
    pub fn classic(&self, peer: &str, path: PeerPath) {
        if !self.is_secure_peer(peer) {
            self.peers.update(peer, |p| {
                p.trust = PeerTrust::Unverified;
                p.path = Some(path);
            });
        }
    }

    /// The user accepts the key `peer` now offers, if it is the one with
    /// `fingerprint` (`None`: whatever is offered).
    pub fn accept(&self, peer: &str, fingerprint: Option<&str>) -> Result<PinRecord, AcceptError> {
        let pin = self.pins.accept(peer, fingerprint, now_ms())?;
        tracing::warn!(%peer, fingerprint = %pin.key.fingerprint(), "new peer key accepted by the user");
        self.refresh(peer, None)?;
        Ok(pin)
    }

    /// Re-reads `peer`'s pin into the peer table (`path`: how we just
    /// reached it).
    fn refresh(&self, peer: &str, path: Option<PeerPath>) -> Result<(), StoreError> {
        let pin = self.pins.get(peer)?;
        self.peers.update(peer, |p| {
            if let Some(pin) = &pin {
                show(p, pin);
            }
            if path.is_some() {
                p.path = path;
            }
        });
        Ok(())
    }

    /// Notes how we last reached `peer`.
    pub fn reached(&self, peer: &str, path: PeerPath) {
        self.peers.update(peer, |p| p.path = Some(path));
    }

    /// Re-reads every pin (another process, `roundtable node trust`, may
    /// have accepted a key).
    pub fn reload(&self) -> Result<(), StoreError> {
        for pin in self.pins.list()? {
            self.peers.update(&pin.name, |p| show(p, &pin));
        }
        Ok(())
    }
}
