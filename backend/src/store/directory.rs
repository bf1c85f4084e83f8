//! The directory server's database: accounts and registrations.

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{Context, Db, StoreError};

const MIGRATIONS: &[&str] = &["
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
"];

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
