//! Links to peers through the directory's relay (issue 13): for a peer we
//! cannot reach directly (it runs with `--chat none`, or its address does
//! not answer), the same Noise channel runs over the directory, which
//! forwards the `HELLO` and `SEC` frames between our two sessions and can
//! neither read, alter nor replay them (`directory::relay` on its side).
//!
//! # One session of its own
//!
//! The node keeps a second directory session for the relay, apart from
//! the one that binds and queries (`directory_client.rs`): log in, `RELAY`,
//! then only relayed frames and `RELAYQUERY` (every query interval, which
//! also keeps the session alive). Relayed frames arrive at any moment, so
//! this session has one reader that dispatches everything it receives; the
//! other session's request/reply code stays as simple as the protocol.
//!
//! # One channel per pair
//!
//! Over the relay there is no connection to tell two channels apart, so a
//! pair of nodes has one channel, used both ways: our delivery worker
//! sends `MSG` over it and gets `MSGACK` back ([`RelayLink`]), and the
//! peer's worker does the same the other way (its frames go to chat's
//! handler through [`Relay::inbound`], the replies are sealed back here).
//! When both start a handshake at once, the one from the smaller name
//! wins and the other side answers it. A peer that restarted starts a new
//! handshake, which replaces the old channel; a link whose acknowledgements
//! stop coming drops the channel, so the next attempt makes a new one.
//!
//! # Files on the same channel
//!
//! A file for a peer reached only through the relay travels on that
//! channel too, beside chat (`transfer::relayed`): its frames name their
//! transfer, and each goes to that transfer's [`FileRoute`] here (the
//! sending worker's, or the receiving task's that a `FILEQ` starts), never
//! to chat. A route holds at most a window's worth of frames; a peer that
//! sends more loses the route (its transfer ends and resumes later), so a
//! file never makes this session's one reader wait.
//!
//! The same guarantees as the direct path: pinned keys checked by
//! [`Trust`](super::trust::Trust), ids, acknowledgements and the durable
//! outbox end to end (the directory keeps nothing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundtable_shared::api::PeerPath;
use roundtable_shared::directory::{Reply, Request};
use roundtable_shared::frame::{Frame, Limits};
use roundtable_shared::secure::{Hello, Sealed, SecureFrame, MAX_SEC_PAYLOAD};
use roundtable_shared::transfer::{TransferFrame, MAX_DATA, RELAY_WINDOW};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::{open_sealed, seal_all, LinkError, Overlay};
use super::peers::Peers;
use super::trust::Verdict;
use crate::framing::{Connection, FramingError};
use crate::overlay::channel::{ChannelError, Cipher, Handshake, Session};

/// How to reach the directory's relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `host:port` of the directory.
    pub server: String,
    pub name: String,
    pub password: String,
    /// How often to ask who is reachable through the relay.
    pub query_interval: Duration,
    pub max_backoff: Duration,
}

/// Frames waiting to be written to the relay session.
const OUT_QUEUE: usize = 1024;
/// Frames from one peer's channel waiting for its delivery worker.
const ACK_QUEUE: usize = 1024;

/// Frames waiting for one transfer's task: a whole window of full chunks,
/// and room for its other frames.
const ROUTE_QUEUE: usize = (RELAY_WINDOW as usize).div_ceil(MAX_DATA) + 16;

/// Transfers a node may receive through the relay at once (each further
/// offer is dropped; its sender hears nothing and tries again later).
const MAX_RECEIVING_ROUTES: usize = 64;

/// New transfers offered through the relay waiting for the file service.
const OFFER_QUEUE: usize = 16;

/// Where a pair's channel through the relay stands. Every move from one
/// state to the next queues its handshake message under the same lock
/// (a permit reserved before), so the peer receives the messages in the
/// order the states moved. Queued later, the initiator's last `HELLO`
/// could come after the first frame sealed on the new channel (another
/// task seals as soon as the channel is up), which the peer, still
/// finishing, could not open and dropped; and a first `HELLO` could come
/// after our answer to the peer's own.
enum State {
    Initiating(Handshake),
    /// Answered the peer's first message, since then.
    Responding(Handshake, Instant),
    /// The last message is checked and the peer's key looked up.
    Finishing,
    Up(Box<Session>),
}

