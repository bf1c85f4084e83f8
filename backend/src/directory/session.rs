//! One client's session: USER, PASS, then BIND / QUERY / LEAVE, and
//! Roundtable's key commands KEY / REKEY / KEYQUERY and relay commands
//! RELAY / RELAYQUERY / HELLO / SEC.
//!
//! Any protocol violation gets one `ERR <reason>` and the connection is
//! closed, as in the original server. Frames are read and built with
//! `roundtable_shared::directory`; this module is only the state machine
//! and the checks that need the server (log-in, port test, registry, keys).
//!
//! # Identity keys (issue 13)
//!
//! A logged-in client publishes the public half of its Noise X25519
//! static key (64 lowercase hex digits) and looks up others'. Exact bytes
//! (`<n>` is the payload length):
//!
//! ```text
//! KEY 0 <hex>                  -> ACK 13\nkey published
//!                                 (first publication pins it; the pinned key again: same answer)
//!                              -> NAK <n>\na different key is pinned for NAME; replace it with
//!                                 REKEY 0 <pinned-hex> <new-hex>, or ask the operator to reset it
//! REKEY 0 <old-hex> <new-hex>  -> ACK 12\nkey replaced
//!                              -> NAK <n>\nno key is pinned for NAME; publish one with KEY
//!                              -> NAK <n>\nthe key pinned for NAME is not <old-hex>
//! KEYQUERY 0 <name> [<name>…]  -> KEYRESULT <n>\n<name>,<hex>[\n<name>,<hex>…]
//! ```
//!
//! - The key is always the logged-in account's: no command names another
//!   account, so nobody publishes or replaces a key for a name they did not
//!   log in as. Before log-in these commands get `ERR` like any other.
//! - `NAK` refuses and keeps the session open (the node goes on chatting
//!   and can show the conflict); `ERR` still always closes. A bad key text,
//!   a bad name, more than 32 names, or the wrong number of arguments is a
//!   protocol error: `ERR` and close.
//! - Replacement is an act of the account owner: `REKEY` must name the
//!   pinned key, which makes it deliberate (a node that lost its key file
//!   and made a new one cannot overwrite the pin with a plain `KEY`) and a
//!   compare-and-swap (two sessions racing cannot both win). The old key is
//!   public, so naming it proves no possession; what authorises the
//!   replacement is the session's log-in, as for `BIND`. Asking for the
//!   password again would prove nothing more on this connection, and an
//!   X25519 key cannot sign. Whoever holds an account's password can
//!   therefore replace its pin; peers' own pins (trust on first use) then
//!   show "key changed". The operator's `reset-key NAME` clears the pin so
//!   that the next `KEY` pins anew.
//! - `KEYQUERY` lists only users with a pinned key, in the order asked,
//!   each once; at most 32 names, so its answer stays under 4.2 KiB. There
//!   is no all-users form: its size would grow with the directory.
//! - Bounded like `BIND`: `KEY`+`REKEY` at most
//!   [`max_key_updates_per_minute`](super::DirectoryConfig::max_key_updates_per_minute)
//!   (5) and `KEYQUERY` at most
//!   [`max_key_queries_per_minute`](super::DirectoryConfig::max_key_queries_per_minute)
//!   (120) per session, token buckets; past them `ERR too many key
//!   requests` and close.
//! - A classic client never sends these, so it never sees `NAK` or
//!   `KEYRESULT`, and `QUERY`'s `RESULT` does not mention keys.

