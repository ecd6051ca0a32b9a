//! Configuration types: one section per port, each with a backend URL and the settings beside it.
//!
//! Loading (TOML file plus `SPRINTLENS_*` environment overrides) lives in the facade; these types
//! hold and validate the values. Every error names its key as `section.key`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A backend URL: `scheme://rest`. `Debug` and `Display` redact passwords and secret query values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendUrl(String);

/// Query parameter names whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "secret",
    "secret_access_key",
    "token",
    "key_secret",
];

impl BackendUrl {
    /// Parses `scheme://rest`, naming `key` on error.
    pub fn parse(key: &str, url: &str) -> Result<Self> {
        match url.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-') =>
            {
                Ok(BackendUrl(url.to_string()))
            }
            _ => Err(Error::config(
                key,
                format!("`{}` is not a URL of the form scheme://…", redact(url)),
            )),
        }
    }
    /// The scheme, lowercase.
    pub fn scheme(&self) -> String {
        self.0
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }
    /// Everything after `://` and before `?`.
    pub fn rest(&self) -> &str {
        let rest = self.0.split_once("://").map(|(_, r)| r).unwrap_or("");
        rest.split_once('?').map(|(r, _)| r).unwrap_or(rest)
    }
    /// The query parameters (`?a=b&c=d`), undecoded.
    pub fn query(&self) -> Vec<(String, String)> {
        self.0
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| match p.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (p.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The full URL, secrets included (pass it to the driver, never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `url` with the password and secret query values replaced by `***`.
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        let parts: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}=***")
                }
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendUrl({})", redact(&self.0))
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// SQLite durability: `full` (default: no commit lost on power loss) or `normal` (faster; in WAL mode
/// the last commits can be lost on power loss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// `PRAGMA synchronous=FULL`.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL`.
    Normal,
}

/// `[records]`: the system of record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// `sqlite://PATH` or `postgres://user:password@host:port/db` (the application role).
    pub url: BackendUrl,
    /// Connections per pool (SQLite: reader connections beside the one writer).
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// How long a write waits for a lock (SQLite busy timeout), in milliseconds.
    #[serde(default = "default_busy")]
    pub busy_timeout_ms: u64,
    /// SQLite durability.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// PostgreSQL: the owner role's URL, used only by `schema apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<BackendUrl>,
    /// PostgreSQL: a role with BYPASSRLS for operator scans across workspaces (backfill, verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_url: Option<BackendUrl>,
    /// PostgreSQL: a read replica for reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_url: Option<BackendUrl>,
    /// PostgreSQL: how long a request waits for a pooled connection, in milliseconds.
    #[serde(default = "default_acquire")]
    pub acquire_timeout_ms: u64,
    /// PostgreSQL: server-side limit of one statement, in milliseconds.
    #[serde(default = "default_statement")]
    pub statement_timeout_ms: u64,
}

/// `[vectors]`: semantic search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsConfig {
    /// `sqlite://PATH`, `memory://` (later `postgres://…`).
    pub url: BackendUrl,
    /// Dimension of every vector; must equal the embedder's.
    #[serde(default = "default_dimension")]
    pub dimension: usize,
    /// PostgreSQL: store vectors as `halfvec` (half the space, for large collections).
    #[serde(default)]
    pub half: bool,
    /// PostgreSQL: HNSW `ef_search` (higher: better recall, slower).
    #[serde(default = "default_ef_search")]
    pub ef_search: u32,
}

/// `[analytics]`: evaluation metrics, cost, latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// `sqlite://PATH` or `clickhouse://USER:PASSWORD@HOST:PORT/DATABASE`.
    pub url: BackendUrl,
    /// ClickHouse: days raw events are kept (a TTL on the event tables); 0 keeps them for ever.
    #[serde(default)]
    pub retention_days: u32,
    /// ClickHouse: how many recent insert blocks each table remembers to drop a retried batch
    /// (`non_replicated_deduplication_window`); 0 turns deduplication of retries off.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: u64,
    /// ClickHouse: time allowed for one request, in milliseconds.
    #[serde(default = "default_analytics_timeout")]
    pub request_timeout_ms: u64,
    /// ClickHouse: retries of a failed request that is safe to repeat (queries; inserts carry a
    /// deduplication token, so a retried batch is not counted twice).
    #[serde(default = "default_analytics_retries")]
    pub max_retries: u32,
    /// ClickHouse: the cluster name for the replicated DDL set (`ON CLUSTER`, Replicated engines,
    /// Distributed tables); unset means one node.
    #[serde(default)]
    pub cluster: Option<String>,
}

