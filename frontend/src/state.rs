//! The dashboard's state and its reducer: plain Rust (no browser APIs), so
//! it is unit-tested natively (`cargo test -p roundtable-frontend`).
//!
//! Every change comes in as an [`Action`]: a snapshot fetched over HTTP, an
//! [`Event`] pushed on `/ws`, a page of history, a message the node accepted,
//! a change of the WebSocket's state, the user reading a conversation, a
//! peer check's progress, the user accepting a peer's new key, or a file
//! upload's progress, or the participants of a training (issue 15).
//! Applying the same information twice, or in a different order, gives the
//! same state: messages are de-duplicated by `seq` and by id, and a
//! message's state never goes backwards; transfers are keyed by `seq` and
//! an older copy (by `updated_at`) never replaces a newer one.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use roundtable_shared::api::{
    ChatMessage, ChatSummary, Direction, Event, LinkState, Me, MessageState, PeerCheck, PeerInfo,
    PeerPath, PeerTrust, PinSource, RoomSummary, TransferInfo, TransferState,
};
use roundtable_shared::progress::{round_status, Participant, RoundStatus};
use roundtable_shared::training::Training;

/// Output lines kept per local run (the node sends its tail, events add to it).
pub const OUTPUT_LINES: usize = 50;

/// The dashboard's connection to its node, as the header shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsState {
    /// First connection attempt.
    Connecting,
    Connected,
    /// Lost; trying again (the number of failed attempts so far).
    Reconnecting(u32),
    /// Several attempts failed; still trying, less often.
    Offline,
}

impl WsState {
    /// Failed attempts after which the node counts as offline.
    pub const OFFLINE_AFTER: u32 = 3;

    pub fn label(self) -> &'static str {
        match self {
            WsState::Connecting => "connecting",
            WsState::Connected => "connected",
            WsState::Reconnecting(_) => "reconnecting",
            WsState::Offline => "offline",
        }
    }
}

/// One conversation as far as the dashboard has loaded it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chat {
    /// Loaded messages, by increasing `seq`, without duplicates.
    pub messages: Vec<Rc<ChatMessage>>,
    /// Whether older messages than the first loaded one exist.
    pub has_more: bool,
    /// Whether a page of history was loaded at all.
    pub loaded: bool,
    /// Messages in the conversation, per the node (at least the loaded ones).
    pub count: u64,
    /// The newest message known.
    pub last: Option<Rc<ChatMessage>>,
}

impl Chat {
    /// Messages received with `seq > last_read`, counted in the loaded ones
    /// (the newest received message counts even when not loaded). A
    /// room's lines about itself ("alice added carol") are not messages
    /// to read.
    pub fn unread(&self, last_read: i64) -> usize {
        let counts = |m: &ChatMessage| m.direction == Direction::In && !m.event;
        let loaded = self
            .messages
            .iter()
            .rev()
            .take_while(|m| m.seq > last_read)
            .filter(|m| counts(m))
            .count();
        match &self.last {
            Some(m) if loaded == 0 && counts(m) && m.seq > last_read => 1,
            _ => loaded,
        }
    }

    /// Inserts `m` in `seq` order; returns whether it was new. A known
    /// message (same seq, or the same id from the same sender: in a room
    /// ids are unique per sender only) only has its state raised.
    fn merge(&mut self, m: ChatMessage) -> bool {
        if let Some(i) = self.messages.iter().rposition(|x| {
            x.seq == m.seq || (x.id == m.id && x.direction == m.direction && x.peer == m.peer)
        }) {
            if m.state > self.messages[i].state {
                Rc::make_mut(&mut self.messages[i]).state = m.state;
            }
            self.refresh_last();
            return false;
        }
        let pos = self.messages.partition_point(|x| x.seq < m.seq);
        self.messages.insert(pos, Rc::new(m));
        true
    }

    /// Applies the newest page of the history (`limit` asked for).
    fn latest(&mut self, messages: Vec<ChatMessage>, limit: usize) {
        let full = messages.len() >= limit;
        let newest_loaded = self.messages.last().map(|m| m.seq);
        let gap = match (newest_loaded, messages.first()) {
            (Some(n), Some(first)) => full && first.seq > n,
            _ => false,
        };
        if gap {
            // What was loaded is not adjacent to this page: start over.
            self.messages.clear();
        }
        if gap || !self.loaded {
            self.has_more = full;
        }
        self.loaded = true;
        for m in messages {
            self.merge(m);
        }
        self.count = self.count.max(self.messages.len() as u64);
        self.refresh_last();
    }

    /// Applies an older page, fetched with `before=`.
    fn older(&mut self, messages: Vec<ChatMessage>, limit: usize) {
        self.has_more = messages.len() >= limit;
        self.loaded = true;
        for m in messages {
            self.merge(m);
        }
        self.count = self.count.max(self.messages.len() as u64);
    }

    /// Takes the node's count and newest message (a summary) if newer.
    fn summarized(&mut self, count: u64, last: Option<ChatMessage>) {
        self.count = self.count.max(count);
        if let Some(last) = last {
            if self.last.as_ref().is_none_or(|l| l.seq < last.seq) {
                self.last = Some(Rc::new(last));
            }
        }
    }

    fn refresh_last(&mut self) {
        if let Some(newest) = self.messages.last() {
            if self.last.as_ref().is_none_or(|l| l.seq <= newest.seq) {
                self.last = Some(newest.clone());
            }
        }
    }

    /// Raises the state of our message `id`; returns whether it was found.
    /// States only go up (events and a refetch may cross), except that a
    /// `sent` message whose link broke goes back to `queued` (the node
    /// says so when the attempt fails); `delivered` is final.
    fn raise(&mut self, id: &str, state: MessageState) -> bool {
        let moves = |from: MessageState| {
            state > from || (state == MessageState::Queued && from == MessageState::Sent)
        };
        let mut found = false;
        for m in self.messages.iter_mut().rev() {
            if m.id == id && m.direction == Direction::Out {
                found = true;
                if moves(m.state) {
                    Rc::make_mut(m).state = state;
                }
                break;
            }
        }
        if let Some(l) = &mut self.last {
            if l.id == id && l.direction == Direction::Out && moves(l.state) {
                Rc::make_mut(l).state = state;
            }
        }
        found
    }
}

/// Pages of older history loaded at most to reach a search hit
/// ([`Chat::seek`]): with [`HIT_PAGE`], the 20,000 messages before the
/// newest page.
pub const HIT_PAGES: usize = 40;

/// Messages asked for per page while looking for a search hit (the
/// node's largest page).
pub const HIT_PAGE: usize = 500;

/// Where opening a conversation at a message (a search hit) stands: what
/// to load next, or whether the message is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitSeek {
    /// The newest page is not loaded yet: nothing to decide.
    Waiting,
    /// Load the page of messages before `before` (the first loaded one).
    Older { before: i64 },
    /// The message is loaded.
    Found,
    /// The conversation has no such message: its history is loaded past
    /// where it would be, or the node has nothing older.
    Missing,
    /// Not reached after `HIT_PAGES` older pages.
    TooFar,
}

impl Chat {
    /// Whether message `seq` is loaded and, if not, which page to load
    /// next, after `pages` older pages were loaded to reach it. Pages go
    /// from the newest message backwards without gaps, so a loaded range
    /// that starts at or before `seq` without it means no such message.
    pub fn seek(&self, seq: i64, pages: usize) -> HitSeek {
        if !self.loaded {
            return HitSeek::Waiting;
        }
        let Some(first) = self.messages.first() else {
            return HitSeek::Missing;
        };
        let pos = self.messages.partition_point(|m| m.seq < seq);
        if self.messages.get(pos).is_some_and(|m| m.seq == seq) {
            HitSeek::Found
        } else if first.seq < seq || !self.has_more {
            HitSeek::Missing
        } else if pages >= HIT_PAGES {
            HitSeek::TooFar
        } else {
            HitSeek::Older { before: first.seq }
        }
    }
}

/// Where "Check peers" stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckStatus {
    /// No check asked for since the page loaded.
    #[default]
    Idle,
    /// The request is out; it lasts up to the check's deadline.
    Running,
    /// The newest check's result is [`Checks::last`].
    Done,
    /// The request itself failed (the sentence to show); [`Checks::last`]
    /// still holds the previous result, shown as such.
    Failed(String),
}

/// The peer check: its status and the newest result. A result stays until
/// another check succeeds: while a check runs, and after one fails, the
/// previous answers are still worth seeing (marked as previous).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checks {
    pub status: CheckStatus,
    /// Results in name order.
    pub last: Option<Rc<PeerCheck>>,
}

/// The user's acceptance of a peer's new identity key, from the click until
/// the node's peer event settles it (the peer is then no longer
/// `key_changed`, and the entry goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAcceptance {
    /// `POST /api/peers/{name}/trust` sent for this fingerprint.
    Pending { fingerprint: String },
    /// The node took it; its peer event has not arrived yet.
    Accepted { fingerprint: String },
    /// The peer's key changed again before the acceptance took effect (the
    /// node answered 409, or the peer now offers another key): the user must
    /// compare the new one.
    ChangedAgain { fingerprint: String },
    /// The request failed (the sentence to show).
    Failed { fingerprint: String, error: String },
}

impl KeyAcceptance {
    /// The fingerprint the user accepted.
    pub fn fingerprint(&self) -> &str {
        match self {
            KeyAcceptance::Pending { fingerprint }
            | KeyAcceptance::Accepted { fingerprint }
            | KeyAcceptance::ChangedAgain { fingerprint }
            | KeyAcceptance::Failed { fingerprint, .. } => fingerprint,
        }
    }

    /// What is left of it once `peer` is as the node now says: nothing when
    /// the key is no longer in question; `ChangedAgain` when the peer now
    /// offers another key than the one accepted and no answer said otherwise.
    fn settle(self, peer: &PeerInfo) -> Option<KeyAcceptance> {
        if peer.trust != PeerTrust::KeyChanged {
            return None;
        }
        let offered = peer.offered_fingerprint.as_deref();
        Some(match self {
            KeyAcceptance::Pending { fingerprint } | KeyAcceptance::Accepted { fingerprint }
                if offered != Some(fingerprint.as_str()) =>
            {
                KeyAcceptance::ChangedAgain { fingerprint }
            }
            other => other,
        })
    }
}

/// A file the user chose in a conversation, while its `POST /api/files`
/// runs (the node has no transfer for it yet), or after that request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The dashboard's own number for it (the node has none yet).
    pub id: u64,
    /// The recipient (empty for a room's).
    pub peer: String,
    /// The room it is posted into (its id), if it is.
    pub room: Option<String>,
    pub name: String,
    pub size: u64,
    /// When the user chose it, Unix ms (browser clock).
    pub started_at: i64,
    /// Why the node refused it (its sentence), once it did. Kept on screen
    /// until the user dismisses it.
    pub error: Option<String>,
}

/// A room's files: each one received, and each one we posted shown once
/// (its transfers to the members, made by one upload, grouped by name,
/// hash and creation time) under the number of the first, with its state
/// summed up ([`group_state`]); `recipients` has the group of each shown
/// number that stands for several.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomFiles {
    pub shown: Rc<Vec<Rc<TransferInfo>>>,
    pub recipients: Rc<HashMap<i64, Vec<Rc<TransferInfo>>>>,
}

/// The state of one file sent to several members, as one word: moving
/// while any transfer moves or is to start, waiting while any waits,
/// delivered once all are, failed once all are final and one failed.
pub fn group_state(group: &[Rc<TransferInfo>]) -> TransferState {
    let any = |s: TransferState| group.iter().any(|t| t.state == s);
    if any(TransferState::Sending) {
        TransferState::Sending
    } else if any(TransferState::Queued) {
        TransferState::Queued
    } else if any(TransferState::Waiting) {
        TransferState::Waiting
    } else if any(TransferState::Failed) {
        TransferState::Failed
    } else {
        TransferState::Delivered
    }
}

/// One row of a conversation: a chat message, a file transfer, or a file
/// still being uploaded to the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Message(Rc<ChatMessage>),
    Transfer(Rc<TransferInfo>),
    Upload(Rc<Upload>),
    /// A day divider: the local day (days since 1970-01-01) of the rows
    /// after it.
    Day(i64),
}

/// A conversation row's identity, stable across renders (messages and
/// transfers are numbered separately by the node, uploads by the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKey {
    Message(i64),
    Transfer(i64),
    Upload(u64),
    Day(i64),
}

impl std::fmt::Display for RowKey {
    /// `m12`, `f3`, `u1`: the row's `data-row` attribute and Yew key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowKey::Message(seq) => write!(f, "m{seq}"),
            RowKey::Transfer(seq) => write!(f, "f{seq}"),
            RowKey::Upload(id) => write!(f, "u{id}"),
            RowKey::Day(d) => write!(f, "d{d}"),
        }
    }
}

impl std::str::FromStr for RowKey {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (kind, n) = s.split_at_checked(1).ok_or(())?;
        match kind {
            "m" => n.parse().map(RowKey::Message).map_err(drop),
            "f" => n.parse().map(RowKey::Transfer).map_err(drop),
            "u" => n.parse().map(RowKey::Upload).map_err(drop),
            "d" => n.parse().map(RowKey::Day).map_err(drop),
            _ => Err(()),
        }
    }
}

