//! The collaboration's view of a training in the trainings database
//! (issue 15): metrics of this node's runs, this node's progress as it
//! shares it, and what peers shared of theirs.
//!
//! **Why triggers number the changes.** Peers keep a lane only when its
//! sequence number is higher than the one they have, so every change to
//! what this node shares must take a new number, in the same transaction
//! as the change, across restarts. The changes are made in several places
//! (the notification batch, a run's end, a metric flush, a future one); a
//! trigger per table (in the migration in `trainings.rs`) numbers them all
//! from the one-row `progress_seq`, so no writer can forget to.
//!
//! **Bounds on what peers store here.** A lane is kept only for a training
//! this node knows (and goes when it is evicted); at most
//! [`MAX_PEERS_PER_TRAINING`] peers per training and
//! [`MAX_PEER_PHASES`] phase rows per peer over all trainings.

use std::collections::BTreeMap;

use roundtable_shared::progress::{Lane, Metric, Participant, PhaseReport, RunReport};
use roundtable_shared::training::Training;
use rusqlite::{params, Connection, OptionalExtension};

use super::trainings::{json_of, phase_of, run_status_of, state_of, PhaseKey, TrainingStore};
use super::{Context, StoreError};

/// Peers whose lanes are kept per training.
pub const MAX_PEERS_PER_TRAINING: i64 = 64;

/// Phase rows kept per peer over all trainings.
pub const MAX_PEER_PHASES: i64 = 20_000;

/// What [`TrainingStore::record_metrics`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsRecorded {
    /// Values stored (new or changed).
    pub stored: usize,
    /// Values refused: a new name beyond the per-phase limit.
    pub over_limit: u32,
}

/// Why a peer's lane was not (wholly) kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneRefused {
    /// This node does not know the training.
    UnknownTraining,
    /// The training has its maximum of peers.
    TooManyPeers,
}

fn run_json(r: &Option<RunReport>) -> Option<String> {
    r.as_ref()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
}

impl TrainingStore {
    /// Stores `metrics` of `key`'s phase (the last value of a name wins)
    /// and adds `ignored` to its run's count of ignored metric lines. A
    /// phase keeps at most
    /// [`MAX_METRICS_PER_PHASE`](roundtable_shared::progress::MAX_METRICS_PER_PHASE)
    /// names; values of further names are refused and counted as ignored.
    pub fn record_metrics(
        &self,
        key: &PhaseKey,
        metrics: &[Metric],
        ignored: u32,
        at: i64,
    ) -> Result<MetricsRecorded, StoreError> {
        use roundtable_shared::progress::MAX_METRICS_PER_PHASE;
        self.with(|c| {
            let tx = c.transaction().ctx("starting metrics")?;
            let Some(phase_id) = phase_id(&tx, key)? else {
                return Ok(MetricsRecorded::default());
            };
            let mut out = MetricsRecorded::default();
            let mut names: i64 = tx
                .query_row(
                    "SELECT count(*) FROM metrics WHERE phase_id = ?1",
                    [phase_id],
                    |r| r.get(0),
                )
                .ctx("counting metrics")?;
            for m in metrics {
                let old: Option<f64> = tx
                    .prepare_cached("SELECT value FROM metrics WHERE phase_id = ?1 AND name = ?2")
                    .ctx("reading metric")?
                    .query_row(params![phase_id, m.name], |r| r.get(0))
                    .optional()
                    .ctx("reading metric")?;
                match old {
                    Some(v) if v == m.value => {}
                    Some(_) => {
                        tx.execute(
                            "UPDATE metrics SET value = ?3, at = ?4 WHERE phase_id = ?1 AND name = ?2",
                            params![phase_id, m.name, m.value, at],
                        )
                        .ctx("updating metric")?;
                        out.stored += 1;
                    }
                    None if names < MAX_METRICS_PER_PHASE as i64 => {
                        tx.execute(
                            "INSERT INTO metrics(phase_id, name, value, at) VALUES (?1, ?2, ?3, ?4)",
                            params![phase_id, m.name, m.value, at],
                        )
                        .ctx("storing metric")?;
                        names += 1;
                        out.stored += 1;
                    }
                    None => out.over_limit += 1,
                }
            }
            let ignored = ignored.saturating_add(out.over_limit);
            if ignored > 0 {
                tx.execute(
                    "UPDATE runs SET metrics_ignored = metrics_ignored + ?2 WHERE phase_id = ?1",
                    params![phase_id, ignored],
                )
                .ctx("counting ignored metrics")?;
            }
            tx.commit().ctx("committing metrics")?;
            Ok(out)
        })
    }

