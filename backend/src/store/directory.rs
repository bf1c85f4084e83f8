//! The directory server's database: accounts, registrations and pinned
//! identity keys.
//!
//! Keys are read from here on every `KEY`/`KEYQUERY` (not cached by the
//! server) so that `roundtable directory reset-key`, run by the operator
//! in another process while the server runs, takes effect at once.

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{Context, Db, StoreError};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE accounts (
        name       TEXT PRIMARY KEY NOT NULL,
        phc_hash   TEXT NOT NULL,
        created_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
    CREATE TABLE registrations (
        name     TEXT PRIMARY KEY NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        address  TEXT NOT NULL,
        port     INTEGER NOT NULL,
        bound_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
",
    "
    -- Issue 13: one pinned identity key (X25519 public key) per account,
    -- removed with the account.
    CREATE TABLE keys (
        name       TEXT PRIMARY KEY NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        public_key BLOB NOT NULL CHECK (length(public_key) = 32),
        pinned_at  INTEGER NOT NULL DEFAULT (unixepoch())
    ) STRICT;
",
];

/// What publishing a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// No key was pinned; this one is now.
    Pinned,
    /// This very key was already pinned.
    Same,
    /// Another key is pinned; nothing changed.
    Conflict,
}

/// What a replacement (`REKEY`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    Replaced,
    /// No key is pinned (publish one with `KEY`).
    NotPinned,
    /// The pinned key is not the one named as the old key; nothing changed.
    Mismatch,
}

fn key_from_row(name: String, blob: Vec<u8>) -> Option<(String, [u8; 32])> {
    // The CHECK constraint makes this always succeed.
    Some((name, blob.try_into().ok()?))
}

/// A persisted `name → address:port` registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRegistration {
    pub name: String,
    pub address: String,
    pub port: u16,
}

/// Handle to the directory database; cheap to clone, one connection inside.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    db: Db,
}

