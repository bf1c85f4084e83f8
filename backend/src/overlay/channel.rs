//! The Noise channel between two nodes: `Noise_XX_25519_ChaChaPoly_BLAKE2s`
//! through `snow` (or `Noise_XX_25519_AESGCM_BLAKE2s` when the initiator
//! names [`Cipher::AesGcm`], which it does when both sides do AES in
//! hardware: [`hardware_aes`]), then sealed transport frames with a replay
//! check and rekeying.
//!
//! Two layers:
//! - A state machine on frames, no I/O: [`Handshake`] (three `HELLO`
//!   messages) turns into a [`Session`], whose [`Session::seal`] and
//!   [`Session::open`] make and check `SEC` frames. The caller moves the
//!   frames however it likes (a direct connection today, the directory's
//!   relay later).
//! - [`connect`] and [`accept`]: the handshake over a
//!   [`Connection`](crate::framing::Connection), bounded by a timeout.
//!
//! Both sides learn the other's static key ([`Session::remote_static`]);
//! pass the pinned key to [`Handshake::initiate`] / [`Handshake::respond`]
//! to have a mismatch refused as soon as it is known (the initiator then
//! never sends its own static key to the impostor), or compare it yourself.
//!
//! # Replay and ordering
//!
//! Every `SEC` frame's counter is the Noise nonce of its first chunk, and a
//! frame uses one nonce per chunk. The receiver accepts a frame only if its
//! counter is above every nonce already accepted: **no reordering window**.
//! Both transports the overlay runs on (a TCP connection, the directory's
//! relay over TCP sessions) deliver in order, so a frame that arrives late
//! is a replay or an attack, never ordinary traffic. Gaps are allowed: a
//! frame that was dropped or rejected (tampered) does not stall the
//! session, the next good frame is accepted.
//!
//! # Rekeying
//!
//! The sender decides ([`RekeyPolicy`]: after a number of messages or an
//! amount of time) and sets [`FLAG_REKEY`] inside the last frame it seals
//! with the old key, then calls snow's `rekey_outgoing`. The flag is
//! authenticated, so only a genuine frame makes the receiver call
//! `rekey_incoming`; the epoch in the header tells a receiver that missed
//! such a frame that the session is out of step ([`ChannelError::EpochAhead`]:
//! reconnect) instead of failing every frame silently.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roundtable_shared::directory::valid_name;
use roundtable_shared::frame::encode_head;
pub use roundtable_shared::secure::Cipher;
use roundtable_shared::secure::{
    associated_data, check_sealed_shape, prologue, sealed_len, Hello, Inner, PublicKey, Sealed,
    SecureError, SecureFrame, CHUNK_PLAINTEXT, FLAG_REKEY, MAX_HELLO_PAYLOAD, MAX_PLAINTEXT,
    NOISE_MAX_MESSAGE, RECORD_PREFIX, TAG_LEN,
};
use snow::{HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncWrite};

use super::identity::Identity;
use super::pool::{Pool, POOLED_MIN};
use crate::framing::{Connection, FramingError};

/// When the sender switches to a fresh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Rekey after this many frames sealed with one key.
    pub after_messages: u64,
    /// Rekey at the first frame sealed this long after the last rekey.
    pub after: Duration,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            after_messages: 100_000,
            after: Duration::from_secs(15 * 60),
        }
    }
}

/// Settings of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// The whole handshake (all three messages) must finish within this.
    pub handshake_timeout: Duration,
    pub rekey: RekeyPolicy,
    /// Offer AES-256-GCM to peers (the `roundtable-aesgcm/1` capability):
    /// by default when this CPU does AES in hardware ([`hardware_aes`]).
    pub aes_gcm: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            handshake_timeout: Duration::from_secs(10),
            rekey: RekeyPolicy::default(),
            aes_gcm: hardware_aes(),
        }
    }
}

/// Whether this CPU does AES-GCM in hardware (AES rounds and carry-less
/// multiplication): only then is AES-256-GCM the faster cipher, and
/// constant-time without lookup tables. On the 2-core AMD EPYC the README
/// measures, ring seals and opens AES-256-GCM at 6-8 GB/s against
/// 2.3-2.5 GB/s for ChaCha20-Poly1305, and a 1 GiB node-to-node transfer
/// in memory went from 718-730 to 867-911 MB/s (3 runs each, alternated).
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Why a handshake failed or a frame was refused. None of these carries
/// key material beyond public keys.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("malformed secure frame: {0}")]
    Frame(#[from] SecureError),
    #[error("{0:?} is not a valid node name")]
    BadName(String),
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("connection closed during the secure handshake")]
    Closed,
    #[error("secure handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("secure handshake failed ({0}): tampered, or not meant for this pair of nodes")]
    Handshake(snow::Error),
    #[error(
        "{peer} presented a key with fingerprint {}, but its pinned key has fingerprint {}",
        found.fingerprint(),
        expected.fingerprint()
    )]
    KeyMismatch {
        peer: String,
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("frame from {from} to {to} does not belong to this session")]
    Misrouted { from: String, to: String },
    #[error("frame counter {counter} is not after the last one accepted (next is {next})")]
    Replayed { counter: u64, next: u64 },
    #[error("frame of key epoch {got} comes from before the current epoch {current}")]
    StaleEpoch { got: u32, current: u32 },
    #[error("frame of key epoch {got} is ahead of the current epoch {current}: a rekey was missed, reconnect")]
    EpochAhead { got: u32, current: u32 },
    #[error("frame failed authentication: tampered, or not sealed by this session's peer")]
    Rejected,
    #[error("frame's sealed routing fields do not match the frame")]
    Binding,
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("session has used up its nonces or key epochs: reconnect")]
    Exhausted,
}

fn check_name(name: &str) -> Result<(), ChannelError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ChannelError::BadName(name.to_owned()))
    }
}

