//! The collaboration's view of a training (issue 15): this node's progress
//! as a lane, shared with the peers that take part in the same training,
//! and theirs received. Wire format and guarantees in
//! [`roundtable_shared::progress`]; storage in [`crate::store::progress`].
//!
//! - **Local lane.** Every change to a training here is published on the
//!   node's event stream as [`Event::Training`]; this service follows the
//!   stream and, for each, reads the phases whose sequence number is past
//!   the last one it published and publishes them as
//!   [`Event::Participant`] (`local`), then wakes the pusher. (A lagging
//!   subscription re-reads every training.)
//! - **Pusher.** For each online Roundtable peer (one that publishes a
//!   key), at most one exchange at a time over its own secure link: our
//!   membership tags when our set of trainings changed since the peer last
//!   acknowledged it (or the peer came back online), and for each training
//!   the peer proved, the phases changed since the peer's last
//!   acknowledgement, at most [`MAX_LANES`] lanes and [`MAX_BODY`] bytes a
//!   request, more in the next. Pushed on change; on failure retried at the
//!   next tick ([`ProgressConfig::tick`]). Acknowledgements are kept in
//!   memory only: after a restart everything is sent again once, and the
//!   receiver keeps only what is newer.
//! - **Handler.** A `progress` request from `peer` (its authenticated
//!   name): its tags say which of our trainings it takes part in (only
//!   those are ever pushed to it); its lanes are stored if we know the
//!   training; the reply carries our tags when the request carried its.
//! - **Off.** With `--share-progress off` the node sends no tags and no
//!   lanes, answers tags with none and drops received lanes: it takes part
//!   in no exchange either way.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundtable_shared::api::Event;
use roundtable_shared::progress::{
    membership_tag, Lane, Participant, ProgressReply, ProgressRequest, MAX_LANES,
    MAX_PHASES_PER_LANE, MAX_TAGS, PROGRESS_KIND,
};
use roundtable_shared::rpc::{Status, MAX_BODY};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::node::chat::Chat;
use crate::node::check::{call, CallFailed};
use crate::node::link::Link;
use crate::notify::now_ms;
use crate::overlay::rpc::{Answer, Handlers};
use crate::store::progress::LaneRefused;
use crate::store::trainings::TrainingStore;
use crate::store::StoreError;

/// Settings of the progress service.
#[derive(Debug, Clone)]
pub struct ProgressConfig {
    /// `--share-progress`.
    pub share: bool,
    /// How often peers are looked at even when nothing woke the pusher
    /// (retries after a failure, peers that came online).
    pub tick: Duration,
    /// Deadline of one exchange (link and reply).
    pub call_timeout: Duration,
    /// A peer's link is kept this long after its last exchange, for the
    /// next change (a training changes every few seconds; a new link costs
    /// a Noise handshake). Under the peers' idle timeout for incoming
    /// connections (120 s), as the chat outbox's links are.
    pub link_idle: Duration,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            share: true,
            tick: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            link_idle: Duration::from_secs(60),
        }
    }
}

