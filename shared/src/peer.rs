//! The peer-to-peer chat protocol (protocols.md §1) and Roundtable's
//! extension of it, as typed frames.
//!
//! Classic: `MESSAGE <len> <sender>` + text, `PING 0` → `PONG 0`.
//!
//! Extension, negotiated so a classic peer never sees it unasked: a
//! Roundtable node pings with `PING 0 roundtable/1`; a classic peer answers a
//! plain `PONG 0` (it ignores arguments), a Roundtable node `PONG 0
//! roundtable/1`. Only then does the caller use `MSG <len> <sender> <id>`
//! (a message with an id), answered by `MSGACK 0 <id>` once the receiver
//! has stored it. Receivers drop duplicate ids, so retries are harmless.
//!
//! The secure overlay (issue 13) is a second capability,
//! `roundtable-secure/1` ([`crate::secure::PROTOCOL`]): `PING 0
//! roundtable/1 roundtable-secure/1`, answered with the capabilities both
//! sides have. When both have it, the caller's next frame is the Noise
//! handshake's first `HELLO` (see [`crate::secure`]) and every later frame
//! on the connection is a `SEC` frame whose sealed plaintext is one frame
//! of this module (`MSG`, `MSGACK`) or a request frame (`REQ`, `REP`), packed
//! with [`crate::secure::pack`]. Only the
//! capability exchange itself is ever in clear between Roundtable nodes.
//!
//! A third, `roundtable-aesgcm/1` ([`crate::secure::AESGCM_CAPABILITY`]),
//! says the side does AES in hardware; when both grant it the channel runs
//! AES-256-GCM instead of ChaCha20-Poly1305 (the first `HELLO` names it).
//! Stripping it on the way only leaves the channel on ChaCha20-Poly1305,
//! and adding it makes the handshake fail: neither is a weaker channel.
//!
//! A fourth, `roundtable-roomfiles/1` ([`ROOM_FILES_CAPABILITY`]), says the
//! side takes a file offered into a room (`FileOffer::room`); a node that
//! does not grant it is offered the same file without the room, as a file
//! from its sender.

use crate::frame::Frame;

/// The capability token of this extension.
pub const CAPABILITY: &str = "roundtable/1";

/// The capability token of files offered into a room.
pub const ROOM_FILES_CAPABILITY: &str = "roundtable-roomfiles/1";

/// What a `PING` asks for and a `PONG` grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `roundtable/1`: `MSG` with ids and `MSGACK`.
    pub roundtable: bool,
    /// `roundtable-secure/1`: the Noise channel.
    pub secure: bool,
    /// `roundtable-aesgcm/1` ([`crate::secure::AESGCM_CAPABILITY`]): the
    /// channel may run AES-256-GCM, which this side does in hardware.
    pub aesgcm: bool,
    /// `roundtable-roomfiles/1` ([`ROOM_FILES_CAPABILITY`]): a file offer
    /// may name a room.
    pub room_files: bool,
}

impl Capabilities {
    /// A classic eurechat peer's: none.
    pub const NONE: Capabilities = Capabilities {
        roundtable: false,
        secure: false,
        aesgcm: false,
        room_files: false,
    };
    /// Everything this build speaks.
    pub const ALL: Capabilities = Capabilities {
        roundtable: true,
        secure: true,
        aesgcm: true,
        room_files: true,
    };

    /// The cipher of a secure channel on a link with these capabilities
    /// (those both sides granted): AES-256-GCM only if both do it in
    /// hardware.
    pub fn cipher(self) -> crate::secure::Cipher {
        if self.aesgcm {
            crate::secure::Cipher::AesGcm
        } else {
            crate::secure::Cipher::ChaChaPoly
        }
    }

    /// What both `self` and `other` have.
    pub fn and(self, other: Capabilities) -> Capabilities {
        Capabilities {
            roundtable: self.roundtable && other.roundtable,
            secure: self.secure && other.secure,
            aesgcm: self.aesgcm && other.aesgcm,
            room_files: self.room_files && other.room_files,
        }
    }

    fn parse(args: &[String]) -> Capabilities {
        Capabilities {
            roundtable: args.iter().any(|a| a == CAPABILITY),
            secure: args.iter().any(|a| a == crate::secure::PROTOCOL),
            aesgcm: args.iter().any(|a| a == crate::secure::AESGCM_CAPABILITY),
            room_files: args.iter().any(|a| a == ROOM_FILES_CAPABILITY),
        }
    }

    fn args(self) -> Vec<String> {
        let mut v = Vec::new();
        if self.roundtable {
            v.push(CAPABILITY.to_owned());
        }
        if self.secure {
            v.push(crate::secure::PROTOCOL.to_owned());
        }
        if self.aesgcm {
            v.push(crate::secure::AESGCM_CAPABILITY.to_owned());
        }
        if self.room_files {
            v.push(ROOM_FILES_CAPABILITY.to_owned());
        }
        v
    }
}

/// A frame of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// Liveness test; `caps` asks which extensions are spoken.
    Ping {
        caps: Capabilities,
    },
    Pong {
        caps: Capabilities,
    },
    /// A classic chat message.
    Message {
        sender: String,
        text: String,
    },
    /// A chat message with an id, to be acknowledged.
    Msg {
        sender: String,
        id: String,
        text: String,
    },
    /// The message `id` is stored at the receiver.
    MsgAck {
        id: String,
    },
}