//!
//! # Relay (issue 13)
//!
//! ```text
//! RELAY 0                 -> ACK 8\nrelay on    (no BIND needed; again: same answer)
//!                         -> NAK <n>\nrelay is disabled on this directory   (--no-relay)
//!                         -> NAK <n>\nthe relay is full on this directory
//! RELAYQUERY 0 [<name>]   -> RELAYRESULT <n>\n<name>\n<name>…   (sorted)
//! HELLO <len> <from> <to> <step> + payload
//! SEC <len> <from> <to> <epoch> <counter> + payload
//!                         -> nothing: forwarded to <to>'s relay session
//!                         -> RELAYNAK <n> <to>\n<reason>   (session stays open)
//! ```
//!
//! After log-in the session reads frames up to the largest `SEC`
//! (66 KiB; 64 KiB before). The loop below waits for the client's next
//! request and, once it sent `RELAY`, for frames queued for it
//! ([`super::relay`]), and writes each whole. A destination that does not
//! take a write within the write timeout is closed; the idle timeout
//! counts only the client's own frames (a node sends `QUERY`
//! periodically). Checks and limits are in [`super::relay`]; a malformed
//! `HELLO`/`SEC` is a protocol error (`ERR` and close) like any other.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use roundtable_shared::directory::{
    result_frame, summary, ProtocolError, Reply, Request, MAX_RELAY_PAYLOAD,
};
use roundtable_shared::frame::{Frame, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::accounts::Login;
use super::registry::RegistryError;
use super::relay::{self, Next, Queued, Registration};
use super::Shared;
use crate::framing::{Connection, FramingError};
use crate::store::directory::{Pin, Replace};

/// Why a session ended early; the text is what the client is told.
enum End {
    /// Tell the client `ERR <reason>` and close.
    Err(String),
    /// Close without a word (peer gone, or we are shutting down).
    Quiet,
}

impl From<FramingError> for End {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::Frame(f) => End::Err(format!("malformed message: {f}")),
            FramingError::Timeout(d) => End::Err(format!("idle for {} s, closing", d.as_secs())),
            FramingError::Io(_) | FramingError::Truncated | FramingError::Encode(_) => End::Quiet,
        }
    }
}

/// Runs the session to its end. Never panics on client input.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &CancellationToken,
) {
    let result = tokio::select! {
        r = serve(conn, peer, shared) => r,
        _ = shutdown.cancelled() => Err(End::Err("server shutting down".into())),
    };
    if let Err(End::Err(reason)) = result {
        tracing::debug!(%peer, %reason, "closing session");
        let _ = conn
            .write_frame_within(&Reply::Err(reason).to_frame(), shared.config.write_timeout)
            .await;
    }
    conn.shutdown().await;
}

/// The next frame, if it comes before `deadline` (the log-in deadline).
async fn next_before<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    deadline: Instant,
    allowed: Duration,
) -> Result<Frame, End> {
    match tokio::time::timeout_at(deadline, conn.read_frame()).await {
        Ok(r) => r?.ok_or(End::Quiet),
        Err(_) => Err(End::Err(format!(
            "idle too long: USER and PASS must come within {allowed:?}, closing"
        ))),
    }
}

/// Frames queued for this session's user, once it registered for relay
/// (never, before).
async fn next_relayed(reg: &mut Option<Registration>, out: &mut Vec<Queued>) -> Next {
    match reg {
        Some(r) => r.next(out).await,
        None => std::future::pending().await,
    }
}

/// Most bytes of relayed frames written under one write timeout: a
/// destination must take this much (or one frame) within the timeout, so
/// a slow but reading link is not mistaken for a dead one.
const RELAY_WRITE_SLICE: usize = 256 * 1024;

/// Writes `frames` whole and in order, in slices of at most
/// [`RELAY_WRITE_SLICE`] bytes (or one frame), each within `limit`.
async fn write_relayed<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    frames: &[Queued],
    limit: Duration,
) -> Result<(), crate::framing::FramingError> {
    let mut rest = frames;
    while !rest.is_empty() {
        let mut end = 1;
        let mut bytes = rest[0].len();
        while end < rest.len() && bytes + rest[end].len() <= RELAY_WRITE_SLICE {
            bytes += rest[end].len();
            end += 1;
        }
        conn.write_encoded_within(&rest[..end], limit).await?;
        rest = &rest[end..];
    }
    Ok(())
}

/// Bytes read per system call once a session relays: its frames are up
/// to 66 KiB, where classic sessions send a few bytes.
const RELAY_READ_CHUNK: usize = 16 * 1024;

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    shared: &Shared,
    f: Frame,
) -> Result<(), End> {
    conn.write_frame_within(&f, shared.config.write_timeout)
        .await
        .map_err(|_| End::Quiet)
}

