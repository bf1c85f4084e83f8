//! The node's file transfers (issue 14): every file it sends (its durable
//! outbox entry, one per recipient) and every file it receives, with where
//! each stands.
//!
//! Its own database (`transfers.db`), written with `synchronous = FULL`:
//! rows change a few times per transfer (created, started, a checkpoint
//! every [`crate::transfer::inbound::CHECKPOINT_BYTES`], delivered), so
//! durability costs nothing measurable, and a receiver's "delivered" must
//! never be lost once the sender heard it (else a repeated offer would
//! deliver the file twice). The offset a receiver records is of bytes
//! handed to the kernel, not synced (see `transfer::inbound` for why a
//! machine crash still cannot deliver a wrong file).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use roundtable_shared::api::{Direction, TransferInfo, TransferState};
use roundtable_shared::transfer::FileOffer;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Context, StoreError};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE transfers (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL,
        peer        TEXT NOT NULL,
        direction   TEXT NOT NULL CHECK (direction IN ('out', 'in')),
        name        TEXT NOT NULL,
        size        INTEGER NOT NULL CHECK (size >= 0),
        sha256      TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN
                        ('queued', 'sending', 'waiting', 'delivered', 'failed')),
        -- Out: what the receiver last said it holds. In: bytes of the part
        -- file written (or the whole size once delivered).
        bytes       INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0 AND bytes <= size),
        error       TEXT,
        -- Out: the outbox file. In: the file in place, once delivered.
        path        TEXT,
        bare        INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        UNIQUE (direction, peer, id)
    ) STRICT;
    CREATE INDEX transfers_by_peer ON transfers (peer, seq);
",
    "
    -- The room a file was posted into (its id): for one sent, the room
    -- whose members it went to; for one received, a room that this node
    -- and the sender were both in when it was offered.
    ALTER TABLE transfers ADD COLUMN room TEXT;
",
];

/// A stored transfer: what the API shows, and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRecord {
    pub info: TransferInfo,
    pub path: Option<PathBuf>,
}

/// What [`TransferStore::offer`] found for an incoming offer.
#[derive(Debug, Clone, PartialEq)]
pub enum Offered {
    /// First time: a new row, nothing received yet.
    New(TransferRecord),
    /// Seen before (same sender, id, name, size and hash): where it stands.
    Known(TransferRecord),
    /// The sender reused an id for another file.
    Conflict,
}

/// Handle to `transfers.db`; cheap to clone.
#[derive(Clone)]
pub struct TransferStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for TransferStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferStore")
    }
}

fn state_text(s: TransferState) -> &'static str {
    match s {
        TransferState::Queued => "queued",
        TransferState::Sending => "sending",
        TransferState::Waiting => "waiting",
        TransferState::Delivered => "delivered",
        TransferState::Failed => "failed",
    }
}

fn state_of(text: &str) -> TransferState {
    match text {
        "queued" => TransferState::Queued,
        "sending" => TransferState::Sending,
        "waiting" => TransferState::Waiting,
        "delivered" => TransferState::Delivered,
        // The CHECK constraint allows nothing else.
        _ => TransferState::Failed,
    }
}

const COLUMNS: &str =
    "seq, id, peer, direction, name, size, sha256, state, bytes, error, path, bare, created_at, updated_at, room";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TransferRecord> {
    let direction: String = r.get(3)?;
    let direction = if direction == "out" {
        Direction::Out
    } else {
        Direction::In
    };
    let state = state_of(&r.get::<_, String>(7)?);
    let path: Option<String> = r.get(10)?;
    let downloadable =
        path.is_some() && (direction == Direction::Out || state == TransferState::Delivered);
    Ok(TransferRecord {
        info: TransferInfo {
            seq: r.get(0)?,
            id: r.get(1)?,
            peer: r.get(2)?,
            direction,
            name: r.get(4)?,
            size: r.get::<_, i64>(5)? as u64,
            sha256: r.get(6)?,
            state,
            bytes: r.get::<_, i64>(8)? as u64,
            rate: None,
            error: r.get(9)?,
            created_at: r.get(12)?,
            updated_at: r.get(13)?,
            bare: r.get::<_, i64>(11)? != 0,
            downloadable,
            room: r.get(14)?,
        },
        path: path.map(PathBuf::from),
    })
}