impl DirectoryStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(DirectoryStore {
            db: Db::open(path, MIGRATIONS)?,
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.with(|c| f(c))
    }

    /// Runs a store call on the blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DirectoryStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        super::blocking(move || f(&this)).await
    }

    /// Creates the account or replaces its password hash; true if created.
    pub fn put_account(&self, name: &str, phc_hash: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let existed: bool = c
                .query_row("SELECT 1 FROM accounts WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .ctx("looking up account")?
                .is_some();
            c.execute(
                "INSERT INTO accounts(name, phc_hash) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET phc_hash = excluded.phc_hash",
                params![name, phc_hash],
            )
            .ctx("saving account")?;
            Ok(!existed)
        })
    }

    /// Creates the account only if the name is free; true if created.
    pub fn create_account(&self, name: &str, phc_hash: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO accounts(name, phc_hash) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                    params![name, phc_hash],
                )
                .ctx("creating account")?;
            Ok(n == 1)
        })
    }

    /// The stored password hash of `name`, if the account exists.
    pub fn account_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT phc_hash FROM accounts WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .ctx("reading account")
        })
    }

    /// Account names, sorted.
    pub fn account_names(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT name FROM accounts ORDER BY name")
                .ctx("listing accounts")?;
            let rows = st.query_map([], |r| r.get(0)).ctx("listing accounts")?;
            rows.collect::<Result<_, _>>().ctx("listing accounts")
        })
    }

    /// Deletes an account (and its registration); true if it existed.
    pub fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c
                .execute("DELETE FROM accounts WHERE name = ?1", [name])
                .ctx("deleting account")?;
            Ok(n == 1)
        })
    }

    /// `name`'s pinned key, if any.
    pub fn key(&self, name: &str) -> Result<Option<[u8; 32]>, StoreError> {
        self.with(|c| {
            let blob: Option<Vec<u8>> = c
                .query_row("SELECT public_key FROM keys WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()
                .ctx("reading key")?;
            Ok(blob.and_then(|b| b.try_into().ok()))
        })
    }

    /// The pinned keys of those of `names` that have one, in the order
    /// asked (duplicates listed once).
    pub fn keys_of(&self, names: &[String]) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare_cached("SELECT public_key FROM keys WHERE name = ?1")
                .ctx("reading keys")?;
            let mut out: Vec<(String, [u8; 32])> = Vec::new();
            for n in names {
                if out.iter().any(|(m, _)| m == n) {
                    continue;
                }
                let blob: Option<Vec<u8>> = st
                    .query_row([n], |r| r.get(0))
                    .optional()
                    .ctx("reading keys")?;
                if let Some(k) = blob.and_then(|b| key_from_row(n.clone(), b)) {
                    out.push(k);
                }
            }
            Ok(out)
        })
    }

    /// Every pinned key, sorted by name.
    pub fn all_keys(&self) -> Result<Vec<(String, [u8; 32])>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT name, public_key FROM keys ORDER BY name")
                .ctx("listing keys")?;
            let rows = st
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .ctx("listing keys")?;
            let mut out = Vec::new();
            for row in rows {
                let (name, blob) = row.ctx("listing keys")?;
                out.extend(key_from_row(name, blob));
            }
            Ok(out)
        })
    }

    /// Pins `key` for `name` unless a key is pinned already (one statement,
    /// so two sessions of one account cannot both pin).
    pub fn pin_key(&self, name: &str, key: &[u8; 32]) -> Result<Pin, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO keys(name, public_key) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                    params![name, &key[..]],
                )
                .ctx("pinning key")?;
            if n == 1 {
                return Ok(Pin::Pinned);
            }
            let pinned: Vec<u8> = c
                .query_row("SELECT public_key FROM keys WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .ctx("reading key")?;
            Ok(if pinned == key[..] {
                Pin::Same
            } else {
                Pin::Conflict
            })
        })
    }

    /// Replaces `name`'s pin with `new` if it is `old` (compare and swap).
    pub fn replace_key(
        &self,
        name: &str,
        old: &[u8; 32],
        new: &[u8; 32],
    ) -> Result<Replace, StoreError> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE keys SET public_key = ?3, pinned_at = unixepoch()
                     WHERE name = ?1 AND public_key = ?2",
                    params![name, &old[..], &new[..]],
                )
                .ctx("replacing key")?;
            if n == 1 {
                return Ok(Replace::Replaced);
            }
            let pinned = c
                .query_row("SELECT 1 FROM keys WHERE name = ?1", [name], |_| Ok(()))
                .optional()
                .ctx("reading key")?;
            Ok(if pinned.is_some() {
                Replace::Mismatch
            } else {
                Replace::NotPinned
            })
        })
    }

    /// Forgets `name`'s pinned key (the operator's `reset-key`); returns
    /// the key it was.
    pub fn reset_key(&self, name: &str) -> Result<Option<[u8; 32]>, StoreError> {
        self.with(|c| {
            let blob: Option<Vec<u8>> = c
                .query_row(
                    "DELETE FROM keys WHERE name = ?1 RETURNING public_key",
                    [name],
                    |r| r.get(0),
                )
                .optional()
                .ctx("resetting key")?;
            Ok(blob.and_then(|b| b.try_into().ok()))
        })
    }

    /// Records (or moves) a registration.
    pub fn put_registration(&self, r: &StoredRegistration) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO registrations(name, address, port) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET address = excluded.address,
                   port = excluded.port, bound_at = unixepoch()",
                params![r.name, r.address, r.port],
            )
            .ctx("saving registration")?;
            Ok(())
        })
    }

    /// Removes `name`'s registration if it still points at `address:port`.
    pub fn delete_registration(
        &self,
        name: &str,
        at: Option<(&str, u16)>,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = match at {
                None => c.execute("DELETE FROM registrations WHERE name = ?1", [name]),
                Some((address, port)) => c.execute(
                    "DELETE FROM registrations WHERE name = ?1 AND address = ?2 AND port = ?3",
                    params![name, address, port],
                ),
            }
            .ctx("deleting registration")?;
            Ok(n == 1)
        })
    }

    /// Every registration, sorted by name.
    pub fn registrations(&self) -> Result<Vec<StoredRegistration>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT name, address, port FROM registrations ORDER BY name")
                .ctx("listing registrations")?;
            let rows = st
                .query_map([], |r| {
                    Ok(StoredRegistration {
                        name: r.get(0)?,
                        address: r.get(1)?,
                        port: r.get(2)?,
                    })
                })
                .ctx("listing registrations")?;
            rows.collect::<Result<_, _>>().ctx("listing registrations")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_registrations_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        {
            let s = DirectoryStore::open(&path).unwrap();
            assert!(s.put_account("alice", "h1").unwrap());
            assert!(!s.put_account("alice", "h2").unwrap());
            assert!(!s.create_account("alice", "h3").unwrap());
            assert!(s.create_account("bob", "hb").unwrap());
            let r = StoredRegistration {
                name: "alice".into(),
                address: "127.0.0.1".into(),
                port: 5555,
            };
            s.put_registration(&r).unwrap();
        }
        let s = DirectoryStore::open(&path).unwrap();
        assert_eq!(s.account_hash("alice").unwrap().as_deref(), Some("h2"));
        assert_eq!(s.account_hash("carol").unwrap(), None);
        assert_eq!(s.account_names().unwrap(), ["alice", "bob"]);
        assert_eq!(s.registrations().unwrap().len(), 1);
        // A stale removal (the user moved meanwhile) removes nothing.
        assert!(!s
            .delete_registration("alice", Some(("127.0.0.1", 6666)))
            .unwrap());
        assert!(s
            .delete_registration("alice", Some(("127.0.0.1", 5555)))
            .unwrap());
        assert!(s.registrations().unwrap().is_empty());
    }

    #[test]
    fn a_key_is_pinned_once_replaced_only_from_the_pin_and_goes_with_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        {
            let s = DirectoryStore::open(&path).unwrap();
            assert!(s.pin_key("ghost", &k1).is_err(), "a key needs an account");
            s.put_account("alice", "h").unwrap();
            s.put_account("bob", "h").unwrap();
            assert_eq!(s.key("alice").unwrap(), None);
            assert_eq!(
                s.replace_key("alice", &k1, &k2).unwrap(),
                Replace::NotPinned
            );
            assert_eq!(s.pin_key("alice", &k1).unwrap(), Pin::Pinned);
            assert_eq!(s.pin_key("alice", &k1).unwrap(), Pin::Same);
            assert_eq!(s.pin_key("alice", &k2).unwrap(), Pin::Conflict);
            assert_eq!(s.replace_key("alice", &k2, &k3).unwrap(), Replace::Mismatch);
            assert_eq!(s.key("alice").unwrap(), Some(k1));
            assert_eq!(s.replace_key("alice", &k1, &k2).unwrap(), Replace::Replaced);
            assert_eq!(s.pin_key("bob", &k3).unwrap(), Pin::Pinned);
        }
        // Durable.
        let s = DirectoryStore::open(&path).unwrap();
        assert_eq!(s.key("alice").unwrap(), Some(k2));
        let asked = ["bob".into(), "nobody".into(), "alice".into(), "bob".into()];
        assert_eq!(
            s.keys_of(&asked).unwrap(),
            [("bob".to_string(), k3), ("alice".to_string(), k2)]
        );
        assert_eq!(
            s.all_keys().unwrap(),
            [("alice".to_string(), k2), ("bob".to_string(), k3)]
        );
        assert_eq!(s.reset_key("alice").unwrap(), Some(k2));
        assert_eq!(s.reset_key("alice").unwrap(), None);
        assert_eq!(s.pin_key("alice", &k1).unwrap(), Pin::Pinned);
        assert!(s.delete_account("bob").unwrap());
        assert_eq!(s.key("bob").unwrap(), None);
        s.put_account("bob", "h").unwrap();
        assert_eq!(
            s.pin_key("bob", &k1).unwrap(),
            Pin::Pinned,
            "a new bob pins anew"
        );
    }

    /// A database written by the previous release (schema version 1:
    /// accounts and registrations only) opens with everything in it and
    /// no key pinned.
    #[test]
    fn a_version_1_database_carries_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        {
            let db = Db::open(&path, &MIGRATIONS[..1]).unwrap();
            db.with(|c| {
                c.execute_batch(
                    "INSERT INTO accounts(name, phc_hash) VALUES ('alice', 'ha'), ('bob', 'hb');
                     INSERT INTO registrations(name, address, port) VALUES ('alice', '127.0.0.1', 5555);",
                )
                .ctx("writing a version 1 database")
            })
            .unwrap();
        }
        let s = DirectoryStore::open(&path).unwrap();
        let version: i64 = s
            .with(|c| {
                c.query_row("PRAGMA user_version", [], |r| r.get(0))
                    .ctx("reading version")
            })
            .unwrap();
        assert_eq!(version, 2);
        assert_eq!(s.account_names().unwrap(), ["alice", "bob"]);
        assert_eq!(s.account_hash("bob").unwrap().as_deref(), Some("hb"));
        assert_eq!(
            s.registrations().unwrap(),
            [StoredRegistration {
                name: "alice".into(),
                address: "127.0.0.1".into(),
                port: 5555
            }]
        );
        assert!(s.all_keys().unwrap().is_empty());
        assert_eq!(s.pin_key("alice", &[7; 32]).unwrap(), Pin::Pinned);
    }

    #[test]
    fn registration_needs_an_account_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirectoryStore::open(&dir.path().join("d.db")).unwrap();
        let r = StoredRegistration {
            name: "ghost".into(),
            address: "h".into(),
            port: 1,
        };
        assert!(s.put_registration(&r).is_err());
        s.put_account("ghost", "h").unwrap();
        s.put_registration(&r).unwrap();
        assert!(s.delete_account("ghost").unwrap());
        assert!(s.registrations().unwrap().is_empty());
    }
}
