//! Fault-injecting wrappers of [`RecordStore`], [`Analytics`] and [`VectorIndex`]: drives the failure paths of layers deterministically
//! (the idea of Sentry objectstore's `TestBackend<Hooks>`). Never a stand-in for a backend: it wraps
//! a real one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sprintlens_core::*;

/// The faults in force; change them while a test runs.
#[derive(Debug, Default)]
pub struct Faults {
    down: AtomicBool,
    fail_next: AtomicU64,
    delay_ms: AtomicU64,
    refuse: Mutex<HashSet<RecordId>>,
    writes: AtomicU64,
    held: AtomicBool,
    holding: AtomicU64,
    release: tokio::sync::Notify,
}

impl Faults {
    /// Every call fails as unreachable (retryable) while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    /// The next `n` writes fail as unreachable (retryable).
    pub fn fail_next_writes(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    /// Every call first sleeps this long.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// Writes that include `id` fail with a conflict (permanent).
    pub fn refuse(&self, id: RecordId) {
        self.refuse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }
    /// Writes that reached the inner store.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
    /// While `hold`, the wrapper's held writes ([`FaultyVectorIndex`]'s upserts) wait; releasing
    /// lets every waiting one through.
    pub fn hold(&self, hold: bool) {
        self.held.store(hold, Ordering::SeqCst);
        if !hold {
            self.release.notify_waiters();
        }
    }
    /// Writes waiting behind [`Self::hold`] now.
    pub fn holding(&self) -> u64 {
        self.holding.load(Ordering::SeqCst)
    }

    async fn gate(&self) {
        self.holding.fetch_add(1, Ordering::SeqCst);
        loop {
            let released = self.release.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.held.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
        self.holding.fetch_sub(1, Ordering::SeqCst);
    }

    async fn enter(&self, backend: &'static str, operation: &'static str) -> Result<()> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                backend,
                operation,
                true,
                Some("injected: down".into()),
            ));
        }
        Ok(())
    }

    async fn write(&self, backend: &'static str, ids: &[RecordId]) -> Result<()> {
        self.enter(backend, "write").await?;
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::unavailable(
                backend,
                "write",
                true,
                Some("injected: one failed write".into()),
            ));
        }
        let refused = self.refuse.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = ids.iter().find(|id| refused.contains(id)) {
            return Err(Error::conflict(format!("injected: {id} is refused")));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A [`RecordStore`] that consults [`Faults`] before passing each call to the real store it wraps.
#[derive(Debug)]
pub struct FaultyRecordStore {
    inner: Arc<dyn RecordStore>,
    faults: Arc<Faults>,
}

impl FaultyRecordStore {
    /// Wraps `inner`; returns the store and its fault switches.
    pub fn new(inner: Arc<dyn RecordStore>) -> (Arc<Self>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Arc::new(FaultyRecordStore {
                inner,
                faults: faults.clone(),
            }),
            faults,
        )
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl RecordStore for FaultyRecordStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let ids: Vec<RecordId> = records.iter().map(|r| r.id).collect();
        self.faults.write(self.backend(), &ids).await?;
        self.inner.upsert(records).await
    }
    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        self.faults.enter(self.backend(), "get").await?;
        self.inner.get(workspace, kind, id).await
    }
    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        self.faults.enter(self.backend(), "list").await?;
        self.inner.list(workspace, query).await
    }
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        self.faults.write(self.backend(), &[id]).await?;
        self.inner.delete(workspace, kind, id, at).await
    }
    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        self.faults.enter(self.backend(), "scan").await?;
        self.inner.scan(request).await
    }
    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        self.faults.enter(self.backend(), "count").await?;
        self.inner.count(kind, workspace).await
    }
    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        self.faults.enter(self.backend(), "split").await?;
        self.inner.split(kind, parts).await
    }
}

