//! Training rounds as a node sees them: the state the dashboard shows for
//! each training this node takes part in. Built from DLR notifications
//! (see [`crate::notify`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a training stands, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingState {
    /// TRAINING_START (or nothing yet but the training's existence).
    Started,
    /// An update round (UPDATE_ROUND_START) is the latest phase.
    InRound,
    /// A model test round (MODEL_TEST_ROUND) is the latest phase.
    Testing,
    /// A SWAG round (SWAG_ROUND_START) is the latest phase.
    Swag,
    /// TRAINING_FINISHED arrived. Terminal.
    Finished,
    /// CLIENT_REMOVED arrived: this node no longer takes part. Terminal.
    Removed,
}

impl TrainingState {
    pub const ALL: [TrainingState; 6] = [
        TrainingState::Started,
        TrainingState::InRound,
        TrainingState::Testing,
        TrainingState::Swag,
        TrainingState::Finished,
        TrainingState::Removed,
    ];

    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TrainingState::Started => "started",
            TrainingState::InRound => "in_round",
            TrainingState::Testing => "testing",
            TrainingState::Swag => "swag",
            TrainingState::Finished => "finished",
            TrainingState::Removed => "removed",
        }
    }

    /// The inverse of [`TrainingState::as_str`].
    pub fn parse(s: &str) -> Option<TrainingState> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No later notification changes the state of a terminal training.
    pub fn is_terminal(self) -> bool {
        matches!(self, TrainingState::Finished | TrainingState::Removed)
    }

    /// The state a training is in while `phase` is its latest phase.
    pub fn of_phase(phase: Phase) -> TrainingState {
        match phase {
            Phase::Update => TrainingState::InRound,
            Phase::Test => TrainingState::Testing,
            Phase::Swag => TrainingState::Swag,
        }
    }
}

impl fmt::Display for TrainingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Update,
    Test,
    Swag,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Update, Phase::Test, Phase::Swag];

    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Update => "update",
            Phase::Test => "test",
            Phase::Swag => "swag",
        }
    }

    /// The inverse of [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The sub-command the reference client's training script takes for
    /// this phase: `train`, `test` or `swag`.
    pub fn command(self) -> &'static str {
        match self {
            Phase::Update => "train",
            Phase::Test => "test",
            Phase::Swag => "swag",
        }
    }

    /// Where `(round, self)` falls in a DLR training's sequence of phases,
    /// for telling a late notification from progress.
    ///
    /// The server numbers rounds from 0 and increments the round when it
    /// aggregates, so what follows UPDATE(r) carries r + 1:
    /// `UPDATE(0) TEST(1) UPDATE(1) TEST(2) … TEST(n)`, and with the SWAG
    /// method a `SWAG(n)` after the last round (protocols.md §2). Within one
    /// round number the order is therefore TEST, SWAG, UPDATE.
    pub fn position(self, round: u32) -> u64 {
        let within = match self {
            Phase::Test => 0,
            Phase::Swag => 1,
            Phase::Update => 2,
        };
        u64::from(round) * 3 + within
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a local training run (the `--train-cmd`) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Exited with status 0.
    Succeeded,
    /// Exited non-zero, was killed, could not be started, or was still
    /// running when the node stopped.
    Failed,
    /// Never started: it waited behind another run of the same training
    /// (one runs at a time per training) and newer phases of that training
    /// filled the short queue of waiting runs.
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Skipped,
    ];

    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    /// The inverse of [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One local run of the training command for a (training, round, phase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub status: RunStatus,
    /// Unix time in milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The process's exit code; `None` while running, or when it was
    /// killed by a signal or never started (the output tail says which).
    pub exit_code: Option<i32>,
    /// The last lines of its output (stdout and stderr interleaved).
    pub output_tail: Vec<String>,
    /// Metric lines it printed (or posted) that were malformed or over the
    /// limits, and so ignored (see [`crate::progress`]).
    #[serde(default)]
    pub metrics_ignored: u32,
}

/// One phase of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    /// When the notification arrived, Unix ms.
    pub started_at: i64,
    /// The `global_model_uuid` of the notification: the model to fetch.
    pub model_id: String,
    /// The local run, when the node has a training command.
    pub run: Option<Run>,
}

/// One round and its phases, in the order they started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub round: u32,
    pub phases: Vec<PhaseRecord>,
}

