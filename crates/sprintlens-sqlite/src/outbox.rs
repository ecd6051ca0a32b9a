//! `OutboxStore` on SQLite: the `outbox` table, written in the same `BEGIN IMMEDIATE` transaction as
//! the records it names.

use rusqlite::{OptionalExtension, params};
use sprintlens_core::analytics::{EventKind, validate_batch};
use sprintlens_core::record::check_limit;
use sprintlens_core::{
    AnalyticsEvent, Error, EventOutboxStore, OutboxEntry, OutboxStats, OutboxStore, ParkedEntry,
    PendingEvent, PendingWrite, Record, RecordId, RecordKind, Result, Timestamp, UpsertOutcome,
    WorkspaceId, async_trait,
};

use crate::analytics::{eval_row, record_tx, usage_row};
use crate::records::{decode_at, delete_tx, prepare, upsert_tx};
use crate::{BACKEND, SqliteStore, classify, uuid_text};

fn log(
    tx: &rusqlite::Transaction<'_>,
    workspace: WorkspaceId,
    kind: RecordKind,
    id: RecordId,
    now: i64,
) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO outbox (workspace, kind, id, logged_at) VALUES (?1, ?2, ?3, ?4) RETURNING seq",
    )
    .and_then(|mut st| {
        st.query_row(
            params![uuid_text(workspace), kind.as_str(), uuid_text(id), now],
            |r| r.get(0),
        )
    })
    .map_err(|e| classify("outbox", e))
}

/// The logs kept here: record writes, analytics events, embedding writes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Log {
    Records,
    Events,
    Vectors,
}

impl Log {
    fn table(self) -> &'static str {
        match self {
            Log::Records => "outbox",
            Log::Events => "event_outbox",
            Log::Vectors => "vector_outbox",
        }
    }
}

