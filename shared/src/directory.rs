//! The eurechat directory protocol (protocols.md §1) as typed frames.
//!
//! A client sends [`Request`]s (`USER`/`LOGIN`, `PASS`, `BIND`, `QUERY`,
//! `LEAVE`); the server answers with [`Reply`]s (`ACK`, `ERR`, `RESULT`).
//! Both sides parse and build frames here only, so the exact bytes a
//! classic client sees (reply texts, the `RESULT` lines) are defined once.
//!
//! Adding a command means one variant, one arm in [`Request::parse`] and
//! one in [`Request::to_frame`]; a server that does not know it keeps
//! answering `I did not understand the message <TYPE>`.
//!
//! # Identity keys (issue 13)
//!
//! After log-in a Roundtable node publishes the public half of its Noise
//! X25519 static key, and looks up its peers' keys. These commands are
//! Roundtable's own: a classic client never sends them, so it never sees
//! their replies, and `QUERY`'s `RESULT` is unchanged by them.
//!
//! ```text
//! KEY 0 <hex>                 -> ACK 13\nkey published       (pinned now, or already this key)
//!                             -> NAK <n>\n<reason>           (another key is pinned; session stays open)
//! REKEY 0 <old-hex> <new-hex> -> ACK 12\nkey replaced        (old-hex was the pin)
//!                             -> NAK <n>\n<reason>           (no pin, or old-hex is not it)
//! KEYQUERY 0 <name> [<name>…] -> KEYRESULT <n>\n<name>,<hex>\n<name>,<hex>…
//!                                (1 to 32 names; only those with a pinned key are
//!                                listed, in the order asked; empty payload: none)
//! ```
//! `<hex>` is exactly 64 lowercase hex digits (32 bytes, see [`PublicKey`]).
//! `NAK` is a refusal that leaves the session open, unlike `ERR`, after
//! which the server always closes.
//!
//! # Relay (issue 13)
//!
//! A node others cannot reach directly chats through the directory: the
//! directory forwards the overlay's sealed frames (`HELLO`, `SEC`, typed in
//! [`crate::secure`]) between two logged-in users' sessions. It cannot read
//! them (Noise end to end); it checks that `<from>` is the sending
//! session's user and that `<to>` holds a relay registration.
//!
//! ```text
//! RELAY 0                   -> ACK 8\nrelay on
//!                              (this session now receives frames addressed to its
//!                              user; no BIND needed; a later RELAY session of the
//!                              same user replaces this one; again: same answer)
//!                           -> NAK <n>\nrelay is disabled on this directory
//!                           -> NAK <n>\nthe relay is full on this directory
//! RELAYQUERY 0 [<name>]     -> RELAYRESULT <n>\n<name>\n<name>…
//!                              (users holding a relay registration, sorted; with a
//!                              name: that user or an empty payload; at most
//!                              MAX_RELAYRESULT bytes)
//! HELLO <len> <from> <to> <step>             + handshake message
//! SEC <len> <from> <to> <epoch> <counter>    + sealed payload
//!                           -> (nothing: forwarded, the same frame, to <to>'s relay
//!                              session, between whole frames of its own replies)
//!                           -> RELAYNAK <n> <to>\n<reason>   (not forwarded; session
//!                              stays open; reasons: see RelayRefusal)
//! ```
//!
//! Parsing: [`Request::Forward`] is a `HELLO`/`SEC` a client sends;
//! [`Reply::Relayed`] is the same frame as the destination's session
//! receives it, interleaved with the replies to its own requests, so a
//! client reads everything arriving on its session with [`Reply::parse`]
//! (or [`Reply::parse_owned`], which moves the payload). A classic client
//! never sends `RELAY`, so it never receives a relayed frame, and `QUERY`
//! never lists a user who only relays.

use std::net::IpAddr;

use crate::frame::{Frame, DEFAULT_MAX_PAYLOAD};
use crate::secure::{SecureError, SecureFrame};

/// Largest `RESULT` payload a server may send: the payload limit a
/// Roundtable node reads frames with (a classic client has none).
pub const MAX_RESULT: usize = DEFAULT_MAX_PAYLOAD;

/// Longest address accepted in `BIND` (a DNS name's limit).
pub const MAX_ADDRESS: usize = 253;

/// Longest `name,address,port` line a valid registration produces.
pub const MAX_LINE: usize = 64 + 1 + MAX_ADDRESS + 1 + 5;

/// Length of an X25519 public key in bytes.
pub use crate::secure::KEY_LEN;

/// Most names one `KEYQUERY` may ask about (its header line stays well
/// under the 4 KiB header limit: 32 × 65 bytes).
pub const MAX_KEYQUERY_NAMES: usize = 32;

/// Longest `KEYRESULT` payload: [`MAX_KEYQUERY_NAMES`] lines of
/// `name,hex` (64 + 1 + 64 bytes) and their separators.
pub const MAX_KEYRESULT: usize = MAX_KEYQUERY_NAMES * (64 + 1 + 2 * KEY_LEN + 1);

/// Longest `RELAYRESULT` payload a server may send: the same bound as
/// `RESULT` (a server refuses new relay registrations past it).
pub const MAX_RELAYRESULT: usize = MAX_RESULT;

/// Largest payload a logged-in session must accept from a client: the
/// largest relayed frame (a `SEC`), bigger than any other directory frame.
pub const MAX_RELAY_PAYLOAD: usize = crate::secure::MAX_SEC_PAYLOAD;

/// A node's identity key, as `KEY`, `REKEY` and `KEYRESULT` carry it:
/// exactly 64 lowercase hex digits on the wire (see [`PublicKey::to_text`]).
pub use crate::secure::PublicKey;

/// Reads a key argument.
fn key_arg(text: &str) -> Result<PublicKey, ProtocolError> {
    PublicKey::from_text(text).map_err(|_| ProtocolError::BadKey)
}

/// One user's pinned key, as a `KEYRESULT` line lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyEntry {
    pub name: String,
    pub key: PublicKey,
}

/// One registration, as a `RESULT` line lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub name: String,
    pub address: String,
    pub port: u16,
}

/// A client's command. Its `Debug` form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `USER 0 <name>`, or its synonym `LOGIN 0 <name>`.
    User { name: String },
    /// `PASS 0 <password>`.
    Pass { password: String },
    /// `BIND 0 <address> <port>`: register our chat port.
    Bind { address: String, port: u16 },
    /// `QUERY 0` (everyone) or `QUERY 0 <name>`.
    Query { name: Option<String> },
    /// `LEAVE 0`: deregister.
    Leave,
    /// `KEY 0 <hex>`: publish our identity key (pinned on first publication).
    Key { key: PublicKey },
    /// `REKEY 0 <old-hex> <new-hex>`: replace our pinned key, naming the pin.
    Rekey { old: PublicKey, new: PublicKey },
    /// `KEYQUERY 0 <name> [<name>…]`: the pinned keys of 1 to
    /// [`MAX_KEYQUERY_NAMES`] users.
    KeyQuery { names: Vec<String> },
    /// `RELAY 0`: receive relayed frames addressed to us on this session.
    Relay,
    /// `RELAYQUERY 0` (everyone holding a relay registration) or
    /// `RELAYQUERY 0 <name>`.
    RelayQuery { name: Option<String> },
    /// `HELLO …` or `SEC …`: a sealed overlay frame for the directory to
    /// forward to its `to`.
    Forward(SecureFrame),
}

