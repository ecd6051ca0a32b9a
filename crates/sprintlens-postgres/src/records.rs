//! `RecordStore` on PostgreSQL: one `records` table with JSONB bodies, row-level security per
//! workspace, multi-row upserts for small batches and binary COPY into a staging table for large ones.

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use sprintlens_core::record::check_limit;
use sprintlens_core::{
    Error, ListQuery, Page, PageToken, Record, RecordBody, RecordId, RecordKind, RecordStore,
    Result, ScanCursor, ScanRequest, Timestamp, UpsertOutcome, WorkspaceId, async_trait,
    check_split, split_offsets,
};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::{BACKEND, PgStore, classify, copy, from_ts, scoped, set_workspace, ts};

/// Batches larger than this go through binary COPY into a staging table.
pub const COPY_THRESHOLD: usize = 500;

pub(crate) const COLUMNS: &str = "id, workspace, created_at, updated_at, deleted, body";

/// The JSON text of a `jsonb` column (binary format: a version byte, then the text).
fn jsonb_text<'r>(row: &'r PgRow, column: &str) -> Result<&'r [u8]> {
    let raw = row.try_get_raw(column).map_err(|e| classify("decode", e))?;
    let bytes = raw
        .as_bytes()
        .map_err(|e| Error::backend(BACKEND, "decode", e.to_string()))?;
    match bytes.split_first() {
        Some((1, text)) if raw.format() == sqlx::postgres::PgValueFormat::Binary => Ok(text),
        Some((v, _)) if raw.format() == sqlx::postgres::PgValueFormat::Binary => {
            Err(Error::backend(
                BACKEND,
                "decode",
                format!("unsupported JSONB format version {v}"),
            ))
        }
        _ => Ok(bytes),
    }
}

pub(crate) fn decode(row: &PgRow) -> Result<Record> {
    let map = |e: sqlx::Error| classify("decode", e);
    let id: Uuid = row.try_get("id").map_err(map)?;
    let ws: Uuid = row.try_get("workspace").map_err(map)?;
    // Straight from the JSONB text into the typed body (no intermediate tree).
    let body = RecordBody::from_json_slice(jsonb_text(row, "body")?)
        .map_err(|e| Error::backend(BACKEND, "decode", e))?;
    Ok(Record {
        id: RecordId::from_uuid(id)
            .map_err(|e| Error::backend(BACKEND, "decode", e.to_string()))?,
        workspace: WorkspaceId::from_uuid(ws)
            .map_err(|e| Error::backend(BACKEND, "decode", e.to_string()))?,
        created_at: from_ts(row.try_get("created_at").map_err(map)?),
        updated_at: from_ts(row.try_get("updated_at").map_err(map)?),
        deleted: row.try_get("deleted").map_err(map)?,
        body,
    })
}

struct Prepared<'a> {
    record: &'a Record,
    body: String,
    /// The body as a value, for immutable kinds only (the only ones compared with the stored body).
    value: Option<serde_json::Value>,
}

