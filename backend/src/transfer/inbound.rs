//! Receiving a file from another Roundtable node, on a secure connection
//! the chat port handed over once its first sealed frame was a `FILEQ`
//! (see `roundtable_shared::transfer` for the frames), or through the
//! directory's relay (the same exchange in `FILECHUNK`s: [`super::relayed`]).
//!
//! Each `FILEDATA` frame's bytes stay in the record they were decrypted
//! into (`transfer::split_plaintext`, `Incoming::Data`) and go, a MiB at a
//! time, to two threads: one writes them into `files/partial/<seq>.part`
//! (allocated up to 64 MiB ahead of them, and handed to the disk a few
//! MiB behind them: [`super::writeback`]), the other hashes them
//! (SHA-256). Every [`CHECKPOINT_BYTES`] or [`CHECKPOINT_EVERY`], whichever
//! first, the writer hands what it buffered to the kernel and then records
//! the offset in `transfers.db`: the offset an offer resumes from. Each byte
//! arrived in an authenticated `SEC` frame, so what is there is what the
//! sender sent.
//!
//! Checkpoints do not fsync the part file. A killed node (SIGKILL, a
//! crash of the process) loses nothing the kernel was handed, so the
//! recorded offset holds; only a crash of the machine itself can leave it
//! ahead of what reached the disk, and then the whole-file SHA-256 at the
//! end fails and the file is sent again from the start: never a wrong
//! file, only the time. Syncing every checkpoint instead was measured to
//! stall chat: on one disk, a chat message's fsync waited behind the
//! transfer's flushes (p99 35-43 ms against 1.5 ms, 512 MiB on this VM).
//!
//! Once the exchange's footer (end marker and CRC-32) checks out, the
//! part file is synced, its whole-file SHA-256 compared with the offer's,
//! and only then linked into `files/received/` under its own name (never
//! over another file) and recorded delivered. A mismatch throws the part
//! away and asks the sender to start again.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtable_shared::api::TransferState;
use roundtable_shared::binary::{Decoder, Limits, Step};
use roundtable_shared::frame::Frame;
use roundtable_shared::secure::SecureError;
use roundtable_shared::transfer::{
    split_plaintext, ExchangeMeta, FileOffer, FileReply, Piece, TransferFrame,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::sink::{Output, Sink};
use super::writeback::Writeback;
use super::{candidates, free_space, hex, Progress, SharesRoom, Transfers};
use crate::framing::{Connection, FramingError};
use crate::node::link::{chat_limits, open_plaintext_in_place, seal_all, sealed_head, LinkError};
use crate::overlay::channel::{ChannelError, Session};
use crate::store::chat::now_ms;
use crate::store::transfers::{Offered, TransferRecord, TransferStore};

/// Bytes between two checkpoints (write out, then record the offset).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Longest time between two checkpoints while bytes arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How far ahead of the bytes that arrived the part file is allocated.
const PREALLOCATE: u64 = 64 << 20;

/// Bytes read from the connection at a time, at most.
const READ_CHUNK: usize = 1 << 20;

/// Frames opened between two yields to the runtime.
const YIELD_EVERY: u32 = 4;

/// How a receiving connection ended, for the log.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReceiveError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the connection closed mid-transfer")]
    Closed,
    #[error("the sender offered it again on a newer connection, which takes over")]
    Superseded,
    #[error("part file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FramingError> for ReceiveError {
    fn from(e: FramingError) -> Self {
        ReceiveError::Link(e.into())
    }
}

/// What a transfer connection carries, one at a time: a `FILEDATA`
/// frame's bytes as a view of the record they were decrypted into (not
/// copied again on their way to the disk), or any other frame.
pub(super) enum Incoming {
    Data(Bytes),
    Frame(Frame),
}

/// Where a transfer's frames come from and its replies go.
enum Wire<'a> {
    /// Its own connection, sealed by its own session.
    Direct {
        conn: &'a mut Connection<TcpStream>,
        session: &'a mut Session,
    },
    /// The relay's channel with the sender ([`super::relayed`]).
    Relayed(super::relayed::Receiver),
}

