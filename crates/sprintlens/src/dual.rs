//! The migration layers: dual-write with a durable outbox and a reconciler, and shadow reads.
//!
//! # Dual-write protocol
//! 1. **Commit point**: the primary (the store of record) applies the write and appends one outbox
//!    entry per record *in the same transaction* ([`OutboxStore::upsert_logged`]). When that commits,
//!    the caller's write is acknowledged with the primary's result. Nothing else can fail the call.
//! 2. **Delivery**: with `write_wait` > 0 the caller also tries the secondary itself, for at most
//!    `write_wait`, and acks its entries when the secondary accepted them; otherwise (and whenever
//!    that attempt fails or times out) the [`Reconciler`] delivers the entries in the background.
//! 3. **Reconciler**: reads pending entries with each record's *current* version on the primary
//!    (tombstones included), upserts those into the secondary, then acks the entries. A retryable
//!    failure (unreachable, timed out) keeps the entries and backs off; a permanent one (conflict,
//!    invalid) is isolated record by record and parks only the failing record's entries, which
//!    `sprintlens migrate status` shows. Upserts keep the newer `updated_at`, so a delivery repeated
//!    after a crash (between the secondary's commit and the ack), a delivery racing the caller's own,
//!    or two processes delivering the same log all converge on the same state.
//! 4. Reads, lists, scans and counts are served by the primary alone.
//!
//! Analytics events ([`DualWriteAnalytics`]) and embeddings ([`DualWriteVectorIndex`]) follow the
//! same protocol through outboxes of their own; an embedding delivery also reads its keys again
//! after writing, since a delete leaves no version to compare with (see [`VectorDelivery`]).
//!
//! # Shadow reads
//! [`ShadowReadRecordStore`] serves `get` and `list` from the primary and, for a sampled share of
//! calls, runs the same read on the secondary in the background and compares (GitHub Scientist's
//! experiment). A difference is checked again after the reconciler has delivered what was pending
//! (so replication lag is not counted) and only then counted and logged with the ids involved.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sprintlens_core::*;
use tokio::sync::Notify;

/// How the reconciler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconcilerOptions {
    /// Entries read per delivery.
    pub batch: usize,
    /// How often the log is polled when nobody nudges (entries of other processes, restarts).
    pub poll: Duration,
    /// Deadline of one delivery to the secondary; past it the delivery counts as failed (retryable).
    pub deliver_timeout: Duration,
    /// The longest pause between retries after failures (doubling from 50 ms).
    pub max_backoff: Duration,
    /// How long a nudged reconciler waits for more writes before it reads the outbox, so a busy
    /// writer's entries are delivered in batches.
    pub linger: Duration,
    /// How long a delivered entry's ack may wait to ride on the next write's transaction before the
    /// reconciler removes it with a transaction of its own.
    pub ack_delay: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            batch: 500,
            poll: Duration::from_secs(1),
            deliver_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            linger: Duration::from_millis(200),
            ack_delay: Duration::from_millis(200),
        }
    }
}

/// What the reconciler has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcilerStats {
    /// Entries delivered and acked.
    pub delivered: u64,
    /// Entries parked after permanent failures.
    pub parked: u64,
    /// Failed delivery attempts (retried).
    pub failures: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// What a [`Reconciler`] moves: one outbox, read with each entry's item as stored now, and the
/// store the items go to.
#[async_trait]
pub trait Delivery: Send + Sync + std::fmt::Debug + 'static {
    /// What an entry names, read from the primary: a record, an event.
    type Item: Clone + Send + Sync + 'static;
    /// An item's identity: entries naming the same item are sent once per batch.
    type Key: std::hash::Hash + Eq + Copy + Send + Sync + 'static;
    /// The identity of `item`.
    fn key(item: &Self::Item) -> Self::Key;
    /// The secondary's backend name (for errors).
    fn target_backend(&self) -> &'static str;
    /// Up to `limit` pending entries in seq order: `(seq, the item as stored now)`.
    async fn pending(&self, limit: usize) -> Result<Vec<(i64, Option<Self::Item>)>>;
    /// Removes delivered entries.
    async fn ack(&self, seqs: &[i64]) -> Result<()>;
    /// Sets an entry aside after a permanent failure.
    async fn park(&self, seq: i64, error: &str) -> Result<()>;
    /// The outbox's depth.
    async fn stats(&self) -> Result<OutboxStats>;
    /// Writes items to the secondary (idempotently).
    async fn send(&self, items: &[Self::Item]) -> Result<()>;
}

/// Records: a [`OutboxStore`]'s log delivered to a [`RecordStore`].
#[derive(Debug)]
pub struct RecordDelivery {
    source: Arc<dyn OutboxStore>,
    target: Arc<dyn RecordStore>,
}

