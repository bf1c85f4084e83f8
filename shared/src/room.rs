//! Rooms: group conversations between Roundtable nodes (issue 16).
//!
//! A room has an id (chosen by its creator, or derived from a training's
//! UUID for the training's own room), a name and members. There is no
//! server: every member's node keeps the room and its member list, and
//! a post travels from its sender's node to every other member's node
//! directly (or through the relay), over the same links, durable outbox,
//! ids and `MSGACK`s as a direct `MSG`. So each sender's posts reach each
//! member in the order sent, exactly once.
//!
//! One frame, negotiated like `MSG` (only Roundtable peers, inside the
//! secure channel):
//!
//! ```text
//! ROOM <len> <sender> <id>
//! {"room":"…","name":"…","training":false,"event":"post","members":[["alice",true,0],…]}\n
//! <text>
//! ```
//!
//! The payload is a JSON header line ([`RoomHeader`]) and the text. Every
//! frame carries its sender's member list, so that lists converge: each
//! entry is `[name, present, clock]`, a last-writer-wins register per
//! name ([`Member::wins_over`]); a change takes a clock above every clock
//! the changer has seen. Anyone in the room may add someone; only the
//! member themselves may leave, and a receiver takes a leave only from
//! the leaver's own frame ([`merge`]). Classic eurechat members get
//! posts as `MESSAGE`s whose text starts with `[#room name] `.

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::peer::valid_id;

/// The frame kind.
pub const KIND: &str = "ROOM";

/// Most members a room has (present or gone).
pub const MAX_MEMBERS: usize = 64;

/// Longest room name, bytes.
pub const MAX_NAME: usize = 80;

/// Longest header line, bytes (64 members of 64-byte names fit).
pub const MAX_HEADER: usize = 8 * 1024;

/// Longest post in a room, bytes: a frame's header and text together stay
/// within [`crate::api::MAX_TEXT`], like a direct message's, so that it
/// seals into one frame of the secure channel.
pub const MAX_ROOM_TEXT: usize = crate::api::MAX_TEXT - MAX_HEADER;

/// One member's entry: a last-writer-wins register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, bool, u64)", into = "(String, bool, u64)")]
pub struct Member {
    pub name: String,
    /// In the room (false: left).
    pub present: bool,
    /// The clock of the change that made this entry. 0: set by every
    /// participant's node alike (a training room's participants).
    pub clock: u64,
}

impl From<(String, bool, u64)> for Member {
    fn from((name, present, clock): (String, bool, u64)) -> Self {
        Member {
            name,
            present,
            clock,
        }
    }
}

impl From<Member> for (String, bool, u64) {
    fn from(m: Member) -> Self {
        (m.name, m.present, m.clock)
    }
}

impl Member {
    /// Whether this entry replaces `other` (the same name's): the higher
    /// clock wins; on a tie, leaving wins, so that every node picks the
    /// same.
    pub fn wins_over(&self, other: &Member) -> bool {
        (self.clock, !self.present) > (other.clock, !other.present)
    }
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEvent {
    /// A message (the text).
    Post,
    /// The sender added `subject`.
    Added,
    /// The sender left.
    Left,
}

/// The JSON header line of a `ROOM` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomHeader {
    pub room: String,
    pub name: String,
    /// The room of a training (its id is derived from the training's UUID,
    /// so only a participant can name it).
    #[serde(default)]
    pub training: bool,
    pub event: RoomEvent,
    /// With [`RoomEvent::Added`]: who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The sender's member list when it sent this.
    pub members: Vec<Member>,
}

/// A `ROOM` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomFrame {
    pub sender: String,
    /// The message id (acknowledged with `MSGACK <id>`).
    pub id: String,
    pub header: RoomHeader,
    /// The post's text (empty for `added` and `left`).
    pub text: String,
}

/// Why a frame is not a valid `ROOM` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("not a ROOM frame")]
    NotRoom,
    #[error("ROOM needs a sender and a message id")]
    BadArguments,
    #[error("ROOM payload has no header line")]
    NoHeader,
    #[error("ROOM header over {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("ROOM header: {0}")]
    BadHeader(String),
    #[error("invalid room id")]
    BadRoomId,
    #[error("room name must be 1 to {MAX_NAME} bytes, without control characters")]
    BadName,
    #[error("invalid member name {0:?}")]
    BadMember(String),
    #[error("a room has at most {MAX_MEMBERS} members")]
    TooManyMembers,
    #[error("member {0:?} is listed twice")]
    DuplicateMember(String),
    #[error("an `added` frame names who was added, and only it does")]
    BadSubject,
    #[error("a post is 1 to {MAX_ROOM_TEXT} bytes; `added` and `left` carry no text")]
    BadText,
    #[error("ROOM text is not UTF-8")]
    NotUtf8,
}

