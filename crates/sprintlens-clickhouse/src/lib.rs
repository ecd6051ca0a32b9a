#![doc = include_str!("../README.md")]

pub mod schema;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use clickhouse::error::Error as ChError;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use sprintlens_core::analytics::{
    BreakdownQuery, Bucket, EvalSummary, EventCursor, EventKind, GroupBy, LatencyQuery,
    LatencySummary, MetricSummary, QuantileMethod, Quantiles, SeriesPoint, SeriesQuery, TimeRange,
    validate_batch,
};
use sprintlens_core::config::AnalyticsConfig;
use sprintlens_core::{
    Analytics, AnalyticsEvent, Cost, CostRow, Error, EvalResult, EvalRunId, Result, Timestamp,
    UsageEvent, WorkspaceId, async_trait,
};
use uuid::Uuid;

pub use schema::{Migration, SchemaOptions};

const BACKEND: &str = "clickhouse";
/// One hour in microseconds (the rollups' grain).
const HOUR: i64 = 3_600_000_000;

/// Settings of a [`ClickHouseAnalytics`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseOptions {
    /// `http://host:port` of the HTTP interface.
    pub endpoint: String,
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
    /// The database.
    pub database: String,
    /// DDL settings (retention, deduplication window, cluster).
    pub schema: SchemaOptions,
    /// Time allowed for one request.
    pub request_timeout: Duration,
    /// Retries of a failed request (queries, and inserts, which carry a deduplication token).
    pub max_retries: u32,
}

impl std::fmt::Debug for ClickHouseOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseOptions")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("password", &"***")
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !s.starts_with('-')
}

fn percent_decode(key: &str, s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::config(key, "bad percent-escape in the URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::config(key, "the URL is not UTF-8"))
}

impl ClickHouseOptions {
    /// Parses `clickhouse://USER:PASSWORD@HOST:PORT/DATABASE` (the HTTP interface, port 8123 by
    /// default) and takes the other keys of `[analytics]`. Errors name the key; nothing connects.
    pub fn from_config(config: &AnalyticsConfig) -> Result<Self> {
        let key = "analytics.url";
        let url = config.url.expose();
        let rest = url.strip_prefix("clickhouse://").ok_or_else(|| {
            Error::config(
                key,
                "a ClickHouse URL is clickhouse://USER:PASSWORD@HOST:PORT/DATABASE",
            )
        })?;
        if rest.contains('?') || rest.contains('#') {
            return Err(Error::config(
                key,
                "clickhouse:// takes no query parameters; use the [analytics] keys",
            ));
        }
        let (auth, hostpath) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (percent_decode(key, u)?, percent_decode(key, p)?),
                None => (percent_decode(key, a)?, String::new()),
            },
            None => ("default".to_string(), String::new()),
        };
        let (host, database) = hostpath.split_once('/').unwrap_or((hostpath, ""));
        let database = if database.is_empty() {
            "default"
        } else {
            database.trim_end_matches('/')
        };
        if host.is_empty() {
            return Err(Error::config(
                key,
                "needs a host, e.g. clickhouse://u:p@127.0.0.1:8123/db",
            ));
        }
        if !is_identifier(database) {
            return Err(Error::config(
                key,
                "the database name may hold letters, digits, `_` and `-` only",
            ));
        }
        let endpoint = if host.contains(':') {
            format!("http://{host}")
        } else {
            format!("http://{host}:8123")
        };
        if let Some(c) = &config.cluster
            && !is_identifier(c)
        {
            return Err(Error::config(
                "analytics.cluster",
                "a cluster name holds letters, digits, `_` and `-` only",
            ));
        }
        if config.request_timeout_ms == 0 {
            return Err(Error::config(
                "analytics.request_timeout_ms",
                "must be positive",
            ));
        }
        Ok(ClickHouseOptions {
            endpoint,
            user,
            password,
            database: database.to_string(),
            schema: SchemaOptions {
                retention_days: config.retention_days,
                dedup_window: config.dedup_window,
                cluster: config.cluster.clone(),
            },
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_retries: config.max_retries,
        })
    }
}

/// [`Analytics`] on ClickHouse.
///
/// - Events go to two append-only `ReplacingMergeTree` tables (`eval_results`, `usage_events`),
///   partitioned by month, ordered by `(workspace, project, created_at, id)`; materialized views
///   keep rollups (`eval_run_summary`, `eval_hourly`, `usage_hourly`: exact counts and sums,
///   t-digest quantile states) that the queries read.
/// - `record` validates the whole batch first, drops ids already stored (one indexed lookup per
///   batch), and inserts each stream in one `INSERT` carrying an `insert_deduplication_token`
///   derived from its ids, so a retried batch is stored once (the tables set
///   `non_replicated_deduplication_window`, and rollups are deduplicated with their source).
/// - Every query binds the workspace and all inputs as server-side parameters.
/// - Quantiles are t-digest estimates ([`QuantileMethod::Approximate`]); counts and sums are exact.
#[derive(Clone)]
pub struct ClickHouseAnalytics {
    client: Client,
    inserts: Client,
    options: ClickHouseOptions,
    /// Per event kind, the `created_at` window (µs) a scan page reads first, learned from the pages
    /// before (see `scan`).
    scan_window: std::sync::Arc<[std::sync::atomic::AtomicI64; 2]>,
}

impl std::fmt::Debug for ClickHouseAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseAnalytics")
            .field("options", &self.options)
            .finish()
    }
}

fn classify(operation: &'static str, e: clickhouse::error::Error) -> Error {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => {
            Error::unavailable(BACKEND, operation, true, Some(Box::new(e)))
        }
        E::BadResponse(ref m) if m.contains("Code: 516") => {
            Error::unavailable(BACKEND, operation, false, Some(Box::new(e)))
        }
        E::BadResponse(ref m) if m.contains("Code: 60.") || m.contains("UNKNOWN_TABLE") => {
            Error::backend(
                BACKEND,
                operation,
                format!("{m} (run `sprintlens schema apply` to create the tables)"),
            )
        }
        other => Error::backend(BACKEND, operation, other),
    }
}

/// The pause before retry number `tries` (1-based): 100 ms doubling, at most 3.2 s.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis(50 << tries.min(6))
}

/// Whether a failed request may be sent again (the server may not have seen it, or timed out).
fn transient(e: &ChError) -> bool {
    matches!(e, ChError::Network(_) | ChError::TimedOut)
}