#[async_trait]
impl Delivery for RecordDelivery {
    type Item = Record;
    type Key = RecordId;
    fn key(item: &Record) -> RecordId {
        item.id
    }
    fn target_backend(&self) -> &'static str {
        self.target.backend()
    }
    async fn pending(&self, limit: usize) -> Result<Vec<(i64, Option<Record>)>> {
        Ok(self
            .source
            .outbox_pending(limit)
            .await?
            .into_iter()
            .map(|p| (p.entry.seq, p.record))
            .collect())
    }
    async fn ack(&self, seqs: &[i64]) -> Result<()> {
        self.source.outbox_ack(seqs).await
    }
    async fn park(&self, seq: i64, error: &str) -> Result<()> {
        self.source.outbox_park(seq, error).await
    }
    async fn stats(&self) -> Result<OutboxStats> {
        self.source.outbox_stats().await
    }
    async fn send(&self, items: &[Record]) -> Result<()> {
        self.target.upsert(items).await.map(|_| ())
    }
}

/// Analytics events: an [`EventOutboxStore`]'s log delivered to another [`Analytics`].
#[derive(Debug)]
pub struct EventDelivery {
    source: Arc<dyn EventOutboxStore>,
    target: Arc<dyn Analytics>,
}

#[async_trait]
impl Delivery for EventDelivery {
    type Item = AnalyticsEvent;
    type Key = EventId;
    fn key(item: &AnalyticsEvent) -> EventId {
        item.id()
    }
    fn target_backend(&self) -> &'static str {
        self.target.backend()
    }
    async fn pending(&self, limit: usize) -> Result<Vec<(i64, Option<AnalyticsEvent>)>> {
        Ok(self
            .source
            .event_outbox_pending(limit)
            .await?
            .into_iter()
            .map(|p| (p.seq, p.event))
            .collect())
    }
    async fn ack(&self, seqs: &[i64]) -> Result<()> {
        self.source.event_outbox_ack(seqs).await
    }
    async fn park(&self, seq: i64, error: &str) -> Result<()> {
        self.source.event_outbox_park(seq, error).await
    }
    async fn stats(&self) -> Result<OutboxStats> {
        self.source.event_outbox_stats().await
    }
    async fn send(&self, items: &[AnalyticsEvent]) -> Result<()> {
        self.target.record(items).await.map(|_| ())
    }
}

impl Reconciler<EventDelivery> {
    /// A reconciler from `source`'s event outbox to `target` (not started).
    pub fn events(
        source: Arc<dyn EventOutboxStore>,
        target: Arc<dyn Analytics>,
        options: ReconcilerOptions,
    ) -> Arc<Self> {
        Self::with(EventDelivery { source, target }, options)
    }
}

/// One embedding carried to the secondary: as the primary stores it now, or `None` (deleted there).
#[derive(Clone, Debug, PartialEq)]
pub struct VectorChange {
    /// The embedding.
    pub key: VectorKey,
    /// Its version on the primary.
    pub entry: Option<VectorEntry>,
}

/// Rounds of [`VectorDelivery::send`]'s re-read before it leaves further changes to their own
/// entries.
const VECTOR_RECHECK_ROUNDS: usize = 3;

/// Embeddings: a [`VectorOutboxStore`]'s log delivered to another [`VectorIndex`].
#[derive(Debug)]
pub struct VectorDelivery {
    source: Arc<dyn VectorOutboxStore>,
    target: Arc<dyn VectorIndex>,
}

