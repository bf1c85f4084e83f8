//! Request/reply over the secure overlay (issue 13): typed requests with an
//! id and a deadline, fan-out to many peers reporting who did not answer,
//! and per-kind handlers that are cancelled at the deadline, with a final
//! step that runs only when the handler completed (Fed-BioMed's
//! `send_nodes` and handler/final split, done with tokio cancellation).
//!
//! Transport-independent: nothing here opens a connection or seals a
//! frame. The node plugs in "seal this frame and write it to that peer's
//! link" (direct or relayed) as the `send` function of [`fan_out`], and
//! feeds every frame it opens from a peer's session to the right table.
//!
//! # Wire (defined in [`roundtable_shared::rpc`], carried inside `SEC`)
//!
//! | Frame | Meaning |
//! |---|---|
//! | `REQ <len> <id> <kind> <timeout_ms>` + body | a request; `id` is 128 random bits, `timeout_ms` how long the caller waits |
//! | `REP <len> <id> <status>` + body | its reply: `ok` (body = result), `error`, `unknown_kind`, `busy` (body = a sentence) |
//!
//! # Guarantees
//!
//! - **Who may complete what.** [`Requests`] remembers the peer each
//!   request was sent to; [`Requests::complete`] resolves it only when the
//!   reply comes from that peer's authenticated session. A peer cannot
//!   answer (or spoil) another peer's request, even if it learns the id.
//! - **Bounds.** At most [`DEFAULT_MAX_OUTSTANDING`] requests wait for a
//!   reply at once (more is [`CallError::Full`]); at most
//!   [`DEFAULT_MAX_RUNNING`] handlers run at once for all peers together
//!   and [`DEFAULT_MAX_RUNNING_PER_PEER`] for any one peer (more is
//!   answered `busy` at once), so a peer can neither make us spawn
//!   unbounded work nor take every slot from the others. Bodies are at
//!   most [`MAX_BODY`] bytes both ways.
//! - **Deadlines, caller side.** [`fan_out`] sends to every peer at once
//!   and returns at its deadline at the latest, earlier when everyone has
//!   answered; a dead or slow peer delays nobody else's result. An entry
//!   leaves the table when its reply arrives, when its deadline passes and
//!   when its [`Pending`] is dropped, so a late reply finds nothing and is
//!   dropped, and nothing leaks.
//! - **Deadlines, handler side.** A handler gets the caller's deadline
//!   (from the moment the request arrived). When it passes, the handler's
//!   [`CancellationToken`] is cancelled and its future dropped, its final
//!   step does not run, and no reply is sent: the caller has stopped
//!   waiting, so a late "timed out" would only be dropped on arrival.
//!
//! # Wiring
//!
//! For every frame opened from `peer`'s session: [`RpcFrame::parse`];
//! a `Req` goes to a spawned task running [`Handlers::serve`] (so the link
//! keeps reading while a handler runs) whose reply, if any, is sealed back
//! to `peer`; a `Rep` goes to [`Requests::complete`]; `RpcError::Unknown`
//! goes on to the chat parser; any other error is logged and dropped.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::FutureExt;
use rand_core::{OsRng, RngCore};
use roundtable_shared::frame::Frame;
use roundtable_shared::rpc::{
    valid_kind, valid_timeout, InfoReply, RequestId, RpcError, RpcFrame, Status, ID_LEN, INFO,
    MAX_BODY,
};
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// Requests that may wait for a reply at once, by default.
pub const DEFAULT_MAX_OUTSTANDING: usize = 4_096;

/// Handlers that may run at once, by default, for all peers together.
pub const DEFAULT_MAX_RUNNING: usize = 64;

/// Handlers that may run at once, by default, for any one peer, so one
/// peer cannot take every slot and leave the others `busy`.
pub const DEFAULT_MAX_RUNNING_PER_PEER: usize = 16;

/// A reply that reached the caller in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// From [`Requests::start`] to the reply's arrival.
    pub rtt: Duration,
    pub status: Status,
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("too many requests outstanding (at most {0})")]
    Full(usize),
    #[error("no answer in time")]
    Timeout,
}

/// What [`Requests::complete`] did with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// It answered an outstanding request, which is now resolved.
    Resolved,
    /// The id is outstanding but was sent to another peer: ignored, the
    /// request still waits for its own peer.
    WrongPeer,
    /// No such request waits (late, answered already, or never sent):
    /// dropped.
    Unknown,
    /// The frame was a request, not a reply.
    NotAReply,
}

struct Entry {
    peer: String,
    started: Instant,
    tx: oneshot::Sender<Answer>,
}

struct Table {
    entries: HashMap<RequestId, Entry>,
    max: usize,
}

