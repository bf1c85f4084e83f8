//! Runs the local training command for a claimed (training, round, phase):
//! `<cmd…> train|test|swag --training-id T --round R --model-id M`, as the
//! reference client runs `python src/main.py`. No shell is involved.
//!
//! Output (stdout and stderr, line by line, interleaved as it arrives) is
//! published as [`Event::RunOutput`]; the last lines are kept as the run's
//! tail. The run's end (exit code, or how it failed) is stored, then the
//! worker is asked to publish the training's new snapshot.
//!
//! **One run at a time per training.** A training's runs form a chain: a
//! claim for a training with a run in progress waits for it, in arrival
//! order, and at most [`NotifyConfig::max_waiting_runs`] claims wait per
//! training (2 by default: after aggregating, the DLR server sends
//! MODEL_TEST_ROUND(r + 1) and UPDATE_ROUND_START(r + 1) back to back, and
//! both may arrive while the UPDATE(r) command is still finishing). When
//! one more arrives, the oldest waiting claim is recorded as
//! [`RunStatus::Skipped`] with the line [`SKIPPED_LINE`] and never runs:
//! the server has moved on, and the newest phases are the ones worth
//! running. So a forger flooding one training's phases gets one process
//! and a short queue for it, never a pile. Over all trainings at most
//! [`NotifyConfig::max_concurrent_runs`] processes run at once; further
//! chains wait for a permit.
//!
//! **Environment.** The command inherits the node's environment except
//! every variable whose name starts with `ROUNDTABLE_` ([`SECRET_PREFIX`]):
//! that is where the node's secrets live (`ROUNDTABLE_PASSWORD`,
//! `ROUNDTABLE_TOKEN`, and any added later), and nothing Roundtable reads
//! from its environment is meant for the training script, so there is no
//! allow-list. The one variable added is `ROUNDTABLE_METRICS_URL`, this
//! run's own metrics URL (see [`super::metrics`]).
//!
//! **Metrics.** Output lines of the form `roundtable-metric {json}` are
//! read as metrics (and still kept as output); see [`super::metrics`].
//!
//! **Shutdown.** Chains are tasks of the node's tracker. When the shutdown
//! token is cancelled a running command is killed and its run recorded as
//! failed with [`INTERRUPTED_LINE`] after its output; a claim that had not
//! started yet is recorded as failed with [`NOT_STARTED_LINE`].
//!
//! [`NotifyConfig::max_concurrent_runs`]: super::NotifyConfig::max_concurrent_runs
//! [`NotifyConfig::max_waiting_runs`]: super::NotifyConfig::max_waiting_runs

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundtable_shared::api::Event;
use roundtable_shared::progress::METRICS_URL_ENV;
use roundtable_shared::training::RunStatus;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{MetricsHub, RunMetrics};
use crate::events::Events;
use crate::store::trainings::{RunClaim, RunEnd, TrainingStore, INTERRUPTED_LINE};

/// How long output may keep coming after the process exited (a child it
/// left behind may hold the pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Environment variables with this prefix are removed from the command's
/// environment.
pub const SECRET_PREFIX: &str = "ROUNDTABLE_";

/// The output line of a waiting run that a newer phase of the same
/// training displaced.
pub const SKIPPED_LINE: &str =
    "[roundtable] skipped: a newer phase of this training arrived while this run waited for the previous one";

/// The output line of a claimed run the node stopped before it started.
pub const NOT_STARTED_LINE: &str = "[roundtable] the node stopped before this run could start";

pub(crate) struct Runner {
    pub(crate) cmd: Vec<String>,
    pub(crate) store: TrainingStore,
    pub(crate) events: Events,
    pub(crate) refresh: mpsc::Sender<String>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) tail_lines: usize,
    pub(crate) max_line_bytes: usize,
    /// Trainings with a chain going, and the claims waiting in each.
    pub(crate) slots: Mutex<HashMap<String, VecDeque<RunClaim>>>,
    pub(crate) max_waiting: usize,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Where runs' metrics URLs are served.
    pub(crate) metrics: MetricsHub,
}

