//! A node's chat history and outbox.
//!
//! One table holds every message, sent and received. The outbox is not a
//! separate queue: it is our messages that are still `queued`, or `sent` to
//! a Roundtable peer and not yet acknowledged, in the order they were
//! accepted. A message is committed here before anyone is told it exists.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand_core::{OsRng, RngCore};
use roundtable_shared::api::{
    ChatMessage, ChatSummary, Direction, MessageState, ReadState, SearchHit,
};
use rusqlite::{params, OptionalExtension, Row};

use super::{Context, Db, StoreError};

mod rooms;
pub use rooms::{
    event_sentence, Queued, Refusable, Room, RoomReceived, RoomRefused, RoomsReceived,
};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE messages (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL,
        peer         TEXT NOT NULL,
        direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered')),
        awaiting_ack INTEGER NOT NULL DEFAULT 0,
        at           INTEGER NOT NULL,
        UNIQUE (direction, peer, id)
    ) STRICT;
    CREATE INDEX messages_by_peer ON messages (peer, seq);
    CREATE INDEX messages_outbox ON messages (peer, seq)
        WHERE direction = 'out' AND (state = 'queued' OR awaiting_ack = 1);
",
    "
    -- Fewer pages written per message: no AUTOINCREMENT counter (messages
    -- are never deleted, so seq is never reused), and only received
    -- messages need a unique (peer, id): ours get fresh random ids and are
    -- acknowledged by seq.
    CREATE TABLE messages_v2 (
        seq          INTEGER PRIMARY KEY,
        id           TEXT NOT NULL,
        peer         TEXT NOT NULL,
        direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        body         TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'delivered')),
        awaiting_ack INTEGER NOT NULL DEFAULT 0,
        at           INTEGER NOT NULL
    ) STRICT;
    INSERT INTO messages_v2 (seq, id, peer, direction, body, state, awaiting_ack, at)
        SELECT seq, id, peer, direction, body, state, awaiting_ack, at FROM messages;
    DROP TABLE messages;
    DELETE FROM sqlite_sequence WHERE name = 'messages';
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE INDEX messages_by_peer ON messages (peer, seq);
    CREATE INDEX messages_outbox ON messages (peer, seq)
        WHERE direction = 'out' AND (state = 'queued' OR awaiting_ack = 1);
    CREATE UNIQUE INDEX messages_received ON messages (peer, id) WHERE direction = 'in';
",
    "
    -- Whether the sender is proven: ours always are; a received message
    -- only when it came over an authenticated channel. Everything received
    -- before this column existed came over plain connections.
    ALTER TABLE messages ADD COLUMN verified INTEGER NOT NULL DEFAULT 0
        CHECK (verified IN (0, 1));
    UPDATE messages SET verified = 1 WHERE direction = 'out';
",
    "
    -- Issue 16: read state on the node (shared by every browser of the
    -- user), and full-text search. Messages are never deleted and their
    -- text never changes, so the index needs an insert trigger only.
    CREATE TABLE read_marks (
        peer TEXT PRIMARY KEY NOT NULL,
        -- The seq of the last message read in the conversation.
        seq  INTEGER NOT NULL
    ) STRICT;
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body, content = 'messages', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, body) VALUES (NEW.seq, NEW.body);
    END;
