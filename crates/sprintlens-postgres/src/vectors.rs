//! `VectorIndex` on pgvector: an HNSW (cosine) index, filtered search with iterative index scans so a
//! filter never returns fewer than k hits when k exist, optional `halfvec` storage.

use sprintlens_core::vector::check_query;
use sprintlens_core::{
    Embedding, EmbeddingKind, Error, OutboxStats, PendingVector, RecordId, Result, VectorCursor,
    VectorEntry, VectorHit, VectorIndex, VectorKey, VectorOutboxStore, VectorQuery, WorkspaceId,
    async_trait,
};
use sqlx::Row;
use uuid::Uuid;

use crate::outbox::{Log, log_in};
use crate::{BACKEND, PgStore, classify, scoped, ts};

/// With `log` (acks), removes those and appends one `sprintlens_vector_outbox` entry per key inside
/// `tx`; returns the new seqs (none without `log`).
async fn log_vectors(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    log: Option<&[i64]>,
    keys: impl Iterator<Item = VectorKey>,
) -> Result<Vec<i64>> {
    match log {
        Some(acks) => {
            log_in(
                tx,
                Log::Vectors,
                acks,
                keys.map(|k| (k.workspace.as_uuid(), k.kind.as_str(), k.id.as_uuid())),
            )
            .await
        }
        None => Ok(Vec::new()),
    }
}

/// The columns [`entry_row`] decodes.
const ENTRY_COLUMNS: &str = "workspace, kind, id, project, updated_at, embedding::vector AS v";

/// Decodes a row of [`ENTRY_COLUMNS`].
fn entry_row(r: &sqlx::postgres::PgRow, operation: &'static str) -> Result<VectorEntry> {
    let map = |e: sqlx::Error| classify(operation, e);
    let id = |u: Uuid| {
        RecordId::from_uuid(u).map_err(|e| Error::backend(BACKEND, operation, e.to_string()))
    };
    let v: pgvector::Vector = r.try_get("v").map_err(map)?;
    let project: Option<Uuid> = r.try_get("project").map_err(map)?;
    Ok(VectorEntry {
        workspace: WorkspaceId::from_uuid(r.try_get("workspace").map_err(map)?)
            .map_err(|e| Error::backend(BACKEND, operation, e.to_string()))?,
        kind: EmbeddingKind::parse(r.try_get::<&str, _>("kind").map_err(map)?)?,
        id: id(r.try_get("id").map_err(map)?)?,
        project: project.map(id).transpose()?,
        updated_at: crate::from_ts(r.try_get("updated_at").map_err(map)?),
        embedding: Embedding::new(v.to_vec())?,
    })
}

