//! `sprintlens migrate`: backfill records from the configured (source) storage into a target
//! storage, resumably, and verify that both hold the same rows.
//!
//! - `run` reads each record kind in `(updated_at, id)` keyset order (tombstones included, so
//!   deletes migrate too) and writes batches to the target; on PostgreSQL each batch and its
//!   checkpoint commit in one transaction, so a killed run redoes at most the batch in flight and
//!   upserts (newest `updated_at` wins) make that redo harmless. A re-run of a finished migration
//!   writes nothing; rows changed in the source since are picked up (their `updated_at` moved).
//! - `verify` hashes a canonical encoding of every record on both sides (object keys sorted,
//!   numbers as written, times as integer microseconds) and names the ids missing from the
//!   target, extra in it, or different.
//!
//! This first slice moves records; embeddings, analytics events, dual-write modes and rollback are
//! still to come (see the issue).

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use sprintlens_core::analytics::{EventCursor, EventKind};
use sprintlens_core::{
    AnalyticsEvent, EmbeddingKind, Error, EventId, Record, RecordId, RecordKind, Result,
    ScanCursor, ScanRequest, Timestamp, VectorCursor, VectorEntry, WorkspaceId,
};

use crate::Storage;

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch: 10_000,
            kinds: Vec::new(),
            stop_after_batches: None,
            events: true,
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
}

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

const SAMPLE: usize = 100;

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

#[cfg(feature = "postgres")]
fn target_pg(target: &Storage) -> Result<&sprintlens_postgres::PgStore> {
    target.postgres.as_ref().ok_or_else(|| {
        Error::config(
            "records.url",
            "migrate run writes batches and checkpoints in one transaction: the target's records must be on PostgreSQL",
        )
    })
}

#[cfg(not(feature = "postgres"))]
fn target_pg(_target: &Storage) -> Result<&()> {
    Err(Error::config(
        "records.url",
        "migrate run needs the `postgres` feature and a PostgreSQL target",
    ))
}

/// Where a kind stands: the cursor after the last committed batch, rows copied, and done.
#[cfg(feature = "postgres")]
async fn position(
    pg: &sprintlens_postgres::PgStore,
    kind: RecordKind,
) -> Result<(Option<ScanCursor>, u64, bool)> {
    let Some((p, rows)) = pg.checkpoint(&checkpoint_name(kind)).await? else {
        return Ok((None, 0, false));
    };
    let cursor = match (p.get("updated_at"), p.get("id")) {
        (Some(t), Some(id)) if !t.is_null() => Some(ScanCursor {
            updated_at: Timestamp::from_micros(t.as_i64().unwrap_or_default()),
            id: id
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|e: Error| Error::backend("migrate", "checkpoint", e.to_string()))?,
        }),
        _ => None,
    };
    let done = p.get("done").and_then(Value::as_bool).unwrap_or(false);
    Ok((cursor, rows, done))
}

/// Where an event stream stands.
#[cfg(feature = "postgres")]
async fn event_position(
    pg: &sprintlens_postgres::PgStore,
    kind: EventKind,
) -> Result<(Option<EventCursor>, u64)> {
    let Some((p, rows)) = pg.checkpoint(&event_checkpoint(kind)).await? else {
        return Ok((None, 0));
    };
    let cursor = match (p.get("created_at"), p.get("id")) {
        (Some(t), Some(id)) if !t.is_null() => Some(EventCursor {
            created_at: Timestamp::from_micros(t.as_i64().unwrap_or_default()),
            id: id
                .as_str()
                .unwrap_or_default()
                .parse::<EventId>()
                .map_err(|e| Error::backend("migrate", "checkpoint", e.to_string()))?,
        }),
        _ => None,
    };
    Ok((cursor, rows))
}

