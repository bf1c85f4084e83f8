//! The training state machine: what one DLR notification does to one
//! training, as a pure function of what is known before it. No SQLite and
//! no clock here, so every rule can be read and table-tested on its own;
//! [`crate::store::trainings`] reads the [`Before`] from its tables, calls
//! [`transition`] and performs the [`Write`]s it returns, all in the
//! batch's transaction.
//!
//! The rules:
//!
//! - any notification for an unknown training creates it (state
//!   `started`): TRAINING_START and the first UPDATE_ROUND_START may arrive
//!   either way round;
//! - a round notification records its (training, round, phase) once; a
//!   duplicate (the DLR server retries) changes nothing;
//! - the training's state and current round follow the latest phase in DLR
//!   order ([`Phase::position`]), not the latest arrival, so a late
//!   notification never moves a training backwards;
//! - TRAINING_FINISHED and CLIENT_REMOVED are terminal: later phases are
//!   still recorded but change no state and start no run;
//! - a run is claimed in the same step that records its phase, before any
//!   process is started, so a (training, round, phase) runs at most once;
//! - limits: a training over [`ApplyOptions::max_phases_per_training`] gets
//!   no more phases (dropped); a new training or phase over the totals asks
//!   first for room ([`Write::MakeRoomForTraining`],
//!   [`Write::MakeRoomForPhase`]), which the store makes by evicting the
//!   least recently updated finished or stale training, and drops the
//!   notification only when nothing can be evicted. New trainings thus
//!   displace old junk instead of being locked out by it.
//!
//! The endpoint's own check, [`round_within_reach`], refuses a round far
//! beyond the training's highest known one before anything is queued.

use roundtable_shared::notify::{Kind, Notification};
use roundtable_shared::training::{Phase, TrainingState};

/// How far past a training's highest known round a notification may be by
/// default (see [`round_within_reach`]).
pub const DEFAULT_MAX_ROUND_JUMP: u32 = 5;

/// Whether a notification for `round` is plausible for a training whose
/// highest known round is `highest` (`None`: an unknown training, which
/// counts as 0): at most `max_jump` rounds past it.
///
/// The DLR server moves one round at a time (UPDATE(r) is followed by
/// TEST(r + 1) and UPDATE(r + 1), protocols.md §2), so a real sequence
/// never jumps; a forger inventing round 10⁹ is refused instead of
/// starting a run and pushing the training's state out of reach of the
/// real notifications. Earlier rounds (late or duplicate notifications)
/// are always within reach.
pub fn round_within_reach(highest: Option<u32>, round: u32, max_jump: u32) -> bool {
    round <= highest.unwrap_or(0).saturating_add(max_jump)
}

/// How [`transition`] treats what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Claim a run for each new round phase of a live training.
    pub claim_runs: bool,
    /// Trainings kept at most: a new one beyond this evicts an old one (or
    /// is dropped when none can go).
    pub max_trainings: u64,
    /// A new phase beyond this many in one training is dropped.
    pub max_phases_per_training: u64,
    /// Phases kept over all trainings at most: a new one beyond this evicts
    /// old trainings (or is dropped when none can go).
    pub max_phases_total: u64,
    /// A live training with no change for this long (ms) may be evicted to
    /// make room; finished and removed ones may be at once.
    pub stale_after_ms: i64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            claim_runs: false,
            max_trainings: 1_000,
            max_phases_per_training: 10_000,
            max_phases_total: 100_000,
            stale_after_ms: 24 * 3600 * 1000,
        }
    }
}

/// What the state machine knows of a stored training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub state: TrainingState,
    /// [`Phase::position`] of the latest phase; `None` before any phase.
    pub position: Option<u64>,
    pub start_seen: bool,
    pub phase_count: u64,
}

impl Row {
    /// A training just created by its first notification.
    pub const NEW: Row = Row {
        state: TrainingState::Started,
        position: None,
        start_seen: false,
        phase_count: 0,
    };
}

