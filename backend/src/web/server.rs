//! The accept loop every HTTP listener of the node runs on (the web bridge
//! and the DLR notification endpoint), so that both hold the same limits:
//!
//! - a header read timeout (hyper's own timer): a client that does not send
//!   a complete request head in time is disconnected. hyper starts the
//!   same timer whenever it waits for the next request, so it is also the
//!   keep-alive idle timeout, and a connection that never sends a byte is
//!   closed after it too;
//! - a body timeout, once the head is in;
//! - a total connection cap and a per-source-address cap: a connection over
//!   either is closed at once, so one source cannot take every slot and
//!   the listeners together stay below the process's open-file limit;
//! - an optional allow-list of source networks (`--notify-allow`);
//! - accept errors (`EMFILE` above all) back off instead of spinning or
//!   ending the listener;
//! - `with_upgrades()`, so `/ws` works; an upgraded connection keeps its
//!   slot until it closes;
//! - graceful shutdown on the token: in-flight requests finish, idle
//!   connections close.
//!
//! Handlers can take `ConnectInfo<SocketAddr>` (the peer address) and
//! `Extension<Shutdown>`.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::caps::{Admission, Caps, RefusalLog, Refused};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// What one HTTP listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a complete request head; also how long a
    /// kept-alive connection may sit idle between requests.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body once its head is in.
    pub body_timeout: Duration,
    /// Most connections open at once (WebSockets included).
    pub max_connections: usize,
    /// Most connections open at once from one source address.
    pub max_per_source: usize,
    /// When set, only sources in these networks are served; others are
    /// disconnected at once.
    pub allow: Option<Vec<IpNet>>,
}

/// Default header and idle timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default body timeout.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Limits {
    /// The web bridge: a few dashboards, each a WebSocket and a handful of
    /// browser connections.
    pub fn web() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_connections: 256,
            max_per_source: 64,
            allow: None,
        }
    }

    /// The notification endpoint: one FL server posting one notification
    /// at a time.
    pub fn notify() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_connections: 128,
            max_per_source: 16,
            allow: None,
        }
    }

    /// Scales the connection caps of `listeners` down, if needed, so that
    /// together they stay within `budget` open files. Each keeps at least 8.
    pub fn fit(listeners: &mut [&mut Limits], budget: u64) {
        let total: u64 = listeners.iter().map(|l| l.max_connections as u64).sum();
        if total <= budget || total == 0 {
            return;
        }
        for l in listeners.iter_mut() {
            let share = (l.max_connections as u64 * budget / total).max(8);
            l.max_connections = usize::try_from(share).unwrap_or(usize::MAX);
            l.max_per_source = l.max_per_source.min(l.max_connections);
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// The server's shutdown token, for handlers of long-lived requests (the
/// WebSocket) to stop with it.
#[derive(Debug, Clone)]
pub struct Shutdown(pub CancellationToken);

/// A connection that holds its slot for as long as it lives, even after
/// an upgrade hands it to a WebSocket.
struct Counted {
    io: TcpStream,
    _admission: Admission,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Shortest and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves `app` on `listener` with `limits` until `shutdown`, then lets the
/// requests in progress finish. `what` names the listener in logs.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    what: &'static str,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let caps = Caps::new(limits.max_connections, limits.max_per_source.max(1));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut refusals = RefusalLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF.0;
                    a
                }
                Err(e) => {
                    // EMFILE and friends: the pending connections wait in
                    // the backlog while open ones finish.
                    tracing::warn!(listener = what, error = %e, pause = ?backoff, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let admission = if limits.allows(ip) {
            caps.admit(ip).map_err(|r| match r {
                Refused::PerSource => "per-source connection cap reached",
                Refused::Total => "connection cap reached",
            })
        } else {
            Err("source not in the allow-list")
        };
        let admission = match admission {
            Ok(s) => s,
            Err(why) => {
                // Dropping the stream closes it at once.
                refusals.refused(what, peer, &why);
                continue;
            }
        };
        // Small JSON answers and events must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted {
            io: stream,
            _admission: admission,
        });
        let app = app.clone();
        let stop = Shutdown(shutdown.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(stop.clone());
            app.clone().oneshot(req)
        });
        let conn = http.serve_connection(io, service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Timeouts and clients that vanish mid-request.
                tracing::debug!(listener = what, %peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    tracing::info!(listener = what, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_fitted_to_the_open_file_budget() {
        let (mut web, mut notify) = (Limits::web(), Limits::notify());
        Limits::fit(&mut [&mut web, &mut notify], 1_000_000);
        assert_eq!(
            (web.clone(), notify.clone()),
            (Limits::web(), Limits::notify())
        );
        Limits::fit(&mut [&mut web, &mut notify], 96);
        assert!(web.max_connections + notify.max_connections <= 96);
        assert!(web.max_per_source <= web.max_connections);
        assert!(notify.max_connections >= 8);
    }

    #[test]
    fn allow_list() {
        let mut l = Limits::notify();
        assert!(l.allows("203.0.113.9".parse().unwrap()));
        l.allow = Some(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(l.allows("10.1.2.3".parse().unwrap()));
        assert!(l.allows("::1".parse().unwrap()));
        assert!(!l.allows("127.0.0.1".parse().unwrap()));
    }

    /// Over the total cap, a connection is closed at once; a slot freed
    /// is taken again.
    #[tokio::test]
    async fn total_cap_closes_extra_connections() {
        use tokio::io::AsyncReadExt;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits = Limits {
            max_connections: 3,
            ..Limits::web()
        };
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve(l, app, limits, "test", stop.clone()));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server take the three before the fourth arrives.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("the fourth connection is closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        drop(held.pop());
        // The server notices the close shortly; then the slot is free.
        let mut reused = false;
        for _ in 0..40 {
            let mut again = TcpStream::connect(addr).await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(200), again.read(&mut buf));
            if read.await.is_err() {
                reused = true; // still open: it got the slot
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(reused, "a freed slot is usable again");
        stop.cancel();
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
