#![doc = include_str!("../README.md")]

mod copy;
mod migrations;
mod outbox;
mod records;
mod vectors;

use std::str::FromStr;
use std::time::Duration;

use sprintlens_core::{Error, Result, WorkspaceId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub use migrations::{MIGRATIONS, RECORD_INDEXES, VECTOR_INDEX};

/// The backend name used in errors.
pub const BACKEND: &str = "postgres";

/// Settings of a [`PgStore`].
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The application role's URL (`postgres://user:password@host:port/db`): a non-owner role, so
    /// row-level security applies.
    pub url: String,
    /// A read replica for reads (`get`, `list`, `search`), if any.
    pub read_url: Option<String>,
    /// A role with BYPASSRLS for operator scans across workspaces (backfill, verify); without it those
    /// scans are `Unsupported`.
    pub operator_url: Option<String>,
    /// Connections per pool.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection.
    pub acquire_timeout: Duration,
    /// Server-side limit of one statement.
    pub statement_timeout: Duration,
    /// Dimension of the vector index.
    pub dimension: usize,
    /// Store vectors as `halfvec` (half the space; for large collections).
    pub half: bool,
    /// HNSW `ef_search` (candidates examined per search; higher is more accurate and slower).
    pub ef_search: u32,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = sprintlens_core::config::redact;
        f.debug_struct("PgOptions")
            .field("url", &r(&self.url))
            .field("read_url", &self.read_url.as_deref().map(r))
            .field("operator_url", &self.operator_url.as_deref().map(r))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("dimension", &self.dimension)
            .field("half", &self.half)
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

impl PgOptions {
    /// Defaults for `url`: pool of 8, 5 s acquire timeout, 30 s statement timeout, 384 dimensions,
    /// full-precision vectors, `ef_search` 100.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            read_url: None,
            operator_url: None,
            pool_size: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            dimension: 384,
            half: false,
            ef_search: 100,
        }
    }

    fn connect_options(&self, key: &str, url: &str) -> Result<PgConnectOptions> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::config(
                key,
                "a PostgreSQL URL starts with postgres://",
            ));
        }
        let ms = self.statement_timeout.as_millis().to_string();
        PgConnectOptions::from_str(url)
            .map(|o| {
                o.options([("statement_timeout", ms.as_str())])
                    .application_name("sprintlens")
            })
            .map_err(|e| Error::config(key, format!("invalid PostgreSQL URL: {e}")))
    }

    fn pool(&self, key: &str, url: &str) -> Result<PgPool> {
        let opts = self.connect_options(key, url)?;
        Ok(PgPoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(opts))
    }
}

/// PostgreSQL + pgvector: [`RecordStore`](sprintlens_core::RecordStore) and
/// [`VectorIndex`](sprintlens_core::VectorIndex), tenant-isolated by row-level security.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    read: Option<PgPool>,
    operator: Option<PgPool>,
    options: PgOptions,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("options", &self.options)
            .finish()
    }
}

/// Maps a sqlx error to the sprintlens kinds, in one place: unique violations and row-level-security
/// refusals → conflict; timeouts, serialisation failures, deadlocks, connection loss and pool
/// exhaustion → retryable unavailable; bad text → invalid input.
pub fn classify(operation: &'static str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            match code.as_str() {
                "23505" => Error::conflict(format!("{operation}: {}", db.message())),
                "42501" => Error::conflict(format!(
                    "{operation}: the row belongs to another workspace ({})",
                    db.message()
                )),
                "22021" | "22P02" | "22P05" | "54000" => {
                    Error::invalid("input", format!("{operation}: {}", db.message()))
                }
                c if c == "57014"
                    || c == "40001"
                    || c == "40P01"
                    || c == "53300"
                    || c == "55P03"
                    || c.starts_with("08") =>
                {
                    Error::unavailable(BACKEND, operation, true, Some(Box::new(err)))
                }
                _ => Error::backend(BACKEND, operation, err),
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            Error::unavailable(BACKEND, operation, true, Some(Box::new(err)))
        }
        sqlx::Error::PoolClosed => {
            Error::unavailable(BACKEND, operation, false, Some(Box::new(err)))
        }
        _ => Error::backend(BACKEND, operation, err),
    }
}