async fn write_group(
    tx: &mut Transaction<'static, Postgres>,
    group: Vec<Prepared<'_>>,
) -> Result<u64> {
    // Lock the rows this batch touches (visible ones: other workspaces' rows are invisible and
    // surface as a row-level-security conflict on insert).
    let ids: Vec<Uuid> = group.iter().map(|p| p.record.id.as_uuid()).collect();
    let existing = sqlx::query(
        "SELECT id, kind::text AS kind, updated_at,
                CASE WHEN kind = ANY($2::record_kind[]) THEN body END AS body
         FROM records WHERE id = ANY($1) FOR UPDATE",
    )
    .bind(&ids)
    .bind(
        RecordKind::ALL
            .iter()
            .filter(|k| k.is_immutable())
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| classify("upsert", e))?;
    let mut stored: HashMap<Uuid, (String, Timestamp, serde_json::Value)> = HashMap::new();
    for row in &existing {
        let id: Uuid = row.try_get("id").map_err(|e| classify("upsert", e))?;
        let kind: String = row.try_get("kind").map_err(|e| classify("upsert", e))?;
        let at = from_ts(
            row.try_get("updated_at")
                .map_err(|e| classify("upsert", e))?,
        );
        // Bodies only of immutable kinds, the only ones compared.
        let body: Option<serde_json::Value> =
            row.try_get("body").map_err(|e| classify("upsert", e))?;
        let body = body.unwrap_or(serde_json::Value::Null);
        stored.insert(id, (kind, at, body));
    }
    let mut todo = Vec::with_capacity(group.len());
    for p in group {
        let r = &p.record;
        if let Some((kind, at, body)) = stored.get(&r.id.as_uuid()) {
            if kind != r.kind().as_str() {
                return Err(Error::conflict(format!(
                    "id {} already holds a {kind}",
                    r.id
                )));
            }
            if r.kind().is_immutable() && Some(body) != p.value.as_ref() {
                return Err(Error::conflict(format!(
                    "{} {} is immutable and differs from the stored one",
                    r.kind(),
                    r.id
                )));
            }
            if *at >= r.updated_at {
                continue;
            }
        }
        todo.push(p);
    }
    if todo.is_empty() {
        return Ok(0);
    }
    let upsert_tail = "ON CONFLICT (id) DO UPDATE SET
            project = excluded.project, parent = excluded.parent, name = excluded.name,
            unique_key = excluded.unique_key, created_at = excluded.created_at,
            updated_at = excluded.updated_at, deleted = excluded.deleted, body = excluded.body
        WHERE excluded.updated_at > records.updated_at
          AND excluded.workspace = records.workspace AND excluded.kind = records.kind
        RETURNING id";
    let written = if todo.len() > COPY_THRESHOLD {
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS records_stage
               (LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        )
        .execute(&mut **tx)
        .await
        .map_err(|e| classify("upsert", e))?;
        let mut buf = BytesMut::with_capacity(todo.len() * 512);
        copy::header(&mut buf);
        for p in &todo {
            let r = &p.record;
            copy::row(&mut buf, &copy::Row::of(r, &p.body));
        }
        copy::trailer(&mut buf);
        copy::send(
            tx,
            &format!(
                "COPY records_stage ({}) FROM STDIN (FORMAT binary)",
                copy::COLUMNS
            ),
            buf,
        )
        .await
        .map_err(|e| classify("upsert", e))?;
        let sql = format!(
            "INSERT INTO records (id, workspace, kind, project, parent, name, unique_key,
                created_at, updated_at, deleted, body)
             SELECT id, workspace, kind, project, parent, name, unique_key, created_at, updated_at,
                deleted, body FROM records_stage {upsert_tail}"
        );
        let n: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| classify("upsert", e))?;
        sqlx::query("TRUNCATE records_stage")
            .execute(&mut **tx)
            .await
            .map_err(|e| classify("upsert", e))?;
        n
    } else {
        let mut ids = Vec::new();
        let mut wss = Vec::new();
        let mut kinds = Vec::new();
        let mut projects: Vec<Option<Uuid>> = Vec::new();
        let mut parents: Vec<Option<Uuid>> = Vec::new();
        let mut names: Vec<Option<String>> = Vec::new();
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut created = Vec::new();
        let mut updated = Vec::new();
        let mut deleted = Vec::new();
        let mut bodies = Vec::new();
        for p in &todo {
            let r = &p.record;
            ids.push(r.id.as_uuid());
            wss.push(r.workspace.as_uuid());
            kinds.push(r.kind().as_str().to_string());
            projects.push(r.body.project().map(|x| x.as_uuid()));
            parents.push(r.body.parent().map(|x| x.as_uuid()));
            names.push(r.body.name().map(str::to_string));
            keys.push(r.body.unique_key());
            created.push(ts(r.created_at));
            updated.push(ts(r.updated_at));
            deleted.push(r.deleted);
            bodies.push(p.body.clone());
        }
        let sql = format!(
            "INSERT INTO records (id, workspace, kind, project, parent, name, unique_key,
                created_at, updated_at, deleted, body)
             SELECT id, ws, kind::record_kind, project, parent, name, ukey, created, updated, deleted,
                body::jsonb
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::timestamptz[], $10::bool[], $11::text[])
                  AS t(id, ws, kind, project, parent, name, ukey, created, updated, deleted, body)
             {upsert_tail}"
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .bind(wss)
            .bind(kinds)
            .bind(projects)
            .bind(parents)
            .bind(names)
            .bind(keys)
            .bind(created)
            .bind(updated)
            .bind(deleted)
            .bind(bodies)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| classify("upsert", e))?
    };
    // An id that was neither written nor is visible here lives in another workspace: the conflict
    // clause saw it, row-level security hides it. That is a conflict, and the batch rolls back.
    if written.len() < todo.len() {
        let done: std::collections::HashSet<Uuid> = written.iter().copied().collect();
        let missing: Vec<Uuid> = todo
            .iter()
            .map(|p| p.record.id.as_uuid())
            .filter(|id| !done.contains(id))
            .collect();
        let visible: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM records WHERE id = ANY($1)")
            .bind(&missing)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| classify("upsert", e))?;
        if let Some(id) = missing.iter().find(|id| !visible.contains(id)) {
            return Err(Error::conflict(format!(
                "id {id} already exists in another workspace"
            )));
        }
    }
    Ok(written.len() as u64)
}

