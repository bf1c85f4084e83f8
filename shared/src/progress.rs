//! A training as the whole collaboration sees it (issue 15): the metrics a
//! local run reports, each participant's progress (its "lane"), and the
//! `progress` request Roundtable nodes exchange to share it.
//!
//! # Metrics from a run
//!
//! The training command reports a metric by printing one line of the form
//!
//! ```text
//! roundtable-metric {"name": "loss", "value": 0.41}
//! ```
//!
//! ([`METRIC_PREFIX`] then a JSON object with exactly `name` and `value`),
//! or by POSTing the same object (or an array of up to
//! [`MAX_METRICS_PER_POST`] of them) to the URL the node passes in
//! `ROUNDTABLE_METRICS_URL`. No other output line is parsed. A name is 1 to
//! [`MAX_METRIC_NAME`] of `[A-Za-z0-9_.:/-]` starting with a letter or a
//! digit; a value is a finite number of magnitude at most
//! [`MAX_METRIC_ABS`]. The last value of a name in a (round, phase) is the
//! one kept. A run has at most [`MAX_METRIC_VALUES_PER_RUN`] values
//! accepted and at most [`MAX_METRICS_PER_PHASE`] distinct names; what is
//! malformed or beyond that is ignored and counted.
//!
//! # Sharing progress
//!
//! Two nodes share a training's progress only when both take part in it,
//! which each proves to the other without naming the training: for every
//! training it knows, a node sends the [`membership_tag`] keyed by the
//! training's UUID and bound to (sender, receiver). Only a node that knows
//! the UUID can compute or check it, and a tag is useless to anyone but
//! its receiver. A node then pushes [`Lane`]s only to peers whose tags
//! proved the training.
//!
//! Every change a node makes to its own progress gets the next number of a
//! per-node sequence; each [`PhaseReport`] and each [`Lane`] carries the
//! number of its last change. A receiver keeps a record only if its number
//! is higher than the one it has ([`Participant::merge`]), so updates are
//! idempotent, and a late or repeated one never moves a lane backwards.
//!
//! What is shared is listed here and nothing else: the training's state,
//! round and times, each phase's start, its run's status, times and exit
//! code, and its metrics. Never output lines, model ids or files.
//!
//! The request rides the overlay's `REQ`/`REP` (see [`crate::rpc`]) as kind
//! [`PROGRESS_KIND`], inside the secure channel only: a body is a JSON
//! [`ProgressRequest`], its `ok` reply a JSON [`ProgressReply`], both
//! checked by [`ProgressRequest::parse`] / [`ProgressReply::parse`].

use std::collections::BTreeMap;

use blake2::digest::Mac;
use serde::{Deserialize, Serialize};

use crate::training::{Phase, RunStatus, TrainingState};

/// What starts a metric line in a run's output.
pub const METRIC_PREFIX: &str = "roundtable-metric ";

/// The environment variable that carries a run's metrics URL.
pub const METRICS_URL_ENV: &str = "ROUNDTABLE_METRICS_URL";

/// Longest metric name, bytes.
pub const MAX_METRIC_NAME: usize = 64;

/// Largest magnitude of a metric value.
pub const MAX_METRIC_ABS: f64 = 1e15;

/// Distinct metric names kept per (round, phase).
pub const MAX_METRICS_PER_PHASE: usize = 32;

/// Values accepted from one run (lines and posts together).
pub const MAX_METRIC_VALUES_PER_RUN: u32 = 1000;

/// Metrics in one POST to the metrics URL.
pub const MAX_METRICS_PER_POST: usize = 100;

/// The request kind of [`ProgressRequest`].
pub const PROGRESS_KIND: &str = "progress";

/// Tags in one message: a node proves at most this many trainings (its
/// most recently updated ones).
pub const MAX_TAGS: usize = 512;

/// Lanes in one request.
pub const MAX_LANES: usize = 16;

/// Phase reports in one lane of one request (longer histories are sent in
/// several requests).
pub const MAX_PHASES_PER_LANE: usize = 128;

/// Characters of a [`membership_tag`]: 128 bits in hex.
pub const TAG_LEN: usize = 32;

/// One metric value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

