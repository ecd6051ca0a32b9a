//! `OutboxStore` conformance cases. An outbox is one log per store, so the cases run one after the
//! other on a store no other test logs to (the suite macro emits a single test).

use std::sync::Arc;

use serde_json::json;
use sprintlens_core::*;

use crate::generate::{one_of_each, project};

type Store = Arc<dyn OutboxStore>;

async fn drain(store: &Store) {
    loop {
        let pending = store.outbox_pending(1000).await.unwrap();
        if pending.is_empty() {
            return;
        }
        let seqs: Vec<i64> = pending.iter().map(|p| p.entry.seq).collect();
        store.outbox_ack(&seqs).await.unwrap();
    }
}

/// Every case, in order.
pub async fn run_all(store: Store) {
    drain(&store).await;
    store.outbox_unpark().await.unwrap();
    drain(&store).await;
    logged_writes_are_pending_with_their_current_record(&store).await;
    failed_writes_log_nothing(&store).await;
    deletes_log_the_tombstone(&store).await;
    parked_entries_leave_the_pending_set(&store).await;
    acks_ride_on_writes(&store).await;
}

/// `upsert_logged` writes like `upsert` and logs one entry per record, in order; pending entries carry
/// the newest stored version; acked entries are gone.
pub async fn logged_writes_are_pending_with_their_current_record(store: &Store) {
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    let (out, seqs) = store.upsert_logged(&records, &[]).await.unwrap();
    assert_eq!(out.written, records.len() as u64);
    assert_eq!(seqs.len(), records.len());
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "seqs are distinct");
    for r in &records {
        assert_eq!(
            store.get(ws, r.kind(), r.id).await.unwrap().as_ref(),
            Some(r)
        );
    }
    let first = &records[0];
    let newer = first
        .updated(RecordBody::Project(Project {
            name: "renamed".into(),
            description: Some("ü".into()),
            settings: json!({"b": 1, "a": [1, 2]}),
        }))
        .unwrap();
    let (_, again) = store
        .upsert_logged(std::slice::from_ref(&newer), &[])
        .await
        .unwrap();
    let pending = store.outbox_pending(1000).await.unwrap();
    assert_eq!(pending.len(), records.len() + 1);
    assert!(
        pending.windows(2).all(|w| w[0].entry.seq < w[1].entry.seq),
        "pending entries come in seq order"
    );
    for p in &pending {
        assert_eq!(p.entry.workspace, ws);
        let want = if p.entry.id == first.id {
            &newer
        } else {
            records.iter().find(|r| r.id == p.entry.id).unwrap()
        };
        assert_eq!(p.entry.kind, want.kind());
        assert_eq!(
            p.record.as_ref(),
            Some(want),
            "the current version of {}",
            want.kind()
        );
    }
    assert_eq!(
        store.outbox_stats().await.unwrap().pending,
        pending.len() as u64
    );
    assert!(store.outbox_stats().await.unwrap().oldest_pending.is_some());
    // Limits page the log; acks remove exactly what they name; unknown seqs are ignored.
    assert_eq!(store.outbox_pending(2).await.unwrap().len(), 2);
    store.outbox_ack(&seqs).await.unwrap();
    let left = store.outbox_pending(1000).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].entry.seq, again[0]);
    store.outbox_ack(&[again[0], i64::MAX]).await.unwrap();
    assert_eq!(store.outbox_stats().await.unwrap(), OutboxStats::default());
    assert!(store.outbox_pending(0).await.is_err(), "limit 0 is invalid");
}

