//! `sprintlens migrate`: backfill records, embeddings and analytics events from the configured
//! (source) storage into a target whose records are on PostgreSQL, resumably, and verify that both
//! hold the same rows.
//!
//! - `run` reads each record kind in `(updated_at, id)` keyset order (tombstones included, so
//!   deletes migrate too) and writes batches to the target; each batch and its checkpoint commit in
//!   one PostgreSQL transaction, so a killed run redoes at most the batch in flight and upserts
//!   (newest `updated_at` wins) make that redo harmless. Embeddings and events follow, each batch
//!   written and then checkpointed (their writes are idempotent too). A re-run of a finished
//!   migration writes nothing; rows changed in the source since are picked up.
//! - `verify` hashes a canonical encoding of every record, embedding and event on both sides (object
//!   keys sorted, numbers as serialised, times as RFC 3339 with microseconds) and names the ids
//!   missing from the target, extra in it, or different.
//!
//! - `rollback` (after a cut-over, see [`crate::phase`]): delivers the new store's outbox back to the
//!   old store, then copies every record the new store changed since the cut-over (keyset scan with
//!   checkpoints, so a killed rollback resumes), then records the phase `rolled-back`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sprintlens_core::analytics::{EventCursor, EventKind};
use sprintlens_core::{
    AnalyticsEvent, Error, Record, RecordId, RecordKind, Result, ScanCursor, ScanRequest,
    Timestamp, VectorEntry, WorkspaceId,
};

use crate::Storage;

/// The named points at which `SPRINTLENS_MIGRATE_KILL_AT=<point>:<n>` aborts the process (the n-th
/// time the point is reached), for crash tests: `after-read` (a batch read, nothing written),
/// `mid-batch` (a target write in flight, uncommitted), `after-commit` (the target committed; for
/// embeddings and events the checkpoint is not written yet), `after-checkpoint`, `before-indexes`
/// (every record kind copied, deferred indexes not rebuilt yet), `during-verify`.
pub const KILL_POINTS: &[&str] = &[
    "after-read",
    "mid-batch",
    "after-commit",
    "after-checkpoint",
    "before-indexes",
    "during-verify",
];

fn kill_spec() -> Option<&'static (String, u64)> {
    static SPEC: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let v = std::env::var("SPRINTLENS_MIGRATE_KILL_AT").ok()?;
        let (point, n) = v.split_once(':').unwrap_or((&v, "1"));
        Some((point.to_string(), n.parse().unwrap_or(1)))
    })
    .as_ref()
}

/// Whether this reach of `point` is the one `SPRINTLENS_MIGRATE_KILL_AT` names.
fn kill_armed(point: &str) -> bool {
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    match kill_spec() {
        Some((p, n)) if p == point => {
            HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *n
        }
        _ => false,
    }
}

/// Aborts the process (no destructors, no flushes: like `kill -9`) when armed for `point`.
fn kill_point(point: &str) {
    if kill_armed(point) {
        eprintln!("SPRINTLENS_MIGRATE_KILL_AT: aborting at {point}");
        std::process::abort();
    }
}

/// Runs `write`; when armed for `mid-batch`, aborts while it is in flight instead.
async fn write_or_die<T>(write: impl std::future::Future<Output = T>) -> T {
    if kill_armed("mid-batch") {
        let write = std::pin::pin!(write);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(3), write).await;
        eprintln!("SPRINTLENS_MIGRATE_KILL_AT: aborting at mid-batch");
        std::process::abort();
    }
    write.await
}

/// Largest batch `run` writes in one target transaction.
pub const MAX_BATCH: usize = 100_000;

/// Up to `want` records of `kind` after `after`, read in pages of the port's largest page.
async fn read_records(
    source: &Storage,
    kind: RecordKind,
    mut after: Option<ScanCursor>,
    want: usize,
) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        let limit = (want - out.len()).min(sprintlens_core::MAX_PAGE);
        let page = source
            .records()
            .scan(&ScanRequest {
                kind,
                workspace: None,
                after,
                limit,
            })
            .await?;
        let short = page.len() < limit;
        after = page.last().map(Record::cursor).or(after);
        out.extend(page);
        if short {
            break;
        }
    }
    Ok(out)
}

/// What `run` does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Records per batch (and per target transaction), 1..=[`MAX_BATCH`]; embeddings and events go in
    /// batches of at most 1,000.
    pub batch: usize,
    /// Kinds to copy (all when empty).
    pub kinds: Vec<RecordKind>,
    /// Stop after this many batches, as if killed after a commit (tests and dry rehearsals).
    pub stop_after_batches: Option<u64>,
    /// Also copy analytics events (evaluation results, usage) to the target's analytics.
    pub events: bool,
    /// Keyset streams copied at the same time, 1..=16, each with its own checkpoint: every record
    /// kind is a stream, and with 2 or more a kind no run has started yet (holding at least two
    /// batches) is cut into this many lanes of about equal size ([`sprintlens_core::RecordStore::split`]), each a
    /// stream; a kill then redoes at most one batch per stream that was in flight.
    pub parallel: usize,
    /// Drop the target's secondary record indexes while copying into a (nearly) empty table, and its
    /// HNSW index while copying embeddings into an empty one, and build them once at the end (needs
    /// `[records] admin_url`; see [`DEFER_INDEXES_MIN_ROWS`]).
    pub defer_indexes: bool,
}

/// `run` defers the target's secondary indexes only when at least this many records are left to
/// copy and the target holds fewer records than are left: below that, maintaining them costs less
/// than rebuilding them.
pub const DEFER_INDEXES_MIN_ROWS: u64 = 20_000;

/// The checkpoint that says the target's secondary record indexes were dropped by `run` and not yet
/// rebuilt (a finished backfill needs it cleared).
pub const INDEXES_CHECKPOINT: &str = "migrate/indexes";

/// The checkpoint that says the target's HNSW index of embeddings was dropped by `run` and not yet
/// rebuilt.
pub const VECTOR_INDEX_CHECKPOINT: &str = "migrate/vector-index";

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch: 10_000,
            kinds: Vec::new(),
            stop_after_batches: None,
            events: true,
            parallel: 2,
            defer_indexes: true,
        }
    }
}

/// Progress of one kind, reported after every batch.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// The kind.
    pub kind: &'static str,
    /// Rows copied so far (including earlier runs).
    pub copied: u64,
    /// Rows in the source.
    pub total: u64,
    /// Rows per second in this run.
    pub rate: f64,
    /// Estimated seconds left.
    pub eta_secs: f64,
    /// Whether the kind is finished.
    pub done: bool,
}

/// One kind's plan.
#[derive(Clone, Debug, Serialize)]
pub struct KindPlan {
    /// The kind.
    pub kind: &'static str,
    /// Rows in the source (tombstones included).
    pub source_rows: u64,
    /// Rows already copied according to the target's checkpoint.
    pub copied: u64,
    /// Estimated size in the target (rows left × sampled encoded size + per-row overhead).
    pub estimated_bytes: u64,
}

/// A precondition of the migration and whether it holds.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// Why not, or what was found.
    pub detail: String,
}

/// What `run` will copy, how long and how much disk it should take, and what stands in the way.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Per record kind, then `embedding`, `eval_result` and `usage` (counted across workspaces).
    pub kinds: Vec<KindPlan>,
    /// Rows still to copy: records, embeddings and events.
    pub rows_left: u64,
    /// Whether `run` would bulk-load them (the target holds next to nothing: COPY straight into the
    /// table and, with `[records] admin_url`, indexes built at the end) or upsert them.
    pub bulk_load: bool,
    /// Estimated seconds for what is left: records at [`PLAN_BULK_ROWS_PER_SEC`] for a bulk load
    /// and [`PLAN_ROWS_PER_SEC`] otherwise, embeddings at [`PLAN_VECTOR_BULK_ROWS_PER_SEC`] into a
    /// target holding none and [`PLAN_VECTOR_ROWS_PER_SEC`] otherwise, events at
    /// [`PLAN_EVENT_ROWS_PER_SEC`].
    pub estimated_seconds: f64,
    /// Estimated bytes what is left takes in the target.
    pub estimated_bytes: u64,
    /// Preconditions; `run` would fail or lose writes when one does not hold.
    pub checks: Vec<Check>,
}

