//! The collaboration's view of a training (issue 15), derived from its
//! participants as the reducer holds them: the lanes with their
//! stand-outs (straggler, failed, offline), each lane's bars on a common
//! time axis, and the metric series the charts draw. Pure, tested
//! natively; the training page memoizes these on the training's `rev`.
//!
//! The functions that loop over every phase (here, [`view::bars`], the
//! lane paths and the chart geometry) are `#[inline(never)]`. V8 runs a
//! wasm function unoptimized first and recompiles it, optimized, on a
//! background thread once it has run long enough; loops count. Inlined
//! into the component that calls it once per render, such a loop made the
//! whole component hot: on a browser's first load of a training's page
//! (10 participants × 100 rounds), V8 recompiled the training page's
//! render function (30 KB of wasm) for 80 ms and the lane's (13 KB) for
//! 27–33 ms (`--js-flags=--trace-wasm-compilation-times`), on the two
//! cores the page renders on. Kept apart, only the small loops get hot.

use std::collections::BTreeMap;
use std::rc::Rc;

use roundtable_shared::api::PeerInfo;
use roundtable_shared::progress::{Participant, PhaseReport};
use roundtable_shared::training::{Phase, RunStatus, TrainingState};

use crate::view;

/// A peer whose lane has not changed for this long while its training
/// runs counts as offline (a node shares each change at once and
/// reconciles on reconnect, so silence this long means it is gone or
/// stuck), ms.
pub const STALE_AFTER_MS: i64 = 30 * 60_000;

/// Whether a metric came from a training step or a test of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricKind {
    /// Reported by the run of an `update` phase.
    Train,
    /// Reported by the run of a `test` phase.
    Test,
}

impl MetricKind {
    /// The kind of metrics a phase's run reports (SWAG runs: none charted).
    pub fn of(phase: Phase) -> Option<MetricKind> {
        match phase {
            Phase::Update => Some(MetricKind::Train),
            Phase::Test => Some(MetricKind::Test),
            Phase::Swag => None,
        }
    }

    /// `train`, `test`: the chart's `data-kind` and title.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Train => "train",
            MetricKind::Test => "test",
        }
    }
}

/// One participant's values of one metric: (round, value), by round.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub participant: String,
    /// Its colour in this training ([`view::colours`]).
    pub colour: &'static str,
    pub points: Vec<(u32, f64)>,
}

impl Line {
    /// The value at `round`, if reported.
    pub fn at(&self, round: u32) -> Option<f64> {
        self.points
            .binary_search_by_key(&round, |p| p.0)
            .ok()
            .map(|i| self.points[i].1)
    }
}

/// One chart: a metric of one kind, a line per participant that reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub metric: String,
    pub kind: MetricKind,
    /// In lane order (this node first, then by name).
    pub lines: Vec<Line>,
}

impl MetricSeries {
    /// "loss (train)".
    pub fn title(&self) -> String {
        format!("{} ({})", self.metric, self.kind.as_str())
    }

    /// Every round any line has a value for, in order.
    pub fn rounds(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    }
}

/// The charts of a training's participants (`lanes`, in lane order): one
/// series per (metric, kind), by metric name then train before test.
/// One pass over every phase's metrics.
#[inline(never)] // see the module comment
pub fn metric_series(lanes: &[Rc<Participant>]) -> Vec<Rc<MetricSeries>> {
    // The (metric, kind)s in order, found by binary search (a training
    // has a handful), each with its points per lane index.
    let mut keys: Vec<(&str, MetricKind)> = Vec::new();
    let mut by_key: Vec<Vec<Vec<(u32, f64)>>> = Vec::new();
    for (i, p) in lanes.iter().enumerate() {
        for ph in &p.lane.phases {
            let Some(kind) = MetricKind::of(ph.phase) else {
                continue;
            };
            for m in &ph.metrics {
                let key = (m.name.as_str(), kind);
                let at = keys.binary_search(&key).unwrap_or_else(|at| {
                    keys.insert(at, key);
                    by_key.insert(at, vec![Vec::new(); lanes.len()]);
                    at
                });
                by_key[at][i].push((ph.round, m.value));
            }
        }
    }
    let colours = view::colours(lanes.iter().map(|p| p.name.as_str()));
    keys.into_iter()
        .zip(by_key)
        .map(|((metric, kind), lines)| {
            let lines = lines
                .into_iter()
                .enumerate()
                .filter(|(_, points)| !points.is_empty())
                .map(|(i, mut points)| {
                    points.sort_by_key(|p| p.0);
                    points.dedup_by_key(|p| p.0);
                    Line {
                        participant: lanes[i].name.clone(),
                        colour: colours[lanes[i].name.as_str()],
                        points,
                    }
                })
                .collect();
            Rc::new(MetricSeries {
                metric: metric.to_owned(),
                kind,
                lines,
            })
        })
        .collect()
}