/// An INSERT started with every row written but not ended, and the deadline it must end by.
type Opened<R> =
    std::result::Result<(clickhouse::insert::Insert<R>, tokio::time::Instant), ChError>;

/// The workspaces (sorted, distinct) and the time span (µs, inclusive) of a batch's keys.
struct Span {
    workspaces: Vec<String>,
    from: i64,
    to: i64,
}

impl Span {
    fn of(keys: &[(Uuid, i64, Uuid)]) -> Span {
        let mut workspaces: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        workspaces.sort_unstable();
        workspaces.dedup();
        Span {
            workspaces: workspaces.iter().map(Uuid::to_string).collect(),
            from: keys.iter().map(|k| k.1).min().unwrap_or(0),
            to: keys.iter().map(|k| k.1).max().unwrap_or(0),
        }
    }
}

/// Batches of at least this many rows go as two INSERTs at once: a server stores them on two
/// cores, and encoding the second overlaps the server storing the first (two measured best on 2
/// cores; three and four were slower: `bench clickhouse`).
const SPLIT: usize = 20_000;

/// The first INSERT of a split batch takes this fraction (1/n) of its rows. Halves: the two
/// INSERTs are stored at once, so the batch ends when the larger one does (a quarter first was
/// best while our test engine ran one query at a time: it started sooner, and nothing overlapped).
const FIRST_OF: usize = 2;

/// The events of one INSERT and its deduplication token.
struct Part<'e, E> {
    events: Vec<&'e E>,
    token: String,
}

impl<'e, E: Keyed> Part<'e, E> {
    /// `events` (one per id) cut into INSERTs. Each token depends only on the part's ids (SHA-256
    /// of the table name and the sorted ids), so a re-sent batch cuts the same way and each part
    /// is deduplicated on its own.
    fn cut<R: EventRow>(events: &[&'e E]) -> Vec<Self> {
        let first = if events.len() >= SPLIT {
            events.len() / FIRST_OF
        } else {
            events.len()
        };
        let (a, b) = events.split_at(first);
        [a, b]
            .into_iter()
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut ids: Vec<Uuid> = part.iter().map(|e| e.key().2).collect();
                ids.sort_unstable();
                let mut h = sha2::Sha256::new();
                h.update(R::TABLE.as_bytes());
                for i in &ids {
                    h.update(i.as_bytes());
                }
                Part {
                    events: part.to_vec(),
                    token: hex::encode(h.finalize()),
                }
            })
            .collect()
    }
}

fn uuid(id: impl Into<Uuid>) -> Uuid {
    id.into()
}

fn id<T: std::str::FromStr<Err = Error>>(u: Uuid) -> Result<T> {
    u.to_string().parse()
}

#[derive(Row, Serialize, Deserialize)]
struct EvalRow {
    #[serde(with = "clickhouse::serde::uuid")]
    workspace: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    project: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    run: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    #[serde(with = "clickhouse::serde::uuid::option")]
    dataset_item: Option<Uuid>,
    #[serde(with = "clickhouse::serde::uuid::option")]
    agent: Option<Uuid>,
    metric: String,
    score: f64,
    passed: bool,
    latency_ms: u32,
    cost: i64,
    error: Option<String>,
    created_at: i64,
}

impl From<&EvalResult> for EvalRow {
    fn from(e: &EvalResult) -> Self {
        EvalRow {
            workspace: uuid(e.workspace),
            project: uuid(e.project),
            run: uuid(e.run),
            id: uuid(e.id),
            dataset_item: e.dataset_item.map(uuid),
            agent: e.agent.map(uuid),
            metric: e.metric.clone(),
            score: e.score,
            passed: e.passed,
            latency_ms: e.latency_ms,
            cost: e.cost.0,
            error: e.error.clone(),
            created_at: e.created_at.as_micros(),
        }
    }
}

impl EvalRow {
    fn into_event(self) -> Result<AnalyticsEvent> {
        Ok(AnalyticsEvent::EvalResult(EvalResult {
            id: id(self.id)?,
            workspace: id(self.workspace)?,
            project: id(self.project)?,
            run: id(self.run)?,
            dataset_item: self.dataset_item.map(id).transpose()?,
            agent: self.agent.map(id).transpose()?,
            metric: self.metric,
            score: self.score,
            passed: self.passed,
            latency_ms: self.latency_ms,
            cost: Cost(self.cost),
            error: self.error,
            created_at: Timestamp::from_micros(self.created_at),
        }))
    }
}

#[derive(Row, Serialize, Deserialize)]
struct UsageRow {
    #[serde(with = "clickhouse::serde::uuid")]
    workspace: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    project: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    #[serde(with = "clickhouse::serde::uuid::option")]
    agent: Option<Uuid>,
    #[serde(with = "clickhouse::serde::uuid::option")]
    conversation: Option<Uuid>,
    model: String,
    input_tokens: u64,
    output_tokens: u64,
    cost: i64,
    latency_ms: u32,
    created_at: i64,
}

impl From<&UsageEvent> for UsageRow {
    fn from(e: &UsageEvent) -> Self {
        UsageRow {
            workspace: uuid(e.workspace),
            project: uuid(e.project),
            id: uuid(e.id),
            agent: e.agent.map(uuid),
            conversation: e.conversation.map(uuid),
            model: e.model.clone(),
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost: e.cost.0,
            latency_ms: e.latency_ms,
            created_at: e.created_at.as_micros(),
        }
    }
}

impl UsageRow {
    fn into_event(self) -> Result<AnalyticsEvent> {
        Ok(AnalyticsEvent::Usage(UsageEvent {
            id: id(self.id)?,
            workspace: id(self.workspace)?,
            project: id(self.project)?,
            agent: self.agent.map(id).transpose()?,
            conversation: self.conversation.map(id).transpose()?,
            model: self.model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: Cost(self.cost),
            latency_ms: self.latency_ms,
            created_at: Timestamp::from_micros(self.created_at),
        }))
    }
}

/// What an insertable row tells the batch logic.
trait EventRow: for<'a> Row<Value<'a> = Self> + Serialize + Send + Sync + 'static {
    const TABLE: &'static str;
}

/// An event's `(workspace, created_at µs, id)`: what the stored-id lookup needs.
trait Keyed {
    fn key(&self) -> (Uuid, i64, Uuid);
}