impl Plan {
    /// Whether every check holds.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// The backfill rate assumed by `plan` for upserts into a target that already holds rows (measured:
/// 34,000–38,000 records/s on 2 cores, see docs/benchmarks.md; a faster target only shortens the run).
pub const PLAN_ROWS_PER_SEC: f64 = 30_000.0;

/// The rate assumed by `plan` for a bulk load into a (nearly) empty target, kept below what was
/// measured on 2 cores including the index builds (`--parallel 1`: 73,000–96,000 records/s; the
/// default `--parallel 2`: 93,000–112,000; see docs/benchmarks.md): a slower target must not make
/// the estimate optimistic.
pub const PLAN_BULK_ROWS_PER_SEC: f64 = 70_000.0;

/// Whether `run` bulk-loads: at least [`DEFER_INDEXES_MIN_ROWS`] records left and fewer than that in
/// the target.
fn bulk_load(left: u64, held: u64) -> bool {
    left >= DEFER_INDEXES_MIN_ROWS && held < left
}

/// Per-row overhead assumed in the target on top of the encoded record: tuple header, uuid and time
/// columns, and the entries of the seven indexes on `records`.
pub const PLAN_ROW_OVERHEAD_BYTES: u64 = 300;

/// The rate assumed by `plan` for embeddings into a target on PostgreSQL holding none: COPY, then
/// the HNSW index built once (measured: 50,000 × 384 in 14.3 s on 2 cores, see docs/benchmarks.md).
pub const PLAN_VECTOR_BULK_ROWS_PER_SEC: f64 = 3_500.0;

/// The rate assumed by `plan` for embeddings upserted into a maintained HNSW index (measured:
/// 50,000 × 384 in 70.7 s).
pub const PLAN_VECTOR_ROWS_PER_SEC: f64 = 700.0;

/// The rate assumed by `plan` for analytics events into ClickHouse, kept below what was measured
/// (batches of up to 10,000 per stream, each gated by a count of stored events in its span:
/// 156,000–168,000 events/s on 2 cores, `bench migrate-events`).
pub const PLAN_EVENT_ROWS_PER_SEC: f64 = 120_000.0;

/// Bytes an analytics event takes in the target (ClickHouse, compressed, its rollups included;
/// measured: 23 bytes per event over 2.4M events of `bench clickhouse`, 21 for an evaluation
/// result's row alone, 17 for a usage event's).
pub const PLAN_EVENT_BYTES: u64 = 25;

/// What `run` did for one kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindRun {
    /// The kind.
    pub kind: &'static str,
    /// Rows read and written in this run.
    pub rows: u64,
    /// Rows the target actually changed (new or newer).
    pub written: u64,
    /// Batches committed in this run.
    pub batches: u64,
    /// Rows already copied when this run started.
    pub resumed_at: u64,
    /// Whether the kind is finished.
    pub done: bool,
}

/// One kind's verification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindVerify {
    /// The kind.
    pub kind: &'static str,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target.
    pub target_rows: u64,
    /// Ids in the source and not in the target (first 100).
    pub missing: Vec<RecordId>,
    /// Ids in the target and not in the source (first 100).
    pub extra: Vec<RecordId>,
    /// Ids on both sides whose rows differ (first 100).
    pub different: Vec<RecordId>,
    /// Counts of each.
    pub missing_count: u64,
    /// Extra rows.
    pub extra_count: u64,
    /// Different rows.
    pub different_count: u64,
    /// Events only: compared from this time on (a side keeps events for `retention_days`, less an
    /// hour so none expires while verify runs); `None`: every row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

impl KindVerify {
    /// Rows missing, extra or different.
    pub fn differences(&self) -> u64 {
        self.missing_count + self.extra_count + self.different_count
    }
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Per kind.
    pub kinds: Vec<KindVerify>,
    /// Whether every kind matched.
    pub ok: bool,
    /// Seconds it took.
    pub seconds: f64,
}

impl VerifyReport {
    /// Adds one kind's result.
    pub fn push(&mut self, kind: KindVerify) {
        self.ok &= kind.differences() == 0;
        self.kinds.push(kind);
    }
}

const SAMPLE: usize = 100;

fn event_cursor(e: &AnalyticsEvent) -> EventCursor {
    EventCursor {
        created_at: e.created_at(),
        id: e.id(),
    }
}

/// How much sooner than a side's retention `verify` stops comparing events: events this close to
/// expiring may be dropped by ClickHouse while verify runs.
const RETENTION_MARGIN: std::time::Duration = std::time::Duration::from_secs(3_600);

/// The time before which `storage` keeps no events: ClickHouse with `[analytics] retention_days`
/// (a TTL) drops older events at insert and on merges. `None`: it keeps every event.
fn event_horizon(storage: &Storage, now: Timestamp) -> Option<Timestamp> {
    let days = storage.config().analytics.retention_days;
    (days > 0 && storage.analytics().backend() == "clickhouse")
        .then(|| now.minus(std::time::Duration::from_secs(u64::from(days) * 86_400)))
}

/// The scan position just before `at`: every event at or after `at` comes after it.
fn cursor_before(at: Timestamp) -> Result<EventCursor> {
    Ok(EventCursor {
        created_at: at.minus(std::time::Duration::from_micros(1)),
        // The largest UUIDv7: ids sort as their text in every adapter's scan.
        id: "ffffffff-ffff-7fff-bfff-ffffffffffff".parse()?,
    })
}

fn checkpoint_name(kind: RecordKind) -> String {
    format!("migrate/records/{}", kind.as_str())
}

fn event_stream(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EvalResult => "eval_result",
        EventKind::Usage => "usage",
    }
}

fn event_checkpoint(kind: EventKind) -> String {
    format!("migrate/events/{}", event_stream(kind))
}

fn kinds(selected: &[RecordKind]) -> Vec<RecordKind> {
    if selected.is_empty() {
        RecordKind::ALL.to_vec()
    } else {
        selected.to_vec()
    }
}

fn target_pg(target: &Storage) -> Result<&sprintlens_postgres::PgStore> {
    target.postgres.as_ref().ok_or_else(|| {
        Error::config(
            "records.url",
            "migrate run writes batches and checkpoints in one transaction: the target's records must be on PostgreSQL",
        )
    })
}

/// What a stream's checkpoint holds: the cursor after the last committed batch, and for a lane of a
/// record kind where the lane ends.
#[derive(Serialize, Deserialize)]
struct Checkpoint<C> {
    cursor: Option<C>,
    done: bool,
    /// The last cursor of a lane (inclusive); absent for a whole stream or the last lane.
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<C>,
}

fn checkpoint<C: Serialize>(cursor: Option<C>, done: bool) -> Result<Value> {
    lane_checkpoint(cursor, done, None)
}

fn lane_checkpoint<C: Serialize>(cursor: Option<C>, done: bool, end: Option<C>) -> Result<Value> {
    serde_json::to_value(Checkpoint { cursor, done, end })
        .map_err(|e| Error::backend("migrate", "checkpoint", e))
}

/// The checkpoint of lane `lane` of `kind`: `migrate/records/<kind>/<nn>`.
fn lane_name(kind: RecordKind, lane: usize) -> String {
    format!("{}/{lane:02}", checkpoint_name(kind))
}