/// Validates `records` and picks one per id, the newest (the first of equals, as a sequential apply
/// would): their indexes, in input order.
fn newest_per_id(records: &[Record]) -> Result<Vec<usize>> {
    for r in records {
        r.validate()?;
    }
    Ok(newest_per_key(records, |r| r.id, |r| r.updated_at))
}

/// The indexes, in input order, of the newest item per `key` (by `at`; the first of equals).
pub(crate) fn newest_per_key<T, K: std::hash::Hash + Eq>(
    items: &[T],
    key: impl Fn(&T) -> K,
    at: impl Fn(&T) -> Timestamp,
) -> Vec<usize> {
    let mut newest: HashMap<K, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        match newest.get(&k) {
            Some(&j) if at(&items[j]) >= at(item) => {}
            _ => {
                newest.insert(k, i);
            }
        }
    }
    let mut keep: Vec<usize> = newest.into_values().collect();
    keep.sort_unstable();
    keep
}

/// Blocks before the heap's end a loaded batch's hint-bit read starts at (see `load_with_checkpoint`).
const HINT_MARGIN_BLOCKS: i64 = 128;

/// The number of blocks of `records`' heap.
async fn heap_blocks(tx: &mut Transaction<'static, Postgres>) -> Result<i64> {
    sqlx::query_scalar("SELECT pg_relation_size('records') / current_setting('block_size')::bigint")
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| classify("load", e))
}

async fn write_checkpoint(
    tx: &mut Transaction<'static, Postgres>,
    name: &str,
    position: &serde_json::Value,
    rows: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sprintlens_checkpoints (name, position, rows, updated_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (name) DO UPDATE
         SET position = excluded.position, rows = excluded.rows, updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .bind(rows as i64)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify("checkpoint", e))?;
    Ok(())
}

impl PgStore {
    /// Upserts `records` and, in the same transaction, records `checkpoint` as the position of the
    /// stream `name` (`sprintlens migrate`): a crash leaves both or neither.
    pub async fn upsert_with_checkpoint(
        &self,
        records: &[Record],
        name: &str,
        checkpoint: &serde_json::Value,
        rows: u64,
    ) -> Result<UpsertOutcome> {
        self.upsert_in(records, Some((name, checkpoint, rows)), None)
            .await
            .map(|(o, _)| o)
    }