impl Item {
    pub fn key(&self) -> RowKey {
        match self {
            Item::Message(m) => RowKey::Message(m.seq),
            Item::Transfer(t) => RowKey::Transfer(t.seq),
            Item::Upload(u) => RowKey::Upload(u.id),
            Item::Day(d) => RowKey::Day(*d),
        }
    }

    /// When it happened, Unix ms (uploads and dividers have no time of
    /// their own).
    pub fn at(&self) -> Option<i64> {
        match self {
            Item::Message(m) => Some(m.at),
            Item::Transfer(t) => Some(t.created_at),
            Item::Upload(_) | Item::Day(_) => None,
        }
    }
}

/// The local day (days since 1970-01-01) of Unix ms `at`, `offset_min`
/// minutes from UTC.
pub fn local_day(at: i64, offset_min: i64) -> i64 {
    (at.div_euclid(1000) + offset_min * 60).div_euclid(86_400)
}

/// `items` with a [`Item::Day`] divider before the first row of each
/// local day (rows without a time stay where they are).
pub fn with_days(items: Vec<Item>, offset_min: i64) -> Vec<Item> {
    let mut out = Vec::with_capacity(items.len() + 8);
    let mut day = None;
    for item in items {
        if let Some(at) = item.at() {
            let d = local_day(at, offset_min);
            if day != Some(d) {
                out.push(Item::Day(d));
                day = Some(d);
            }
        }
        out.push(item);
    }
    out
}

/// A conversation's rows in time order: `chat`'s loaded messages (by
/// `seq`) with the peer's `transfers` placed by `created_at` against the
/// messages' `at`, then the `uploads` still running or refused (they are
/// happening now, and their times come from the browser's clock).
///
/// While older history is still to load, transfers older than the first
/// loaded message are left out: they come in with the history around
/// them, so rows appear only at the top when scrolling up.
pub fn timeline(chat: &Chat, transfers: &[Rc<TransferInfo>], uploads: &[Rc<Upload>]) -> Vec<Item> {
    let mut transfers: Vec<&Rc<TransferInfo>> = transfers.iter().collect();
    transfers.sort_by_key(|t| (t.created_at, t.seq));
    let from = match chat.messages.first() {
        Some(first) if chat.has_more => first.at,
        _ => i64::MIN,
    };
    let mut transfers = transfers
        .into_iter()
        .filter(|t| t.created_at >= from)
        .peekable();
    let mut out = Vec::with_capacity(chat.messages.len() + uploads.len());
    for m in &chat.messages {
        while let Some(t) = transfers.next_if(|t| t.created_at < m.at) {
            out.push(Item::Transfer(t.clone()));
        }
        out.push(Item::Message(m.clone()));
    }
    out.extend(transfers.map(|t| Item::Transfer(t.clone())));
    out.extend(uploads.iter().map(|u| Item::Upload(u.clone())));
    out
}

/// Whether `new`, a copy of the same transfer as `old`, is at least as
/// recent. The node's events and its list may cross: the newer
/// `updated_at` wins; at the same millisecond a final state beats a
/// non-final one, then more bytes beat fewer.
fn supersedes(new: &TransferInfo, old: &TransferInfo) -> bool {
    use std::cmp::Ordering;
    match new.updated_at.cmp(&old.updated_at) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => match (new.state.is_final(), old.state.is_final()) {
            (false, true) => false,
            (true, false) => true,
            _ => new.bytes >= old.bytes,
        },
    }
}

/// The file transfers the dashboard knows, by `seq`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transfers {
    pub by_seq: BTreeMap<i64, Rc<TransferInfo>>,
    /// Per transfer, the value of `clock` when it last changed here.
    touched: HashMap<i64, u64>,
    /// Counts changes; `fetch_mark` is its value when the newest
    /// `GET /api/files` was sent.
    clock: u64,
    fetch_mark: u64,
    /// Whether a list was fetched at all.
    pub loaded: bool,
}

impl Transfers {
    /// Stores `t` unless the copy held is newer; returns whether it changed.
    fn merge(&mut self, t: TransferInfo) -> bool {
        if self
            .by_seq
            .get(&t.seq)
            .is_some_and(|old| **old == t || !supersedes(&t, old))
        {
            return false;
        }
        self.clock += 1;
        self.touched.insert(t.seq, self.clock);
        self.by_seq.insert(t.seq, Rc::new(t));
        true
    }

    /// Applies the fetched list: transfers not in it are dropped, unless
    /// they changed here after it was asked for (an event or an upload's
    /// answer newer than the list).
    fn replace(&mut self, list: Vec<TransferInfo>) {
        let listed: std::collections::HashSet<i64> = list.iter().map(|t| t.seq).collect();
        let mark = self.fetch_mark;
        let touched = &self.touched;
        self.by_seq
            .retain(|seq, _| listed.contains(seq) || touched.get(seq).is_some_and(|&c| c > mark));
        let by_seq = &self.by_seq;
        self.touched.retain(|seq, _| by_seq.contains_key(seq));
        for t in list {
            self.merge(t);
        }
        self.loaded = true;
    }
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub me: Option<Me>,
    pub ws: Option<WsState>,
    /// The node's session with its directory.
    pub directory: Option<LinkState>,
    pub peers: Rc<BTreeMap<String, PeerInfo>>,
    pub chats: BTreeMap<String, Rc<Chat>>,
    pub trainings: Rc<BTreeMap<String, Training>>,
    /// Per peer, the newest `seq` the user has seen.
    pub last_read: BTreeMap<String, i64>,
    /// States that arrived before their message (by message id).
    pending_states: HashMap<String, MessageState>,
    /// Bumped by every snapshot: views reload what they show.
    pub epoch: u64,
    /// Bumped whenever the WebSocket connects (before that connection's
    /// snapshot is fetched): views may fetch beside the snapshot.
    pub connections: u64,
    /// Bumped whenever the peer list or an unread count may have changed.
    pub peers_rev: u64,
    /// Whether a snapshot has been applied.
    pub loaded: bool,
    /// "Check peers".
    pub check: Checks,
    /// Per peer whose key changed, the user's acceptance of the new key.
    pub key_acceptance: BTreeMap<String, KeyAcceptance>,
    /// File transfers sent and received, by `seq`.
    pub transfers: Rc<Transfers>,
    /// Files chosen by the user whose upload to the node runs or failed, by id.
    pub uploads: Rc<BTreeMap<u64, Rc<Upload>>>,
    /// Bumped whenever a transfer or an upload changed.
    pub transfers_rev: u64,
    /// Per training (UUID), its participants as far as they are known:
    /// all their phases once the training's page fetched them, else only
    /// what the summary and events brought.
    pub participants: Rc<BTreeMap<String, Rc<TrainingParticipants>>>,
    /// Bumped whenever any training's participants changed (the trainings
    /// list's counts).
    pub participants_rev: u64,
    /// Rooms (group conversations) by id, as the node last described them.
    pub rooms: Rc<BTreeMap<String, Rc<RoomSummary>>>,
    /// Per room, its messages as far as loaded (and its count and newest).
    pub room_chats: BTreeMap<String, Rc<Chat>>,
    /// Per room, the newest `seq` the user has seen.
    pub room_read: BTreeMap<String, i64>,
    /// Bumped whenever the room list, a room or its unread count may have
    /// changed.
    pub rooms_rev: u64,
    /// Counts changes to room summaries; `rooms_mark` is its value when the
    /// newest `GET /api/rooms` was sent, `rooms_touched` its value at each
    /// room's last change.
    rooms_clock: u64,
    rooms_mark: u64,
    rooms_touched: HashMap<String, u64>,
}

/// One line of the room list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomRow {
    pub id: String,
    pub name: String,
    /// Members in the room now (this node's user too, while in it).
    pub members: usize,
    /// Whether this node's user is in it (false: left).
    pub joined: bool,
    /// The training whose room it is.
    pub training: Option<String>,
    pub unread: usize,
    /// The newest activity known (last message, else creation), Unix ms.
    pub active_at: i64,
}

/// The participants of one training, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingParticipants {
    pub by_name: BTreeMap<String, Rc<Participant>>,
    /// Whether `GET /api/trainings/{uuid}/participants` was applied: each
    /// participant then has all its phases (events keep them whole).
    pub full: bool,
    /// Bumped at each change of this training's participants: what the
    /// training page memoizes its lanes and charts on.
    pub rev: u64,
}

impl TrainingParticipants {
    /// Merges `p` into the participant of its name, or inserts it;
    /// returns whether anything changed.
    fn merge(&mut self, p: Participant) -> bool {
        let changed = match self.by_name.get_mut(&p.name) {
            Some(have) => Rc::make_mut(have).merge(&p),
            None => {
                self.by_name.insert(p.name.clone(), Rc::new(p));
                true
            }
        };
        if changed {
            self.rev += 1;
        }
        changed
    }

    /// Replaces the participants with `list` (a fetch): those not in it
    /// go; what was known of those in it, if newer (an event that crossed
    /// the request), is kept.
    fn replace(&mut self, list: Vec<Participant>, full: bool) {
        let mut old = std::mem::take(&mut self.by_name);
        for mut p in list {
            if let Some(have) = old.remove(&p.name) {
                p.merge(&have);
            }
            self.by_name.insert(p.name.clone(), Rc::new(p));
        }
        self.full = full;
        self.rev += 1;
    }

    /// This node first, then the peers by name.
    pub fn lanes(&self) -> Vec<Rc<Participant>> {
        let mut v: Vec<Rc<Participant>> = self.by_name.values().cloned().collect();
        // Stable: names stay in order within each group.
        v.sort_by_key(|p| !p.local);
        v
    }

    /// How the participants stand in the current round.
    pub fn round_status(&self) -> RoundStatus {
        round_status(self.by_name.values().map(|p| &**p))
    }
}

/// A change to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The node's current state, fetched after (re)connecting.
    Snapshot {
        me: Me,
        peers: Vec<PeerInfo>,
        chats: Vec<ChatSummary>,
        trainings: Vec<Training>,
    },
    /// An event from `/ws`.
    Event(Event),
    /// The newest page of a conversation (`limit` asked for).
    Latest {
        peer: String,
        messages: Vec<ChatMessage>,
        limit: usize,
    },
    /// An older page of a conversation, fetched with `before=`.
    Older {
        peer: String,
        messages: Vec<ChatMessage>,
        limit: usize,
    },
    /// The node accepted a message we sent (the POST's answer).
    Accepted(ChatMessage),
    Ws(WsState),
    /// The user has seen `peer`'s conversation up to `seq`.
    MarkRead {
        peer: String,
        seq: i64,
    },
    /// "Check peers" sent its request.
    CheckStarted,
    /// The check's answer.
    Checked(PeerCheck),
    /// The check's request failed: the sentence to show.
    CheckFailed(String),
    /// The user's acceptance of `peer`'s new key moved on (sent, answered).
    KeyAcceptance {
        peer: String,
        acceptance: KeyAcceptance,
    },
    /// A peer fetched after the node answered an acceptance, in case its
    /// event lags. Applied only while the peer is still `key_changed`
    /// here: a peer event that came first is newer than this.
    PeerRefetched(PeerInfo),
    /// `GET /api/files` is about to be sent (after each (re)connection).
    TransfersRequested,
    /// Its answer: every transfer the node has. Replaces what is held,
    /// except for what changed here since it was asked for.
    Transfers(Vec<TransferInfo>),
    /// The user chose a file; its `POST /api/files` is being sent.
    UploadStarted(Upload),
    /// The node took upload `id`: its transfers (one per recipient).
    UploadDone {
        id: u64,
        transfers: Vec<TransferInfo>,
    },
    /// Upload `id` failed: the sentence to show.
    UploadFailed {
        id: u64,
        error: String,
    },
    /// The user dismissed the failed upload `id`.
    UploadDismissed(u64),
    /// `GET /api/trainings/{uuid}/participants`: every participant of
    /// `training` with all its phases. Replaces what is held for it.
    Participants {
        training: String,
        participants: Vec<Participant>,
    },
    /// `GET /api/participants`: every training's participants, each with
    /// its latest phase only. Replaces the trainings not loaded in full;
    /// merged into those that are.
    ParticipantsSummary(Vec<Participant>),
    /// `GET /api/rooms` is about to be sent (after each (re)connection).
    RoomsRequested,
    /// Its answer: every room. Replaces the summaries held, except those
    /// that changed here since it was asked for.
    Rooms(Vec<RoomSummary>),
    /// A room's summary from an answer (created, member added, left,
    /// fetched): applied as the node's [`Event::Room`] is.
    Room(RoomSummary),
    /// The newest page of a room's history (`limit` asked for).
    RoomLatest {
        room: String,
        messages: Vec<ChatMessage>,
        limit: usize,
    },
    /// An older page of a room's history, fetched with `before=`.
    RoomOlder {
        room: String,
        messages: Vec<ChatMessage>,
        limit: usize,
    },
    /// The user has seen `room` up to `seq`.
    RoomMarkRead {
        room: String,
        seq: i64,
    },
}

impl State {
    /// The user's read mark for `peer`.
    pub fn last_read(&self, peer: &str) -> i64 {
        self.last_read.get(peer).copied().unwrap_or(0)
    }

    /// Unread messages over all conversations, rooms too (for the page
    /// title).
    pub fn unread_total(&self) -> usize {
        self.chats.keys().map(|p| self.unread(p)).sum::<usize>()
            + self
                .room_chats
                .keys()
                .map(|r| self.room_unread(r))
                .sum::<usize>()
    }