",
    "
    -- Issue 16: rooms. A room's messages are rows of `messages` with
    -- `room` set (and `peer` = who wrote it); direct ones keep room = ''.
    -- `event` is '' for what someone wrote, else what happened to the
    -- room ('added:NAME', 'left'), the body being its sentence.
    ALTER TABLE messages ADD COLUMN room TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN event TEXT NOT NULL DEFAULT '';
    DROP INDEX messages_by_peer;
    CREATE INDEX messages_by_peer ON messages (peer, seq) WHERE room = '';
    CREATE INDEX messages_by_room ON messages (room, seq) WHERE room != '';
    DROP INDEX messages_outbox;
    CREATE INDEX messages_outbox ON messages (peer, seq)
        WHERE room = '' AND direction = 'out' AND (state = 'queued' OR awaiting_ack = 1);
    CREATE TABLE rooms (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        -- The training's UUID, for a training's own room.
        training   TEXT,
        created_at INTEGER NOT NULL,
        -- Who made it known here, when a peer's frame did (NULL: we made
        -- it, or it is a training's): a peer can make only so many.
        invited_by TEXT
    ) STRICT;
    CREATE INDEX rooms_by_inviter ON rooms (invited_by) WHERE invited_by IS NOT NULL;
    -- Each member's last-writer-wins entry (shared/src/room.rs).
    CREATE TABLE room_members (
        room    TEXT NOT NULL,
        name    TEXT NOT NULL,
        present INTEGER NOT NULL CHECK (present IN (0, 1)),
        clock   INTEGER NOT NULL,
        PRIMARY KEY (room, name)
    ) STRICT, WITHOUT ROWID;
    -- Our room messages still to deliver, one row per (member, message):
    -- the room's outbox, drained by the member's delivery worker like a
    -- direct outbox; a row goes once the member acknowledged.
    CREATE TABLE room_outbox (
        member       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        awaiting_ack INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (member, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX room_outbox_by_seq ON room_outbox (seq);
",
];

/// Marks the start and end of a match in a [`SearchHit`]'s snippet.
pub use roundtable_shared::api::{SNIPPET_END, SNIPPET_START};

/// Longest search query, bytes.
pub const MAX_QUERY: usize = 256;

/// Words of a search query used at most.
pub const MAX_QUERY_WORDS: usize = 16;

/// The FTS5 query for what a person typed: every word must occur (the
/// last one as a prefix, so results come while typing), each word quoted
/// so that nothing typed is read as FTS5 syntax. `None`: no word in it.
pub fn fts_query(typed: &str) -> Option<String> {
    let typed = typed.get(..MAX_QUERY).unwrap_or(typed);
    let words: Vec<String> = typed
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .take(MAX_QUERY_WORDS)
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    let (last, rest) = words.split_last()?;
    let mut q = rest.join(" ");
    if !q.is_empty() {
        q.push(' ');
    }
    q.push_str(last);
    q.push('*');
    Some(q)
}

const COLUMNS: &str = "seq, id, peer, direction, body, state, at, verified, room, event";

/// How many columns [`COLUMNS`] has (the next column's index).
const NCOLS: usize = 10;

/// [`COLUMNS`] of the table aliased `alias`.
fn columns_of(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|col| format!("{alias}.{col}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn row(r: &Row<'_>) -> rusqlite::Result<ChatMessage> {
    let direction: String = r.get(3)?;
    let state: String = r.get(5)?;
    Ok(ChatMessage {
        seq: r.get(0)?,
        id: r.get(1)?,
        peer: r.get(2)?,
        direction: if direction == "in" {
            Direction::In
        } else {
            Direction::Out
        },
        text: r.get(4)?,
        state: match state.as_str() {
            "queued" => MessageState::Queued,
            "sent" => MessageState::Sent,
            _ => MessageState::Delivered,
        },
        at: r.get(6)?,
        verified: r.get(7)?,
        room: Some(r.get::<_, String>(8)?).filter(|room| !room.is_empty()),
        event: !r.get_ref(9)?.as_str().unwrap_or_default().is_empty(),
    })
}

/// A fresh message id: 128 random bits as 32 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An incoming message as received.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub sender: String,
    /// The sender's id, or `None` for a classic MESSAGE (an id is made up).
    pub id: Option<String>,
    pub text: String,
    /// Whether `sender` is proven (an authenticated channel), not only claimed.
    pub verified: bool,
}

/// Handle to a node's chat database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatStore {
    db: Db,
    durable: Arc<Durable>,
    /// Calls of [`ensure_training_room`](Self::ensure_training_room) (a
    /// write transaction each), for the tests.
    training_room_writes: Arc<AtomicU64>,
}

/// Making the writes someone is told about survive a power loss.
///
/// Two writes are acknowledged to someone: [`ChatStore::queue`] (the
/// browser hears 202 Accepted) and [`ChatStore::receive`] (the sender hears
/// `MSGACK` and drops its copy). With SQLite's `synchronous=NORMAL` in WAL
/// mode a commit reaches the disk only at the next checkpoint (every
/// 500 ms here, see [`Db`]), so a power loss could take back half a second
/// of acknowledged messages that the sender had already forgotten.
/// `synchronous=FULL` syncs the WAL inside every commit instead, but then
/// the fsync (0.3 ms on these VMs, tens of ms when it waits behind a
/// checkpoint's writeback) sits between the write and everything after it,
/// the WebSocket event included: measured, the node benchmark's p99 went
/// from 1.3–2.0 ms to 2.4–10.6 ms.
///
/// So commits here stay `NORMAL` (visible at once, and safe against a
/// crash of the process), each returns a [`Commit`], and the caller makes
/// it durable with [`ChatStore::sync`] before acknowledging, after it has
/// announced it. `sync` does what `FULL` would have done at the commit:
/// it syncs the WAL file's data (SQLite's own frames, header included), so
/// recovery after a power loss finds the commit in the WAL. Concurrent
/// syncs share one fsync: one covers every commit made before it started.
/// The state changes (`sent`, `delivered`) are never synced explicitly:
/// losing one only repeats a delivery, which the receiver drops by id.
#[derive(Debug)]
struct Durable {
    wal: std::path::PathBuf,
    /// Acknowledged-kind commits made so far, numbered from 1.
    committed: AtomicU64,
    /// The newest commit known to be on disk, and the WAL file (opened at
    /// the first sync). The lock also makes fsyncs go one at a time.
    synced: Mutex<(u64, Option<std::fs::File>)>,
    /// fsyncs done, for the tests.
    fsyncs: AtomicU64,
}

