//! File transfer (issue 14): NVIDIA FLARE's binary exchange, between our
//! nodes inside the secure channel and, bare, with any NVFlare-compatible
//! peer.
//!
//! - [`raw`]: one exchange on a bare connection (`send-file --raw`,
//!   `receive-file`, and bare exchanges arriving on the chat port),
//!   byte-compatible with NVFlare's own `binary_proto`.
//! - [`Transfers`] (this file): the node's file service. A file handed to
//!   it (browser upload, `roundtable send-file --node`) is streamed into
//!   the outbox folder and hashed on the way, then gets one durable
//!   transfer per recipient (`store::transfers`), delivered like a chat
//!   message: retried with backoff, resumed where the receiver stopped,
//!   delivered exactly once.
//! - [`outbound`]: one transfer's sending side: its own secure connection
//!   to the peer's chat port, the offer, the exchange from the offset.
//! - [`inbound`]: the receiving side, on a secure connection the chat
//!   port handed over: part file, checkpoints, verification, rename.
//! - [`relayed`]: both sides through the directory's relay, for a peer
//!   without a chat address: windowed, paced, one file at a time.
//!
//! - [`bulk`]: where all of a file's work runs, below chat's priority.
//! - [`reader`], [`sink`]: a file's bytes on their way out of and into
//!   files, on threads of their own; [`writeback`]: a received file goes
//!   to disk as it arrives, a few MiB behind, not all at the final sync.
//!
//! Progress reaches the dashboard as `Event::Transfer`, at most about ten
//! a second per transfer ([`Progress`]).
//!
//! Layout under the node's data folder: `files/outbox/` (what we send),
//! `files/partial/<seq>.part` (what is arriving), `files/received/` (what
//! arrived whole and verified, under its own name, never overwriting).

pub mod bulk;
pub mod cli;
pub mod inbound;
pub mod outbound;
pub mod raw;
pub mod reader;
pub mod relayed;
pub mod sink;
pub mod writeback;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use roundtable_shared::api::{Event, TransferInfo, TransferState};
use roundtable_shared::transfer::{valid_file_name, MAX_SIZE};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::directory::accounts::valid_name;
use crate::events::Events;
use crate::node::link::Overlay;
use crate::node::peers::Peers;
use crate::node::relay::Relay;
use crate::store::chat::now_ms;
use crate::store::transfers::{TransferRecord, TransferStore};
use crate::store::StoreError;

/// Free disk space a received file must leave (both kinds of receiving).
pub const FREE_MARGIN: u64 = 256 << 20;

/// Default largest file sent or received (`--max-file-size 64G`).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;

/// Default age at which an abandoned part file goes (`--part-max-age 168`).
pub const DEFAULT_PART_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Transfer tuning.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// `files/` under the node's data folder.
    pub files_dir: PathBuf,
    /// Largest file accepted, sent or received (`--max-file-size`).
    pub max_file_size: u64,
    /// Free space a received file must leave on the disk.
    pub free_margin: u64,
    /// Part files of transfers untouched this long are removed
    /// (`--part-max-age`).
    pub part_max_age: Duration,
    /// Transfers sending at once, and receiving at once.
    pub max_outbound: usize,
    pub max_inbound: usize,
    /// Most recipients of one upload.
    pub max_recipients: usize,
    pub connect_timeout: Duration,
    /// A connection silent this long (no byte either way) is dropped and
    /// the transfer resumes later.
    pub idle_timeout: Duration,
    /// Bytes a second a file may take through the directory's relay
    /// (`--relay-file-rate`); 0: no pace, only the window.
    pub relay_rate: u64,
}

/// The slowest a file goes through the relay when the directory keeps
/// refusing its chunks.
const MIN_RELAY_PACE: u64 = 64 << 10;

/// A learned pace this fast is as good as none, when none is configured.
const UNPACED_ENOUGH: u64 = 1 << 30;

/// Default pace of a file through the relay (`--relay-file-rate 4M`): a
/// quarter of a directory's default byte budget per user, which the
/// user's chat shares.
pub const DEFAULT_RELAY_RATE: u64 = 4 << 20;