impl VectorDelivery {
    /// Writes `changes` to the target: the upserts in one call, then each delete.
    async fn apply(&self, changes: &[VectorChange]) -> Result<()> {
        let upserts: Vec<VectorEntry> = changes.iter().filter_map(|c| c.entry.clone()).collect();
        if !upserts.is_empty() {
            self.target.upsert(&upserts).await?;
        }
        for c in changes.iter().filter(|c| c.entry.is_none()) {
            self.target
                .delete(c.key.workspace, c.key.kind, c.key.id)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Delivery for VectorDelivery {
    type Item = VectorChange;
    type Key = VectorKey;
    fn key(item: &VectorChange) -> VectorKey {
        item.key
    }
    fn target_backend(&self) -> &'static str {
        self.target.backend()
    }
    async fn pending(&self, limit: usize) -> Result<Vec<(i64, Option<VectorChange>)>> {
        Ok(self
            .source
            .vector_outbox_pending(limit)
            .await?
            .into_iter()
            .map(|p| {
                (
                    p.seq,
                    Some(VectorChange {
                        key: p.key,
                        entry: p.entry,
                    }),
                )
            })
            .collect())
    }
    async fn ack(&self, seqs: &[i64]) -> Result<()> {
        self.source.vector_outbox_ack(seqs).await
    }
    async fn park(&self, seq: i64, error: &str) -> Result<()> {
        self.source.vector_outbox_park(seq, error).await
    }
    async fn stats(&self) -> Result<OutboxStats> {
        self.source.vector_outbox_stats().await
    }
    /// Upserts keep the newer `updated_at`, but a delete leaves nothing to compare with: an upsert
    /// read before a delete and landing after it would bring the embedding back on the secondary.
    /// So after writing, the keys are read again on the primary and whatever changed meanwhile is
    /// written too, until nothing did (bounded; a later change also has an entry of its own).
    async fn send(&self, items: &[VectorChange]) -> Result<()> {
        let mut round = items.to_vec();
        for _ in 0..VECTOR_RECHECK_ROUNDS {
            self.apply(&round).await?;
            let keys: Vec<VectorKey> = round.iter().map(|c| c.key).collect();
            let now = self.source.vector_entries(&keys).await?;
            round = round
                .into_iter()
                .zip(now)
                .filter(|(sent, now)| {
                    sent.entry.as_ref().map(|e| e.updated_at) != now.as_ref().map(|e| e.updated_at)
                })
                .map(|(sent, now)| VectorChange {
                    key: sent.key,
                    entry: now,
                })
                .collect();
            if round.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

impl Reconciler<VectorDelivery> {
    /// A reconciler from `source`'s vector outbox to `target` (not started).
    pub fn vectors(
        source: Arc<dyn VectorOutboxStore>,
        target: Arc<dyn VectorIndex>,
        options: ReconcilerOptions,
    ) -> Arc<Self> {
        Self::with(VectorDelivery { source, target }, options)
    }
}

/// Delivers the primary's outbox to the secondary. See the module docs for the protocol.
#[derive(Debug)]
pub struct Reconciler<D: Delivery = RecordDelivery> {
    delivery: D,
    options: ReconcilerOptions,
    nudge: Notify,
    /// Serialises deliveries of this process (the loop, `drain`).
    delivering: tokio::sync::Mutex<()>,
    delivered: AtomicU64,
    parked: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    acks: Mutex<Acks>,
}

/// Delivered entries not yet removed from the outbox. Their removal rides on the next write's
/// transaction ([`OutboxStore::upsert_logged`]'s `acks`) or, after `ack_delay`, on one of the
/// reconciler's own; until then they are skipped when the outbox is read.
#[derive(Debug, Default)]
struct Acks {
    /// Not yet taken by a write.
    unflushed: Vec<i64>,
    /// When the oldest unflushed one was delivered.
    since: Option<Instant>,
    /// Every delivered entry not yet known removed (unflushed or riding on a write in flight).
    delivered: std::collections::HashSet<i64>,
    /// Entries removed since the current outbox read began (it may still see them).
    removed: std::collections::HashSet<i64>,
}

/// Acks taken by a write: confirmed when its transaction commits, returned otherwise (also when
/// the write's future is dropped).
struct AckLease<'a, D: Delivery> {
    reconciler: &'a Reconciler<D>,
    seqs: Vec<i64>,
    settled: bool,
}

impl<D: Delivery> AckLease<'_, D> {
    fn settle(mut self, committed: bool) {
        self.reconciler.acks_settled(&self.seqs, committed);
        self.settled = true;
    }
}

impl<D: Delivery> Drop for AckLease<'_, D> {
    fn drop(&mut self) {
        if !self.settled {
            self.reconciler.acks_settled(&self.seqs, false);
        }
    }
}

/// Stops the reconciler's task when the last layer holding it is dropped.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Reconciler<RecordDelivery> {
    /// A reconciler from `source`'s outbox to `target` (not started).
    pub fn new(
        source: Arc<dyn OutboxStore>,
        target: Arc<dyn RecordStore>,
        options: ReconcilerOptions,
    ) -> Arc<Self> {
        Self::with(RecordDelivery { source, target }, options)
    }
}

impl<D: Delivery> Reconciler<D> {
    /// A reconciler of `delivery` (not started).
    pub fn with(delivery: D, options: ReconcilerOptions) -> Arc<Self> {
        Arc::new(Reconciler {
            delivery,
            options,
            nudge: Notify::new(),
            delivering: tokio::sync::Mutex::new(()),
            delivered: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            acks: Mutex::default(),
        })
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records delivered entries; their removal is left to the next write or [`Self::flush_acks`].
    fn delivered(&self, seqs: &[i64]) {
        let mut a = self.acks();
        a.unflushed.extend_from_slice(seqs);
        a.delivered.extend(seqs.iter().copied());
        a.since.get_or_insert_with(Instant::now);
        self.delivered
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
    }

    /// Takes the unflushed acks for a write to carry.
    fn lease_acks(&self) -> AckLease<'_, D> {
        let mut a = self.acks();
        a.since = None;
        AckLease {
            reconciler: self,
            seqs: std::mem::take(&mut a.unflushed),
            settled: false,
        }
    }

    fn acks_settled(&self, seqs: &[i64], removed: bool) {
        if seqs.is_empty() {
            return;
        }
        let mut a = self.acks();
        if removed {
            for s in seqs {
                a.delivered.remove(s);
                a.removed.insert(*s);
            }
        } else {
            a.unflushed.extend_from_slice(seqs);
            a.since.get_or_insert_with(Instant::now);
        }
    }

    fn acks_due(&self) -> bool {
        let a = self.acks();
        !a.unflushed.is_empty()
            && (a.unflushed.len() >= self.options.batch / 2
                || a.since
                    .is_some_and(|t| t.elapsed() >= self.options.ack_delay))
    }

