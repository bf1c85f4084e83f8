//! The node's training database: trainings, their round phases, and the
//! local runs of the training command. One SQLite file of its own.
//!
//! The notification state machine itself is pure and lives in
//! [`crate::notify::transition`]; this module reads what it needs from the
//! tables, performs the writes it returns, and does so for a whole batch of
//! notifications in one transaction. A run is claimed (row inserted, status
//! `running`) in the transaction that records its phase, before any
//! process is started, so a (training, round, phase) runs at most once,
//! across restarts too. Trainings evicted to make room go with their phases
//! and runs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use roundtable_shared::notify::{Kind, Notification};
use roundtable_shared::training::{
    Phase, PhaseRecord, Round, Run, RunStatus, Training, TrainingState,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{Context, Db, StoreError};
pub use crate::notify::transition::ApplyOptions;
use crate::notify::transition::{transition, Before, Outcome, Row, Write};

/// A trigger numbering a change of `NEW.phase_id`'s phase (and its
/// training's lane) from `progress_seq`: see store/progress.rs.
macro_rules! bump_phase {
    ($name:literal, $event:literal) => {
        concat!(
            "CREATE TRIGGER ",
            $name,
            " AFTER ",
            $event,
            " BEGIN
                UPDATE progress_seq SET n = n + 1;
                UPDATE phases SET seq = (SELECT n FROM progress_seq) WHERE id = NEW.phase_id;
                UPDATE trainings SET seq = (SELECT n FROM progress_seq)
                WHERE uuid = (SELECT training FROM phases WHERE id = NEW.phase_id);
            END;"
        )
    };
}

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE trainings (
        uuid            TEXT PRIMARY KEY NOT NULL,
        state           TEXT NOT NULL,
        current_round   INTEGER,
        -- Phase::position of the latest phase, NULL before any phase.
        position        INTEGER,
        start_seen      INTEGER NOT NULL DEFAULT 0,
        phase_count     INTEGER NOT NULL DEFAULT 0,
        started_at      INTEGER NOT NULL,
        finished_at     INTEGER,
        global_model_id TEXT
    ) STRICT;
    CREATE TABLE phases (
        id         INTEGER PRIMARY KEY,
        training   TEXT NOT NULL REFERENCES trainings(uuid) ON DELETE CASCADE,
        round      INTEGER NOT NULL,
        phase      TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        model_id   TEXT NOT NULL,
        UNIQUE (training, round, phase)
    ) STRICT;
    CREATE TABLE runs (
        phase_id    INTEGER PRIMARY KEY NOT NULL REFERENCES phases(id) ON DELETE CASCADE,
        status      TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        exit_code   INTEGER,
        -- JSON array of the last output lines.
        output_tail TEXT NOT NULL DEFAULT '[]'
    ) STRICT;
    CREATE INDEX runs_running ON runs(status) WHERE status = 'running';
",
    "
    -- Unix ms of the last change; eviction takes the least recent first.
    ALTER TABLE trainings ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    UPDATE trainings SET updated_at = max(
        started_at,
        coalesce(finished_at, 0),
        coalesce((SELECT max(p.started_at) FROM phases p WHERE p.training = trainings.uuid), 0));
    CREATE INDEX trainings_updated ON trainings(updated_at);
",
    // Issue 15: names, metrics, and the progress shared with peers (see
    // store/progress.rs for why the triggers).
    concat!(
        "
    ALTER TABLE trainings ADD COLUMN name TEXT;
    ALTER TABLE runs ADD COLUMN metrics_ignored INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE metrics (
        phase_id INTEGER NOT NULL REFERENCES phases(id) ON DELETE CASCADE,
        name     TEXT NOT NULL,
        value    REAL NOT NULL,
        at       INTEGER NOT NULL,
        PRIMARY KEY (phase_id, name)
    ) STRICT, WITHOUT ROWID;

    -- This node's progress sequence: every change to what it shares takes
    -- the next number, in the transaction that makes the change.
    CREATE TABLE progress_seq (n INTEGER NOT NULL) STRICT;
    INSERT INTO progress_seq VALUES ((SELECT coalesce(max(id), 0) + 1 FROM phases));
    ALTER TABLE trainings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE phases ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    UPDATE phases SET seq = id;
    UPDATE trainings SET seq = (SELECT n FROM progress_seq);
    CREATE INDEX phases_seq ON phases(training, seq);

    CREATE TRIGGER training_created AFTER INSERT ON trainings BEGIN
        UPDATE progress_seq SET n = n + 1;
        UPDATE trainings SET seq = (SELECT n FROM progress_seq) WHERE uuid = NEW.uuid;
    END;
    CREATE TRIGGER training_changed
    AFTER UPDATE OF state, current_round, finished_at ON trainings BEGIN
        UPDATE progress_seq SET n = n + 1;
        UPDATE trainings SET seq = (SELECT n FROM progress_seq) WHERE uuid = NEW.uuid;
    END;
    CREATE TRIGGER phase_created AFTER INSERT ON phases BEGIN
        UPDATE progress_seq SET n = n + 1;
        UPDATE phases SET seq = (SELECT n FROM progress_seq) WHERE id = NEW.id;
        UPDATE trainings SET seq = (SELECT n FROM progress_seq) WHERE uuid = NEW.training;
    END;
",
        // Runs and metrics change their phase (and so the training's lane).
        bump_phase!("run_created", "INSERT ON runs"),
        bump_phase!(
            "run_changed",
            "UPDATE OF status, ended_at, exit_code ON runs"
        ),
        bump_phase!("metric_created", "INSERT ON metrics"),
        bump_phase!("metric_changed", "UPDATE OF value ON metrics"),
        "
    -- Peers' progress, as they shared it. Only for trainings this node
    -- knows; evicted with them.
    CREATE TABLE peer_lanes (
        training      TEXT NOT NULL REFERENCES trainings(uuid) ON DELETE CASCADE,
        peer          TEXT NOT NULL,
        state         TEXT NOT NULL,
        current_round INTEGER,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        seq           INTEGER NOT NULL,
        -- Unix ms this node last heard from the peer about it.
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (training, peer)
    ) STRICT;
    CREATE TABLE peer_phases (
        training   TEXT NOT NULL,
        peer       TEXT NOT NULL,
        round      INTEGER NOT NULL,
        phase      TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        -- JSON RunReport, NULL when the peer runs no command.
        run        TEXT,
        -- JSON array of metrics.
        metrics    TEXT NOT NULL DEFAULT '[]',
        seq        INTEGER NOT NULL,
        PRIMARY KEY (training, peer, round, phase),
        FOREIGN KEY (training, peer) REFERENCES peer_lanes(training, peer) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX peer_phases_peer ON peer_phases(peer);
"
    ),
];

/// The line added to the tail of a run the node lost track of.
pub const INTERRUPTED_LINE: &str = "[roundtable] the node stopped while this run was in progress";

/// A notification and when it arrived (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub notification: Notification,
    pub at: i64,
}

