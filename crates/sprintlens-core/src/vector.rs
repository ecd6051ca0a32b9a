//! The [`VectorIndex`] port: semantic search over embeddings.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ProjectId, RecordId, Timestamp, WorkspaceId};
use crate::validate::MAX_DIMENSION;

/// What an embedding belongs to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingKind {
    /// A conversation (e.g. its summary or first message).
    Conversation,
    /// One message.
    Message,
    /// A prompt (its template).
    Prompt,
    /// A dataset item (its input).
    DatasetItem,
}

impl EmbeddingKind {
    /// Every kind.
    pub const ALL: &'static [EmbeddingKind] = &[
        EmbeddingKind::Conversation,
        EmbeddingKind::Message,
        EmbeddingKind::Prompt,
        EmbeddingKind::DatasetItem,
    ];
    /// The stable stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EmbeddingKind::Conversation => "conversation",
            EmbeddingKind::Message => "message",
            EmbeddingKind::Prompt => "prompt",
            EmbeddingKind::DatasetItem => "dataset_item",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::invalid("kind", format!("unknown embedding kind `{s}`")))
    }
}

impl fmt::Display for EmbeddingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vector of finite `f32` components, 1..=[`MAX_DIMENSION`] long.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f32>", into = "Vec<f32>")]
pub struct Embedding(Vec<f32>);

impl Embedding {
    /// Checks length and that every component is finite.
    pub fn new(values: Vec<f32>) -> Result<Self> {
        if values.is_empty() {
            return Err(Error::invalid("embedding", "must not be empty"));
        }
        if values.len() > MAX_DIMENSION {
            return Err(Error::invalid(
                "embedding",
                format!("dimension {} exceeds {MAX_DIMENSION}", values.len()),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "embedding",
                format!("component {i} is not finite"),
            ));
        }
        Ok(Embedding(values))
    }
    /// Checks the dimension against the index's.
    pub fn check_dimension(&self, expected: usize) -> Result<()> {
        if self.0.len() != expected {
            return Err(Error::invalid(
                "embedding",
                format!(
                    "dimension {} does not match the index's {expected}",
                    self.0.len()
                ),
            ));
        }
        Ok(())
    }
    /// The components.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
    /// The number of components.
    pub fn dimension(&self) -> usize {
        self.0.len()
    }
    /// This vector scaled to unit length (a zero vector stays zero). A vector already of unit
    /// length (within [`UNIT_TOLERANCE`]) comes back unchanged, bit for bit, so normalising what an
    /// index stored (a backfill, a dual-write delivery) never drifts its last bits.
    pub fn normalized(&self) -> Embedding {
        let squares = self.0.iter().map(|v| v * v).sum::<f32>();
        if squares == 0.0 || (squares - 1.0).abs() <= UNIT_TOLERANCE {
            return self.clone();
        }
        let norm = squares.sqrt();
        Embedding(self.0.iter().map(|v| v / norm).collect())
    }
    /// Cosine similarity with `other` (0 when either is zero).
    pub fn cosine(&self, other: &Embedding) -> f32 {
        cosine(&self.0, &other.0)
    }
}

/// Cosine similarity of two equally long slices (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

impl TryFrom<Vec<f32>> for Embedding {
    type Error = Error;
    fn try_from(v: Vec<f32>) -> Result<Self> {
        Embedding::new(v)
    }
}

impl From<Embedding> for Vec<f32> {
    fn from(e: Embedding) -> Vec<f32> {
        e.0
    }
}

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding(dim={})", self.0.len())
    }
}

/// One embedding to store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorEntry {
    /// The tenant.
    pub workspace: WorkspaceId,
    /// The project, for filtering.
    pub project: Option<ProjectId>,
    /// What it belongs to.
    pub kind: EmbeddingKind,
    /// The record it embeds.
    pub id: RecordId,
    /// The vector.
    pub embedding: Embedding,
    /// When it was computed; the newer write wins.
    pub updated_at: Timestamp,
}

/// A keyset position in a scan of every embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VectorCursor {
    /// `updated_at` of the last entry seen.
    pub updated_at: Timestamp,
    /// Its record id.
    pub id: RecordId,
    /// Its kind.
    pub kind: EmbeddingKind,
}

