//! Sending one file to one peer: the worker of an outgoing transfer.
//!
//! Each attempt opens its own link to the peer's chat port (negotiated
//! and sealed like chat's, `node::link::open_direct`, so chat's own link
//! never waits behind a file), offers the file, and, told where to resume,
//! streams one binary exchange from that offset in `FILEDATA` frames: the
//! header and the JSON meta, the body (read from the outbox file by a
//! reader thread straight into the frames' plaintexts, its CRC-32 computed
//! on the way, then sealed in place: see [`stream`]), the footer. Then it
//! waits for the receiver's verdict. A broken attempt is retried with
//! backoff (0.5 s doubling to 30 s); an offline peer is waited for; a
//! refusal the receiver marks final fails the transfer with its reason.

use std::time::Duration;

use roundtable_shared::api::{TransferInfo, TransferState};
use roundtable_shared::binary::{footer, Header};
use roundtable_shared::frame::{encode_head, Frame};
use roundtable_shared::transfer::{ExchangeMeta, FileOffer, FileReply, TransferFrame, MAX_DATA};

use super::reader::{Buffer, Chunk, Reader};
use super::{Progress, Transfers};
use crate::node::link::{open_direct, Link, LinkError};
use crate::overlay::channel::Plaintext;
use crate::store::transfers::TransferRecord;

/// `FILEDATA` frames sealed and written at a time: 256 KiB, about a
/// quarter of a millisecond of sealing, so that a file never holds a
/// runtime thread long enough to delay chat.
const BATCH: usize = 4;

/// `FILEDATA` frames the file's reader may be ahead of the sealing.
const AHEAD: usize = 8;

