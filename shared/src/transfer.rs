//! Files between Roundtable nodes (issue 14): the frames of a transfer
//! connection and the JSON an NVFlare binary exchange carries in its meta
//! section between our nodes.
//!
//! A transfer has its own connection to the receiver's chat port, secured
//! like chat (`PING`, the Noise handshake, then only `SEC` frames), so a
//! file never holds up chat. Every frame below travels sealed inside it.
//!
//! 1. The sender offers the file: `FILEQ <len> <id>` + JSON [`FileOffer`].
//! 2. The receiver answers `FILEREPLY <len> <id>` + JSON [`FileReply`]:
//!    resume at the offset it holds on disk (0 for a new transfer), done
//!    (it has the whole file already: delivered exactly once), or refused
//!    with a reason.
//! 3. After `resume`, the sender streams one NVIDIA FLARE binary exchange
//!    ([`crate::binary`]) in `FILEDATA <len>` frames, each up to
//!    [`MAX_DATA`] bytes of the exchange's byte stream. Its meta section is
//!    a JSON [`ExchangeMeta`]; its body is the file from that offset to
//!    the end; its footer carries the CRC-32 of that body.
//! 4. After the footer (and the whole-file SHA-256 check, and the rename
//!    into place) the receiver answers `FILEREPLY` again: done, or refused.
//!
//! Each `FILEDATA` is authenticated by the channel, so the receiver keeps
//! what it wrote (synced to disk now and then, see the backend's
//! `transfer::inbound`) when the connection drops, and the next offer
//! resumes there. The exchange's own CRC and the whole-file SHA-256 are
//! checked as well, so a bug in either node cannot deliver a wrong file.
//!
//! # Through the directory's relay
//!
//! A peer without a chat address (`--chat none`) is reached through the
//! directory, over the one sealed channel the pair shares for chat, where
//! frames of several transfers and chat's messages travel side by side and
//! a frame the directory refuses (`RELAYNAK`) is lost. So there a transfer
//! names itself in every frame, and is flow-controlled:
//!
//! - `FILEQ` and `FILEREPLY` as above;
//! - `FILECHUNK <len> <id> <at>` instead of `FILEDATA`: the next bytes of
//!   the exchange's byte stream, starting at position `at` of it (the
//!   header is at 0), so that a lost chunk is noticed at the next one;
//! - `FILEWIN <id> <upto>`, from the receiver: the sender may send the
//!   stream up to position `upto`. Before the first, up to
//!   [`RELAY_WINDOW`]. The receiver grants at most [`RELAY_WINDOW`] past
//!   what it has taken, so the directory never holds more than that of one
//!   transfer (its queues are bounded and refuse what does not fit).
//!
//! Every field is checked: ids are 32 lowercase hex digits, names are
//! plain file names ([`valid_file_name`]), sizes and offsets are bounded,
//! hashes are 64 lowercase hex digits.

use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::secure::{hex_decode_into, MAX_PLAINTEXT};

/// Largest `FILEDATA` payload: 64 KiB, so a frame fits one sealed plaintext.
pub const MAX_DATA: usize = 64 * 1024;

/// Largest JSON body of `FILEQ` or `FILEREPLY`.
pub const MAX_JSON: usize = 8 * 1024;

/// Longest file name accepted, in bytes.
pub const MAX_NAME: usize = 255;

/// Longest refusal reason, in bytes.
pub const MAX_REASON: usize = 1024;

/// Largest file a transfer can describe (1 TiB, as the exchange's body).
pub const MAX_SIZE: u64 = 1 << 40;

/// Furthest position in an exchange's byte stream (the body, its header,
/// meta and footer).
pub const MAX_STREAM: u64 = MAX_SIZE + (1 << 20);

/// Bytes of an exchange through the relay that may be on their way
/// (sent, not yet granted back by `FILEWIN`).
pub const RELAY_WINDOW: u64 = 1 << 20;

// A full FILEDATA frame (header included) fits one sealed plaintext.
const _: () = assert!(MAX_DATA + 64 <= MAX_PLAINTEXT);