/// Why a metric (or a progress message) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProgressError {
    #[error("not JSON of the documented form: {0}")]
    Json(String),
    #[error("metric name {0:?} is not 1 to {MAX_METRIC_NAME} of [A-Za-z0-9_.:/-] starting with a letter or digit")]
    BadName(String),
    #[error("metric {name:?} has value {value}, not a finite number of magnitude at most 1e15")]
    BadValue { name: String, value: f64 },
    #[error("more than {MAX_METRICS_PER_POST} metrics in one post")]
    TooManyMetrics,
    #[error("training {0:?} is not a canonical UUID")]
    BadTraining(String),
    #[error("{what}: {n} is more than the limit of {max}")]
    TooMany {
        what: &'static str,
        n: usize,
        max: usize,
    },
    #[error("tag {0:?} is not {TAG_LEN} lowercase hex digits")]
    BadTag(String),
    #[error("phase {round}/{phase} appears twice in one lane")]
    Duplicate { round: u32, phase: Phase },
    #[error("a lane's sequence number {lane} is below one of its phases' ({phase})")]
    SeqOrder { lane: u64, phase: u64 },
}

/// Whether `s` is a valid metric name.
pub fn valid_metric_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_METRIC_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-'))
}

impl Metric {
    /// Checks the name and the value.
    pub fn validate(&self) -> Result<(), ProgressError> {
        if !valid_metric_name(&self.name) {
            return Err(ProgressError::BadName(truncated(&self.name)));
        }
        if !self.value.is_finite() || self.value.abs() > MAX_METRIC_ABS {
            return Err(ProgressError::BadValue {
                name: self.name.clone(),
                value: self.value,
            });
        }
        Ok(())
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(MAX_METRIC_NAME + 8).collect()
}

/// What one output line of a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricLine {
    /// Not a metric line: ordinary output.
    Output,
    Metric(Metric),
    /// Starts with [`METRIC_PREFIX`] but is not a valid metric.
    Malformed(ProgressError),
}

/// Reads one output line (without its line ending).
pub fn parse_metric_line(line: &str) -> MetricLine {
    let Some(json) = line.strip_prefix(METRIC_PREFIX) else {
        return MetricLine::Output;
    };
    match serde_json::from_str::<Metric>(json.trim()) {
        Ok(m) => match m.validate() {
            Ok(()) => MetricLine::Metric(m),
            Err(e) => MetricLine::Malformed(e),
        },
        Err(e) => MetricLine::Malformed(ProgressError::Json(e.to_string())),
    }
}

/// Reads the body of a POST to the metrics URL: one metric object or an
/// array of them. All or nothing: one bad metric refuses the post.
pub fn parse_metric_post(body: &[u8]) -> Result<Vec<Metric>, ProgressError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Post {
        One(Metric),
        Many(Vec<Metric>),
    }
    let metrics = match serde_json::from_slice::<Post>(body) {
        Ok(Post::One(m)) => vec![m],
        Ok(Post::Many(v)) => v,
        Err(_) => {
            return Err(ProgressError::Json(
                "expected {\"name\": \"loss\", \"value\": 0.41} or an array of such objects".into(),
            ))
        }
    };
    if metrics.len() > MAX_METRICS_PER_POST {
        return Err(ProgressError::TooManyMetrics);
    }
    for m in &metrics {
        m.validate()?;
    }
    Ok(metrics)
}

/// A local run as shared: no output, no model id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    pub status: RunStatus,
    /// Unix ms.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i32>,
}

/// One phase of one round of one participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseReport {
    pub round: u32,
    pub phase: Phase,
    /// When the participant's node got the phase's notification, Unix ms.
    pub started_at: i64,
    pub run: Option<RunReport>,
    /// At most [`MAX_METRICS_PER_PHASE`], by name.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// The sender's sequence number of this record's last change.
    pub seq: u64,
}

impl PhaseReport {
    /// The value of metric `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Whether the participant is done with this phase: its run ended, or
    /// it runs no command (then a phase is done when the next one starts,
    /// which the lane shows).
    pub fn run_ended(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.status != RunStatus::Running)
    }
}

