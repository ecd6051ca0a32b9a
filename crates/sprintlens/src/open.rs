//! Turning a [`StorageConfig`] into ports.
//!
//! [`plan`] resolves every section's URL to a backend without touching anything, so every config
//! error surfaces before a connection or a file is opened. [`Storage::open`] then opens the plan.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sprintlens_core::config::StorageConfig;
use sprintlens_core::{
    Analytics, BlobStore, Cache, Embedder, Error, OutboxStore, RecordStore, Result, SessionPolicy,
    SessionStore, VectorIndex,
};

use crate::Storage;

/// Schemes this build can open, by section.
pub fn compiled_schemes() -> Vec<&'static str> {
    let mut s = Vec::new();
    if cfg!(feature = "sqlite") {
        s.push("sqlite");
    }
    if cfg!(feature = "objectstore") {
        s.extend(["file", "memory (blobs)"]);
    }
    if cfg!(feature = "memory") {
        s.extend(["memory (cache, sessions)", "hash (embedder)"]);
    }
    if cfg!(feature = "postgres") {
        s.push("postgres");
    }
    if cfg!(feature = "redis") {
        s.push("redis (cache, sessions)");
    }
    if cfg!(feature = "clickhouse") {
        s.push("clickhouse (analytics)");
    }
    s
}

/// Schemes of adapters sprintlens does not have yet.
const NOT_YET: &[&str] = &[];

/// What a section resolves to.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (the application role's URL).
    Postgres(String),
    /// A local folder of blobs.
    Folder(PathBuf),
    /// Process memory.
    Memory,
    /// The built-in hashed embedder.
    Hash,
    /// A Redis server.
    Redis(String),
    /// An S3 bucket.
    S3(String),
    /// A ClickHouse database (`host:port/database`).
    ClickHouse(String),
}

/// The resolved backend of every section.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `[records]`.
    pub records: Backend,
    /// `[vectors]`.
    pub vectors: Backend,
    /// `[analytics]`.
    pub analytics: Backend,
    /// `[blobs]`.
    pub blobs: Backend,
    /// `[cache]`.
    pub cache: Backend,
    /// `[sessions]`.
    pub sessions: Backend,
    /// `[embedder]`.
    pub embedder: Backend,
}

fn unknown(key: &str, scheme: &str, allowed: &[&str]) -> Error {
    let why = if NOT_YET.contains(&scheme) {
        format!("the `{scheme}` adapter is not part of sprintlens yet")
    } else {
        format!("`{scheme}` cannot serve this section")
    };
    Error::config(
        key,
        format!(
            "{why}; this section accepts {} in this build",
            allowed.join(", ")
        ),
    )
}

fn feature_off(key: &str, scheme: &str, feature: &str) -> Error {
    Error::config(
        key,
        format!("scheme `{scheme}` needs the `{feature}` feature of the sprintlens crate"),
    )
}

fn sqlite_path(key: &str, url: &str) -> Result<Backend> {
    #[cfg(feature = "sqlite")]
    {
        sprintlens_sqlite::SqliteOptions::from_url(key, url).map(|o| Backend::Sqlite(o.path))
    }
    #[cfg(not(feature = "sqlite"))]
    {
        let _ = url;
        Err(feature_off(key, "sqlite", "sqlite"))
    }
}

fn postgres_url(key: &str, url: &str) -> Result<Backend> {
    if cfg!(feature = "postgres") {
        Ok(Backend::Postgres(url.to_string()))
    } else {
        Err(feature_off(key, "postgres", "postgres"))
    }
}

#[cfg(feature = "clickhouse")]
fn clickhouse_backend(config: &sprintlens_core::config::AnalyticsConfig) -> Result<Backend> {
    let o = sprintlens_clickhouse::ClickHouseOptions::from_config(config)?;
    Ok(Backend::ClickHouse(format!(
        "{}/{}",
        o.endpoint, o.database
    )))
}

#[cfg(not(feature = "clickhouse"))]
fn clickhouse_backend(_config: &sprintlens_core::config::AnalyticsConfig) -> Result<Backend> {
    Err(feature_off("analytics.url", "clickhouse", "clickhouse"))
}

fn need(key: &str, scheme: &str, feature: &str, enabled: bool, b: Backend) -> Result<Backend> {
    if enabled {
        Ok(b)
    } else {
        Err(feature_off(key, scheme, feature))
    }
}