/// A commit that is visible and survives a crash of the process, but not
/// yet a power loss: pass it to [`ChatStore::sync`] before acknowledging.
#[must_use = "acknowledge only after ChatStore::sync"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Commit(u64);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChatStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, MIGRATIONS)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(ChatStore {
            db,
            durable: Arc::new(Durable {
                wal: wal.into(),
                committed: AtomicU64::new(0),
                synced: Mutex::new((0, None)),
                fsyncs: AtomicU64::new(0),
            }),
            training_room_writes: Arc::default(),
        })
    }

    /// Numbers a commit just made (called with the connection held, after
    /// the commit, so that a sync that reads the count covers it).
    fn committed(&self) -> Commit {
        Commit(self.durable.committed.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Waits until `commit` (and every one before it) is on disk. Blocks
    /// for an fsync unless a sync since `commit` already did it.
    pub fn sync(&self, commit: Commit) -> Result<(), StoreError> {
        let d = &self.durable;
        let mut synced = lock(&d.synced);
        if synced.0 >= commit.0 {
            return Ok(());
        }
        let upto = d.committed.load(Ordering::Acquire);
        let failed = |source| StoreError::Sync {
            path: d.wal.display().to_string(),
            source,
        };
        if synced.1.is_none() {
            synced.1 = Some(std::fs::File::open(&d.wal).map_err(failed)?);
        }
        let result = synced.1.as_ref().map_or(Ok(()), std::fs::File::sync_data);
        if let Err(e) = result {
            synced.1 = None; // reopen next time
            return Err(failed(e));
        }
        d.fsyncs.fetch_add(1, Ordering::Relaxed);
        synced.0 = upto;
        Ok(())
    }

    /// How many fsyncs [`sync`](Self::sync) has done (diagnostics, tests).
    pub fn syncs_done(&self) -> u64 {
        self.durable.fsyncs.load(Ordering::Relaxed)
    }

    /// Accepts one of our messages for `peer`: stored `queued` and visible;
    /// [`sync`](Self::sync) the commit before telling anyone it is accepted.
    pub fn queue(&self, peer: &str, text: &str) -> Result<(ChatMessage, Commit), StoreError> {
        let id = new_id();
        let at = now_ms();
        self.db.with(|c| {
            c.execute(
                "INSERT INTO messages (id, peer, direction, body, state, awaiting_ack, at, verified)
                 VALUES (?1, ?2, 'out', ?3, 'queued', 0, ?4, 1)",
                params![id, peer, text, at],
            )
            .ctx("queueing message")?;
            let message = ChatMessage {
                seq: c.last_insert_rowid(),
                id,
                peer: peer.to_owned(),
                direction: Direction::Out,
                text: text.to_owned(),
                state: MessageState::Queued,
                at,
                verified: true,
                room: None,
                event: false,
            };
            Ok((message, self.committed()))
        })
    }

    /// Stores received messages in one transaction. Returns, in order, the
    /// stored message, or `None` for a duplicate (same sender and id).
    /// Visible at once; [`sync`](Self::sync) the commit before acknowledging.
    pub fn receive(
        &self,
        batch: &[Incoming],
    ) -> Result<(Vec<Option<ChatMessage>>, Commit), StoreError> {
        let at = now_ms();
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting receive")?;
            let mut out = Vec::with_capacity(batch.len());
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO messages (id, peer, direction, body, state, at, verified)
                         VALUES (?1, ?2, 'in', ?3, 'delivered', ?4, ?5)
                         ON CONFLICT (peer, id) WHERE direction = 'in' DO NOTHING",
                    )
                    .ctx("preparing receive")?;
                for m in batch {
                    let id = m.id.clone().unwrap_or_else(new_id);
                    let n = ins
                        .execute(params![id, m.sender, m.text, at, m.verified])
                        .ctx("storing received message")?;
                    out.push((n == 1).then(|| ChatMessage {
                        seq: tx.last_insert_rowid(),
                        id,
                        peer: m.sender.clone(),
                        direction: Direction::In,
                        text: m.text.clone(),
                        state: MessageState::Delivered,
                        at,
                        verified: m.verified,
                        room: None,
                        event: false,
                    }));
                }
            }
            tx.commit().ctx("committing receive")?;
            Ok((out, self.committed()))
        })
    }

    /// The next undelivered messages for `peer`, direct and in rooms,
    /// oldest first (so each room's posts, like direct ones, go in the
    /// order they were made).
    pub fn outbox(&self, peer: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        self.db.with(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT * FROM (
                       SELECT {COLUMNS} FROM messages
                       WHERE peer = ?1 AND room = '' AND direction = 'out'
                         AND (state = 'queued' OR awaiting_ack = 1)
                       UNION ALL
                       SELECT {} FROM room_outbox o JOIN messages m ON m.seq = o.seq
                       WHERE o.member = ?1)
                     ORDER BY seq LIMIT ?2",
                    columns_of("m")
                ))
                .ctx("reading outbox")?;
            let rows = st
                .query_map(params![peer, limit as i64], row)
                .ctx("reading outbox")?;
            rows.collect::<Result<_, _>>().ctx("reading outbox")
        })
    }

    /// Peers with undelivered messages.
    pub fn outbox_peers(&self) -> Result<Vec<String>, StoreError> {
        self.db.with(|c| {
            let mut st = c
                .prepare(
                    "SELECT peer FROM messages
                     WHERE room = '' AND direction = 'out' AND (state = 'queued' OR awaiting_ack = 1)
                     UNION SELECT member FROM room_outbox",
                )
                .ctx("listing outbox")?;
            let rows = st.query_map([], |r| r.get(0)).ctx("listing outbox")?;
            rows.collect::<Result<_, _>>().ctx("listing outbox")
        })
    }

    /// Marks our messages (by seq) as written to `peer`; `awaiting_ack`
    /// keeps them in the outbox until the peer acknowledges them (a
    /// classic peer cannot: then written is final). A room message is
    /// `sent` once written to one member; returns the seqs of room
    /// messages this made delivered to everyone (the last member was a
    /// classic one).
    pub fn mark_sent(
        &self,
        peer: &str,
        seqs: &[i64],
        awaiting_ack: bool,
    ) -> Result<Vec<i64>, StoreError> {
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting mark sent")?;
            let mut done = Vec::new();
            {
                let mut st = tx
                    .prepare_cached(
                        // A room message waits in `room_outbox`, not here.
                        "UPDATE messages SET state = 'sent', awaiting_ack = (?2 AND room = '')
                         WHERE seq = ?1 AND direction = 'out' AND state = 'queued'",
                    )
                    .ctx("marking sent")?;
                for s in seqs {
                    st.execute(params![s, awaiting_ack]).ctx("marking sent")?;
                }
                if !awaiting_ack {
                    for &s in seqs {
                        if room_delivered(&tx, peer, s)? {
                            done.push(s);
                        }
                    }
                }
            }
            tx.commit().ctx("committing mark sent")?;
            Ok(done)
        })
    }

    /// Marks our messages (by seq) delivered to `peer`, whatever state
    /// they were recorded in; returns the seqs that changed (one already
    /// delivered is left alone; a room message changes once every member
    /// it went to has it).
    pub fn mark_delivered(&self, peer: &str, seqs: &[i64]) -> Result<Vec<i64>, StoreError> {
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting mark delivered")?;
            let mut changed = Vec::new();
            {
                let mut st = tx
                    .prepare_cached(
                        "UPDATE messages SET state = 'delivered', awaiting_ack = 0
                         WHERE seq = ?1 AND room = '' AND direction = 'out' AND state != 'delivered'",
                    )
                    .ctx("marking delivered")?;
                for &seq in seqs {
                    if st.execute([seq]).ctx("marking delivered")? == 1
                        || room_delivered(&tx, peer, seq)?
                    {
                        changed.push(seq);
                    }
                }
            }
            tx.commit().ctx("committing mark delivered")?;
            Ok(changed)
        })
    }

    /// A page of the conversation with `peer`: up to `limit` messages before
    /// `before` (a seq; `None` for the newest), returned oldest first.
    pub fn history(
        &self,
        peer: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.db
            .with(|c| page(c, Conversation::Peer(peer), before, limit))
    }

    /// One summary per conversation, most recent first, with its read
    /// state.
    pub fn chats(&self) -> Result<Vec<ChatSummary>, StoreError> {
        self.db.with(|c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {}, n, coalesce(rm.seq, 0),
                            (SELECT count(*) FROM messages u
                             WHERE u.peer = m.peer AND u.room = '' AND u.direction = 'in'
                               AND u.seq > coalesce(rm.seq, 0))
                     FROM messages m
                     JOIN (SELECT MAX(seq) AS last, COUNT(*) AS n FROM messages
                           WHERE room = '' GROUP BY peer)
                       ON m.seq = last
                     LEFT JOIN read_marks rm ON rm.peer = m.peer
                     ORDER BY m.seq DESC",
                    columns_of("m")
                ))
                .ctx("listing chats")?;
            let rows = st
                .query_map([], |r| {
                    let last = row(r)?;
                    Ok(ChatSummary {
                        peer: last.peer.clone(),
                        count: r.get::<_, i64>(NCOLS)? as u64,
                        last_read: r.get(NCOLS + 1)?,
                        unread: r.get::<_, i64>(NCOLS + 2)? as u64,
                        last: Some(last),
                    })
                })
                .ctx("listing chats")?;
            rows.collect::<Result<_, _>>().ctx("listing chats")
        })
    }

    /// Marks the conversation with `peer` read up to message `seq`
    /// (clamped to its last message). A mark never moves back: an older
    /// `seq` (a second browser that lags) leaves it as it is. Returns the
    /// conversation's read state after the call.
    pub fn mark_read(&self, peer: &str, seq: i64) -> Result<ReadState, StoreError> {
        self.db
            .with(|c| mark_read(c, Conversation::Peer(peer), seq))
    }

    /// The read state of the conversation with `peer`.
    pub fn read_state(&self, peer: &str) -> Result<ReadState, StoreError> {
        self.db.with(|c| read_state(c, Conversation::Peer(peer)))
    }

    /// Messages matching what a person typed (see [`fts_query`]), newest
    /// first, at most `limit`, each with a snippet of its text around the
    /// match.
    pub fn search(&self, typed: &str, limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        let Some(q) = fts_query(typed) else {
            return Ok(Vec::new());
        };
        self.db.with(|c| {
            let cols = columns_of("m");
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {cols}, snippet(messages_fts, 0, ?2, ?3, '…', 16)
                     FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid
                     WHERE messages_fts MATCH ?1
                     ORDER BY messages_fts.rowid DESC LIMIT ?4"
                ))
                .ctx("searching")?;
            let rows = st
                .query_map(
                    params![
                        q,
                        SNIPPET_START.to_string(),
                        SNIPPET_END.to_string(),
                        limit as i64
                    ],
                    |r| {
                        Ok(SearchHit {
                            message: row(r)?,
                            snippet: r.get(NCOLS)?,
                        })
                    },
                )
                .ctx("searching")?;
            rows.collect::<Result<_, _>>().ctx("searching")
        })
    }

    /// One message by seq.
    pub fn get(&self, seq: i64) -> Result<Option<ChatMessage>, StoreError> {
        self.db.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1"),
                [seq],
                row,
            )
            .optional()
            .ctx("reading message")
        })
    }
}

