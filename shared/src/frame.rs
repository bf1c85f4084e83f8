//! The eurechat frame: `TYPE SP LEN [SP ARG]* LF PAYLOAD`.
//!
//! Pure and incremental: [`decode`] looks at the bytes received so far and
//! says whether they hold a whole frame (and how many bytes it used), need
//! more bytes, or can never become a valid frame. Limits are checked before
//! anything is allocated, and a header is rejected as soon as its first bad
//! byte arrives rather than after the whole line.

use std::fmt;

/// Longest header line accepted by default, LF included.
pub const DEFAULT_MAX_HEADER: usize = 4 * 1024;
/// Largest payload accepted by default (text traffic).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Bounds a decoder enforces before it allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum header length in bytes, including the terminating LF.
    pub max_header: usize,
    /// Maximum payload length in bytes.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: DEFAULT_MAX_HEADER,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// One eurechat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The message type, e.g. `USER` or `MESSAGE`: one or more `[A-Za-z0-9_]`.
    pub kind: String,
    /// Space-separated arguments; none contains a space, CR or LF.
    pub args: Vec<String>,
    /// The payload: any bytes (UTF-8 for chat text).
    pub payload: Vec<u8>,
}

/// Why bytes can never become a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("header longer than {max} bytes")]
    HeaderTooLong { max: usize },
    #[error("invalid byte 0x{byte:02x} in message type")]
    BadType { byte: u8 },
    #[error("empty message type")]
    EmptyType,
    #[error("invalid payload length")]
    BadLength,
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: u64, max: usize },
    #[error("header is not valid UTF-8")]
    NotUtf8,
    #[error("control byte 0x{byte:02x} in argument")]
    BadArgument { byte: u8 },
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message type {0:?} must be one or more of [A-Za-z0-9_]")]
    BadType(String),
    #[error("argument {0:?} must be non-empty and contain no space, CR, LF or control byte")]
    BadArgument(String),
}

/// What the bytes seen so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, and the number of bytes it used from the start of the buffer.
    Frame(Frame, usize),
    /// Not enough bytes yet: read more and call again with the longer buffer.
    NeedMore,
}

fn is_type_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_arg_byte(b: u8) -> bool {
    // Anything but space and ASCII control bytes (CR, LF, tab, NUL, ...).
    b != b' ' && b != 0x7f && b >= 0x20
}

/// Checks the header bytes present so far (no LF among them) for a byte that
/// can never start a valid header, so that garbage is refused at once.
fn check_partial_header(head: &[u8]) -> Result<(), FrameError> {
    let mut state = 0u8; // 0 type, 1 length, 2 args
    for (i, &b) in head.iter().enumerate() {
        match state {
            0 if is_type_byte(b) => {}
            0 if b == b' ' && i > 0 => state = 1,
            0 if b == b' ' => return Err(FrameError::EmptyType),
            0 => return Err(FrameError::BadType { byte: b }),
            1 if b.is_ascii_digit() => {}
            1 if b == b' ' && head[i - 1] != b' ' => state = 2,
            // A CR may only come right before the LF (CRLF line endings).
            1 | 2 if b == b'\r' && i + 1 == head.len() => {}
            1 => return Err(FrameError::BadLength),
            _ if b == b' ' || is_arg_byte(b) || b >= 0x80 => {}
            _ => return Err(FrameError::BadArgument { byte: b }),
        }
    }
    Ok(())
}

/// A whole frame's header, decoded in place: its payload is
/// `buf[start..start + len]` of the buffer it was decoded from. For readers
/// that take the payload without a copy (a file's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The message type.
    pub kind: &'a str,
    /// The header line after the type and length: the arguments, separated
    /// by spaces (see [`Head::args`]).
    rest: &'a str,
    /// Where the payload starts (just past the header's LF).
    pub start: usize,
    /// The payload's length.
    pub len: usize,
}

impl<'a> Head<'a> {
    /// The arguments.
    pub fn args(&self) -> impl Iterator<Item = &'a str> {
        self.rest.split(' ').filter(|a| !a.is_empty())
    }

    /// Bytes the whole frame takes from the start of the buffer.
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// Decodes the header of at most one frame from the start of `buf`: `None`
/// until the whole frame (header and payload) is there.
///
/// Never panics and never allocates, whatever the input.
pub fn decode_head<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<Head<'a>>, FrameError> {
    let window = &buf[..buf.len().min(limits.max_header)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        check_partial_header(window)?;
        if buf.len() >= limits.max_header {
            return Err(FrameError::HeaderTooLong {
                max: limits.max_header,
            });
        }
        return Ok(None);
    };
    let mut line = &buf[..lf];
    check_partial_header(line)?;
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    let line = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    if kind.is_empty() {
        return Err(FrameError::EmptyType);
    }
    let (len_text, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if len_text.is_empty() {
        return Err(FrameError::BadLength);
    }
    let len = len_text
        .bytes()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(FrameError::PayloadTooLarge {
            len: u64::MAX,
            max: limits.max_payload,
        })?;
    if len > limits.max_payload as u64 {
        return Err(FrameError::PayloadTooLarge {
            len,
            max: limits.max_payload,
        });
    }
    // Bounded by max_payload above, so this fits in usize.
    let len = len as usize;
    let start = lf + 1;
    if buf.len() - start < len {
        return Ok(None);
    }
    Ok(Some(Head {
        kind,
        rest,
        start,
        len,
    }))
}