/// How long the receiver may take to answer an offer.
pub(super) const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the receiver may take after the footer (a final sync, the
/// rename) to say it has the file.
pub(super) const VERDICT_TIMEOUT: Duration = Duration::from_secs(120);

/// How one attempt ended.
pub(super) enum Attempt {
    Delivered,
    /// The peer is not reachable directly now: why, in words.
    Unreachable(String),
    Refused {
        reason: String,
        retry: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot read the outbox file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the receiver sent an unexpected frame ({0})")]
    Protocol(String),
    #[error("the outbox file changed size since it was queued")]
    Changed,
    /// The directory's relay refused a chunk for its budget: the next
    /// attempt goes at `rate` bytes a second.
    #[error("the directory's relay refused a chunk ({reason})")]
    SlowDown { reason: String, rate: u64 },
}

/// Runs the transfer numbered `seq` until it is delivered, failed, or the
/// node stops.
pub async fn run(t: &Transfers, seq: i64) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let rec = match t.get(seq).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(seq, %e, "cannot read an outgoing transfer");
                return;
            }
        };
        if rec.info.state.is_final() {
            return;
        }
        let permit = tokio::select! {
            _ = t.inner.shutdown.cancelled() => return,
            p = t.inner.outbound.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let attempt = tokio::select! {
            _ = t.inner.shutdown.cancelled() => return,
            a = attempt(t, &rec, permit) => a,
        };
        let info = &rec.info;
        match attempt {
            Ok(Attempt::Delivered) => {
                tracing::info!(peer = %info.peer, name = %info.name, size = info.size, "file delivered");
                t.set(seq, TransferState::Delivered, info.size, None).await;
                return;
            }
            Ok(Attempt::Refused {
                reason,
                retry: false,
            }) => {
                tracing::warn!(peer = %info.peer, name = %info.name, %reason, "file refused");
                t.set(seq, TransferState::Failed, 0, Some(reason)).await;
                return;
            }
            Ok(Attempt::Refused {
                reason,
                retry: true,
            }) => {
                let bytes = latest_bytes(t, seq).await;
                t.set(seq, TransferState::Waiting, bytes, Some(reason))
                    .await;
            }
            Ok(Attempt::Unreachable(why)) => {
                let bytes = latest_bytes(t, seq).await;
                t.set(seq, TransferState::Waiting, bytes, Some(why)).await;
                // Until presence changes (or a while, to look again).
                tokio::select! {
                    _ = t.inner.shutdown.cancelled() => return,
                    _ = t.inner.peers.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            Err(AttemptError::Changed) => {
                t.set(
                    seq,
                    TransferState::Failed,
                    0,
                    Some("the file changed in the outbox after it was queued".into()),
                )
                .await;
                return;
            }
            Err(AttemptError::SlowDown { reason, rate }) => {
                tracing::info!(peer = %info.peer, %reason, rate, "file through the relay slowed down");
                let bytes = latest_bytes(t, seq).await;
                let why = format!(
                    "the directory's relay asked to slow down ({reason}); resuming at {} KiB/s",
                    rate / 1024
                );
                t.set(seq, TransferState::Waiting, bytes, Some(why)).await;
                // The pace is the answer, not a longer wait.
                backoff = Duration::from_millis(500);
                tokio::select! {
                    _ = t.inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(peer = %info.peer, %e, "transfer interrupted; will resume");
                let bytes = latest_bytes(t, seq).await;
                t.set(
                    seq,
                    TransferState::Waiting,
                    bytes,
                    Some(format!("interrupted ({e}); resuming")),
                )
                .await;
            }
        }
        tokio::select! {
            _ = t.inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// What the store last recorded as held by the receiver.
async fn latest_bytes(t: &Transfers, seq: i64) -> u64 {
    t.get(seq).await.map_or(0, |r| r.info.bytes)
}

/// One attempt: connect, offer, stream from the receiver's offset, hear
/// the verdict.
async fn attempt(
    t: &Transfers,
    rec: &TransferRecord,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Attempt, AttemptError> {
    let info = &rec.info;
    let peer = &info.peer;
    let Some(p) = t.inner.peers.get(peer).filter(|p| p.online) else {
        return Ok(Attempt::Unreachable(format!("{peer} is offline")));
    };
    let direct = p
        .address
        .clone()
        .zip(p.port)
        .filter(|_| t.inner.peers.listed(peer));
    let relay = t.inner.relay.as_ref().filter(|r| p.relay && r.is_up());
    let Some(path) = rec.path.clone() else {
        return Err(AttemptError::Changed);
    };
    let Some((address, port)) = direct else {
        return match relay {
            Some(relay) => {
                // Paced and one at a time per peer: not one of the
                // direct connections the permit counts.
                drop(permit);
                super::relayed::attempt(t, rec, relay, &path).await
            }
            None => Ok(Attempt::Unreachable(format!(
                "{peer} has no chat address, and this node has no session with the directory's relay now"
            ))),
        };
    };
    let mut link = match open_direct(
        &t.inner.overlay,
        peer,
        &address,
        port,
        t.inner.cfg.connect_timeout,
        permit,
    )
    .await
    {
        Ok(l) => l,
        Err(e) if e.needs_user() => {
            return Ok(Attempt::Unreachable(format!("held: {e}")));
        }
        Err(e) => {
            if let Some(relay) = relay {
                tracing::info!(%peer, %e, "direct connection failed; sending the file through the relay");
                return super::relayed::attempt(t, rec, relay, &path).await;
            }
            return Ok(Attempt::Unreachable(format!("cannot reach {peer}: {e}")));
        }
    };
    if !link.secure() {
        return Ok(Attempt::Refused {
            reason: format!("{peer} is a classic eurechat peer: it cannot receive files"),
            retry: false,
        });
    }
    let idle = t.inner.cfg.idle_timeout;
    // A node of before room files refuses a field it does not know: it
    // gets the file as one from us.
    let offer = offer(info, link.caps.room_files);
    link.send(&[TransferFrame::Offer(offer).to_frame()], idle)
        .await?;
    let offset = match resume_at(verdict(&mut link, &info.id, OFFER_TIMEOUT).await?, info)? {
        Ok(offset) => offset,
        Err(ended) => return Ok(ended),
    };
    let mut sending = rec.clone();
    if let Some(r) = t.set(info.seq, TransferState::Sending, offset, None).await {
        sending = r;
    }
    stream(t, &mut link, &sending.info, &path, offset).await?;
    after_footer(verdict(&mut link, &info.id, VERDICT_TIMEOUT).await?)
}

/// The offer of `info`, naming its room if the receiver knows rooms.
pub(super) fn offer(info: &TransferInfo, knows_rooms: bool) -> FileOffer {
    FileOffer {
        id: info.id.clone(),
        name: info.name.clone(),
        size: info.size,
        sha256: info.sha256.clone(),
        room: info.room.clone().filter(|_| knows_rooms),
    }
}

/// What the receiver's answer to an offer means: the offset to send from,
/// or how the attempt ended (delivered already, refused).
pub(super) fn resume_at(
    reply: FileReply,
    info: &TransferInfo,
) -> Result<Result<u64, Attempt>, AttemptError> {
    match reply {
        FileReply::Resume { offset } if offset <= info.size => Ok(Ok(offset)),
        FileReply::Resume { offset } => Err(AttemptError::Protocol(format!(
            "resume at {offset}, past the end"
        ))),
        FileReply::Done => Ok(Err(Attempt::Delivered)),
        FileReply::Refused { reason, retry } => Ok(Err(Attempt::Refused { reason, retry })),
    }
}

/// What the receiver's answer after the footer means.
pub(super) fn after_footer(reply: FileReply) -> Result<Attempt, AttemptError> {
    match reply {
        FileReply::Done => Ok(Attempt::Delivered),
        FileReply::Refused { reason, retry } => Ok(Attempt::Refused { reason, retry }),
        FileReply::Resume { .. } => Err(AttemptError::Protocol("resume after the footer".into())),
    }
}

/// The receiver's next reply about transfer `id`.
async fn verdict(link: &mut Link, id: &str, within: Duration) -> Result<FileReply, AttemptError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = link.recv(left).await?;
        match TransferFrame::parse(&f) {
            Ok(TransferFrame::Reply { id: got, reply }) if got == id => return Ok(reply),
            Ok(_) => return Err(AttemptError::Protocol(f.kind)),
            // A newer receiver may say more; skip what we do not know.
            Err(_) if !TransferFrame::is_transfer(&f.kind) => continue,
            Err(e) => return Err(AttemptError::Protocol(e.to_string())),
        }
    }
}

/// Streams the exchange for the file from `offset` to its end.
///
/// A reader thread reads the file straight into the plaintexts of whole
/// `FILEDATA` frames (and computes the CRC-32 on the way), a few frames
/// ahead; this task seals them in place and writes them a few at a time.
/// Each byte is copied once in user space, into the ciphertext: what the
/// frame, pack and seal buffers used to copy was measured with `perf` as
/// the largest cost of a transfer, before the cipher.
async fn stream(
    t: &Transfers,
    link: &mut Link,
    info: &TransferInfo,
    path: &std::path::Path,
    offset: u64,
) -> Result<(), AttemptError> {
    let idle = t.inner.cfg.idle_timeout;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() != info.size {
        return Err(AttemptError::Changed);
    }
    let head = exchange_head(t, info, offset);
    link.send(&[Frame::bare(TransferFrame::DATA, head)], idle)
        .await?;
    let Some((conn, session)) = link.direct_secure() else {
        return Err(AttemptError::Protocol(
            "the link is not direct and sealed".into(),
        ));
    };
    let mut reader = Reader::<DataFrame>::start(file, offset, info.size, MAX_DATA, AHEAD);
    let mut out = Vec::with_capacity(BATCH * (MAX_DATA + 512));
    let mut batch = Vec::with_capacity(BATCH);
    let mut sent = offset;
    let mut progress = Progress::new(offset);
    let crc = loop {
        // The next frame, and those already read behind it, up to BATCH.
        batch.clear();
        let mut end = None;
        let mut next = Some(reader.next().await);
        while let Some(chunk) = next {
            match chunk {
                Chunk::Data(frame, len) => batch.push((frame, len)),
                Chunk::End(crc) => {
                    end = Some(crc);
                    break;
                }
                Chunk::Failed(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(AttemptError::Changed)
                }
                Chunk::Failed(e) => return Err(e.into()),
            }
            next = if batch.len() < BATCH {
                reader.try_next()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            out.clear();
            for (frame, len) in &mut batch {
                session
                    .seal_into(&mut frame.0, &mut out)
                    .map_err(|e| AttemptError::Link(e.into()))?;
                sent += *len as u64;
            }
            for (frame, _) in batch.drain(..) {
                reader.recycle(frame);
            }
            conn.write_encoded_within(&[&out], idle)
                .await
                .map_err(|e| AttemptError::Link(e.into()))?;
            // A socket with room never makes the write wait: let chat's
            // tasks in between.
            tokio::task::yield_now().await;
            if let Some(rate) = progress.due(sent) {
                t.announce_progress(info, sent, rate);
            }
        }
        if let Some(crc) = end {
            break crc;
        }
    };
    link.send(
        &[Frame::bare(TransferFrame::DATA, footer(crc).to_vec())],
        idle,
    )
    .await?;
    Ok(())
}

/// The start of the exchange for `info` from `offset`: its header and
/// JSON meta.
pub(super) fn exchange_head(t: &Transfers, info: &TransferInfo, offset: u64) -> Vec<u8> {
    let meta = ExchangeMeta {
        id: info.id.clone(),
        sender: t.inner.me.clone(),
        file_name: info.name.clone(),
        size: info.size,
        sha256: info.sha256.clone(),
        offset,
    };
    let meta = serde_json::to_vec(&meta).expect("a meta serializes");
    let header = Header {
        // The meta is a few hundred bytes.
        meta_size: meta.len() as u32,
        body_size: info.size - offset,
    };
    let mut head = header.encode().to_vec();
    head.extend_from_slice(&meta);
    head
}

/// A `FILEDATA` frame's plaintext, which the file's reader fills.
#[derive(Default)]
struct DataFrame(Plaintext);

impl Buffer for DataFrame {
    fn prepare(&mut self, n: usize) -> &mut [u8] {
        let mut head = Vec::with_capacity(32);
        encode_head(&mut head, TransferFrame::DATA, n, std::iter::empty());
        self.0.clear();
        self.0.push(&head);
        self.0.extend(n)
    }
}