/// The primitives under snow's Noise state machine: ring's ciphers and
/// hashes where it has them (its ChaCha20-Poly1305, BoringSSL's assembly,
/// seals and opens 2.3-2.5 GB/s on one core of the 2-core AMD EPYC this is
/// measured on, against 1.3-1.5 GB/s for RustCrypto's: the cipher was a
/// file transfer's largest cost; its AES-256-GCM 6-8 GB/s), RustCrypto's
/// and dalek's for the rest (X25519, BLAKE2s). The wire is the same either
/// way.
fn resolver() -> Box<dyn snow::resolvers::CryptoResolver + Send> {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    Box::new(FallbackResolver::new(
        Box::new(RingResolver),
        Box::new(DefaultResolver),
    ))
}

fn builder<'a>(
    id: &'a Identity,
    prologue: &'a [u8],
    cipher: Cipher,
) -> Result<snow::Builder<'a>, ChannelError> {
    let params = cipher
        .noise_params()
        .parse()
        .map_err(ChannelError::Handshake)?;
    snow::Builder::with_resolver(params, resolver())
        .local_private_key(id.private_key())
        .and_then(|b| b.prologue(prologue))
        .map_err(ChannelError::Handshake)
}

/// A handshake under way: made by [`Handshake::initiate`] or
/// [`Handshake::respond`], finished by [`Handshake::finish`].
pub struct Handshake {
    state: HandshakeState,
    me: String,
    peer: String,
    pin: Option<PublicKey>,
    rekey: RekeyPolicy,
    cipher: Cipher,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("me", &self.me)
            .field("peer", &self.peer)
            .field("initiator", &self.state.is_initiator())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts a handshake from `me` to `peer` with `cipher` (AES-GCM only
    /// if the peer granted `roundtable-aesgcm/1`): returns the state and
    /// the first `HELLO` to send. With `pin`, a peer presenting another key
    /// is refused before we reveal ours.
    pub fn initiate(
        id: &Identity,
        me: &str,
        peer: &str,
        pin: Option<PublicKey>,
        rekey: RekeyPolicy,
        cipher: Cipher,
    ) -> Result<(Handshake, Hello), ChannelError> {
        check_name(me)?;
        check_name(peer)?;
        let state = builder(id, &prologue(me, peer), cipher)?
            .build_initiator()
            .map_err(ChannelError::Handshake)?;
        let mut hs = Handshake {
            state,
            me: me.to_owned(),
            peer: peer.to_owned(),
            pin,
            rekey,
            cipher,
        };
        let hello = hs.write(1)?;
        Ok((hs, hello))
    }

    /// Answers the first `HELLO` of a peer (its `from` names the peer; look
    /// up its pin by that name) with the cipher it names: returns the state
    /// and the `HELLO` to send.
    pub fn respond(
        id: &Identity,
        me: &str,
        first: &Hello,
        pin: Option<PublicKey>,
        rekey: RekeyPolicy,
    ) -> Result<(Handshake, Hello), ChannelError> {
        check_name(me)?;
        check_name(&first.from)?;
        if first.step != 1 {
            return Err(ChannelError::Unexpected {
                expected: "HELLO step 1",
                got: format!("HELLO step {}", first.step),
            });
        }
        if first.to != me {
            return Err(ChannelError::Misrouted {
                from: first.from.clone(),
                to: first.to.clone(),
            });
        }
        let state = builder(id, &prologue(&first.from, me), first.cipher)?
            .build_responder()
            .map_err(ChannelError::Handshake)?;
        let mut hs = Handshake {
            state,
            me: me.to_owned(),
            peer: first.from.clone(),
            pin,
            rekey,
            cipher: first.cipher,
        };
        hs.read(first)?;
        let hello = hs.write(2)?;
        Ok((hs, hello))
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Takes the peer's last `HELLO` (step 2 for the initiator, 3 for the
    /// responder): returns the session and, for the initiator, the final
    /// `HELLO` to send.
    pub fn finish(mut self, hello: &Hello) -> Result<(Session, Option<Hello>), ChannelError> {
        let initiator = self.state.is_initiator();
        let step = if initiator { 2 } else { 3 };
        if hello.step != step {
            return Err(ChannelError::Unexpected {
                expected: if initiator {
                    "HELLO step 2"
                } else {
                    "HELLO step 3"
                },
                got: format!("HELLO step {}", hello.step),
            });
        }
        self.read(hello)?;
        let found = self
            .state
            .get_remote_static()
            .and_then(|k| PublicKey::from_bytes(k).ok())
            .ok_or(ChannelError::Handshake(snow::Error::Input))?;
        if let Some(expected) = self.pin {
            if expected != found {
                return Err(ChannelError::KeyMismatch {
                    peer: self.peer,
                    expected,
                    found,
                });
            }
        }
        let reply = if initiator {
            Some(self.write(3)?)
        } else {
            None
        };
        if !self.state.is_handshake_finished() {
            return Err(ChannelError::Handshake(snow::Error::Input));
        }
        let hash = self.state.get_handshake_hash().to_vec();
        let transport = self
            .state
            .into_stateless_transport_mode()
            .map_err(ChannelError::Handshake)?;
        let session = Session {
            transport,
            me: self.me,
            peer: self.peer,
            remote: found,
            handshake_hash: hash,
            rekey: self.rekey,
            cipher: self.cipher,
            send_next: 0,
            send_epoch: 0,
            sent_in_epoch: 0,
            epoch_started: Instant::now(),
            recv_next: 0,
            recv_epoch: 0,
            pool: Pool::default(),
        };
        Ok((session, reply))
    }

    fn write(&mut self, step: u8) -> Result<Hello, ChannelError> {
        let mut buf = vec![0u8; MAX_HELLO_PAYLOAD];
        let n = self
            .state
            .write_message(&[], &mut buf)
            .map_err(ChannelError::Handshake)?;
        buf.truncate(n);
        Ok(Hello {
            from: self.me.clone(),
            to: self.peer.clone(),
            step,
            // Named once, by the initiator's first message.
            cipher: if step == 1 {
                self.cipher
            } else {
                Cipher::ChaChaPoly
            },
            payload: buf,
        })
    }

    fn read(&mut self, hello: &Hello) -> Result<(), ChannelError> {
        if hello.from != self.peer || hello.to != self.me {
            return Err(ChannelError::Misrouted {
                from: hello.from.clone(),
                to: hello.to.clone(),
            });
        }
        // The handshake payloads we send are empty; a peer's cannot exceed
        // its frame, which MAX_HELLO_PAYLOAD bounds.
        let mut buf = vec![0u8; MAX_HELLO_PAYLOAD];
        self.state
            .read_message(&hello.payload, &mut buf)
            .map_err(ChannelError::Handshake)?;
        Ok(())
    }
}

/// An established channel: seals frames to the peer and opens the peer's.
pub struct Session {
    transport: StatelessTransportState,
    me: String,
    peer: String,
    remote: PublicKey,
    handshake_hash: Vec<u8>,
    rekey: RekeyPolicy,
    cipher: Cipher,
    /// Nonce of the next chunk we seal.
    send_next: u64,
    send_epoch: u32,
    sent_in_epoch: u64,
    epoch_started: Instant,
    /// Lowest counter we still accept.
    recv_next: u64,
    recv_epoch: u32,
    /// Buffers that large records are opened into.
    pool: Pool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.me)
            .field("peer", &self.peer)
            .field("cipher", &self.cipher)
            .field("remote", &self.remote.fingerprint().to_string())
            .field("send_epoch", &self.send_epoch)
            .field("recv_epoch", &self.recv_epoch)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Our name in this session.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The peer's name, as it named itself in the handshake (check its key!).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The peer's static public key, proven by the handshake: compare it to
    /// the pin for [`peer`](Self::peer) before trusting anything.
    pub fn remote_static(&self) -> &PublicKey {
        &self.remote
    }

    /// Refuses the session unless the peer's key is `pin`.
    pub fn check_pin(&self, pin: &PublicKey) -> Result<(), ChannelError> {
        if *pin == self.remote {
            Ok(())
        } else {
            Err(ChannelError::KeyMismatch {
                peer: self.peer.clone(),
                expected: *pin,
                found: self.remote,
            })
        }
    }

    /// The channel's cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The Noise handshake hash: equal on both sides, unique to this
    /// session (for channel binding by later layers).
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Key epochs: how often each direction has been rekeyed.
    pub fn epochs(&self) -> (u32, u32) {
        (self.send_epoch, self.recv_epoch)
    }

    /// Seals `plaintext` (at most [`MAX_PLAINTEXT`] bytes) into the next frame.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<SecureFrame, ChannelError> {
        self.seal_at(plaintext, Instant::now())
    }

