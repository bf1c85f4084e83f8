//! Who is reachable where: the in-memory registry, written through to the
//! store so that registrations survive a restart.
//!
//! QUERY is the hot path, so it is answered from memory; the all-users
//! answer is cached until the next change.
//!
//! The all-users answer is bounded: a BIND that would make it longer than
//! the cap (1 MiB by default, the payload limit a node reads with) is
//! refused as [`RegistryError::Full`], so no client is ever sent a
//! `RESULT` it cannot read. A re-bind of an already registered name counts
//! its new line against the cap too.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use roundtable_shared::directory::{
    encode_line_into, line_len, valid_address, valid_name, MAX_RESULT,
};

use crate::store::directory::{DirectoryStore, StoredRegistration};
use crate::store::StoreError;

/// Why a registration was not made.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("directory full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a user can be reached. `generation` tells a re-bind from the
/// registration a liveness check looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub generation: u64,
    /// Where the liveness check connects: the IP the BIND's port test
    /// reached, so that a host name cannot be re-pointed at somebody else's
    /// host afterwards. Not stored: after a restart it is `address` again.
    pub probe: String,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: BTreeMap<String, Entry>,
    next_generation: u64,
    all_cache: Option<Arc<[u8]>>,
    /// Sum of the registered lines' lengths (separators not included).
    line_bytes: usize,
    /// Bytes promised to BINDs whose store write is under way.
    reserved: usize,
}

impl Inner {
    /// Length of the all-users payload.
    fn result_len(&self) -> usize {
        self.line_bytes + self.by_name.len().saturating_sub(1)
    }

    fn insert(&mut self, e: Entry) {
        self.line_bytes += entry_len(&e);
        if let Some(old) = self.by_name.insert(e.name.clone(), e) {
            self.line_bytes -= entry_len(&old);
        }
        self.all_cache = None;
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(old) = self.by_name.remove(name) else {
            return false;
        };
        self.line_bytes -= entry_len(&old);
        self.all_cache = None;
        true
    }
}

/// The registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
    store: DirectoryStore,
    /// Longest all-users RESULT payload allowed.
    cap: usize,
}

fn entry_len(e: &Entry) -> usize {
    line_len(&e.name, &e.address, e.port)
}

fn line(out: &mut Vec<u8>, e: &Entry) {
    encode_line_into(out, &e.name, &e.address, e.port);
}

impl Registry {
    /// Loads the persisted registrations, with the default cap.
    pub fn load(store: DirectoryStore) -> Result<Self, StoreError> {
        Self::load_capped(store, MAX_RESULT)
    }

