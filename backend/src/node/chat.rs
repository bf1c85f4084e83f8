//! Peer chat: the listener other peers (classic or Roundtable) talk to, and
//! one delivery worker per peer that drains its outbox.
//!
//! A message takes one path: [`Chat::send`] stores it `queued` and wakes the
//! peer's worker; the worker (re)uses one connection to the peer, writes the
//! outbox in order, announces it `sent` (recording that only if the
//! acknowledgement is slow or will never come, as from a classic peer), and
//! on `MSGACK` marks it `delivered`.
//! Nothing is acknowledged to the browser before it is committed, and
//! nothing leaves the outbox before the peer has stored it, so a crash at
//! any point loses nothing; the receiver drops duplicates by id.
//!
//! Who is who: between Roundtable nodes every chat frame travels inside
//! the Noise channel (`link.rs`, `overlay::channel`), so a message that
//! arrives that way is proven to come from the key pinned for its sender
//! and is stored as verified. A plain connection to our chat port (a
//! classic eurechat peer, `nc`) only *claims* a sender name: what it
//! delivers is stored as unverified, and the claim decides nothing else;
//! a plain message claiming to come from a known Roundtable node (pinned,
//! or with a key at the directory) is refused and not stored, and with
//! `--require-secure` every plain message is. Our messages to a user go
//! only over a link to the address the directory lists for that user (or
//! through the directory's relay), never back over a connection that
//! merely said it was them. A message counts as `sent` only once written
//! to that link within `write_timeout`, and `delivered` only on
//! acknowledgement. Inbound connections have a short deadline for their
//! first frame, an idle timeout, and a cap per source address, so one
//! source cannot take every inbound slot (and with them the directory's
//! liveness check of this node).
//!
//! The chat port also takes NVIDIA FLARE binary exchanges, as NVFlare's
//! own receiver decides: a connection whose first byte is `0x01` is a
//! file (stored under `files_dir` by `transfer::raw`), anything else is
//! eurechat text.
//!
//! Store calls run inline: they are short WAL appends that never wait for
//! the disk, and a hop to another thread costs more than they do. The two
//! writes someone is told about (`queue`, answered 202 to the browser, and
//! `receive`, answered `MSGACK` to the peer) are announced at once and
//! acknowledged only after `ChatStore::sync` has put them on disk (an
//! fsync, on the blocking pool so that it stalls no runtime worker); see
//! `store::chat` for why the sync is not inside the commit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roundtable_shared::api::{
    ChatMessage, Event, MessageState, PeerPath, ReadState, SearchHit, MAX_TEXT,
};
use roundtable_shared::frame::Frame;
use roundtable_shared::peer::PeerFrame;
use roundtable_shared::rpc::RpcFrame;
use roundtable_shared::secure::{Hello, SecureFrame};
use roundtable_shared::transfer::TransferFrame;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::link::{chat_limits, open_direct, open_frame, seal_all, Link, LinkError, Overlay};
use super::peers::Peers;
use super::relay::Relay;

/// How chat reaches peers: the secure channel's settings, and the
/// directory's relay for peers it cannot reach directly.
pub struct Transports {
    pub overlay: Overlay,
    pub relay: Option<Relay>,
    /// The file service, handed transfer connections (`None`: refused).
    pub transfers: Option<crate::transfer::Transfers>,
    /// The request kinds answered over secure links (`info`, `progress`).
    pub handlers: Handlers,
}
use super::trust::Verdict;
use crate::caps::{accept, Caps, RefusalLog};
use crate::directory::accounts::valid_name;
use crate::events::Events;
use crate::framing::{Connection, FramingError};
use crate::overlay::channel::{self, ChannelError};
use crate::overlay::rpc::{Handlers, Requests};
use crate::store::chat::{ChatStore, Commit, Incoming};
use crate::store::StoreError;

/// Chat tuning.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Our user name (the sender of what we send).
    pub name: String,
    pub connect_timeout: Duration,
    /// How long a peer has to acknowledge a batch.
    pub ack_timeout: Duration,
    /// An unused connection is closed after this long.
    pub idle_timeout: Duration,
    /// Most outgoing peer connections at once.
    pub max_links: usize,
    /// Most incoming connections at once.
    pub max_inbound: usize,
    /// Most incoming connections from one IP address at once.
    pub max_inbound_per_source: usize,
    /// Time a new incoming connection has to send its first frame.
    pub first_frame_timeout: Duration,
    /// An incoming connection silent for this long is closed.
    pub inbound_idle_timeout: Duration,
    /// Time allowed to write a batch to a peer before the link is given up.
    pub write_timeout: Duration,
    /// Messages written per batch before waiting for acknowledgements.
    pub batch: usize,
    /// Where NVFlare binary exchanges that arrive on the chat port are
    /// stored (`None`: refused). NVFlare's receiver decides the same way:
    /// a first byte `0x01` is a binary exchange, anything else is text.
    pub files_dir: Option<std::path::PathBuf>,
    /// Speak the secure channel (default). `false` makes the node talk to
    /// everyone as Roundtable nodes did before it: plain `MSG`, nothing
    /// proven. It exists only so that the benchmark can put a number on
    /// what the channel costs; no command-line flag sets it.
    pub secure: bool,
}

