//! `VectorIndex` on SQLite: vectors as little-endian `f32` blobs, unit-normalised on write, exact
//! top-k in Rust over the rows that pass the filters (a bounded heap, rows streamed, never all loaded).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rusqlite::{Connection, OptionalExtension, params};
use sprintlens_core::vector::check_query;
use sprintlens_core::{
    Embedding, EmbeddingKind, Error, OutboxStats, PendingVector, RecordId, Result, Timestamp,
    VectorCursor, VectorEntry, VectorHit, VectorIndex, VectorKey, VectorOutboxStore, VectorQuery,
    WorkspaceId, async_trait,
};

use crate::outbox::{Log, ack_tx};
use crate::{BACKEND, SqliteStore, classify, uuid_text};

pub(crate) fn check_dimension(conn: &mut Connection, dimension: usize) -> Result<()> {
    let stored: Option<i64> = conn
        .query_row(
            "SELECT dimension FROM vector_meta WHERE singleton = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| classify("open", e))?;
    match stored {
        Some(d) if d as usize != dimension => Err(Error::config(
            "vectors.dimension",
            format!(
                "{dimension} differs from the {d} this database's vector index was created with"
            ),
        )),
        Some(_) => Ok(()),
        None => conn
            .execute(
                "INSERT INTO vector_meta (singleton, dimension) VALUES (1, ?1)",
                [dimension as i64],
            )
            .map(|_| ())
            .map_err(|e| classify("open", e)),
    }
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One `embeddings` row as bound by [`upsert_tx`].
pub(crate) type VectorRow = (String, &'static str, String, Option<String>, Vec<u8>, i64);

/// The columns [`entry_row`] decodes, in order.
pub(crate) const ENTRY_COLUMNS: &str = "workspace, kind, id, project, updated_at, vector";

impl SqliteStore {
    /// `entries` checked against the index's dimension and unit-normalised, as rows to bind.
    pub(crate) fn rows(&self, entries: &[VectorEntry]) -> Result<Vec<VectorRow>> {
        let dim = self.inner.options.dimension;
        entries
            .iter()
            .map(|e| {
                e.embedding.check_dimension(dim)?;
                Ok((
                    uuid_text(e.workspace),
                    e.kind.as_str(),
                    uuid_text(e.id),
                    e.project.map(uuid_text),
                    to_blob(e.embedding.normalized().as_slice()),
                    e.updated_at.as_micros(),
                ))
            })
            .collect()
    }
}

/// Inserts or replaces `rows` (the newer `updated_at` wins); returns how many were written.
pub(crate) fn upsert_tx(tx: &rusqlite::Transaction<'_>, rows: &[VectorRow]) -> Result<u64> {
    let mut st = tx
        .prepare_cached(
            "INSERT INTO embeddings (workspace, kind, id, project, vector, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (workspace, kind, id) DO UPDATE SET
                project = excluded.project, vector = excluded.vector,
                updated_at = excluded.updated_at
             WHERE excluded.updated_at >= embeddings.updated_at",
        )
        .map_err(|e| classify("vector_upsert", e))?;
    let mut written = 0u64;
    for r in rows {
        written += st
            .execute(params![r.0, r.1, r.2, r.3, r.4, r.5])
            .map_err(|e| classify("vector_upsert", e))? as u64;
    }
    Ok(written)
}

/// Removes the embedding of `key`; returns whether there was one.
pub(crate) fn delete_tx(tx: &rusqlite::Transaction<'_>, key: VectorKey) -> Result<bool> {
    tx.execute(
        "DELETE FROM embeddings WHERE workspace = ?1 AND kind = ?2 AND id = ?3",
        params![
            uuid_text(key.workspace),
            key.kind.as_str(),
            uuid_text(key.id)
        ],
    )
    .map(|n| n > 0)
    .map_err(|e| classify("vector_delete", e))
}

/// Decodes the [`ENTRY_COLUMNS`] of a row, starting at column `at`.
pub(crate) fn entry_row(
    row: &rusqlite::Row<'_>,
    at: usize,
    operation: &'static str,
) -> Result<VectorEntry> {
    let text = |i: usize| -> Result<String> { row.get(at + i).map_err(|e| classify(operation, e)) };
    let id = |s: &str| {
        s.parse::<RecordId>()
            .map_err(|e| Error::backend(BACKEND, operation, e.to_string()))
    };
    let project: Option<String> = row.get(at + 3).map_err(|e| classify(operation, e))?;
    let blob = row
        .get_ref(at + 5)
        .and_then(|v| v.as_blob().map_err(Into::into))
        .map_err(|e| classify(operation, e))?;
    let values: Vec<f32> = blob
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(VectorEntry {
        workspace: text(0)?
            .parse::<WorkspaceId>()
            .map_err(|e| Error::backend(BACKEND, operation, e.to_string()))?,
        kind: EmbeddingKind::parse(&text(1)?)?,
        id: id(&text(2)?)?,
        project: project.as_deref().map(id).transpose()?,
        updated_at: Timestamp::from_micros(row.get(at + 4).map_err(|e| classify(operation, e))?),
        embedding: Embedding::new(values)?,
    })
}

struct Scored {
    score: f32,
    hit: VectorHit,
}

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    // Reversed, so the heap's top is the worst hit kept; ties broken by id for determinism.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score
            .total_cmp(&self.score)
            .then_with(|| self.hit.id.cmp(&o.hit.id))
    }
}

fn dot_le(blob: &[u8], q: &[f32]) -> f32 {
    blob.chunks_exact(4)
        .zip(q)
        .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
        .sum()
}

#[async_trait]
impl VectorIndex for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn dimension(&self) -> usize {
        self.inner.options.dimension
    }

    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64> {
        let rows = self.rows(entries)?;
        self.write("vector_upsert", move |tx| upsert_tx(tx, &rows))
            .await
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
        self.write("vector_delete", move |tx| delete_tx(tx, key))
            .await
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>> {
        check_query(query, self.dimension())?;
        let q = query.embedding.normalized();
        let query = query.clone();
        self.read_with("vector_search", move |c| {
            // The kind filter is a fixed list of placeholders (kinds are a closed enum).
            let mut kinds: Vec<&str> = query.kinds.iter().map(|k| k.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let mut sql = String::from(
                "SELECT kind, id, project, vector FROM embeddings
                 WHERE workspace = ?1 AND (?2 IS NULL OR project = ?2)",
            );
            if !kinds.is_empty() {
                let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 3)).collect();
                sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
            }
            let mut st = c
                .prepare_cached(&sql)
                .map_err(|e| classify("vector_search", e))?;
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
                Box::new(uuid_text(query.workspace)),
                Box::new(query.project.map(uuid_text)),
            ];
            args.extend(
                kinds
                    .iter()
                    .map(|k| Box::new(*k) as Box<dyn rusqlite::ToSql>),
            );
            let mut rows = st
                .query(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())))
                .map_err(|e| classify("vector_search", e))?;
            let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(query.k + 1);
            while let Some(row) = rows.next().map_err(|e| classify("vector_search", e))? {
                let blob = row
                    .get_ref(3)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(|e| classify("vector_search", e))?;
                let score = dot_le(blob, q.as_slice());
                if heap.len() == query.k && heap.peek().is_some_and(|w| w.score >= score) {
                    continue;
                }
                let kind: String = row.get(0).map_err(|e| classify("vector_search", e))?;
                let id: String = row.get(1).map_err(|e| classify("vector_search", e))?;
                let project: Option<String> =
                    row.get(2).map_err(|e| classify("vector_search", e))?;
                let decode = |s: &str| {
                    s.parse::<RecordId>()
                        .map_err(|e| Error::backend(BACKEND, "vector_search", e.to_string()))
                };
                heap.push(Scored {
                    score,
                    hit: VectorHit {
                        kind: EmbeddingKind::parse(&kind)?,
                        id: decode(&id)?,
                        project: project.as_deref().map(decode).transpose()?,
                        score,
                    },
                });
                if heap.len() > query.k {
                    heap.pop();
                }
            }
            Ok(heap.into_sorted_vec().into_iter().map(|s| s.hit).collect())
        })
        .await
    }

    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>> {
        sprintlens_core::record::check_limit(limit)?;
        self.read_with("vector_scan", move |c| {
            let (t, i, k) = match after {
                Some(cur) => (
                    cur.updated_at.as_micros(),
                    uuid_text(cur.id),
                    cur.kind.as_str().to_string(),
                ),
                None => (i64::MIN, String::new(), String::new()),
            };
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM embeddings
                         WHERE (updated_at, id, kind) > (?1, ?2, ?3)
                         ORDER BY updated_at, id, kind LIMIT ?4"
                ))
                .map_err(|e| classify("vector_scan", e))?;
            let mut rows = st
                .query(params![t, i, k, limit as i64])
                .map_err(|e| classify("vector_scan", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| classify("vector_scan", e))? {
                out.push(entry_row(row, 0, "vector_scan")?);
            }
            Ok(out)
        })
        .await
    }

    async fn count_all(&self) -> Result<u64> {
        self.read("vector_count", move |c| {
            c.query_row("SELECT COUNT(*) FROM embeddings", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
        .await
    }

    async fn count(&self, workspace: WorkspaceId) -> Result<u64> {
        self.read("vector_count", move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM embeddings WHERE workspace = ?1",
                [uuid_text(workspace)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
        .await
    }
}

/// Appends one `vector_outbox` entry naming `key`; returns its seq.
fn log(tx: &rusqlite::Transaction<'_>, key: VectorKey, now: i64) -> Result<i64> {
    tx.prepare_cached(
        "INSERT INTO vector_outbox (workspace, kind, id, logged_at) VALUES (?1, ?2, ?3, ?4)
         RETURNING seq",
    )
    .and_then(|mut st| {
        st.query_row(
            params![
                uuid_text(key.workspace),
                key.kind.as_str(),
                uuid_text(key.id),
                now
            ],
            |r| r.get(0),
        )
    })
    .map_err(|e| classify("vector_outbox", e))
}

fn key_of(workspace: &str, kind: &str, id: &str) -> Result<VectorKey> {
    let bad = |e: Error| Error::backend(BACKEND, "vector_outbox", e.to_string());
    Ok(VectorKey {
        workspace: workspace.parse().map_err(bad)?,
        kind: EmbeddingKind::parse(kind)?,
        id: id.parse().map_err(bad)?,
    })
}

/// The `vector_outbox` table, written in the same `BEGIN IMMEDIATE` transaction as the embeddings
/// it names.
#[async_trait]
impl VectorOutboxStore for SqliteStore {
    async fn vector_upsert_logged(
        &self,
        entries: &[VectorEntry],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)> {
        let rows = self.rows(entries)?;
        let keys: Vec<VectorKey> = entries.iter().map(VectorKey::of).collect();
        let acks = acks.to_vec();
        self.write("vector_upsert", move |tx| {
            ack_tx(tx, Log::Vectors, &acks)?;
            let written = upsert_tx(tx, &rows)?;
            let now = Timestamp::now().as_micros();
            let seqs = keys
                .iter()
                .map(|k| log(tx, *k, now))
                .collect::<Result<Vec<_>>>()?;
            Ok((written, seqs))
        })
        .await
    }

    async fn vector_delete_logged(&self, key: VectorKey, acks: &[i64]) -> Result<(bool, i64)> {
        let acks = acks.to_vec();
        self.write("vector_delete", move |tx| {
            ack_tx(tx, Log::Vectors, &acks)?;
            let deleted = delete_tx(tx, key)?;
            Ok((deleted, log(tx, key, Timestamp::now().as_micros())?))
        })
        .await
    }

    async fn vector_outbox_pending(&self, limit: usize) -> Result<Vec<PendingVector>> {
        sprintlens_core::record::check_limit(limit)?;
        // One read transaction: the embeddings are read in the same snapshot as their entries.
        self.read_with("vector_outbox", move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT o.seq, o.workspace, o.kind, o.id, e.workspace, e.kind, e.id, e.project,
                            e.updated_at, e.vector
                     FROM vector_outbox o LEFT JOIN embeddings e
                       ON e.workspace = o.workspace AND e.kind = o.kind AND e.id = o.id
                     WHERE o.parked_at IS NULL ORDER BY o.seq LIMIT ?1",
                )
                .map_err(|e| classify("vector_outbox", e))?;
            let mut rows = st
                .query([limit as i64])
                .map_err(|e| classify("vector_outbox", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| classify("vector_outbox", e))? {
                let text = |i: usize| -> Result<String> {
                    row.get(i).map_err(|e| classify("vector_outbox", e))
                };
                let stored: Option<String> =
                    row.get(4).map_err(|e| classify("vector_outbox", e))?;
                out.push(PendingVector {
                    seq: row.get(0).map_err(|e| classify("vector_outbox", e))?,
                    key: key_of(&text(1)?, &text(2)?, &text(3)?)?,
                    entry: match stored {
                        Some(_) => Some(entry_row(row, 4, "vector_outbox")?),
                        None => None,
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn vector_entries(&self, keys: &[VectorKey]) -> Result<Vec<Option<VectorEntry>>> {
        let keys = keys.to_vec();
        self.read_with("vector_get", move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM embeddings
                     WHERE workspace = ?1 AND kind = ?2 AND id = ?3"
                ))
                .map_err(|e| classify("vector_get", e))?;
            keys.iter()
                .map(|k| {
                    let mut rows = st
                        .query(params![
                            uuid_text(k.workspace),
                            k.kind.as_str(),
                            uuid_text(k.id)
                        ])
                        .map_err(|e| classify("vector_get", e))?;
                    match rows.next().map_err(|e| classify("vector_get", e))? {
                        Some(row) => entry_row(row, 0, "vector_get").map(Some),
                        None => Ok(None),
                    }
                })
                .collect()
        })
        .await
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
