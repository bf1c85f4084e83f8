//! Rooms in the chat store (issue 16): the rooms, their members, their
//! messages (rows of `messages` with `room` set) and the room outbox (one
//! row per member still to reach). A room's member list is the merge of
//! every member list its frames carried ([`room::merge`]); a post goes to
//! the members present in it when the post is made.

use std::collections::HashMap;

use roundtable_shared::api::{
    ChatMessage, Direction, MessageState, ReadState, RoomMember, RoomSummary,
};
use roundtable_shared::room::{self, Member, RoomEvent, RoomFrame, RoomHeader};
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    columns_of, mark_read, new_id, now_ms, page, row, ChatStore, Commit, Conversation, NCOLS,
};
use crate::store::{Context, StoreError};

/// A room as this node keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: String,
    pub name: String,
    /// The training's UUID, for a training's own room.
    pub training: Option<String>,
    pub created_at: i64,
    /// Every entry, in name order.
    pub members: Vec<Member>,
}

impl Room {
    /// Whether `name` is in the room now.
    pub fn is_member(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name && m.present)
    }

    /// Who a message of `me` goes to: every present member but `me`.
    pub fn recipients(&self, me: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.present && m.name != me)
            .map(|m| m.name.clone())
            .collect()
    }

    /// The header of a frame about this room. It is a training's room
    /// when this node stored it as one (`training`), whatever its id.
    pub fn header(&self, event: RoomEvent, subject: Option<String>) -> RoomHeader {
        RoomHeader {
            room: self.id.clone(),
            name: self.name.clone(),
            training: self.training.is_some(),
            event,
            subject,
            members: self.members.clone(),
        }
    }
}

/// Why a room action of ours is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomRefused {
    #[error("this node has no room {0}")]
    Unknown(String),
    #[error("you are not in this room (you left it): nothing can be sent there")]
    NotIn,
    #[error("a room with this id exists already")]
    Exists,
}

/// A store result whose action may also be refused.
pub type Refusable<T> = Result<Result<T, RoomRefused>, StoreError>;

/// Where our room messages just stored go: the members with an outbox
/// row for them (whose delivery workers to wake), each once, in name
/// order; and the commit to [`sync`](ChatStore::sync) before telling
/// the browser they are accepted.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "wake the recipients' workers and sync the commit"]
pub struct Queued {
    pub to: Vec<String>,
    pub commit: Commit,
}

/// What [`ChatStore::receive_room`] made of the frames it was given.
#[derive(Debug)]
#[must_use = "announce what is new, wake `told`'s workers and sync the commit"]
pub struct RoomsReceived {
    /// What became of each frame, in order.
    pub received: Vec<RoomReceived>,
    /// The rooms that changed (made, members changed).
    pub changed: Vec<String>,
    /// Those our leave was queued to: they turned up in a room we left
    /// (see [`tell_we_left`]).
    pub told: Vec<String>,
    pub commit: Commit,
}

/// What became of a received room frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomReceived {
    /// Stored (and new): announce it.
    Stored(ChatMessage),
    /// Had it already (a retry): acknowledge again, nothing else.
    Duplicate,
    /// Not taken (`why`): acknowledged all the same, so that the sender
    /// stops retrying what will never be taken.
    Dropped(&'static str),
}

/// How a room message's `event` column reads back.
pub fn event_column(event: RoomEvent, subject: Option<&str>) -> String {
    match (event, subject) {
        (RoomEvent::Post, _) => String::new(),
        (RoomEvent::Added, Some(s)) => format!("added:{s}"),
        (RoomEvent::Added, None) => "added:".into(),
        (RoomEvent::Left, _) => "left".into(),
    }
}

/// The sentence shown for an event.
pub fn event_sentence(actor: &str, event: RoomEvent, subject: Option<&str>) -> String {
    match event {
        RoomEvent::Post => String::new(),
        RoomEvent::Added => format!("{actor} added {}", subject.unwrap_or("someone")),
        RoomEvent::Left => format!("{actor} left"),
    }
}

/// Most rooms one peer can make known on this node (rooms it invited us
/// to): past this its invitations are dropped, so that a peer cannot fill
/// the store with rooms.
pub const MAX_ROOMS_PER_INVITER: i64 = 256;

fn load(c: &Connection, id: &str) -> Result<Option<Room>, StoreError> {
    let head: Option<(String, Option<String>, i64)> = c
        .prepare_cached("SELECT name, training, created_at FROM rooms WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .ctx("reading room")?;
    let Some((name, training, created_at)) = head else {
        return Ok(None);
    };
    let mut st = c
        .prepare_cached(
            "SELECT name, present, clock FROM room_members WHERE room = ?1 ORDER BY name",
        )
        .ctx("reading room members")?;
    let members = st
        .query_map([id], |r| {
            Ok(Member {
                name: r.get(0)?,
                present: r.get(1)?,
                clock: r.get::<_, i64>(2)? as u64,
            })
        })
        .ctx("reading room members")?
        .collect::<Result<Vec<_>, _>>()
        .ctx("reading room members")?;
    Ok(Some(Room {
        id: id.to_owned(),
        name,
        training,
        created_at,
        members,
    }))
}

fn put_member(c: &Connection, room: &str, m: &Member) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO room_members (room, name, present, clock) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room, name) DO UPDATE SET present = excluded.present, clock = excluded.clock",
    )
    .and_then(|mut st| st.execute(params![room, m.name, m.present, m.clock as i64]))
    .ctx("storing room member")?;
    Ok(())
}