/// Identifies a phase (and its run).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhaseKey {
    pub training: String,
    pub round: u32,
    pub phase: Phase,
}

/// A run claimed by [`TrainingStore::apply_batch`]: start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    pub key: PhaseKey,
    pub model_id: String,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Fresh snapshots of every training the batch changed.
    pub changed: Vec<Training>,
    /// Runs to start, in arrival order.
    pub claims: Vec<RunClaim>,
    /// Notifications dropped for exceeding a limit.
    pub dropped: usize,
    /// Trainings evicted (with their phases and runs) to make room, in
    /// order; one may come back later in the same batch (then it is in
    /// `changed` too).
    pub evicted: Vec<String>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub status: RunStatus,
    pub ended_at: i64,
    pub exit_code: Option<i32>,
    pub output_tail: Vec<String>,
}

/// Handle to the training database; cheap to clone, one connection inside.
#[derive(Debug, Clone)]
pub struct TrainingStore {
    db: Db,
}

fn bad_value(what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unknown {what} {v:?} in database").into(),
    )
}

pub(super) fn state_of(s: String) -> rusqlite::Result<TrainingState> {
    TrainingState::parse(&s).ok_or_else(|| bad_value("training state", &s))
}

pub(super) fn phase_of(s: String) -> rusqlite::Result<Phase> {
    Phase::parse(&s).ok_or_else(|| bad_value("phase", &s))
}

pub(super) fn run_status_of(s: String) -> rusqlite::Result<RunStatus> {
    RunStatus::parse(&s).ok_or_else(|| bad_value("run status", &s))
}

fn tail_of(s: String) -> rusqlite::Result<Vec<String>> {
    json_of(&s)
}

/// A JSON column's value.
pub(super) fn json_of<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn tail_json(tail: &[String]) -> String {
    // Serializing strings cannot fail.
    serde_json::to_string(tail).unwrap_or_else(|_| "[]".into())
}

