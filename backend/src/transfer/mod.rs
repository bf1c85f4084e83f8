//! File transfer (issue 14), first slice: NVIDIA FLARE's binary exchange
//! on a bare connection, streamed disk to socket to disk, byte-compatible
//! with NVFlare's own `binary_proto` (`send_binary_file`, `receive_all`).
//!
//! - [`raw::send`] streams a file as one exchange: header and meta, the
//!   body in blocks with its CRC-32 computed on the way, the footer.
//! - [`raw::receive`] takes one exchange into a hidden temporary file in
//!   the output folder, hashing it (SHA-256) as it comes, and renames it
//!   into place only once the footer's end marker and CRC-32 check out; on
//!   any error the temporary file is removed, so nothing partial is ever
//!   visible (NVFlare's `receive_all` leaves its temporary file behind).
//! - [`raw::serve`] accepts exchanges on a listener, one per connection,
//!   with an idle timeout and per-source and total caps.
//!
//! The codec itself (bounded, incremental, any split) is
//! `roundtable_shared::binary`. Still to come (issue 14): transfers between
//! nodes on the chat port inside the secure channel, resumable by offset,
//! with a durable outbox and the dashboard's progress.

pub mod raw;