fn insert_room(
    c: &Connection,
    id: &str,
    name: &str,
    training: Option<&str>,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "INSERT INTO rooms (id, name, training, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut st| st.execute(params![id, name, training, now_ms()]))
        .ctx("creating room")?;
    Ok(n == 1)
}

/// Stores one of our room messages and its outbox rows (one per
/// recipient), in the caller's transaction. Returns it and its
/// recipients.
fn insert_ours(
    c: &Connection,
    me: &str,
    room: &Room,
    body: &str,
    event: &str,
) -> Result<(ChatMessage, Vec<String>), StoreError> {
    let id = new_id();
    let at = now_ms();
    let to = room.recipients(me);
    let state = if to.is_empty() {
        MessageState::Delivered
    } else {
        MessageState::Queued
    };
    c.prepare_cached(
        "INSERT INTO messages (id, peer, direction, body, state, awaiting_ack, at, verified, room, event)
         VALUES (?1, ?2, 'out', ?3, ?4, 0, ?5, 1, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            id,
            me,
            body,
            if to.is_empty() { "delivered" } else { "queued" },
            at,
            room.id,
            event
        ])
    })
    .ctx("storing room message")?;
    let seq = c.last_insert_rowid();
    let mut st = c
        .prepare_cached("INSERT INTO room_outbox (member, seq) VALUES (?1, ?2)")
        .ctx("queueing room message")?;
    for member in &to {
        st.execute(params![member, seq])
            .ctx("queueing room message")?;
    }
    let msg = ChatMessage {
        seq,
        id,
        peer: me.to_owned(),
        direction: Direction::Out,
        text: body.to_owned(),
        state,
        at,
        verified: true,
        room: Some(room.id.clone()),
        event: !event.is_empty(),
    };
    Ok((msg, to))
}

/// When we (`me`) left `room` and `names` just turned up in its member
/// list here: queues our leave to each of them, so that they hear it
/// from us, the only one they take it from ([`room::merge`]). Someone
/// may turn up after we left when a training's node learns of a
/// participant late, or when a member added someone as we left: without
/// this they would keep us in the room for good. Returns who it is
/// queued to (none while we are in the room).
fn tell_we_left(
    c: &Connection,
    me: &str,
    room: &str,
    names: &[&str],
) -> Result<Vec<String>, StoreError> {
    let others: Vec<&str> = names.iter().copied().filter(|n| *n != me).collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let gone = c
        .prepare_cached("SELECT present = 0 FROM room_members WHERE room = ?1 AND name = ?2")
        .and_then(|mut st| st.query_row(params![room, me], |r| r.get(0)).optional())
        .ctx("reading whether we left")?
        .unwrap_or(false);
    if !gone {
        return Ok(Vec::new());
    }
    let leave: Option<i64> = c
        .prepare_cached(
            "SELECT max(seq) FROM messages
             WHERE room = ?1 AND room != '' AND direction = 'out' AND event = 'left'",
        )
        .and_then(|mut st| st.query_row([room], |r| r.get(0)))
        .ctx("finding our leave")?;
    let Some(seq) = leave else {
        return Ok(Vec::new());
    };
    let mut to = Vec::new();
    for n in others {
        let queued = c
            .prepare_cached(
                "INSERT INTO room_outbox (member, seq) VALUES (?1, ?2)
                 ON CONFLICT (member, seq) DO NOTHING",
            )
            .and_then(|mut st| st.execute(params![n, seq]))
            .ctx("queueing our leave")?
            > 0;
        if queued {
            to.push(n.to_owned());
        }
    }
    Ok(to)
}

/// The query of [`summaries`]: the message columns of each room's last
/// message (NULL without one), then the room's own, its read mark, its
/// count and unread count. `room != ''` beside `room = r.id` lets SQLite
/// use the index of room messages (a partial one).
fn summaries_sql(only: Option<&str>) -> String {
    format!(
        "SELECT {cols}, r.id, r.name, r.training, r.created_at, coalesce(rm.seq, 0),
                (SELECT count(*) FROM messages n WHERE n.room = r.id AND n.room != ''),
                (SELECT count(*) FROM messages u
                 WHERE u.room = r.id AND u.room != '' AND u.direction = 'in' AND u.event = ''
                   AND u.seq > coalesce(rm.seq, 0))
         FROM rooms r
         LEFT JOIN read_marks rm ON rm.peer = '#' || r.id
         LEFT JOIN messages m
           ON m.seq = (SELECT max(seq) FROM messages l WHERE l.room = r.id AND l.room != '')
         {filter}
         ORDER BY coalesce(m.seq, 0) DESC, r.created_at DESC",
        cols = columns_of("m"),
        filter = if only.is_some() {
            "WHERE r.id = ?1"
        } else {
            ""
        },
    )
}

