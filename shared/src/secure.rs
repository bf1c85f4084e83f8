//! The secure overlay's wire formats (issue 13): identity keys in text form,
//! their fingerprints, and the two frames of a Noise channel between nodes.
//!
//! Pure: no I/O and no cryptography beyond the fingerprint hash. The Noise
//! handshake and the encryption itself live in the backend
//! (`backend/src/overlay/channel.rs`, using `snow`); this module only says
//! what the bytes around them look like, so that the node, the directory
//! (which will relay these frames), the dashboard (which shows keys and
//! fingerprints) and the fuzzers agree on one definition.
//!
//! # Frames
//!
//! - `HELLO <len> <from> <to> <step> [<cipher>]` + one Noise handshake
//!   message. `Noise_XX` takes three, so `step` is 1 (initiator), 2
//!   (responder) or 3 (initiator). The names are bound into the handshake
//!   through its prologue ([`prologue`]), so a handshake meant for another
//!   pair fails. Only step 1 may name a [`Cipher`]: `AESGCM` when both
//!   sides granted [`AESGCM_CAPABILITY`]; without it the channel is
//!   `ChaChaPoly`, as it always was (so older nodes see what they know).
//!   The cipher is part of the Noise protocol name, which both sides hash
//!   into the handshake first: a cipher changed on the way makes the
//!   handshake fail, it cannot be downgraded silently.
//! - `SEC <len> <from> <to> <epoch> <counter>` + ciphertext. `counter` is
//!   the Noise nonce of the first ciphertext chunk; `epoch` counts rekeys.
//!
//! # What a `SEC` payload holds
//!
//! Noise caps one message at 65,535 bytes, less than a 64 KiB chat text
//! plus its frame, so a sealed payload is one or more Noise messages
//! ("chunks") back to back: every chunk but the last is exactly
//! [`NOISE_MAX_MESSAGE`] bytes, and chunk `i` is encrypted with nonce
//! `counter + i`. Decrypted and joined, the chunks give an [`Inner`]
//! record: a version, flags, the plaintext's length, the associated data
//! and the plaintext.
//!
//! Noise's transport messages have no associated-data input (`snow`'s
//! transport API takes none), so the routing fields are bound the other
//! standard way: the sender encrypts them ([`associated_data`]) inside the
//! authenticated record and the receiver compares them with the outer
//! header and its own session before accepting anything. Changing a
//! routing field, the frame type, the epoch or the counter therefore makes
//! the frame fail, exactly as AEAD associated data would.

use std::fmt;
use std::str::FromStr;

use blake2::{Blake2s256, Digest};

use crate::directory::valid_name;
use crate::frame::{Frame, Head};

/// The protocol name and version, bound into every handshake and frame.
pub const PROTOCOL: &str = "roundtable-secure/1";

/// The Noise protocol the channel runs unless both sides choose AES-GCM
/// ([`Cipher`]); also the parameters identity keys are made with.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// The `roundtable/1` capability (`PING`/`PONG`) a node grants when its
/// CPU does AES in hardware: with both sides granting it, the initiator
/// names [`Cipher::AesGcm`] in its first `HELLO`.
pub const AESGCM_CAPABILITY: &str = "roundtable-aesgcm/1";

/// The AEAD of a Noise channel, chosen by the initiator in its first
/// `HELLO`. Both are 256-bit AEADs with a 16-byte tag ([`TAG_LEN`]); they
/// differ in speed: ChaCha20-Poly1305 is the fast one in software,
/// AES-256-GCM the fast one where the CPU has AES and carry-less multiply
/// instructions (2.5-3x ChaCha's rate on the machine the README measures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Cipher {
    #[default]
    ChaChaPoly,
    AesGcm,
}

impl Cipher {
    /// The Noise protocol name of a channel with this cipher.
    pub fn noise_params(self) -> &'static str {
        match self {
            Cipher::ChaChaPoly => NOISE_PARAMS,
            Cipher::AesGcm => "Noise_XX_25519_AESGCM_BLAKE2s",
        }
    }

    /// Its token in a first `HELLO`; none for ChaChaPoly, the default.
    fn token(self) -> Option<&'static str> {
        match self {
            Cipher::ChaChaPoly => None,
            Cipher::AesGcm => Some("AESGCM"),
        }
    }

    /// The name people read (the dashboard, logs).
    pub fn label(self) -> &'static str {
        match self {
            Cipher::ChaChaPoly => "ChaCha20-Poly1305",
            Cipher::AesGcm => "AES-256-GCM",
        }
    }
}

/// Length of an X25519 public (and private) key.
pub const KEY_LEN: usize = 32;

/// Length of the authentication tag on every Noise message (both ciphers).
pub const TAG_LEN: usize = 16;

/// Noise's limit on one message, tag included.
pub const NOISE_MAX_MESSAGE: usize = 65_535;