    /// The user's read mark for `room`.
    pub fn room_read(&self, room: &str) -> i64 {
        self.room_read.get(room).copied().unwrap_or(0)
    }

    /// Unread messages in `room` (what others wrote, not its events).
    pub fn room_unread(&self, room: &str) -> usize {
        self.room_chats
            .get(room)
            .map_or(0, |c| c.unread(self.room_read(room)))
    }

    /// `room`'s messages as far as loaded.
    pub fn room_chat(&self, room: &str) -> Rc<Chat> {
        self.room_chats.get(room).cloned().unwrap_or_default()
    }

    /// The name of `room`, when its summary is known.
    pub fn room_name(&self, room: &str) -> Option<&str> {
        self.rooms.get(room).map(|r| r.name.as_str())
    }

    /// The rooms for the list: most recent activity first, then by name.
    pub fn room_list(&self) -> Vec<RoomRow> {
        let mut rows: Vec<RoomRow> = self
            .rooms
            .values()
            .map(|r| {
                let last = self
                    .room_chats
                    .get(&r.id)
                    .and_then(|c| c.last.as_ref().map(|m| m.at));
                RoomRow {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    members: r.members.iter().filter(|m| m.present).count(),
                    joined: r.joined,
                    training: r.training.clone(),
                    unread: self.room_unread(&r.id),
                    active_at: last.unwrap_or(r.created_at).max(r.created_at),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.active_at
                .cmp(&a.active_at)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.id.cmp(&b.id))
        });
        rows
    }

    /// The room of training `uuid`, if this node has it.
    pub fn training_room(&self, uuid: &str) -> Option<Rc<RoomSummary>> {
        self.rooms
            .values()
            .find(|r| r.training.as_deref() == Some(uuid))
            .cloned()
    }

    /// Stores the node's summary of a room: its members, name and
    /// whether we are in it; its read mark, count and newest message only
    /// move on.
    fn merge_room(&mut self, r: RoomSummary) {
        let mark = self.room_read.entry(r.id.clone()).or_insert(r.last_read);
        *mark = (*mark).max(r.last_read);
        Rc::make_mut(self.room_chats.entry(r.id.clone()).or_default())
            .summarized(r.count, r.last.clone());
        self.rooms_clock += 1;
        self.rooms_touched.insert(r.id.clone(), self.rooms_clock);
        Rc::make_mut(&mut self.rooms).insert(r.id.clone(), Rc::new(r));
        self.rooms_rev += 1;
    }

    /// Unread messages from `peer`.
    pub fn unread(&self, peer: &str) -> usize {
        self.chats
            .get(peer)
            .map_or(0, |c| c.unread(self.last_read(peer)))
    }

    /// Peers sorted for the list: unread first, then online, then by name;
    /// only names containing `filter` (case-insensitive). Peers with a
    /// conversation but unknown to the directory are listed too.
    pub fn peer_list(&self, filter: &str) -> Vec<PeerRow> {
        let me = self.me.as_ref().map(|m| m.name.as_str());
        let filter = filter.trim().to_lowercase();
        let mut rows: Vec<PeerRow> = self
            .peers
            .values()
            .map(|p| (p.name.as_str(), Some(p)))
            .chain(
                self.chats
                    .keys()
                    .filter(|k| !self.peers.contains_key(*k))
                    .map(|k| (k.as_str(), None)),
            )
            .filter(|(name, _)| Some(*name) != me)
            .filter(|(name, _)| filter.is_empty() || name.to_lowercase().contains(&filter))
            .map(|(name, p)| PeerRow {
                name: name.to_owned(),
                online: p.is_some_and(|p| p.online),
                presence_known: self.ws == Some(WsState::Connected),
                last_seen: p.and_then(|p| p.last_seen),
                unread: self.unread(name),
                fingerprint: p.and_then(|p| p.fingerprint.clone()),
                trust: p.map_or(PeerTrust::Unknown, |p| p.trust),
                pinned_fingerprint: p.and_then(|p| p.pinned_fingerprint.clone()),
                pinned_by: p.and_then(|p| p.pinned_by),
                path: p.and_then(|p| p.path),
                relay_only: p.is_some_and(crate::view::relay_only),
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.unread > 0)
                .cmp(&(a.unread > 0))
                .then(b.online.cmp(&a.online))
                .then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    /// `peer`'s transfers, in no particular order (bare NVFlare exchanges
    /// have the sender's address as their peer).
    pub fn peer_transfers(&self, peer: &str) -> Vec<Rc<TransferInfo>> {
        self.transfers
            .by_seq
            .values()
            .filter(|t| t.peer == peer && t.room.is_none())
            .cloned()
            .collect()
    }

    /// The uploads to `peer` running or failed, oldest first.
    pub fn peer_uploads(&self, peer: &str) -> Vec<Rc<Upload>> {
        self.uploads
            .values()
            .filter(|u| u.peer == peer && u.room.is_none())
            .cloned()
            .collect()
    }

    /// The files of room `id` as its conversation shows them
    /// ([`RoomFiles`]).
    pub fn room_files(&self, id: &str) -> RoomFiles {
        let mut shown: Vec<Rc<TransferInfo>> = Vec::new();
        let mut groups: HashMap<(&str, &str, i64), Vec<Rc<TransferInfo>>> = HashMap::new();
        for t in self.transfers.by_seq.values() {
            if t.room.as_deref() != Some(id) {
                continue;
            }
            match t.direction {
                Direction::In => shown.push(t.clone()),
                Direction::Out => groups
                    .entry((t.name.as_str(), t.sha256.as_str(), t.created_at))
                    .or_default()
                    .push(t.clone()),
            }
        }
        let mut recipients = HashMap::new();
        for (_, mut group) in groups {
            group.sort_by(|a, b| a.peer.cmp(&b.peer));
            let first = group.iter().min_by_key(|t| t.seq).cloned();
            if let Some(first) = first {
                shown.push(Rc::new(TransferInfo {
                    state: group_state(&group),
                    ..(*first).clone()
                }));
                recipients.insert(first.seq, group);
            }
        }
        RoomFiles {
            shown: Rc::new(shown),
            recipients: Rc::new(recipients),
        }
    }

    /// The uploads into room `id` running or failed, oldest first.
    pub fn room_uploads(&self, id: &str) -> Vec<Rc<Upload>> {
        self.uploads
            .values()
            .filter(|u| u.room.as_deref() == Some(id))
            .cloned()
            .collect()
    }

    /// `peer`'s conversation: its loaded messages and its transfers merged
    /// by time, then the uploads to it (see [`timeline`]).
    pub fn conversation(&self, peer: &str) -> Vec<Item> {
        let chat = self.chats.get(peer).cloned().unwrap_or_default();
        timeline(&chat, &self.peer_transfers(peer), &self.peer_uploads(peer))
    }

    /// The files page: every transfer newest first (by `created_at`, then
    /// `seq`), only those in `state` when given.
    pub fn transfer_list(&self, state: Option<TransferState>) -> Vec<Rc<TransferInfo>> {
        let mut list: Vec<Rc<TransferInfo>> = self
            .transfers
            .by_seq
            .values()
            .filter(|t| state.is_none_or(|s| t.state == s))
            .cloned()
            .collect();
        list.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.seq)));
        list
    }

    /// The participants known for `training` (empty when none).
    pub fn training_participants(&self, training: &str) -> Rc<TrainingParticipants> {
        self.participants.get(training).cloned().unwrap_or_default()
    }

    /// The trainings list's line for `training`: participants known and
    /// how many are done with the current round.
    pub fn round_status(&self, training: &str) -> RoundStatus {
        self.participants
            .get(training)
            .map(|t| t.round_status())
            .unwrap_or_default()
    }

    /// Applies a participant's update (an event): merged into what is
    /// known ([`Participant::merge`]: never backwards), or inserted. A
    /// repeated or older update copies nothing and bumps no counter.
    fn merge_participant(&mut self, p: Participant) {
        let known = self
            .participants
            .get(&p.lane.training)
            .and_then(|t| t.by_name.get(&p.name));
        let merged = match known {
            Some(have) => {
                let mut m = (**have).clone();
                if !m.merge(&p) {
                    return;
                }
                m
            }
            None => p,
        };
        let map = Rc::make_mut(&mut self.participants);
        let entry = Rc::make_mut(map.entry(merged.lane.training.clone()).or_default());
        entry.by_name.insert(merged.name.clone(), Rc::new(merged));
        entry.rev += 1;
        self.participants_rev += 1;
    }

    fn merge_transfer(&mut self, t: TransferInfo) {
        if Rc::make_mut(&mut self.transfers).merge(t) {
            self.transfers_rev += 1;
        }
    }

    /// Applies `action` in place.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Snapshot {
                me,
                peers,
                chats,
                trainings,
            } => {
                self.directory = Some(me.directory_state);
                self.me = Some(me);
                self.peers = Rc::new(peers.into_iter().map(|p| (p.name.clone(), p)).collect());
                let acceptances = std::mem::take(&mut self.key_acceptance);
                self.key_acceptance = acceptances
                    .into_iter()
                    .filter_map(|(name, a)| {
                        let settled = a.settle(self.peers.get(&name)?)?;
                        Some((name, settled))
                    })
                    .collect();
                self.trainings =
                    Rc::new(trainings.into_iter().map(|t| (t.uuid.clone(), t)).collect());
                for s in chats {
                    // The node's read mark (shared by every browser).
                    let mark = self.last_read.entry(s.peer.clone()).or_insert(s.last_read);
                    *mark = (*mark).max(s.last_read);
                    let chat = Rc::make_mut(self.chats.entry(s.peer.clone()).or_default());
                    chat.count = chat.count.max(s.count);
                    if let Some(last) = s.last {
                        if chat.last.as_ref().is_none_or(|l| l.seq <= last.seq) {
                            chat.last = Some(Rc::new(last));
                        }
                    }
                }
                self.epoch += 1;
                self.peers_rev += 1;
                self.loaded = true;
            }
            Action::Event(ev) => self.apply_event(ev),
            Action::Latest {
                peer,
                messages,
                limit,
            } => {
                let messages: Vec<_> = messages.into_iter().map(|m| self.with_pending(m)).collect();
                Rc::make_mut(self.chats.entry(peer).or_default()).latest(messages, limit);
                self.peers_rev += 1;
            }
            Action::Older {
                peer,
                messages,
                limit,
            } => {
                Rc::make_mut(self.chats.entry(peer).or_default()).older(messages, limit);
            }
            Action::RoomsRequested => self.rooms_mark = self.rooms_clock,
            Action::Rooms(list) => {
                let listed: std::collections::HashSet<&str> =
                    list.iter().map(|r| r.id.as_str()).collect();
                let mark = self.rooms_mark;
                let touched = &self.rooms_touched;
                let newer = |id: &str| touched.get(id).is_some_and(|&c| c > mark);
                let keep: Vec<String> = self
                    .rooms
                    .keys()
                    .filter(|id| listed.contains(id.as_str()) || newer(id))
                    .cloned()
                    .collect();
                let fresh: Vec<RoomSummary> = list.into_iter().filter(|r| !newer(&r.id)).collect();
                if keep.len() != self.rooms.len() {
                    let rooms = Rc::make_mut(&mut self.rooms);
                    rooms.retain(|id, _| keep.contains(id));
                }
                for r in fresh {
                    self.merge_room(r);
                }
                self.rooms_rev += 1;
            }
            Action::Room(r) => self.merge_room(r),
            Action::RoomLatest {
                room,
                messages,
                limit,
            } => {
                let messages: Vec<_> = messages.into_iter().map(|m| self.with_pending(m)).collect();
                Rc::make_mut(self.room_chats.entry(room).or_default()).latest(messages, limit);
                self.rooms_rev += 1;
            }
            Action::RoomOlder {
                room,
                messages,
                limit,
            } => {
                Rc::make_mut(self.room_chats.entry(room).or_default()).older(messages, limit);
            }
            Action::RoomMarkRead { room, seq } => {
                let e = self.room_read.entry(room).or_insert(seq);
                *e = (*e).max(seq);
                self.rooms_rev += 1;
            }
            Action::Accepted(m) => self.add_message(m),
            Action::Ws(s) => {
                // Presence is known only while connected (the peer list
                // shows it).
                self.ws = Some(s);
                if s == WsState::Connected {
                    self.connections += 1;
                }
                self.peers_rev += 1;
            }
            Action::MarkRead { peer, seq } => {
                let e = self.last_read.entry(peer).or_insert(seq);
                *e = (*e).max(seq);
                self.peers_rev += 1;
            }
            Action::CheckStarted => self.check.status = CheckStatus::Running,
            Action::Checked(mut check) => {
                check.results.sort_by(|a, b| a.name.cmp(&b.name));
                self.check = Checks {
                    status: CheckStatus::Done,
                    last: Some(Rc::new(check)),
                };
            }
            Action::CheckFailed(error) => self.check.status = CheckStatus::Failed(error),
            Action::PeerRefetched(peer) => {
                let in_question = self
                    .peers
                    .get(&peer.name)
                    .is_some_and(|p| p.trust == PeerTrust::KeyChanged);
                if in_question {
                    self.apply_event(Event::Peer { peer });
                }
            }
            Action::TransfersRequested => {
                let t = Rc::make_mut(&mut self.transfers);
                t.fetch_mark = t.clock;
            }
            Action::Transfers(list) => {
                Rc::make_mut(&mut self.transfers).replace(list);
                self.transfers_rev += 1;
            }
            Action::UploadStarted(u) => {
                Rc::make_mut(&mut self.uploads).insert(u.id, Rc::new(u));
                self.transfers_rev += 1;
            }
            Action::UploadDone { id, transfers } => {
                Rc::make_mut(&mut self.uploads).remove(&id);
                for t in transfers {
                    self.merge_transfer(t);
                }
                self.transfers_rev += 1;
            }
            Action::UploadFailed { id, error } => {
                if let Some(u) = Rc::make_mut(&mut self.uploads).get_mut(&id) {
                    Rc::make_mut(u).error = Some(error);
                    self.transfers_rev += 1;
                }
            }
            Action::UploadDismissed(id) => {
                if Rc::make_mut(&mut self.uploads).remove(&id).is_some() {
                    self.transfers_rev += 1;
                }
            }
            Action::Participants {
                training,
                participants,
            } => {
                let map = Rc::make_mut(&mut self.participants);
                let entry = Rc::make_mut(map.entry(training.clone()).or_default());
                let list = participants
                    .into_iter()
                    .filter(|p| p.lane.training == training)
                    .collect();
                entry.replace(list, true);
                self.participants_rev += 1;
            }
            Action::ParticipantsSummary(list) => {
                let mut by_training: BTreeMap<String, Vec<Participant>> = BTreeMap::new();
                for p in list {
                    by_training
                        .entry(p.lane.training.clone())
                        .or_default()
                        .push(p);
                }
                let map = Rc::make_mut(&mut self.participants);
                // Trainings loaded in full are kept whole (their page's
                // fetch and events); the others follow the summary.
                map.retain(|uuid, t| t.full || by_training.contains_key(uuid));
                for (uuid, list) in by_training {
                    let entry = Rc::make_mut(map.entry(uuid).or_default());
                    if entry.full {
                        for p in list {
                            entry.merge(p);
                        }
                    } else {
                        entry.replace(list, false);
                    }
                }
                self.participants_rev += 1;
            }
            Action::KeyAcceptance { peer, acceptance } => {
                match self.peers.get(&peer).and_then(|p| acceptance.settle(p)) {
                    Some(a) => {
                        self.key_acceptance.insert(peer, a);
                    }
                    // Settled already (the peer event came first), or unknown.
                    None => {
                        self.key_acceptance.remove(&peer);
                    }
                }
            }
        }
    }

    /// A message with any state that arrived for it earlier.
    fn with_pending(&mut self, mut m: ChatMessage) -> ChatMessage {
        if m.direction == Direction::Out {
            if let Some(s) = self.pending_states.remove(&m.id) {
                m.state = m.state.max(s);
            }
        }
        m
    }

    /// Adds a message to its conversation: its room's, or its peer's.
    fn add_message(&mut self, m: ChatMessage) {
        let m = self.with_pending(m);
        let chat = match &m.room {
            Some(room) => {
                self.rooms_rev += 1;
                self.room_chats.entry(room.clone()).or_default()
            }
            None => {
                self.peers_rev += 1;
                self.chats.entry(m.peer.clone()).or_default()
            }
        };
        let chat = Rc::make_mut(chat);
        if chat.merge(m) {
            chat.count += 1;
        }
        chat.refresh_last();
    }

    fn apply_event(&mut self, ev: Event) {
        match ev {
            Event::ReadState { state } => self.apply(match state.room {
                Some(room) => Action::RoomMarkRead {
                    room,
                    seq: state.last_read,
                },
                None => Action::MarkRead {
                    peer: state.peer,
                    seq: state.last_read,
                },
            }),
            Event::Room { room } => self.merge_room(room),
            Event::Training { training } => {
                Rc::make_mut(&mut self.trainings).insert(training.uuid.clone(), training);
            }
            Event::Peer { peer } => {
                if let Some(a) = self.key_acceptance.remove(&peer.name) {
                    if let Some(a) = a.settle(&peer) {
                        self.key_acceptance.insert(peer.name.clone(), a);
                    }
                }
                Rc::make_mut(&mut self.peers).insert(peer.name.clone(), peer);
                self.peers_rev += 1;
            }
            Event::Transfer { transfer } => self.merge_transfer(transfer),
            Event::TrainingGone { uuid } => {
                if self.trainings.contains_key(&uuid) {
                    Rc::make_mut(&mut self.trainings).remove(&uuid);
                }
                if self.participants.contains_key(&uuid) {
                    Rc::make_mut(&mut self.participants).remove(&uuid);
                    self.participants_rev += 1;
                }
            }
            Event::PeerGone { name } => {
                self.key_acceptance.remove(&name);
                if Rc::make_mut(&mut self.peers).remove(&name).is_some() {
                    self.peers_rev += 1;
                }
            }
            Event::Message { message } => self.add_message(message),
            Event::MessageState {
                peer,
                id,
                state,
                room,
            } => {
                // In a room, `peer` is our own name: the room says where.
                let chat = match &room {
                    Some(room) => self.room_chats.get_mut(room),
                    None => self.chats.get_mut(&peer),
                };
                let found = chat.is_some_and(|c| Rc::make_mut(c).raise(&id, state));
                if found && room.is_some() {
                    self.rooms_rev += 1;
                }
                if !found {
                    let e = self.pending_states.entry(id).or_insert(state);
                    *e = (*e).max(state);
                }
            }
            Event::Directory { state } => {
                self.directory = Some(state);
                if let Some(me) = &mut self.me {
                    me.directory_state = state;
                }
            }
            Event::Participant { participant } => self.merge_participant(participant),
            Event::RunOutput {
                training,
                round,
                phase,
                line,
            } => {
                let Some(t) = Rc::make_mut(&mut self.trainings).get_mut(&training) else {
                    return;
                };
                let Some(run) = t
                    .rounds
                    .iter_mut()
                    .find(|r| r.round == round)
                    .and_then(|r| r.phases.iter_mut().find(|p| p.phase == phase))
                    .and_then(|p| p.run.as_mut())
                else {
                    return;
                };
                run.output_tail.push(line);
                if run.output_tail.len() > OUTPUT_LINES {
                    let extra = run.output_tail.len() - OUTPUT_LINES;
                    run.output_tail.drain(..extra);
                }
            }
        }
    }
}

