//! Bodies of the node's web API, shared by the axum backend and the Yew dashboard.

use serde::{Deserialize, Serialize};

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"roundtable"`.
    pub name: String,
    /// The server's version.
    pub version: String,
}

impl Health {
    /// The health report of this build.
    pub fn current() -> Self {
        Health {
            name: "roundtable".into(),
            version: crate::VERSION.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_has_stable_json_shape() {
        let h = Health::current();
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["name"], "roundtable");
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    }
}

/// Everything the dashboard shows changes through one of these, pushed on
/// `/ws` as JSON (`{"type": "...", ...}`) and applied by the dashboard's reducer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A training was created or changed (full current state).
    Training { training: crate::training::Training },
    /// A peer appeared, changed address, or went online/offline.
    Peer { peer: PeerInfo },
    /// A peer left the directory and we have no chat with it: forget it.
    PeerGone { name: String },
    /// A training was evicted to make room for new ones: forget it.
    TrainingGone { uuid: String },
    /// A conversation was marked read (in any browser of this user).
    ReadState { state: ReadState },
    /// A chat message was stored (sent by us or received), in a direct
    /// conversation or a room (`message.room`).
    Message { message: ChatMessage },
    /// One of our messages changed state (sent, delivered). In a room
    /// (`room`), `peer` is our own name and `delivered` means every
    /// member it went to has it.
    MessageState {
        peer: String,
        id: String,
        state: MessageState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// A room was created, joined, or changed (name, members): its full
    /// current summary.
    Room { room: RoomSummary },
    /// The node's session with the directory changed state.
    Directory { state: LinkState },
    /// A file transfer was created or changed (full current state; while
    /// bytes move, at most about ten times a second per transfer).
    Transfer { transfer: TransferInfo },
    /// A participant's progress in a training changed: this node's own
    /// (`local`) or a peer's that shared it. `lane.phases` holds only the
    /// phases that changed; apply with
    /// [`Participant::merge`](crate::progress::Participant::merge).
    Participant {
        participant: crate::progress::Participant,
    },
    /// A line of output from a local training run.
    RunOutput {
        training: String,
        round: u32,
        phase: crate::training::Phase,
        line: String,
    },
}

/// Whether a peer is reachable, per the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    /// Registered chat address, when known.
    pub address: Option<String>,
    pub port: Option<u16>,
    pub online: bool,
    /// Last time the directory listed it, Unix ms.
    pub last_seen: Option<i64>,
    /// The fingerprint of the identity key the directory has pinned for
    /// it (`None`: it published none, e.g. a classic eurechat client).
    /// What the directory says, not yet proven by a handshake.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// What this node has proven about the peer's identity.
    #[serde(default)]
    pub trust: PeerTrust,
    /// The fingerprint of the key this node pinned for the peer.
    #[serde(default)]
    pub pinned_fingerprint: Option<String>,
    /// How the pin was made (`None`: no pin).
    #[serde(default)]
    pub pinned_by: Option<PinSource>,
    /// With [`PeerTrust::KeyChanged`]: the fingerprint of the key the peer
    /// (or the directory) now presents, which the user may accept with
    /// `POST /api/peers/{name}/trust`.
    #[serde(default)]
    pub offered_fingerprint: Option<String>,
    /// How our last successful exchange with it went (`None`: none yet).
    #[serde(default)]
    pub path: Option<PeerPath>,
    /// Whether the directory relays to it (it holds a relay session now);
    /// a peer with `--chat none` is online this way only.
    #[serde(default)]
    pub relay: bool,
}

impl PeerInfo {
    /// A peer known by name only: offline, no address, no key, no pin.
    pub fn unknown(name: &str) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            address: None,
            port: None,
            online: false,
            last_seen: None,
            fingerprint: None,
            trust: PeerTrust::Unknown,
            pinned_fingerprint: None,
            pinned_by: None,
            offered_fingerprint: None,
            path: None,
            relay: false,
        }
    }
}

/// What a node has proven about a peer's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerTrust {
    /// No authenticated contact yet and no pin.
    #[default]
    Unknown,
    /// A Roundtable node that proved the key this node pinned for it.
    Verified,
    /// A classic eurechat peer: it has no identity key, so what it sends
    /// is only a claim.
    Unverified,
    /// It presented, or the directory now lists, a key other than the
    /// pinned one: refused until the user accepts the new key.
    KeyChanged,
}

/// How a peer's key came to be pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// Trust on first use: the key of the first authenticated contact
    /// (matching the directory's, when the directory had one).
    FirstUse,
    /// The user accepted it (dashboard or `roundtable node trust`).
    Accepted,
}

/// How messages reach a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerPath {
    /// A connection to its chat port.
    Direct,
    /// Sealed frames forwarded by the directory server.
    Relayed,
}

/// `POST /api/peers/{name}/trust` body: accept the key the peer now
/// presents. The fingerprint must be the one shown
/// ([`PeerInfo::offered_fingerprint`]), so the user accepts exactly the key
/// they saw (409 if it changed since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustKey {
    pub fingerprint: String,
}

/// `GET /api/peers/check?timeout_ms=N`: one request sent to every online
/// peer at once, and who answered within the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerCheck {
    /// The deadline used, ms.
    pub timeout_ms: u64,
    /// One entry per peer asked, in name order.
    pub results: Vec<PeerCheckResult>,
}

/// One peer's answer (or silence) to a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerCheckResult {
    pub name: String,
    /// Whether it answered within the deadline.
    pub answered: bool,
    /// Round-trip time of the request, ms.
    pub rtt_ms: Option<f64>,
    /// The software it reported (`roundtable 0.x.y`).
    pub version: Option<String>,
    /// How the request went.
    pub path: Option<PeerPath>,
    /// Why it did not answer, in words (`no answer within 3000 ms`,
    /// `classic eurechat peer: cannot answer requests`, ...).
    pub error: Option<String>,
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We sent it.
    Out,
    /// We received it.
    In,
}

/// Where one of our messages stands. Received messages are `Delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Stored, waiting for the peer.
    Queued,
    /// Written to the peer's connection, not yet acknowledged.
    Sent,
    /// Acknowledged by the peer (or, for a message we received, stored).
    Delivered,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Position in this node's history (pagination cursor: `before=SEQ`).
    pub seq: i64,
    /// The sender's message id (32 hex digits); unique per sender.
    pub id: String,
    /// The other party.
    pub peer: String,
    pub direction: Direction,
    pub text: String,
    pub state: MessageState,
    /// When this node stored it, Unix ms.
    pub at: i64,
    /// Whether the sender is proven. Always true for our own messages. A
    /// received message's sender is only what the connection claimed (a
    /// plain `MESSAGE` or `MSG` names its sender and nothing checks it), so
    /// it is false until the message arrives over an authenticated channel;
    /// the dashboard marks such messages as unverified.
    #[serde(default)]
    pub verified: bool,
    /// The room it belongs to (`None`: a direct conversation). In a room,
    /// `peer` is who wrote it (our own name for ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A line about the room itself ("alice added carol", "bob left"),
    /// not something someone wrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub event: bool,
}