impl TransferConfig {
    pub fn new(files_dir: PathBuf) -> Self {
        TransferConfig {
            files_dir,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            free_margin: FREE_MARGIN,
            part_max_age: DEFAULT_PART_MAX_AGE,
            max_outbound: 8,
            max_inbound: 16,
            max_recipients: 32,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            relay_rate: DEFAULT_RELAY_RATE,
        }
    }

    pub fn outbox(&self) -> PathBuf {
        self.files_dir.join("outbox")
    }

    pub fn partial(&self) -> PathBuf {
        self.files_dir.join("partial")
    }

    pub fn received(&self) -> PathBuf {
        self.files_dir.join("received")
    }
}

/// Why the file service refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid recipient name {0:?}")]
    BadPeer(String),
    #[error("name at least one recipient (at most {0})")]
    Recipients(usize),
    #[error("you cannot send a file to yourself")]
    ToSelf,
    #[error("{0:?} is not a plain file name (no folders, no leading dot, at most 255 bytes)")]
    BadName(String),
    #[error("the file is larger than this node accepts ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("the upload broke off: {0}")]
    Upload(String),
    #[error("no such transfer")]
    NotFound,
    #[error("file i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the file service reaches peers: the overlay's keys and pins, who
/// is online where, and the directory's relay for those with no address.
pub struct Reach {
    pub overlay: Overlay,
    pub peers: Peers,
    pub relay: Option<Relay>,
}

/// The node's file service. Cheap to clone.
#[derive(Clone)]
pub struct Transfers {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: TransferConfig,
    me: String,
    store: TransferStore,
    overlay: Overlay,
    peers: Peers,
    events: Events,
    /// Outgoing transfers with a running worker.
    running: Mutex<HashSet<i64>>,
    /// Incoming transfers being received now (one connection each), and
    /// the wake-up for an offer waiting for one of them to end.
    receiving: Mutex<HashMap<i64, CancellationToken>>,
    received: tokio::sync::Notify,
    /// The running SHA-256 of an incoming transfer whose connection broke,
    /// with the offset it covers, so that resuming in the same process
    /// does not read the part file again.
    hashes: Mutex<HashMap<i64, (u64, Sha256)>>,
    outbound: Arc<Semaphore>,
    inbound: Arc<Semaphore>,
    /// Files to peers through the relay go one at a time per peer.
    relay: Option<Relay>,
    relay_turns: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The pace learned for a peer through the relay, where the directory
    /// refused chunks at the configured one (bytes a second).
    relay_paces: Mutex<HashMap<String, u64>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Asked when an offer names a room: whether this node's user and the
/// sender (the second argument) are both in that room (the first) now, by
/// this node's own account ([`crate::node::rooms::shares_room`]). It reads
/// the chat store: call it off the runtime's threads.
pub type SharesRoom = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    roundtable_shared::secure::hex_encode_into(&mut s, bytes);
    s
}

/// A fresh transfer id: 128 random bits.
fn new_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    hex(&b)
}

/// Bytes free for unprivileged writers on the disk holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Throttles one transfer's progress events: at most one every
/// [`Progress::EVERY`], with the rate over the last interval.
#[derive(Debug)]
pub struct Progress {
    last: Instant,
    last_bytes: u64,
    rate: Option<f64>,
}

impl Progress {
    pub const EVERY: Duration = Duration::from_millis(100);

    pub fn new(bytes: u64) -> Self {
        Progress {
            last: Instant::now(),
            last_bytes: bytes,
            rate: None,
        }
    }

    /// The rate to publish if an event is due now, else `None`.
    pub fn due(&mut self, bytes: u64) -> Option<f64> {
        let dt = self.last.elapsed();
        if dt < Self::EVERY {
            return None;
        }
        let r = bytes.saturating_sub(self.last_bytes) as f64 / dt.as_secs_f64();
        // Smoothed, so the time left does not jump with every sample.
        let rate = self.rate.map_or(r, |old| 0.7 * r + 0.3 * old);
        self.rate = Some(rate);
        self.last = Instant::now();
        self.last_bytes = bytes;
        Some(rate)
    }
}

