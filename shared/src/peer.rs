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

use crate::frame::Frame;

/// The capability token of this extension.
pub const CAPABILITY: &str = "roundtable/1";

/// A frame of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// Liveness test; `roundtable` asks whether the extension is spoken.
    Ping {
        roundtable: bool,
    },
    Pong {
        roundtable: bool,
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
        let cap = |args: &[String]| args.iter().any(|a| a == CAPABILITY);
        match f.kind.as_str() {
            "PING" => Ok(PeerFrame::Ping {
                roundtable: cap(&f.args),
            }),
            "PONG" => Ok(PeerFrame::Pong {
                roundtable: cap(&f.args),
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
        let cap = |on: bool| {
            if on {
                vec![CAPABILITY.to_owned()]
            } else {
                vec![]
            }
        };
        match self {
            PeerFrame::Ping { roundtable } => Frame::new("PING", cap(*roundtable), ""),
            PeerFrame::Pong { roundtable } => Frame::new("PONG", cap(*roundtable), ""),
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
            PeerFrame::Pong { roundtable: false }
                .to_frame()
                .encode()
                .unwrap(),
            b"PONG 0\n"
        );
        assert_eq!(
            PeerFrame::Ping { roundtable: true }
                .to_frame()
                .encode()
                .unwrap(),
            b"PING 0 roundtable/1\n"
        );
    }

    #[test]
    fn every_frame_round_trips() {
        for f in [
            PeerFrame::Ping { roundtable: false },
            PeerFrame::Ping { roundtable: true },
            PeerFrame::Pong { roundtable: true },
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