/// A handshake we answered whose last message never came is given up after
/// this: the peer gave up on it, and a new one may start.
const RESPONDING_STALE: Duration = Duration::from_secs(10);

impl State {
    /// No channel, nor one being made (a stale answer counts as none).
    fn is_free(state: &Option<State>) -> bool {
        match state {
            None => true,
            Some(State::Responding(_, since)) => since.elapsed() > RESPONDING_STALE,
            Some(_) => false,
        }
    }
}

#[derive(Default)]
struct Slot {
    state: Option<State>,
    /// Which channel is up: a link made on an older one is stale.
    generation: u64,
    /// Why the last attempt failed, for whoever waits on it.
    error: Option<String>,
    /// The links on this channel (the delivery worker's, a check's), fed
    /// the frames they wait for (`MSGACK`); each ignores ids not its own.
    links: Vec<mpsc::Sender<Result<Frame, String>>>,
}

struct Inner {
    overlay: Overlay,
    peers: Peers,
    out: mpsc::Sender<Frame>,
    /// Whether the relay session is registered now.
    up: watch::Sender<bool>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Signalled whenever a slot changes.
    changed: Notify,
    next_generation: AtomicU64,
    /// Frames from peers for chat's handler.
    inbound: mpsc::Sender<(String, Vec<Frame>)>,
    /// Held from sealing a frame to queueing it: a channel takes its
    /// frames only in the order of their counters (no reordering window),
    /// so two senders on one channel (chat's worker, a file's, replies)
    /// must not queue in another order than they sealed.
    sending: tokio::sync::Mutex<()>,
    /// Transfers through the relay, by peer, transfer id and direction.
    files: Mutex<HashMap<RouteKey, (u64, RouteSender)>>,
    next_route: AtomicU64,
    /// Transfers peers offered us, for the file service.
    offers: mpsc::Sender<FileRoute>,
}

/// Which way a transfer through the relay goes, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Way {
    /// We send: the peer's `FILEREPLY` and `FILEWIN` come to us.
    Sending,
    /// We receive: the peer's `FILEQ` and `FILECHUNK` come to us.
    Receiving,
}

type RouteKey = (String, String, Way);

/// Where a route's frames (or the relay's refusals) are put.
type RouteSender = mpsc::Sender<Result<Frame, String>>;

/// What arrives through the relay for others than the links: peers'
/// frames for chat's handler, and the files they offer.
pub struct RelayInbound {
    pub chat: mpsc::Receiver<(String, Vec<Frame>)>,
    pub files: mpsc::Receiver<FileRoute>,
}

/// One transfer's frames through the relay: those the peer sends for it,
/// and a way to send it ours on the channel they came by. Dropped, it
/// stops taking frames.
pub struct FileRoute {
    relay: Relay,
    key: RouteKey,
    token: u64,
    generation: Option<u64>,
    rx: mpsc::Receiver<Result<Frame, String>>,
}

/// The node's side of the relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