impl Transfers {
    /// Opens `transfers.db` in `data` and makes the file folders.
    pub fn open(
        cfg: TransferConfig,
        data: &Path,
        Reach {
            overlay,
            peers,
            relay,
        }: Reach,
        events: Events,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> anyhow::Result<Transfers> {
        use anyhow::Context;
        for d in [cfg.outbox(), cfg.partial(), cfg.received()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let store = TransferStore::open(&data.join("transfers.db"))?;
        Ok(Transfers {
            inner: Arc::new(Inner {
                me: overlay.me.clone(),
                outbound: Arc::new(Semaphore::new(cfg.max_outbound)),
                inbound: Arc::new(Semaphore::new(cfg.max_inbound)),
                cfg,
                store,
                overlay,
                peers,
                events,
                running: Mutex::default(),
                receiving: Mutex::default(),
                received: tokio::sync::Notify::new(),
                hashes: Mutex::default(),
                relay,
                relay_turns: Mutex::default(),
                relay_paces: Mutex::default(),
                shutdown,
                tracker,
            }),
        })
    }

    /// Bytes a second for a file to `peer` through the relay (0: no pace).
    pub(crate) fn relay_pace(&self, peer: &str) -> u64 {
        let configured = self.inner.cfg.relay_rate;
        match self.paces().get(peer) {
            Some(&learned) if configured == 0 => learned,
            Some(&learned) => learned.min(configured),
            None => configured,
        }
    }

    /// The directory refused a chunk to `peer` sent at `achieved` bytes a
    /// second: halves the pace (to no less than 64 KiB/s), and returns it.
    pub(crate) fn relay_slow_down(&self, peer: &str, achieved: u64) -> u64 {
        let current = match self.relay_pace(peer) {
            0 => achieved,
            p => p.min(achieved.max(MIN_RELAY_PACE)),
        };
        let rate = (current / 2).max(MIN_RELAY_PACE);
        self.paces().insert(peer.to_owned(), rate);
        rate
    }

    /// A file reached `peer` through the relay: its pace doubles, and is
    /// forgotten once it is back at the configured rate.
    pub(crate) fn relay_speed_up(&self, peer: &str) {
        let configured = self.inner.cfg.relay_rate;
        let mut paces = self.paces();
        if let Some(p) = paces.get_mut(peer) {
            *p = p.saturating_mul(2);
            if (configured != 0 && *p >= configured) || *p >= UNPACED_ENOUGH {
                paces.remove(peer);
            }
        }
    }

    fn paces(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.inner
            .relay_paces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this transfer's turn among the files to its peer through
    /// the relay (saying so while it waits); held until it is dropped.
    pub(crate) async fn relay_turn(
        &self,
        info: &TransferInfo,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let turn = self
            .inner
            .relay_turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(info.peer.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        if let Ok(p) = turn.clone().try_acquire_owned() {
            return Some(p);
        }
        let reason = format!(
            "after another file to {}: through the directory's relay, files to a peer go one at a time",
            info.peer
        );
        self.set(info.seq, TransferState::Waiting, info.bytes, Some(reason))
            .await;
        turn.acquire_owned().await.ok()
    }

    pub fn config(&self) -> &TransferConfig {
        &self.inner.cfg
    }

    /// Publishes a transfer's state as stored.
    pub(crate) fn announce(&self, rec: &TransferRecord) {
        self.inner.events.publish(Event::Transfer {
            transfer: rec.info.clone(),
        });
    }

    /// Publishes a moving transfer: `bytes` so far at `rate` bytes/s (a
    /// [`Progress`] says when one is due).
    pub(crate) fn announce_progress(&self, info: &TransferInfo, bytes: u64, rate: f64) {
        let mut info = info.clone();
        info.bytes = bytes;
        info.rate = Some(rate);
        self.inner
            .events
            .publish(Event::Transfer { transfer: info });
    }

    /// Updates a transfer's state in the store and announces it.
    pub(crate) async fn set(
        &self,
        seq: i64,
        state: TransferState,
        bytes: u64,
        error: Option<String>,
    ) -> Option<TransferRecord> {
        let store = self.inner.store.clone();
        let r = crate::store::blocking(move || {
            store.update(seq, state, bytes, error.as_deref(), now_ms())
        })
        .await;
        match r {
            Ok(Some(rec)) => {
                self.announce(&rec);
                Some(rec)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(seq, %e, "cannot record a transfer's state");
                None
            }
        }
    }

    /// Transfers newest first, all or with one peer.
    pub async fn list(&self, peer: Option<String>) -> Result<Vec<TransferInfo>, FilesError> {
        let store = self.inner.store.clone();
        let rows = crate::store::blocking(move || store.list(peer.as_deref(), 10_000)).await?;
        Ok(rows.into_iter().map(|r| r.info).collect())
    }

    /// One transfer.
    pub async fn get(&self, seq: i64) -> Result<TransferRecord, FilesError> {
        let store = self.inner.store.clone();
        crate::store::blocking(move || store.get(seq))
            .await?
            .ok_or(FilesError::NotFound)
    }

    /// The file behind a transfer, if it can be downloaded now, and its name.
    pub async fn content(&self, seq: i64) -> Result<(PathBuf, TransferInfo), FilesError> {
        let rec = self.get(seq).await?;
        match rec.path {
            Some(p) if rec.info.downloadable => Ok((p, rec.info)),
            _ => Err(FilesError::NotFound),
        }
    }

    /// Accepts a file for `to`: streams `body` into the outbox (hashing it
    /// on the way, never holding more than one chunk), then records one
    /// transfer per recipient and starts them. Nothing is recorded unless
    /// the whole upload arrived.
    pub async fn upload<S, E>(
        &self,
        to: &[String],
        name: &str,
        room: Option<&str>,
        body: S,
    ) -> Result<Vec<TransferInfo>, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let cfg = &self.inner.cfg;
        // A room's members are bounded by the room itself.
        let cap = match room {
            Some(_) => cfg.max_recipients.max(roundtable_shared::room::MAX_MEMBERS),
            None => cfg.max_recipients,
        };
        if to.is_empty() || to.len() > cap {
            return Err(FilesError::Recipients(cap));
        }
        let mut peers: Vec<String> = Vec::new();
        for p in to {
            if !valid_name(p) {
                return Err(FilesError::BadPeer(p.clone()));
            }
            if *p == self.inner.me {
                return Err(FilesError::ToSelf);
            }
            if !peers.contains(p) {
                peers.push(p.clone());
            }
        }
        if !valid_file_name(name) {
            return Err(FilesError::BadName(name.to_owned()));
        }
        let max = cfg.max_file_size.min(MAX_SIZE);
        let outbox = cfg.outbox();
        let temp = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&outbox)?;
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::from_std(temp.as_file().try_clone()?),
        );
        let mut sha = Sha256::new();
        let mut size = 0u64;
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FilesError::Upload(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(FilesError::TooLarge { max });
            }
            sha.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.into_inner().sync_all().await?;
        let sha256 = hex(&sha.finalize());
        let store = self.inner.store.clone();
        let name = name.to_owned();
        let room = room.map(str::to_owned);
        // In place and recorded, off the runtime's threads (a rename, a
        // folder fsync, a durable commit).
        let recs = tokio::task::spawn_blocking(move || -> Result<_, FilesError> {
            let ids: Vec<String> = peers.iter().map(|_| new_id()).collect();
            let path = outbox.join(&ids[0]);
            temp.persist_noclobber(&path).map_err(|e| e.error)?;
            std::fs::File::open(&outbox)?.sync_all()?;
            Ok(store.queue(
                &peers,
                &ids,
                &name,
                size,
                &sha256,
                &path,
                room.as_deref(),
                now_ms(),
            )?)
        })
        .await
        .map_err(|e| FilesError::Io(std::io::Error::other(e.to_string())))??;
        for r in &recs {
            self.announce(r);
            self.start(r.info.seq);
        }
        Ok(recs.into_iter().map(|r| r.info).collect())
    }

    /// Starts the worker of an outgoing transfer unless it runs already.
    fn start(&self, seq: i64) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        if !self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq)
        {
            return;
        }
        let this = self.clone();
        let worker = async move {
            outbound::run(&this, seq).await;
            this.inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seq);
        };
        // Below chat's priority, with its connection (see `bulk`).
        self.inner.tracker.spawn_on(worker, bulk::runtime());
    }

    /// Starts every unfinished outgoing transfer (at start; workers then
    /// retry on their own), and removes abandoned part files now and then,
    /// until shutdown.
    pub async fn run(self) {
        let store = self.inner.store.clone();
        match crate::store::blocking(move || store.pending_out()).await {
            Ok(pending) => {
                for r in pending {
                    self.start(r.info.seq);
                }
            }
            Err(e) => tracing::error!(%e, "cannot read the transfer outbox"),
        }
        loop {
            self.clean_abandoned().await;
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600).min(self.inner.cfg.part_max_age)) => {}
            }
        }
    }

    /// Fails incoming transfers untouched for `part_max_age` and removes
    /// their part files, and part files no transfer knows.
    pub async fn clean_abandoned(&self) {
        let age = self.inner.cfg.part_max_age;
        let before = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let store = self.inner.store.clone();
        let stale = match crate::store::blocking(move || store.stale_in(before)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%e, "cannot list abandoned transfers");
                return;
            }
        };
        for r in stale {
            if self.is_receiving(r.info.seq) {
                continue;
            }
            let part = self.part_path(r.info.seq);
            let _ = std::fs::remove_file(&part);
            tracing::info!(seq = r.info.seq, peer = %r.info.peer, name = %r.info.name, "abandoned transfer removed");
            self.set(
                r.info.seq,
                TransferState::Failed,
                0,
                Some(format!(
                    "abandoned: nothing arrived for {}",
                    for_people(age)
                )),
            )
            .await;
        }
    }

    /// Where an incoming transfer's bytes wait until verified.
    pub(crate) fn part_path(&self, seq: i64) -> PathBuf {
        self.inner.cfg.partial().join(format!("{seq}.part"))
    }

    fn is_receiving(&self, seq: i64) -> bool {
        self.inner
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&seq)
    }

    /// Records a file that arrived as a bare NVFlare exchange and shows it.
    pub async fn record_bare(&self, r: &raw::Received, from: std::net::SocketAddr) {
        let store = self.inner.store.clone();
        let name = r
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (path, size, sha256, from) =
            (r.path.clone(), r.size, r.sha256.clone(), from.to_string());
        match crate::store::blocking(move || {
            store.bare(&new_id(), &from, &name, size, &sha256, &path, now_ms())
        })
        .await
        {
            Ok(rec) => self.announce(&rec),
            Err(e) => tracing::error!(%e, "cannot record a received file"),
        }
    }
}