/// One participant's progress in one training, as its node shares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// Canonical UUID.
    pub training: String,
    pub state: TrainingState,
    pub current_round: Option<u32>,
    /// Unix ms of the first notification the participant saw.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The sender's sequence number of the lane's last change (at least
    /// that of every phase in it).
    pub seq: u64,
    /// In a request or an event: the phases that changed. From the API:
    /// all of them, in (round, phase) order.
    #[serde(default)]
    pub phases: Vec<PhaseReport>,
}

impl Lane {
    /// Checks a lane received from a peer: a canonical training UUID,
    /// bounded and unique phases, valid metrics, ordered sequence numbers.
    pub fn validate(&self) -> Result<(), ProgressError> {
        if crate::notify::canonical_uuid(&self.training).as_deref() != Some(&self.training) {
            return Err(ProgressError::BadTraining(truncated(&self.training)));
        }
        bounded("phases in a lane", self.phases.len(), MAX_PHASES_PER_LANE)?;
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.phases {
            if !seen.insert((p.round, p.phase)) {
                return Err(ProgressError::Duplicate {
                    round: p.round,
                    phase: p.phase,
                });
            }
            if p.seq > self.seq {
                return Err(ProgressError::SeqOrder {
                    lane: self.seq,
                    phase: p.seq,
                });
            }
            bounded("metrics in a phase", p.metrics.len(), MAX_METRICS_PER_PHASE)?;
            for m in &p.metrics {
                m.validate()?;
            }
        }
        Ok(())
    }

    /// The latest phase by DLR order ([`Phase::position`]).
    pub fn latest(&self) -> Option<&PhaseReport> {
        self.phases.iter().max_by_key(|p| p.phase.position(p.round))
    }
}

fn bounded(what: &'static str, n: usize, max: usize) -> Result<(), ProgressError> {
    if n > max {
        return Err(ProgressError::TooMany { what, n, max });
    }
    Ok(())
}

/// A participant of a training as this node knows it: this node itself
/// (`local`) or a peer that shared its progress.
///
/// In JSON the lane's fields sit beside `name`, `local` and `updated_at`
/// in one object. That is written out field by field ([`ParticipantJson`])
/// rather than with `#[serde(flatten)]`: serde decodes a flattened struct
/// by first reading the whole object into a generic value tree and then
/// decoding the tree, twice the work and an allocation per value, on the
/// dashboard's hottest decode (a training's participants, every phase of
/// every round). Measured natively on 10 participants × 200 phases × 2
/// metrics (`cargo test -p roundtable-shared --release
/// participants_decode_speed -- --ignored --nocapture`): see the README's
/// issue 15 section.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// The user name (the peer's authenticated name).
    pub name: String,
    pub local: bool,
    /// When this node last heard from it (for a peer) or last changed (for
    /// itself), Unix ms.
    pub updated_at: i64,
    pub lane: Lane,
}

/// [`Participant`]'s JSON object, flat. Fields it does not know are
/// ignored, as they were when the lane was flattened.
#[derive(Deserialize)]
struct ParticipantJson {
    name: String,
    local: bool,
    updated_at: i64,
    training: String,
    state: TrainingState,
    current_round: Option<u32>,
    started_at: i64,
    finished_at: Option<i64>,
    seq: u64,
    #[serde(default)]
    phases: Vec<PhaseReport>,
}

/// [`ParticipantJson`], borrowed, for writing.
#[derive(Serialize)]
struct ParticipantJsonRef<'a> {
    name: &'a str,
    local: bool,
    updated_at: i64,
    training: &'a str,
    state: TrainingState,
    current_round: Option<u32>,
    started_at: i64,
    finished_at: Option<i64>,
    seq: u64,
    phases: &'a [PhaseReport],
}

impl Serialize for Participant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = &self.lane;
        ParticipantJsonRef {
            name: &self.name,
            local: self.local,
            updated_at: self.updated_at,
            training: &l.training,
            state: l.state,
            current_round: l.current_round,
            started_at: l.started_at,
            finished_at: l.finished_at,
            seq: l.seq,
            phases: &l.phases,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Participant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = ParticipantJson::deserialize(d)?;
        Ok(Participant {
            name: j.name,
            local: j.local,
            updated_at: j.updated_at,
            lane: Lane {
                training: j.training,
                state: j.state,
                current_round: j.current_round,
                started_at: j.started_at,
                finished_at: j.finished_at,
                seq: j.seq,
                phases: j.phases,
            },
        })
    }
}