impl Keyed for EvalResult {
    fn key(&self) -> (Uuid, i64, Uuid) {
        (
            uuid(self.workspace),
            self.created_at.as_micros(),
            uuid(self.id),
        )
    }
}

impl Keyed for UsageEvent {
    fn key(&self) -> (Uuid, i64, Uuid) {
        (
            uuid(self.workspace),
            self.created_at.as_micros(),
            uuid(self.id),
        )
    }
}

impl EventRow for EvalRow {
    const TABLE: &'static str = "eval_results";
}

impl EventRow for UsageRow {
    const TABLE: &'static str = "usage_events";
}

#[derive(Row, Deserialize)]
struct IdRow {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
}

#[derive(Row, Deserialize)]
struct VersionRow {
    version: u32,
}

#[derive(Row, Deserialize)]
struct SummaryRow {
    metric: String,
    results: u64,
    passed: u64,
    errors: u64,
    score_sum: f64,
    score_min: f64,
    score_max: f64,
    cost: i64,
    score_q: Vec<f64>,
    latency_q: Vec<f64>,
}

#[derive(Row, Deserialize)]
struct SeriesRow {
    start: i64,
    results: u64,
    passed: u64,
    score_sum: f64,
}

#[derive(Row, Deserialize)]
struct CostRowCh {
    key: String,
    events: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: i64,
}

#[derive(Row, Deserialize)]
struct LatencyRow {
    events: u64,
    latency_q: Vec<f64>,
}

fn quantiles(q: &[f64]) -> Quantiles {
    let at = |i: usize| q.get(i).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
    Quantiles {
        p50: at(0),
        p95: at(1),
        p99: at(2),
    }
}

/// `AND column = {column:ty}` when the filter is given, nothing when it is not: an optional filter as
/// a clause of its own rather than `({p} IS NULL OR column = {p})`, which the engine evaluates for
/// every row read. The column names come from the callers' literals, never from input.
fn optional_filter(given: bool, column: &str, ty: &str) -> String {
    if given {
        format!("AND {column} = {{{column}:{ty}}}")
    } else {
        String::new()
    }
}

/// The whole `unit`s (microseconds, aligned to the epoch) inside `[from, to)`, if any:
/// `(first unit start, end of last whole unit)`.
fn whole_units(from: i64, to: i64, unit: i64) -> Option<(i64, i64)> {
    let start = from.div_euclid(unit) * unit + if from.rem_euclid(unit) == 0 { 0 } else { unit };
    let end = to.div_euclid(unit) * unit;
    (start < end).then_some((start, end))
}

/// The whole hours inside `[from, to)`, if any: `(first hour start, end of last whole hour)`.
fn whole_hours(range: &TimeRange) -> Option<(i64, i64)> {
    whole_units(range.from.as_micros(), range.to.as_micros(), HOUR)
}

/// The whole UTC days inside the whole hours `[h0, h1)`, if any: `(first day start, end of last whole
/// day)`.
fn whole_days((h0, h1): (i64, i64)) -> Option<(i64, i64)> {
    whole_units(h0, h1, 24 * HOUR)
}

/// A `[from, to)` range split into the part the hourly rollups answer and the raw edges.
struct Split {
    /// `[from, to)` of whole hours, or an empty range.
    hours: (i64, i64),
    /// Raw ranges before and after the whole hours (each may be empty).
    raw: [(i64, i64); 2],
}

/// The raw edges of a [`Split`] as a condition on `created_at`; bound by [`RawEdges::raw_edges`].
const RAW_EDGES: &str = "((created_at >= fromUnixTimestamp64Micro({a0:Int64}, 'UTC')
                        AND created_at < fromUnixTimestamp64Micro({a1:Int64}, 'UTC'))
                    OR (created_at >= fromUnixTimestamp64Micro({b0:Int64}, 'UTC')
                        AND created_at < fromUnixTimestamp64Micro({b1:Int64}, 'UTC')))";

/// Binds the parameters of [`RAW_EDGES`].
trait RawEdges {
    fn raw_edges(self, s: &Split) -> Self;
}

impl RawEdges for clickhouse::query::Query {
    fn raw_edges(self, s: &Split) -> Self {
        self.param("a0", s.raw[0].0)
            .param("a1", s.raw[0].1)
            .param("b0", s.raw[1].0)
            .param("b1", s.raw[1].1)
    }
}

fn split(range: &TimeRange) -> Split {
    let (from, to) = (range.from.as_micros(), range.to.as_micros());
    match whole_hours(range) {
        Some((h0, h1)) => Split {
            hours: (h0, h1),
            raw: [(from, h0), (h1, to)],
        },
        None => Split {
            hours: (0, 0),
            raw: [(from, to), (0, 0)],
        },
    }
}

/// The `created_at` window a scan page reads first before it has learned one: an hour.
const SCAN_FIRST_WINDOW_MICROS: i64 = 3_600_000_000;
/// The narrowest window a scan reads: a millisecond.
const SCAN_MIN_WINDOW_MICROS: i64 = 1_000;
/// The widest window a scan reads: a year.
const SCAN_MAX_WINDOW_MICROS: i64 = 366 * 86_400_000_000;

/// The table of an event kind.
fn event_table(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EvalResult => "eval_results",
        EventKind::Usage => "usage_events",
    }
}

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::EvalResult => 0,
        EventKind::Usage => 1,
    }
}

impl ClickHouseAnalytics {
    /// The oldest `created_at` (µs) in `table` at or after `from` (any, without it), if there is one.
    async fn next_event_time(&self, table: &'static str, from: Option<i64>) -> Result<Option<i64>> {
        #[derive(Row, Deserialize)]
        struct Next {
            at: i64,
            n: u64,
        }
        let bound = if from.is_some() {
            "WHERE created_at >= fromUnixTimestamp64Micro({from:Int64}, 'UTC')"
        } else {
            ""
        };
        let sql = format!(
            "SELECT toUnixTimestamp64Micro(min(created_at)) AS at, count() AS n FROM {table} {bound}"
        );
        let r = self
            .attempt("event_scan", || {
                self.client
                    .query(&sql)
                    .param("from", from.unwrap_or(0))
                    .fetch_one::<Next>()
            })
            .await?;
        Ok((r.n > 0).then_some(r.at))
    }