impl PgStore {
    /// `upsert`, and with `log` (the acks of delivered entries) the removal of those and one
    /// `sprintlens_vector_outbox` entry per embedding, in the same transaction.
    async fn vector_upsert_in(
        &self,
        entries: &[VectorEntry],
        log: Option<&[i64]>,
    ) -> Result<(u64, Vec<i64>)> {
        for e in entries {
            e.embedding.check_dimension(self.options.dimension)?;
        }
        let mut by_ws: std::collections::BTreeMap<WorkspaceId, Vec<&VectorEntry>> =
            Default::default();
        for e in entries {
            by_ws.entry(e.workspace).or_default().push(e);
        }
        let cast = if self.options.half {
            "halfvec"
        } else {
            "vector"
        };
        // One multi-row statement per 1,000 entries; the newest entry per key wins within a batch.
        let sql = format!(
            "INSERT INTO embeddings (workspace, kind, id, project, updated_at, embedding)
             SELECT DISTINCT ON (kind, id) ws, kind, id, project, updated_at, embedding::{cast}
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::vector[])
                  AS t(ws, kind, id, project, updated_at, embedding)
             ORDER BY kind, id, updated_at DESC
             ON CONFLICT (workspace, kind, id) DO UPDATE SET
                project = excluded.project, updated_at = excluded.updated_at,
                embedding = excluded.embedding
             WHERE excluded.updated_at >= embeddings.updated_at"
        );
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| classify("vector_upsert", e))?;
        let mut written = 0;
        for (ws, group) in by_ws {
            crate::set_workspace(&mut tx, ws, "vector_upsert").await?;
            for chunk in group.chunks(1_000) {
                written += sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(
                        chunk
                            .iter()
                            .map(|e| e.workspace.as_uuid())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        chunk
                            .iter()
                            .map(|e| e.kind.as_str().to_string())
                            .collect::<Vec<_>>(),
                    )
                    .bind(chunk.iter().map(|e| e.id.as_uuid()).collect::<Vec<_>>())
                    .bind(
                        chunk
                            .iter()
                            .map(|e| e.project.map(|p| p.as_uuid()))
                            .collect::<Vec<_>>(),
                    )
                    .bind(chunk.iter().map(|e| ts(e.updated_at)).collect::<Vec<_>>())
                    .bind(
                        chunk
                            .iter()
                            .map(|e| {
                                pgvector::Vector::from(e.embedding.normalized().as_slice().to_vec())
                            })
                            .collect::<Vec<_>>(),
                    )
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("vector_upsert", e))?
                    .rows_affected();
            }
        }
        let seqs = log_vectors(&mut tx, log, entries.iter().map(VectorKey::of)).await?;
        tx.commit()
            .await
            .map_err(|e| classify("vector_upsert", e))?;
        Ok((written, seqs))
    }

    /// `delete`, and with `log` the removal of those acks and one outbox entry, in one transaction.
    async fn vector_delete_in(
        &self,
        key: VectorKey,
        log: Option<&[i64]>,
    ) -> Result<(bool, Vec<i64>)> {
        let VectorKey {
            workspace,
            kind,
            id,
        } = key;
        let mut tx = scoped(&self.pool, workspace, "vector_delete").await?;
        let n =
            sqlx::query("DELETE FROM embeddings WHERE workspace = $1 AND kind = $2 AND id = $3")
                .bind(workspace.as_uuid())
                .bind(kind.as_str())
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|e| classify("vector_delete", e))?
                .rows_affected();
        let seqs = log_vectors(&mut tx, log, std::iter::once(key)).await?;
        tx.commit()
            .await
            .map_err(|e| classify("vector_delete", e))?;
        Ok((n > 0, seqs))
    }

    /// Loads `entries` into a target that does not hold them yet (a backfill): one binary COPY
    /// straight into `embeddings` through the operator role (BYPASSRLS; COPY cannot write a table
    /// under row-level security), no per-row conflict handling. If any key is already stored, the
    /// COPY fails on the primary key, nothing of it stays, and the entries go through
    /// [`VectorIndex::upsert`] instead (newest wins), so the outcome is the same as an upsert's.
    /// `half` storage is copied as binary `halfvec`. Without `operator_url` it is that upsert.
    pub async fn load_vectors(&self, entries: &[VectorEntry]) -> Result<u64> {
        let Some(operator) = self.operator.as_ref() else {
            return VectorIndex::upsert(self, entries).await;
        };
        for e in entries {
            e.embedding.check_dimension(self.options.dimension)?;
        }
        // One row per key, the newest (as the upsert keeps).
        let keep = crate::records::newest_per_key(
            entries,
            |e| (e.workspace, e.kind, e.id),
            |e| e.updated_at,
        );
        let dim = self.options.dimension;
        let mut buf = bytes::BytesMut::with_capacity(keep.len() * (80 + 4 * dim));
        crate::copy::header(&mut buf);
        for &i in &keep {
            crate::copy::vector_row(&mut buf, &entries[i], self.options.half);
        }
        crate::copy::trailer(&mut buf);
        let mut tx = operator
            .begin()
            .await
            .map_err(|e| classify("vector_load", e))?;
        let statement = format!(
            "COPY embeddings ({}) FROM STDIN (FORMAT binary)",
            crate::copy::VECTOR_COLUMNS
        );
        match crate::copy::load(&mut tx, &statement, buf, "vector_load").await? {
            Some(n) => {
                tx.commit().await.map_err(|e| classify("vector_load", e))?;
                Ok(n)
            }
            None => {
                drop(tx);
                VectorIndex::upsert(self, entries).await
            }
        }
    }
}

