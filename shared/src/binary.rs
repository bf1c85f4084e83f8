//! NVIDIA FLARE's binary exchange (`nvflare.fuel.hci.binary_proto`,
//! protocols.md §3), byte-compatible, as a pure incremental codec.
//!
//! ```text
//! [marker: u8 = 1] [meta_size: u32 BE] [body_size: u64 BE] [meta] [body]
//! [end_marker: u32 BE = 0] [checksum: u32 BE = CRC-32 of the body]
//! ```
//!
//! The [`Decoder`] is fed whatever bytes arrived and hands back the head
//! (sizes and meta) once, then the body as slices of the caller's input
//! (never copied, so memory stays flat at any body size), then the end,
//! having checked the end marker and the CRC-32 (`crc32fast`, the standard
//! IEEE CRC that NVFlare's `zlib.crc32` computes). It decodes the same
//! under any split of the stream. Unlike the original, it bounds the meta
//! section ([`Limits::max_meta`]; NVFlare allocates whatever `meta_size`
//! claims) and the body ([`Limits::max_body`]) before a byte of them
//! arrives, and says what is wrong in words.
//!
//! A caller streaming the body to disk keeps it invisible until
//! [`Step::Done`]: an error at any point means the partial data must be
//! discarded.

/// The first byte of a binary exchange (a text exchange starts otherwise).
pub const MARKER: u8 = 1;
/// Marker, meta size and body size.
pub const HEADER_LEN: usize = 1 + 4 + 8;
/// End marker and checksum.
pub const FOOTER_LEN: usize = 4 + 4;

/// How much a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest meta section. NVFlare's own metas are a few hundred bytes
    /// of JSON at most.
    pub max_meta: u32,
    /// Largest body.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_meta: 64 * 1024,
            max_body: 1 << 40,
        }
    }
}

/// The sizes a header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub meta_size: u32,
    pub body_size: u64,
}

impl Header {
    /// The header's 13 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = MARKER;
        out[1..5].copy_from_slice(&self.meta_size.to_be_bytes());
        out[5..13].copy_from_slice(&self.body_size.to_be_bytes());
        out
    }

    /// Reads a header, within `limits`.
    pub fn parse(b: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, BinaryError> {
        if b[0] != MARKER {
            return Err(BinaryError::NotBinary(b[0]));
        }
        let meta_size = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let body_size = u64::from_be_bytes([b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12]]);
        if meta_size > limits.max_meta {
            return Err(BinaryError::MetaTooLarge {
                size: meta_size,
                max: limits.max_meta,
            });
        }
        if body_size > limits.max_body {
            return Err(BinaryError::BodyTooLarge {
                size: body_size,
                max: limits.max_body,
            });
        }
        Ok(Header {
            meta_size,
            body_size,
        })
    }
}