impl Participant {
    /// Applies `update` (the same participant and training): each phase
    /// and the lane's own fields are replaced only by a record with a
    /// higher sequence number, so applying an update twice, or an older
    /// one after a newer one, changes nothing. Returns whether anything
    /// changed. Phases stay in (round, phase) order.
    pub fn merge(&mut self, update: &Participant) -> bool {
        let mut changed = false;
        if update.lane.seq > self.lane.seq {
            self.lane.state = update.lane.state;
            self.lane.current_round = update.lane.current_round;
            self.lane.started_at = update.lane.started_at;
            self.lane.finished_at = update.lane.finished_at;
            self.lane.seq = update.lane.seq;
            changed = true;
        }
        if update.updated_at > self.updated_at {
            self.updated_at = update.updated_at;
            changed = true;
        }
        let key = |p: &PhaseReport| (p.round, p.phase);
        let phases = &mut self.lane.phases;
        // Kept in (round, phase) order without repeats; a list as received
        // is put in that order once (the last of a repeated key wins).
        if !phases.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
            let by_key: BTreeMap<(u32, Phase), PhaseReport> = std::mem::take(phases)
                .into_iter()
                .map(|p| (key(&p), p))
                .collect();
            *phases = by_key.into_values().collect();
        }
        // Each update found by binary search: an event of one phase into a
        // lane of hundreds costs a search, not a rebuild of the lane.
        for p in &update.lane.phases {
            match phases.binary_search_by_key(&key(p), key) {
                Ok(i) if phases[i].seq >= p.seq => {}
                Ok(i) => {
                    phases[i] = p.clone();
                    changed = true;
                }
                Err(i) => {
                    phases.insert(i, p.clone());
                    changed = true;
                }
            }
        }
        changed
    }
}

/// How a training's participants stand in its current round: the highest
/// round any of them is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundStatus {
    /// Participants known.
    pub known: usize,
    /// The highest round of any participant.
    pub round: Option<u32>,
    /// Participants done with that round: past it, finished, or their run
    /// of its update phase ended.
    pub done: usize,
}

/// [`RoundStatus`] of `participants` (all of one training).
pub fn round_status<'a>(participants: impl IntoIterator<Item = &'a Participant>) -> RoundStatus {
    let all: Vec<&Participant> = participants.into_iter().collect();
    let round = all.iter().filter_map(|p| p.lane.current_round).max();
    let done = all
        .iter()
        .filter(|p| {
            if p.lane.state.is_terminal() {
                return true;
            }
            let Some(r) = round else { return false };
            let Some(latest) = p.lane.latest() else {
                return false;
            };
            latest.round == r && latest.phase == Phase::Update && latest.run_ended()
                || latest.round > r
        })
        .count();
    RoundStatus {
        known: all.len(),
        round,
        done,
    }
}

/// The body of a `progress` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// The trainings the sender takes part in, as [`membership_tag`]s for
    /// the receiver; `None` when unchanged since the receiver last
    /// acknowledged them. A receiver answers a request with tags with its
    /// own.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Progress in trainings the receiver proved it takes part in.
    #[serde(default)]
    pub lanes: Vec<Lane>,
}

/// The body of a `progress` request's `ok` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReply {
    /// The replier's tags, when the request carried tags (`Some(vec![])`
    /// when it shares nothing).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

fn check_tags(tags: &Option<Vec<String>>) -> Result<(), ProgressError> {
    if let Some(tags) = tags {
        bounded("tags", tags.len(), MAX_TAGS)?;
        for t in tags {
            if t.len() != TAG_LEN || !t.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(ProgressError::BadTag(t.chars().take(40).collect()));
            }
        }
    }
    Ok(())
}

impl ProgressRequest {
    /// Parses and checks a request body from a peer.
    pub fn parse(body: &[u8]) -> Result<ProgressRequest, ProgressError> {
        let req: ProgressRequest =
            serde_json::from_slice(body).map_err(|e| ProgressError::Json(e.to_string()))?;
        check_tags(&req.tags)?;
        bounded("lanes", req.lanes.len(), MAX_LANES)?;
        for l in &req.lanes {
            l.validate()?;
        }
        Ok(req)
    }
}