/// Whether checkpoint `name` belongs to `kind`: the kind's own, or one of its lanes'.
fn of_kind(name: &str, kind: RecordKind) -> bool {
    let own = checkpoint_name(kind);
    name.strip_prefix(own.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A record stream's checkpoint (a kind's own or one of its lanes'): `(name, position, rows,
/// updated_at)`.
pub(crate) type RecordCheckpoint = (String, Value, u64, Timestamp);

/// The checkpoints of every record kind and lane, read once for all the kinds.
pub(crate) async fn record_checkpoints(
    pg: &sprintlens_postgres::PgStore,
) -> Result<Vec<RecordCheckpoint>> {
    pg.checkpoints("migrate/records/").await
}

/// Rows copied of `kind` by `checkpoints`, over its own checkpoint or its lanes'.
fn copied_of(checkpoints: &[RecordCheckpoint], kind: RecordKind) -> u64 {
    checkpoints
        .iter()
        .filter(|(name, ..)| of_kind(name, kind))
        .map(|(_, _, rows, _)| rows)
        .sum()
}

/// Whether the backfill of `kind` is finished by `checkpoints` (those of `migrate/records/`): its
/// own checkpoint says done, or it was cut into lanes and every lane's checkpoint says done.
pub(crate) fn kind_done(checkpoints: &[RecordCheckpoint], kind: RecordKind) -> bool {
    let mine: Vec<&Value> = checkpoints
        .iter()
        .filter(|(name, ..)| of_kind(name, kind))
        .map(|(_, position, ..)| position)
        .collect();
    !mine.is_empty() && mine.iter().all(|p| p["done"] == Value::Bool(true))
}

/// One keyset stream of a record kind's copy: the records after its checkpoint's cursor up to
/// `end` (inclusive; open-ended when `None`), checkpointed under `name`.
struct Lane {
    name: String,
    end: Option<ScanCursor>,
}

/// The streams of `kind`: its lanes when an earlier run cut it (each lane's checkpoint in
/// `checkpoints` says where it ends), else one stream under the kind's own checkpoint. A kind no run
/// has started, with
/// `parallel > 1` and at least two batches of records, is cut into `parallel` lanes of about equal
/// size at the source's [`sprintlens_core::RecordStore::split`] cursors; every lane's checkpoint is written in one
/// transaction before any lane copies, so a resumed run finds the same lanes whatever its
/// `parallel`.
#[allow(clippy::too_many_arguments)]
async fn lanes_of(
    source: &Storage,
    pg: &sprintlens_postgres::PgStore,
    checkpoints: &[RecordCheckpoint],
    kind: RecordKind,
    parallel: usize,
    batch: usize,
    total: u64,
) -> Result<Vec<Lane>> {
    let own = checkpoint_name(kind);
    let mine: Vec<_> = checkpoints
        .iter()
        .filter(|(name, ..)| of_kind(name, kind))
        .collect();
    // Lanes sort by name (`…/00`, `…/01`, …), as the checkpoints are listed.
    let lanes: Vec<_> = mine.iter().filter(|(name, ..)| *name != own).collect();
    if !lanes.is_empty() {
        return lanes
            .into_iter()
            .map(|(name, position, ..)| {
                let c: Checkpoint<ScanCursor> = serde_json::from_value(position.clone())
                    .map_err(|e| Error::backend("migrate", "checkpoint", e))?;
                Ok(Lane {
                    name: name.clone(),
                    end: c.end,
                })
            })
            .collect();
    }
    let whole = || {
        vec![Lane {
            name: own.clone(),
            end: None,
        }]
    };
    if parallel < 2 || total < 2 * batch as u64 || !mine.is_empty() {
        return Ok(whole());
    }
    let cuts = source.records().split(kind, parallel).await?;
    if cuts.is_empty() {
        return Ok(whole());
    }
    let mut lanes = Vec::new();
    let mut rows = Vec::new();
    for i in 0..=cuts.len() {
        let start = i.checked_sub(1).map(|j| cuts[j]);
        let end = cuts.get(i).copied();
        let name = lane_name(kind, i);
        rows.push((name.clone(), lane_checkpoint(start, false, end)?, 0));
        lanes.push(Lane { name, end });
    }
    pg.set_checkpoints(&rows).await?;
    Ok(lanes)
}

/// Where stream `name` stands in the target: its cursor and the rows copied.
async fn load<C: DeserializeOwned>(
    pg: &sprintlens_postgres::PgStore,
    name: &str,
) -> Result<(Option<C>, u64)> {
    match pg.checkpoint(name).await? {
        Some((position, rows)) => {
            let c: Checkpoint<C> = serde_json::from_value(position)
                .map_err(|e| Error::backend("migrate", "checkpoint", e))?;
            Ok((c.cursor, rows))
        }
        None => Ok((None, 0)),
    }
}

/// One stream copied in fixed batches after its checkpoint: read a batch, write it to the target,
/// then record the checkpoint in PostgreSQL. The writes are idempotent (newest `updated_at` wins, or
/// stored ids are dropped), so a crash between the two re-sends one batch and changes nothing.
#[allow(clippy::too_many_arguments)]
async fn copy_stream<T, C, R, RF, W, WF>(
    pg: &sprintlens_postgres::PgStore,
    name: &str,
    label: &'static str,
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
    read: R,
    write: W,
    cursor_of: impl Fn(&T) -> C,
) -> Result<(KindRun, bool)>
where
    C: Copy + Serialize + DeserializeOwned,
    R: Fn(Option<C>) -> RF,
    RF: std::future::Future<Output = Result<Vec<T>>>,
    W: Fn(Vec<T>) -> WF,
    WF: std::future::Future<Output = Result<u64>>,
{
    let (mut cursor, mut copied) = load::<C>(pg, name).await?;
    let mut report = KindRun {
        kind: label,
        resumed_at: copied,
        ..Default::default()
    };
    let started = Instant::now();
    loop {
        if *batches_left == Some(0) {
            return Ok((report, true));
        }
        let batch = read(cursor).await?;
        kill_point("after-read");
        let n = batch.len() as u64;
        let done = batch.len() < batch_size;
        let next = batch.last().map(&cursor_of).or(cursor);
        if n > 0 {
            report.written += write_or_die(write(batch)).await?;
        }
        kill_point("after-commit");
        copied += n;
        pg.upsert_with_checkpoint(&[], name, &checkpoint(next, done)?, copied)
            .await?;
        kill_point("after-checkpoint");
        report.rows += n;
        report.batches += 1;
        cursor = next;
        if let Some(b) = batches_left {
            *b -= 1;
        }
        let rate = report.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress(&Progress {
            kind: label,
            copied,
            total: 0,
            rate,
            eta_secs: 0.0,
            done,
        });
        if done {
            report.done = true;
            return Ok((report, false));
        }
    }
}

/// Copies one analytics stream in fixed batches (the run's `batch`, at most
/// [`sprintlens_core::analytics::MAX_SCAN_PAGE`]) after its checkpoint. The events land in the
/// target's analytics first and the checkpoint after (in PostgreSQL): a crash in between re-sends
/// the same batch, which `record` stores once (ids already stored are dropped; ClickHouse inserts
/// also carry a deduplication token).
async fn copy_events(
    source: &Storage,
    target: &Storage,
    pg: &sprintlens_postgres::PgStore,
    kind: EventKind,
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
) -> Result<(KindRun, bool)> {
    // Events the target would drop at insert (past its retention) are not read.
    let floor = event_horizon(target, Timestamp::now())
        .map(cursor_before)
        .transpose()?;
    copy_stream(
        pg,
        &event_checkpoint(kind),
        event_stream(kind),
        batch_size,
        batches_left,
        progress,
        |after| {
            source
                .analytics()
                .scan(kind, std::cmp::max(after, floor), batch_size)
        },
        |batch: Vec<AnalyticsEvent>| async move { target.analytics().record(&batch).await },
        event_cursor,
    )
    .await
}

const EMBEDDINGS: &str = "migrate/embeddings";

/// Copies every embedding after the checkpoint (vectors as the source stores them). Upserts keep
/// the newest `updated_at`, so the batch a crash re-sends is harmless; with `bulk` (a target on
/// PostgreSQL that held none) each batch is COPYed straight in, and a re-sent one falls back to the
/// upsert.
async fn copy_embeddings(
    source: &Storage,
    target: &Storage,
    pg: &sprintlens_postgres::PgStore,
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
    bulk: bool,
) -> Result<(KindRun, bool)> {
    copy_stream(
        pg,
        EMBEDDINGS,
        "embedding",
        batch_size,
        batches_left,
        progress,
        |after| source.vectors().scan_entries(after, batch_size),
        |batch: Vec<VectorEntry>| async move {
            if bulk {
                pg.load_vectors(&batch).await
            } else {
                target.vectors().upsert(&batch).await
            }
        },
        VectorEntry::cursor,
    )
    .await
}

/// One stream's state in the target.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    /// `migrate/records/<kind>`, `migrate/embeddings`, `migrate/events/<stream>` or `migrate/verify`.
    pub name: String,
    /// Rows copied (for `migrate/verify`: rows compared).
    pub rows: u64,
    /// The checkpoint (for `migrate/verify`: the last verification's summary).
    pub position: Value,
    /// When it was written.
    pub updated_at: Timestamp,
}

/// Where every stream of the migration stands, and the last verification.
pub async fn status(target: &Storage) -> Result<Vec<StreamStatus>> {
    let pg = target_pg(target)?;
    Ok(pg
        .checkpoints("migrate/")
        .await?
        .into_iter()
        .map(|(name, position, rows, updated_at)| StreamStatus {
            name,
            rows,
            position,
            updated_at,
        })
        .collect())
}

/// What `rollback` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RollbackReport {
    /// Outbox entries of the new store delivered to the old one.
    pub delivered: u64,
    /// Records re-copied from the new store's changes since the cut-over.
    pub copied: u64,
    /// The migration was already rolled back; nothing was done.
    pub already: bool,
}