/// A relayed frame in logs and `Debug` output: kind, names and length,
/// never the payload's bytes.
struct FrameSummary<'a>(&'a SecureFrame);

impl std::fmt::Debug for FrameSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, from, to, len) = summary(self.0);
        write!(f, "{kind} {len} {from} -> {to}")
    }
}

/// `(kind, from, to, payload length)` of a relayed frame: what the
/// directory may log about it.
pub fn summary(f: &SecureFrame) -> (&'static str, &str, &str, usize) {
    match f {
        SecureFrame::Hello(h) => ("HELLO", &h.from, &h.to, h.payload.len()),
        SecureFrame::Sealed(s) => ("SEC", &s.from, &s.to, s.payload.len()),
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::User { name } => f.debug_struct("User").field("name", name).finish(),
            Request::Pass { .. } => f.debug_struct("Pass").finish_non_exhaustive(),
            Request::Bind { address, port } => f
                .debug_struct("Bind")
                .field("address", address)
                .field("port", port)
                .finish(),
            Request::Query { name } => f.debug_struct("Query").field("name", name).finish(),
            Request::Leave => f.write_str("Leave"),
            Request::Key { key } => f.debug_struct("Key").field("key", key).finish(),
            Request::Rekey { old, new } => f
                .debug_struct("Rekey")
                .field("old", old)
                .field("new", new)
                .finish(),
            Request::KeyQuery { names } => {
                f.debug_struct("KeyQuery").field("names", names).finish()
            }
            Request::Relay => f.write_str("Relay"),
            Request::RelayQuery { name } => {
                f.debug_struct("RelayQuery").field("name", name).finish()
            }
            Request::Forward(sf) => f.debug_tuple("Forward").field(&FrameSummary(sf)).finish(),
        }
    }
}

/// A server's answer, or a relayed frame arriving on the session. Its
/// `Debug` form hides relayed payloads.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(String),
    /// The server closes the connection after sending it.
    Err(String),
    Result(Vec<Entry>),
    /// `NAK`: the request was refused, the session stays open (used by the
    /// key commands, never sent to a classic client).
    Nak(String),
    /// `KEYRESULT`: the answer to `KEYQUERY`.
    KeyResult(Vec<KeyEntry>),
    /// `RELAYRESULT`: the answer to `RELAYQUERY`, user names in order.
    RelayResult(Vec<String>),
    /// `RELAYNAK <n> <to>`: a `HELLO`/`SEC` for `to` was not forwarded;
    /// the session stays open. [`RelayRefusal::classify`] reads `reason`.
    RelayNak {
        to: String,
        reason: String,
    },
    /// A `HELLO`/`SEC` another user sent us through the relay (only on a
    /// session that sent `RELAY`).
    Relayed(SecureFrame),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Ack(t) => f.debug_tuple("Ack").field(t).finish(),
            Reply::Err(t) => f.debug_tuple("Err").field(t).finish(),
            Reply::Result(e) => f.debug_tuple("Result").field(e).finish(),
            Reply::Nak(t) => f.debug_tuple("Nak").field(t).finish(),
            Reply::KeyResult(e) => f.debug_tuple("KeyResult").field(e).finish(),
            Reply::RelayResult(n) => f.debug_tuple("RelayResult").field(n).finish(),
            Reply::RelayNak { to, reason } => f
                .debug_struct("RelayNak")
                .field("to", to)
                .field("reason", reason)
                .finish(),
            Reply::Relayed(sf) => f.debug_tuple("Relayed").field(&FrameSummary(sf)).finish(),
        }
    }
}

/// Why the directory did not forward a frame (`RELAYNAK`) or refused
/// `RELAY` (`NAK`). The texts are the wire's; [`classify`](Self::classify)
/// reads them back so a client can tell "retry later" from "give up".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayRefusal {
    /// `<to>` holds no relay registration now.
    Unreachable,
    /// `<to>`'s queue is full (its session is not reading fast enough): retry later.
    QueueFull,
    /// The sender is over its frame or byte rate: slow down and retry.
    RateLimited,
    /// `<from>` is not the session's user.
    NotYou,
    /// `<to>` is the session's own user.
    ToYourself,
    /// This directory does not relay (`--no-relay`).
    Disabled,
    /// The directory holds as many relay registrations as `RELAYRESULT`
    /// can list (answer to `RELAY`).
    Full,
}

impl RelayRefusal {
    /// The reason text for a frame to `to` sent by the session of `user`.
    pub fn text(self, to: &str, user: &str) -> String {
        match self {
            RelayRefusal::Unreachable => format!("{to} is not reachable through the relay"),
            RelayRefusal::QueueFull => format!("the relay queue for {to} is full"),
            RelayRefusal::RateLimited => "relay rate limit: slow down".into(),
            RelayRefusal::NotYou => format!("relayed frames must come from you ({user})"),
            RelayRefusal::ToYourself => format!("{to}: cannot relay to yourself"),
            RelayRefusal::Disabled => "relay is disabled on this directory".into(),
            RelayRefusal::Full => "the relay is full on this directory".into(),
        }
    }

    /// Which refusal a reason text (from `RELAYNAK <to>` or `NAK`) is,
    /// if it is one of ours.
    pub fn classify(to: &str, reason: &str) -> Option<RelayRefusal> {
        use RelayRefusal::*;
        [
            Unreachable,
            QueueFull,
            RateLimited,
            ToYourself,
            Disabled,
            Full,
        ]
        .into_iter()
        .find(|r| r.text(to, "") == reason)
        .or_else(|| {
            reason
                .strip_prefix("relayed frames must come from you (")
                .and_then(|rest| rest.strip_suffix(')'))
                .filter(|user| valid_name(user))
                .map(|_| NotYou)
        })
    }

    /// Whether `reason` (for a frame to `to`) is a refusal for now, which
    /// sending less or later overcomes: the sender over its budget, or
    /// `to`'s queue full.
    pub fn is_for_now(to: &str, reason: &str) -> bool {
        matches!(
            RelayRefusal::classify(to, reason),
            Some(RelayRefusal::RateLimited | RelayRefusal::QueueFull)
        )
    }

    /// The `RELAYNAK` frame refusing a frame for `to` from `user`'s session.
    pub fn nak(self, to: &str, user: &str) -> Reply {
        Reply::RelayNak {
            to: to.to_owned(),
            reason: self.text(to, user),
        }
    }
}

/// Why a frame is not a valid directory frame. The texts are what the
/// server tells a client before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("I did not understand the message {0}")]
    Unknown(String),
    #[error("I did not understand the message {kind} (wrong number of arguments: {got})")]
    WrongArity { kind: String, got: usize },
    #[error("invalid user name: use 1 to 64 of A-Z a-z 0-9 _ . -")]
    BadName,
    #[error("invalid bind notification: bad port {0:?}")]
    BadPort(String),
    #[error(
        "invalid bind notification: bad address (a host name or IP literal of at most 253 bytes)"
    )]
    BadAddress,
    #[error("{0} payload is not UTF-8")]
    NotUtf8(&'static str),
    #[error("RESULT line {line} is not a valid name,address,port entry")]
    BadEntry { line: usize },
    #[error("invalid key: a key is exactly 64 lowercase hex digits")]
    BadKey,
    #[error("KEYQUERY takes 1 to 32 user names")]
    TooManyNames,
    #[error("KEYRESULT line {line} is not a valid name,key entry")]
    BadKeyEntry { line: usize },
    #[error("RELAYRESULT line {line} is not a valid user name")]
    BadRelayEntry { line: usize },
    /// A `HELLO`/`SEC` that is not a valid overlay frame. Worded like the
    /// other refusals ("I did not understand the message HELLO: …"), so a
    /// client that sends `HELLO` to a directory by mistake reads the same
    /// kind of answer as before the relay.
    #[error("I did not understand the message {kind}: {error}")]
    Secure { kind: String, error: SecureError },
}