#[cfg(feature = "objectstore")]
fn blob_backend(key: &str, url: &str, max: u64) -> Result<Backend> {
    let o = sprintlens_objectstore::BlobOptions::from_url(key, url, max)?;
    Ok(match o.location {
        sprintlens_objectstore::Location::Folder(p) => Backend::Folder(p),
        sprintlens_objectstore::Location::Memory => Backend::Memory,
        sprintlens_objectstore::Location::S3(l) => Backend::S3(l.bucket),
    })
}

#[cfg(not(feature = "objectstore"))]
fn blob_backend(key: &str, url: &str, _max: u64) -> Result<Backend> {
    let scheme = url.split("://").next().unwrap_or_default();
    Err(feature_off(key, scheme, "objectstore"))
}

/// Resolves every section's URL (pure: nothing is opened).
pub fn plan(config: &StorageConfig) -> Result<Plan> {
    config.validate()?;
    let mem = cfg!(feature = "memory");
    let records = {
        let (k, u) = ("records.url", &config.records.url);
        match u.scheme().as_str() {
            "sqlite" => sqlite_path(k, u.expose())?,
            "postgres" | "postgresql" => postgres_url(k, u.expose())?,
            s => return Err(unknown(k, s, &["sqlite://PATH", "postgres://…"])),
        }
    };
    let vectors = {
        let (k, u) = ("vectors.url", &config.vectors.url);
        match u.scheme().as_str() {
            "sqlite" => sqlite_path(k, u.expose())?,
            "postgres" | "postgresql" => {
                if u.expose() != config.records.url.expose() {
                    return Err(Error::config(
                        k,
                        "a PostgreSQL vector index lives in the records database: use the same URL as records.url",
                    ));
                }
                postgres_url(k, u.expose())?
            }
            s => return Err(unknown(k, s, &["sqlite://PATH", "postgres://…"])),
        }
    };
    let analytics = {
        let (k, u) = ("analytics.url", &config.analytics.url);
        match u.scheme().as_str() {
            "sqlite" => sqlite_path(k, u.expose())?,
            "clickhouse" => clickhouse_backend(&config.analytics)?,
            s => {
                return Err(unknown(
                    k,
                    s,
                    &[
                        "sqlite://PATH",
                        "clickhouse://USER:PASSWORD@HOST:PORT/DATABASE",
                    ],
                ));
            }
        }
    };
    let blobs = {
        let (k, u) = ("blobs.url", &config.blobs.url);
        match u.scheme().as_str() {
            "file" | "memory" | "s3" => blob_backend(k, u.expose(), config.blobs.max_object_bytes)?,
            s => return Err(unknown(k, s, &["file://DIR", "memory://", "s3://BUCKET?…"])),
        }
    };
    let redis = cfg!(feature = "redis");
    let cache = {
        let (k, u) = ("cache.url", &config.cache.url);
        match u.scheme().as_str() {
            "memory" if u.rest().is_empty() => need(k, "memory", "memory", mem, Backend::Memory)?,
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => need(
                k,
                "redis",
                "redis",
                redis,
                Backend::Redis(u.expose().into()),
            )?,
            s => {
                return Err(unknown(
                    k,
                    s,
                    &["memory://", "redis://…", "redis+cluster://…"],
                ));
            }
        }
    };
    let sessions = {
        let (k, u) = ("sessions.url", &config.sessions.url);
        match u.scheme().as_str() {
            "sqlite" => sqlite_path(k, u.expose())?,
            "memory" if u.rest().is_empty() => need(k, "memory", "memory", mem, Backend::Memory)?,
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => need(
                k,
                "redis",
                "redis",
                redis,
                Backend::Redis(u.expose().into()),
            )?,
            s => return Err(unknown(k, s, &["sqlite://PATH", "memory://", "redis://…"])),
        }
    };
    let embedder = {
        let (k, u) = ("embedder.url", &config.embedder.url);
        match u.scheme().as_str() {
            "hash" if u.rest().is_empty() => need(k, "hash", "memory", mem, Backend::Hash)?,
            s => return Err(unknown(k, s, &["hash://"])),
        }
    };
    Ok(Plan {
        records,
        vectors,
        analytics,
        blobs,
        cache,
        sessions,
        embedder,
    })
}

/// Opened SQLite files, shared by every section that names the same path, and the PostgreSQL store.
#[derive(Default)]
struct SqliteFiles {
    #[cfg(feature = "sqlite")]
    open: std::collections::HashMap<PathBuf, sprintlens_sqlite::SqliteStore>,
    #[cfg(feature = "postgres")]
    postgres: Option<sprintlens_postgres::PgStore>,
}

