//! Our connection to one peer, whatever carries it: a plain connection to a
//! classic eurechat peer, the Noise channel over a connection to a
//! Roundtable node's chat port, or the Noise channel relayed by the
//! directory. The delivery worker (`chat.rs`) writes and reads chat frames
//! through a [`Link`] and does not care which.
//!
//! Opening a direct link: connect to the address the directory lists,
//! `PING 0 roundtable/1 roundtable-secure/1`; if the answer grants the
//! secure capability, run the handshake expecting the key [`Trust`] names
//! (pinned, else the directory's), and from then on every frame is sealed.
//! A node that answers without the secure capability is a classic peer,
//! unless [`Trust`] knows it as a Roundtable node: then it is a downgrade
//! (someone else at its address, or a tampered `PONG`) and refused, so that
//! nothing meant for a Roundtable node ever leaves in clear.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roundtable_shared::api::PeerPath;
use roundtable_shared::frame::{Frame, Head, Limits};
use roundtable_shared::peer::{Capabilities, PeerFrame};
use roundtable_shared::secure::{pack, unpack, Sealed, SecureError, SecureFrame};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::relay::RelayLink;
use super::trust::{Trust, Verdict};
use crate::framing::{Connection, FramingError};
use crate::overlay::channel::{self, ChannelConfig, ChannelError, Cipher, Session};
use crate::overlay::identity::Identity;
use crate::store::StoreError;

/// What every secure link of this node needs.
#[derive(Clone)]
pub struct Overlay {
    pub me: String,
    pub identity: Arc<Identity>,
    pub trust: Trust,
    pub channel: ChannelConfig,
    /// Refuse classic peers (`--require-secure`).
    pub require_secure: bool,
    /// [`ChatConfig::secure`](super::chat::ChatConfig::secure): false only
    /// in the benchmark's plain baseline.
    pub secure: bool,
}

impl Overlay {
    /// What this node offers in `PING` and grants in `PONG`.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            roundtable: true,
            secure: self.secure,
            aesgcm: self.secure && self.channel.aes_gcm,
            // Files travel only inside the secure channel.
            room_files: self.secure,
        }
    }
}

/// Why a link could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{peer}'s identity key changed: messages are held until the new key is accepted")]
    KeyChanged { peer: String },
    #[error("{peer} is a Roundtable node but answered without the secure channel: refused")]
    Downgrade { peer: String },
    #[error("{peer} is a classic eurechat peer, and this node accepts secure peers only")]
    NotSecure { peer: String },
    #[error("relay: {0}")]
    Relay(String),
}

impl LinkError {
    /// Whether retrying soon is pointless until the user acts (accepts a
    /// key) or the peer changes.
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            LinkError::KeyChanged { .. }
                | LinkError::Downgrade { .. }
                | LinkError::NotSecure { .. }
        )
    }
}

/// The limits of a chat frame (also inside a sealed record).
pub fn chat_limits() -> Limits {
    Limits {
        max_payload: roundtable_shared::api::MAX_TEXT + 1024,
        ..Limits::default()
    }
}

enum Carrier {
    Plain(Connection<TcpStream>),
    Secure(Connection<TcpStream>, Box<Session>),
    Relayed(RelayLink),
}

