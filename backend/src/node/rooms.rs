//! Rooms (issue 16): group conversations with the same delivery as
//! direct messages.
//!
//! A room post is one row of the chat store plus one outbox row per
//! member it goes to; each member's delivery worker (`chat.rs`) sends it
//! with that member's direct messages, in one order, as a `ROOM` frame
//! (a classic eurechat member gets a `MESSAGE` that names the room) and
//! drops the row on `MSGACK`. So each sender's messages reach each member
//! in the order sent, exactly once, across restarts and partitions, like
//! direct ones; there is no order across senders beyond arrival.
//!
//! Membership is the member list every frame carries, merged entry by
//! entry (`shared/src/room.rs`): anyone in the room may add someone, only
//! a member may make themselves leave. A training's room is made by every
//! participant's node alike ([`follow_trainings`]): its id comes from the
//! training's UUID and its members are the participants this node knows.

use std::collections::{HashMap, HashSet};

use roundtable_shared::api::{ChatMessage, Event, ReadState, RoomSummary};
use roundtable_shared::frame::Frame;
use roundtable_shared::room::{
    next_clock, training_room_id, valid_room_name, Member, RoomError, RoomEvent, RoomFrame,
    MAX_MEMBERS, MAX_ROOM_TEXT,
};
use roundtable_shared::training::Training;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::chat::{Chat, ChatError};
use crate::directory::accounts::valid_name;
use crate::store::chat::{new_id, Queued, Room, RoomReceived, RoomRefused, RoomsReceived};

