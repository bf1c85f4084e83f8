//! The liveness checker: pings every registered peer, many at once but at
//! most `parallelism` in flight, and deregisters those that do not answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use crate::framing::ping;

/// How the checker runs.
#[derive(Debug, Clone, Copy)]
pub struct CheckerConfig {
    /// Pause between the end of one sweep and the start of the next.
    pub interval: Duration,
    /// How long one peer has to connect and answer PONG.
    pub timeout: Duration,
    /// Most pings in flight at once.
    pub parallelism: usize,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        CheckerConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(3),
            parallelism: 256,
        }
    }
}

/// What one sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub checked: usize,
    pub removed: usize,
    pub elapsed: Duration,
}

/// Checks every registered peer once.
pub async fn sweep(registry: &Registry, config: &CheckerConfig) -> SweepReport {
    let started = Instant::now();
    let entries = registry.snapshot();
    let checked = entries.len();
    let slots = Arc::new(Semaphore::new(config.parallelism.max(1)));
    let mut tasks = JoinSet::new();
    for e in entries {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (registry, timeout) = (registry.clone(), config.timeout);
        tasks.spawn(async move {
            let _slot = slot;
            match ping(&e.probe, e.port, timeout).await {
                Ok(()) => false,
                Err(err) => {
                    tracing::info!(user = %e.name, address = %e.address, port = e.port, %err, "liveness check failed, deregistering");
                    match registry.remove_if_current(&e).await {
                        Ok(removed) => removed,
                        Err(err) => {
                            tracing::error!(user = %e.name, %err, "cannot deregister");
                            false
                        }
                    }
                }
            }
        });
    }
    let mut removed = 0;
    while let Some(r) = tasks.join_next().await {
        removed += usize::from(r.unwrap_or(false));
    }
    SweepReport {
        checked,
        removed,
        elapsed: started.elapsed(),
    }
}

/// Sweeps at once (re-verifying registrations loaded from the store), then
/// every `interval`, until `shutdown`.
pub async fn run(registry: Registry, config: CheckerConfig, shutdown: CancellationToken) {
    loop {
        let report = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sweep(&registry, &config) => r,
        };
        if report.checked > 0 {
            tracing::debug!(
                checked = report.checked,
                removed = report.removed,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "liveness sweep"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}