impl Round {
    /// This round's record of `phase`, if it started.
    pub fn phase(&self, phase: Phase) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// A training as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Training {
    pub uuid: String,
    /// The name a person gave it (`PUT /api/trainings/{uuid}/name`);
    /// `None`: the dashboard shows [`Training::short_id`] and its start
    /// time.
    #[serde(default)]
    pub name: Option<String>,
    pub state: TrainingState,
    /// The round of the latest phase (by DLR order, not arrival order).
    pub current_round: Option<u32>,
    /// Unix ms of the first notification seen for it.
    pub started_at: i64,
    /// Unix ms of TRAINING_FINISHED (or CLIENT_REMOVED).
    pub finished_at: Option<i64>,
    /// The model id named by TRAINING_START, replaced by TRAINING_FINISHED's.
    pub global_model_id: Option<String>,
    /// Rounds in increasing round number.
    pub rounds: Vec<Round>,
}

/// Longest training name, characters.
pub const MAX_TRAINING_NAME: usize = 80;

/// A training name as a person sets it: trimmed, 1 to
/// [`MAX_TRAINING_NAME`] characters, no control characters. `None`: not a
/// valid name (an empty one resets to the default).
pub fn clean_training_name(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s.chars().count() <= MAX_TRAINING_NAME && !s.chars().any(char::is_control))
        .then(|| s.to_owned())
}

impl Training {
    /// The first eight characters of the UUID, for a default name.
    pub fn short_id(&self) -> &str {
        self.uuid.get(..8).unwrap_or(&self.uuid)
    }

    /// Round `n`, if any of its phases started.
    pub fn round(&self, n: u32) -> Option<&Round> {
        self.rounds.iter().find(|r| r.round == n)
    }

    /// The highest round number any recorded phase has (late ones
    /// included), `None` before any phase.
    pub fn highest_round(&self) -> Option<u32> {
        self.rounds.iter().map(|r| r.round).max()
    }

    /// The record of `phase` in round `n`.
    pub fn phase(&self, n: u32, phase: Phase) -> Option<&PhaseRecord> {
        self.round(n)?.phase(phase)
    }

    /// All phase records, rounds in order.
    pub fn phases(&self) -> impl Iterator<Item = (u32, &PhaseRecord)> {
        self.rounds
            .iter()
            .flat_map(|r| r.phases.iter().map(move |p| (r.round, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_json() {
        for s in TrainingState::ALL {
            assert_eq!(TrainingState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::Value::from(p.as_str())
            );
        }
        for r in RunStatus::ALL {
            assert_eq!(RunStatus::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.as_str())
            );
        }
        assert_eq!(Phase::parse("Update"), None);
        assert_eq!(TrainingState::parse(""), None);
    }

    #[test]
    fn position_follows_the_dlr_sequence() {
        use Phase::*;
        let seq = [
            (0, Update),
            (1, Test),
            (1, Update),
            (2, Test),
            (2, Update),
            (3, Test),
            (3, Swag),
        ];
        for w in seq.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                a.1.position(a.0) < b.1.position(b.0),
                "{a:?} must come before {b:?}"
            );
        }
        assert!(Update.position(u32::MAX) > Test.position(u32::MAX));
    }

    #[test]
    fn lookups() {
        let t = Training {
            uuid: "t".into(),
            name: None,
            state: TrainingState::Testing,
            current_round: Some(1),
            started_at: 1,
            finished_at: None,
            global_model_id: None,
            rounds: vec![
                Round {
                    round: 0,
                    phases: vec![PhaseRecord {
                        phase: Phase::Update,
                        started_at: 2,
                        model_id: "m".into(),
                        run: None,
                    }],
                },
                Round {
                    round: 1,
                    phases: vec![PhaseRecord {
                        phase: Phase::Test,
                        started_at: 3,
                        model_id: "m".into(),
                        run: None,
                    }],
                },
            ],
        };
        assert_eq!(t.phase(1, Phase::Test).unwrap().started_at, 3);
        assert!(t.phase(1, Phase::Update).is_none());
        assert!(t.phase(7, Phase::Test).is_none());
        let all: Vec<_> = t.phases().map(|(r, p)| (r, p.phase)).collect();
        assert_eq!(all, vec![(0, Phase::Update), (1, Phase::Test)]);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["state"], "testing");
        assert_eq!(json["rounds"][1]["phases"][0]["phase"], "test");
        let back: Training = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }
}