/// How far before the recorded cut-over time `rollback` scans (clock skew between hosts).
pub const ROLLBACK_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Rolls a cut-over back: everything the new store (`target`) holds that the old one (`source`)
/// may not is copied back, then the phase becomes `rolled-back` (after which `dual-write` may open).
/// Both storages must be opened in `single` mode. Resumable: each step is idempotent and the copy
/// is checkpointed.
pub async fn rollback(
    source: &Storage,
    target: &Storage,
    mut progress: impl FnMut(&Progress),
) -> Result<RollbackReport> {
    let pg = target_pg(target)?;
    let since = match crate::phase::phase(target).await? {
        Some(p) if p.phase == "cut-over" => p.at,
        Some(p) if p.phase == "rolled-back" => {
            return Ok(RollbackReport {
                already: true,
                ..Default::default()
            });
        }
        _ => {
            return Err(Error::config(
                "migration.mode",
                "nothing to roll back: no cut-over is recorded in the target",
            ));
        }
    };
    let outbox = target.outbox().cloned().ok_or_else(|| {
        Error::config(
            "records.url",
            "the target's records backend keeps no outbox",
        )
    })?;
    let before = outbox.outbox_stats().await?.pending;
    let reconciler = crate::dual::Reconciler::new(
        outbox,
        source.records().clone(),
        crate::dual::ReconcilerOptions::default(),
    );
    reconciler
        .drain(std::time::Duration::from_secs(3600))
        .await?;
    let mut report = RollbackReport {
        delivered: before,
        ..Default::default()
    };
    // Events logged by a target whose analytics keeps an event outbox (SQLite); a ClickHouse target
    // mirrored its events to the old store as they were recorded.
    if let Some(events) = target.event_outbox().cloned() {
        report.delivered += events.event_outbox_stats().await?.pending;
        crate::dual::Reconciler::events(
            events,
            source.analytics().clone(),
            crate::dual::ReconcilerOptions::default(),
        )
        .drain(std::time::Duration::from_secs(3600))
        .await?;
    }
    // Embeddings logged by the target's vector outbox (PostgreSQL).
    if let Some(vectors) = target.vector_outbox().cloned() {
        report.delivered += vectors.vector_outbox_stats().await?.pending;
        crate::dual::Reconciler::vectors(
            vectors,
            source.vectors().clone(),
            crate::dual::ReconcilerOptions::default(),
        )
        .drain(std::time::Duration::from_secs(3600))
        .await?;
    }
    let start: RecordId = "00000000-0000-7000-8000-000000000000".parse()?;
    for kind in RecordKind::ALL {
        let name = format!("migrate/rollback/{}", kind.as_str());
        let (saved, mut copied) = load::<ScanCursor>(pg, &name).await?;
        let mut cursor = saved.unwrap_or(ScanCursor {
            updated_at: since.minus(ROLLBACK_MARGIN),
            id: start,
        });
        loop {
            let batch = target
                .records()
                .scan(&ScanRequest {
                    kind: *kind,
                    workspace: None,
                    after: Some(cursor),
                    limit: sprintlens_core::MAX_PAGE,
                })
                .await?;
            let Some(last) = batch.last() else { break };
            cursor = last.cursor();
            source.records().upsert(&batch).await?;
            copied += batch.len() as u64;
            report.copied += batch.len() as u64;
            pg.upsert_with_checkpoint(&[], &name, &checkpoint(Some(cursor), false)?, copied)
                .await?;
            progress(&Progress {
                kind: kind.as_str(),
                copied,
                total: copied,
                rate: 0.0,
                eta_secs: 0.0,
                done: false,
            });
        }
    }
    // Checkpoints first: a kill in between redoes the (idempotent) copy rather than leaving a stale
    // cursor for a later rollback.
    pg.clear_checkpoints("migrate/rollback/").await?;
    crate::phase::set_phase(target, "rolled-back").await?;
    Ok(report)
}

/// Records a verification's outcome in the target (shown by `status`).
pub async fn record_verify(target: &Storage, report: &VerifyReport) -> Result<()> {
    let pg = target_pg(target)?;
    let rows: u64 = report.kinds.iter().map(|k| k.source_rows).sum();
    let summary = serde_json::json!({
        "ok": report.ok,
        "missing": report.kinds.iter().map(|k| k.missing_count).sum::<u64>(),
        "extra": report.kinds.iter().map(|k| k.extra_count).sum::<u64>(),
        "different": report.kinds.iter().map(|k| k.different_count).sum::<u64>(),
        "seconds": report.seconds,
    });
    pg.upsert_with_checkpoint(&[], "migrate/verify", &summary, rows)
        .await?;
    Ok(())
}

/// Rows per kind in the source, what the target's checkpoints say is copied, estimates, and the
/// preconditions (`mode` is the source configuration's `[migration] mode`).
pub async fn plan(
    source: &Storage,
    target: &Storage,
    mode: sprintlens_core::config::MigrationMode,
) -> Result<Plan> {
    use sprintlens_core::config::MigrationMode;
    let mut checks = Vec::new();
    let mut check =
        |name: &'static str, ok: bool, detail: String| checks.push(Check { name, ok, detail });
    check(
        "writes made during the backfill reach the target",
        matches!(mode, MigrationMode::DualWrite | MigrationMode::ShadowRead),
        match mode {
            MigrationMode::DualWrite | MigrationMode::ShadowRead => {
                format!("the source is in {}", mode.as_str())
            }
            MigrationMode::CutOver => {
                "the source is in cut-over: the target is the store of record already".into()
            }
            MigrationMode::Single => {
                "the source is in single mode: set [migration] mode = \"dual-write\" \
                 on every service, or run with --offline if nothing writes to it"
                    .into()
            }
        },
    );
    check(
        "scans across workspaces in the target",
        target.config().records.operator_url.is_some(),
        "the target needs [records] operator_url (a BYPASSRLS role) for verify and rollback".into(),
    );
    let (sd, td) = (
        source.config().vectors.dimension,
        target.config().vectors.dimension,
    );
    check(
        "vector dimension",
        sd == td,
        format!("source {sd}, target {td}"),
    );
    if let Some(horizon) = event_horizon(target, Timestamp::now()) {
        check(
            "events the target keeps",
            true,
            format!(
                "the target keeps {} days of events (analytics.retention_days): events before {horizon} \
                 are not copied (the target would drop them), and verify compares events from an hour \
                 later on",
                target.config().analytics.retention_days
            ),
        );
    }
    for status in target.schema_status().await? {
        check(
            "target schema applied",
            status.applied.len() >= status.known,
            format!(
                "{} {}: {} of {} migrations applied (run `sprintlens schema apply --config` with the target)",
                status.backend,
                status.location,
                status.applied.len(),
                status.known
            ),
        );
    }
    let pg = target_pg(target)?;
    let mut kinds = Vec::new();
    let mut held = 0;
    let checkpoints = record_checkpoints(pg).await?;
    for kind in RecordKind::ALL {
        held += target.records().count(*kind, None).await?;
        let copied = copied_of(&checkpoints, *kind);
        let source_rows = source.records().count(*kind, None).await?;
        // The encoded size of a sample (the oldest page) stands for the rest.
        let sample = source
            .records()
            .scan(&ScanRequest {
                kind: *kind,
                workspace: None,
                after: None,
                limit: 200,
            })
            .await?;
        let avg = if sample.is_empty() {
            0
        } else {
            sample
                .iter()
                .map(|r| {
                    serde_json::to_vec(&r.body)
                        .map(|v| v.len() as u64)
                        .unwrap_or(0)
                })
                .sum::<u64>()
                / sample.len() as u64
        };
        let left = source_rows.saturating_sub(copied);
        kinds.push(KindPlan {
            kind: kind.as_str(),
            source_rows,
            copied,
            estimated_bytes: left * (avg + PLAN_ROW_OVERHEAD_BYTES),
        });
    }
    let left = |k: &KindPlan| k.source_rows.saturating_sub(k.copied);
    let records_left: u64 = kinds.iter().map(left).sum();
    let bulk = Deferral::Records.pending(pg).await? || bulk_load(records_left, held);
    let mut seconds = records_left as f64
        / if bulk {
            PLAN_BULK_ROWS_PER_SEC
        } else {
            PLAN_ROWS_PER_SEC
        };
    // Embeddings and events, counted across workspaces.
    let (_, copied) = load::<sprintlens_core::VectorCursor>(pg, EMBEDDINGS).await?;
    let source_rows = source.vectors().count_all().await?;
    let embeddings = KindPlan {
        kind: "embedding",
        source_rows,
        copied,
        estimated_bytes: source_rows.saturating_sub(copied)
            * (4 * sd as u64 + PLAN_ROW_OVERHEAD_BYTES),
    };
    seconds += left(&embeddings) as f64
        / if matches!(sprintlens_core::VectorIndex::count_all(pg).await, Ok(0)) {
            PLAN_VECTOR_BULK_ROWS_PER_SEC
        } else {
            PLAN_VECTOR_ROWS_PER_SEC
        };
    kinds.push(embeddings);
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        let (_, copied) = load::<EventCursor>(pg, &event_checkpoint(kind)).await?;
        let source_rows = source.analytics().count(kind).await?;
        let events = KindPlan {
            kind: event_stream(kind),
            source_rows,
            copied,
            estimated_bytes: source_rows.saturating_sub(copied) * PLAN_EVENT_BYTES,
        };
        seconds += left(&events) as f64 / PLAN_EVENT_ROWS_PER_SEC;
        kinds.push(events);
    }
    Ok(Plan {
        rows_left: kinds.iter().map(left).sum(),
        bulk_load: bulk,
        estimated_seconds: seconds,
        estimated_bytes: kinds.iter().map(|k| k.estimated_bytes).sum(),
        kinds,
        checks,
    })
}

