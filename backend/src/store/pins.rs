//! The node's pinned peer keys (issue 13): which identity key this node
//! expects from each Roundtable peer, and the key a peer presented instead
//! when it did not match.
//!
//! A key is pinned at the first authenticated contact (trust on first use;
//! the directory's published key, when it has one, must match it) and
//! replaced only by the user accepting the key that was offered (dashboard
//! or `roundtable node trust`). Until then the peer is refused.
//!
//! Its own small database (`pins.db`): pins change a few times in a node's
//! life, so every write is `synchronous = FULL` (no explicit WAL sync as in
//! `store::chat`), and the table is read from disk on every handshake
//! rather than cached, so that `roundtable node trust`, run in another
//! process while the node runs, takes effect at the next connection.

use std::path::Path;
use std::sync::{Arc, Mutex};

use roundtable_shared::api::PinSource;
use roundtable_shared::secure::PublicKey;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Context, StoreError};

const MIGRATIONS: &[&str] = &["
    CREATE TABLE pins (
        name        TEXT PRIMARY KEY NOT NULL,
        public_key  BLOB NOT NULL CHECK (length(public_key) = 32),
        source      TEXT NOT NULL CHECK (source IN ('first_use', 'accepted')),
        pinned_at   INTEGER NOT NULL,
        -- A different key seen for this peer since it was pinned, waiting
        -- for the user to accept it (NULL: none).
        offered     BLOB CHECK (offered IS NULL OR length(offered) = 32),
        offered_at  INTEGER
    ) STRICT;
"];

/// One peer's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRecord {
    pub name: String,
    pub key: PublicKey,
    pub source: PinSource,
    /// Unix ms.
    pub pinned_at: i64,
    /// A different key the peer (or the directory) presented since.
    pub offered: Option<PublicKey>,
}

/// What [`PinStore::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No pin existed: this key is pinned now (first use).
    Pinned,
    /// This is the pinned key.
    Matches,
    /// Another key is pinned; this one is recorded as offered.
    Changed { pinned: PublicKey },
}

/// Why [`PinStore::accept`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{0} has no new key to accept")]
    NothingOffered(String),
    #[error("{name} now offers the key with fingerprint {offered}, not {asked}")]
    Different {
        name: String,
        offered: String,
        asked: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to `pins.db`; cheap to clone.
#[derive(Clone)]
pub struct PinStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for PinStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinStore")
    }
}

fn source_text(s: PinSource) -> &'static str {
    match s {
        PinSource::FirstUse => "first_use",
        PinSource::Accepted => "accepted",
    }
}

fn key(blob: Vec<u8>) -> PublicKey {
    // The CHECK constraints keep every stored key 32 bytes long.
    PublicKey(blob.try_into().unwrap_or([0; 32]))
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<PinRecord> {
    let source: String = r.get(2)?;
    Ok(PinRecord {
        name: r.get(0)?,
        key: key(r.get(1)?),
        source: if source == "accepted" {
            PinSource::Accepted
        } else {
            PinSource::FirstUse
        },
        pinned_at: r.get(3)?,
        offered: r.get::<_, Option<Vec<u8>>>(4)?.map(key),
    })
}

const COLUMNS: &str = "name, public_key, source, pinned_at, offered";

impl PinStore {
    /// Opens (creating if needed) the pin database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = super::open(path, MIGRATIONS)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx("making pin writes durable")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .ctx("setting the busy timeout")?;
        Ok(PinStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    /// The pin for `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<PinRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM pins WHERE name = ?1"),
                [name],
                record,
            )
            .optional()
            .ctx("reading a pin")
        })
    }

    /// Every pin, by name.
    pub fn list(&self) -> Result<Vec<PinRecord>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!("SELECT {COLUMNS} FROM pins ORDER BY name"))
                .ctx("listing pins")?;
            let rows = st.query_map([], record).ctx("listing pins")?;
            rows.collect::<Result<Vec<_>, _>>().ctx("listing pins")
        })
    }

    /// Checks the key `name` proved in a handshake (or that the directory
    /// lists for it) against the pin, in one transaction: pins it if there
    /// was none; if another key is pinned, records this one as offered when
    /// `offer` (the caller knows the key belongs to `name`'s account: an
    /// outgoing connection to its listed address, the relay, the
    /// directory), else only reports it. Proving the pinned key again
    /// withdraws any offer: it was stale, or not the peer's.
    pub fn check(
        &self,
        name: &str,
        presented: &PublicKey,
        now_ms: i64,
        offer: bool,
    ) -> Result<Check, StoreError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting a pin check")?;
            let pinned: Option<Vec<u8>> = tx
                .query_row("SELECT public_key FROM pins WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .ctx("reading a pin")?;
            let outcome = match pinned.map(key) {
                None => {
                    tx.execute(
                        "INSERT INTO pins(name, public_key, source, pinned_at) VALUES (?1, ?2, 'first_use', ?3)",
                        params![name, presented.as_bytes().as_slice(), now_ms],
                    )
                    .ctx("pinning a key")?;
                    Check::Pinned
                }
                Some(k) if k == *presented => {
                    tx.execute(
                        "UPDATE pins SET offered = NULL, offered_at = NULL WHERE name = ?1 AND offered IS NOT NULL",
                        [name],
                    )
                    .ctx("withdrawing an offered key")?;
                    Check::Matches
                }
                Some(pinned) if !offer => Check::Changed { pinned },
                Some(pinned) => {
                    tx.execute(
                        "UPDATE pins SET offered = ?2, offered_at = ?3 WHERE name = ?1",
                        params![name, presented.as_bytes().as_slice(), now_ms],
                    )
                    .ctx("recording an offered key")?;
                    Check::Changed { pinned }
                }
            };
            tx.commit().ctx("committing a pin check")?;
            Ok(outcome)
        })
    }

    /// Accepts the key `name` offered, if its fingerprint is `fingerprint`
    /// (as shown to the user; `None`: whatever is offered, for the CLI
    /// after it showed it). Returns the new pin.
    pub fn accept(
        &self,
        name: &str,
        fingerprint: Option<&str>,
        now_ms: i64,
    ) -> Result<PinRecord, AcceptError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting a key acceptance")?;
            let current = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM pins WHERE name = ?1"),
                    [name],
                    record,
                )
                .optional()
                .ctx("reading a pin")?;
            let Some(offered) = current.and_then(|p| p.offered) else {
                return Err(AcceptError::NothingOffered(name.to_owned()));
            };
            let shown = offered.fingerprint().to_string();
            if let Some(asked) = fingerprint {
                if normalize(asked) != normalize(&shown) {
                    return Err(AcceptError::Different {
                        name: name.to_owned(),
                        offered: shown,
                        asked: asked.to_owned(),
                    });
                }
            }
            tx.execute(
                "UPDATE pins SET public_key = offered, source = ?2, pinned_at = ?3,
                        offered = NULL, offered_at = NULL
                 WHERE name = ?1",
                params![name, source_text(PinSource::Accepted), now_ms],
            )
            .ctx("accepting a key")?;
            let pin = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM pins WHERE name = ?1"),
                    [name],
                    record,
                )
                .ctx("reading a pin")?;
            tx.commit().ctx("committing a key acceptance")?;
            Ok(pin)
        })
    }
}