/// Decodes at most one frame from the start of `buf`.
///
/// Never panics and never allocates more than the limits allow, whatever
/// the input.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Decoded, FrameError> {
    Ok(match decode_head(buf, limits)? {
        None => Decoded::NeedMore,
        Some(h) => Decoded::Frame(
            Frame {
                kind: h.kind.to_owned(),
                args: h.args().map(str::to_owned).collect(),
                payload: buf[h.start..h.end()].to_vec(),
            },
            h.end(),
        ),
    })
}

/// Appends the header line of a frame of type `kind` with a payload of
/// `len` bytes and the arguments `args`, all already valid (see
/// [`Frame::validate`]).
pub fn encode_head<'a>(
    out: &mut Vec<u8>,
    kind: &str,
    len: usize,
    args: impl IntoIterator<Item = &'a str>,
) {
    out.extend_from_slice(kind.as_bytes());
    out.push(b' ');
    out.extend_from_slice(len.to_string().as_bytes());
    for arg in args {
        out.push(b' ');
        out.extend_from_slice(arg.as_bytes());
    }
    out.push(b'\n');
}

impl Frame {
    /// A frame with the given type, arguments and payload.
    pub fn new(
        kind: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        Frame {
            kind: kind.into(),
            args: args.into_iter().map(Into::into).collect(),
            payload: payload.into(),
        }
    }