/// A conversation: with one peer, or a room. Direct and room messages
/// share the `messages` table; this picks one conversation's rows.
#[derive(Debug, Clone, Copy)]
enum Conversation<'a> {
    Peer(&'a str),
    Room(&'a str),
}

impl Conversation<'_> {
    /// The condition on `messages` that picks its rows, `?1` its key.
    /// Each names its partial index's condition too (`room = ''`,
    /// `room != ''`): SQLite uses a partial index only for a query whose
    /// condition implies the index's, and `room = ?1` alone does not.
    fn rows(self) -> &'static str {
        match self {
            Conversation::Peer(_) => "peer = ?1 AND room = ''",
            Conversation::Room(_) => "room = ?1 AND room != ''",
        }
    }

    fn key(&self) -> &str {
        match self {
            Conversation::Peer(k) | Conversation::Room(k) => k,
        }
    }

    /// Its key in `read_marks` (no user name starts with `#`).
    fn mark(self) -> String {
        match self {
            Conversation::Peer(p) => p.to_owned(),
            Conversation::Room(r) => format!("#{r}"),
        }
    }
}

/// Up to `limit` messages of `conv` before `before` (`None`: the newest),
/// oldest first.
fn page(
    c: &rusqlite::Connection,
    conv: Conversation<'_>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE {} AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            conv.rows()
        ))
        .ctx("reading history")?;
    let rows = st
        .query_map(
            params![conv.key(), before.unwrap_or(i64::MAX), limit as i64],
            row,
        )
        .ctx("reading history")?;
    let mut page: Vec<ChatMessage> = rows.collect::<Result<_, _>>().ctx("reading history")?;
    page.reverse();
    Ok(page)
}