/// The summaries of every room (`only` `None`) or of room `only`, the
/// most recently active first: two queries however many rooms there
/// are, one for the rooms with their last message, counts and read
/// marks, one for all their members.
fn summaries(c: &Connection, me: &str, only: Option<&str>) -> Result<Vec<RoomSummary>, StoreError> {
    let mut st = c
        .prepare_cached(&summaries_sql(only))
        .ctx("listing rooms")?;
    let read = |r: &rusqlite::Row<'_>| {
        let last = match r.get::<_, Option<i64>>(0)? {
            Some(_) => Some(row(r)?),
            None => None,
        };
        Ok(RoomSummary {
            id: r.get(NCOLS)?,
            name: r.get(NCOLS + 1)?,
            training: r.get(NCOLS + 2)?,
            created_at: r.get(NCOLS + 3)?,
            last_read: r.get(NCOLS + 4)?,
            count: r.get::<_, i64>(NCOLS + 5)? as u64,
            unread: r.get::<_, i64>(NCOLS + 6)? as u64,
            last,
            joined: false,
            members: Vec::new(),
        })
    };
    let mut rooms: Vec<RoomSummary> = match only {
        Some(id) => st.query_map([id], read),
        None => st.query_map([], read),
    }
    .and_then(|rows| rows.collect())
    .ctx("listing rooms")?;
    let mut st = c
        .prepare_cached(&format!(
            "SELECT room, name, present FROM room_members {} ORDER BY room, name",
            if only.is_some() {
                "WHERE room = ?1"
            } else {
                ""
            }
        ))
        .ctx("listing room members")?;
    let member = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, String>(0)?,
            RoomMember {
                name: r.get(1)?,
                present: r.get(2)?,
            },
        ))
    };
    let mut members: HashMap<String, Vec<RoomMember>> = HashMap::new();
    let rows: Vec<(String, RoomMember)> = match only {
        Some(id) => st.query_map([id], member),
        None => st.query_map([], member),
    }
    .and_then(|rows| rows.collect())
    .ctx("listing room members")?;
    for (room, m) in rows {
        members.entry(room).or_default().push(m);
    }
    for r in &mut rooms {
        r.members = members.remove(&r.id).unwrap_or_default();
        r.joined = r.members.iter().any(|m| m.present && m.name == me);
    }
    Ok(rooms)
}

impl ChatStore {
    /// The room `id`.
    pub fn room(&self, id: &str) -> Result<Option<Room>, StoreError> {
        self.db.with(|c| load(c, id))
    }