/// When a participant was last heard from, if it counts as offline: a
/// peer the directory lists as offline (or not at all), or whose lane has
/// not changed for [`STALE_AFTER_MS`] while its training runs. This node
/// is never offline.
pub fn offline_since(p: &Participant, peers: &BTreeMap<String, PeerInfo>, now: i64) -> Option<i64> {
    if p.local {
        return None;
    }
    let online = peers.get(&p.name).is_some_and(|i| i.online);
    let stale = !p.lane.state.is_terminal() && now - p.updated_at > STALE_AFTER_MS;
    (!online || stale).then_some(p.updated_at)
}

/// One lane as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSummary {
    pub participant: Rc<Participant>,
    /// Its colour in this training ([`view::colours`]), as in the charts.
    pub colour: &'static str,
    /// Its latest phase (by DLR order).
    pub latest: Option<PhaseReport>,
    /// Still in a phase the others have left, or its run still running
    /// where all the others' ended.
    pub straggler: bool,
    /// The run of its latest phase failed.
    pub failed: bool,
    /// Offline: when it was last heard from ([`offline_since`]).
    pub offline: Option<i64>,
    /// The metrics of its latest phase that reported any.
    pub last_metrics: Option<PhaseReport>,
}

fn position(p: &PhaseReport) -> u64 {
    p.phase.position(p.round)
}

fn running(p: &PhaseReport) -> bool {
    p.run
        .as_ref()
        .is_some_and(|r| r.status == RunStatus::Running)
}

/// The lanes of `lanes` (in lane order) with their stand-outs.
///
/// A participant is a straggler when it is online, its training runs,
/// and every other online participant still in the training (at least
/// one) is past it: in a later phase, finished, or in the same phase with
/// its run ended while this one's still runs. Offline participants do not
/// count as "the others" (their state is only their last known one).
#[inline(never)] // see the module comment
pub fn lane_summaries(
    lanes: &[Rc<Participant>],
    peers: &BTreeMap<String, PeerInfo>,
    now: i64,
) -> Vec<LaneSummary> {
    let offline: Vec<Option<i64>> = lanes.iter().map(|p| offline_since(p, peers, now)).collect();
    let latest: Vec<Option<&PhaseReport>> = lanes.iter().map(|p| p.lane.latest()).collect();
    // Past `me`: the other online participants, each ahead of `me`.
    let is_straggler = |me: usize| -> bool {
        let p = &lanes[me];
        if p.lane.state.is_terminal() || offline[me].is_some() {
            return false;
        }
        let Some(mine) = latest[me] else {
            return false;
        };
        let mut others = 0;
        for (i, o) in lanes.iter().enumerate() {
            if i == me || offline[i].is_some() || o.lane.state == TrainingState::Removed {
                continue;
            }
            others += 1;
            let ahead = o.lane.state == TrainingState::Finished
                || latest[i].is_some_and(|theirs| {
                    position(theirs) > position(mine)
                        || position(theirs) == position(mine) && theirs.run_ended() && running(mine)
                });
            if !ahead {
                return false;
            }
        }
        others > 0
    };
    let colours = view::colours(lanes.iter().map(|p| p.name.as_str()));
    lanes
        .iter()
        .enumerate()
        .map(|(i, p)| LaneSummary {
            participant: p.clone(),
            colour: colours[p.name.as_str()],
            latest: latest[i].cloned(),
            straggler: is_straggler(i),
            failed: latest[i]
                .and_then(|l| l.run.as_ref())
                .is_some_and(|r| r.status == RunStatus::Failed),
            offline: offline[i],
            last_metrics: p
                .lane
                .phases
                .iter()
                .filter(|ph| !ph.metrics.is_empty())
                .max_by_key(|ph| position(ph))
                .cloned(),
        })
        .collect()
}

/// One bar of a lane: a phase, from its start to its end (the next phase's
/// start, its run's end, or the lane's finish), or open to `until` while
/// it runs (`live`).
#[derive(Debug, Clone, PartialEq)]
pub struct LaneBar {
    pub round: u32,
    pub phase: Phase,
    pub start: i64,
    /// When it ended; `None` while that is not known (a running phase, or
    /// the last of a lane that never said): it reaches [`end`](Self::end)'s
    /// `until`.
    pub end: Option<i64>,
    pub live: bool,
    pub run: Option<RunStatus>,
}