    /// Sets (or with `None` clears) a training's name; its new snapshot,
    /// `None` if there is no such training.
    pub fn set_name(&self, uuid: &str, name: Option<&str>) -> Result<Option<Training>, StoreError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE trainings SET name = ?2 WHERE uuid = ?1",
                params![uuid, name],
            )
            .ctx("naming training")
        })?;
        if n == 0 {
            return Ok(None);
        }
        self.training(uuid)
    }

    /// The trainings this node would prove to peers: the most recently
    /// updated first, at most `limit`.
    pub fn recent_trainings(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT uuid FROM trainings ORDER BY updated_at DESC, uuid LIMIT ?1",
                )
                .ctx("listing trainings")?;
            let rows = st
                .query_map([limit as i64], |r| r.get(0))
                .ctx("listing trainings")?;
            rows.collect::<Result<_, _>>().ctx("listing trainings")
        })
    }

    /// This node's lane in `uuid` with the phases changed after sequence
    /// number `since` (all with 0), in sequence order; `None` if there is
    /// no such training.
    pub fn local_lane(&self, uuid: &str, since: u64) -> Result<Option<Lane>, StoreError> {
        self.with(|c| local_lane(c, uuid, Phases::Since(since)))
    }

    /// Keeps what `peer` shared of its progress: the lane's fields if its
    /// sequence number is higher than the one kept, and each phase whose
    /// number is higher than its kept row's. Returns the participant with
    /// only what changed (for the event), `None` when nothing did.
    pub fn apply_peer_lane(
        &self,
        peer: &str,
        lane: &Lane,
        now: i64,
    ) -> Result<Result<Option<Participant>, LaneRefused>, StoreError> {
        self.with(|c| {
            let tx = c.transaction().ctx("starting peer lane")?;
            let known: bool = tx
                .query_row(
                    "SELECT 1 FROM trainings WHERE uuid = ?1",
                    [&lane.training],
                    |_| Ok(true),
                )
                .optional()
                .ctx("looking up training")?
                .unwrap_or(false);
            if !known {
                return Ok(Err(LaneRefused::UnknownTraining));
            }
            let kept: Option<u64> = tx
                .query_row(
                    "SELECT seq FROM peer_lanes WHERE training = ?1 AND peer = ?2",
                    params![lane.training, peer],
                    |r| r.get::<_, i64>(0).map(|s| s as u64),
                )
                .optional()
                .ctx("reading peer lane")?;
            if kept.is_none() {
                let peers: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM peer_lanes WHERE training = ?1",
                        [&lane.training],
                        |r| r.get(0),
                    )
                    .ctx("counting peers")?;
                if peers >= MAX_PEERS_PER_TRAINING {
                    return Ok(Err(LaneRefused::TooManyPeers));
                }
            }
            let mut changed = Participant {
                name: peer.to_owned(),
                local: false,
                updated_at: now,
                lane: Lane {
                    phases: Vec::new(),
                    ..lane.clone()
                },
            };
            let mut any = false;
            match kept {
                Some(seq) if seq >= lane.seq => {
                    // Keep the kept fields; report them, not the stale ones.
                    changed.lane =
                        read_peer_lane(&tx, &lane.training, peer)?.unwrap_or(changed.lane);
                    tx.execute(
                        "UPDATE peer_lanes SET updated_at = ?3 WHERE training = ?1 AND peer = ?2",
                        params![lane.training, peer, now],
                    )
                    .ctx("touching peer lane")?;
                }
                _ => {
                    tx.execute(
                        "INSERT INTO peer_lanes(training, peer, state, current_round, started_at,
                                                finished_at, seq, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (training, peer) DO UPDATE SET
                           state = excluded.state, current_round = excluded.current_round,
                           started_at = excluded.started_at, finished_at = excluded.finished_at,
                           seq = excluded.seq, updated_at = excluded.updated_at",
                        params![
                            lane.training,
                            peer,
                            lane.state.as_str(),
                            lane.current_round,
                            lane.started_at,
                            lane.finished_at,
                            lane.seq as i64,
                            now
                        ],
                    )
                    .ctx("storing peer lane")?;
                    any = true;
                }
            }
            let mut rows: i64 = tx
                .query_row(
                    "SELECT count(*) FROM peer_phases WHERE peer = ?1",
                    [peer],
                    |r| r.get(0),
                )
                .ctx("counting peer phases")?;
            for p in &lane.phases {
                let old: Option<i64> = tx
                    .prepare_cached(
                        "SELECT seq FROM peer_phases
                         WHERE training = ?1 AND peer = ?2 AND round = ?3 AND phase = ?4",
                    )
                    .ctx("reading peer phase")?
                    .query_row(
                        params![lane.training, peer, p.round, p.phase.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .ctx("reading peer phase")?;
                match old {
                    Some(s) if s as u64 >= p.seq => continue,
                    None if rows >= MAX_PEER_PHASES => continue,
                    None => rows += 1,
                    Some(_) => {}
                }
                tx.execute(
                    "INSERT INTO peer_phases(training, peer, round, phase, started_at, run,
                                             metrics, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (training, peer, round, phase) DO UPDATE SET
                       started_at = excluded.started_at, run = excluded.run,
                       metrics = excluded.metrics, seq = excluded.seq",
                    params![
                        lane.training,
                        peer,
                        p.round,
                        p.phase.as_str(),
                        p.started_at,
                        run_json(&p.run),
                        serde_json::to_string(&p.metrics).unwrap_or_else(|_| "[]".into()),
                        p.seq as i64
                    ],
                )
                .ctx("storing peer phase")?;
                changed.lane.phases.push(p.clone());
                any = true;
            }
            tx.commit().ctx("committing peer lane")?;
            changed.lane.phases.sort_by_key(|p| (p.round, p.phase));
            Ok(Ok(any.then_some(changed)))
        })
    }

    /// Everyone known in training `uuid`: this node first (if it knows
    /// the training), then the peers that shared, by name; every phase.
    pub fn participants(&self, uuid: &str, me: &str) -> Result<Vec<Participant>, StoreError> {
        self.with(|c| participants(c, uuid, me, Phases::Since(0)))
    }

    /// Every participant of every training, each with only its latest
    /// phase (for the trainings list). Only that phase is read: the list
    /// is fetched on every load of the dashboard, beside a training's
    /// page's own request on the same store, and reading every phase to
    /// keep one cost as much as every training's page. One training of 10
    /// × 200 phases: 0.14–0.19 ms instead of 1.35–1.36 (best of 20,
    /// `summary_speed` below).
    pub fn participants_summary(&self, me: &str) -> Result<Vec<Participant>, StoreError> {
        self.with(|c| {
            let uuids: Vec<String> = {
                let mut st = c
                    .prepare_cached("SELECT uuid FROM trainings ORDER BY started_at, uuid")
                    .ctx("listing trainings")?;
                let rows = st.query_map([], |r| r.get(0)).ctx("listing trainings")?;
                rows.collect::<Result<_, _>>().ctx("listing trainings")?
            };
            let mut out = Vec::new();
            for uuid in uuids {
                out.extend(participants(c, &uuid, me, Phases::Latest)?);
            }
            Ok(out)
        })
    }
}