impl VectorEntry {
    /// The scan cursor positioned at this entry.
    pub fn cursor(&self) -> VectorCursor {
        VectorCursor {
            updated_at: self.updated_at,
            id: self.id,
            kind: self.kind,
        }
    }
}

/// A top-k search.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorQuery {
    /// The tenant.
    pub workspace: WorkspaceId,
    /// Only this project.
    pub project: Option<ProjectId>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<EmbeddingKind>,
    /// The query vector.
    pub embedding: Embedding,
    /// How many hits, 1..=1000.
    pub k: usize,
}

/// One search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorHit {
    /// What it belongs to.
    pub kind: EmbeddingKind,
    /// The record.
    pub id: RecordId,
    /// Its project.
    pub project: Option<ProjectId>,
    /// Cosine similarity to the query, in [-1, 1]; higher is closer.
    pub score: f32,
}

/// How far from 1 the squared length of a vector may be for [`Embedding::normalized`] to take it as
/// unit length already (f32 rounding of a normalised vector of a few thousand components stays well
/// inside it; cosine similarity is the same either way).
pub const UNIT_TOLERANCE: f32 = 1e-5;

/// Stores embeddings and answers top-k cosine searches.
///
/// # Behavior
/// - `upsert` MUST store each vector scaled to unit length ([`Embedding::normalized`]), so every
///   index holds the same components for the same write and a copy between indexes is exact.
/// - `upsert` MUST reject (with nothing written) any entry whose dimension differs from `dimension()`.
/// - `upsert` MUST replace an entry with the same `(workspace, kind, id)` unless the stored one is newer.
/// - `search` MUST return at most `k` hits, best first, only from the query's workspace and filters, and
///   MUST return `k` hits when at least `k` entries match the filters.
/// - `delete` MUST return whether an entry was removed.
/// - `count_all` MUST count the entries of every workspace (at least `count` of any one).
/// - `scan_entries` MUST return the entries of every workspace in `(updated_at, id, kind)` order strictly
///   after the cursor, each once across pages, with the vectors as stored.
#[async_trait]
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// The backend name.
    fn backend(&self) -> &'static str;
    /// The dimension every vector must have.
    fn dimension(&self) -> usize;
    /// Inserts or replaces entries, atomically.
    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64>;
    /// Removes one entry.
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: EmbeddingKind,
        id: RecordId,
    ) -> Result<bool>;
    /// Top-k by cosine similarity.
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>>;
    /// Number of entries in a workspace.
    async fn count(&self, workspace: WorkspaceId) -> Result<u64>;
    /// Number of entries of every workspace (migration plans).
    async fn count_all(&self) -> Result<u64>;
    /// A batch of entries of every workspace, for migration and verification.
    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>>;
}

/// Checks a query against an index's dimension.
pub fn check_query(query: &VectorQuery, dimension: usize) -> Result<()> {
    if query.k == 0 || query.k > 1000 {
        return Err(Error::invalid("k", "must be between 1 and 1000"));
    }
    query.embedding.check_dimension(dimension)
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: VectorIndex + ?Sized> VectorIndex for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn dimension(&self) -> usize {
        (**self).dimension()
    }
    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64> {
        (**self).upsert(entries).await
    }
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: EmbeddingKind,
        id: RecordId,
    ) -> Result<bool> {
        (**self).delete(workspace, kind, id).await
    }
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>> {
        (**self).search(query).await
    }
    async fn count(&self, workspace: WorkspaceId) -> Result<u64> {
        (**self).count(workspace).await
    }
    async fn count_all(&self) -> Result<u64> {
        (**self).count_all().await
    }
    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>> {
        (**self).scan_entries(after, limit).await
    }
}

/// Produces embeddings from text.
///
/// # Behavior
/// - `embed` MUST return one embedding of `dimension()` per input, in order.
/// - The same text MUST give the same embedding (for a given model).
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// The model name.
    fn model(&self) -> &str;
    /// The dimension of every embedding.
    fn dimension(&self) -> usize;
    /// Embeds each text.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>>;
}
