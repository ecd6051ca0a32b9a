#![cfg(feature = "sqlite")]
//! The dual-write and shadow-read layers: the `RecordStore` conformance suite over the composed
//! layers (SQLite primary; SQLite, failing, or live PostgreSQL secondary), and the failure paths
//! driven deterministically by the fault-injecting wrapper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sprintlens::dual::{
    DualWriteAnalytics, DualWriteRecordStore, DualWriteVectorIndex, Reconciler, ReconcilerOptions,
    ShadowReadRecordStore,
};
use sprintlens_core::*;
use sprintlens_sqlite::{SqliteOptions, SqliteStore};
use sprintlens_testkit::faults::{
    Faults, FaultyAnalytics, FaultyRecordStore, FaultyVectorIndex, snapshot,
};
use sprintlens_testkit::generate::{one_of_each, project};
use tempfile::TempDir;

async fn sqlite(dir: &TempDir, name: &str) -> Arc<SqliteStore> {
    let mut o = SqliteOptions::new(dir.path().join(name));
    o.dimension = 8;
    Arc::new(SqliteStore::open(o).await.unwrap())
}

fn quick() -> ReconcilerOptions {
    ReconcilerOptions {
        poll: Duration::from_millis(50),
        deliver_timeout: Duration::from_secs(2),
        max_backoff: Duration::from_millis(200),
        linger: Duration::from_millis(10),
        ..ReconcilerOptions::default()
    }
}

/// Primary and secondary SQLite files, the secondary behind the fault switches.
struct Pair {
    primary: Arc<SqliteStore>,
    secondary: Arc<SqliteStore>,
    faults: Arc<Faults>,
    layer: Arc<DualWriteRecordStore>,
    _dir: TempDir,
}

async fn pair(write_wait: Duration, background: bool) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let primary = sqlite(&dir, "primary.db").await;
    let secondary = sqlite(&dir, "secondary.db").await;
    let (faulty, faults) = FaultyRecordStore::new(secondary.clone());
    let layer = if background {
        DualWriteRecordStore::start(primary.clone(), faulty, write_wait, quick())
    } else {
        DualWriteRecordStore::manual(primary.clone(), faulty, write_wait, quick())
    };
    Pair {
        primary,
        secondary,
        faults,
        layer: Arc::new(layer),
        _dir: dir,
    }
}

// ---- the conformance suite over the composed layers ----

async fn dual_sqlite() -> (Arc<dyn RecordStore>, Pair) {
    let p = pair(Duration::from_millis(200), true).await;
    (p.layer.clone(), p)
}

async fn dual_secondary_down() -> (Arc<dyn RecordStore>, Pair) {
    let p = pair(Duration::from_millis(20), true).await;
    p.faults.set_down(true);
    (p.layer.clone(), p)
}

async fn shadow_sqlite() -> (Arc<dyn RecordStore>, Pair) {
    let p = pair(Duration::ZERO, true).await;
    let shadow = ShadowReadRecordStore::new(
        p.layer.clone(),
        p.secondary.clone(),
        Some(p.layer.reconciler().clone()),
        1.0,
    );
    (Arc::new(shadow), p)
}

mod dual_write_over_sqlite {
    use super::*;
    sprintlens_testkit::record_store_suite!(dual_sqlite);
}

mod dual_write_with_the_secondary_down {
    use super::*;
    sprintlens_testkit::record_store_suite!(dual_secondary_down);
}

mod shadow_read_over_dual_write {
    use super::*;
    sprintlens_testkit::record_store_suite!(shadow_sqlite);
}

#[cfg(feature = "postgres")]
mod over_postgres {
    use super::*;

    /// A database of this test process's own on the stack (never the shared one: its vector table
    /// is pinned at another dimension), created once.
    async fn database() -> Option<String> {
        static DB: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
        DB.get_or_init(|| async {
            let db = sprintlens_testkit::fresh_postgres_database(&format!(
                "sl_dual_write_{}",
                std::process::id()
            ))?;
            let mut o = sprintlens_postgres::PgOptions::new(db.app.clone());
            o.dimension = 8;
            sprintlens_postgres::PgStore::open(o)
                .unwrap()
                .apply_schema(&db.admin)
                .await
                .unwrap();
            Some(db.app)
        })
        .await
        .clone()
    }

