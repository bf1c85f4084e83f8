//! The DLR FL Demonstrator notification endpoint, the trainings it feeds,
//! and the runner of the local training command.
//!
//! - [`endpoint`]: the HTTP endpoint the DLR server POSTs to. It validates,
//!   answers with the reference status at once and enqueues the work.
//! - [`Trainings`]: the service. One background worker applies queued
//!   notifications in arrival order (in batches, one SQLite transaction per
//!   batch) to the [`TrainingStore`], keeps an in-memory copy of every
//!   training for the web API, publishes [`Event::Training`] after each
//!   change and starts the runs the store claimed.
//! - [`runner`]: runs `<train-cmd> train|test|swag --training-id T --round R
//!   --model-id M` for each new round phase, at most once per (training,
//!   round, phase), and records how it ended.
//!
//! Wiring, e.g. for `roundtable node --notify ADDR --train-cmd CMD --data DIR`:
//!
//! ```no_run
//! # async fn wire() -> anyhow::Result<()> {
//! use roundtable::notify::{self, Trainings};
//! let events = roundtable::events::Events::default();
//! let cmd = Some(notify::parse_command("python src/main.py")?);
//! let trainings = Trainings::open(&std::path::Path::new("data").join(notify::DB_FILE), cmd, events)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8101").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(notify::serve(listener, trainings.clone(), shutdown.clone()));
//! # Ok(()) }
//! ```

pub mod endpoint;
pub mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use roundtable_shared::api::Event;
use roundtable_shared::notify::Notification;
use roundtable_shared::training::Training;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::events::Events;
use crate::store::trainings::{ApplyOptions, Received, TrainingStore};
use crate::store::StoreError;

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
    /// Output lines kept per run.
    pub output_tail_lines: usize,
    /// Longer output lines are cut to this many bytes.
    pub max_line_bytes: usize,
    /// Trainings tracked at most; notifications for more are dropped.
    pub max_trainings: u64,
    /// Phases per training at most; more are dropped.
    pub max_phases_per_training: u64,
    /// Phases over all trainings at most (the in-memory copy is bounded by
    /// this); more are dropped.
    pub max_phases_total: u64,
}

impl NotifyConfig {
    pub fn new(db: impl Into<PathBuf>) -> Self {
        NotifyConfig {
            db: db.into(),
            train_cmd: None,
            queue_capacity: 65_536,
            enqueue_timeout: Duration::from_millis(200),
            max_concurrent_runs: 2,
            output_tail_lines: 50,
            max_line_bytes: 4096,
            max_trainings: 10_000,
            max_phases_per_training: 10_000,
            max_phases_total: 1_000_000,
        }
    }
}

/// The queue was full for longer than [`NotifyConfig::enqueue_timeout`], or
/// the service has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the notification queue is full")]
pub struct Busy;

/// Largest number of queued notifications applied in one transaction.
const BATCH: usize = 512;

enum Command {
    Apply(Received),
    Flush(oneshot::Sender<()>),
}

/// The trainings this node takes part in: a cheap-to-clone handle on the
/// notification service.
#[derive(Clone)]
pub struct Trainings {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    cache: Arc<RwLock<BTreeMap<String, Training>>>,
    enqueue_timeout: Duration,
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
    /// default [`NotifyConfig`] and starts the service. Must be called
    /// within a tokio runtime.
    pub fn open(
        db: &Path,
        train_cmd: Option<Vec<String>>,
        events: Events,
    ) -> Result<Trainings, NotifyError> {
        Trainings::with_config(
            NotifyConfig {
                train_cmd,
                ..NotifyConfig::new(db)
            },
            events,
        )
    }

    /// Opens the store and starts the service. Runs that were still going
    /// when the node last stopped are recorded as failed (they are never
    /// restarted). Must be called within a tokio runtime.
    pub fn with_config(config: NotifyConfig, events: Events) -> Result<Trainings, NotifyError> {
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
        let cache = Arc::new(RwLock::new(cache));
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
            })
        });
        let worker = Worker {
            store,
            events,
            cache: cache.clone(),
            opts: ApplyOptions {
                claim_runs: runner.is_some(),
                max_trainings: config.max_trainings,
                max_phases_per_training: config.max_phases_per_training,
                max_phases_total: config.max_phases_total,
            },
            runner,
        };
        tokio::spawn(worker.run(rx, refresh_rx));
        Ok(Trainings {
            inner: Arc::new(Inner {
                tx,
                cache,
                enqueue_timeout: config.enqueue_timeout,
            }),
        })
    }

    /// Queues `n` (stamped with the current time) for the worker. Returns at
    /// once unless the queue is full; then waits up to the configured
    /// timeout.
    pub async fn submit(&self, n: Notification) -> Result<(), Busy> {
        let cmd = Command::Apply(Received {
            notification: n,
            at: now_ms(),
        });
        match self.inner.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Busy),
            Err(mpsc::error::TrySendError::Full(cmd)) => self
                .inner
                .tx
                .send_timeout(cmd, self.inner.enqueue_timeout)
                .await
                .map_err(|_| Busy),
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

    /// [`Trainings::list`] for synchronous callers.
    pub fn list_now(&self) -> Vec<Training> {
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Training> = cache.values().cloned().collect();
        all.sort_by(|a, b| (a.started_at, &a.uuid).cmp(&(b.started_at, &b.uuid)));
        all
    }

    /// [`Trainings::get`] for synchronous callers.
    pub fn get_now(&self, uuid: &str) -> Option<Training> {
        let uuid = roundtable_shared::notify::canonical_uuid(uuid)?;
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.get(&uuid).cloned()
    }
}

/// The single writer: applies notifications, refreshes snapshots after run
/// ends, publishes, and starts runs.
struct Worker {
    store: TrainingStore,
    events: Events,
    cache: Arc<RwLock<BTreeMap<String, Training>>>,
    opts: ApplyOptions,
    runner: Option<Arc<runner::Runner>>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Command>, mut refresh: mpsc::Receiver<String>) {
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                Some(t) = refresh.recv() => self.refresh(t).await,
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.process(&mut buf).await;
                }
            }
        }
        tracing::debug!("training worker stopped");
    }

    async fn process(&self, buf: &mut Vec<Command>) {
        let mut batch = Vec::with_capacity(buf.len());
        for cmd in buf.drain(..) {
            match cmd {
                Command::Apply(r) => batch.push(r),
                Command::Flush(done) => {
                    self.apply(std::mem::take(&mut batch)).await;
                    let _ = done.send(());
                }
            }
        }
        self.apply(batch).await;
    }

    async fn apply(&self, batch: Vec<Received>) {
        if batch.is_empty() {
            return;
        }
        let opts = self.opts.clone();
        let n = batch.len();
        let outcome = match self.store.run(move |s| s.apply_batch(&batch, &opts)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, notifications = n, "cannot store notifications");
                return;
            }
        };
        if outcome.dropped > 0 {
            tracing::warn!(
                dropped = outcome.dropped,
                "notifications over the limits dropped"
            );
        }
        for t in outcome.changed {
            tracing::info!(
                training = %t.uuid,
                state = %t.state,
                round = ?t.current_round,
                "training updated"
            );
            self.publish(t);
        }
        if let Some(runner) = &self.runner {
            for claim in outcome.claims {
                tokio::spawn(runner.clone().run(claim));
            }
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
            .insert(t.uuid.clone(), t.clone());
        self.events.publish(Event::Training { training: t });
    }
}