    /// Like [`seal`](Self::seal) with the clock given (for the time-based
    /// rekey), so that tests need not wait.
    pub fn seal_at(&mut self, plaintext: &[u8], now: Instant) -> Result<SecureFrame, ChannelError> {
        let (epoch, counter, payload) = self.seal_kind(Sealed::KIND, plaintext, now)?;
        Ok(SecureFrame::Sealed(Sealed {
            from: self.me.clone(),
            to: self.peer.clone(),
            epoch,
            counter,
            payload,
        }))
    }

    /// Seals `pt` as the next `SEC` frame and appends that frame, encoded
    /// (header line and payload), to `out`, ready to be written. The
    /// plaintext is copied once, into the ciphertext: the path of a file's
    /// bytes.
    pub fn seal_into(&mut self, pt: &mut Plaintext, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.seal_record(Sealed::KIND, pt, Instant::now(), out, true)
            .map(|_| ())
    }

    /// Seals for a frame of type `kind`: the type is bound like the names,
    /// so a frame sealed for one type never opens as another.
    fn seal_kind(
        &mut self,
        kind: &str,
        plaintext: &[u8],
        now: Instant,
    ) -> Result<(u32, u64, Vec<u8>), ChannelError> {
        let mut pt = Plaintext::new();
        pt.push(plaintext);
        let mut out = Vec::new();
        let (epoch, counter) = self.seal_record(kind, &mut pt, now, &mut out, false)?;
        Ok((epoch, counter, out))
    }

    /// Seals `pt` for a frame of type `kind` and appends the payload to
    /// `out`, preceded by the `SEC` header line if `framed`. The record's
    /// header and associated data go into the room in front of the
    /// plaintext.
    fn seal_record(
        &mut self,
        kind: &str,
        pt: &mut Plaintext,
        now: Instant,
        out: &mut Vec<u8>,
        framed: bool,
    ) -> Result<(u32, u64), ChannelError> {
        if pt.len() > MAX_PLAINTEXT {
            return Err(ChannelError::TooLarge {
                len: pt.len(),
                max: MAX_PLAINTEXT,
            });
        }
        let rekey = self.sent_in_epoch + 1 >= self.rekey.after_messages
            || now.saturating_duration_since(self.epoch_started) >= self.rekey.after;
        if rekey && self.send_epoch == u32::MAX {
            return Err(ChannelError::Exhausted);
        }
        let (epoch, counter) = (self.send_epoch, self.send_next);
        let ad = associated_data(kind, &self.me, &self.peer, epoch, counter);
        let flags = if rekey { FLAG_REKEY } else { 0 };
        let record = pt.record(flags, &ad)?;
        let chunks = record.len().div_ceil(CHUNK_PLAINTEXT) as u64;
        // Noise reserves nonce u64::MAX: the last chunk's nonce must be below it.
        if counter > u64::MAX - chunks {
            return Err(ChannelError::Exhausted);
        }
        let sealed = sealed_len(record.len());
        if framed {
            let (e, c) = (epoch.to_string(), counter.to_string());
            encode_head(
                out,
                Sealed::KIND,
                sealed,
                [self.me.as_str(), self.peer.as_str(), &e, &c],
            );
        }
        let base = out.len();
        out.resize(base + sealed, 0);
        let mut at = base;
        for (i, chunk) in record.chunks(CHUNK_PLAINTEXT).enumerate() {
            let end = at + chunk.len() + TAG_LEN;
            at += self
                .transport
                .write_message(counter + i as u64, chunk, &mut out[at..end])
                .map_err(|_| ChannelError::Exhausted)?;
        }
        debug_assert_eq!(at, out.len());
        self.send_next = counter + chunks;
        if rekey {
            self.transport.rekey_outgoing();
            self.send_epoch += 1;
            self.sent_in_epoch = 0;
            self.epoch_started = now;
        } else {
            self.sent_in_epoch += 1;
        }
        Ok((epoch, counter))
    }