/// A refused upsert (invalid record, conflict) logs nothing, like it writes nothing.
pub async fn failed_writes_log_nothing(store: &Store) {
    let ws = WorkspaceId::new();
    let mut bad = project(ws, "fine");
    if let RecordBody::Project(p) = &mut bad.body {
        p.name = String::new();
    }
    let good = project(ws, "good");
    assert!(
        store
            .upsert_logged(&[good.clone(), bad], &[])
            .await
            .is_err()
    );
    let a = project(ws, "same");
    store
        .upsert_logged(std::slice::from_ref(&a), &[])
        .await
        .unwrap();
    drain(store).await;
    let b = project(ws, "same"); // another id, the same unique name: a conflict
    let err = store.upsert_logged(&[good, b], &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(store.outbox_stats().await.unwrap().pending, 0);
    assert!(store.outbox_pending(10).await.unwrap().is_empty());
}

/// `delete_logged` tombstones like `delete`; its entry carries the tombstone, or no record when the
/// id never existed.
pub async fn deletes_log_the_tombstone(store: &Store) {
    let ws = WorkspaceId::new();
    let p = project(ws, "doomed");
    store
        .upsert_logged(std::slice::from_ref(&p), &[])
        .await
        .unwrap();
    drain(store).await;
    let at = p.updated_at.plus_micros(5);
    let (deleted, seq) = store
        .delete_logged(ws, RecordKind::Project, p.id, at, &[])
        .await
        .unwrap();
    assert!(deleted);
    assert!(
        store
            .get(ws, RecordKind::Project, p.id)
            .await
            .unwrap()
            .is_none()
    );
    let ghost = RecordId::new();
    let (deleted, ghost_seq) = store
        .delete_logged(ws, RecordKind::Project, ghost, at, &[])
        .await
        .unwrap();
    assert!(!deleted);
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].entry.seq, seq);
    let tomb = pending[0].record.as_ref().expect("the tombstone");
    assert!(tomb.deleted);
    assert_eq!(tomb.updated_at, at);
    assert_eq!(pending[1].entry.seq, ghost_seq);
    assert_eq!(pending[1].entry.id, ghost);
    assert!(pending[1].record.is_none());
    drain(store).await;
}

/// A parked entry leaves the pending set, keeps its error, is not removed by an ack, and comes back
/// with `outbox_unpark`.
pub async fn parked_entries_leave_the_pending_set(store: &Store) {
    let ws = WorkspaceId::new();
    let a = project(ws, "a");
    let b = project(ws, "b");
    let (_, seqs) = store.upsert_logged(&[a.clone(), b], &[]).await.unwrap();
    store
        .outbox_park(seqs[0], "conflict: the key exists")
        .await
        .unwrap();
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].entry.seq, seqs[1]);
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (1, 1));
    store.outbox_ack(&seqs).await.unwrap();
    let parked = store.outbox_parked(10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].entry.id, a.id);
    assert_eq!(parked[0].error, "conflict: the key exists");
    assert_eq!(store.outbox_unpark().await.unwrap(), 1);
    let pending = store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].record.as_ref(), Some(&a));
    drain(store).await;
    assert_eq!(store.outbox_stats().await.unwrap(), OutboxStats::default());
}

/// Acks passed with a write are removed in its transaction, and only when it commits; parked
/// entries are not removed by acks.
pub async fn acks_ride_on_writes(store: &Store) {
    let ws = WorkspaceId::new();
    let pending_seqs = |store: &Store| {
        let store = store.clone();
        async move {
            store
                .outbox_pending(100)
                .await
                .unwrap()
                .iter()
                .map(|p| p.entry.seq)
                .collect::<Vec<_>>()
        }
    };
    let (_, ab) = store
        .upsert_logged(&[project(ws, "a"), project(ws, "b")], &[])
        .await
        .unwrap();
    let (_, c) = store
        .upsert_logged(&[project(ws, "c")], &ab[..1])
        .await
        .unwrap();
    assert_eq!(pending_seqs(store).await, vec![ab[1], c[0]]);
    let mut bad = project(ws, "bad");
    if let RecordBody::Project(p) = &mut bad.body {
        p.name = String::new();
    }
    assert!(store.upsert_logged(&[bad], &ab[1..]).await.is_err());
    assert_eq!(
        pending_seqs(store).await,
        vec![ab[1], c[0]],
        "a failed write removes no ack"
    );
    store.outbox_park(c[0], "parked").await.unwrap();
    let (_, d) = store
        .delete_logged(
            ws,
            RecordKind::Project,
            RecordId::new(),
            Timestamp::now(),
            &[ab[1], c[0]],
        )
        .await
        .unwrap();
    assert_eq!(pending_seqs(store).await, vec![d]);
    assert_eq!(
        store.outbox_stats().await.unwrap().parked,
        1,
        "parked stays"
    );
    store.outbox_unpark().await.unwrap();
    drain(store).await;
}