/// One line of the peer list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerRow {
    pub name: String,
    /// What the node last said; only meaningful with `presence_known`.
    pub online: bool,
    /// Whether the dashboard is connected to its node now: without it,
    /// what `online` says may no longer hold, and the list says "unknown".
    pub presence_known: bool,
    pub last_seen: Option<i64>,
    pub unread: usize,
    /// The fingerprint of the key the directory pinned for it, if any.
    pub fingerprint: Option<String>,
    /// What this node proved about it (unknown for a conversation only).
    pub trust: PeerTrust,
    /// The fingerprint this node pinned for it, and how.
    pub pinned_fingerprint: Option<String>,
    pub pinned_by: Option<PinSource>,
    /// How the last exchange with it went.
    pub path: Option<PeerPath>,
    /// Online only through the directory's relay.
    pub relay_only: bool,
}

impl yew::Reducible for State {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = Rc::unwrap_or_clone(self);
        next.apply(action);
        Rc::new(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::progress::{Lane, PhaseReport, RunReport};
    use roundtable_shared::training::{Phase, PhaseRecord, Round, Run, RunStatus, TrainingState};

    fn msg(seq: i64, id: &str, dir: Direction, state: MessageState) -> ChatMessage {
        ChatMessage {
            seq,
            id: id.into(),
            peer: "bob".into(),
            direction: dir,
            text: format!("m{seq}"),
            state,
            at: seq * 1000,
            verified: true,
            room: None,
            event: false,
        }
    }

    fn me() -> Me {
        Me {
            name: "alice".into(),
            chat: "127.0.0.1:1".into(),
            directory: "127.0.0.1:2".into(),
            directory_state: LinkState::Connected,
            version: "0".into(),
            fingerprint: "0000 0000 0000 0000 0000 0000 0000 0000".into(),
            key_at_directory: Default::default(),
            relay_only: false,
            share_progress: true,
            require_secure: false,
        }
    }

    fn peer(name: &str, online: bool) -> PeerInfo {
        PeerInfo {
            online,
            last_seen: Some(5),
            ..PeerInfo::unknown(name)
        }
    }

    fn seqs(s: &State) -> Vec<i64> {
        s.chats["bob"].messages.iter().map(|m| m.seq).collect()
    }

    fn snapshot(s: &mut State, peers: Vec<PeerInfo>) {
        s.apply(Action::Snapshot {
            me: me(),
            peers,
            chats: vec![],
            trainings: vec![],
        });
    }

    const T: &str = "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

    fn report(round: u32, phase: Phase, seq: u64, run: Option<RunStatus>) -> PhaseReport {
        PhaseReport {
            round,
            phase,
            started_at: seq as i64 * 1000,
            run: run.map(|status| RunReport {
                status,
                started_at: seq as i64 * 1000,
                ended_at: (status != RunStatus::Running).then_some(seq as i64 * 1000 + 500),
                exit_code: None,
            }),
            metrics: vec![],
            seq,
        }
    }

    fn part(name: &str, training: &str, seq: u64, phases: Vec<PhaseReport>) -> Participant {
        Participant {
            name: name.into(),
            local: name == "alice",
            updated_at: seq as i64 * 1000,
            lane: Lane {
                training: training.into(),
                state: TrainingState::InRound,
                current_round: phases.iter().map(|p| p.round).max(),
                started_at: 0,
                finished_at: None,
                seq,
                phases,
            },
        }
    }

    fn participant_event(p: Participant) -> Action {
        Action::Event(Event::Participant { participant: p })
    }

    fn names(s: &State, training: &str) -> Vec<String> {
        s.training_participants(training)
            .lanes()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn lanes_and_metrics_merge_from_the_fetch_and_events() {
        use roundtable_shared::progress::Metric;
        let mut s = State::default();
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![
                part(
                    "bob",
                    T,
                    2,
                    vec![report(0, Phase::Update, 2, Some(RunStatus::Succeeded))],
                ),
                part(
                    "alice",
                    T,
                    1,
                    vec![report(0, Phase::Update, 1, Some(RunStatus::Running))],
                ),
            ],
        });
        assert_eq!(names(&s, T), ["alice", "bob"], "this node first");
        assert!(s.training_participants(T).full);
        // bob's next phase arrives with its loss; alice's run ends.
        let mut next = report(1, Phase::Update, 5, Some(RunStatus::Running));
        next.metrics.push(Metric {
            name: "loss".into(),
            value: 0.4,
        });
        s.apply(participant_event(part("bob", T, 5, vec![next])));
        let mut done = report(0, Phase::Update, 3, Some(RunStatus::Succeeded));
        done.metrics.push(Metric {
            name: "loss".into(),
            value: 0.5,
        });
        s.apply(participant_event(part("alice", T, 3, vec![done])));
        let tp = s.training_participants(T);
        let bob = &tp.by_name["bob"];
        assert_eq!(bob.lane.phases.len(), 2, "the new phase added to the old");
        assert_eq!(bob.lane.current_round, Some(1));
        let series = crate::collab::metric_series(&tp.lanes());
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].title(), "loss (train)");
        let lines: Vec<(&str, Vec<(u32, f64)>)> = series[0]
            .lines
            .iter()
            .map(|l| (l.participant.as_str(), l.points.clone()))
            .collect();
        assert_eq!(lines, [("alice", vec![(0, 0.5)]), ("bob", vec![(1, 0.4)])]);
        // Two of two done with round 0? bob is in round 1 now: round 1, 0 done.
        let st = s.round_status(T);
        assert_eq!((st.known, st.round, st.done), (2, Some(1), 0));
    }

    #[test]
    fn an_older_or_repeated_update_changes_nothing() {
        let mut s = State::default();
        let newer = part("bob", T, 7, vec![report(2, Phase::Test, 7, None)]);
        s.apply(participant_event(newer.clone()));
        let held = s.participants.clone();
        let rev = s.participants_rev;
        let trev = s.training_participants(T).rev;
        // The same update again, and an older one (a lower seq).
        s.apply(participant_event(newer));
        let mut older = part(
            "bob",
            T,
            4,
            vec![report(2, Phase::Test, 4, Some(RunStatus::Failed))],
        );
        older.lane.state = TrainingState::Started;
        s.apply(participant_event(older));
        assert_eq!(s.participants_rev, rev);
        assert_eq!(s.training_participants(T).rev, trev);
        assert!(Rc::ptr_eq(&held, &s.participants), "nothing copied");
        let bob = &s.training_participants(T).by_name["bob"];
        assert_eq!(bob.lane.state, TrainingState::InRound);
        assert_eq!(bob.lane.phases[0].run, None, "not the older record");
        // A fetch that crossed a newer event does not undo it either.
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![part("bob", T, 4, vec![report(2, Phase::Test, 4, None)])],
        });
        assert_eq!(s.training_participants(T).by_name["bob"].lane.seq, 7);
    }

    #[test]
    fn a_new_participant_or_training_appears_with_its_first_event() {
        let mut s = State::default();
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![part("alice", T, 1, vec![report(0, Phase::Update, 1, None)])],
        });
        let before = s.training_participants(T).rev;
        s.apply(participant_event(part(
            "carol",
            T,
            3,
            vec![report(0, Phase::Update, 3, None)],
        )));
        assert_eq!(names(&s, T), ["alice", "carol"]);
        assert!(s.training_participants(T).rev > before);
        // A training not fetched yet.
        let other = "11111111-2222-4333-8444-555555555555";
        s.apply(participant_event(part("bob", other, 1, vec![])));
        assert_eq!(names(&s, other), ["bob"]);
        assert!(!s.training_participants(other).full);
        // Gone with its training.
        s.apply(Action::Event(Event::TrainingGone { uuid: other.into() }));
        assert!(names(&s, other).is_empty());
    }

    #[test]
    fn the_summary_counts_per_training_and_keeps_full_lanes() {
        let mut s = State::default();
        let other = "11111111-2222-4333-8444-555555555555";
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![part(
                "alice",
                T,
                2,
                vec![
                    report(0, Phase::Update, 1, Some(RunStatus::Succeeded)),
                    report(1, Phase::Test, 2, Some(RunStatus::Succeeded)),
                ],
            )],
        });
        s.apply(participant_event(part("zed", other, 1, vec![])));
        let rev = s.participants_rev;
        s.apply(Action::ParticipantsSummary(vec![
            part(
                "alice",
                T,
                2,
                vec![report(1, Phase::Test, 2, Some(RunStatus::Succeeded))],
            ),
            part(
                "bob",
                T,
                3,
                vec![report(1, Phase::Update, 3, Some(RunStatus::Succeeded))],
            ),
            part(
                "alice",
                other,
                4,
                vec![report(3, Phase::Update, 4, Some(RunStatus::Running))],
            ),
            part(
                "carol",
                other,
                4,
                vec![report(3, Phase::Update, 4, Some(RunStatus::Succeeded))],
            ),
        ]));
        assert!(s.participants_rev > rev);
        // The full training keeps alice's two phases and gains bob.
        let tp = s.training_participants(T);
        assert_eq!(tp.by_name["alice"].lane.phases.len(), 2);
        assert_eq!(names(&s, T), ["alice", "bob"]);
        // The other follows the summary: zed is no longer listed.
        assert_eq!(names(&s, other), ["alice", "carol"]);
        let st = s.round_status(other);
        assert_eq!((st.known, st.round, st.done), (2, Some(3), 1));
        assert_eq!(s.round_status("unknown").known, 0);
    }

    #[test]
    fn a_peer_offline_shows_its_last_known_state() {
        let mut s = State::default();
        snapshot(&mut s, vec![peer("bob", true), peer("carol", false)]);
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![
                part(
                    "alice",
                    T,
                    9,
                    vec![report(2, Phase::Update, 9, Some(RunStatus::Running))],
                ),
                part(
                    "bob",
                    T,
                    9,
                    vec![report(2, Phase::Update, 9, Some(RunStatus::Running))],
                ),
                part(
                    "carol",
                    T,
                    4,
                    vec![report(1, Phase::Update, 4, Some(RunStatus::Running))],
                ),
            ],
        });
        let now = 10_000;
        let lanes = s.training_participants(T).lanes();
        let l = crate::collab::lane_summaries(&lanes, &s.peers, now);
        let offline: Vec<Option<i64>> = l.iter().map(|l| l.offline).collect();
        assert_eq!(
            offline,
            [None, None, Some(4000)],
            "carol, last heard at 4 s"
        );
        assert_eq!(l[2].latest.as_ref().map(|p| p.round), Some(1));
        // Her peer comes back online: her lane is live again, and behind.
        s.apply(Action::Event(Event::Peer {
            peer: peer("carol", true),
        }));
        let l = crate::collab::lane_summaries(&lanes, &s.peers, now);
        assert_eq!(l[2].offline, None);
        assert!(l[2].straggler, "round 1 while the others are in round 2");
    }

    #[test]
    fn snapshot_sets_everything() {
        let mut s = State::default();
        assert!(!s.loaded);
        s.apply(Action::Snapshot {
            me: me(),
            peers: vec![peer("bob", true)],
            chats: vec![ChatSummary {
                peer: "bob".into(),
                last: Some(msg(7, "a", Direction::In, MessageState::Delivered)),
                count: 7,
                last_read: 0,
                unread: 0,
            }],
            trainings: vec![],
        });
        assert!(s.loaded);
        assert_eq!(s.epoch, 1);
        assert_eq!(s.me.as_ref().unwrap().name, "alice");
        assert_eq!(s.directory, Some(LinkState::Connected));
        assert_eq!(s.chats["bob"].count, 7);
        assert_eq!(s.unread("bob"), 1, "the newest message is unread");
        s.apply(Action::MarkRead {
            peer: "bob".into(),
            seq: 7,
        });
        assert_eq!(s.unread("bob"), 0);
    }

    #[test]
    fn messages_are_ordered_and_deduplicated() {
        let mut s = State::default();
        for seq in [3, 1, 2, 3] {
            s.apply(Action::Event(Event::Message {
                message: msg(
                    seq,
                    &format!("id{seq}"),
                    Direction::In,
                    MessageState::Delivered,
                ),
            }));
        }
        assert_eq!(seqs(&s), [1, 2, 3]);
        assert_eq!(s.chats["bob"].count, 3);
        // The POST's answer and the event for the same message.
        let m = msg(4, "x", Direction::Out, MessageState::Queued);
        s.apply(Action::Accepted(m.clone()));
        s.apply(Action::Event(Event::Message { message: m }));
        assert_eq!(seqs(&s), [1, 2, 3, 4]);
        assert_eq!(s.chats["bob"].count, 4);
        // A history page overlapping what is loaded.
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: (1..=4)
                .map(|i| msg(i, &format!("id{i}"), Direction::In, MessageState::Delivered))
                .collect(),
            limit: 50,
        });
        assert_eq!(seqs(&s), [1, 2, 3, 4]);
        assert!(!s.chats["bob"].has_more);
    }

    #[test]
    fn message_state_never_goes_backwards() {
        let mut s = State::default();
        let m = msg(1, "x", Direction::Out, MessageState::Queued);
        s.apply(Action::Accepted(m.clone()));
        let state = |st| {
            Action::Event(Event::MessageState {
                peer: "bob".into(),
                id: "x".into(),
                state: st,
                room: None,
            })
        };
        s.apply(state(MessageState::Delivered));
        s.apply(state(MessageState::Sent));
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Delivered);
        // The queued copy arriving late does not lower it either.
        s.apply(Action::Event(Event::Message { message: m }));
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Delivered);
        assert_eq!(
            s.chats["bob"].last.as_ref().unwrap().state,
            MessageState::Delivered
        );
    }

    #[test]
    fn a_sent_message_whose_link_broke_is_queued_again_but_delivered_is_final() {
        let mut s = State::default();
        s.apply(Action::Accepted(msg(
            1,
            "x",
            Direction::Out,
            MessageState::Queued,
        )));
        let state = |st| {
            Action::Event(Event::MessageState {
                peer: "bob".into(),
                id: "x".into(),
                state: st,
                room: None,
            })
        };
        s.apply(state(MessageState::Sent));
        s.apply(state(MessageState::Queued));
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Queued);
        s.apply(state(MessageState::Delivered));
        s.apply(state(MessageState::Queued));
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Delivered);
    }

    #[test]
    fn a_state_before_its_message_is_kept() {
        let mut s = State::default();
        s.apply(Action::Event(Event::MessageState {
            peer: "bob".into(),
            id: "y".into(),
            state: MessageState::Sent,
            room: None,
        }));
        s.apply(Action::Accepted(msg(
            1,
            "y",
            Direction::Out,
            MessageState::Queued,
        )));
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Sent);
    }

    #[test]
    fn history_pages_prepend_and_track_has_more() {
        let mut s = State::default();
        let page = |r: std::ops::RangeInclusive<i64>| -> Vec<ChatMessage> {
            r.map(|i| msg(i, &format!("i{i}"), Direction::In, MessageState::Delivered))
                .collect()
        };
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: page(51..=100),
            limit: 50,
        });
        assert!(s.chats["bob"].has_more);
        s.apply(Action::Older {
            peer: "bob".into(),
            messages: page(1..=50),
            limit: 50,
        });
        assert_eq!(seqs(&s).len(), 100);
        assert_eq!(seqs(&s)[0], 1);
        assert!(s.chats["bob"].has_more);
        s.apply(Action::Older {
            peer: "bob".into(),
            messages: vec![],
            limit: 50,
        });
        assert!(!s.chats["bob"].has_more);
        // After a long time offline the newest page is not adjacent: start over.
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: page(501..=550),
            limit: 50,
        });
        assert_eq!(seqs(&s), (501..=550).collect::<Vec<_>>());
        assert!(s.chats["bob"].has_more);
        // Not full: merges, keeps what was loaded.
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: page(549..=552),
            limit: 50,
        });
        assert_eq!(seqs(&s).len(), 52);
    }

    fn received(seqs: impl IntoIterator<Item = i64>) -> Vec<ChatMessage> {
        seqs.into_iter()
            .map(|i| msg(i, &format!("i{i}"), Direction::In, MessageState::Delivered))
            .collect()
    }

    fn chat_with(seqs: impl IntoIterator<Item = i64>, has_more: bool) -> Chat {
        let messages = received(seqs);
        let mut c = Chat::default();
        let limit = if has_more {
            messages.len()
        } else {
            messages.len() + 1
        };
        c.latest(messages, limit);
        c
    }

    #[test]
    fn a_hit_is_sought_page_by_page_until_loaded() {
        // Nothing loaded yet: wait for the newest page.
        assert_eq!(Chat::default().seek(5, 0), HitSeek::Waiting);
        // A hit in the newest page is there.
        let mut c = chat_with(1001..=1500, true);
        assert_eq!(c.seek(1200, 0), HitSeek::Found);
        // An older one: the page before the first loaded message, again
        // and again (the user scrolling loads pages too).
        assert_eq!(c.seek(7, 0), HitSeek::Older { before: 1001 });
        c.older(received(501..=1000), HIT_PAGE);
        assert_eq!(c.seek(7, 1), HitSeek::Older { before: 501 });
        c.older(received(1..=500), HIT_PAGE);
        assert_eq!(c.seek(7, 2), HitSeek::Found);
        assert_eq!(c.seek(1500, 2), HitSeek::Found);
    }

    #[test]
    fn a_hit_not_in_the_conversation_is_missing_not_sought_forever() {
        // Seqs are the node's, shared by every conversation: this one has
        // gaps. A seq inside the loaded range that is not there is missing.
        let c = chat_with([10, 20, 30, 40], true);
        assert_eq!(c.seek(25, 0), HitSeek::Missing);
        assert_eq!(c.seek(45, 0), HitSeek::Missing, "newer than the newest");
        assert_eq!(c.seek(5, 0), HitSeek::Older { before: 10 });
        // The whole history is loaded (the last page was short, or the
        // node answered an empty page): older than all of it is missing.
        let mut c = chat_with([10, 20, 30, 40], false);
        assert_eq!(c.seek(5, 0), HitSeek::Missing);
        let mut more = chat_with([10, 20], true);
        more.older(vec![], HIT_PAGE);
        assert_eq!(more.seek(5, 1), HitSeek::Missing, "empty page: no more");
        // A conversation with no message at all.
        c.messages.clear();
        assert_eq!(c.seek(5, 0), HitSeek::Missing);
    }

    #[test]
    fn a_hit_further_back_than_the_cap_is_given_up() {
        let c = chat_with(100_001..=100_500, true);
        assert_eq!(c.seek(3, HIT_PAGES - 1), HitSeek::Older { before: 100_001 });
        assert_eq!(c.seek(3, HIT_PAGES), HitSeek::TooFar);
        // Already loaded counts whatever the pages.
        assert_eq!(c.seek(100_200, HIT_PAGES), HitSeek::Found);
    }

    #[test]
    fn unread_counts_incoming_after_the_read_mark() {
        let mut s = State::default();
        // The node's mark, from another browser of the user.
        s.apply(Action::Event(Event::ReadState {
            state: roundtable_shared::api::ReadState {
                peer: "bob".into(),
                last_read: 2,
                unread: 0,
                room: None,
            },
        }));
        for (seq, dir) in [
            (1, Direction::In),
            (2, Direction::In),
            (3, Direction::Out),
            (4, Direction::In),
            (5, Direction::In),
        ] {
            s.apply(Action::Event(Event::Message {
                message: msg(seq, &format!("i{seq}"), dir, MessageState::Delivered),
            }));
        }
        assert_eq!(s.unread("bob"), 2);
        s.apply(Action::MarkRead {
            peer: "bob".into(),
            seq: 4,
        });
        assert_eq!(s.unread("bob"), 1);
        assert_eq!(s.unread_total(), 1);
        // Read marks never move back.
        s.apply(Action::MarkRead {
            peer: "bob".into(),
            seq: 1,
        });
        assert_eq!(s.last_read("bob"), 4);
    }

    #[test]
    fn peers_sorted_and_filtered() {
        let mut s = State::default();
        snapshot(
            &mut s,
            vec![
                peer("alice", true),
                peer("zed", true),
                peer("bob", false),
                peer("carol", false),
                peer("dave", true),
            ],
        );
        s.apply(Action::Event(Event::Message {
            message: ChatMessage {
                peer: "carol".into(),
                ..msg(1, "c", Direction::In, MessageState::Delivered)
            },
        }));
        let names = |rows: Vec<PeerRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        // Unread first, then online, then by name; never ourselves.
        assert_eq!(names(s.peer_list("")), ["carol", "dave", "zed", "bob"]);
        assert_eq!(names(s.peer_list("  A ")), ["carol", "dave"]);
        s.apply(Action::Event(Event::Peer {
            peer: peer("bob", true),
        }));
        assert_eq!(names(s.peer_list("")), ["carol", "bob", "dave", "zed"]);
        // A thousand peers.
        snapshot(
            &mut s,
            (0..1000)
                .map(|i| peer(&format!("p{i:04}"), i % 2 == 0))
                .collect(),
        );
        let rows = s.peer_list("");
        assert_eq!(rows.len(), 1001, "carol's conversation stays listed");
        assert_eq!(s.peer_list("p09").len(), 100);
    }

    #[test]
    fn a_peer_that_left_the_directory_is_dropped_from_the_list() {
        let mut s = State::default();
        snapshot(&mut s, vec![peer("bob", true), peer("carol", false)]);
        let rev = s.peers_rev;
        s.apply(Action::Event(Event::PeerGone { name: "bob".into() }));
        let names: Vec<_> = s.peer_list("").into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["carol"]);
        assert!(s.peers_rev > rev, "the list is redrawn");
        // Unknown names change nothing.
        let rev = s.peers_rev;
        s.apply(Action::Event(Event::PeerGone { name: "zed".into() }));
        assert_eq!(s.peers_rev, rev);
    }

    #[test]
    fn day_dividers_come_before_the_first_row_of_each_local_day() {
        let day = 86_400_000;
        let at = |t: i64| {
            let mut m = msg(t, "x", Direction::In, MessageState::Delivered);
            m.at = t;
            Item::Message(Rc::new(m))
        };
        // 23:30 and 00:30 UTC: two days in UTC, one day two hours west.
        let items = vec![
            at(10 * day - 1_800_000),
            at(10 * day + 1_800_000),
            at(11 * day + 5),
        ];
        let keys = |v: &[Item]| v.iter().map(|i| i.key().to_string()).collect::<Vec<_>>();
        let utc = with_days(items.clone(), 0);
        assert_eq!(
            keys(&utc),
            [
                "d9",
                &format!("m{}", 10 * day - 1_800_000),
                "d10",
                &format!("m{}", 10 * day + 1_800_000),
                "d11",
                &format!("m{}", 11 * day + 5)
            ]
        );
        let west = with_days(items, -120);
        assert_eq!(west.iter().filter(|i| matches!(i, Item::Day(_))).count(), 2);
        assert!(with_days(vec![], 0).is_empty());
        assert_eq!("d12".parse::<RowKey>(), Ok(RowKey::Day(12)));
    }

    #[test]
    fn presence_is_unknown_while_the_dashboard_has_lost_its_node() {
        let mut s = State::default();
        let mut bob = PeerInfo::unknown("bob");
        bob.online = true;
        snapshot(&mut s, vec![bob]);
        s.apply(Action::Ws(WsState::Connected));
        let row = &s.peer_list("")[0];
        assert!(row.online && row.presence_known);
        let rev = s.peers_rev;
        s.apply(Action::Ws(WsState::Reconnecting(1)));
        assert!(s.peers_rev > rev, "the list is redrawn");
        let row = &s.peer_list("")[0];
        assert!(!row.presence_known, "not 'online' while disconnected");
        s.apply(Action::Ws(WsState::Connected));
        assert!(s.peer_list("")[0].presence_known);
    }

    #[test]
    fn a_trainings_participants_fetched_before_the_snapshot_are_kept() {
        let mut s = State::default();
        s.apply(Action::Ws(WsState::Connecting));
        assert_eq!(s.connections, 0, "nothing to fetch beside yet");
        s.apply(Action::Ws(WsState::Connected));
        assert_eq!(s.connections, 1);
        // The training's page fetched its participants beside the
        // snapshot; they came first.
        s.apply(Action::Participants {
            training: T.into(),
            participants: vec![part(
                "bob",
                T,
                1,
                vec![report(0, Phase::Update, 1, Some(RunStatus::Succeeded))],
            )],
        });
        snapshot(&mut s, vec![]);
        let tp = s.training_participants(T);
        assert!(tp.full, "the page shows them, not 'loading'");
        assert_eq!(names(&s, T), ["bob"]);
        // A new connection: fetched again.
        s.apply(Action::Ws(WsState::Reconnecting(1)));
        s.apply(Action::Ws(WsState::Connected));
        assert_eq!(s.connections, 2);
    }

    #[test]
    fn events_update_links_trainings_and_output() {
        let mut s = State::default();
        snapshot(&mut s, vec![]);
        s.apply(Action::Ws(WsState::Reconnecting(1)));
        assert_eq!(s.ws.unwrap().label(), "reconnecting");
        s.apply(Action::Event(Event::Directory {
            state: LinkState::Reconnecting,
        }));
        assert_eq!(s.directory, Some(LinkState::Reconnecting));
        assert_eq!(
            s.me.as_ref().unwrap().directory_state,
            LinkState::Reconnecting
        );
        let t = Training {
            name: None,
            uuid: "t1".into(),
            state: TrainingState::InRound,
            current_round: Some(0),
            started_at: 1,
            finished_at: None,
            global_model_id: None,
            rounds: vec![Round {
                round: 0,
                phases: vec![PhaseRecord {
                    phase: Phase::Update,
                    started_at: 1,
                    model_id: "m".into(),
                    run: Some(Run {
                        status: RunStatus::Running,
                        started_at: 1,
                        ended_at: None,
                        exit_code: None,
                        output_tail: vec![],
                        metrics_ignored: 0,
                    }),
                }],
            }],
        };
        s.apply(Action::Event(Event::Training { training: t }));
        for i in 0..(OUTPUT_LINES + 5) {
            s.apply(Action::Event(Event::RunOutput {
                training: "t1".into(),
                round: 0,
                phase: Phase::Update,
                line: format!("line {i}"),
            }));
        }
        // Output for unknown trainings or phases is ignored.
        s.apply(Action::Event(Event::RunOutput {
            training: "nope".into(),
            round: 0,
            phase: Phase::Update,
            line: "x".into(),
        }));
        let tail = &s.trainings["t1"].rounds[0].phases[0]
            .run
            .as_ref()
            .unwrap()
            .output_tail;
        assert_eq!(tail.len(), OUTPUT_LINES);
        assert_eq!(tail.last().unwrap(), &format!("line {}", OUTPUT_LINES + 4));
        // An evicted training leaves the list; an unknown one changes nothing.
        s.apply(Action::Event(Event::TrainingGone {
            uuid: "nope".into(),
        }));
        assert_eq!(s.trainings.len(), 1);
        s.apply(Action::Event(Event::TrainingGone { uuid: "t1".into() }));
        assert!(s.trainings.is_empty());
    }

    const OLD: &str = "aaaa aaaa aaaa aaaa aaaa aaaa aaaa aaaa";
    const NEW: &str = "bbbb bbbb bbbb bbbb bbbb bbbb bbbb bbbb";
    const NEWER: &str = "cccc cccc cccc cccc cccc cccc cccc cccc";

    fn key_changed(offered: &str) -> PeerInfo {
        PeerInfo {
            trust: PeerTrust::KeyChanged,
            pinned_fingerprint: Some(OLD.into()),
            pinned_by: Some(PinSource::FirstUse),
            offered_fingerprint: Some(offered.into()),
            ..peer("bob", true)
        }
    }

    fn accept(s: &mut State, acceptance: KeyAcceptance) {
        s.apply(Action::KeyAcceptance {
            peer: "bob".into(),
            acceptance,
        });
    }

    #[test]
    fn an_accepted_key_is_settled_by_the_peer_event() {
        let mut s = State::default();
        snapshot(&mut s, vec![key_changed(NEW)]);
        let row = &s.peer_list("")[0];
        assert_eq!(row.trust, PeerTrust::KeyChanged);
        assert_eq!(row.pinned_fingerprint.as_deref(), Some(OLD));
        accept(
            &mut s,
            KeyAcceptance::Pending {
                fingerprint: NEW.into(),
            },
        );
        accept(
            &mut s,
            KeyAcceptance::Accepted {
                fingerprint: NEW.into(),
            },
        );
        assert_eq!(
            s.key_acceptance.get("bob").map(|a| a.fingerprint()),
            Some(NEW)
        );
        // An event about something else (still key_changed, same offer) keeps it.
        s.apply(Action::Event(Event::Peer {
            peer: key_changed(NEW),
        }));
        assert!(matches!(
            s.key_acceptance.get("bob"),
            Some(KeyAcceptance::Accepted { .. })
        ));
        // The node's event: bob verified with the new key, accepted by us.
        let rev = s.peers_rev;
        s.apply(Action::Event(Event::Peer {
            peer: PeerInfo {
                trust: PeerTrust::Verified,
                pinned_fingerprint: Some(NEW.into()),
                pinned_by: Some(PinSource::Accepted),
                offered_fingerprint: None,
                ..peer("bob", true)
            },
        }));
        assert!(s.key_acceptance.is_empty(), "the banner's state is gone");
        assert!(s.peers_rev > rev, "the list is redrawn");
        let row = &s.peer_list("")[0];
        assert_eq!(row.trust, PeerTrust::Verified);
        assert_eq!(row.pinned_by, Some(PinSource::Accepted));
        assert_eq!(row.pinned_fingerprint.as_deref(), Some(NEW));
        // The POST's answer arriving after the event changes nothing, nor
        // does the peer fetched after it, older than the event.
        accept(
            &mut s,
            KeyAcceptance::Accepted {
                fingerprint: NEW.into(),
            },
        );
        s.apply(Action::PeerRefetched(key_changed(NEW)));
        assert!(s.key_acceptance.is_empty());
        assert_eq!(s.peers["bob"].trust, PeerTrust::Verified);
    }

    #[test]
    fn a_refetched_peer_settles_an_acceptance_whose_event_lags() {
        let mut s = State::default();
        snapshot(&mut s, vec![key_changed(NEW)]);
        accept(
            &mut s,
            KeyAcceptance::Accepted {
                fingerprint: NEW.into(),
            },
        );
        s.apply(Action::PeerRefetched(PeerInfo {
            trust: PeerTrust::Verified,
            pinned_fingerprint: Some(NEW.into()),
            pinned_by: Some(PinSource::Accepted),
            ..peer("bob", true)
        }));
        assert_eq!(s.peers["bob"].trust, PeerTrust::Verified);
        assert!(s.key_acceptance.is_empty());
    }

    #[test]
    fn a_key_that_changes_again_asks_for_a_new_comparison() {
        let mut s = State::default();
        snapshot(&mut s, vec![key_changed(NEW)]);
        accept(
            &mut s,
            KeyAcceptance::Pending {
                fingerprint: NEW.into(),
            },
        );
        // Before the node's answer, bob offers yet another key.
        s.apply(Action::Event(Event::Peer {
            peer: key_changed(NEWER),
        }));
        assert_eq!(
            s.key_acceptance.get("bob"),
            Some(&KeyAcceptance::ChangedAgain {
                fingerprint: NEW.into()
            })
        );
        assert_eq!(
            s.peers["bob"].offered_fingerprint.as_deref(),
            Some(NEWER),
            "the banner shows the newest key"
        );
        // A failure is kept until the user tries again or it settles.
        accept(
            &mut s,
            KeyAcceptance::Failed {
                fingerprint: NEWER.into(),
                error: "cannot reach the node".into(),
            },
        );
        s.apply(Action::Event(Event::Peer {
            peer: key_changed(NEWER),
        }));
        assert!(matches!(
            s.key_acceptance.get("bob"),
            Some(KeyAcceptance::Failed { .. })
        ));
        // A snapshot where bob is no longer in question drops it; so does leaving.
        snapshot(&mut s, vec![peer("bob", true)]);
        assert!(s.key_acceptance.is_empty());
        snapshot(&mut s, vec![key_changed(NEW)]);
        accept(
            &mut s,
            KeyAcceptance::Pending {
                fingerprint: NEW.into(),
            },
        );
        s.apply(Action::Event(Event::PeerGone { name: "bob".into() }));
        assert!(s.key_acceptance.is_empty());
    }

    fn result(name: &str, answered: bool) -> roundtable_shared::api::PeerCheckResult {
        roundtable_shared::api::PeerCheckResult {
            name: name.into(),
            answered,
            rtt_ms: answered.then_some(1.25),
            version: answered.then(|| "roundtable 0.1.0".into()),
            path: answered.then_some(PeerPath::Direct),
            error: (!answered).then(|| "no answer within 3000 ms".into()),
        }
    }

    #[test]
    fn a_check_result_is_stored_sorted_and_survives_a_failed_check() {
        let mut s = State::default();
        assert_eq!(s.check.status, CheckStatus::Idle);
        s.apply(Action::CheckStarted);
        assert_eq!(s.check.status, CheckStatus::Running);
        s.apply(Action::Checked(PeerCheck {
            timeout_ms: 3000,
            results: vec![
                result("zed", false),
                result("bob", true),
                result("carol", true),
            ],
        }));
        assert_eq!(s.check.status, CheckStatus::Done);
        let last = s.check.last.clone().unwrap();
        let names: Vec<_> = last.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["bob", "carol", "zed"]);
        // The next check: the previous answers stay on screen while it runs...
        s.apply(Action::CheckStarted);
        assert_eq!(s.check.status, CheckStatus::Running);
        assert_eq!(s.check.last.as_ref(), Some(&last));
        // ...and when it fails, beside its error.
        s.apply(Action::CheckFailed("cannot reach the node".into()));
        assert_eq!(
            s.check.status,
            CheckStatus::Failed("cannot reach the node".into())
        );
        assert_eq!(s.check.last.as_ref(), Some(&last));
        // A successful check replaces them.
        s.apply(Action::CheckStarted);
        s.apply(Action::Checked(PeerCheck {
            timeout_ms: 1000,
            results: vec![],
        }));
        assert_eq!(s.check.status, CheckStatus::Done);
        assert!(s.check.last.as_ref().unwrap().results.is_empty());
    }

    #[test]
    fn peer_rows_carry_path_and_relay_only() {
        let mut s = State::default();
        snapshot(
            &mut s,
            vec![
                PeerInfo {
                    relay: true,
                    path: Some(PeerPath::Relayed),
                    ..peer("bob", true)
                },
                PeerInfo {
                    relay: true,
                    address: Some("127.0.0.1".into()),
                    port: Some(7000),
                    path: Some(PeerPath::Direct),
                    ..peer("carol", true)
                },
            ],
        );
        let rows = s.peer_list("");
        assert_eq!(
            (rows[0].name.as_str(), rows[0].path, rows[0].relay_only),
            ("bob", Some(PeerPath::Relayed), true)
        );
        assert_eq!(
            (rows[1].name.as_str(), rows[1].path, rows[1].relay_only),
            ("carol", Some(PeerPath::Direct), false)
        );
    }

    fn transfer(seq: i64, state: TransferState, bytes: u64, updated_at: i64) -> TransferInfo {
        TransferInfo {
            seq,
            id: format!("{seq:032x}"),
            peer: "bob".into(),
            direction: Direction::Out,
            name: format!("file{seq}.bin"),
            size: 1000,
            sha256: "ab".repeat(32),
            state,
            bytes,
            rate: (state == TransferState::Sending).then_some(100.0),
            error: None,
            created_at: seq * 1000,
            updated_at,
            bare: false,
            downloadable: true,
            room: None,
        }
    }

    fn transfer_event(t: TransferInfo) -> Action {
        Action::Event(Event::Transfer { transfer: t })
    }

    fn held(s: &State, seq: i64) -> (TransferState, u64) {
        let t = &s.transfers.by_seq[&seq];
        (t.state, t.bytes)
    }

    #[test]
    fn a_file_posted_in_a_room_shows_once_there_and_in_no_direct_chat() {
        let mut s = State::default();
        let to = |seq, peer: &str, state| TransferInfo {
            peer: peer.into(),
            name: "plan.pdf".into(),
            created_at: 5000,
            room: Some("r1".into()),
            ..transfer(seq, state, 0, 10)
        };
        s.apply(transfer_event(to(3, "carol", TransferState::Sending)));
        s.apply(transfer_event(to(2, "bob", TransferState::Delivered)));
        // Received in the room, from dave; and a direct file to bob.
        s.apply(transfer_event(TransferInfo {
            direction: Direction::In,
            peer: "dave".into(),
            room: Some("r1".into()),
            ..transfer(4, TransferState::Delivered, 1000, 10)
        }));
        s.apply(transfer_event(transfer(5, TransferState::Queued, 0, 10)));
        // Another room's file.
        s.apply(transfer_event(TransferInfo {
            room: Some("r2".into()),
            ..transfer(6, TransferState::Queued, 0, 10)
        }));

        let files = s.room_files("r1");
        let mut shown: Vec<i64> = files.shown.iter().map(|t| t.seq).collect();
        shown.sort();
        assert_eq!(
            shown,
            [2, 4],
            "the post once (its first number), dave's file"
        );
        let post = files.shown.iter().find(|t| t.seq == 2).unwrap();
        assert_eq!(post.state, TransferState::Sending, "still moving to carol");
        let to_whom: Vec<&str> = files.recipients[&2]
            .iter()
            .map(|t| t.peer.as_str())
            .collect();
        assert_eq!(to_whom, ["bob", "carol"]);
        assert!(!files.recipients.contains_key(&4));
        let bobs: Vec<i64> = s.peer_transfers("bob").iter().map(|t| t.seq).collect();
        assert_eq!(bobs, [5], "room files stay out of the direct chat");

        s.apply(transfer_event(to(3, "carol", TransferState::Failed)));
        assert_eq!(
            s.room_files("r1")
                .shown
                .iter()
                .find(|t| t.seq == 2)
                .unwrap()
                .state,
            TransferState::Failed
        );
        s.apply(transfer_event(TransferInfo {
            updated_at: 99,
            ..to(3, "carol", TransferState::Delivered)
        }));
        assert_eq!(
            s.room_files("r1")
                .shown
                .iter()
                .find(|t| t.seq == 2)
                .unwrap()
                .state,
            TransferState::Delivered
        );
    }

    #[test]
    fn transfer_events_update_by_seq_and_never_go_backwards() {
        let mut s = State::default();
        s.apply(transfer_event(transfer(1, TransferState::Queued, 0, 10)));
        s.apply(transfer_event(transfer(1, TransferState::Sending, 400, 20)));
        assert_eq!(s.transfers.by_seq.len(), 1, "one transfer, updated");
        assert_eq!(held(&s, 1), (TransferState::Sending, 400));
        // A progress event overtaken by a newer one arrives late.
        s.apply(transfer_event(transfer(1, TransferState::Sending, 900, 40)));
        s.apply(transfer_event(transfer(1, TransferState::Sending, 600, 30)));
        assert_eq!(held(&s, 1), (TransferState::Sending, 900));
        // Delivered is not undone by an older "sending" or "waiting".
        s.apply(transfer_event(transfer(
            1,
            TransferState::Delivered,
            1000,
            50,
        )));
        s.apply(transfer_event(transfer(1, TransferState::Sending, 950, 45)));
        s.apply(transfer_event(transfer(1, TransferState::Waiting, 950, 49)));
        assert_eq!(held(&s, 1), (TransferState::Delivered, 1000));
        // Nor, at the same millisecond, by a non-final copy.
        s.apply(transfer_event(transfer(
            1,
            TransferState::Sending,
            1000,
            50,
        )));
        assert_eq!(held(&s, 1), (TransferState::Delivered, 1000));
        // Failed is final too.
        s.apply(transfer_event(TransferInfo {
            error: Some("bob refused the file: no space left".into()),
            ..transfer(2, TransferState::Failed, 10, 70)
        }));
        s.apply(transfer_event(transfer(2, TransferState::Sending, 10, 60)));
        assert_eq!(held(&s, 2), (TransferState::Failed, 10));
        assert_eq!(
            s.transfers.by_seq[&2].error.as_deref(),
            Some("bob refused the file: no space left")
        );
    }

    #[test]
    fn an_upload_answer_and_its_event_make_one_transfer_in_either_order() {
        for event_first in [false, true] {
            let mut s = State::default();
            s.apply(Action::UploadStarted(Upload {
                id: 7,
                peer: "bob".into(),
                room: None,
                name: "model.pt".into(),
                size: 1000,
                started_at: 5,
                error: None,
            }));
            assert_eq!(s.peer_uploads("bob").len(), 1, "shown as uploading");
            let created = transfer(3, TransferState::Queued, 0, 100);
            let moving = transfer(3, TransferState::Sending, 500, 200);
            if event_first {
                s.apply(transfer_event(created.clone()));
                s.apply(transfer_event(moving.clone()));
            }
            let rev = s.transfers_rev;
            s.apply(Action::UploadDone {
                id: 7,
                transfers: vec![created],
            });
            assert!(s.transfers_rev > rev);
            if !event_first {
                s.apply(transfer_event(moving));
            }
            assert!(s.uploads.is_empty(), "no longer uploading");
            assert_eq!(s.transfers.by_seq.len(), 1, "no duplicate");
            assert_eq!(held(&s, 3), (TransferState::Sending, 500));
            assert_eq!(s.conversation("bob").len(), 1);
        }
    }

    #[test]
    fn a_failed_upload_keeps_its_sentence_until_dismissed() {
        let mut s = State::default();
        let up = |id| Upload {
            id,
            peer: "bob".into(),
            room: None,
            name: format!("f{id}"),
            size: 1,
            started_at: 1,
            error: None,
        };
        s.apply(Action::UploadStarted(up(1)));
        s.apply(Action::UploadStarted(up(2)));
        s.apply(Action::UploadFailed {
            id: 1,
            error: "the file is larger than this node accepts (10 GiB)".into(),
        });
        // Other changes (a refetch, events) keep it.
        s.apply(Action::TransfersRequested);
        s.apply(Action::Transfers(vec![]));
        s.apply(transfer_event(transfer(1, TransferState::Queued, 0, 1)));
        let ups = s.peer_uploads("bob");
        assert_eq!(ups.len(), 2);
        assert_eq!(
            ups[0].error.as_deref(),
            Some("the file is larger than this node accepts (10 GiB)")
        );
        assert_eq!(ups[1].error, None, "the other one still runs");
        assert!(s.peer_uploads("carol").is_empty());
        s.apply(Action::UploadDismissed(1));
        assert_eq!(s.peer_uploads("bob").len(), 1);
        // An answer for an unknown upload changes nothing else.
        s.apply(Action::UploadFailed {
            id: 99,
            error: "x".into(),
        });
        assert_eq!(s.uploads.len(), 1);
    }

    #[test]
    fn a_refetched_list_replaces_but_keeps_newer_changes() {
        let mut s = State::default();
        assert!(!s.transfers.loaded);
        s.apply(transfer_event(transfer(1, TransferState::Sending, 100, 10)));
        s.apply(transfer_event(transfer(2, TransferState::Sending, 100, 10)));
        s.apply(Action::TransfersRequested);
        // While the request runs: transfer 1 moves on, 3 is created.
        s.apply(transfer_event(transfer(
            1,
            TransferState::Delivered,
            1000,
            30,
        )));
        s.apply(transfer_event(transfer(3, TransferState::Queued, 0, 31)));
        // The list was made before those: 1 older, 2 gone, 4 new.
        s.apply(Action::Transfers(vec![
            transfer(4, TransferState::Delivered, 1000, 20),
            transfer(1, TransferState::Sending, 500, 20),
        ]));
        assert!(s.transfers.loaded);
        let seqs: Vec<i64> = s.transfers.by_seq.keys().copied().collect();
        assert_eq!(
            seqs,
            [1, 3, 4],
            "2 dropped, 3 kept: it changed after the request"
        );
        assert_eq!(held(&s, 1), (TransferState::Delivered, 1000));
        // The next refetch without 3 drops it: nothing changed it since.
        s.apply(Action::TransfersRequested);
        s.apply(Action::Transfers(vec![transfer(
            1,
            TransferState::Delivered,
            1000,
            30,
        )]));
        let seqs: Vec<i64> = s.transfers.by_seq.keys().copied().collect();
        assert_eq!(seqs, [1]);
    }

    #[test]
    fn the_files_list_is_newest_first_and_filtered_by_state() {
        let mut s = State::default();
        s.apply(Action::TransfersRequested);
        s.apply(Action::Transfers(vec![
            transfer(2, TransferState::Failed, 0, 1),
            transfer(5, TransferState::Delivered, 1000, 1),
            transfer(1, TransferState::Delivered, 1000, 1),
            TransferInfo {
                peer: "127.0.0.1:5555".into(),
                direction: Direction::In,
                bare: true,
                ..transfer(9, TransferState::Sending, 10, 1)
            },
        ]));
        let seqs = |l: Vec<Rc<TransferInfo>>| l.iter().map(|t| t.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.transfer_list(None)), [9, 5, 2, 1]);
        assert_eq!(
            seqs(s.transfer_list(Some(TransferState::Delivered))),
            [5, 1]
        );
        assert_eq!(
            seqs(s.transfer_list(Some(TransferState::Waiting))),
            [] as [i64; 0]
        );
        assert_eq!(s.peer_transfers("127.0.0.1:5555").len(), 1);
        assert_eq!(s.peer_transfers("bob").len(), 3);
    }

    #[test]
    fn a_conversation_merges_messages_and_transfers_by_time() {
        let mut s = State::default();
        // Messages at 1000, 2000, ... 5000 (seq * 1000).
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: (1..=5)
                .map(|i| msg(i, &format!("i{i}"), Direction::In, MessageState::Delivered))
                .collect(),
            limit: 50,
        });
        // Transfers created at 2500, 0 and 9000, out of order.
        for t in [
            TransferInfo {
                created_at: 9000,
                ..transfer(12, TransferState::Queued, 0, 9000)
            },
            TransferInfo {
                created_at: 2500,
                ..transfer(10, TransferState::Delivered, 1000, 3000)
            },
            TransferInfo {
                created_at: 0,
                ..transfer(11, TransferState::Failed, 0, 1)
            },
            TransferInfo {
                peer: "carol".into(),
                ..transfer(13, TransferState::Queued, 0, 1)
            },
        ] {
            s.apply(transfer_event(t));
        }
        s.apply(Action::UploadStarted(Upload {
            id: 1,
            peer: "bob".into(),
            room: None,
            name: "big.bin".into(),
            size: 5,
            started_at: 1,
            error: None,
        }));
        let keys: Vec<String> = s
            .conversation("bob")
            .iter()
            .map(|i| i.key().to_string())
            .collect();
        assert_eq!(
            keys,
            ["f11", "m1", "m2", "f10", "m3", "m4", "m5", "f12", "u1"],
            "carol's transfer is not in bob's conversation"
        );
        for k in &keys {
            assert_eq!(k.parse::<RowKey>().unwrap().to_string(), *k);
        }
        assert!("x1".parse::<RowKey>().is_err());
        assert!("".parse::<RowKey>().is_err());
    }

    #[test]
    fn transfers_older_than_the_loaded_history_wait_for_it() {
        let mut s = State::default();
        // The newest page (seq 51..=100, at 51000..) of a longer history.
        s.apply(Action::Latest {
            peer: "bob".into(),
            messages: (51..=100)
                .map(|i| msg(i, &format!("i{i}"), Direction::In, MessageState::Delivered))
                .collect(),
            limit: 50,
        });
        s.apply(transfer_event(TransferInfo {
            created_at: 10_500,
            ..transfer(1, TransferState::Delivered, 1000, 11_000)
        }));
        s.apply(transfer_event(TransferInfo {
            created_at: 60_500,
            ..transfer(2, TransferState::Delivered, 1000, 61_000)
        }));
        let keys =
            |s: &State| -> Vec<RowKey> { s.conversation("bob").iter().map(Item::key).collect() };
        assert!(
            !keys(&s).contains(&RowKey::Transfer(1)),
            "older than the loaded page"
        );
        assert!(keys(&s).contains(&RowKey::Transfer(2)));
        // Once the older history is loaded, it takes its place in it.
        s.apply(Action::Older {
            peer: "bob".into(),
            messages: (1..=50)
                .map(|i| msg(i, &format!("i{i}"), Direction::In, MessageState::Delivered))
                .collect(),
            limit: 100,
        });
        let k = keys(&s);
        let pos = |key| k.iter().position(|x| *x == key).unwrap();
        assert_eq!(pos(RowKey::Transfer(1)), pos(RowKey::Message(10)) + 1);
        assert_eq!(pos(RowKey::Transfer(2)), pos(RowKey::Message(60)) + 1);
        // A conversation with transfers only.
        assert_eq!(
            State {
                chats: BTreeMap::new(),
                ..s.clone()
            }
            .conversation("bob")
            .len(),
            2
        );
    }

    const ROOM: &str = "0123456789abcdef0123456789abcdef";

    fn room(id: &str, name: &str, members: &[(&str, bool)]) -> RoomSummary {
        RoomSummary {
            id: id.into(),
            name: name.into(),
            training: None,
            members: members
                .iter()
                .map(|(n, present)| roundtable_shared::api::RoomMember {
                    name: (*n).into(),
                    present: *present,
                })
                .collect(),
            joined: true,
            last: None,
            count: 0,
            last_read: 0,
            unread: 0,
            created_at: 1,
        }
    }

    /// A message in `ROOM` from `from` (`alice` is us).
    fn room_msg(seq: i64, id: &str, from: &str) -> ChatMessage {
        let ours = from == "alice";
        ChatMessage {
            peer: from.into(),
            room: Some(ROOM.into()),
            direction: if ours { Direction::Out } else { Direction::In },
            state: if ours {
                MessageState::Queued
            } else {
                MessageState::Delivered
            },
            ..msg(seq, id, Direction::In, MessageState::Delivered)
        }
    }

    fn room_seqs(s: &State) -> Vec<i64> {
        s.room_chat(ROOM).messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_room_event_lists_the_room_with_its_present_members() {
        let mut s = State::default();
        let rev = s.rooms_rev;
        s.apply(Action::Event(Event::Room {
            room: room(
                ROOM,
                "Hospital B",
                &[("alice", true), ("bob", true), ("carol", false)],
            ),
        }));
        assert!(s.rooms_rev > rev, "the list is redrawn");
        let rows = s.room_list();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].members, rows[0].joined),
            ("Hospital B", 2, true),
            "carol left: not counted"
        );
        assert_eq!(s.room_name(ROOM), Some("Hospital B"));
        // A later summary (bob added dave, renamed) replaces it whole.
        s.apply(Action::Event(Event::Room {
            room: RoomSummary {
                joined: false,
                ..room(
                    ROOM,
                    "Hospital B+",
                    &[("alice", false), ("bob", true), ("dave", true)],
                )
            },
        }));
        let rows = s.room_list();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].members, rows[0].joined),
            ("Hospital B+", 2, false)
        );
        // Room messages never become a direct conversation with their sender.
        s.apply(Action::Event(Event::Message {
            message: room_msg(1, "a", "bob"),
        }));
        assert!(s.chats.is_empty());
        assert!(s.peer_list("").is_empty());
    }

    #[test]
    fn rooms_are_listed_by_latest_activity() {
        let mut s = State::default();
        let other = "fedcba9876543210fedcba9876543210";
        s.apply(Action::Room(RoomSummary {
            created_at: 5_000,
            ..room(other, "newer room", &[("alice", true)])
        }));
        s.apply(Action::Room(room(ROOM, "older room", &[("alice", true)])));
        let ids = |s: &State| s.room_list().into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&s), [other, ROOM]);
        // A message in the older room (at 9 s) brings it first.
        s.apply(Action::Event(Event::Message {
            message: room_msg(9, "a", "bob"),
        }));
        assert_eq!(ids(&s), [ROOM, other]);
    }

    #[test]
    fn room_messages_are_deduplicated_by_sender_and_id() {
        let mut s = State::default();
        s.apply(Action::Room(room(
            ROOM,
            "r",
            &[("alice", true), ("bob", true)],
        )));
        for m in [
            room_msg(2, "x", "bob"),
            room_msg(1, "x", "carol"), // the same id from someone else: another message
            room_msg(2, "x", "bob"),
        ] {
            s.apply(Action::Event(Event::Message { message: m }));
        }
        assert_eq!(room_seqs(&s), [1, 2]);
        assert_eq!(s.room_chat(ROOM).count, 2);
        // Our post: the POST's answer and its event make one message.
        let ours = room_msg(3, "y", "alice");
        s.apply(Action::Accepted(ours.clone()));
        s.apply(Action::Event(Event::Message { message: ours }));
        assert_eq!(room_seqs(&s), [1, 2, 3]);
        assert_eq!(s.room_chat(ROOM).count, 3);
        // A history page overlapping what is loaded.
        s.apply(Action::RoomLatest {
            room: ROOM.into(),
            messages: vec![
                room_msg(1, "x", "carol"),
                room_msg(2, "x", "bob"),
                room_msg(3, "y", "alice"),
                room_msg(4, "z", "bob"),
            ],
            limit: 50,
        });
        assert_eq!(room_seqs(&s), [1, 2, 3, 4]);
        assert!(!s.room_chat(ROOM).has_more);
        let chat = s.room_chat(ROOM);
        let senders: Vec<&str> = chat.messages.iter().map(|m| m.peer.as_str()).collect();
        assert_eq!(senders, ["carol", "bob", "alice", "bob"]);
        // Direct conversations are untouched.
        assert!(s.chats.is_empty());
    }

    #[test]
    fn room_unread_counts_others_posts_not_events_and_reaches_the_title() {
        let mut s = State::default();
        s.apply(Action::Room(room(
            ROOM,
            "r",
            &[("alice", true), ("bob", true)],
        )));
        s.apply(Action::Event(Event::Message {
            message: msg(1, "d", Direction::In, MessageState::Delivered),
        }));
        for m in [
            room_msg(2, "a", "bob"),
            ChatMessage {
                event: true,
                text: "bob added carol".into(),
                ..room_msg(3, "b", "bob")
            },
            room_msg(4, "c", "alice"),
            room_msg(5, "e", "carol"),
        ] {
            s.apply(Action::Event(Event::Message { message: m }));
        }
        assert_eq!(s.room_unread(ROOM), 2, "bob's and carol's posts");
        assert_eq!(s.room_list()[0].unread, 2);
        assert_eq!(s.unread_total(), 3, "with bob's direct message");
        // Read in another browser (the node's event), up to bob's post.
        let rev = s.rooms_rev;
        s.apply(Action::Event(Event::ReadState {
            state: roundtable_shared::api::ReadState {
                peer: String::new(),
                last_read: 2,
                unread: 1,
                room: Some(ROOM.into()),
            },
        }));
        assert!(s.rooms_rev > rev);
        assert_eq!(s.room_unread(ROOM), 1);
        assert_eq!(s.unread("bob"), 1, "the direct chat's mark is its own");
        assert_eq!(s.last_read(""), 0);
        // Read here; marks never move back.
        s.apply(Action::RoomMarkRead {
            room: ROOM.into(),
            seq: 5,
        });
        s.apply(Action::RoomMarkRead {
            room: ROOM.into(),
            seq: 3,
        });
        assert_eq!(s.room_read(ROOM), 5);
        assert_eq!(s.room_unread(ROOM), 0);
        assert_eq!(s.unread_total(), 1);
        // A summary with an older mark does not lower it either.
        s.apply(Action::Room(RoomSummary {
            last_read: 2,
            ..room(ROOM, "r", &[("alice", true)])
        }));
        assert_eq!(s.room_read(ROOM), 5);
    }

    #[test]
    fn a_room_summary_alone_counts_its_newest_unread_post() {
        let mut s = State::default();
        s.apply(Action::RoomsRequested);
        s.apply(Action::Rooms(vec![RoomSummary {
            last: Some(room_msg(8, "a", "bob")),
            count: 8,
            last_read: 7,
            unread: 1,
            ..room(ROOM, "r", &[("alice", true), ("bob", true)])
        }]));
        assert_eq!(s.room_unread(ROOM), 1);
        assert_eq!(s.room_chat(ROOM).count, 8);
        assert_eq!(s.unread_total(), 1);
    }

    #[test]
    fn our_room_posts_take_their_state_from_the_rooms_events() {
        let mut s = State::default();
        s.apply(Action::Room(room(
            ROOM,
            "r",
            &[("alice", true), ("bob", true)],
        )));
        // bob has a direct message with the same id: it must not change.
        s.apply(Action::Accepted(msg(
            1,
            "y",
            Direction::Out,
            MessageState::Queued,
        )));
        s.apply(Action::Accepted(room_msg(2, "y", "alice")));
        let state = |st| {
            Action::Event(Event::MessageState {
                peer: "alice".into(),
                id: "y".into(),
                state: st,
                room: Some(ROOM.into()),
            })
        };
        s.apply(state(MessageState::Sent));
        assert_eq!(s.room_chat(ROOM).messages[0].state, MessageState::Sent);
        s.apply(state(MessageState::Delivered));
        s.apply(state(MessageState::Sent));
        assert_eq!(
            s.room_chat(ROOM).messages[0].state,
            MessageState::Delivered,
            "delivered to every member is final"
        );
        assert_eq!(
            s.room_chat(ROOM).last.as_ref().unwrap().state,
            MessageState::Delivered
        );
        assert_eq!(s.chats["bob"].messages[0].state, MessageState::Queued);
        // A state that comes before its post is kept for it.
        s.apply(Action::Event(Event::MessageState {
            peer: "alice".into(),
            id: "w".into(),
            state: MessageState::Sent,
            room: Some(ROOM.into()),
        }));
        s.apply(Action::Accepted(room_msg(3, "w", "alice")));
        assert_eq!(s.room_chat(ROOM).messages[1].state, MessageState::Sent);
    }

    #[test]
    fn a_refetched_room_list_keeps_newer_changes() {
        let mut s = State::default();
        let other = "fedcba9876543210fedcba9876543210";
        s.apply(Action::Room(room(other, "gone", &[("alice", true)])));
        s.apply(Action::RoomsRequested);
        // While the request runs, bob is added to ROOM.
        s.apply(Action::Event(Event::Room {
            room: room(ROOM, "r", &[("alice", true), ("bob", true)]),
        }));
        // The list was made before that, and no longer has `other`.
        s.apply(Action::Rooms(vec![room(ROOM, "r", &[("alice", true)])]));
        let rows = s.room_list();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].members, 2, "the newer event is kept");
        // The next list wins: nothing changed since it was asked for.
        s.apply(Action::RoomsRequested);
        s.apply(Action::Rooms(vec![room(ROOM, "r2", &[("alice", true)])]));
        assert_eq!(s.room_list()[0].name, "r2");
        assert_eq!(s.training_room("t").map(|r| r.id.clone()), None);
        s.apply(Action::Room(RoomSummary {
            training: Some("t".into()),
            ..room(other, "training t", &[("alice", true)])
        }));
        assert_eq!(
            s.training_room("t").map(|r| r.id.clone()).as_deref(),
            Some(other)
        );
    }

    #[test]
    fn reducer_keeps_unchanged_parts_shared() {
        use yew::Reducible;
        let mut s = State::default();
        snapshot(
            &mut s,
            (0..1000).map(|i| peer(&format!("p{i}"), true)).collect(),
        );
        let s = Rc::new(s);
        let peers = s.peers.clone();
        let next = s.reduce(Action::Event(Event::Message {
            message: msg(1, "a", Direction::In, MessageState::Delivered),
        }));
        assert!(Rc::ptr_eq(&peers, &next.peers), "peers not copied");
        // Transfers moving ten times a second copy neither peers nor chats.
        let chat = next.chats["bob"].clone();
        let moved = next.reduce(transfer_event(transfer(1, TransferState::Sending, 5, 1)));
        assert!(Rc::ptr_eq(&peers, &moved.peers));
        assert!(Rc::ptr_eq(&chat, &moved.chats["bob"]));
        let transfers = moved.transfers.clone();
        let next = moved.reduce(Action::Event(Event::Message {
            message: msg(2, "b", Direction::In, MessageState::Delivered),
        }));
        assert!(
            Rc::ptr_eq(&transfers, &next.transfers),
            "transfers not copied"
        );
    }
}