/// Which of a lane's phases to read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phases {
    /// Those changed after this sequence number (0: all).
    Since(u64),
    /// The latest by DLR order only ([`Lane::latest`]).
    Latest,
}

/// The SQL that keeps only a lane's latest phase ([`Lane::latest`]), of
/// columns `round` and `phase`: the highest round, and within it the last
/// in [`Phase::position`]'s order.
fn latest_phase_only(round: &str, phase: &str) -> String {
    format!(
        "ORDER BY {round} DESC, CASE {phase} WHEN 'update' THEN 2 WHEN 'swag' THEN 1 ELSE 0 END DESC LIMIT 1"
    )
}

/// [`TrainingStore::participants`] with `which` phases.
fn participants(
    c: &Connection,
    uuid: &str,
    me: &str,
    which: Phases,
) -> Result<Vec<Participant>, StoreError> {
    let mut out = Vec::new();
    if let Some(lane) = local_lane(c, uuid, which)? {
        out.push(local_participant(c, me, lane)?);
    }
    let peers: Vec<String> = {
        let mut st = c
            .prepare_cached("SELECT peer FROM peer_lanes WHERE training = ?1 ORDER BY peer")
            .ctx("listing participants")?;
        let rows = st
            .query_map([uuid], |r| r.get(0))
            .ctx("listing participants")?;
        rows.collect::<Result<_, _>>().ctx("listing participants")?
    };
    for peer in peers {
        if let Some(p) = peer_participant(c, uuid, &peer, which == Phases::Latest)? {
            out.push(p);
        }
    }
    Ok(out)
}