/// Two evaluation results and a usage event of one workspace.
pub fn some_events(ws: WorkspaceId) -> Vec<AnalyticsEvent> {
    let (p, run, now) = (RecordId::new(), RecordId::new(), Timestamp::now());
    vec![
        crate::generate::eval_result(ws, p, run, "accuracy", 0.5, true, 12, Cost(3), now),
        crate::generate::eval_result(ws, p, run, "accuracy", 0.25, false, 20, Cost(4), now),
        crate::generate::usage(ws, p, None, "gpt-4o", 10, 20, Cost(7), 30, now),
    ]
}

/// The `EventOutboxStore` cases, in order, on a store nothing else logs to.
pub async fn event_outbox_cases(store: Arc<dyn EventOutboxStore>) {
    let pending = |store: Arc<dyn EventOutboxStore>| async move {
        store.event_outbox_pending(100).await.unwrap()
    };
    let ws = WorkspaceId::new();
    let events = some_events(ws);
    let (stored, seqs) = store.record_logged(&events, &[]).await.unwrap();
    assert_eq!((stored, seqs.len()), (3, 3));
    let got = pending(store.clone()).await;
    assert_eq!(got.iter().map(|p| p.seq).collect::<Vec<_>>(), seqs);
    for (p, e) in got.iter().zip(&events) {
        assert_eq!(p.event.as_ref(), Some(e), "the stored event");
    }
    // A replay stores nothing new but is logged; acks ride on it.
    let (stored, again) = store.record_logged(&events[..1], &seqs[..2]).await.unwrap();
    assert_eq!(stored, 0);
    assert_eq!(
        pending(store.clone())
            .await
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        vec![seqs[2], again[0]]
    );
    // An invalid batch records and logs nothing, and removes no ack.
    let mut bad = some_events(ws);
    if let AnalyticsEvent::EvalResult(e) = &mut bad[0] {
        e.metric = String::new();
    }
    assert!(store.record_logged(&bad, &[seqs[2]]).await.is_err());
    assert_eq!(store.event_outbox_stats().await.unwrap().pending, 2);
    store.event_outbox_park(seqs[2], "refused").await.unwrap();
    let stats = store.event_outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (1, 1));
    store.event_outbox_ack(&[seqs[2], again[0]]).await.unwrap();
    let stats = store.event_outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.parked),
        (0, 1),
        "acks leave parked entries"
    );
    // Unparked, it is pending again with its event.
    assert_eq!(store.event_outbox_unpark().await.unwrap(), 1);
    let back = pending(store.clone()).await;
    assert_eq!(
        back.iter().map(|p| p.seq).collect::<Vec<_>>(),
        vec![seqs[2]]
    );
    assert_eq!(back[0].event.as_ref(), Some(&events[2]));
    store.event_outbox_ack(&[seqs[2]]).await.unwrap();
    assert_eq!(
        store.event_outbox_stats().await.unwrap(),
        OutboxStats::default()
    );
}

/// Two embeddings of one workspace, unit length (as indexes store them), of `dimension`.
pub fn some_embeddings(ws: WorkspaceId, dimension: usize) -> Vec<VectorEntry> {
    let mut rng = crate::generate::Rng::new(7);
    (0..2)
        .map(|_| VectorEntry {
            workspace: ws,
            project: Some(RecordId::new()),
            kind: EmbeddingKind::Message,
            id: RecordId::new(),
            embedding: crate::generate::random_embedding(&mut rng, dimension).normalized(),
            updated_at: Timestamp::now(),
        })
        .collect()
}

