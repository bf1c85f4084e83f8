//! The DLR FL Demonstrator notification endpoint, the trainings it feeds,
//! and the runner of the local training command.
//!
//! - [`endpoint`]: the HTTP endpoint the DLR server POSTs to. It validates,
//!   answers with the reference status at once and enqueues the work.
//! - [`Trainings`]: the service. It refuses, before queueing, a round far
//!   beyond the training's highest known one
//!   ([`NotifyConfig::max_round_jump`]). One background worker applies
//!   queued notifications in arrival order (in batches, one SQLite
//!   transaction per batch) to the [`TrainingStore`], keeps an in-memory
//!   copy of every training for the web API, publishes [`Event::Training`]
//!   after each change and hands the runs the store claimed to the runner.
//! - [`transition`]: the training state machine, pure: what one
//!   notification does to one training, and the limits on what is kept.
//! - [`runner`]: runs `<train-cmd> train|test|swag --training-id T --round R
//!   --model-id M` for each new round phase, at most once per (training,
//!   round, phase) and one at a time per training, and records how it
//!   ended.
//!
//! The worker and every run are tasks of the tracker given to
//! [`Trainings::with_config`]: when its shutdown token is cancelled the
//! worker applies what is already queued and stops, and running commands
//! are killed and recorded as interrupted, so waiting on the tracker waits
//! for all of it.
//!
//! The DLR protocol has no authentication, so anyone who can reach the
//! endpoint can forge notifications. What a forger can do is bounded: no
//! round far ahead, one run at a time per training, and a bounded number
//! of trainings and phases kept (old finished or stale trainings are
//! evicted to make room, so junk cannot lock out new trainings for longer
//! than [`NotifyConfig::stale_after`]). A forger who knows a training's
//! UUID can still add phases to it and start runs of the training command.
//!
//! Wiring, e.g. for `roundtable node --notify ADDR --train-cmd CMD --data DIR`:
//!
//! ```no_run
//! # async fn wire() -> anyhow::Result<()> {
//! use roundtable::notify::{self, Trainings};
//! let events = roundtable::events::Events::default();
//! let cmd = Some(notify::parse_command("python src/main.py")?);
//! let tracker = tokio_util::task::TaskTracker::new();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let db = std::path::Path::new("data").join(notify::DB_FILE);
//! let trainings = Trainings::open(&db, cmd, events, &tracker, shutdown.clone())?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8101").await?;
//! tracker.spawn(notify::serve(listener, trainings.clone(), shutdown.clone()));
//! // ... and to stop:
//! shutdown.cancel();
//! tracker.close();
//! tracker.wait().await;
//! # Ok(()) }
//! ```

pub mod endpoint;
pub mod metrics;
pub mod runner;
pub mod transition;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use roundtable_shared::api::Event;
use roundtable_shared::notify::Notification;
use roundtable_shared::training::Training;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::store::trainings::{Received, TrainingStore};
use crate::store::StoreError;
use transition::ApplyOptions;

pub use endpoint::{router, serve, BODY_LIMIT};

/// The database file name under a node's data directory.
pub const DB_FILE: &str = "trainings.db";

/// Why the notification service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the training command is empty")]
    EmptyCommand,
    #[error("cannot parse the training command: {0}")]
    BadCommand(String),
    #[error("the training service has stopped")]
    Stopped,
}

/// Splits a `--train-cmd` string into program and arguments the way a POSIX
/// shell would (quotes and backslashes), without running a shell.
pub fn parse_command(s: &str) -> Result<Vec<String>, NotifyError> {
    let words = shell_words::split(s).map_err(|e| NotifyError::BadCommand(e.to_string()))?;
    if words.is_empty() {
        return Err(NotifyError::EmptyCommand);
    }
    Ok(words)
}

/// Settings of the notification service. [`NotifyConfig::new`] gives the
/// defaults for everything but the database path.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The SQLite file (created if missing).
    pub db: PathBuf,
    /// Program and leading arguments of the training command; `None` only
    /// monitors.
    pub train_cmd: Option<Vec<String>>,
    /// Notifications accepted but not yet applied, at most.
    pub queue_capacity: usize,
    /// How long the endpoint waits for room in a full queue before it
    /// answers 503. The DLR server takes any non-2xx as the client leaving
    /// the training, so the queue is large and this only bites under a
    /// flood no real server produces.
    pub enqueue_timeout: Duration,
    /// Training command processes at once; further runs wait their turn.
    pub max_concurrent_runs: usize,
    /// Claimed runs that may wait behind a training's run in progress (one
    /// run at a time per training); one more skips the oldest waiting one
    /// (see [`runner`]).
    pub max_waiting_runs: usize,
    /// Output lines kept per run.
    pub output_tail_lines: usize,
    /// Longer output lines are cut to this many bytes.
    pub max_line_bytes: usize,
    /// Trainings kept at most. A new one beyond this evicts the least
    /// recently updated finished or stale training (with its phases and
    /// runs); it is dropped only when none can be evicted.
    pub max_trainings: u64,
    /// Phases per training at most; more are dropped.
    pub max_phases_per_training: u64,
    /// Phases over all trainings at most (the in-memory copy and the runs
    /// kept are bounded by this); beyond it, trainings are evicted as for
    /// `max_trainings`.
    pub max_phases_total: u64,
    /// A live training with no change for this long may be evicted to make
    /// room (finished ones may be at once).
    pub stale_after: Duration,
    /// A round notification more than this many rounds past the training's
    /// highest known round (0 for an unknown training) is refused with 400.
    pub max_round_jump: u32,
}

