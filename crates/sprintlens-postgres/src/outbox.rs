//! `OutboxStore` on PostgreSQL: `sprintlens_outbox`, written in the same transaction as the records
//! it names. Seqs come from a sequence, so a later seq can commit first: consumers read what is
//! pending, never "after seq N".

use std::collections::{BTreeMap, HashMap};

use sprintlens_core::record::check_limit;
use sprintlens_core::{
    Error, OutboxEntry, OutboxStats, OutboxStore, ParkedEntry, PendingWrite, Record, RecordId,
    RecordKind, Result, Timestamp, UpsertOutcome, WorkspaceId, async_trait,
};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::records::{COLUMNS, decode};
use crate::{BACKEND, PgStore, classify, from_ts, scoped};

/// The logs kept here: record writes and embedding writes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Log {
    Records,
    Vectors,
}

impl Log {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Log::Records => "sprintlens_outbox",
            Log::Vectors => "sprintlens_vector_outbox",
        }
    }
}

/// Removes the delivered entries `acks` and appends one entry per `(workspace, kind, id)` inside
/// `tx`; returns the new entries' seqs.
pub(crate) async fn log(
    tx: &mut Transaction<'static, Postgres>,
    acks: &[i64],
    keys: impl Iterator<Item = (WorkspaceId, RecordKind, RecordId)>,
) -> Result<Vec<i64>> {
    log_in(
        tx,
        Log::Records,
        acks,
        keys.map(|(w, k, i)| (w.as_uuid(), k.as_str(), i.as_uuid())),
    )
    .await
}

/// [`log`] into `log`'s table, keys as `(workspace, kind, id)`.
pub(crate) async fn log_in(
    tx: &mut Transaction<'static, Postgres>,
    log: Log,
    acks: &[i64],
    keys: impl Iterator<Item = (Uuid, &'static str, Uuid)>,
) -> Result<Vec<i64>> {
    let table = log.table();
    if !acks.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE seq = ANY($1) AND parked_at IS NULL"
        )))
        .bind(acks)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify("outbox_ack", e))?;
    }
    let (mut wss, mut kinds, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (w, k, i) in keys {
        wss.push(w);
        kinds.push(k);
        ids.push(i);
    }
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (workspace, kind, id)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) RETURNING seq"
    )))
    .bind(wss)
    .bind(kinds)
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| classify("outbox", e))
}

impl PgStore {
    /// Removes delivered (not parked) entries of `log`.
    pub(crate) async fn ack(&self, log: Log, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE seq = ANY($1) AND parked_at IS NULL",
            log.table()
        )))
        .bind(seqs)
        .execute(&self.pool)
        .await
        .map_err(|e| classify("outbox_ack", e))?;
        Ok(())
    }

    /// Sets an entry of `log` aside with its delivery error.
    pub(crate) async fn park(&self, log: Log, seq: i64, error: &str) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET parked_at = clock_timestamp(), error = $2 WHERE seq = $1",
            log.table()
        )))
        .bind(seq)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(|e| classify("outbox_park", e))?;
        Ok(())
    }

    /// Returns every parked entry of `log` to the pending set; returns how many.
    pub(crate) async fn unpark(&self, log: Log) -> Result<u64> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET parked_at = NULL, error = NULL WHERE parked_at IS NOT NULL",
            log.table()
        )))
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| classify("outbox_unpark", e))
    }

    /// Pending and parked counts of `log`, and when its oldest pending entry was logged.
    pub(crate) async fn log_stats(&self, log: Log) -> Result<OutboxStats> {
        let (pending, parked, oldest): (i64, i64, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL),
                        count(*) FILTER (WHERE parked_at IS NOT NULL),
                        min(logged_at) FILTER (WHERE parked_at IS NULL)
                 FROM {}",
                log.table()
            )))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| classify("outbox", e))?;
        Ok(OutboxStats {
            pending: pending as u64,
            parked: parked as u64,
            oldest_pending: oldest.map(from_ts),
        })
    }
}

fn entry(row: &sqlx::postgres::PgRow) -> Result<OutboxEntry> {
    let map = |e: sqlx::Error| classify("outbox", e);
    let bad = |e: Error| Error::backend(BACKEND, "outbox", e.to_string());
    let kind: String = row.try_get("kind").map_err(map)?;
    Ok(OutboxEntry {
        seq: row.try_get("seq").map_err(map)?,
        workspace: WorkspaceId::from_uuid(row.try_get("workspace").map_err(map)?).map_err(bad)?,
        kind: kind.parse().map_err(bad)?,
        id: RecordId::from_uuid(row.try_get("id").map_err(map)?).map_err(bad)?,
        logged_at: from_ts(row.try_get("logged_at").map_err(map)?),
    })
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn upsert_logged(
        &self,
        records: &[Record],
        acks: &[i64],
    ) -> Result<(UpsertOutcome, Vec<i64>)> {
        self.upsert_in(records, None, Some(acks)).await
    }

    async fn delete_logged(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
        acks: &[i64],
    ) -> Result<(bool, i64)> {
        self.delete_in(workspace, kind, id, at, Some(acks)).await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingWrite>> {
        check_limit(limit)?;
        // Entries first, records after (on the primary, never a replica): every record read is at
        // least as new as the write its entry logged.
        let rows = sqlx::query(
            "SELECT seq, workspace, kind, id, logged_at FROM sprintlens_outbox
             WHERE parked_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("outbox", e))?;
        let entries = rows.iter().map(entry).collect::<Result<Vec<_>>>()?;
        let mut by_ws: BTreeMap<WorkspaceId, Vec<Uuid>> = BTreeMap::new();
        for e in &entries {
            by_ws.entry(e.workspace).or_default().push(e.id.as_uuid());
        }
        let mut records: HashMap<RecordId, Record> = HashMap::new();
        for (ws, ids) in by_ws {
            let mut tx = scoped(&self.pool, ws, "outbox").await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM records WHERE id = ANY($1)"
            )))
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify("outbox", e))?;
            tx.commit().await.map_err(|e| classify("outbox", e))?;
            for row in &rows {
                let r = decode(row)?;
                records.insert(r.id, r);
            }
        }
        Ok(entries
            .into_iter()
            .map(|entry| PendingWrite {
                record: records
                    .get(&entry.id)
                    .filter(|r| r.kind() == entry.kind)
                    .cloned(),
                entry,
            })
            .collect())
    }

    async fn outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        self.ack(Log::Records, seqs).await
    }

    async fn outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        self.park(Log::Records, seq, error).await
    }

    async fn outbox_unpark(&self) -> Result<u64> {
        self.unpark(Log::Records).await
    }

    async fn outbox_parked(&self, limit: usize) -> Result<Vec<ParkedEntry>> {
        check_limit(limit)?;
        let rows = sqlx::query(
            "SELECT seq, workspace, kind, id, logged_at, error FROM sprintlens_outbox
             WHERE parked_at IS NOT NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("outbox", e))?;
        rows.iter()
            .map(|row| {
                Ok(ParkedEntry {
                    entry: entry(row)?,
                    error: row
                        .try_get::<Option<String>, _>("error")
                        .map_err(|e| classify("outbox", e))?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.log_stats(Log::Records).await
    }
}