/// A relayed frame's parse result, its error named after the frame's type.
fn secure(kind: &str, r: Result<SecureFrame, SecureError>) -> Result<SecureFrame, ProtocolError> {
    r.map_err(|error| ProtocolError::Secure {
        kind: kind.to_owned(),
        error,
    })
}

/// Whether `name` is acceptable as a user name: 1 to 64 of
/// `[A-Za-z0-9_.-]` (it appears unescaped in `RESULT` lines and as a frame
/// argument, so no commas, spaces or control characters).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `password` can be sent as a `PASS` argument: 1 to 256 bytes,
/// no spaces or control characters.
pub fn valid_password(password: &str) -> bool {
    (1..=256).contains(&password.len()) && password.bytes().all(|b| b > 0x20 && b != 0x7f)
}

/// Whether `address` may be registered: an IP literal, or a host name of
/// RFC 1123 labels (1 to 63 of `[A-Za-z0-9-]`, no hyphen at either end)
/// whose last label is not all digits (so `127.1` or `127.000.0.1` is
/// neither a name nor, ambiguously, an address); at most 253 bytes.
pub fn valid_address(address: &str) -> bool {
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return false;
    }
    if address.parse::<IpAddr>().is_ok() {
        return true;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    address.split('.').all(label_ok)
        && !address
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

fn port_arg(text: &str) -> Result<u16, ProtocolError> {
    // Digits only: `+5555` parses as a u16 but is not what a client means.
    match text.parse::<u16>() {
        Ok(p) if p != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ProtocolError::BadPort(text.to_owned())),
    }
}

impl Request {
    /// Interprets a decoded frame. Names and addresses are validated here;
    /// a `QUERY` name is only a lookup key and is taken as it is.
    pub fn parse(f: &Frame) -> Result<Request, ProtocolError> {
        let arity = || ProtocolError::WrongArity {
            kind: f.kind.clone(),
            got: f.args.len(),
        };
        match (f.kind.as_str(), f.args.as_slice()) {
            ("USER" | "LOGIN", [name]) if valid_name(name) => {
                Ok(Request::User { name: name.clone() })
            }
            ("USER" | "LOGIN", [_]) => Err(ProtocolError::BadName),
            ("PASS", [password]) => Ok(Request::Pass {
                password: password.clone(),
            }),
            ("BIND", [address, port]) => {
                let port = port_arg(port)?;
                if !valid_address(address) {
                    return Err(ProtocolError::BadAddress);
                }
                Ok(Request::Bind {
                    address: address.clone(),
                    port,
                })
            }
            ("QUERY", []) => Ok(Request::Query { name: None }),
            ("QUERY", [name]) => Ok(Request::Query {
                name: Some(name.clone()),
            }),
            ("LEAVE", []) => Ok(Request::Leave),
            ("KEY", [key]) => Ok(Request::Key { key: key_arg(key)? }),
            ("REKEY", [old, new]) => Ok(Request::Rekey {
                old: key_arg(old)?,
                new: key_arg(new)?,
            }),
            ("KEYQUERY", names) if !names.is_empty() => {
                if names.len() > MAX_KEYQUERY_NAMES {
                    return Err(ProtocolError::TooManyNames);
                }
                if !names.iter().all(|n| valid_name(n)) {
                    return Err(ProtocolError::BadName);
                }
                Ok(Request::KeyQuery {
                    names: names.to_vec(),
                })
            }
            ("RELAY", []) => Ok(Request::Relay),
            ("RELAYQUERY", []) => Ok(Request::RelayQuery { name: None }),
            ("RELAYQUERY", [name]) => Ok(Request::RelayQuery {
                name: Some(name.clone()),
            }),
            ("HELLO" | "SEC", _) => Ok(Request::Forward(secure(
                f.kind.as_str(),
                SecureFrame::parse(f),
            )?)),
            (
                "USER" | "LOGIN" | "PASS" | "BIND" | "QUERY" | "LEAVE" | "KEY" | "REKEY"
                | "KEYQUERY" | "RELAY" | "RELAYQUERY",
                _,
            ) => Err(arity()),
            (other, _) => Err(ProtocolError::Unknown(other.to_owned())),
        }
    }

    /// The frame to send.
    pub fn to_frame(&self) -> Frame {
        match self {
            Request::User { name } => Frame::new("USER", [name.as_str()], ""),
            Request::Pass { password } => Frame::new("PASS", [password.as_str()], ""),
            Request::Bind { address, port } => {
                Frame::new("BIND", [address.clone(), port.to_string()], "")
            }
            Request::Query { name: None } => Frame::bare("QUERY", ""),
            Request::Query { name: Some(n) } => Frame::new("QUERY", [n.as_str()], ""),
            Request::Leave => Frame::bare("LEAVE", ""),
            Request::Key { key } => Frame::new("KEY", [key.to_text()], ""),
            Request::Rekey { old, new } => Frame::new("REKEY", [old.to_text(), new.to_text()], ""),
            Request::KeyQuery { names } => {
                Frame::new("KEYQUERY", names.iter().map(String::as_str), "")
            }
            Request::Relay => Frame::bare("RELAY", ""),
            Request::RelayQuery { name: None } => Frame::bare("RELAYQUERY", ""),
            Request::RelayQuery { name: Some(n) } => Frame::new("RELAYQUERY", [n.as_str()], ""),
            Request::Forward(sf) => sf.to_frame(),
        }
    }

    /// Like [`parse`](Self::parse), taking the frame so that a relayed
    /// payload (up to 66 KiB) is moved rather than copied.
    pub fn parse_owned(f: Frame) -> Result<Request, ProtocolError> {
        match f.kind.as_str() {
            "HELLO" | "SEC" => {
                let kind = f.kind.clone();
                Ok(Request::Forward(secure(
                    &kind,
                    SecureFrame::parse_owned(f),
                )?))
            }
            _ => Request::parse(&f),
        }
    }

    /// Like [`to_frame`](Self::to_frame), moving a relayed payload.
    pub fn into_frame(self) -> Frame {
        match self {
            Request::Forward(sf) => sf.into_frame(),
            other => other.to_frame(),
        }
    }
}

impl Reply {
    /// Answer to `USER`.
    pub fn hi(name: &str) -> Reply {
        Reply::Ack(format!("hi {name}, authentication required"))
    }

    /// Answer to a good `PASS`.
    pub fn authenticated() -> Reply {
        Reply::Ack("successfully authenticated".into())
    }

    /// Answer to a `BIND` that passed the port test.
    pub fn bound(address: &str, port: u16) -> Reply {
        Reply::Ack(format!("bound successfully to {address}:{port}"))
    }