    /// Creates a room of ours: `me` and `others` in it (clock 1), and an
    /// `added` message for each of `others`, queued for all of them.
    /// Returns the room and the messages.
    pub fn create_room(
        &self,
        me: &str,
        id: &str,
        name: &str,
        others: &[String],
    ) -> Refusable<(Room, Vec<ChatMessage>, Queued)> {
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting create room")?;
            if !insert_room(&tx, id, name, None)? {
                return Ok(Err(RoomRefused::Exists));
            }
            for n in std::iter::once(me).chain(others.iter().map(String::as_str)) {
                let m = Member {
                    name: n.to_owned(),
                    present: true,
                    clock: 1,
                };
                put_member(&tx, id, &m)?;
            }
            let room = load(&tx, id)?.expect("just made");
            let (mut made, mut to) = (Vec::new(), Vec::new());
            for o in others {
                let body = event_sentence(me, RoomEvent::Added, Some(o));
                let ev = event_column(RoomEvent::Added, Some(o));
                let (msg, these) = insert_ours(&tx, me, &room, &body, &ev)?;
                made.push(msg);
                to.extend(these);
            }
            to.sort();
            to.dedup();
            tx.commit().ctx("committing create room")?;
            let commit = self.committed();
            Ok(Ok((room, made, Queued { to, commit })))
        })
    }

    /// Makes sure a training's room exists with us (`me`) and `names` in
    /// it (entries of clock 0, which every participant's node makes
    /// alike, so they need no message; a name with an entry already keeps
    /// it, so someone who left stays out). Returns whether anything
    /// changed, and where our leave now goes if we left the room before
    /// some of `names` were known here (see [`tell_we_left`]).
    pub fn ensure_training_room(
        &self,
        me: &str,
        id: &str,
        name: &str,
        uuid: &str,
        names: &[&str],
    ) -> Result<(bool, Queued), StoreError> {
        self.training_room_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting training room")?;
            let mut changed = insert_room(&tx, id, name, Some(uuid))?;
            changed |= tx
                .execute(
                    "UPDATE rooms SET training = ?2 WHERE id = ?1 AND training IS NOT ?2",
                    params![id, uuid],
                )
                .ctx("marking training room")?
                > 0;
            let mut new = Vec::new();
            for n in std::iter::once(&me).chain(names) {
                let added = tx
                    .prepare_cached(
                        "INSERT INTO room_members (room, name, present, clock) VALUES (?1, ?2, 1, 0)
                         ON CONFLICT (room, name) DO NOTHING",
                    )
                    .and_then(|mut st| st.execute(params![id, n]))
                    .ctx("adding participant")?
                    > 0;
                if added {
                    new.push(*n);
                }
            }
            changed |= !new.is_empty();
            let to = tell_we_left(&tx, me, id, &new)?;
            tx.commit().ctx("committing training room")?;
            Ok((
                changed,
                Queued {
                    to,
                    commit: self.committed(),
                },
            ))
        })
    }

    /// One of our messages in `room`: a post (`change` `None`), or a
    /// change of our making (someone added, us leaving) with its event.
    /// The change applies first, so that an added member gets the
    /// message that says so and a leaver's last message still goes to
    /// everyone. Refused (`Conflict`) unless we are in the room. Returns
    /// the message and where it goes.
    pub fn room_post(
        &self,
        me: &str,
        room: &str,
        text: &str,
        change: Option<(Member, RoomEvent)>,
    ) -> Refusable<(ChatMessage, Queued)> {
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting room post")?;
            let Some(mut r) = load(&tx, room)? else {
                return Ok(Err(RoomRefused::Unknown(room.to_owned())));
            };
            if !r.is_member(me) {
                return Ok(Err(RoomRefused::NotIn));
            }
            // Recipients are those present before a leave, after an add.
            let before = r.clone();
            let (body, event) = match change {
                None => (text.to_owned(), String::new()),
                Some((m, event)) => {
                    let subject = (event == RoomEvent::Added).then_some(m.name.as_str());
                    let body = event_sentence(me, event, subject);
                    let ev = event_column(event, subject);
                    put_member(&tx, room, &m)?;
                    r = load(&tx, room)?.expect("still there");
                    (body, ev)
                }
            };
            let to = if event == "left" { &before } else { &r };
            let (msg, to) = insert_ours(&tx, me, to, &body, &event)?;
            tx.commit().ctx("committing room post")?;
            Ok(Ok((
                msg,
                Queued {
                    to,
                    commit: self.committed(),
                },
            )))
        })
    }

    /// What a room message of ours is, to send it again: its event and
    /// subject.
    pub fn room_event_of(&self, seq: i64) -> Result<(RoomEvent, Option<String>), StoreError> {
        let ev: String = self
            .db
            .with(|c| {
                c.query_row("SELECT event FROM messages WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })
                .optional()
                .ctx("reading room message")
            })?
            .unwrap_or_default();
        Ok(match ev.split_once(':') {
            Some(("added", who)) => (RoomEvent::Added, Some(who.to_owned())),
            _ if ev == "left" => (RoomEvent::Left, None),
            _ => (RoomEvent::Post, None),
        })
    }

    /// Stores room frames received from their (proven) senders, in one
    /// transaction: each frame's member list is merged into the room's
    /// (the room is made when a frame first names it and lists `me`);
    /// the message is kept if its sender is in the room, else dropped.
    /// [`sync`](Self::sync) the commit before acknowledging.
    pub fn receive_room(
        &self,
        me: &str,
        frames: &[RoomFrame],
    ) -> Result<RoomsReceived, StoreError> {
        let at = now_ms();
        self.db.with(|c| {
            let tx = c.transaction().ctx("starting room receive")?;
            let mut out = Vec::with_capacity(frames.len());
            let mut changed_rooms: Vec<String> = Vec::new();
            let mut told: Vec<String> = Vec::new();
            for f in frames {
                let h = &f.header;
                let mut changed = false;
                let mut r = match load(&tx, &h.room)? {
                    Some(r) => r,
                    None => {
                        let listed = h.members.iter().any(|m| m.name == me && m.present);
                        if !listed {
                            out.push(RoomReceived::Dropped("a room we are not in"));
                            continue;
                        }
                        let invited: i64 = tx
                            .prepare_cached("SELECT count(*) FROM rooms WHERE invited_by = ?1")
                            .and_then(|mut st| st.query_row([&f.sender], |r| r.get(0)))
                            .ctx("counting invitations")?;
                        if invited >= MAX_ROOMS_PER_INVITER {
                            out.push(RoomReceived::Dropped("too many rooms from this peer"));
                            continue;
                        }
                        insert_room(&tx, &h.room, &h.name, None)?;
                        tx.execute(
                            "UPDATE rooms SET invited_by = ?2 WHERE id = ?1",
                            params![h.room, f.sender],
                        )
                        .ctx("recording the invitation")?;
                        changed = true;
                        load(&tx, &h.room)?.expect("just made")
                    }
                };
                let merged = room::merge(&mut r.members, &h.members, &f.sender);
                for m in &merged.changed {
                    put_member(&tx, &r.id, m)?;
                    changed = true;
                }
                let came: Vec<&str> = merged
                    .changed
                    .iter()
                    .filter(|m| m.present)
                    .map(|m| m.name.as_str())
                    .collect();
                for n in tell_we_left(&tx, me, &r.id, &came)? {
                    if !told.contains(&n) {
                        told.push(n);
                    }
                }
                if changed && !changed_rooms.contains(&r.id) {
                    changed_rooms.push(r.id.clone());
                }
                let sender_in = r.is_member(&f.sender);
                if !sender_in && h.event != RoomEvent::Left {
                    out.push(RoomReceived::Dropped("its sender is not in the room"));
                    continue;
                }
                let subject = h.subject.as_deref();
                let (body, event) = match h.event {
                    RoomEvent::Post => (f.text.clone(), String::new()),
                    e => (event_sentence(&f.sender, e, subject), event_column(e, subject)),
                };
                let n = tx
                    .prepare_cached(
                        "INSERT INTO messages (id, peer, direction, body, state, at, verified, room, event)
                         VALUES (?1, ?2, 'in', ?3, 'delivered', ?4, 1, ?5, ?6)
                         ON CONFLICT (peer, id) WHERE direction = 'in' DO NOTHING",
                    )
                    .and_then(|mut st| st.execute(params![f.id, f.sender, body, at, r.id, event]))
                    .ctx("storing room message")?;
                out.push(if n == 1 {
                    RoomReceived::Stored(ChatMessage {
                        seq: tx.last_insert_rowid(),
                        id: f.id.clone(),
                        peer: f.sender.clone(),
                        direction: Direction::In,
                        text: body,
                        state: MessageState::Delivered,
                        at,
                        verified: true,
                        room: Some(r.id.clone()),
                        event: !event.is_empty(),
                    })
                } else {
                    RoomReceived::Duplicate
                });
            }
            tx.commit().ctx("committing room receive")?;
            Ok(RoomsReceived {
                received: out,
                changed: changed_rooms,
                told,
                commit: self.committed(),
            })
        })
    }

    /// Every room, the most recently active first (a constant number of
    /// queries, however many rooms).
    pub fn rooms(&self, me: &str) -> Result<Vec<RoomSummary>, StoreError> {
        self.db.with(|c| summaries(c, me, None))
    }

    /// One room's summary.
    pub fn room_summary(&self, me: &str, id: &str) -> Result<Option<RoomSummary>, StoreError> {
        self.db.with(|c| Ok(summaries(c, me, Some(id))?.pop()))
    }

    /// A page of a room's messages: up to `limit` before `before` (a seq;
    /// `None` for the newest), oldest first.
    pub fn room_history(
        &self,
        room: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.db
            .with(|c| page(c, Conversation::Room(room), before, limit))
    }

    /// Marks a room read up to `seq` (never back; see `mark_read`).
    pub fn mark_room_read(&self, room: &str, seq: i64) -> Result<ReadState, StoreError> {
        self.db
            .with(|c| mark_read(c, Conversation::Room(room), seq))
    }

    /// How many times [`ensure_training_room`](Self::ensure_training_room)
    /// ran (a write transaction each; diagnostics, tests).
    pub fn training_room_writes(&self) -> u64 {
        self.training_room_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Members still to reach with our room message `seq` (tests,
    /// diagnostics).
    pub fn room_pending(&self, seq: i64) -> Result<Vec<String>, StoreError> {
        self.db.with(|c| {
            c.prepare_cached("SELECT member FROM room_outbox WHERE seq = ?1 ORDER BY member")
                .and_then(|mut st| {
                    st.query_map([seq], |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .ctx("reading room outbox")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ChatStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ChatStore::open(&d.path().join("chat.db")).unwrap();
        (d, s)
    }

    fn m(name: &str, present: bool, clock: u64) -> Member {
        Member {
            name: name.into(),
            present,
            clock,
        }
    }

    fn frame(sender: &str, id: &str, room: &str, members: Vec<Member>, text: &str) -> RoomFrame {
        RoomFrame {
            sender: sender.into(),
            id: id.into(),
            header: RoomHeader {
                room: room.into(),
                name: "wg".into(),
                training: false,
                event: RoomEvent::Post,
                subject: None,
                members,
            },
            text: text.into(),
        }
    }

    #[test]
    fn a_post_waits_for_every_member_and_is_delivered_once_all_have_it() {
        let (_d, s) = store();
        let (room, made, queued) = s
            .create_room("alice", "r1", "wg", &["bob".into(), "carol".into()])
            .unwrap()
            .unwrap();
        assert_eq!(room.recipients("alice"), ["bob", "carol"]);
        assert_eq!(made.len(), 2, "one line per member added");
        assert_eq!(queued.to, ["bob", "carol"], "each worker to wake once");
        for line in &made {
            assert_eq!(s.room_pending(line.seq).unwrap(), queued.to);
        }
        let (post, queued) = s.room_post("alice", "r1", "hello", None).unwrap().unwrap();
        assert_eq!(post.room.as_deref(), Some("r1"));
        assert_eq!(s.room_pending(post.seq).unwrap(), ["bob", "carol"]);
        assert_eq!(queued.to, ["bob", "carol"]);
        // Bob's outbox holds the room's lines and the post, in order; a
        // direct message to bob comes after them.
        let _ = s.queue("bob", "direct").unwrap();
        let texts: Vec<_> = s
            .outbox("bob", 10)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            texts,
            ["alice added bob", "alice added carol", "hello", "direct"]
        );
        assert!(s.outbox_peers().unwrap().contains(&"carol".to_owned()));
        s.mark_sent("bob", &[post.seq], true).unwrap();
        assert_eq!(s.get(post.seq).unwrap().unwrap().state, MessageState::Sent);
        assert!(s.mark_delivered("bob", &[post.seq]).unwrap().is_empty());
        // Carol is a classic peer: written is final, and that was the last.
        assert_eq!(
            s.mark_sent("carol", &[post.seq], false).unwrap(),
            [post.seq]
        );
        assert_eq!(
            s.get(post.seq).unwrap().unwrap().state,
            MessageState::Delivered
        );
        assert!(s.room_pending(post.seq).unwrap().is_empty());
        // A room's messages are not a direct conversation with anyone.
        assert!(s.history("alice", None, 10).unwrap().is_empty());
        assert_eq!(s.room_history("r1", None, 10).unwrap().len(), 3);
        // Adding someone: the line goes to them too.
        let add = m("dave", true, room::next_clock(&room.members));
        let (line, queued) = s
            .room_post("alice", "r1", "", Some((add, RoomEvent::Added)))
            .unwrap()
            .unwrap();
        assert_eq!(line.text, "alice added dave");
        assert_eq!(queued.to, ["bob", "carol", "dave"]);
        assert_eq!(s.room_pending(line.seq).unwrap(), queued.to);
    }

    #[test]
    fn received_frames_follow_the_room_rules() {
        let (_d, s) = store();
        let ab = vec![m("alice", true, 1), m("bob", true, 1)];
        // A room that does not list us is not made.
        let RoomsReceived {
            received: r,
            changed,
            ..
        } = s
            .receive_room("carol", &[frame("alice", "a1", "r1", ab.clone(), "hi")])
            .unwrap();
        assert!(matches!(r[0], RoomReceived::Dropped(_)));
        assert!(changed.is_empty() && s.room("r1").unwrap().is_none());
        // Listed: made, stored once, however often it comes.
        let RoomsReceived {
            received: r,
            changed,
            ..
        } = s
            .receive_room(
                "bob",
                &[
                    frame("alice", "a1", "r1", ab.clone(), "hi"),
                    frame("alice", "a1", "r1", ab.clone(), "hi"),
                ],
            )
            .unwrap();
        assert!(matches!(&r[0], RoomReceived::Stored(m) if m.text == "hi" && m.peer == "alice"));
        assert_eq!(r[1], RoomReceived::Duplicate);
        assert_eq!(changed, ["r1"]);
        // Someone not in the room cannot post in it.
        let r = s
            .receive_room("bob", &[frame("mallory", "m1", "r1", ab.clone(), "spam")])
            .unwrap()
            .received;
        assert!(matches!(r[0], RoomReceived::Dropped(_)));
        // Alice says mallory left: only mallory could say that; and alice
        // cannot make bob leave either.
        let _ = s
            .receive_room(
                "bob",
                &[frame(
                    "alice",
                    "a2",
                    "r1",
                    vec![m("alice", true, 1), m("bob", false, 5)],
                    "bye bob",
                )],
            )
            .unwrap();
        assert!(s.room("r1").unwrap().unwrap().is_member("bob"));
        // Reading: unread counts what others wrote, not room lines.
        let summary = s.room_summary("bob", "r1").unwrap().unwrap();
        assert_eq!(
            (summary.count, summary.unread, summary.joined),
            (2, 2, true)
        );
        let last = summary.last.unwrap().seq;
        let read = s.mark_room_read("r1", last).unwrap();
        assert_eq!((read.unread, read.room.as_deref()), (0, Some("r1")));
        // A room's read mark is not a direct conversation's.
        assert!(s.chats().unwrap().is_empty());
    }

    #[test]
    fn a_peer_can_make_only_so_many_rooms_known_here() {
        let (_d, s) = store();
        let us = vec![m("mallory", true, 1), m("bob", true, 1)];
        let frames: Vec<RoomFrame> = (0..MAX_ROOMS_PER_INVITER + 2)
            .map(|i| {
                frame(
                    "mallory",
                    &format!("m{i}"),
                    &format!("r{i}"),
                    us.clone(),
                    "hi",
                )
            })
            .collect();
        let r = s.receive_room("bob", &frames).unwrap().received;
        let stored = r
            .iter()
            .filter(|x| matches!(x, RoomReceived::Stored(_)))
            .count();
        assert_eq!(stored as i64, MAX_ROOMS_PER_INVITER);
        assert_eq!(
            r.last(),
            Some(&RoomReceived::Dropped("too many rooms from this peer"))
        );
        // Someone else still can, and mallory can still post in hers.
        let r = s
            .receive_room(
                "bob",
                &[
                    frame(
                        "carol",
                        "c1",
                        "rc",
                        vec![m("carol", true, 1), m("bob", true, 1)],
                        "hi",
                    ),
                    frame("mallory", "m-again", "r0", us.clone(), "again"),
                ],
            )
            .unwrap()
            .received;
        assert!(
            r.iter().all(|x| matches!(x, RoomReceived::Stored(_))),
            "{r:?}"
        );
    }

    /// Alice makes room r1 with bob, then leaves it: her line, and where
    /// it goes.
    fn alice_made_r1_with_bob_and_left(s: &ChatStore) -> (ChatMessage, Queued) {
        let _ = s
            .create_room("alice", "r1", "wg", &["bob".into()])
            .unwrap()
            .unwrap();
        let r1 = s.room("r1").unwrap().unwrap();
        let leave = m("alice", false, room::next_clock(&r1.members));
        s.room_post("alice", "r1", "", Some((leave, RoomEvent::Left)))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn leaving_tells_everyone_then_nothing_can_be_posted() {
        let (_d, s) = store();
        let (line, queued) = alice_made_r1_with_bob_and_left(&s);
        assert_eq!(line.text, "alice left");
        assert!(line.event);
        assert_eq!(s.room_pending(line.seq).unwrap(), ["bob"]);
        assert_eq!(queued.to, ["bob"], "the leaver's line goes to the others");
        assert_eq!(s.room_event_of(line.seq).unwrap(), (RoomEvent::Left, None));
        assert_eq!(
            s.room_post("alice", "r1", "still here?", None).unwrap(),
            Err(RoomRefused::NotIn)
        );
        assert!(!s.room_summary("alice", "r1").unwrap().unwrap().joined);
    }

    #[test]
    fn who_turns_up_in_a_room_we_left_is_told_we_left() {
        let (_d, s) = store();
        let (line, _) = alice_made_r1_with_bob_and_left(&s);
        assert_eq!(s.mark_sent("bob", &[line.seq], false).unwrap(), [line.seq]);
        // Bob added carol as we left (his frame still lists us in).
        let then = vec![m("alice", true, 1), m("bob", true, 1), m("carol", true, 3)];
        let mut add = frame("bob", "b1", "r1", then, "");
        add.header.event = RoomEvent::Added;
        add.header.subject = Some("carol".into());
        let got = s.receive_room("alice", std::slice::from_ref(&add)).unwrap();
        assert_eq!(got.told, ["carol"], "our leave goes to carol");
        assert_eq!(s.room_pending(line.seq).unwrap(), ["carol"]);
        assert!(!s.room("r1").unwrap().unwrap().is_member("alice"));
        // Once is enough.
        assert!(s.receive_room("alice", &[add]).unwrap().told.is_empty());
        // In a training's room: a participant known only after we left.
        let t = "t-1";
        let _ = s
            .ensure_training_room("alice", t, "Training x", "uuid-1", &[])
            .unwrap();
        let (line, _) = s
            .room_post(
                "alice",
                t,
                "",
                Some((m("alice", false, 1), RoomEvent::Left)),
            )
            .unwrap()
            .unwrap();
        let (changed, told) = s
            .ensure_training_room("alice", t, "Training x", "uuid-1", &["bob"])
            .unwrap();
        assert!(changed);
        assert_eq!(told.to, ["bob"]);
        assert_eq!(s.room_pending(line.seq).unwrap(), ["bob"]);
        let (_, told) = s
            .ensure_training_room("alice", t, "Training x", "uuid-1", &["bob"])
            .unwrap();
        assert!(told.to.is_empty());
        // While we are in a room, nobody is told anything.
        let _ = s
            .ensure_training_room("alice", "t-2", "Training y", "uuid-2", &[])
            .unwrap();
        let (_, told) = s
            .ensure_training_room("alice", "t-2", "Training y", "uuid-2", &["bob"])
            .unwrap();
        assert!(told.to.is_empty());
    }

    #[test]
    fn a_training_room_keeps_who_left_out_when_participants_are_seen_again() {
        let (_d, s) = store();
        assert!(
            s.ensure_training_room("me", "t-1", "Training x", "uuid-1", &["bob"])
                .unwrap()
                .0
        );
        assert!(
            !s.ensure_training_room("me", "t-1", "Training x", "uuid-1", &["bob"])
                .unwrap()
                .0
        );
        // Bob leaves (his own frame); seen as a participant again, he stays out.
        let _ = s
            .receive_room(
                "me",
                &[RoomFrame {
                    header: RoomHeader {
                        event: RoomEvent::Left,
                        training: true,
                        ..frame("bob", "b1", "t-1", vec![m("bob", false, 1)], "").header
                    },
                    ..frame("bob", "b1", "t-1", vec![], "")
                }],
            )
            .unwrap();
        let _ = s
            .ensure_training_room("me", "t-1", "Training x", "uuid-1", &["bob"])
            .unwrap();
        let room = s.room("t-1").unwrap().unwrap();
        assert_eq!(room.training.as_deref(), Some("uuid-1"));
        assert!(room.is_member("me") && !room.is_member("bob"));
    }

    #[test]
    fn a_frame_says_training_room_only_of_a_room_stored_as_one() {
        let (_d, s) = store();
        // A peer's room whose id merely looks like a training room's.
        let _ = s
            .receive_room(
                "bob",
                &[frame(
                    "alice",
                    "a1",
                    "t-not-a-training",
                    vec![m("alice", true, 1), m("bob", true, 1)],
                    "hi",
                )],
            )
            .unwrap();
        let lookalike = s.room("t-not-a-training").unwrap().unwrap();
        assert_eq!(lookalike.training, None);
        assert!(!lookalike.header(RoomEvent::Post, None).training);
        // A training's room is one, by what is stored.
        let id = room::training_room_id("uuid-1");
        let _ = s
            .ensure_training_room("bob", &id, "Training x", "uuid-1", &["alice"])
            .unwrap();
        let t = s.room(&id).unwrap().unwrap();
        assert!(t.header(RoomEvent::Post, None).training);
    }

    #[test]
    fn three_hundred_rooms_are_listed_with_their_members_unread_counts_and_order() {
        let (_d, s) = store();
        let peers = ["p0", "p1", "p2", "p3", "p4"];
        // What each room should show: present members, count, unread,
        // the seq of its last message.
        struct Want {
            id: String,
            present: Vec<String>,
            absent: Vec<String>,
            count: u64,
            unread: u64,
            last: i64,
        }
        let mut want: Vec<Want> = Vec::new();
        for i in 0..300usize {
            let id = format!("r{i:03}");
            let (a, b) = (peers[i % 5], peers[(i + 1 + i / 5 % 4) % 5]);
            let (_, made, _) = s
                .create_room("me", &id, &format!("room {i}"), &[a.into(), b.into()])
                .unwrap()
                .unwrap();
            let mut w = Want {
                id: id.clone(),
                present: {
                    let mut p = vec!["me".to_owned(), a.to_owned(), b.to_owned()];
                    p.sort();
                    p
                },
                absent: Vec::new(),
                count: made.len() as u64,
                unread: 0,
                last: made.last().unwrap().seq,
            };
            let members = vec![m("me", true, 1), m(a, true, 1), m(b, true, 1)];
            // Some rooms get posts from `a` (unread), some of them read in part.
            let posts = i % 4;
            let mut seqs = Vec::new();
            for k in 0..posts {
                let f = frame(a, &format!("{id}-{k}"), &id, members.clone(), "hi");
                let r = s.receive_room("me", &[f]).unwrap().received;
                let RoomReceived::Stored(msg) = &r[0] else {
                    panic!("{r:?}")
                };
                seqs.push(msg.seq);
            }
            w.count += posts as u64;
            w.unread = posts as u64;
            if let Some(&seq) = seqs.last() {
                w.last = seq;
            }
            if i % 3 == 0 && posts > 0 {
                s.mark_room_read(&id, seqs[0]).unwrap();
                w.unread -= 1;
            }
            // In some, `b` leaves: a line of the room's, not unread.
            if i % 7 == 0 {
                let leave = RoomFrame {
                    header: RoomHeader {
                        event: RoomEvent::Left,
                        ..frame(b, "x", &id, vec![m(b, false, 2)], "").header
                    },
                    ..frame(b, &format!("{id}-left"), &id, vec![], "")
                };
                let r = s.receive_room("me", &[leave]).unwrap().received;
                let RoomReceived::Stored(msg) = &r[0] else {
                    panic!("{r:?}")
                };
                w.present.retain(|n| n != b);
                w.absent.push(b.to_owned());
                w.count += 1;
                w.last = msg.seq;
            }
            want.push(w);
        }
        // Older rooms come back to the top when someone posts in them.
        for i in [250, 10, 123] {
            let (msg, _) = s
                .room_post("me", &want[i].id, "back on top", None)
                .unwrap()
                .unwrap();
            want[i].count += 1;
            want[i].last = msg.seq;
        }
        // We left one room: it is listed, not joined.
        let r5 = s.room("r005").unwrap().unwrap();
        let leave = m("me", false, room::next_clock(&r5.members));
        let (msg, _) = s
            .room_post("me", "r005", "", Some((leave, RoomEvent::Left)))
            .unwrap()
            .unwrap();
        want[5].present.retain(|n| n != "me");
        want[5].absent.push("me".into());
        want[5].count += 1;
        want[5].last = msg.seq;

        want.sort_by_key(|w| std::cmp::Reverse(w.last));
        let listed = s.rooms("me").unwrap();
        let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, want_ids, "the most recently active first");
        assert_eq!(&ids[..4], ["r005", "r123", "r010", "r250"]);
        for (r, w) in listed.iter().zip(&want) {
            let names = |present: bool| {
                let mut v: Vec<String> = r
                    .members
                    .iter()
                    .filter(|x| x.present == present)
                    .map(|x| x.name.clone())
                    .collect();
                v.sort();
                v
            };
            let mut absent = w.absent.clone();
            absent.sort();
            assert_eq!(names(true), w.present, "{}", w.id);
            assert_eq!(names(false), absent, "{}", w.id);
            assert_eq!((r.count, r.unread), (w.count, w.unread), "{}", w.id);
            assert_eq!(r.last.as_ref().map(|l| l.seq), Some(w.last), "{}", w.id);
            assert_eq!(r.joined, w.id != "r005", "{}", w.id);
            assert_eq!(r.training, None);
            let i: usize = w.id[1..].parse().unwrap();
            assert_eq!(r.name, format!("room {i}"));
            // The list says what the room's own summary says.
            assert_eq!(Some(r), s.room_summary("me", &w.id).unwrap().as_ref());
        }
        // A room without messages yet comes after every active one.
        let _ = s.create_room("me", "quiet", "quiet", &[]).unwrap().unwrap();
        let listed = s.rooms("me").unwrap();
        assert_eq!(listed.len(), 301);
        let quiet = listed.last().unwrap();
        assert_eq!((quiet.id.as_str(), quiet.count), ("quiet", 0));
        assert!(quiet.last.is_none() && quiet.joined && quiet.unread == 0);
    }

    #[test]
    fn a_version_4_database_is_carried_over() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("chat.db");
        {
            let c = crate::store::open(&path, &super::super::MIGRATIONS[..4]).unwrap();
            c.execute_batch(
                "INSERT INTO messages (id, peer, direction, body, state, awaiting_ack, at, verified)
                 VALUES ('x1', 'bob', 'out', 'queued one', 'queued', 0, 1, 1),
                        ('r1', 'bob', 'in', 'got it', 'delivered', 0, 2, 1);
                 INSERT INTO read_marks (peer, seq) VALUES ('bob', 1);",
            )
            .unwrap();
        }
        let s = ChatStore::open(&path).unwrap();
        let h = s.history("bob", None, 10).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|m| m.room.is_none() && !m.event));
        assert_eq!(s.outbox("bob", 10).unwrap().len(), 1);
        assert_eq!(s.chats().unwrap()[0].unread, 1);
        assert_eq!(s.search("got", 10).unwrap().len(), 1);
        // Rooms work beside the old conversations.
        let _ = s
            .create_room("me", "r1", "wg", &["bob".into()])
            .unwrap()
            .unwrap();
        assert_eq!(s.outbox("bob", 10).unwrap().len(), 2);
        assert_eq!(s.chats().unwrap().len(), 1);
    }
}