/// What this node knows of one peer's exchange with it (memory only).
#[derive(Debug, Default)]
struct PeerState {
    /// Our trainings the peer proved it takes part in.
    proven: BTreeSet<String>,
    /// The list of trainings whose tags the peer last acknowledged.
    tags_acked: Option<Vec<String>>,
    /// Per training, the sequence number through which it has our lane.
    acked: HashMap<String, u64>,
    /// An exchange is running.
    busy: bool,
    /// Something changed while it ran: go again.
    dirty: bool,
    /// Wakes the exchange that keeps its link open when `dirty` is set.
    wake: Arc<Notify>,
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    me: String,
    cfg: ProgressConfig,
    store: TrainingStore,
    events: Events,
    peers: Mutex<HashMap<String, PeerState>>,
    /// Per training, the sequence number through which this node's lane
    /// has been published as events.
    published: Mutex<HashMap<String, u64>>,
    wake: Notify,
    /// Lanes received for trainings this node does not know.
    unknown_lanes: AtomicU64,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

impl Progress {
    pub fn new(me: &str, cfg: ProgressConfig, store: TrainingStore, events: Events) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                me: me.to_owned(),
                cfg,
                store,
                events,
                peers: Mutex::default(),
                published: Mutex::default(),
                wake: Notify::new(),
                unknown_lanes: AtomicU64::new(0),
            }),
        }
    }

    /// Lanes peers sent for trainings this node does not know (dropped).
    /// A peer only sends a lane after this node proved the training, so
    /// this stays 0 unless a peer misbehaves.
    pub fn unknown_lanes(&self) -> u64 {
        self.inner.unknown_lanes.load(Ordering::Relaxed)
    }

    /// Whether this node shares its progress.
    pub fn sharing(&self) -> bool {
        self.inner.cfg.share
    }

    /// Everyone known in a training (this node first).
    pub async fn participants(&self, uuid: &str) -> Result<Vec<Participant>, StoreError> {
        let (uuid, me) = (uuid.to_owned(), self.inner.me.clone());
        self.inner
            .store
            .run(move |s| s.participants(&uuid, &me))
            .await
    }

    /// Every participant of every training, with its latest phase only.
    pub async fn summary(&self) -> Result<Vec<Participant>, StoreError> {
        let me = self.inner.me.clone();
        self.inner
            .store
            .run(move |s| s.participants_summary(&me))
            .await
    }

    fn peer<T>(&self, name: &str, f: impl FnOnce(&mut PeerState) -> T) -> T {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(peers.entry(name.to_owned()).or_default())
    }

    /// Registers the `progress` request handler.
    pub fn register(&self, handlers: &mut Handlers) {
        let this = self.clone();
        handlers
            .register(PROGRESS_KIND, move |peer, body, _cancel| {
                let this = this.clone();
                async move { this.handle(&peer, &body).await }
            })
            .expect("progress is a valid kind");
    }

    /// Our trainings, most recently updated first.
    async fn ours(&self) -> Result<Vec<String>, StoreError> {
        self.inner.store.run(|s| s.recent_trainings(MAX_TAGS)).await
    }

    /// The trainings among `ours` that `tags` (from `peer`) prove.
    fn proven_by(&self, peer: &str, ours: &[String], tags: &[String]) -> BTreeSet<String> {
        let tags: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
        ours.iter()
            .filter(|t| tags.contains(membership_tag(t, peer, &self.inner.me).as_str()))
            .cloned()
            .collect()
    }

    fn tags_for(&self, peer: &str, ours: &[String]) -> Vec<String> {
        ours.iter()
            .map(|t| membership_tag(t, &self.inner.me, peer))
            .collect()
    }

    async fn handle(&self, peer: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let req = ProgressRequest::parse(body).map_err(|e| e.to_string())?;
        let mut reply = ProgressReply { tags: None };
        if !self.sharing() {
            reply.tags = req.tags.map(|_| Vec::new());
            return Ok(serde_json::to_vec(&reply).unwrap_or_default());
        }
        if let Some(tags) = &req.tags {
            let ours = self.ours().await.map_err(|e| {
                tracing::error!(error = %e, "cannot list trainings");
                "this node cannot read its trainings now".to_owned()
            })?;
            let proven = self.proven_by(peer, &ours, tags);
            let grew = self.peer(peer, |st| {
                let grew = !proven.is_subset(&st.proven);
                st.proven = proven;
                // The reply gives the peer our tags.
                st.tags_acked = Some(ours.clone());
                grew
            });
            if grew {
                self.inner.wake.notify_one();
            }
            reply.tags = Some(self.tags_for(peer, &ours));
        }
        for lane in req.lanes {
            let (p, now) = (peer.to_owned(), now_ms());
            if !plausible_times(&lane, now) {
                tracing::debug!(%peer, training = %lane.training, "progress with times before 1970 or over a day ahead: dropped");
                continue;
            }
            let training = lane.training.clone();
            let applied = self
                .inner
                .store
                .run(move |s| s.apply_peer_lane(&p, &lane, now))
                .await;
            match applied {
                Ok(Ok(Some(participant))) => {
                    tracing::debug!(%peer, %training, "peer progress");
                    self.inner
                        .events
                        .publish(Event::Participant { participant });
                }
                Ok(Ok(None)) => {}
                Ok(Err(LaneRefused::UnknownTraining)) => {
                    self.inner.unknown_lanes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, %training, "progress for a training this node does not know: dropped");
                }
                Ok(Err(LaneRefused::TooManyPeers)) => {
                    tracing::warn!(%peer, %training, "training has its maximum of participants: lane dropped");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a peer's progress");
                    return Err("this node cannot store progress now".into());
                }
            }
        }
        Ok(serde_json::to_vec(&reply).unwrap_or_default())
    }

    /// Publishes this node's changes in `uuid` as a local participant event
    /// and wakes the pusher.
    async fn local_changed(&self, uuid: &str) {
        let since = self
            .inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uuid)
            .copied()
            .unwrap_or(0);
        let u = uuid.to_owned();
        let lane = match self.inner.store.run(move |s| s.local_lane(&u, since)).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read this node's lane");
                return;
            }
        };
        if lane.seq <= since {
            return;
        }
        self.inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid.to_owned(), lane.seq);
        let mut lane = lane;
        lane.phases.sort_by_key(|p| (p.round, p.phase));
        self.inner.events.publish(Event::Participant {
            participant: Participant {
                name: self.inner.me.clone(),
                local: true,
                updated_at: now_ms(),
                lane,
            },
        });
        self.inner.wake.notify_one();
    }

    /// Follows the node's events (see the module doc) until `shutdown`.
    pub async fn follow_events(self, shutdown: CancellationToken) {
        let mut rx = self.inner.events.subscribe();
        // Start from what the store has.
        self.resync().await;
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(Event::Training { training }) => self.local_changed(&training.uuid).await,
                Ok(Event::TrainingGone { uuid }) => {
                    self.inner
                        .published
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&uuid);
                    let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
                    for st in peers.values_mut() {
                        st.proven.remove(&uuid);
                        st.acked.remove(&uuid);
                    }
                }
                Ok(Event::Peer { peer }) => {
                    // Gone offline: when it is back, prove our trainings
                    // again (it may have restarted and forgotten them),
                    // which also reconciles whatever it missed.
                    if !peer.online {
                        self.peer(&peer.name, |st| st.tags_acked = None);
                    }
                    self.inner.wake.notify_one();
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.resync().await,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn resync(&self) {
        let all = self
            .inner
            .store
            .run(|s| s.recent_trainings(usize::MAX >> 1))
            .await;
        for uuid in all.unwrap_or_default() {
            self.local_changed(&uuid).await;
        }
    }

    /// Pushes to peers (see the module doc) until `shutdown`.
    pub async fn push(self, chat: Chat, tracker: TaskTracker, shutdown: CancellationToken) {
        if !self.sharing() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.cfg.tick) => {}
            }
            let online: Vec<String> = chat
                .peers()
                .list()
                .into_iter()
                .filter(|p| p.online && p.fingerprint.is_some())
                .map(|p| p.name)
                .collect();
            for peer in online {
                let start = self.peer(&peer, |st| {
                    if st.busy {
                        st.dirty = true;
                        st.wake.notify_one();
                        false
                    } else {
                        st.busy = true;
                        true
                    }
                });
                if start {
                    let (this, chat, s) = (self.clone(), chat.clone(), shutdown.clone());
                    tracker.spawn(async move {
                        tokio::select! {
                            _ = s.cancelled() => {}
                            _ = this.sync(&chat, &peer) => {}
                        }
                        this.peer(&peer, |st| st.busy = false);
                    });
                }
            }
        }
    }

    /// Exchanges with `peer` until it has everything (or an exchange
    /// fails), then keeps the link for the next change until
    /// [`ProgressConfig::link_idle`] after the last exchange.
    async fn sync(&self, chat: &Chat, peer: &str) {
        let mut link: Option<Link> = None;
        // When the link last carried an exchange: `Some` only while it is
        // open (it is then reused).
        let mut used: Option<Instant> = None;
        loop {
            self.peer(peer, |st| st.dirty = false);
            let Some((body, sent)) = self.next_request(peer).await else {
                if self.peer(peer, |st| st.dirty) {
                    continue;
                }
                // Kept only while links are to spare: never at chat's cost.
                let Some(until) = used
                    .filter(|_| chat.links_to_spare())
                    .map(|u| u + self.inner.cfg.link_idle)
                else {
                    return;
                };
                let wake = self.peer(peer, |st| st.wake.clone());
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep_until(until) => return,
                }
            };
            let deadline = Instant::now() + self.inner.cfg.call_timeout;
            if link.is_none() {
                match tokio::time::timeout_at(deadline, chat.open_link(peer)).await {
                    Ok(Ok(Some(l))) if l.secure() => link = Some(l),
                    Ok(Ok(Some(_))) => {
                        tracing::debug!(%peer, "classic peer: no progress exchange");
                        return;
                    }
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "progress: no link");
                        return;
                    }
                    Err(_) => return,
                }
            }
            let Some(l) = link.as_mut() else { return };
            let failed = match call(chat, l, peer, PROGRESS_KIND, body, deadline).await {
                Ok(Answer {
                    status: Status::Ok,
                    body,
                    ..
                }) => {
                    self.acknowledged(peer, sent, &body);
                    used = Some(Instant::now());
                    continue;
                }
                Ok(Answer { status, body, .. }) => {
                    tracing::debug!(%peer, status = status.as_str(), reason = %String::from_utf8_lossy(&body), "progress refused");
                    return;
                }
                Err(CallFailed::NotSent(e)) => e,
                Err(CallFailed::NoAnswer) => "no answer".to_owned(),
            };
            // A kept link the peer has closed meanwhile (it restarted, or
            // its idle timeout passed): once more on a new one.
            if used.is_some() {
                tracing::debug!(%peer, error = %failed, "progress: kept link gone; a new one");
                (link, used) = (None, None);
                continue;
            }
            tracing::debug!(%peer, error = %failed, "progress not sent");
            return;
        }
    }

    /// What to send `peer` next, and what it acknowledges once answered;
    /// `None` when it has everything.
    async fn next_request(&self, peer: &str) -> Option<(Vec<u8>, Sent)> {
        let ours = self.ours().await.ok()?;
        let (send_tags, wanted) = self.peer(peer, |st| {
            // A node in no training has nothing to prove to a peer it has
            // not told anything yet (so it opens no link for it).
            let send_tags = match &st.tags_acked {
                None => !ours.is_empty(),
                Some(acked) => acked != &ours,
            };
            let wanted: Vec<(String, u64)> = ours
                .iter()
                .filter(|t| st.proven.contains(*t))
                .map(|t| (t.clone(), st.acked.get(t).copied().unwrap_or(0)))
                .collect();
            (send_tags, wanted)
        });
        let mut lanes: Vec<(Lane, u64)> = Vec::new();
        for (t, since) in wanted {
            if lanes.len() == MAX_LANES {
                break;
            }
            let lane = match self.inner.store.run(move |s| s.local_lane(&t, since)).await {
                Ok(Some(l)) => l,
                _ => continue,
            };
            if lane.seq <= since {
                continue;
            }
            lanes.push(cut(lane, MAX_PHASES_PER_LANE));
        }
        if !send_tags && lanes.is_empty() {
            return None;
        }
        let tags = send_tags.then(|| self.tags_for(peer, &ours));
        loop {
            let req = ProgressRequest {
                tags: tags.clone(),
                lanes: lanes.iter().map(|(l, _)| l.clone()).collect(),
            };
            let body = serde_json::to_vec(&req).ok()?;
            if body.len() <= MAX_BODY {
                let sent = Sent {
                    tags: send_tags.then(|| ours.clone()),
                    lanes: lanes
                        .iter()
                        .map(|(l, a)| (l.training.clone(), *a))
                        .collect(),
                };
                return Some((body, sent));
            }
            // Too big: fewer lanes, then fewer phases.
            if lanes.len() > 1 {
                lanes.pop();
            } else if let Some((lane, _)) = lanes.pop() {
                let n = lane.phases.len();
                if n > 1 {
                    lanes.push(cut(lane, n / 2));
                }
                // One phase is never over the limit (its metrics are
                // bounded); if it were, it is dropped rather than looped on.
                if lanes.is_empty() && tags.is_none() {
                    return None;
                }
            } else {
                return None;
            }
        }
    }

    fn acknowledged(&self, peer: &str, sent: Sent, reply: &[u8]) {
        let reply = ProgressReply::parse(reply).ok();
        let grew = self.peer(peer, |st| {
            for (t, through) in sent.lanes {
                let a = st.acked.entry(t).or_default();
                *a = (*a).max(through);
            }
            let mut grew = false;
            if let Some(ours) = sent.tags {
                if let Some(tags) = reply.and_then(|r| r.tags) {
                    let proven = self.proven_by(peer, &ours, &tags);
                    grew = !proven.is_subset(&st.proven);
                    st.proven = proven;
                }
                st.tags_acked = Some(ours);
            }
            grew
        });
        if grew {
            self.peer(peer, |st| st.dirty = true);
        }
    }
}