/// The row numbered `seq` (`None`: no such row).
fn by_seq(c: &Connection, seq: i64) -> Result<Option<TransferRecord>, StoreError> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM transfers WHERE seq = ?1"),
        [seq],
        record,
    )
    .optional()
    .ctx("reading a transfer")
}

/// A size or offset as SQLite stores it (files are far below 2^63 bytes).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl TransferStore {
    /// Opens (creating if needed) the transfer database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = super::open(path, MIGRATIONS)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx("making transfer writes durable")?;
        Ok(TransferStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    /// The transfer numbered `seq`.
    pub fn get(&self, seq: i64) -> Result<Option<TransferRecord>, StoreError> {
        self.with(|c| by_seq(c, seq))
    }

    /// Transfers newest first, all or with one peer, at most `limit`.
    pub fn list(
        &self,
        peer: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        let limit = int(limit as u64);
        self.with(|c| {
            let mut out = Vec::new();
            if let Some(peer) = peer {
                let mut q = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM transfers WHERE peer = ?1 ORDER BY seq DESC LIMIT ?2"
                    ))
                    .ctx("listing transfers")?;
                for r in q
                    .query_map(params![peer, limit], record)
                    .ctx("listing transfers")?
                {
                    out.push(r.ctx("reading a transfer")?);
                }
            } else {
                let mut q = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM transfers ORDER BY seq DESC LIMIT ?1"
                    ))
                    .ctx("listing transfers")?;
                for r in q.query_map([limit], record).ctx("listing transfers")? {
                    out.push(r.ctx("reading a transfer")?);
                }
            }
            Ok(out)
        })
    }

    /// Our outgoing transfers not yet delivered or failed (to resume).
    pub fn pending_out(&self) -> Result<Vec<TransferRecord>, StoreError> {
        self.with(|c| {
            let mut q = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM transfers WHERE direction = 'out'
                     AND state NOT IN ('delivered', 'failed') ORDER BY seq"
                ))
                .ctx("listing pending transfers")?;
            let rows = q.query_map([], record).ctx("listing pending transfers")?;
            rows.map(|r| r.ctx("reading a transfer")).collect()
        })
    }

    /// Records a file to send to each of `peers` (one transfer each, with
    /// the id in `ids`), all reading the outbox file at `path`.
    #[allow(clippy::too_many_arguments)]
    pub fn queue(
        &self,
        peers: &[String],
        ids: &[String],
        name: &str,
        size: u64,
        sha256: &str,
        path: &Path,
        room: Option<&str>,
        now: i64,
    ) -> Result<Vec<TransferRecord>, StoreError> {
        let path = path.to_string_lossy().into_owned();
        self.with(|c| {
            let tx = c.transaction().ctx("starting a transaction")?;
            let mut seqs = Vec::new();
            for (peer, id) in peers.iter().zip(ids) {
                tx.execute(
                    "INSERT INTO transfers (id, peer, direction, name, size, sha256, state, path, created_at, updated_at, room)
                     VALUES (?1, ?2, 'out', ?3, ?4, ?5, 'queued', ?6, ?7, ?7, ?8)",
                    params![id, peer, name, int(size), sha256, path, now, room],
                )
                .ctx("queueing a transfer")?;
                seqs.push(tx.last_insert_rowid());
            }
            let mut out = Vec::new();
            for seq in seqs {
                out.push(
                    by_seq(&tx, seq)?.ok_or(StoreError::Worker("a row just written is gone".into()))?,
                );
            }
            tx.commit().ctx("committing transfers")?;
            Ok(out)
        })
    }

    /// An incoming offer from `peer`: a new row, the known one, or a
    /// conflict when the id names another file. `room` is the room to show
    /// a new one in, as the caller checked it (not the offer's claim).
    pub fn offer(
        &self,
        peer: &str,
        offer: &FileOffer,
        room: Option<&str>,
        now: i64,
    ) -> Result<Offered, StoreError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting a transaction")?;
            let known = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM transfers WHERE direction = 'in' AND peer = ?1 AND id = ?2"
                    ),
                    params![peer, offer.id],
                    record,
                )
                .optional()
                .ctx("looking up an offer")?;
            let found = match known {
                Some(r)
                    if r.info.name == offer.name
                        && r.info.size == offer.size
                        && r.info.sha256 == offer.sha256 =>
                {
                    Offered::Known(r)
                }
                Some(_) => Offered::Conflict,
                None => {
                    tx.execute(
                        "INSERT INTO transfers (id, peer, direction, name, size, sha256, state, created_at, updated_at, room)
                         VALUES (?1, ?2, 'in', ?3, ?4, ?5, 'queued', ?6, ?6, ?7)",
                        params![offer.id, peer, offer.name, int(offer.size), offer.sha256, now, room],
                    )
                    .ctx("recording an offer")?;
                    let seq = tx.last_insert_rowid();
                    Offered::New(
                        by_seq(&tx, seq)?
                            .ok_or(StoreError::Worker("a row just written is gone".into()))?,
                    )
                }
            };
            tx.commit().ctx("committing an offer")?;
            Ok(found)
        })
    }

    /// Sets where a transfer stands; returns the updated record (`None`
    /// if there is no such transfer). A delivered transfer stays delivered.
    pub fn update(
        &self,
        seq: i64,
        state: TransferState,
        bytes: u64,
        error: Option<&str>,
        now: i64,
    ) -> Result<Option<TransferRecord>, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE transfers SET state = ?2, bytes = min(?3, size), error = ?4, updated_at = ?5
                 WHERE seq = ?1 AND state != 'delivered'",
                params![seq, state_text(state), int(bytes), error, now],
            )
            .ctx("updating a transfer")?;
            by_seq(c, seq)
        })
    }

    /// Records that the bytes of an incoming transfer up to `bytes` were
    /// written to its part file.
    pub fn written(&self, seq: i64, bytes: u64, now: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE transfers SET bytes = min(?2, size), updated_at = ?3
                 WHERE seq = ?1 AND state != 'delivered'",
                params![seq, int(bytes), now],
            )
            .ctx("recording a checkpoint")
            .map(drop)
        })
    }

    /// An incoming transfer arrived whole, verified, and is in place at `path`.
    pub fn delivered_in(
        &self,
        seq: i64,
        path: &Path,
        now: i64,
    ) -> Result<Option<TransferRecord>, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE transfers SET state = 'delivered', bytes = size, error = NULL, path = ?2, updated_at = ?3
                 WHERE seq = ?1",
                params![seq, path.to_string_lossy(), now],
            )
            .ctx("recording a delivery")?;
            by_seq(c, seq)
        })
    }

    /// A file that arrived as a bare NVFlare exchange from `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn bare(
        &self,
        id: &str,
        from: &str,
        name: &str,
        size: u64,
        sha256: &str,
        path: &Path,
        now: i64,
    ) -> Result<TransferRecord, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO transfers (id, peer, direction, name, size, sha256, state, bytes, path, bare, created_at, updated_at)
                 VALUES (?1, ?2, 'in', ?3, ?4, ?5, 'delivered', ?4, ?6, 1, ?7, ?7)",
                params![id, from, name, int(size), sha256, path.to_string_lossy(), now],
            )
            .ctx("recording a received file")?;
            let seq = c.last_insert_rowid();
            by_seq(c, seq)?.ok_or(StoreError::Worker("a row just written is gone".into()))
        })
    }

    /// Incoming transfers not delivered and untouched since `before`
    /// (Unix ms): abandoned by their senders.
    pub fn stale_in(&self, before: i64) -> Result<Vec<TransferRecord>, StoreError> {
        self.with(|c| {
            let mut q = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM transfers WHERE direction = 'in'
                     AND state NOT IN ('delivered', 'failed') AND updated_at < ?1"
                ))
                .ctx("listing stale transfers")?;
            let rows = q
                .query_map([before], record)
                .ctx("listing stale transfers")?;
            rows.map(|r| r.ctx("reading a transfer")).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ROOM: &str = "0123456789abcdef0123456789abcdef";

    fn offer(id: &str, size: u64) -> FileOffer {
        FileOffer {
            id: id.into(),
            name: "m.bin".into(),
            size,
            sha256: SHA.into(),
            room: None,
        }
    }

    #[test]
    fn an_offer_is_recorded_once_and_its_progress_survives_reopening() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("transfers.db");
        let id = "00112233445566778899aabbccddeeff";
        let seq = {
            let s = TransferStore::open(&path).unwrap();
            let Offered::New(r) = s.offer("alice", &offer(id, 100), Some(ROOM), 1).unwrap() else {
                panic!("new offer expected");
            };
            s.written(r.info.seq, 40, 2).unwrap();
            // The same sender may reuse nothing: another file under this id conflicts.
            assert_eq!(
                s.offer("alice", &offer(id, 99), None, 3).unwrap(),
                Offered::Conflict
            );
            r.info.seq
        };
        let s = TransferStore::open(&path).unwrap();
        let Offered::Known(r) = s.offer("alice", &offer(id, 100), None, 4).unwrap() else {
            panic!("known offer expected");
        };
        assert_eq!((r.info.seq, r.info.bytes), (seq, 40));
        // The room it was shown in at first stays.
        assert_eq!(r.info.room.as_deref(), Some(ROOM));
        // Another sender's transfer with the same id is another transfer.
        assert!(matches!(
            s.offer("bob", &offer(id, 100), None, 5).unwrap(),
            Offered::New(_)
        ));
        // Delivered stays delivered, whatever comes later.
        s.delivered_in(seq, Path::new("/x/m.bin"), 6).unwrap();
        let r = s
            .update(seq, TransferState::Sending, 0, None, 7)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.info.state, r.info.bytes),
            (TransferState::Delivered, 100)
        );
        assert!(r.info.downloadable);
    }

    #[test]
    fn queued_transfers_are_pending_until_final() {
        let d = tempfile::tempdir().unwrap();
        let s = TransferStore::open(&d.path().join("t.db")).unwrap();
        let ids = ["0".repeat(32), "1".repeat(32)];
        let rs = s
            .queue(
                &["bob".into(), "carol".into()],
                &ids,
                "m.bin",
                10,
                SHA,
                Path::new("/o/x"),
                Some(ROOM),
                1,
            )
            .unwrap();
        assert_eq!(rs.len(), 2);
        assert!(rs.iter().all(|r| r.info.room.as_deref() == Some(ROOM)));
        assert!(rs
            .iter()
            .all(|r| r.info.downloadable && r.info.state == TransferState::Queued));
        assert_eq!(s.pending_out().unwrap().len(), 2);
        s.update(rs[0].info.seq, TransferState::Delivered, 10, None, 2)
            .unwrap();
        s.update(
            rs[1].info.seq,
            TransferState::Failed,
            0,
            Some("too large"),
            2,
        )
        .unwrap();
        assert!(s.pending_out().unwrap().is_empty());
        let listed = s.list(Some("carol"), 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].info.error.as_deref(), Some("too large"));
    }

    #[test]
    fn a_database_of_before_rooms_keeps_its_transfers() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("transfers.db");
        {
            let c = super::super::open(&path, &MIGRATIONS[..1]).unwrap();
            c.execute(
                "INSERT INTO transfers (id, peer, direction, name, size, sha256, state, created_at, updated_at)
                 VALUES (?1, 'bob', 'in', 'm.bin', 5, ?2, 'sending', 1, 1)",
                params!["0".repeat(32), SHA],
            )
            .unwrap();
        }
        let s = TransferStore::open(&path).unwrap();
        let all = s.list(None, 10).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].info.name.as_str(), all[0].info.room.as_deref()),
            ("m.bin", None)
        );
    }
}