    /// Checks and decrypts a frame from the peer. A refused frame changes
    /// nothing: the next good frame is accepted as if it had not come.
    pub fn open(&mut self, frame: &Sealed) -> Result<Vec<u8>, ChannelError> {
        self.open_bytes(frame).map(Vec::from)
    }

    /// Like [`open`](Self::open), the plaintext as a view of the decrypted
    /// record, which can be split further without a copy.
    pub fn open_bytes(&mut self, frame: &Sealed) -> Result<Bytes, ChannelError> {
        self.open_in_place(frame, &frame.payload)
    }

    /// Like [`open_bytes`](Self::open_bytes) for a `SEC` frame whose
    /// payload is read where it lies (`frame`'s own payload is ignored: a
    /// header from [`SecureFrame::parse_head`] has none).
    pub fn open_in_place(&mut self, frame: &Sealed, payload: &[u8]) -> Result<Bytes, ChannelError> {
        if frame.from != self.peer || frame.to != self.me {
            return Err(ChannelError::Misrouted {
                from: frame.from.clone(),
                to: frame.to.clone(),
            });
        }
        check_sealed_shape(payload.len(), frame.counter)?;
        self.open_kind(Sealed::KIND, frame.epoch, frame.counter, payload)
    }

    fn open_kind(
        &mut self,
        kind: &str,
        epoch: u32,
        counter: u64,
        payload: &[u8],
    ) -> Result<Bytes, ChannelError> {
        let current = self.recv_epoch;
        if epoch < current {
            return Err(ChannelError::StaleEpoch {
                got: epoch,
                current,
            });
        }
        if epoch > current {
            return Err(ChannelError::EpochAhead {
                got: epoch,
                current,
            });
        }
        if counter < self.recv_next {
            return Err(ChannelError::Replayed {
                counter,
                next: self.recv_next,
            });
        }
        // `payload` was validated: at most MAX_SEC_PAYLOAD bytes, and
        // counter + chunks does not overflow.
        let pooled = payload.len() >= POOLED_MIN;
        let mut record = if pooled {
            self.pool.take(payload.len())
        } else {
            vec![0; payload.len()]
        };
        let mut len = 0;
        let mut chunks = 0u64;
        for (i, chunk) in payload.chunks(NOISE_MAX_MESSAGE).enumerate() {
            len += self
                .transport
                .read_message(counter + i as u64, chunk, &mut record[len..])
                .map_err(|_| ChannelError::Rejected)?;
            chunks += 1;
        }
        let record = if pooled {
            self.pool.share(record, 0..len)
        } else {
            record.truncate(len);
            Bytes::from(record)
        };
        let inner = Inner::parse(&record)?;
        if inner.ad != associated_data(kind, &self.peer, &self.me, epoch, counter) {
            return Err(ChannelError::Binding);
        }
        let plaintext = record.slice_ref(inner.plaintext);
        let rekey = inner.flags & FLAG_REKEY != 0;
        self.recv_next = counter + chunks;
        if rekey {
            self.transport.rekey_incoming();
            self.recv_epoch = self.recv_epoch.saturating_add(1);
        }
        Ok(plaintext)
    }
}

/// A plaintext built where [`Session::seal_into`] seals it: room in front
/// for the record's header and associated data, then the plaintext. Kept
/// and reused from frame to frame, it is allocated once.
#[derive(Debug, Clone)]
pub struct Plaintext {
    /// [`RECORD_PREFIX`] bytes of room, then the plaintext (and perhaps
    /// stale bytes past it, from an earlier use).
    buf: Vec<u8>,
    len: usize,
}

impl Default for Plaintext {
    fn default() -> Self {
        Self::new()
    }
}

impl Plaintext {
    pub fn new() -> Plaintext {
        Plaintext {
            buf: vec![0; RECORD_PREFIX],
            len: 0,
        }
    }

    /// Bytes of plaintext so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties it (keeping its memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The plaintext so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[RECORD_PREFIX..RECORD_PREFIX + self.len]
    }

    /// Appends `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.extend(bytes.len()).copy_from_slice(bytes);
    }

    /// Appends `n` bytes for the caller to fill (say, from a file) and
    /// returns them. Until filled they hold whatever was there.
    pub fn extend(&mut self, n: usize) -> &mut [u8] {
        let at = RECORD_PREFIX + self.len;
        if self.buf.len() < at + n {
            self.buf.resize(at + n, 0);
        }
        self.len += n;
        &mut self.buf[at..at + n]
    }

    /// The whole record: its header and `ad` written in front of the
    /// plaintext.
    fn record(&mut self, flags: u8, ad: &[u8]) -> Result<&[u8], SecureError> {
        let prefix: &mut [u8; RECORD_PREFIX] = (&mut self.buf[..RECORD_PREFIX])
            .try_into()
            .expect("the room in front is RECORD_PREFIX bytes");
        let at = Inner::write_head(prefix, flags, ad, self.len)?;
        Ok(&self.buf[at..RECORD_PREFIX + self.len])
    }
}

/// The next frame as a `HELLO`.
async fn read_hello<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Hello, ChannelError> {
    let frame = conn.read_frame().await?.ok_or(ChannelError::Closed)?;
    match SecureFrame::parse_owned(frame)? {
        SecureFrame::Hello(h) => Ok(h),
        SecureFrame::Sealed(_) => Err(ChannelError::Unexpected {
            expected: "HELLO",
            got: Sealed::KIND.to_owned(),
        }),
    }
}