fn phase_id(c: &Connection, key: &PhaseKey) -> Result<Option<i64>, StoreError> {
    c.prepare_cached("SELECT id FROM phases WHERE training = ?1 AND round = ?2 AND phase = ?3")
        .ctx("looking up phase")?
        .query_row(params![key.training, key.round, key.phase.as_str()], |r| {
            r.get(0)
        })
        .optional()
        .ctx("looking up phase")
}

/// A lane without its phases from the columns `state, current_round,
/// started_at, finished_at, seq` (of `trainings` or `peer_lanes`).
fn lane_row(uuid: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<Lane> {
    Ok(Lane {
        training: uuid.to_owned(),
        state: state_of(r.get(0)?)?,
        current_round: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        seq: r.get::<_, i64>(4)? as u64,
        phases: Vec::new(),
    })
}

fn local_lane(c: &Connection, uuid: &str, which: Phases) -> Result<Option<Lane>, StoreError> {
    let Some(mut lane) = c
        .prepare_cached(
            "SELECT state, current_round, started_at, finished_at, seq FROM trainings
             WHERE uuid = ?1",
        )
        .ctx("reading training")?
        .query_row([uuid], |r| lane_row(uuid, r))
        .optional()
        .ctx("reading training")?
    else {
        return Ok(None);
    };
    let phase_row = |r: &rusqlite::Row<'_>| {
        let run = match r.get::<_, Option<String>>(5)? {
            None => None,
            Some(s) => Some(RunReport {
                status: run_status_of(s)?,
                started_at: r.get(6)?,
                ended_at: r.get(7)?,
                exit_code: r.get(8)?,
            }),
        };
        Ok((
            r.get::<_, i64>(0)?,
            PhaseReport {
                round: r.get(1)?,
                phase: phase_of(r.get(2)?)?,
                started_at: r.get(3)?,
                run,
                metrics: Vec::new(),
                seq: r.get::<_, i64>(4)? as u64,
            },
        ))
    };
    const PHASE_COLUMNS: &str = "SELECT p.id, p.round, p.phase, p.started_at, p.seq,
                    r.status, r.started_at, r.ended_at, r.exit_code
             FROM phases p LEFT JOIN runs r ON r.phase_id = p.id";
    let metric_row = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, i64>(0)?,
            Metric {
                name: r.get(1)?,
                value: r.get(2)?,
            },
        ))
    };
    // All phases changed after `since`, or the latest one (of all).
    let (since, order) = match which {
        Phases::Since(since) => (since, "ORDER BY p.seq".to_owned()),
        Phases::Latest => (0, latest_phase_only("p.round", "p.phase")),
    };
    let phases: Vec<_> = c
        .prepare_cached(&format!(
            "{PHASE_COLUMNS} WHERE p.training = ?1 AND p.seq > ?2 {order}"
        ))
        .ctx("reading phases")?
        .query_map(params![uuid, since as i64], phase_row)
        .and_then(|rows| rows.collect())
        .ctx("reading phases")?;
    let metrics: Vec<_> = match (which, phases.first()) {
        (Phases::Since(_), _) => c
            .prepare_cached(
                "SELECT m.phase_id, m.name, m.value FROM metrics m
                 JOIN phases p ON p.id = m.phase_id
                 WHERE p.training = ?1 AND p.seq > ?2 ORDER BY m.phase_id, m.name",
            )
            .ctx("reading metrics")?
            .query_map(params![uuid, since as i64], metric_row)
            .and_then(|rows| rows.collect())
            .ctx("reading metrics")?,
        (Phases::Latest, None) => Vec::new(),
        (Phases::Latest, Some((id, _))) => c
            .prepare_cached(
                "SELECT phase_id, name, value FROM metrics WHERE phase_id = ?1 ORDER BY name",
            )
            .ctx("reading metrics")?
            .query_map([id], metric_row)
            .and_then(|rows| rows.collect())
            .ctx("reading metrics")?,
    };
    let mut by_phase: BTreeMap<i64, Vec<Metric>> = BTreeMap::new();
    for (id, m) in metrics {
        by_phase.entry(id).or_default().push(m);
    }
    for (id, mut p) in phases {
        p.metrics = by_phase.remove(&id).unwrap_or_default();
        lane.phases.push(p);
    }
    Ok(Some(lane))
}