/// `3 h`, `90 s`: a duration as a person reads it.
fn for_people(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The paths to try for `name` in `dir`: the name itself, then ` (1)`,
/// ` (2)`… before the extension, so nothing is ever overwritten.
pub fn candidates(dir: &Path, name: &str) -> impl Iterator<Item = PathBuf> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
        _ => (name.to_owned(), String::new()),
    };
    let (dir, name) = (dir.to_owned(), name.to_owned());
    (0..1000).map(move |i| {
        if i == 0 {
            dir.join(&name)
        } else {
            dir.join(format!("{stem} ({i}){ext}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_never_repeat_and_keep_the_extension() {
        let c: Vec<_> = candidates(Path::new("/d"), "model.pt").take(3).collect();
        assert_eq!(
            c,
            [
                PathBuf::from("/d/model.pt"),
                PathBuf::from("/d/model (1).pt"),
                PathBuf::from("/d/model (2).pt")
            ]
        );
        let c: Vec<_> = candidates(Path::new("/d"), "README").take(2).collect();
        assert_eq!(c[1], PathBuf::from("/d/README (1)"));
    }

    #[test]
    fn progress_is_throttled() {
        let mut p = Progress::new(0);
        assert_eq!(p.due(10), None);
        std::thread::sleep(Progress::EVERY);
        assert!(p.due(1000).is_some_and(|r| r > 0.0));
        assert_eq!(p.due(2000), None);
    }
}