/// How often a run's metrics are written to the store while it runs.
const METRICS_FLUSH: Duration = Duration::from_millis(250);

/// The last `cap` lines.
struct Tail {
    lines: VecDeque<String>,
    cap: usize,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(cap.min(1024)),
            cap,
        }
    }

    fn push(&mut self, line: String) {
        if self.cap == 0 {
            return;
        }
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

impl Runner {
    /// Starts `claim`'s run, or queues it behind the training's run in
    /// progress (displacing, as skipped, the oldest waiting claim when the
    /// queue is full).
    pub(crate) fn submit(self: &Arc<Self>, claim: RunClaim) {
        let mut displaced = Vec::new();
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get_mut(&claim.key.training) {
                Some(waiting) => {
                    waiting.push_back(claim);
                    while waiting.len() > self.max_waiting {
                        displaced.extend(waiting.pop_front());
                    }
                }
                None => {
                    slots.insert(claim.key.training.clone(), VecDeque::new());
                    self.tracker.spawn(self.clone().chain(claim));
                }
            }
        }
        for old in displaced {
            tracing::warn!(
                training = %old.key.training,
                round = old.key.round,
                phase = %old.key.phase,
                "waiting run skipped for a newer phase"
            );
            let this = self.clone();
            self.tracker.spawn(async move {
                this.output(&old, &mut Tail::new(0), SKIPPED_LINE.into());
                this.record(&old, RunStatus::Skipped, None, vec![SKIPPED_LINE.into()])
                    .await;
            });
        }
    }

    /// Runs `first`, then whatever waits in its training's slot, oldest
    /// first, until the slot is empty.
    async fn chain(self: Arc<Self>, first: RunClaim) {
        let mut next = Some(first);
        while let Some(claim) = next {
            self.run(&claim).await;
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            next = slots
                .get_mut(&claim.key.training)
                .and_then(VecDeque::pop_front);
            if next.is_none() {
                slots.remove(&claim.key.training);
            }
        }
    }

    async fn run(&self, claim: &RunClaim) {
        let key = &claim.key;
        // The semaphore is never closed.
        let permit = tokio::select! {
            p = self.permits.clone().acquire_owned() => p.ok(),
            _ = self.shutdown.cancelled() => None,
        };
        if permit.is_none() || self.shutdown.is_cancelled() {
            self.record(
                claim,
                RunStatus::Failed,
                None,
                vec![NOT_STARTED_LINE.into()],
            )
            .await;
            return;
        }
        let mut tail = Tail::new(self.tail_lines);
        let (status, exit_code) = self.execute(claim, &mut tail).await;
        drop(permit);
        if status == RunStatus::Failed {
            tracing::warn!(
                training = %key.training,
                round = key.round,
                phase = %key.phase,
                exit_code = ?exit_code,
                "training command failed"
            );
        } else {
            tracing::debug!(
                training = %key.training,
                round = key.round,
                phase = %key.phase,
                status = %status,
                exit_code = ?exit_code,
                "training command ended"
            );
        }
        self.record(claim, status, exit_code, tail.lines.into())
            .await;
    }

    /// Stores how `claim`'s run ended and asks for a fresh snapshot.
    async fn record(
        &self,
        claim: &RunClaim,
        status: RunStatus,
        exit_code: Option<i32>,
        output_tail: Vec<String>,
    ) {
        let end = RunEnd {
            status,
            ended_at: super::now_ms(),
            exit_code,
            output_tail,
        };
        let record = {
            let key = claim.key.clone();
            self.store.run(move |s| s.finish_run(&key, &end)).await
        };
        if let Err(e) = record {
            tracing::error!(error = %e, "cannot record the end of a run");
        }
        // Fails at once when the worker has stopped (the node is stopping);
        // the store has the end anyway.
        let _ = self.refresh.send(claim.key.training.clone()).await;
    }

    /// Runs the process to its end; returns its status and exit code.
    async fn execute(&self, claim: &RunClaim, tail: &mut Tail) -> (RunStatus, Option<i32>) {
        let key = &claim.key;
        let mut command = tokio::process::Command::new(&self.cmd[0]);
        command
            .args(&self.cmd[1..])
            .arg(key.phase.command())
            .args(["--training-id", &key.training])
            .args(["--round", &key.round.to_string()])
            .args(["--model-id", &claim.model_id])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name
                .as_encoded_bytes()
                .starts_with(SECRET_PREFIX.as_bytes())
            {
                command.env_remove(&name);
            }
        }
        let metrics = RunMetrics::new(key.clone());
        let registration = self
            .metrics
            .register(metrics.clone(), &self.tracker, &self.shutdown)
            .await;
        if let Some(url) = &registration.url {
            command.env(METRICS_URL_ENV, url);
        }
        let started = combine_output(&mut command).and_then(|out| Ok((command.spawn()?, out)));
        // The command holds the pipe's write ends: drop it so that the pipe
        // closes when the process (and any child it left) is gone.
        drop(command);
        let (mut child, combined) = match started {
            Ok(c) => c,
            Err(e) => {
                let line = format!("[roundtable] cannot start {:?}: {e}", self.cmd[0]);
                tracing::error!(training = %key.training, "{line}");
                self.output(claim, tail, line);
                return (RunStatus::Failed, None);
            }
        };
        tracing::debug!(
            training = %key.training,
            round = key.round,
            phase = %key.phase,
            pid = ?child.id(),
            "training command started"
        );
        let (line_tx, mut line_rx) = mpsc::channel::<String>(256);
        let mut readers = Vec::new();
        let mut streams: Vec<Box<dyn AsyncRead + Unpin + Send>> = Vec::new();
        match combined {
            Some(r) => streams.push(r),
            None => {
                if let Some(out) = child.stdout.take() {
                    streams.push(Box::new(out));
                }
                if let Some(err) = child.stderr.take() {
                    streams.push(Box::new(err));
                }
            }
        }
        for r in streams {
            readers.push(
                self.tracker
                    .spawn(read_lines(r, line_tx.clone(), self.max_line_bytes)),
            );
        }
        drop(line_tx);

        let mut exit = None;
        let mut interrupted = false;
        let mut lines_open = true;
        let mut flush = tokio::time::interval(METRICS_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Output until the process exits and its pipes close.
        while exit.is_none() || lines_open {
            tokio::select! {
                line = line_rx.recv(), if lines_open => match line {
                    Some(l) => {
                        metrics.line(&l);
                        self.output(claim, tail, l);
                    }
                    None => lines_open = false,
                },
                _ = flush.tick() => self.flush_metrics(&metrics).await,
                status = child.wait(), if exit.is_none() => exit = Some(status),
                _ = self.shutdown.cancelled(), if exit.is_none() && !interrupted => {
                    interrupted = true;
                    if let Err(e) = child.start_kill() {
                        tracing::warn!(error = %e, "cannot kill the training command");
                    }
                }
            }
            if exit.is_some() && lines_open {
                // Give lingering output a moment, then stop reading.
                let grace = if interrupted {
                    Duration::from_millis(200)
                } else {
                    DRAIN_GRACE
                };
                let drain = async {
                    while let Some(l) = line_rx.recv().await {
                        metrics.line(&l);
                        self.output(claim, tail, l);
                    }
                };
                if tokio::time::timeout(grace, drain).await.is_err() {
                    self.output(
                        claim,
                        tail,
                        "[roundtable] output still open after the command exited; no longer read"
                            .into(),
                    );
                }
                lines_open = false;
            }
        }
        for r in readers {
            r.abort();
        }
        // The URL dies with the run; what it reported is stored before
        // the run's end is.
        drop(registration);
        self.flush_metrics(&metrics).await;
        if interrupted {
            self.output(claim, tail, INTERRUPTED_LINE.into());
            return (RunStatus::Failed, None);
        }
        match exit {
            Some(Ok(status)) => match status.code() {
                Some(0) => (RunStatus::Succeeded, Some(0)),
                Some(code) => (RunStatus::Failed, Some(code)),
                None => {
                    #[cfg(unix)]
                    let how = {
                        use std::os::unix::process::ExitStatusExt;
                        status
                            .signal()
                            .map_or("killed".to_owned(), |s| format!("killed by signal {s}"))
                    };
                    #[cfg(not(unix))]
                    let how = "killed".to_owned();
                    self.output(claim, tail, format!("[roundtable] {how}"));
                    (RunStatus::Failed, None)
                }
            },
            Some(Err(e)) => {
                self.output(
                    claim,
                    tail,
                    format!("[roundtable] cannot wait for the command: {e}"),
                );
                (RunStatus::Failed, None)
            }
            // The loop above only ends once the process has exited.
            None => (RunStatus::Failed, None),
        }
    }

    /// Stores what `metrics` got since the last flush and, if anything
    /// changed, asks for a fresh snapshot (which the progress service
    /// turns into this node's lane).
    async fn flush_metrics(&self, metrics: &RunMetrics) {
        let Some(batch) = metrics.take() else {
            return;
        };
        let key = metrics.key.clone();
        let at = super::now_ms();
        let stored = self
            .store
            .run(move |s| s.record_metrics(&key, &batch.metrics, batch.ignored, at))
            .await;
        match stored {
            Ok(_) => {
                let _ = self.refresh.send(metrics.key.training.clone()).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot store a run's metrics"),
        }
    }

    fn output(&self, claim: &RunClaim, tail: &mut Tail, line: String) {
        self.events.publish(Event::RunOutput {
            training: claim.key.training.clone(),
            round: claim.key.round,
            phase: claim.key.phase,
            line: line.clone(),
        });
        tail.push(line);
    }
}

/// Points the command's stdout and stderr at one pipe, as `2>&1` would, so
/// that their lines arrive in the order they were written; returns its read
/// end. Where that is not possible, two pipes (`None`: read the child's).
#[cfg(unix)]
fn combine_output(
    command: &mut tokio::process::Command,
) -> std::io::Result<Option<Box<dyn AsyncRead + Unpin + Send>>> {
    let (tx, rx) = tokio::net::unix::pipe::pipe()?;
    let out = tx.into_blocking_fd()?;
    let err = out.try_clone()?;
    command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    Ok(Some(Box::new(rx)))
}

#[cfg(not(unix))]
fn combine_output(
    command: &mut tokio::process::Command,
) -> std::io::Result<Option<Box<dyn AsyncRead + Unpin + Send>>> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(None)
}