impl NotifyConfig {
    pub fn new(db: impl Into<PathBuf>) -> Self {
        NotifyConfig {
            db: db.into(),
            train_cmd: None,
            queue_capacity: 65_536,
            enqueue_timeout: Duration::from_millis(200),
            max_concurrent_runs: 2,
            max_waiting_runs: 2,
            output_tail_lines: 50,
            max_line_bytes: 4096,
            max_trainings: 1_000,
            max_phases_per_training: 10_000,
            max_phases_total: 100_000,
            stale_after: Duration::from_secs(24 * 3600),
            max_round_jump: transition::DEFAULT_MAX_ROUND_JUMP,
        }
    }
}

/// Why [`Trainings::submit`] did not queue a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue was full for longer than [`NotifyConfig::enqueue_timeout`],
    /// or the service has stopped: try again later.
    #[error("the notification queue is full")]
    Busy,
    /// The round is more than [`NotifyConfig::max_round_jump`] past the
    /// highest round known for the training: bad input.
    #[error("round {round} is more than {max_jump} rounds past this training's highest known round ({})", .highest.map_or("none: a new training starts at round 0".to_owned(), |h| h.to_string()))]
    RoundTooFar {
        round: u32,
        highest: Option<u32>,
        max_jump: u32,
    },
}

/// Largest number of queued notifications applied in one transaction.
const BATCH: usize = 512;

enum Command {
    /// A notification and its sequence number (see [`Cache::pending`]).
    Apply(Received, u64),
    Flush(oneshot::Sender<()>),
    /// A person named a training: through the worker, the one writer of
    /// the cache, so that no snapshot read before the change can be
    /// published after it.
    Rename {
        uuid: String,
        name: Option<String>,
        done: oneshot::Sender<Result<Option<Training>, StoreError>>,
    },
}

/// What the web API and the round check read, kept by the worker.
#[derive(Default)]
struct Cache {
    trainings: BTreeMap<String, Training>,
    /// The highest round accepted for a training but perhaps not applied
    /// yet, with the sequence number of the notification that carried it:
    /// the round check must not lag the queue (a fast server's UPDATE(r)
    /// may still be queued when TEST(r + 1) arrives). The worker removes an
    /// entry once a notification at or after that number is applied, so
    /// this holds at most what the queue does.
    pending: HashMap<String, (u32, u64)>,
    next_seq: u64,
}

impl Cache {
    fn highest_round(&self, uuid: &str) -> Option<u32> {
        let stored = self.trainings.get(uuid).and_then(Training::highest_round);
        let pending = self.pending.get(uuid).map(|p| p.0);
        stored.max(pending)
    }
}

/// The trainings this node takes part in: a cheap-to-clone handle on the
/// notification service.
#[derive(Clone)]
pub struct Trainings {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    store: TrainingStore,
    cache: Arc<RwLock<Cache>>,
    enqueue_timeout: Duration,
    max_round_jump: u32,
}