    /// Writes several checkpoints `(name, position, rows)` in one transaction: all or none.
    pub async fn set_checkpoints(
        &self,
        checkpoints: &[(String, serde_json::Value, u64)],
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| classify("checkpoint", e))?;
        for (name, position, rows) in checkpoints {
            write_checkpoint(&mut tx, name, position, *rows).await?;
        }
        tx.commit().await.map_err(|e| classify("checkpoint", e))
    }

    /// The checkpoint of stream `name` and the rows it counts, if one was written.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<(serde_json::Value, u64)>> {
        let row: Option<(serde_json::Value, i64)> =
            sqlx::query_as("SELECT position, rows FROM sprintlens_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| classify("checkpoint", e))?;
        Ok(row.map(|(p, n)| (p, n as u64)))
    }

    /// Every checkpoint whose name starts with `prefix`: `(name, position, rows, updated_at)`.
    pub async fn checkpoints(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, serde_json::Value, u64, sprintlens_core::Timestamp)>> {
        let rows: Vec<(
            String,
            serde_json::Value,
            i64,
            chrono::DateTime<chrono::Utc>,
        )> = sqlx::query_as(
            "SELECT name, position, rows, updated_at FROM sprintlens_checkpoints
                 WHERE starts_with(name, $1) ORDER BY name",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("checkpoint", e))?;
        Ok(rows
            .into_iter()
            .map(|(n, p, r, t)| (n, p, r as u64, from_ts(t)))
            .collect())
    }

    /// Removes the checkpoints whose names start with `prefix` (a fresh migration).
    pub async fn clear_checkpoints(&self, prefix: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sprintlens_checkpoints WHERE starts_with(name, $1)")
            .bind(prefix)
            .execute(&self.pool)
            .await
            .map_err(|e| classify("checkpoint", e))?;
        Ok(done.rows_affected())
    }

    /// Loads `records` into a target that does not hold them yet (a backfill), and records
    /// `checkpoint` in the same transaction: one binary COPY straight into `records` through the
    /// operator role (BYPASSRLS; COPY cannot write a table under row-level security), no staging
    /// table, no lookup of stored rows. If any id is already stored (written by dual-write, or by
    /// another workspace), the COPY fails on the primary key, nothing of it stays, and the batch
    /// goes through [`Self::upsert_with_checkpoint`] instead (newest wins, conflicts refused), so
    /// the outcome is the same as an upsert's. Without `operator_url` it is that upsert.
    pub async fn load_with_checkpoint(
        &self,
        records: &[Record],
        name: &str,
        checkpoint: &serde_json::Value,
        rows: u64,
    ) -> Result<UpsertOutcome> {
        let Some(operator) = &self.operator else {
            return self
                .upsert_with_checkpoint(records, name, checkpoint, rows)
                .await;
        };
        let keep = newest_per_id(records)?;
        let mut tx = operator.begin().await.map_err(|e| classify("load", e))?;
        let statement = format!(
            "COPY records ({}) FROM STDIN (FORMAT binary)",
            copy::COLUMNS
        );
        // From a little before the heap's end: a COPY first fills pages the ones before it left
        // part-empty, or extended the heap by and did not use (PostgreSQL extends by up to 64 pages at
        // a time, per backend; two lanes load at once).
        let from = (heap_blocks(&mut tx).await? - HINT_MARGIN_BLOCKS).max(0);
        if copy::load_records(
            &mut tx,
            &statement,
            keep.iter().map(|&i| &records[i]),
            "load",
        )
        .await?
        .is_none()
        {
            drop(tx);
            return self
                .upsert_with_checkpoint(records, name, checkpoint, rows)
                .await;
        }
        let to = heap_blocks(&mut tx).await?;
        write_checkpoint(&mut tx, name, checkpoint, rows).await?;
        tx.commit().await.map_err(|e| classify("load", e))?;
        // Read the pages the batch filled once, now that it is committed: the visibility check sets
        // each row's commit hint bit while the pages are still in memory and newer than the last
        // checkpoint. Left to the first index build after a bulk load, the same work scans the whole
        // heap from disk and, with data checksums on (PostgreSQL 18's default), writes every page
        // to the WAL again as a full-page image. A TID range scan of the batch's blocks only; best
        // effort (the batch and its checkpoint are committed: a failure here only leaves the work
        // to the first reader).
        let _ = sqlx::query(
            "SELECT count(*) FROM records
             WHERE ctid >= ('(' || $1 || ',0)')::tid AND ctid < ('(' || $2 || ',0)')::tid",
        )
        .bind(from)
        .bind(to)
        .execute(operator)
        .await;
        Ok(UpsertOutcome {
            written: keep.len() as u64,
            skipped: (records.len() - keep.len()) as u64,
        })
    }

    pub(crate) async fn upsert_in(
        &self,
        records: &[Record],
        checkpoint: Option<(&str, &serde_json::Value, u64)>,
        log: Option<&[i64]>,
    ) -> Result<(UpsertOutcome, Vec<i64>)> {
        let mut groups: BTreeMap<WorkspaceId, Vec<Prepared<'_>>> = BTreeMap::new();
        for i in newest_per_id(records)? {
            let r = &records[i];
            let body =
                serde_json::to_string(&r.body).map_err(|e| Error::backend(BACKEND, "encode", e))?;
            let value = if r.kind().is_immutable() {
                Some(
                    serde_json::from_str(&body)
                        .map_err(|e| Error::backend(BACKEND, "encode", e))?,
                )
            } else {
                None
            };
            groups.entry(r.workspace).or_default().push(Prepared {
                record: r,
                body,
                value,
            });
        }
        let mut tx = self.pool.begin().await.map_err(|e| classify("upsert", e))?;
        let mut written = 0;
        for (ws, group) in groups {
            set_workspace(&mut tx, ws, "upsert").await?;
            written += write_group(&mut tx, group).await?;
        }
        if let Some((name, position, rows)) = checkpoint {
            write_checkpoint(&mut tx, name, position, rows).await?;
        }
        let seqs = match log {
            Some(acks) => {
                crate::outbox::log(
                    &mut tx,
                    acks,
                    records.iter().map(|r| (r.workspace, r.kind(), r.id)),
                )
                .await?
            }
            None => Vec::new(),
        };
        tx.commit().await.map_err(|e| classify("upsert", e))?;
        Ok((
            UpsertOutcome {
                written,
                skipped: records.len() as u64 - written,
            },
            seqs,
        ))
    }
}

