//! The [`RecordStore`] port: the system of record.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::{RecordId, Timestamp, WorkspaceId};
use crate::record::{ListQuery, Page, Record, RecordKind, ScanCursor, ScanRequest, UpsertOutcome};

/// Stores records keyed by id, scoped by workspace.
///
/// # Behavior
/// - `upsert` MUST validate every record before writing any, and write nothing if one is invalid.
/// - `upsert` MUST be atomic per call: either every record is applied or none.
/// - `upsert` MUST keep the stored record when it has a newer or equal `updated_at` (counted as skipped),
///   so repeating a call changes nothing.
/// - `upsert` MUST return [`Error::Conflict`] when an id exists in another workspace or with another
///   kind, when a live record of the same kind and workspace holds the same unique key under another
///   id, or when an immutable kind would change.
/// - `get` MUST return `None` for a missing id, a tombstone, another kind, or another workspace.
/// - `list` MUST return live records in id order, pages without gaps or repeats, honouring every filter.
/// - `delete` MUST leave a tombstone with the given `updated_at` (only if newer) and return whether a live
///   record was deleted.
/// - `scan` MUST return records (tombstones included) in `(updated_at, id)` order strictly after the
///   cursor.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// The backend name (`"sqlite"`, `"postgres"`, `"memory"`).
    fn backend(&self) -> &'static str;

    /// Inserts or updates `records` (any kinds, any workspaces) in one transaction.
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome>;

    /// One live record.
    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>>;

    /// A page of live records.
    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>>;

    /// Tombstones a record at `at`.
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool>;

    /// A batch of records in `(updated_at, id)` order, tombstones included.
    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>>;

    /// Number of records of `kind` (tombstones included), in one workspace or all.
    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64>;

    /// Cursors that cut the records of `kind` (all workspaces, tombstones included) in
    /// `(updated_at, id)` order into `parts` ranges of about equal size (sizes differ by at most one),
    /// so a bulk copy can read them in parallel: strictly ascending, each the cursor of the last
    /// record of its range, at most `parts - 1` of them and fewer when the kind holds fewer than
    /// `parts` records (no range is empty, the last one is open-ended). `parts` must be
    /// 1..=[`MAX_SPLIT`].
    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>>;
}

/// The most ranges [`RecordStore::split`] cuts a kind into.
pub const MAX_SPLIT: usize = 64;

/// Checks `split`'s `parts` argument.
pub fn check_split(parts: usize) -> Result<()> {
    crate::validate::count_between("parts", parts, MAX_SPLIT)
}

/// The row offsets (0-based, in scan order) of the last record of each range but the last when
/// `rows` records are cut into `parts` ranges for [`RecordStore::split`]: ascending and distinct,
/// none at the last row.
pub fn split_offsets(rows: u64, parts: usize) -> Vec<u64> {
    let parts = parts as u64;
    let mut out: Vec<u64> = (1..parts)
        .map(|i| rows * i / parts)
        .filter(|&end| end > 0 && end < rows)
        .map(|end| end - 1)
        .collect();
    out.dedup();
    out
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: RecordStore + ?Sized> RecordStore for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        (**self).upsert(records).await
    }
    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        (**self).get(workspace, kind, id).await
    }
    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        (**self).list(workspace, query).await
    }
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        (**self).delete(workspace, kind, id, at).await
    }
    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        (**self).scan(request).await
    }
    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        (**self).count(kind, workspace).await
    }
    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        (**self).split(kind, parts).await
    }
}

/// Convenience methods over any [`RecordStore`].
#[async_trait]
pub trait RecordStoreExt: RecordStore {
    /// One live record, or [`Error::NotFound`].
    async fn require(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Record> {
        self.get(workspace, kind, id)
            .await?
            .ok_or_else(|| Error::not_found(kind.as_str(), id))
    }

    /// Every live record matching `query`, following pages.
    async fn list_all(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Vec<Record>> {
        let mut q = query.clone();
        let mut out = Vec::new();
        loop {
            let page = self.list(workspace, &q).await?;
            out.extend(page.items);
            match page.next {
                Some(t) => q.page = Some(t),
                None => return Ok(out),
            }
        }
    }
}

impl<T: RecordStore + ?Sized> RecordStoreExt for T {}
