//! Training rounds as a node sees them: the state the dashboard shows for
//! each training this node takes part in. Built from DLR notifications.

use serde::{Deserialize, Serialize};

/// Where a training stands, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingState {
    Started,
    InRound,
    Testing,
    Swag,
    Finished,
}

/// A phase of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Update,
    Test,
    Swag,
}

/// How a local training run (the `--train-cmd`) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// One local run of the training command for a (training, round, phase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub status: RunStatus,
    /// Unix time in milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i32>,
    /// The last lines of its output (stdout and stderr interleaved).
    pub output_tail: Vec<String>,
}

/// One phase of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    /// When the notification arrived, Unix ms.
    pub started_at: i64,
    pub model_id: String,
    pub run: Option<Run>,
}

/// One round and its phases, in the order they started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub round: u32,
    pub phases: Vec<PhaseRecord>,
}

/// A training as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Training {
    pub uuid: String,
    pub state: TrainingState,
    pub current_round: Option<u32>,
    /// Unix ms of the first notification seen for it.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The model id named by TRAINING_START / TRAINING_FINISHED.
    pub global_model_id: Option<String>,
    pub rounds: Vec<Round>,
}