/// Marks `conv` read up to `seq` (clamped to its last message; never
/// back) and returns its read state.
fn mark_read(
    c: &mut rusqlite::Connection,
    conv: Conversation<'_>,
    seq: i64,
) -> Result<ReadState, StoreError> {
    let tx = c.transaction().ctx("starting mark read")?;
    let last: Option<i64> = tx
        .query_row(
            &format!("SELECT max(seq) FROM messages WHERE {}", conv.rows()),
            [conv.key()],
            |r| r.get(0),
        )
        .ctx("reading conversation")?;
    let seq = seq.min(last.unwrap_or(0)).max(0);
    tx.execute(
        "INSERT INTO read_marks (peer, seq) VALUES (?1, ?2)
         ON CONFLICT (peer) DO UPDATE SET seq = max(seq, excluded.seq)",
        params![conv.mark(), seq],
    )
    .ctx("marking read")?;
    let state = read_state(&tx, conv)?;
    tx.commit().ctx("committing mark read")?;
    Ok(state)
}

/// `conv`'s read mark and what others wrote after it (not a room's lines
/// about itself).
fn read_state(c: &rusqlite::Connection, conv: Conversation<'_>) -> Result<ReadState, StoreError> {
    let last_read: i64 = c
        .prepare_cached("SELECT seq FROM read_marks WHERE peer = ?1")
        .and_then(|mut st| st.query_row([conv.mark()], |r| r.get(0)).optional())
        .ctx("reading read mark")?
        .unwrap_or(0);
    let unread: i64 = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM messages
             WHERE {} AND direction = 'in' AND event = '' AND seq > ?2",
            conv.rows()
        ))
        .and_then(|mut st| st.query_row(params![conv.key(), last_read], |r| r.get(0)))
        .ctx("counting unread")?;
    let (peer, room) = match conv {
        Conversation::Peer(p) => (p.to_owned(), None),
        Conversation::Room(r) => (String::new(), Some(r.to_owned())),
    };
    Ok(ReadState {
        peer,
        last_read,
        unread: unread as u64,
        room,
    })
}