    /// Up to `limit` events of `kind` after `after`, with `from <= created_at < to` (µs), in
    /// `(created_at, id)` order.
    async fn scan_window_page(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        let (t, i) = match after {
            Some(c) => (c.created_at.as_micros(), c.id.to_string()),
            None => (i64::MIN, String::new()),
        };
        // Ids compare as text, as SQLite's scan does, so cursors carry across backends.
        let columns = match kind {
            EventKind::EvalResult => {
                "workspace, project, run, id, dataset_item, agent, metric, score, passed, latency_ms, cost, error, created_at"
            }
            EventKind::Usage => {
                "workspace, project, id, agent, conversation, model, input_tokens, output_tokens, cost, latency_ms, created_at"
            }
        };
        let table = event_table(kind);
        // The plain bounds on `created_at` are what the engine prunes partitions and granules with.
        let sql = format!(
            "SELECT {columns} FROM {table} FINAL
             WHERE (toUnixTimestamp64Micro(created_at), toString(id)) > ({{t:Int64}}, {{i:String}})
               AND created_at >= fromUnixTimestamp64Micro({{from:Int64}}, 'UTC')
               AND created_at < fromUnixTimestamp64Micro({{to:Int64}}, 'UTC')
             ORDER BY toUnixTimestamp64Micro(created_at), toString(id)
             LIMIT {{limit:UInt64}}"
        );
        let q = || {
            self.client
                .query(&sql)
                .param("t", t)
                .param("i", &i)
                .param("from", from)
                .param("to", to)
                .param("limit", limit as u64)
        };
        match kind {
            EventKind::EvalResult => self
                .attempt("event_scan", || q().fetch_all::<EvalRow>())
                .await?
                .into_iter()
                .map(EvalRow::into_event)
                .collect(),
            EventKind::Usage => self
                .attempt("event_scan", || q().fetch_all::<UsageRow>())
                .await?
                .into_iter()
                .map(UsageRow::into_event)
                .collect(),
        }
    }