async fn send_hello<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    hello: Hello,
) -> Result<(), ChannelError> {
    conn.write_frame(&SecureFrame::Hello(hello).into_frame())
        .await?;
    Ok(())
}

/// Runs the initiator's side of the handshake over `conn` with `cipher`,
/// all within `config.handshake_timeout`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    id: &Identity,
    me: &str,
    peer: &str,
    pin: Option<PublicKey>,
    config: &ChannelConfig,
    cipher: Cipher,
) -> Result<Session, ChannelError> {
    let run = async {
        let (hs, first) = Handshake::initiate(id, me, peer, pin, config.rekey, cipher)?;
        send_hello(conn, first).await?;
        let answer = read_hello(conn).await?;
        let (session, last) = hs.finish(&answer)?;
        if let Some(last) = last {
            send_hello(conn, last).await?;
        }
        Ok(session)
    };
    tokio::time::timeout(config.handshake_timeout, run)
        .await
        .map_err(|_| ChannelError::Timeout(config.handshake_timeout))?
}

/// Runs the responder's side over `conn`, all within
/// `config.handshake_timeout`. `first` is the peer's first `HELLO` if the
/// caller already read it (a listener dispatching on the frame type), else
/// it is read here. `pin_for` gives the pinned key of the peer it names.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    id: &Identity,
    me: &str,
    first: Option<Hello>,
    pin_for: impl FnOnce(&str) -> Option<PublicKey>,
    config: &ChannelConfig,
) -> Result<Session, ChannelError> {
    let run = async {
        let first = match first {
            Some(h) => h,
            None => read_hello(conn).await?,
        };
        let pin = pin_for(&first.from);
        let (hs, answer) = Handshake::respond(id, me, &first, pin, config.rekey)?;
        send_hello(conn, answer).await?;
        let last = read_hello(conn).await?;
        let (session, _) = hs.finish(&last)?;
        Ok(session)
    };
    tokio::time::timeout(config.handshake_timeout, run)
        .await
        .map_err(|_| ChannelError::Timeout(config.handshake_timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::frame::{decode, Decoded, Limits};
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    fn ids() -> (Identity, Identity) {
        (Identity::generate().unwrap(), Identity::generate().unwrap())
    }

    /// A handshake between `a` (alice, initiator) and `b` (bob) by passing frames.
    fn pair_with(a: &Identity, b: &Identity, rekey: RekeyPolicy) -> (Session, Session) {
        pair_with_cipher(a, b, rekey, Cipher::ChaChaPoly)
    }

    fn pair_with_cipher(
        a: &Identity,
        b: &Identity,
        rekey: RekeyPolicy,
        cipher: Cipher,
    ) -> (Session, Session) {
        let (ha, h1) = Handshake::initiate(a, "alice", "bob", None, rekey, cipher).unwrap();
        let (hb, h2) = Handshake::respond(b, "bob", &h1, None, rekey).unwrap();
        let (sa, h3) = ha.finish(&h2).unwrap();
        let (sb, none) = hb.finish(&h3.unwrap()).unwrap();
        assert!(none.is_none());
        (sa, sb)
    }

    fn pair() -> (Session, Session, Identity, Identity) {
        let (a, b) = ids();
        let (sa, sb) = pair_with(&a, &b, RekeyPolicy::default());
        (sa, sb, a, b)
    }

    fn sealed(f: SecureFrame) -> Sealed {
        match f {
            SecureFrame::Sealed(s) => s,
            other => panic!("not a SEC frame: {other:?}"),
        }
    }

    /// What a receiver gets from wire bytes: decode, parse, open.
    fn open_wire(s: &mut Session, wire: &[u8]) -> Result<Vec<u8>, String> {
        let f = match decode(wire, &Limits::default()) {
            Ok(Decoded::Frame(f, _)) => f,
            other => return Err(format!("{other:?}")),
        };
        match SecureFrame::parse(&f).map_err(|e| e.to_string())? {
            SecureFrame::Sealed(x) => s.open(&x).map_err(|e| e.to_string()),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn an_aes_gcm_channel_seals_opens_and_rekeys_like_a_chacha_one() {
        let (a, b) = ids();
        let rekey = RekeyPolicy {
            after_messages: 3,
            after: Duration::from_secs(3600),
        };
        let (mut sa, mut sb) = pair_with_cipher(&a, &b, rekey, Cipher::AesGcm);
        assert_eq!((sa.cipher(), sb.cipher()), (Cipher::AesGcm, Cipher::AesGcm));
        assert_eq!(sa.handshake_hash(), sb.handshake_hash());
        // Across rekeys, and a record of several Noise messages.
        let big = vec![7u8; MAX_PLAINTEXT];
        for i in 0..8u8 {
            let f = sealed(sa.seal(&[i; 100]).unwrap());
            assert_eq!(sb.open(&f).unwrap(), vec![i; 100]);
            let f = sealed(sb.seal(&big).unwrap());
            assert_eq!(sa.open(&f).unwrap(), big);
        }
        assert!(sa.epochs().0 > 0 && sb.epochs().0 > 0, "{:?}", sa.epochs());
        // A frame of an AES-GCM session means nothing to a ChaCha one of
        // the same two keys.
        let (_, mut chacha) = pair_with(&a, &b, rekey);
        let f = sealed(sa.seal(b"hi").unwrap());
        assert!(chacha.open(&f).is_err());
    }

    #[test]
    fn a_cipher_changed_on_the_way_fails_the_handshake() {
        let (a, b) = ids();
        let r = RekeyPolicy::default();
        for (chosen, forged) in [
            (Cipher::AesGcm, Cipher::ChaChaPoly),
            (Cipher::ChaChaPoly, Cipher::AesGcm),
        ] {
            let (ha, mut h1) = Handshake::initiate(&a, "alice", "bob", None, r, chosen).unwrap();
            assert_eq!(h1.cipher, chosen);
            h1.cipher = forged;
            // Bob goes on with the forged cipher; alice sees the answer fail.
            let (_hb, h2) = Handshake::respond(&b, "bob", &h1, None, r).unwrap();
            assert_eq!(h2.cipher, Cipher::ChaChaPoly, "only step 1 names a cipher");
            assert!(
                matches!(ha.finish(&h2), Err(ChannelError::Handshake(_))),
                "{chosen:?} forged to {forged:?} was not noticed"
            );
        }
    }

    #[test]
    fn handshake_teaches_each_side_the_others_key_and_messages_flow_both_ways() {
        let (mut sa, mut sb, a, b) = pair();
        assert_eq!(sa.remote_static(), b.public_key());
        assert_eq!(sb.remote_static(), a.public_key());
        assert_eq!(sb.peer(), "alice");
        assert_eq!(sa.handshake_hash(), sb.handshake_hash());
        for i in 0..5 {
            let m = format!("hello bob {i}");
            assert_eq!(
                sb.open(&sealed(sa.seal(m.as_bytes()).unwrap())).unwrap(),
                m.as_bytes()
            );
            let r = format!("hi alice {i}");
            assert_eq!(
                sa.open(&sealed(sb.seal(r.as_bytes()).unwrap())).unwrap(),
                r.as_bytes()
            );
        }
    }

    #[test]
    fn plaintext_never_appears_in_the_frame() {
        let (mut sa, _sb, _, _) = pair();
        let marker = b"PLAINTEXT-MARKER-4242";
        let wire = sa.seal(marker).unwrap().to_frame().encode().unwrap();
        assert!(!wire.windows(marker.len()).any(|w| w == marker));
    }

    #[test]
    fn largest_plaintext_round_trips_in_two_chunks_and_larger_is_refused() {
        let (mut sa, mut sb, _, _) = pair();
        let big: Vec<u8> = (0..MAX_PLAINTEXT).map(|i| i as u8).collect();
        let f = sealed(sa.seal(&big).unwrap());
        assert_eq!(f.chunks(), 2);
        assert_eq!(sb.open(&f).unwrap(), big);
        // The next frame's counter starts after both chunks' nonces.
        let g = sealed(sa.seal(b"after").unwrap());
        assert_eq!(g.counter, f.counter + 2);
        assert_eq!(sb.open(&g).unwrap(), b"after");
        assert!(matches!(
            sa.seal(&vec![0; MAX_PLAINTEXT + 1]),
            Err(ChannelError::TooLarge { .. })
        ));
    }

    #[test]
    fn frames_sealed_in_place_open_like_sealed_ones_and_a_reused_plaintext_keeps_no_leftovers() {
        let (mut sa, mut sb, _, _) = pair();
        let mut pt = Plaintext::new();
        let mut wire = Vec::new();
        // Long, then short: the short one must not carry the long one's tail.
        let long: Vec<u8> = (0..MAX_PLAINTEXT).map(|i| (i % 251) as u8).collect();
        pt.push(&long[..100]);
        pt.extend(long.len() - 100).copy_from_slice(&long[100..]);
        assert_eq!(pt.bytes(), &long[..]);
        sa.seal_into(&mut pt, &mut wire).unwrap();
        pt.clear();
        pt.push(b"short");
        sa.seal_into(&mut pt, &mut wire).unwrap();
        // An ordinary frame after them, from the same session.
        let plain = sa.seal(b"ordinary").unwrap().into_frame();
        plain.encode_into(&mut wire).unwrap();
        let lim = Limits::default();
        let mut at = 0;
        let mut got = Vec::new();
        while at < wire.len() {
            let Decoded::Frame(f, used) = decode(&wire[at..], &lim).unwrap() else {
                panic!("a whole frame");
            };
            at += used;
            got.push(
                sb.open(&sealed(SecureFrame::parse_owned(f).unwrap()))
                    .unwrap(),
            );
        }
        assert_eq!(
            got,
            vec![long.clone(), b"short".to_vec(), b"ordinary".to_vec()]
        );
        // Too large is refused, as by `seal`.
        pt.clear();
        pt.extend(MAX_PLAINTEXT + 1);
        assert!(matches!(
            sa.seal_into(&mut pt, &mut Vec::new()),
            Err(ChannelError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused_and_the_next_good_frame_opens() {
        let (mut sa, mut sb, _, _) = pair();
        let wire = sa
            .seal(b"transfer 10 EUR")
            .unwrap()
            .to_frame()
            .encode()
            .unwrap();
        for i in 0..wire.len() {
            for bit in [0x01, 0x80] {
                let mut bad = wire.clone();
                bad[i] ^= bit;
                assert!(
                    open_wire(&mut sb, &bad).is_err(),
                    "byte {i} ^ {bit:#x} accepted"
                );
            }
        }
        assert_eq!(open_wire(&mut sb, &wire).unwrap(), b"transfer 10 EUR");
        let next = sa.seal(b"next").unwrap().to_frame().encode().unwrap();
        assert_eq!(open_wire(&mut sb, &next).unwrap(), b"next");
    }

    #[test]
    fn a_replayed_or_reordered_frame_is_refused() {
        let (mut sa, mut sb, _, _) = pair();
        let f1 = sealed(sa.seal(b"one").unwrap());
        let f2 = sealed(sa.seal(b"two").unwrap());
        assert_eq!(sb.open(&f1).unwrap(), b"one");
        assert!(matches!(sb.open(&f1), Err(ChannelError::Replayed { .. })));
        assert_eq!(sb.open(&f2).unwrap(), b"two");
        // Reordered: f4 first, then f3 is late and refused (no reorder window).
        let f3 = sealed(sa.seal(b"three").unwrap());
        let f4 = sealed(sa.seal(b"four").unwrap());
        assert_eq!(sb.open(&f4).unwrap(), b"four");
        assert!(matches!(sb.open(&f3), Err(ChannelError::Replayed { .. })));
        // A replay with a forged higher counter fails authentication.
        let mut forged = f1.clone();
        forged.counter = 100;
        assert!(matches!(sb.open(&forged), Err(ChannelError::Rejected)));
        assert_eq!(
            sb.open(&sealed(sa.seal(b"five").unwrap())).unwrap(),
            b"five"
        );
    }

    #[test]
    fn a_frame_of_another_pair_or_direction_is_refused() {
        let (a, b) = ids();
        let c = Identity::generate().unwrap();
        let (mut sa, mut sb) = pair_with(&a, &b, RekeyPolicy::default());
        // alice ↔ carol, same alice key.
        let (ha, h1) = Handshake::initiate(
            &a,
            "alice",
            "carol",
            None,
            RekeyPolicy::default(),
            Cipher::ChaChaPoly,
        )
        .unwrap();
        let (hc, h2) = Handshake::respond(&c, "carol", &h1, None, RekeyPolicy::default()).unwrap();
        let (mut sac, h3) = ha.finish(&h2).unwrap();
        let (_sc, _) = hc.finish(&h3.unwrap()).unwrap();

        // A frame alice sealed for carol, relabelled for bob: wrong key.
        let mut for_carol = sealed(sac.seal(b"for carol").unwrap());
        assert!(matches!(
            sb.open(&for_carol),
            Err(ChannelError::Misrouted { .. })
        ));
        for_carol.to = "bob".into();
        assert!(matches!(sb.open(&for_carol), Err(ChannelError::Rejected)));
        // Alice's own frame reflected back to her as if from bob.
        let mut mine = sealed(sa.seal(b"to bob").unwrap());
        std::mem::swap(&mut mine.from, &mut mine.to);
        assert!(matches!(sa.open(&mine), Err(ChannelError::Rejected)));
        // Same key and nonce, another frame type: the bound type differs.
        let (epoch, counter, payload) = sa.seal_kind("REL", b"typed", Instant::now()).unwrap();
        assert!(matches!(
            sb.open_kind("SEC", epoch, counter, &payload),
            Err(ChannelError::Binding)
        ));
        // Nothing was consumed by the refusals.
        assert_eq!(
            sb.open(&sealed(sa.seal(b"still fine").unwrap())).unwrap(),
            b"still fine"
        );
    }

    #[test]
    fn a_handshake_meant_for_another_pair_fails() {
        let (a, b) = ids();
        let r = RekeyPolicy::default();
        let (ha, h1) =
            Handshake::initiate(&a, "alice", "bob", None, r, Cipher::ChaChaPoly).unwrap();
        // A relay rewrites the sender of the first HELLO: bob's prologue
        // then differs from alice's and her check of step 2 fails.
        let mut relabelled = h1.clone();
        relabelled.from = "mallory".into();
        let (_hb, mut h2) = Handshake::respond(&b, "bob", &relabelled, None, r).unwrap();
        h2.to = "alice".into();
        assert!(matches!(ha.finish(&h2), Err(ChannelError::Handshake(_))));
        // A HELLO addressed to someone else is refused outright.
        assert!(matches!(
            Handshake::respond(&b, "carol", &h1, None, r),
            Err(ChannelError::Misrouted { .. })
        ));
    }

    #[test]
    fn a_wrong_static_key_is_detected_by_both_sides() {
        let (a, b) = ids();
        let mallory = Identity::generate().unwrap();
        let r = RekeyPolicy::default();
        // Alice pins bob's key; mallory answers as bob.
        let (ha, h1) = Handshake::initiate(
            &a,
            "alice",
            "bob",
            Some(*b.public_key()),
            r,
            Cipher::ChaChaPoly,
        )
        .unwrap();
        let (_hm, h2) = Handshake::respond(&mallory, "bob", &h1, None, r).unwrap();
        match ha.finish(&h2) {
            Err(ChannelError::KeyMismatch {
                peer,
                expected,
                found,
            }) => {
                assert_eq!(peer, "bob");
                assert_eq!(expected, *b.public_key());
                assert_eq!(found, *mallory.public_key());
            }
            other => panic!("impostor accepted: {other:?}"),
        }
        // Unpinned: the session exposes the key, and check_pin refuses it.
        let (sa, sb) = pair_with(&a, &mallory, r);
        assert_eq!(sa.remote_static(), mallory.public_key());
        assert!(matches!(
            sa.check_pin(b.public_key()),
            Err(ChannelError::KeyMismatch { .. })
        ));
        assert!(sb.check_pin(a.public_key()).is_ok());
        // The responder's pin is checked at step 3.
        let (ha, h1) =
            Handshake::initiate(&mallory, "alice", "bob", None, r, Cipher::ChaChaPoly).unwrap();
        let (hb, h2) = Handshake::respond(&b, "bob", &h1, Some(*a.public_key()), r).unwrap();
        let (_sm, h3) = ha.finish(&h2).unwrap();
        assert!(matches!(
            hb.finish(&h3.unwrap()),
            Err(ChannelError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn rekeying_by_count_keeps_working_across_the_threshold() {
        let (a, b) = ids();
        let policy = RekeyPolicy {
            after_messages: 3,
            after: Duration::from_secs(3600),
        };
        let (mut sa, mut sb) = pair_with(&a, &b, policy);
        let mut old_epoch_frame = None;
        for i in 0..20u32 {
            let m = i.to_string();
            let f = sealed(sa.seal(m.as_bytes()).unwrap());
            if i == 0 {
                old_epoch_frame = Some(f.clone());
            }
            assert_eq!(sb.open(&f).unwrap(), m.as_bytes(), "message {i}");
            let back = sealed(sb.seal(m.as_bytes()).unwrap());
            assert_eq!(sa.open(&back).unwrap(), m.as_bytes(), "reply {i}");
        }
        assert!(sa.epochs().0 >= 6, "{:?}", sa.epochs());
        assert_eq!(sa.epochs(), (sb.epochs().1, sb.epochs().0));
        assert!(matches!(
            sb.open(&old_epoch_frame.unwrap()),
            Err(ChannelError::StaleEpoch { .. })
        ));
    }

    #[test]
    fn rekeying_by_time_and_a_missed_rekey_is_reported() {
        let (a, b) = ids();
        let policy = RekeyPolicy {
            after_messages: u64::MAX,
            after: Duration::from_secs(60),
        };
        let (mut sa, mut sb) = pair_with(&a, &b, policy);
        let later = Instant::now() + Duration::from_secs(61);
        let f = sealed(sa.seal_at(b"old key", later).unwrap());
        assert_eq!(sa.epochs().0, 1);
        let g = sealed(sa.seal_at(b"new key", later).unwrap());
        assert_eq!(g.epoch, 1);
        // Bob never got the rekeying frame: told to reconnect, not garbage.
        assert!(matches!(sb.open(&g), Err(ChannelError::EpochAhead { .. })));
        assert_eq!(sb.open(&f).unwrap(), b"old key");
        assert_eq!(sb.open(&g).unwrap(), b"new key");
    }

    #[tokio::test]
    async fn handshake_over_a_connection_then_frames_both_ways() {
        let (a, b) = ids();
        let (x, y) = duplex(4096);
        let mut ca = Connection::new(x, Limits::default());
        let mut cb = Connection::new(y, Limits::default());
        let cfg = ChannelConfig::default();
        let bob_key = *b.public_key();
        let alice_key = *a.public_key();
        let (ra, rb) = tokio::join!(
            connect(
                &mut ca,
                &a,
                "alice",
                "bob",
                Some(bob_key),
                &cfg,
                Cipher::ChaChaPoly
            ),
            accept(
                &mut cb,
                &b,
                "bob",
                None,
                |name| (name == "alice").then_some(alice_key),
                &cfg
            ),
        );
        let (mut sa, mut sb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(sb.remote_static(), a.public_key());
        assert_eq!(sa.remote_static(), b.public_key());
        ca.write_frame(&sa.seal(b"ping").unwrap().to_frame())
            .await
            .unwrap();
        let got = cb.read_frame().await.unwrap().unwrap();
        let SecureFrame::Sealed(s) = SecureFrame::parse(&got).unwrap() else {
            panic!("not SEC")
        };
        assert_eq!(sb.open(&s).unwrap(), b"ping");
        cb.write_frame(&sb.seal(b"pong").unwrap().to_frame())
            .await
            .unwrap();
        let got = ca.read_frame().await.unwrap().unwrap();
        let SecureFrame::Sealed(s) = SecureFrame::parse(&got).unwrap() else {
            panic!("not SEC")
        };
        assert_eq!(sa.open(&s).unwrap(), b"pong");
    }

    /// A peer that reads the first HELLO and answers with part of a frame.
    async fn truncating_responder(
        mut y: tokio::io::DuplexStream,
        b: Identity,
        close: bool,
    ) -> tokio::io::DuplexStream {
        let mut conn = Connection::new(&mut y, Limits::default());
        let first = read_hello(&mut conn).await.unwrap();
        let (_hs, answer) =
            Handshake::respond(&b, "bob", &first, None, RekeyPolicy::default()).unwrap();
        let wire = SecureFrame::Hello(answer).to_frame().encode().unwrap();
        drop(conn);
        y.write_all(&wire[..wire.len() - 10]).await.unwrap();
        if close {
            y.shutdown().await.unwrap();
            // Drain so the initiator's writes never block.
            let mut sink = Vec::new();
            let _ = y.read_to_end(&mut sink).await;
        }
        y
    }

    #[tokio::test]
    async fn a_truncated_handshake_fails_clearly_within_the_timeout() {
        let (a, b) = ids();
        let cfg = ChannelConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ChannelConfig::default()
        };
        // The peer cuts its answer short and closes.
        let (x, y) = duplex(4096);
        let peer = tokio::spawn(truncating_responder(y, b, true));
        let mut ca = Connection::new(x, Limits::default());
        let err = connect(&mut ca, &a, "alice", "bob", None, &cfg, Cipher::AesGcm)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Framing(FramingError::Truncated)),
            "{err}"
        );
        assert!(err.to_string().contains("closed in the middle"), "{err}");
        drop(peer);

        // The peer cuts its answer short and stays silent: the timeout ends it.
        let b = Identity::generate().unwrap();
        let (x, y) = duplex(4096);
        let peer = tokio::spawn(truncating_responder(y, b, false));
        let mut ca = Connection::new(x, Limits::default());
        let started = tokio::time::Instant::now();
        let err = connect(&mut ca, &a, "alice", "bob", None, &cfg, Cipher::AesGcm)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Timeout(t) if t == cfg.handshake_timeout),
            "{err}"
        );
        assert!(started.elapsed() < cfg.handshake_timeout * 10);
        let _keep_open = peer.await.unwrap();

        // The responder's side: the initiator sends only its first HELLO then closes.
        let (x, y) = duplex(4096);
        let mut cb = Connection::new(y, Limits::default());
        let mut cx = Connection::new(x, Limits::default());
        let (_ha, h1) = Handshake::initiate(
            &a,
            "alice",
            "bob",
            None,
            RekeyPolicy::default(),
            Cipher::ChaChaPoly,
        )
        .unwrap();
        send_hello(&mut cx, h1).await.unwrap();
        let b = Identity::generate().unwrap();
        let responder = accept(&mut cb, &b, "bob", None, |_| None, &cfg);
        let closer = async {
            // Read bob's answer, then hang up without step 3.
            let _ = read_hello(&mut cx).await.unwrap();
            drop(cx);
        };
        let (err, ()) = tokio::join!(responder, closer);
        assert!(matches!(err, Err(ChannelError::Closed)), "{err:?}");
    }

    #[tokio::test]
    async fn a_tampered_handshake_message_fails() {
        let (a, b) = ids();
        let r = RekeyPolicy::default();
        let (ha, h1) =
            Handshake::initiate(&a, "alice", "bob", None, r, Cipher::ChaChaPoly).unwrap();
        let (_hb, mut h2) = Handshake::respond(&b, "bob", &h1, None, r).unwrap();
        let last = h2.payload.len() - 1;
        h2.payload[last] ^= 1;
        assert!(matches!(ha.finish(&h2), Err(ChannelError::Handshake(_))));
    }
}