impl AnalyticsConfig {
    /// A section with `url` and every other key at its default.
    pub fn new(url: BackendUrl) -> Self {
        AnalyticsConfig {
            url,
            retention_days: 0,
            dedup_window: default_dedup_window(),
            request_timeout_ms: default_analytics_timeout(),
            max_retries: default_analytics_retries(),
            cluster: None,
        }
    }
}

fn default_dedup_window() -> u64 {
    1000
}
fn default_analytics_timeout() -> u64 {
    30_000
}
fn default_analytics_retries() -> u32 {
    3
}

/// `[blobs]`: files and media.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsConfig {
    /// `file://DIR`, `memory://` (later `s3://…`).
    pub url: BackendUrl,
    /// Largest object accepted, in bytes.
    #[serde(default = "default_max_object")]
    pub max_object_bytes: u64,
    /// Streamed uploads larger than this go up as multipart uploads (smaller ones in one request).
    #[serde(default = "default_part_bytes")]
    pub multipart_threshold_bytes: u64,
    /// Size of each multipart part (S3 needs at least 5 MiB); the buffer per part in flight.
    #[serde(default = "default_part_bytes")]
    pub part_size_bytes: u64,
    /// Parts of one upload in flight at once (memory per upload ~ `part_size_bytes` × this).
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: u32,
    /// Time allowed to connect to the object server, in milliseconds.
    #[serde(default = "default_blob_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed for one HTTP request, in milliseconds.
    #[serde(default = "default_blob_request_timeout")]
    pub request_timeout_ms: u64,
    /// Retries of a failed request that is safe to repeat (0 = none).
    #[serde(default = "default_blob_retries")]
    pub max_retries: u32,
    /// First backoff between retries, in milliseconds (doubling, with jitter, up to 15 s).
    #[serde(default = "default_blob_backoff")]
    pub retry_backoff_ms: u64,
    /// Overall deadline of one request including its retries, in milliseconds.
    #[serde(default = "default_blob_deadline")]
    pub deadline_ms: u64,
    /// Store attachments by their SHA-256 (`sha256/<hex>`), so identical bytes are stored once.
    #[serde(default)]
    pub content_addressed: bool,
}

/// Smallest multipart part S3 accepts (all parts but the last).
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

impl Default for BlobsConfig {
    /// `memory://` with every key at its default.
    fn default() -> Self {
        BlobsConfig::new(BackendUrl("memory://".to_string()))
    }
}

impl BlobsConfig {
    /// A section with `url` and every other key at its default.
    pub fn new(url: BackendUrl) -> Self {
        BlobsConfig {
            url,
            max_object_bytes: default_max_object(),
            multipart_threshold_bytes: default_part_bytes(),
            part_size_bytes: default_part_bytes(),
            upload_concurrency: default_upload_concurrency(),
            connect_timeout_ms: default_blob_connect_timeout(),
            request_timeout_ms: default_blob_request_timeout(),
            max_retries: default_blob_retries(),
            retry_backoff_ms: default_blob_backoff(),
            deadline_ms: default_blob_deadline(),
            content_addressed: false,
        }
    }