/// Every statement of a workspace-scoped call runs in a transaction whose `sprintlens.workspace`
/// setting is set with `set_config(…, true)` (transaction-local, like `SET LOCAL`), so a pooled
/// connection never carries one tenant's setting into another's request.
pub(crate) async fn scoped(
    pool: &PgPool,
    workspace: WorkspaceId,
    operation: &'static str,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await.map_err(|e| classify(operation, e))?;
    set_workspace(&mut tx, workspace, operation).await?;
    Ok(tx)
}

pub(crate) async fn set_workspace(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    operation: &'static str,
) -> Result<()> {
    sqlx::query("SELECT set_config('sprintlens.workspace', $1, true)")
        .bind(workspace.to_string())
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(operation, e))?;
    Ok(())
}

impl PgStore {
    /// Builds the pools (lazily connected: nothing is contacted until the first call). Config errors
    /// name their key.
    pub fn open(options: PgOptions) -> Result<Self> {
        if options.pool_size == 0 {
            return Err(Error::config("records.pool_size", "must be at least 1"));
        }
        if options.dimension == 0 || options.dimension > 16_000 {
            return Err(Error::config(
                "vectors.dimension",
                "must be between 1 and 16000",
            ));
        }
        let pool = options.pool("records.url", &options.url)?;
        let read = options
            .read_url
            .as_deref()
            .map(|u| options.pool("records.read_url", u))
            .transpose()?;
        let operator = options
            .operator_url
            .as_deref()
            .map(|u| options.pool("records.operator_url", u))
            .transpose()?;
        Ok(PgStore {
            pool,
            read,
            operator,
            options,
        })
    }

    pub(crate) fn reader(&self) -> &PgPool {
        self.read.as_ref().unwrap_or(&self.pool)
    }

    /// The operator role's pool, for reads across workspaces (only BYPASSRLS sees every row);
    /// `Unsupported` with `operation` (which says what needs it) without `operator_url`.
    pub(crate) fn across_workspaces(&self, operation: &'static str) -> Result<&PgPool> {
        self.operator
            .as_ref()
            .ok_or_else(|| Error::unsupported(BACKEND, operation))
    }

    /// Applies pending migrations and the vector table with `admin_url` (the owner role), then grants
    /// the application and operator roles of this store what they need. Re-applying is a no-op.
    /// Returns the versions applied now.
    pub async fn apply_schema(&self, admin_url: &str) -> Result<Vec<i64>> {
        let applied = self.apply_migrations(admin_url, MIGRATIONS).await?;
        self.apply_vectors_and_grants(admin_url).await?;
        // Indexes a backfill deferred and did not rebuild (it was abandoned) come back here.
        self.restore_record_indexes(admin_url).await?;
        self.restore_vector_index(admin_url).await?;
        Ok(applied)
    }