impl TrainingStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(TrainingStore {
            db: Db::open(path, MIGRATIONS)?,
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.with(f)
    }

    /// Runs a store call on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TrainingStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        super::blocking(move || f(&this)).await
    }

    /// Applies notifications in order, in one transaction, and returns the
    /// snapshots of the trainings that changed and the runs to start.
    pub fn apply_batch(
        &self,
        batch: &[Received],
        opts: &ApplyOptions,
    ) -> Result<BatchOutcome, StoreError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting notification batch")?;
            let mut out = BatchOutcome::default();
            let mut changed: Vec<&str> = Vec::new();
            let (trainings, phases): (i64, i64) = tx
                .query_row(
                    "SELECT count(*), coalesce(sum(phase_count), 0) FROM trainings",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ctx("counting trainings")?;
            let mut counts = Counts {
                trainings: trainings as u64,
                phases: phases as u64,
            };
            for r in batch {
                let n = &r.notification;
                let step = transition(&before(&tx, n, &counts)?, n, opts);
                let done = perform(&tx, r, &step.writes, opts, &mut counts, &mut out)?;
                match step.outcome {
                    Outcome::Nothing => {}
                    Outcome::Changed if done => {
                        let t = n.training_uuid.as_str();
                        if !changed.contains(&t) {
                            changed.push(t);
                        }
                    }
                    Outcome::Changed | Outcome::Dropped => {
                        tracing::warn!(
                            training = %n.training_uuid,
                            "over the training limits; notification dropped"
                        );
                        out.dropped += 1;
                    }
                }
            }
            for t in changed {
                if let Some(snapshot) = snapshot(&tx, t)? {
                    out.changed.push(snapshot);
                }
            }
            tx.commit().ctx("committing notification batch")?;
            Ok(out)
        })
    }

    /// Records how a claimed run ended; false if there is no such run still
    /// running.
    pub fn finish_run(&self, key: &PhaseKey, end: &RunEnd) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?4, ended_at = ?5, exit_code = ?6, output_tail = ?7
                     WHERE status = 'running' AND phase_id =
                       (SELECT id FROM phases WHERE training = ?1 AND round = ?2 AND phase = ?3)",
                    params![
                        key.training,
                        key.round,
                        key.phase.as_str(),
                        end.status.as_str(),
                        end.ended_at,
                        end.exit_code,
                        tail_json(&end.output_tail),
                    ],
                )
                .ctx("recording run end")?;
            Ok(n == 1)
        })
    }

    /// Marks every run still `running` as failed at `now`: called at start-up,
    /// when no run of this store can be alive. Returns the trainings touched.
    pub fn fail_interrupted_runs(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting run recovery")?;
            let stale: Vec<(i64, String, String)> = {
                let mut st = tx
                    .prepare(
                        "SELECT r.phase_id, p.training, r.output_tail
                         FROM runs r JOIN phases p ON p.id = r.phase_id
                         WHERE r.status = 'running'",
                    )
                    .ctx("finding interrupted runs")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .ctx("finding interrupted runs")?;
                rows.collect::<Result<_, _>>()
                    .ctx("finding interrupted runs")?
            };
            let mut trainings = Vec::new();
            for (id, training, tail) in stale {
                let mut tail = tail_of(tail).ctx("reading run output")?;
                tail.push(INTERRUPTED_LINE.to_owned());
                tx.execute(
                    "UPDATE runs SET status = 'failed', ended_at = ?2, output_tail = ?3
                     WHERE phase_id = ?1",
                    params![id, now, tail_json(&tail)],
                )
                .ctx("failing interrupted run")?;
                if !trainings.contains(&training) {
                    trainings.push(training);
                }
            }
            tx.commit().ctx("committing run recovery")?;
            Ok(trainings)
        })
    }

    /// The current state of one training.
    pub fn training(&self, uuid: &str) -> Result<Option<Training>, StoreError> {
        self.with(|c| snapshot(c, uuid))
    }

    /// Every training, oldest first.
    pub fn trainings(&self) -> Result<Vec<Training>, StoreError> {
        self.with(|c| {
            let mut out: Vec<Training> = {
                let mut st = c
                    .prepare(
                        "SELECT uuid, state, current_round, started_at, finished_at,
                                global_model_id, name
                         FROM trainings ORDER BY started_at, uuid",
                    )
                    .ctx("listing trainings")?;
                let rows = st.query_map([], training_row).ctx("listing trainings")?;
                rows.collect::<Result<_, _>>().ctx("listing trainings")?
            };
            let index: HashMap<String, usize> = out
                .iter()
                .enumerate()
                .map(|(i, t)| (t.uuid.clone(), i))
                .collect();
            let mut rounds: Vec<BTreeMap<u32, Vec<PhaseRecord>>> = vec![BTreeMap::new(); out.len()];
            let mut st = c
                .prepare(&format!("{PHASES_SELECT} ORDER BY p.id"))
                .ctx("listing phases")?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, phase_row(r)?)))
                .ctx("listing phases")?;
            for row in rows {
                let (training, (round, rec)) = row.ctx("listing phases")?;
                if let Some(&i) = index.get(&training) {
                    rounds[i].entry(round).or_default().push(rec);
                }
            }
            for (t, r) in out.iter_mut().zip(rounds) {
                t.rounds = into_rounds(r);
            }
            Ok(out)
        })
    }
}