    /// Answer to `LEAVE`.
    pub fn deregistered() -> Reply {
        Reply::Ack("deregistered from directory".into())
    }

    /// Answer to a `KEY` that pinned the key or found it already pinned.
    pub fn key_published() -> Reply {
        Reply::Ack("key published".into())
    }

    /// Answer to a `REKEY` that replaced the pin.
    pub fn key_replaced() -> Reply {
        Reply::Ack("key replaced".into())
    }

    /// Answer to `RELAY`.
    pub fn relay_on() -> Reply {
        Reply::Ack("relay on".into())
    }

    /// Like [`parse`](Self::parse), taking the frame so that a relayed
    /// payload is moved rather than copied.
    pub fn parse_owned(f: Frame) -> Result<Reply, ProtocolError> {
        match f.kind.as_str() {
            "HELLO" | "SEC" => {
                let kind = f.kind.clone();
                Ok(Reply::Relayed(secure(&kind, SecureFrame::parse_owned(f))?))
            }
            _ => Reply::parse(&f),
        }
    }

    /// Like [`to_frame`](Self::to_frame), moving a relayed payload.
    pub fn into_frame(self) -> Frame {
        match self {
            Reply::Relayed(sf) => sf.into_frame(),
            other => other.to_frame(),
        }
    }

    /// Interprets a decoded frame (a client reading the server).
    pub fn parse(f: &Frame) -> Result<Reply, ProtocolError> {
        let text =
            |kind| String::from_utf8(f.payload.clone()).map_err(|_| ProtocolError::NotUtf8(kind));
        match f.kind.as_str() {
            "ACK" => Ok(Reply::Ack(text("ACK")?)),
            "ERR" => Ok(Reply::Err(text("ERR")?)),
            "RESULT" => Ok(Reply::Result(decode_result(&f.payload)?)),
            "NAK" => Ok(Reply::Nak(text("NAK")?)),
            "KEYRESULT" => Ok(Reply::KeyResult(decode_key_result(&f.payload)?)),
            "RELAYRESULT" => Ok(Reply::RelayResult(decode_relay_result(&f.payload)?)),
            "RELAYNAK" => match f.args.as_slice() {
                [to] if valid_name(to) => Ok(Reply::RelayNak {
                    to: to.clone(),
                    reason: text("RELAYNAK")?,
                }),
                [_] => Err(ProtocolError::BadName),
                args => Err(ProtocolError::WrongArity {
                    kind: f.kind.clone(),
                    got: args.len(),
                }),
            },
            "HELLO" | "SEC" => Ok(Reply::Relayed(secure(&f.kind, SecureFrame::parse(f))?)),
            other => Err(ProtocolError::Unknown(other.to_owned())),
        }
    }

    /// The frame to send.
    pub fn to_frame(&self) -> Frame {
        match self {
            Reply::Ack(t) => Frame::bare("ACK", t.as_bytes()),
            Reply::Err(t) => Frame::bare("ERR", t.as_bytes()),
            Reply::Result(entries) => result_frame(encode_result(entries)),
            Reply::Nak(t) => Frame::bare("NAK", t.as_bytes()),
            Reply::KeyResult(entries) => Frame::bare("KEYRESULT", encode_key_result(entries)),
            Reply::RelayResult(names) => Frame::bare("RELAYRESULT", encode_relay_result(names)),
            Reply::RelayNak { to, reason } => {
                Frame::new("RELAYNAK", [to.as_str()], reason.as_bytes())
            }
            Reply::Relayed(sf) => sf.to_frame(),
        }
    }
}

/// The `RELAYRESULT` payload listing `names`: one per line, joined by
/// `\n`, no trailing newline (like `RESULT`).
pub fn encode_relay_result<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(names.iter().map(|n| n.as_ref().len() + 1).sum());
    for n in names {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(n.as_ref().as_bytes());
    }
    out
}

/// Decodes a `RELAYRESULT` payload. Strict, like [`decode_result`]: every
/// non-empty line must be a valid user name.
pub fn decode_relay_result(payload: &[u8]) -> Result<Vec<String>, ProtocolError> {
    let text = std::str::from_utf8(payload).map_err(|_| ProtocolError::NotUtf8("RELAYRESULT"))?;
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            if valid_name(l) {
                Ok(l.to_owned())
            } else {
                Err(ProtocolError::BadRelayEntry { line: i + 1 })
            }
        })
        .collect()
}

/// The `KEYRESULT` payload listing `entries`: `name,hex` lines joined by
/// `\n`, no trailing newline (like `RESULT`).
pub fn encode_key_result(entries: &[KeyEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * (64 + 2 + 2 * KEY_LEN));
    for e in entries {
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(b',');
        out.extend_from_slice(e.key.to_text().as_bytes());
    }
    out
}

/// Decodes a `KEYRESULT` payload. Strict, like [`decode_result`]: every
/// non-empty line must be a valid name and a valid key, at most
/// [`MAX_KEYQUERY_NAMES`] of them.
pub fn decode_key_result(payload: &[u8]) -> Result<Vec<KeyEntry>, ProtocolError> {
    let text = std::str::from_utf8(payload).map_err(|_| ProtocolError::NotUtf8("KEYRESULT"))?;
    let entries = text
        .split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let bad = || ProtocolError::BadKeyEntry { line: i + 1 };
            let (name, key) = l.split_once(',').ok_or_else(bad)?;
            if !valid_name(name) {
                return Err(bad());
            }
            Ok(KeyEntry {
                name: name.to_owned(),
                key: key_arg(key).map_err(|_| bad())?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if entries.len() > MAX_KEYQUERY_NAMES {
        return Err(ProtocolError::TooManyNames);
    }
    Ok(entries)
}

/// A `RESULT` frame around an already encoded payload (the server keeps
/// the all-users payload encoded, see [`encode_line_into`]).
pub fn result_frame(payload: impl Into<Vec<u8>>) -> Frame {
    Frame::bare("RESULT", payload)
}

/// Length in bytes of `e`'s `RESULT` line, without the separator.
pub fn line_len(name: &str, address: &str, port: u16) -> usize {
    let digits = match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    name.len() + 1 + address.len() + 1 + digits
}

/// Appends one `name,address,port` line to a `RESULT` payload, with the
/// `\n` separator when the payload is not empty (no trailing newline: the
/// original's exact bytes).
pub fn encode_line_into(out: &mut Vec<u8>, name: &str, address: &str, port: u16) {
    if !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b',');
    out.extend_from_slice(address.as_bytes());
    out.push(b',');
    out.extend_from_slice(port.to_string().as_bytes());
}

/// The `RESULT` payload listing `entries`.
pub fn encode_result(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 32);
    for e in entries {
        encode_line_into(&mut out, &e.name, &e.address, e.port);
    }
    out
}

/// Decodes a `RESULT` payload. Strict: every non-empty line must be a valid
/// name, a valid address and a port, or the whole payload is refused (a
/// reader should then ask for users one at a time).
pub fn decode_result(payload: &[u8]) -> Result<Vec<Entry>, ProtocolError> {
    let text = std::str::from_utf8(payload).map_err(|_| ProtocolError::NotUtf8("RESULT"))?;
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let bad = || ProtocolError::BadEntry { line: i + 1 };
            let mut it = l.splitn(3, ',');
            let (name, address, port) = (
                it.next().ok_or_else(bad)?,
                it.next().ok_or_else(bad)?,
                it.next().ok_or_else(bad)?,
            );
            if !valid_name(name) || !valid_address(address) {
                return Err(bad());
            }
            Ok(Entry {
                name: name.to_owned(),
                address: address.to_owned(),
                port: port_arg(port).map_err(|_| bad())?,
            })
        })
        .collect()
}