/// After `member` has (or was written, for good) our room message `seq`:
/// drops its outbox row; true if that was the last one, and the message
/// is now recorded delivered. False for a direct message.
fn room_delivered(c: &rusqlite::Connection, member: &str, seq: i64) -> Result<bool, StoreError> {
    let gone = c
        .prepare_cached("DELETE FROM room_outbox WHERE member = ?1 AND seq = ?2")
        .and_then(|mut st| st.execute(params![member, seq]))
        .ctx("recording a room delivery")?;
    if gone == 0 {
        return Ok(false);
    }
    let left: i64 = c
        .prepare_cached("SELECT count(*) FROM room_outbox WHERE seq = ?1")
        .and_then(|mut st| st.query_row([seq], |r| r.get(0)))
        .ctx("recording a room delivery")?;
    if left > 0 {
        return Ok(false);
    }
    let n = c
        .prepare_cached(
            "UPDATE messages SET state = 'delivered' WHERE seq = ?1 AND state != 'delivered'",
        )
        .and_then(|mut st| st.execute([seq]))
        .ctx("recording a room delivery")?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues and syncs, as `Chat::send` does.
    fn q(s: &ChatStore, peer: &str, text: &str) -> Result<ChatMessage, StoreError> {
        let (m, commit) = s.queue(peer, text)?;
        s.sync(commit)?;
        Ok(m)
    }

    /// Receives and syncs, as the chat listener does before `MSGACK`.
    fn rx(s: &ChatStore, batch: &[Incoming]) -> Result<Vec<Option<ChatMessage>>, StoreError> {
        let (out, commit) = s.receive(batch)?;
        s.sync(commit)?;
        Ok(out)
    }

    fn store() -> (tempfile::TempDir, ChatStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ChatStore::open(&d.path().join("chat.db")).unwrap();
        (d, s)
    }

    /// A conversation's history page, last message and unread count are
    /// read through its index (a room's through `messages_by_room`), not
    /// by a walk through every message.
    #[test]
    fn a_conversation_is_read_through_its_index() {
        let (_d, s) = store();
        for (conv, index) in [
            (Conversation::Peer("bob"), "messages_by_peer"),
            (Conversation::Room("r1"), "messages_by_room"),
        ] {
            let rows = conv.rows();
            let queries = [
                format!(
                    "SELECT {COLUMNS} FROM messages WHERE {rows} AND seq < ?2 ORDER BY seq DESC"
                ),
                format!("SELECT max(seq), ?2 FROM messages WHERE {rows}"),
                format!(
                    "SELECT count(*) FROM messages
                     WHERE {rows} AND direction = 'in' AND event = '' AND seq > ?2"
                ),
            ];
            for sql in queries {
                let plan: Vec<String> =
                    s.db.with(|c| {
                        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                        let rows = st.query_map(params![conv.key(), 5], |r| r.get(3)).unwrap();
                        Ok(rows.map(Result::unwrap).collect())
                    })
                    .unwrap();
                assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
            }
        }
    }

    #[test]
    fn outbox_is_ordered_and_drains_on_ack() {
        let (_d, s) = store();
        let a = q(&s, "bob", "one").unwrap();
        let b = q(&s, "bob", "two").unwrap();
        q(&s, "carol", "three").unwrap();
        let out: Vec<_> = s
            .outbox("bob", 10)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(out, ["one", "two"]);
        let mut peers = s.outbox_peers().unwrap();
        peers.sort();
        assert_eq!(peers, ["bob", "carol"]);
        s.mark_sent("bob", &[a.seq, b.seq], true).unwrap();
        // Sent but unacknowledged: still to be retried.
        assert_eq!(s.outbox("bob", 10).unwrap().len(), 2);
        // A repeated acknowledgement changes nothing the second time.
        assert_eq!(s.mark_delivered("bob", &[a.seq, a.seq]).unwrap(), [a.seq]);
        let left = s.outbox("bob", 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state, MessageState::Sent);
        // A classic peer cannot acknowledge: sent is final.
        let c = q(&s, "dave", "x").unwrap();
        s.mark_sent("dave", &[c.seq], false).unwrap();
        assert!(s.outbox("dave", 10).unwrap().is_empty());
        assert_eq!(s.get(c.seq).unwrap().unwrap().state, MessageState::Sent);
    }

    #[test]
    fn duplicates_are_stored_once() {
        let (_d, s) = store();
        let m = |id: &str| Incoming {
            sender: "alice".into(),
            id: Some(id.into()),
            text: "hi".into(),
            verified: false,
        };
        let r = rx(&s, &[m("a1"), m("a1"), m("a2")]).unwrap();
        assert!(r[0].is_some() && r[1].is_none() && r[2].is_some());
        assert!(rx(&s, &[m("a2")]).unwrap()[0].is_none());
        // Classic messages have no id: each is new.
        let classic = Incoming {
            sender: "nc".into(),
            id: None,
            text: "yo".into(),
            verified: false,
        };
        assert!(rx(&s, &[classic.clone(), classic])
            .unwrap()
            .iter()
            .all(Option::is_some));
        assert_eq!(s.history("alice", None, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_version_1_database_is_carried_over() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("chat.db");
        {
            // The first schema, with what a node of that version stored.
            let c = super::super::open(&path, &MIGRATIONS[..1]).unwrap();
            c.execute_batch(
                "INSERT INTO messages (id, peer, direction, body, state, awaiting_ack, at)
                 VALUES ('x1', 'bob', 'out', 'queued one', 'queued', 0, 1),
                        ('r1', 'bob', 'in', 'got it', 'delivered', 0, 2),
                        ('x2', 'bob', 'out', 'unacked', 'sent', 1, 3);",
            )
            .unwrap();
        }
        let s = ChatStore::open(&path).unwrap();
        let h = s.history("bob", None, 10).unwrap();
        let texts: Vec<_> = h.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["queued one", "got it", "unacked"]);
        // What came in over plain connections stays a claim; ours is ours.
        let verified: Vec<_> = h.iter().map(|m| m.verified).collect();
        assert_eq!(verified, [true, false, true]);
        // The outbox is intact and new messages come after the old ones.
        assert_eq!(s.outbox("bob", 10).unwrap().len(), 2);
        let m = q(&s, "bob", "new").unwrap();
        assert!(m.seq > h[2].seq);
        // Received ids are still unique per peer; ours do not clash with them.
        let again = Incoming {
            sender: "bob".into(),
            id: Some("r1".into()),
            text: "got it".into(),
            verified: false,
        };
        assert!(rx(&s, &[again]).unwrap()[0].is_none());
        assert_eq!(s.mark_delivered("bob", &[h[2].seq]).unwrap(), [h[2].seq]);
        assert_eq!(s.outbox("bob", 10).unwrap().len(), 2); // "queued one", "new"
    }

    #[test]
    fn a_sync_covers_every_commit_before_it_and_only_those_need_one() {
        let (_d, s) = store();
        let fsyncs = || s.durable.fsyncs.load(Ordering::Relaxed);
        let (_, c1) = s.queue("bob", "one").unwrap();
        let (_, c2) = s
            .receive(&[Incoming {
                sender: "bob".into(),
                id: Some("b1".into()),
                text: "hi".into(),
                verified: false,
            }])
            .unwrap();
        assert!(c2 > c1);
        s.sync(c2).unwrap();
        assert_eq!(fsyncs(), 1);
        // The earlier commit was covered by that sync: no second fsync.
        s.sync(c1).unwrap();
        s.sync(c2).unwrap();
        assert_eq!(fsyncs(), 1);
        // State changes need none; the next acknowledged write does.
        s.mark_delivered("bob", &[1]).unwrap();
        let (_, c3) = s.queue("bob", "two").unwrap();
        s.sync(c3).unwrap();
        assert_eq!(fsyncs(), 2);
        // What was synced is in the WAL file SQLite recovers from.
        assert!(std::fs::metadata(&s.durable.wal).unwrap().len() > 0);
    }

    #[test]
    fn concurrent_senders_share_fsyncs_and_keep_every_message() {
        let (_d, s) = store();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| q(&s, "bob", &format!("{t}-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<ChatMessage> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        // Each caller got its own message back with the seq it was stored at.
        for m in &all {
            assert_eq!(s.get(m.seq).unwrap().as_ref(), Some(m));
        }
        all.sort_by_key(|m| m.seq);
        all.dedup_by_key(|m| m.seq);
        assert_eq!(all.len(), 400);
        // One caller's messages keep their order.
        let of3: Vec<u32> = all
            .iter()
            .filter_map(|m| m.text.strip_prefix("3-")?.parse().ok())
            .collect();
        assert_eq!(of3, (0..50).collect::<Vec<_>>());
        assert_eq!(s.outbox("bob", 1000).unwrap().len(), 400);
        // No more fsyncs than messages; fewer when senders overlapped.
        assert!(s.durable.fsyncs.load(Ordering::Relaxed) <= 400);
    }

    #[test]
    fn received_senders_are_claims_unless_verified() {
        let (_d, s) = store();
        let m = |id: &str, verified| Incoming {
            sender: "bob".into(),
            id: Some(id.into()),
            text: "hi".into(),
            verified,
        };
        let r = rx(&s, &[m("p1", false), m("s1", true)]).unwrap();
        assert!(!r[0].as_ref().unwrap().verified);
        assert!(r[1].as_ref().unwrap().verified);
        let h = s.history("bob", None, 10).unwrap();
        assert_eq!(
            h.iter().map(|m| m.verified).collect::<Vec<_>>(),
            [false, true]
        );
        assert!(q(&s, "bob", "mine").unwrap().verified);
        assert!(s.chats().unwrap()[0].last.as_ref().unwrap().verified);
    }

    #[test]
    fn history_pages_backwards() {
        let (_d, s) = store();
        for i in 0..25 {
            q(&s, "bob", &format!("m{i}")).unwrap();
        }
        let newest = s.history("bob", None, 10).unwrap();
        assert_eq!(newest.first().unwrap().text, "m15");
        assert_eq!(newest.last().unwrap().text, "m24");
        let older = s.history("bob", Some(newest[0].seq), 10).unwrap();
        assert_eq!(older.first().unwrap().text, "m5");
        let oldest = s.history("bob", Some(older[0].seq), 10).unwrap();
        assert_eq!(oldest.len(), 5);
        let chats = s.chats().unwrap();
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].count, 25);
        assert_eq!(chats[0].last.as_ref().unwrap().text, "m24");
    }

    fn incoming(from: &str, text: &str) -> Incoming {
        Incoming {
            sender: from.into(),
            id: None,
            text: text.into(),
            verified: true,
        }
    }

    #[test]
    fn read_marks_count_unread_and_never_move_back() {
        let (_d, s) = store();
        q(&s, "bob", "mine is never unread").unwrap();
        let got = rx(
            &s,
            &[
                incoming("bob", "one"),
                incoming("bob", "two"),
                incoming("bob", "three"),
            ],
        )
        .unwrap();
        let seqs: Vec<i64> = got.iter().map(|m| m.as_ref().unwrap().seq).collect();
        let chats = s.chats().unwrap();
        assert_eq!((chats[0].unread, chats[0].last_read), (3, 0));
        let st = s.mark_read("bob", seqs[1]).unwrap();
        assert_eq!((st.last_read, st.unread), (seqs[1], 1));
        // A lagging browser marks an older message: nothing moves back.
        let st = s.mark_read("bob", seqs[0]).unwrap();
        assert_eq!((st.last_read, st.unread), (seqs[1], 1));
        // Past the end is clamped to the last message.
        let st = s.mark_read("bob", i64::MAX).unwrap();
        assert_eq!((st.last_read, st.unread), (seqs[2], 0));
        rx(&s, &[incoming("bob", "four")]).unwrap();
        assert_eq!(s.read_state("bob").unwrap().unread, 1);
        assert_eq!(s.chats().unwrap()[0].unread, 1);
        // Another conversation is its own.
        rx(&s, &[incoming("carol", "hi")]).unwrap();
        assert_eq!(s.read_state("carol").unwrap().unread, 1);
        assert_eq!(s.read_state("nobody").unwrap().unread, 0);
    }

    #[test]
    fn search_finds_an_old_word_and_reads_nothing_typed_as_syntax() {
        let (_d, s) = store();
        rx(
            &s,
            &[incoming(
                "bob",
                "the checkpoint for round 3 is on the server",
            )],
        )
        .unwrap();
        let batch: Vec<Incoming> = (0..1000)
            .map(|i| incoming("carol", &format!("filler message number {i}")))
            .collect();
        rx(&s, &batch).unwrap();
        q(&s, "bob", "Thanks, downloading the CHECKPOINT now").unwrap();
        let hits = s.search("checkpoint", 10).unwrap();
        assert_eq!(hits.len(), 2);
        // Newest first; the match is marked in the snippet.
        assert_eq!(hits[0].message.direction, Direction::Out);
        assert!(
            hits[1]
                .snippet
                .contains(&format!("{SNIPPET_START}checkpoint{SNIPPET_END}")),
            "{}",
            hits[1].snippet
        );
        assert_eq!(hits[1].message.peer, "bob");
        // Every word must occur; the last one as a prefix.
        assert_eq!(s.search("checkpoint server", 10).unwrap().len(), 1);
        assert_eq!(s.search("round chec", 10).unwrap().len(), 1);
        assert_eq!(s.search("filler 99", 5).unwrap().len(), 5);
        // FTS5 syntax in what people type is only text.
        for typed in [
            "\"",
            "AND",
            "NOT checkpoint",
            "check*point",
            "(round",
            "round:3",
            "c++",
            "-",
            "",
        ] {
            s.search(typed, 10)
                .unwrap_or_else(|e| panic!("{typed:?}: {e}"));
        }
        assert_eq!(
            s.search("NOT checkpoint", 10).unwrap().len(),
            0,
            "NOT is a word, not an operator"
        );
        assert!(s.search("", 10).unwrap().is_empty());
    }

    #[test]
    fn a_version_3_database_gets_read_state_and_search_over_its_old_messages() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("chat.db");
        {
            let c = super::super::open(&path, &MIGRATIONS[..3]).unwrap();
            c.execute_batch(
                "INSERT INTO messages (id, peer, direction, body, state, awaiting_ack, at, verified)
                 VALUES ('r1', 'bob', 'in', 'the old dataset description', 'delivered', 0, 1, 1),
                        ('x1', 'bob', 'out', 'thanks', 'delivered', 0, 2, 1);",
            )
            .unwrap();
        }
        let s = ChatStore::open(&path).unwrap();
        let hits = s.search("dataset", 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].message.id, "r1");
        assert_eq!(s.chats().unwrap()[0].unread, 1);
        // New messages are indexed too.
        rx(&s, &[incoming("bob", "a new dataset")]).unwrap();
        assert_eq!(s.search("dataset", 10).unwrap().len(), 2);
    }

    #[test]
    fn fts_queries_quote_every_word() {
        assert_eq!(
            fts_query("hello world").as_deref(),
            Some("\"hello\" \"world\"*")
        );
        assert_eq!(fts_query("  ").as_deref(), None);
        assert_eq!(fts_query("a\"b").as_deref(), Some("\"a\" \"b\"*"));
        let long = "word ".repeat(100);
        assert_eq!(
            fts_query(&long).unwrap().matches('"').count(),
            2 * MAX_QUERY_WORDS
        );
    }
}