/// Sends each line of `r` (without its line ending, lossily decoded, cut to
/// `max` bytes) until end of file or a read error.
async fn read_lines(r: impl AsyncRead + Unpin, tx: mpsc::Sender<String>, max: usize) {
    let mut r = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    while let Ok(buf) = r.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let (chunk, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(newline);
        r.consume(used);
        if newline && tx.send(finish_line(&mut line, &mut cut)).await.is_err() {
            return;
        }
    }
    if !line.is_empty() || cut {
        let _ = tx.send(finish_line(&mut line, &mut cut)).await;
    }
}

fn finish_line(line: &mut Vec<u8>, cut: &mut bool) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut s = String::from_utf8_lossy(line).into_owned();
    if *cut {
        s.push_str(" […]");
    }
    line.clear();
    *cut = false;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &'static [u8], max: usize) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(64);
        read_lines(input, tx, max).await;
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_their_length() {
        assert_eq!(
            lines_of(b"one\r\ntwo\n\nlast", 100).await,
            ["one", "two", "", "last"]
        );
        assert_eq!(lines_of(b"abcdefghij\nxy\n", 4).await, ["abcd […]", "xy"]);
        assert_eq!(lines_of(b"\xff\xfeok\n", 100).await, ["\u{fffd}\u{fffd}ok"]);
        assert!(lines_of(b"", 100).await.is_empty());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::new(2);
        for l in ["a", "b", "c"] {
            t.push(l.into());
        }
        assert_eq!(Vec::from(t.lines), ["b", "c"]);
        let mut z = Tail::new(0);
        z.push("a".into());
        assert!(z.lines.is_empty());
    }
}