/// The requests we sent and still wait for. Cheap to clone: clones share
/// one table.
#[derive(Clone)]
pub struct Requests {
    table: Arc<Mutex<Table>>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests::with_limit(DEFAULT_MAX_OUTSTANDING)
    }
}

impl Requests {
    /// A table bounded to [`DEFAULT_MAX_OUTSTANDING`].
    pub fn new() -> Requests {
        Requests::default()
    }

    /// A table holding at most `max` outstanding requests.
    pub fn with_limit(max: usize) -> Requests {
        Requests {
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::new(),
                max,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Registers a request about to be sent to `peer`: a fresh random id
    /// and the [`Pending`] to await its reply with.
    pub fn start(&self, peer: &str) -> Result<(RequestId, Pending), CallError> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.lock();
        if table.entries.len() >= table.max {
            return Err(CallError::Full(table.max));
        }
        let id = loop {
            let mut bytes = [0u8; ID_LEN];
            OsRng.fill_bytes(&mut bytes);
            let id = RequestId(bytes);
            if !table.entries.contains_key(&id) {
                break id;
            }
        };
        table.entries.insert(
            id,
            Entry {
                peer: peer.to_owned(),
                started: Instant::now(),
                tx,
            },
        );
        drop(table);
        let pending = Pending {
            id,
            requests: self.clone(),
            rx,
        };
        Ok((id, pending))
    }

    /// Hands a reply that arrived over `from_peer`'s authenticated session
    /// to the request it answers, if that request was sent to `from_peer`
    /// and still waits.
    pub fn complete(&self, from_peer: &str, reply: RpcFrame) -> Completion {
        let RpcFrame::Rep { id, status, body } = reply else {
            return Completion::NotAReply;
        };
        let mut table = self.lock();
        let Some(entry) = table.entries.get(&id) else {
            drop(table);
            tracing::debug!(%id, peer = from_peer, "reply to no waiting request (late?) dropped");
            return Completion::Unknown;
        };
        if entry.peer != from_peer {
            let expected = entry.peer.clone();
            drop(table);
            tracing::debug!(%id, peer = from_peer, %expected, "reply from a peer the request was not sent to ignored");
            return Completion::WrongPeer;
        }
        let Some(entry) = table.entries.remove(&id) else {
            return Completion::Unknown;
        };
        drop(table);
        let answer = Answer {
            rtt: entry.started.elapsed(),
            status,
            body,
        };
        // Fails only if the Pending is being dropped right now: nobody waits.
        let _ = entry.tx.send(answer);
        Completion::Resolved
    }

    /// Requests waiting for a reply now.
    pub fn outstanding(&self) -> usize {
        self.lock().entries.len()
    }

    fn forget(&self, id: &RequestId) {
        self.lock().entries.remove(id);
    }
}

/// One request's reply, to come. Dropping it withdraws the request: a
/// reply arriving afterwards is dropped.
pub struct Pending {
    id: RequestId,
    requests: Requests,
    rx: oneshot::Receiver<Answer>,
}

impl Pending {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Waits for the reply up to `timeout` from now.
    pub async fn wait(self, timeout: Duration) -> Result<Answer, CallError> {
        self.wait_until(Instant::now() + timeout).await
    }

    /// Waits for the reply up to `deadline`; the request is withdrawn
    /// either way.
    pub async fn wait_until(mut self, deadline: Instant) -> Result<Answer, CallError> {
        match timeout_at(deadline, &mut self.rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The sender only goes without sending when the entry is
            // withdrawn, which is a deadline too.
            Ok(Err(_)) | Err(_) => Err(CallError::Timeout),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.requests.forget(&self.id);
    }
}

/// What became of a request to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer replied in time (with any status: `busy` is an answer).
    Answered {
        rtt: Duration,
        status: Status,
        body: Vec<u8>,
    },
    /// No reply in time, or the request could not be sent; `reason` says
    /// which in words (`no answer within 3000 ms`, the send error, ...).
    NoAnswer { reason: String },
}

/// One peer's line of a [`fan_out`] result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOutcome<P> {
    pub peer: String,
    /// What `send` returned for this peer (how the request went: direct,
    /// relayed), if it was sent.
    pub path: Option<P>,
    pub outcome: Outcome,
}

