//! The SQLite owner. Every schema, migration and SQL statement of Roundtable
//! lives under this module; services call it through typed functions.
//!
//! Calls are synchronous (SQLite is); async callers go through
//! [`tokio::task::spawn_blocking`] or the `*_async` helpers of each store.

pub mod chat;
pub mod directory;
pub mod trainings;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// A store failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database {what} failed: {source}")]
    Sql {
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than this build knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("database worker failed: {0}")]
    Worker(String),
}

pub(crate) trait Context<T> {
    fn ctx(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { what, source })
    }
}

/// Opens `path` in WAL mode and brings its schema up to date by applying
/// `migrations[v..]` where `v` is the stored `user_version`, each in its own
/// transaction so that a crash never leaves a half-migrated schema.
pub(crate) fn open(path: &Path, migrations: &[&str]) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .ctx("enabling WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .ctx("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .ctx("enabling foreign keys")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .ctx("setting busy timeout")?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx("reading schema version")?;
    let known = migrations.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().ctx("starting migration")?;
        tx.execute_batch(sql).ctx("migrating schema")?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .ctx("recording schema version")?;
        tx.commit().ctx("committing migration")?;
    }
    Ok(conn)
}

/// One SQLite connection shared by a store's handles; calls are serialised.
#[derive(Clone)]
pub(crate) struct Db(Arc<Mutex<Connection>>);

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Opens the database and starts its checkpointer: a thread with its
    /// own connection that moves the WAL into the database every second.
    /// Automatic checkpoints are off, so no request ever waits for the
    /// fsyncs a checkpoint does.
    pub(crate) fn open(path: &Path, migrations: &[&str]) -> Result<Self, StoreError> {
        let conn = open(path, migrations)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .ctx("turning automatic checkpoints off")?;
        let db = Db(Arc::new(Mutex::new(conn)));
        let checkpointer = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let alive = Arc::downgrade(&db.0);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while alive.strong_count() > 0 {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let r =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = r {
                        tracing::warn!(%e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Worker(e.to_string()))?;
        Ok(db)
    }

    /// Runs `f` with the connection. A panic while holding the lock cannot
    /// leave SQLite inconsistent (statements and transactions are atomic),
    /// so a poisoned lock is still usable.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

/// Runs a blocking store call on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
}
