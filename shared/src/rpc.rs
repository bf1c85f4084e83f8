//! The overlay's request/reply frames (issue 13): typed requests with an id
//! and a deadline, and their replies, as Fed-BioMed's node-to-node requests
//! but over our authenticated channel.
//!
//! These frames only ever travel *inside* a sealed `SEC` frame (the
//! plaintext of one `SEC` is one encoded [`Frame`]), never on a plain
//! connection, so a peer that is not a Roundtable node cannot send or see
//! them. They are still typed, bounded and fuzzed like every other frame:
//! the sender is authenticated, not trusted.
//!
//! # Frames
//!
//! | Frame | Arguments | Body |
//! |---|---|---|
//! | `REQ <len> <id> <kind> <timeout_ms>` | `id`: 32 lowercase hex digits (128 random bits); `kind`: 1..=32 of `[a-z0-9_.-]`; `timeout_ms`: how long the caller waits, canonical decimal in 1..=600000 | the request, at most [`MAX_BODY`] bytes |
//! | `REP <len> <id> <status>` | `id` of the request; `status`: `ok`, `error`, `unknown_kind` or `busy` | `ok`: the result; otherwise a UTF-8 sentence |
//!
//! Every field has one spelling (lowercase hex, no leading zero), so a
//! frame that parses re-encodes to the same bytes.
//!
//! # The built-in `info` request
//!
//! Body empty; its `ok` reply is the JSON [`InfoReply`]. The dashboard's
//! "check peers" sends it to every online peer at once.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::secure::{hex_decode_into, hex_encode_into, MAX_PLAINTEXT};

/// Largest request or reply body: 60 KiB, so a whole frame (body and
/// header) fits one sealed frame's plaintext.
pub const MAX_BODY: usize = 60 * 1024;

/// Longest request kind.
pub const MAX_KIND: usize = 32;

/// Longest deadline a caller may ask for, ms (ten minutes).
pub const MAX_TIMEOUT_MS: u32 = 600_000;

/// Bytes of a request id.
pub const ID_LEN: usize = 16;

/// Longest header of an rpc frame: `REQ`, the body length, an id, the
/// longest kind and the longest timeout, with spaces and the LF.
pub const MAX_HEADER: usize = 3 + 1 + 5 + 1 + 2 * ID_LEN + 1 + MAX_KIND + 1 + 6 + 1;

// Any rpc frame, encoded, fits one `SEC` frame's plaintext.
const _: () = assert!(MAX_HEADER + MAX_BODY <= MAX_PLAINTEXT);

/// The kind of the built-in request every Roundtable node answers.
pub const INFO: &str = "info";

/// What [`InfoReply::software`] says for this implementation.
pub const SOFTWARE: &str = "roundtable";

/// Why a frame is not a valid request or reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("I did not understand the message {0}")]
    Unknown(String),
    #[error("message {0} has the wrong arguments")]
    BadArguments(String),
    #[error("request id {0:?} is not 32 lowercase hex digits")]
    BadId(String),
    #[error("request kind {0:?} is not 1 to {MAX_KIND} of [a-z0-9_.-]")]
    BadKind(String),
    #[error("timeout {0:?} is not a canonical number of ms in 1..={MAX_TIMEOUT_MS}")]
    BadTimeout(String),
    #[error("reply status {0:?} is not ok, error, unknown_kind or busy")]
    BadStatus(String),
    #[error("body of {len} bytes exceeds the limit of {MAX_BODY}")]
    BodyTooLarge { len: usize },
    #[error("a {0} reply's body must be a UTF-8 sentence")]
    NotUtf8(Status),
}

/// A request's id: 128 random bits, so one peer cannot guess the id of a
/// request sent to another (ids are also bound to the peer they were sent
/// to, see the backend's `overlay::rpc::Requests`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; ID_LEN]);