/// Everything [`transition`] reads besides the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    /// The training's row; `None` when the training is unknown.
    pub row: Option<Row>,
    /// For a round notification: its (training, round, phase) is already
    /// recorded.
    pub phase_known: bool,
    /// Trainings stored.
    pub trainings: u64,
    /// Phases stored, over all trainings.
    pub phases: u64,
}

/// One change to make, in order. The store performs them; "the training"
/// is the notification's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Evict an old training so that one more fits; if none can go, the
    /// notification is dropped and none of the writes after this happen.
    /// Room is always asked for before any other write.
    MakeRoomForTraining,
    /// Evict old trainings (never this one) until one more phase fits;
    /// dropped as above if that is impossible.
    MakeRoomForPhase,
    /// Create the training, state `started`, first seen now.
    CreateTraining,
    /// Note TRAINING_START and its model, unless a model is already known
    /// (TRAINING_FINISHED's wins).
    RecordStart { global_model_uuid: String },
    /// Record the phase (and count it).
    InsertPhase {
        round: u32,
        phase: Phase,
        model_id: String,
    },
    /// Move the training to this phase: it is the latest in DLR order.
    Advance {
        state: TrainingState,
        round: u32,
        position: u64,
    },
    /// Claim the phase's run (status `running`): start the command.
    ClaimRun {
        round: u32,
        phase: Phase,
        model_id: String,
    },
    /// End the training (`finished` or `removed`), now; the model replaces
    /// the known one when given.
    Finish {
        state: TrainingState,
        global_model_uuid: Option<String>,
    },
    /// The training changed now (eviction takes the least recently changed).
    Touch,
}

/// What one notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A duplicate or a straggler that changes nothing.
    Nothing,
    /// The training changed: publish its new snapshot.
    Changed,
    /// Over a limit: nothing written.
    Dropped,
}

/// The writes for one notification, and what it amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub writes: Vec<Write>,
    pub outcome: Outcome,
}

impl Step {
    const NOTHING: Step = Step {
        writes: Vec::new(),
        outcome: Outcome::Nothing,
    };
    const DROPPED: Step = Step {
        writes: Vec::new(),
        outcome: Outcome::Dropped,
    };
}

