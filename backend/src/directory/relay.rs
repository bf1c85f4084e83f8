//! The relay: the directory forwards the overlay's sealed frames (`HELLO`,
//! `SEC`) between two logged-in users' sessions, for nodes others cannot
//! reach directly (issue 13; wire format in `roundtable_shared::directory`).
//!
//! This module owns the relay table: for each user holding a relay
//! registration (`RELAY 0`), the bounded queue of frames waiting for that
//! user's current relay session. The session loop (`session.rs`) drains
//! its queue between its own replies.
//!
//! What holds, and why it is built this way:
//!
//! - **The directory cannot read what it relays.** The frames are Noise
//!   messages sealed end to end; here they are only bytes with a sender and
//!   a destination. Logs name the kind, the names and the length, never
//!   the payload; memory holds only the queued frames.
//! - **Sender and destination are the sessions' users.** A frame's `from`
//!   must be its session's logged-in user; it goes only to the session that
//!   `to` registered last. A registration carries a generation, so a
//!   session that was replaced or ended removes only its own entry, never
//!   its successor's.
//! - **A slow destination never holds up a sender, and nothing grows
//!   without bound.** Each destination's queue is bounded in frames and in
//!   bytes (and all queues together in bytes); a frame that does not fit
//!   is refused at once (`RELAYNAK`), never waited for. A destination
//!   session that cannot take a write within the write timeout is ended by
//!   its session loop.
//! - **One user cannot flood the relay.** Each sending user (all of its
//!   sessions together) has two token buckets, frames and bytes, each
//!   holding two seconds' worth of its rate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use roundtable_shared::directory::{summary, RelayRefusal, MAX_RELAY_PAYLOAD};
use roundtable_shared::secure::SecureFrame;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The relay's limits.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Relay at all; off: `RELAY` gets `NAK relay is disabled on this
    /// directory` and every frame `RELAYNAK` with the same reason.
    pub enabled: bool,
    /// Frames queued for one destination at most.
    pub queue_frames: usize,
    /// Bytes queued for one destination at most (a frame is always
    /// accepted into an empty queue, so the largest `SEC` passes even
    /// under a smaller bound).
    pub queue_bytes: usize,
    /// Bytes queued for all destinations together at most.
    pub total_bytes: usize,
    /// Frames one user may send per second (bursts of twice this); 0: unlimited.
    pub frames_per_second: u32,
    /// Bytes one user may send per second (bursts of twice this, and at
    /// least one largest frame); 0: unlimited.
    pub bytes_per_second: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            queue_frames: 256,
            queue_bytes: 4 * 1024 * 1024,
            total_bytes: 256 * 1024 * 1024,
            frames_per_second: 2_000,
            bytes_per_second: 16 * 1024 * 1024,
        }
    }
}

/// How long a burst may last at full rate: buckets hold this many seconds.
const BURST_SECONDS: f64 = 2.0;

/// Most frames a destination session takes from its queue per write.
const BATCH: usize = 64;

/// One relayed frame, encoded, waiting for its destination.
pub type Queued = Vec<u8>;

/// The relay table, shared by every session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RelayConfig,
    /// Longest `RELAYRESULT` payload: registrations beyond it are refused.
    max_result: usize,
    table: RwLock<Table>,
    /// Each sending user's buckets, shared by its sessions while any holds them.
    limiters: Mutex<HashMap<String, Weak<Mutex<Buckets>>>>,
    /// Bytes queued for all destinations together.
    total: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    by_name: BTreeMap<String, Slot>,
    next_generation: u64,
    /// Length of the all-users `RELAYRESULT` payload.
    result_len: usize,
}

/// A user's current relay session, as senders see it.
#[derive(Debug)]
struct Slot {
    generation: u64,
    tx: mpsc::Sender<Queued>,
    /// Bytes queued for this destination (frames being written included).
    bytes: Arc<AtomicUsize>,
    /// Cancelled when a later session of the same user takes over.
    replaced: CancellationToken,
}

