//! One client's session: USER, PASS, then BIND / QUERY / LEAVE.
//!
//! Any protocol violation gets one `ERR <reason>` and the connection is
//! closed, as in the original server. Frames are read and built with
//! `roundtable_shared::directory`; this module is only the state machine
//! and the checks that need the server (log-in, port test, registry).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use roundtable_shared::directory::{result_frame, ProtocolError, Reply, Request};
use roundtable_shared::frame::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::accounts::Login;
use super::registry::RegistryError;
use super::Shared;
use crate::framing::{Connection, FramingError};

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

async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    limit: Duration,
) -> Result<Frame, End> {
    conn.read_frame_within(limit).await?.ok_or(End::Quiet)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    shared: &Shared,
    f: Frame,
) -> Result<(), End> {
    conn.write_frame_within(&f, shared.config.write_timeout)
        .await
        .map_err(|_| End::Quiet)
}

/// A per-session token bucket for BIND: `per_minute` at once, then one
/// every `60 / per_minute` seconds. Each BIND makes the server open a
/// connection (the port test), so a session must not turn it into a scanner.
struct BindBudget {
    per_minute: u32,
    tokens: f64,
    last: Instant,
}

impl BindBudget {
    fn new(per_minute: u32) -> Self {
        BindBudget {
            per_minute,
            tokens: f64::from(per_minute),
            last: Instant::now(),
        }
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
    let mut binds = BindBudget::new(cfg.max_binds_per_minute);
    loop {
        let f = next(conn, cfg.idle_timeout).await?;
        let reply = match Request::parse(&f) {
            Ok(Request::Bind { address, port }) => {
                if !binds.take() {
                    tracing::warn!(user = %name, %peer, "BIND rate exceeded");
                    return Err(End::Err(format!(
                        "too many BIND requests: at most {} per minute",
                        cfg.max_binds_per_minute
                    )));
                }
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
            Ok(Request::User { .. } | Request::Pass { .. }) => {
                return Err(End::Err(ProtocolError::Unknown(f.kind.clone()).to_string()))
            }
            Err(e) => return Err(End::Err(e.to_string())),
        };
        send(conn, shared, reply).await?;
    }
}