#[async_trait]
impl VectorIndex for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn dimension(&self) -> usize {
        self.options.dimension
    }

    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64> {
        Ok(self.vector_upsert_in(entries, None).await?.0)
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: EmbeddingKind,
        id: RecordId,
    ) -> Result<bool> {
        let key = VectorKey {
            workspace,
            kind,
            id,
        };
        Ok(self.vector_delete_in(key, None).await?.0)
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>> {
        check_query(query, self.options.dimension)?;
        let cast = if self.options.half {
            "halfvec"
        } else {
            "vector"
        };
        let kinds: Vec<String> = query.kinds.iter().map(|k| k.as_str().to_string()).collect();
        let mut tx = scoped(self.reader(), query.workspace, "vector_search").await?;
        // Transaction-local planner settings: candidates per search, and pgvector 0.8 iterative
        // scans that keep walking the graph until the filters have let k rows through.
        sqlx::query(
            "SELECT set_config('hnsw.ef_search', $1, true),
                    set_config('hnsw.iterative_scan', 'relaxed_order', true),
                    set_config('hnsw.max_scan_tuples', '100000', true)",
        )
        .bind(self.options.ef_search.max(query.k as u32).to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("vector_search", e))?;
        let sql = format!(
            "SELECT kind, id, project, (embedding <=> $1::vector::{cast}) AS distance
             FROM embeddings
             WHERE workspace = $2 AND ($3::uuid IS NULL OR project = $3)
               AND (cardinality($4::text[]) = 0 OR kind = ANY($4))
             ORDER BY embedding <=> $1::vector::{cast}
             LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pgvector::Vector::from(query.embedding.as_slice().to_vec()))
            .bind(query.workspace.as_uuid())
            .bind(query.project.map(|p| p.as_uuid()))
            .bind(&kinds)
            .bind(query.k as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify("vector_search", e))?;
        tx.commit()
            .await
            .map_err(|e| classify("vector_search", e))?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in rows {
            let map = |e: sqlx::Error| classify("vector_search", e);
            let kind: String = row.try_get("kind").map_err(map)?;
            let id: Uuid = row.try_get("id").map_err(map)?;
            let project: Option<Uuid> = row.try_get("project").map_err(map)?;
            let distance: f64 = row.try_get("distance").map_err(map)?;
            let decode = |u: Uuid| {
                RecordId::from_uuid(u).map_err(|e| Error::backend(BACKEND, "decode", e.to_string()))
            };
            hits.push(VectorHit {
                kind: EmbeddingKind::parse(&kind)?,
                id: decode(id)?,
                project: project.map(decode).transpose()?,
                score: (1.0 - distance) as f32,
            });
        }
        // relaxed_order may return near-ties slightly out of order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }

    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>> {
        sprintlens_core::record::check_limit(limit)?;
        let op = self.across_workspaces("vector scan across workspaces without operator_url")?;
        let (t, i, k) = match after {
            Some(c) => (Some(ts(c.updated_at)), c.id.as_uuid(), c.kind.as_str()),
            None => (None, Uuid::nil(), ""),
        };
        // `id::text` and `kind` compare as text, as SQLite's scan does, so cursors carry across.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM embeddings
             WHERE $1::timestamptz IS NULL OR (updated_at, id, kind) > ($1, $2, $3)
             ORDER BY updated_at, id, kind LIMIT $4"
        )))
        .bind(t)
        .bind(i)
        .bind(k)
        .bind(limit as i64)
        .fetch_all(op)
        .await
        .map_err(|e| classify("vector_scan", e))?;
        rows.iter().map(|r| entry_row(r, "vector_scan")).collect()
    }

    async fn count_all(&self) -> Result<u64> {
        let op = self.across_workspaces("vector count across workspaces without operator_url")?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings")
            .fetch_one(op)
            .await
            .map_err(|e| classify("vector_count", e))?;
        Ok(n as u64)
    }

    async fn count(&self, workspace: WorkspaceId) -> Result<u64> {
        let mut tx = scoped(self.reader(), workspace, "vector_count").await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM embeddings WHERE workspace = $1")
            .bind(workspace.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify("vector_count", e))?;
        tx.commit().await.map_err(|e| classify("vector_count", e))?;
        Ok(n as u64)
    }
}