/// Takes one batch of `stop_after_batches`: `None` when none is left, else whether it is the last.
fn take_batch(left: &std::cell::Cell<Option<u64>>) -> Option<bool> {
    match left.get() {
        Some(0) => None,
        Some(n) => {
            left.set(Some(n - 1));
            Some(n == 1)
        }
        None => Some(false),
    }
}

/// A record kind's progress over its lanes (which all run on one task).
struct KindState {
    kind: RecordKind,
    total: u64,
    /// Rows copied over all lanes, earlier runs included.
    copied: std::cell::Cell<u64>,
    /// Rows copied over all lanes in this run.
    rows: std::cell::Cell<u64>,
    lanes_left: std::cell::Cell<usize>,
    started: Instant,
}

/// Reads the next batch of a lane: the records after `cursor`, none past the lane's `end`; and
/// whether the lane is finished with it.
async fn read_lane(
    source: &Storage,
    kind: RecordKind,
    cursor: Option<ScanCursor>,
    end: Option<ScanCursor>,
    batch_size: usize,
) -> Result<(Vec<Record>, bool)> {
    let mut batch = read_records(source, kind, cursor, batch_size).await?;
    let mut done = batch.len() < batch_size;
    if let Some(end) = end {
        let inside = batch.partition_point(|r| r.cursor() <= end);
        if inside < batch.len() {
            batch.truncate(inside);
            done = true;
        }
    }
    Ok((batch, done))
}

/// Copies one lane of a record kind after its checkpoint; returns its report and whether
/// `stop_after_batches` stopped it.
#[allow(clippy::too_many_arguments)]
async fn copy_lane(
    source: &Storage,
    pg: &sprintlens_postgres::PgStore,
    lane: &Lane,
    state: &KindState,
    batch_size: usize,
    left: &std::cell::Cell<Option<u64>>,
    progress: &std::cell::RefCell<&mut dyn FnMut(&Progress)>,
    bulk: bool,
) -> Result<(KindRun, bool)> {
    let kind = state.kind;
    let name = &lane.name;
    let (mut cursor, mut copied) = load::<ScanCursor>(pg, name).await?;
    let mut report = KindRun {
        kind: kind.as_str(),
        resumed_at: copied,
        ..Default::default()
    };
    let mut prefetched: Option<(Vec<Record>, bool)> = None;
    loop {
        let Some(last) = take_batch(left) else {
            return Ok((report, true));
        };
        let (batch, done) = match prefetched.take() {
            Some(b) => b,
            None => read_lane(source, kind, cursor, lane.end, batch_size).await?,
        };
        kill_point("after-read");
        let next = batch.last().map(Record::cursor).or(cursor);
        let position = lane_checkpoint(next, done, lane.end)?;
        copied += batch.len() as u64;
        // Write this batch while the next one is read from the source.
        // Into a (nearly) empty target, COPY straight into the table; a batch with ids already
        // stored falls back to the upsert by itself.
        let write = write_or_die(async {
            if bulk {
                pg.load_with_checkpoint(&batch, name, &position, copied)
                    .await
            } else {
                pg.upsert_with_checkpoint(&batch, name, &position, copied)
                    .await
            }
        });
        let outcome = if done || last {
            write.await?
        } else {
            let (written, read) =
                futures::join!(write, read_lane(source, kind, next, lane.end, batch_size));
            prefetched = Some(read?);
            written?
        };
        // The batch and its checkpoint committed together.
        kill_point("after-commit");
        kill_point("after-checkpoint");
        report.rows += batch.len() as u64;
        report.written += outcome.written;
        report.batches += 1;
        cursor = next;
        state.copied.set(state.copied.get() + batch.len() as u64);
        state.rows.set(state.rows.get() + batch.len() as u64);
        if done {
            state.lanes_left.set(state.lanes_left.get() - 1);
        }
        let rate = state.rows.get() as f64 / state.started.elapsed().as_secs_f64().max(1e-9);
        (progress.borrow_mut())(&Progress {
            kind: kind.as_str(),
            copied: state.copied.get(),
            total: state.total,
            rate,
            eta_secs: if rate > 0.0 {
                state.total.saturating_sub(state.copied.get()) as f64 / rate
            } else {
                0.0
            },
            done: state.lanes_left.get() == 0,
        });
        if done {
            report.done = true;
            return Ok((report, false));
        }
    }
}

/// Whether an earlier `run` dropped the target's secondary record indexes and has not finished
/// (its mark is set) or any of them is missing: a backfill is not finished until they are built.
pub async fn indexes_deferred(pg: &sprintlens_postgres::PgStore) -> Result<bool> {
    Ok(Deferral::Records.pending(pg).await? || Deferral::Vector.pending(pg).await?)
}

/// The indexes `run` drops for a bulk load into an empty table and builds once at the end: the
/// secondary indexes of `records`, and the HNSW index of `embeddings`.
#[derive(Clone, Copy)]
enum Deferral {
    Records,
    Vector,
}

impl Deferral {
    fn mark(self) -> &'static str {
        match self {
            Deferral::Records => INDEXES_CHECKPOINT,
            Deferral::Vector => VECTOR_INDEX_CHECKPOINT,
        }
    }

    /// Whether an earlier `run` set the mark and has not finished, or an index is missing.
    async fn pending(self, pg: &sprintlens_postgres::PgStore) -> Result<bool> {
        Ok(marked(pg, self.mark()).await?
            || match self {
                Deferral::Records => !pg.missing_record_indexes().await?.is_empty(),
                Deferral::Vector => pg.vector_index_missing().await?,
            })
    }

    /// Sets the mark, then drops the indexes: a crash between the two leaves a mark and the
    /// indexes, and the build at the end is a no-op.
    async fn start(self, pg: &sprintlens_postgres::PgStore, admin: &str) -> Result<()> {
        set_mark(pg, self.mark(), true).await?;
        match self {
            Deferral::Records => pg.defer_record_indexes(admin).await,
            Deferral::Vector => pg.defer_vector_index(admin).await,
        }
    }

    /// Builds what is missing (after the named kill point; record indexes in `sessions` at once),
    /// clears the mark and reports it.
    async fn finish(
        self,
        pg: &sprintlens_postgres::PgStore,
        admin: Option<&str>,
        sessions: usize,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<()> {
        let (why, kill, kind, table) = match self {
            Deferral::Records => (
                "an earlier run dropped the target's secondary indexes to load faster; rebuilding them needs the owner role",
                "before-indexes",
                "indexes",
                "records",
            ),
            Deferral::Vector => (
                "an earlier run dropped the target's vector index to load faster; rebuilding it needs the owner role",
                "before-vector-index",
                "vector-index",
                "embeddings",
            ),
        };
        let admin = admin.ok_or_else(|| Error::config("records.admin_url", why))?;
        kill_point(kill);
        let built = match self {
            Deferral::Records => pg.restore_record_indexes_in(admin, sessions).await?.len() as u64,
            Deferral::Vector => {
                pg.restore_vector_index(admin).await?;
                1
            }
        };
        // Also after a run killed between its last build and the reset (nothing left to build).
        pg.resume_autovacuum(admin, table).await?;
        set_mark(pg, self.mark(), false).await?;
        progress(&Progress {
            kind,
            copied: built,
            total: built,
            rate: 0.0,
            eta_secs: 0.0,
            done: true,
        });
        Ok(())
    }
}

/// Whether the deferred-index mark `name` is set.
async fn marked(pg: &sprintlens_postgres::PgStore, name: &str) -> Result<bool> {
    Ok(pg
        .checkpoint(name)
        .await?
        .is_some_and(|(position, _)| position["deferred"] == Value::Bool(true)))
}

async fn set_mark(pg: &sprintlens_postgres::PgStore, name: &str, deferred: bool) -> Result<()> {
    pg.upsert_with_checkpoint(&[], name, &serde_json::json!({ "deferred": deferred }), 0)
        .await?;
    Ok(())
}