/// Whether `name` is a usable room name: 1 to [`MAX_NAME`] bytes, no
/// control characters, not blank.
pub fn valid_room_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty()
}

impl RoomHeader {
    /// Checks everything a receiver relies on.
    pub fn validate(&self) -> Result<(), RoomError> {
        if !valid_id(&self.room) {
            return Err(RoomError::BadRoomId);
        }
        if !valid_room_name(&self.name) {
            return Err(RoomError::BadName);
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(RoomError::TooManyMembers);
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.members {
            if !crate::directory::valid_name(&m.name) {
                return Err(RoomError::BadMember(m.name.clone()));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(RoomError::DuplicateMember(m.name.clone()));
            }
        }
        match (self.event, &self.subject) {
            (RoomEvent::Added, Some(s)) if crate::directory::valid_name(s) => Ok(()),
            (RoomEvent::Added, _) | (_, Some(_)) => Err(RoomError::BadSubject),
            _ => Ok(()),
        }
    }
}

impl RoomFrame {
    /// Interprets a decoded frame.
    pub fn parse(f: &Frame) -> Result<RoomFrame, RoomError> {
        if f.kind != KIND {
            return Err(RoomError::NotRoom);
        }
        let [sender, id] = f.args.as_slice() else {
            return Err(RoomError::BadArguments);
        };
        if !crate::directory::valid_name(sender) || !valid_id(id) {
            return Err(RoomError::BadArguments);
        }
        let nl = f
            .payload
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(RoomError::NoHeader)?;
        if nl > MAX_HEADER {
            return Err(RoomError::HeaderTooLong);
        }
        let header: RoomHeader = serde_json::from_slice(&f.payload[..nl])
            .map_err(|e| RoomError::BadHeader(e.to_string()))?;
        header.validate()?;
        let text = std::str::from_utf8(&f.payload[nl + 1..]).map_err(|_| RoomError::NotUtf8)?;
        let frame = RoomFrame {
            sender: sender.clone(),
            id: id.clone(),
            header,
            text: text.to_owned(),
        };
        frame.check_text()?;
        Ok(frame)
    }

    fn check_text(&self) -> Result<(), RoomError> {
        let ok = match self.header.event {
            RoomEvent::Post => (1..=MAX_ROOM_TEXT).contains(&self.text.len()),
            RoomEvent::Added | RoomEvent::Left => self.text.is_empty(),
        };
        ok.then_some(()).ok_or(RoomError::BadText)
    }

    /// Encodes it; fails on what [`parse`](Self::parse) would refuse.
    pub fn to_frame(&self) -> Result<Frame, RoomError> {
        self.header.validate()?;
        self.check_text()?;
        if !crate::directory::valid_name(&self.sender) || !valid_id(&self.id) {
            return Err(RoomError::BadArguments);
        }
        let mut payload =
            serde_json::to_vec(&self.header).map_err(|e| RoomError::BadHeader(e.to_string()))?;
        if payload.len() > MAX_HEADER {
            return Err(RoomError::HeaderTooLong);
        }
        payload.push(b'\n');
        payload.extend_from_slice(self.text.as_bytes());
        Ok(Frame::new(
            KIND,
            vec![self.sender.clone(), self.id.clone()],
            payload,
        ))
    }
}

/// What merging a frame's member list into ours changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Entries that replaced ours or were new, in the frame's order.
    pub changed: Vec<Member>,
}

/// Merges `theirs` (the member list of a frame from `sender`) into `ours`.
///
/// An entry replaces ours when it [wins](Member::wins_over) or is new,
/// with one exception: an entry saying someone left is taken only from
/// that member's own frame (`sender` is proven by the channel, the rest of
/// the list is only what the sender says). Adds come from anyone: anyone
/// in a room may add people. Commutative and idempotent per entry, so
/// members converge whatever order frames arrive in.
pub fn merge(ours: &mut Vec<Member>, theirs: &[Member], sender: &str) -> Merged {
    let mut merged = Merged::default();
    for m in theirs {
        if !m.present && m.name != sender {
            continue;
        }
        let room_for_one = ours.len() < MAX_MEMBERS;
        match ours.iter_mut().find(|o| o.name == m.name) {
            Some(o) if m.wins_over(o) => {
                *o = m.clone();
                merged.changed.push(m.clone());
            }
            Some(_) => {}
            None if room_for_one => {
                ours.push(m.clone());
                merged.changed.push(m.clone());
            }
            None => {}
        }
    }
    merged
}

