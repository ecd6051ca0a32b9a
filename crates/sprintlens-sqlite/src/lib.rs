#![doc = include_str!("../README.md")]

mod analytics;
mod migrations;
mod outbox;
mod records;
mod sessions;
mod vectors;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use sprintlens_core::config::Synchronous;
use sprintlens_core::{Error, Result};
use tokio::sync::Semaphore;

pub use migrations::MIGRATIONS;

/// The backend name used in errors.
pub const BACKEND: &str = "sqlite";

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file (created with its folder if missing).
    pub path: PathBuf,
    /// Reader connections (reads run concurrently with the one writer).
    pub readers: u32,
    /// How long a statement waits for a lock.
    pub busy_timeout: Duration,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// Dimension of the vector index.
    pub dimension: usize,
}

impl SqliteOptions {
    /// Defaults for `path`: 4 readers, 5 s busy timeout, `synchronous=FULL`, 384 dimensions.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            dimension: 384,
        }
    }

    /// Parses `sqlite://PATH` (relative or, with a third slash, absolute). `key` names the config key.
    pub fn from_url(key: &str, url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| Error::config(key, "a SQLite URL starts with sqlite://"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(Error::config(
                key,
                "sqlite:// needs a file path, e.g. sqlite://data/app.db",
            ));
        }
        if path == ":memory:" {
            return Err(Error::config(
                key,
                "in-memory SQLite cannot share one database between the writer and readers; use a file",
            ));
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            return Err(Error::config(
                key,
                format!(
                    "sqlite URLs take no query parameters (got `{q}`); set options beside the url"
                ),
            ));
        }
        Ok(SqliteOptions::new(path))
    }
}

/// One SQLite database file serving [`RecordStore`](sprintlens_core::RecordStore),
/// [`VectorIndex`](sprintlens_core::VectorIndex), [`Analytics`](sprintlens_core::Analytics) and
/// [`SessionStore`](sprintlens_core::SessionStore).
///
/// One writer connection (every write is a `BEGIN IMMEDIATE` transaction) and a pool of read-only
/// connections; WAL lets reads run while the writer commits. All SQLite calls run on tokio's blocking
/// threads, never on the async executor's.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    options: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.options.path)
            .field("readers", &self.inner.options.readers)
            .finish()
    }
}

/// Maps a rusqlite error to the sprintlens error kinds: busy/locked → retryable unavailable, unique
/// and primary-key violations → conflict, cannot-open/full/read-only → unavailable (not retryable).
pub fn classify(operation: &'static str, err: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(e, msg) = &err {
        match e.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return Error::unavailable(BACKEND, operation, true, Some(Box::new(err)));
            }
            ErrorCode::ConstraintViolation
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                return Error::conflict(format!(
                    "{operation}: {}",
                    msg.clone().unwrap_or_else(|| "unique constraint".into())
                ));
            }
            ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::NotADatabase => {
                return Error::unavailable(BACKEND, operation, false, Some(Box::new(err)));
            }
            _ => {}
        }
    }
    Error::backend(BACKEND, operation, err)
}

fn configure(conn: &Connection, options: &SqliteOptions, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = sync_pragma(options);
    conn.pragma_update(None, "synchronous", sync)?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    } else {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    // Memory-mapped reads avoid a read syscall per page on scans (vector search reads every vector of
    // a workspace); the page cache keeps hot pages decoded.
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(options: SqliteOptions) -> Result<Self> {
        if options.readers == 0 {
            return Err(Error::config("records.pool_size", "must be at least 1"));
        }
        tokio::task::spawn_blocking(move || Self::open_blocking(options))
            .await
            .map_err(|e| Error::backend(BACKEND, "open", e))?
    }

    fn open_blocking(options: SqliteOptions) -> Result<Self> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::unavailable(BACKEND, "open", false, Some(Box::new(e))))?;
        }
        let writer = Connection::open(&options.path).map_err(|e| classify("open", e))?;
        configure(&writer, &options, true).map_err(|e| classify("open", e))?;
        let mut writer = writer;
        migrations::apply(&mut writer).map_err(|e| classify("migrate", e))?;
        vectors::check_dimension(&mut writer, options.dimension)?;
        let permits = Semaphore::new(options.readers as usize);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                options,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                permits,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    /// The applied schema versions.
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        self.read("schema_versions", |c| {
            let mut st = c.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer, on a blocking thread.
    pub(crate) async fn write<T, F>(&self, operation: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.write_with(operation, true, f).await
    }

    /// Like [`Self::write`]; with `durable` false the commit skips the WAL fsync (`synchronous=NORMAL`
    /// for this transaction only: checkpoints still sync, so nothing older can be lost or corrupted;
    /// the next durable commit syncs this one too). For writes whose loss on power failure is
    /// harmless: a lost outbox ack only makes the entry be delivered again, idempotently.
    pub(crate) async fn write_with<T, F>(
        &self,
        operation: &'static str,
        durable: bool,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            if !durable {
                conn.pragma_update(None, "synchronous", "NORMAL")
                    .map_err(|e| classify(operation, e))?;
            }
            let out = (|| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| classify(operation, e))?;
                let out = f(&tx)?;
                tx.commit().map_err(|e| classify(operation, e))?;
                Ok(out)
            })();
            if !durable {
                let restored = conn.pragma_update(None, "synchronous", sync_pragma(&inner.options));
                if let Err(e) = restored {
                    return Err(classify(operation, e));
                }
            }
            out
        })
        .await
        .map_err(|e| Error::backend(BACKEND, operation, e))?
    }

    /// Runs `f` on a reader connection, on a blocking thread.
    pub(crate) async fn read<T, F>(&self, operation: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read_with(operation, move |c| f(c).map_err(|e| classify(operation, e)))
            .await
    }

    /// Like [`Self::read`] with a closure that returns sprintlens errors.
    pub(crate) async fn read_with<T, F>(&self, operation: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|e| Error::backend(BACKEND, operation, e))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.options.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY
                            | OpenFlags::SQLITE_OPEN_NO_MUTEX
                            | OpenFlags::SQLITE_OPEN_URI,
                    )
                    .map_err(|e| classify(operation, e))?;
                    configure(&c, &inner.options, false).map_err(|e| classify(operation, e))?;
                    c
                }
            };
            let out = f(&conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            out
        })
        .await
        .map_err(|e| Error::backend(BACKEND, operation, e))?
    }
}

/// The `synchronous` pragma value of `options`.
fn sync_pragma(options: &SqliteOptions) -> &'static str {
    match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

pub(crate) fn uuid_text(id: impl Into<uuid::Uuid>) -> String {
    id.into().to_string()
}