impl Relay {
    pub fn new(config: RelayConfig, max_result: usize) -> Relay {
        Relay {
            inner: Arc::new(Inner {
                config,
                max_result,
                table: RwLock::new(Table::default()),
                limiters: Mutex::new(HashMap::new()),
                total: AtomicUsize::new(0),
            }),
        }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `user`'s calling session the one that receives its relayed
    /// frames, replacing (and cutting off) any earlier one.
    pub fn register(&self, user: &str) -> Result<Registration, RelayRefusal> {
        let cfg = &self.inner.config;
        if !cfg.enabled {
            return Err(RelayRefusal::Disabled);
        }
        let (tx, rx) = mpsc::channel(cfg.queue_frames.max(1));
        let bytes = Arc::new(AtomicUsize::new(0));
        let replaced = CancellationToken::new();
        let mut t = self.write();
        let generation = t.next_generation + 1;
        let slot = Slot {
            generation,
            tx,
            bytes: bytes.clone(),
            replaced: replaced.clone(),
        };
        match t.by_name.get_mut(user) {
            Some(old) => {
                old.replaced.cancel();
                *old = slot;
            }
            None => {
                let grown = t.result_len + user.len() + usize::from(!t.by_name.is_empty());
                if grown > self.inner.max_result {
                    return Err(RelayRefusal::Full);
                }
                t.result_len = grown;
                t.by_name.insert(user.to_owned(), slot);
            }
        }
        t.next_generation = generation;
        Ok(Registration {
            relay: self.clone(),
            user: user.to_owned(),
            generation,
            rx,
            bytes,
            replaced,
        })
    }

    /// Removes `user`'s entry if it is still registration `generation`.
    fn unregister(&self, user: &str, generation: u64) {
        let mut t = self.write();
        if t.by_name
            .get(user)
            .is_some_and(|s| s.generation == generation)
        {
            t.by_name.remove(user);
            t.result_len = t
                .result_len
                .saturating_sub(user.len() + usize::from(!t.by_name.is_empty()));
        }
    }

    /// The `RELAYRESULT` payload: every user holding a registration, sorted,
    /// or only `name` if it holds one.
    pub fn query(&self, name: Option<&str>) -> Vec<String> {
        let t = self.read();
        match name {
            Some(n) if t.by_name.contains_key(n) => vec![n.to_owned()],
            Some(_) => Vec::new(),
            None => t.by_name.keys().cloned().collect(),
        }
    }

    /// How many users hold a registration.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether nobody holds a registration.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued for all destinations together.
    pub fn queued_bytes(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// A sending session of `user`: shares `user`'s rate limit with its
    /// other sessions.
    pub fn sender(&self, user: &str) -> Sender {
        let mut map = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let buckets = match map.get(user).and_then(Weak::upgrade) {
            Some(b) => b,
            None => {
                let b = Arc::new(Mutex::new(Buckets::new(&self.inner.config)));
                map.insert(user.to_owned(), Arc::downgrade(&b));
                b
            }
        };
        Sender {
            relay: self.clone(),
            user: user.to_owned(),
            buckets,
        }
    }
}

/// A session's hold on its user's relay registration: receives the frames
/// queued for the user. Dropping it (the session ended) removes the entry,
/// unless a later session has replaced it.
#[derive(Debug)]
pub struct Registration {
    relay: Relay,
    user: String,
    generation: u64,
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<AtomicUsize>,
    replaced: CancellationToken,
}

/// What a registration's next wait yields.
pub enum Next {
    /// Frames to write, in order, whole.
    Frames,
    /// A later session of the same user took over: stop relaying here.
    Replaced,
}

impl Registration {
    /// Waits for queued frames and moves up to a batch of them into `out`
    /// (in order), or reports that this session was replaced (frames still
    /// queued for it are then dropped with it). Cancel-safe.
    pub async fn next(&mut self, out: &mut Vec<Queued>) -> Next {
        if self.replaced.is_cancelled() {
            return Next::Replaced;
        }
        tokio::select! {
            _ = self.replaced.cancelled() => Next::Replaced,
            n = self.rx.recv_many(out, BATCH) => {
                // The slot keeps a sender while this registration is current,
                // so the queue closes only once replaced.
                if n == 0 || self.replaced.is_cancelled() {
                    self.release(out.drain(..).map(|f| f.len()).sum());
                    Next::Replaced
                } else {
                    Next::Frames
                }
            }
        }
    }

    /// Gives back the queue room of `bytes` written (or dropped).
    pub fn release(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.relay.inner.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether this session is still the one its user's frames go to.
    pub fn is_current(&self) -> bool {
        !self.replaced.is_cancelled()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.relay.unregister(&self.user, self.generation);
        // Whatever is still queued goes with the queue: give its room back.
        self.rx.close();
        let mut left = 0;
        while let Ok(f) = self.rx.try_recv() {
            left += f.len();
        }
        self.release(left);
    }
}

/// A session's right to send relayed frames as its user, under the user's
/// rate limit.
#[derive(Debug)]
pub struct Sender {
    relay: Relay,
    user: String,
    buckets: Arc<Mutex<Buckets>>,
}

impl Sender {
    /// Checks `frame` and queues it for its destination, or says why not.
    /// Never waits: a full queue is a refusal.
    pub fn forward(&self, frame: SecureFrame) -> Result<(), RelayRefusal> {
        let (kind, from, to, len) = summary(&frame);
        if from != self.user {
            return Err(RelayRefusal::NotYou);
        }
        if to == self.user {
            return Err(RelayRefusal::ToYourself);
        }
        let inner = &self.relay.inner;
        if !inner.config.enabled {
            return Err(RelayRefusal::Disabled);
        }
        if !self
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(len)
        {
            return Err(RelayRefusal::RateLimited);
        }
        tracing::trace!(from = %self.user, %to, kind, len, "relaying");
        let to = to.to_owned();
        let bytes = frame
            .into_frame()
            .encode()
            .map_err(|_| RelayRefusal::Unreachable)?;
        let n = bytes.len();
        let t = self.relay.read();
        let Some(slot) = t.by_name.get(&to) else {
            return Err(RelayRefusal::Unreachable);
        };
        let queued = slot.bytes.fetch_add(n, Ordering::Relaxed);
        let total = inner.total.fetch_add(n, Ordering::Relaxed);
        let undo = || {
            slot.bytes.fetch_sub(n, Ordering::Relaxed);
            inner.total.fetch_sub(n, Ordering::Relaxed);
        };
        // An empty queue takes any frame, so a bound below the largest
        // frame slows the relay down rather than stopping it.
        if (queued > 0 && queued + n > inner.config.queue_bytes)
            || (total > 0 && total + n > inner.config.total_bytes)
        {
            undo();
            return Err(RelayRefusal::QueueFull);
        }
        match slot.tx.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                undo();
                Err(RelayRefusal::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                undo();
                Err(RelayRefusal::Unreachable)
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut map = self
            .relay
            .inner
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Under the map's lock nobody can upgrade meanwhile: if ours is
        // the last handle, the user's buckets go.
        if Arc::strong_count(&self.buckets) == 1
            && map
                .get(&self.user)
                .is_some_and(|w| w.as_ptr() == Arc::as_ptr(&self.buckets))
        {
            map.remove(&self.user);
        }
    }
}

/// A token bucket refilled continuously at `rate` per second up to `cap`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
}

impl Bucket {
    /// `None` when `rate` is 0 (unlimited).
    fn new(rate: f64, cap: f64) -> Option<Bucket> {
        (rate > 0.0).then_some(Bucket {
            rate,
            cap,
            tokens: cap,
        })
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.cap);
    }
}

/// One user's frame and byte buckets.
#[derive(Debug)]
struct Buckets {
    frames: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

impl Buckets {
    fn new(cfg: &RelayConfig) -> Buckets {
        let fps = f64::from(cfg.frames_per_second);
        let bps = cfg.bytes_per_second as f64;
        Buckets {
            frames: Bucket::new(fps, fps * BURST_SECONDS),
            // At least one largest frame, or it could never pass.
            bytes: Bucket::new(
                bps,
                (bps * BURST_SECONDS).max((MAX_RELAY_PAYLOAD + 512) as f64),
            ),
            last: Instant::now(),
        }
    }

    /// Takes one frame of `len` bytes from both buckets, or nothing.
    fn take(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let len = len as f64;
        for b in [&mut self.frames, &mut self.bytes].into_iter().flatten() {
            b.refill(secs);
        }
        let frames_ok = self.frames.as_ref().is_none_or(|b| b.tokens >= 1.0);
        let bytes_ok = self.bytes.as_ref().is_none_or(|b| b.tokens >= len);
        if !(frames_ok && bytes_ok) {
            return false;
        }
        if let Some(b) = &mut self.frames {
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= len;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::secure::Sealed;

    fn sec(from: &str, to: &str, len: usize) -> SecureFrame {
        SecureFrame::Sealed(Sealed {
            from: from.into(),
            to: to.into(),
            epoch: 0,
            counter: 0,
            payload: vec![7; len],
        })
    }

    fn relay(config: RelayConfig) -> Relay {
        Relay::new(config, 1024 * 1024)
    }

    #[tokio::test]
    async fn a_replaced_registration_stops_receiving_and_removes_nothing_when_dropped() {
        let r = relay(RelayConfig::default());
        let mut first = r.register("alice").unwrap();
        let bob = r.sender("bob");
        bob.forward(sec("bob", "alice", 40)).unwrap();
        let mut second = r.register("alice").unwrap();
        let mut out = Vec::new();
        assert!(matches!(first.next(&mut out).await, Next::Replaced));
        assert!(out.is_empty());
        drop(first);
        assert_eq!(r.query(None), ["alice"]);
        bob.forward(sec("bob", "alice", 40)).unwrap();
        assert!(matches!(second.next(&mut out).await, Next::Frames));
        assert_eq!(out.len(), 1);
        second.release(out[0].len());
        drop(second);
        assert!(r.is_empty());
        assert_eq!(r.queued_bytes(), 0);
        assert_eq!(
            bob.forward(sec("bob", "alice", 40)),
            Err(RelayRefusal::Unreachable)
        );
    }

    #[tokio::test]
    async fn queues_are_bounded_in_frames_and_bytes_and_give_room_back() {
        let r = relay(RelayConfig {
            queue_frames: 3,
            queue_bytes: 200,
            ..RelayConfig::default()
        });
        let reg = r.register("alice").unwrap();
        let bob = r.sender("bob");
        for _ in 0..3 {
            bob.forward(sec("bob", "alice", 40)).unwrap();
        }
        assert_eq!(
            bob.forward(sec("bob", "alice", 40)),
            Err(RelayRefusal::QueueFull)
        );
        drop(reg);
        assert_eq!(r.queued_bytes(), 0, "dropped frames give their room back");
        let _reg = r.register("alice").unwrap();
        // Bytes: a frame larger than the bound passes into an empty queue only.
        bob.forward(sec("bob", "alice", 300)).unwrap();
        assert_eq!(
            bob.forward(sec("bob", "alice", 40)),
            Err(RelayRefusal::QueueFull)
        );
    }

    #[test]
    fn buckets_refuse_past_the_burst_and_are_shared_by_a_users_sessions() {
        let r = relay(RelayConfig {
            frames_per_second: 5,
            ..RelayConfig::default()
        });
        let _reg = r.register("alice").unwrap();
        let (a, b) = (r.sender("bob"), r.sender("bob"));
        let mut passed = 0;
        for i in 0..40 {
            let s = if i % 2 == 0 { &a } else { &b };
            if s.forward(sec("bob", "alice", 40)).is_ok() {
                passed += 1;
            }
        }
        // 10 in the burst (two seconds' worth), perhaps one refilled.
        assert!((10..=11).contains(&passed), "{passed}");
        drop((a, b));
        assert!(r.inner.limiters.lock().unwrap().is_empty());
    }

    #[test]
    fn spoofed_and_self_addressed_frames_are_refused() {
        let r = relay(RelayConfig::default());
        let _reg = r.register("alice").unwrap();
        let bob = r.sender("bob");
        assert_eq!(
            bob.forward(sec("carol", "alice", 40)),
            Err(RelayRefusal::NotYou)
        );
        assert_eq!(
            bob.forward(sec("bob", "bob", 40)),
            Err(RelayRefusal::ToYourself)
        );
        assert_eq!(r.queued_bytes(), 0);
    }

    #[test]
    fn registrations_stay_within_the_result_bound() {
        let r = Relay::new(RelayConfig::default(), 11);
        let _a = r.register("alice").unwrap();
        let _b = r.register("bob").unwrap(); // "alice\nbob": 9 bytes
        assert_eq!(r.register("carol").err(), Some(RelayRefusal::Full));
        let _again = r.register("bob").unwrap(); // a replacement takes no room
        assert_eq!(r.query(None), ["alice", "bob"]);
        assert_eq!(r.query(Some("bob")), ["bob"]);
        assert!(r.query(Some("carol")).is_empty());
    }
}