/// Running counts the limits are checked against, kept in step with the
/// writes of a batch.
struct Counts {
    trainings: u64,
    phases: u64,
}

/// Reads what [`transition`] needs to know before `n`.
fn before(tx: &Transaction<'_>, n: &Notification, counts: &Counts) -> Result<Before, StoreError> {
    let t = n.training_uuid.as_str();
    let row = read_row(tx, t)?;
    let phase_known = match (&row, &n.kind) {
        (Some(_), Kind::Round { phase, round, .. }) => tx
            .prepare_cached(
                "SELECT 1 FROM phases WHERE training = ?1 AND round = ?2 AND phase = ?3",
            )
            .ctx("looking up phase")?
            .query_row(params![t, round, phase.as_str()], |_| Ok(()))
            .optional()
            .ctx("looking up phase")?
            .is_some(),
        _ => false,
    };
    Ok(Before {
        row,
        phase_known,
        trainings: counts.trainings,
        phases: counts.phases,
    })
}

/// Performs `writes` (a [`transition`]'s) for `r` inside `tx`. Returns
/// false if room could not be made: then nothing but evictions happened.
fn perform(
    tx: &Transaction<'_>,
    r: &Received,
    writes: &[Write],
    opts: &ApplyOptions,
    counts: &mut Counts,
    out: &mut BatchOutcome,
) -> Result<bool, StoreError> {
    let t = r.notification.training_uuid.as_str();
    let mut phase_id = None;
    for w in writes {
        match w {
            Write::MakeRoomForTraining => {
                if !make_room(tx, t, r.at, opts, counts, out, |c| {
                    c.trainings < opts.max_trainings
                })? {
                    return Ok(false);
                }
            }
            Write::MakeRoomForPhase => {
                if !make_room(tx, t, r.at, opts, counts, out, |c| {
                    c.phases < opts.max_phases_total
                })? {
                    return Ok(false);
                }
            }
            Write::CreateTraining => {
                tx.execute(
                    "INSERT INTO trainings(uuid, state, started_at, updated_at)
                     VALUES (?1, 'started', ?2, ?2)",
                    params![t, r.at],
                )
                .ctx("creating training")?;
                counts.trainings += 1;
            }
            Write::RecordStart { global_model_uuid } => {
                tx.execute(
                    "UPDATE trainings SET start_seen = 1,
                       global_model_id = coalesce(global_model_id, ?2)
                     WHERE uuid = ?1",
                    params![t, global_model_uuid],
                )
                .ctx("recording training start")?;
            }
            Write::InsertPhase {
                round,
                phase,
                model_id,
            } => {
                tx.execute(
                    "INSERT INTO phases(training, round, phase, started_at, model_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![t, round, phase.as_str(), r.at, model_id],
                )
                .ctx("recording phase")?;
                phase_id = Some(tx.last_insert_rowid());
                tx.execute(
                    "UPDATE trainings SET phase_count = phase_count + 1 WHERE uuid = ?1",
                    [t],
                )
                .ctx("counting phase")?;
                counts.phases += 1;
            }
            Write::Advance {
                state,
                round,
                position,
            } => {
                tx.execute(
                    "UPDATE trainings SET state = ?2, current_round = ?3, position = ?4
                     WHERE uuid = ?1",
                    params![t, state.as_str(), round, *position as i64],
                )
                .ctx("advancing training")?;
            }
            Write::ClaimRun {
                round,
                phase,
                model_id,
            } => {
                let Some(id) = phase_id else {
                    // The transition claims only the phase it just recorded.
                    continue;
                };
                tx.execute(
                    "INSERT OR IGNORE INTO runs(phase_id, status, started_at)
                     VALUES (?1, 'running', ?2)",
                    params![id, r.at],
                )
                .ctx("claiming run")?;
                out.claims.push(RunClaim {
                    key: PhaseKey {
                        training: t.to_owned(),
                        round: *round,
                        phase: *phase,
                    },
                    model_id: model_id.clone(),
                });
            }
            Write::Finish {
                state,
                global_model_uuid,
            } => {
                tx.execute(
                    "UPDATE trainings SET state = ?2, finished_at = ?3,
                       global_model_id = coalesce(?4, global_model_id)
                     WHERE uuid = ?1",
                    params![t, state.as_str(), r.at, global_model_uuid],
                )
                .ctx("ending training")?;
            }
            Write::Touch => {
                tx.execute(
                    "UPDATE trainings SET updated_at = ?2 WHERE uuid = ?1",
                    params![t, r.at],
                )
                .ctx("touching training")?;
            }
        }
    }
    Ok(true)
}

