#![doc = include_str!("../README.md")]
// A build with only some adapters leaves some match arms unreachable; the full build stays lint-clean.
#![cfg_attr(
    not(all(
        feature = "sqlite",
        feature = "objectstore",
        feature = "memory",
        feature = "postgres",
        feature = "redis",
        feature = "clickhouse"
    )),
    allow(unused, unreachable_code)
)]

pub mod api;
#[cfg(feature = "postgres")]
pub mod canon;
pub mod config;
pub mod dual;
pub mod gc;
pub mod layers;
/// `sprintlens migrate`: its target is PostgreSQL, so it comes with the `postgres` feature.
#[cfg(feature = "postgres")]
pub mod migrate;
pub mod open;
pub mod phase;

use std::sync::Arc;
use std::time::Duration;

pub use sprintlens_core as core;
pub use sprintlens_core::config::StorageConfig;
use sprintlens_core::{
    Analytics, BlobStore, Cache, Embedder, OutboxStore, RecordStore, Result, SessionPolicy,
    SessionStore, VectorIndex, WorkspaceId,
};

pub use api::Workspace;

/// The opened storage layer: one port per concern, chosen by configuration.
#[derive(Clone)]
pub struct Storage {
    records: Arc<dyn RecordStore>,
    /// The records backend's own outbox (SQLite, PostgreSQL), for the migration layers.
    outbox: Option<Arc<dyn OutboxStore>>,
    /// The analytics backend's own event outbox (SQLite), for the migration layers.
    event_outbox: Option<Arc<dyn sprintlens_core::EventOutboxStore>>,
    /// The vector backend's own outbox (SQLite), for the migration layers.
    vector_outbox: Option<Arc<dyn sprintlens_core::VectorOutboxStore>>,
    /// The migration in progress (`[migration] mode` other than `single`).
    migration: Option<Arc<phase::Migration>>,
    vectors: Arc<dyn VectorIndex>,
    analytics: Arc<dyn Analytics>,
    blobs: Arc<dyn BlobStore>,
    cache: Arc<dyn Cache>,
    sessions: Arc<dyn SessionStore>,
    embedder: Arc<dyn Embedder>,
    cache_ttl: Duration,
    session_policy: SessionPolicy,
    #[cfg(feature = "sqlite")]
    sqlite_files: Vec<sprintlens_sqlite::SqliteStore>,
    #[cfg(feature = "postgres")]
    postgres: Option<sprintlens_postgres::PgStore>,
    #[cfg(feature = "clickhouse")]
    clickhouse: Option<sprintlens_clickhouse::ClickHouseAnalytics>,
    config: StorageConfig,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The schema state of one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Backend name.
    pub backend: &'static str,
    /// Where it lives.
    pub location: String,
    /// Applied migration versions.
    pub applied: Vec<i64>,
    /// Migrations the build knows.
    pub known: usize,
}

impl Storage {
    /// Loads the configuration (`file`, then `SPRINTLENS_*` variables) and opens it.
    pub async fn open_from(file: Option<&std::path::Path>) -> Result<Storage> {
        Storage::open(config::load(file)?).await
    }

    /// A handle scoped to one workspace: the typed API.
    pub fn workspace(&self, id: WorkspaceId) -> Workspace<'_> {
        Workspace::new(self, id)
    }

    /// The configuration in force.
    pub fn config(&self) -> &StorageConfig {
        &self.config
    }
    /// The system of record.
    pub fn records(&self) -> &Arc<dyn RecordStore> {
        &self.records
    }
    /// The records backend's own outbox, if it keeps one (SQLite, PostgreSQL). Operators read its
    /// depth and parked entries; the migration layers write it.
    pub fn outbox(&self) -> Option<&Arc<dyn OutboxStore>> {
        self.outbox.as_ref()
    }
    /// The analytics backend's own event outbox, if it keeps one (SQLite).
    pub fn event_outbox(&self) -> Option<&Arc<dyn sprintlens_core::EventOutboxStore>> {
        self.event_outbox.as_ref()
    }
    /// The vector backend's own outbox, if it keeps one (SQLite).
    pub fn vector_outbox(&self) -> Option<&Arc<dyn sprintlens_core::VectorOutboxStore>> {
        self.vector_outbox.as_ref()
    }
    /// The migration in progress, when `[migration] mode` is not `single`.
    pub fn migration(&self) -> Option<&Arc<phase::Migration>> {
        self.migration.as_ref()
    }
    /// The vector index.
    pub fn vectors(&self) -> &Arc<dyn VectorIndex> {
        &self.vectors
    }
    /// The analytics store.
    pub fn analytics(&self) -> &Arc<dyn Analytics> {
        &self.analytics
    }
    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
    /// The cache.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }
    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }
    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
    /// Lifetimes of new sessions, from `[sessions]`.
    pub fn session_policy(&self) -> SessionPolicy {
        self.session_policy
    }

    /// The PostgreSQL store behind `records`, if that is where they live (operator tasks: its
    /// checkpoints and indexes).
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Option<&sprintlens_postgres::PgStore> {
        self.postgres.as_ref()
    }

    /// Applies pending schema migrations everywhere: SQLite files (opening already did) and
    /// PostgreSQL (with `[records] admin_url`, the owner role). Re-applying is a no-op.
    pub async fn apply_schema(&self) -> Result<Vec<SchemaStatus>> {
        #[cfg(feature = "postgres")]
        if let Some(pg) = &self.postgres {
            let admin = self.config.records.admin_url.as_ref().ok_or_else(|| {
                sprintlens_core::Error::config(
                    "records.admin_url",
                    "schema apply on PostgreSQL needs the owner role's URL (the application role cannot create tables)",
                )
            })?;
            pg.apply_schema(admin.expose()).await?;
        }
        #[cfg(feature = "clickhouse")]
        if let Some(ch) = &self.clickhouse {
            ch.apply_schema().await?;
        }
        self.schema_status().await
    }

    /// Each database's schema state.
    pub async fn schema_status(&self) -> Result<Vec<SchemaStatus>> {
        #[allow(unused_mut)]
        let mut out = Vec::new();
        #[cfg(feature = "sqlite")]
        for s in &self.sqlite_files {
            out.push(SchemaStatus {
                backend: "sqlite",
                location: s.path().display().to_string(),
                applied: s.schema_versions().await?,
                known: sprintlens_sqlite::MIGRATIONS.len(),
            });
        }
        #[cfg(feature = "postgres")]
        if let Some(pg) = &self.postgres {
            out.push(SchemaStatus {
                backend: "postgres",
                location: sprintlens_core::config::redact(&pg.options().url),
                applied: pg.schema_versions().await.unwrap_or_default(),
                known: sprintlens_postgres::MIGRATIONS.len(),
            });
        }
        #[cfg(feature = "clickhouse")]
        if let Some(ch) = &self.clickhouse {
            let o = ch.options();
            out.push(SchemaStatus {
                backend: "clickhouse",
                location: format!("{}/{}", o.endpoint, o.database),
                applied: ch.schema_versions().await?,
                known: ch.known_migrations(),
            });
        }
        Ok(out)
    }
}