    /// Removes every delivered entry whose ack has not ridden on a write yet.
    pub async fn flush_acks(&self) -> Result<()> {
        let lease = self.lease_acks();
        if lease.seqs.is_empty() {
            lease.settle(true);
            return Ok(());
        }
        let out = self.delivery.ack(&lease.seqs).await;
        lease.settle(out.is_ok());
        out
    }

    /// After a write logged `seqs`: tries the secondary with `send` for at most `wait` (0: not at
    /// all) and marks the entries delivered when it accepted; otherwise wakes the background loop.
    pub(crate) async fn deliver_inline(
        &self,
        wait: Duration,
        seqs: &[i64],
        send: impl Future<Output = Result<()>>,
    ) {
        if !wait.is_zero() && matches!(tokio::time::timeout(wait, send).await, Ok(Ok(()))) {
            // Removed by a later write's transaction, or by the reconciler.
            self.delivered(seqs);
        } else {
            self.nudge();
        }
    }

    /// The depth of the outbox this reconciler delivers.
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.delivery.stats().await
    }

    /// Wakes the background loop (a write was just logged).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Counters since start.
    pub fn stats(&self) -> ReconcilerStats {
        ReconcilerStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Starts the background loop on the current Tokio runtime; it stops when the returned guard's
    /// last holder drops it.
    fn spawn(self: &Arc<Self>) -> Arc<TaskGuard> {
        let me = self.clone();
        Arc::new(TaskGuard(tokio::spawn(async move { me.run().await })))
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let idle = if self.acks().unflushed.is_empty() {
                self.options.poll
            } else {
                self.options.ack_delay
            };
            tokio::select! {
                _ = self.nudge.notified() => tokio::time::sleep(self.options.linger).await,
                _ = tokio::time::sleep(idle) => {}
            }
            loop {
                match self.deliver_once().await {
                    Ok(0) => break,
                    Ok(_) => backoff = Duration::from_millis(50),
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.options.max_backoff);
                    }
                }
            }
        }
    }

    fn failed(&self, e: &Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    async fn send(&self, items: &[D::Item]) -> Result<()> {
        match tokio::time::timeout(self.options.deliver_timeout, self.delivery.send(items)).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(
                self.delivery.target_backend(),
                "deliver",
                true,
                Some("the secondary did not answer within deliver_timeout".into()),
            )),
        }
    }

    /// Delivers one batch of pending entries; returns how many entries it settled (delivered or
    /// parked), 0 when the log was empty. A retryable failure is returned (entries stay pending).
    pub async fn deliver_once(&self) -> Result<usize> {
        let _one = self.delivering.lock().await;
        let out = self.deliver_batch().await;
        match &out {
            Ok(_) => *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None,
            Err(e) => self.failed(e),
        }
        out
    }

    /// Pending entries not delivered already (whose acks are still on their way).
    async fn undelivered(&self) -> Result<Vec<(i64, Option<D::Item>)>> {
        if self.acks_due() {
            self.flush_acks().await?;
        }
        // A read sees every entry removed before it began; entries removed while it runs are
        // remembered until the next read begins.
        let read_pending = || async {
            self.acks().removed.clear();
            let mut read = self.delivery.pending(self.options.batch).await?;
            let full = read.len() == self.options.batch;
            let a = self.acks();
            read.retain(|(seq, _)| !a.delivered.contains(seq) && !a.removed.contains(seq));
            Ok::<_, Error>((read, full))
        };
        let (mut read, full) = read_pending().await?;
        if read.is_empty() && full {
            // A page of delivered entries: remove them, then look past them.
            self.flush_acks().await?;
            read = read_pending().await?.0;
        }
        Ok(read)
    }

    async fn deliver_batch(&self) -> Result<usize> {
        let pending = self.undelivered().await?;
        if pending.is_empty() {
            if self.acks_due() {
                self.flush_acks().await?;
            }
            return Ok(0);
        }
        // One write per item (its current version), in the order of its first entry.
        let mut order: Vec<D::Key> = Vec::new();
        let mut by_id: HashMap<D::Key, (D::Item, Vec<i64>)> = HashMap::new();
        let mut nothing_to_send = Vec::new();
        for (seq, item) in &pending {
            match item {
                Some(r) => by_id
                    .entry(D::key(r))
                    .or_insert_with(|| {
                        order.push(D::key(r));
                        (r.clone(), Vec::new())
                    })
                    .1
                    .push(*seq),
                None => nothing_to_send.push(*seq),
            }
        }
        let items: Vec<D::Item> = order.iter().map(|id| by_id[id].0.clone()).collect();
        match self.send(&items).await {
            Ok(_) => {
                let seqs: Vec<i64> = pending.iter().map(|(seq, _)| *seq).collect();
                self.delivered(&seqs);
                return Ok(seqs.len());
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(_) => {}
        }
        // A permanent failure somewhere in the batch: find it item by item.
        self.delivered(&nothing_to_send);
        let mut settled = nothing_to_send.len();
        for id in order {
            let (item, seqs) = &by_id[&id];
            match self.send(std::slice::from_ref(item)).await {
                Ok(_) => self.delivered(seqs),
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    for s in seqs {
                        self.delivery.park(*s, &e.to_string()).await?;
                    }
                    self.parked.fetch_add(seqs.len() as u64, Ordering::Relaxed);
                }
            }
            settled += seqs.len();
        }
        Ok(settled)
    }

    /// Delivers until the log has nothing pending, or fails when `deadline` passes first (with the
    /// last delivery error, if any).
    pub async fn drain(&self, deadline: Duration) -> Result<()> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            let step = tokio::time::timeout(left, self.deliver_once()).await;
            match step {
                Ok(Ok(0)) => match self.flush_acks().await {
                    Ok(()) => return Ok(()),
                    Err(e) if start.elapsed() + backoff >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(backoff).await,
                },
                Ok(Ok(_)) => {}
                Ok(Err(e)) if start.elapsed() + backoff >= deadline => return Err(e),
                Ok(Err(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(_) => {
                    let stats = self.delivery.stats().await?;
                    return Err(Error::unavailable(
                        self.delivery.target_backend(),
                        "drain",
                        true,
                        Some(
                            format!(
                                "{} outbox entries still pending after {deadline:?}",
                                stats.pending
                            )
                            .into(),
                        ),
                    ));
                }
            }
        }
    }
}