    /// Checks the numbers (the URL is checked by the adapter's parser).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("blobs.max_object_bytes", self.max_object_bytes),
            (
                "blobs.multipart_threshold_bytes",
                self.multipart_threshold_bytes,
            ),
            ("blobs.upload_concurrency", self.upload_concurrency as u64),
            ("blobs.connect_timeout_ms", self.connect_timeout_ms),
            ("blobs.request_timeout_ms", self.request_timeout_ms),
            ("blobs.deadline_ms", self.deadline_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(key, "must be positive"));
            }
        }
        if self.part_size_bytes < MIN_PART_BYTES || self.part_size_bytes > 5 * 1024 * 1024 * 1024 {
            return Err(Error::config(
                "blobs.part_size_bytes",
                "must be between 5 MiB (S3's smallest part) and 5 GiB",
            ));
        }
        if self.upload_concurrency > 64 {
            return Err(Error::config(
                "blobs.upload_concurrency",
                "must be at most 64",
            ));
        }
        if self.deadline_ms < self.request_timeout_ms {
            return Err(Error::config(
                "blobs.deadline_ms",
                "must be at least blobs.request_timeout_ms",
            ));
        }
        Ok(())
    }
}

/// `[cache]`: hot reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory://` (later `redis://…`).
    pub url: BackendUrl,
    /// Most entries kept in process.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// TTL of cached records, in milliseconds.
    #[serde(default = "default_ttl")]
    pub ttl_ms: u64,
    /// Serve `RecordStore::get` through the cache, invalidated on every write of this process. Use it
    /// with a shared cache (Redis) when several processes write.
    #[serde(default)]
    pub read_through: bool,
    /// Redis: connections in the pool.
    #[serde(default = "default_redis_pool")]
    pub pool_size: u32,
    /// Redis: the most one command (and one wait for a connection) may take, in milliseconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
}

/// `[sessions]`: user sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// `sqlite://PATH`, `memory://` (later `redis://…`).
    pub url: BackendUrl,
    /// Idle timeout, in seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Absolute lifetime, in seconds.
    #[serde(default = "default_absolute")]
    pub absolute_timeout_secs: u64,
    /// Redis: connections in the pool.
    #[serde(default = "default_redis_pool")]
    pub pool_size: u32,
    /// Redis: the most one command (and one wait for a connection) may take, in milliseconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
}

/// `[embedder]`: text to vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// `hash://` (the built-in offline embedder).
    pub url: BackendUrl,
    /// Output dimension.
    #[serde(default = "default_dimension")]
    pub dimension: usize,
}

/// The phase of a migration from this configuration's stores to those of `[migration] target`
/// (docs/migration.md has the runbook).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationMode {
    /// One store: this configuration's.
    #[default]
    Single,
    /// This configuration's stores serve and are the store of record; every record write is logged
    /// in their outbox in its own transaction and delivered to the target's.
    DualWrite,
    /// Dual-write, and a sample of reads is also run on the target and compared.
    ShadowRead,
    /// The target's stores serve and are the store of record; every write is still delivered back to
    /// this configuration's stores, so `sprintlens migrate rollback` stays possible.
    CutOver,
}

impl MigrationMode {
    /// The name used in configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            MigrationMode::Single => "single",
            MigrationMode::DualWrite => "dual-write",
            MigrationMode::ShadowRead => "shadow-read",
            MigrationMode::CutOver => "cut-over",
        }
    }
}

/// `[migration]`: moving to other stores without downtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// `single`, `dual-write`, `shadow-read` or `cut-over`.
    #[serde(default)]
    pub mode: MigrationMode,
    /// The new stores' configuration file (TOML, read without `SPRINTLENS_*` overrides); needed by
    /// every mode but `single`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Share of reads compared in `shadow-read`, 0.0–1.0.
    #[serde(default = "default_shadow_sample")]
    pub shadow_sample: f64,
    /// How long a write may wait for the secondary store before leaving delivery to the reconciler,
    /// in milliseconds (0: never wait; the write is acknowledged when the primary commits).
    #[serde(default)]
    pub write_wait_ms: u64,
    /// Outbox entries the reconciler delivers per batch.
    #[serde(default = "default_reconcile_batch")]
    pub reconcile_batch: usize,
    /// How often the reconciler polls the outbox when not woken by a write, in milliseconds.
    #[serde(default = "default_reconcile_poll")]
    pub reconcile_poll_ms: u64,
    /// Deadline of one delivery to the secondary, in milliseconds.
    #[serde(default = "default_deliver_timeout")]
    pub deliver_timeout_ms: u64,
    /// How long the reconciler gathers writes before delivering them, in milliseconds: larger
    /// batches cost the writers less, at the price of the secondary lagging by about this much.
    #[serde(default = "default_reconcile_linger")]
    pub reconcile_linger_ms: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            mode: MigrationMode::Single,
            target: None,
            shadow_sample: default_shadow_sample(),
            write_wait_ms: 0,
            reconcile_batch: default_reconcile_batch(),
            reconcile_poll_ms: default_reconcile_poll(),
            deliver_timeout_ms: default_deliver_timeout(),
            reconcile_linger_ms: default_reconcile_linger(),
        }
    }
}