/// What `n` does to its training, given what is known `before` it.
pub fn transition(before: &Before, n: &Notification, opts: &ApplyOptions) -> Step {
    // Room is made before anything is written, so that a notification
    // dropped for want of room leaves no half of itself behind.
    let mut room = Vec::new();
    let mut writes = Vec::new();
    let created = before.row.is_none();
    let row = before.row.unwrap_or(Row::NEW);
    if created {
        if before.trainings >= opts.max_trainings {
            room.push(Write::MakeRoomForTraining);
        }
        writes.push(Write::CreateTraining);
    }
    let live = !row.state.is_terminal();
    let changed = match &n.kind {
        Kind::Start { global_model_uuid } => {
            if !row.start_seen {
                writes.push(Write::RecordStart {
                    global_model_uuid: global_model_uuid.clone(),
                });
            }
            !row.start_seen
        }
        Kind::Round {
            phase,
            round,
            global_model_uuid,
        } => {
            if before.phase_known {
                false
            } else if row.phase_count >= opts.max_phases_per_training {
                return Step::DROPPED;
            } else {
                if before.phases >= opts.max_phases_total {
                    room.push(Write::MakeRoomForPhase);
                }
                writes.push(Write::InsertPhase {
                    round: *round,
                    phase: *phase,
                    model_id: global_model_uuid.clone(),
                });
                let position = phase.position(*round);
                if live && row.position.is_none_or(|p| position > p) {
                    writes.push(Write::Advance {
                        state: TrainingState::of_phase(*phase),
                        round: *round,
                        position,
                    });
                }
                if live && opts.claim_runs {
                    writes.push(Write::ClaimRun {
                        round: *round,
                        phase: *phase,
                        model_id: global_model_uuid.clone(),
                    });
                }
                true
            }
        }
        Kind::Finished { global_model_uuid } => {
            if live {
                writes.push(Write::Finish {
                    state: TrainingState::Finished,
                    global_model_uuid: Some(global_model_uuid.clone()),
                });
            }
            live
        }
        Kind::ClientRemoved => {
            if live {
                writes.push(Write::Finish {
                    state: TrainingState::Removed,
                    global_model_uuid: None,
                });
            }
            live
        }
    };
    if !(changed || created) {
        return Step::NOTHING;
    }
    writes.push(Write::Touch);
    room.append(&mut writes);
    Step {
        writes: room,
        outcome: Outcome::Changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;
    use TrainingState::{Finished, InRound, Removed, Testing};

    const T: &str = "00000000-0000-4000-8000-000000000001";
    const M: &str = "00000000-0000-4000-8000-0000000000aa";

    fn row(state: TrainingState, latest: Option<(Phase, u32)>, start_seen: bool) -> Option<Row> {
        Some(Row {
            state,
            position: latest.map(|(p, r)| p.position(r)),
            start_seen,
            phase_count: 3,
        })
    }

    fn before(row: Option<Row>) -> Before {
        Before {
            row,
            phase_known: false,
            trainings: 1,
            phases: 3,
        }
    }

    fn claiming() -> ApplyOptions {
        ApplyOptions {
            claim_runs: true,
            ..ApplyOptions::default()
        }
    }

    fn insert(round: u32, phase: Phase) -> Write {
        Write::InsertPhase {
            round,
            phase,
            model_id: M.into(),
        }
    }

    fn advance(phase: Phase, round: u32) -> Write {
        Write::Advance {
            state: TrainingState::of_phase(phase),
            round,
            position: phase.position(round),
        }
    }

    fn claim(round: u32, phase: Phase) -> Write {
        Write::ClaimRun {
            round,
            phase,
            model_id: M.into(),
        }
    }

    fn changed(writes: Vec<Write>) -> Step {
        Step {
            writes,
            outcome: Outcome::Changed,
        }
    }

    #[test]
    fn the_table() {
        let start = Notification::start(T, M);
        let up = |r| Notification::round(T, Update, r, M);
        let test = |r| Notification::round(T, Test, r, M);
        let swag = |r| Notification::round(T, Swag, r, M);
        let fin = Notification::finished(T, M);
        let known = |b: Before| Before {
            phase_known: true,
            ..b
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Before, Notification, ApplyOptions, Step)> = vec![
            ("START creates the training", before(None), start.clone(), claiming(),
             changed(vec![Write::CreateTraining, Write::RecordStart { global_model_uuid: M.into() }, Write::Touch])),
            ("UPDATE before START creates it too, and claims", before(None), up(0), claiming(),
             changed(vec![Write::CreateTraining, insert(0, Update), advance(Update, 0), claim(0, Update), Write::Touch])),
            ("START after UPDATE only notes the start", before(row(InRound, Some((Update, 0)), false)), start.clone(), claiming(),
             changed(vec![Write::RecordStart { global_model_uuid: M.into() }, Write::Touch])),
            ("a repeated START is nothing", before(row(InRound, Some((Update, 0)), true)), start.clone(), claiming(),
             Step::NOTHING),
            ("a duplicate phase is nothing", known(before(row(InRound, Some((Update, 0)), true))), up(0), claiming(),
             Step::NOTHING),
            ("TEST(r+1) after UPDATE(r) advances", before(row(InRound, Some((Update, 0)), true)), test(1), claiming(),
             changed(vec![insert(1, Test), advance(Test, 1), claim(1, Test), Write::Touch])),
            ("a late UPDATE(0) after TEST(1) is recorded and run, not advanced", before(row(Testing, Some((Test, 1)), true)), up(0), claiming(),
             changed(vec![insert(0, Update), claim(0, Update), Write::Touch])),
            ("no claim when only monitoring", before(row(Testing, Some((Test, 1)), true)), up(1), ApplyOptions::default(),
             changed(vec![insert(1, Update), advance(Update, 1), Write::Touch])),
            ("SWAG(n) after TEST(n) advances", before(row(Testing, Some((Test, 3)), true)), swag(3), claiming(),
             changed(vec![insert(3, Swag), advance(Swag, 3), claim(3, Swag), Write::Touch])),
            ("TEST(n) after SWAG(n) is late", before(row(TrainingState::Swag, Some((Swag, 3)), true)), test(3), claiming(),
             changed(vec![insert(3, Test), claim(3, Test), Write::Touch])),
            ("FINISHED ends a live training", before(row(Testing, Some((Test, 3)), true)), fin.clone(), claiming(),
             changed(vec![Write::Finish { state: Finished, global_model_uuid: Some(M.into()) }, Write::Touch])),
            ("FINISHED twice is nothing", before(row(Finished, Some((Test, 3)), true)), fin.clone(), claiming(),
             Step::NOTHING),
            ("a phase after FINISHED is recorded, no state, no run", before(row(Finished, Some((Test, 3)), true)), up(3), claiming(),
             changed(vec![insert(3, Update), Write::Touch])),
            ("CLIENT_REMOVED ends it, model kept", before(row(InRound, Some((Update, 1)), true)), Notification::client_removed(T), claiming(),
             changed(vec![Write::Finish { state: Removed, global_model_uuid: None }, Write::Touch])),
            ("FINISHED after CLIENT_REMOVED is nothing", before(row(Removed, None, true)), fin.clone(), claiming(),
             Step::NOTHING),
            ("FINISHED for an unknown training creates it finished", before(None), fin.clone(), claiming(),
             changed(vec![Write::CreateTraining, Write::Finish { state: Finished, global_model_uuid: Some(M.into()) }, Write::Touch])),
        ];
        for (what, b, n, opts, want) in table {
            assert_eq!(transition(&b, &n, &opts), want, "{what}");
        }
    }

    #[test]
    fn limits_ask_for_room_or_drop() {
        let opts = ApplyOptions {
            max_trainings: 2,
            max_phases_per_training: 3,
            max_phases_total: 10,
            ..ApplyOptions::default()
        };
        let up = Notification::round(T, Update, 0, M);
        let full = Before {
            row: None,
            phase_known: false,
            trainings: 2,
            phases: 10,
        };
        assert_eq!(
            transition(&full, &up, &opts).writes,
            [
                Write::MakeRoomForTraining,
                Write::MakeRoomForPhase,
                Write::CreateTraining,
                insert(0, Update),
                advance(Update, 0),
                Write::Touch
            ]
        );
        // A training at its own phase limit drops new phases.
        let at_limit = Before {
            row: row(InRound, Some((Update, 0)), true),
            ..full
        };
        let test = Notification::round(T, Test, 1, M);
        assert_eq!(transition(&at_limit, &test, &opts), Step::DROPPED);
        // ... but a duplicate is still just nothing, and so is a START.
        let dup = Before {
            phase_known: true,
            ..at_limit
        };
        assert_eq!(transition(&dup, &test, &opts), Step::NOTHING);
        // A known training needs no room for a START.
        let started = Before {
            row: row(InRound, Some((Update, 0)), false),
            ..full
        };
        assert_eq!(
            transition(&started, &Notification::start(T, M), &opts).writes,
            [
                Write::RecordStart {
                    global_model_uuid: M.into()
                },
                Write::Touch
            ]
        );
    }

    #[test]
    fn rounds_within_reach() {
        // A new training: rounds 0..=jump.
        assert!(round_within_reach(None, 0, 5));
        assert!(round_within_reach(None, 5, 5));
        assert!(!round_within_reach(None, 6, 5));
        // The legit step: UPDATE(r) then TEST(r + 1), even with a jump of 1.
        assert!(round_within_reach(Some(7), 8, 1));
        assert!(!round_within_reach(Some(7), 9, 1));
        // Late and duplicate rounds are always fine.
        assert!(round_within_reach(Some(7), 0, 0));
        assert!(!round_within_reach(Some(7), u32::MAX, 5));
        assert!(round_within_reach(Some(u32::MAX - 1), u32::MAX, 5));
    }
}
