//! Connection caps, one kind for every listener (directory, chat, web,
//! notify): a total and a share per source address, so that one source
//! cannot take every slot, and the listeners together stay below the
//! process's open-file limit.
//!
//! A connection is admitted by [`Caps::admit`] and holds its [`Admission`]
//! for as long as it lives; dropping it frees both places.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections from this address")]
    PerSource,
    #[error("too many connections")]
    Total,
}

/// The caps of one listener. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Caps(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    total: Arc<Semaphore>,
    max_per_source: usize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's places; released on drop.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    source: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl Caps {
    /// At most `max_total` connections, `max_per_source` from one address.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Caps(Arc::new(Inner {
            total: Arc::new(Semaphore::new(max_total)),
            max_per_source,
            per_source: Mutex::default(),
        }))
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.per_source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `source` (IPv4-mapped IPv6 counts as
    /// the IPv4 address). The source's share is checked first, so that a
    /// source over it takes nothing from the total.
    pub fn admit(&self, source: IpAddr) -> Result<Admission, Refused> {
        let source = source.to_canonical();
        let mut counts = self.counts();
        if counts.get(&source).copied().unwrap_or(0) >= self.0.max_per_source {
            return Err(Refused::PerSource);
        }
        let total = self
            .0
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        *counts.entry(source).or_insert(0) += 1;
        Ok(Admission {
            caps: self.clone(),
            source,
            _total: total,
        })
    }

    /// Connections now open from `source`.
    pub fn open_from(&self, source: IpAddr) -> usize {
        self.counts()
            .get(&source.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.caps.counts();
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The next connection on `listener`, or `None` once `shutdown` fires.
/// An accept error (out of descriptors and the like) is logged and retried
/// after a short pause rather than ending the listener: pending
/// connections wait in the backlog while open ones finish.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(listener = what, %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// How often at most a listener logs a refused connection at `warn`.
pub const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs a listener's refused connections: the first in each
/// [`REFUSAL_LOG_INTERVAL`] at `warn`, the rest at `debug`, so that a flood
/// of connections (the attack the caps are for) does not become a flood of
/// log lines.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last_warn: Option<std::time::Instant>,
}

impl RefusalLog {
    /// Notes that `listener` refused `peer` because of `why`.
    pub fn refused(
        &mut self,
        listener: &str,
        peer: std::net::SocketAddr,
        why: &dyn std::fmt::Display,
    ) {
        let now = std::time::Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_INTERVAL)
        {
            self.last_warn = Some(now);
            tracing::warn!(listener, %peer, "{why}: connection refused (further refusals logged at debug for {REFUSAL_LOG_INTERVAL:?})");
        } else {
            tracing::debug!(listener, %peer, "{why}: connection refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_gets_its_share_of_the_total() {
        let caps = Caps::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).unwrap_err(), Refused::PerSource);
        let b1 = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).unwrap_err(), Refused::Total);
        // A source refused for its share took nothing from the total.
        assert_eq!(caps.open_from(a), 2);
        drop(a1);
        assert_eq!(caps.open_from(a), 1);
        let _b2 = caps.admit(b).unwrap();
        drop(b1);
        // The same address written as IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(caps.open_from(mapped), 1);
        let _b3 = caps.admit(mapped).unwrap();
        assert_eq!(caps.open_from(b), 2);
        assert_eq!(caps.admit(mapped).unwrap_err(), Refused::PerSource);
    }

    #[test]
    fn closed_connections_leave_no_trace() {
        let caps = Caps::new(10, 10);
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            drop(caps.admit(ip).unwrap());
        }
        assert!(caps.counts().is_empty());
    }
}
