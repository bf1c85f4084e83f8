//! The eurechat directory server: participants log in and register where
//! their chat port can be reached; a checker drops those that stop answering.
//!
//! `serve` owns the accept loop, the connection cap and shutdown;
//! [`session`] is the per-connection state machine; [`accounts`] decides
//! who may log in; [`registry`] holds who is where; [`checker`] keeps it true.

pub mod accounts;
pub mod checker;
pub mod registry;
mod session;

use std::sync::Arc;
use std::time::Duration;

use roundtable_shared::frame::{Frame, Limits};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::framing::Connection;
use crate::store::directory::DirectoryStore;
use accounts::{Accounts, HashCost, ThrottlePolicy};
use checker::CheckerConfig;
use registry::Registry;

/// Everything tunable about a directory server.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// Create accounts on first USER/PASS for unknown names.
    pub open_registration: bool,
    /// Argon2id cost for accounts created by open registration.
    pub hash_cost: HashCost,
    pub throttle: ThrottlePolicy,
    /// Time allowed for USER and PASS.
    pub auth_timeout: Duration,
    /// Idle time allowed once authenticated.
    pub idle_timeout: Duration,
    /// Time allowed to write one reply to a client.
    pub write_timeout: Duration,
    /// Time allowed for the BIND port test.
    pub port_test_timeout: Duration,
    /// Most client connections served at once; more are told `ERR server busy`.
    pub max_connections: usize,
    /// Largest payload accepted from a client.
    pub max_payload: usize,
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
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            port_test_timeout: Duration::from_secs(3),
            max_connections: 4096,
            max_payload: 64 * 1024,
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
}

/// Serves the directory on `listener` until `shutdown` is cancelled, then
/// stops accepting, tells open sessions, and waits for them (bounded).
pub async fn serve(
    listener: TcpListener,
    store: DirectoryStore,
    config: DirectoryConfig,
    shutdown: CancellationToken,
) -> Result<(), DirectoryError> {
    let registry = Registry::load(store.clone())?;
    let accounts = Accounts::new(
        store,
        config.open_registration,
        config.hash_cost,
        config.throttle,
    )?;
    let shared = Arc::new(Shared {
        config,
        accounts,
        registry: registry.clone(),
    });
    let tracker = TaskTracker::new();
    tracker.spawn(checker::run(
        registry,
        shared.config.checker,
        shutdown.clone(),
    ));

    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let limits = Limits {
        max_payload: shared.config.max_payload,
        ..Limits::default()
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "directory listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: wait and retry rather than die.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream, limits);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection cap reached, refusing");
            let grace = shared.config.write_timeout.min(Duration::from_secs(1));
            tracker.spawn(async move {
                let _ = conn
                    .write_frame_within(&Frame::bare("ERR", "server busy"), grace)
                    .await;
                conn.shutdown().await;
            });
            continue;
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _slot = slot;
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