/// One stream copied in fixed batches after its checkpoint: read a batch, write it to the target,
/// then record the checkpoint in PostgreSQL. The writes are idempotent (newest `updated_at` wins, or
/// stored ids are dropped), so a crash between the two re-sends one batch and changes nothing.
#[cfg(feature = "postgres")]
#[allow(clippy::too_many_arguments)]
async fn copy_stream<T, C, R, RF, W, WF>(
    pg: &sprintlens_postgres::PgStore,
    name: &str,
    label: &'static str,
    (mut cursor, mut copied): (Option<C>, u64),
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
    read: R,
    write: W,
    cursor_of: impl Fn(&T) -> C,
    position_of: impl Fn(Option<C>, bool) -> Value,
) -> Result<(KindRun, bool)>
where
    C: Copy,
    R: Fn(Option<C>) -> RF,
    RF: std::future::Future<Output = Result<Vec<T>>>,
    W: Fn(Vec<T>) -> WF,
    WF: std::future::Future<Output = Result<u64>>,
{
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
        let n = batch.len() as u64;
        let done = batch.len() < batch_size;
        let next = batch.last().map(&cursor_of).or(cursor);
        if n > 0 {
            report.written += write(batch).await?;
        }
        copied += n;
        pg.upsert_with_checkpoint(&[], name, &position_of(next, done), copied)
            .await?;
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

/// Copies one analytics stream in fixed batches after its checkpoint. The events land in the
/// target's analytics first and the checkpoint after (in PostgreSQL): a crash in between re-sends
/// the same batch, which `record` stores once (ids already stored are dropped; ClickHouse inserts
/// also carry a deduplication token).
#[cfg(feature = "postgres")]
async fn copy_events(
    source: &Storage,
    target: &Storage,
    pg: &sprintlens_postgres::PgStore,
    kind: EventKind,
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
) -> Result<(KindRun, bool)> {
    copy_stream(
        pg,
        &event_checkpoint(kind),
        event_stream(kind),
        event_position(pg, kind).await?,
        batch_size,
        batches_left,
        progress,
        |after| source.analytics().scan(kind, after, batch_size),
        |batch: Vec<AnalyticsEvent>| async move { target.analytics().record(&batch).await },
        |e: &AnalyticsEvent| EventCursor {
            created_at: e.created_at(),
            id: e.id(),
        },
        |next: Option<EventCursor>, done| {
            serde_json::json!({
                "created_at": next.map(|c| c.created_at.as_micros()),
                "id": next.map(|c| c.id.to_string()),
                "done": done,
            })
        },
    )
    .await
}

const EMBEDDINGS: &str = "migrate/embeddings";

/// Copies every embedding after the checkpoint (vectors as the source stores them). Upserts keep
/// the newest `updated_at`, so the batch a crash re-sends is harmless.
#[cfg(feature = "postgres")]
async fn copy_embeddings(
    source: &Storage,
    target: &Storage,
    pg: &sprintlens_postgres::PgStore,
    batch_size: usize,
    batches_left: &mut Option<u64>,
    progress: &mut impl FnMut(&Progress),
) -> Result<(KindRun, bool)> {
    let (cursor, copied) = match pg.checkpoint(EMBEDDINGS).await? {
        Some((p, rows)) => {
            let c = match (p.get("updated_at"), p.get("id"), p.get("kind")) {
                (Some(t), Some(id), Some(k)) if !t.is_null() => Some(VectorCursor {
                    updated_at: Timestamp::from_micros(t.as_i64().unwrap_or_default()),
                    id: id
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e: Error| {
                            Error::backend("migrate", "checkpoint", e.to_string())
                        })?,
                    kind: EmbeddingKind::parse(k.as_str().unwrap_or_default())?,
                }),
                _ => None,
            };
            (c, rows)
        }
        None => (None, 0),
    };
    copy_stream(
        pg,
        EMBEDDINGS,
        "embedding",
        (cursor, copied),
        batch_size,
        batches_left,
        progress,
        |after| source.vectors().scan_entries(after, batch_size),
        |batch: Vec<VectorEntry>| async move { target.vectors().upsert(&batch).await },
        VectorEntry::cursor,
        |next: Option<VectorCursor>, done| {
            serde_json::json!({
                "updated_at": next.map(|c| c.updated_at.as_micros()),
                "id": next.map(|c| c.id.to_string()),
                "kind": next.map(|c| c.kind.as_str()),
                "done": done,
            })
        },
    )
    .await
}