    /// A frame with no arguments.
    pub fn bare(kind: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Frame {
            kind: kind.into(),
            args: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Checks that the frame can be encoded unambiguously.
    pub fn validate(&self) -> Result<(), EncodeError> {
        if self.kind.is_empty() || !self.kind.bytes().all(is_type_byte) {
            return Err(EncodeError::BadType(self.kind.clone()));
        }
        if let Some(bad) = self
            .args
            .iter()
            .find(|a| a.is_empty() || !a.bytes().all(|b| is_arg_byte(b) || b >= 0x80))
        {
            return Err(EncodeError::BadArgument(bad.clone()));
        }
        Ok(())
    }

    /// The payload as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// Appends the wire form of the frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        out.reserve(self.kind.len() + 24 + self.payload.len());
        encode_head(
            out,
            &self.kind,
            self.payload.len(),
            self.args.iter().map(String::as_str),
        );
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// The wire form of the frame.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

impl fmt::Display for Frame {
    /// A readable one-line summary for logs (the payload is not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.payload.len())?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// Decodes every whole frame in `buf`, returning them and the bytes used.
/// Stops at the first incomplete frame; errors on the first bad one.
pub fn decode_all(buf: &[u8], limits: &Limits) -> Result<(Vec<Frame>, usize), FrameError> {
    let mut frames = Vec::new();
    let mut used = 0;
    while used < buf.len() {
        match decode(&buf[used..], limits)? {
            Decoded::Frame(f, n) => {
                frames.push(f);
                used += n;
            }
            Decoded::NeedMore => break,
        }
    }
    Ok((frames, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn encodes_like_the_original() {
        let m = Frame::new("MESSAGE", ["sender"], "Hello world!");
        assert_eq!(m.encode().unwrap(), b"MESSAGE 12 sender\nHello world!");
        assert_eq!(Frame::bare("PING", "").encode().unwrap(), b"PING 0\n");
        let ack = Frame::bare("ACK", "hi corrado, authentication required");
        assert_eq!(
            ack.encode().unwrap(),
            b"ACK 35\nhi corrado, authentication required"
        );
    }

    #[test]
    fn decodes_two_messages_in_one_buffer() {
        let (frames, used) =
            decode_all(b"LOGIN 0 username\nPASS 0 password\nTRUNC", &lim()).unwrap();
        assert_eq!(used, 33);
        assert_eq!(frames[0], Frame::new("LOGIN", ["username"], ""));
        assert_eq!(frames[1], Frame::new("PASS", ["password"], ""));
    }

    #[test]
    fn payload_may_hold_newlines_and_binary() {
        let buf = b"MESSAGE 5 bob\na\nb\x00\xffREST";
        match decode(buf, &lim()).unwrap() {
            Decoded::Frame(f, n) => {
                assert_eq!(f.payload, b"a\nb\x00\xff");
                assert_eq!(&buf[n..], b"REST");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn needs_more_until_payload_complete() {
        assert_eq!(decode(b"MESSAGE 12 al", &lim()).unwrap(), Decoded::NeedMore);
        assert_eq!(
            decode(b"MESSAGE 12 alice\nHello", &lim()).unwrap(),
            Decoded::NeedMore
        );
        assert_eq!(decode(b"", &lim()).unwrap(), Decoded::NeedMore);
    }

    #[test]
    fn accepts_crlf_and_repeated_spaces_between_args() {
        match decode(b"BIND 0 127.0.0.1  5555\r\n", &lim()).unwrap() {
            Decoded::Frame(f, n) => {
                assert_eq!(f.args, ["127.0.0.1", "5555"]);
                assert_eq!(n, 24);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_garbage_at_its_first_bad_byte() {
        assert_eq!(
            decode(b"\x01\x00\x00", &lim()),
            Err(FrameError::BadType { byte: 1 })
        );
        assert_eq!(decode(b" USER", &lim()), Err(FrameError::EmptyType));
        assert_eq!(decode(b"USER x", &lim()), Err(FrameError::BadLength));
        assert_eq!(decode(b"USER \n", &lim()), Err(FrameError::BadLength));
        assert_eq!(decode(b"USER\n", &lim()), Err(FrameError::BadLength));
        assert_eq!(decode(b"USER  0\n", &lim()), Err(FrameError::BadLength));
        assert_eq!(
            decode(b"USER 0 a\tb", &lim()),
            Err(FrameError::BadArgument { byte: 9 })
        );
        assert_eq!(
            decode(b"USER 0 a\rb\n", &lim()),
            Err(FrameError::BadArgument { byte: 13 })
        );
        assert_eq!(
            decode(b"USER 0 \xff\xfe\n", &lim()),
            Err(FrameError::NotUtf8)
        );
    }

    #[test]
    fn enforces_limits_before_allocating() {
        let l = Limits {
            max_header: 16,
            max_payload: 10,
        };
        assert_eq!(
            decode(b"MESSAGE 11 bob\n", &l),
            Err(FrameError::PayloadTooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            decode(b"MESSAGE 99999999999999999999999\n", &lim()),
            Err(FrameError::PayloadTooLarge {
                len: u64::MAX,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
        assert_eq!(
            decode(b"MESSAGE 1 aaaaaaaaaaaaaaaaaaaa", &l),
            Err(FrameError::HeaderTooLong { max: 16 })
        );
        // Exactly at the limit is fine.
        assert!(matches!(
            decode(b"M 0 aaaaaaaaaaa\n", &l),
            Ok(Decoded::Frame(..))
        ));
    }

    #[test]
    fn refuses_to_encode_ambiguous_frames() {
        assert!(Frame::new("MESSAGE", ["two words"], "").encode().is_err());
        assert!(Frame::new("MESSAGE", [""], "").encode().is_err());
        assert!(Frame::new("MESS AGE", Vec::<String>::new(), "")
            .encode()
            .is_err());
        assert!(Frame::bare("", "").encode().is_err());
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            "[A-Za-z0-9_]{1,12}",
            proptest::collection::vec("[!-~\u{a0}-\u{2000}]{1,10}", 0..5),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, args, payload)| Frame {
                kind,
                args,
                payload,
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(f in arb_frame()) {
            let bytes = f.encode().unwrap();
            prop_assert_eq!(decode(&bytes, &lim()).unwrap(), Decoded::Frame(f, bytes.len()));
        }

        #[test]
        fn any_split_decodes_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                f.encode_into(&mut stream).unwrap();
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            // Feed the stream read by read, as a connection would.
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&stream[fed..cut]);
                fed = cut;
                let (mut fs, used) = decode_all(&buf, &lim()).unwrap();
                got.append(&mut fs);
                buf.drain(..used);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), max_header in 1usize..64, max_payload in 0usize..64) {
            let l = Limits { max_header, max_payload };
            if let Ok(Decoded::Frame(f, n)) = decode(&bytes, &l) {
                prop_assert!(n <= bytes.len());
                prop_assert!(f.payload.len() <= max_payload);
            }
        }

        #[test]
        fn header_like_bytes_never_panic(s in "[A-Z]{0,5}( [0-9]{0,4})?( [a-z\r]{0,3}){0,3}\r?\n?[a-z]{0,10}") {
            let _ = decode(s.as_bytes(), &lim());
        }
    }
}
