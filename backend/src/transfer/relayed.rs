//! Files through the directory's relay, for a peer with no chat address
//! (`--chat none`) or one whose address does not answer.
//!
//! The same offer, exchange and verdict as on a connection of its own
//! ([`super::outbound`], [`super::inbound`]), sealed on the channel the
//! pair already has through the directory for chat
//! (`node::relay`). What differs is what that path needs
//! (`roundtable_shared::transfer`, "Through the directory's relay"):
//!
//! - **Each frame names its transfer**, and the exchange's bytes travel
//!   in `FILECHUNK`s that say where in the exchange they start: the
//!   directory refuses a frame that does not fit its queues (`RELAYNAK`),
//!   and a lost chunk must be noticed, not written over. The receiver
//!   then says so and the sender offers again: it resumes at the
//!   receiver's last checkpoint, like after any broken connection.
//! - **A window.** The sender sends at most [`RELAY_WINDOW`] past what the
//!   receiver granted (`FILEWIN`, every quarter window it takes), so the
//!   directory holds at most a window of each transfer, and the receiver's
//!   route never overflows. The receiver's frames pay from its own budget
//!   at the directory: when the directory refuses one of them, the
//!   receiver grants its window again, since the sender may be waiting
//!   for the one refused.
//! - **A pace.** The directory gives each user a byte budget per second,
//!   which chat shares: a file takes at most
//!   [`TransferConfig::relay_rate`](super::TransferConfig) (`--relay-file-rate`,
//!   4 MiB/s by default, a quarter of the directory's default budget), so
//!   chat through the relay keeps flowing beside it.
//!   When the directory refuses a chunk all the same (its budget is
//!   smaller, or chat took much of it), the attempt ends, the pace for
//!   that peer halves from what the attempt achieved, and the transfer
//!   resumes half a second later from the receiver's checkpoint; each file
//!   delivered doubles it again, up to the configured rate.
//! - **One file at a time per peer**, each way: they would share the
//!   same budget anyway.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use roundtable_shared::api::{TransferInfo, TransferState};
use roundtable_shared::binary::footer;
use roundtable_shared::directory::RelayRefusal;
use roundtable_shared::frame::Frame;
use roundtable_shared::transfer::{FileReply, TransferFrame, MAX_DATA, RELAY_WINDOW};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;

use super::inbound::{Incoming, ReceiveError};
use super::outbound::{
    after_footer, exchange_head, offer, resume_at, Attempt, AttemptError, OFFER_TIMEOUT,
    VERDICT_TIMEOUT,
};
use super::{Progress, Transfers};
use crate::framing::FramingError;
use crate::node::link::LinkError;
use crate::node::relay::{FileRoute, Relay};
use crate::store::transfers::TransferRecord;

/// One attempt to send the transfer `rec` to its peer through `relay`.
pub(super) async fn attempt(
    t: &Transfers,
    rec: &TransferRecord,
    relay: &Relay,
    path: &Path,
) -> Result<Attempt, AttemptError> {
    let info = &rec.info;
    let peer = &info.peer;
    let _turn = t.relay_turn(info).await;
    let mut pace = Pace::new(t.relay_pace(peer));
    match attempt_paced(t, rec, relay, path, &mut pace).await {
        Err(AttemptError::Link(LinkError::Relay(reason)))
            if RelayRefusal::is_for_now(peer, &reason) =>
        {
            let rate = t.relay_slow_down(peer, pace.achieved());
            Err(AttemptError::SlowDown { reason, rate })
        }
        Ok(Attempt::Delivered) => {
            t.relay_speed_up(peer);
            Ok(Attempt::Delivered)
        }
        other => other,
    }
}

async fn attempt_paced(
    t: &Transfers,
    rec: &TransferRecord,
    relay: &Relay,
    path: &Path,
    pace: &mut Pace,
) -> Result<Attempt, AttemptError> {
    let info = &rec.info;
    let peer = &info.peer;
    let link = match relay
        .link(peer, t.inner.overlay.channel.handshake_timeout)
        .await
    {
        Ok(l) => l,
        Err(e) if e.needs_user() => return Ok(Attempt::Unreachable(format!("held: {e}"))),
        Err(e) => {
            return Ok(Attempt::Unreachable(format!(
                "cannot reach {peer} through the directory's relay: {e}"
            )))
        }
    };
    let mut route = relay.file_route(&link, &info.id);
    drop(link);
    let idle = t.inner.cfg.idle_timeout;
    // Every node that takes files through the relay knows rooms.
    let offer = offer(info, true);
    route
        .send(&[TransferFrame::Offer(offer).to_frame()], idle)
        .await?;
    let offset = match resume_at(reply(&mut route, OFFER_TIMEOUT).await?, info)? {
        Ok(offset) => offset,
        Err(ended) => return Ok(ended),
    };
    let mut sending = rec.clone();
    if let Some(r) = t.set(info.seq, TransferState::Sending, offset, None).await {
        sending = r;
    }
    if let Some(refused) = stream(t, &mut route, &sending.info, path, offset, pace).await? {
        return Ok(refused);
    }
    after_footer(reply(&mut route, VERDICT_TIMEOUT).await?)
}

