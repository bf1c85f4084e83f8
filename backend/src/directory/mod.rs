//! The eurechat directory server: participants log in and register where
//! their chat port can be reached; a checker drops those that stop answering.
//!
//! `serve` owns the accept loop, the connection caps (in all and per source
//! address) and shutdown;
//! [`session`] is the per-connection state machine; [`accounts`] decides
//! who may log in; [`registry`] holds who is where; [`checker`] keeps it true;
//! [`keys`] holds each account's pinned identity key; [`relay`] forwards
//! sealed overlay frames between logged-in sessions.

pub mod accounts;
pub mod checker;
pub mod keys;
pub mod registry;
pub mod relay;
mod session;

use std::sync::Arc;
use std::time::Duration;

use roundtable_shared::frame::{Frame, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::caps::{Caps, RefusalLog, Refused};
use crate::framing::Connection;
use crate::store::directory::DirectoryStore;
use accounts::{Accounts, HashCost, ThrottlePolicy};
use checker::CheckerConfig;
use keys::Keys;
use registry::Registry;
use relay::{Relay, RelayConfig};

/// Everything tunable about a directory server.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// Create accounts on first USER/PASS for unknown names.
    pub open_registration: bool,
    /// Argon2id cost for accounts created by open registration.
    pub hash_cost: HashCost,
    pub throttle: ThrottlePolicy,
    /// Time allowed for USER and PASS together, from the connection's start.
    pub auth_timeout: Duration,
    /// Idle time allowed once authenticated.
    pub idle_timeout: Duration,
    /// Time allowed to write one reply to a client.
    pub write_timeout: Duration,
    /// Time allowed for the BIND port test.
    pub port_test_timeout: Duration,
    /// Most client connections served at once; more are told `ERR server busy`.
    pub max_connections: usize,
    /// Most connections served at once from one source address, so that one
    /// source cannot take every slot; more are told `ERR too many connections`.
    pub max_connections_per_source: usize,
    /// Let a client BIND an address other than the one it connects from
    /// (for set-ups behind a proxy or NAT). Off: an IP literal must be the
    /// client's own address and a host name must resolve to it, so the port
    /// test cannot be aimed at somebody else's host.
    pub allow_foreign_bind: bool,
    /// BINDs allowed per session per minute (a burst of this many, then one
    /// every 60/n s); more get `ERR too many BIND requests` and the session
    /// is closed. 0: unlimited.
    pub max_binds_per_minute: u32,
    /// `KEY` and `REKEY` requests allowed per session per minute (a burst
    /// of this many, then one every 60/n s); more get `ERR too many key
    /// requests` and the session is closed. 0: unlimited. Each one writes
    /// to the store; a node needs one per session.
    pub max_key_updates_per_minute: u32,
    /// `KEYQUERY` requests (of up to 32 names each) allowed per session per
    /// minute, the same way. 0: unlimited.
    pub max_key_queries_per_minute: u32,
    /// Longest all-users RESULT payload; a BIND that would exceed it gets
    /// `ERR directory full`. At most the 1 MiB a Roundtable node reads.
    pub max_result_bytes: usize,
    /// Largest payload accepted from a client before log-in. Once logged
    /// in, the largest relayed frame is admitted too
    /// ([`MAX_RELAY_PAYLOAD`](roundtable_shared::directory::MAX_RELAY_PAYLOAD)).
    pub max_payload: usize,
    /// The relay's switch, queue bounds and rate limits.
    pub relay: RelayConfig,
    pub checker: CheckerConfig,
    /// How long shutdown waits for sessions to finish.
    pub shutdown_grace: Duration,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            open_registration: false,
            hash_cost: HashCost::default(),
            throttle: ThrottlePolicy::default(),
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            port_test_timeout: Duration::from_secs(3),
            max_connections: 4096,
            max_connections_per_source: 64,
            allow_foreign_bind: false,
            max_binds_per_minute: 5,
            max_key_updates_per_minute: 5,
            max_key_queries_per_minute: 120,
            max_result_bytes: roundtable_shared::directory::MAX_RESULT,
            max_payload: 64 * 1024,
            relay: RelayConfig::default(),
            checker: CheckerConfig::default(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    #[error("accept failed: {0}")]
    Accept(std::io::Error),
}

/// State shared by every session.
#[derive(Debug)]
struct Shared {
    config: DirectoryConfig,
    accounts: Accounts,
    registry: Registry,
    keys: Keys,
    relay: Relay,
}

/// Tells a refused client why, briefly, without holding up the accept loop.
fn refuse(
    tracker: &TaskTracker,
    mut conn: Connection<tokio::net::TcpStream>,
    why: &'static str,
    grace: Duration,
) {
    tracker.spawn(async move {
        let _ = conn
            .write_frame_within(&Frame::bare("ERR", why), grace)
            .await;
        conn.shutdown().await;
    });
}

/// Serves the directory on `listener` until `shutdown` is cancelled, then
/// stops accepting, tells open sessions, and waits for them (bounded).
pub async fn serve(
    listener: TcpListener,
    store: DirectoryStore,
    config: DirectoryConfig,
    shutdown: CancellationToken,
) -> Result<(), DirectoryError> {
    let registry = Registry::load_capped(store.clone(), config.max_result_bytes)?;
    let keys = Keys::new(store.clone());
    let accounts = Accounts::new(
        store,
        config.open_registration,
        config.hash_cost,
        config.throttle,
    )?;
    let relay = Relay::new(config.relay, config.max_result_bytes);
    let shared = Arc::new(Shared {
        relay,
        config,
        accounts,
        registry: registry.clone(),
        keys,
    });
    let tracker = TaskTracker::new();
    tracker.spawn(checker::run(
        registry,
        shared.config.checker,
        shutdown.clone(),
    ));

    let caps = Caps::new(
        shared.config.max_connections,
        shared.config.max_connections_per_source,
    );
    let grace = shared.config.write_timeout.min(Duration::from_secs(1));
    let mut refusals = RefusalLog::default();
    let limits = Limits {
        max_payload: shared.config.max_payload,
        ..Limits::default()
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "directory listening");
    }
    loop {
        let Some((stream, peer)) = crate::caps::accept(&listener, &shutdown, "directory").await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection::new(stream, limits);
        let admission = match caps.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                refusals.refused("directory", peer, &why);
                let reason = match why {
                    Refused::PerSource => "too many connections from your address",
                    Refused::Total => "server busy",
                };
                refuse(&tracker, conn, reason, grace);
                continue;
            }
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        let mut conn = conn;
        tracker.spawn(async move {
            let _admission = admission;
            session::run(&mut conn, peer, &shared, &shutdown).await;
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish within the shutdown grace period");
    }
    tracing::info!("directory stopped");
    Ok(())
}