/// The footer's 8 bytes for a body whose CRC-32 is `crc`.
pub fn footer(crc: u32) -> [u8; FOOTER_LEN] {
    let mut out = [0u8; FOOTER_LEN];
    out[4..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A whole exchange in memory (for tests and small payloads; large bodies
/// are streamed with [`Header::encode`] and [`footer`]).
pub fn encode(meta: &[u8], body: &[u8]) -> Result<Vec<u8>, BinaryError> {
    let meta_size = u32::try_from(meta.len()).map_err(|_| BinaryError::MetaTooLarge {
        size: u32::MAX,
        max: u32::MAX,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + body.len() + FOOTER_LEN);
    out.extend_from_slice(
        &Header {
            meta_size,
            body_size: body.len() as u64,
        }
        .encode(),
    );
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    out.extend_from_slice(&footer(crc32fast::hash(body)));
    Ok(out)
}

/// Why bytes are not a valid binary exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("not a binary exchange: first byte {0:#04x}, expected 0x01")]
    NotBinary(u8),
    #[error("meta section of {size} bytes is over the limit of {max}")]
    MetaTooLarge { size: u32, max: u32 },
    #[error("body of {size} bytes is over the limit of {max}")]
    BodyTooLarge { size: u64, max: u64 },
    #[error("meta section is not UTF-8")]
    MetaNotUtf8,
    #[error("end marker is {0:#010x}, not 0: the body is not the size the header declared")]
    BadEndMarker(u32),
    #[error("checksum mismatch: the body's CRC-32 is {computed:#010x}, the footer says {declared:#010x}")]
    Checksum { declared: u32, computed: u32 },
    #[error("the exchange is already complete")]
    Finished,
}

/// What [`Decoder::step`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// All of the input was taken; more is needed.
    NeedMore,
    /// The header and the meta section (UTF-8).
    Head { header: Header, meta: String },
    /// The next bytes of the body, a slice of the input.
    Body(&'a [u8]),
    /// The footer checked out: the body is whole and its CRC-32 matches.
    Done { crc: u32 },
}

#[derive(Debug)]
enum Stage {
    Header,
    Meta(Header),
    Body { left: u64 },
    Footer,
    Done,
}

/// An incremental decoder of one exchange.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    stage: Stage,
    /// Header, meta or footer bytes gathered so far (never the body).
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    body_size: u64,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            stage: Stage::Header,
            buf: Vec::new(),
            crc: crc32fast::Hasher::new(),
            body_size: 0,
        }
    }

    /// The declared body size, once the header is in.
    pub fn body_size(&self) -> u64 {
        self.body_size
    }

    /// Takes bytes from the front of `input`: returns what they completed
    /// and how many were taken. Call again with the rest (a step takes at
    /// least one byte unless it is [`Step::NeedMore`] on empty input or
    /// [`Step::Done`]). After `Done`, nothing more is taken.
    pub fn step<'a>(&mut self, input: &'a [u8]) -> Result<(Step<'a>, usize), BinaryError> {
        match self.stage {
            Stage::Header => {
                let used = self.gather(input, HEADER_LEN);
                if self.buf.len() < HEADER_LEN {
                    // A wrong first byte is refused at once, not after 13.
                    if self.buf.first().is_some_and(|&b| b != MARKER) {
                        return Err(BinaryError::NotBinary(self.buf[0]));
                    }
                    return Ok((Step::NeedMore, used));
                }
                let mut head = [0u8; HEADER_LEN];
                head.copy_from_slice(&self.buf);
                let header = Header::parse(&head, &self.limits)?;
                self.buf.clear();
                self.body_size = header.body_size;
                self.stage = Stage::Meta(header);
                // Go on with the rest: the meta may be in already (or empty).
                let (step, more) = self.step(&input[used..])?;
                Ok((step, used + more))
            }
            Stage::Meta(header) => {
                let used = self.gather(input, header.meta_size as usize);
                if self.buf.len() < header.meta_size as usize {
                    return Ok((Step::NeedMore, used));
                }
                self.finish_meta(used)
            }
            Stage::Body { left } => {
                if left == 0 {
                    self.stage = Stage::Footer;
                    return self.step(input);
                }
                if input.is_empty() {
                    return Ok((Step::NeedMore, 0));
                }
                let n = (left.min(input.len() as u64)) as usize;
                let chunk = &input[..n];
                self.crc.update(chunk);
                let left = left - n as u64;
                self.stage = if left == 0 {
                    Stage::Footer
                } else {
                    Stage::Body { left }
                };
                Ok((Step::Body(chunk), n))
            }
            Stage::Footer => {
                let used = self.gather(input, FOOTER_LEN);
                if self.buf.len() < FOOTER_LEN {
                    return Ok((Step::NeedMore, used));
                }
                let b = &self.buf;
                let end = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let declared = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                if end != 0 {
                    return Err(BinaryError::BadEndMarker(end));
                }
                let computed = self.crc.clone().finalize();
                if declared != computed {
                    return Err(BinaryError::Checksum { declared, computed });
                }
                self.stage = Stage::Done;
                self.buf = Vec::new();
                Ok((Step::Done { crc: computed }, used))
            }
            Stage::Done => Err(BinaryError::Finished),
        }
    }

    fn finish_meta<'a>(&mut self, used: usize) -> Result<(Step<'a>, usize), BinaryError> {
        let Stage::Meta(header) = self.stage else {
            unreachable!("finish_meta is called in the meta stage");
        };
        let meta = String::from_utf8(std::mem::take(&mut self.buf))
            .map_err(|_| BinaryError::MetaNotUtf8)?;
        self.stage = Stage::Body {
            left: header.body_size,
        };
        Ok((Step::Head { header, meta }, used))
    }

    /// Moves up to `want - buf.len()` bytes of `input` into the buffer.
    fn gather(&mut self, input: &[u8], want: usize) -> usize {
        let n = want.saturating_sub(self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..n]);
        n
    }
}