/// Why a frame is not a valid peer frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("I did not understand the message {0}")]
    Unknown(String),
    #[error("message {0} has the wrong arguments")]
    BadArguments(String),
    #[error("message text is not UTF-8")]
    NotUtf8,
}

/// Whether `id` is a valid message id: 1 to 64 of `[0-9A-Za-z_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PeerFrame {
    /// Interprets a decoded frame.
    pub fn parse(f: &Frame) -> Result<PeerFrame, PeerError> {
        let bad = || PeerError::BadArguments(f.kind.clone());
        let text = || String::from_utf8(f.payload.clone()).map_err(|_| PeerError::NotUtf8);
        match f.kind.as_str() {
            "PING" => Ok(PeerFrame::Ping {
                caps: Capabilities::parse(&f.args),
            }),
            "PONG" => Ok(PeerFrame::Pong {
                caps: Capabilities::parse(&f.args),
            }),
            "MESSAGE" => match f.args.as_slice() {
                [sender] => Ok(PeerFrame::Message {
                    sender: sender.clone(),
                    text: text()?,
                }),
                _ => Err(bad()),
            },
            "MSG" => match f.args.as_slice() {
                [sender, id] if valid_id(id) => Ok(PeerFrame::Msg {
                    sender: sender.clone(),
                    id: id.clone(),
                    text: text()?,
                }),
                _ => Err(bad()),
            },
            "MSGACK" => match f.args.as_slice() {
                [id] if valid_id(id) => Ok(PeerFrame::MsgAck { id: id.clone() }),
                _ => Err(bad()),
            },
            other => Err(PeerError::Unknown(other.to_owned())),
        }
    }

    /// The frame to send.
    pub fn to_frame(&self) -> Frame {
        match self {
            PeerFrame::Ping { caps } => Frame::new("PING", caps.args(), ""),
            PeerFrame::Pong { caps } => Frame::new("PONG", caps.args(), ""),
            PeerFrame::Message { sender, text } => {
                Frame::new("MESSAGE", [sender.as_str()], text.as_bytes())
            }
            PeerFrame::Msg { sender, id, text } => {
                Frame::new("MSG", [sender.as_str(), id.as_str()], text.as_bytes())
            }
            PeerFrame::MsgAck { id } => Frame::new("MSGACK", [id.as_str()], ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_frames_are_exactly_the_original() {
        let m = PeerFrame::Message {
            sender: "alice".into(),
            text: "Hello world!".into(),
        };
        assert_eq!(
            m.to_frame().encode().unwrap(),
            b"MESSAGE 12 alice\nHello world!"
        );
        assert_eq!(
            PeerFrame::Pong {
                caps: Capabilities::NONE
            }
            .to_frame()
            .encode()
            .unwrap(),
            b"PONG 0\n"
        );
        assert_eq!(
            PeerFrame::Ping {
                caps: Capabilities {
                    roundtable: true,
                    secure: false,
                    aesgcm: false,
                    room_files: false,
                }
            }
            .to_frame()
            .encode()
            .unwrap(),
            b"PING 0 roundtable/1\n"
        );
        assert_eq!(
            PeerFrame::Ping {
                caps: Capabilities::ALL
            }
            .to_frame()
            .encode()
            .unwrap(),
            b"PING 0 roundtable/1 roundtable-secure/1 roundtable-aesgcm/1 roundtable-roomfiles/1\n"
        );
        // What a node of before the AES-GCM capability asks: granted as is.
        assert_eq!(
            PeerFrame::parse(&Frame::new(
                "PING",
                ["roundtable/1", "roundtable-secure/1"],
                ""
            )),
            Ok(PeerFrame::Ping {
                caps: Capabilities {
                    roundtable: true,
                    secure: true,
                    aesgcm: false,
                    room_files: false,
                }
            })
        );
        // A classic peer's PONG grants nothing, whatever was asked.
        assert_eq!(
            PeerFrame::parse(&Frame::bare("PONG", "")),
            Ok(PeerFrame::Pong {
                caps: Capabilities::NONE
            })
        );
    }

    #[test]
    fn every_frame_round_trips() {
        for f in [
            PeerFrame::Ping {
                caps: Capabilities::NONE,
            },
            PeerFrame::Ping {
                caps: Capabilities::ALL,
            },
            PeerFrame::Pong {
                caps: Capabilities {
                    roundtable: true,
                    secure: false,
                    aesgcm: false,
                    room_files: false,
                },
            },
            PeerFrame::Message {
                sender: "bob".into(),
                text: "hé\nthere".into(),
            },
            PeerFrame::Msg {
                sender: "bob".into(),
                id: "0123abcd".into(),
                text: "hi".into(),
            },
            PeerFrame::MsgAck {
                id: "0123abcd".into(),
            },
        ] {
            assert_eq!(PeerFrame::parse(&f.to_frame()), Ok(f));
        }
    }

    #[test]
    fn bad_frames_are_named() {
        let f = Frame::new("MSG", ["bob"], "x");
        assert_eq!(
            PeerFrame::parse(&f),
            Err(PeerError::BadArguments("MSG".into()))
        );
        let f = Frame::new("MSGACK", ["no spaces but bad/char"], "");
        assert!(PeerFrame::parse(&f).is_err());
        let f = Frame::new("MESSAGE", ["bob"], vec![0xff]);
        assert_eq!(PeerFrame::parse(&f), Err(PeerError::NotUtf8));
        let f = Frame::bare("HELLO", "");
        assert_eq!(
            PeerFrame::parse(&f).unwrap_err().to_string(),
            "I did not understand the message HELLO"
        );
    }
}
