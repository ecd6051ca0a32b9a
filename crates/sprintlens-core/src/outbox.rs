//! The [`OutboxStore`] port: a [`RecordStore`] that logs its own writes, durably and in the same
//! transaction, for delivery to another store (dual-write during a migration).
//!
//! An entry names a record (`workspace`, `kind`, `id`), not its content: whoever delivers it reads
//! the record's *current* stored version (tombstones included) and upserts that. Upserts keep the
//! newer `updated_at`, so delivering an entry twice, out of order, or after a later write of the same
//! record all converge on the same state.

use std::sync::Arc;

use async_trait::async_trait;

use crate::analytics::{Analytics, AnalyticsEvent};
use crate::error::Result;
use crate::id::{RecordId, Timestamp, WorkspaceId};
use crate::record::{Record, RecordKind, UpsertOutcome};
use crate::store::RecordStore;
use crate::vector::{EmbeddingKind, VectorEntry, VectorIndex};

/// One logged write waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the log: increasing in the order entries were appended (commit order may differ
    /// on servers with concurrent writers, so consumers never use it as a cursor).
    pub seq: i64,
    /// The record's workspace.
    pub workspace: WorkspaceId,
    /// The record's kind.
    pub kind: RecordKind,
    /// The record's id.
    pub id: RecordId,
    /// When the write was logged.
    pub logged_at: Timestamp,
}

/// A pending entry and the record it names as stored now (`None` if no such record exists, e.g. a
/// delete of an id that was never written).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingWrite {
    /// The entry.
    pub entry: OutboxEntry,
    /// The current stored version, tombstones included.
    pub record: Option<Record>,
}

/// The outbox's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Entries not yet delivered.
    pub pending: u64,
    /// Entries set aside after a permanent delivery failure (kept for an operator).
    pub parked: u64,
    /// When the oldest pending entry was logged.
    pub oldest_pending: Option<Timestamp>,
}

/// A parked entry and why delivery failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedEntry {
    /// The entry.
    pub entry: OutboxEntry,
    /// The delivery error.
    pub error: String,
}

/// A record store with a durable outbox of its own writes.
///
/// # Behavior
/// - `upsert_logged` MUST behave exactly like `upsert` and, in the same transaction, append one entry
///   per record of the call and remove the pending entries named by `acks` (deliveries whose ack
///   rides on this write instead of a transaction of its own); when the upsert fails nothing is
///   appended and nothing removed.
/// - `delete_logged` MUST behave exactly like `delete` and, in the same transaction, append one entry
///   and remove the `acks` entries.
/// - `outbox_pending` MUST return pending entries in `seq` order (at most `limit`), each with the
///   record's current stored version, read after the entry was visible.
/// - `outbox_ack` MUST remove the given pending entries; unknown seqs are ignored.
/// - `outbox_park` MUST move an entry out of the pending set and keep it with its error;
///   `outbox_unpark` MUST return every parked entry to the pending set.
/// - `outbox_stats` MUST count pending and parked entries.
#[async_trait]
pub trait OutboxStore: RecordStore {
    /// `upsert` plus one outbox entry per record, and the removal of the delivered entries `acks`,
    /// in one transaction. Returns the new entries' seqs.
    async fn upsert_logged(
        &self,
        records: &[Record],
        acks: &[i64],
    ) -> Result<(UpsertOutcome, Vec<i64>)>;

    /// `delete` plus one outbox entry, and the removal of the delivered entries `acks`, in one
    /// transaction. Returns the entry's seq.
    async fn delete_logged(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
        acks: &[i64],
    ) -> Result<(bool, i64)>;

    /// Up to `limit` pending entries in `seq` order, with their records as stored now.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingWrite>>;

    /// Removes delivered entries.
    async fn outbox_ack(&self, seqs: &[i64]) -> Result<()>;

    /// Sets an entry aside after a permanent delivery failure.
    async fn outbox_park(&self, seq: i64, error: &str) -> Result<()>;

    /// Returns every parked entry to the pending set; returns how many.
    async fn outbox_unpark(&self) -> Result<u64>;

    /// Up to `limit` parked entries in `seq` order.
    async fn outbox_parked(&self, limit: usize) -> Result<Vec<ParkedEntry>>;