/// The receiver's next reply, skipping the windows it grants meanwhile.
async fn reply(route: &mut FileRoute, within: Duration) -> Result<FileReply, AttemptError> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = route.recv(left).await?;
        match TransferFrame::parse(&f) {
            Ok(TransferFrame::Reply { reply, .. }) => return Ok(reply),
            Ok(TransferFrame::Window { .. }) => continue,
            Ok(_) => return Err(AttemptError::Protocol(f.kind)),
            Err(e) => return Err(AttemptError::Protocol(e.to_string())),
        }
    }
}

/// Keeps a transfer to its byte rate, after a first window at once.
struct Pace {
    /// Bytes a second; 0: as fast as the window allows.
    rate: u64,
    start: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Bytes a second sent so far (the first window included).
    fn achieved(&self) -> u64 {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        (self.sent as f64 / secs) as u64
    }

    /// Waits until `n` more bytes are due.
    async fn take(&mut self, n: usize) {
        self.sent += n as u64;
        if self.rate == 0 {
            return;
        }
        let ahead = self.sent.saturating_sub(RELAY_WINDOW);
        let due = self.start + Duration::from_secs_f64(ahead as f64 / self.rate as f64);
        tokio::time::sleep_until(due).await;
    }
}

/// The sending side of one exchange: chunks within the window, at the pace.
struct Chunks<'a> {
    route: &'a mut FileRoute,
    /// Where the next chunk starts in the exchange.
    at: u64,
    /// How far the receiver lets us send.
    upto: u64,
    pace: &'a mut Pace,
    idle: Duration,
}

impl Chunks<'_> {
    /// Sends `data` as the next chunk; `Some` if the receiver refused
    /// (it found a chunk missing, or cannot go on).
    async fn send(&mut self, data: Vec<u8>) -> Result<Option<Attempt>, AttemptError> {
        let end = self.at + data.len() as u64;
        loop {
            // Whatever the receiver said meanwhile, without waiting.
            let f = if end <= self.upto {
                match self.route.try_recv()? {
                    Some(f) => f,
                    None => break,
                }
            } else {
                self.route.recv(self.idle).await?
            };
            match TransferFrame::parse(&f) {
                Ok(TransferFrame::Window { upto, .. }) => self.upto = self.upto.max(upto),
                Ok(TransferFrame::Reply {
                    reply: FileReply::Refused { reason, retry },
                    ..
                }) => return Ok(Some(Attempt::Refused { reason, retry })),
                Ok(_) => return Err(AttemptError::Protocol(f.kind)),
                Err(e) => return Err(AttemptError::Protocol(e.to_string())),
            }
        }
        self.pace.take(data.len()).await;
        let chunk = TransferFrame::Chunk {
            id: self.route.id().to_owned(),
            at: self.at,
            data,
        };
        self.route.send(&[chunk.to_frame()], self.idle).await?;
        self.at = end;
        Ok(None)
    }
}

/// Streams the exchange for the file from `offset` to its end.
async fn stream(
    t: &Transfers,
    route: &mut FileRoute,
    info: &TransferInfo,
    path: &Path,
    offset: u64,
    pace: &mut Pace,
) -> Result<Option<Attempt>, AttemptError> {
    let mut file = tokio::fs::File::open(path).await?;
    if file.metadata().await?.len() != info.size {
        return Err(AttemptError::Changed);
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let head = exchange_head(t, info, offset);
    let mut chunks = Chunks {
        route,
        at: 0,
        upto: RELAY_WINDOW,
        pace,
        idle: t.inner.cfg.idle_timeout,
    };
    if let Some(refused) = chunks.send(head).await? {
        return Ok(Some(refused));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut sent = offset;
    let mut progress = Progress::new(offset);
    while sent < info.size {
        let n = (info.size - sent).min(MAX_DATA as u64) as usize;
        let mut data = vec![0u8; n];
        match file.read_exact(&mut data).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AttemptError::Changed)
            }
            Err(e) => return Err(e.into()),
        }
        crc.update(&data);
        if let Some(refused) = chunks.send(data).await? {
            return Ok(Some(refused));
        }
        sent += n as u64;
        if let Some(rate) = progress.due(sent) {
            t.announce_progress(info, sent, rate);
        }
    }
    chunks.send(footer(crc.finalize()).to_vec()).await
}

/// Where a received exchange stands: the chunks must follow each other,
/// and the window is granted again every quarter of it.
#[derive(Debug)]
struct Taken {
    /// Where the next chunk must start.
    at: u64,
    /// How far we let the sender send.
    granted: u64,
}

impl Taken {
    fn new() -> Taken {
        Taken {
            at: 0,
            granted: RELAY_WINDOW,
        }
    }

