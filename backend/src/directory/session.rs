//! One client's session: USER, PASS, then BIND / QUERY / LEAVE.
//!
//! Any protocol violation gets one `ERR <reason>` and the connection is
//! closed, as in the original server.

use std::net::SocketAddr;

use roundtable_shared::frame::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::accounts::{valid_name, Login};
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

fn ack(text: impl Into<Vec<u8>>) -> Frame {
    Frame::bare("ACK", text)
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
            .write_frame_within(&Frame::bare("ERR", reason), shared.config.write_timeout)
            .await;
    }
    conn.shutdown().await;
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    limit: std::time::Duration,
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

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(), End> {
    let cfg = &shared.config;

    // 1. USER (or LOGIN) <username>
    let f = next(conn, cfg.auth_timeout).await?;
    let name = match (f.kind.as_str(), f.args.as_slice()) {
        ("USER" | "LOGIN", [name]) => name.clone(),
        _ => return Err(End::Err("a 'USER <username>' command was expected!".into())),
    };
    if !valid_name(&name) {
        return Err(End::Err(
            "invalid user name: use 1 to 64 of A-Z a-z 0-9 _ . -".into(),
        ));
    }
    send(
        conn,
        shared,
        ack(format!("hi {name}, authentication required")),
    )
    .await?;

    // 2. PASS <password>
    let f = next(conn, cfg.auth_timeout).await?;
    let password = match (f.kind.as_str(), f.args.as_slice()) {
        ("PASS", [pw]) => pw.clone(),
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
    send(conn, shared, ack("successfully authenticated")).await?;

    // 3. BIND / QUERY / LEAVE, until the client goes away.
    loop {
        let f = next(conn, cfg.idle_timeout).await?;
        let reply = match (f.kind.as_str(), f.args.as_slice()) {
            ("BIND", [address, port]) => {
                let port = match port.parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => {
                        return Err(End::Err(format!(
                            "invalid bind notification: bad port {port:?}"
                        )))
                    }
                };
                if address.contains(',') {
                    return Err(End::Err("invalid bind notification: bad address".into()));
                }
                if let Err(e) = crate::framing::ping(address, port, cfg.port_test_timeout).await {
                    tracing::info!(user = %name, %address, port, %e, "port test failed");
                    return Err(End::Err("invalid bind notification".into()));
                }
                if let Err(e) = shared.registry.bind(&name, address, port).await {
                    tracing::error!(user = %name, %e, "cannot save registration");
                    return Err(End::Err("bind failed: server error".into()));
                }
                tracing::info!(user = %name, %address, port, "bound");
                ack(format!("bound successfully to {address}:{port}"))
            }
            ("QUERY", []) => Frame::bare("RESULT", &*shared.registry.query(None)),
            ("QUERY", [who]) => Frame::bare("RESULT", &*shared.registry.query(Some(who))),
            ("LEAVE", []) => {
                if let Err(e) = shared.registry.leave(&name).await {
                    tracing::error!(user = %name, %e, "cannot remove registration");
                    return Err(End::Err("leave failed: server error".into()));
                }
                tracing::info!(user = %name, "left");
                ack("deregistered from directory")
            }
            ("BIND" | "QUERY" | "LEAVE", args) => {
                return Err(End::Err(format!(
                    "I did not understand the message {} (wrong number of arguments: {})",
                    f.kind,
                    args.len()
                )))
            }
            _ => {
                return Err(End::Err(format!(
                    "I did not understand the message {}",
                    f.kind
                )))
            }
        };
        send(conn, shared, reply).await?;
    }
}