#[async_trait]
impl RecordStore for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        self.upsert_in(records, None, None).await.map(|(o, _)| o)
    }

    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        let mut tx = scoped(self.reader(), workspace, "get").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM records
             WHERE id = $1 AND workspace = $2 AND kind = $3::record_kind AND NOT deleted"
        )))
        .bind(id.as_uuid())
        .bind(workspace.as_uuid())
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| classify("get", e))?;
        tx.commit().await.map_err(|e| classify("get", e))?;
        row.as_ref().map(decode).transpose()
    }

    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        let after = query.validate()?;
        let mut tx = scoped(self.reader(), workspace, "list").await?;
        // Fixed fragments only; every value is a bound parameter.
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {COLUMNS} FROM records WHERE NOT deleted AND workspace = "
        ));
        qb.push_bind(workspace.as_uuid());
        qb.push(" AND kind = ")
            .push_bind(query.kind.as_str())
            .push("::record_kind");
        if let Some(p) = query.project {
            qb.push(" AND project = ").push_bind(p.as_uuid());
        }
        if let Some(p) = query.parent {
            qb.push(" AND parent = ").push_bind(p.as_uuid());
        }
        if let Some(n) = &query.name {
            qb.push(" AND name = ").push_bind(n.clone());
        }
        if let Some(a) = after {
            qb.push(" AND id > ").push_bind(a.as_uuid());
        }
        qb.push(" ORDER BY id LIMIT ")
            .push_bind((query.limit + 1) as i64);
        let rows = qb
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify("list", e))?;
        tx.commit().await.map_err(|e| classify("list", e))?;
        let items = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, query.limit, |r| {
            PageToken(r.id.to_string())
        }))
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        self.delete_in(workspace, kind, id, at, None)
            .await
            .map(|(d, _)| d)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        self.scan_in(request).await
    }

    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        self.count_in(kind, workspace).await
    }

    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        check_split(parts)?;
        let op = self.across_workspaces("split across workspaces without operator_url")?;
        // One snapshot for the count and the cuts.
        let mut tx = op.begin().await.map_err(|e| classify("split", e))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| classify("split", e))?;
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM records WHERE kind = $1::record_kind")
                .bind(kind.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| classify("split", e))?;
        let mut out = Vec::new();
        for offset in split_offsets(rows as u64, parts) {
            let cut: Option<(chrono::DateTime<chrono::Utc>, Uuid)> = sqlx::query_as(
                "SELECT updated_at, id FROM records WHERE kind = $1::record_kind
                 ORDER BY updated_at, id OFFSET $2 LIMIT 1",
            )
            .bind(kind.as_str())
            .bind(offset as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify("split", e))?;
            if let Some((at, id)) = cut {
                out.push(ScanCursor {
                    updated_at: from_ts(at),
                    id: RecordId::from_uuid(id)?,
                });
            }
        }
        tx.commit().await.map_err(|e| classify("split", e))?;
        Ok(out)
    }
}