impl LaneBar {
    /// Its end, an open bar reaching `until` (now, or when an offline
    /// participant was last heard from).
    pub fn end(&self, until: i64) -> i64 {
        self.end.unwrap_or(until).max(self.start)
    }
}

/// The bars of `p`'s lane, in time order. They do not depend on the
/// time: an open bar's end is given when it is drawn ([`LaneBar::end`]),
/// so a lane's bars are worked out once per change of the lane, not once
/// a second while a training runs.
#[inline(never)] // see the module comment
pub fn lane_bars(p: &Participant) -> Vec<LaneBar> {
    let mut phases: Vec<&PhaseReport> = p.lane.phases.iter().collect();
    phases.sort_by_key(|ph| (ph.started_at, position(ph)));
    let mut out = Vec::with_capacity(phases.len());
    for (i, ph) in phases.iter().enumerate() {
        let end = match phases.get(i + 1) {
            Some(next) => Some(next.started_at),
            None => ph
                .run
                .as_ref()
                .and_then(|r| r.ended_at)
                .or(p.lane.finished_at),
        };
        out.push(LaneBar {
            round: ph.round,
            phase: ph.phase,
            start: ph.started_at,
            end: end.map(|e| e.max(ph.started_at)),
            live: end.is_none() && !p.lane.state.is_terminal(),
            run: ph.run.as_ref().map(|r| r.status),
        });
    }
    out
}