/// A secure channel with a peer whose frames travel through the directory.
pub struct RelayLink {
    relay: Relay,
    peer: String,
    generation: u64,
    from_peer: mpsc::Receiver<Result<Frame, String>>,
    /// Set when the channel stopped answering: dropping the link then
    /// drops the channel, so the next link makes a new one.
    failed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// Starts the relay session; frames from peers for chat arrive on the
    /// returned receiver.
    pub fn spawn(
        cfg: RelayConfig,
        overlay: Overlay,
        peers: Peers,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> (Relay, RelayInbound) {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (inbound, inbound_rx) = mpsc::channel(OUT_QUEUE);
        let (offers, offers_rx) = mpsc::channel(OFFER_QUEUE);
        let relay = Relay {
            inner: Arc::new(Inner {
                overlay,
                peers,
                out,
                up: watch::channel(false).0,
                slots: Mutex::default(),
                changed: Notify::new(),
                next_generation: AtomicU64::new(1),
                inbound,
                sending: tokio::sync::Mutex::new(()),
                files: Mutex::default(),
                next_route: AtomicU64::new(1),
                offers,
            }),
        };
        tracker.spawn(relay.clone().run(cfg, out_rx, shutdown));
        (
            relay,
            RelayInbound {
                chat: inbound_rx,
                files: offers_rx,
            },
        )
    }

    /// Whether the relay session is registered at the directory.
    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    fn me(&self) -> &str {
        &self.inner.overlay.me
    }

    async fn send_frame(&self, f: Frame, within: Duration) -> Result<(), LinkError> {
        tokio::time::timeout(within, self.inner.out.send(f))
            .await
            .map_err(|_| LinkError::Relay("the relay session is not taking frames".into()))?
            .map_err(|_| LinkError::Relay("the relay session is gone".into()))
    }

    /// A link over the channel with `peer`, made (handshake through the
    /// directory) if there is none, within `timeout`.
    pub async fn link(&self, peer: &str, timeout: Duration) -> Result<RelayLink, LinkError> {
        if !self.is_up() {
            return Err(LinkError::Relay(
                "no relay session with the directory".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        let mut started = false;
        // Room for our first message, reserved once one is needed: it is
        // queued in the same step as the state it starts.
        let mut permit: Option<mpsc::Permit<'_, Frame>> = None;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let reserve = {
                let mut slots = lock(&self.inner.slots);
                let slot = slots.entry(peer.to_owned()).or_default();
                match &slot.state {
                    Some(State::Up(_)) => {
                        let (tx, rx) = mpsc::channel(ACK_QUEUE);
                        slot.links.retain(|l| !l.is_closed());
                        slot.links.push(tx);
                        return Ok(RelayLink {
                            relay: self.clone(),
                            peer: peer.to_owned(),
                            generation: slot.generation,
                            from_peer: rx,
                            failed: false,
                        });
                    }
                    state if !State::is_free(state) => false,
                    _ if started => {
                        let why = slot
                            .error
                            .take()
                            .unwrap_or_else(|| "handshake failed".into());
                        if why.contains("key") {
                            return Err(LinkError::KeyChanged {
                                peer: peer.to_owned(),
                            });
                        }
                        return Err(LinkError::Relay(why));
                    }
                    _ => match permit.take() {
                        None => true,
                        Some(permit) => {
                            started = true;
                            slot.error = None;
                            let expected = self.inner.overlay.trust.expected(peer)?;
                            let o = &self.inner.overlay;
                            // No capabilities are exchanged through the relay:
                            // the cipher every node speaks (files go this way
                            // too, paced to a few MiB/s: the cipher is not what
                            // limits them here).
                            let (hs, hello) = Handshake::initiate(
                                &o.identity,
                                &o.me,
                                peer,
                                expected,
                                o.channel.rekey,
                                Cipher::ChaChaPoly,
                            )?;
                            slot.state = Some(State::Initiating(hs));
                            permit.send(SecureFrame::Hello(hello).into_frame());
                            false
                        }
                    },
                }
            };
            if reserve {
                let room = tokio::time::timeout_at(deadline, self.inner.out.reserve());
                permit = Some(
                    room.await
                        .map_err(|_| {
                            LinkError::Relay("the relay session is not taking frames".into())
                        })?
                        .map_err(|_| LinkError::Relay("the relay session is gone".into()))?,
                );
                continue;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let mut slots = lock(&self.inner.slots);
                if let Some(slot) = slots.get_mut(peer) {
                    if matches!(slot.state, Some(State::Initiating(_))) {
                        slot.state = None;
                    }
                }
                return Err(LinkError::Relay(format!(
                    "{peer} did not answer the handshake through the relay within {timeout:?}"
                )));
            }
        }
    }

    /// Seals `frames` on the current channel with `peer` (of `generation`,
    /// if given) and queues them for the directory.
    pub async fn send_to(
        &self,
        peer: &str,
        generation: Option<u64>,
        frames: &[Frame],
        within: Duration,
    ) -> Result<(), LinkError> {
        let _in_order = self.inner.sending.lock().await;
        let sealed = {
            let mut slots = lock(&self.inner.slots);
            let slot = slots.get_mut(peer);
            match slot {
                Some(Slot {
                    state: Some(State::Up(session)),
                    generation: g,
                    ..
                }) if generation.is_none_or(|want| want == *g) => seal_all(session, frames)?,
                _ => return Err(LinkError::Relay(format!("no channel with {peer}"))),
            }
        };
        for f in sealed {
            self.send_frame(f, within).await?;
        }
        Ok(())
    }

    /// Drops the channel with `peer` if it is still `generation`.
    fn drop_channel(&self, peer: &str, generation: u64) {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get_mut(peer) {
            if slot.generation == generation && matches!(slot.state, Some(State::Up(_))) {
                tracing::debug!(%peer, "relayed channel dropped");
                slot.state = None;
                slot.links.clear();
                drop(slots);
                self.drop_routes(Some(peer));
            }
        }
    }

    /// Ends the transfers through the relay with `peer` (all, if `None`):
    /// their channel is gone, and frames sealed for it go nowhere.
    fn drop_routes(&self, peer: Option<&str>) {
        lock(&self.inner.files).retain(|(p, _, _), _| peer.is_some_and(|peer| peer != p));
    }

    fn add_route(&self, key: RouteKey, generation: Option<u64>) -> (FileRoute, RouteSender) {
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        let token = self.inner.next_route.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.files).insert(key.clone(), (token, tx.clone()));
        let route = FileRoute {
            relay: self.clone(),
            key,
            token,
            generation,
            rx,
        };
        (route, tx)
    }

    /// The route for the replies to our transfer `id` to `peer`, sent on
    /// the channel of `link` (made with [`link`](Self::link)).
    pub fn file_route(&self, link: &RelayLink, id: &str) -> FileRoute {
        let key = (link.peer.clone(), id.to_owned(), Way::Sending);
        self.add_route(key, Some(link.generation)).0
    }

    /// A transfer frame `f` from `peer`, to its transfer's route; a new
    /// offer makes a new route for the file service.
    fn route_file(&self, peer: &str, f: Frame) {
        let Some(id) = TransferFrame::named_id(&f) else {
            tracing::debug!(%peer, kind = %f.kind, "relayed transfer frame without an id dropped");
            return;
        };
        let way = match f.kind.as_str() {
            TransferFrame::OFFER | TransferFrame::CHUNK => Way::Receiving,
            _ => Way::Sending,
        };
        let key = (peer.to_owned(), id.to_owned(), way);
        if f.kind == TransferFrame::OFFER {
            // An offer again (its sender gave up on the last attempt):
            // the old route, if any, ends, and a new attempt starts.
            let receiving = lock(&self.inner.files)
                .keys()
                .filter(|k| k.2 == Way::Receiving && *k != &key)
                .count();
            if receiving >= MAX_RECEIVING_ROUTES {
                tracing::info!(%peer, "too many files arriving through the relay: offer dropped");
                return;
            }
            let (route, tx) = self.add_route(key, None);
            let _ = tx.try_send(Ok(f));
            if let Err(e) = self.inner.offers.try_send(route) {
                // Dropping the route takes it out again.
                tracing::info!(%peer, "file service busy: relayed offer dropped");
                drop(e);
            }
            return;
        }
        let mut files = lock(&self.inner.files);
        let Some((_, tx)) = files.get(&key) else {
            tracing::debug!(%peer, kind = %f.kind, "relayed transfer frame for no transfer dropped");
            return;
        };
        if tx.try_send(Ok(f)).is_err() {
            // Past its window, or its task is gone: that attempt ends.
            tracing::info!(%peer, "relayed transfer frames beyond the window: transfer interrupted");
            files.remove(&key);
        }
    }

    fn set(&self, peer: &str, f: impl FnOnce(&mut Slot)) {
        f(lock(&self.inner.slots).entry(peer.to_owned()).or_default());
        self.inner.changed.notify_waiters();
    }

    /// A handshake message from `h.from`.
    fn on_hello(&self, h: Hello) {
        // Room for our answer to a first or second message, reserved
        // first: it is queued in the same step as the state it moves to.
        // This runs in the session's task, the one that empties the queue:
        // waiting for room here would wait for itself, so a full queue
        // drops the message (the peer tries again). A third needs no
        // answer.
        let permit = match h.step {
            3 => None,
            _ => match self.inner.out.try_reserve() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::info!(peer = %h.from, step = h.step, "relay queue full: handshake message dropped");
                    return;
                }
            },
        };
        let peer = h.from.clone();
        let o = &self.inner.overlay;
        match h.step {
            1 => {
                let expected = match o.trust.expected(&peer) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(%e, "cannot read pins");
                        return;
                    }
                };
                {
                    let mut slots = lock(&self.inner.slots);
                    let slot = slots.entry(peer.clone()).or_default();
                    if matches!(slot.state, Some(State::Initiating(_))) && self.me() < peer.as_str()
                    {
                        // Both started: ours goes on, the peer answers it.
                        return;
                    }
                    match Handshake::respond(&o.identity, &o.me, &h, expected, o.channel.rekey) {
                        Ok((hs, answer)) => {
                            slot.state = Some(State::Responding(hs, Instant::now()));
                            if let Some(permit) = permit {
                                permit.send(SecureFrame::Hello(answer).into_frame());
                            }
                        }
                        Err(e) => {
                            tracing::info!(%peer, %e, "relayed handshake refused");
                            return;
                        }
                    }
                }
                self.inner.changed.notify_waiters();
            }
            2 | 3 => {
                let hs = {
                    let mut slots = lock(&self.inner.slots);
                    let slot = slots.entry(peer.clone()).or_default();
                    match (slot.state.take(), h.step) {
                        (Some(State::Initiating(hs)), 2) | (Some(State::Responding(hs, _)), 3) => {
                            slot.state = Some(State::Finishing);
                            hs
                        }
                        (other, _) => {
                            slot.state = other;
                            tracing::debug!(%peer, step = h.step, "unexpected relayed HELLO dropped");
                            return;
                        }
                    }
                };
                let (session, last) = match hs.finish(&h) {
                    Ok(done) => done,
                    Err(ChannelError::KeyMismatch { found, .. }) => {
                        if let Err(e) = o.trust.refused(&peer, &found) {
                            tracing::error!(%e, "cannot record a changed key");
                        }
                        return self.handshake_failed(&peer, format!("{peer}'s key changed"));
                    }
                    Err(e) => {
                        tracing::info!(%peer, %e, "relayed handshake failed");
                        return self.handshake_failed(&peer, e.to_string());
                    }
                };
                match o
                    .trust
                    .proven(&peer, session.remote_static(), PeerPath::Relayed)
                {
                    Ok(Verdict::Trusted) => {
                        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "secure channel through the relay");
                        // Transfers on the channel this replaces are over;
                        // they resume on this one.
                        self.drop_routes(Some(&peer));
                        self.set(&peer, |s| {
                            s.state = Some(State::Up(Box::new(session)));
                            s.generation = generation;
                            s.links.clear();
                            s.error = None;
                            // Before any frame sealed on the channel.
                            if let (Some(last), Some(permit)) = (last, permit) {
                                permit.send(SecureFrame::Hello(last).into_frame());
                            }
                        });
                    }
                    Ok(Verdict::Changed { .. }) => {
                        self.handshake_failed(&peer, format!("{peer}'s key changed"))
                    }
                    Err(e) => {
                        tracing::error!(%e, "cannot check a pin");
                        self.handshake_failed(&peer, "cannot check the pin".into())
                    }
                }
            }
            _ => {}
        }
    }

    /// The handshake with `peer` that was finishing failed: `why`, for
    /// whoever waits on it.
    fn handshake_failed(&self, peer: &str, why: String) {
        self.set(peer, |s| {
            if matches!(s.state, Some(State::Finishing)) {
                s.state = None;
            }
            s.error = Some(why);
        });
    }

    /// A sealed frame from `s.from`: opened on its channel, `MSGACK`s to
    /// our worker, a transfer's frames to its route, the rest to chat.
    async fn on_sealed(&self, s: Sealed) {
        let peer = s.from.clone();
        let (frames, links) = {
            let mut slots = lock(&self.inner.slots);
            let slot = slots.entry(peer.clone()).or_default();
            let Some(State::Up(session)) = &mut slot.state else {
                // The peer still uses a channel we lost (we restarted):
                // offer a new one, which replaces it at the peer, rather
                // than let it wait for acknowledgements that cannot come.
                if State::is_free(&slot.state) {
                    tracing::debug!(%peer, "relayed frame without a channel: starting a new one");
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.link(&peer, Duration::from_secs(10)).await;
                    });
                }
                return;
            };
            match open_sealed(session, &s) {
                Ok(frames) => (frames, slot.links.clone()),
                Err(e) => {
                    tracing::warn!(%peer, %e, "relayed sealed frame refused");
                    return;
                }
            }
        };
        let (files, frames): (Vec<Frame>, Vec<Frame>) = frames
            .into_iter()
            .partition(|f| TransferFrame::is_relayed(&f.kind));
        for f in files {
            self.route_file(&peer, f);
        }
        let (acks, rest): (Vec<Frame>, Vec<Frame>) =
            frames.into_iter().partition(|f| f.kind == "MSGACK");
        for l in &links {
            for a in &acks {
                let _ = l.try_send(Ok(a.clone()));
            }
        }
        if !rest.is_empty() {
            let _ = self.inner.inbound.send((peer, rest)).await;
        }
    }

    async fn on_nak(&self, to: String, reason: String) {
        tracing::debug!(peer = %to, %reason, "relay refused a frame");
        let links = {
            let mut slots = lock(&self.inner.slots);
            let Some(slot) = slots.get_mut(&to) else {
                return;
            };
            if matches!(slot.state, Some(State::Initiating(_))) {
                slot.state = None;
                slot.error = Some(reason.clone());
            }
            slot.links.clone()
        };
        self.inner.changed.notify_waiters();
        for l in links {
            let _ = l.try_send(Err(reason.clone()));
        }
        // A lost frame may have been a file's: its transfers hear it too.
        for ((p, _, _), (_, tx)) in lock(&self.inner.files).iter() {
            if *p == to {
                let _ = tx.try_send(Err(reason.clone()));
            }
        }
    }

    /// Runs the relay session, reconnecting with backoff, until shutdown.
    async fn run(
        self,
        cfg: RelayConfig,
        mut out: mpsc::Receiver<Frame>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let r = self.session(&cfg, &mut out, &shutdown).await;
            self.inner.up.send_replace(false);
            {
                // Channels do not survive the session: the peer's frames
                // for them went nowhere meanwhile.
                let mut slots = lock(&self.inner.slots);
                slots.clear();
            }
            self.drop_routes(None);
            self.inner.changed.notify_waiters();
            if shutdown.is_cancelled() {
                return;
            }
            match r {
                Ok(()) => backoff = Duration::from_millis(250),
                Err(LinkError::Relay(why))
                    if why.contains("did not understand") || why.contains("disabled") =>
                {
                    tracing::warn!(server = %cfg.server, %why, "the directory does not relay; chatting directly only");
                    return;
                }
                Err(e) => tracing::info!(server = %cfg.server, %e, "relay session lost"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(cfg.max_backoff);
        }
    }

    async fn session(
        &self,
        cfg: &RelayConfig,
        out: &mut mpsc::Receiver<Frame>,
        shutdown: &CancellationToken,
    ) -> Result<(), LinkError> {
        let t = Duration::from_secs(5);
        let stream = tokio::time::timeout(t, TcpStream::connect(&cfg.server))
            .await
            .map_err(|_| FramingError::Timeout(t))?
            .map_err(FramingError::Io)?;
        stream.set_nodelay(true).map_err(FramingError::Io)?;
        let limits = Limits {
            max_payload: MAX_SEC_PAYLOAD.max(Limits::default().max_payload),
            ..Limits::default()
        };
        let mut conn = Connection::new(stream, limits).with_read_chunk(64 * 1024);
        let steps = [
            Request::User {
                name: cfg.name.clone(),
            },
            Request::Pass {
                password: cfg.password.clone(),
            },
            Request::Relay,
        ];
        for req in steps {
            conn.write_frame_within(&req.to_frame(), t).await?;
            let f = conn
                .read_frame_within(Duration::from_secs(10))
                .await?
                .ok_or(FramingError::Truncated)?;
            match Reply::parse(&f) {
                Ok(Reply::Ack(_)) => {}
                Ok(Reply::Nak(reason) | Reply::Err(reason)) => {
                    return Err(LinkError::Relay(format!("the directory refused: {reason}")))
                }
                _ => return Err(LinkError::Relay(format!("unexpected answer {}", f.kind))),
            }
        }
        self.inner.up.send_replace(true);
        tracing::info!(server = %cfg.server, "relay session registered");
        let mut tick = tokio::time::interval(cfg.query_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    conn.write_frame_within(&Request::RelayQuery { name: None }.to_frame(), t).await?;
                }
                f = out.recv() => {
                    let Some(f) = f else { return Ok(()) };
                    let mut batch = vec![f];
                    while batch.len() < 256 {
                        match out.try_recv() {
                            Ok(f) => batch.push(f),
                            Err(_) => break,
                        }
                    }
                    conn.write_frames_within(&batch, Duration::from_secs(10)).await?;
                }
                f = conn.read_frame() => {
                    let f = f?.ok_or(FramingError::Truncated)?;
                    self.dispatch(f).await?;
                    while let Some(f) = conn.buffered_frame()? {
                        self.dispatch(f).await?;
                    }
                }
            }
        }
    }

    async fn dispatch(&self, f: Frame) -> Result<(), LinkError> {
        match Reply::parse_owned(f) {
            Ok(Reply::Relayed(SecureFrame::Hello(h))) if h.to == self.me() => self.on_hello(h),
            Ok(Reply::Relayed(SecureFrame::Sealed(s))) if s.to == self.me() => {
                self.on_sealed(s).await
            }
            Ok(Reply::RelayNak { to, reason }) => self.on_nak(to, reason).await,
            Ok(Reply::RelayResult(names)) => self.inner.peers.set_relay(&names),
            Ok(Reply::Err(reason)) => {
                return Err(LinkError::Relay(format!("the directory closed: {reason}")))
            }
            Ok(other) => tracing::debug!(?other, "unexpected frame on the relay session"),
            Err(e) => tracing::debug!(%e, "undecodable frame on the relay session"),
        }
        Ok(())
    }
}