/// Removes delivered (not parked) entries of `log` inside an open write transaction.
pub(crate) fn ack_tx(tx: &rusqlite::Transaction<'_>, log: Log, seqs: &[i64]) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut st = tx
        .prepare_cached(&format!(
            "DELETE FROM {} WHERE seq = ?1 AND parked_at IS NULL",
            log.table()
        ))
        .map_err(|e| classify("outbox_ack", e))?;
    for s in seqs {
        st.execute([s]).map_err(|e| classify("outbox_ack", e))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Removes delivered entries of `log` (not synced: a lost ack re-delivers the entry, which is
    /// idempotent).
    pub(crate) async fn ack(&self, log: Log, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs = seqs.to_vec();
        self.write_with("outbox_ack", false, move |tx| ack_tx(tx, log, &seqs))
            .await
    }

    /// Sets an entry of `log` aside with its delivery error.
    pub(crate) async fn park(&self, log: Log, seq: i64, error: &str) -> Result<()> {
        let error = error.to_string();
        self.write("outbox_park", move |tx| {
            tx.execute(
                &format!(
                    "UPDATE {} SET parked_at = ?2, error = ?3 WHERE seq = ?1",
                    log.table()
                ),
                params![seq, Timestamp::now().as_micros(), error],
            )
            .map_err(|e| classify("outbox_park", e))?;
            Ok(())
        })
        .await
    }

    /// Returns every parked entry of `log` to the pending set; returns how many.
    pub(crate) async fn unpark(&self, log: Log) -> Result<u64> {
        self.write("outbox_unpark", move |tx| {
            tx.execute(
                &format!(
                    "UPDATE {} SET parked_at = NULL, error = NULL WHERE parked_at IS NOT NULL",
                    log.table()
                ),
                [],
            )
            .map(|n| n as u64)
            .map_err(|e| classify("outbox_unpark", e))
        })
        .await
    }

    /// Pending and parked counts of `log`, and when its oldest pending entry was logged.
    pub(crate) async fn log_stats(&self, log: Log) -> Result<OutboxStats> {
        self.read("outbox", move |c| {
            let table = log.table();
            let (pending, parked) = c.query_row(
                &format!(
                    "SELECT count(*) FILTER (WHERE parked_at IS NULL),
                            count(*) FILTER (WHERE parked_at IS NOT NULL) FROM {table}"
                ),
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            let oldest: Option<i64> = c
                .query_row(
                    &format!(
                        "SELECT logged_at FROM {table} WHERE parked_at IS NULL ORDER BY seq LIMIT 1"
                    ),
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(OutboxStats {
                pending: pending as u64,
                parked: parked as u64,
                oldest_pending: oldest.map(Timestamp::from_micros),
            })
        })
        .await
    }
}

struct RawEntry {
    seq: i64,
    workspace: String,
    kind: String,
    id: String,
    logged_at: i64,
}

impl RawEntry {
    fn decode(self) -> Result<OutboxEntry> {
        let bad = |e: Error| Error::backend(BACKEND, "outbox", e.to_string());
        Ok(OutboxEntry {
            seq: self.seq,
            workspace: self.workspace.parse().map_err(bad)?,
            kind: self.kind.parse().map_err(bad)?,
            id: self.id.parse().map_err(bad)?,
            logged_at: Timestamp::from_micros(self.logged_at),
        })
    }
}

fn raw_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        seq: row.get(0)?,
        workspace: row.get(1)?,
        kind: row.get(2)?,
        id: row.get(3)?,
        logged_at: row.get(4)?,
    })
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn upsert_logged(
        &self,
        records: &[Record],
        acks: &[i64],
    ) -> Result<(UpsertOutcome, Vec<i64>)> {
        let prepared = prepare(records)?;
        let acks = acks.to_vec();
        self.write("upsert", move |tx| {
            ack_tx(tx, Log::Records, &acks)?;
            let outcome = upsert_tx(tx, &prepared)?;
            let now = Timestamp::now().as_micros();
            let seqs = prepared
                .iter()
                .map(|(r, _)| log(tx, r.workspace, r.kind(), r.id, now))
                .collect::<Result<Vec<_>>>()?;
            Ok((outcome, seqs))
        })
        .await
    }

    async fn delete_logged(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
        acks: &[i64],
    ) -> Result<(bool, i64)> {
        let acks = acks.to_vec();
        self.write("delete", move |tx| {
            ack_tx(tx, Log::Records, &acks)?;
            let deleted = delete_tx(tx, workspace, kind, id, at)?;
            let seq = log(tx, workspace, kind, id, Timestamp::now().as_micros())?;
            Ok((deleted, seq))
        })
        .await
    }

    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingWrite>> {
        check_limit(limit)?;
        // One read transaction: the records are read in the same snapshot as their entries.
        self.read_with("outbox", move |c| {
            let sqlite = |e| classify("outbox", e);
            let mut st = c
                .prepare_cached(
                    "SELECT o.seq, o.workspace, o.kind, o.id, o.logged_at,
                            r.id, r.workspace, r.created_at, r.updated_at, r.deleted, r.body
                     FROM outbox o LEFT JOIN records r ON r.id = o.id
                     WHERE o.parked_at IS NULL ORDER BY o.seq LIMIT ?1",
                )
                .map_err(sqlite)?;
            let mut rows = st.query([limit as i64]).map_err(sqlite)?;
            let mut pending = Vec::new();
            while let Some(row) = rows.next().map_err(sqlite)? {
                let id: Option<String> = row.get(5).map_err(sqlite)?;
                pending.push(PendingWrite {
                    entry: raw_entry(row).map_err(sqlite)?.decode()?,
                    record: match id {
                        Some(_) => Some(decode_at(row, 5, "outbox")?),
                        None => None,
                    },
                });
            }
            Ok(pending)
        })
        .await
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
        let rows = self
            .read("outbox", move |c| {
                let mut st = c.prepare_cached(
                    "SELECT seq, workspace, kind, id, logged_at, error FROM outbox
                     WHERE parked_at IS NOT NULL ORDER BY seq LIMIT ?1",
                )?;
                let rows = st.query_map([limit as i64], |row| {
                    Ok((raw_entry(row)?, row.get::<_, Option<String>>(5)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(e, error)| {
                Ok(ParkedEntry {
                    entry: e.decode()?,
                    error: error.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.log_stats(Log::Records).await
    }
}

fn stream_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EvalResult => "eval_result",
        EventKind::Usage => "usage",
    }
}

#[async_trait]
impl EventOutboxStore for SqliteStore {
    async fn record_logged(
        &self,
        events: &[AnalyticsEvent],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)> {
        validate_batch(events)?;
        let (events, acks) = (events.to_vec(), acks.to_vec());
        self.write("record", move |tx| {
            ack_tx(tx, Log::Events, &acks)?;
            let stored = record_tx(tx, &events)?;
            let now = Timestamp::now().as_micros();
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO event_outbox (stream, id, logged_at) VALUES (?1, ?2, ?3) RETURNING seq",
                )
                .map_err(|e| classify("outbox", e))?;
            let seqs = events
                .iter()
                .map(|e| {
                    st.query_row(
                        params![stream_name(e.kind()), uuid_text(e.id()), now],
                        |r| r.get(0),
                    )
                    .map_err(|e| classify("outbox", e))
                })
                .collect::<Result<Vec<i64>>>()?;
            Ok((stored, seqs))
        })
        .await
    }

    async fn event_outbox_pending(&self, limit: usize) -> Result<Vec<PendingEvent>> {
        check_limit(limit)?;
        self.read("outbox", move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, stream, id FROM event_outbox
                 WHERE parked_at IS NULL ORDER BY seq LIMIT ?1",
            )?;
            let entries = st
                .query_map([limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut eval = c.prepare_cached(
                "SELECT id, workspace, project, run, dataset_item, agent, metric, score, passed,
                    latency_ms, cost, error, created_at FROM eval_results WHERE id = ?1",
            )?;
            let mut usage = c.prepare_cached(
                "SELECT id, workspace, project, agent, conversation, model, input_tokens,
                    output_tokens, cost, latency_ms, created_at FROM usage_events WHERE id = ?1",
            )?;
            entries
                .into_iter()
                .map(|(seq, stream, id)| {
                    let event = if stream == "usage" {
                        usage.query_row([&id], usage_row).optional()?
                    } else {
                        eval.query_row([&id], eval_row).optional()?
                    };
                    Ok(PendingEvent { seq, event })
                })
                .collect()
        })
        .await
    }

    async fn event_outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        self.ack(Log::Events, seqs).await
    }

    async fn event_outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        self.park(Log::Events, seq, error).await
    }

    async fn event_outbox_unpark(&self) -> Result<u64> {
        self.unpark(Log::Events).await
    }

    async fn event_outbox_stats(&self) -> Result<OutboxStats> {
        self.log_stats(Log::Events).await
    }
}