    /// A client for `options` (nothing is sent until the first call).
    pub fn new(options: ClickHouseOptions) -> Self {
        // The crate's default connector leaves Nagle's algorithm on: a small request body written
        // after its headers can wait for the server's delayed ACK. Same connector otherwise.
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(2))
                .build(connector);
        let client = Client::with_http_client(http)
            .with_url(&options.endpoint)
            .with_user(&options.user)
            .with_password(&options.password)
            .with_database(&options.database)
            .with_compression(clickhouse::Compression::Lz4);
        // Rows read back are checked against the server's column types; rows written are our own
        // fixed structs matching our own migrations (the suites prove the pairing), and skipping
        // the per-field check made ingest ~20 % faster in `bench clickhouse`.
        let inserts = client.clone().with_validation(false);
        ClickHouseAnalytics {
            client,
            inserts,
            options,
            scan_window: std::sync::Arc::new([
                std::sync::atomic::AtomicI64::new(SCAN_FIRST_WINDOW_MICROS),
                std::sync::atomic::AtomicI64::new(SCAN_FIRST_WINDOW_MICROS),
            ]),
        }
    }

    /// The options.
    pub fn options(&self) -> &ClickHouseOptions {
        &self.options
    }

    /// The underlying client (tests and benchmarks run their own SQL with it).
    #[doc(hidden)]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `f` within the request timeout, retrying transient failures with backoff.
    async fn attempt<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, clickhouse::error::Error>>,
    {
        self.attempt_after(operation, 0, f).await
    }

    /// [`Self::attempt`] when `tries` attempts have failed already (transiently).
    async fn attempt_after<T, F, Fut>(&self, operation: &'static str, tries: u32, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, clickhouse::error::Error>>,
    {
        let mut tries = tries;
        if tries > 0 {
            tokio::time::sleep(backoff(tries)).await;
        }
        loop {
            let outcome = match tokio::time::timeout(self.options.request_timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(clickhouse::error::Error::TimedOut),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !transient(&e) || tries >= self.options.max_retries {
                        return Err(classify(operation, e));
                    }
                    tries += 1;
                    tokio::time::sleep(backoff(tries)).await;
                }
            }
        }
    }

    /// Creates the database if missing and applies pending migrations (idempotent); returns the
    /// versions applied by this call.
    pub async fn apply_schema(&self) -> Result<Vec<i64>> {
        self.apply_schema_up_to(u32::MAX).await
    }

    /// [`Self::apply_schema`] stopping after migration `last`: for tests of a migration over data
    /// written under the schema before it.
    #[doc(hidden)]
    pub async fn apply_schema_up_to(&self, last: u32) -> Result<Vec<i64>> {
        let o = &self.options;
        let on = match &o.schema.cluster {
            Some(c) => format!(" ON CLUSTER `{c}`"),
            None => String::new(),
        };
        let root = self.client.clone().with_database("default");
        let create_db = format!("CREATE DATABASE IF NOT EXISTS `{}`{on}", o.database);
        self.attempt("apply_schema", || root.query(&create_db).execute())
            .await?;
        let table = schema::migrations_table(&o.schema);
        self.attempt("apply_schema", || self.client.query(&table).execute())
            .await?;
        let done: HashSet<u32> = self.schema_versions_u32().await?.into_iter().collect();
        let mut applied = Vec::new();
        for m in schema::migrations(&o.schema) {
            if done.contains(&m.version) || m.version > last {
                continue;
            }
            for st in &m.statements {
                self.attempt("apply_schema", || self.client.query(st).execute())
                    .await?;
            }
            let record = format!(
                "INSERT INTO {} (version, name) VALUES ({{v:UInt32}}, {{n:String}})",
                schema::MIGRATIONS_TABLE
            );
            self.attempt("apply_schema", || {
                self.client
                    .query(&record)
                    .param("v", m.version)
                    .param("n", m.name)
                    .execute()
            })
            .await?;
            applied.push(i64::from(m.version));
        }
        Ok(applied)
    }

    async fn schema_versions_u32(&self) -> Result<Vec<u32>> {
        let sql = format!(
            "SELECT DISTINCT version FROM {} ORDER BY version",
            schema::MIGRATIONS_TABLE
        );
        let rows: Vec<VersionRow> = self
            .attempt("schema_versions", || {
                self.client.query(&sql).fetch_all::<VersionRow>()
            })
            .await?;
        Ok(rows.into_iter().map(|r| r.version).collect())
    }

    /// Applied migration versions (empty when the bookkeeping table does not exist).
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        match self.schema_versions_u32().await {
            Ok(v) => Ok(v.into_iter().map(i64::from).collect()),
            Err(e) if e.to_string().contains("schema apply") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Drops every database whose name matches the `LIKE` pattern (test and benchmark clean-up).
    #[doc(hidden)]
    pub async fn drop_databases_like(&self, pattern: &str) -> Result<()> {
        self.drop_databases_where(pattern, |_| true).await
    }

    /// Drops the databases named `<prefix>_…_<pid>` whose process is no longer running on this
    /// machine (test clean-up: a long-lived local stack otherwise keeps every run's databases, and
    /// a test process must not drop those of another one running beside it, as under
    /// `cargo nextest`). Names not ending in a process id are kept.
    #[doc(hidden)]
    pub async fn drop_databases_of_ended_processes(&self, prefix: &str) -> Result<()> {
        let me = std::process::id();
        self.drop_databases_where(&format!("{prefix}_%"), |name| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('_'))
                .and_then(|rest| rest.rsplit('_').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists()
                })
        })
        .await
    }

    /// Drops the databases matching the `LIKE` pattern for which `drop` says so.
    async fn drop_databases_where(&self, pattern: &str, drop: impl Fn(&str) -> bool) -> Result<()> {
        #[derive(Row, Deserialize)]
        struct Name {
            name: String,
        }
        let root = self.client.clone().with_database("default");
        let names: Vec<Name> = self
            .attempt("drop_databases", || {
                root.query("SELECT name FROM system.databases WHERE name LIKE {p:String}")
                    .param("p", pattern)
                    .fetch_all::<Name>()
            })
            .await?;
        for n in names {
            if !is_identifier(&n.name) || !drop(&n.name) {
                continue;
            }
            let sql = format!("DROP DATABASE IF EXISTS `{}`", n.name);
            self.attempt("drop_databases", || root.query(&sql).execute())
                .await?;
        }
        Ok(())
    }

    /// The migrations this build knows.
    pub fn known_migrations(&self) -> usize {
        schema::migrations(&self.options.schema).len()
    }

    /// How many rows of `table` lie in a batch's workspaces and time span: when none do, none of its
    /// ids is stored (a time-ordered stream or a backfill), and the ids need not be looked up.
    async fn stored_in_span(&self, table: &str, span: &Span) -> Result<u64> {
        #[derive(Row, Deserialize)]
        struct Count {
            n: u64,
        }
        let gate = format!(
            "SELECT count() AS n FROM {table} WHERE workspace IN {{ws:Array(UUID)}}
               AND created_at >= fromUnixTimestamp64Micro({{from:Int64}}, 'UTC')
               AND created_at <= fromUnixTimestamp64Micro({{to:Int64}}, 'UTC')"
        );
        let stored = self
            .attempt("record", || {
                self.client
                    .query(&gate)
                    .param("ws", &span.workspaces)
                    .param("from", span.from)
                    .param("to", span.to)
                    .fetch_one::<Count>()
            })
            .await?;
        Ok(stored.n)
    }

    /// Ids among `keys` already stored in `table` (one lookup bounded by their `span`).
    async fn stored_ids(
        &self,
        table: &str,
        span: &Span,
        keys: &[(Uuid, i64, Uuid)],
    ) -> Result<HashSet<Uuid>> {
        let ids: Vec<String> = keys.iter().map(|k| k.2.to_string()).collect();
        let sql = format!(
            "SELECT id FROM {table} WHERE workspace IN {{ws:Array(UUID)}}
               AND created_at >= fromUnixTimestamp64Micro({{from:Int64}}, 'UTC')
               AND created_at <= fromUnixTimestamp64Micro({{to:Int64}}, 'UTC')
               AND id IN {{ids:Array(UUID)}}"
        );
        let found: Vec<IdRow> = self
            .attempt("record", || {
                self.client
                    .query(&sql)
                    .param("ws", &span.workspaces)
                    .param("from", span.from)
                    .param("to", span.to)
                    .param("ids", &ids)
                    .fetch_all::<IdRow>()
            })
            .await?;
        Ok(found.into_iter().map(|r| r.id).collect())
    }

    /// Inserts the events not stored yet (one row per id, the first of each) with a
    /// deduplication token per INSERT; returns how many were new.
    ///
    /// The gate ([`Self::stored_in_span`]) runs while the first INSERT's rows are already
    /// streaming out; that INSERT is ended only when the gate finds nothing stored, and is
    /// otherwise dropped unended, which aborts it (the crate's documented contract: the server
    /// stores nothing of an INSERT whose body never ended). The ids are then looked up and only
    /// the new events sent. In a backfill or a time-ordered stream the gate finds nothing, so the
    /// server starts storing the batch as soon as its first part has arrived.
    async fn insert_new<'e, E, R>(&self, events: &[&'e E]) -> Result<u64>
    where
        E: Keyed + Sync,
        R: EventRow + From<&'e E>,
    {
        if events.is_empty() {
            return Ok(0);
        }
        let keys: Vec<(Uuid, i64, Uuid)> = events.iter().map(|e| e.key()).collect();
        let span = Span::of(&keys);
        let (stored, (parts, first)) =
            futures::join!(self.stored_in_span(R::TABLE, &span), async {
                let mut seen = HashSet::with_capacity(events.len());
                let fresh: Vec<&'e E> = events
                    .iter()
                    .zip(&keys)
                    .filter(|(_, k)| seen.insert(k.2))
                    .map(|(e, _)| *e)
                    .collect();
                let parts = Part::<E>::cut::<R>(&fresh);
                let first = self.open_part::<E, R>(&parts[0]).await;
                (parts, first)
            });
        if stored? > 0 {
            drop(first); // unended: aborted, nothing of it stored
            let known = self.stored_ids(R::TABLE, &span, &keys).await?;
            let fresh: Vec<&'e E> = parts
                .iter()
                .flat_map(|p| p.events.iter().copied())
                .filter(|e| !known.contains(&e.key().2))
                .collect();
            self.send::<E, R>(&fresh).await?;
            return Ok(fresh.len() as u64);
        }
        let (done, rest) = futures::join!(
            self.end_part::<E, R>(first, &parts[0]),
            futures::future::join_all(parts[1..].iter().map(|p| self.send_part::<E, R>(p)))
        );
        done?;
        rest.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(parts.iter().map(|p| p.events.len() as u64).sum())
    }

    /// Sends `events` (one row per id) in INSERTs with a deduplication token each, derived from
    /// their ids (no lookup of stored ids first): what a retry after a lost response sends again.
    async fn send<'e, E, R>(&self, events: &[&'e E]) -> Result<()>
    where
        E: Keyed + Sync,
        R: EventRow + From<&'e E>,
    {
        if events.is_empty() {
            return Ok(());
        }
        let parts = Part::<E>::cut::<R>(events);
        futures::future::join_all(parts.iter().map(|p| self.send_part::<E, R>(p)))
            .await
            .into_iter()
            .collect()
    }

    /// Starts the INSERT of `part` and writes every row, without ending it.
    async fn open_part<'e, E, R>(&self, part: &Part<'e, E>) -> Opened<R>
    where
        R: EventRow + From<&'e E>,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        let write = async {
            let mut insert = self
                .inserts
                .insert::<R>(R::TABLE)
                .await?
                .with_setting("insert_deduplication_token", part.token.clone())
                .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
                // Every id of an INSERT is distinct (`insert_new` and `send_unchecked` keep one
                // row per id), so no two rows share a sorting key: ReplacingMergeTree's collapse
                // of the inserted block has nothing to do, and skipping it made the engine store
                // a batch about a fifth faster here.
                .with_setting("optimize_on_insert", "0");
            for e in &part.events {
                insert.write(&R::from(*e)).await?;
            }
            Ok(insert)
        };
        let insert = tokio::time::timeout_at(deadline, write)
            .await
            .unwrap_or(Err(ChError::TimedOut))?;
        Ok((insert, deadline))
    }

    /// Ends an INSERT [`Self::open_part`] started, within its deadline: the server stores it.
    async fn end_opened<R: EventRow>(opened: Opened<R>) -> std::result::Result<(), ChError> {
        let (insert, deadline) = opened?;
        tokio::time::timeout_at(deadline, insert.end())
            .await
            .unwrap_or(Err(ChError::TimedOut))
    }

    /// Ends an INSERT [`Self::open_part`] started; after a transient failure sends the part
    /// again with the same token, with the remaining retries.
    async fn end_part<'e, E, R>(&self, opened: Opened<R>, part: &Part<'e, E>) -> Result<()>
    where
        R: EventRow + From<&'e E>,
    {
        match Self::end_opened(opened).await {
            Ok(()) => Ok(()),
            Err(e) if transient(&e) && self.options.max_retries > 0 => {
                self.attempt_after("record", 1, || async {
                    Self::end_opened(self.open_part::<E, R>(part).await).await
                })
                .await
            }
            Err(e) => Err(classify("record", e)),
        }
    }

    /// One INSERT of `part`, retried on transient failures with the same token.
    async fn send_part<'e, E, R>(&self, part: &Part<'e, E>) -> Result<()>
    where
        R: EventRow + From<&'e E>,
    {
        self.attempt("record", || async {
            Self::end_opened(self.open_part::<E, R>(part).await).await
        })
        .await
    }

    /// Sends a validated batch as `record` does (one row per id) but without dropping ids already
    /// stored, so only the deduplication token stands between a re-sent batch and double
    /// counting. For tests and benchmarks of that mechanism.
    #[doc(hidden)]
    pub async fn send_unchecked(&self, events: &[AnalyticsEvent]) -> Result<()> {
        validate_batch(events)?;
        let (mut evals, mut usage) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for e in events.iter().filter(|e| seen.insert(e.id())) {
            match e {
                AnalyticsEvent::EvalResult(r) => evals.push(r),
                AnalyticsEvent::Usage(u) => usage.push(u),
            }
        }
        self.send::<_, EvalRow>(&evals).await?;
        self.send::<_, UsageRow>(&usage).await
    }
}