impl Chat {
    /// Every room, the most recently active first.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, ChatError> {
        let (store, me) = (self.store().clone(), self.me().to_owned());
        Ok(crate::store::blocking(move || store.rooms(&me)).await?)
    }

    /// One room.
    pub async fn room(&self, id: &str) -> Result<RoomSummary, ChatError> {
        let (store, me, i) = (self.store().clone(), self.me().to_owned(), id.to_owned());
        crate::store::blocking(move || store.room_summary(&me, &i))
            .await?
            .ok_or_else(|| RoomRefused::Unknown(id.to_owned()).into())
    }

    /// A page of a room's messages (see [`Chat::history`]).
    pub async fn room_history(
        &self,
        id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        self.room(id).await?;
        let (store, i) = (self.store().clone(), id.to_owned());
        Ok(crate::store::blocking(move || store.room_history(&i, before, limit)).await?)
    }

    /// A new room named `name` with us and `members` in it. Each member
    /// must be someone this node or the directory knows (a misspelled
    /// name is refused, not invited).
    pub async fn create_room(
        &self,
        name: &str,
        members: &[String],
    ) -> Result<RoomSummary, ChatError> {
        let name = name.trim();
        if !valid_room_name(name) {
            return Err(ChatError::BadRoomName);
        }
        let mut others: Vec<String> = Vec::new();
        for m in members.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
            if !valid_name(m) {
                return Err(ChatError::BadPeer(m.to_owned()));
            }
            if m != self.me() && !others.iter().any(|o| o == m) {
                others.push(m.to_owned());
            }
        }
        if others.len() + 1 > MAX_MEMBERS {
            return Err(ChatError::TooManyMembers);
        }
        for m in &others {
            if !self.knows(m).await? {
                return Err(ChatError::UnknownMember(m.clone()));
            }
        }
        let (store, me, id, n, o) = (
            self.store().clone(),
            self.me().to_owned(),
            new_id(),
            name.to_owned(),
            others.clone(),
        );
        let (room, made, queued) =
            crate::store::blocking(move || store.create_room(&me, &id, &n, &o)).await??;
        for m in made {
            self.events().publish(Event::Message { message: m });
        }
        self.room_changed(&room.id).await;
        self.send_queued(queued).await?;
        self.room(&room.id).await
    }

    /// Posts `text` in room `id`; on disk before it returns (the 202).
    pub async fn room_post(&self, id: &str, text: &str) -> Result<ChatMessage, ChatError> {
        if text.is_empty() || text.len() > MAX_ROOM_TEXT {
            return Err(ChatError::BadRoomText);
        }
        self.room_change(id, text, None).await
    }

    /// Adds `name` to room `id` (nothing happens if they are in it).
    pub async fn add_member(&self, id: &str, name: &str) -> Result<RoomSummary, ChatError> {
        let name = name.trim();
        if !valid_name(name) {
            return Err(ChatError::BadPeer(name.to_owned()));
        }
        let room = self.load(id).await?;
        if room.is_member(name) {
            return self.room(id).await;
        }
        if !room.is_member(self.me()) {
            return Err(RoomRefused::NotIn.into());
        }
        if !room.members.iter().any(|m| m.name == name) && room.members.len() >= MAX_MEMBERS {
            return Err(ChatError::TooManyMembers);
        }
        if !self.knows(name).await? {
            return Err(ChatError::UnknownMember(name.to_owned()));
        }
        let change = Member {
            name: name.to_owned(),
            present: true,
            clock: next_clock(&room.members),
        };
        self.room_change(id, "", Some((change, RoomEvent::Added)))
            .await?;
        self.room(id).await
    }

    /// Who a file posted into room `id` goes to: every member in it now
    /// but us. Refused when we are not in it.
    pub async fn room_recipients(&self, id: &str) -> Result<Vec<String>, ChatError> {
        let room = self.load(id).await?;
        if !room.is_member(self.me()) {
            return Err(RoomRefused::NotIn.into());
        }
        Ok(room.recipients(self.me()))
    }

    /// Leaves room `id`: every member is told, and this node keeps the
    /// history but takes no part any more (until someone adds us again).
    pub async fn leave_room(&self, id: &str) -> Result<RoomSummary, ChatError> {
        let room = self.load(id).await?;
        let change = Member {
            name: self.me().to_owned(),
            present: false,
            clock: next_clock(&room.members),
        };
        self.room_change(id, "", Some((change, RoomEvent::Left)))
            .await?;
        self.room(id).await
    }

    /// Marks room `id` read up to `seq` and tells every browser.
    pub async fn mark_room_read(&self, id: &str, seq: i64) -> Result<ReadState, ChatError> {
        self.room(id).await?;
        let (store, i) = (self.store().clone(), id.to_owned());
        let state = crate::store::blocking(move || store.mark_room_read(&i, seq)).await?;
        self.events().publish(Event::ReadState {
            state: state.clone(),
        });
        Ok(state)
    }

    async fn load(&self, id: &str) -> Result<Room, ChatError> {
        let (store, i) = (self.store().clone(), id.to_owned());
        crate::store::blocking(move || store.room(&i))
            .await?
            .ok_or_else(|| RoomRefused::Unknown(id.to_owned()).into())
    }

    /// One of our messages in a room (a post, or a change with its event
    /// line): stored with its outbox rows, announced, handed to the
    /// members' workers, and on disk before it returns.
    async fn room_change(
        &self,
        id: &str,
        text: &str,
        change: Option<(Member, RoomEvent)>,
    ) -> Result<ChatMessage, ChatError> {
        let is_change = change.is_some();
        let (store, me, i, t) = (
            self.store().clone(),
            self.me().to_owned(),
            id.to_owned(),
            text.to_owned(),
        );
        let (msg, queued) =
            crate::store::blocking(move || store.room_post(&me, &i, &t, change)).await??;
        self.events().publish(Event::Message {
            message: msg.clone(),
        });
        if is_change {
            self.room_changed(id).await;
        }
        self.send_queued(queued).await?;
        Ok(msg)
    }

    /// Wakes the delivery worker of each member our new room messages go
    /// to, then waits until they are on disk (announce them before).
    async fn send_queued(&self, queued: Queued) -> Result<(), ChatError> {
        for m in &queued.to {
            self.peers().ensure(m);
            self.kick(m);
        }
        Ok(self.sync(queued.commit).await?)
    }

    /// Tells every browser the room's summary now.
    pub(crate) async fn room_changed(&self, id: &str) {
        match self.room(id).await {
            Ok(room) => self.events().publish(Event::Room { room }),
            Err(e) => tracing::error!(room = %id, %e, "cannot read room"),
        }
    }

    /// The `ROOM` frame for our room message `m`, with the room's member
    /// list as it is now.
    pub(crate) fn room_frame(&self, room: &Room, m: &ChatMessage) -> Result<Frame, RoomError> {
        let (event, subject) = if m.event {
            self.store()
                .room_event_of(m.seq)
                .map_err(|e| RoomError::BadHeader(e.to_string()))?
        } else {
            (RoomEvent::Post, None)
        };
        RoomFrame {
            sender: self.me().to_owned(),
            id: m.id.clone(),
            header: room.header(event, subject),
            text: if m.event {
                String::new()
            } else {
                m.text.clone()
            },
        }
        .to_frame()
    }

    /// Stores room frames from proven senders, announces what is new, and
    /// returns once it is on disk (then they may be acknowledged); false
    /// if they could not be stored.
    pub(crate) async fn receive_rooms(&self, frames: Vec<RoomFrame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let (store, me) = (self.store().clone(), self.me().to_owned());
        let r = crate::store::blocking(move || store.receive_room(&me, &frames)).await;
        let RoomsReceived {
            received,
            changed,
            told,
            commit,
        } = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%e, "cannot store room messages");
                return false;
            }
        };
        for r in received {
            match r {
                RoomReceived::Stored(message) => {
                    self.peers().ensure(&message.peer);
                    self.events().publish(Event::Message { message });
                }
                RoomReceived::Duplicate => {}
                RoomReceived::Dropped(why) => tracing::info!(why, "room message not taken"),
            }
        }
        for id in changed {
            self.room_changed(&id).await;
        }
        for m in &told {
            self.peers().ensure(m);
            self.kick(m);
        }
        match self.sync(commit).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(%e, "cannot sync room messages");
                false
            }
        }
    }

    /// Makes sure training `t` has its room, with `names` (participants)
    /// in it besides us. False if it could not.
    async fn ensure_training_room(&self, t: &Training, names: Vec<String>) -> bool {
        let id = training_room_id(&t.uuid);
        let name = match &t.name {
            Some(n) if valid_room_name(n) => n.clone(),
            _ => format!("Training {}", t.short_id()),
        };
        let (store, uuid, i) = (self.store().clone(), t.uuid.clone(), id.clone());
        let me = self.me().to_owned();
        let names: Vec<String> = names.into_iter().filter(|n| valid_name(n)).collect();
        let r = crate::store::blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            store.ensure_training_room(&me, &i, &name, &uuid, &refs)
        })
        .await;
        let (changed, told) = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(training = %uuid_short(&t.uuid), %e, "cannot make the training's room");
                return false;
            }
        };
        if changed {
            self.room_changed(&id).await;
        }
        // Clock-0 entries need no sync of their own; our leave does.
        if told.to.is_empty() {
            return true;
        }
        if let Err(e) = self.send_queued(told).await {
            tracing::error!(training = %uuid_short(&t.uuid), %e, "cannot queue our leave");
        }
        true
    }
}