/// An open link to a peer.
pub struct Link {
    carrier: Carrier,
    /// What the peer speaks.
    pub caps: Capabilities,
    pub path: PeerPath,
    /// Frames opened but not yet read.
    pending: VecDeque<Frame>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Link {
    /// Whether frames on this link are sealed (and what arrives is proven
    /// to come from the peer).
    pub fn secure(&self) -> bool {
        !matches!(self.carrier, Carrier::Plain(_))
    }

    /// The cipher of a direct secure link (None on a plain or relayed one).
    pub fn direct_cipher(&self) -> Option<Cipher> {
        match &self.carrier {
            Carrier::Secure(_, session) => Some(session.cipher()),
            _ => None,
        }
    }

    /// The connection and session of a direct secure link, for a caller
    /// that seals its own frames (a file's bytes: `transfer::outbound`).
    /// Frames opened and not yet read stay queued for [`recv`](Self::recv).
    pub fn direct_secure(&mut self) -> Option<(&mut Connection<TcpStream>, &mut Session)> {
        match &mut self.carrier {
            Carrier::Secure(conn, session) => Some((conn, session)),
            _ => None,
        }
    }

    /// Marks the link as broken (acknowledgements stopped): a relayed
    /// channel is then dropped with it, so the next link makes a new one.
    pub fn fail(&mut self) {
        if let Carrier::Relayed(r) = &mut self.carrier {
            r.fail();
        }
    }

    /// A relayed link, once its session is established.
    pub fn relayed(link: RelayLink) -> Link {
        Link {
            carrier: Carrier::Relayed(link),
            caps: Capabilities::ALL,
            path: PeerPath::Relayed,
            pending: VecDeque::new(),
            _permit: None,
        }
    }

    /// Writes `frames` (sealed on a secure link) within `within`.
    pub async fn send(&mut self, frames: &[Frame], within: Duration) -> Result<(), LinkError> {
        match &mut self.carrier {
            Carrier::Plain(conn) => conn.write_frames_within(frames, within).await?,
            Carrier::Secure(conn, session) => {
                let sealed = seal_all(session, frames)?;
                conn.write_frames_within(&sealed, within).await?;
            }
            Carrier::Relayed(r) => r.send(frames, within).await?,
        }
        Ok(())
    }

    /// The next frame from the peer, waiting at most `within`. On a secure
    /// link a frame that fails its checks (tampered, replayed, misrouted)
    /// is dropped and the next one read.
    pub async fn recv(&mut self, within: Duration) -> Result<Frame, LinkError> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(f);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match &mut self.carrier {
                Carrier::Plain(conn) => {
                    return conn
                        .read_frame_within(left)
                        .await?
                        .ok_or(LinkError::Framing(FramingError::Truncated));
                }
                Carrier::Secure(conn, session) => {
                    let f = conn
                        .read_frame_within(left)
                        .await?
                        .ok_or(LinkError::Framing(FramingError::Truncated))?;
                    self.pending.extend(open_frame(session, f)?);
                }
                Carrier::Relayed(r) => {
                    let f = r.recv(left).await?;
                    self.pending.push_back(f);
                }
            }
            if let Some(f) = self.pending.pop_front() {
                return Ok(f);
            }
        }
    }

    /// A frame already received, without waiting.
    pub fn buffered(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(Some(f));
            }
            match &mut self.carrier {
                Carrier::Plain(conn) => return Ok(conn.buffered_frame()?),
                Carrier::Secure(conn, session) => match conn.buffered_frame()? {
                    Some(f) => self.pending.extend(open_frame(session, f)?),
                    None => return Ok(None),
                },
                Carrier::Relayed(r) => return Ok(r.try_recv()),
            }
        }
    }
}

/// Seals `frames` into as few `SEC` frames as fit.
pub fn seal_all(session: &mut Session, frames: &[Frame]) -> Result<Vec<Frame>, ChannelError> {
    let mut out = Vec::new();
    for plaintext in pack(frames)? {
        out.push(session.seal(&plaintext)?.into_frame());
    }
    Ok(out)
}

/// Opens one frame from a secure connection into the frames it carries.
/// A frame that fails the session's checks yields nothing (logged): the
/// connection goes on. A frame that is not `SEC` at all, or a rekey that
/// was missed, ends it.
pub fn open_frame(session: &mut Session, f: Frame) -> Result<Vec<Frame>, LinkError> {
    open_sealed(session, &sealed_frame(f)?)
}

/// A frame from a secure connection as the `SEC` frame it must be.
pub fn sealed_frame(f: Frame) -> Result<Sealed, LinkError> {
    as_sealed(SecureFrame::parse_owned(f))
}

/// A frame's header decoded in place (`Connection::take_in_place`) as the
/// `SEC` frame it must be, its payload left where it lies.
pub fn sealed_head(head: &Head<'_>) -> Result<Sealed, LinkError> {
    as_sealed(SecureFrame::parse_head(head))
}

fn as_sealed(parsed: Result<SecureFrame, SecureError>) -> Result<Sealed, LinkError> {
    match parsed {
        Ok(SecureFrame::Sealed(s)) => Ok(s),
        Ok(SecureFrame::Hello(_)) => Err(ChannelError::Unexpected {
            expected: "SEC",
            got: "HELLO".into(),
        }
        .into()),
        Err(e) => Err(ChannelError::Frame(e).into()),
    }
}