impl ProgressReply {
    /// Parses and checks a reply body from a peer.
    pub fn parse(body: &[u8]) -> Result<ProgressReply, ProgressError> {
        let rep: ProgressReply =
            serde_json::from_slice(body).map_err(|e| ProgressError::Json(e.to_string()))?;
        check_tags(&rep.tags)?;
        Ok(rep)
    }
}

/// The tag by which `from` proves to `to` that it takes part in training
/// `uuid` (canonical form): BLAKE2s-MAC keyed by the UUID's 16 bytes over
/// a context string and both names, truncated to 128 bits, in hex.
/// Computing it needs the UUID; it names neither the training nor any
/// other pair's tag.
pub fn membership_tag(uuid: &str, from: &str, to: &str) -> String {
    let mut key = [0u8; 16];
    let hex: Vec<u8> = uuid.bytes().filter(|c| *c != b'-').collect();
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        let s = std::str::from_utf8(pair).unwrap_or("00");
        key[i] = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    // A 16-byte key is within BLAKE2s's 32-byte limit.
    let mut mac = blake2::Blake2sMac256::new_from_slice(&key).expect("16-byte key");
    mac.update(b"roundtable training membership v1\0");
    mac.update(&(from.len() as u64).to_be_bytes());
    mac.update(from.as_bytes());
    mac.update(&(to.len() as u64).to_be_bytes());
    mac.update(to.as_bytes());
    let out = mac.finalize().into_bytes();
    let mut s = String::with_capacity(TAG_LEN);
    for b in &out[..TAG_LEN / 2] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Decodes `data` as a progress request, a reply, a metric line and a
/// metric post (the fuzz target's body, also run by the proptests):
/// whatever parses must re-encode and parse back to the same value.
pub fn decode_and_parse(data: &[u8]) {
    if let Ok(req) = ProgressRequest::parse(data) {
        let again = serde_json::to_vec(&req).expect("serializes");
        let back = ProgressRequest::parse(&again).expect("re-parses");
        assert_eq!(back, req);
    }
    if let Ok(rep) = ProgressReply::parse(data) {
        let again = serde_json::to_vec(&rep).expect("serializes");
        assert_eq!(ProgressReply::parse(&again).expect("re-parses"), rep);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let MetricLine::Metric(m) = parse_metric_line(text) {
            assert!(m.value.is_finite() && valid_metric_name(&m.name));
        }
    }
    if let Ok(ms) = parse_metric_post(data) {
        assert!(ms.len() <= MAX_METRICS_PER_POST);
        assert!(ms.iter().all(|m| m.validate().is_ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

    fn phase(round: u32, phase: Phase, seq: u64) -> PhaseReport {
        PhaseReport {
            round,
            phase,
            started_at: 1000 + u64::from(round) as i64,
            run: None,
            metrics: vec![],
            seq,
        }
    }

    fn participant(seq: u64, phases: Vec<PhaseReport>) -> Participant {
        Participant {
            name: "bob".into(),
            local: false,
            updated_at: 0,
            lane: Lane {
                training: T.into(),
                state: TrainingState::InRound,
                current_round: Some(1),
                started_at: 1,
                finished_at: None,
                seq,
                phases,
            },
        }
    }

    #[test]
    fn metric_lines() {
        assert_eq!(
            parse_metric_line(r#"roundtable-metric {"name": "loss", "value": 0.41}"#),
            MetricLine::Metric(Metric {
                name: "loss".into(),
                value: 0.41
            })
        );
        assert_eq!(parse_metric_line("epoch 1/4 loss 0.41"), MetricLine::Output);
        // The prefix alone does not make a metric; a loose mention is output.
        assert_eq!(
            parse_metric_line(r#"note: roundtable-metric {"name": "x", "value": 1}"#),
            MetricLine::Output
        );
        for bad in [
            "roundtable-metric ",
            "roundtable-metric {\"name\": \"loss\"}",
            "roundtable-metric {\"name\": \"loss\", \"value\": \"0.4\"}",
            "roundtable-metric {\"name\": \"loss\", \"value\": 0.4, \"extra\": 1}",
            "roundtable-metric {\"name\": \"\", \"value\": 0.4}",
            "roundtable-metric {\"name\": \"a b\", \"value\": 0.4}",
            "roundtable-metric {\"name\": \"loss\", \"value\": 1e300}",
            "roundtable-metric {\"name\": \"loss\", \"value\": 1e999}",
            "roundtable-metric {\"name\": \"loss\", \"value\": -2e15}",
            "roundtable-metric [1, 2]",
        ] {
            assert!(
                matches!(parse_metric_line(bad), MetricLine::Malformed(_)),
                "{bad:?} must be malformed"
            );
        }
        let long = format!(
            "roundtable-metric {{\"name\": \"{}\", \"value\": 1}}",
            "a".repeat(65)
        );
        assert!(matches!(parse_metric_line(&long), MetricLine::Malformed(_)));
        assert!(matches!(
            parse_metric_line("roundtable-metric {\"name\": \"val/acc:top-1\", \"value\": -3}"),
            MetricLine::Metric(_)
        ));
    }

    #[test]
    fn metric_posts() {
        assert_eq!(
            parse_metric_post(br#"{"name": "acc", "value": 0.5}"#).unwrap(),
            vec![Metric {
                name: "acc".into(),
                value: 0.5
            }]
        );
        assert_eq!(
            parse_metric_post(br#"[{"name": "a", "value": 1}, {"name": "b", "value": 2}]"#)
                .unwrap()
                .len(),
            2
        );
        assert!(
            parse_metric_post(br#"[{"name": "a", "value": 1}, {"name": "", "value": 2}]"#).is_err()
        );
        assert!(parse_metric_post(b"loss=1").is_err());
        let many: Vec<Metric> = (0..101)
            .map(|i| Metric {
                name: format!("m{i}"),
                value: 1.0,
            })
            .collect();
        assert_eq!(
            parse_metric_post(&serde_json::to_vec(&many).unwrap()),
            Err(ProgressError::TooManyMetrics)
        );
    }

    #[test]
    fn merge_orders_a_lane_as_received_and_the_last_repeat_wins() {
        let mut have = participant(
            1,
            vec![
                phase(2, Phase::Test, 4),
                phase(0, Phase::Update, 1),
                phase(2, Phase::Test, 3),
            ],
        );
        let update = participant(1, vec![phase(1, Phase::Update, 2)]);
        assert!(have.merge(&update));
        let got: Vec<_> = have
            .lane
            .phases
            .iter()
            .map(|p| (p.round, p.phase, p.seq))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Phase::Update, 1),
                (1, Phase::Update, 2),
                (2, Phase::Test, 3)
            ]
        );
    }

    #[test]
    fn merge_never_goes_backwards() {
        let mut have = participant(
            5,
            vec![phase(0, Phase::Update, 3), phase(1, Phase::Test, 5)],
        );
        // An older update of the lane and of a phase: nothing changes.
        let mut old = participant(4, vec![phase(0, Phase::Update, 2)]);
        old.lane.state = TrainingState::Started;
        assert!(!have.merge(&old));
        assert_eq!(have.lane.state, TrainingState::InRound);
        assert_eq!(have.lane.phases.len(), 2);
        // The same update twice: the second changes nothing.
        let mut newer = participant(7, vec![phase(1, Phase::Update, 7)]);
        newer.lane.current_round = Some(1);
        newer.lane.phases[0].metrics.push(Metric {
            name: "loss".into(),
            value: 0.3,
        });
        assert!(have.merge(&newer));
        assert!(!have.merge(&newer));
        assert_eq!(have.lane.seq, 7);
        let keys: Vec<_> = have
            .lane
            .phases
            .iter()
            .map(|p| (p.round, p.phase))
            .collect();
        assert_eq!(
            keys,
            vec![(0, Phase::Update), (1, Phase::Update), (1, Phase::Test)]
        );
        assert_eq!(have.lane.latest().unwrap().metric("loss"), Some(0.3));
    }

    #[test]
    fn round_status_counts_who_is_done() {
        let ended = |round, status| {
            let mut p = phase(round, Phase::Update, 1);
            p.run = Some(RunReport {
                status,
                started_at: 1,
                ended_at: (status != RunStatus::Running).then_some(2),
                exit_code: None,
            });
            p
        };
        let mut a = participant(1, vec![ended(2, RunStatus::Succeeded)]);
        a.lane.current_round = Some(2);
        let mut b = participant(1, vec![ended(2, RunStatus::Running)]);
        b.lane.current_round = Some(2);
        let mut c = participant(1, vec![ended(1, RunStatus::Succeeded)]);
        c.lane.current_round = Some(1);
        let s = round_status([&a, &b, &c]);
        assert_eq!(
            s,
            RoundStatus {
                known: 3,
                round: Some(2),
                done: 1
            }
        );
        assert_eq!(round_status([]).known, 0);
    }

    #[test]
    fn tags_prove_membership_to_one_receiver() {
        let t = membership_tag(T, "alice", "bob");
        assert_eq!(t.len(), TAG_LEN);
        assert_eq!(t, membership_tag(T, "alice", "bob"));
        assert_ne!(t, membership_tag(T, "bob", "alice"));
        assert_ne!(t, membership_tag(T, "alice", "carol"));
        assert_ne!(
            t,
            membership_tag("0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5c", "alice", "bob")
        );
        // Names are length-prefixed: no two pairs share an encoding.
        assert_ne!(membership_tag(T, "ab", "c"), membership_tag(T, "a", "bc"));
    }

    #[test]
    fn requests_are_checked() {
        let lane = participant(3, vec![phase(0, Phase::Update, 3)]).lane;
        let ok = ProgressRequest {
            tags: Some(vec![membership_tag(T, "a", "b")]),
            lanes: vec![lane.clone()],
        };
        let body = serde_json::to_vec(&ok).unwrap();
        assert_eq!(ProgressRequest::parse(&body).unwrap(), ok);

        let mut bad = ok.clone();
        bad.lanes[0].training = T.to_uppercase();
        assert!(matches!(
            ProgressRequest::parse(&serde_json::to_vec(&bad).unwrap()),
            Err(ProgressError::BadTraining(_))
        ));
        let mut bad = ok.clone();
        bad.lanes[0].phases.push(phase(0, Phase::Update, 1));
        assert!(matches!(
            ProgressRequest::parse(&serde_json::to_vec(&bad).unwrap()),
            Err(ProgressError::Duplicate { .. })
        ));
        let mut bad = ok.clone();
        bad.lanes[0].phases[0].seq = 9;
        assert!(matches!(
            ProgressRequest::parse(&serde_json::to_vec(&bad).unwrap()),
            Err(ProgressError::SeqOrder { .. })
        ));
        let mut bad = ok.clone();
        bad.tags = Some(vec!["XYZ".into()]);
        assert!(matches!(
            ProgressRequest::parse(&serde_json::to_vec(&bad).unwrap()),
            Err(ProgressError::BadTag(_))
        ));
        let mut bad = ok.clone();
        bad.lanes = vec![lane; MAX_LANES + 1];
        assert!(matches!(
            ProgressRequest::parse(&serde_json::to_vec(&bad).unwrap()),
            Err(ProgressError::TooMany { .. })
        ));
        // Output lines or model ids have no field to travel in.
        let with_output = br#"{"lanes": [{"training": "0b8a3f4e-5c6d-4e7f-8a9b-0c1d2e3f4a5b", "state": "in_round", "current_round": 0, "started_at": 1, "finished_at": null, "seq": 1, "phases": [{"round": 0, "phase": "update", "started_at": 1, "run": null, "seq": 1, "model_id": "m"}]}]}"#;
        assert!(ProgressRequest::parse(with_output).is_err());
    }

    #[test]
    fn participant_json_is_flat() {
        let p = participant(1, vec![]);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["name"], "bob");
        assert_eq!(json["training"], T);
        assert_eq!(json["state"], "in_round");
        let back: Participant = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }

    /// The participant as it was declared before its JSON was written out
    /// field by field: the wire form must not have changed.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FlattenedParticipant {
        name: String,
        local: bool,
        updated_at: i64,
        #[serde(flatten)]
        lane: Lane,
    }

    impl From<Participant> for FlattenedParticipant {
        fn from(p: Participant) -> Self {
            FlattenedParticipant {
                name: p.name,
                local: p.local,
                updated_at: p.updated_at,
                lane: p.lane,
            }
        }
    }

    /// `n` participants with `rounds` rounds of an update and a test phase,
    /// each with a run and two metrics.
    fn many_participants(n: usize, rounds: u32) -> Vec<Participant> {
        (0..n)
            .map(|i| {
                let phases = (0..rounds)
                    .flat_map(|r| [Phase::Update, Phase::Test].map(|ph| (r, ph)))
                    .enumerate()
                    .map(|(k, (round, kind))| {
                        let names = match kind {
                            Phase::Test => ("test_loss", "test_accuracy"),
                            _ => ("loss", "accuracy"),
                        };
                        PhaseReport {
                            run: Some(RunReport {
                                status: RunStatus::Succeeded,
                                started_at: 1_765_000_000_000 + k as i64 * 1000,
                                ended_at: Some(1_765_000_000_500 + k as i64 * 1000),
                                exit_code: Some(0),
                            }),
                            metrics: vec![
                                Metric {
                                    name: names.0.into(),
                                    value: 1.0 / (1.0 + f64::from(round)) + i as f64 * 0.01,
                                },
                                Metric {
                                    name: names.1.into(),
                                    value: 0.5 + f64::from(round) / 250.0,
                                },
                            ],
                            ..phase(round, kind, k as u64 + 1)
                        }
                    })
                    .collect();
                Participant {
                    name: format!("participant-{i}"),
                    local: i == 0,
                    updated_at: 1_765_000_000_000 + i as i64,
                    ..participant(rounds as u64 * 2, phases)
                }
            })
            .collect()
    }

    #[test]
    fn participant_json_is_what_the_flattened_lane_wrote() {
        let mut list = many_participants(3, 4);
        list[1].lane.current_round = None;
        list[1].lane.finished_at = Some(9);
        list[2].lane.phases.clear();
        let ours = serde_json::to_string(&list).unwrap();
        let flat: Vec<FlattenedParticipant> = list.iter().cloned().map(Into::into).collect();
        let theirs = serde_json::to_string(&flat).unwrap();
        assert_eq!(ours, theirs);
        let back: Vec<Participant> = serde_json::from_str(&theirs).unwrap();
        assert_eq!(back, list);
        // As before: a missing `phases` is none, an unknown field is
        // ignored, a missing lane field is an error.
        let json = r#"{"name": "bob", "local": false, "updated_at": 0, "training": "t", "state": "finished", "current_round": null, "started_at": 1, "finished_at": 2, "seq": 3, "later": [1]}"#;
        let p: Participant = serde_json::from_str(json).unwrap();
        assert!(p.lane.phases.is_empty());
        assert_eq!(p.lane.seq, 3);
        let missing = json.replace(r#""seq": 3, "#, "");
        assert!(serde_json::from_str::<Participant>(&missing).is_err());
        assert!(serde_json::from_str::<FlattenedParticipant>(&missing).is_err());
    }

    /// Prints how long decoding a training's participants takes, written
    /// out field by field against the flattened lane. A figure, not a check:
    /// `cargo test -p roundtable-shared --release participants_decode_speed
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints a speed figure"]
    fn participants_decode_speed() {
        let json = serde_json::to_string(&many_participants(10, 100)).unwrap();
        let time = |f: &dyn Fn()| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            best
        };
        let ours = time(&|| {
            std::hint::black_box(serde_json::from_str::<Vec<Participant>>(&json).unwrap());
        });
        let flat = time(&|| {
            std::hint::black_box(serde_json::from_str::<Vec<FlattenedParticipant>>(&json).unwrap());
        });
        println!(
            "{} KiB of participants: field by field {ours:.2} ms, flattened {flat:.2} ms (best of 20)",
            json.len() / 1024
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_and_parse(&data);
        }

        #[test]
        fn metric_lines_never_panic(s in "roundtable-metric \\{\"name\": \"[a-z]{0,70}\", \"value\": [-+0-9.e]{0,30}\\}") {
            if let MetricLine::Metric(m) = parse_metric_line(&s) {
                prop_assert!(m.validate().is_ok());
            }
        }
    }
}