/// Copies records from `source` to `target`, resuming from the target's checkpoints. Into a
/// (nearly) empty target with `[records] admin_url` set, the secondary record indexes are dropped
/// for the copy and rebuilt once all record kinds are done (as bulk loaders do; the target serves no
/// reads before the backfill is finished).
pub async fn run(
    source: &Storage,
    target: &Storage,
    options: &RunOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<KindRun>> {
    if options.batch == 0 || options.batch > MAX_BATCH {
        return Err(Error::invalid(
            "batch",
            format!("must be between 1 and {MAX_BATCH}"),
        ));
    }
    if options.parallel == 0 || options.parallel > 16 {
        return Err(Error::invalid("parallel", "must be between 1 and 16"));
    }
    let pg = target_pg(target)?;
    let admin = target.config.records.admin_url.as_ref().map(|u| u.expose());
    let mut deferred = Deferral::Records.pending(pg).await?;
    // Into a (nearly) empty target, batches are COPYed straight into the table (see
    // `PgStore::load_with_checkpoint`) and, with the owner role, the secondary indexes are built once
    // at the end.
    let mut totals = HashMap::new();
    for kind in kinds(&options.kinds) {
        totals.insert(kind, source.records().count(kind, None).await?);
    }
    let checkpoints = record_checkpoints(pg).await?;
    let mut bulk = deferred;
    if !deferred {
        let mut left = 0;
        let mut held = 0;
        for kind in kinds(&options.kinds) {
            left += totals[&kind].saturating_sub(copied_of(&checkpoints, kind));
            held += target.records().count(kind, None).await?;
        }
        bulk = bulk_load(left, held);
        if bulk
            && options.defer_indexes
            && let Some(admin) = admin
        {
            deferred = true;
            Deferral::Records.start(pg, admin).await?;
        }
    }
    let left = std::cell::Cell::new(options.stop_after_batches);
    let mut states = Vec::new();
    let mut streams = Vec::new();
    for kind in kinds(&options.kinds) {
        let lanes = lanes_of(
            source,
            pg,
            &checkpoints,
            kind,
            options.parallel,
            options.batch,
            totals[&kind],
        )
        .await?;
        states.push(KindState {
            kind,
            total: totals[&kind],
            copied: std::cell::Cell::new(copied_of(&checkpoints, kind)),
            rows: std::cell::Cell::new(0),
            lanes_left: std::cell::Cell::new(lanes.len()),
            started: Instant::now(),
        });
        streams.extend(lanes.into_iter().map(|lane| (states.len() - 1, lane)));
    }
    let runs: Vec<(KindRun, bool)> = {
        let progress: std::cell::RefCell<&mut dyn FnMut(&Progress)> =
            std::cell::RefCell::new(&mut progress);
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(&streams)
            .map(|(k, lane)| {
                copy_lane(
                    source,
                    pg,
                    lane,
                    &states[*k],
                    options.batch,
                    &left,
                    &progress,
                    bulk,
                )
            })
            .buffered(options.parallel)
            .try_collect()
            .await?
    };
    let stopped = runs.iter().any(|(_, stopped)| *stopped);
    // One report per kind, over its lanes.
    let mut reports: Vec<KindRun> = states
        .iter()
        .map(|s| KindRun {
            kind: s.kind.as_str(),
            done: true,
            ..Default::default()
        })
        .collect();
    for ((k, _), (run, _)) in streams.iter().zip(&runs) {
        let r = &mut reports[*k];
        r.rows += run.rows;
        r.written += run.written;
        r.batches += run.batches;
        r.resumed_at += run.resumed_at;
        r.done &= run.done;
    }
    if stopped {
        return Ok(reports);
    }
    if deferred {
        Deferral::Records
            .finish(pg, admin, options.parallel, &mut progress)
            .await?;
    }
    let mut batches_left = left.get();
    let small = options.batch.min(sprintlens_core::MAX_PAGE);
    // Embeddings into a target on PostgreSQL that holds none: COPY straight in and, with the owner
    // role, the HNSW index dropped for the copy and built once at the end (inserting into the graph
    // row by row costs about ten times the build).
    let mut vdeferred = Deferral::Vector.pending(pg).await?;
    let mut vbulk = vdeferred;
    if !vdeferred && target.vectors().backend() == sprintlens_postgres::BACKEND {
        let (after, _) = load::<sprintlens_core::VectorCursor>(pg, EMBEDDINGS).await?;
        vbulk = matches!(sprintlens_core::VectorIndex::count_all(pg).await, Ok(0))
            && !source.vectors().scan_entries(after, 1).await?.is_empty();
        if vbulk
            && options.defer_indexes
            && let Some(admin) = admin
        {
            vdeferred = true;
            Deferral::Vector.start(pg, admin).await?;
        }
    }
    let (report, stopped) = copy_embeddings(
        source,
        target,
        pg,
        small,
        &mut batches_left,
        &mut progress,
        vbulk,
    )
    .await?;
    reports.push(report);
    if stopped {
        return Ok(reports);
    }
    if vdeferred {
        Deferral::Vector
            .finish(pg, admin, options.parallel, &mut progress)
            .await?;
    }
    if options.events {
        for kind in [EventKind::EvalResult, EventKind::Usage] {
            let (report, stopped) = copy_events(
                source,
                target,
                pg,
                kind,
                options.batch.min(sprintlens_core::analytics::MAX_SCAN_PAGE),
                &mut batches_left,
                &mut progress,
            )
            .await?;
            reports.push(report);
            if stopped {
                return Ok(reports);
            }
        }
    }
    Ok(reports)
}

/// The XXH3-128 of the canonical encoding of a record, embedding or event ([`crate::canon`]): one
/// byte string per meaning, because every type has a fixed field order, every free-form JSON object
/// is a sorted map (serde_json without `preserve_order`; checked by a test), times are microseconds
/// in UTC and numbers are their parsed values. A 128-bit hash made to tell accidental differences
/// apart (not a cryptographic one: `verify` guards against lost or altered rows, not an adversary
/// crafting collisions), at a few percent of SHA-256's cost.
pub fn fingerprint<T: Serialize>(item: &T) -> Result<[u8; 16]> {
    thread_local! {
        // One buffer a thread: no allocation per row.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        crate::canon::encode(item, buf).map_err(|e| Error::backend("migrate", "encode", e))?;
        Ok(xxhash_rust::xxh3::xxh3_128(buf).to_le_bytes())
    })
}

/// Buckets of a verify's first pass: a row's bucket is a hash of its key, and a bucket's checksum is
/// the sum of its rows' fingerprints (order-free), with its row count.
const VERIFY_BUCKETS: usize = 4096;

/// Rows per side whose fingerprints one narrowing pass keeps in memory (about 100 MB a side): the
/// differing buckets are compared row by row in as many passes as their rows need.
const VERIFY_PASS_ROWS: u64 = 2_000_000;

/// Lanes a side's records are read in at once (see [`Side::cuts`]).
const VERIFY_LANES: usize = 4;

/// A page of a side's stream.
type Page<T> = futures::future::BoxFuture<'static, Result<Vec<T>>>;

/// One side of a comparison: `scopes` keyset streams (workspaces, or one for all), each read page by
/// page (of `page` items; a shorter one ends the stream) from a cursor, and each cut by `cuts` into
/// lanes read at once.
struct Side<T, C> {
    scopes: usize,
    page: usize,
    read: Arc<dyn Fn(usize, Option<C>) -> Page<T> + Send + Sync>,
    /// Keyset positions that cut every scope into `cuts.len() + 1` lanes, each read as a stream
    /// of its own (lane `i` holds the items after cut `i - 1` up to and including cut `i`), so a
    /// backend's reads and decoding run on several connections and cores at once. The same cuts
    /// serve both sides: any positions partition any keyset, whatever rows it holds.
    cuts: Arc<Vec<C>>,
}

impl<T, C> Clone for Side<T, C> {
    fn clone(&self) -> Self {
        Side {
            scopes: self.scopes,
            page: self.page,
            read: self.read.clone(),
            cuts: self.cuts.clone(),
        }
    }
}

/// How a stream's items are keyed, ordered and named.
struct Keys<T, K, C> {
    key: fn(&T) -> K,
    cursor: fn(&T) -> C,
    id: fn(&K) -> Option<RecordId>,
}

impl<T, K, C> Clone for Keys<T, K, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, K, C> Copy for Keys<T, K, C> {}

fn bucket_of<K: std::hash::Hash>(key: &K) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // SipHash with fixed keys: the same bucket for the same key on both sides.
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % VERIFY_BUCKETS
}

/// A lane's page read in a task of its own, tagged with its lane.
async fn lane_page<T: Send + 'static>(
    lane: usize,
    page: tokio::task::JoinHandle<Result<Vec<T>>>,
) -> (usize, Result<Vec<T>>) {
    let page = page
        .await
        .map_err(|e| Error::backend("migrate", "verify", e))
        .and_then(|p| p);
    (lane, page)
}