/// `RecordStore` writing to a primary with an outbox and delivering to a secondary. See the module
/// docs for the protocol.
#[derive(Debug)]
pub struct DualWriteRecordStore {
    primary: Arc<dyn OutboxStore>,
    secondary: Arc<dyn RecordStore>,
    reconciler: Arc<Reconciler>,
    write_wait: Duration,
    _task: Option<Arc<TaskGuard>>,
}

impl DualWriteRecordStore {
    /// Composes the layer and starts its reconciler on the current Tokio runtime. `write_wait` is
    /// how long a caller may wait for the secondary (0: never; the reconciler delivers).
    pub fn start(
        primary: Arc<dyn OutboxStore>,
        secondary: Arc<dyn RecordStore>,
        write_wait: Duration,
        options: ReconcilerOptions,
    ) -> Self {
        let reconciler = Reconciler::new(primary.clone(), secondary.clone(), options);
        let task = reconciler.spawn();
        reconciler.nudge(); // Entries left by an earlier process.
        DualWriteRecordStore {
            primary,
            secondary,
            reconciler,
            write_wait,
            _task: Some(task),
        }
    }

    /// Composes the layer without a background loop: entries stay pending until
    /// [`Reconciler::deliver_once`] or [`Reconciler::drain`] runs (deterministic tests).
    pub fn manual(
        primary: Arc<dyn OutboxStore>,
        secondary: Arc<dyn RecordStore>,
        write_wait: Duration,
        options: ReconcilerOptions,
    ) -> Self {
        DualWriteRecordStore {
            reconciler: Reconciler::new(primary.clone(), secondary.clone(), options),
            primary,
            secondary,
            write_wait,
            _task: None,
        }
    }

    /// The reconciler delivering this layer's outbox.
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }

    async fn deliver_inline(&self, seqs: &[i64], send: impl Future<Output = Result<()>>) {
        self.reconciler
            .deliver_inline(self.write_wait, seqs, send)
            .await
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl RecordStore for DualWriteRecordStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        let acks = self.reconciler.lease_acks();
        let written = self.primary.upsert_logged(records, &acks.seqs).await;
        acks.settle(written.is_ok());
        let (out, seqs) = written?;
        self.deliver_inline(&seqs, async {
            self.secondary.upsert(records).await.map(|_| ())
        })
        .await;
        Ok(out)
    }

    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        self.primary.get(workspace, kind, id).await
    }

    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        self.primary.list(workspace, query).await
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        let acks = self.reconciler.lease_acks();
        let written = self
            .primary
            .delete_logged(workspace, kind, id, at, &acks.seqs)
            .await;
        acks.settle(written.is_ok());
        let (deleted, seq) = written?;
        // The secondary may not hold the record yet; its pending create entry (if any) delivers the
        // tombstone, since entries carry the current version.
        self.deliver_inline(&[seq], async {
            self.secondary
                .delete(workspace, kind, id, at)
                .await
                .map(|_| ())
        })
        .await;
        Ok(deleted)
    }

    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        self.primary.scan(request).await
    }

    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        self.primary.count(kind, workspace).await
    }

    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        self.primary.split(kind, parts).await
    }
}

/// `Analytics` recording to a primary with an event outbox and delivering to a secondary, by the
/// same protocol as [`DualWriteRecordStore`]. Queries and scans are served by the primary.
#[derive(Debug)]
pub struct DualWriteAnalytics {
    primary: Arc<dyn EventOutboxStore>,
    secondary: Arc<dyn Analytics>,
    reconciler: Arc<Reconciler<EventDelivery>>,
    write_wait: Duration,
    _task: Arc<TaskGuard>,
}

impl DualWriteAnalytics {
    /// Composes the layer and starts its reconciler on the current Tokio runtime.
    pub fn start(
        primary: Arc<dyn EventOutboxStore>,
        secondary: Arc<dyn Analytics>,
        write_wait: Duration,
        options: ReconcilerOptions,
    ) -> Self {
        let reconciler = Reconciler::events(primary.clone(), secondary.clone(), options);
        let task = reconciler.spawn();
        reconciler.nudge();
        DualWriteAnalytics {
            primary,
            secondary,
            reconciler,
            write_wait,
            _task: task,
        }
    }