    /// Pending and parked counts.
    async fn outbox_stats(&self) -> Result<OutboxStats>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: OutboxStore + ?Sized> OutboxStore for Arc<T> {
    async fn upsert_logged(
        &self,
        records: &[Record],
        acks: &[i64],
    ) -> Result<(UpsertOutcome, Vec<i64>)> {
        (**self).upsert_logged(records, acks).await
    }
    async fn delete_logged(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
        acks: &[i64],
    ) -> Result<(bool, i64)> {
        (**self).delete_logged(workspace, kind, id, at, acks).await
    }
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<PendingWrite>> {
        (**self).outbox_pending(limit).await
    }
    async fn outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        (**self).outbox_ack(seqs).await
    }
    async fn outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        (**self).outbox_park(seq, error).await
    }
    async fn outbox_unpark(&self) -> Result<u64> {
        (**self).outbox_unpark().await
    }
    async fn outbox_parked(&self, limit: usize) -> Result<Vec<ParkedEntry>> {
        (**self).outbox_parked(limit).await
    }
    async fn outbox_stats(&self) -> Result<OutboxStats> {
        (**self).outbox_stats().await
    }
}

/// A pending analytics entry and the event it names as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    /// Position in the log.
    pub seq: i64,
    /// The stored event (`None` only if it vanished, e.g. by retention).
    pub event: Option<AnalyticsEvent>,
}

/// An analytics store with a durable outbox of the events it records (dual-write migrations).
///
/// # Behavior
/// - `record_logged` MUST behave exactly like `record` and, in the same transaction, append one entry
///   per event of the call and remove the pending entries named by `acks`; when it fails nothing is
///   appended and nothing removed.
/// - `event_outbox_pending` MUST return pending entries in `seq` order (at most `limit`) with their
///   stored events.
/// - `event_outbox_ack` MUST remove the given pending entries; `event_outbox_park` MUST move one out of
///   the pending set and `event_outbox_unpark` return every parked one to it; `event_outbox_stats`
///   MUST count pending and parked entries.
#[async_trait]
pub trait EventOutboxStore: Analytics {
    /// `record` plus one outbox entry per event, and the removal of `acks`, in one transaction.
    /// Returns the events newly stored and the new entries' seqs.
    async fn record_logged(
        &self,
        events: &[AnalyticsEvent],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)>;

    /// Up to `limit` pending entries in `seq` order, with their events.
    async fn event_outbox_pending(&self, limit: usize) -> Result<Vec<PendingEvent>>;

    /// Removes delivered entries.
    async fn event_outbox_ack(&self, seqs: &[i64]) -> Result<()>;

    /// Sets an entry aside after a permanent delivery failure.
    async fn event_outbox_park(&self, seq: i64, error: &str) -> Result<()>;

    /// Returns every parked entry to the pending set; returns how many.
    async fn event_outbox_unpark(&self) -> Result<u64>;

    /// Pending and parked counts.
    async fn event_outbox_stats(&self) -> Result<OutboxStats>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: EventOutboxStore + ?Sized> EventOutboxStore for Arc<T> {
    async fn record_logged(
        &self,
        events: &[AnalyticsEvent],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)> {
        (**self).record_logged(events, acks).await
    }
    async fn event_outbox_pending(&self, limit: usize) -> Result<Vec<PendingEvent>> {
        (**self).event_outbox_pending(limit).await
    }
    async fn event_outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        (**self).event_outbox_ack(seqs).await
    }
    async fn event_outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        (**self).event_outbox_park(seq, error).await
    }
    async fn event_outbox_unpark(&self) -> Result<u64> {
        (**self).event_outbox_unpark().await
    }
    async fn event_outbox_stats(&self) -> Result<OutboxStats> {
        (**self).event_outbox_stats().await
    }
}

/// What a vector outbox entry names: one embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VectorKey {
    /// The tenant.
    pub workspace: WorkspaceId,
    /// What the embedding belongs to.
    pub kind: EmbeddingKind,
    /// The record it embeds.
    pub id: RecordId,
}

impl VectorKey {
    /// The key of `entry`.
    pub fn of(entry: &VectorEntry) -> Self {
        VectorKey {
            workspace: entry.workspace,
            kind: entry.kind,
            id: entry.id,
        }
    }
}