    /// Loads the persisted registrations; the all-users RESULT stays within
    /// `cap` bytes. Stored registrations that are invalid by today's rules
    /// (e.g. an over-long address an older version accepted) or beyond the
    /// cap are dropped, from the store too.
    pub fn load_capped(store: DirectoryStore, cap: usize) -> Result<Self, StoreError> {
        let mut inner = Inner::default();
        for r in store.registrations()? {
            let fits = inner.result_len() + 1 + line_len(&r.name, &r.address, r.port) <= cap;
            if !(valid_name(&r.name) && valid_address(&r.address) && r.port != 0 && fits) {
                tracing::warn!(user = %r.name, "dropping a stored registration that is invalid or beyond the cap");
                store.delete_registration(&r.name, None)?;
                continue;
            }
            inner.next_generation += 1;
            let generation = inner.next_generation;
            inner.insert(Entry {
                name: r.name,
                probe: r.address.clone(),
                address: r.address,
                port: r.port,
                generation,
            });
        }
        Ok(Registry {
            inner: Arc::new(RwLock::new(inner)),
            store,
            cap,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `name` at `address:port` (durably first, then in memory),
    /// unless the all-users RESULT would grow beyond the cap.
    pub async fn bind(&self, name: &str, address: &str, port: u16) -> Result<(), RegistryError> {
        self.bind_probed(name, address, port, address).await
    }

    /// Like [`bind`](Self::bind), the liveness check connecting to `probe`.
    pub async fn bind_probed(
        &self,
        name: &str,
        address: &str,
        port: u16,
        probe: &str,
    ) -> Result<(), RegistryError> {
        // Room is reserved before the store write (which awaits) so that
        // concurrent BINDs cannot together overshoot the cap. Counted
        // pessimistically: a re-bind's old line is not subtracted.
        let need = line_len(name, address, port) + 1;
        {
            let mut inner = self.write();
            if inner.result_len() + inner.reserved + need > self.cap {
                return Err(RegistryError::Full);
            }
            inner.reserved += need;
        }
        let r = StoredRegistration {
            name: name.to_owned(),
            address: address.to_owned(),
            port,
        };
        let saved = self.store.run(move |s| s.put_registration(&r)).await;
        let mut inner = self.write();
        inner.reserved -= need;
        saved?;
        inner.next_generation += 1;
        let generation = inner.next_generation;
        inner.insert(Entry {
            name: name.to_owned(),
            address: address.to_owned(),
            port,
            generation,
            probe: probe.to_owned(),
        });
        Ok(())
    }

    /// Deregisters `name`; true if it was registered.
    pub async fn leave(&self, name: &str) -> Result<bool, StoreError> {
        let n = name.to_owned();
        self.store
            .run(move |s| s.delete_registration(&n, None))
            .await?;
        Ok(self.write().remove(name))
    }

    /// Deregisters `e.name` only if it is still exactly the registration `e`
    /// (a user who re-bound meanwhile keeps the new one); true if removed.
    pub async fn remove_if_current(&self, e: &Entry) -> Result<bool, StoreError> {
        if self.read().by_name.get(&e.name) != Some(e) {
            return Ok(false);
        }
        let (n, a, p) = (e.name.clone(), e.address.clone(), e.port);
        self.store
            .run(move |s| s.delete_registration(&n, Some((&a, p))))
            .await?;
        let mut inner = self.write();
        if inner.by_name.get(&e.name) == Some(e) {
            return Ok(inner.remove(&e.name));
        }
        Ok(false)
    }

    /// The RESULT payload for `QUERY` (all users) or `QUERY <name>`.
    pub fn query(&self, name: Option<&str>) -> Arc<[u8]> {
        let inner = self.read();
        match name {
            Some(n) => {
                let mut out = Vec::with_capacity(64);
                if let Some(e) = inner.by_name.get(n) {
                    line(&mut out, e);
                }
                out.into()
            }
            None => {
                if let Some(cached) = &inner.all_cache {
                    return cached.clone();
                }
                drop(inner);
                let mut inner = self.write();
                let mut out = Vec::with_capacity(inner.by_name.len() * 32);
                for e in inner.by_name.values() {
                    line(&mut out, e);
                }
                let all: Arc<[u8]> = out.into();
                inner.all_cache = Some(all.clone());
                all
            }
        }
    }

    /// A copy of every registration, for the liveness checker.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.read().by_name.values().cloned().collect()
    }

    /// How many users are registered.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn registry() -> (tempfile::TempDir, DirectoryStore, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let s = DirectoryStore::open(&dir.path().join("d.db")).unwrap();
        for n in ["alice", "bob"] {
            s.put_account(n, "h").unwrap();
        }
        let r = Registry::load(s.clone()).unwrap();
        (dir, s, r)
    }

    #[tokio::test]
    async fn query_formats_like_the_original() {
        let (_d, _s, r) = registry().await;
        assert_eq!(&*r.query(None), b"");
        r.bind("bob", "127.0.0.1", 6000).await.unwrap();
        r.bind("alice", "127.0.0.1", 5555).await.unwrap();
        assert_eq!(&*r.query(None), b"alice,127.0.0.1,5555\nbob,127.0.0.1,6000");
        assert_eq!(&*r.query(Some("bob")), b"bob,127.0.0.1,6000");
        assert_eq!(&*r.query(Some("nobody")), b"");
        r.bind("bob", "10.0.0.2", 7000).await.unwrap();
        assert_eq!(&*r.query(None), b"alice,127.0.0.1,5555\nbob,10.0.0.2,7000");
        assert!(r.leave("alice").await.unwrap());
        assert_eq!(&*r.query(None), b"bob,10.0.0.2,7000");
    }

    #[tokio::test]
    async fn stale_check_does_not_remove_a_rebind() {
        let (_d, s, r) = registry().await;
        r.bind("alice", "127.0.0.1", 5555).await.unwrap();
        let old = r.snapshot().remove(0);
        r.bind("alice", "127.0.0.1", 5556).await.unwrap();
        assert!(!r.remove_if_current(&old).await.unwrap());
        assert_eq!(r.len(), 1);
        let cur = r.snapshot().remove(0);
        assert!(r.remove_if_current(&cur).await.unwrap());
        assert!(r.is_empty());
        assert!(s.registrations().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_all_users_result_never_exceeds_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirectoryStore::open(&dir.path().join("d.db")).unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("user{i:02}")).collect();
        for n in &names {
            s.put_account(n, "h").unwrap();
        }
        // Room for a few 20-byte lines ("userNN,127.0.0.1,1000").
        let cap = 100;
        let r = Registry::load_capped(s.clone(), cap).unwrap();
        let mut accepted = 0;
        for n in &names {
            match r.bind(n, "127.0.0.1", 1000).await {
                Ok(()) => accepted += 1,
                Err(RegistryError::Full) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(r.query(None).len() <= cap);
        }
        assert_eq!(accepted, 4);
        // A longer re-bind that would not fit is refused; a leave makes room.
        assert!(matches!(
            r.bind("user00", "a-much-longer-host-name.example", 1000)
                .await,
            Err(RegistryError::Full)
        ));
        assert!(r.leave("user01").await.unwrap());
        r.bind("user10", "127.0.0.1", 1000).await.unwrap();
        assert_eq!(r.query(None).len(), 4 * 21 + 3);
        // Reloaded with a smaller cap, what does not fit is dropped.
        let small = Registry::load_capped(s.clone(), 50).unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(s.registrations().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn invalid_stored_registrations_are_dropped_on_load() {
        let (_d, s, _r) = registry().await;
        let long = format!("127.{}0.0.1", "0".repeat(4000));
        s.put_registration(&StoredRegistration {
            name: "alice".into(),
            address: long,
            port: 5555,
        })
        .unwrap();
        let r = Registry::load(s.clone()).unwrap();
        assert!(r.is_empty());
        assert!(s.registrations().unwrap().is_empty());
    }

    #[tokio::test]
    async fn registrations_are_reloaded() {
        let (_d, s, r) = registry().await;
        r.bind("alice", "127.0.0.1", 5555).await.unwrap();
        let again = Registry::load(s).unwrap();
        assert_eq!(&*again.query(None), b"alice,127.0.0.1,5555");
    }
}