/// Why a frame is not a valid transfer frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferFrameError {
    #[error("not a transfer frame: {0}")]
    Unknown(String),
    #[error("{0} has the wrong arguments")]
    BadArguments(String),
    #[error("transfer id {0:?} is not 32 lowercase hex digits")]
    BadId(String),
    #[error("{kind} body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} body is not valid JSON of its kind: {why}")]
    BadJson { kind: &'static str, why: String },
    #[error("file name {0:?} is not a plain name (no folders, no leading dot, at most {MAX_NAME} bytes)")]
    BadName(String),
    #[error("SHA-256 {0:?} is not 64 lowercase hex digits")]
    BadHash(String),
    #[error("size {0} is beyond the limit of {MAX_SIZE} bytes")]
    BadSize(u64),
    #[error("offset {offset} is beyond the file's {size} bytes")]
    BadOffset { offset: u64, size: u64 },
    #[error("the reply's id {reply} is not the offer's {offer}")]
    IdMismatch { reply: String, offer: String },
    #[error("refusal reason longer than {MAX_REASON} bytes")]
    BadReason,
}

/// Whether `id` is a transfer id: 32 lowercase hex digits (128 random bits
/// chosen by the sender).
pub fn valid_id(id: &str) -> bool {
    let mut out = [0u8; 16];
    hex_decode_into(id, &mut out)
}

/// Whether `hash` is a SHA-256 in text form: 64 lowercase hex digits.
pub fn valid_sha256(hash: &str) -> bool {
    let mut out = [0u8; 32];
    hex_decode_into(hash, &mut out)
}

/// Whether `name` is a plain file name that cannot leave the folder it is
/// put in or hide in it: not empty, at most [`MAX_NAME`] bytes, no `/`,
/// `\`, NUL or control character, and not starting with a dot (no `..`,
/// no hidden files, no clash with the receiver's own `.part` files).
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == '\0' || c.is_control())
}

fn check_common(id: &str, name: &str, size: u64, sha256: &str) -> Result<(), TransferFrameError> {
    if !valid_id(id) {
        return Err(TransferFrameError::BadId(id.to_owned()));
    }
    if !valid_file_name(name) {
        return Err(TransferFrameError::BadName(name.to_owned()));
    }
    if size > MAX_SIZE {
        return Err(TransferFrameError::BadSize(size));
    }
    if !valid_sha256(sha256) {
        return Err(TransferFrameError::BadHash(sha256.to_owned()));
    }
    Ok(())
}

/// What the sender offers (`FILEQ`). The sender is whoever the channel
/// proved it to be; the offer does not name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOffer {
    pub id: String,
    pub name: String,
    /// The whole file, bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// The room it is posted into (its id), sent only to a peer that
    /// granted [`crate::peer::ROOM_FILES_CAPABILITY`]. The receiver shows
    /// it in that room only if both it and the sender are members there
    /// by its own account; otherwise it is a file from the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

impl FileOffer {
    pub fn validate(&self) -> Result<(), TransferFrameError> {
        check_common(&self.id, &self.name, self.size, &self.sha256)?;
        match &self.room {
            Some(r) if !crate::peer::valid_id(r) => {
                Err(TransferFrameError::BadArguments("offer room".into()))
            }
            _ => Ok(()),
        }
    }
}

/// The meta section of the binary exchange between Roundtable nodes.
/// `file_name` is spelled as NVFlare-compatible receivers (our own
/// `receive-file` among them) look for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeMeta {
    /// The transfer id of the offer.
    pub id: String,
    /// The sending user.
    pub sender: String,
    pub file_name: String,
    /// The whole file, bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// Where in the file this exchange's body starts.
    pub offset: u64,
}

impl ExchangeMeta {
    /// Checks every field; `body_size` is the exchange header's, which
    /// must be exactly the rest of the file.
    pub fn validate(&self, body_size: u64) -> Result<(), TransferFrameError> {
        check_common(&self.id, &self.file_name, self.size, &self.sha256)?;
        if !crate::directory::valid_name(&self.sender) {
            return Err(TransferFrameError::BadArguments("meta sender".into()));
        }
        if self.offset > self.size || self.size - self.offset != body_size {
            return Err(TransferFrameError::BadOffset {
                offset: self.offset.saturating_add(body_size),
                size: self.size,
            });
        }
        Ok(())
    }

