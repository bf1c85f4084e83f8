//! The secure overlay between Roundtable nodes (issue 13), first slice:
//! node identities and the authenticated, encrypted channel. Library code
//! only; nothing here is wired into chat yet.
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
//!
//! The wire formats (the `HELLO` and `SEC` frames, the sealed record, the
//! key's text form and the fingerprint) live in
//! [`roundtable_shared::secure`], pure and fuzzed, so the dashboard and the
//! directory use the same definitions. No cryptographic primitive is ours:
//! `snow` does the handshake and the AEAD, BLAKE2s the fingerprint.
//!
//! # How the pieces fit
//!
//! A node loads its [`identity::Identity`] at start. To talk to a peer it
//! opens a connection, negotiates the capability (the `PING 0
//! roundtable/…` exchange chat already does), then runs
//! [`channel::connect`] with the peer's pinned key; the peer's listener
//! sees a `HELLO` and runs [`channel::accept`]. The resulting
//! [`channel::Session`] turns each chat frame (encoded as usual) into a
//! `SEC` frame with [`channel::Session::seal`] and back with
//! [`channel::Session::open`]. A refused frame is reported and dropped; the
//! session carries on.
//!
//! # What comes next
//!
//! - Pinning: a per-node store of peers' keys (trust on first use, "key
//!   changed" refused until accepted with `roundtable node trust`), checked
//!   against [`channel::Session::remote_static`].
//! - `KEY` in the directory: publish one's key after login, query a
//!   peer's, pinned by the directory on first publication.
//! - Relay: the directory forwards `HELLO` and `SEC` frames between the
//!   two users' directory sessions; the state machine above already works
//!   on frames, not sockets, so the relayed path reuses it unchanged.
//! - Request/reply: typed requests with ids and deadlines over a session,
//!   and fan-out reporting who did not answer.
//! - Wiring into chat (`node/chat.rs`): encrypt chat and acks between
//!   Roundtable nodes, `--require-secure`.

pub mod channel;
pub mod identity;
pub mod rpc;