/// The frames a sealed frame carries, on whatever carried it (a
/// connection, the relay). A frame that fails the session's checks yields
/// nothing (logged); a missed rekey, a used-up session or a plaintext that
/// is not whole frames is an error.
pub fn open_sealed(session: &mut Session, sealed: &Sealed) -> Result<Vec<Frame>, LinkError> {
    match open_plaintext(session, sealed)? {
        Some(plaintext) => Ok(unpack(&plaintext, &chat_limits()).map_err(ChannelError::Frame)?),
        None => Ok(Vec::new()),
    }
}

/// The plaintext of a sealed frame; `None` if it fails the session's
/// checks (logged), an error if the session cannot go on (a missed rekey,
/// used up).
pub fn open_plaintext(session: &mut Session, sealed: &Sealed) -> Result<Option<Bytes>, LinkError> {
    open_plaintext_in_place(session, sealed, &sealed.payload)
}

/// [`open_plaintext`] of a `SEC` frame whose payload is read where it lies
/// (`Connection::take_in_place`).
pub fn open_plaintext_in_place(
    session: &mut Session,
    sealed: &Sealed,
    payload: &[u8],
) -> Result<Option<Bytes>, LinkError> {
    match session.open_in_place(sealed, payload) {
        Ok(plaintext) => Ok(Some(plaintext)),
        Err(e @ (ChannelError::EpochAhead { .. } | ChannelError::Exhausted)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(peer = %session.peer(), %e, "sealed frame refused");
            Ok(None)
        }
    }
}

/// Connects to `peer` at `address:port`, negotiates, and (with a
/// Roundtable node) runs the handshake.
pub async fn open_direct(
    overlay: &Overlay,
    peer: &str,
    address: &str,
    port: u16,
    connect_timeout: Duration,
    permit: OwnedSemaphorePermit,
) -> Result<Link, LinkError> {
    let t = connect_timeout;
    let stream = tokio::time::timeout(t, TcpStream::connect((address, port)))
        .await
        .map_err(|_| FramingError::Timeout(t))?
        .map_err(FramingError::Io)?;
    stream.set_nodelay(true).map_err(FramingError::Io)?;
    let mut conn = Connection::new(stream, chat_limits()).with_read_chunk(64 * 1024);
    conn.write_frame_within(
        &PeerFrame::Ping {
            caps: overlay.capabilities(),
        }
        .to_frame(),
        t,
    )
    .await?;
    // The answer to our PING, skipping a few unrelated frames at most.
    let mut caps = None;
    for _ in 0..16 {
        let f = conn
            .read_frame_within(t)
            .await?
            .ok_or(FramingError::Truncated)?;
        if let Ok(PeerFrame::Pong { caps: c }) = PeerFrame::parse(&f) {
            caps = Some(c.and(overlay.capabilities()));
            break;
        }
    }
    let caps = caps.ok_or(FramingError::Truncated)?;
    let trust = &overlay.trust;
    if !caps.secure {
        if overlay.secure && trust.is_secure_peer(peer) {
            return Err(LinkError::Downgrade {
                peer: peer.to_owned(),
            });
        }
        if overlay.require_secure {
            return Err(LinkError::NotSecure {
                peer: peer.to_owned(),
            });
        }
        trust.classic(peer, PeerPath::Direct);
        return Ok(Link {
            carrier: Carrier::Plain(conn),
            caps,
            path: PeerPath::Direct,
            pending: VecDeque::new(),
            _permit: Some(permit),
        });
    }
    let expected = trust.expected(peer)?;
    let session = match channel::connect(
        &mut conn,
        &overlay.identity,
        &overlay.me,
        peer,
        expected,
        &overlay.channel,
        caps.cipher(),
    )
    .await
    {
        Ok(s) => s,
        Err(ChannelError::KeyMismatch { found, .. }) => {
            trust.refused(peer, &found)?;
            return Err(LinkError::KeyChanged {
                peer: peer.to_owned(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    match trust.proven(peer, session.remote_static(), PeerPath::Direct)? {
        Verdict::Trusted => {}
        Verdict::Changed { .. } => {
            return Err(LinkError::KeyChanged {
                peer: peer.to_owned(),
            })
        }
    }
    tracing::debug!(%peer, cipher = session.cipher().label(), "secure link open");
    Ok(Link {
        carrier: Carrier::Secure(conn, Box::new(session)),
        caps,
        path: PeerPath::Direct,
        pending: VecDeque::new(),
        _permit: Some(permit),
    })
}