/// The clock for a change made now: above every clock in `members`.
pub fn next_clock(members: &[Member]) -> u64 {
    members.iter().map(|m| m.clock).max().unwrap_or(0) + 1
}

/// The id of a training's room: derived from its UUID with a keyed hash,
/// so that it names the training only to those who know the UUID.
pub fn training_room_id(uuid: &str) -> String {
    use blake2::digest::Mac;
    let mut mac = blake2::Blake2sMac256::new_from_slice(b"roundtable/training-room/1")
        .expect("a 26-byte key is valid for BLAKE2s");
    mac.update(uuid.to_ascii_lowercase().as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("t-{hex}")
}

/// What a classic eurechat member receives for a post: a `MESSAGE` text.
pub fn classic_text(room_name: &str, text: &str) -> String {
    format!("[#{room_name}] {text}")
}

/// Decodes `data` as a frame and parses it as a `ROOM` frame (the fuzz
/// target's body, also run by the proptests): whatever parses must be
/// valid, re-encode and parse back to the same value, and merge into any
/// list without exceeding [`MAX_MEMBERS`].
pub fn decode_and_parse(data: &[u8]) {
    let limits = crate::frame::Limits {
        max_payload: crate::api::MAX_TEXT,
        ..crate::frame::Limits::default()
    };
    let mut buf = data;
    while let Ok(crate::frame::Decoded::Frame(frame, used)) = crate::frame::decode(buf, &limits) {
        buf = &buf[used..];
        if let Ok(room) = RoomFrame::parse(&frame) {
            let again = room.to_frame().expect("a parsed frame encodes");
            assert_eq!(RoomFrame::parse(&again).expect("re-parses"), room);
            let mut ours = Vec::new();
            merge(&mut ours, &room.header.members, &room.sender);
            merge(&mut ours, &room.header.members, &room.sender);
            assert!(ours.len() <= MAX_MEMBERS);
        }
        if used == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_and_parse(&data);
        }

        #[test]
        fn arbitrary_payloads_after_a_room_line_never_panic(payload in ".{0,300}") {
            let f = Frame::new(KIND, ["alice", "id1"], payload.into_bytes());
            let _ = RoomFrame::parse(&f);
            decode_and_parse(&f.encode().unwrap());
        }

        #[test]
        fn valid_frames_round_trip(
            text in "[^\u{0}]{1,200}",
            names in proptest::collection::btree_set("[a-z]{1,10}", 0..10),
            clock in any::<u64>(),
        ) {
            let members: Vec<Member> = names
                .into_iter()
                .map(|n| Member { name: n, present: clock % 2 == 0, clock })
                .collect();
            let mut f = post(&text);
            f.header.members = members;
            let frame = f.to_frame().unwrap();
            prop_assert_eq!(RoomFrame::parse(&frame).unwrap(), f);
        }
    }

    fn m(name: &str, present: bool, clock: u64) -> Member {
        Member {
            name: name.into(),
            present,
            clock,
        }
    }

    fn post(text: &str) -> RoomFrame {
        RoomFrame {
            sender: "alice".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            header: RoomHeader {
                room: "r-1".into(),
                name: "Working group".into(),
                training: false,
                event: RoomEvent::Post,
                subject: None,
                members: vec![m("alice", true, 1), m("bob", true, 1)],
            },
            text: text.into(),
        }
    }

    #[test]
    fn a_post_round_trips_with_its_exact_bytes() {
        let f = post("hello\nworld").to_frame().unwrap();
        assert_eq!(f.kind, "ROOM");
        assert_eq!(f.args, ["alice", "0123456789abcdef0123456789abcdef"]);
        assert_eq!(
            String::from_utf8(f.payload.clone()).unwrap(),
            "{\"room\":\"r-1\",\"name\":\"Working group\",\"training\":false,\"event\":\"post\",\
             \"members\":[[\"alice\",true,1],[\"bob\",true,1]]}\nhello\nworld"
        );
        assert_eq!(RoomFrame::parse(&f).unwrap(), post("hello\nworld"));
    }

    #[test]
    fn bad_frames_are_refused_with_reasons() {
        let good = post("hi").to_frame().unwrap();
        let with = |payload: &str| Frame::new(KIND, good.args.clone(), payload.as_bytes().to_vec());
        assert_eq!(
            RoomFrame::parse(&with("no newline")),
            Err(RoomError::NoHeader)
        );
        assert!(matches!(
            RoomFrame::parse(&with("{}\nx")),
            Err(RoomError::BadHeader(_))
        ));
        let mut f = post("hi");
        f.header.room = "has space".into();
        assert_eq!(f.to_frame(), Err(RoomError::BadRoomId));
        let mut f = post("hi");
        f.header.members.push(m("alice", false, 2));
        assert_eq!(
            f.to_frame(),
            Err(RoomError::DuplicateMember("alice".into()))
        );
        let mut f = post("hi");
        f.header.members = (0..65).map(|i| m(&format!("u{i}"), true, 1)).collect();
        assert_eq!(f.to_frame(), Err(RoomError::TooManyMembers));
        assert_eq!(post("").to_frame(), Err(RoomError::BadText));
        let mut f = post("text");
        f.header.event = RoomEvent::Left;
        assert_eq!(f.to_frame(), Err(RoomError::BadText));
        let mut f = post("");
        f.header.event = RoomEvent::Added;
        assert_eq!(f.to_frame(), Err(RoomError::BadSubject));
        f.header.subject = Some("carol".into());
        assert!(RoomFrame::parse(&f.to_frame().unwrap()).is_ok());
        let mut f = post("hi");
        f.header.name = "\u{7}bell".into();
        assert_eq!(f.to_frame(), Err(RoomError::BadName));
        let bad_sender = Frame::new(
            KIND,
            vec!["a b".to_owned(), "id".to_owned()],
            b"{}\n".to_vec(),
        );
        assert_eq!(RoomFrame::parse(&bad_sender), Err(RoomError::BadArguments));
    }

    #[test]
    fn the_longest_post_with_the_largest_list_fits_a_message_frame() {
        let mut f = post(&"x".repeat(MAX_ROOM_TEXT));
        f.header.name = "n".repeat(MAX_NAME);
        f.header.members = (0..MAX_MEMBERS)
            .map(|i| m(&format!("{i:0>64}"), true, u64::MAX))
            .collect();
        let frame = f.to_frame().unwrap();
        assert!(frame.payload.len() <= crate::api::MAX_TEXT);
    }

    #[test]
    fn member_lists_converge_in_any_order_and_leaves_come_only_from_the_leaver() {
        let a = vec![m("alice", true, 1), m("bob", true, 1)];
        let b_adds_carol = vec![m("alice", true, 1), m("bob", true, 1), m("carol", true, 2)];
        let carol_leaves = vec![m("alice", true, 1), m("bob", true, 1), m("carol", false, 3)];
        let mut one = a.clone();
        merge(&mut one, &b_adds_carol, "bob");
        merge(&mut one, &carol_leaves, "carol");
        let mut two = a.clone();
        merge(&mut two, &carol_leaves, "carol");
        merge(&mut two, &b_adds_carol, "bob");
        merge(&mut two, &b_adds_carol, "bob");
        one.sort_by(|x, y| x.name.cmp(&y.name));
        two.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(one, two);
        assert_eq!(one[2], m("carol", false, 3));
        // Bob cannot make alice leave.
        let mut three = a.clone();
        let changed = merge(&mut three, &[m("alice", false, 9)], "bob");
        assert!(changed.changed.is_empty());
        assert_eq!(three, a);
        // A tie: leaving wins everywhere.
        assert!(m("x", false, 4).wins_over(&m("x", true, 4)));
        assert!(!m("x", true, 4).wins_over(&m("x", false, 4)));
        assert_eq!(next_clock(&one), 4);
    }

    #[test]
    fn a_training_room_id_is_stable_valid_and_does_not_show_the_uuid() {
        let uuid = "7b0e5f0c-3a1d-4c39-9a53-3f1c2c7f0a11";
        let id = training_room_id(uuid);
        assert_eq!(id, training_room_id(&uuid.to_uppercase()));
        assert!(valid_id(&id));
        assert!(!id.contains("7b0e5f0c"));
        assert_ne!(id, training_room_id("another"));
    }

    #[test]
    fn classic_members_see_the_room_name_first() {
        assert_eq!(classic_text("wg", "hi"), "[#wg] hi");
    }
}