/// The `VectorOutboxStore` cases, in order, on a store nothing else logs to.
pub async fn vector_outbox_cases(store: Arc<dyn VectorOutboxStore>) {
    let pending = |store: Arc<dyn VectorOutboxStore>| async move {
        store.vector_outbox_pending(100).await.unwrap()
    };
    let close = |a: &VectorEntry, b: &VectorEntry| {
        assert_eq!(
            (a.workspace, a.kind, a.id, a.project, a.updated_at),
            (b.workspace, b.kind, b.id, b.project, b.updated_at)
        );
        for (x, y) in a.embedding.as_slice().iter().zip(b.embedding.as_slice()) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }
    };
    // The log may hold entries of an earlier run of this case (a long-lived database): delivered
    // here, and parked ones counted from where they stand.
    loop {
        let old = pending(store.clone()).await;
        if old.is_empty() {
            break;
        }
        let seqs: Vec<i64> = old.iter().map(|p| p.seq).collect();
        store.vector_outbox_ack(&seqs).await.unwrap();
    }
    let parked_before = store.vector_outbox_stats().await.unwrap().parked;
    let ws = WorkspaceId::new();
    let dim = store.dimension();
    let entries = some_embeddings(ws, dim);
    let keys: Vec<VectorKey> = entries.iter().map(VectorKey::of).collect();
    let (written, seqs) = store.vector_upsert_logged(&entries, &[]).await.unwrap();
    assert_eq!((written, seqs.len()), (2, 2));
    let got = pending(store.clone()).await;
    assert_eq!(got.iter().map(|p| p.seq).collect::<Vec<_>>(), seqs);
    for (p, e) in got.iter().zip(&entries) {
        assert_eq!(p.key, VectorKey::of(e));
        close(p.entry.as_ref().expect("the stored embedding"), e);
    }
    // A delete is logged, its entry (and the earlier one of the same key) names no embedding now;
    // acks ride on it.
    let (deleted, del) = store
        .vector_delete_logged(keys[0], &seqs[1..])
        .await
        .unwrap();
    assert!(deleted);
    let got = pending(store.clone()).await;
    assert_eq!(
        got.iter().map(|p| (p.seq, p.key)).collect::<Vec<_>>(),
        vec![(seqs[0], keys[0]), (del, keys[0])]
    );
    assert!(got.iter().all(|p| p.entry.is_none()), "deleted since");
    let now = store.vector_entries(&[keys[1], keys[0]]).await.unwrap();
    close(now[0].as_ref().unwrap(), &entries[1]);
    assert_eq!(now[1], None);
    // An older write does not replace a newer one, but is logged.
    let mut older = entries[1].clone();
    older.updated_at = older.updated_at.plus_micros(-1);
    let (written, old_seq) = store.vector_upsert_logged(&[older], &[]).await.unwrap();
    assert_eq!(written, 0);
    let last = pending(store.clone()).await.pop().unwrap();
    assert_eq!(last.seq, old_seq[0]);
    close(last.entry.as_ref().unwrap(), &entries[1]);
    // A wrong dimension writes and logs nothing, and removes no ack.
    let mut bad = some_embeddings(ws, dim + 1);
    bad.truncate(1);
    assert!(store.vector_upsert_logged(&bad, &[seqs[0]]).await.is_err());
    assert_eq!(store.vector_outbox_stats().await.unwrap().pending, 3);
    store.vector_outbox_park(seqs[0], "refused").await.unwrap();
    let stats = store.vector_outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (2, parked_before + 1));
    assert!(stats.oldest_pending.is_some());
    store
        .vector_outbox_ack(&[seqs[0], del, old_seq[0]])
        .await
        .unwrap();
    let stats = store.vector_outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.parked),
        (0, parked_before + 1),
        "acks leave parked entries"
    );
    // Unparked (with any left by earlier runs), they are pending again: this one names the
    // deleted embedding.
    assert_eq!(
        store.vector_outbox_unpark().await.unwrap(),
        parked_before + 1
    );
    let back = pending(store.clone()).await;
    let mine = back.iter().find(|p| p.seq == seqs[0]).expect("unparked");
    assert_eq!((mine.key, mine.entry.as_ref()), (keys[0], None));
    let seqs: Vec<i64> = back.iter().map(|p| p.seq).collect();
    store.vector_outbox_ack(&seqs).await.unwrap();
    let stats = store.vector_outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.parked), (0, 0));
}