    /// Reads a meta section: `None` if it is not ours (an NVFlare sender's
    /// empty or free-form meta).
    pub fn parse(meta: &str) -> Option<ExchangeMeta> {
        serde_json::from_str(meta).ok()
    }
}

/// The receiver's answer to an offer, or to the end of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileReply {
    /// Send from `offset` (the bytes before it are on the receiver's disk).
    Resume { offset: u64 },
    /// The whole file arrived, verified and in place: delivered.
    Done,
    /// Not accepted. `retry`: whether the same offer may succeed later
    /// (a full disk, a busy node) or never will (too large, bad name).
    Refused { reason: String, retry: bool },
}

impl FileReply {
    pub fn validate(&self) -> Result<(), TransferFrameError> {
        match self {
            FileReply::Refused { reason, .. } if reason.len() > MAX_REASON => {
                Err(TransferFrameError::BadReason)
            }
            _ => Ok(()),
        }
    }
}

/// A frame of a transfer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferFrame {
    /// `FILEQ <len> <id>` + JSON [`FileOffer`] (whose id must match).
    Offer(FileOffer),
    /// `FILEREPLY <len> <id>` + JSON [`FileReply`].
    Reply { id: String, reply: FileReply },
    /// `FILEDATA <len>` + the next bytes of the binary exchange.
    Data(Vec<u8>),
    /// `FILECHUNK <len> <id> <at>` + bytes of the exchange of transfer
    /// `id` from stream position `at` (through the relay).
    Chunk { id: String, at: u64, data: Vec<u8> },
    /// `FILEWIN <id> <upto>`: the receiver takes the stream of transfer
    /// `id` up to position `upto` (through the relay).
    Window { id: String, upto: u64 },
}

impl TransferFrame {
    pub const OFFER: &'static str = "FILEQ";
    pub const REPLY: &'static str = "FILEREPLY";
    pub const DATA: &'static str = "FILEDATA";
    pub const CHUNK: &'static str = "FILECHUNK";
    pub const WINDOW: &'static str = "FILEWIN";

    /// Whether a frame of type `kind` belongs to a transfer connection.
    pub fn is_transfer(kind: &str) -> bool {
        Self::is_relayed(kind) || kind == Self::DATA
    }

    /// Whether a frame of type `kind` belongs to a transfer through the
    /// relay (each such frame names its transfer).
    pub fn is_relayed(kind: &str) -> bool {
        matches!(kind, Self::OFFER | Self::REPLY | Self::CHUNK | Self::WINDOW)
    }

    /// The transfer a relayed frame names (its first argument), unchecked.
    pub fn named_id(f: &Frame) -> Option<&str> {
        Self::is_relayed(&f.kind)
            .then(|| f.args.first().map(String::as_str))
            .flatten()
    }

