//! The node's session with the directory: log in, bind the chat port, keep
//! the peer table fresh with QUERY; reconnect with backoff when the
//! directory goes away; LEAVE on shutdown.
//!
//! Two ways the directory can let us down without closing the session:
//! - it drops our registration (its liveness check failed while our chat
//!   port was flooded, say): every all-users answer is checked for our own
//!   entry, and we BIND again on the same session when it is missing or
//!   points elsewhere;
//! - its all-users answer is more than we read (1 MiB) or does not decode:
//!   we log it and, for [`DEGRADED_FOR`], ask for the peers we know (and
//!   ourselves) one at a time instead, rather than reconnecting in a loop.
//!
//! Identity keys (issue 13): [`publish_key`], [`replace_key`] and
//! [`lookup_keys`] speak the directory's `KEY`/`REKEY`/`KEYQUERY` on a
//! logged-in session (see `directory::session` for the bytes). Each
//! session publishes our key after BIND and asks for the keys of peers we
//! have none for; a directory that closes the session on `KEY` (a classic
//! one) is used without key commands from then on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use roundtable_shared::api::{Event, KeyAtDirectory, LinkState};
use roundtable_shared::directory::{
    valid_name, Entry, KeyEntry, ProtocolError, PublicKey, Reply, Request, MAX_KEYQUERY_NAMES,
};
use roundtable_shared::frame::{FrameError, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::peers::Peers;
use super::trust::Trust;
use crate::events::Events;
use crate::framing::{Connection, FramingError};

/// How long the node queries users one at a time after an all-users answer
/// it could not read, before it tries the all-users QUERY again.
pub const DEGRADED_FOR: Duration = Duration::from_secs(300);

/// How long one directory answer may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach and use the directory.
#[derive(Debug, Clone)]
pub struct DirectoryClientConfig {
    /// `host:port` of the directory.
    pub server: String,
    pub name: String,
    pub password: String,
    /// The host others should connect to for our chat port.
    pub advertise_host: String,
    pub chat_port: u16,
    /// Register the chat port with `BIND` (false with `--chat none`: the
    /// node only logs in, and is reached through the relay).
    pub bind: bool,
    pub query_interval: Duration,
    pub max_backoff: Duration,
    /// Our identity key, published with `KEY` after each login (`None`:
    /// publish nothing, as a classic client).
    pub key: Option<PublicKey>,
}

/// How long before asking the directory again about a peer's key (one
/// that had none, or whose key we may have stale): a few `KEYQUERY`s a
/// minute, well inside the directory's limit.
const KEY_RETRY: Duration = Duration::from_secs(10);

/// What the client keeps about keys across its sessions.
struct KeyWork {
    state: watch::Sender<KeyAtDirectory>,
    /// No key commands: we have no key, or the directory does not know
    /// `KEY` (a classic one closed the session on it).
    unsupported: bool,
    /// When we last asked for each peer's key.
    asked: HashMap<String, Instant>,
    /// Our pins, checked against the keys the directory gives.
    trust: Trust,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("directory refused {step}: {reason}")]
    Refused { step: &'static str, reason: String },
    #[error("unexpected answer to {step}: {what}")]
    Unexpected { step: &'static str, what: String },
    #[error(
        "the all-users RESULT is larger than we read ({0}); asking one user at a time from now on"
    )]
    ResultTooLarge(FrameError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a key command did not get an answer we can use. After any of
/// these the session is lost (the directory closed it, or we cannot tell
/// where the next answer starts).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("directory refused {step} and closed the session: {reason}")]
    Closed { step: &'static str, reason: String },
    #[error("unexpected answer to {step}: {what}")]
    Unexpected { step: &'static str, what: String },
}

/// What the directory did with a `KEY` or `REKEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// `KEY`: pinned now or already this key. `REKEY`: replaced.
    Accepted,
    /// `NAK`: refused (another key is pinned, or `REKEY`'s old key is not
    /// the pin); the session stays open and usable. The reason is the
    /// directory's text, for logs and the dashboard.
    Refused(String),
}

/// Handle to read the link state.
#[derive(Debug, Clone)]
pub struct DirectoryLink {
    pub state: watch::Receiver<LinkState>,
    /// What the directory did with our identity key.
    pub key: watch::Receiver<KeyAtDirectory>,
}

impl DirectoryLink {
    pub fn current(&self) -> LinkState {
        *self.state.borrow()
    }

    pub fn key_at_directory(&self) -> KeyAtDirectory {
        *self.key.borrow()
    }
}

/// Starts the client; it runs until `shutdown`, then sends LEAVE.
pub fn spawn(
    cfg: DirectoryClientConfig,
    peers: Peers,
    trust: Trust,
    events: Events,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> DirectoryLink {
    let (tx, rx) = watch::channel(LinkState::Connecting);
    let (key_tx, key_rx) = watch::channel(KeyAtDirectory::Unknown);
    let link = DirectoryLink {
        state: rx,
        key: key_rx,
    };
    let keys = KeyWork {
        state: key_tx,
        // Without a key of our own we speak only the classic commands.
        unsupported: cfg.key.is_none(),
        asked: HashMap::new(),
        trust,
    };
    tracker.spawn(run(cfg, peers, events, tx, keys, shutdown));
    link
}

fn set(state: &watch::Sender<LinkState>, events: &Events, s: LinkState) {
    if *state.borrow() != s {
        state.send_replace(s);
        events.publish(Event::Directory { state: s });
    }
}

async fn run(
    cfg: DirectoryClientConfig,
    peers: Peers,
    events: Events,
    state: watch::Sender<LinkState>,
    mut keys: KeyWork,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    // Survives reconnections: an over-limit answer breaks the session it
    // came on, and the next session must not ask for it again at once.
    let mut degraded_until: Option<Instant> = None;
    loop {
        let result = session(
            &cfg,
            &peers,
            &events,
            &state,
            &mut keys,
            &shutdown,
            &mut degraded_until,
        )
        .await;
        if shutdown.is_cancelled() {
            set(&state, &events, LinkState::Stopped);
            return;
        }
        match result {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(server = %cfg.server, %e, retry_in_ms = backoff.as_millis() as u64, "directory session lost")
            }
        }
        if *state.borrow() == LinkState::Connected {
            // A session that worked starts the backoff afresh.
            backoff = Duration::from_millis(250);
        }
        set(&state, &events, LinkState::Reconnecting);
        tokio::select! {
            _ = shutdown.cancelled() => {
                set(&state, &events, LinkState::Stopped);
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}

/// The next directory answer, interpreted.
async fn reply(
    conn: &mut Connection<TcpStream>,
    step: &'static str,
) -> Result<Result<Reply, ProtocolError>, SessionError> {
    match read_reply(conn, step).await? {
        Ok(Reply::Err(reason)) => Err(SessionError::Refused { step, reason }),
        r => Ok(r),
    }
}

/// The next directory answer, `ERR` included; `Err(_)` inside when it
/// arrived whole but does not decode (logged).
async fn read_reply<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    step: &'static str,
) -> Result<Result<Reply, ProtocolError>, FramingError> {
    let f = conn
        .read_frame_within(REPLY_TIMEOUT)
        .await?
        .ok_or(FramingError::Truncated)?;
    Ok(Reply::parse(&f).inspect_err(|e| {
        tracing::debug!(step, frame = %f, %e, "undecodable directory answer");
    }))
}

/// A reply in a few words, for errors (a RESULT may be a megabyte).
fn describe(r: &Reply) -> String {
    match r {
        Reply::Ack(t) => format!("ACK {t:.80}"),
        Reply::Err(t) => format!("ERR {t:.80}"),
        Reply::Result(entries) => format!("RESULT of {} entries", entries.len()),
        Reply::Nak(t) => format!("NAK {t:.80}"),
        Reply::KeyResult(entries) => format!("KEYRESULT of {} entries", entries.len()),
        Reply::RelayResult(names) => format!("RELAYRESULT of {} names", names.len()),
        Reply::RelayNak { to, reason } => format!("RELAYNAK {to} {reason:.80}"),
        Reply::Relayed(f) => {
            let (kind, from, to, len) = roundtable_shared::directory::summary(f);
            format!("relayed {kind} of {len} bytes from {from} to {to}")
        }
    }
}

/// Sends `req` and reads the directory's typed answer; `ERR` (after which
/// the directory closes) is an error.
async fn key_request<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    step: &'static str,
    req: Request,
) -> Result<Reply, KeyError> {
    conn.write_frame(&req.to_frame()).await?;
    match read_reply(conn, step).await? {
        Ok(Reply::Err(reason)) => Err(KeyError::Closed { step, reason }),
        Ok(r) => Ok(r),
        Err(e) => Err(KeyError::Unexpected {
            step,
            what: e.to_string(),
        }),
    }
}

fn key_outcome(step: &'static str, r: Reply) -> Result<KeyOutcome, KeyError> {
    match r {
        Reply::Ack(_) => Ok(KeyOutcome::Accepted),
        Reply::Nak(reason) => Ok(KeyOutcome::Refused(reason)),
        other => Err(KeyError::Unexpected {
            step,
            what: describe(&other),
        }),
    }
}

/// Publishes our identity key (`KEY`) on a logged-in session. The first
/// publication pins it at the directory; the same key again is accepted;
/// another key while one is pinned is [`KeyOutcome::Refused`].
pub async fn publish_key<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    key: PublicKey,
) -> Result<KeyOutcome, KeyError> {
    let r = key_request(conn, "KEY", Request::Key { key }).await?;
    key_outcome("KEY", r)
}

/// Replaces our pinned key `old` with `new` (`REKEY`), an explicit act
/// (say, after `roundtable node` made a new key and the user confirmed).
pub async fn replace_key<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    old: PublicKey,
    new: PublicKey,
) -> Result<KeyOutcome, KeyError> {
    let r = key_request(conn, "REKEY", Request::Rekey { old, new }).await?;
    key_outcome("REKEY", r)
}

/// The keys the directory has pinned for `names` (`KEYQUERY`, 32 names a
/// request). Names without a key, and names that cannot be accounts, are
/// absent from the map; entries the directory sent for names we did not
/// ask about are ignored.
pub async fn lookup_keys<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    names: &[String],
) -> Result<HashMap<String, PublicKey>, KeyError> {
    let wanted: Vec<String> = names
        .iter()
        .filter(|n| valid_name(n))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut found = HashMap::new();
    for chunk in wanted.chunks(MAX_KEYQUERY_NAMES) {
        let req = Request::KeyQuery {
            names: chunk.to_vec(),
        };
        match key_request(conn, "KEYQUERY", req).await? {
            Reply::KeyResult(entries) => {
                for KeyEntry { name, key } in entries {
                    if chunk.contains(&name) {
                        found.insert(name, key);
                    }
                }
            }
            other => {
                return Err(KeyError::Unexpected {
                    step: "KEYQUERY",
                    what: describe(&other),
                })
            }
        }
    }
    Ok(found)
}