impl<T: Send + 'static, C: Ord + Clone + Send + Sync + 'static> Side<T, C> {
    /// Visits every item once, page by page of the port's largest page: every lane of a scope is
    /// read at once, each with its next page read while this one is visited.
    async fn each(
        &self,
        cursor: fn(&T) -> C,
        mut visit: impl FnMut(&T) -> Result<()>,
    ) -> Result<()> {
        use futures::StreamExt;
        for scope in 0..self.scopes {
            let starts = std::iter::once(None).chain(self.cuts.iter().cloned().map(Some));
            let mut reading = futures::stream::FuturesUnordered::new();
            for (lane, after) in starts.enumerate() {
                reading.push(lane_page(lane, tokio::spawn((self.read)(scope, after))));
            }
            while let Some((lane, page)) = reading.next().await {
                let page = page?;
                kill_point("during-verify");
                // Lane `lane` ends at (and includes) cut `lane`; the last lane has no end.
                let inside = match self.cuts.get(lane) {
                    Some(end) => page.partition_point(|item| cursor(item) <= *end),
                    None => page.len(),
                };
                if page.len() >= self.page && inside == page.len() {
                    let after = page.last().map(cursor);
                    reading.push(lane_page(lane, tokio::spawn((self.read)(scope, after))));
                }
                for item in &page[..inside] {
                    visit(item)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs `work` on both sides at once, each in a task of its own (so their hashing runs on two
/// threads).
async fn both<T, C, O, F, Fut>(a: &Side<T, C>, b: &Side<T, C>, work: F) -> Result<(O, O)>
where
    F: Fn(Side<T, C>) -> Fut,
    Fut: std::future::Future<Output = Result<O>> + Send + 'static,
    O: Send + 'static,
{
    let (x, y) = futures::join!(tokio::spawn(work(a.clone())), tokio::spawn(work(b.clone())));
    let join = |r: std::result::Result<Result<O>, tokio::task::JoinError>| {
        r.map_err(|e| Error::backend("migrate", "verify", e))?
    };
    Ok((join(x)?, join(y)?))
}

/// The smallest `SAMPLE` keys of one kind of difference, and how many there were.
struct Found<K> {
    keys: std::collections::BTreeSet<K>,
    count: u64,
}

impl<K: Ord> Found<K> {
    fn new() -> Self {
        Found {
            keys: Default::default(),
            count: 0,
        }
    }
    fn add(&mut self, key: K) {
        self.count += 1;
        self.keys.insert(key);
        if self.keys.len() > SAMPLE {
            self.keys.pop_last();
        }
    }
    fn ids(&self, id: fn(&K) -> Option<RecordId>) -> Vec<RecordId> {
        self.keys.iter().filter_map(id).collect()
    }
}

/// Compares two sides chunk by chunk, narrowing down: a first pass sums each side's fingerprints
/// per key-hash bucket; only buckets whose count or sum differ are read again, row by row, in
/// passes of at most [`VERIFY_PASS_ROWS`] rows a side, to name the keys missing from the target,
/// extra in it, or different. Memory is the buckets plus one pass's rows, not every row.
async fn compare_sides<T, K, C>(
    name: &'static str,
    a: Side<T, C>,
    b: Side<T, C>,
    keys: Keys<T, K, C>,
) -> Result<KindVerify>
where
    T: Serialize + Send + 'static,
    K: Ord + std::hash::Hash + Send + 'static,
    C: Ord + Clone + Send + Sync + 'static,
{
    compare_in_passes(name, a, b, keys, VERIFY_PASS_ROWS).await
}

/// [`compare_sides`] with at most `pass_rows` rows a side held per narrowing pass.
async fn compare_in_passes<T, K, C>(
    name: &'static str,
    a: Side<T, C>,
    b: Side<T, C>,
    keys: Keys<T, K, C>,
    pass_rows: u64,
) -> Result<KindVerify>
where
    T: Serialize + Send + 'static,
    K: Ord + std::hash::Hash + Send + 'static,
    C: Ord + Clone + Send + Sync + 'static,
{
    let ((count_a, sum_a), (count_b, sum_b)) = both(&a, &b, move |side: Side<T, C>| async move {
        let (mut count, mut sum) = (vec![0u64; VERIFY_BUCKETS], vec![0u128; VERIFY_BUCKETS]);
        side.each(keys.cursor, |item| {
            let i = bucket_of(&(keys.key)(item));
            count[i] += 1;
            sum[i] = sum[i].wrapping_add(u128::from_le_bytes(fingerprint(item)?));
            Ok(())
        })
        .await?;
        Ok((count, sum))
    })
    .await?;
    let mut k = KindVerify {
        kind: name,
        source_rows: count_a.iter().sum(),
        target_rows: count_b.iter().sum(),
        ..Default::default()
    };
    // The differing buckets, grouped into passes that hold at most VERIFY_PASS_ROWS a side.
    let mut passes: Vec<Vec<bool>> = Vec::new();
    let mut held = u64::MAX;
    for i in (0..VERIFY_BUCKETS).filter(|&i| count_a[i] != count_b[i] || sum_a[i] != sum_b[i]) {
        let rows = count_a[i].max(count_b[i]);
        if held.saturating_add(rows) > pass_rows {
            passes.push(vec![false; VERIFY_BUCKETS]);
            held = 0;
        }
        held += rows;
        if let Some(pass) = passes.last_mut() {
            pass[i] = true;
        }
    }
    let (mut missing, mut extra, mut different) = (Found::new(), Found::new(), Found::new());
    for pass in passes {
        let pass = Arc::new(pass);
        let (mut x, y) = both(&a, &b, move |side: Side<T, C>| {
            let pass = pass.clone();
            async move {
                let mut held = HashMap::new();
                side.each(keys.cursor, |item| {
                    let key = (keys.key)(item);
                    if pass[bucket_of(&key)] {
                        held.insert(key, fingerprint(item)?);
                    }
                    Ok(())
                })
                .await?;
                Ok(held)
            }
        })
        .await?;
        for (key, fy) in y {
            match x.remove(&key) {
                None => extra.add(key),
                Some(fx) if fx != fy => different.add(key),
                Some(_) => {}
            }
        }
        for key in x.into_keys() {
            missing.add(key);
        }
    }
    (k.missing, k.missing_count) = (missing.ids(keys.id), missing.count);
    (k.extra, k.extra_count) = (extra.ids(keys.id), extra.count);
    (k.different, k.different_count) = (different.ids(keys.id), different.count);
    Ok(k)
}

/// The records of `kind` on one side (of the given workspaces, or all), in keyset order.
fn record_side(
    storage: &Storage,
    kind: RecordKind,
    workspaces: &[WorkspaceId],
    cuts: Arc<Vec<ScanCursor>>,
) -> Side<Record, ScanCursor> {
    let scopes: Vec<Option<WorkspaceId>> = if workspaces.is_empty() {
        vec![None]
    } else {
        workspaces.iter().copied().map(Some).collect()
    };
    let records = storage.records().clone();
    Side {
        scopes: scopes.len(),
        cuts,
        page: sprintlens_core::MAX_PAGE,
        read: Arc::new(move |scope, after| {
            let (records, workspace) = (records.clone(), scopes[scope]);
            Box::pin(async move {
                records
                    .scan(&ScanRequest {
                        kind,
                        workspace,
                        after,
                        limit: sprintlens_core::MAX_PAGE,
                    })
                    .await
            })
        }),
    }
}

/// Compares every record of the selected kinds (and workspaces, or all) on both sides.
pub async fn verify(
    source: &Storage,
    target: &Storage,
    kinds_selected: &[RecordKind],
    workspaces: &[WorkspaceId],
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut report = VerifyReport {
        ok: true,
        ..Default::default()
    };
    let keys = Keys {
        key: |r: &Record| r.id,
        cursor: Record::cursor,
        id: |id: &RecordId| Some(*id),
    };
    for kind in kinds(kinds_selected) {
        // Lanes cut by the source's rows (across workspaces only: `split` takes no workspace).
        let cuts = if workspaces.is_empty() {
            source.records().split(kind, VERIFY_LANES).await?
        } else {
            Vec::new()
        };
        let cuts = Arc::new(cuts);
        report.push(
            compare_sides(
                kind.as_str(),
                record_side(source, kind, workspaces, cuts.clone()),
                record_side(target, kind, workspaces, cuts),
                keys,
            )
            .await?,
        );
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Whether `storage` keeps its vectors at half precision (PostgreSQL `halfvec`, `[vectors] half`).
fn stores_half(storage: &Storage) -> bool {
    storage.config().vectors.half && storage.vectors().backend() == sprintlens_postgres::BACKEND
}

/// Compares every embedding on both sides: vector components exactly, as stored, at the coarser
/// precision of the two (when one side stores `halfvec`, both sides' components are rounded to half
/// precision as it rounds them: that side cannot hold more, so a difference below it is none).
pub async fn verify_embeddings(source: &Storage, target: &Storage) -> Result<KindVerify> {
    let half = stores_half(source) || stores_half(target);
    let side = |s: &Storage| {
        let vectors = s.vectors().clone();
        Side {
            scopes: 1,
            cuts: Arc::default(),
            page: sprintlens_core::MAX_PAGE,
            read: Arc::new(move |_, after| {
                let vectors = vectors.clone();
                Box::pin(async move {
                    let mut page = vectors
                        .scan_entries(after, sprintlens_core::MAX_PAGE)
                        .await?;
                    if half {
                        for e in &mut page {
                            let rounded =
                                sprintlens_postgres::halfvec_rounded(e.embedding.as_slice());
                            // Out of half range (inf): kept as it is, so it shows as different.
                            if let Ok(r) = sprintlens_core::Embedding::new(rounded) {
                                e.embedding = r;
                            }
                        }
                    }
                    Ok(page)
                }) as Page<VectorEntry>
            }),
        }
    };
    let keys = Keys {
        key: |e: &VectorEntry| (e.workspace, e.kind.as_str(), e.id),
        cursor: VectorEntry::cursor,
        id: |key: &(WorkspaceId, &str, RecordId)| Some(key.2),
    };
    compare_sides("embedding", side(source), side(target), keys).await
}

/// Compares both analytics streams on both sides (all workspaces); differences are named by event
/// id (as a record id).
pub async fn verify_events(source: &Storage, target: &Storage) -> Result<Vec<KindVerify>> {
    let mut out = Vec::new();
    // Only events both sides keep: after the later horizon, plus a margin.
    let now = Timestamp::now();
    let since = std::cmp::max(event_horizon(source, now), event_horizon(target, now))
        .map(|t| t.plus(RETENTION_MARGIN));
    let floor = since.map(cursor_before).transpose()?;
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        let side = |s: &Storage| {
            let analytics = s.analytics().clone();
            Side {
                scopes: 1,
                cuts: Arc::default(),
                page: sprintlens_core::MAX_SCAN_PAGE,
                read: Arc::new(move |_, after| {
                    let analytics = analytics.clone();
                    Box::pin(async move {
                        analytics
                            .scan(
                                kind,
                                std::cmp::max(after, floor),
                                sprintlens_core::MAX_SCAN_PAGE,
                            )
                            .await
                    }) as Page<AnalyticsEvent>
                }),
            }
        };
        let keys = Keys {
            key: |e: &AnalyticsEvent| e.id(),
            cursor: event_cursor,
            id: |id: &sprintlens_core::EventId| id.to_string().parse::<RecordId>().ok(),
        };
        let mut k = compare_sides(event_stream(kind), side(source), side(target), keys).await?;
        k.since = since;
        out.push(k);
    }
    Ok(out)
}

/// Records of the selected workspaces (or all); without a workspace filter also every embedding
/// and both analytics streams (those are compared across all workspaces only).
pub async fn verify_all(
    source: &Storage,
    target: &Storage,
    workspaces: &[WorkspaceId],
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut report = verify(source, target, &[], workspaces).await?;
    if workspaces.is_empty() {
        report.push(verify_embeddings(source, target).await?);
        for k in verify_events(source, target).await? {
            report.push(k);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A side over rows held in memory (`(id, value)`, paged by id): the narrowing logic on its
    /// own, with passes small enough to need many.
    fn rows_side(rows: Vec<(RecordId, u32)>) -> Side<(RecordId, u32), RecordId> {
        lanes_side(rows, &[])
    }

    /// [`rows_side`] read in the lanes `cuts` make.
    fn lanes_side(
        mut rows: Vec<(RecordId, u32)>,
        cuts: &[RecordId],
    ) -> Side<(RecordId, u32), RecordId> {
        rows.sort();
        let rows = Arc::new(rows);
        Side {
            scopes: 1,
            cuts: Arc::new(cuts.to_vec()),
            page: sprintlens_core::MAX_PAGE,
            read: Arc::new(move |_, after| {
                let rows = rows.clone();
                Box::pin(async move {
                    let from = after.map_or(0, |id| rows.partition_point(|r| r.0 <= id));
                    let to = (from + sprintlens_core::MAX_PAGE).min(rows.len());
                    Ok(rows[from..to].to_vec())
                })
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn narrowing_passes_name_every_difference_with_bounded_rows_held() {
        let ids: Vec<RecordId> = (0..20_000).map(|_| RecordId::new()).collect();
        let source: Vec<(RecordId, u32)> = ids.iter().map(|id| (*id, 7)).collect();
        let mut target = source.clone();
        target[10].1 = 8; // different
        target[19_999].1 = 9; // different
        let gone = target.remove(500); // missing
        let extra = (RecordId::new(), 7);
        target.push(extra);
        let keys = Keys {
            key: |r: &(RecordId, u32)| r.0,
            cursor: |r: &(RecordId, u32)| r.0,
            id: |id: &RecordId| Some(*id),
        };
        let mut sorted = ids.clone();
        sorted.sort();
        let at = |i: usize| sorted[i];
        // Lanes cut at a changed row, at the row the target lacks, at page ends and past the
        // last row (an empty last lane).
        let lanes: [Vec<RecordId>; 3] = [
            vec![],
            vec![at(10), at(999), at(1_000), at(12_345)],
            vec![
                sorted[sorted.binary_search(&gone.0).unwrap()],
                at(19_998),
                at(19_999),
            ],
        ];
        for (pass_rows, cuts) in [5, 1_000, VERIFY_PASS_ROWS]
            .into_iter()
            .flat_map(|p| lanes.iter().map(move |c| (p, c)))
        {
            let k = compare_in_passes(
                "t",
                lanes_side(source.clone(), cuts),
                lanes_side(target.clone(), cuts),
                keys,
                pass_rows,
            )
            .await
            .unwrap();
            assert_eq!((k.source_rows, k.target_rows), (20_000, 20_000));
            assert_eq!(k.missing, vec![gone.0]);
            assert_eq!(k.extra, vec![extra.0]);
            let mut changed = vec![ids[10], ids[19_999]];
            changed.sort();
            assert_eq!(k.different, changed, "{pass_rows} {cuts:?}");
            assert_eq!(k.differences(), 4);
        }
        // Every row different, in passes of 3,000 rows: counts exact, samples the smallest ids.
        let all: Vec<(RecordId, u32)> = ids.iter().map(|id| (*id, 1)).collect();
        let k = compare_in_passes("t", rows_side(source.clone()), rows_side(all), keys, 3_000)
            .await
            .unwrap();
        assert_eq!(k.different_count, 20_000);
        let mut smallest = ids.clone();
        smallest.sort();
        smallest.truncate(SAMPLE);
        assert_eq!(k.different, smallest);
        // An empty target: every row missing.
        let k = compare_in_passes("t", rows_side(source), rows_side(vec![]), keys, 3_000)
            .await
            .unwrap();
        assert_eq!((k.missing_count, k.target_rows), (20_000, 0));
    }

    #[test]
    fn canonical_encoding_ignores_key_order_only() {
        let enc = |text: &str| fingerprint(&serde_json::from_str::<Value>(text).unwrap()).unwrap();
        let a = enc(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#);
        assert_eq!(a, enc(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#), "key order");
        assert_eq!(
            a,
            enc(r#"{ "b" : 1 , "a" : { "y" : [ 1 , 2 ] , "x" : null } }"#)
        );
        assert_ne!(
            a,
            enc(r#"{"a":{"x":"","y":[1,2]},"b":1}"#),
            "NULL is not the empty string"
        );
        assert_ne!(
            a,
            enc(r#"{"a":{"x":null,"y":[2,1]},"b":1}"#),
            "array order matters"
        );
        assert_ne!(a, enc(r#"{"a":{"x":null,"y":[1,2]},"b":2}"#));
        // The same instant in another zone is the same timestamp once parsed.
        let t1: Timestamp = serde_json::from_str(r#""2026-11-25T01:00:00.000001Z""#).unwrap();
        let t2: Timestamp = serde_json::from_str(r#""2026-11-25T02:00:00.000001+01:00""#).unwrap();
        assert_eq!(fingerprint(&t1).unwrap(), fingerprint(&t2).unwrap());
    }
}