    /// Interprets a decoded frame; every field is checked.
    pub fn parse(f: &Frame) -> Result<TransferFrame, TransferFrameError> {
        let bad = || TransferFrameError::BadArguments(f.kind.clone());
        match f.kind.as_str() {
            Self::DATA => {
                if !f.args.is_empty() {
                    return Err(bad());
                }
                if f.payload.len() > MAX_DATA {
                    return Err(TransferFrameError::TooLarge {
                        kind: Self::DATA,
                        len: f.payload.len(),
                        max: MAX_DATA,
                    });
                }
                Ok(TransferFrame::Data(f.payload.clone()))
            }
            Self::CHUNK => {
                let [id, at] = f.args.as_slice() else {
                    return Err(bad());
                };
                if !valid_id(id) {
                    return Err(TransferFrameError::BadId(id.clone()));
                }
                if f.payload.len() > MAX_DATA {
                    return Err(TransferFrameError::TooLarge {
                        kind: Self::CHUNK,
                        len: f.payload.len(),
                        max: MAX_DATA,
                    });
                }
                let at: u64 = at.parse().map_err(|_| bad())?;
                if at.saturating_add(f.payload.len() as u64) > MAX_STREAM {
                    return Err(bad());
                }
                Ok(TransferFrame::Chunk {
                    id: id.clone(),
                    at,
                    data: f.payload.clone(),
                })
            }
            Self::WINDOW => {
                let [id, upto] = f.args.as_slice() else {
                    return Err(bad());
                };
                if !valid_id(id) {
                    return Err(TransferFrameError::BadId(id.clone()));
                }
                let upto: u64 = upto.parse().map_err(|_| bad())?;
                if upto > MAX_STREAM + RELAY_WINDOW || !f.payload.is_empty() {
                    return Err(bad());
                }
                Ok(TransferFrame::Window {
                    id: id.clone(),
                    upto,
                })
            }
            kind @ (Self::OFFER | Self::REPLY) => {
                let kind: &'static str = if kind == Self::OFFER {
                    Self::OFFER
                } else {
                    Self::REPLY
                };
                let [id] = f.args.as_slice() else {
                    return Err(bad());
                };
                if !valid_id(id) {
                    return Err(TransferFrameError::BadId(id.clone()));
                }
                if f.payload.len() > MAX_JSON {
                    return Err(TransferFrameError::TooLarge {
                        kind,
                        len: f.payload.len(),
                        max: MAX_JSON,
                    });
                }
                let json_err = |e: serde_json::Error| TransferFrameError::BadJson {
                    kind,
                    why: e.to_string(),
                };
                if kind == Self::OFFER {
                    let offer: FileOffer = serde_json::from_slice(&f.payload).map_err(json_err)?;
                    offer.validate()?;
                    if &offer.id != id {
                        return Err(TransferFrameError::IdMismatch {
                            reply: id.clone(),
                            offer: offer.id,
                        });
                    }
                    Ok(TransferFrame::Offer(offer))
                } else {
                    let reply: FileReply = serde_json::from_slice(&f.payload).map_err(json_err)?;
                    reply.validate()?;
                    Ok(TransferFrame::Reply {
                        id: id.clone(),
                        reply,
                    })
                }
            }
            other => Err(TransferFrameError::Unknown(other.to_owned())),
        }
    }

    /// The frame to send.
    pub fn to_frame(&self) -> Frame {
        match self {
            TransferFrame::Offer(o) => Frame::new(
                Self::OFFER,
                [o.id.clone()],
                serde_json::to_vec(o).expect("an offer serializes"),
            ),
            TransferFrame::Reply { id, reply } => Frame::new(
                Self::REPLY,
                [id.clone()],
                serde_json::to_vec(reply).expect("a reply serializes"),
            ),
            TransferFrame::Data(bytes) => Frame::bare(Self::DATA, bytes.clone()),
            TransferFrame::Chunk { id, at, data } => {
                Frame::new(Self::CHUNK, [id.clone(), at.to_string()], data.clone())
            }
            TransferFrame::Window { id, upto } => {
                Frame::new(Self::WINDOW, [id.clone(), upto.to_string()], Vec::new())
            }
        }
    }
}

/// One frame of a sealed plaintext on a transfer connection, as
/// [`split_plaintext`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A valid `FILEDATA` frame's payload: these bytes of the plaintext,
    /// left in place (a file's bytes are not copied out of the record they
    /// were decrypted into).
    Data(std::ops::Range<usize>),
    /// Any other frame, decoded.
    Frame(Frame),
}

/// The frames of a sealed plaintext, like `secure::unpack` (one or more
/// whole frames within `limits`, nothing left over), except that the
/// payload of a `FILEDATA` frame that [`TransferFrame::parse`] would take
/// is given as its place in `plaintext` instead of a copy. Every other
/// frame (a `FILEDATA` with arguments or too large among them) comes
/// decoded, for `parse` to judge.
pub fn split_plaintext(
    plaintext: &[u8],
    limits: &crate::frame::Limits,
) -> Result<Vec<Piece>, crate::frame::FrameError> {
    use crate::frame::{decode_head, FrameError};
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < plaintext.len() {
        let rest = &plaintext[at..];
        // A plaintext is whole frames: one cut short never completes.
        let head = decode_head(rest, limits)?.ok_or(FrameError::BadLength)?;
        if head.kind == TransferFrame::DATA && head.args().next().is_none() && head.len <= MAX_DATA
        {
            pieces.push(Piece::Data(at + head.start..at + head.end()));
        } else {
            pieces.push(Piece::Frame(Frame {
                kind: head.kind.to_owned(),
                args: head.args().map(str::to_owned).collect(),
                payload: rest[head.start..head.end()].to_vec(),
            }));
        }
        at += head.end();
    }
    if pieces.is_empty() {
        return Err(FrameError::EmptyType);
    }
    Ok(pieces)
}