impl RequestId {
    /// The text form: 32 lowercase hex digits.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(2 * ID_LEN);
        hex_encode_into(&mut s, &self.0);
        s
    }

    /// Reads the text form; anything but 32 lowercase hex digits is refused.
    pub fn from_text(text: &str) -> Result<RequestId, RpcError> {
        let mut out = [0u8; ID_LEN];
        if hex_decode_into(text, &mut out) {
            Ok(RequestId(out))
        } else {
            Err(RpcError::BadId(text.to_owned()))
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// How a request went, as the replying node says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The handler completed; the body is its result.
    Ok,
    /// The handler failed; the body says why.
    Error,
    /// The node has no handler for this kind (an older version, say).
    UnknownKind,
    /// The node runs as many handlers as it allows; try again later.
    Busy,
}

impl Status {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::UnknownKind => "unknown_kind",
            Status::Busy => "busy",
        }
    }

    fn parse(text: &str) -> Result<Status, RpcError> {
        Ok(match text {
            "ok" => Status::Ok,
            "error" => Status::Error,
            "unknown_kind" => Status::UnknownKind,
            "busy" => Status::Busy,
            other => return Err(RpcError::BadStatus(other.to_owned())),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `kind` can name a request: 1 to [`MAX_KIND`] of `[a-z0-9_.-]`.
pub fn valid_kind(kind: &str) -> bool {
    (1..=MAX_KIND).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// Whether `ms` is an acceptable deadline.
pub fn valid_timeout(ms: u32) -> bool {
    (1..=MAX_TIMEOUT_MS).contains(&ms)
}

/// A request or its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcFrame {
    /// `REQ <len> <id> <kind> <timeout_ms>` + body.
    Req {
        id: RequestId,
        kind: String,
        /// How long the caller waits for the reply, ms; the handler is
        /// cancelled when it runs out.
        timeout_ms: u32,
        body: Vec<u8>,
    },
    /// `REP <len> <id> <status>` + body.
    Rep {
        id: RequestId,
        status: Status,
        body: Vec<u8>,
    },
}

impl RpcFrame {
    /// The frame type of a request.
    pub const REQ: &'static str = "REQ";
    /// The frame type of a reply.
    pub const REP: &'static str = "REP";

    /// Interprets a decoded frame. A frame of another type is
    /// [`RpcError::Unknown`], so a caller can pass it on to the chat
    /// protocol's parser.
    pub fn parse(f: &Frame) -> Result<RpcFrame, RpcError> {
        let bad = || RpcError::BadArguments(f.kind.clone());
        let mut parsed = match f.kind.as_str() {
            Self::REQ => {
                let [id, kind, timeout] = f.args.as_slice() else {
                    return Err(bad());
                };
                RpcFrame::Req {
                    id: RequestId::from_text(id)?,
                    kind: kind.clone(),
                    timeout_ms: parse_timeout(timeout)?,
                    body: Vec::new(),
                }
            }
            Self::REP => {
                let [id, status] = f.args.as_slice() else {
                    return Err(bad());
                };
                RpcFrame::Rep {
                    id: RequestId::from_text(id)?,
                    status: Status::parse(status)?,
                    body: Vec::new(),
                }
            }
            other => return Err(RpcError::Unknown(other.to_owned())),
        };
        // Check the body's size before copying it.
        check_body(&parsed, &f.payload)?;
        match &mut parsed {
            RpcFrame::Req { body, .. } | RpcFrame::Rep { body, .. } => body.clone_from(&f.payload),
        }
        parsed.validate()?;
        Ok(parsed)
    }

    /// The request's or reply's id.
    pub fn id(&self) -> RequestId {
        match self {
            RpcFrame::Req { id, .. } | RpcFrame::Rep { id, .. } => *id,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self {
            RpcFrame::Req { body, .. } | RpcFrame::Rep { body, .. } => body,
        }
    }

    /// Checks every field: what [`parse`](Self::parse) accepts, and what
    /// [`to_frame`](Self::to_frame) must be given to produce a frame the
    /// peer accepts.
    pub fn validate(&self) -> Result<(), RpcError> {
        if let RpcFrame::Req {
            kind, timeout_ms, ..
        } = self
        {
            if !valid_kind(kind) {
                return Err(RpcError::BadKind(kind.clone()));
            }
            if !valid_timeout(*timeout_ms) {
                return Err(RpcError::BadTimeout(timeout_ms.to_string()));
            }
        }
        check_body(self, self.body())
    }

    /// The frame to send (check it with [`validate`](Self::validate) first
    /// if its fields came from outside).
    pub fn to_frame(&self) -> Frame {
        match self {
            RpcFrame::Req {
                id,
                kind,
                timeout_ms,
                body,
            } => Frame::new(
                Self::REQ,
                [id.to_text(), kind.clone(), timeout_ms.to_string()],
                body.clone(),
            ),
            RpcFrame::Rep { id, status, body } => Frame::new(
                Self::REP,
                [id.to_text(), status.as_str().to_owned()],
                body.clone(),
            ),
        }
    }
}

/// The body's bounds for this frame: at most [`MAX_BODY`], and a sentence
/// for every reply but `ok`.
fn check_body(frame: &RpcFrame, body: &[u8]) -> Result<(), RpcError> {
    if body.len() > MAX_BODY {
        return Err(RpcError::BodyTooLarge { len: body.len() });
    }
    if let RpcFrame::Rep { status, .. } = frame {
        if *status != Status::Ok && std::str::from_utf8(body).is_err() {
            return Err(RpcError::NotUtf8(*status));
        }
    }
    Ok(())
}

/// A deadline without sign or leading zero, in range.
fn parse_timeout(text: &str) -> Result<u32, RpcError> {
    let canonical = !text.is_empty()
        && text.len() <= 6
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    canonical
        .then(|| text.parse().ok())
        .flatten()
        .filter(|ms| valid_timeout(*ms))
        .ok_or_else(|| RpcError::BadTimeout(text.to_owned()))
}

/// The `ok` body of an `info` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoReply {
    /// The user the node runs as.
    pub name: String,
    /// The Roundtable version ([`crate::VERSION`]).
    pub version: String,
    /// [`SOFTWARE`] for this implementation.
    pub software: String,
}

impl InfoReply {
    /// This build's answer for the node of user `name`.
    pub fn this_build(name: &str) -> InfoReply {
        InfoReply {
            name: name.to_owned(),
            version: crate::VERSION.to_owned(),
            software: SOFTWARE.to_owned(),
        }
    }
}

/// Decodes every frame in `data`, parses each as an rpc frame, and checks
/// that whatever parses is valid, within the limits and re-encodes to the
/// same frame; also reads each body as an [`InfoReply`]. The fuzz target
/// `rpc_frames` runs this; it is here so that normal tests build and run
/// the same code path.
pub fn decode_and_parse(data: &[u8]) {
    use crate::frame::{decode_all, Limits};
    for limits in [
        Limits {
            max_header: MAX_HEADER,
            max_payload: MAX_PLAINTEXT,
        },
        Limits {
            max_header: 64,
            max_payload: 64,
        },
    ] {
        let Ok((frames, _)) = decode_all(data, &limits) else {
            continue;
        };
        for f in &frames {
            let _ = serde_json::from_slice::<InfoReply>(&f.payload);
            let Ok(parsed) = RpcFrame::parse(f) else {
                continue;
            };
            assert_eq!(parsed.validate(), Ok(()));
            assert!(parsed.body().len() <= MAX_BODY);
            assert_eq!(&parsed.to_frame(), f, "{parsed:?} re-encodes differently");
            let wire = parsed.to_frame().encode().expect("a valid frame encodes");
            assert!(wire.len() <= MAX_HEADER + MAX_BODY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, Decoded, Limits};
    use proptest::prelude::*;

    const ID: &str = "00112233445566778899aabbccddeeff";

    fn parse(wire: &[u8]) -> Result<RpcFrame, RpcError> {
        match decode(wire, &Limits::default()).unwrap() {
            Decoded::Frame(f, _) => RpcFrame::parse(&f),
            Decoded::NeedMore => panic!("incomplete"),
        }
    }

    #[test]
    fn requests_and_replies_parse() {
        assert_eq!(
            parse(format!("REQ 2 {ID} info 3000\n{{}}").as_bytes()),
            Ok(RpcFrame::Req {
                id: RequestId::from_text(ID).unwrap(),
                kind: "info".into(),
                timeout_ms: 3000,
                body: b"{}".to_vec(),
            })
        );
        assert_eq!(
            parse(format!("REP 4 {ID} busy\nwait").as_bytes()),
            Ok(RpcFrame::Rep {
                id: RequestId::from_text(ID).unwrap(),
                status: Status::Busy,
                body: b"wait".to_vec(),
            })
        );
    }

    #[test]
    fn bad_fields_are_refused_with_the_field_named() {
        let req = |args: &str| parse(format!("REQ 0 {args}\n").as_bytes());
        assert!(req(&format!("{ID} a.b-c_9 600000")).is_ok());
        assert!(matches!(
            req(&format!("{ID} info")),
            Err(RpcError::BadArguments(_))
        ));
        assert!(matches!(
            req(&format!("{} info 1", ID.to_uppercase())),
            Err(RpcError::BadId(_))
        ));
        assert!(matches!(
            req(&format!("{} info 1", &ID[1..])),
            Err(RpcError::BadId(_))
        ));
        assert!(matches!(
            req(&format!("{ID} Info 1")),
            Err(RpcError::BadKind(_))
        ));
        assert!(matches!(
            req(&format!("{ID} {} 1", "a".repeat(33))),
            Err(RpcError::BadKind(_))
        ));
        for t in ["0", "01", "600001", "-1", "+5", "4294967296", "1e3"] {
            assert!(
                matches!(req(&format!("{ID} info {t}")), Err(RpcError::BadTimeout(_))),
                "{t}"
            );
        }
        assert!(matches!(
            parse(format!("REP 0 {ID} fine\n").as_bytes()),
            Err(RpcError::BadStatus(_))
        ));
        let mut not_utf8 = format!("REP 1 {ID} error\n").into_bytes();
        not_utf8.push(0xff);
        assert_eq!(parse(&not_utf8), Err(RpcError::NotUtf8(Status::Error)));
        // An ok body is any bytes.
        let mut binary = format!("REP 1 {ID} ok\n").into_bytes();
        binary.push(0xff);
        assert!(parse(&binary).is_ok());
        assert_eq!(
            parse(b"MSG 0 alice 1\n"),
            Err(RpcError::Unknown("MSG".into()))
        );
    }

    #[test]
    fn body_limit_is_enforced_and_the_largest_frame_fits_a_sealed_frame() {
        let id = RequestId([0xab; ID_LEN]);
        let largest = RpcFrame::Req {
            id,
            kind: "k".repeat(MAX_KIND),
            timeout_ms: MAX_TIMEOUT_MS,
            body: vec![0; MAX_BODY],
        };
        assert_eq!(largest.validate(), Ok(()));
        let wire = largest.to_frame().encode().unwrap();
        assert!(wire.len() <= MAX_HEADER + MAX_BODY);
        assert!(wire.len() <= MAX_PLAINTEXT);
        let too_big = Frame::new(
            RpcFrame::REP,
            [id.to_text(), "ok".into()],
            vec![0; MAX_BODY + 1],
        );
        assert_eq!(
            RpcFrame::parse(&too_big),
            Err(RpcError::BodyTooLarge { len: MAX_BODY + 1 })
        );
    }

    #[test]
    fn info_reply_is_the_documented_json() {
        let json = serde_json::to_value(InfoReply::this_build("alice")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "alice", "version": crate::VERSION, "software": "roundtable"})
        );
    }

    fn arb_status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Ok),
            Just(Status::Error),
            Just(Status::UnknownKind),
            Just(Status::Busy)
        ]
    }

    fn arb_frame() -> impl Strategy<Value = RpcFrame> {
        prop_oneof![
            (
                any::<[u8; ID_LEN]>(),
                "[a-z0-9_.-]{1,32}",
                1..=MAX_TIMEOUT_MS,
                proptest::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(id, kind, timeout_ms, body)| RpcFrame::Req {
                    id: RequestId(id),
                    kind,
                    timeout_ms,
                    body
                }),
            (
                any::<[u8; ID_LEN]>(),
                arb_status(),
                proptest::collection::vec(any::<u8>(), 0..2048),
                ".{0,64}"
            )
                .prop_map(|(id, status, bytes, text)| RpcFrame::Rep {
                    id: RequestId(id),
                    status,
                    body: if status == Status::Ok {
                        bytes
                    } else {
                        text.into_bytes()
                    },
                }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_the_wire(frame in arb_frame()) {
            prop_assert_eq!(frame.validate(), Ok(()));
            let wire = frame.to_frame().encode().unwrap();
            match decode(&wire, &Limits::default()).unwrap() {
                Decoded::Frame(f, used) => {
                    prop_assert_eq!(used, wire.len());
                    prop_assert_eq!(RpcFrame::parse(&f), Ok(frame));
                }
                Decoded::NeedMore => prop_assert!(false, "incomplete"),
            }
        }

        #[test]
        fn parse_never_panics_on_arbitrary_frames(
            kind in prop_oneof![Just("REQ".to_owned()), Just("REP".to_owned()), "[A-Z]{1,4}"],
            args in proptest::collection::vec("[!-~]{1,40}", 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let f = Frame { kind, args, payload: body };
            if let Ok(parsed) = RpcFrame::parse(&f) {
                prop_assert_eq!(parsed.to_frame(), f);
            }
        }

        #[test]
        fn decode_and_parse_holds_on_frames_and_noise(
            frame in arb_frame(),
            noise in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut wire = frame.to_frame().encode().unwrap();
            decode_and_parse(&wire);
            wire.extend_from_slice(&noise);
            decode_and_parse(&wire);
            decode_and_parse(&noise);
        }
    }
}