/// A per-session token bucket: `per_minute` at once, then one every
/// `60 / per_minute` seconds. For BIND: each makes the server open a
/// connection (the port test), so a session must not turn it into a
/// scanner. For the key commands: each is a store call.
struct Budget {
    /// What it counts, for the client's error ("BIND", "key").
    what: &'static str,
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl Budget {
    fn new(what: &'static str, per_minute: u32) -> Self {
        Budget {
            what,
            per_minute,
            tokens: f64::from(per_minute),
            last: Instant::now(),
        }
    }

    /// Takes one token, or ends the session: `ERR too many <what>
    /// requests` and close.
    fn spend(&mut self, name: &str, peer: SocketAddr) -> Result<(), End> {
        if self.take() {
            return Ok(());
        }
        tracing::warn!(user = %name, %peer, what = self.what, "request rate exceeded");
        Err(End::Err(format!(
            "too many {} requests: at most {} per minute",
            self.what, self.per_minute
        )))
    }

    fn take(&mut self) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let now = Instant::now();
        let cap = f64::from(self.per_minute);
        let refill = now.duration_since(self.last).as_secs_f64() * cap / 60.0;
        self.tokens = (self.tokens + refill).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the port test for `BIND <address> <port>` from `peer` connects.
///
/// By default only the client's own address: an IP literal must be it, a
/// host name must resolve to it (within `limit`), and the test then
/// connects to the peer's IP rather than resolving again (the answer could
/// change in between). With `allow_foreign`, `address` itself, as before.
async fn port_test_host(
    address: &str,
    peer: IpAddr,
    allow_foreign: bool,
    limit: Duration,
) -> Result<String, String> {
    if allow_foreign {
        return Ok(address.to_owned());
    }
    let peer = peer.to_canonical();
    if let Ok(ip) = address.parse::<IpAddr>() {
        return if ip.to_canonical() == peer {
            Ok(peer.to_string())
        } else {
            Err(format!(
                "invalid bind notification: {address} is not the address you connect from"
            ))
        };
    }
    match tokio::time::timeout(limit, tokio::net::lookup_host((address, 0))).await {
        Ok(Ok(mut addrs)) => {
            if addrs.any(|a| a.ip().to_canonical() == peer) {
                Ok(peer.to_string())
            } else {
                Err(format!(
                    "invalid bind notification: {address} does not resolve to the address you connect from"
                ))
            }
        }
        Ok(Err(_)) | Err(_) => Err(format!(
            "invalid bind notification: cannot resolve {address}"
        )),
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(), End> {
    let cfg = &shared.config;
    // USER and PASS share one deadline: a client cannot hold an
    // unauthenticated slot longer by sending them slowly.
    let deadline = Instant::now() + cfg.auth_timeout;

    // 1. USER (or LOGIN) <username>
    let f = next_before(conn, deadline, cfg.auth_timeout).await?;
    let name = match Request::parse(&f) {
        Ok(Request::User { name }) => name,
        Err(e @ ProtocolError::BadName) => return Err(End::Err(e.to_string())),
        _ => return Err(End::Err("a 'USER <username>' command was expected!".into())),
    };
    send(conn, shared, Reply::hi(&name).to_frame()).await?;

    // 2. PASS <password>
    let f = next_before(conn, deadline, cfg.auth_timeout).await?;
    let password = match Request::parse(&f) {
        Ok(Request::Pass { password }) => password,
        _ => return Err(End::Err("a 'PASS <password>' command was expected!".into())),
    };
    match shared.accounts.login(&name, &password, peer.ip()).await {
        Ok(Login::Accepted) => {}
        Ok(Login::Registered) => {
            tracing::info!(user = %name, %peer, "account created by open registration")
        }
        Ok(Login::Refused) => {
            tracing::info!(user = %name, %peer, "authentication failed");
            return Err(End::Err("authentication failed".into()));
        }
        Ok(Login::Throttled(wait)) => {
            tracing::warn!(user = %name, %peer, "login throttled");
            return Err(End::Err(format!(
                "authentication failed: too many failed attempts, retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        Err(e) => {
            tracing::error!(user = %name, %e, "login check failed");
            return Err(End::Err("authentication failed: server error".into()));
        }
    }
    send(conn, shared, Reply::authenticated().to_frame()).await?;

    // 3. BIND / QUERY / LEAVE, until the client goes away.
    let mut binds = Budget::new("BIND", cfg.max_binds_per_minute);
    let mut key_updates = Budget::new("key", cfg.max_key_updates_per_minute);
    let mut key_queries = Budget::new("key", cfg.max_key_queries_per_minute);
    // Logged in: the largest relayed frame is admitted from now on.
    conn.set_limits(Limits {
        max_payload: cfg.max_payload.max(MAX_RELAY_PAYLOAD),
        ..Limits::default()
    });
    // This session's relay registration (after RELAY), its right to send
    // relayed frames (after the first one), and frames taken from its queue.
    let mut relaying: Option<Registration> = None;
    let mut sending: Option<relay::Sender> = None;
    let mut relayed: Vec<Queued> = Vec::new();
    let mut idle_deadline = Instant::now() + cfg.idle_timeout;
    loop {
        // The client's next request, or frames relayed to it, whichever
        // comes first; both are written whole, so they interleave only
        // between frames. Only the client's own frames reset the idle timer.
        let f = tokio::select! {
            r = conn.read_frame() => r?.ok_or(End::Quiet)?,
            next = next_relayed(&mut relaying, &mut relayed) => {
                match next {
                    Next::Frames => {
                        let bytes: usize = relayed.iter().map(Vec::len).sum();
                        let written = write_relayed(conn, &relayed, cfg.write_timeout).await;
                        relayed.clear();
                        if let Some(reg) = &relaying {
                            reg.release(bytes);
                        }
                        if let Err(e) = written {
                            tracing::info!(user = %name, %peer, %e, "relay destination does not take its frames, closing");
                            return Err(End::Quiet);
                        }
                    }
                    Next::Replaced => {
                        tracing::info!(user = %name, %peer, "relay registration taken over by a later session");
                        relaying = None;
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                return Err(End::Err(format!(
                    "idle for {} s, closing",
                    cfg.idle_timeout.as_secs()
                )));
            }
        };
        idle_deadline = Instant::now() + cfg.idle_timeout;
        let kind = f.kind.clone();
        let reply = match Request::parse_owned(f) {
            Ok(Request::Bind { address, port }) => {
                binds.spend(&name, peer)?;
                let host = port_test_host(
                    &address,
                    peer.ip(),
                    cfg.allow_foreign_bind,
                    cfg.port_test_timeout,
                )
                .await
                .map_err(|reason| {
                    tracing::info!(user = %name, %peer, %address, %reason, "BIND refused");
                    End::Err(reason)
                })?;
                if let Err(e) = crate::framing::ping(&host, port, cfg.port_test_timeout).await {
                    tracing::info!(user = %name, %address, port, %e, "port test failed");
                    return Err(End::Err("invalid bind notification".into()));
                }
                match shared
                    .registry
                    .bind_probed(&name, &address, port, &host)
                    .await
                {
                    Ok(()) => {}
                    Err(RegistryError::Full) => {
                        tracing::warn!(user = %name, "directory full, BIND refused");
                        return Err(End::Err("directory full".into()));
                    }
                    Err(RegistryError::Store(e)) => {
                        tracing::error!(user = %name, %e, "cannot save registration");
                        return Err(End::Err("bind failed: server error".into()));
                    }
                }
                tracing::info!(user = %name, %address, port, "bound");
                Reply::bound(&address, port).to_frame()
            }
            Ok(Request::Query { name: who }) => {
                result_frame(&*shared.registry.query(who.as_deref()))
            }
            Ok(Request::Leave) => {
                if let Err(e) = shared.registry.leave(&name).await {
                    tracing::error!(user = %name, %e, "cannot remove registration");
                    return Err(End::Err("leave failed: server error".into()));
                }
                tracing::info!(user = %name, "left");
                Reply::deregistered().to_frame()
            }
            Ok(Request::Key { key }) => {
                key_updates.spend(&name, peer)?;
                match shared.keys.publish(&name, key).await {
                    Ok(Pin::Pinned) => {
                        tracing::info!(user = %name, %key, "identity key pinned");
                        Reply::key_published().to_frame()
                    }
                    Ok(Pin::Same) => Reply::key_published().to_frame(),
                    Ok(Pin::Conflict) => {
                        tracing::warn!(user = %name, %peer, offered = %key, "KEY refused: a different key is pinned");
                        Reply::Nak(format!(
                            "a different key is pinned for {name}; replace it with REKEY 0 <pinned-hex> <new-hex>, or ask the operator to reset it"
                        ))
                        .to_frame()
                    }
                    Err(e) => {
                        tracing::error!(user = %name, %e, "cannot pin key");
                        return Err(End::Err("key publication failed: server error".into()));
                    }
                }
            }
            Ok(Request::Rekey { old, new }) => {
                key_updates.spend(&name, peer)?;
                match shared.keys.replace(&name, old, new).await {
                    Ok(Replace::Replaced) => {
                        tracing::warn!(user = %name, %peer, %old, %new, "identity key replaced by its owner");
                        Reply::key_replaced().to_frame()
                    }
                    Ok(Replace::NotPinned) => {
                        Reply::Nak(format!("no key is pinned for {name}; publish one with KEY"))
                            .to_frame()
                    }
                    Ok(Replace::Mismatch) => {
                        tracing::info!(user = %name, %peer, "REKEY refused: the old key is not the pinned one");
                        Reply::Nak(format!("the key pinned for {name} is not {old}")).to_frame()
                    }
                    Err(e) => {
                        tracing::error!(user = %name, %e, "cannot replace key");
                        return Err(End::Err("key replacement failed: server error".into()));
                    }
                }
            }
            Ok(Request::KeyQuery { names }) => {
                key_queries.spend(&name, peer)?;
                match shared.keys.lookup(names).await {
                    Ok(found) => Reply::KeyResult(found).to_frame(),
                    Err(e) => {
                        tracing::error!(user = %name, %e, "cannot read keys");
                        return Err(End::Err("key lookup failed: server error".into()));
                    }
                }
            }
            Ok(Request::Relay) => {
                if relaying.as_ref().is_some_and(Registration::is_current) {
                    Reply::relay_on().to_frame()
                } else {
                    match shared.relay.register(&name) {
                        Ok(reg) => {
                            tracing::info!(user = %name, %peer, "relay registered");
                            relaying = Some(reg);
                            conn.set_read_chunk(RELAY_READ_CHUNK);
                            Reply::relay_on().to_frame()
                        }
                        Err(why) => {
                            tracing::warn!(user = %name, %peer, reason = ?why, "RELAY refused");
                            Reply::Nak(why.text("", &name)).to_frame()
                        }
                    }
                }
            }
            Ok(Request::RelayQuery { name: who }) => {
                Reply::RelayResult(shared.relay.query(who.as_deref())).to_frame()
            }
            Ok(Request::Forward(frame)) => {
                let s = sending.get_or_insert_with(|| {
                    conn.set_read_chunk(RELAY_READ_CHUNK);
                    shared.relay.sender(&name)
                });
                let (kind, _, to, len) = summary(&frame);
                let to = to.to_owned();
                match s.forward(frame) {
                    Ok(()) => continue,
                    Err(why) => {
                        // Names and sizes only: the payload is never logged.
                        tracing::debug!(user = %name, %to, kind, len, reason = ?why, "relayed frame refused");
                        why.nak(&to, &name).to_frame()
                    }
                }
            }
            Ok(Request::User { .. } | Request::Pass { .. }) => {
                return Err(End::Err(ProtocolError::Unknown(kind).to_string()))
            }
            Err(e) => return Err(End::Err(e.to_string())),
        };
        send(conn, shared, reply).await?;
    }
}