/// Evicts trainings other than `keep`, least recently updated first, until
/// `fits`: finished and removed ones, and live ones unchanged for
/// [`ApplyOptions::stale_after_ms`] before `now`; never one with a run in
/// progress. Returns whether it fits.
fn make_room(
    tx: &Transaction<'_>,
    keep: &str,
    now: i64,
    opts: &ApplyOptions,
    counts: &mut Counts,
    out: &mut BatchOutcome,
    fits: impl Fn(&Counts) -> bool,
) -> Result<bool, StoreError> {
    let stale_before = now.saturating_sub(opts.stale_after_ms);
    while !fits(counts) {
        let victim: Option<(String, i64)> = tx
            .prepare_cached(
                "SELECT uuid, phase_count FROM trainings t
                 WHERE uuid != ?1
                   AND (state IN ('finished', 'removed') OR updated_at < ?2)
                   AND NOT EXISTS (
                     SELECT 1 FROM phases p JOIN runs r ON r.phase_id = p.id
                     WHERE p.training = t.uuid AND r.status = 'running')
                 ORDER BY updated_at, uuid LIMIT 1",
            )
            .ctx("choosing a training to evict")?
            .query_row(params![keep, stale_before], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .ctx("choosing a training to evict")?;
        let Some((uuid, phases)) = victim else {
            return Ok(false);
        };
        // Phases and runs go with it (ON DELETE CASCADE).
        tx.execute("DELETE FROM trainings WHERE uuid = ?1", [&uuid])
            .ctx("evicting training")?;
        tracing::warn!(training = %uuid, phases, "training evicted to make room");
        counts.trainings = counts.trainings.saturating_sub(1);
        counts.phases = counts.phases.saturating_sub(phases as u64);
        out.evicted.push(uuid);
    }
    Ok(true)
}

fn read_row(c: &Connection, uuid: &str) -> Result<Option<Row>, StoreError> {
    c.prepare_cached(
        "SELECT state, position, start_seen, phase_count FROM trainings WHERE uuid = ?1",
    )
    .ctx("reading training")?
    .query_row([uuid], |r| {
        Ok(Row {
            state: state_of(r.get(0)?)?,
            position: r.get::<_, Option<i64>>(1)?.map(|p| p as u64),
            start_seen: r.get(2)?,
            phase_count: r.get::<_, i64>(3)? as u64,
        })
    })
    .optional()
    .ctx("reading training")
}

fn training_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Training> {
    Ok(Training {
        uuid: r.get(0)?,
        name: r.get(6)?,
        state: state_of(r.get(1)?)?,
        current_round: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        global_model_id: r.get(5)?,
        rounds: Vec::new(),
    })
}

const PHASES_SELECT: &str = "
    SELECT p.training, p.round, p.phase, p.started_at, p.model_id,
           r.status, r.started_at, r.ended_at, r.exit_code, r.output_tail,
           r.metrics_ignored
    FROM phases p LEFT JOIN runs r ON r.phase_id = p.id";

/// Reads columns 1.. of a [`PHASES_SELECT`] row.
fn phase_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(u32, PhaseRecord)> {
    let run = match r.get::<_, Option<String>>(5)? {
        None => None,
        Some(status) => Some(Run {
            status: run_status_of(status)?,
            started_at: r.get(6)?,
            ended_at: r.get(7)?,
            exit_code: r.get(8)?,
            output_tail: tail_of(r.get(9)?)?,
            metrics_ignored: r.get(10)?,
        }),
    };
    Ok((
        r.get(1)?,
        PhaseRecord {
            phase: phase_of(r.get(2)?)?,
            started_at: r.get(3)?,
            model_id: r.get(4)?,
            run,
        },
    ))
}

fn into_rounds(map: BTreeMap<u32, Vec<PhaseRecord>>) -> Vec<Round> {
    map.into_iter()
        .map(|(round, phases)| Round { round, phases })
        .collect()
}

fn snapshot(c: &Connection, uuid: &str) -> Result<Option<Training>, StoreError> {
    let Some(mut t) = c
        .prepare_cached(
            "SELECT uuid, state, current_round, started_at, finished_at, global_model_id, name
             FROM trainings WHERE uuid = ?1",
        )
        .ctx("reading training")?
        .query_row([uuid], training_row)
        .optional()
        .ctx("reading training")?
    else {
        return Ok(None);
    };
    let mut rounds: BTreeMap<u32, Vec<PhaseRecord>> = BTreeMap::new();
    let mut st = c
        .prepare_cached(&format!(
            "{PHASES_SELECT} WHERE p.training = ?1 ORDER BY p.id"
        ))
        .ctx("reading phases")?;
    let rows = st.query_map([uuid], phase_row).ctx("reading phases")?;
    for row in rows {
        let (round, rec) = row.ctx("reading phases")?;
        rounds.entry(round).or_default().push(rec);
    }
    t.rounds = into_rounds(rounds);
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "00000000-0000-4000-8000-000000000001";
    const M: &str = "00000000-0000-4000-8000-0000000000aa";

    fn rx(n: Notification, at: i64) -> Received {
        Received {
            notification: n,
            at,
        }
    }

    fn claiming() -> ApplyOptions {
        ApplyOptions {
            claim_runs: true,
            ..ApplyOptions::default()
        }
    }

    #[test]
    fn a_full_training_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let out = s
            .apply_batch(
                &[
                    rx(Notification::start(T, M), 1),
                    rx(Notification::round(T, Phase::Update, 0, M), 2),
                    rx(Notification::round(T, Phase::Test, 1, M), 3),
                ],
                &ApplyOptions::default(),
            )
            .unwrap();
        assert_eq!(out.changed.len(), 1, "one snapshot per changed training");
        assert!(out.claims.is_empty(), "no runs without claim_runs");
        let t = &out.changed[0];
        assert_eq!(t.state, TrainingState::Testing);
        assert_eq!(t.current_round, Some(1));
        assert_eq!(t.started_at, 1);
        assert_eq!(t.global_model_id.as_deref(), Some(M));
        assert_eq!(t.phase(0, Phase::Update).unwrap().started_at, 2);
        assert_eq!(t.phase(1, Phase::Test).unwrap().model_id, M);

        let out = s
            .apply_batch(
                &[rx(Notification::finished(T, M), 9)],
                &ApplyOptions::default(),
            )
            .unwrap();
        assert_eq!(out.changed[0].state, TrainingState::Finished);
        assert_eq!(out.changed[0].finished_at, Some(9));
        assert_eq!(s.trainings().unwrap(), out.changed);
    }

    #[test]
    fn duplicates_change_nothing_and_claim_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let u = Notification::round(T, Phase::Update, 0, M);
        let out = s
            .apply_batch(&[rx(u.clone(), 1), rx(u.clone(), 2)], &claiming())
            .unwrap();
        assert_eq!(out.claims.len(), 1);
        assert_eq!(out.claims[0].key.round, 0);
        let out = s.apply_batch(&[rx(u, 3)], &claiming()).unwrap();
        assert!(out.changed.is_empty());
        assert!(out.claims.is_empty());
        let t = s.training(T).unwrap().unwrap();
        assert_eq!(t.rounds.len(), 1);
        let p = t.phase(0, Phase::Update).unwrap();
        assert_eq!(p.started_at, 1, "the first arrival counts");
        assert_eq!(p.run.as_ref().unwrap().status, RunStatus::Running);
        // A repeated START is a no-op too.
        assert_eq!(
            s.apply_batch(&[rx(Notification::start(T, M), 4)], &claiming())
                .unwrap()
                .changed
                .len(),
            1
        );
        assert!(s
            .apply_batch(&[rx(Notification::start(T, M), 5)], &claiming())
            .unwrap()
            .changed
            .is_empty());
    }

    #[test]
    fn late_notifications_do_not_regress() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let m2 = "00000000-0000-4000-8000-0000000000bb";
        s.apply_batch(
            &[
                rx(Notification::round(T, Phase::Update, 1, M), 1),
                rx(Notification::round(T, Phase::Test, 1, M), 2),
                rx(Notification::round(T, Phase::Update, 0, M), 3),
                rx(Notification::start(T, m2), 4),
            ],
            &ApplyOptions::default(),
        )
        .unwrap();
        let t = s.training(T).unwrap().unwrap();
        assert_eq!(t.state, TrainingState::InRound);
        assert_eq!(t.current_round, Some(1));
        assert_eq!(t.started_at, 1);
        assert_eq!(t.global_model_id.as_deref(), Some(m2));
        assert_eq!(t.rounds.iter().map(|r| r.round).collect::<Vec<_>>(), [0, 1]);
        // Phases within a round keep their arrival order.
        let r1: Vec<_> = t.round(1).unwrap().phases.iter().map(|p| p.phase).collect();
        assert_eq!(r1, [Phase::Update, Phase::Test]);

        // After FINISHED, a straggler is recorded but starts nothing.
        let out = s
            .apply_batch(
                &[
                    rx(Notification::finished(T, M), 5),
                    rx(Notification::round(T, Phase::Test, 2, M), 6),
                ],
                &claiming(),
            )
            .unwrap();
        assert!(out.claims.is_empty());
        let t = &out.changed[0];
        assert_eq!(t.state, TrainingState::Finished);
        assert_eq!(t.current_round, Some(1));
        assert_eq!(t.global_model_id.as_deref(), Some(M));
        assert!(t.phase(2, Phase::Test).is_some());
    }

    #[test]
    fn runs_end_and_interrupted_runs_fail_on_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let s = TrainingStore::open(&path).unwrap();
            let out = s
                .apply_batch(
                    &[
                        rx(Notification::round(T, Phase::Update, 0, M), 1),
                        rx(Notification::round(T, Phase::Test, 1, M), 2),
                    ],
                    &claiming(),
                )
                .unwrap();
            assert_eq!(out.claims.len(), 2);
            let end = RunEnd {
                status: RunStatus::Failed,
                ended_at: 10,
                exit_code: Some(3),
                output_tail: vec!["a".into(), "b".into()],
            };
            assert!(s.finish_run(&out.claims[0].key, &end).unwrap());
            assert!(
                !s.finish_run(&out.claims[0].key, &end).unwrap(),
                "only once"
            );
        }
        let s = TrainingStore::open(&path).unwrap();
        assert_eq!(s.fail_interrupted_runs(20).unwrap(), [T]);
        let t = s.training(T).unwrap().unwrap();
        let done = t.phase(0, Phase::Update).unwrap().run.clone().unwrap();
        assert_eq!(done.exit_code, Some(3));
        assert_eq!(done.output_tail, ["a", "b"]);
        let lost = t.phase(1, Phase::Test).unwrap().run.clone().unwrap();
        assert_eq!(lost.status, RunStatus::Failed);
        assert_eq!(lost.ended_at, Some(20));
        assert_eq!(lost.output_tail, [INTERRUPTED_LINE]);
        assert!(s.fail_interrupted_runs(30).unwrap().is_empty());
    }

    #[test]
    fn limits_drop_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let opts = ApplyOptions {
            claim_runs: false,
            max_trainings: 1,
            max_phases_per_training: 2,
            max_phases_total: 100,
            ..ApplyOptions::default()
        };
        let other = "00000000-0000-4000-8000-000000000002";
        let out = s
            .apply_batch(
                &[
                    rx(Notification::round(T, Phase::Update, 0, M), 1),
                    rx(Notification::round(T, Phase::Test, 1, M), 2),
                    rx(Notification::round(T, Phase::Update, 1, M), 3),
                    rx(Notification::round(T, Phase::Test, 1, M), 4),
                    rx(Notification::start(other, M), 5),
                ],
                &opts,
            )
            .unwrap();
        assert_eq!(out.dropped, 2);
        let all = s.trainings().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].phases().count(), 2);

        // The cap over all trainings holds across batches too.
        let opts = ApplyOptions {
            max_phases_total: 3,
            ..ApplyOptions::default()
        };
        let out = s
            .apply_batch(
                &[
                    rx(Notification::round(other, Phase::Update, 0, M), 6),
                    rx(Notification::round(other, Phase::Test, 1, M), 7),
                ],
                &opts,
            )
            .unwrap();
        assert_eq!(out.dropped, 1);
        let out = s
            .apply_batch(
                &[rx(Notification::round(other, Phase::Update, 1, M), 8)],
                &opts,
            )
            .unwrap();
        assert_eq!(out.dropped, 1);
        assert_eq!(
            s.trainings()
                .unwrap()
                .iter()
                .map(|t| t.phases().count())
                .sum::<usize>(),
            3
        );
    }

    fn uuid(i: u32) -> String {
        format!("00000000-0000-4000-8000-{i:012}")
    }

    fn uuids(s: &TrainingStore) -> Vec<String> {
        let mut all: Vec<String> = s.trainings().unwrap().into_iter().map(|t| t.uuid).collect();
        all.sort();
        all
    }

    /// Finding 12: junk filling the table does not lock new trainings out.
    #[test]
    fn a_new_training_evicts_the_least_recently_updated_finished_or_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let opts = ApplyOptions {
            max_trainings: 3,
            stale_after_ms: 100,
            ..claiming()
        };
        let (a, b, c, d, e) = (uuid(1), uuid(2), uuid(3), uuid(4), uuid(5));
        // a finished long ago, b finished later, c live and fresh.
        s.apply_batch(
            &[
                rx(Notification::start(&a, M), 1),
                rx(Notification::start(&b, M), 2),
                rx(Notification::finished(&b, M), 3),
                rx(Notification::finished(&a, M), 4),
                rx(Notification::round(&c, Phase::Update, 0, M), 50),
            ],
            &opts,
        )
        .unwrap();
        // Full: the least recently updated finished one (b, at 3) goes.
        let out = s
            .apply_batch(&[rx(Notification::start(&d, M), 60)], &opts)
            .unwrap();
        assert_eq!(out.evicted, std::slice::from_ref(&b));
        assert_eq!(out.dropped, 0);
        assert_eq!(uuids(&s), [a.clone(), c.clone(), d.clone()]);
        // Then a (finished); then c and d are live and fresh: a new one is
        // dropped, and c's run in progress keeps it even once stale.
        let out = s
            .apply_batch(
                &[
                    rx(Notification::start(&e, M), 70),
                    rx(Notification::start(&b, M), 71),
                ],
                &opts,
            )
            .unwrap();
        assert_eq!(out.evicted, std::slice::from_ref(&a));
        assert_eq!(out.dropped, 1);
        assert_eq!(uuids(&s), [c.clone(), d.clone(), e.clone()]);
        // Much later d and e are stale (c still has its run): b gets in,
        // in d's place (the older one).
        let out = s
            .apply_batch(&[rx(Notification::start(&b, M), 1000)], &opts)
            .unwrap();
        assert_eq!(out.evicted, std::slice::from_ref(&d));
        assert_eq!(uuids(&s), [b.clone(), c.clone(), e.clone()]);
        assert_eq!(out.changed.len(), 1);
        assert_eq!(out.changed[0].uuid, b);
        // c's run ends: now c (updated at 50) is the oldest evictable.
        let key = PhaseKey {
            training: c.clone(),
            round: 0,
            phase: Phase::Update,
        };
        let end = RunEnd {
            status: RunStatus::Succeeded,
            ended_at: 1001,
            exit_code: Some(0),
            output_tail: vec![],
        };
        assert!(s.finish_run(&key, &end).unwrap());
        let out = s
            .apply_batch(&[rx(Notification::start(&d, M), 2000)], &opts)
            .unwrap();
        assert_eq!(out.evicted, std::slice::from_ref(&c));
        assert_eq!(uuids(&s), [b, d, e]);
        // Its phases and runs went with it.
        let left: i64 = s
            .with(|c| {
                c.query_row("SELECT count(*) FROM phases", [], |r| r.get(0))
                    .ctx("counting")
            })
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn the_phase_cap_evicts_other_trainings_not_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        let opts = ApplyOptions {
            max_phases_total: 3,
            stale_after_ms: 100,
            ..ApplyOptions::default()
        };
        let (a, b) = (uuid(1), uuid(2));
        s.apply_batch(
            &[
                rx(Notification::round(&a, Phase::Update, 0, M), 1),
                rx(Notification::round(&a, Phase::Test, 1, M), 2),
                rx(Notification::round(&b, Phase::Update, 0, M), 3),
            ],
            &opts,
        )
        .unwrap();
        // Fresh: nothing can go.
        let out = s
            .apply_batch(&[rx(Notification::round(&b, Phase::Test, 1, M), 4)], &opts)
            .unwrap();
        assert_eq!((out.dropped, out.evicted.len()), (1, 0));
        // Later a is stale and goes, phases and all; b (stale too, but the
        // one being written) stays.
        let out = s
            .apply_batch(
                &[rx(Notification::round(&b, Phase::Test, 1, M), 500)],
                &opts,
            )
            .unwrap();
        assert_eq!(out.evicted, [a]);
        assert_eq!(out.dropped, 0);
        let all = s.trainings().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].phases().count(), 2);
    }

    #[test]
    fn the_migration_dates_existing_trainings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO trainings(uuid, state, started_at, finished_at) VALUES ('x', 'finished', 5, 9);
                 INSERT INTO trainings(uuid, state, started_at) VALUES ('y', 'in_round', 5);
                 INSERT INTO phases(training, round, phase, started_at, model_id) VALUES ('y', 0, 'update', 7, 'm');",
            )
            .unwrap();
        }
        let s = TrainingStore::open(&path).unwrap();
        let dates: Vec<(String, i64)> = s
            .with(|c| {
                let mut st = c
                    .prepare("SELECT uuid, updated_at FROM trainings ORDER BY uuid")
                    .ctx("reading")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .ctx("reading")?;
                rows.collect::<Result<_, _>>().ctx("reading")
            })
            .unwrap();
        assert_eq!(dates, [("x".to_owned(), 9), ("y".to_owned(), 7)]);
    }
}