/// Fuzz entry point (also run by the proptests below): decoding arbitrary
/// bytes into frames and parsing them as transfer frames and metas must
/// never panic, and whatever parses must re-encode to a frame that parses
/// to the same value.
pub fn decode_and_parse(data: &[u8]) {
    use crate::frame::{decode_all, Limits};
    let limits = Limits {
        max_header: 256,
        max_payload: MAX_PLAINTEXT,
    };
    if let Ok(meta) = std::str::from_utf8(data) {
        if let Some(m) = ExchangeMeta::parse(meta) {
            let _ = m.validate(m.size.saturating_sub(m.offset));
        }
    }
    // Splitting a plaintext agrees with unpacking it and parsing each frame.
    let split = split_plaintext(data, &limits);
    let unpacked = crate::secure::unpack(data, &limits);
    assert_eq!(split.is_ok(), unpacked.is_ok(), "split and unpack disagree");
    if let (Ok(pieces), Ok(frames)) = (split, unpacked) {
        assert_eq!(pieces.len(), frames.len());
        for (p, f) in pieces.iter().zip(&frames) {
            match p {
                Piece::Data(r) => assert_eq!(
                    TransferFrame::parse(f),
                    Ok(TransferFrame::Data(data[r.clone()].to_vec()))
                ),
                Piece::Frame(g) => {
                    assert_eq!(g, f);
                    assert!(!matches!(
                        TransferFrame::parse(g),
                        Ok(TransferFrame::Data(_))
                    ));
                }
            }
        }
    }
    let Ok((frames, _)) = decode_all(data, &limits) else {
        return;
    };
    for f in &frames {
        let Ok(parsed) = TransferFrame::parse(f) else {
            continue;
        };
        let again = TransferFrame::parse(&parsed.to_frame()).expect("a parsed frame re-parses");
        assert_eq!(again, parsed);
        if let TransferFrame::Data(d) = &parsed {
            assert!(d.len() <= MAX_DATA);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "00112233445566778899aabbccddeeff";
    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn offer() -> FileOffer {
        FileOffer {
            id: ID.into(),
            name: "model.pt".into(),
            size: 10,
            sha256: SHA.into(),
            room: None,
        }
    }

    #[test]
    fn frames_round_trip() {
        for f in [
            TransferFrame::Offer(offer()),
            TransferFrame::Reply {
                id: ID.into(),
                reply: FileReply::Resume { offset: 7 },
            },
            TransferFrame::Reply {
                id: ID.into(),
                reply: FileReply::Done,
            },
            TransferFrame::Reply {
                id: ID.into(),
                reply: FileReply::Refused {
                    reason: "no space left".into(),
                    retry: true,
                },
            },
            TransferFrame::Data(vec![1, 2, 3]),
            TransferFrame::Data(vec![0; MAX_DATA]),
            TransferFrame::Chunk {
                id: ID.into(),
                at: 0,
                data: vec![],
            },
            TransferFrame::Chunk {
                id: ID.into(),
                at: MAX_SIZE,
                data: vec![7; MAX_DATA],
            },
            TransferFrame::Window {
                id: ID.into(),
                upto: RELAY_WINDOW,
            },
        ] {
            let wire = f.to_frame().encode().unwrap();
            let (frames, used) = crate::frame::decode_all(
                &wire,
                &crate::frame::Limits {
                    max_header: 256,
                    max_payload: MAX_PLAINTEXT,
                },
            )
            .unwrap();
            assert_eq!(used, wire.len());
            assert_eq!(TransferFrame::parse(&frames[0]).unwrap(), f);
        }
    }

    #[test]
    fn the_reply_json_is_stable() {
        let r = serde_json::to_string(&FileReply::Resume { offset: 5 }).unwrap();
        assert_eq!(r, r#"{"status":"resume","offset":5}"#);
        let r = serde_json::to_string(&FileReply::Done).unwrap();
        assert_eq!(r, r#"{"status":"done"}"#);
    }

    #[test]
    fn an_offer_names_its_room_only_when_it_has_one() {
        // A direct file's offer is what nodes of before room files read
        // (they refuse unknown fields).
        let plain = serde_json::to_string(&offer()).unwrap();
        assert!(!plain.contains("room"), "{plain}");
        let mut o = offer();
        o.room = Some("r0123abcd".into());
        let f = TransferFrame::Offer(o.clone()).to_frame();
        assert!(String::from_utf8_lossy(&f.payload).contains(r#""room":"r0123abcd""#));
        assert_eq!(TransferFrame::parse(&f).unwrap(), TransferFrame::Offer(o));
    }

    #[test]
    fn relayed_chunks_and_windows_are_checked() {
        let bad = |kind: &str, args: &[&str], payload: Vec<u8>| {
            TransferFrame::parse(&Frame::new(kind, args.iter().copied(), payload)).is_err()
        };
        // No id, a bad id, a position that is not a number or runs past
        // any stream, a chunk over the limit, a window with a body.
        assert!(bad("FILECHUNK", &["0"], vec![1]));
        assert!(bad("FILECHUNK", &["XYZ", "0"], vec![1]));
        assert!(bad("FILECHUNK", &[ID, "-1"], vec![1]));
        assert!(bad("FILECHUNK", &[ID, "1e3"], vec![1]));
        assert!(bad("FILECHUNK", &[ID, &MAX_STREAM.to_string()], vec![1]));
        assert!(bad("FILECHUNK", &[ID, &u64::MAX.to_string()], vec![1]));
        assert!(bad("FILECHUNK", &[ID, "0"], vec![0; MAX_DATA + 1]));
        assert!(bad("FILEWIN", &[ID], vec![]));
        assert!(bad("FILEWIN", &[ID, "5"], vec![1]));
        assert!(bad("FILEWIN", &[ID, &u64::MAX.to_string()], vec![]));
        // Each names its transfer.
        let f = TransferFrame::Window {
            id: ID.into(),
            upto: 9,
        }
        .to_frame();
        assert_eq!(TransferFrame::named_id(&f), Some(ID));
        assert_eq!(
            TransferFrame::named_id(&TransferFrame::Data(vec![1]).to_frame()),
            None
        );
        assert!(TransferFrame::is_relayed("FILECHUNK") && !TransferFrame::is_relayed("FILEDATA"));
    }

    #[test]
    fn bad_offers_are_refused() {
        let frame =
            |o: &FileOffer, id: &str| Frame::new("FILEQ", [id], serde_json::to_vec(o).unwrap());
        let mut o = offer();
        o.name = "../etc/passwd".into();
        assert!(matches!(
            TransferFrame::parse(&frame(&o, ID)),
            Err(TransferFrameError::BadName(_))
        ));
        let mut o = offer();
        o.sha256 = "ABC".into();
        assert!(matches!(
            TransferFrame::parse(&frame(&o, ID)),
            Err(TransferFrameError::BadHash(_))
        ));
        let mut o = offer();
        o.size = MAX_SIZE + 1;
        assert!(matches!(
            TransferFrame::parse(&frame(&o, ID)),
            Err(TransferFrameError::BadSize(_))
        ));
        let other = "ffffffffffffffffffffffffffffffff";
        assert!(matches!(
            TransferFrame::parse(&frame(&offer(), other)),
            Err(TransferFrameError::IdMismatch { .. })
        ));
        assert!(matches!(
            TransferFrame::parse(&frame(&offer(), "xyz")),
            Err(TransferFrameError::BadId(_))
        ));
        let big = Frame::bare("FILEDATA", vec![0; MAX_DATA + 1]);
        assert!(matches!(
            TransferFrame::parse(&big),
            Err(TransferFrameError::TooLarge { .. })
        ));
        let mut o = offer();
        o.room = Some("no spaces".into());
        assert!(matches!(
            TransferFrame::parse(&frame(&o, ID)),
            Err(TransferFrameError::BadArguments(_))
        ));
        let unknown = Frame::new("FILEQ", [ID], br#"{"id":"x","extra":1}"#.to_vec());
        assert!(matches!(
            TransferFrame::parse(&unknown),
            Err(TransferFrameError::BadJson { .. })
        ));
    }

    #[test]
    fn names_that_could_escape_or_hide_are_refused() {
        for good in ["model.pt", "a b (1).txt", "данные.csv", "x"] {
            assert!(valid_file_name(good), "{good}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a\0b", "a\nb",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert!(!valid_file_name(&"a".repeat(MAX_NAME + 1)));
    }

    #[test]
    fn meta_must_describe_exactly_the_rest_of_the_file() {
        let m = ExchangeMeta {
            id: ID.into(),
            sender: "alice".into(),
            file_name: "m.bin".into(),
            size: 100,
            sha256: SHA.into(),
            offset: 40,
        };
        assert_eq!(m.validate(60), Ok(()));
        assert!(matches!(
            m.validate(61),
            Err(TransferFrameError::BadOffset { .. })
        ));
        assert!(matches!(
            m.validate(59),
            Err(TransferFrameError::BadOffset { .. })
        ));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(ExchangeMeta::parse(&json), Some(m));
        // NVFlare's own metas are not ours.
        assert_eq!(ExchangeMeta::parse(""), None);
        assert_eq!(ExchangeMeta::parse("job 7"), None);
        assert_eq!(ExchangeMeta::parse(r#"{"file_name":"x"}"#), None);
    }

    #[test]
    fn a_plaintext_splits_into_data_in_place_and_other_frames_decoded() {
        let limits = crate::frame::Limits::default();
        let o = FileOffer {
            id: ID.into(),
            name: "a.bin".into(),
            size: 9,
            sha256: SHA.into(),
            room: None,
        };
        let offer = TransferFrame::Offer(o).to_frame();
        let mut pt = offer.encode().unwrap();
        let data_at = pt.len() + "FILEDATA 5\n".len();
        pt.extend(
            TransferFrame::Data(b"hello".to_vec())
                .to_frame()
                .encode()
                .unwrap(),
        );
        pt.extend(TransferFrame::Data(Vec::new()).to_frame().encode().unwrap());
        let with_arg = Frame::new(TransferFrame::DATA, ["x"], "oops");
        pt.extend(with_arg.encode().unwrap());
        let big = Frame::bare(TransferFrame::DATA, vec![7; MAX_DATA + 1]);
        pt.extend(big.encode().unwrap());
        let pieces = split_plaintext(&pt, &limits).unwrap();
        let end = pt.len() - big.encode().unwrap().len() - with_arg.encode().unwrap().len();
        assert_eq!(
            pieces,
            vec![
                Piece::Frame(offer),
                Piece::Data(data_at..data_at + 5),
                Piece::Data(end..end),
                Piece::Frame(with_arg),
                Piece::Frame(big),
            ]
        );
        assert_eq!(&pt[data_at..data_at + 5], b"hello");
        // Cut short, or empty: not a plaintext.
        assert!(split_plaintext(&pt[..pt.len() - 1], &limits).is_err());
        assert!(split_plaintext(b"", &limits).is_err());
    }

    proptest! {
        #[test]
        fn decode_and_parse_never_panics(
            name in "[a-z]{1,12}\\.[a-z]{1,3}",
            size in 0u64..1_000_000,
            room in proptest::option::of("[a-z0-9]{1,70}"),
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            noise in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let o = FileOffer { id: ID.into(), name, size, sha256: SHA.into(), room };
            let mut wire = TransferFrame::Offer(o).to_frame().encode().unwrap();
            wire.extend(TransferFrame::Data(data).to_frame().encode().unwrap());
            decode_and_parse(&wire);
            wire.extend_from_slice(&noise);
            decode_and_parse(&wire);
            decode_and_parse(&noise);
        }
    }
}