/// `GET /api/chats`: one entry per conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    pub peer: String,
    pub last: Option<ChatMessage>,
    pub count: u64,
    /// The seq of the last message read (0: none), as the node keeps it
    /// for every browser of its user.
    #[serde(default)]
    pub last_read: i64,
    /// Received messages after `last_read`.
    #[serde(default)]
    pub unread: u64,
}

/// A conversation's read state: `PUT /api/chats/{peer}/read` answers it
/// and [`Event::ReadState`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The peer of a direct conversation (empty for a room).
    pub peer: String,
    pub last_read: i64,
    pub unread: u64,
    /// The room (`PUT /api/rooms/{id}/read`), `None` for a direct one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// One member of a room, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    pub name: String,
    /// In the room now (false: left).
    pub present: bool,
}

/// `GET /api/rooms` (one per room), `GET /api/rooms/{id}`, and
/// [`Event::Room`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room id (in URLs: `/api/rooms/{id}`).
    pub id: String,
    pub name: String,
    /// The training whose room it is (its UUID), if it is one.
    #[serde(default)]
    pub training: Option<String>,
    /// Everyone who is or was in it, in name order; this node's user too.
    pub members: Vec<RoomMember>,
    /// Whether this node's user is in it (false once they left: they keep
    /// the history and cannot post).
    pub joined: bool,
    pub last: Option<ChatMessage>,
    pub count: u64,
    #[serde(default)]
    pub last_read: i64,
    #[serde(default)]
    pub unread: u64,
    /// When this node first had it, Unix ms.
    pub created_at: i64,
}