/// Every embedding as (workspace, kind, id) → fingerprint of its canonical encoding.
async fn embedding_fingerprints(
    storage: &Storage,
) -> Result<HashMap<(WorkspaceId, &'static str, RecordId), [u8; 16]>> {
    use sha2::Digest;
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let page = storage
            .vectors()
            .scan_entries(after, sprintlens_core::MAX_PAGE)
            .await?;
        for e in &page {
            let v = serde_json::to_value(e).map_err(|e| Error::backend("migrate", "encode", e))?;
            let mut s = String::with_capacity(4096);
            canonical(&v, &mut s);
            let h = sha2::Sha256::digest(s.as_bytes());
            let mut f = [0u8; 16];
            f.copy_from_slice(&h[..16]);
            out.insert((e.workspace, e.kind.as_str(), e.id), f);
        }
        if page.len() < sprintlens_core::MAX_PAGE {
            return Ok(out);
        }
        after = page.last().map(VectorEntry::cursor);
    }
}

/// Compares every embedding on both sides (vector components exactly, as stored).
pub async fn verify_embeddings(source: &Storage, target: &Storage) -> Result<KindVerify> {
    let (a, b) = futures::join!(
        embedding_fingerprints(source),
        embedding_fingerprints(target)
    );
    let (a, b) = (a?, b?);
    let mut k = KindVerify {
        kind: "embedding",
        source_rows: a.len() as u64,
        target_rows: b.len() as u64,
        ..Default::default()
    };
    let mut keys: Vec<&(WorkspaceId, &'static str, RecordId)> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (list, count) = match (a.get(key), b.get(key)) {
            (Some(_), None) => (&mut k.missing, &mut k.missing_count),
            (None, Some(_)) => (&mut k.extra, &mut k.extra_count),
            (Some(x), Some(y)) if x != y => (&mut k.different, &mut k.different_count),
            _ => continue,
        };
        *count += 1;
        if list.len() < SAMPLE {
            list.push(key.2);
        }
    }
    Ok(k)
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
    #[cfg(feature = "postgres")]
    {
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
    #[cfg(not(feature = "postgres"))]
    {
        let _ = pg;
        Ok(Vec::new())
    }
}

/// Records a verification's outcome in the target (shown by `status`).
pub async fn record_verify(target: &Storage, report: &VerifyReport) -> Result<()> {
    let pg = target_pg(target)?;
    #[cfg(feature = "postgres")]
    {
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
    }
    #[cfg(not(feature = "postgres"))]
    let _ = (pg, report);
    Ok(())
}

/// Rows per kind in the source, and what the target's checkpoints say is copied.
pub async fn plan(source: &Storage, target: &Storage) -> Result<Vec<KindPlan>> {
    let pg = target_pg(target)?;
    let mut out = Vec::new();
    for kind in RecordKind::ALL {
        #[cfg(feature = "postgres")]
        let (_, copied, _) = position(pg, *kind).await?;
        #[cfg(not(feature = "postgres"))]
        let copied = {
            let _ = pg;
            0
        };
        out.push(KindPlan {
            kind: kind.as_str(),
            source_rows: source.records().count(*kind, None).await?,
            copied,
        });
    }
    Ok(out)
}