impl ChatConfig {
    pub fn new(name: &str) -> Self {
        ChatConfig {
            name: name.to_owned(),
            connect_timeout: Duration::from_secs(3),
            ack_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_links: 64,
            max_inbound: 256,
            max_inbound_per_source: 32,
            first_frame_timeout: Duration::from_secs(10),
            inbound_idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            batch: 256,
            files_dir: None,
            secure: true,
        }
    }
}

/// Errors the chat API reports.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("invalid peer name {0:?}")]
    BadPeer(String),
    #[error("message text must be 1 to {MAX_TEXT} bytes")]
    BadText,
    #[error("that is you")]
    ToSelf,
    #[error("nobody named \"{0}\" is known to the directory or to this node: check the spelling, or send it anyway (it waits until {0} appears)")]
    UnknownRecipient(String),
    #[error("nobody named \"{0}\" is known to the directory or to this node: check the spelling")]
    UnknownMember(String),
    #[error(
        "a room name is 1 to {} bytes, without control characters",
        roundtable_shared::room::MAX_NAME
    )]
    BadRoomName,
    #[error(
        "a message in a room is 1 to {} bytes",
        roundtable_shared::room::MAX_ROOM_TEXT
    )]
    BadRoomText,
    #[error("a room has at most {} members", roundtable_shared::room::MAX_MEMBERS)]
    TooManyMembers,
    #[error(transparent)]
    Room(#[from] crate::store::chat::RoomRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The chat service. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ChatConfig,
    overlay: Overlay,
    /// Links this node has opened to peers (direct or relayed).
    opened: AtomicU64,
    /// The directory's relay, for peers we cannot reach directly.
    relay: Option<Relay>,
    transfers: Option<crate::transfer::Transfers>,
    /// Requests we sent over secure links and wait for (check peers).
    requests: Requests,
    /// The request kinds we answer over secure links.
    handlers: Handlers,
    store: ChatStore,
    peers: Peers,
    events: Events,
    /// One wake-up handle per running delivery worker.
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Incoming connections: in all and per source address.
    inbound: Caps,
    links: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// The rooms a batch of deliveries needs, each read once.
#[derive(Default)]
struct RoomCache(HashMap<String, Option<crate::store::chat::Room>>);

impl RoomCache {
    fn get(&mut self, store: &ChatStore, id: &str) -> Option<&crate::store::chat::Room> {
        self.0
            .entry(id.to_owned())
            .or_insert_with(|| store.room(id).ok().flatten())
            .as_ref()
    }
}

/// How long a send to a name not known yet waits for the directory's
/// answer before it is refused as unknown.
const ASK_DIRECTORY: Duration = Duration::from_secs(3);

/// How long acknowledgements may take before `sent` is recorded.
const RECORD_SENT_AFTER: Duration = Duration::from_millis(200);

/// The frame as the first message of a Noise handshake, if it is one.
fn as_hello(f: &Frame) -> Option<Hello> {
    if f.kind != "HELLO" {
        return None;
    }
    match SecureFrame::parse(f) {
        Ok(SecureFrame::Hello(h)) if h.step == 1 => Some(h),
        _ => None,
    }
}

/// Who sent frames we received.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// A plain connection from this address: the sender names are claims.
    Claimed(SocketAddr),
    /// The secure channel with this peer: proven.
    Proven(&'a str),
}

/// A secure connection whose first frames offer a file: the chat port
/// hands it to the transfers ([`Chat::receive_file`]).
struct FileConnection {
    transfers: crate::transfer::Transfers,
    session: channel::Session,
    peer: String,
    /// The frames opened so far, the offer first.
    first: Vec<Frame>,
    shares_room: crate::transfer::SharesRoom,
}

impl Chat {
    pub fn new(
        cfg: ChatConfig,
        Transports {
            overlay,
            relay,
            transfers,
            handlers,
        }: Transports,
        store: ChatStore,
        peers: Peers,
        events: Events,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Chat {
            inner: Arc::new(Inner {
                opened: AtomicU64::new(0),
                links: Arc::new(Semaphore::new(cfg.max_links)),
                inbound: Caps::new(cfg.max_inbound, cfg.max_inbound_per_source),
                requests: Requests::new(),
                handlers,
                cfg,
                overlay,
                relay,
                transfers,
                store,
                peers,
                events,
                workers: Mutex::default(),
                shutdown,
                tracker,
            }),
        }
    }

    pub fn store(&self) -> &ChatStore {
        &self.inner.store
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub(crate) fn requests(&self) -> &Requests {
        &self.inner.requests
    }

    /// Whether a link may be kept open while unused (by an idle outbox
    /// worker or the progress pusher): at least one outgoing link, and a
    /// quarter of them, stay free for other peers
    /// ([`ChatConfig::max_links`]).
    pub(crate) fn links_to_spare(&self) -> bool {
        let free = self.inner.links.available_permits();
        free > 0 && free >= self.inner.cfg.max_links / 4
    }

    /// [`send`](Self::send) from a person: refused with
    /// [`ChatError::UnknownRecipient`] when `peer` is nobody this node has
    /// heard of (never listed by the directory, no conversation), which is
    /// most often a misspelled name, unless `force` (the person insists:
    /// it is queued like any message, for a peer that may appear later).
    pub async fn send_from_user(
        &self,
        peer: &str,
        text: &str,
        force: bool,
    ) -> Result<ChatMessage, ChatError> {
        self.check(peer, text)?;
        if !force && !self.knows(peer).await? {
            return Err(ChatError::UnknownRecipient(peer.to_owned()));
        }
        self.send(peer, text).await
    }

    /// What every message must be: a valid peer name, not us, a text of 1
    /// to [`MAX_TEXT`] bytes.
    fn check(&self, peer: &str, text: &str) -> Result<(), ChatError> {
        if !valid_name(peer) {
            return Err(ChatError::BadPeer(peer.to_owned()));
        }
        if peer == self.inner.cfg.name {
            return Err(ChatError::ToSelf);
        }
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(ChatError::BadText);
        }
        Ok(())
    }

    /// Whether `peer` is listed (or was, while this node ran) or has a
    /// conversation here. A name not known yet is asked of the directory
    /// at once, and waited for up to [`ASK_DIRECTORY`]: right after the
    /// node starts, or just after the peer logged in, the last listing may
    /// not have it yet.
    pub(crate) async fn knows(&self, peer: &str) -> Result<bool, ChatError> {
        let peers = &self.inner.peers;
        if peers.get(peer).is_some() || !self.history(peer, None, 1).await?.is_empty() {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + ASK_DIRECTORY;
        loop {
            let changed = peers.changed();
            peers.request_refresh();
            if peers.get(peer).is_some() {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(peers.get(peer).is_some());
            }
        }
    }

    /// Accepts a message for `peer`: committed as `queued`, announced,
    /// handed to the peer's worker, and on disk before it returns (the
    /// caller's 202). Returns the stored message.
    pub async fn send(&self, peer: &str, text: &str) -> Result<ChatMessage, ChatError> {
        self.check(peer, text)?;
        let (msg, commit) = self.inner.store.queue(peer, text)?;
        self.inner.peers.ensure(peer);
        if !self.inner.peers.get(peer).is_some_and(|p| p.online) {
            // Maybe it just arrived: ask the directory now, not at the next tick.
            self.inner.peers.request_refresh();
        }
        self.inner.events.publish(Event::Message {
            message: msg.clone(),
        });
        self.kick(peer);
        // The worker may already be sending it; the caller hears "accepted"
        // only once it would survive a power loss.
        self.sync(commit).await?;
        Ok(msg)
    }

    /// Waits, off the runtime's threads, until `commit` is on disk.
    pub(crate) async fn sync(&self, commit: Commit) -> Result<(), StoreError> {
        let store = self.inner.store.clone();
        crate::store::blocking(move || store.sync(commit)).await
    }

    /// Makes sure `peer` has a delivery worker, and wakes it.
    pub(crate) fn kick(&self, peer: &str) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = workers.get(peer) {
            w.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        wake.notify_one();
        workers.insert(peer.to_owned(), wake.clone());
        let this = self.clone();
        let peer = peer.to_owned();
        self.inner.tracker.spawn(async move {
            this.worker(&peer, wake).await;
            this.inner
                .workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer);
            // A message queued while the worker was exiting is not stranded.
            if let Ok(left) = this.inner.store.outbox(&peer, 1) {
                if !left.is_empty() && !this.inner.shutdown.is_cancelled() {
                    this.kick(&peer);
                }
            }
        });
    }

    /// Wakes workers for every peer with undelivered messages: at start, and
    /// whenever presence changes.
    pub async fn run_dispatcher(self) {
        loop {
            match self.inner.store.outbox_peers() {
                Ok(peers) => {
                    for p in peers {
                        self.kick(&p);
                    }
                }
                Err(e) => tracing::error!(%e, "cannot read outbox"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.peers.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// Delivers `peer`'s outbox until it is empty and the connection idle.
    async fn worker(&self, peer: &str, wake: Arc<Notify>) {
        let cfg = &self.inner.cfg;
        let mut link: Option<Link> = None;
        let mut backoff = Duration::from_millis(200);
        loop {
            let pending = match self.inner.store.outbox(peer, cfg.batch) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(%peer, %e, "cannot read outbox");
                    Vec::new()
                }
            };
            if pending.is_empty() {
                // Idle: keep the connection for reuse a while, then stop;
                // but not while the node's outgoing links run short (a
                // room post to many members would otherwise hold them all
                // for `idle_timeout`, and a message to anyone else wait).
                if link.is_some() && !self.links_to_spare() {
                    link = None;
                }
                tokio::select! {
                    _ = self.inner.shutdown.cancelled() => return,
                    _ = wake.notified() => continue,
                    _ = tokio::time::sleep(cfg.idle_timeout) => return,
                }
            }
            if link.is_none() {
                match self.open_link(peer).await {
                    Ok(Some(l)) => link = Some(l),
                    Ok(None) => {
                        // Offline: wait for presence or a new message.
                        tokio::select! {
                            _ = self.inner.shutdown.cancelled() => return,
                            _ = wake.notified() => {}
                            _ = self.inner.peers.changed() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                        continue;
                    }
                    Err(e) if e.needs_user() => {
                        // Held: retrying at once cannot help. The user may
                        // accept a key (peer change) or the peer may come
                        // back properly; look again now and then, since
                        // `roundtable node trust` runs in another process.
                        tracing::warn!(%peer, %e, "messages held");
                        tokio::select! {
                            _ = self.inner.shutdown.cancelled() => return,
                            _ = self.inner.peers.changed() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                        if let Err(e) = self.inner.overlay.trust.reload() {
                            tracing::error!(%e, "cannot read pins");
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, %e, "cannot reach peer");
                        tokio::select! {
                            _ = self.inner.shutdown.cancelled() => return,
                            _ = self.inner.peers.changed() => {}
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            let Some(l) = link.as_mut() else { continue };
            match self.deliver(l, peer, &pending).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::debug!(%peer, %e, "delivery interrupted; will retry");
                    l.fail();
                    link = None;
                    self.announce_requeued(&pending);
                    tokio::select! {
                        _ = self.inner.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// A link to `peer`: to the address the directory lists for it, or
    /// through the directory's relay when it has no address or its
    /// address does not answer; `None` while it is not online either way
    /// (a message waits in the outbox rather than go anywhere else).
    pub(crate) async fn open_link(&self, peer: &str) -> Result<Option<Link>, LinkError> {
        let Some(info) = self.inner.peers.get(peer).filter(|p| p.online) else {
            return Ok(None);
        };
        let relay = self.inner.relay.as_ref().filter(|_| info.relay);
        let direct = info
            .address
            .clone()
            .zip(info.port)
            .filter(|_| self.inner.peers.listed(peer));
        if let Some((address, port)) = direct {
            let permit = self
                .inner
                .links
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| FramingError::Truncated)?;
            match open_direct(
                &self.inner.overlay,
                peer,
                &address,
                port,
                self.inner.cfg.connect_timeout,
                permit,
            )
            .await
            {
                Ok(link) => {
                    self.inner.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(link));
                }
                Err(e) if e.needs_user() || relay.is_none() => return Err(e),
                Err(e) => {
                    tracing::info!(%peer, %e, "direct connection failed; trying the relay");
                }
            }
        }
        let Some(relay) = relay else {
            return Ok(None);
        };
        let link = relay
            .link(peer, self.inner.overlay.channel.handshake_timeout)
            .await?;
        self.inner.overlay.trust.reached(peer, PeerPath::Relayed);
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Link::relayed(link)))
    }

    /// How many links this node has opened to peers since it started (each
    /// secure one a Noise handshake): kept links keep it low.
    pub fn links_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Handles what peers send us through the relay (their messages and
    /// requests, already opened), answering over the relay, until
    /// shutdown.
    pub async fn run_relay_inbound(
        self,
        mut rx: tokio::sync::mpsc::Receiver<(String, Vec<Frame>)>,
    ) {
        let Some(relay) = self.inner.relay.clone() else {
            return;
        };
        loop {
            let (peer, frames) = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let (replies, _) = self.handle(frames, Origin::Proven(&peer)).await;
            if !replies.is_empty() {
                if let Err(e) = relay
                    .send_to(&peer, None, &replies, self.inner.cfg.write_timeout)
                    .await
                {
                    tracing::debug!(%peer, %e, "relayed replies not sent");
                }
            }
        }
    }

    /// The check of an offer's room against this node's own member lists.
    fn shares_room(&self) -> crate::transfer::SharesRoom {
        super::rooms::shares_room(self.inner.store.clone(), self.me().to_owned())
    }

    /// Receives the files peers offer through the relay, each on the
    /// files' runtime like a transfer connection of its own, until
    /// shutdown.
    pub async fn run_relay_files(
        self,
        mut rx: tokio::sync::mpsc::Receiver<super::relay::FileRoute>,
    ) {
        let Some(t) = self.inner.transfers.clone() else {
            return;
        };
        loop {
            let route = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            let shares_room = self.shares_room();
            let t = t.clone();
            self.inner.tracker.spawn_on(
                async move { t.receive_relayed(route, shares_room).await },
                crate::transfer::bulk::runtime(),
            );
        }
    }

    /// Writes `pending` to the link and records what happened to it.
    async fn deliver(
        &self,
        link: &mut Link,
        peer: &str,
        pending: &[ChatMessage],
    ) -> Result<(), LinkError> {
        let me = &self.inner.cfg.name;
        let seqs: Vec<i64> = pending.iter().map(|m| m.seq).collect();
        let write_timeout = self.inner.cfg.write_timeout;
        let mut rooms = RoomCache::default();
        if !link.caps.roundtable {
            // A classic peer: no acknowledgements, so written is final. A
            // room's posts reach it as messages that name the room; what
            // happens to the room itself is not for it.
            let mut frames = Vec::with_capacity(pending.len());
            for m in pending {
                let text = match &m.room {
                    None => m.text.clone(),
                    Some(_) if m.event => continue,
                    Some(r) => match rooms.get(&self.inner.store, r) {
                        Some(room) => roundtable_shared::room::classic_text(&room.name, &m.text),
                        None => continue,
                    },
                };
                frames.push(
                    PeerFrame::Message {
                        sender: me.clone(),
                        text,
                    }
                    .to_frame(),
                );
            }
            link.send(&frames, write_timeout).await?;
            let done = self.record_sent(peer, &seqs, false);
            self.announce_sent(pending);
            self.announce_delivered(pending, &done);
            return Ok(());
        }
        let mut frames = Vec::with_capacity(pending.len());
        for m in pending {
            match &m.room {
                None => frames.push(
                    PeerFrame::Msg {
                        sender: me.clone(),
                        id: m.id.clone(),
                        text: m.text.clone(),
                    }
                    .to_frame(),
                ),
                Some(r) => {
                    let Some(room) = rooms.get(&self.inner.store, r) else {
                        continue;
                    };
                    match self.room_frame(room, m) {
                        Ok(f) => frames.push(f),
                        Err(e) => tracing::error!(room = %r, %e, "room message cannot be sent"),
                    }
                }
            }
        }
        link.send(&frames, write_timeout).await?;
        // `sent` is announced now but recorded only if the acknowledgements
        // are slow: usually they follow within a millisecond, and
        // `delivered` is the one write needed. Until recorded the store
        // says `queued`, which is what a restart needs anyway (the peer
        // drops the repeat by id).
        self.announce_sent(pending);
        let mut waiting: HashMap<&str, i64> =
            pending.iter().map(|m| (m.id.as_str(), m.seq)).collect();
        let mut recorded = false;
        while !waiting.is_empty() {
            let wait = if recorded {
                self.inner.cfg.ack_timeout
            } else {
                RECORD_SENT_AFTER
            };
            let f = match link.recv(wait).await {
                Err(LinkError::Framing(FramingError::Timeout(_))) if !recorded => {
                    let left: Vec<i64> = waiting.values().copied().collect();
                    self.record_sent(peer, &left, true);
                    recorded = true;
                    continue;
                }
                r => r?,
            };
            let mut acked = Vec::new();
            let mut next = Some(f);
            // Take every ack already buffered in one go.
            while let Some(f) = next {
                match PeerFrame::parse(&f) {
                    Ok(PeerFrame::MsgAck { id }) => {
                        acked.extend(waiting.remove(id.as_str()));
                    }
                    Ok(PeerFrame::Msg { sender, id, text }) if sender == peer => {
                        // The peer may answer over our link too; proven
                        // only on a secure link. Stored before it is
                        // acknowledged.
                        let incoming = Incoming {
                            sender,
                            id: Some(id.clone()),
                            text,
                            verified: link.secure(),
                        };
                        if self.receive(vec![incoming]).await {
                            link.send(&[PeerFrame::MsgAck { id }.to_frame()], write_timeout)
                                .await?;
                        }
                    }
                    _ => {}
                }
                next = link.buffered()?;
            }
            self.mark_delivered(peer, pending, &acked);
        }
        Ok(())
    }

    /// Records our messages as written to the peer; `awaiting_ack` keeps
    /// them in the outbox until acknowledged. Returns the room messages
    /// that this made delivered to every member.
    fn record_sent(&self, peer: &str, seqs: &[i64], awaiting_ack: bool) -> Vec<i64> {
        self.inner
            .store
            .mark_sent(peer, seqs, awaiting_ack)
            .unwrap_or_else(|e| {
                tracing::error!(%peer, %e, "cannot record sent messages");
                Vec::new()
            })
    }

    /// Tells the browser that these messages left (those still `queued`;
    /// a retried message was announced the first time).
    fn announce_sent(&self, pending: &[ChatMessage]) {
        for m in pending.iter().filter(|m| m.state == MessageState::Queued) {
            self.announce_state(m, MessageState::Sent);
        }
    }

    /// After a failed attempt: the messages announced `sent` in it that
    /// the store still has `queued` (the link broke before they were
    /// recorded or acknowledged) are announced `queued` again, so that the
    /// browser does not show as sent what waits (for instance for a key
    /// to be accepted).
    fn announce_requeued(&self, pending: &[ChatMessage]) {
        for m in pending.iter().filter(|m| m.state == MessageState::Queued) {
            if let Ok(Some(now)) = self.inner.store.get(m.seq) {
                if now.state == MessageState::Queued {
                    self.announce_state(m, MessageState::Queued);
                }
            }
        }
    }

    fn mark_delivered(&self, peer: &str, pending: &[ChatMessage], seqs: &[i64]) {
        if seqs.is_empty() {
            return;
        }
        match self.inner.store.mark_delivered(peer, seqs) {
            Ok(changed) => self.announce_delivered(pending, &changed),
            Err(e) => tracing::error!(%peer, %e, "cannot record delivery"),
        }
    }

    /// Tells the browser that these of `pending` are delivered.
    fn announce_delivered(&self, pending: &[ChatMessage], seqs: &[i64]) {
        for seq in seqs {
            if let Some(m) = pending.iter().find(|m| m.seq == *seq) {
                self.announce_state(m, MessageState::Delivered);
            }
        }
    }

    /// Tells the browser where our message `m` stands now (in a room,
    /// `m.peer` is our own name).
    fn announce_state(&self, m: &ChatMessage, state: MessageState) {
        self.inner.events.publish(Event::MessageState {
            peer: m.peer.clone(),
            id: m.id.clone(),
            state,
            room: m.room.clone(),
        });
    }

    /// Stores received messages (dropping duplicates), announces the new
    /// ones, and returns once they are on disk: only then may they be
    /// acknowledged. Returns false if they could not be stored or synced
    /// (then nothing is acknowledged and the sender retries; a repeat is
    /// dropped by id).
    async fn receive(&self, batch: Vec<Incoming>) -> bool {
        if batch.is_empty() {
            return true;
        }
        for m in &batch {
            self.inner.peers.ensure(&m.sender);
        }
        let commit = match self.inner.store.receive(&batch) {
            Ok((stored, commit)) => {
                for message in stored.into_iter().flatten() {
                    self.inner.events.publish(Event::Message { message });
                }
                commit
            }
            Err(e) => {
                tracing::error!(%e, "cannot store received messages");
                return false;
            }
        };
        match self.sync(commit).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(%e, "cannot sync received messages");
                false
            }
        }
    }

    pub(crate) fn me(&self) -> &str {
        &self.inner.cfg.name
    }

    pub(crate) fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Serves the chat port until shutdown.
    pub async fn serve(self, listener: TcpListener) {
        let mut refusals = RefusalLog::default();
        loop {
            let Some((stream, peer)) = accept(&listener, &self.inner.shutdown, "chat").await else {
                return;
            };
            let admission = match self.inner.inbound.admit(peer.ip()) {
                Ok(a) => a,
                Err(why) => {
                    refusals.refused("chat", peer, &why);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            self.inner.tracker.spawn(async move {
                let _admission = admission;
                let mut stream = stream;
                match this.first_byte(&stream).await {
                    Some(roundtable_shared::binary::MARKER) => {
                        this.receive_exchange(&mut stream, peer).await;
                        return;
                    }
                    Some(_) => {}
                    // Silent past the first-frame deadline, or gone.
                    None => return,
                }
                let mut conn = Connection::new(stream, chat_limits()).with_read_chunk(64 * 1024);
                match this.inbound(&mut conn, peer).await {
                    Ok(None) => {}
                    Ok(Some(file)) => {
                        if let Err(e) = this.receive_file(conn, file).await {
                            tracing::debug!(%peer, %e, "file connection ended");
                        }
                        return;
                    }
                    Err(e) => tracing::debug!(%peer, %e, "chat connection ended"),
                }
                conn.shutdown().await;
            });
        }
    }

    /// The first byte of an incoming connection, left in place: `0x01`
    /// starts an NVFlare binary exchange, eurechat frames start with a
    /// letter. `None` if nothing came within the first-frame deadline.
    async fn first_byte(&self, stream: &TcpStream) -> Option<u8> {
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.inner.cfg.first_frame_timeout, stream.peek(&mut first))
            .await
        {
            Ok(Ok(1)) => Some(first[0]),
            _ => None,
        }
    }

    /// A bare binary exchange from an NVFlare-compatible sender: stored as
    /// a file from that address under `files_dir`, atomically (nothing
    /// kept if it fails). Refused under `--require-secure` (it is a plain
    /// connection) or when the node keeps no files.
    async fn receive_exchange(&self, stream: &mut TcpStream, from: SocketAddr) {
        let Some(dir) = self
            .inner
            .cfg
            .files_dir
            .as_ref()
            .filter(|_| !self.inner.overlay.require_secure)
        else {
            tracing::info!(%from, "binary exchange refused on the chat port");
            return;
        };
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            tracing::error!(dir = %dir.display(), %e, "cannot create the files folder");
            return;
        }
        let mut limits = roundtable_shared::binary::Limits::default();
        if let Some(t) = &self.inner.transfers {
            limits.max_body = limits.max_body.min(t.config().max_file_size);
        }
        let idle = self
            .inner
            .cfg
            .inbound_idle_timeout
            .min(Duration::from_secs(30));
        match crate::transfer::raw::receive(stream, dir, from, limits, idle).await {
            Ok(r) => {
                tracing::info!(%from, path = %r.path.display(), size = r.size, sha256 = %r.sha256, "file received on the chat port");
                if let Some(t) = &self.inner.transfers {
                    t.record_bare(&r, from).await;
                }
            }
            Err(e) => tracing::warn!(%from, %e, "binary exchange refused; nothing kept"),
        }
    }

    /// One incoming connection. In clear: answers PING, stores MESSAGE and
    /// MSG as unverified (acking MSG once stored), unless refused (see the
    /// module doc). A `HELLO` turns it into a secure connection
    /// ([`Chat::inbound_secure`]). Nothing of ours is ever sent to a user
    /// over a plain incoming connection: replies go to the user's listed
    /// address.
    async fn inbound(
        &self,
        conn: &mut Connection<TcpStream>,
        addr: SocketAddr,
    ) -> Result<Option<FileConnection>, LinkError> {
        let cfg = &self.inner.cfg;
        let mut wait = cfg.first_frame_timeout;
        loop {
            let first = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(None),
                r = conn.read_frame_within(wait) => match r? {
                    Some(f) => f,
                    None => return Ok(None),
                },
            };
            // A malformed HELLO is answered like any unknown frame, as a
            // classic peer would.
            if let Some(hello) = as_hello(&first).filter(|_| self.inner.overlay.secure) {
                return self.inbound_secure(conn, addr, hello).await;
            }
            wait = cfg.inbound_idle_timeout;
            // Everything that arrived together is stored in one transaction.
            let mut frames = vec![first];
            let mut hello = None;
            while frames.len() < 1024 && hello.is_none() {
                match conn.buffered_frame()? {
                    Some(f) => match as_hello(&f).filter(|_| self.inner.overlay.secure) {
                        None => frames.push(f),
                        // Handle what came before it, then switch.
                        Some(h) => hello = Some(h),
                    },
                    None => break,
                }
            }
            let (replies, end) = self.handle(frames, Origin::Claimed(addr)).await;
            if !replies.is_empty() {
                conn.write_frames_within(&replies, cfg.write_timeout)
                    .await?;
            }
            if end {
                return Ok(None);
            }
            if let Some(h) = hello {
                return self.inbound_secure(conn, addr, h).await;
            }
        }
    }

    /// The responder's side of the Noise channel on an incoming connection,
    /// then its sealed frames until the peer goes away.
    async fn inbound_secure(
        &self,
        conn: &mut Connection<TcpStream>,
        addr: SocketAddr,
        hello: Hello,
    ) -> Result<Option<FileConnection>, LinkError> {
        let cfg = &self.inner.cfg;
        let overlay = &self.inner.overlay;
        let claimed = hello.from.clone();
        let expected = overlay.trust.expected(&claimed)?;
        let session = match channel::accept(
            conn,
            &overlay.identity,
            &overlay.me,
            Some(hello),
            |_| expected,
            &overlay.channel,
        )
        .await
        {
            Ok(s) => s,
            Err(ChannelError::KeyMismatch { peer, found, .. }) => {
                // Anyone can claim a name here: refused, not offered.
                tracing::warn!(%addr, %peer, presented = %found.fingerprint(), "incoming secure connection refused: not the key pinned for that name");
                return Err(LinkError::KeyChanged { peer });
            }
            Err(e) => {
                tracing::info!(%addr, claimed = %claimed, %e, "incoming secure handshake failed");
                return Err(e.into());
            }
        };
        let peer = session.peer().to_owned();
        match overlay.trust.claimed(&peer, session.remote_static())? {
            Verdict::Trusted => {}
            Verdict::Changed { .. } => return Err(LinkError::KeyChanged { peer }),
        }
        let mut session = session;
        let mut first = true;
        loop {
            let f = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(None),
                r = conn.read_frame_within(cfg.inbound_idle_timeout) => match r? {
                    Some(f) => f,
                    None => return Ok(None),
                },
            };
            let mut frames = open_frame(&mut session, f)?;
            while frames.len() < 1024 {
                match conn.buffered_frame()? {
                    Some(f) => frames.extend(open_frame(&mut session, f)?),
                    None => break,
                }
            }
            if frames.is_empty() {
                continue;
            }
            // A connection that starts with a file offer carries a file.
            if std::mem::take(&mut first) && TransferFrame::is_transfer(&frames[0].kind) {
                let Some(t) = &self.inner.transfers else {
                    return Ok(None);
                };
                return Ok(Some(FileConnection {
                    transfers: t.clone(),
                    session,
                    peer,
                    first: frames,
                    shares_room: self.shares_room(),
                }));
            }
            let (replies, end) = self.handle(frames, Origin::Proven(&peer)).await;
            if !replies.is_empty() {
                let sealed = seal_all(&mut session, &replies)?;
                conn.write_frames_within(&sealed, cfg.write_timeout).await?;
            }
            if end {
                return Ok(None);
            }
        }
    }

    /// Serves a file connection on the transfers' runtime, below chat's
    /// priority (`transfer::bulk`), until it ends.
    async fn receive_file(
        &self,
        conn: Connection<TcpStream>,
        file: FileConnection,
    ) -> Result<(), LinkError> {
        let (stream, read) = conn.into_parts();
        // Off this runtime's reactor, onto the other's.
        let stream = stream.into_std().map_err(FramingError::Io)?;
        let FileConnection {
            transfers: t,
            mut session,
            peer,
            first,
            shares_room,
        } = file;
        let served = self.inner.tracker.spawn_on(
            async move {
                let stream = TcpStream::from_std(stream).map_err(FramingError::Io)?;
                let mut conn = Connection::from_parts(stream, read, chat_limits());
                let r = t
                    .receive(&mut conn, &mut session, &peer, first, shares_room)
                    .await;
                conn.shutdown().await;
                r
            },
            crate::transfer::bulk::runtime(),
        );
        served
            .await
            .map_err(|e| LinkError::from(FramingError::Io(std::io::Error::other(e))))?
    }

    /// What to do with frames received together: stores the messages in
    /// one transaction and returns the replies (acks only once stored),
    /// and whether to end the connection.
    async fn handle(&self, frames: Vec<Frame>, origin: Origin<'_>) -> (Vec<Frame>, bool) {
        let trust = &self.inner.overlay.trust;
        let mut batch = Vec::new();
        let mut room_batch = Vec::new();
        let mut replies = Vec::new();
        let mut acks = Vec::new();
        let mut end = false;
        let claim_refused = |sender: &str| -> Option<String> {
            let Origin::Claimed(_) = origin else {
                return None;
            };
            if self.inner.overlay.require_secure {
                Some("this node accepts messages over the secure channel only".to_owned())
            } else if self.inner.overlay.secure && trust.is_secure_peer(sender) {
                Some(format!(
                    "{sender} is a Roundtable node: its messages come over its secure channel only"
                ))
            } else {
                None
            }
        };
        for f in &frames {
            if let (Origin::Proven(peer), RpcFrame::REQ | RpcFrame::REP) = (origin, f.kind.as_str())
            {
                match RpcFrame::parse(f) {
                    Ok(req @ RpcFrame::Req { .. }) => {
                        // Handlers are bounded by the caller's deadline and
                        // by count; ours (`info`) answer at once.
                        replies.extend(
                            self.inner
                                .handlers
                                .serve(peer, req)
                                .await
                                .map(|r| r.to_frame()),
                        );
                    }
                    Ok(rep @ RpcFrame::Rep { .. }) => {
                        self.inner.requests.complete(peer, rep);
                    }
                    Err(e) => tracing::debug!(%peer, %e, "bad request frame dropped"),
                }
                continue;
            }
            if let (Origin::Proven(peer), roundtable_shared::room::KIND) = (origin, f.kind.as_str())
            {
                match roundtable_shared::room::RoomFrame::parse(f) {
                    Ok(r) if r.sender == peer => {
                        acks.push(PeerFrame::MsgAck { id: r.id.clone() }.to_frame());
                        room_batch.push(r);
                    }
                    Ok(r) => {
                        tracing::warn!(%peer, claimed = %r.sender, "secure peer sent a room message in another's name: dropped");
                    }
                    Err(e) => tracing::debug!(%peer, %e, "bad room frame dropped"),
                }
                continue;
            }
            // A message (with its id when it is a MSG), or handled here.
            let (sender, id, text) = match (PeerFrame::parse(f), origin) {
                (Ok(PeerFrame::Ping { caps }), _) => {
                    let caps = caps.and(self.inner.overlay.capabilities());
                    replies.push(PeerFrame::Pong { caps }.to_frame());
                    continue;
                }
                (Ok(PeerFrame::Pong { .. } | PeerFrame::MsgAck { .. }), _) => continue,
                (Ok(PeerFrame::Message { sender, text }), _) => (sender, None, text),
                (Ok(PeerFrame::Msg { sender, id, text }), _) => (sender, Some(id), text),
                (Err(e), Origin::Claimed(addr)) => {
                    tracing::debug!(%addr, %e, "bad peer frame");
                    replies.push(Frame::bare("ERR", e.to_string()));
                    end = true;
                    break;
                }
                (Err(e), Origin::Proven(peer)) => {
                    // A newer peer may speak frames we do not know yet.
                    tracing::debug!(%peer, %e, "unknown frame in the secure channel");
                    continue;
                }
            };
            if !valid_name(&sender) {
                replies.push(Frame::bare("ERR", "invalid sender name"));
                continue;
            }
            if let Origin::Proven(peer) = origin {
                if sender != peer {
                    tracing::warn!(%peer, claimed = %sender, "secure peer sent a message in another's name: dropped");
                    continue;
                }
            }
            if let Some(why) = claim_refused(&sender) {
                tracing::info!(?origin, claimed = %sender, "plain message refused");
                replies.push(Frame::bare("ERR", why));
                continue;
            }
            if let Some(id) = &id {
                acks.push(PeerFrame::MsgAck { id: id.clone() }.to_frame());
            }
            batch.push(Incoming {
                sender,
                id,
                text,
                verified: matches!(origin, Origin::Proven(_)),
            });
        }
        if !self.receive(batch).await || !self.receive_rooms(room_batch).await {
            // Not stored: acknowledge nothing; the sender will retry.
            return (replies, true);
        }
        replies.extend(acks);
        (replies, end)
    }

    /// The conversations, newest first (for the web bridge, so that it
    /// never reaches into the store itself).
    pub async fn chats(&self) -> Result<Vec<roundtable_shared::api::ChatSummary>, ChatError> {
        let store = self.inner.store.clone();
        Ok(crate::store::blocking(move || store.chats()).await?)
    }

    /// A page of the conversation with `peer`: up to `limit` messages before
    /// `before` (a seq; `None` for the newest), oldest first.
    pub async fn history(
        &self,
        peer: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let (store, peer) = (self.inner.store.clone(), peer.to_owned());
        Ok(crate::store::blocking(move || store.history(&peer, before, limit)).await?)
    }

    /// Marks the conversation with `peer` read up to `seq` (never back)
    /// and tells every browser.
    pub async fn mark_read(&self, peer: &str, seq: i64) -> Result<ReadState, ChatError> {
        if !valid_name(peer) {
            return Err(ChatError::BadPeer(peer.to_owned()));
        }
        let (store, p) = (self.inner.store.clone(), peer.to_owned());
        let state = crate::store::blocking(move || store.mark_read(&p, seq)).await?;
        self.inner.events.publish(Event::ReadState {
            state: state.clone(),
        });
        Ok(state)
    }

    /// Messages of every conversation matching `query`, newest first.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>, ChatError> {
        let (store, q) = (self.inner.store.clone(), query.to_owned());
        Ok(crate::store::blocking(move || store.search(&q, limit)).await?)
    }
}