fn local_participant(c: &Connection, me: &str, mut lane: Lane) -> Result<Participant, StoreError> {
    let updated_at: i64 = c
        .query_row(
            "SELECT updated_at FROM trainings WHERE uuid = ?1",
            [&lane.training],
            |r| r.get(0),
        )
        .ctx("reading training")?;
    lane.phases.sort_by_key(|p| (p.round, p.phase));
    Ok(Participant {
        name: me.to_owned(),
        local: true,
        updated_at,
        lane,
    })
}

fn read_peer_lane(c: &Connection, uuid: &str, peer: &str) -> Result<Option<Lane>, StoreError> {
    c.prepare_cached(
        "SELECT state, current_round, started_at, finished_at, seq FROM peer_lanes
         WHERE training = ?1 AND peer = ?2",
    )
    .ctx("reading peer lane")?
    .query_row(params![uuid, peer], |r| lane_row(uuid, r))
    .optional()
    .ctx("reading peer lane")
}

fn peer_participant(
    c: &Connection,
    uuid: &str,
    peer: &str,
    latest_only: bool,
) -> Result<Option<Participant>, StoreError> {
    let Some(mut lane) = read_peer_lane(c, uuid, peer)? else {
        return Ok(None);
    };
    let updated_at: i64 = c
        .query_row(
            "SELECT updated_at FROM peer_lanes WHERE training = ?1 AND peer = ?2",
            params![uuid, peer],
            |r| r.get(0),
        )
        .ctx("reading peer lane")?;
    let mut st = c
        .prepare_cached(&format!(
            "SELECT round, phase, started_at, run, metrics, seq FROM peer_phases
             WHERE training = ?1 AND peer = ?2 {}",
            if latest_only {
                latest_phase_only("round", "phase")
            } else {
                String::new()
            }
        ))
        .ctx("reading peer phases")?;
    let rows = st
        .query_map(params![uuid, peer], |r| {
            Ok(PhaseReport {
                round: r.get(0)?,
                phase: phase_of(r.get(1)?)?,
                started_at: r.get(2)?,
                run: match r.get::<_, Option<String>>(3)? {
                    None => None,
                    Some(s) => Some(json_of(&s)?),
                },
                metrics: json_of(&r.get::<_, String>(4)?)?,
                seq: r.get::<_, i64>(5)? as u64,
            })
        })
        .ctx("reading peer phases")?;
    for row in rows {
        lane.phases.push(row.ctx("reading peer phases")?);
    }
    lane.phases.sort_by_key(|p| (p.round, p.phase));
    Ok(Some(Participant {
        name: peer.to_owned(),
        local: false,
        updated_at,
        lane,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::trainings::{ApplyOptions, Received};
    use roundtable_shared::notify::{Kind, Notification};
    use roundtable_shared::training::{Phase, RunStatus, TrainingState};

    const T: &str = "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

    fn store() -> (tempfile::TempDir, TrainingStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = TrainingStore::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn round(s: &TrainingStore, round: u32, phase: Phase, at: i64) {
        let n = Notification {
            training_uuid: T.into(),
            kind: Kind::Round {
                phase,
                round,
                global_model_uuid: "m".into(),
            },
        };
        let opts = ApplyOptions {
            claim_runs: true,
            ..ApplyOptions::default()
        };
        s.apply_batch(
            &[Received {
                notification: n,
                at,
            }],
            &opts,
        )
        .unwrap();
    }

    fn key(round: u32, phase: Phase) -> PhaseKey {
        PhaseKey {
            training: T.into(),
            round,
            phase,
        }
    }

    #[test]
    fn every_change_takes_a_higher_number() {
        let (_d, s) = store();
        round(&s, 0, Phase::Update, 10);
        let a = s.local_lane(T, 0).unwrap().unwrap();
        assert_eq!(a.phases.len(), 1);
        assert!(a.seq >= a.phases[0].seq);
        // A metric bumps the phase and the lane.
        s.record_metrics(
            &key(0, Phase::Update),
            &[Metric {
                name: "loss".into(),
                value: 0.5,
            }],
            0,
            11,
        )
        .unwrap();
        let b = s.local_lane(T, a.seq).unwrap().unwrap();
        assert!(b.seq > a.seq);
        assert_eq!(b.phases.len(), 1, "only the changed phase: {b:?}");
        assert_eq!(b.phases[0].metric("loss"), Some(0.5));
        // The run's end too.
        let end = crate::store::trainings::RunEnd {
            status: RunStatus::Succeeded,
            ended_at: 12,
            exit_code: Some(0),
            output_tail: vec![],
        };
        assert!(s.finish_run(&key(0, Phase::Update), &end).unwrap());
        let c = s.local_lane(T, b.seq).unwrap().unwrap();
        assert!(c.seq > b.seq);
        assert_eq!(
            c.phases[0].run.as_ref().unwrap().status,
            RunStatus::Succeeded
        );
        // Nothing changed: nothing newer.
        assert!(s.local_lane(T, c.seq).unwrap().unwrap().phases.is_empty());
        // A new phase: the training's state changes too.
        round(&s, 1, Phase::Test, 13);
        let d = s.local_lane(T, c.seq).unwrap().unwrap();
        assert_eq!(d.state, TrainingState::Testing);
        assert_eq!(d.phases.len(), 1);
    }

    #[test]
    fn metrics_keep_the_last_value_and_a_bounded_number_of_names() {
        let (_d, s) = store();
        round(&s, 0, Phase::Update, 10);
        let k = key(0, Phase::Update);
        let m = |n: &str, v| Metric {
            name: n.into(),
            value: v,
        };
        s.record_metrics(&k, &[m("loss", 0.9), m("loss", 0.4)], 2, 11)
            .unwrap();
        let many: Vec<Metric> = (0..40).map(|i| m(&format!("m{i}"), 1.0)).collect();
        let r = s.record_metrics(&k, &many, 0, 12).unwrap();
        assert_eq!(r.stored, 31);
        assert_eq!(r.over_limit, 9);
        let lane = s.local_lane(T, 0).unwrap().unwrap();
        assert_eq!(lane.phases[0].metrics.len(), 32);
        assert_eq!(lane.phases[0].metric("loss"), Some(0.4));
        let t = s.training(T).unwrap().unwrap();
        assert_eq!(
            t.rounds[0].phases[0].run.as_ref().unwrap().metrics_ignored,
            11
        );
    }

    #[test]
    fn the_summary_holds_each_participants_latest_phase_as_its_lane_says() {
        let (_d, s) = store();
        // This node: round 0's update and test, round 1's update then a
        // SWAG round (which comes before the update in DLR order, so the
        // update stays the latest), each with a metric.
        let mut at = 10;
        for (r, phase) in [
            (0, Phase::Update),
            (0, Phase::Test),
            (1, Phase::Update),
            (1, Phase::Swag),
        ] {
            round(&s, r, phase, at);
            s.record_metrics(
                &key(r, phase),
                &[Metric {
                    name: format!("m{at}"),
                    value: at as f64,
                }],
                0,
                at + 1,
            )
            .unwrap();
            at += 10;
        }
        // Peers whose phases arrive out of order; one with none.
        let phase = |round, phase, seq| PhaseReport {
            round,
            phase,
            started_at: 5 + seq as i64,
            run: Some(RunReport {
                status: RunStatus::Succeeded,
                started_at: 5,
                ended_at: Some(6),
                exit_code: Some(0),
            }),
            metrics: vec![Metric {
                name: "loss".into(),
                value: seq as f64,
            }],
            seq,
        };
        let lane = |seq, phases| Lane {
            training: T.into(),
            state: TrainingState::InRound,
            current_round: Some(2),
            started_at: 5,
            finished_at: None,
            seq,
            phases,
        };
        use Phase::{Swag, Test, Update};
        let bob = vec![
            phase(2, Update, 3),
            phase(1, Swag, 2),
            phase(2, Test, 4),
            phase(1, Update, 1),
        ];
        s.apply_peer_lane("bob", &lane(4, bob), 50)
            .unwrap()
            .unwrap();
        let carol = vec![phase(3, Test, 1), phase(2, Swag, 2)];
        s.apply_peer_lane("carol", &lane(2, carol), 51)
            .unwrap()
            .unwrap();
        s.apply_peer_lane("dave", &lane(1, vec![]), 52)
            .unwrap()
            .unwrap();

        let full = s.participants(T, "alice").unwrap();
        let summary = s.participants_summary("alice").unwrap();
        assert_eq!(summary.len(), 4);
        for (f, p) in full.iter().zip(&summary) {
            let mut want = f.clone();
            want.lane.phases = f.lane.latest().cloned().into_iter().collect();
            assert_eq!(p, &want, "{}", f.name);
        }
        let latest: Vec<Option<(u32, Phase)>> = summary
            .iter()
            .map(|p| p.lane.phases.first().map(|ph| (ph.round, ph.phase)))
            .collect();
        assert_eq!(
            latest,
            [Some((1, Update)), Some((2, Update)), Some((3, Test)), None]
        );
        assert_eq!(summary[0].lane.phases[0].metric("m30"), Some(30.0));
    }

    /// Prints what the trainings list's summary costs against reading
    /// every phase and keeping the latest (as it did before): `cargo test
    /// -p roundtable --release --lib summary_speed -- --ignored
    /// --nocapture`. A figure, not a check.
    #[test]
    #[ignore = "prints a speed figure"]
    fn summary_speed() {
        let (_d, s) = store();
        for r in 0..100 {
            round(&s, r, Phase::Update, 10 + i64::from(r) * 2);
            round(&s, r, Phase::Test, 11 + i64::from(r) * 2);
        }
        for peer in 0..9 {
            let phases: Vec<PhaseReport> = (0..200u32)
                .map(|i| PhaseReport {
                    round: i / 2,
                    phase: if i % 2 == 0 {
                        Phase::Update
                    } else {
                        Phase::Test
                    },
                    started_at: i64::from(i),
                    run: None,
                    metrics: vec![
                        Metric {
                            name: "loss".into(),
                            value: 0.5,
                        },
                        Metric {
                            name: "accuracy".into(),
                            value: 0.5,
                        },
                    ],
                    seq: u64::from(i) + 1,
                })
                .collect();
            for chunk in phases.chunks(roundtable_shared::progress::MAX_PHASES_PER_LANE) {
                let lane = Lane {
                    training: T.into(),
                    state: TrainingState::InRound,
                    current_round: Some(99),
                    started_at: 0,
                    finished_at: None,
                    seq: chunk.last().unwrap().seq,
                    phases: chunk.to_vec(),
                };
                s.apply_peer_lane(&format!("peer{peer}"), &lane, 1)
                    .unwrap()
                    .unwrap();
            }
        }
        let time = |f: &dyn Fn() -> usize| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                assert_eq!(f(), 10);
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            best
        };
        let latest_only = time(&|| s.participants_summary("alice").unwrap().len());
        let every_phase = time(&|| {
            let mut all = s.participants(T, "alice").unwrap();
            for p in &mut all {
                p.lane.phases = p.lane.latest().cloned().into_iter().collect();
            }
            all.len()
        });
        println!(
            "summary of 1 training, 10 participants x 200 phases: latest phase read {latest_only:.2} ms, \
             every phase read {every_phase:.2} ms (best of 20)"
        );
    }

    #[test]
    fn peer_lanes_never_go_backwards_and_only_for_known_trainings() {
        let (_d, s) = store();
        let lane = |seq, state, phases: Vec<PhaseReport>| Lane {
            training: T.into(),
            state,
            current_round: Some(1),
            started_at: 5,
            finished_at: None,
            seq,
            phases,
        };
        let ph = |round, seq, v| PhaseReport {
            round,
            phase: Phase::Update,
            started_at: 5,
            run: None,
            metrics: vec![Metric {
                name: "loss".into(),
                value: v,
            }],
            seq,
        };
        assert_eq!(
            s.apply_peer_lane("bob", &lane(1, TrainingState::InRound, vec![]), 1)
                .unwrap(),
            Err(LaneRefused::UnknownTraining)
        );
        round(&s, 0, Phase::Update, 10);
        let new = lane(
            5,
            TrainingState::InRound,
            vec![ph(0, 4, 0.5), ph(1, 5, 0.4)],
        );
        let changed = s
            .apply_peer_lane("bob", &new, 20)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(changed.lane.phases.len(), 2);
        // The same again: nothing changes.
        assert_eq!(s.apply_peer_lane("bob", &new, 21).unwrap(), Ok(None));
        // Older: nothing moves back.
        let old = lane(3, TrainingState::Started, vec![ph(0, 2, 0.9)]);
        assert_eq!(s.apply_peer_lane("bob", &old, 22).unwrap(), Ok(None));
        let all = s.participants(T, "alice").unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].local);
        assert_eq!(all[0].name, "alice");
        let bob = &all[1];
        assert_eq!(bob.lane.state, TrainingState::InRound);
        assert_eq!(bob.lane.phases[0].metric("loss"), Some(0.5));
        assert_eq!(bob.updated_at, 22);
        // A newer phase alone.
        let newer = lane(6, TrainingState::InRound, vec![ph(1, 6, 0.3)]);
        let changed = s
            .apply_peer_lane("bob", &newer, 23)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(changed.lane.phases.len(), 1);
        let summary = s.participants_summary("alice").unwrap();
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[1].lane.phases.len(), 1);
        assert_eq!(summary[1].lane.phases[0].metric("loss"), Some(0.3));
    }
}