/// Sends `req` and expects an ACK.
async fn ack(
    conn: &mut Connection<TcpStream>,
    step: &'static str,
    req: Request,
) -> Result<(), SessionError> {
    conn.write_frame(&req.to_frame()).await?;
    match reply(conn, step).await? {
        Ok(Reply::Ack(_)) => Ok(()),
        Ok(other) => Err(SessionError::Unexpected {
            step,
            what: describe(&other),
        }),
        Err(e) => Err(SessionError::Unexpected {
            step,
            what: e.to_string(),
        }),
    }
}

/// Asks for everyone. `Ok(None)`: the answer arrived but does not decode
/// (the session is still usable).
async fn query_all(conn: &mut Connection<TcpStream>) -> Result<Option<Vec<Entry>>, SessionError> {
    conn.write_frame(&Request::Query { name: None }.to_frame())
        .await?;
    match reply(conn, "QUERY").await {
        Ok(Ok(Reply::Result(entries))) => Ok(Some(entries)),
        Ok(Ok(other)) => Err(SessionError::Unexpected {
            step: "QUERY",
            what: describe(&other),
        }),
        Ok(Err(_)) => Ok(None),
        Err(SessionError::Framing(FramingError::Frame(e @ FrameError::PayloadTooLarge { .. }))) => {
            Err(SessionError::ResultTooLarge(e))
        }
        Err(e) => Err(e),
    }
}