/// What a request carried, acknowledged when it is answered `ok`.
#[derive(Debug)]
struct Sent {
    /// The trainings whose tags it carried.
    tags: Option<Vec<String>>,
    /// Per training, the sequence number through which it carried the lane.
    lanes: Vec<(String, u64)>,
}

/// Whether every time in `lane` is between 1970 and a day after `now`: a
/// peer's clock may be off, but a lane from the far future would squeeze
/// everyone else's into a sliver of the common time axis.
fn plausible_times(lane: &Lane, now: i64) -> bool {
    let horizon = now.saturating_add(24 * 3600 * 1000);
    let ok = |t: i64| (0..=horizon).contains(&t);
    ok(lane.started_at)
        && lane.finished_at.is_none_or(ok)
        && lane.phases.iter().all(|p| {
            ok(p.started_at)
                && p.run
                    .as_ref()
                    .is_none_or(|r| ok(r.started_at) && r.ended_at.is_none_or(ok))
        })
}

/// `lane` with at most `n` of its phases (the oldest changes first), and
/// the sequence number through which it is then complete.
fn cut(mut lane: Lane, n: usize) -> (Lane, u64) {
    lane.phases.sort_by_key(|p| p.seq);
    if lane.phases.len() <= n {
        let through = lane.seq;
        return (lane, through);
    }
    lane.phases.truncate(n);
    let through = lane.phases.last().map_or(0, |p| p.seq);
    (lane, through)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::progress::PhaseReport;
    use roundtable_shared::training::{Phase, TrainingState};

    #[test]
    fn times_far_ahead_or_before_1970_are_implausible() {
        let now = 1_764_000_000_000;
        let mut lane = Lane {
            training: "t".into(),
            state: TrainingState::InRound,
            current_round: Some(0),
            started_at: now - 1000,
            finished_at: None,
            seq: 1,
            phases: vec![PhaseReport {
                round: 0,
                phase: Phase::Update,
                started_at: now + 3600 * 1000,
                run: None,
                metrics: vec![],
                seq: 1,
            }],
        };
        assert!(plausible_times(&lane, now), "an hour ahead: a clock off");
        lane.phases[0].started_at = i64::MAX;
        assert!(!plausible_times(&lane, now));
        lane.phases[0].started_at = now;
        lane.started_at = -5;
        assert!(!plausible_times(&lane, now));
    }

    #[test]
    fn a_cut_lane_is_complete_through_its_last_phase() {
        let phase = |seq| PhaseReport {
            round: seq as u32,
            phase: Phase::Update,
            started_at: 0,
            run: None,
            metrics: vec![],
            seq,
        };
        let lane = Lane {
            training: "t".into(),
            state: TrainingState::InRound,
            current_round: Some(0),
            started_at: 0,
            finished_at: None,
            seq: 9,
            phases: vec![phase(7), phase(3), phase(5)],
        };
        let (cut2, through) = cut(lane.clone(), 2);
        assert_eq!(
            cut2.phases.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [3, 5]
        );
        assert_eq!(through, 5);
        let (all, through) = cut(lane, 10);
        assert_eq!(all.phases.len(), 3);
        assert_eq!(through, 9);
    }
}
