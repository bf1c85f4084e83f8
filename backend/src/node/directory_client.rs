//! The node's session with the directory: log in, bind the chat port, keep
//! the peer table fresh with QUERY; reconnect with backoff when the
//! directory goes away; LEAVE on shutdown.

use std::time::Duration;

use roundtable_shared::api::{Event, LinkState};
use roundtable_shared::frame::{Frame, Limits};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::peers::{parse_result, Peers};
use crate::events::Events;
use crate::framing::{Connection, FramingError};

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
    pub query_interval: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("directory refused {step}: {reason}")]
    Refused { step: &'static str, reason: String },
}

/// Handle to read the link state.
#[derive(Debug, Clone)]
pub struct DirectoryLink {
    pub state: watch::Receiver<LinkState>,
}

impl DirectoryLink {
    pub fn current(&self) -> LinkState {
        *self.state.borrow()
    }
}

/// Starts the client; it runs until `shutdown`, then sends LEAVE.
pub fn spawn(
    cfg: DirectoryClientConfig,
    peers: Peers,
    events: Events,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> DirectoryLink {
    let (tx, rx) = watch::channel(LinkState::Connecting);
    let link = DirectoryLink { state: rx };
    tracker.spawn(run(cfg, peers, events, tx, shutdown));
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
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = session(&cfg, &peers, &events, &state, &shutdown).await;
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

async fn expect(
    conn: &mut Connection<TcpStream>,
    step: &'static str,
    kind: &str,
) -> Result<Frame, SessionError> {
    let f = conn
        .read_frame_within(Duration::from_secs(10))
        .await?
        .ok_or(FramingError::Truncated)?;
    if f.kind == kind {
        Ok(f)
    } else {
        Err(SessionError::Refused {
            step,
            reason: format!("{} {}", f.kind, String::from_utf8_lossy(&f.payload)),
        })
    }
}

async fn session(
    cfg: &DirectoryClientConfig,
    peers: &Peers,
    events: &Events,
    state: &watch::Sender<LinkState>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&cfg.server))
        .await
        .map_err(|_| FramingError::Timeout(Duration::from_secs(5)))?
        .map_err(FramingError::Io)?;
    stream.set_nodelay(true).map_err(FramingError::Io)?;
    let mut conn = Connection::new(stream, Limits::default());
    conn.write_frame(&Frame::new("USER", [cfg.name.as_str()], ""))
        .await?;
    expect(&mut conn, "USER", "ACK").await?;
    conn.write_frame(&Frame::new("PASS", [cfg.password.as_str()], ""))
        .await?;
    expect(&mut conn, "PASS", "ACK").await?;
    let port = cfg.chat_port.to_string();
    conn.write_frame(&Frame::new(
        "BIND",
        [cfg.advertise_host.as_str(), port.as_str()],
        "",
    ))
    .await?;
    expect(&mut conn, "BIND", "ACK").await?;
    tracing::info!(server = %cfg.server, name = %cfg.name, "bound at the directory");
    set(state, events, LinkState::Connected);
    loop {
        conn.write_frame(&Frame::bare("QUERY", "")).await?;
        let r = expect(&mut conn, "QUERY", "RESULT").await?;
        peers.apply_directory(&parse_result(&r.payload));
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.write_frame(&Frame::bare("LEAVE", "")).await?;
                expect(&mut conn, "LEAVE", "ACK").await?;
                tracing::info!("left the directory");
                return Ok(());
            }
            _ = peers.refresh_requested() => {}
            _ = tokio::time::sleep(cfg.query_interval) => {}
        }
    }
}