/// Sends one `kind` request with `body` to every peer at once and waits up
/// to `timeout` in total for the replies. Returns one line per peer, in
/// name order (duplicates asked once), at the deadline at the latest.
///
/// `send(peer, frame)` delivers the `REQ` frame to that peer's session
/// (seal and write); its `Ok` value is reported as the line's `path`, its
/// error as the reason the peer did not answer. All sends run
/// concurrently, each bounded by the same deadline, so one peer's stalled
/// link delays no other.
///
/// Errors only on a request that can never be sent: a kind that is not
/// [`valid_kind`], a body over [`MAX_BODY`], or a timeout outside
/// 1 ms..=600 s.
pub async fn fan_out<P, S, Fut>(
    requests: &Requests,
    peers: impl IntoIterator<Item = impl Into<String>>,
    kind: &str,
    body: &[u8],
    timeout: Duration,
    send: S,
) -> Result<Vec<PeerOutcome<P>>, RpcError>
where
    S: Fn(&str, Frame) -> Fut,
    Fut: Future<Output = Result<P, String>>,
{
    let timeout_ms = u32::try_from(timeout.as_millis())
        .ok()
        .filter(|ms| valid_timeout(*ms))
        .ok_or_else(|| RpcError::BadTimeout(timeout.as_millis().to_string()))?;
    if !valid_kind(kind) {
        return Err(RpcError::BadKind(kind.to_owned()));
    }
    if body.len() > MAX_BODY {
        return Err(RpcError::BodyTooLarge { len: body.len() });
    }
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<String> = peers.into_iter().map(Into::into).collect();
    peers.sort();
    peers.dedup();
    let send = &send;
    let asks = peers.into_iter().map(|peer| async move {
        let no_answer = |peer: String, path: Option<P>, reason: String| PeerOutcome {
            peer,
            path,
            outcome: Outcome::NoAnswer { reason },
        };
        let (id, pending) = match requests.start(&peer) {
            Ok(started) => started,
            Err(e) => return no_answer(peer, None, e.to_string()),
        };
        let frame = RpcFrame::Req {
            id,
            kind: kind.to_owned(),
            timeout_ms,
            body: body.to_vec(),
        }
        .to_frame();
        let path = match timeout_at(deadline, send(&peer, frame)).await {
            Ok(Ok(path)) => path,
            Ok(Err(reason)) => return no_answer(peer, None, reason),
            Err(_) => {
                return no_answer(peer, None, format!("could not send within {timeout_ms} ms"))
            }
        };
        match pending.wait_until(deadline).await {
            Ok(Answer { rtt, status, body }) => PeerOutcome {
                peer,
                path: Some(path),
                outcome: Outcome::Answered { rtt, status, body },
            },
            Err(_) => no_answer(
                peer,
                Some(path),
                format!("no answer within {timeout_ms} ms"),
            ),
        }
    });
    Ok(join_all(asks).await)
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;
type HandlerFn = dyn Fn(String, Vec<u8>, CancellationToken) -> HandlerFuture + Send + Sync;
type FinalFn = dyn Fn(&str, &[u8]) + Send + Sync;

struct Handler {
    run: Box<HandlerFn>,
    final_step: Option<Box<FinalFn>>,
}

/// Handlers running now, in total and per peer.
struct Running {
    total: usize,
    per_peer: HashMap<String, usize>,
    max_total: usize,
    max_per_peer: usize,
}

/// One running handler's place in [`Running`], given back when dropped
/// (the handler finished, failed, panicked or was cancelled).
struct Slot {
    running: Arc<Mutex<Running>>,
    peer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = lock(&self.running);
        running.total -= 1;
        if let Some(n) = running.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                running.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Locks a mutex whose data is consistent after every statement, so a
/// panic elsewhere while it was held leaves nothing to repair.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request kinds this node answers, and the bounds on handlers running
/// at once. Cheap to clone: clones share the bounds.
#[derive(Clone)]
pub struct Handlers {
    kinds: HashMap<String, Arc<Handler>>,
    running: Arc<Mutex<Running>>,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers::with_limits(DEFAULT_MAX_RUNNING, DEFAULT_MAX_RUNNING_PER_PEER)
    }
}

impl Handlers {
    /// No handlers yet; at most [`DEFAULT_MAX_RUNNING`] run at once, at
    /// most [`DEFAULT_MAX_RUNNING_PER_PEER`] for one peer.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// No handlers yet; at most `max_running` run at once, at most
    /// `max_per_peer` of them for one peer.
    pub fn with_limits(max_running: usize, max_per_peer: usize) -> Handlers {
        Handlers {
            kinds: HashMap::new(),
            running: Arc::new(Mutex::new(Running {
                total: 0,
                per_peer: HashMap::new(),
                max_total: max_running,
                max_per_peer,
            })),
        }
    }

    /// The default bound and the built-in `info` handler for user `name`.
    pub fn with_info(name: &str) -> Handlers {
        let mut handlers = Handlers::new();
        handlers.register_info(name);
        handlers
    }

    /// Answers `info` with this build's [`InfoReply`] for user `name`.
    pub fn register_info(&mut self, name: &str) {
        let body = serde_json::to_vec(&InfoReply::this_build(name)).expect("InfoReply serializes");
        self.register(INFO, move |_peer, _body, _cancel| {
            let body = body.clone();
            async move { Ok(body) }
        })
        .expect("info is a valid kind");
    }

    /// Answers `kind` with `handler(from_peer, body, cancel)`: `Ok` is
    /// replied `ok` with the output as body, `Err` is replied `error` with
    /// the sentence (which the peer sees: no secrets in it). `cancel` fires
    /// at the caller's deadline, just before the future is dropped, for work
    /// the handler started elsewhere (a spawned task, a child process).
    /// Registering a kind again replaces its handler.
    pub fn register<F, Fut>(&mut self, kind: &str, handler: F) -> Result<(), RpcError>
    where
        F: Fn(String, Vec<u8>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        self.insert(kind, handler, None)
    }

    /// Like [`register`](Self::register), plus `final_step(from_peer,
    /// &output)`, run once after the handler returned `Ok` before its
    /// deadline (and its output fits a reply), just before the reply is
    /// handed back. Never run for a handler that failed, timed out or was
    /// cancelled. Keep it short: it is synchronous.
    pub fn register_with_final<F, Fut, G>(
        &mut self,
        kind: &str,
        handler: F,
        final_step: G,
    ) -> Result<(), RpcError>
    where
        F: Fn(String, Vec<u8>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
        G: Fn(&str, &[u8]) + Send + Sync + 'static,
    {
        self.insert(kind, handler, Some(Box::new(final_step)))
    }

    fn insert<F, Fut>(
        &mut self,
        kind: &str,
        handler: F,
        final_step: Option<Box<FinalFn>>,
    ) -> Result<(), RpcError>
    where
        F: Fn(String, Vec<u8>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        if !valid_kind(kind) {
            return Err(RpcError::BadKind(kind.to_owned()));
        }
        let run: Box<HandlerFn> =
            Box::new(move |peer, body, cancel| Box::pin(handler(peer, body, cancel)));
        self.kinds
            .insert(kind.to_owned(), Arc::new(Handler { run, final_step }));
        Ok(())
    }

    /// Handlers running now.
    pub fn running(&self) -> usize {
        lock(&self.running).total
    }

    /// A place for one more handler for `peer`, or why there is none.
    fn take_slot(&self, peer: &str) -> Result<Slot, String> {
        let mut running = lock(&self.running);
        if running.total >= running.max_total {
            return Err(format!(
                "{} requests are running already; try again later",
                running.max_total
            ));
        }
        let max_per_peer = running.max_per_peer;
        let mine = running.per_peer.entry(peer.to_owned()).or_insert(0);
        if *mine >= max_per_peer {
            return Err(format!(
                "{max_per_peer} of your requests are running already; try again later"
            ));
        }
        *mine += 1;
        running.total += 1;
        Ok(Slot {
            running: self.running.clone(),
            peer: peer.to_owned(),
        })
    }

    /// Runs the handler for a request that arrived over `from_peer`'s
    /// authenticated session and returns the reply to send back, or `None`
    /// when there is nothing to send (the caller's deadline passed, or the
    /// frame was a reply, which belongs to [`Requests::complete`]).
    ///
    /// Unknown kinds are answered `unknown_kind` and requests beyond the
    /// running bounds `busy`, both at once. Dropping the future (the link
    /// closed) cancels the handler like its deadline does.
    pub async fn serve(&self, from_peer: &str, req: RpcFrame) -> Option<RpcFrame> {
        let RpcFrame::Req {
            id,
            kind,
            timeout_ms,
            body,
        } = req
        else {
            tracing::debug!(peer = from_peer, "a reply is not a request to serve");
            return None;
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let reply = |status, body: Vec<u8>| Some(RpcFrame::Rep { id, status, body });
        let Some(handler) = self.kinds.get(&kind) else {
            return reply(
                Status::UnknownKind,
                sentence(format!("no handler for requests of kind {kind}")),
            );
        };
        let _slot = match self.take_slot(from_peer) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(peer = from_peer, %kind, "request refused: {why}");
                return reply(Status::Busy, sentence(why));
            }
        };
        let cancel = CancellationToken::new();
        // Cancels the token if this future is dropped mid-way, or at the
        // deadline; disarmed once the handler has finished.
        let guard = cancel.clone().drop_guard();
        let work =
            AssertUnwindSafe((handler.run)(from_peer.to_owned(), body, cancel)).catch_unwind();
        let result = match timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                drop(guard);
                tracing::debug!(peer = from_peer, %kind, %id, "handler cancelled at the caller's deadline");
                return None;
            }
        };
        guard.disarm();
        match result {
            Ok(Ok(output)) if output.len() > MAX_BODY => reply(
                Status::Error,
                sentence(format!(
                    "the result of {} bytes exceeds the limit of {MAX_BODY}",
                    output.len()
                )),
            ),
            Ok(Ok(output)) => {
                if let Some(final_step) = &handler.final_step {
                    final_step(from_peer, &output);
                }
                reply(Status::Ok, output)
            }
            Ok(Err(reason)) => reply(Status::Error, sentence(reason)),
            Err(_) => {
                tracing::warn!(peer = from_peer, %kind, "request handler panicked");
                reply(Status::Error, sentence("the request failed".to_owned()))
            }
        }
    }
}

