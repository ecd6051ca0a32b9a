//! Layers: plain structs that implement a port by wrapping another.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sprintlens_core::*;

/// `RecordStore` with `get` read through a [`Cache`], invalidated after every write commits.
///
/// Keys: namespace `record`, key `{kind}:{id}` in the record's workspace; values are versioned JSON
/// (`{"v": 1, "record": …}`, absent records cached too) so a format change never decodes old bytes
/// (an unknown version is dropped and read from the store). A write deletes the keys it touched after
/// the store commits; if the cache cannot be reached the cache remembers the invalidation (see the
/// adapter). Lists, scans and counts go straight to the store.
#[derive(Debug)]
pub struct CachedRecordStore {
    inner: Arc<dyn RecordStore>,
    cache: Arc<dyn Cache>,
    ttl: Duration,
}

impl CachedRecordStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RecordStore>, cache: Arc<dyn Cache>, ttl: Duration) -> Self {
        CachedRecordStore { inner, cache, ttl }
    }

    fn key(ws: WorkspaceId, kind: RecordKind, id: RecordId) -> Result<CacheKey> {
        CacheKey::new(ws, "record", &format!("{kind}:{id}"))
    }

    async fn invalidate(&self, keys: Vec<(WorkspaceId, RecordKind, RecordId)>) {
        for (ws, kind, id) in keys {
            if let Ok(k) = Self::key(ws, kind, id) {
                // A failed delete is remembered by fail-open caches; the write itself has committed.
                let _ = self.cache.delete(&k).await;
            }
        }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl RecordStore for CachedRecordStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let out = self.inner.upsert(records).await?;
        let keys = records
            .iter()
            .map(|r| (r.workspace, r.kind(), r.id))
            .collect();
        self.invalidate(keys).await;
        Ok(out)
    }

    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        let key = Self::key(workspace, kind, id)?;
        let inner = self.inner.clone();
        let bytes = self
            .cache
            .get_or_load(
                &key,
                self.ttl,
                Box::new(move || {
                    Box::pin(async move {
                        let r = inner.get(workspace, kind, id).await?;
                        serde_json::to_vec(&json!({"v": 1, "record": r}))
                            .map(Bytes::from)
                            .map_err(|e| Error::backend("cache", "encode", e))
                    })
                }),
            )
            .await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) if v.get("v") == Some(&json!(1)) => serde_json::from_value(v["record"].clone())
                .map_err(|e| Error::backend("cache", "decode", e)),
            _ => {
                let _ = self.cache.delete(&key).await;
                self.inner.get(workspace, kind, id).await
            }
        }
    }

    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        self.inner.list(workspace, query).await
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        let out = self.inner.delete(workspace, kind, id, at).await?;
        self.invalidate(vec![(workspace, kind, id)]).await;
        Ok(out)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        self.inner.scan(request).await
    }

    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        self.inner.count(kind, workspace).await
    }

    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        self.inner.split(kind, parts).await
    }
}