impl PgStore {
    /// The embeddings of `keys` as stored now (on the primary), read per workspace under its
    /// row-level security.
    async fn stored(
        &self,
        keys: impl Iterator<Item = VectorKey>,
    ) -> Result<std::collections::HashMap<VectorKey, VectorEntry>> {
        let mut by_ws: std::collections::BTreeMap<WorkspaceId, (Vec<&'static str>, Vec<Uuid>)> =
            Default::default();
        for k in keys {
            let (kinds, ids) = by_ws.entry(k.workspace).or_default();
            kinds.push(k.kind.as_str());
            ids.push(k.id.as_uuid());
        }
        let mut out = std::collections::HashMap::new();
        for (ws, (kinds, ids)) in by_ws {
            let mut tx = scoped(&self.pool, ws, "vector_get").await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ENTRY_COLUMNS} FROM embeddings
                 WHERE workspace = $1 AND (kind, id) IN (SELECT * FROM UNNEST($2::text[], $3::uuid[]))"
            )))
            .bind(ws.as_uuid())
            .bind(kinds)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| classify("vector_get", e))?;
            tx.commit().await.map_err(|e| classify("vector_get", e))?;
            for r in &rows {
                let e = entry_row(r, "vector_get")?;
                out.insert(VectorKey::of(&e), e);
            }
        }
        Ok(out)
    }
}

/// `sprintlens_vector_outbox`, written in the same transaction as the embeddings it names. Seqs come
/// from a sequence, so a later seq can commit first: consumers read what is pending, never "after
/// seq N".
#[async_trait]
impl VectorOutboxStore for PgStore {
    async fn vector_upsert_logged(
        &self,
        entries: &[VectorEntry],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)> {
        self.vector_upsert_in(entries, Some(acks)).await
    }

    async fn vector_delete_logged(&self, key: VectorKey, acks: &[i64]) -> Result<(bool, i64)> {
        let (deleted, seqs) = self.vector_delete_in(key, Some(acks)).await?;
        Ok((deleted, seqs[0]))
    }

    async fn vector_outbox_pending(&self, limit: usize) -> Result<Vec<PendingVector>> {
        sprintlens_core::record::check_limit(limit)?;
        // Entries first, embeddings after (on the primary): every embedding read is at least as new
        // as the write its entry logged.
        let rows = sqlx::query(
            "SELECT seq, workspace, kind, id FROM sprintlens_vector_outbox
             WHERE parked_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| classify("vector_outbox", e))?;
        let map = |e: sqlx::Error| classify("vector_outbox", e);
        let bad = |e: Error| Error::backend(BACKEND, "vector_outbox", e.to_string());
        let entries = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("seq").map_err(map)?,
                    VectorKey {
                        workspace: WorkspaceId::from_uuid(r.try_get("workspace").map_err(map)?)
                            .map_err(bad)?,
                        kind: EmbeddingKind::parse(r.try_get::<&str, _>("kind").map_err(map)?)?,
                        id: RecordId::from_uuid(r.try_get("id").map_err(map)?).map_err(bad)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let stored = self.stored(entries.iter().map(|(_, k)| *k)).await?;
        Ok(entries
            .into_iter()
            .map(|(seq, key)| PendingVector {
                seq,
                key,
                entry: stored.get(&key).cloned(),
            })
            .collect())
    }

    async fn vector_entries(&self, keys: &[VectorKey]) -> Result<Vec<Option<VectorEntry>>> {
        let stored = self.stored(keys.iter().copied()).await?;
        Ok(keys.iter().map(|k| stored.get(k).cloned()).collect())
    }

    async fn vector_outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        self.ack(Log::Vectors, seqs).await
    }

    async fn vector_outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        self.park(Log::Vectors, seq, error).await
    }

    async fn vector_outbox_unpark(&self) -> Result<u64> {
        self.unpark(Log::Vectors).await
    }

    async fn vector_outbox_stats(&self) -> Result<OutboxStats> {
        self.log_stats(Log::Vectors).await
    }
}