/// Asks for each of `names` in turn; returns what was listed and the names
/// whose answers were readable.
async fn query_each(
    conn: &mut Connection<TcpStream>,
    names: Vec<String>,
) -> Result<(Vec<Entry>, HashSet<String>), SessionError> {
    let mut listed = Vec::new();
    let mut answered = HashSet::new();
    for name in names {
        conn.write_frame(
            &Request::Query {
                name: Some(name.clone()),
            }
            .to_frame(),
        )
        .await?;
        match reply(conn, "QUERY").await? {
            Ok(Reply::Result(entries)) => {
                listed.extend(entries.into_iter().filter(|e| e.name == name));
                answered.insert(name);
            }
            Ok(other) => {
                return Err(SessionError::Unexpected {
                    step: "QUERY",
                    what: describe(&other),
                })
            }
            Err(e) => {
                tracing::warn!(peer = %name, %e, "directory answer about one user does not decode")
            }
        }
    }
    Ok((listed, answered))
}

impl KeyWork {
    /// A key command's outcome; a directory that closed the session on it
    /// does not know key commands: we stop sending them, and reconnect.
    fn check<T>(&mut self, r: Result<T, KeyError>) -> Result<T, SessionError> {
        if let Err(KeyError::Closed { reason, .. }) = &r {
            tracing::warn!(%reason, "the directory does not take identity keys; carrying on without them");
            self.unsupported = true;
        }
        Ok(r?)
    }

