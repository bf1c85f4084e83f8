//! Who is reachable where: the in-memory registry, written through to the
//! store so that registrations survive a restart.
//!
//! QUERY is the hot path, so it is answered from memory; the all-users
//! answer is cached until the next change.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::store::directory::{DirectoryStore, StoredRegistration};
use crate::store::StoreError;

/// Where a user can be reached. `generation` tells a re-bind from the
/// registration a liveness check looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub generation: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: BTreeMap<String, Entry>,
    next_generation: u64,
    all_cache: Option<Arc<[u8]>>,
}

/// The registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
    store: DirectoryStore,
}

fn line(out: &mut Vec<u8>, e: &Entry) {
    if !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(e.name.as_bytes());
    out.push(b',');
    out.extend_from_slice(e.address.as_bytes());
    out.push(b',');
    out.extend_from_slice(e.port.to_string().as_bytes());
}

impl Registry {
    /// Loads the persisted registrations.
    pub fn load(store: DirectoryStore) -> Result<Self, StoreError> {
        let mut inner = Inner::default();
        for r in store.registrations()? {
            inner.next_generation += 1;
            let e = Entry {
                name: r.name.clone(),
                address: r.address,
                port: r.port,
                generation: inner.next_generation,
            };
            inner.by_name.insert(r.name, e);
        }
        Ok(Registry {
            inner: Arc::new(RwLock::new(inner)),
            store,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `name` at `address:port` (durably first, then in memory).
    pub async fn bind(&self, name: &str, address: &str, port: u16) -> Result<(), StoreError> {
        let r = StoredRegistration {
            name: name.to_owned(),
            address: address.to_owned(),
            port,
        };
        self.store.run(move |s| s.put_registration(&r)).await?;
        let mut inner = self.write();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        inner.by_name.insert(
            name.to_owned(),
            Entry {
                name: name.to_owned(),
                address: address.to_owned(),
                port,
                generation,
            },
        );
        inner.all_cache = None;
        Ok(())
    }

    /// Deregisters `name`; true if it was registered.
    pub async fn leave(&self, name: &str) -> Result<bool, StoreError> {
        let n = name.to_owned();
        self.store
            .run(move |s| s.delete_registration(&n, None))
            .await?;
        let mut inner = self.write();
        inner.all_cache = None;
        Ok(inner.by_name.remove(name).is_some())
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
            inner.by_name.remove(&e.name);
            inner.all_cache = None;
            return Ok(true);
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
    async fn registrations_are_reloaded() {
        let (_d, s, r) = registry().await;
        r.bind("alice", "127.0.0.1", 5555).await.unwrap();
        let again = Registry::load(s).unwrap();
        assert_eq!(&*again.query(None), b"alice,127.0.0.1,5555");
    }
}