impl RelayLink {
    pub async fn send(&mut self, frames: &[Frame], within: Duration) -> Result<(), LinkError> {
        let r = self
            .relay
            .send_to(&self.peer, Some(self.generation), frames, within)
            .await;
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    pub async fn recv(&mut self, within: Duration) -> Result<Frame, LinkError> {
        match tokio::time::timeout(within, self.from_peer.recv()).await {
            Ok(Some(Ok(f))) => Ok(f),
            Ok(Some(Err(reason))) => {
                self.failed = true;
                Err(LinkError::Relay(reason))
            }
            Ok(None) => {
                self.failed = true;
                Err(LinkError::Relay("the relayed channel was replaced".into()))
            }
            Err(_) => {
                // Not yet a failure: the caller decides (it may only be
                // recording `sent`); a link dropped after a timeout is.
                Err(LinkError::Framing(FramingError::Timeout(within)))
            }
        }
    }

    pub fn try_recv(&mut self) -> Option<Frame> {
        match self.from_peer.try_recv() {
            Ok(Ok(f)) => Some(f),
            _ => None,
        }
    }

    /// Marks the channel as not answering: dropping the link drops it.
    pub fn fail(&mut self) {
        self.failed = true;
    }
}

impl FileRoute {
    /// The peer at the other end (proven by the channel).
    pub fn peer(&self) -> &str {
        &self.key.0
    }