    /// Applies `migrations` (each in its own transaction with its bookkeeping row). Public for tests
    /// of the runner itself; services use [`Self::apply_schema`].
    #[doc(hidden)]
    pub async fn apply_migrations(
        &self,
        admin_url: &str,
        migrations: &[(i64, &str, &str)],
    ) -> Result<Vec<i64>> {
        let admin = self.options.pool("records.admin_url", admin_url)?;
        let mut applied = Vec::new();
        for (version, name, sql) in migrations {
            let mut tx = admin.begin().await.map_err(|e| classify("migrate", e))?;
            // One applier at a time, across processes.
            sqlx::query("SELECT pg_advisory_xact_lock(7355608)")
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("migrate", e))?;
            sqlx::query("CREATE TABLE IF NOT EXISTS sprintlens_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("migrate", e))?;
            let done: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sprintlens_migrations WHERE version = $1)",
            )
            .bind(version)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify("migrate", e))?;
            if !done {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("migrate", e))?;
                sqlx::query("INSERT INTO sprintlens_migrations (version, name) VALUES ($1, $2)")
                    .bind(version)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("migrate", e))?;
                applied.push(*version);
            }
            tx.commit().await.map_err(|e| classify("migrate", e))?;
        }
        admin.close().await;
        Ok(applied)
    }

    async fn apply_vectors_and_grants(&self, admin_url: &str) -> Result<()> {
        let admin = self.options.pool("records.admin_url", admin_url)?;
        let mut tx = admin.begin().await.map_err(|e| classify("migrate", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock(7355608)")
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("migrate", e))?;
        let meta: Option<(i32, bool)> = sqlx::query_as("SELECT dimension, half FROM vector_meta")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify("migrate", e))?;
        match meta {
            Some((d, _)) if d as usize != self.options.dimension => {
                return Err(Error::config(
                    "vectors.dimension",
                    format!(
                        "{} differs from the {d} this database's vector index was created with",
                        self.options.dimension
                    ),
                ));
            }
            Some((_, h)) if h != self.options.half => {
                return Err(Error::config(
                    "vectors.half",
                    format!("the vector index was created with half = {h}"),
                ));
            }
            Some(_) => {}
            None => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(migrations::vector_ddl(
                    self.options.dimension,
                    self.options.half,
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("migrate", e))?;
                sqlx::query("INSERT INTO vector_meta (dimension, half) VALUES ($1, $2)")
                    .bind(self.options.dimension as i32)
                    .bind(self.options.half)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("migrate", e))?;
            }
        }
        let mut roles = vec![role_of(&self.options.url)];
        if let Some(u) = &self.options.operator_url {
            roles.push(role_of(u));
        }
        for role in roles.into_iter().flatten() {
            // Identifiers cannot be bound: allow-list the characters, then quote.
            if !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::config(
                    "records.url",
                    "the role name must be [A-Za-z0-9_]+",
                ));
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON records, embeddings TO \"{role}\";
                 GRANT SELECT ON vector_meta, sprintlens_migrations TO \"{role}\";
                 GRANT SELECT, INSERT, UPDATE, DELETE ON sprintlens_checkpoints TO \"{role}\";
                 GRANT SELECT, INSERT, UPDATE, DELETE ON sprintlens_outbox TO \"{role}\";
                 GRANT USAGE ON SEQUENCE sprintlens_outbox_seq_seq TO \"{role}\";
                 GRANT SELECT, INSERT, UPDATE, DELETE ON sprintlens_vector_outbox TO \"{role}\";
                 GRANT USAGE ON SEQUENCE sprintlens_vector_outbox_seq_seq TO \"{role}\";"
            )))
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("migrate", e))?;
        }
        tx.commit().await.map_err(|e| classify("migrate", e))?;
        admin.close().await;
        Ok(())
    }

    /// The secondary indexes of `records` ([`RECORD_INDEXES`]) that do not exist (dropped by
    /// [`Self::defer_record_indexes`] and not yet rebuilt).
    pub async fn missing_record_indexes(&self) -> Result<Vec<&'static str>> {
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'records'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("indexes", e))?;
        Ok(RECORD_INDEXES
            .iter()
            .map(|(name, _, _)| *name)
            .filter(|name| !present.iter().any(|p| p == name))
            .collect())
    }

    /// Drops the secondary indexes of `records` (the primary key stays) with `admin_url`, the owner
    /// role, in one transaction, so a bulk load maintains one index instead of eight, and turns
    /// autovacuum off on the table until they are rebuilt; see [`Self::restore_record_indexes`].
    /// Only for a store that serves no reads meanwhile (the target of a backfill: `get` and `list`
    /// would scan).
    pub async fn defer_record_indexes(&self, admin_url: &str) -> Result<()> {
        self.drop_indexes(
            admin_url,
            "records",
            RECORD_INDEXES.iter().map(|(name, _, _)| *name),
        )
        .await
    }

    /// Drops `names` of `table` with `admin_url` in one transaction, and turns autovacuum off on
    /// `table` ([`Self::build_indexes`] turns it back on). A bulk load's inserts would otherwise start
    /// an autovacuum of the table (PostgreSQL vacuums after inserts too), which competes with the
    /// load for the machine, and which the index builds at the end wait for: a `CREATE INDEX` queued
    /// behind it waits `deadlock_timeout` (1 s by default) before the server cancels the vacuum —
    /// seen in the server log of `cargo xtask bench migrate` runs whose index phase took ~1 s more.
    /// Anti-wraparound vacuums still run (the setting does not stop them).
    async fn drop_indexes(
        &self,
        admin_url: &str,
        table: &str,
        names: impl IntoIterator<Item = &'static str>,
    ) -> Result<()> {
        let admin = self.options.pool("records.admin_url", admin_url)?;
        let mut tx = admin.begin().await.map_err(|e| classify("indexes", e))?;
        for name in names {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {name}")))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("indexes", e))?;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = off)"
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("indexes", e))?;
        tx.commit().await.map_err(|e| classify("indexes", e))?;
        admin.close().await;
        Ok(())
    }

    /// Runs the `CREATE INDEX` statements, each in a transaction of its own with [`BUILD_SETTINGS`]
    /// (and no parallel workers when `sessions` > 1), in `sessions` sessions of `admin_url` at
    /// once, each session taking the next statement when it is done with one (so the longest
    /// builds, listed first, do not end up queued behind each other); then analyzes `table` (fresh statistics for the planner: after a bulk load it would
    /// otherwise guess from an empty table until autovacuum comes by, and keyset scans then sort the
    /// whole table) and turns autovacuum back on for it ([`Self::drop_indexes`]). A build that fails
    /// leaves those done before it.
    async fn build_indexes(
        &self,
        admin_url: &str,
        statements: Vec<String>,
        sessions: usize,
        table: &str,
    ) -> Result<()> {
        let admin = self.options.pool("records.admin_url", admin_url)?;
        let queue = std::sync::Mutex::new(std::collections::VecDeque::from(statements));
        let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let build = || {
            let admin = admin.clone();
            async move {
                while let Some(statement) = next() {
                    let mut tx = admin.begin().await?;
                    sqlx::raw_sql(BUILD_SETTINGS).execute(&mut *tx).await?;
                    if sessions > 1 {
                        sqlx::raw_sql("SET LOCAL max_parallel_maintenance_workers = 0")
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                Ok::<_, sqlx::Error>(())
            }
        };
        let built = futures::future::join_all((0..sessions.max(1)).map(|_| build())).await;
        for b in built {
            b.map_err(|e| classify("indexes", e))?;
        }
        // Autovacuum back on in the same session: the indexes were missing because a backfill
        // deferred them, which turned it off.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET statement_timeout = 0; ANALYZE {table}; ALTER TABLE {table} RESET (autovacuum_enabled)"
        )))
        .execute(&admin)
        .await
        .map_err(|e| classify("indexes", e))?;
        admin.close().await;
        Ok(())
    }

    /// Whether autovacuum is off for `table` (`records` or `embeddings`): while a backfill's
    /// indexes are deferred ([`Self::defer_record_indexes`], [`Self::defer_vector_index`]).
    pub async fn autovacuum_paused(&self, table: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT NOT o.option_value::boolean
             FROM pg_class c, pg_options_to_table(c.reloptions) o
             WHERE c.oid = to_regclass($1) AND o.option_name = 'autovacuum_enabled'",
        )
        .bind(table)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| classify("indexes", e))?
        .unwrap_or(false))
    }

    /// Turns autovacuum back on for `table` (`records` or `embeddings`) with `admin_url` if it is
    /// off: after a backfill's deferred indexes are built (building them does it too; the backfill
    /// calls this when it finishes, for a run killed between its last build and the reset). Not
    /// called on a store nothing deferred, so an operator's own setting stays.
    pub async fn resume_autovacuum(&self, admin_url: &str, table: &str) -> Result<()> {
        if self.autovacuum_paused(table).await? {
            let admin = self.options.pool("records.admin_url", admin_url)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} RESET (autovacuum_enabled)"
            )))
            .execute(&admin)
            .await
            .map_err(|e| classify("indexes", e))?;
            admin.close().await;
        }
        Ok(())
    }

    /// Builds whichever secondary indexes of `records` are missing, with `admin_url`, without the
    /// statement timeout and with at least 256 MB of sort memory per session, in [`INDEX_BUILD_SESSIONS`]
    /// sessions at once (each builds its share in one transaction), then analyzes the table. If one
    /// fails, the indexes of the other sessions stay and the rest are still missing: calling this
    /// again builds them. Writes to `records` wait while the indexes build (CREATE INDEX holds a
    /// SHARE lock). Turns autovacuum back on for the table after building. Returns the indexes that
    /// were missing.
    pub async fn restore_record_indexes(&self, admin_url: &str) -> Result<Vec<&'static str>> {
        self.restore_record_indexes_in(admin_url, INDEX_BUILD_SESSIONS)
            .await
    }

    /// [`Self::restore_record_indexes`] in `sessions` sessions at once (a backfill passes its
    /// `--parallel`). With more than one, each build runs on its one backend
    /// (`max_parallel_maintenance_workers = 0` for it): the sessions are the parallelism, and
    /// parallel workers inside builds that already run side by side only add processes — on the
    /// stack's 2-core server two sessions built the seven indexes of a million records in a median
    /// 4.5 s without workers against 5.1 s with the server's two (nine runs each). One session
    /// keeps the server's workers.
    pub async fn restore_record_indexes_in(
        &self,
        admin_url: &str,
        sessions: usize,
    ) -> Result<Vec<&'static str>> {
        let missing = self.missing_record_indexes().await?;
        if missing.is_empty() {
            return Ok(missing);
        }
        let statements = RECORD_INDEX_BUILD_ORDER
            .iter()
            .filter(|name| missing.contains(name))
            .filter_map(|name| RECORD_INDEXES.iter().find(|(n, _, _)| n == name))
            .map(|(name, unique, definition)| {
                let unique = if *unique { "UNIQUE " } else { "" };
                format!("CREATE {unique}INDEX IF NOT EXISTS {name} {definition}")
            })
            .collect();
        self.build_indexes(admin_url, statements, sessions, "records")
            .await?;
        Ok(missing)
    }

    /// Whether the `embeddings` table exists without its HNSW index ([`VECTOR_INDEX`], dropped by
    /// [`Self::defer_vector_index`] and not yet rebuilt).
    pub async fn vector_index_missing(&self) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT to_regclass('embeddings') IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()
                                AND tablename = 'embeddings' AND indexname = $1)",
        )
        .bind(VECTOR_INDEX)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| classify("indexes", e))
    }

    /// Drops the HNSW index of `embeddings` with `admin_url`, the owner role, so a backfill loads
    /// without maintaining the graph row by row; see [`Self::restore_vector_index`]. Only for a store
    /// that serves no vector searches meanwhile (they would scan).
    pub async fn defer_vector_index(&self, admin_url: &str) -> Result<()> {
        self.drop_indexes(admin_url, "embeddings", [VECTOR_INDEX])
            .await
    }

    /// Builds the HNSW index of `embeddings` if it is missing, with `admin_url`, without the statement
    /// timeout and with at least 256 MB of build memory (a graph larger than that still builds, more
    /// slowly; a larger `maintenance_work_mem` of the role or server is kept),
    /// then analyzes the table and turns autovacuum back on for it. Returns whether it built it.
    pub async fn restore_vector_index(&self, admin_url: &str) -> Result<bool> {
        if !self.vector_index_missing().await? {
            return Ok(false);
        }
        let ddl = migrations::vector_index_ddl(self.options.half);
        self.build_indexes(admin_url, vec![ddl], 1, "embeddings")
            .await?;
        Ok(true)
    }

    /// Applied migration versions.
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar("SELECT version FROM sprintlens_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify("schema_versions", e))
    }

    /// The options in force.
    pub fn options(&self) -> &PgOptions {
        &self.options
    }
}