    /// The reconciler delivering this layer's event outbox.
    pub fn reconciler(&self) -> &Arc<Reconciler<EventDelivery>> {
        &self.reconciler
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Analytics for DualWriteAnalytics {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }
    fn quantile_method(&self) -> QuantileMethod {
        self.primary.quantile_method()
    }
    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        let acks = self.reconciler.lease_acks();
        let written = self.primary.record_logged(events, &acks.seqs).await;
        acks.settle(written.is_ok());
        let (stored, seqs) = written?;
        self.reconciler
            .deliver_inline(self.write_wait, &seqs, async {
                self.secondary.record(events).await.map(|_| ())
            })
            .await;
        Ok(stored)
    }
    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        self.primary.eval_summary(workspace, run).await
    }
    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        self.primary.metric_series(workspace, query).await
    }
    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        self.primary.cost_breakdown(workspace, query).await
    }
    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        self.primary.latency(workspace, query).await
    }
    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        self.primary.scan(kind, after, limit).await
    }
    async fn count(&self, kind: EventKind) -> Result<u64> {
        self.primary.count(kind).await
    }
}

/// `VectorIndex` writing to a primary with a vector outbox and delivering to a secondary, by the
/// same protocol as [`DualWriteRecordStore`]: each entry carries the embedding as the primary stores
/// it when delivered, or its deletion. Searches, counts and scans are served by the primary.
#[derive(Debug)]
pub struct DualWriteVectorIndex {
    primary: Arc<dyn VectorOutboxStore>,
    reconciler: Arc<Reconciler<VectorDelivery>>,
    write_wait: Duration,
    _task: Option<Arc<TaskGuard>>,
}

impl DualWriteVectorIndex {
    /// Composes the layer and starts its reconciler on the current Tokio runtime.
    pub fn start(
        primary: Arc<dyn VectorOutboxStore>,
        secondary: Arc<dyn VectorIndex>,
        write_wait: Duration,
        options: ReconcilerOptions,
    ) -> Self {
        let mut layer = Self::manual(primary, secondary, write_wait, options);
        layer._task = Some(layer.reconciler.spawn());
        layer.reconciler.nudge();
        layer
    }

    /// Composes the layer without a background loop: entries stay pending until
    /// [`Reconciler::deliver_once`] or [`Reconciler::drain`] runs (deterministic tests).
    pub fn manual(
        primary: Arc<dyn VectorOutboxStore>,
        secondary: Arc<dyn VectorIndex>,
        write_wait: Duration,
        options: ReconcilerOptions,
    ) -> Self {
        DualWriteVectorIndex {
            reconciler: Reconciler::vectors(primary.clone(), secondary, options),
            primary,
            write_wait,
            _task: None,
        }
    }

    /// The reconciler delivering this layer's vector outbox.
    pub fn reconciler(&self) -> &Arc<Reconciler<VectorDelivery>> {
        &self.reconciler
    }

    async fn deliver_inline(&self, seqs: &[i64], changes: Vec<VectorChange>) {
        let delivery = &self.reconciler.delivery;
        self.reconciler
            .deliver_inline(self.write_wait, seqs, delivery.send(&changes))
            .await
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl VectorIndex for DualWriteVectorIndex {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }
    fn dimension(&self) -> usize {
        self.primary.dimension()
    }
    async fn upsert(&self, entries: &[VectorEntry]) -> Result<u64> {
        let acks = self.reconciler.lease_acks();
        let written = self.primary.vector_upsert_logged(entries, &acks.seqs).await;
        acks.settle(written.is_ok());
        let (n, seqs) = written?;
        let changes = entries
            .iter()
            .map(|e| VectorChange {
                key: VectorKey::of(e),
                entry: Some(e.clone()),
            })
            .collect();
        self.deliver_inline(&seqs, changes).await;
        Ok(n)
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
        let acks = self.reconciler.lease_acks();
        let written = self.primary.vector_delete_logged(key, &acks.seqs).await;
        acks.settle(written.is_ok());
        let (deleted, seq) = written?;
        self.deliver_inline(&[seq], vec![VectorChange { key, entry: None }])
            .await;
        Ok(deleted)
    }
    async fn search(&self, query: &VectorQuery) -> Result<Vec<VectorHit>> {
        self.primary.search(query).await
    }
    async fn count(&self, workspace: WorkspaceId) -> Result<u64> {
        self.primary.count(workspace).await
    }
    async fn count_all(&self) -> Result<u64> {
        self.primary.count_all().await
    }
    async fn scan_entries(
        &self,
        after: Option<VectorCursor>,
        limit: usize,
    ) -> Result<Vec<VectorEntry>> {
        self.primary.scan_entries(after, limit).await
    }
}

/// One shadow-read difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The read (`"get"`, `"list"`).
    pub operation: &'static str,
    /// The workspace read.
    pub workspace: WorkspaceId,
    /// The ids whose versions differ or that only one side returned.
    pub ids: Vec<RecordId>,
    /// When it was seen.
    pub at: Timestamp,
}