/// Plaintext bytes one Noise message can carry.
pub const CHUNK_PLAINTEXT: usize = NOISE_MAX_MESSAGE - TAG_LEN;

/// Largest plaintext one `SEC` frame carries: a 64 KiB chat text
/// (`api::MAX_TEXT`) plus room for the frame wrapped around it.
pub const MAX_PLAINTEXT: usize = 64 * 1024 + 1024;

/// Largest Noise handshake message accepted in a `HELLO` (the `XX`
/// messages are 32, 96 and 64 bytes with empty payloads).
pub const MAX_HELLO_PAYLOAD: usize = 1024;

/// Largest associated-data string: [`PROTOCOL`], a frame type of up to 16
/// bytes, two names of up to 64 bytes, an epoch and a counter.
pub const MAX_AD: usize = 256;

/// Fixed part of an [`Inner`] record: version, flags, plaintext length
/// (u32) and associated-data length (u16).
pub const INNER_HEADER: usize = 1 + 1 + 4 + 2;

/// The [`Inner`] record version this code writes and reads.
pub const INNER_VERSION: u8 = 1;

/// Room in front of a plaintext for its record's header and associated
/// data ([`Inner::write_head`]).
pub const RECORD_PREFIX: usize = INNER_HEADER + MAX_AD;

/// [`Inner::flags`] bit: the sender rekeys its outgoing key right after this
/// frame, so the receiver rekeys its incoming key after accepting it.
pub const FLAG_REKEY: u8 = 0x01;

/// Largest `SEC` payload: the largest [`Inner`] record, sealed.
pub const MAX_SEC_PAYLOAD: usize = sealed_len(INNER_HEADER + MAX_AD + MAX_PLAINTEXT);

// A whole chat text, wrapped in its frame, fits one sealed frame, and a
// sealed frame fits what a connection reads by default.
const _: () = assert!(MAX_PLAINTEXT >= crate::api::MAX_TEXT + 512);
const _: () = assert!(MAX_SEC_PAYLOAD <= crate::frame::DEFAULT_MAX_PAYLOAD);

/// Bytes a record of `inner_len` bytes takes once sealed: one tag per chunk.
pub const fn sealed_len(inner_len: usize) -> usize {
    inner_len + TAG_LEN * inner_len.div_ceil(CHUNK_PLAINTEXT)
}

/// Noise messages (chunks) in a sealed payload of `sealed` bytes.
pub const fn chunk_count(sealed: usize) -> usize {
    sealed.div_ceil(NOISE_MAX_MESSAGE)
}