    /// Asks for the keys of up to one `KEYQUERY`'s worth of peers whose
    /// key we do not know yet or may know stale (each at most once per
    /// [`KEY_RETRY`]).
    async fn look_up(
        &mut self,
        conn: &mut Connection<TcpStream>,
        peers: &Peers,
    ) -> Result<(), SessionError> {
        if self.unsupported {
            return Ok(());
        }
        let now = Instant::now();
        if self.asked.len() > 10_000 {
            self.asked.retain(|_, t| now.duration_since(*t) < KEY_RETRY);
        }
        let wanted: Vec<String> = peers
            .keys_wanted()
            .into_iter()
            .filter(|n| {
                self.asked
                    .get(n)
                    .is_none_or(|t| now.duration_since(*t) >= KEY_RETRY)
            })
            .take(MAX_KEYQUERY_NAMES)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        for n in &wanted {
            self.asked.insert(n.clone(), now);
        }
        let found = lookup_keys(conn, &wanted).await;
        let found = self.check(found)?;
        peers.set_keys(&found);
        // A key other than the one we pinned is a key change to show.
        for (name, key) in &found {
            if let Err(e) = self.trust.directory_says(name, key) {
                tracing::error!(%e, "cannot check a key against its pin");
            }
        }
        Ok(())
    }
}

async fn session(
    cfg: &DirectoryClientConfig,
    peers: &Peers,
    events: &Events,
    state: &watch::Sender<LinkState>,
    keys: &mut KeyWork,
    shutdown: &CancellationToken,
    degraded_until: &mut Option<Instant>,
) -> Result<(), SessionError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&cfg.server))
        .await
        .map_err(|_| FramingError::Timeout(Duration::from_secs(5)))?
        .map_err(FramingError::Io)?;
    stream.set_nodelay(true).map_err(FramingError::Io)?;
    let mut conn = Connection::new(stream, Limits::default());
    ack(
        &mut conn,
        "USER",
        Request::User {
            name: cfg.name.clone(),
        },
    )
    .await?;
    ack(
        &mut conn,
        "PASS",
        Request::Pass {
            password: cfg.password.clone(),
        },
    )
    .await?;
    let bind = Request::Bind {
        address: cfg.advertise_host.clone(),
        port: cfg.chat_port,
    };
    if cfg.bind {
        ack(&mut conn, "BIND", bind.clone()).await?;
        tracing::info!(server = %cfg.server, name = %cfg.name, "bound at the directory");
    } else {
        tracing::info!(server = %cfg.server, name = %cfg.name, "logged in at the directory (no chat port: reached through the relay)");
    }
    set(state, events, LinkState::Connected);
    if let Some(key) = cfg.key.filter(|_| !keys.unsupported) {
        let outcome = publish_key(&mut conn, key).await;
        let status = match keys.check(outcome)? {
            KeyOutcome::Accepted => {
                tracing::info!(fingerprint = %key.fingerprint(), "identity key pinned at the directory");
                KeyAtDirectory::Pinned
            }
            KeyOutcome::Refused(reason) => {
                tracing::warn!(%reason, "the directory has another identity key pinned for us; peers that trust it will refuse us until the operator runs `roundtable directory reset-key NAME`");
                KeyAtDirectory::Conflict
            }
        };
        keys.state.send_replace(status);
    }
    loop {
        if degraded_until.is_some_and(|t| Instant::now() >= t) {
            *degraded_until = None;
        }
        let listed = if degraded_until.is_none() {
            match query_all(&mut conn).await {
                Ok(Some(entries)) => Some(entries),
                Ok(None) => {
                    tracing::warn!(server = %cfg.server, "the all-users RESULT does not decode; asking one user at a time from now on");
                    *degraded_until = Some(Instant::now() + DEGRADED_FOR);
                    None
                }
                Err(e @ SessionError::ResultTooLarge(_)) => {
                    // Its payload is still on the wire: this session is lost.
                    *degraded_until = Some(Instant::now() + DEGRADED_FOR);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let is_me = |entries: &[Entry]| {
            entries.iter().any(|e| {
                e.name == cfg.name && e.address == cfg.advertise_host && e.port == cfg.chat_port
            })
        };
        let registered = match listed {
            Some(entries) => {
                peers.apply_directory(&entries);
                keys.look_up(&mut conn, peers).await?;
                is_me(&entries)
            }
            None => {
                let mut names = peers.names();
                names.push(cfg.name.clone());
                let (entries, answered) = query_each(&mut conn, names).await?;
                peers.apply_queried(&entries, &answered);
                // Nothing readable about us: no reason to BIND again.
                !answered.contains(&cfg.name) || is_me(&entries)
            }
        };
        if cfg.bind && !registered {
            tracing::warn!(server = %cfg.server, name = %cfg.name, "our registration is missing from the directory (or points elsewhere); binding again");
            ack(&mut conn, "BIND", bind.clone()).await?;
            tracing::info!(server = %cfg.server, name = %cfg.name, "bound at the directory again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                ack(&mut conn, "LEAVE", Request::Leave).await?;
                tracing::info!("left the directory");
                return Ok(());
            }
            _ = peers.refresh_requested() => {}
            _ = tokio::time::sleep(cfg.query_interval) => {}
        }
    }
}