/// The common time axis of a training's lanes: from the earliest start to
/// the latest end, `now` while any lane runs.
#[inline(never)] // see the module comment
pub fn lanes_span(lanes: &[Rc<Participant>], now: i64) -> (i64, i64) {
    let start = lanes
        .iter()
        .flat_map(|p| {
            std::iter::once(p.lane.started_at).chain(p.lane.phases.iter().map(|ph| ph.started_at))
        })
        .min()
        .unwrap_or(now);
    let running = lanes.iter().any(|p| !p.lane.state.is_terminal());
    let end = if running {
        now
    } else {
        lanes
            .iter()
            .flat_map(|p| {
                p.lane
                    .finished_at
                    .into_iter()
                    .chain(p.lane.phases.iter().flat_map(|ph| {
                        std::iter::once(ph.started_at)
                            .chain(ph.run.as_ref().and_then(|r| r.ended_at))
                    }))
            })
            .max()
            .unwrap_or(now)
    };
    (start, end.max(start + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::progress::{Lane, Metric, RunReport};

    const T: &str = "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

    fn phase(round: u32, phase: Phase, at: i64, run: Option<RunStatus>) -> PhaseReport {
        PhaseReport {
            round,
            phase,
            started_at: at,
            run: run.map(|status| RunReport {
                status,
                started_at: at,
                ended_at: (status != RunStatus::Running).then_some(at + 500),
                exit_code: None,
            }),
            metrics: vec![],
            seq: at as u64,
        }
    }

    fn who(name: &str, local: bool, phases: Vec<PhaseReport>) -> Rc<Participant> {
        let latest = phases.iter().map(|p| p.round).max();
        Rc::new(Participant {
            name: name.into(),
            local,
            updated_at: 10_000,
            lane: Lane {
                training: T.into(),
                state: TrainingState::InRound,
                current_round: latest,
                started_at: 0,
                finished_at: None,
                seq: 100_000,
                phases,
            },
        })
    }

    fn online(names: &[&str]) -> BTreeMap<String, PeerInfo> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    PeerInfo {
                        online: true,
                        ..PeerInfo::unknown(n)
                    },
                )
            })
            .collect()
    }

    fn with_metric(mut p: PhaseReport, name: &str, value: f64) -> PhaseReport {
        p.metrics.push(Metric {
            name: name.into(),
            value,
        });
        p
    }

    #[test]
    fn series_per_metric_and_kind_sorted_by_round() {
        use Phase::*;
        let alice = who(
            "alice",
            true,
            vec![
                with_metric(phase(0, Update, 1, None), "loss", 0.9),
                with_metric(phase(1, Test, 2, None), "loss", 0.8),
                with_metric(phase(1, Update, 3, None), "loss", 0.7),
                with_metric(phase(2, Swag, 4, None), "loss", 9.0),
            ],
        );
        let bob = who(
            "bob",
            false,
            vec![
                with_metric(
                    with_metric(phase(1, Update, 3, None), "loss", 0.75),
                    "acc",
                    0.5,
                ),
                with_metric(phase(0, Update, 1, None), "loss", 0.95),
            ],
        );
        let s = metric_series(&[alice, bob]);
        let keys: Vec<String> = s.iter().map(|s| s.title()).collect();
        assert_eq!(keys, ["acc (train)", "loss (train)", "loss (test)"]);
        let loss = &s[1];
        assert_eq!(loss.lines.len(), 2);
        assert_eq!(loss.lines[0].participant, "alice");
        assert_eq!(loss.lines[0].points, [(0, 0.9), (1, 0.7)]);
        assert_eq!(
            loss.lines[1].points,
            [(0, 0.95), (1, 0.75)],
            "sorted by round"
        );
        assert_eq!(loss.lines[1].at(1), Some(0.75));
        assert_eq!(loss.lines[1].at(5), None);
        assert_eq!(s[2].lines.len(), 1, "only alice tested");
        assert_eq!(s[0].rounds(), [1]);
        assert!(metric_series(&[]).is_empty());
    }

    #[test]
    fn a_straggler_is_behind_every_other_online_participant() {
        use Phase::*;
        use RunStatus::*;
        let peers = online(&["bob", "carol"]);
        // alice and bob tested round 3; carol still updates round 2.
        let lanes = [
            who("alice", true, vec![phase(3, Test, 50, Some(Succeeded))]),
            who("bob", false, vec![phase(3, Test, 51, Some(Running))]),
            who("carol", false, vec![phase(2, Update, 30, Some(Running))]),
        ];
        let s = lane_summaries(&lanes, &peers, 20_000);
        let flags: Vec<bool> = s.iter().map(|l| l.straggler).collect();
        assert_eq!(flags, [false, false, true]);
        // carol catches up; now bob's run is the one still going.
        let lanes = [
            lanes[0].clone(),
            lanes[1].clone(),
            who("carol", false, vec![phase(3, Test, 60, Some(Succeeded))]),
        ];
        let s = lane_summaries(&lanes, &peers, 20_000);
        let flags: Vec<bool> = s.iter().map(|l| l.straggler).collect();
        assert_eq!(flags, [false, true, false]);
        // Alone, nobody straggles.
        let s = lane_summaries(&lanes[..1], &peers, 20_000);
        assert!(!s[0].straggler);
    }

    #[test]
    fn failed_and_offline_stand_out_with_the_last_known_state() {
        use Phase::*;
        use RunStatus::*;
        let lanes = [
            who("alice", true, vec![phase(1, Update, 10, Some(Failed))]),
            who("bob", false, vec![phase(1, Update, 10, Some(Running))]),
            who("carol", false, vec![phase(0, Update, 5, Some(Running))]),
        ];
        // carol's node went offline: not a straggler, but offline since
        // it was last heard; bob is online.
        let peers = {
            let mut p = online(&["bob"]);
            p.insert("carol".into(), PeerInfo::unknown("carol"));
            p
        };
        let s = lane_summaries(&lanes, &peers, 20_000);
        assert!(s[0].failed && !s[1].failed);
        assert_eq!(s[0].offline, None, "this node is never offline");
        assert_eq!(s[1].offline, None);
        assert_eq!(s[2].offline, Some(10_000), "last heard");
        assert!(!s[2].straggler, "offline, not straggling");
        assert_eq!(s[2].latest.as_ref().unwrap().round, 0, "last known state");
        // A peer online at the directory but silent for long is offline too.
        let s = lane_summaries(
            &lanes,
            &online(&["bob", "carol"]),
            10_000 + STALE_AFTER_MS + 1,
        );
        assert_eq!(s[1].offline, Some(10_000));
    }

    #[test]
    fn bars_share_one_axis_and_a_running_phase_is_open() {
        use Phase::*;
        use RunStatus::*;
        let p = who(
            "bob",
            false,
            vec![
                phase(0, Update, 1000, Some(Succeeded)),
                phase(1, Test, 3000, Some(Running)),
            ],
        );
        let b = lane_bars(&p);
        assert_eq!((b[0].start, b[0].end(9000), b[0].live), (1000, 3000, false));
        assert_eq!((b[1].start, b[1].end(9000), b[1].live), (3000, 9000, true));
        assert_eq!(
            b[1].end(9500),
            9500,
            "an open bar reaches the time it is drawn at"
        );
        assert_eq!(b[1].end(2000), 3000, "and never ends before it starts");
        let done = who("carol", false, vec![phase(0, Update, 500, Some(Succeeded))]);
        let mut finished = (*done).clone();
        finished.lane.state = TrainingState::Finished;
        finished.lane.finished_at = Some(2000);
        assert_eq!(lanes_span(&[p.clone(), done], 9000), (0, 9000));
        let span = lanes_span(&[Rc::new(finished)], 9000);
        assert_eq!(span, (0, 2000), "a finished training ends when it did");
    }
}