/// Why bytes are not a valid key, record or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureError {
    #[error("a key is {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
    #[error("a key's text form is exactly {} lowercase hex digits", 2 * KEY_LEN)]
    KeyText,
    #[error("I did not understand the message {0}")]
    Unknown(String),
    #[error("message {0} has the wrong arguments")]
    BadArguments(String),
    #[error("{field} {value:?} is not a valid name")]
    BadName { field: &'static str, value: String },
    #[error("handshake step {0} is not 1, 2 or 3")]
    BadStep(String),
    #[error("cipher {0:?} is not one this node speaks (only a first HELLO names one: AESGCM)")]
    BadCipher(String),
    #[error("{field} {value:?} is not a canonical decimal number in range")]
    BadNumber { field: &'static str, value: String },
    #[error("{kind} payload of {len} bytes is outside {min}..={max}")]
    PayloadSize {
        kind: &'static str,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("sealed payload's last chunk holds no plaintext")]
    EmptyChunk,
    #[error("counter {counter} leaves no nonce for {chunks} chunks")]
    CounterOverflow { counter: u64, chunks: usize },
    #[error("inner record: {0}")]
    Inner(&'static str),
}

/// Appends `bytes` to `out` as lowercase hex, two digits a byte. Writes
/// into the caller's buffer so that secrets (the key file's private key)
/// can be encoded into memory that is wiped.
pub fn hex_encode_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits; false
/// (and `out` unspecified) for anything else. The one spelling of a key's
/// text, for public and private keys alike.
pub fn hex_decode_into(text: &str, out: &mut [u8]) -> bool {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let raw = text.as_bytes();
    if raw.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

/// A node's long-term X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The key from its raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, SecureError> {
        bytes
            .try_into()
            .map(PublicKey)
            .map_err(|_| SecureError::KeyLength(bytes.len()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The text form, as the directory publishes it and the key file
    /// keeps it: exactly 64 lowercase hex digits (a valid frame argument).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(2 * KEY_LEN);
        hex_encode_into(&mut s, &self.0);
        s
    }

    /// Reads the text form. Anything else (upper case, a `0x` prefix, 63
    /// or 65 digits) is refused, so that one key has exactly one text and
    /// pins compare as strings too.
    pub fn from_text(text: &str) -> Result<PublicKey, SecureError> {
        let mut out = [0u8; KEY_LEN];
        if !hex_decode_into(text, &mut out) {
            return Err(SecureError::KeyText);
        }
        Ok(PublicKey(out))
    }

    /// The fingerprint people compare to verify this key.
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

impl FromStr for PublicKey {
    type Err = SecureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_text(s)
    }
}

/// Bytes of a fingerprint: 128 bits, enough against a second preimage and
/// short enough to read aloud.
pub const FINGERPRINT_LEN: usize = 16;

/// What people compare to check a key: BLAKE2s-256 over a domain tag and
/// the key, cut to [`FINGERPRINT_LEN`] bytes, shown as eight groups of four
/// hex digits (`3f2a 9c01 …`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

/// Domain tag of [`fingerprint`], so the hash of a key here is never the
/// hash of the same bytes used elsewhere.
const FINGERPRINT_TAG: &[u8] = b"roundtable fingerprint v1\0";

/// The fingerprint of `key`.
pub fn fingerprint(key: &PublicKey) -> Fingerprint {
    let digest = Blake2s256::new()
        .chain_update(FINGERPRINT_TAG)
        .chain_update(key.0)
        .finalize();
    let mut out = [0u8; FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    Fingerprint(out)
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The Noise prologue of a handshake from `initiator` to `responder`: both
/// sides must agree on it or the handshake fails, which binds the names in
/// the `HELLO` frames (and the protocol version) to the keys.
pub fn prologue(initiator: &str, responder: &str) -> Vec<u8> {
    format!("{PROTOCOL} {initiator} {responder}").into_bytes()
}

/// The associated data of a transport frame: everything a relay or an
/// attacker could change around the ciphertext. Names never contain a
/// space ([`valid_name`]), so the encoding is unambiguous.
pub fn associated_data(kind: &str, from: &str, to: &str, epoch: u32, counter: u64) -> Vec<u8> {
    format!("{PROTOCOL} {kind} {from} {to} {epoch} {counter}").into_bytes()
}

/// The record sealed inside a `SEC` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner<'a> {
    /// [`FLAG_REKEY`] or 0.
    pub flags: u8,
    /// The routing fields as the sender saw them ([`associated_data`]).
    pub ad: &'a [u8],
    /// The message itself.
    pub plaintext: &'a [u8],
}

impl<'a> Inner<'a> {
    /// The record's bytes, ready to be encrypted.
    pub fn encode(&self) -> Result<Vec<u8>, SecureError> {
        let mut head = [0u8; RECORD_PREFIX];
        let at = Self::write_head(&mut head, self.flags, self.ad, self.plaintext.len())?;
        let mut out = Vec::with_capacity(RECORD_PREFIX - at + self.plaintext.len());
        out.extend_from_slice(&head[at..]);
        out.extend_from_slice(self.plaintext);
        Ok(out)
    }

    /// Writes the header and associated data of a record whose plaintext
    /// of `plaintext_len` bytes follows `prefix` directly, flush against its
    /// end; returns where in `prefix` the record starts. A plaintext built
    /// just after [`RECORD_PREFIX`] bytes of room is so sealed in place,
    /// without copying it into a record first.
    pub fn write_head(
        prefix: &mut [u8; RECORD_PREFIX],
        flags: u8,
        ad: &[u8],
        plaintext_len: usize,
    ) -> Result<usize, SecureError> {
        if flags & !FLAG_REKEY != 0 {
            return Err(SecureError::Inner("unknown flags"));
        }
        if ad.len() > MAX_AD {
            return Err(SecureError::Inner("associated data too long"));
        }
        if plaintext_len > MAX_PLAINTEXT {
            return Err(SecureError::Inner("plaintext too long"));
        }
        let at = RECORD_PREFIX - INNER_HEADER - ad.len();
        let head = &mut prefix[at..];
        head[0] = INNER_VERSION;
        head[1] = flags;
        // Both lengths are bounded above, so the casts cannot truncate.
        head[2..6].copy_from_slice(&(plaintext_len as u32).to_be_bytes());
        head[6..8].copy_from_slice(&(ad.len() as u16).to_be_bytes());
        head[INNER_HEADER..].copy_from_slice(ad);
        Ok(at)
    }

    /// Reads a decrypted record; every length must match exactly.
    pub fn parse(bytes: &'a [u8]) -> Result<Inner<'a>, SecureError> {
        let [version, flags, l0, l1, l2, l3, a0, a1, rest @ ..] = bytes else {
            return Err(SecureError::Inner("shorter than its header"));
        };
        if *version != INNER_VERSION {
            return Err(SecureError::Inner("unknown version"));
        }
        if flags & !FLAG_REKEY != 0 {
            return Err(SecureError::Inner("unknown flags"));
        }
        let pt_len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
        let ad_len = u16::from_be_bytes([*a0, *a1]) as usize;
        if ad_len > MAX_AD || pt_len > MAX_PLAINTEXT {
            return Err(SecureError::Inner("length beyond the limits"));
        }
        if rest.len() != ad_len + pt_len {
            return Err(SecureError::Inner("lengths do not match the record"));
        }
        let (ad, plaintext) = rest.split_at(ad_len);
        Ok(Inner {
            flags: *flags,
            ad,
            plaintext,
        })
    }
}

/// A Noise handshake message: `HELLO <len> <from> <to> <step> [<cipher>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub from: String,
    pub to: String,
    /// 1, 2 or 3: which message of the `XX` handshake this is.
    pub step: u8,
    /// The channel's cipher: named by step 1 only, ChaChaPoly on the
    /// others (the responder goes on with step 1's).
    pub cipher: Cipher,
    pub payload: Vec<u8>,
}

impl Hello {
    fn args(&self) -> Vec<String> {
        let mut v = vec![self.from.clone(), self.to.clone(), self.step.to_string()];
        v.extend(self.cipher.token().map(str::to_owned));
        v
    }
}

/// A sealed transport frame: `SEC <len> <from> <to> <epoch> <counter>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub from: String,
    pub to: String,
    /// How many times the sender has rekeyed.
    pub epoch: u32,
    /// The nonce of the first chunk; chunk `i` uses `counter + i`.
    pub counter: u64,
    /// One or more Noise messages (see the module doc).
    pub payload: Vec<u8>,
}

impl Sealed {
    /// The frame type, as bound into the associated data.
    pub const KIND: &'static str = "SEC";

    /// Noise messages in the payload, hence nonces it uses.
    pub fn chunks(&self) -> usize {
        chunk_count(self.payload.len())
    }

    /// The associated data this frame's record must carry.
    pub fn associated_data(&self) -> Vec<u8> {
        associated_data(Self::KIND, &self.from, &self.to, self.epoch, self.counter)
    }

    /// Checks the payload's shape: within limits, no empty chunk, and
    /// enough nonces left for every chunk (Noise reserves `u64::MAX`).
    pub fn validate(&self) -> Result<(), SecureError> {
        check_sealed_shape(self.payload.len(), self.counter)
    }
}

/// [`Sealed::validate`] on the payload's length alone, so a parser can
/// refuse a frame before copying its payload, and a reader that opens the
/// payload where it lies (see [`SecureFrame::parse_head`]) can check it.
pub fn check_sealed_shape(len: usize, counter: u64) -> Result<(), SecureError> {
    {
        let min = TAG_LEN + INNER_HEADER;
        if !(min..=MAX_SEC_PAYLOAD).contains(&len) {
            return Err(SecureError::PayloadSize {
                kind: Sealed::KIND,
                len,
                min,
                max: MAX_SEC_PAYLOAD,
            });
        }
        let last = len % NOISE_MAX_MESSAGE;
        if last != 0 && last <= TAG_LEN {
            return Err(SecureError::EmptyChunk);
        }
        let chunks = chunk_count(len);
        if counter > u64::MAX - chunks as u64 {
            return Err(SecureError::CounterOverflow { counter, chunks });
        }
        Ok(())
    }
}

/// A frame of the secure overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureFrame {
    Hello(Hello),
    Sealed(Sealed),
}

fn name(field: &'static str, value: &str) -> Result<String, SecureError> {
    if valid_name(value) {
        Ok(value.to_owned())
    } else {
        Err(SecureError::BadName {
            field,
            value: value.to_owned(),
        })
    }
}

/// A decimal number without sign or leading zero (so each number has one
/// spelling and a frame re-encodes to the same bytes).
fn number<T: FromStr>(field: &'static str, text: &str) -> Result<T, SecureError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical
        .then(|| text.parse().ok())
        .flatten()
        .ok_or_else(|| SecureError::BadNumber {
            field,
            value: text.to_owned(),
        })
}

impl SecureFrame {
    /// Interprets a decoded frame. A frame of another type is
    /// [`SecureError::Unknown`], so a caller can pass it on to the chat
    /// protocol's parser.
    pub fn parse(f: &Frame) -> Result<SecureFrame, SecureError> {
        let mut parsed = Self::parse_header(f, f.payload.len())?;
        *parsed.payload_mut() = f.payload.clone();
        Ok(parsed)
    }

    /// Like [`parse`](Self::parse), taking the frame so the payload (up to
    /// 67 KiB) is moved rather than copied on the hot path.
    pub fn parse_owned(mut f: Frame) -> Result<SecureFrame, SecureError> {
        let payload = std::mem::take(&mut f.payload);
        let mut parsed = Self::parse_header(&f, payload.len())?;
        *parsed.payload_mut() = payload;
        Ok(parsed)
    }

    /// Checks a frame's header decoded in place ([`crate::frame::decode_head`])
    /// exactly as [`parse`](Self::parse) checks the whole frame, the
    /// payload's length included; the result has an empty payload, which
    /// stays in the reader's buffer (`buf[head.start..head.end()]`) to be
    /// opened there: a file's records are not copied out first.
    pub fn parse_head(head: &Head<'_>) -> Result<SecureFrame, SecureError> {
        Self::parse_fields(head.kind, head.args(), head.len)
    }

    fn payload_mut(&mut self) -> &mut Vec<u8> {
        match self {
            SecureFrame::Hello(h) => &mut h.payload,
            SecureFrame::Sealed(s) => &mut s.payload,
        }
    }

    /// Checks everything but the payload's bytes (its length is `len`);
    /// the result has an empty payload.
    fn parse_header(f: &Frame, len: usize) -> Result<SecureFrame, SecureError> {
        Self::parse_fields(&f.kind, f.args.iter().map(String::as_str), len)
    }

    fn parse_fields<'a>(
        kind: &str,
        args: impl Iterator<Item = &'a str>,
        len: usize,
    ) -> Result<SecureFrame, SecureError> {
        let bad = || SecureError::BadArguments(kind.to_owned());
        // Gathered without an allocation (this runs for every sealed frame):
        // one slot more than any frame takes, so that a frame with too many
        // arguments still matches no shape below.
        let mut fields = [""; 5];
        let mut n = 0;
        for a in args.take(fields.len()) {
            fields[n] = a;
            n += 1;
        }
        let args = &fields[..n];
        match kind {
            "HELLO" => {
                let (from, to, step, cipher) = match *args {
                    [from, to, step] => (from, to, step, None),
                    [from, to, step, cipher] => (from, to, step, Some(cipher)),
                    _ => return Err(bad()),
                };
                let step = match step {
                    "1" => 1,
                    "2" => 2,
                    "3" => 3,
                    other => return Err(SecureError::BadStep(other.to_owned())),
                };
                // One spelling per frame: ChaChaPoly is never named.
                let cipher = match cipher {
                    None => Cipher::ChaChaPoly,
                    Some("AESGCM") if step == 1 => Cipher::AesGcm,
                    Some(other) => return Err(SecureError::BadCipher(other.to_owned())),
                };
                if len == 0 || len > MAX_HELLO_PAYLOAD {
                    return Err(SecureError::PayloadSize {
                        kind: "HELLO",
                        len,
                        min: 1,
                        max: MAX_HELLO_PAYLOAD,
                    });
                }
                Ok(SecureFrame::Hello(Hello {
                    from: name("sender", from)?,
                    to: name("destination", to)?,
                    step,
                    cipher,
                    payload: Vec::new(),
                }))
            }
            "SEC" => {
                let [from, to, epoch, counter] = *args else {
                    return Err(bad());
                };
                let counter = number("counter", counter)?;
                check_sealed_shape(len, counter)?;
                Ok(SecureFrame::Sealed(Sealed {
                    from: name("sender", from)?,
                    to: name("destination", to)?,
                    epoch: number("epoch", epoch)?,
                    counter,
                    payload: Vec::new(),
                }))
            }
            other => Err(SecureError::Unknown(other.to_owned())),
        }
    }

    /// The frame to send, taking the payload without a copy.
    pub fn into_frame(self) -> Frame {
        match self {
            SecureFrame::Hello(h) => Frame::new("HELLO", h.args(), h.payload),
            SecureFrame::Sealed(s) => Frame::new(
                Sealed::KIND,
                [s.from, s.to, s.epoch.to_string(), s.counter.to_string()],
                s.payload,
            ),
        }
    }

    /// The frame to send.
    pub fn to_frame(&self) -> Frame {
        match self {
            SecureFrame::Hello(h) => Frame::new("HELLO", h.args(), h.payload.clone()),
            SecureFrame::Sealed(s) => Frame::new(
                Sealed::KIND,
                [
                    s.from.clone(),
                    s.to.clone(),
                    s.epoch.to_string(),
                    s.counter.to_string(),
                ],
                s.payload.clone(),
            ),
        }
    }
}

/// Packs frames (the chat and request frames two nodes exchange) into
/// plaintexts for [`Sealed`] frames: as many whole frames per plaintext as
/// fit in [`MAX_PLAINTEXT`], so that a batch of small messages costs a few
/// AEAD operations, not one each. A frame is never split; one larger than
/// [`MAX_PLAINTEXT`] on its own is refused.
pub fn pack(frames: &[Frame]) -> Result<Vec<Vec<u8>>, SecureError> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut one = Vec::new();
    for f in frames {
        one.clear();
        f.encode_into(&mut one)
            .map_err(|_| SecureError::Inner("a frame cannot be encoded"))?;
        if one.len() > MAX_PLAINTEXT {
            return Err(SecureError::Inner("a frame is larger than a sealed record"));
        }
        match out.last_mut() {
            Some(cur) if cur.len() + one.len() <= MAX_PLAINTEXT => cur.extend_from_slice(&one),
            _ => out.push(one.clone()),
        }
    }
    Ok(out)
}

/// The frames of a plaintext made by [`pack`]: one or more whole frames
/// within `limits`, nothing left over.
pub fn unpack(plaintext: &[u8], limits: &crate::frame::Limits) -> Result<Vec<Frame>, SecureError> {
    let (frames, used) = crate::frame::decode_all(plaintext, limits)
        .map_err(|_| SecureError::Inner("sealed plaintext is not a sequence of frames"))?;
    if used != plaintext.len() || frames.is_empty() {
        return Err(SecureError::Inner("sealed plaintext ends inside a frame"));
    }
    Ok(frames)
}

/// Decodes every frame in `data`, parses each as a secure frame, and
/// checks that whatever parses re-encodes to the same frame and obeys the
/// size limits, and that a header checked in place
/// ([`SecureFrame::parse_head`]) gives what the whole frame does; also reads
/// `data`, each payload and each argument as a sealed record or a key text.
/// The fuzz target `secure_frames` runs this; it is here so that normal
/// tests build and run the same code path.
pub fn decode_and_parse(data: &[u8]) {
    use crate::frame::{decode, decode_all, decode_head, Decoded, Limits};
    let inner = |bytes: &[u8]| {
        if let Ok(rec) = Inner::parse(bytes) {
            assert_eq!(
                rec.encode().as_deref(),
                Ok(bytes),
                "record re-encodes differently"
            );
        }
    };
    inner(data);
    if let Ok(frames) = unpack(data, &Limits::default()) {
        // Frames decoded within the default limits may still exceed a
        // sealed record; those that fit pack and unpack to themselves.
        if let Ok(packed) = pack(&frames) {
            let again: Vec<Frame> = packed
                .iter()
                .flat_map(|p| unpack(p, &Limits::default()).expect("packed plaintext unpacks"))
                .collect();
            assert_eq!(again, frames, "frames do not survive pack and unpack");
        }
    }
    for limits in [
        Limits::default(),
        Limits {
            max_header: 64,
            max_payload: 64,
        },
    ] {
        let mut rest = data;
        while let Ok(Some(head)) = decode_head(rest, &limits) {
            let Ok(Decoded::Frame(whole, used)) = decode(rest, &limits) else {
                panic!("a frame's head decodes, the frame does not");
            };
            assert_eq!(used, head.end());
            let copied = SecureFrame::parse(&whole).map(|mut p| {
                p.payload_mut().clear();
                p
            });
            assert_eq!(SecureFrame::parse_head(&head), copied, "in place differs");
            rest = &rest[used..];
        }
        let Ok((frames, _)) = decode_all(data, &limits) else {
            continue;
        };
        for f in &frames {
            inner(&f.payload);
            for arg in &f.args {
                if let Ok(key) = PublicKey::from_text(arg) {
                    assert_eq!(&key.to_text(), arg, "key text is not canonical");
                }
            }
            let Ok(parsed) = SecureFrame::parse(f) else {
                continue;
            };
            let again = parsed.to_frame();
            assert_eq!(&again, f, "{parsed:?} re-encodes differently");
            assert_eq!(SecureFrame::parse_owned(f.clone()).as_ref(), Ok(&parsed));
            assert_eq!(&parsed.clone().into_frame(), f);
            match &parsed {
                SecureFrame::Hello(h) => assert!(h.payload.len() <= MAX_HELLO_PAYLOAD),
                SecureFrame::Sealed(x) => {
                    assert!(x.payload.len() <= MAX_SEC_PAYLOAD);
                    assert!(x.counter.checked_add(x.chunks() as u64).is_some());
                    assert!(x.validate().is_ok());
                }
            }
        }
    }
}

/// Proptest strategies for the overlay's frames, shared by the tests of
/// this module and of the directory's relay frames.
#[cfg(test)]
pub(crate) mod arb {
    use super::{Cipher, Hello, Sealed, SecureFrame, INNER_HEADER, MAX_HELLO_PAYLOAD, TAG_LEN};
    use proptest::prelude::*;

    /// A valid node name.
    pub fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,64}"
    }

    /// A valid `HELLO` or `SEC` frame (a sealed payload of valid shape).
    pub fn frame() -> impl Strategy<Value = SecureFrame> {
        prop_oneof![
            (
                name(),
                name(),
                1u8..=3,
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 1..=MAX_HELLO_PAYLOAD)
            )
                .prop_map(|(from, to, step, aes, payload)| SecureFrame::Hello(Hello {
                    from,
                    to,
                    step,
                    // Only a first HELLO names a cipher.
                    cipher: if aes && step == 1 {
                        Cipher::AesGcm
                    } else {
                        Cipher::ChaChaPoly
                    },
                    payload
                })),
            (
                name(),
                name(),
                any::<u32>(),
                0..u64::MAX - 2,
                proptest::collection::vec(any::<u8>(), TAG_LEN + INNER_HEADER..2048)
            )
                .prop_map(|(from, to, epoch, counter, payload)| SecureFrame::Sealed(
                    Sealed {
                        from,
                        to,
                        epoch,
                        counter,
                        payload
                    }
                )),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, Decoded, Limits};
    use proptest::prelude::*;

    #[test]
    fn key_text_round_trips_and_is_canonical() {
        let key = PublicKey([0xa7; KEY_LEN]);
        let text = key.to_text();
        assert_eq!(text, "a7".repeat(KEY_LEN));
        assert_eq!(PublicKey::from_text(&text), Ok(key));
        // Wrong length, upper case, a prefix, non-hex.
        assert!(PublicKey::from_text(&text[..63]).is_err());
        assert!(PublicKey::from_text(&format!("{text}0")).is_err());
        assert!(PublicKey::from_text(&text.to_uppercase()).is_err());
        assert!(PublicKey::from_text(&format!("0x{}", &text[2..])).is_err());
        assert!(PublicKey::from_text(&"g".repeat(64)).is_err());
    }

    #[test]
    fn fingerprint_is_eight_groups_and_depends_on_every_byte() {
        let a = PublicKey([0; KEY_LEN]);
        let mut b_bytes = [0; KEY_LEN];
        b_bytes[31] = 1;
        let shown = a.fingerprint().to_string();
        assert_eq!(shown.len(), 8 * 4 + 7);
        assert_eq!(shown.split(' ').count(), 8);
        assert!(shown
            .split(' ')
            .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_hexdigit())));
        assert_ne!(a.fingerprint(), PublicKey(b_bytes).fingerprint());
        assert_eq!(a.fingerprint(), fingerprint(&a));
    }

    #[test]
    fn sealed_sizes_cover_the_largest_chat_text() {
        assert_eq!(chunk_count(MAX_SEC_PAYLOAD), 2);
        assert_eq!(sealed_len(CHUNK_PLAINTEXT), NOISE_MAX_MESSAGE);
        assert_eq!(
            sealed_len(CHUNK_PLAINTEXT + 1),
            NOISE_MAX_MESSAGE + 1 + TAG_LEN
        );
    }

    #[test]
    fn associated_data_differs_in_every_field() {
        let base = associated_data("SEC", "alice", "bob", 0, 5);
        for other in [
            associated_data("REL", "alice", "bob", 0, 5),
            associated_data("SEC", "carol", "bob", 0, 5),
            associated_data("SEC", "alice", "carol", 0, 5),
            associated_data("SEC", "bob", "alice", 0, 5),
            associated_data("SEC", "alice", "bob", 1, 5),
            associated_data("SEC", "alice", "bob", 0, 6),
        ] {
            assert_ne!(base, other);
        }
        assert!(
            associated_data("SEC", &"a".repeat(64), &"b".repeat(64), u32::MAX, u64::MAX).len()
                <= MAX_AD
        );
    }

    #[test]
    fn inner_record_rejects_inconsistent_lengths() {
        let rec = Inner {
            flags: FLAG_REKEY,
            ad: b"ad",
            plaintext: b"hello",
        };
        let bytes = rec.encode().unwrap();
        assert_eq!(Inner::parse(&bytes), Ok(rec));
        assert!(Inner::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Inner::parse(&longer).is_err());
        let mut flags = bytes.clone();
        flags[1] = 0x80;
        assert!(Inner::parse(&flags).is_err());
        let mut version = bytes;
        version[0] = 2;
        assert!(Inner::parse(&version).is_err());
    }

    #[test]
    fn frames_refuse_bad_fields() {
        let parse = |wire: &[u8]| match decode(wire, &Limits::default()).unwrap() {
            Decoded::Frame(f, _) => SecureFrame::parse(&f),
            Decoded::NeedMore => panic!("incomplete"),
        };
        assert!(parse(b"HELLO 1 alice bob 1\nx").is_ok());
        assert!(matches!(
            parse(b"HELLO 1 alice bob 4\nx"),
            Err(SecureError::BadStep(_))
        ));
        assert!(matches!(
            parse(b"HELLO 0 alice bob 1\n"),
            Err(SecureError::PayloadSize { .. })
        ));
        assert!(matches!(
            parse(b"HELLO 1 al/ce bob 1\nx"),
            Err(SecureError::BadName { .. })
        ));
        assert!(matches!(
            parse(b"HELLO 1 alice bob\nx"),
            Err(SecureError::BadArguments(_))
        ));
        // A cipher: AESGCM, named by a first HELLO only, once; ChaChaPoly
        // is the default and never spelled out.
        assert_eq!(
            parse(b"HELLO 1 alice bob 1 AESGCM\nx"),
            Ok(SecureFrame::Hello(Hello {
                from: "alice".into(),
                to: "bob".into(),
                step: 1,
                cipher: Cipher::AesGcm,
                payload: b"x".to_vec(),
            }))
        );
        for refused in [
            &b"HELLO 1 alice bob 2 AESGCM\nx"[..],
            b"HELLO 1 alice bob 1 ChaChaPoly\nx",
            b"HELLO 1 alice bob 1 aesgcm\nx",
            b"HELLO 1 alice bob 1 DES\nx",
        ] {
            assert!(
                matches!(parse(refused), Err(SecureError::BadCipher(_))),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(matches!(
            parse(b"HELLO 1 alice bob 1 AESGCM AESGCM\nx"),
            Err(SecureError::BadArguments(_))
        ));
        // Another protocol's frame is Unknown however many arguments it has.
        assert!(matches!(
            parse(b"MSG 1 a b c d e f\nx"),
            Err(SecureError::Unknown(_))
        ));
        let body = [0u8; 40];
        let sec = |args: &str| {
            let mut w = format!("SEC 40 {args}\n").into_bytes();
            w.extend_from_slice(&body);
            parse(&w)
        };
        assert!(sec("alice bob 0 0").is_ok());
        assert!(matches!(
            sec("alice bob 0 01"),
            Err(SecureError::BadNumber { .. })
        ));
        assert!(matches!(
            sec("alice bob -1 0"),
            Err(SecureError::BadNumber { .. })
        ));
        assert!(matches!(
            sec("alice bob 4294967296 0"),
            Err(SecureError::BadNumber { .. })
        ));
        assert!(matches!(
            sec(&format!("alice bob 0 {}", u64::MAX)),
            Err(SecureError::CounterOverflow { .. })
        ));
        assert!(matches!(
            parse(b"SEC 3 alice bob 0 0\nabc"),
            Err(SecureError::PayloadSize { .. })
        ));
        assert!(matches!(
            parse(b"MSG 0 alice 1\n"),
            Err(SecureError::Unknown(_))
        ));
    }

    #[test]
    fn frames_pack_into_few_records_and_unpack_whole() {
        use crate::frame::Limits;
        let frames: Vec<Frame> = (0..3000)
            .map(|i| Frame::new("MSG", ["alice", &format!("id{i}")], "hello there"))
            .collect();
        let packed = pack(&frames).unwrap();
        assert!(
            packed.len() > 1 && packed.len() < 10,
            "{} records",
            packed.len()
        );
        assert!(packed.iter().all(|p| p.len() <= MAX_PLAINTEXT));
        let back: Vec<Frame> = packed
            .iter()
            .flat_map(|p| unpack(p, &Limits::default()).unwrap())
            .collect();
        assert_eq!(back, frames);
        // A record cut inside a frame, or holding none, is refused.
        let first = &packed[0];
        assert!(unpack(&first[..first.len() - 1], &Limits::default()).is_err());
        assert!(unpack(b"", &Limits::default()).is_err());
        let huge = Frame::new("MSG", ["a", "b"], vec![b'x'; MAX_PLAINTEXT]);
        assert!(pack(&[huge]).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_the_wire(frame in arb::frame()) {
            let wire = frame.to_frame().encode().unwrap();
            match decode(&wire, &Limits::default()).unwrap() {
                Decoded::Frame(f, used) => {
                    prop_assert_eq!(used, wire.len());
                    prop_assert_eq!(SecureFrame::parse(&f), Ok(frame.clone()));
                    prop_assert_eq!(SecureFrame::parse_owned(f), Ok(frame.clone()));
                    prop_assert_eq!(frame.clone().into_frame(), frame.to_frame());
                }
                Decoded::NeedMore => prop_assert!(false, "incomplete"),
            }
        }

        #[test]
        fn key_text_round_trips(bytes in any::<[u8; KEY_LEN]>()) {
            let key = PublicKey(bytes);
            prop_assert_eq!(PublicKey::from_text(&key.to_text()), Ok(key));
        }

        #[test]
        fn inner_parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(rec) = Inner::parse(&bytes) {
                prop_assert_eq!(rec.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn decode_and_parse_holds_on_frames_and_noise(
            frame in arb::frame(),
            noise in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut wire = frame.to_frame().encode().unwrap();
            decode_and_parse(&wire);
            wire.extend_from_slice(&noise);
            decode_and_parse(&wire);
            decode_and_parse(&noise);
        }

        #[test]
        fn sec_parse_never_panics(args in proptest::collection::vec("[ -~]{0,24}", 0..6), len in 0usize..100) {
            let args: Vec<String> = args.into_iter().filter(|a| !a.is_empty() && !a.contains(' ')).collect();
            let f = Frame { kind: "SEC".into(), args, payload: vec![0; len] };
            let _ = SecureFrame::parse(&f);
        }
    }
}