#[cfg(feature = "sqlite")]
impl SqliteFiles {
    async fn get(
        &mut self,
        path: &PathBuf,
        config: &StorageConfig,
    ) -> Result<sprintlens_sqlite::SqliteStore> {
        if let Some(s) = self.open.get(path) {
            return Ok(s.clone());
        }
        let mut o = sprintlens_sqlite::SqliteOptions::new(path.clone());
        o.readers = config.records.pool_size;
        o.busy_timeout = Duration::from_millis(config.records.busy_timeout_ms);
        o.synchronous = config.records.synchronous;
        o.dimension = config.vectors.dimension;
        let s = sprintlens_sqlite::SqliteStore::open(o).await?;
        self.open.insert(path.clone(), s.clone());
        Ok(s)
    }
}

#[cfg(feature = "redis")]
fn redis_options(url: &str, pool: u32, timeout_ms: u64) -> sprintlens_redis::RedisOptions {
    let mut o = sprintlens_redis::RedisOptions::new(url);
    o.pool_size = pool as usize;
    o.command_timeout = Duration::from_millis(timeout_ms);
    o.wait_timeout = Duration::from_millis(timeout_ms);
    o
}

fn missing(key: &str) -> Error {
    Error::config(key, "no adapter for this URL in this build")
}

#[cfg(feature = "postgres")]
fn pg_store(config: &StorageConfig, url: &str) -> Result<sprintlens_postgres::PgStore> {
    let r = &config.records;
    let mut o = sprintlens_postgres::PgOptions::new(url);
    o.pool_size = r.pool_size;
    o.acquire_timeout = Duration::from_millis(r.acquire_timeout_ms);
    o.statement_timeout = Duration::from_millis(r.statement_timeout_ms);
    o.read_url = r.read_url.as_ref().map(|u| u.expose().to_string());
    o.operator_url = r.operator_url.as_ref().map(|u| u.expose().to_string());
    o.dimension = config.vectors.dimension;
    o.half = config.vectors.half;
    o.ef_search = config.vectors.ef_search;
    sprintlens_postgres::PgStore::open(o)
}

/// Opens `backend` as an `Arc<dyn $port>`, from the adapters compiled in.
macro_rules! open_port {
    ($files:expr, $config:expr, $backend:expr, $key:literal, $port:ty, {$($extra:tt)*}) => {{
        let port: Result<Arc<$port>> = match $backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(p) => Ok(Arc::new($files.get(p, $config).await?)),
            $($extra)*
            #[allow(unreachable_patterns)]
            _ => Err(missing($key)),
        };
        port?
    }};
}

impl Storage {
    /// Validates `config`, resolves every backend, then opens them (applying embedded schema
    /// migrations). Config errors come before anything is opened.
    pub async fn open(config: StorageConfig) -> Result<Storage> {
        plan(&config)?;
        // The new stores' configuration is read and checked before anything opens, too.
        let target = crate::phase::target_config(&config)?;
        let base = Box::pin(Storage::open_plain(config)).await?;
        let mut storage = match target {
            None => base,
            Some(target) => crate::phase::compose(base, target).await?,
        };
        if storage.config.cache.read_through {
            storage.records = Arc::new(crate::layers::CachedRecordStore::new(
                storage.records.clone(),
                storage.cache.clone(),
                storage.cache_ttl,
            ));
        }
        Ok(storage)
    }