/// The frames of one transfer, one at a time.
struct Frames<'a> {
    wire: Wire<'a>,
    pending: VecDeque<Incoming>,
    idle: Duration,
    /// Cancelled when a newer exchange of the transfer takes over.
    superseded: Option<CancellationToken>,
}

impl Frames<'_> {
    /// The next frame, unless a newer exchange of the transfer took over.
    async fn next(&mut self) -> Result<Incoming, ReceiveError> {
        match self.superseded.clone() {
            Some(t) => tokio::select! {
                biased;
                _ = t.cancelled() => Err(ReceiveError::Superseded),
                r = self.read_next() => r,
            },
            None => self.read_next().await,
        }
    }

    async fn read_next(&mut self) -> Result<Incoming, ReceiveError> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(f);
            }
            let (conn, session) = match &mut self.wire {
                Wire::Direct { conn, session } => (conn, session),
                Wire::Relayed(r) => return r.next(self.idle).await,
            };
            if !conn.fill_frame_within(self.idle).await? {
                return Err(ReceiveError::Closed);
            }
            // Opened from the connection's buffer: no copy of the record.
            let session = &mut **session;
            let opened = conn
                .take_in_place(|head, payload| {
                    open_plaintext_in_place(session, &sealed_head(&head)?, payload)
                })?
                .ok_or(ReceiveError::Closed)??;
            let Some(pt) = opened else {
                continue;
            };
            let pieces = split_plaintext(&pt, &chat_limits()).map_err(|_| {
                LinkError::from(ChannelError::Frame(SecureError::Inner(
                    "sealed plaintext is not a sequence of frames",
                )))
            })?;
            self.pending.extend(pieces.into_iter().map(|p| match p {
                Piece::Data(at) => Incoming::Data(pt.slice(at)),
                Piece::Frame(f) => Incoming::Frame(f),
            }));
        }
    }

    /// The next frame, a `FILEDATA` one as a frame too.
    async fn next_frame(&mut self) -> Result<Frame, ReceiveError> {
        Ok(match self.next().await? {
            Incoming::Frame(f) => f,
            Incoming::Data(d) => Frame::bare(TransferFrame::DATA, d.to_vec()),
        })
    }

    async fn reply(&mut self, id: &str, reply: FileReply) -> Result<(), ReceiveError> {
        let f = TransferFrame::Reply {
            id: id.to_owned(),
            reply,
        }
        .to_frame();
        match &mut self.wire {
            Wire::Direct { conn, session } => {
                let sealed = seal_all(session, &[f]).map_err(LinkError::from)?;
                conn.write_frames_within(&sealed, self.idle).await?;
            }
            Wire::Relayed(r) => r.send(&[f], self.idle).await?,
        }
        Ok(())
    }
}

/// Marks a transfer as being received for as long as it lives; its
/// exchange stops at its next read once `superseded` is cancelled.
struct Receiving<'a> {
    transfers: &'a Transfers,
    seq: i64,
    superseded: CancellationToken,
}

/// How long an offer waits for an earlier exchange of the same transfer
/// to end. A sender offers a transfer again only once it gave up on its
/// last attempt (the offer comes from the same peer, proven by the
/// channel), but the receiver may not know yet: through the relay the
/// old route lingers until the new offer ends it, and a direct
/// connection the network lost without a word stays open until its idle
/// timeout (30 s). So the new offer takes over: the old exchange stops
/// at its next read, keeping what it wrote, and the new one resumes from
/// there.
const EARLIER_EXCHANGE_WAIT: Duration = Duration::from_secs(3);

impl<'a> Receiving<'a> {
    /// Marks `seq`; `None` if it is being received already, that earlier
    /// exchange then told to stop.
    fn mark(transfers: &'a Transfers, seq: i64) -> Option<Receiving<'a>> {
        let mut receiving = transfers
            .inner
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match receiving.entry(seq) {
            std::collections::hash_map::Entry::Occupied(earlier) => {
                earlier.get().cancel();
                None
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let superseded = v.insert(CancellationToken::new()).clone();
                Some(Receiving {
                    transfers,
                    seq,
                    superseded,
                })
            }
        }
    }

    /// Marks `seq`, stopping an earlier exchange of it and waiting up to
    /// `within` for it to end.
    async fn mark_within(
        transfers: &'a Transfers,
        seq: i64,
        within: Duration,
    ) -> Option<Receiving<'a>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = transfers.inner.received.notified();
            tokio::pin!(released);
            // Registered before trying: a release in between still wakes us.
            released.as_mut().enable();
            if let Some(r) = Receiving::mark(transfers, seq) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.transfers
            .inner
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.seq);
        self.transfers.inner.received.notify_waiters();
    }
}