    /// Takes a chunk of `len` bytes at `at`: the new window to grant, if
    /// one is due; an error if a chunk before it was lost (or it came
    /// again).
    fn take(&mut self, at: u64, len: usize) -> Result<Option<u64>, String> {
        if at != self.at {
            return Err(format!(
                "a piece of the file was lost through the relay (the exchange went on at byte {at}, not {}); resuming",
                self.at
            ));
        }
        self.at += len as u64;
        if self.at + RELAY_WINDOW >= self.granted + RELAY_WINDOW / 4 {
            self.granted = self.at + RELAY_WINDOW;
            return Ok(Some(self.granted));
        }
        Ok(None)
    }
}

/// How long a receiver waits before granting its window again after the
/// directory refused one of its frames: the user's budget refills by then.
const REGRANT_PAUSE: Duration = Duration::from_millis(50);

/// The receiving side's end of a route: the exchange's chunks in order,
/// the windows granted back.
pub(super) struct Receiver {
    route: FileRoute,
    taken: Taken,
    /// When to grant the window again, after the directory refused one of
    /// our frames: once for a burst of refusals.
    regrant: Option<Instant>,
}

impl Receiver {
    pub(super) fn new(route: FileRoute) -> Receiver {
        Receiver {
            route,
            taken: Taken::new(),
            regrant: None,
        }
    }

    /// The next frame for the transfer: a chunk's bytes as data, checked to
    /// follow the one before.
    pub(super) async fn next(&mut self, idle: Duration) -> Result<Incoming, ReceiveError> {
        let f = loop {
            let wait = match self.regrant {
                Some(due) if due <= Instant::now() => {
                    self.regrant = None;
                    let window = TransferFrame::Window {
                        id: self.route.id().to_owned(),
                        upto: self.taken.granted,
                    };
                    self.send(&[window.to_frame()], idle).await?;
                    idle
                }
                Some(due) => due.saturating_duration_since(Instant::now()).min(idle),
                None => idle,
            };
            match self.route.recv(wait).await {
                Ok(f) => break f,
                // The directory refused one of our frames to the sender,
                // for now: perhaps the window we granted last, which the
                // sender may be waiting for. Granted again shortly (a
                // sender takes the furthest it heard), instead of ending
                // the exchange.
                Err(LinkError::Relay(reason))
                    if RelayRefusal::is_for_now(self.route.peer(), &reason) =>
                {
                    self.regrant
                        .get_or_insert_with(|| Instant::now() + REGRANT_PAUSE);
                }
                Err(LinkError::Framing(FramingError::Timeout(_))) if self.regrant.is_some() => {}
                Err(e) => return Err(e.into()),
            }
        };
        if f.kind != TransferFrame::CHUNK {
            return Ok(Incoming::Frame(f));
        }
        let (at, data) = match TransferFrame::parse(&f) {
            Ok(TransferFrame::Chunk { at, data, .. }) => (at, data),
            _ => return Err(ReceiveError::Refused("a bad FILECHUNK frame".into())),
        };
        match self.taken.take(at, data.len()) {
            Ok(None) => {}
            Ok(Some(upto)) => {
                let window = TransferFrame::Window {
                    id: self.route.id().to_owned(),
                    upto,
                };
                self.send(&[window.to_frame()], idle).await?;
            }
            Err(reason) => {
                let refusal = TransferFrame::Reply {
                    id: self.route.id().to_owned(),
                    reply: FileReply::Refused {
                        reason: reason.clone(),
                        retry: true,
                    },
                };
                let _ = self.send(&[refusal.to_frame()], idle).await;
                return Err(ReceiveError::Refused(reason));
            }
        }
        Ok(Incoming::Data(Bytes::from(data)))
    }

    pub(super) async fn send(&self, frames: &[Frame], within: Duration) -> Result<(), LinkError> {
        self.route.send(frames, within).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_order_grant_the_window_again_every_quarter() {
        let mut t = Taken::new();
        let chunk = MAX_DATA;
        let quarter = (RELAY_WINDOW / 4) as usize / chunk;
        let mut grants = Vec::new();
        for i in 0..4 * quarter {
            if let Some(upto) = t.take((i * chunk) as u64, chunk).unwrap() {
                grants.push((i, upto));
            }
        }
        // Each grant is a window past what was taken, once a quarter of a
        // window was taken since the last.
        assert_eq!(grants.len(), 4, "{grants:?}");
        for (i, upto) in &grants {
            assert_eq!(*upto, ((i + 1) * chunk) as u64 + RELAY_WINDOW);
        }
        // A sender inside its grants never has more than a window on its
        // way.
        assert!(grants.windows(2).all(|w| w[1].1 - w[0].1 <= RELAY_WINDOW));
    }

    #[test]
    fn a_lost_or_repeated_chunk_is_noticed_at_the_next() {
        let mut t = Taken::new();
        t.take(0, 100).unwrap();
        t.take(100, 50).unwrap();
        // The chunk at 150 was refused by the directory; the next is not
        // written after the one before it.
        let e = t.take(250, 100).unwrap_err();
        assert!(e.contains("lost through the relay"), "{e}");
        assert!(e.contains("250") && e.contains("150"), "{e}");
        // Nor is one sent twice.
        let mut t = Taken::new();
        t.take(0, 100).unwrap();
        assert!(t.take(0, 100).is_err());
    }
}