    /// SQLite primary, the live PostgreSQL of `cargo xtask services up` as the secondary.
    pub async fn dual_postgres()
    -> Option<(Arc<dyn RecordStore>, (TempDir, Arc<DualWriteRecordStore>))> {
        let app = database().await?;
        let mut o = sprintlens_postgres::PgOptions::new(app);
        o.dimension = 8;
        let pg = sprintlens_postgres::PgStore::open(o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let primary = sqlite(&dir, "primary.db").await;
        let layer = Arc::new(DualWriteRecordStore::start(
            primary,
            Arc::new(pg),
            Duration::from_millis(500),
            quick(),
        ));
        Some((layer.clone() as Arc<dyn RecordStore>, (dir, layer)))
    }

    mod dual_write_to_postgres {
        use super::*;
        sprintlens_testkit::record_store_suite!(dual_postgres);
    }
}

// ---- failure paths, deterministic ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_down_writes_succeed_then_converge() {
    let p = pair(Duration::from_millis(20), false).await;
    let ws = WorkspaceId::new();
    p.faults.set_down(true);
    let records = one_of_each(ws);
    let out = p.layer.upsert(&records).await.unwrap();
    assert_eq!(out.written, records.len() as u64);
    let doomed = &records[1];
    assert!(
        p.layer
            .delete(
                ws,
                doomed.kind(),
                doomed.id,
                doomed.updated_at.plus_micros(1)
            )
            .await
            .unwrap()
    );
    let renamed = records[0]
        .updated(RecordBody::Project(Project {
            name: "renamed".into(),
            description: None,
            settings: serde_json::json!({"k": "v"}),
        }))
        .unwrap();
    p.layer
        .upsert(std::slice::from_ref(&renamed))
        .await
        .unwrap();
    // Acknowledged on the primary, logged, nothing on the secondary yet.
    let stats = p.primary.outbox_stats().await.unwrap();
    assert_eq!(stats.pending, records.len() as u64 + 2);
    assert!(snapshot(&*p.secondary, ws).await.is_empty());
    // Still down: a delivery fails, keeps everything pending and is counted.
    assert!(p.layer.reconciler().deliver_once().await.is_err());
    assert_eq!(p.layer.reconciler().stats().failures, 1);
    assert_eq!(
        p.primary.outbox_stats().await.unwrap().pending,
        records.len() as u64 + 2
    );
    // Back: the reconciler converges on the primary's state, tombstone included.
    p.faults.set_down(false);
    p.layer
        .reconciler()
        .drain(Duration::from_secs(10))
        .await
        .unwrap();
    let want = snapshot(&*p.primary, ws).await;
    assert_eq!(want.len(), records.len());
    assert_eq!(snapshot(&*p.secondary, ws).await, want);
    assert!(want.iter().any(|r| r.id == doomed.id && r.deleted));
    assert!(want.contains(&renamed));
    assert_eq!(
        p.primary.outbox_stats().await.unwrap(),
        OutboxStats::default()
    );
    eprintln!(
        "figure: {} acknowledged writes while the secondary was down, 0 lost after it returned",
        records.len() + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_once_and_counted() {
    let p = pair(Duration::ZERO, false).await;
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    p.layer.upsert(&records).await.unwrap();
    p.faults.fail_next_writes(1);
    let r = p.layer.reconciler();
    assert!(r.deliver_once().await.unwrap_err().is_retryable());
    assert_eq!(r.deliver_once().await.unwrap(), records.len());
    assert_eq!(r.deliver_once().await.unwrap(), 0);
    let stats = r.stats();
    assert_eq!((stats.failures, stats.delivered), (1, records.len() as u64));
    assert_eq!(stats.last_error, None);
    assert_eq!(
        snapshot(&*p.secondary, ws).await,
        snapshot(&*p.primary, ws).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_parks_only_its_record() {
    let p = pair(Duration::ZERO, false).await;
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    let bad = records[2].id;
    p.faults.refuse(bad);
    p.layer.upsert(&records).await.unwrap();
    let r = p.layer.reconciler();
    assert_eq!(r.deliver_once().await.unwrap(), records.len());
    assert_eq!(r.stats().parked, 1);
    // Delivered entries are skipped until their acks are removed (by a write or by the reconciler).
    assert_eq!(r.deliver_once().await.unwrap(), 0);
    assert_eq!(
        p.primary.outbox_stats().await.unwrap().pending,
        records.len() as u64 - 1
    );
    r.flush_acks().await.unwrap();
    let stats = p.primary.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 1));
    let parked = p.primary.outbox_parked(10).await.unwrap();
    assert_eq!(parked[0].entry.id, bad);
    assert!(parked[0].error.contains("refused"), "{}", parked[0].error);
    let theirs = snapshot(&*p.secondary, ws).await;
    assert_eq!(theirs.len(), records.len() - 1);
    assert!(theirs.iter().all(|r| r.id != bad));
    // The operator fixes the cause and returns the parked entry: it is delivered.
    let (faulty, _) = FaultyRecordStore::new(p.secondary.clone());
    let healed = DualWriteRecordStore::manual(p.primary.clone(), faulty, Duration::ZERO, quick());
    assert_eq!(p.primary.outbox_unpark().await.unwrap(), 1);
    healed
        .reconciler()
        .drain(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        snapshot(&*p.secondary, ws).await,
        snapshot(&*p.primary, ws).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_secondary_never_holds_the_caller_past_write_wait() {
    let wait = Duration::from_millis(50);
    let p = pair(wait, false).await;
    p.faults.set_delay(Duration::from_secs(3));
    let ws = WorkspaceId::new();
    let start = Instant::now();
    for i in 0..5 {
        p.layer
            .upsert(&[project(ws, &format!("p{i}"))])
            .await
            .unwrap();
    }
    let took = start.elapsed();
    // Five writes, each bounded by write_wait plus the primary's own commit.
    assert!(
        took < wait * 5 + Duration::from_secs(2),
        "five writes took {took:?} with a 3 s secondary"
    );
    assert_eq!(p.primary.outbox_stats().await.unwrap().pending, 5);
    eprintln!("figure: 5 writes against a 3 s secondary took {took:?} (write_wait {wait:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_secondary_is_written_inline_and_acked() {
    let p = pair(Duration::from_secs(2), false).await;
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    p.layer.upsert(&records).await.unwrap();
    p.layer
        .delete(
            ws,
            records[0].kind(),
            records[0].id,
            records[0].updated_at.plus_micros(1),
        )
        .await
        .unwrap();
    // The upsert's entries were acked by the delete's transaction; the delete's wait for the next
    // write or the reconciler.
    assert_eq!(p.primary.outbox_stats().await.unwrap().pending, 1);
    assert_eq!(
        p.layer.reconciler().stats().delivered,
        records.len() as u64 + 1
    );
    p.layer.reconciler().flush_acks().await.unwrap();
    assert_eq!(p.primary.outbox_stats().await.unwrap().pending, 0);
    assert_eq!(
        snapshot(&*p.secondary, ws).await,
        snapshot(&*p.primary, ws).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loop_delivers_without_being_asked() {
    let p = pair(Duration::ZERO, true).await;
    let ws = WorkspaceId::new();
    p.faults.set_down(true);
    let records = one_of_each(ws);
    p.layer.upsert(&records).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(snapshot(&*p.secondary, ws).await.is_empty());
    p.faults.set_down(false);
    let start = Instant::now();
    while p.primary.outbox_stats().await.unwrap().pending > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "never converged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        snapshot(&*p.secondary, ws).await,
        snapshot(&*p.primary, ws).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_count_real_differences_not_lag() {
    let p = pair(Duration::ZERO, false).await;
    let shadow = ShadowReadRecordStore::new(
        p.layer.clone(),
        p.secondary.clone(),
        Some(p.layer.reconciler().clone()),
        1.0,
    );
    let ws = WorkspaceId::new();
    let a = project(ws, "a");
    // Lag: written, not yet delivered. The recheck delivers it first: no mismatch.
    shadow.upsert(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(
        shadow.get(ws, RecordKind::Project, a.id).await.unwrap(),
        Some(a.clone())
    );
    let settled = |n: u64| {
        let start = Instant::now();
        let shadow = &shadow;
        async move {
            while shadow.stats().compared + shadow.stats().errors < n {
                assert!(start.elapsed() < Duration::from_secs(20));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    settled(1).await;
    assert_eq!(shadow.stats().mismatched, 0);
    // A real difference: the secondary holds another version. Counted with the id.
    let mut other = a.clone();
    other.updated_at = a.updated_at.plus_micros(10);
    if let RecordBody::Project(body) = &mut other.body {
        body.description = Some("only on the secondary".into());
    }
    RecordStore::upsert(&*p.secondary, &[other]).await.unwrap();
    shadow.get(ws, RecordKind::Project, a.id).await.unwrap();
    shadow
        .list(ws, &ListQuery::new(RecordKind::Project))
        .await
        .unwrap();
    settled(3).await;
    let stats = shadow.stats();
    assert_eq!(stats.mismatched, 2, "{stats:?}");
    assert_eq!(stats.recent[0].ids, vec![a.id]);
    assert_eq!(stats.recent[0].workspace, ws);
    let ops: Vec<&str> = stats.recent.iter().map(|m| m.operation).collect();
    assert!(ops.contains(&"get") && ops.contains(&"list"));
}

/// Every event of both streams in `(created_at, id)` order.
async fn all_events(a: &dyn Analytics) -> Vec<AnalyticsEvent> {
    let mut out = Vec::new();
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        out.extend(a.scan(kind, None, 1000).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_through_the_primary_outbox_and_survive_a_down_secondary() {
    let dir = tempfile::tempdir().unwrap();
    let primary = sqlite(&dir, "primary.db").await;
    let secondary = sqlite(&dir, "secondary.db").await;
    let (faulty, faults) = FaultyAnalytics::new(secondary.clone());
    faults.set_down(true);
    let layer = DualWriteAnalytics::start(
        primary.clone(),
        faulty.clone(),
        Duration::from_millis(20),
        quick(),
    );
    let ws = WorkspaceId::new();
    let mut events = Vec::new();
    for _ in 0..5 {
        let batch = sprintlens_testkit::outbox::some_events(ws);
        assert_eq!(
            layer.record(&batch).await.unwrap(),
            3,
            "the primary's answer"
        );
        events.extend(batch);
    }
    // Served by the primary; logged; nothing on the secondary.
    assert_eq!(all_events(&layer).await.len(), events.len());
    assert_eq!(
        primary.event_outbox_stats().await.unwrap().pending,
        events.len() as u64
    );
    assert!(all_events(&*secondary).await.is_empty());
    // The process stops with the secondary still down; the next one delivers the backlog.
    drop(layer);
    faults.set_down(false);
    let next = DualWriteAnalytics::start(primary.clone(), faulty, Duration::ZERO, quick());
    next.reconciler()
        .drain(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(all_events(&*secondary).await, all_events(&*primary).await);
    assert_eq!(
        primary.event_outbox_stats().await.unwrap(),
        OutboxStats::default()
    );
    // A replayed batch is counted once on both sides.
    next.record(&events[..3]).await.unwrap();
    next.reconciler()
        .drain(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(all_events(&*secondary).await.len(), events.len());
}

// ---- embeddings through the primary's vector outbox ----

/// Primary and secondary SQLite vector indexes (64 dimensions), the secondary behind the fault
/// switches.
struct VectorPair {
    primary: Arc<SqliteStore>,
    secondary: Arc<SqliteStore>,
    faulty: Arc<FaultyVectorIndex>,
    faults: Arc<Faults>,
    _dir: TempDir,
}

async fn vector_pair() -> VectorPair {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let mut o = SqliteOptions::new(dir.path().join(name));
        o.dimension = 64;
        SqliteStore::open(o)
    };
    let primary = Arc::new(open("primary.db").await.unwrap());
    let secondary = Arc::new(open("secondary.db").await.unwrap());
    let (faulty, faults) = FaultyVectorIndex::new(secondary.clone());
    VectorPair {
        primary,
        secondary,
        faulty,
        faults,
        _dir: dir,
    }
}

/// The layer over a fresh pair, started (background delivery), the secondary up or down.
async fn vector_layer(write_wait_ms: u64, down: bool) -> (Arc<dyn VectorIndex>, VectorPair) {
    let p = vector_pair().await;
    p.faults.set_down(down);
    let layer = DualWriteVectorIndex::start(
        p.primary.clone(),
        p.faulty.clone(),
        Duration::from_millis(write_wait_ms),
        quick(),
    );
    (Arc::new(layer), p)
}

async fn dual_vectors() -> (Arc<dyn VectorIndex>, VectorPair) {
    vector_layer(200, false).await
}

async fn dual_vectors_secondary_down() -> (Arc<dyn VectorIndex>, VectorPair) {
    vector_layer(20, true).await
}

mod dual_write_vectors_over_sqlite {
    use super::*;
    sprintlens_testkit::vector_index_suite!(dual_vectors);
}

mod dual_write_vectors_with_the_secondary_down {
    use super::*;
    sprintlens_testkit::vector_index_suite!(dual_vectors_secondary_down);
}

/// Every embedding of an index, in scan order.
async fn all_embeddings(index: &dyn VectorIndex) -> Vec<VectorEntry> {
    index.scan_entries(None, 1000).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_go_through_the_primary_outbox_and_survive_a_down_secondary() {
    let (layer, p) = vector_layer(20, true).await;
    let ws = WorkspaceId::new();
    let mut written = Vec::new();
    for _ in 0..5 {
        let batch = sprintlens_testkit::outbox::some_embeddings(ws, 64);
        assert_eq!(
            layer.upsert(&batch).await.unwrap(),
            2,
            "the primary's answer"
        );
        written.extend(batch);
    }
    // A delete and a replacement while the secondary is down are logged too.
    let gone = VectorKey::of(&written[0]);
    assert!(
        layer
            .delete(gone.workspace, gone.kind, gone.id)
            .await
            .unwrap()
    );
    let mut newer = written[1].clone();
    newer.updated_at = newer.updated_at.plus_micros(5);
    newer.embedding = written[2].embedding.clone();
    layer.upsert(&[newer]).await.unwrap();
    assert_eq!(layer.count(ws).await.unwrap(), 9, "served by the primary");
    assert_eq!(p.primary.vector_outbox_stats().await.unwrap().pending, 12);
    assert!(all_embeddings(&*p.secondary).await.is_empty());
    // The process stops with the secondary still down; the next one delivers the backlog.
    drop(layer);
    p.faults.set_down(false);
    let next =
        DualWriteVectorIndex::start(p.primary.clone(), p.faulty.clone(), Duration::ZERO, quick());
    next.reconciler()
        .drain(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        all_embeddings(&*p.secondary).await,
        all_embeddings(&*p.primary).await
    );
    assert_eq!(VectorIndex::count(&*p.secondary, ws).await.unwrap(), 9);
    assert_eq!(
        p.primary.vector_outbox_stats().await.unwrap(),
        OutboxStats::default()
    );
}

/// Two processes deliver the same log: one read an embedding before it was deleted and its upsert
/// lands after the other delivered the delete. Deletes carry no version to compare with, so the
/// delivery reads its keys again after writing and removes what the primary no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_upsert_landing_after_a_delete_is_taken_back() {
    let p = vector_pair().await;
    let layer =
        DualWriteVectorIndex::manual(p.primary.clone(), p.faulty.clone(), Duration::ZERO, quick());
    let ws = WorkspaceId::new();
    let entry = sprintlens_testkit::outbox::some_embeddings(ws, 64).remove(0);
    let key = VectorKey::of(&entry);
    layer.upsert(std::slice::from_ref(&entry)).await.unwrap();
    // Process A reads the entry (the embedding as stored) and its upsert is held on the way.
    p.faults.hold(true);
    let a = layer.reconciler().clone();
    let first = tokio::spawn(async move { a.deliver_once().await });
    let start = Instant::now();
    while p.faults.holding() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "A never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The embedding is deleted; process B delivers both entries (the delete) and acks them.
    layer.delete(key.workspace, key.kind, key.id).await.unwrap();
    let b = Reconciler::vectors(p.primary.clone(), p.faulty.clone(), quick());
    assert_eq!(b.deliver_once().await.unwrap(), 2);
    b.flush_acks().await.unwrap();
    assert_eq!(VectorIndex::count(&*p.secondary, ws).await.unwrap(), 0);
    // A's stale upsert lands now, after the delete.
    p.faults.hold(false);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(
        p.secondary.vector_entries(&[key]).await.unwrap(),
        vec![None],
        "the secondary holds what the primary holds: nothing"
    );
    assert_eq!(p.primary.vector_outbox_stats().await.unwrap().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_embedding_parks_only_its_entries() {
    let p = vector_pair().await;
    let layer =
        DualWriteVectorIndex::manual(p.primary.clone(), p.faulty.clone(), Duration::ZERO, quick());
    let ws = WorkspaceId::new();
    let entries = sprintlens_testkit::outbox::some_embeddings(ws, 64);
    p.faults.refuse(entries[0].id);
    layer.upsert(&entries).await.unwrap();
    layer
        .reconciler()
        .drain(Duration::from_secs(5))
        .await
        .unwrap();
    let stats = p.primary.vector_outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 1));
    assert_eq!(
        p.secondary
            .vector_entries(&[VectorKey::of(&entries[0]), VectorKey::of(&entries[1])])
            .await
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_eq!(layer.reconciler().stats().parked, 1);
}