/// `POST /api/rooms` body: a new room with these members (besides us).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `POST /api/rooms/{id}/members` body: add someone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub name: String,
}

/// `PUT /api/chats/{peer}/read` body: read up to this message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    pub seq: i64,
}

/// In a [`SearchHit`]'s snippet, the start of a match (a private-use
/// character, so it cannot be confused with what people write).
pub const SNIPPET_START: char = '\u{e000}';
/// The end of a match.
pub const SNIPPET_END: char = '\u{e001}';

/// One result of `GET /api/search?q=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub message: ChatMessage,
    /// Its text around the match (`…` where cut), each match between
    /// [`SNIPPET_START`] and [`SNIPPET_END`].
    pub snippet: String,
}

/// `POST /api/chats/{peer}/messages` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub text: String,
    /// Queue it even for a name nobody has heard of (otherwise such a
    /// send is refused with 404 and a sentence saying so).
    #[serde(default)]
    pub force: bool,
}

/// The node's session with its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connecting,
    Connected,
    Reconnecting,
    Stopped,
}

/// `GET /api/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub name: String,
    /// The chat address others reach us at (`host:port`).
    pub chat: String,
    /// The directory server (`host:port`).
    pub directory: String,
    pub directory_state: LinkState,
    pub version: String,
    /// The fingerprint of this node's identity key (eight groups of four
    /// hex digits), for people to compare out of band.
    #[serde(default)]
    pub fingerprint: String,
    /// Whether the directory pinned this node's key.
    #[serde(default)]
    pub key_at_directory: KeyAtDirectory,
    /// Started with `--chat none`: no chat listener, reachable only
    /// through the directory's relay (`chat` is then empty).
    #[serde(default)]
    pub relay_only: bool,
    /// Whether this node shares its trainings' progress with the peers
    /// that take part in them (`--share-progress`, on by default).
    #[serde(default)]
    pub share_progress: bool,
    /// Started with `--require-secure`: plain connections (classic
    /// eurechat peers, `nc`) are refused.
    #[serde(default)]
    pub require_secure: bool,
}

/// What the directory said when this node published its identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAtDirectory {
    /// Not published yet (no session with the directory so far).
    #[default]
    Unknown,
    /// Pinned: the directory gives this key to whoever asks for us.
    Pinned,
    /// The directory has another key pinned for this name: someone else
    /// published one first, or this node lost its key file. The operator's
    /// `roundtable directory reset-key NAME` clears it.
    Conflict,
}

/// Where a file transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Stored in the outbox, not started yet.
    Queued,
    /// Bytes are moving (sent by us, or arriving).
    Sending,
    /// Waiting for the peer: offline, unreachable, or interrupted and about
    /// to resume (`error` says why).
    Waiting,
    /// Whole and verified at the receiver (SHA-256), in place.
    Delivered,
    /// Given up: `error` says why.
    Failed,
}

impl TransferState {
    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, TransferState::Delivered | TransferState::Failed)
    }
}

/// One file sent to or received from one peer. `GET /api/files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// This node's number for it (in URLs: `/api/files/{seq}/content`).
    pub seq: i64,
    /// The transfer id (32 hex digits, chosen by the sender).
    pub id: String,
    /// The other party: a user name, or for a bare NVFlare exchange the
    /// sender's `ip:port`.
    pub peer: String,
    pub direction: Direction,
    pub name: String,
    /// The whole file, bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    pub state: TransferState,
    /// Bytes the receiver holds so far.
    pub bytes: u64,
    /// Bytes per second while moving (`None` when not moving).
    pub rate: Option<f64>,
    /// Why it failed or waits, in words.
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    pub updated_at: i64,
    /// A bare NVFlare exchange (from `peer`'s address, sender unproven).
    #[serde(default)]
    pub bare: bool,
    /// Whether the bytes can be downloaded from this node now (our own
    /// outgoing file, or a received one once delivered).
    #[serde(default)]
    pub downloadable: bool,
    /// The room it was posted into (its id), if any: sent to the room's
    /// members, or received from a member of a room we are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Longest chat text accepted, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;