/// Decodes `data` as one exchange fed in pieces of `chunk` bytes: the
/// meta, the body and whether it ended. For tests and the fuzz target.
pub fn decode_in_pieces(
    data: &[u8],
    chunk: usize,
    limits: Limits,
) -> Result<(Option<String>, Vec<u8>, bool), BinaryError> {
    let mut d = Decoder::new(limits);
    let (mut meta, mut body, mut done) = (None, Vec::new(), false);
    for piece in data.chunks(chunk.max(1)) {
        let mut at = 0;
        while at < piece.len() && !done {
            let (step, used) = d.step(&piece[at..])?;
            at += used;
            match step {
                Step::NeedMore => break,
                Step::Head { meta: m, .. } => meta = Some(m),
                Step::Body(b) => body.extend_from_slice(b),
                Step::Done { .. } => done = true,
            }
        }
    }
    // A footer may complete on a step with no input left (empty body).
    if !done && meta.is_some() {
        if let Ok((Step::Done { .. }, _)) = d.step(&[]) {
            done = true;
        }
    }
    Ok((meta, body, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn nvflare_test_vectors() {
        let v = hex("01 00000007 0000000000000005 7b226b223a317d 68656c6c6f 00000000 3610a686");
        assert_eq!(encode(br#"{"k":1}"#, b"hello").unwrap(), v);
        assert_eq!(
            decode_in_pieces(&v, 1, Limits::default()).unwrap(),
            (Some(r#"{"k":1}"#.into()), b"hello".to_vec(), true)
        );
        let empty = [&[1u8][..], &[0u8; 20][..]].concat();
        assert_eq!(encode(b"", b"").unwrap(), empty);
        assert_eq!(
            decode_in_pieces(&empty, 3, Limits::default()).unwrap(),
            (Some(String::new()), vec![], true)
        );
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn bad_exchanges_are_named() {
        let good = encode(b"m", b"body bytes").unwrap();
        let lim = Limits::default();
        // A corrupted body byte.
        let mut bad = good.clone();
        bad[HEADER_LEN + 1 + 2] ^= 0x40;
        assert!(matches!(
            decode_in_pieces(&bad, 7, lim),
            Err(BinaryError::Checksum { .. })
        ));
        // A lying body_size: one more than sent, so the footer's first
        // byte is read as body and the marker is not zero.
        let mut lie = good.clone();
        lie[12] += 1;
        lie.extend_from_slice(&[9]);
        assert!(decode_in_pieces(&lie, 5, lim).is_err());
        // A wrong end marker.
        let mut end = good.clone();
        let at = end.len() - FOOTER_LEN;
        end[at] = 1;
        assert!(matches!(
            decode_in_pieces(&end, 64, lim),
            Err(BinaryError::BadEndMarker(_))
        ));
        // A 4 GiB meta claim is refused from the header alone.
        let mut huge = Header {
            meta_size: u32::MAX,
            body_size: 0,
        }
        .encode()
        .to_vec();
        huge.push(b'x');
        let e = decode_in_pieces(&huge, 64, lim).unwrap_err();
        assert!(matches!(e, BinaryError::MetaTooLarge { .. }));
        assert!(e.to_string().contains("4294967295"));
        // Text, not binary.
        assert_eq!(
            decode_in_pieces(b"MESSAGE 2 x\nhi", 64, lim),
            Err(BinaryError::NotBinary(b'M'))
        );
        // Truncated: never done.
        assert!(!decode_in_pieces(&good[..good.len() - 1], 4, lim).unwrap().2);
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(
            meta in "[ -~]{0,40}",
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk in 1usize..200,
        ) {
            let wire = encode(meta.as_bytes(), &body).unwrap();
            let got = decode_in_pieces(&wire, chunk, Limits::default()).unwrap();
            prop_assert_eq!(got, (Some(meta), body, true));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), chunk in 1usize..50) {
            let _ = decode_in_pieces(&data, chunk, Limits { max_meta: 64, max_body: 1 << 20 });
        }
    }

    #[test]
    fn sizes_around_blocks_round_trip() {
        for n in [0usize, 1, 1023, 1024, 1025, 1 << 20, (1 << 20) + 7] {
            let body: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let wire = encode(b"", &body).unwrap();
            for chunk in [1usize << 16, 1024, 999] {
                if n > 100_000 && chunk < 1024 {
                    continue;
                }
                let got = decode_in_pieces(&wire, chunk, Limits::default()).unwrap();
                assert_eq!(
                    got,
                    (Some(String::new()), body.clone(), true),
                    "{n} bytes in {chunk}s"
                );
            }
        }
    }
}