/// Every record of `workspace` (tombstones included), all kinds, in `(kind, updated_at, id)` order:
/// what two stores must agree on after a migration.
pub async fn snapshot(store: &dyn RecordStore, workspace: WorkspaceId) -> Vec<Record> {
    let mut out = Vec::new();
    for kind in RecordKind::ALL {
        let mut after = None;
        loop {
            let batch = store
                .scan(&ScanRequest {
                    kind: *kind,
                    workspace: Some(workspace),
                    after,
                    limit: 1000,
                })
                .await
                .unwrap();
            let Some(last) = batch.last() else { break };
            after = Some(last.cursor());
            out.extend(batch);
        }
    }
    out
}

/// An [`Analytics`] that consults [`Faults`] before passing each call to the real store it wraps
/// (`record` counts as a write; queries as reads).
#[derive(Debug)]
pub struct FaultyAnalytics {
    inner: Arc<dyn Analytics>,
    faults: Arc<Faults>,
}

impl FaultyAnalytics {
    /// Wraps `inner`; returns the store and its fault switches.
    pub fn new(inner: Arc<dyn Analytics>) -> (Arc<Self>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Arc::new(FaultyAnalytics {
                inner,
                faults: faults.clone(),
            }),
            faults,
        )
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Analytics for FaultyAnalytics {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn quantile_method(&self) -> QuantileMethod {
        self.inner.quantile_method()
    }
    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        self.faults.write(self.backend(), &[]).await?;
        self.inner.record(events).await
    }
    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        self.faults.enter(self.backend(), "eval_summary").await?;
        self.inner.eval_summary(workspace, run).await
    }
    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        self.faults.enter(self.backend(), "metric_series").await?;
        self.inner.metric_series(workspace, query).await
    }
    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        self.faults.enter(self.backend(), "cost_breakdown").await?;
        self.inner.cost_breakdown(workspace, query).await
    }
    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        self.faults.enter(self.backend(), "latency").await?;
        self.inner.latency(workspace, query).await
    }
    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        self.faults.enter(self.backend(), "scan").await?;
        self.inner.scan(kind, after, limit).await
    }
    async fn count(&self, kind: EventKind) -> Result<u64> {
        self.faults.enter(self.backend(), "count").await?;
        self.inner.count(kind).await
    }
}

/// A [`VectorIndex`] that consults [`Faults`] before passing each call to the real index it wraps
/// (`upsert` and `delete` count as writes, and an `upsert` waits while [`Faults::hold`] is on).
#[derive(Debug)]
pub struct FaultyVectorIndex {
    inner: Arc<dyn VectorIndex>,
    faults: Arc<Faults>,
}

impl FaultyVectorIndex {
    /// Wraps `inner`; returns the index and its fault switches.
    pub fn new(inner: Arc<dyn VectorIndex>) -> (Arc<Self>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Arc::new(FaultyVectorIndex {
                inner,
                faults: faults.clone(),
            }),
            faults,
        )
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl VectorIndex for FaultyVectorIndex {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64> {
        let ids: Vec<RecordId> = entries.iter().map(|e| e.id).collect();
        self.faults.write(self.backend(), &ids).await?;
        self.faults.gate().await;
        self.inner.upsert(entries).await
    }
    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: EmbeddingKind,
        id: RecordId,
    ) -> Result<bool> {
        self.faults.write(self.backend(), &[id]).await?;
        self.inner.delete(workspace, kind, id).await
    }
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>> {
        self.faults.enter(self.backend(), "search").await?;
        self.inner.search(query).await
    }
    async fn count(&self, workspace: WorkspaceId) -> Result<u64> {
        self.faults.enter(self.backend(), "count").await?;
        self.inner.count(workspace).await
    }
    async fn count_all(&self) -> Result<u64> {
        self.faults.enter(self.backend(), "count").await?;
        self.inner.count_all().await
    }
    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>> {
        self.faults.enter(self.backend(), "scan").await?;
        self.inner.scan_entries(after, limit).await
    }
}