    /// Opens `config`'s own stores, ignoring `[migration]` and without the cache layer.
    pub(crate) async fn open_plain(config: StorageConfig) -> Result<Storage> {
        let plan = plan(&config)?;
        #[allow(unused_mut)]
        let mut files = SqliteFiles::default();
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(url) = &plan.records {
            files.postgres = Some(pg_store(&config, url)?);
        }
        let records = open_port!(
            files,
            &config,
            &plan.records,
            "records.url",
            dyn RecordStore,
            {
                #[cfg(feature = "postgres")]
                Backend::Postgres(_) => files.postgres.clone().map(|p| Arc::new(p) as Arc<dyn RecordStore>).ok_or_else(|| missing("records.url")),
            }
        );
        let vectors = open_port!(
            files,
            &config,
            &plan.vectors,
            "vectors.url",
            dyn VectorIndex,
            {
                #[cfg(feature = "postgres")]
                Backend::Postgres(_) => files.postgres.clone().map(|p| Arc::new(p) as Arc<dyn VectorIndex>).ok_or_else(|| missing("vectors.url")),
            }
        );
        #[cfg(feature = "clickhouse")]
        let clickhouse = match &plan.analytics {
            Backend::ClickHouse(_) => Some(sprintlens_clickhouse::ClickHouseAnalytics::new(
                sprintlens_clickhouse::ClickHouseOptions::from_config(&config.analytics)?,
            )),
            _ => None,
        };
        let analytics = open_port!(
            files,
            &config,
            &plan.analytics,
            "analytics.url",
            dyn Analytics,
            {
                #[cfg(feature = "clickhouse")]
                Backend::ClickHouse(_) => clickhouse.clone().map(|c| Arc::new(c) as Arc<dyn Analytics>).ok_or_else(|| missing("analytics.url")),
            }
        );
        let sessions = open_port!(files, &config, &plan.sessions, "sessions.url", dyn SessionStore, {
            #[cfg(feature = "memory")]
            Backend::Memory => Ok(Arc::new(sprintlens_memory::MemorySessionStore::new())),
            #[cfg(feature = "redis")]
            Backend::Redis(url) => sprintlens_redis::RedisSessionStore::new(&redis_options(
                url,
                config.sessions.pool_size,
                config.sessions.command_timeout_ms,
            ))
            .map(|s| Arc::new(s) as Arc<dyn SessionStore>),
        });
        let blobs: Arc<dyn BlobStore> = match &plan.blobs {
            #[cfg(feature = "objectstore")]
            Backend::Folder(_) | Backend::Memory | Backend::S3(_) => {
                let store = sprintlens_objectstore::ObjectBlobStore::open(
                    sprintlens_objectstore::BlobOptions::from_config(&config.blobs)?,
                )?;
                // S3 capabilities (conditional writes) are probed, not assumed.
                if matches!(plan.blobs, Backend::S3(_)) {
                    store.probe().await?;
                }
                Arc::new(store)
            }
            #[allow(unreachable_patterns)]
            _ => return Err(missing("blobs.url")),
        };
        let cache: Arc<dyn Cache> =
            match &plan.cache {
                #[cfg(feature = "redis")]
                Backend::Redis(url) => Arc::new(sprintlens_redis::RedisCache::new(
                    &redis_options(url, config.cache.pool_size, config.cache.command_timeout_ms),
                )?),
                #[cfg(feature = "memory")]
                Backend::Memory => Arc::new(sprintlens_memory::MemoryCache::new(
                    config.cache.max_entries,
                )),
                #[allow(unreachable_patterns)]
                _ => return Err(missing("cache.url")),
            };
        let embedder: Arc<dyn Embedder> = match &plan.embedder {
            #[cfg(feature = "memory")]
            Backend::Hash => Arc::new(sprintlens_memory::HashEmbedder::new(
                config.embedder.dimension,
            )?),
            #[allow(unreachable_patterns)]
            _ => return Err(missing("embedder.url")),
        };
        let session_policy = SessionPolicy {
            idle: Duration::from_secs(config.sessions.idle_timeout_secs),
            absolute: Duration::from_secs(config.sessions.absolute_timeout_secs),
        };
        let outbox: Option<Arc<dyn OutboxStore>> = match &plan.records {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(p) => Some(Arc::new(files.get(p, &config).await?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => files
                .postgres
                .clone()
                .map(|p| Arc::new(p) as Arc<dyn OutboxStore>),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let event_outbox: Option<Arc<dyn sprintlens_core::EventOutboxStore>> = match &plan.analytics
        {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(p) => Some(Arc::new(files.get(p, &config).await?)),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let vector_outbox: Option<Arc<dyn sprintlens_core::VectorOutboxStore>> = match &plan.vectors
        {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(p) => Some(Arc::new(files.get(p, &config).await?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => files
                .postgres
                .clone()
                .map(|p| Arc::new(p) as Arc<dyn sprintlens_core::VectorOutboxStore>),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Ok(Storage {
            records,
            outbox,
            event_outbox,
            vector_outbox,
            migration: None,
            vectors,
            analytics,
            blobs,
            cache,
            sessions,
            embedder,
            cache_ttl: Duration::from_millis(config.cache.ttl_ms),
            session_policy,
            #[cfg(feature = "sqlite")]
            sqlite_files: files.open.into_values().collect(),
            #[cfg(feature = "postgres")]
            postgres: files.postgres,
            #[cfg(feature = "clickhouse")]
            clickhouse,
            config,
        })
    }
}