#[async_trait]
impl Analytics for ClickHouseAnalytics {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn quantile_method(&self) -> QuantileMethod {
        QuantileMethod::Approximate { rank_error: 0.01 }
    }

    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        validate_batch(events)?;
        let (mut evals, mut usage) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                AnalyticsEvent::EvalResult(r) => evals.push(r),
                AnalyticsEvent::Usage(u) => usage.push(u),
            }
        }
        let mut n = 0;
        if !evals.is_empty() {
            n += self.insert_new::<_, EvalRow>(&evals).await?;
        }
        if !usage.is_empty() {
            n += self.insert_new::<_, UsageRow>(&usage).await?;
        }
        Ok(n)
    }

    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        let sql = format!(
            "SELECT metric, sum(results) AS results, sum(passed) AS passed, sum(errors) AS errors,
                sum(score_sum) AS score_sum, min(score_min) AS score_min, max(score_max) AS score_max,
                sum(cost) AS cost,
                arrayMap(x -> toFloat64(x), quantilesTDigestMerge({l})(score_q)) AS score_q,
                arrayMap(x -> toFloat64(x), quantilesTDigestMerge({l})(latency_q)) AS latency_q
             FROM eval_run_summary
             WHERE workspace = {{ws:UUID}} AND run = {{run:UUID}}
             GROUP BY metric ORDER BY metric",
            l = schema::LEVELS
        );
        let (ws, run_s) = (workspace.to_string(), run.to_string());
        let rows: Vec<SummaryRow> = self
            .attempt("eval_summary", || {
                self.client
                    .query(&sql)
                    .param("ws", &ws)
                    .param("run", &run_s)
                    .fetch_all::<SummaryRow>()
            })
            .await?;
        let metrics = rows
            .into_iter()
            .filter(|r| r.results > 0)
            .map(|r| MetricSummary {
                metric: r.metric,
                count: r.results,
                passed: r.passed,
                errors: r.errors,
                pass_rate: r.passed as f64 / r.results as f64,
                mean_score: r.score_sum / r.results as f64,
                min_score: r.score_min,
                max_score: r.score_max,
                score: quantiles(&r.score_q),
                latency_ms: quantiles(&r.latency_q),
                cost: Cost(r.cost),
            })
            .collect();
        Ok(EvalSummary { run, metrics })
    }

    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        query.range.validate()?;
        let s = split(&query.range);
        let bucket = match query.bucket {
            Bucket::Hour => "toStartOfHour",
            Bucket::Day => "toStartOfDay",
        };
        // Whole hours from the hourly rollup, the ragged edges from raw events.
        let project_filter = optional_filter(query.project.is_some(), "project", "Nullable(UUID)");
        let sql = format!(
            "SELECT toUnixTimestamp64Micro(toDateTime64(b, 6, 'UTC')) AS start,
                sum(results) AS results, sum(passed) AS passed, sum(score_sum) AS score_sum
             FROM (
                SELECT {bucket}(hour) AS b, results, passed, score_sum FROM eval_hourly
                WHERE workspace = {{ws:UUID}} AND metric = {{metric:String}}
                  {project_filter}
                  AND hour >= toDateTime(intDiv({{h0:Int64}}, 1000000), 'UTC')
                  AND hour < toDateTime(intDiv({{h1:Int64}}, 1000000), 'UTC')
                UNION ALL
                SELECT {bucket}(created_at) AS b, toUInt64(1) AS results, toUInt64(passed) AS passed,
                    score AS score_sum
                FROM eval_results
                WHERE workspace = {{ws:UUID}} AND metric = {{metric:String}}
                  {project_filter}
                  AND {RAW_EDGES}
             )
             GROUP BY b HAVING results > 0 ORDER BY b"
        );
        let ws = workspace.to_string();
        let project = query.project.map(|p| p.to_string());
        let rows: Vec<SeriesRow> = self
            .attempt("metric_series", || {
                self.client
                    .query(&sql)
                    .param("ws", &ws)
                    .param("metric", &query.metric)
                    .param("project", &project)
                    .param("h0", s.hours.0)
                    .param("h1", s.hours.1)
                    .raw_edges(&s)
                    .fetch_all::<SeriesRow>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SeriesPoint {
                start: Timestamp::from_micros(r.start),
                count: r.results,
                passed: r.passed,
                mean_score: r.score_sum / r.results as f64,
            })
            .collect())
    }

    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        query.range.validate()?;
        let s = split(&query.range);
        // The grouping column comes from a closed enum, never from input text.
        let key = match query.group_by {
            GroupBy::Model => "toString(model)",
            GroupBy::Agent => "if(isNull(agent), '-', toString(assumeNotNull(agent)))",
            GroupBy::Project => "toString(project)",
        };
        let project_filter = optional_filter(query.project.is_some(), "project", "Nullable(UUID)");
        let sql = format!(
            "SELECT k AS key, sum(events) AS events, sum(input_tokens) AS input_tokens,
                sum(output_tokens) AS output_tokens, sum(cost) AS cost
             FROM (
                SELECT {key} AS k, events, input_tokens, output_tokens, cost FROM usage_hourly
                WHERE workspace = {{ws:UUID}}
                  {project_filter}
                  AND hour >= toDateTime(intDiv({{h0:Int64}}, 1000000), 'UTC')
                  AND hour < toDateTime(intDiv({{h1:Int64}}, 1000000), 'UTC')
                UNION ALL
                SELECT {key} AS k, toUInt64(1) AS events, input_tokens, output_tokens, cost
                FROM usage_events
                WHERE workspace = {{ws:UUID}}
                  {project_filter}
                  AND {RAW_EDGES}
             )
             GROUP BY k HAVING events > 0 ORDER BY cost DESC, k"
        );
        let ws = workspace.to_string();
        let project = query.project.map(|p| p.to_string());
        let rows: Vec<CostRowCh> = self
            .attempt("cost_breakdown", || {
                self.client
                    .query(&sql)
                    .param("ws", &ws)
                    .param("project", &project)
                    .param("h0", s.hours.0)
                    .param("h1", s.hours.1)
                    .raw_edges(&s)
                    .fetch_all::<CostRowCh>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| CostRow {
                key: r.key,
                events: r.events,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost: Cost(r.cost),
            })
            .collect())
    }

    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        query.range.validate()?;
        let s = split(&query.range);
        // Without a project filter: whole days from the day grain of `usage_latency`, the hours
        // around them from its hour grain (one scan, no project and agent dimensions); with one,
        // the hours of `usage_hourly`. The ragged edges come from raw events either way.
        let (hours, days) = match (query.project, whole_days(s.hours)) {
            (None, Some((d0, d1))) => ([(s.hours.0, d0), (d1, s.hours.1)], (d0, d1)),
            _ => ([s.hours, (0, 0)], (0, 0)),
        };
        let project_filter = optional_filter(query.project.is_some(), "project", "Nullable(UUID)");
        let model_filter = optional_filter(query.model.is_some(), "model", "Nullable(String)");
        let in_hours = |column: &str| {
            format!(
                "((({column} >= toDateTime(intDiv({{h0:Int64}}, 1000000), 'UTC')
                    AND {column} < toDateTime(intDiv({{h1:Int64}}, 1000000), 'UTC'))
                   OR ({column} >= toDateTime(intDiv({{h2:Int64}}, 1000000), 'UTC')
                    AND {column} < toDateTime(intDiv({{h3:Int64}}, 1000000), 'UTC'))))"
            )
        };
        let rollup = match query.project {
            Some(_) => format!(
                "SELECT events, latency_q AS q FROM usage_hourly
                WHERE workspace = {{ws:UUID}} AND project = {{project:Nullable(UUID)}}
                  {model_filter}
                  AND {}",
                in_hours("hour")
            ),
            None => format!(
                "SELECT events, latency_q AS q FROM usage_latency
                WHERE workspace = {{ws:UUID}}
                  {model_filter}
                  AND ((grain = 0 AND {})
                    OR (grain = 1 AND start >= toDateTime(intDiv({{d0:Int64}}, 1000000), 'UTC')
                        AND start < toDateTime(intDiv({{d1:Int64}}, 1000000), 'UTC')))",
                in_hours("start")
            ),
        };
        let sql = format!(
            "SELECT sum(events) AS events,
                arrayMap(x -> toFloat64(x), quantilesTDigestMerge({l})(q)) AS latency_q
             FROM (
                {rollup}
                UNION ALL
                SELECT count() AS events, quantilesTDigestState({l})(latency_ms) AS q
                FROM usage_events
                WHERE workspace = {{ws:UUID}}
                  {project_filter}
                  {model_filter}
                  AND {RAW_EDGES}
             )",
            l = schema::LEVELS,
        );
        let ws = workspace.to_string();
        let project = query.project.map(|p| p.to_string());
        let row: LatencyRow = self
            .attempt("latency", || {
                self.client
                    .query(&sql)
                    .param("ws", &ws)
                    .param("project", &project)
                    .param("model", &query.model)
                    .param("h0", hours[0].0)
                    .param("h1", hours[0].1)
                    .param("h2", hours[1].0)
                    .param("h3", hours[1].1)
                    .param("d0", days.0)
                    .param("d1", days.1)
                    .raw_edges(&s)
                    .fetch_one::<LatencyRow>()
            })
            .await?;
        Ok(LatencySummary {
            count: row.events,
            latency_ms: if row.events == 0 {
                Quantiles::default()
            } else {
                quantiles(&row.latency_q)
            },
        })
    }

    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        sprintlens_core::check_scan_limit(limit)?;
        let table = event_table(kind);
        // The tables are ordered by workspace, project, time: a page "after this cursor, by time"
        // cannot be read in order, and bounded only from below it read and sorted every row after
        // the cursor (a million events: 30 s for the pages of a whole scan, growing with the square
        // of the rows). So each page reads windows of `created_at` — which the engine prunes parts
        // and granules with — until it holds `limit` rows or no event is left; after a short
        // window the next one starts at the next event (skipping a gap in one step) and is twice
        // as wide if the short one held any. The first window's width comes from the pages before
        // (twice the time the last full page spanned).
        let learned = &self.scan_window[kind_index(kind)];
        let mut width = learned
            .load(std::sync::atomic::Ordering::Relaxed)
            .clamp(SCAN_MIN_WINDOW_MICROS, SCAN_MAX_WINDOW_MICROS);
        let mut from = match after {
            Some(c) => c.created_at.as_micros(),
            None => match self.next_event_time(table, None).await? {
                Some(oldest) => oldest,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        loop {
            let to = from.saturating_add(width);
            let page = self
                .scan_window_page(kind, after, from, to, limit - out.len())
                .await?;
            let held = !page.is_empty();
            out.extend(page);
            if out.len() >= limit {
                break;
            }
            match self.next_event_time(table, Some(to)).await? {
                Some(next) => from = next,
                None => break,
            }
            if held {
                width = width.saturating_mul(2).min(SCAN_MAX_WINDOW_MICROS);
            }
        }
        if out.len() >= limit
            && let (Some(first), Some(last)) = (out.first(), out.last())
        {
            let span = last.created_at().as_micros() - first.created_at().as_micros();
            width = span.saturating_mul(2).saturating_add(1);
        }
        learned.store(
            width.clamp(SCAN_MIN_WINDOW_MICROS, SCAN_MAX_WINDOW_MICROS),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(out)
    }

    async fn count(&self, kind: EventKind) -> Result<u64> {
        #[derive(Row, Deserialize)]
        struct Count {
            n: u64,
        }
        let table = event_table(kind);
        // FINAL: a row inserted twice and not merged yet counts once, as `scan` returns it once.
        let sql = format!("SELECT count() AS n FROM {table} FINAL");
        Ok(self
            .attempt("event_count", || {
                self.client.query(&sql).fetch_one::<Count>()
            })
            .await?
            .n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprintlens_core::config::BackendUrl;

    fn cfg(url: &str) -> AnalyticsConfig {
        AnalyticsConfig::new(BackendUrl::parse("analytics.url", url).unwrap())
    }

    #[test]
    fn urls_and_keys() {
        let o = ClickHouseOptions::from_config(&cfg("clickhouse://u:p%40ss@h:18123/db_1")).unwrap();
        assert_eq!(
            (
                o.endpoint.as_str(),
                o.user.as_str(),
                o.password.as_str(),
                o.database.as_str()
            ),
            ("http://h:18123", "u", "p@ss", "db_1")
        );
        assert!(!format!("{o:?}").contains("p@ss"));
        let o = ClickHouseOptions::from_config(&cfg("clickhouse://h")).unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.database.as_str()),
            ("http://h:8123", "default")
        );
        for bad in [
            "clickhouse://u:p@h/db?x=1",
            "clickhouse://u:p@/db",
            "clickhouse://h/db;drop",
            "http://h/db",
        ] {
            assert_eq!(
                ClickHouseOptions::from_config(&cfg(bad))
                    .unwrap_err()
                    .field(),
                Some("analytics.url"),
                "{bad}"
            );
        }
        let mut c = cfg("clickhouse://h/db");
        c.cluster = Some("a`b".into());
        assert_eq!(
            ClickHouseOptions::from_config(&c).unwrap_err().field(),
            Some("analytics.cluster")
        );
    }

    #[test]
    fn ranges_split_into_whole_hours_and_raw_edges() {
        let t = |m: i64| Timestamp::from_micros(m);
        let r = split(&TimeRange {
            from: t(HOUR / 2),
            to: t(3 * HOUR + 5),
        });
        assert_eq!(r.hours, (HOUR, 3 * HOUR));
        assert_eq!(r.raw, [(HOUR / 2, HOUR), (3 * HOUR, 3 * HOUR + 5)]);
        let r = split(&TimeRange {
            from: t(HOUR),
            to: t(2 * HOUR),
        });
        assert_eq!(r.hours, (HOUR, 2 * HOUR));
        assert_eq!(r.raw, [(HOUR, HOUR), (2 * HOUR, 2 * HOUR)]);
        let r = split(&TimeRange {
            from: t(10),
            to: t(HOUR - 1),
        });
        assert_eq!(r.hours, (0, 0));
        assert_eq!(r.raw[0], (10, HOUR - 1));
        let r = split(&TimeRange {
            from: t(-HOUR - 7),
            to: t(HOUR),
        });
        assert_eq!(r.hours, (-HOUR, HOUR));
    }

    #[test]
    fn whole_hours_split_into_whole_days_and_the_hours_around_them() {
        let day = 24 * HOUR;
        assert_eq!(whole_days((3 * HOUR, 2 * day + HOUR)), Some((day, 2 * day)));
        assert_eq!(whole_days((0, 3 * day)), Some((0, 3 * day)));
        assert_eq!(whole_days((HOUR, day + 23 * HOUR)), None);
        assert_eq!(whole_days((-day - HOUR, 0)), Some((-day, 0)));
        assert_eq!(whole_days((0, 0)), None);
    }
}