/// Shadow-read counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Reads compared.
    pub compared: u64,
    /// Reads whose answers differed (after the recheck).
    pub mismatched: u64,
    /// Secondary reads that failed (not counted as mismatches).
    pub errors: u64,
    /// The latest mismatches, newest last (at most 100).
    pub recent: Vec<Mismatch>,
}

#[derive(Debug, Default)]
struct ShadowState {
    compared: AtomicU64,
    mismatched: AtomicU64,
    errors: AtomicU64,
    recent: Mutex<VecDeque<Mismatch>>,
}

const RECENT: usize = 100;

/// `RecordStore` serving from `primary` and comparing a sample of reads with `secondary` in the
/// background. Writes go to `primary` (usually a [`DualWriteRecordStore`]).
#[derive(Debug)]
pub struct ShadowReadRecordStore {
    primary: Arc<dyn RecordStore>,
    secondary: Arc<dyn RecordStore>,
    reconciler: Option<Arc<Reconciler>>,
    sample: f64,
    state: Arc<ShadowState>,
    seed: AtomicU64,
}

/// Ids that differ between two answers: present on one side only, or with different content.
fn differing(a: &[Record], b: &[Record]) -> Vec<RecordId> {
    let left: HashMap<RecordId, &Record> = a.iter().map(|r| (r.id, r)).collect();
    let right: HashMap<RecordId, &Record> = b.iter().map(|r| (r.id, r)).collect();
    let mut ids: Vec<RecordId> = left
        .iter()
        .filter(|(id, r)| right.get(id) != Some(r))
        .map(|(id, _)| *id)
        .chain(right.keys().filter(|id| !left.contains_key(id)).copied())
        .collect();
    ids.sort();
    ids
}

enum Read {
    Get(WorkspaceId, RecordKind, RecordId),
    List(WorkspaceId, ListQuery),
}

impl Read {
    async fn on(&self, store: &dyn RecordStore) -> Result<Vec<Record>> {
        match self {
            Read::Get(ws, kind, id) => Ok(store.get(*ws, *kind, *id).await?.into_iter().collect()),
            Read::List(ws, q) => Ok(store.list(*ws, q).await?.items),
        }
    }
    fn describe(&self) -> (&'static str, WorkspaceId) {
        match self {
            Read::Get(ws, ..) => ("get", *ws),
            Read::List(ws, _) => ("list", *ws),
        }
    }
}

impl ShadowReadRecordStore {
    /// Compares a `sample` share (0.0–1.0) of reads. `reconciler` (the dual-write layer's) lets a
    /// difference be rechecked once pending writes are delivered.
    pub fn new(
        primary: Arc<dyn RecordStore>,
        secondary: Arc<dyn RecordStore>,
        reconciler: Option<Arc<Reconciler>>,
        sample: f64,
    ) -> Self {
        ShadowReadRecordStore {
            primary,
            secondary,
            reconciler,
            sample: sample.clamp(0.0, 1.0),
            state: Arc::default(),
            seed: AtomicU64::new(0x5EED),
        }
    }