/// Transaction-local settings of an index build: no statement timeout, and at least 256 MB of
/// `maintenance_work_mem` (a role or server setting above that is kept).
const BUILD_SETTINGS: &str = "SET LOCAL statement_timeout = 0;
    SELECT set_config('maintenance_work_mem', '256MB', true)
    WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < 256 * 1024 * 1024";

/// Sessions [`PgStore::restore_record_indexes`] builds indexes in at once: two took 5.1–5.3 s for the
/// seven indexes of a million records where one took 5.8–6.0 s (PostgreSQL's own parallel workers
/// only help each index's sort). A backfill uses its `--parallel` instead.
pub const INDEX_BUILD_SESSIONS: usize = 2;

/// The order [`PgStore::restore_record_indexes`] hands the indexes of [`RECORD_INDEXES`] to its
/// sessions: the widest full indexes first, the partial ones on mostly-NULL columns last (measured
/// over a million messages, one session each: 0.6–1.0 s for the full ones, 0.2 s for
/// `records_by_name`, nothing for `records_unique_key`).
pub const RECORD_INDEX_BUILD_ORDER: &[&str] = &[
    "records_by_project",
    "records_by_parent",
    "records_scan_ws",
    "records_by_kind",
    "records_scan",
    "records_by_name",
    "records_unique_key",
];

/// `values` as a `halfvec` column holds them (`[vectors] half = true`): each component rounded to
/// the nearest half-precision number, ties to even, as binary COPY writes them and as pgvector's cast
/// from `vector` rounds.
pub fn halfvec_rounded(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|x| half::f16::from_f32(*x).to_f32())
        .collect()
}

/// The user name of a URL.
fn role_of(url: &str) -> Option<String> {
    PgConnectOptions::from_str(url)
        .ok()
        .map(|o| o.get_username().to_string())
}

pub(crate) fn ts(t: sprintlens_core::Timestamp) -> chrono::DateTime<chrono::Utc> {
    t.to_datetime()
}

pub(crate) fn from_ts(t: chrono::DateTime<chrono::Utc>) -> sprintlens_core::Timestamp {
    sprintlens_core::Timestamp::from_datetime(t)
}