/// A pending vector entry and the embedding it names as stored now (`None`: deleted, or never
/// written).
#[derive(Clone, Debug, PartialEq)]
pub struct PendingVector {
    /// Position in the log.
    pub seq: i64,
    /// The embedding the entry names.
    pub key: VectorKey,
    /// Its current stored version.
    pub entry: Option<VectorEntry>,
}

/// A vector index with a durable outbox of its own writes (dual-write migrations).
///
/// An entry names an embedding, not its content: whoever delivers it reads the embedding as stored
/// now and writes that, or deletes it on the other side when it is gone.
///
/// # Behavior
/// - `vector_upsert_logged` MUST behave exactly like `upsert` and, in the same transaction, append
///   one entry per entry of the call and remove the pending entries named by `acks`; when it fails
///   nothing is appended and nothing removed.
/// - `vector_delete_logged` MUST behave exactly like `delete` and, in the same transaction, append one
///   entry and remove the `acks` entries.
/// - `vector_outbox_pending` MUST return pending entries in `seq` order (at most `limit`), each with
///   the embedding as stored now, read after the entry was visible.
/// - `vector_entries` MUST return, for each key in order, the embedding as stored now.
/// - `vector_outbox_ack` MUST remove the given pending entries; `vector_outbox_park` MUST move one
///   out of the pending set and `vector_outbox_unpark` return every parked one to it;
///   `vector_outbox_stats` MUST count pending and parked entries.
#[async_trait]
pub trait VectorOutboxStore: VectorIndex {
    /// `upsert` plus one outbox entry per embedding, and the removal of `acks`, in one
    /// transaction. Returns the embeddings written and the new entries' seqs.
    async fn vector_upsert_logged(
        &self,
        entries: &[VectorEntry],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)>;

    /// `delete` plus one outbox entry, and the removal of `acks`, in one transaction. Returns
    /// whether an embedding was removed and the entry's seq.
    async fn vector_delete_logged(&self, key: VectorKey, acks: &[i64]) -> Result<(bool, i64)>;

    /// Up to `limit` pending entries in `seq` order, with their embeddings as stored now.
    async fn vector_outbox_pending(&self, limit: usize) -> Result<Vec<PendingVector>>;

    /// The embeddings of `keys` as stored now, in the order of `keys`.
    async fn vector_entries(&self, keys: &[VectorKey]) -> Result<Vec<Option<VectorEntry>>>;

    /// Removes delivered entries.
    async fn vector_outbox_ack(&self, seqs: &[i64]) -> Result<()>;

    /// Sets an entry aside after a permanent delivery failure.
    async fn vector_outbox_park(&self, seq: i64, error: &str) -> Result<()>;

    /// Returns every parked entry to the pending set; returns how many.
    async fn vector_outbox_unpark(&self) -> Result<u64>;

    /// Pending and parked counts.
    async fn vector_outbox_stats(&self) -> Result<OutboxStats>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: VectorOutboxStore + ?Sized> VectorOutboxStore for Arc<T> {
    async fn vector_upsert_logged(
        &self,
        entries: &[VectorEntry],
        acks: &[i64],
    ) -> Result<(u64, Vec<i64>)> {
        (**self).vector_upsert_logged(entries, acks).await
    }
    async fn vector_delete_logged(&self, key: VectorKey, acks: &[i64]) -> Result<(bool, i64)> {
        (**self).vector_delete_logged(key, acks).await
    }
    async fn vector_outbox_pending(&self, limit: usize) -> Result<Vec<PendingVector>> {
        (**self).vector_outbox_pending(limit).await
    }
    async fn vector_entries(&self, keys: &[VectorKey]) -> Result<Vec<Option<VectorEntry>>> {
        (**self).vector_entries(keys).await
    }
    async fn vector_outbox_ack(&self, seqs: &[i64]) -> Result<()> {
        (**self).vector_outbox_ack(seqs).await
    }
    async fn vector_outbox_park(&self, seq: i64, error: &str) -> Result<()> {
        (**self).vector_outbox_park(seq, error).await
    }
    async fn vector_outbox_unpark(&self) -> Result<u64> {
        (**self).vector_outbox_unpark().await
    }
    async fn vector_outbox_stats(&self) -> Result<OutboxStats> {
        (**self).vector_outbox_stats().await
    }
}