    /// Counters and the latest mismatches.
    pub fn stats(&self) -> ShadowStats {
        ShadowStats {
            compared: self.state.compared.load(Ordering::Relaxed),
            mismatched: self.state.mismatched.load(Ordering::Relaxed),
            errors: self.state.errors.load(Ordering::Relaxed),
            recent: self
                .state
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    fn sampled(&self) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        // SplitMix64 step on a shared counter: cheap, lock-free, good enough for sampling.
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.sample
    }

    fn experiment(&self, read: Read, served: Vec<Record>) {
        let secondary = self.secondary.clone();
        let primary = self.primary.clone();
        let reconciler = self.reconciler.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let theirs = match read.on(&*secondary).await {
                Ok(t) => t,
                Err(_) => {
                    state.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let mut ids = differing(&served, &theirs);
            if !ids.is_empty() {
                // Replication lag is not a mismatch: deliver what is pending, then look again.
                if let Some(r) = &reconciler {
                    let _ = r.drain(Duration::from_secs(5)).await;
                }
                match (read.on(&*primary).await, read.on(&*secondary).await) {
                    (Ok(a), Ok(b)) => ids = differing(&a, &b),
                    _ => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            state.compared.fetch_add(1, Ordering::Relaxed);
            if ids.is_empty() {
                return;
            }
            state.mismatched.fetch_add(1, Ordering::Relaxed);
            let (operation, workspace) = read.describe();
            tracing::warn!(
                target: "sprintlens::shadow_read",
                operation,
                %workspace,
                ids = ?ids,
                "shadow read differs from the primary"
            );
            let mut recent = state.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Mismatch {
                operation,
                workspace,
                ids,
                at: Timestamp::now(),
            });
        });
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl RecordStore for ShadowReadRecordStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn upsert(&self, records: &[Record]) -> Result<UpsertOutcome> {
        self.primary.upsert(records).await
    }

    async fn get(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
    ) -> Result<Option<Record>> {
        let got = self.primary.get(workspace, kind, id).await?;
        if self.sampled() {
            self.experiment(
                Read::Get(workspace, kind, id),
                got.iter().cloned().collect(),
            );
        }
        Ok(got)
    }

    async fn list(&self, workspace: WorkspaceId, query: &ListQuery) -> Result<Page<Record>> {
        let page = self.primary.list(workspace, query).await?;
        if self.sampled() {
            self.experiment(Read::List(workspace, query.clone()), page.items.clone());
        }
        Ok(page)
    }

    async fn delete(
        &self,
        workspace: WorkspaceId,
        kind: RecordKind,
        id: RecordId,
        at: Timestamp,
    ) -> Result<bool> {
        self.primary.delete(workspace, kind, id, at).await
    }

    async fn scan(&self, request: &ScanRequest) -> Result<Vec<Record>> {
        self.primary.scan(request).await
    }

    async fn count(&self, kind: RecordKind, workspace: Option<WorkspaceId>) -> Result<u64> {
        self.primary.count(kind, workspace).await
    }

    async fn split(&self, kind: RecordKind, parts: usize) -> Result<Vec<ScanCursor>> {
        self.primary.split(kind, parts).await
    }
}

/// Sends a write to the secondary of a mirrored port: waits up to `wait` when it is positive,
/// otherwise in the background bounded by `timeout`; a failure is counted, never returned.
#[derive(Debug)]
struct Mirror {
    wait: Duration,
    timeout: Duration,
    failures: Arc<AtomicU64>,
}

impl Mirror {
    async fn send<F>(&self, write: F)
    where
        F: Future<Output = bool> + Send + 'static,
    {
        let failures = self.failures.clone();
        let timeout = self.timeout;
        let task = async move {
            if !matches!(tokio::time::timeout(timeout, write).await, Ok(true)) {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        };
        if self.wait.is_zero() {
            tokio::spawn(task);
        } else if tokio::time::timeout(self.wait, tokio::spawn(task))
            .await
            .is_err()
        {
            // Still running in the background; its outcome is counted there.
        }
    }
}

/// A port writing to a primary and mirroring each write to a secondary without ever failing or
/// holding the caller past `write_wait` for it; reads are served by the primary. A missed mirror
/// write is counted ([`Mirrored::failures`]); `sprintlens migrate run` (the keyset backfill resumes
/// past its checkpoints) and `verify` close such gaps before cut-over. Implemented for [`Analytics`]
/// (events are id-keyed, so a repeated batch counts once on both) when the primary keeps no event
/// outbox (ClickHouse after cut-over).
#[derive(Debug)]
pub struct Mirrored<P: ?Sized> {
    primary: Arc<P>,
    secondary: Arc<P>,
    mirror: Mirror,
}

/// Analytics events mirrored to a second store.
pub type MirroredAnalytics = Mirrored<dyn Analytics>;

impl<P: ?Sized> Mirrored<P> {
    /// Composes the layer.
    pub fn new(
        primary: Arc<P>,
        secondary: Arc<P>,
        write_wait: Duration,
        timeout: Duration,
    ) -> Self {
        Mirrored {
            primary,
            secondary,
            mirror: Mirror {
                wait: write_wait,
                timeout,
                failures: Arc::default(),
            },
        }
    }

    /// Mirror writes that failed or timed out.
    pub fn failures(&self) -> u64 {
        self.mirror.failures.load(Ordering::Relaxed)
    }

    /// The live counter behind [`Self::failures`].
    pub fn failure_counter(&self) -> Arc<AtomicU64> {
        self.mirror.failures.clone()
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Analytics for MirroredAnalytics {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }
    fn quantile_method(&self) -> QuantileMethod {
        self.primary.quantile_method()
    }
    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        let n = self.primary.record(events).await?;
        let (secondary, events) = (self.secondary.clone(), events.to_vec());
        self.mirror
            .send(async move { secondary.record(&events).await.is_ok() })
            .await;
        Ok(n)
    }
    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        self.primary.eval_summary(workspace, run).await
    }
    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        self.primary.metric_series(workspace, query).await
    }
    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        self.primary.cost_breakdown(workspace, query).await
    }
    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        self.primary.latency(workspace, query).await
    }
    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        self.primary.scan(kind, after, limit).await
    }
    async fn count(&self, kind: EventKind) -> Result<u64> {
        self.primary.count(kind).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_names_missing_extra_and_changed_ids() {
        let ws = WorkspaceId::new();
        let a = sprintlens_testkit::generate::project(ws, "a");
        let b = sprintlens_testkit::generate::project(ws, "b");
        let c = sprintlens_testkit::generate::project(ws, "c");
        let mut b2 = b.clone();
        b2.updated_at = b2.updated_at.plus_micros(1);
        assert!(differing(&[a.clone(), b.clone()], &[b.clone(), a.clone()]).is_empty());
        let mut want = vec![a.id, b.id, c.id];
        want.sort();
        assert_eq!(differing(&[a, b], &[b2, c]), want);
    }
}