    /// The transfer's id.
    pub fn id(&self) -> &str {
        &self.key.1
    }

    /// The route was taken out (its channel went, a new offer replaced
    /// it, or its peer overran the window).
    fn ended() -> LinkError {
        LinkError::Relay("the transfer's frames stopped coming through the relay".into())
    }

    /// Seals `frames` on the channel and queues them for the directory.
    pub async fn send(&self, frames: &[Frame], within: Duration) -> Result<(), LinkError> {
        self.relay
            .send_to(&self.key.0, self.generation, frames, within)
            .await
    }

    /// The peer's next frame for this transfer, within `within`.
    pub async fn recv(&mut self, within: Duration) -> Result<Frame, LinkError> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(Ok(f))) => Ok(f),
            Ok(Some(Err(reason))) => Err(LinkError::Relay(reason)),
            Ok(None) => Err(FileRoute::ended()),
            Err(_) => Err(LinkError::Framing(FramingError::Timeout(within))),
        }
    }

    /// A frame already here, without waiting; an error if the route ended
    /// or the relay refused one of its frames.
    pub fn try_recv(&mut self) -> Result<Option<Frame>, LinkError> {
        match self.rx.try_recv() {
            Ok(Ok(f)) => Ok(Some(f)),
            Ok(Err(reason)) => Err(LinkError::Relay(reason)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(FileRoute::ended()),
        }
    }
}

impl Drop for FileRoute {
    fn drop(&mut self) {
        let mut files = lock(&self.relay.inner.files);
        if files.get(&self.key).is_some_and(|(t, _)| *t == self.token) {
            files.remove(&self.key);
        }
    }
}

impl Drop for RelayLink {
    fn drop(&mut self) {
        if self.failed {
            self.relay.drop_channel(&self.peer, self.generation);
        }
    }
}
