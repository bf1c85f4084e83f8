//! The secure overlay between Roundtable nodes (issue 13): node identities,
//! the authenticated, encrypted channel, and request/reply over it. The
//! node (`crate::node`) puts them to work: `link.rs` opens channels to
//! peers (directly or through the directory's relay, `relay.rs`),
//! `trust.rs` checks the keys they prove against the pins, `chat.rs`
//! carries messages and requests over them, `check.rs` asks every peer.
//!
//! # What is here
//!
//! - [`identity`]: each node's long-term X25519 static key
//!   (`<data dir>/identity.key`, owner-only, refused if group or others can
//!   read it), with its public key and fingerprint.
//! - [`channel`]: a `Noise_XX_25519_ChaChaPoly_BLAKE2s` handshake through
//!   `snow` in which both sides prove their static key, then sealed
//!   transport frames: the routing fields (sender, destination, frame type,
//!   key epoch, counter) bound to every frame, a counter-based replay check
//!   (in order, no reorder window), and rekeying after a number of frames
//!   or an amount of time. A pure state machine ([`channel::Handshake`],
//!   [`channel::Session`]) plus [`channel::connect`] / [`channel::accept`],
//!   which run the handshake over a [`crate::framing::Connection`] within a
//!   timeout.
//! - [`pool`]: the buffers a session opens large records (a file's) into,
//!   used again rather than allocated and cleared each time.
//! - [`rpc`]: typed requests with ids and deadlines, fan-out reporting who
//!   did not answer, handlers cancelled at the deadline with a final step
//!   only on completion.
//!
//! The wire formats (the `HELLO` and `SEC` frames, the sealed record, the
//! key's text form, the fingerprint, `REQ`/`REP`) live in
//! [`roundtable_shared::secure`] and [`roundtable_shared::rpc`], pure and
//! fuzzed. No cryptographic primitive is ours: `snow` runs the handshake
//! and the transport's nonces, with ring's ChaCha20-Poly1305 and
//! dalek's X25519 and RustCrypto's BLAKE2s under it (`channel::resolver`); BLAKE2s
//! makes the fingerprint.

pub mod channel;
pub mod identity;
pub mod pool;
pub mod rpc;