impl MigrationConfig {
    fn validate(&self) -> Result<()> {
        if self.mode != MigrationMode::Single && self.target.as_deref().is_none_or(str::is_empty) {
            return Err(Error::config(
                "migration.target",
                format!(
                    "mode = \"{}\" needs the new stores' configuration file",
                    self.mode.as_str()
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.shadow_sample) {
            return Err(Error::config(
                "migration.shadow_sample",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.write_wait_ms > 60_000 {
            return Err(Error::config(
                "migration.write_wait_ms",
                "must be at most 60000",
            ));
        }
        if self.reconcile_batch == 0 || self.reconcile_batch > crate::record::MAX_PAGE {
            return Err(Error::config(
                "migration.reconcile_batch",
                format!("must be between 1 and {}", crate::record::MAX_PAGE),
            ));
        }
        if self.reconcile_linger_ms > 60_000 {
            return Err(Error::config(
                "migration.reconcile_linger_ms",
                "must be at most 60000",
            ));
        }
        for (key, v) in [
            ("migration.reconcile_poll_ms", self.reconcile_poll_ms),
            ("migration.deliver_timeout_ms", self.deliver_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(Error::config(key, "must be between 1 and 3600000"));
            }
        }
        Ok(())
    }
}

fn default_shadow_sample() -> f64 {
    0.01
}
fn default_reconcile_batch() -> usize {
    500
}
fn default_reconcile_poll() -> u64 {
    1_000
}
fn default_deliver_timeout() -> u64 {
    10_000
}
fn default_reconcile_linger() -> u64 {
    200
}

fn default_pool() -> u32 {
    4
}
fn default_busy() -> u64 {
    5_000
}
fn default_redis_pool() -> u32 {
    16
}
fn default_command_timeout() -> u64 {
    200
}
fn default_acquire() -> u64 {
    5_000
}
fn default_statement() -> u64 {
    30_000
}
fn default_ef_search() -> u32 {
    100
}
fn default_dimension() -> usize {
    384
}
fn default_max_object() -> u64 {
    100 * 1024 * 1024
}
fn default_part_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_upload_concurrency() -> u32 {
    4
}
fn default_blob_connect_timeout() -> u64 {
    5_000
}
fn default_blob_request_timeout() -> u64 {
    30_000
}
fn default_blob_retries() -> u32 {
    3
}
fn default_blob_backoff() -> u64 {
    100
}
fn default_blob_deadline() -> u64 {
    120_000
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_ttl() -> u64 {
    60_000
}
fn default_idle() -> u64 {
    30 * 60
}
fn default_absolute() -> u64 {
    24 * 3600
}

/// The whole storage configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `[records]`.
    pub records: RecordsConfig,
    /// `[vectors]`.
    pub vectors: VectorsConfig,
    /// `[analytics]`.
    pub analytics: AnalyticsConfig,
    /// `[blobs]`.
    pub blobs: BlobsConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[sessions]`.
    pub sessions: SessionsConfig,
    /// `[embedder]`.
    pub embedder: EmbedderConfig,
    /// `[migration]`.
    #[serde(default)]
    pub migration: MigrationConfig,
}

/// The sections and the keys each accepts, for unknown-key errors.
pub const SECTIONS: &[(&str, &[&str])] = &[
    (
        "records",
        &[
            "url",
            "pool_size",
            "busy_timeout_ms",
            "synchronous",
            "admin_url",
            "operator_url",
            "read_url",
            "acquire_timeout_ms",
            "statement_timeout_ms",
        ],
    ),
    ("vectors", &["url", "dimension", "half", "ef_search"]),
    (
        "analytics",
        &[
            "url",
            "retention_days",
            "dedup_window",
            "request_timeout_ms",
            "max_retries",
            "cluster",
        ],
    ),
    (
        "blobs",
        &[
            "url",
            "max_object_bytes",
            "multipart_threshold_bytes",
            "part_size_bytes",
            "upload_concurrency",
            "connect_timeout_ms",
            "request_timeout_ms",
            "max_retries",
            "retry_backoff_ms",
            "deadline_ms",
            "content_addressed",
        ],
    ),
    (
        "cache",
        &[
            "url",
            "max_entries",
            "ttl_ms",
            "read_through",
            "pool_size",
            "command_timeout_ms",
        ],
    ),
    (
        "sessions",
        &[
            "url",
            "idle_timeout_secs",
            "absolute_timeout_secs",
            "pool_size",
            "command_timeout_ms",
        ],
    ),
    ("embedder", &["url", "dimension"]),
    (
        "migration",
        &[
            "mode",
            "target",
            "shadow_sample",
            "write_wait_ms",
            "reconcile_batch",
            "reconcile_poll_ms",
            "deliver_timeout_ms",
            "reconcile_linger_ms",
        ],
    ),
];

impl StorageConfig {
    /// The embedded default: everything in `data_dir` (SQLite file, blob folder), cache in process.
    pub fn embedded(data_dir: &str) -> Self {
        let db = format!("sqlite://{data_dir}/sprintlens.db");
        let url = |s: &str| BackendUrl(s.to_string());
        StorageConfig {
            records: RecordsConfig {
                url: url(&db),
                pool_size: default_pool(),
                busy_timeout_ms: default_busy(),
                synchronous: Synchronous::Full,
                admin_url: None,
                operator_url: None,
                read_url: None,
                acquire_timeout_ms: default_acquire(),
                statement_timeout_ms: default_statement(),
            },
            vectors: VectorsConfig {
                url: url(&db),
                dimension: default_dimension(),
                half: false,
                ef_search: default_ef_search(),
            },
            analytics: AnalyticsConfig::new(url(&db)),
            blobs: BlobsConfig::new(url(&format!("file://{data_dir}/blobs"))),
            cache: CacheConfig {
                url: url("memory://"),
                max_entries: default_max_entries(),
                ttl_ms: default_ttl(),
                read_through: false,
                pool_size: default_redis_pool(),
                command_timeout_ms: default_command_timeout(),
            },
            sessions: SessionsConfig {
                url: url(&db),
                idle_timeout_secs: default_idle(),
                absolute_timeout_secs: default_absolute(),
                pool_size: default_redis_pool(),
                command_timeout_ms: default_command_timeout(),
            },
            embedder: EmbedderConfig {
                url: url("hash://"),
                dimension: default_dimension(),
            },
            migration: MigrationConfig::default(),
        }
    }

    /// Checks values and their relations; every error names its key.
    pub fn validate(&self) -> Result<()> {
        for (key, url) in [
            ("records.url", &self.records.url),
            ("vectors.url", &self.vectors.url),
            ("analytics.url", &self.analytics.url),
            ("blobs.url", &self.blobs.url),
            ("cache.url", &self.cache.url),
            ("sessions.url", &self.sessions.url),
            ("embedder.url", &self.embedder.url),
        ] {
            BackendUrl::parse(key, url.expose())?;
        }
        for (key, url) in [
            ("records.admin_url", &self.records.admin_url),
            ("records.operator_url", &self.records.operator_url),
            ("records.read_url", &self.records.read_url),
        ] {
            if let Some(u) = url {
                BackendUrl::parse(key, u.expose())?;
                if u.scheme() != self.records.url.scheme() {
                    return Err(Error::config(
                        key,
                        "must use the same scheme as records.url",
                    ));
                }
            }
        }
        if self.vectors.ef_search == 0 || self.vectors.ef_search > 1000 {
            return Err(Error::config(
                "vectors.ef_search",
                "must be between 1 and 1000",
            ));
        }
        if self.records.acquire_timeout_ms == 0 {
            return Err(Error::config(
                "records.acquire_timeout_ms",
                "must be positive",
            ));
        }
        if self.records.statement_timeout_ms == 0 {
            return Err(Error::config(
                "records.statement_timeout_ms",
                "must be positive",
            ));
        }
        if self.records.pool_size == 0 || self.records.pool_size > 256 {
            return Err(Error::config(
                "records.pool_size",
                "must be between 1 and 256",
            ));
        }
        if self.records.busy_timeout_ms > 600_000 {
            return Err(Error::config(
                "records.busy_timeout_ms",
                "must be at most 600000",
            ));
        }
        if self.vectors.dimension == 0 || self.vectors.dimension > crate::validate::MAX_DIMENSION {
            return Err(Error::config(
                "vectors.dimension",
                format!("must be between 1 and {}", crate::validate::MAX_DIMENSION),
            ));
        }
        if self.embedder.dimension != self.vectors.dimension {
            return Err(Error::config(
                "embedder.dimension",
                format!(
                    "{} differs from vectors.dimension {}",
                    self.embedder.dimension, self.vectors.dimension
                ),
            ));
        }
        self.blobs.validate()?;
        if self.cache.max_entries == 0 {
            return Err(Error::config("cache.max_entries", "must be positive"));
        }
        for (key, pool, timeout) in [
            ("cache", self.cache.pool_size, self.cache.command_timeout_ms),
            (
                "sessions",
                self.sessions.pool_size,
                self.sessions.command_timeout_ms,
            ),
        ] {
            if pool == 0 || pool > 1024 {
                return Err(Error::config(
                    format!("{key}.pool_size"),
                    "must be between 1 and 1024",
                ));
            }
            if timeout == 0 || timeout > 60_000 {
                return Err(Error::config(
                    format!("{key}.command_timeout_ms"),
                    "must be between 1 and 60000",
                ));
            }
        }
        if self.cache.ttl_ms == 0 {
            return Err(Error::config("cache.ttl_ms", "must be positive"));
        }
        if self.sessions.idle_timeout_secs == 0 {
            return Err(Error::config(
                "sessions.idle_timeout_secs",
                "must be positive",
            ));
        }
        if self.sessions.absolute_timeout_secs < self.sessions.idle_timeout_secs {
            return Err(Error::config(
                "sessions.absolute_timeout_secs",
                "must be at least sessions.idle_timeout_secs",
            ));
        }
        self.migration.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@localhost:5432/db?sslmode=disable"),
            "postgres://app:***@localhost:5432/db?sslmode=disable"
        );
        assert_eq!(
            redact("s3://bucket?endpoint=http://x&secret_access_key=abc"),
            "s3://bucket?endpoint=http://x&secret_access_key=***"
        );
        let u = BackendUrl::parse("k", "redis://:pw@h:6379").unwrap();
        assert!(!format!("{u:?}").contains("pw"));
        assert!(BackendUrl::parse("records.url", "nonsense").is_err());
    }

    #[test]
    fn sections_list_exactly_the_fields() {
        let mut c = StorageConfig::embedded("d");
        let u = BackendUrl("sqlite://x".into());
        c.records.admin_url = Some(u.clone());
        c.records.operator_url = Some(u.clone());
        c.records.read_url = Some(u);
        c.migration.target = Some("target.toml".into());
        let v = serde_json::to_value(&c).unwrap();
        let sections = v.as_object().unwrap();
        assert_eq!(sections.len(), SECTIONS.len());
        for (name, keys) in SECTIONS {
            let mut fields: Vec<&str> = sections[*name]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut listed: Vec<&str> = keys.to_vec();
            fields.sort_unstable();
            listed.sort_unstable();
            assert_eq!(fields, listed, "[{name}]");
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = StorageConfig::embedded("data");
        c.validate().unwrap();
        assert_eq!(c.records.url.scheme(), "sqlite");
        assert_eq!(c.records.url.rest(), "data/sprintlens.db");
        let mut bad = c.clone();
        bad.embedder.dimension = 10;
        assert_eq!(
            bad.validate().unwrap_err().field(),
            Some("embedder.dimension")
        );
    }
}