impl PgStore {
    /// `delete`, plus (when `log` carries the acks to remove) an outbox entry in the same transaction.
    pub(crate) async fn delete_in(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
        log: Option<&[i64]>,
    ) -> Result<(bool, i64)> {
        let mut tx = scoped(&self.pool, workspace, "delete").await?;
        let n = sqlx::query(
            "UPDATE records SET deleted = true, updated_at = $4
             WHERE id = $1 AND workspace = $2 AND kind = $3::record_kind AND NOT deleted
               AND updated_at < $4",
        )
        .bind(id.as_uuid())
        .bind(workspace.as_uuid())
        .bind(kind.as_str())
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("delete", e))?
        .rows_affected();
        let seq = match log {
            Some(acks) => {
                crate::outbox::log(&mut tx, acks, std::iter::once((workspace, kind, id))).await?[0]
            }
            None => 0,
        };
        tx.commit().await.map_err(|e| classify("delete", e))?;
        Ok((n > 0, seq))
    }

    async fn scan_in(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        check_limit(request.limit)?;
        let (after_t, after_id) = match request.after {
            Some(c) => (Some(ts(c.updated_at)), c.id.as_uuid()),
            None => (None, Uuid::nil()),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM records
             WHERE kind = $1::record_kind AND ($2::uuid IS NULL OR workspace = $2)
               AND ($3::timestamptz IS NULL OR (updated_at, id) > ($3, $4))
             ORDER BY updated_at, id LIMIT $5"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(request.kind.as_str())
            .bind(request.workspace.map(|w| w.as_uuid()))
            .bind(after_t)
            .bind(after_id)
            .bind(request.limit as i64);
        let rows = match request.workspace {
            Some(ws) => {
                let mut tx = scoped(self.reader(), ws, "scan").await?;
                let rows = query
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| classify("scan", e))?;
                tx.commit().await.map_err(|e| classify("scan", e))?;
                rows
            }
            None => {
                let op = self.across_workspaces("scan across workspaces without operator_url")?;
                query.fetch_all(op).await.map_err(|e| classify("scan", e))?
            }
        };
        rows.iter().map(decode).collect()
    }

    async fn count_in(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        let query = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM records
             WHERE kind = $1::record_kind AND ($2::uuid IS NULL OR workspace = $2)",
        )
        .bind(kind.as_str())
        .bind(workspace.map(|w| w.as_uuid()));
        let n = match workspace {
            Some(ws) => {
                let mut tx = scoped(self.reader(), ws, "count").await?;
                let n = query
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| classify("count", e))?;
                tx.commit().await.map_err(|e| classify("count", e))?;
                n
            }
            None => {
                let op = self.across_workspaces("count across workspaces without operator_url")?;
                query
                    .fetch_one(op)
                    .await
                    .map_err(|e| classify("count", e))?
            }
        };
        Ok(n as u64)
    }
}