impl std::fmt::Debug for Trainings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trainings")
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Trainings {
    /// Opens the store at `db` (e.g. `data_dir.join(DB_FILE)`) with the
    /// default [`NotifyConfig`] and starts the service (see
    /// [`Trainings::with_config`]).
    pub fn open(
        db: &Path,
        train_cmd: Option<Vec<String>>,
        events: Events,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Trainings, NotifyError> {
        Trainings::with_config(
            NotifyConfig {
                train_cmd,
                ..NotifyConfig::new(db)
            },
            events,
            tracker,
            shutdown,
        )
    }

    /// Opens the store and starts the service: its worker and every run
    /// are tasks of `tracker`, and stop when `shutdown` is cancelled (the
    /// worker after applying what is queued; runs killed and recorded as
    /// interrupted). Runs that were still going when the node last stopped
    /// are recorded as failed (they are never restarted). Must be called
    /// within a tokio runtime.
    pub fn with_config(
        config: NotifyConfig,
        events: Events,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Trainings, NotifyError> {
        if config.train_cmd.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(NotifyError::EmptyCommand);
        }
        let store = TrainingStore::open(&config.db)?;
        let interrupted = store.fail_interrupted_runs(now_ms())?;
        if !interrupted.is_empty() {
            tracing::warn!(
                trainings = interrupted.len(),
                "runs interrupted by the last stop recorded as failed"
            );
        }
        let cache: BTreeMap<String, Training> = store
            .trainings()?
            .into_iter()
            .map(|t| (t.uuid.clone(), t))
            .collect();
        tracing::info!(
            db = %config.db.display(),
            trainings = cache.len(),
            train_cmd = ?config.train_cmd,
            "training store open"
        );
        let cache = Arc::new(RwLock::new(Cache {
            trainings: cache,
            ..Cache::default()
        }));
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (refresh_tx, refresh_rx) = mpsc::channel(256);
        let runner = config.train_cmd.clone().map(|cmd| {
            Arc::new(runner::Runner {
                cmd,
                store: store.clone(),
                events: events.clone(),
                refresh: refresh_tx,
                permits: Arc::new(Semaphore::new(config.max_concurrent_runs.max(1))),
                tail_lines: config.output_tail_lines,
                max_line_bytes: config.max_line_bytes.max(16),
                slots: Default::default(),
                max_waiting: config.max_waiting_runs,
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
                metrics: metrics::MetricsHub::default(),
            })
        });
        let worker = Worker {
            store: store.clone(),
            events,
            cache: cache.clone(),
            opts: ApplyOptions {
                claim_runs: runner.is_some(),
                max_trainings: config.max_trainings,
                max_phases_per_training: config.max_phases_per_training,
                max_phases_total: config.max_phases_total,
                stale_after_ms: i64::try_from(config.stale_after.as_millis()).unwrap_or(i64::MAX),
            },
            runner,
        };
        tracker.spawn(worker.run(rx, refresh_rx, shutdown));
        Ok(Trainings {
            inner: Arc::new(Inner {
                tx,
                store,
                cache,
                enqueue_timeout: config.enqueue_timeout,
                max_round_jump: config.max_round_jump,
            }),
        })
    }

    /// Checks `n`'s round against what is known of its training (answered
    /// from memory, at once), then queues it, stamped with the current
    /// time, for the worker. Returns at once unless the queue is full; then
    /// waits up to the configured timeout.
    pub async fn submit(&self, n: Notification) -> Result<(), Refused> {
        let seq = {
            let mut cache = self.inner.cache.write().unwrap_or_else(|p| p.into_inner());
            let seq = cache.next_seq;
            cache.next_seq += 1;
            if let Some(round) = n.round_number() {
                let highest = cache.highest_round(&n.training_uuid);
                let max_jump = self.inner.max_round_jump;
                if !transition::round_within_reach(highest, round, max_jump) {
                    return Err(Refused::RoundTooFar {
                        round,
                        highest,
                        max_jump,
                    });
                }
                if highest.is_none_or(|h| round > h) {
                    cache.pending.insert(n.training_uuid.clone(), (round, seq));
                }
            }
            seq
        };
        let cmd = Command::Apply(
            Received {
                notification: n,
                at: now_ms(),
            },
            seq,
        );
        match self.inner.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Busy),
            Err(mpsc::error::TrySendError::Full(cmd)) => self
                .inner
                .tx
                .send_timeout(cmd, self.inner.enqueue_timeout)
                .await
                .map_err(|_| Refused::Busy),
        }
    }

    /// Waits until everything submitted before this call has been applied
    /// (stored, and its events published). Runs it started may still be
    /// going.
    pub async fn settled(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Every known training, oldest first. Served from memory (the worker
    /// keeps it in step with the store); never fails today, but callers get
    /// a `Result` so that may change without touching them.
    pub async fn list(&self) -> Result<Vec<Training>, NotifyError> {
        Ok(self.list_now())
    }

    /// One training by UUID (any form [`canonical_uuid`] accepts; anything
    /// else is simply not found).
    ///
    /// [`canonical_uuid`]: roundtable_shared::notify::canonical_uuid
    pub async fn get(&self, uuid: &str) -> Result<Option<Training>, NotifyError> {
        Ok(self.get_now(uuid))
    }

    /// The training database, for the services that read it beside this
    /// one (the progress service keeps peers' lanes in it).
    pub fn store(&self) -> &TrainingStore {
        &self.inner.store
    }

    /// Names training `uuid` (`None` clears the name) and publishes its
    /// new snapshot; `None` if there is no such training.
    pub async fn rename(
        &self,
        uuid: &str,
        name: Option<String>,
    ) -> Result<Option<Training>, NotifyError> {
        let Some(uuid) = roundtable_shared::notify::canonical_uuid(uuid) else {
            return Ok(None);
        };
        let (done, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Rename { uuid, name, done })
            .await
            .map_err(|_| NotifyError::Stopped)?;
        Ok(answer.await.map_err(|_| NotifyError::Stopped)??)
    }

    /// [`Trainings::list`] for synchronous callers.
    pub fn list_now(&self) -> Vec<Training> {
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Training> = cache.trainings.values().cloned().collect();
        all.sort_by(|a, b| (a.started_at, &a.uuid).cmp(&(b.started_at, &b.uuid)));
        all
    }

    /// [`Trainings::get`] for synchronous callers.
    pub fn get_now(&self, uuid: &str) -> Option<Training> {
        let uuid = roundtable_shared::notify::canonical_uuid(uuid)?;
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.trainings.get(&uuid).cloned()
    }
}

/// The single writer: applies notifications, refreshes snapshots after run
/// ends, publishes, and hands claimed runs to the runner.
struct Worker {
    store: TrainingStore,
    events: Events,
    cache: Arc<RwLock<Cache>>,
    opts: ApplyOptions,
    runner: Option<Arc<runner::Runner>>,
}

impl Worker {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Command>,
        mut refresh: mpsc::Receiver<String>,
        shutdown: CancellationToken,
    ) {
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(t) = refresh.recv() => self.refresh(t).await,
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.process(&mut buf).await;
                }
            }
        }
        // What was accepted (and answered 2xx) is still applied; nothing
        // new gets in.
        rx.close();
        while rx.recv_many(&mut buf, BATCH).await > 0 {
            self.process(&mut buf).await;
        }
        tracing::debug!("training worker stopped");
    }

    async fn process(&self, buf: &mut Vec<Command>) {
        let mut batch = Vec::with_capacity(buf.len());
        let mut last_seq = None;
        for cmd in buf.drain(..) {
            match cmd {
                Command::Apply(r, seq) => {
                    batch.push(r);
                    last_seq = Some(seq);
                }
                Command::Flush(done) => {
                    self.apply(std::mem::take(&mut batch), last_seq).await;
                    let _ = done.send(());
                }
                Command::Rename { uuid, name, done } => {
                    self.apply(std::mem::take(&mut batch), last_seq).await;
                    let named = self
                        .store
                        .run(move |s| s.set_name(&uuid, name.as_deref()))
                        .await;
                    if let Ok(Some(t)) = &named {
                        self.publish(t.clone());
                    }
                    let _ = done.send(named);
                }
            }
        }
        self.apply(batch, last_seq).await;
    }

    /// Applies `batch`, whose last notification has sequence number
    /// `last_seq`.
    async fn apply(&self, batch: Vec<Received>, last_seq: Option<u64>) {
        if batch.is_empty() {
            return;
        }
        let opts = self.opts.clone();
        let n = batch.len();
        let result = self.store.run(move |s| s.apply_batch(&batch, &opts)).await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, notifications = n, "cannot store notifications");
                self.applied_through(last_seq);
                return;
            }
        };
        if outcome.dropped > 0 {
            tracing::warn!(
                dropped = outcome.dropped,
                "notifications over the limits dropped"
            );
        }
        if !outcome.evicted.is_empty() {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            for t in &outcome.evicted {
                cache.trainings.remove(t);
            }
            drop(cache);
            for uuid in outcome.evicted {
                self.events.publish(Event::TrainingGone { uuid });
            }
        }
        for t in outcome.changed {
            tracing::debug!(
                training = %t.uuid,
                state = %t.state,
                round = ?t.current_round,
                "training updated"
            );
            self.publish(t);
        }
        self.applied_through(last_seq);
        if let Some(runner) = &self.runner {
            for claim in outcome.claims {
                runner.submit(claim);
            }
        }
    }

    /// Forgets the pending rounds the cache now covers (or that were lost):
    /// those of notifications up to `last_seq`.
    fn applied_through(&self, last_seq: Option<u64>) {
        if let Some(last) = last_seq {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            cache.pending.retain(|_, (_, seq)| *seq > last);
        }
    }

    async fn refresh(&self, uuid: String) {
        match self.store.run(move |s| s.training(&uuid)).await {
            Ok(Some(t)) => self.publish(t),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read training"),
        }
    }

    fn publish(&self, t: Training) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .trainings
            .insert(t.uuid.clone(), t.clone());
        self.events.publish(Event::Training { training: t });
    }
}