/// A reply sentence cut to [`MAX_BODY`] bytes at a character boundary.
fn sentence(mut text: String) -> Vec<u8> {
    if text.len() > MAX_BODY {
        let mut end = MAX_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    const ALICE: &str = "alice";

    /// An in-memory overlay: alice asks, each named peer is a task with its
    /// own [`Handlers`] that serves what it receives and feeds its reply to
    /// alice's [`Requests`], as the node's receive loop will.
    struct Net {
        requests: Requests,
        links: HashMap<String, mpsc::UnboundedSender<Frame>>,
        /// The dead peers' ends of their links: kept open, never read.
        unread: Vec<mpsc::UnboundedReceiver<Frame>>,
    }

    impl Net {
        fn new() -> Net {
            Net {
                requests: Requests::new(),
                links: HashMap::new(),
                unread: Vec::new(),
            }
        }

        /// A peer that answers with `handlers`.
        fn live(&mut self, name: &str, handlers: Handlers) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
            let requests = self.requests.clone();
            let peer = name.to_owned();
            tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    let req = RpcFrame::parse(&frame).expect("alice sends valid requests");
                    let (handlers, requests, name) =
                        (handlers.clone(), requests.clone(), peer.clone());
                    tokio::spawn(async move {
                        if let Some(rep) = handlers.serve(ALICE, req).await {
                            // Through the wire form, as a sealed frame would.
                            let rep = RpcFrame::parse(&rep.to_frame()).unwrap();
                            requests.complete(&name, rep);
                        }
                    });
                }
            });
            self.links.insert(name.to_owned(), tx);
        }

        /// A peer whose link accepts frames but which never answers.
        fn dead(&mut self, name: &str) {
            let (tx, rx) = mpsc::unbounded_channel::<Frame>();
            self.unread.push(rx);
            self.links.insert(name.to_owned(), tx);
        }

        fn send(
            &self,
        ) -> impl Fn(&str, Frame) -> std::future::Ready<Result<&'static str, String>> + '_ {
            move |peer, frame| {
                std::future::ready(match self.links.get(peer) {
                    Some(link) => link
                        .send(frame)
                        .map(|()| "direct")
                        .map_err(|_| "not reachable".to_owned()),
                    None => Err("not reachable".to_owned()),
                })
            }
        }
    }

    fn answering(delay: Duration, text: &'static str) -> Handlers {
        let mut h = Handlers::new();
        h.register("echo", move |_peer, _body, _cancel| async move {
            tokio::time::sleep(delay).await;
            Ok(text.as_bytes().to_vec())
        })
        .unwrap();
        h
    }

    fn request(kind: &str, timeout_ms: u32) -> RpcFrame {
        RpcFrame::Req {
            id: RequestId([7; ID_LEN]),
            kind: kind.to_owned(),
            timeout_ms,
            body: Vec::new(),
        }
    }

    #[tokio::test]
    async fn fan_out_with_one_dead_peer_reports_it_at_the_deadline() {
        let mut net = Net::new();
        net.live("bob", answering(Duration::from_millis(20), "from bob"));
        net.dead("carol");
        net.live("dave", answering(Duration::from_millis(5), "from dave"));
        let timeout = Duration::from_millis(400);
        let started = Instant::now();
        let lines = fan_out(
            &net.requests,
            ["dave", "carol", "bob"],
            "echo",
            b"",
            timeout,
            net.send(),
        )
        .await
        .unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= timeout,
            "returned before the deadline: {elapsed:?}"
        );
        assert!(
            elapsed < 2 * timeout,
            "returned long after the deadline: {elapsed:?}"
        );
        let names: Vec<&str> = lines.iter().map(|l| l.peer.as_str()).collect();
        assert_eq!(names, ["bob", "carol", "dave"]);
        for (line, text, at_least) in [(&lines[0], "from bob", 20), (&lines[2], "from dave", 5)] {
            let Outcome::Answered { rtt, status, body } = &line.outcome else {
                panic!("{} did not answer: {:?}", line.peer, line.outcome);
            };
            assert_eq!((*status, body.as_slice()), (Status::Ok, text.as_bytes()));
            assert!(
                *rtt >= Duration::from_millis(at_least) && *rtt < timeout,
                "{rtt:?}"
            );
            assert_eq!(line.path, Some("direct"));
        }
        assert_eq!(
            lines[1].outcome,
            Outcome::NoAnswer {
                reason: "no answer within 400 ms".into()
            }
        );
        assert_eq!(lines[1].path, Some("direct"));
        assert_eq!(net.requests.outstanding(), 0);
    }

    #[tokio::test]
    async fn fan_out_sends_to_every_peer_at_once() {
        let mut net = Net::new();
        for name in ["bob", "dave", "erin"] {
            net.live(name, answering(Duration::ZERO, "hi"));
        }
        // Each send takes 150 ms (a slow link): one after another, the
        // second would finish at 300 ms, past the 250 ms deadline; at once,
        // all finish by 150 ms.
        let direct = net.send();
        let slow_send = |peer: &str, frame: Frame| {
            let sent = direct(peer, frame);
            async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                sent.await
            }
        };
        let started = Instant::now();
        let lines = fan_out(
            &net.requests,
            ["bob", "dave", "erin"],
            "echo",
            b"",
            Duration::from_millis(250),
            slow_send,
        )
        .await
        .unwrap();
        assert!(
            lines
                .iter()
                .all(|l| matches!(l.outcome, Outcome::Answered { .. })),
            "{lines:?} (started {:?} ago)",
            started.elapsed()
        );
    }

    #[test]
    fn fan_out_can_run_on_any_task() {
        fn assert_send<T: Send>(_: &T) {}
        let requests = Requests::new();
        let ask = fan_out(
            &requests,
            ["bob"],
            INFO,
            b"",
            Duration::from_secs(1),
            |_: &str, _| async { Ok::<(), String>(()) },
        );
        assert_send(&ask);
    }

    #[tokio::test]
    async fn fan_out_returns_as_soon_as_everyone_answered() {
        let mut net = Net::new();
        net.live("bob", answering(Duration::ZERO, "b"));
        net.live("dave", answering(Duration::ZERO, "d"));
        let started = Instant::now();
        let timeout = Duration::from_secs(60);
        let lines = fan_out(
            &net.requests,
            ["bob", "dave"],
            "echo",
            b"",
            timeout,
            net.send(),
        )
        .await
        .unwrap();
        assert!(started.elapsed() < timeout / 2);
        assert!(lines
            .iter()
            .all(|l| matches!(l.outcome, Outcome::Answered { .. })));
    }

    #[tokio::test]
    async fn a_failed_send_is_that_peers_reason_and_nobody_elses() {
        let mut net = Net::new();
        net.live("bob", answering(Duration::ZERO, "from bob"));
        // "erin" has no link at all.
        let lines = fan_out(
            &net.requests,
            ["erin", "bob"],
            "echo",
            b"",
            Duration::from_secs(5),
            net.send(),
        )
        .await
        .unwrap();
        assert_eq!(lines[0].peer, "bob");
        assert!(matches!(
            lines[0].outcome,
            Outcome::Answered {
                status: Status::Ok,
                ..
            }
        ));
        assert_eq!(
            lines[1],
            PeerOutcome {
                peer: "erin".into(),
                path: None,
                outcome: Outcome::NoAnswer {
                    reason: "not reachable".into()
                },
            }
        );
        assert_eq!(net.requests.outstanding(), 0);
    }

    #[tokio::test]
    async fn fan_out_refuses_requests_that_can_never_be_sent() {
        let net = Net::new();
        let ask = |kind: &'static str, body: Vec<u8>, timeout: Duration| {
            let net = &net;
            async move { fan_out(&net.requests, ["bob"], kind, &body, timeout, net.send()).await }
        };
        let second = Duration::from_secs(1);
        assert!(matches!(
            ask("Echo", vec![], second).await,
            Err(RpcError::BadKind(_))
        ));
        assert!(matches!(
            ask("echo", vec![0; MAX_BODY + 1], second).await,
            Err(RpcError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            ask("echo", vec![], Duration::ZERO).await,
            Err(RpcError::BadTimeout(_))
        ));
        assert!(matches!(
            ask("echo", vec![], Duration::from_secs(601)).await,
            Err(RpcError::BadTimeout(_))
        ));
    }

    #[tokio::test]
    async fn a_reply_from_another_peer_does_not_complete_a_request() {
        let requests = Requests::new();
        let (id, pending) = requests.start("bob").unwrap();
        let reply = |body: &str| RpcFrame::Rep {
            id,
            status: Status::Ok,
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            requests.complete("carol", reply("forged by carol")),
            Completion::WrongPeer
        );
        assert_eq!(requests.outstanding(), 1);
        // Bob's own reply still gets through, and it is his body we see.
        assert_eq!(
            requests.complete("bob", reply("from bob")),
            Completion::Resolved
        );
        let answer = pending.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.body, b"from bob");
        assert_eq!(
            requests.complete("bob", reply("again")),
            Completion::Unknown
        );

        // Carol alone cannot resolve it: it times out.
        let (id, pending) = requests.start("bob").unwrap();
        let forged = RpcFrame::Rep {
            id,
            status: Status::Ok,
            body: vec![],
        };
        assert_eq!(requests.complete("carol", forged), Completion::WrongPeer);
        assert_eq!(
            pending.wait(Duration::from_millis(20)).await,
            Err(CallError::Timeout)
        );
        assert_eq!(requests.outstanding(), 0);
    }

    #[tokio::test]
    async fn a_slow_handler_is_cancelled_at_the_deadline_and_its_final_step_skipped() {
        let tokens = Arc::new(Mutex::new(Vec::<CancellationToken>::new()));
        let finals = Arc::new(AtomicUsize::new(0));
        let mut h = Handlers::new();
        let seen = tokens.clone();
        let count = finals.clone();
        h.register_with_final(
            "slow",
            move |_peer, _body, cancel| {
                seen.lock().unwrap().push(cancel);
                async {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok(b"never".to_vec())
                }
            },
            move |_peer, _out| {
                count.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        let count = finals.clone();
        h.register_with_final(
            "fast",
            |_peer, body, _cancel| async move { Ok(body) },
            move |peer, out| {
                assert_eq!((peer, out), ("bob", &b"ping"[..]));
                count.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();

        let started = Instant::now();
        assert_eq!(h.serve("bob", request("slow", 50)).await, None);
        assert!(started.elapsed() < Duration::from_secs(5));
        let token = tokens.lock().unwrap().pop().expect("the handler ran");
        assert!(
            token.is_cancelled(),
            "the slow handler's token did not fire"
        );
        assert_eq!(
            finals.load(Ordering::SeqCst),
            0,
            "final step ran for a cancelled handler"
        );
        assert_eq!(h.running(), 0);

        let mut fast = request("fast", 5_000);
        if let RpcFrame::Req { body, .. } = &mut fast {
            *body = b"ping".to_vec();
        }
        let rep = h.serve("bob", fast).await;
        assert_eq!(
            rep,
            Some(RpcFrame::Rep {
                id: RequestId([7; ID_LEN]),
                status: Status::Ok,
                body: b"ping".to_vec()
            })
        );
        assert_eq!(finals.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropping_serve_cancels_the_handler() {
        let tokens = Arc::new(Mutex::new(Vec::<CancellationToken>::new()));
        let mut h = Handlers::new();
        let seen = tokens.clone();
        h.register("slow", move |_p, _b, cancel| {
            seen.lock().unwrap().push(cancel);
            std::future::pending()
        })
        .unwrap();
        let served = tokio::time::timeout(
            Duration::from_millis(20),
            h.serve("bob", request("slow", 60_000)),
        )
        .await;
        assert!(served.is_err());
        assert!(tokens.lock().unwrap()[0].is_cancelled());
        assert_eq!(h.running(), 0);
    }

    #[tokio::test]
    async fn unknown_kinds_failures_and_the_running_bound_get_their_statuses() {
        let release = CancellationToken::new();
        let mut h = Handlers::with_limits(2, 1);
        let gate = release.clone();
        h.register("wait", move |_p, _b, _c| {
            let gate = gate.clone();
            async move {
                gate.cancelled().await;
                Ok(vec![])
            }
        })
        .unwrap();
        h.register("fail", |_p, _b, _c| async {
            Err("no such dataset".to_owned())
        })
        .unwrap();
        h.register("boom", |_p, _b, _c| async { panic!("handler bug") })
            .unwrap();
        let status = |rep: Option<RpcFrame>| match rep {
            Some(RpcFrame::Rep { status, body, .. }) => (status, String::from_utf8(body).unwrap()),
            other => panic!("not a reply: {other:?}"),
        };

        let (s, why) = status(h.serve("bob", request("train", 1_000)).await);
        assert_eq!(s, Status::UnknownKind);
        assert!(why.contains("train"), "{why}");
        assert_eq!(
            status(h.serve("bob", request("fail", 1_000)).await),
            (Status::Error, "no such dataset".into())
        );
        assert_eq!(
            status(h.serve("bob", request("boom", 1_000)).await).0,
            Status::Error
        );

        let spawn_wait = |peer: &'static str| {
            let h = h.clone();
            tokio::spawn(async move { h.serve(peer, request("wait", 10_000)).await })
        };
        let bob = spawn_wait("bob");
        while h.running() < 1 {
            tokio::task::yield_now().await;
        }
        // One per peer: bob's second is refused, carol's first runs.
        let (s, why) = status(h.serve("bob", request("wait", 10_000)).await);
        assert_eq!(s, Status::Busy);
        assert!(why.contains("your requests"), "{why}");
        let carol = spawn_wait("carol");
        while h.running() < 2 {
            tokio::task::yield_now().await;
        }
        // Two per node: dave, with none running, is refused too.
        let (s, why) = status(h.serve("dave", request("wait", 10_000)).await);
        assert_eq!(s, Status::Busy);
        assert!(why.starts_with("2 requests are running"), "{why}");
        release.cancel();
        assert_eq!(status(bob.await.unwrap()).0, Status::Ok);
        assert_eq!(status(carol.await.unwrap()).0, Status::Ok);
        assert_eq!(h.running(), 0);
        // The slots are free again.
        assert_eq!(
            status(h.serve("dave", request("wait", 10_000)).await).0,
            Status::Ok
        );
        // A reply is not served.
        assert_eq!(
            h.serve(
                "bob",
                RpcFrame::Rep {
                    id: RequestId([1; ID_LEN]),
                    status: Status::Ok,
                    body: vec![]
                }
            )
            .await,
            None
        );
    }

    #[tokio::test]
    async fn info_round_trip_reports_this_build() {
        let mut net = Net::new();
        net.live("bob", Handlers::with_info("bob"));
        let lines = fan_out(
            &net.requests,
            ["bob"],
            INFO,
            b"",
            Duration::from_secs(5),
            net.send(),
        )
        .await
        .unwrap();
        let Outcome::Answered {
            status: Status::Ok,
            body,
            ..
        } = &lines[0].outcome
        else {
            panic!("{:?}", lines[0].outcome);
        };
        let info: InfoReply = serde_json::from_slice(body).unwrap();
        assert_eq!(
            info,
            InfoReply {
                name: "bob".into(),
                version: roundtable_shared::VERSION.into(),
                software: "roundtable".into(),
            }
        );
    }

    #[tokio::test]
    async fn timed_out_withdrawn_and_late_requests_leave_nothing_behind() {
        let mut net = Net::new();
        let dead: Vec<String> = (0..300).map(|i| format!("peer{i:03}")).collect();
        for name in &dead {
            net.dead(name);
        }
        let lines = fan_out(
            &net.requests,
            dead.clone(),
            "echo",
            b"",
            Duration::from_millis(30),
            net.send(),
        )
        .await
        .unwrap();
        assert_eq!(lines.len(), 300);
        assert!(lines
            .iter()
            .all(|l| matches!(l.outcome, Outcome::NoAnswer { .. })));
        assert_eq!(net.requests.outstanding(), 0);

        // A reply after the deadline finds nothing and adds nothing.
        let (id, pending) = net.requests.start("bob").unwrap();
        assert_eq!(
            pending.wait(Duration::from_millis(1)).await,
            Err(CallError::Timeout)
        );
        let late = RpcFrame::Rep {
            id,
            status: Status::Ok,
            body: vec![],
        };
        assert_eq!(net.requests.complete("bob", late), Completion::Unknown);
        // A Pending dropped unawaited withdraws its request.
        let (_id, pending) = net.requests.start("bob").unwrap();
        drop(pending);
        assert_eq!(net.requests.outstanding(), 0);
    }

    #[tokio::test]
    async fn outstanding_requests_are_bounded() {
        let requests = Requests::with_limit(2);
        let (_a, first) = requests.start("bob").unwrap();
        let (_b, _second) = requests.start("bob").unwrap();
        assert_eq!(requests.start("bob").err(), Some(CallError::Full(2)));
        drop(first);
        let (_c, _third) = requests
            .start("bob")
            .expect("room again once one is withdrawn");
        // In a fan-out, the peers beyond the bound are told why.
        let lines = fan_out(
            &requests,
            ["carol"],
            "echo",
            b"",
            Duration::from_millis(10),
            |_: &str, _| std::future::ready(Ok::<(), String>(())),
        )
        .await
        .unwrap();
        assert_eq!(
            lines[0].outcome,
            Outcome::NoAnswer {
                reason: "too many requests outstanding (at most 2)".into()
            }
        );
    }
}