/// Copies records from `source` to `target`, resuming from the target's checkpoints.
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
    let pg = target_pg(target)?;
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (pg, source, &mut progress);
        Err(Error::unsupported("migrate", "run without PostgreSQL"))
    }
    #[cfg(feature = "postgres")]
    {
        let mut reports = Vec::new();
        let mut batches_left = options.stop_after_batches;
        for kind in kinds(&options.kinds) {
            let total = source.records().count(kind, None).await?;
            let (mut cursor, mut copied, _) = position(pg, kind).await?;
            let mut report = KindRun {
                kind: kind.as_str(),
                resumed_at: copied,
                ..Default::default()
            };
            let started = Instant::now();
            let mut prefetched: Option<Vec<Record>> = None;
            loop {
                if batches_left == Some(0) {
                    reports.push(report);
                    return Ok(reports);
                }
                let batch = match prefetched.take() {
                    Some(b) => b,
                    None => read_records(source, kind, cursor, options.batch).await?,
                };
                let done = batch.len() < options.batch;
                let next = batch.last().map(Record::cursor).or(cursor);
                let position = serde_json::json!({
                    "updated_at": next.map(|c| c.updated_at.as_micros()),
                    "id": next.map(|c| c.id.to_string()),
                    "done": done,
                });
                copied += batch.len() as u64;
                // Write this batch while the next one is read from the source.
                let name = checkpoint_name(kind);
                let write = pg.upsert_with_checkpoint(&batch, &name, &position, copied);
                let outcome = if done || batches_left == Some(1) {
                    write.await?
                } else {
                    let (written, read) =
                        futures::join!(write, read_records(source, kind, next, options.batch));
                    prefetched = Some(read?);
                    written?
                };
                report.rows += batch.len() as u64;
                report.written += outcome.written;
                report.batches += 1;
                cursor = next;
                if let Some(n) = &mut batches_left {
                    *n -= 1;
                }
                let rate = report.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
                progress(&Progress {
                    kind: kind.as_str(),
                    copied,
                    total,
                    rate,
                    eta_secs: if rate > 0.0 {
                        total.saturating_sub(copied) as f64 / rate
                    } else {
                        0.0
                    },
                    done,
                });
                if done {
                    report.done = true;
                    break;
                }
            }
            reports.push(report);
        }
        let small = options.batch.min(sprintlens_core::MAX_PAGE);
        let (report, stopped) =
            copy_embeddings(source, target, pg, small, &mut batches_left, &mut progress).await?;
        reports.push(report);
        if stopped {
            return Ok(reports);
        }
        if options.events {
            for kind in [EventKind::EvalResult, EventKind::Usage] {
                let (report, stopped) = copy_events(
                    source,
                    target,
                    pg,
                    kind,
                    small,
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
}

/// Writes `v` with object keys sorted: one encoding per meaning.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The SHA-256 (first 16 bytes) of a record's canonical encoding.
pub fn fingerprint(r: &Record) -> Result<[u8; 16]> {
    use sha2::Digest;
    let v = serde_json::to_value(r).map_err(|e| Error::backend("migrate", "encode", e))?;
    let mut s = String::with_capacity(256);
    canonical(&v, &mut s);
    let h = sha2::Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    Ok(out)
}

/// Every record of `kind` (of the given workspaces, or all) as id → fingerprint.
async fn fingerprints(
    storage: &Storage,
    kind: RecordKind,
    workspaces: &[WorkspaceId],
) -> Result<HashMap<RecordId, [u8; 16]>> {
    let mut out = HashMap::new();
    let scopes: Vec<Option<WorkspaceId>> = if workspaces.is_empty() {
        vec![None]
    } else {
        workspaces.iter().copied().map(Some).collect()
    };
    for workspace in scopes {
        let mut after = None;
        loop {
            let page = storage
                .records()
                .scan(&ScanRequest {
                    kind,
                    workspace,
                    after,
                    limit: sprintlens_core::MAX_PAGE,
                })
                .await?;
            for r in &page {
                out.insert(r.id, fingerprint(r)?);
            }
            if page.len() < sprintlens_core::MAX_PAGE {
                break;
            }
            after = page.last().map(Record::cursor);
        }
    }
    Ok(out)
}

/// Every event of one stream as id → fingerprint.
async fn event_fingerprints(
    storage: &Storage,
    kind: EventKind,
) -> Result<HashMap<EventId, [u8; 16]>> {
    use sha2::Digest;
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let page = storage
            .analytics()
            .scan(kind, after, sprintlens_core::MAX_PAGE)
            .await?;
        for e in &page {
            let v = serde_json::to_value(e).map_err(|e| Error::backend("migrate", "encode", e))?;
            let mut s = String::with_capacity(256);
            canonical(&v, &mut s);
            let h = sha2::Sha256::digest(s.as_bytes());
            let mut f = [0u8; 16];
            f.copy_from_slice(&h[..16]);
            out.insert(e.id(), f);
        }
        if page.len() < sprintlens_core::MAX_PAGE {
            return Ok(out);
        }
        after = page.last().map(|e| EventCursor {
            created_at: e.created_at(),
            id: e.id(),
        });
    }
}

/// Compares both analytics streams on both sides (all workspaces); differences are reported by
/// event id (as a record id would be).
pub async fn verify_events(source: &Storage, target: &Storage) -> Result<Vec<KindVerify>> {
    let mut out = Vec::new();
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        let (a, b) = futures::join!(
            event_fingerprints(source, kind),
            event_fingerprints(target, kind)
        );
        let (a, b) = (a?, b?);
        let mut k = KindVerify {
            kind: event_stream(kind),
            source_rows: a.len() as u64,
            target_rows: b.len() as u64,
            ..Default::default()
        };
        let mut ids: Vec<&EventId> = a.keys().chain(b.keys()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let as_record = || id.to_string().parse::<RecordId>();
            let (list, count) = match (a.get(id), b.get(id)) {
                (Some(_), None) => (&mut k.missing, &mut k.missing_count),
                (None, Some(_)) => (&mut k.extra, &mut k.extra_count),
                (Some(x), Some(y)) if x != y => (&mut k.different, &mut k.different_count),
                _ => continue,
            };
            *count += 1;
            if list.len() < SAMPLE
                && let Ok(r) = as_record()
            {
                list.push(r);
            }
        }
        out.push(k);
    }
    Ok(out)
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
    for kind in kinds(kinds_selected) {
        // Both sides at once: the source is read on SQLite's threads while the target answers.
        let (a, b) = futures::join!(
            fingerprints(source, kind, workspaces),
            fingerprints(target, kind, workspaces)
        );
        let (a, b) = (a?, b?);
        let mut k = KindVerify {
            kind: kind.as_str(),
            source_rows: a.len() as u64,
            target_rows: b.len() as u64,
            ..Default::default()
        };
        let mut ids: Vec<&RecordId> = a.keys().chain(b.keys()).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            match (a.get(id), b.get(id)) {
                (Some(_), None) => {
                    k.missing_count += 1;
                    if k.missing.len() < SAMPLE {
                        k.missing.push(*id);
                    }
                }
                (None, Some(_)) => {
                    k.extra_count += 1;
                    if k.extra.len() < SAMPLE {
                        k.extra.push(*id);
                    }
                }
                (Some(x), Some(y)) if x != y => {
                    k.different_count += 1;
                    if k.different.len() < SAMPLE {
                        k.different.push(*id);
                    }
                }
                _ => {}
            }
        }
        report.ok &= k.missing_count + k.extra_count + k.different_count == 0;
        report.kinds.push(k);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_ignores_key_order_only() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":"","y":[1,2]},"b":1}"#).unwrap();
        let d: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[2,1]},"b":1}"#).unwrap();
        let enc = |v: &Value| {
            let mut s = String::new();
            canonical(v, &mut s);
            s
        };
        assert_eq!(enc(&a), enc(&b));
        assert_ne!(enc(&a), enc(&c), "NULL is not the empty string");
        assert_ne!(enc(&a), enc(&d), "array order matters");
    }
}