fn uuid_short(u: &str) -> &str {
    u.get(..8).unwrap_or(u)
}

/// The check a file offered into a room goes through
/// ([`crate::transfer::SharesRoom`]): the room is on this node and both
/// `me` and the sender are in it now, by this node's member list (the
/// offer's word for it counts for nothing).
pub fn shares_room(
    store: crate::store::chat::ChatStore,
    me: String,
) -> crate::transfer::SharesRoom {
    std::sync::Arc::new(move |room: &str, peer: &str| match store.room(room) {
        Ok(Some(r)) => r.is_member(&me) && r.is_member(peer),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(%e, "cannot read a room to place a file");
            false
        }
    })
}

/// Gives every training its room, with the participants known for it as
/// members, and keeps them so as participants appear, until `shutdown`.
///
/// A training's event comes at every change of its phase or run, and a
/// remote participant's at every lane it sends: the room is written only
/// for a training new here, or a remote participant new in it. What was
/// made sure of is kept in memory, rebuilt at the start and whenever the
/// event stream lagged. Someone who left the room stays out all the same
/// (the store keeps an entry it has; see
/// [`ChatStore::ensure_training_room`](crate::store::chat::ChatStore::ensure_training_room)).
pub async fn follow_trainings(
    chat: Chat,
    progress: crate::progress::Progress,
    trainings: crate::store::trainings::TrainingStore,
    shutdown: CancellationToken,
) {
    let mut rx = chat.events().subscribe();
    let mut f = Follower {
        chat,
        progress,
        trainings,
        ensured: HashMap::new(),
    };
    f.sync_all().await;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(Event::Training { training }) => {
                if !f.ensured.contains_key(&training.uuid) {
                    f.sync(training.uuid).await;
                }
            }
            Ok(Event::Participant { participant: p }) if !p.local => {
                let training = p.lane.training;
                let known = f
                    .ensured
                    .get(&training)
                    .is_some_and(|s| s.contains(&p.name));
                if !known {
                    f.sync(training.clone()).await;
                    // Once is enough even if it was not listed (not a
                    // valid name): nothing would change the next time.
                    if let Some(names) = f.ensured.get_mut(&training) {
                        names.insert(p.name);
                    }
                }
            }
            Ok(Event::TrainingGone { uuid }) => {
                f.ensured.remove(&uuid);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => f.sync_all().await,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// [`follow_trainings`]'s state.
struct Follower {
    chat: Chat,
    progress: crate::progress::Progress,
    trainings: crate::store::trainings::TrainingStore,
    /// Each training whose room this made sure of, with the remote
    /// participants it put in it.
    ensured: HashMap<String, HashSet<String>>,
}

impl Follower {
    /// Makes sure of training `uuid`'s room with every remote participant
    /// known now, and remembers it if that worked.
    async fn sync(&mut self, uuid: String) {
        let t = self.trainings.run(move |s| s.training(&uuid)).await;
        let Ok(Some(t)) = t else { return };
        let names = match self.progress.participants(&t.uuid).await {
            Ok(ps) => Some(
                ps.into_iter()
                    .filter(|p| !p.local)
                    .map(|p| p.name)
                    .collect::<Vec<_>>(),
            ),
            Err(e) => {
                tracing::error!(%e, "cannot read participants");
                None
            }
        };
        let made = self
            .chat
            .ensure_training_room(&t, names.clone().unwrap_or_default())
            .await;
        // Without its participants it is tried again at the next event.
        if let (true, Some(names)) = (made, names) {
            self.ensured.entry(t.uuid).or_default().extend(names);
        }
    }

    /// [`sync`](Self::sync) for every training, from scratch.
    async fn sync_all(&mut self) {
        self.ensured.clear();
        let all = self
            .trainings
            .run(|s| s.recent_trainings(usize::MAX >> 1))
            .await;
        for uuid in all.unwrap_or_default() {
            self.sync(uuid).await;
        }
    }
}