/// A fingerprint as typed or pasted: spaces and case do not matter.
fn normalize(f: &str) -> String {
    f.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn first_use_pins_then_a_change_is_held_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let s = PinStore::open(&dir.path().join("pins.db")).unwrap();
        assert_eq!(s.check("bob", &k(1), 10, true).unwrap(), Check::Pinned);
        assert_eq!(s.check("bob", &k(1), 11, true).unwrap(), Check::Matches);
        assert_eq!(
            s.check("bob", &k(2), 12, true).unwrap(),
            Check::Changed { pinned: k(1) }
        );
        // Still the old pin: a changed key is not trusted by being seen.
        let p = s.get("bob").unwrap().unwrap();
        assert_eq!(
            (p.key, p.offered, p.source),
            (k(1), Some(k(2)), PinSource::FirstUse)
        );
        assert_eq!(
            s.check("bob", &k(2), 13, true).unwrap(),
            Check::Changed { pinned: k(1) }
        );

        // Accepting another fingerprint than the offered one does nothing.
        let wrong = k(3).fingerprint().to_string();
        assert!(matches!(
            s.accept("bob", Some(&wrong), 14),
            Err(AcceptError::Different { .. })
        ));
        let shown = k(2).fingerprint().to_string().to_uppercase();
        let p = s.accept("bob", Some(&shown), 15).unwrap();
        assert_eq!(
            (p.key, p.offered, p.source),
            (k(2), None, PinSource::Accepted)
        );
        assert_eq!(s.check("bob", &k(2), 16, true).unwrap(), Check::Matches);
        assert!(matches!(
            s.accept("bob", None, 17),
            Err(AcceptError::NothingOffered(_))
        ));
    }

    #[test]
    fn an_unproven_claim_offers_nothing_and_the_pinned_key_withdraws_offers() {
        let dir = tempfile::tempdir().unwrap();
        let s = PinStore::open(&dir.path().join("pins.db")).unwrap();
        s.check("alice", &k(1), 1, true).unwrap();
        // Someone claiming alice's name on an incoming connection.
        assert_eq!(
            s.check("alice", &k(6), 2, false).unwrap(),
            Check::Changed { pinned: k(1) }
        );
        assert_eq!(s.get("alice").unwrap().unwrap().offered, None);
        // An offer, then alice proves her pinned key: the offer goes.
        s.check("alice", &k(7), 3, true).unwrap();
        assert_eq!(s.get("alice").unwrap().unwrap().offered, Some(k(7)));
        assert_eq!(s.check("alice", &k(1), 4, true).unwrap(), Check::Matches);
        assert_eq!(s.get("alice").unwrap().unwrap().offered, None);
    }

    #[test]
    fn pins_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.db");
        PinStore::open(&path)
            .unwrap()
            .check("bob", &k(1), 1, true)
            .unwrap();
        let s = PinStore::open(&path).unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(
            s.check("bob", &k(9), 2, true).unwrap(),
            Check::Changed { pinned: k(1) }
        );
    }
}
