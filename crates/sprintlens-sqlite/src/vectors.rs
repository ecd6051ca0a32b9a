//! `VectorIndex` on SQLite: vectors as little-endian `f32` blobs, unit-normalised on write, exact
//! top-k in Rust over the rows that pass the filters (a bounded heap, rows streamed, never all loaded).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rusqlite::{Connection, OptionalExtension, params};
use sprintlens_core::vector::check_query;
use sprintlens_core::{
    Embedding, EmbeddingKind, Error, RecordId, Result, Timestamp, VectorCursor, VectorEntry,
    VectorHit, VectorIndex, VectorQuery, WorkspaceId, async_trait,
};

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
        let dim = self.dimension();
        for e in entries {
            e.embedding.check_dimension(dim)?;
        }
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    uuid_text(e.workspace),
                    e.kind.as_str(),
                    uuid_text(e.id),
                    e.project.map(uuid_text),
                    to_blob(e.embedding.normalized().as_slice()),
                    e.updated_at.as_micros(),
                )
            })
            .collect();
        self.write("vector_upsert", move |tx| {
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
            for r in &rows {
                written += st
                    .execute(params![r.0, r.1, r.2, r.3, r.4, r.5])
                    .map_err(|e| classify("vector_upsert", e))? as u64;
            }
            Ok(written)
        })
        .await
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: EmbeddingKind,
        id: RecordId,
    ) -> Result<bool> {
        self.write("vector_delete", move |tx| {
            tx.execute(
                "DELETE FROM embeddings WHERE workspace = ?1 AND kind = ?2 AND id = ?3",
                params![uuid_text(workspace), kind.as_str(), uuid_text(id)],
            )
            .map(|n| n > 0)
            .map_err(|e| classify("vector_delete", e))
        })
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
                .prepare_cached(
                    "SELECT workspace, kind, id, project, updated_at, vector FROM embeddings
                     WHERE (updated_at, id, kind) > (?1, ?2, ?3)
                     ORDER BY updated_at, id, kind LIMIT ?4",
                )
                .map_err(|e| classify("vector_scan", e))?;
            let mut rows = st
                .query(params![t, i, k, limit as i64])
                .map_err(|e| classify("vector_scan", e))?;
            let decode = |s: &str| {
                s.parse::<RecordId>()
                    .map_err(|e| Error::backend(BACKEND, "vector_scan", e.to_string()))
            };
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| classify("vector_scan", e))? {
                let get = |i: usize| -> Result<String> {
                    row.get(i).map_err(|e| classify("vector_scan", e))
                };
                let project: Option<String> = row.get(3).map_err(|e| classify("vector_scan", e))?;
                let blob = row
                    .get_ref(5)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(|e| classify("vector_scan", e))?;
                let values: Vec<f32> = blob
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                out.push(VectorEntry {
                    workspace: get(0)?
                        .parse::<WorkspaceId>()
                        .map_err(|e| Error::backend(BACKEND, "vector_scan", e.to_string()))?,
                    kind: EmbeddingKind::parse(&get(1)?)?,
                    id: decode(&get(2)?)?,
                    project: project.as_deref().map(decode).transpose()?,
                    updated_at: Timestamp::from_micros(
                        row.get(4).map_err(|e| classify("vector_scan", e))?,
                    ),
                    embedding: Embedding::new(values)?,
                });
            }
            Ok(out)
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