/// What the writer hands back: the offset it reached (all written and
/// recorded) and the hash of everything before it.
type Written = std::io::Result<(u64, Sha256)>;

/// The part file's writer: a [`Sink`] into the [`Part`], and how far it got.
struct PartWriter {
    sink: Sink<u64>,
    /// Bytes of the file written so far (for progress).
    at: Arc<AtomicU64>,
}

/// The part file, on the sink's writer thread: written from the recorded
/// offset, preallocated ahead, checkpointed.
struct Part {
    file: std::fs::File,
    pos: u64,
    size: u64,
    allocated: u64,
    recorded: u64,
    last: Instant,
    store: TransferStore,
    seq: i64,
    shown: Arc<AtomicU64>,
    writeback: Writeback,
}

impl Part {
    fn open(
        path: &Path,
        offset: u64,
        size: u64,
        store: TransferStore,
        seq: i64,
        shown: Arc<AtomicU64>,
    ) -> std::io::Result<Part> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Anything past the recorded offset may never have reached the disk.
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut part = Part {
            file,
            pos: offset,
            size,
            allocated: offset,
            recorded: offset,
            last: Instant::now(),
            store,
            seq,
            shown,
            writeback: Writeback::new(offset),
        };
        part.allocate_to(offset);
        Ok(part)
    }

    /// The file's blocks are allocated ahead of the writes, at most
    /// PREALLOCATE past what arrived (so a peer cannot reserve disk it
    /// never sends): writes then neither allocate blocks nor move the
    /// file's end, so the other stores' fsyncs (chat's) do not have to
    /// flush this file's data with their journal commit (ext4's ordered
    /// mode). The recorded offset, not the length, says what arrived. Not
    /// every filesystem can; then it only costs that.
    fn allocate_to(&mut self, pos: u64) {
        if self.allocated >= self.size || pos + PREALLOCATE / 2 < self.allocated {
            return;
        }
        let len = (PREALLOCATE / 2).min(self.size - self.allocated);
        let mode = rustix::fs::FallocateFlags::empty();
        match rustix::fs::fallocate(&self.file, mode, self.allocated, len) {
            Ok(()) => self.allocated += len,
            Err(e) => {
                tracing::debug!(%e, "cannot preallocate the part file");
                self.allocated = self.size;
            }
        }
    }

    fn record(&self) -> std::io::Result<()> {
        self.store
            .written(self.seq, self.pos, now_ms())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Output for Part {
    type Done = u64;

    fn write(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        // Chunks are up to 64 KiB: written as they come, no buffer copy.
        for chunk in chunks {
            self.allocate_to(self.pos + chunk.len() as u64);
            self.file.write_all(chunk)?;
            self.pos += chunk.len() as u64;
        }
        self.writeback.written(&self.file, self.pos);
        self.shown.store(self.pos, Ordering::Relaxed);
        if self.pos - self.recorded >= CHECKPOINT_BYTES || self.last.elapsed() >= CHECKPOINT_EVERY {
            self.record()?;
            self.recorded = self.pos;
            self.last = Instant::now();
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<u64> {
        self.file.sync_data()?;
        self.record()?;
        Ok(self.pos)
    }
}

impl PartWriter {
    fn start(
        part: PathBuf,
        offset: u64,
        size: u64,
        sha: Sha256,
        store: TransferStore,
        seq: i64,
    ) -> PartWriter {
        let at = Arc::new(AtomicU64::new(offset));
        let shown = at.clone();
        let sink = Sink::start(sha, move || {
            Part::open(&part, offset, size, store, seq, shown)
        });
        PartWriter { sink, at }
    }

    /// Queues bytes; false if the writer has stopped (it failed).
    async fn write(&mut self, chunk: Bytes) -> bool {
        self.sink.write(chunk).await
    }

    /// Whether the writer has stopped early (it failed).
    fn stopped(&self) -> bool {
        self.sink.stopped()
    }

    /// Waits for everything queued to be written, and synced, and hashed.
    async fn finish(self) -> Written {
        self.sink.finish().await
    }
}

/// SHA-256 state of the first `len` bytes of `path`.
fn hash_prefix(path: &Path, len: u64) -> std::io::Result<Sha256> {
    let mut sha = Sha256::new();
    if len == 0 {
        return Ok(sha);
    }
    let mut f = std::fs::File::open(path)?.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(sha)
}

/// Links the verified part file into `dir` under `name` (or a free
/// variant of it) without replacing anything, then removes the part.
fn place(part: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    for candidate in candidates(dir, name) {
        match std::fs::hard_link(part, &candidate) {
            Ok(()) => {
                std::fs::remove_file(part)?;
                std::fs::File::open(dir)?.sync_all()?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("too many files named like {name}"),
    ))
}

impl Transfers {
    /// Serves one transfer connection from `peer` (proven by the channel),
    /// whose first opened frames are `first`; `shares_room` says whether a
    /// room the offer names is one we and `peer` are in.
    pub async fn receive(
        &self,
        conn: &mut Connection<TcpStream>,
        session: &mut Session,
        peer: &str,
        first: Vec<Frame>,
        shares_room: SharesRoom,
    ) -> Result<(), LinkError> {
        // A file's frames come back to back: read them a MiB at a time.
        conn.set_read_chunk(READ_CHUNK);
        let mut frames = Frames {
            wire: Wire::Direct { conn, session },
            pending: first.into_iter().map(Incoming::Frame).collect(),
            idle: self.inner.cfg.idle_timeout,
            superseded: None,
        };
        self.serve(&mut frames, peer, shares_room).await
    }

    /// Serves one transfer through the relay, from the offer that made
    /// its route to the verdict.
    pub async fn receive_relayed(
        &self,
        route: crate::node::relay::FileRoute,
        shares_room: SharesRoom,
    ) {
        let peer = route.peer().to_owned();
        let mut frames = Frames {
            wire: Wire::Relayed(super::relayed::Receiver::new(route)),
            pending: VecDeque::new(),
            idle: self.inner.cfg.idle_timeout,
            superseded: None,
        };
        if let Err(e) = self.serve(&mut frames, &peer, shares_room).await {
            tracing::info!(%peer, %e, "file transfer through the relay ended");
        }
    }

    async fn serve(
        &self,
        frames: &mut Frames<'_>,
        peer: &str,
        shares_room: SharesRoom,
    ) -> Result<(), LinkError> {
        let r = tokio::select! {
            _ = self.inner.shutdown.cancelled() => Ok(()),
            r = self.receive_inner(frames, peer, shares_room) => r,
        };
        match r {
            Ok(()) => Ok(()),
            Err(ReceiveError::Link(e)) => Err(e),
            Err(e) => {
                tracing::info!(%peer, %e, "file transfer connection ended");
                Ok(())
            }
        }
    }

    async fn receive_inner(
        &self,
        frames: &mut Frames<'_>,
        peer: &str,
        shares_room: SharesRoom,
    ) -> Result<(), ReceiveError> {
        let offer = match TransferFrame::parse(&frames.next_frame().await?) {
            Ok(TransferFrame::Offer(o)) => o,
            Ok(_) => return Err(ReceiveError::Refused("expected an offer".into())),
            Err(e) => return Err(ReceiveError::Refused(e.to_string())),
        };
        let Some(_permit) = self.inner.inbound.clone().try_acquire_owned().ok() else {
            let reason = "busy: receiving as many files as it allows; will retry".to_owned();
            frames
                .reply(
                    &offer.id,
                    FileReply::Refused {
                        reason: reason.clone(),
                        retry: true,
                    },
                )
                .await?;
            return Err(ReceiveError::Refused(reason));
        };
        let (rec, offset, sha, receiving) = match self.accept_offer(peer, &offer, shares_room).await
        {
            Ok(accepted) => accepted,
            Err(reply) => {
                let reason = format!("{reply:?}");
                frames.reply(&offer.id, reply).await?;
                return Err(ReceiveError::Refused(reason));
            }
        };
        let seq = rec.info.seq;
        frames.superseded = Some(receiving.superseded.clone());
        frames
            .reply(&offer.id, FileReply::Resume { offset })
            .await?;
        let rec = self
            .set(seq, TransferState::Sending, offset, None)
            .await
            .unwrap_or(rec);
        let outcome = self.exchange(frames, peer, &offer, &rec, offset, sha).await;
        match outcome {
            Ok(path) => {
                let store = self.inner.store.clone();
                let p = path.clone();
                match crate::store::blocking(move || store.delivered_in(seq, &p, now_ms())).await {
                    Ok(Some(r)) => self.announce(&r),
                    Ok(None) => {}
                    Err(e) => {
                        // Not recorded: the sender will offer again and
                        // hear "done" only once it is.
                        tracing::error!(%e, "cannot record a delivery");
                        return Err(ReceiveError::Refused(e.to_string()));
                    }
                }
                tracing::info!(%peer, name = %offer.name, path = %path.display(), size = offer.size, "file received");
                frames.reply(&offer.id, FileReply::Done).await?;
                Ok(())
            }
            Err((e, reply)) => {
                if let Some(reply) = reply {
                    // Best effort: the connection may be gone.
                    let _ = frames.reply(&offer.id, reply).await;
                }
                Err(e)
            }
        }
    }

    /// Checks an offer against the store, the limits and the disk, and
    /// returns where to resume (with the hash of what is before it), or the
    /// refusal to send.
    async fn accept_offer(
        &self,
        peer: &str,
        offer: &FileOffer,
        shares_room: SharesRoom,
    ) -> Result<(TransferRecord, u64, Sha256, Receiving<'_>), FileReply> {
        let cfg = &self.inner.cfg;
        let refuse = |reason: String, retry: bool| FileReply::Refused { reason, retry };
        let store = self.inner.store.clone();
        let (p, o) = (peer.to_owned(), offer.clone());
        let found = crate::store::blocking(move || {
            // A room is taken from the offer only if our own account of it
            // has both of us in it; else the file is one from the sender.
            let room = o.room.as_deref().filter(|r| {
                let ours = shares_room(r, &p);
                if !ours {
                    tracing::info!(peer = %p, room = %r, "a file offered into a room we do not share with its sender: shown as a file from them");
                }
                ours
            });
            store.offer(&p, &o, room, now_ms())
        })
            .await
            .map_err(|e| refuse(format!("the receiver's store failed: {e}"), true))?;
        let rec = match found {
            Offered::Conflict => {
                return Err(refuse(
                    "this transfer id was already used for another file".into(),
                    false,
                ))
            }
            Offered::Known(r) if r.info.state == TransferState::Delivered => {
                return Err(FileReply::Done)
            }
            Offered::New(r) => {
                self.announce(&r);
                r
            }
            Offered::Known(r) => r,
        };
        let seq = rec.info.seq;
        // Unmarked again when this is dropped: on a refusal here, or when
        // the caller is done.
        let Some(receiving) = Receiving::mark_within(self, seq, EARLIER_EXCHANGE_WAIT).await else {
            return Err(refuse(
                "already receiving this file on another connection".into(),
                true,
            ));
        };
        // Read again now that it is ours: an earlier exchange that just
        // stopped recorded where it got.
        let rec = match self.get(seq).await {
            Ok(r) if r.info.state == TransferState::Delivered => return Err(FileReply::Done),
            Ok(r) => r,
            Err(e) => return Err(refuse(format!("the receiver's store failed: {e}"), true)),
        };
        if offer.size > cfg.max_file_size {
            let reason = format!(
                "the file ({} bytes) is larger than {} accepts ({} bytes)",
                offer.size, self.inner.me, cfg.max_file_size
            );
            self.set(seq, TransferState::Failed, 0, Some(reason.clone()))
                .await;
            return Err(refuse(reason, false));
        }
        let part = self.part_path(seq);
        let on_disk = std::fs::metadata(&part).map_or(0, |m| m.len());
        let mut offset = if rec.info.state == TransferState::Failed {
            0
        } else {
            rec.info.bytes.min(on_disk)
        };
        let need = (offer.size - offset).saturating_add(cfg.free_margin);
        match free_space(&cfg.partial()) {
            Ok(free) if free < need => {
                let reason = format!(
                    "not enough free disk space at {}: {} bytes needed, {} free",
                    self.inner.me, need, free
                );
                self.set(seq, TransferState::Waiting, offset, Some(reason.clone()))
                    .await;
                return Err(refuse(reason, true));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%e, "cannot read the free disk space"),
        }
        let cached = self
            .inner
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq)
            .filter(|(at, _)| *at == offset)
            .map(|(_, sha)| sha);
        let sha = match cached {
            Some(sha) => sha,
            None => {
                let p = part.clone();
                match tokio::task::spawn_blocking(move || hash_prefix(&p, offset)).await {
                    Ok(Ok(sha)) => sha,
                    _ => {
                        offset = 0;
                        Sha256::new()
                    }
                }
            }
        };
        Ok((rec, offset, sha, receiving))
    }

    /// Reads the exchange from the offset to its footer into the part file
    /// and puts the verified file in place. On failure: the error, and the
    /// reply to send if the sender should hear one.
    async fn exchange(
        &self,
        frames: &mut Frames<'_>,
        peer: &str,
        offer: &FileOffer,
        rec: &TransferRecord,
        offset: u64,
        sha: Sha256,
    ) -> Result<PathBuf, (ReceiveError, Option<FileReply>)> {
        let seq = rec.info.seq;
        let refuse = |reason: String, retry: bool| {
            (
                ReceiveError::Refused(reason.clone()),
                Some(FileReply::Refused { reason, retry }),
            )
        };
        let mut decoder = Decoder::new(Limits {
            max_meta: 64 * 1024,
            // A body_size other than the rest of the file is refused here,
            // before any body byte is read.
            max_body: offer.size - offset,
        });
        let part = self.part_path(seq);
        let mut writer: Option<PartWriter> = None;
        let mut progress = Progress::new(offset);
        let mut opened = 0u32;
        let result = loop {
            // Frames that arrived together are opened without waiting for
            // the socket: every few (about a quarter of a millisecond of
            // decrypting), let chat's tasks in between.
            opened += 1;
            if opened.is_multiple_of(YIELD_EVERY) {
                tokio::task::yield_now().await;
            }
            let data = match frames.next().await {
                Ok(Incoming::Data(d)) => d,
                Ok(Incoming::Frame(f)) => match TransferFrame::parse(&f) {
                    Ok(TransferFrame::Data(d)) => Bytes::from(d),
                    Ok(_) | Err(_) => {
                        break Err(refuse(format!("unexpected {} frame", f.kind), true))
                    }
                },
                Err(e) => break Err((e, None)),
            };
            let mut at = 0;
            let mut done = false;
            while at < data.len() {
                let (step, used) = match decoder.step(&data[at..]) {
                    Ok(s) => s,
                    Err(e) => {
                        return self
                            .abandon(
                                writer,
                                seq,
                                offset,
                                refuse(format!("bad exchange: {e}"), true),
                            )
                            .await
                    }
                };
                at += used;
                match step {
                    Step::NeedMore => break,
                    Step::Head { header, meta } => {
                        let Some(m) = ExchangeMeta::parse(&meta) else {
                            return Err(refuse(
                                "the exchange's meta is not a transfer's".into(),
                                true,
                            ));
                        };
                        if let Err(e) = m.validate(header.body_size) {
                            return Err(refuse(format!("bad exchange meta: {e}"), true));
                        }
                        let matches = m.id == offer.id
                            && m.sender == peer
                            && m.file_name == offer.name
                            && m.size == offer.size
                            && m.sha256 == offer.sha256
                            && m.offset == offset;
                        if !matches {
                            return Err(refuse(
                                "the exchange's meta does not match the offer".into(),
                                true,
                            ));
                        }
                        writer = Some(PartWriter::start(
                            part.clone(),
                            offset,
                            offer.size,
                            sha.clone(),
                            self.inner.store.clone(),
                            seq,
                        ));
                    }
                    Step::Body(chunk) => {
                        let Some(w) = &mut writer else {
                            unreachable!("the body comes after the head");
                        };
                        if !w.write(data.slice_ref(chunk)).await {
                            break;
                        }
                    }
                    Step::Done { .. } => {
                        done = true;
                        break;
                    }
                }
            }
            if let Some(w) = &writer {
                let bytes = w.at.load(Ordering::Relaxed);
                if let Some(rate) = progress.due(bytes) {
                    self.announce_progress(&rec.info, bytes, rate);
                }
                if w.stopped() {
                    break Ok(false);
                }
            }
            if done {
                break Ok(true);
            }
        };
        let Some(w) = writer else {
            return match result {
                Err(e) => Err(e),
                Ok(_) => Err(refuse("the exchange ended before its head".into(), true)),
            };
        };
        let written = w.finish().await;
        let (pos, sha) = match written {
            Ok(w) => w,
            Err(e) => {
                let reason = format!("cannot write the file at {}: {e}", self.inner.me);
                self.set(seq, TransferState::Waiting, offset, Some(reason.clone()))
                    .await;
                return Err(refuse(reason, true));
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => return Err(refuse("the part file's writer stopped".into(), true)),
            Err(e) => {
                // Interrupted: what was written is recorded; the
                // next offer resumes there, in this process without
                // reading the part file again.
                self.inner
                    .hashes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(seq, (pos, sha));
                self.set(
                    seq,
                    TransferState::Waiting,
                    pos,
                    Some("interrupted: waiting for the sender to resume".into()),
                )
                .await;
                return Err(e);
            }
        }
        let got = hex(&sha.finalize());
        if pos != offer.size || got != offer.sha256 {
            let _ = std::fs::remove_file(&part);
            let reason = format!(
                "the file arrived with SHA-256 {got}, not the offered {}; sending it again from the start",
                offer.sha256
            );
            self.set(seq, TransferState::Waiting, 0, Some(reason.clone()))
                .await;
            return Err(refuse(reason, true));
        }
        let dir = self.inner.cfg.received();
        let name = offer.name.clone();
        match tokio::task::spawn_blocking(move || place(&part, &dir, &name)).await {
            Ok(Ok(path)) => Ok(path),
            Ok(Err(e)) => Err(refuse(format!("cannot put the file in place: {e}"), true)),
            Err(e) => Err(refuse(format!("cannot put the file in place: {e}"), true)),
        }
    }

    /// A broken exchange: what it wrote is thrown away (the part goes back
    /// to where it started), so a bad CRC or end marker keeps nothing.
    async fn abandon<T>(
        &self,
        writer: Option<PartWriter>,
        seq: i64,
        offset: u64,
        err: (ReceiveError, Option<FileReply>),
    ) -> Result<T, (ReceiveError, Option<FileReply>)> {
        if let Some(w) = writer {
            let _ = w.finish().await;
        }
        let reason = match &err.0 {
            ReceiveError::Refused(r) => r.clone(),
            e => e.to_string(),
        };
        self.set(seq, TransferState::Waiting, offset, Some(reason))
            .await;
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placing_never_overwrites_and_removes_the_part() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("received");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("m.bin"), b"earlier").unwrap();
        let part = d.path().join("1.part");
        std::fs::write(&part, b"new").unwrap();
        let placed = place(&part, &dir, "m.bin").unwrap();
        assert_eq!(placed, dir.join("m (1).bin"));
        assert_eq!(std::fs::read(dir.join("m.bin")).unwrap(), b"earlier");
        assert_eq!(std::fs::read(&placed).unwrap(), b"new");
        assert!(!part.exists());
    }

    #[test]
    fn a_prefix_hash_continues_like_the_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &body).unwrap();
        let mut sha = hash_prefix(&p, 1_234_567).unwrap();
        sha.update(&body[1_234_567..]);
        assert_eq!(sha.finalize(), Sha256::digest(&body));
    }
}