/// Decodes every frame in `data` and parses each as a request and as a
/// reply, checking that whatever parses re-encodes to something that
/// parses the same. The fuzz target `directory_frames` runs this; it is
/// here so that normal tests build and run the same code path.
pub fn decode_and_parse(data: &[u8]) {
    use crate::frame::{decode_all, Limits};
    for limits in [
        Limits::default(),
        Limits {
            max_header: 64,
            max_payload: 64,
        },
    ] {
        if let Ok((frames, _)) = decode_all(data, &limits) {
            for f in &frames {
                parse_any(f);
            }
        }
    }
}

/// Parses `f` both ways; what parses must round-trip through its frame.
fn parse_any(f: &Frame) {
    if let Ok(r) = Request::parse(f) {
        let again = r.to_frame();
        assert!(again.validate().is_ok(), "{r:?} does not encode");
        assert_eq!(Request::parse(&again).as_ref(), Ok(&r));
    }
    if let Ok(r) = Reply::parse(f) {
        let again = r.to_frame();
        assert!(again.validate().is_ok(), "{r:?} does not encode");
        assert_eq!(Reply::parse(&again).as_ref(), Ok(&r));
        if let Reply::Result(entries) = &r {
            let wire = encode_result(entries);
            assert!(wire.len() <= f.payload.len());
        }
        if let Reply::KeyResult(entries) = &r {
            let wire = encode_key_result(entries);
            assert!(wire.len() <= f.payload.len() && wire.len() < MAX_KEYRESULT);
        }
        if let Reply::RelayResult(names) = &r {
            assert!(encode_relay_result(names).len() <= f.payload.len());
        }
        if let Reply::RelayNak { to, reason } = &r {
            if let Some(why) = RelayRefusal::classify(to, reason) {
                if why != RelayRefusal::NotYou {
                    assert_eq!(&why.text(to, ""), reason);
                }
            }
        }
    }
    // A relayed frame reads the same as a request and as a reply, and
    // moving its payload changes nothing.
    match (Request::parse(f), Reply::parse(f)) {
        (Ok(Request::Forward(a)), Ok(Reply::Relayed(b))) => {
            assert_eq!(a, b);
            assert_eq!(&a.clone().into_frame(), f);
            assert_eq!(Request::parse_owned(f.clone()), Ok(Request::Forward(a)));
            assert_eq!(Reply::parse_owned(f.clone()), Ok(Reply::Relayed(b)));
        }
        (Ok(Request::Forward(_)), _) | (_, Ok(Reply::Relayed(_))) => {
            panic!("{f} parses as a relayed frame one way only")
        }
        _ => {}
    }
    // A key has one spelling: whatever parses as a key prints as itself.
    for arg in &f.args {
        if let Ok(k) = key_arg(arg) {
            assert_eq!(&k.to_text(), arg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, Decoded, Limits};
    use proptest::prelude::*;

    fn wire(f: Frame) -> Vec<u8> {
        f.encode().unwrap()
    }

    #[test]
    fn replies_are_the_original_bytes() {
        assert_eq!(
            wire(Reply::hi("corrado").to_frame()),
            b"ACK 35\nhi corrado, authentication required"
        );
        assert_eq!(
            wire(Reply::authenticated().to_frame()),
            b"ACK 26\nsuccessfully authenticated"
        );
        assert_eq!(
            wire(Reply::bound("127.0.0.1", 5555).to_frame()),
            b"ACK 36\nbound successfully to 127.0.0.1:5555"
        );
        assert_eq!(
            wire(Reply::deregistered().to_frame()),
            b"ACK 27\nderegistered from directory"
        );
        let one = Entry {
            name: "corrado".into(),
            address: "127.0.0.1".into(),
            port: 5555,
        };
        assert_eq!(
            wire(Reply::Result(vec![one.clone()]).to_frame()),
            b"RESULT 22\ncorrado,127.0.0.1,5555"
        );
        let two = Entry {
            name: "bob".into(),
            address: "::1".into(),
            port: 6000,
        };
        assert_eq!(
            encode_result(&[one, two]),
            b"corrado,127.0.0.1,5555\nbob,::1,6000"
        );
        assert_eq!(wire(Reply::Result(vec![]).to_frame()), b"RESULT 0\n");
    }

    #[test]
    fn requests_are_the_original_bytes() {
        let cases = [
            (Request::User { name: "u".into() }, &b"USER 0 u\n"[..]),
            (
                Request::Pass {
                    password: "p".into(),
                },
                b"PASS 0 p\n",
            ),
            (
                Request::Bind {
                    address: "127.0.0.1".into(),
                    port: 5555,
                },
                b"BIND 0 127.0.0.1 5555\n",
            ),
            (Request::Query { name: None }, b"QUERY 0\n"),
            (
                Request::Query {
                    name: Some("u".into()),
                },
                b"QUERY 0 u\n",
            ),
            (Request::Leave, b"LEAVE 0\n"),
        ];
        for (r, bytes) in cases {
            assert_eq!(wire(r.to_frame()), bytes);
            assert_eq!(Request::parse(&r.to_frame()), Ok(r));
        }
        assert_eq!(
            Request::parse(&Frame::new("LOGIN", ["corrado"], "")),
            Ok(Request::User {
                name: "corrado".into()
            })
        );
    }

    const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn key_commands_are_these_bytes() {
        let (k1, k2) = (key_arg(K1).unwrap(), key_arg(K2).unwrap());
        assert_eq!(k1.as_bytes()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(k1.to_text(), K1);
        assert_eq!(format!("{k2}"), K2);
        let cases = [
            (Request::Key { key: k1 }, format!("KEY 0 {K1}\n")),
            (
                Request::Rekey { old: k1, new: k2 },
                format!("REKEY 0 {K1} {K2}\n"),
            ),
            (
                Request::KeyQuery {
                    names: vec!["alice".into(), "bob".into()],
                },
                "KEYQUERY 0 alice bob\n".into(),
            ),
        ];
        for (r, bytes) in cases {
            assert_eq!(wire(r.to_frame()), bytes.as_bytes());
            assert_eq!(Request::parse(&r.to_frame()), Ok(r));
        }
        assert_eq!(
            wire(Reply::key_published().to_frame()),
            b"ACK 13\nkey published"
        );
        assert_eq!(
            wire(Reply::key_replaced().to_frame()),
            b"ACK 12\nkey replaced"
        );
        assert_eq!(wire(Reply::Nak("no".into()).to_frame()), b"NAK 2\nno");
        let entries = vec![
            KeyEntry {
                name: "alice".into(),
                key: k1,
            },
            KeyEntry {
                name: "bob".into(),
                key: k2,
            },
        ];
        assert_eq!(
            wire(Reply::KeyResult(entries.clone()).to_frame()),
            format!("KEYRESULT 139\nalice,{K1}\nbob,{K2}").as_bytes()
        );
        assert_eq!(wire(Reply::KeyResult(vec![]).to_frame()), b"KEYRESULT 0\n");
        assert_eq!(
            Reply::parse(&Reply::KeyResult(entries.clone()).to_frame()),
            Ok(Reply::KeyResult(entries))
        );
    }

    #[test]
    fn keys_are_exactly_64_lowercase_hex_digits() {
        let upper = K1.to_uppercase();
        let short = &K1[1..];
        let long = format!("{K1}0");
        let prefixed = format!("0x{}", &K1[2..]);
        let spaced = format!("{} ", &K1[1..]);
        let non_ascii = format!("é{}", &K1[2..]);
        let signed = format!("+{}", &K1[1..]);
        for bad in [
            "",
            upper.as_str(),
            short,
            &long,
            &prefixed,
            &spaced,
            &non_ascii,
            &signed,
            &"g".repeat(64),
        ] {
            assert_eq!(key_arg(bad), Err(ProtocolError::BadKey), "{bad:?}");
        }
        assert_eq!(
            Request::parse(&Frame::new("KEY", [upper.as_str()], "")),
            Err(ProtocolError::BadKey)
        );
        assert_eq!(
            Request::parse(&Frame::new("REKEY", [K1, short], "")),
            Err(ProtocolError::BadKey)
        );
        let p =
            |kind: &str, args: &[&str]| Request::parse(&Frame::new(kind, args.iter().copied(), ""));
        assert!(matches!(
            p("KEY", &[]),
            Err(ProtocolError::WrongArity { .. })
        ));
        assert!(matches!(
            p("KEY", &[K1, K2]),
            Err(ProtocolError::WrongArity { .. })
        ));
        assert!(matches!(
            p("REKEY", &[K1]),
            Err(ProtocolError::WrongArity { .. })
        ));
        assert!(matches!(
            p("KEYQUERY", &[]),
            Err(ProtocolError::WrongArity { .. })
        ));
        assert_eq!(p("KEYQUERY", &["a,b"]), Err(ProtocolError::BadName));
        let many: Vec<String> = (0..=MAX_KEYQUERY_NAMES).map(|i| format!("u{i}")).collect();
        assert_eq!(
            Request::parse(&Frame::new("KEYQUERY", many.iter().map(String::as_str), "")),
            Err(ProtocolError::TooManyNames)
        );
        // The longest KEYQUERY fits in a header.
        let longest: Vec<String> = (0..MAX_KEYQUERY_NAMES).map(|_| "a".repeat(64)).collect();
        let f = Request::KeyQuery { names: longest }.to_frame();
        assert!(f.encode().unwrap().len() < crate::frame::DEFAULT_MAX_HEADER);
    }

    #[test]
    fn key_results_decode_strictly() {
        assert_eq!(decode_key_result(b""), Ok(vec![]));
        for bad in [
            format!("alice {K1}"),
            format!("alice,{}", K1.to_uppercase()),
            format!("a,b,{K1}"),
            format!(",{K1}"),
            "alice,".to_string(),
        ] {
            assert_eq!(
                decode_key_result(bad.as_bytes()),
                Err(ProtocolError::BadKeyEntry { line: 1 }),
                "{bad}"
            );
        }
        assert!(decode_key_result(b"\xff").is_err());
        let too_many: Vec<String> = (0..=MAX_KEYQUERY_NAMES)
            .map(|i| format!("u{i},{K1}"))
            .collect();
        assert_eq!(
            decode_key_result(too_many.join("\n").as_bytes()),
            Err(ProtocolError::TooManyNames)
        );
        let full: Vec<KeyEntry> = (0..MAX_KEYQUERY_NAMES)
            .map(|_| KeyEntry {
                name: "a".repeat(64),
                key: key_arg(K1).unwrap(),
            })
            .collect();
        assert_eq!(encode_key_result(&full).len() + 1, MAX_KEYRESULT);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let p = Request::Pass {
            password: "s3cret".into(),
        };
        assert!(!format!("{p:?}").contains("s3cret"));
    }

    #[test]
    fn bad_requests_are_named() {
        let p = |kind: &str, args: &[&str]| {
            Request::parse(&Frame::new(kind, args.iter().copied(), ""))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(p("HOWDY", &[]), "I did not understand the message HOWDY");
        assert_eq!(
            p("HELLO", &[]),
            "I did not understand the message HELLO: message HELLO has the wrong arguments"
        );
        assert!(p("RELAY", &["now"]).starts_with("I did not understand the message RELAY"));
        assert!(
            p("RELAYQUERY", &["a", "b"]).starts_with("I did not understand the message RELAYQUERY")
        );
        assert_eq!(
            p("BIND", &["127.0.0.1"]),
            "I did not understand the message BIND (wrong number of arguments: 1)"
        );
        assert!(p("QUERY", &["a", "b"]).starts_with("I did not understand the message QUERY"));
        assert!(p("LEAVE", &["now"]).starts_with("I did not understand the message LEAVE"));
        assert!(p("USER", &[]).starts_with("I did not understand the message USER"));
        assert!(p("USER", &["a,b"]).starts_with("invalid user name"));
        for port in ["0", "65536", "http", "-1", "+80"] {
            assert!(p("BIND", &["127.0.0.1", port]).starts_with("invalid bind notification"));
        }
        let long = format!("127.{}0.0.1", "0".repeat(4000));
        for addr in ["a,b", "-x.example", "x-.example", "a..b", "127.1", &long] {
            assert_eq!(
                Request::parse(&Frame::new("BIND", [addr, "80"], "")),
                Err(ProtocolError::BadAddress),
                "{addr:.40}"
            );
        }
    }

    #[test]
    fn addresses_are_names_or_literals_of_at_most_253_bytes() {
        for ok in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "localhost",
            "node-1.lab.example",
            "1a.example",
            "3com.net",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "127.000.0.1",
            "127.1",
            "0x7f.1",
            "a_b.example",
            "a b",
            "example.com.",
            "[::1]",
            "fe80::1%eth0",
            &"a".repeat(64),
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
        let label = "a".repeat(63);
        let at_limit = [label.as_str(); 4].join(".");
        assert_eq!(at_limit.len(), 255);
        assert!(!valid_address(&at_limit));
        assert!(valid_address(&at_limit[2..]));
    }

    #[test]
    fn results_decode_strictly() {
        assert_eq!(decode_result(b""), Ok(vec![]));
        assert_eq!(
            decode_result(b"alice,127.0.0.1,5555\nbob,::1,6000\n").unwrap(),
            [
                Entry {
                    name: "alice".into(),
                    address: "127.0.0.1".into(),
                    port: 5555
                },
                Entry {
                    name: "bob".into(),
                    address: "::1".into(),
                    port: 6000
                }
            ]
        );
        assert_eq!(
            decode_result(b"alice,127.0.0.1,5555\nbroken"),
            Err(ProtocolError::BadEntry { line: 2 })
        );
        assert!(decode_result(b"a,b,c,1").is_err());
        assert!(decode_result(b"a,h,0").is_err());
        assert!(decode_result(b"\xff,h,1").is_err());
        assert_eq!(
            Reply::parse(&Frame::bare("RESULT", "x")),
            Err(ProtocolError::BadEntry { line: 1 })
        );
        assert_eq!(
            Reply::parse(&Frame::bare("PONG", "")),
            Err(ProtocolError::Unknown("PONG".into()))
        );
    }

    #[test]
    fn line_len_counts_the_encoded_bytes() {
        for port in [1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
            let mut out = Vec::new();
            encode_line_into(&mut out, "name", "host.example", port);
            assert_eq!(out.len(), line_len("name", "host.example", port));
        }
        let longest = "a".repeat(64);
        let l = "a".repeat(63);
        let address = format!("{l}.{l}.{l}.{}", "b".repeat(61));
        assert!(valid_name(&longest) && valid_address(&address));
        assert_eq!(line_len(&longest, &address, 65535), MAX_LINE);
    }

    fn sealed(from: &str, to: &str, payload: Vec<u8>) -> SecureFrame {
        SecureFrame::Sealed(crate::secure::Sealed {
            from: from.into(),
            to: to.into(),
            epoch: 2,
            counter: 7,
            payload,
        })
    }

    #[test]
    fn relay_commands_are_these_bytes() {
        let cases = [
            (Request::Relay, &b"RELAY 0\n"[..]),
            (Request::RelayQuery { name: None }, b"RELAYQUERY 0\n"),
            (
                Request::RelayQuery {
                    name: Some("alice".into()),
                },
                b"RELAYQUERY 0 alice\n",
            ),
        ];
        for (r, bytes) in cases {
            assert_eq!(wire(r.to_frame()), bytes);
            assert_eq!(Request::parse(&r.to_frame()), Ok(r));
        }
        assert_eq!(wire(Reply::relay_on().to_frame()), b"ACK 8\nrelay on");
        let names = vec!["alice".to_string(), "bob".to_string()];
        assert_eq!(
            wire(Reply::RelayResult(names.clone()).to_frame()),
            b"RELAYRESULT 9\nalice\nbob"
        );
        assert_eq!(
            wire(Reply::RelayResult(vec![]).to_frame()),
            b"RELAYRESULT 0\n"
        );
        assert_eq!(
            Reply::parse(&Reply::RelayResult(names.clone()).to_frame()),
            Ok(Reply::RelayResult(names))
        );
        let nak = RelayRefusal::QueueFull.nak("bob", "alice");
        assert_eq!(
            wire(nak.to_frame()),
            b"RELAYNAK 31 bob\nthe relay queue for bob is full"
        );
        assert_eq!(Reply::parse(&nak.to_frame()), Ok(nak));
    }

    #[test]
    fn relayed_frames_are_requests_one_way_and_replies_the_other() {
        let sf = sealed("alice", "bob", vec![0x5a; 40]);
        let f = sf.to_frame();
        let mut expected = b"SEC 40 alice bob 2 7\n".to_vec();
        expected.extend_from_slice(&[0x5a; 40]);
        assert_eq!(wire(f.clone()), expected);
        assert_eq!(Request::parse(&f), Ok(Request::Forward(sf.clone())));
        assert_eq!(
            Request::parse_owned(f.clone()),
            Ok(Request::Forward(sf.clone()))
        );
        assert_eq!(Reply::parse(&f), Ok(Reply::Relayed(sf.clone())));
        assert_eq!(
            Reply::parse_owned(f.clone()),
            Ok(Reply::Relayed(sf.clone()))
        );
        assert_eq!(Request::Forward(sf.clone()).into_frame(), f);
        assert_eq!(Reply::Relayed(sf.clone()).into_frame(), f);
        let hello = Frame::new("HELLO", ["alice", "bob", "1"], vec![1u8; 32]);
        assert!(matches!(
            Request::parse(&hello),
            Ok(Request::Forward(SecureFrame::Hello(_)))
        ));
        // Bad shapes are protocol errors, named.
        let short = Frame::new("SEC", ["alice", "bob", "0", "0"], "abc");
        assert!(matches!(
            Request::parse(&short),
            Err(ProtocolError::Secure {
                error: SecureError::PayloadSize { .. },
                ..
            })
        ));
        assert!(matches!(
            Reply::parse(&Frame::new("HELLO", ["a,b", "bob", "1"], "x")),
            Err(ProtocolError::Secure {
                error: SecureError::BadName { .. },
                ..
            })
        ));
        // The payload never shows in Debug output (logs).
        let marker = sealed(
            "alice",
            "bob",
            b"PLAINTEXT-MARKER-xxxxxxxxxxxxxxxxxxx".to_vec(),
        );
        for shown in [
            format!("{:?}", Request::Forward(marker.clone())),
            format!("{:?}", Reply::Relayed(marker.clone())),
        ] {
            assert!(shown.contains("SEC 36 alice -> bob"), "{shown}");
            assert!(
                !shown.contains("MARKER") && !shown.contains("80, 76"),
                "{shown}"
            );
        }
    }

    #[test]
    fn relay_refusals_are_these_sentences_and_read_back() {
        use RelayRefusal::*;
        let expected = [
            (Unreachable, "bob is not reachable through the relay"),
            (QueueFull, "the relay queue for bob is full"),
            (RateLimited, "relay rate limit: slow down"),
            (NotYou, "relayed frames must come from you (alice)"),
            (ToYourself, "bob: cannot relay to yourself"),
            (Disabled, "relay is disabled on this directory"),
            (Full, "the relay is full on this directory"),
        ];
        for (r, text) in expected {
            assert_eq!(r.text("bob", "alice"), text);
            assert_eq!(RelayRefusal::classify("bob", text), Some(r), "{text}");
            // Only a budget spent or a queue full pass with time.
            assert_eq!(
                RelayRefusal::is_for_now("bob", text),
                matches!(r, RateLimited | QueueFull),
                "{text}"
            );
        }
        assert_eq!(RelayRefusal::classify("bob", "something else"), None);
        assert!(!RelayRefusal::is_for_now("bob", "something else"));
        assert_eq!(
            RelayRefusal::classify("carol", "bob is not reachable through the relay"),
            None
        );
    }

    #[test]
    fn relay_results_and_naks_decode_strictly() {
        assert_eq!(decode_relay_result(b""), Ok(vec![]));
        assert_eq!(
            decode_relay_result(b"alice\n\nbob\n"),
            Ok(vec!["alice".into(), "bob".into()])
        );
        assert_eq!(
            decode_relay_result(b"alice\nb,c"),
            Err(ProtocolError::BadRelayEntry { line: 2 })
        );
        assert!(decode_relay_result(b"\xff").is_err());
        assert_eq!(
            Reply::parse(&Frame::new("RELAYNAK", ["a b"], "x")),
            Err(ProtocolError::BadName)
        );
        assert!(matches!(
            Reply::parse(&Frame::bare("RELAYNAK", "x")),
            Err(ProtocolError::WrongArity { .. })
        ));
        assert_eq!(
            Reply::parse(&Frame::new("RELAYNAK", ["bob"], b"\xff".to_vec())),
            Err(ProtocolError::NotUtf8("RELAYNAK"))
        );
    }

    #[test]
    fn the_largest_sealed_frame_fits_the_relay_payload_limit() {
        let sf = sealed("alice", "bob", vec![0; crate::secure::MAX_SEC_PAYLOAD]);
        let f = sf.to_frame();
        assert!(f.payload.len() <= MAX_RELAY_PAYLOAD);
        let limits = Limits {
            max_payload: MAX_RELAY_PAYLOAD,
            ..Limits::default()
        };
        let bytes = f.encode().unwrap();
        let Ok(Decoded::Frame(back, _)) = decode(&bytes, &limits) else {
            panic!("does not decode");
        };
        assert_eq!(Request::parse_owned(back), Ok(Request::Forward(sf)));
    }

    use crate::secure::arb::{frame as arb_secure, name as arb_name};

    fn arb_relay_reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            proptest::collection::vec(arb_name(), 0..40).prop_map(Reply::RelayResult),
            (arb_name(), "[ -~]{0,120}").prop_map(|(to, reason)| Reply::RelayNak { to, reason }),
            arb_secure().prop_map(Reply::Relayed),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            "[A-Za-z0-9_.-]{1,64}",
            prop_oneof![
                any::<std::net::IpAddr>().prop_map(|a| a.to_string()),
                "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}\\.[a-z]{1,6}",
            ],
            1u16..,
        )
            .prop_map(|(name, address, port)| Entry {
                name,
                address,
                port,
            })
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            "[A-Za-z0-9_.-]{1,64}".prop_map(|name| Request::User { name }),
            "[!-~]{1,256}".prop_map(|password| Request::Pass { password }),
            arb_entry().prop_map(|e| Request::Bind {
                address: e.address,
                port: e.port
            }),
            proptest::option::of("[!-~]{1,64}").prop_map(|name| Request::Query { name }),
            Just(Request::Leave),
            arb_key().prop_map(|key| Request::Key { key }),
            (arb_key(), arb_key()).prop_map(|(old, new)| Request::Rekey { old, new }),
            proptest::collection::vec("[A-Za-z0-9_.-]{1,64}", 1..=MAX_KEYQUERY_NAMES)
                .prop_map(|names| Request::KeyQuery { names }),
            Just(Request::Relay),
            proptest::option::of("[!-~]{1,64}").prop_map(|name| Request::RelayQuery { name }),
            arb_secure().prop_map(Request::Forward),
        ]
    }

    fn arb_key() -> impl Strategy<Value = PublicKey> {
        any::<[u8; KEY_LEN]>().prop_map(PublicKey)
    }

    proptest! {
        #[test]
        fn results_round_trip(entries in proptest::collection::vec(arb_entry(), 0..20)) {
            let frame = Reply::Result(entries.clone()).to_frame();
            let bytes = frame.encode().unwrap();
            let Ok(Decoded::Frame(back, _)) = decode(&bytes, &Limits::default()) else {
                panic!("does not decode");
            };
            prop_assert_eq!(Reply::parse(&back), Ok(Reply::Result(entries.clone())));
            let expected: usize = entries.iter().map(|e| line_len(&e.name, &e.address, e.port)).sum::<usize>()
                + entries.len().saturating_sub(1);
            prop_assert_eq!(back.payload.len(), expected);
        }

        #[test]
        fn keys_round_trip_through_hex(key in arb_key()) {
            let hex = key.to_text();
            prop_assert_eq!(hex.len(), 64);
            prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert_eq!(key_arg(&hex), Ok(key));
            prop_assert_eq!(key_arg(&hex.to_uppercase()).is_ok(), !hex.bytes().any(|b| b.is_ascii_lowercase()));
        }

        #[test]
        fn key_hex_parser_accepts_only_what_it_prints(text in "[0-9a-fA-Fx +g-]{0,70}") {
            match key_arg(&text) {
                Ok(k) => prop_assert_eq!(k.to_text(), text),
                Err(e) => prop_assert_eq!(e, ProtocolError::BadKey),
            }
        }

        #[test]
        fn key_results_round_trip(
            entries in proptest::collection::vec(
                ("[A-Za-z0-9_.-]{1,64}", arb_key()).prop_map(|(name, key)| KeyEntry { name, key }),
                0..=MAX_KEYQUERY_NAMES,
            )
        ) {
            let bytes = Reply::KeyResult(entries.clone()).to_frame().encode().unwrap();
            let Ok(Decoded::Frame(back, _)) = decode(&bytes, &Limits::default()) else {
                panic!("does not decode");
            };
            prop_assert!(back.payload.len() < MAX_KEYRESULT);
            prop_assert_eq!(Reply::parse(&back), Ok(Reply::KeyResult(entries)));
        }

        #[test]
        fn relay_replies_round_trip(r in arb_relay_reply()) {
            let bytes = r.to_frame().encode().unwrap();
            let Ok(Decoded::Frame(back, n)) = decode(&bytes, &Limits::default()) else {
                panic!("does not decode");
            };
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(Reply::parse(&back), Ok(r.clone()));
            prop_assert_eq!(Reply::parse_owned(back), Ok(r.clone()));
            prop_assert_eq!(r.clone().into_frame(), r.to_frame());
            if let Reply::RelayResult(names) = &r {
                prop_assert!(names.iter().all(|n| valid_name(n)));
            }
        }

        #[test]
        fn refusals_read_back_for_any_names(to in arb_name(), user in arb_name()) {
            use RelayRefusal::*;
            for r in [Unreachable, QueueFull, RateLimited, NotYou, ToYourself, Disabled, Full] {
                prop_assert_eq!(RelayRefusal::classify(&to, &r.text(&to, &user)), Some(r));
            }
        }

        #[test]
        fn requests_round_trip(r in arb_request()) {
            let bytes = r.to_frame().encode().unwrap();
            let Ok(Decoded::Frame(back, n)) = decode(&bytes, &Limits::default()) else {
                panic!("does not decode");
            };
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(Request::parse(&back), Ok(r.clone()));
            prop_assert_eq!(Request::parse_owned(back), Ok(r.clone()));
            prop_assert_eq!(r.clone().into_frame(), r.to_frame());
        }

        #[test]
        fn arbitrary_frames_never_panic(
            kind in prop_oneof![
                Just("USER".to_string()), Just("LOGIN".to_string()), Just("PASS".to_string()),
                Just("BIND".to_string()), Just("QUERY".to_string()), Just("LEAVE".to_string()),
                Just("ACK".to_string()), Just("ERR".to_string()), Just("RESULT".to_string()),
                Just("KEY".to_string()), Just("REKEY".to_string()), Just("KEYQUERY".to_string()),
                Just("NAK".to_string()), Just("KEYRESULT".to_string()),
                Just("RELAY".to_string()), Just("RELAYQUERY".to_string()),
                Just("RELAYRESULT".to_string()), Just("RELAYNAK".to_string()),
                Just("HELLO".to_string()), Just("SEC".to_string()),
                "[A-Z]{1,8}",
            ],
            args in proptest::collection::vec(
                prop_oneof![
                    "[!-~\u{a0}-\u{400}]{1,300}",
                    "[0-9a-f]{64}",
                    "[0-9a-fA-F]{63,65}",
                    "[0-9]{1,3}",
                    "[a-z]{1,8}",
                ],
                0..4,
            ),
            payload in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let f = Frame { kind, args, payload };
            parse_any(&f);
        }

        #[test]
        fn relayed_frames_and_noise_pass_the_fuzz_checks(
            sf in arb_secure(),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = sf.to_frame().encode().unwrap();
            decode_and_parse(&bytes);
            bytes.extend_from_slice(&noise);
            decode_and_parse(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            decode_and_parse(&bytes);
        }
    }
}
