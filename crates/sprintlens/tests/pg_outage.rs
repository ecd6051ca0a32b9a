//! Dual-write (SQLite primary → PostgreSQL) under a load of 10,000 acknowledged record writes (and
//! embedding writes and deletes beside them) while a
//! PostgreSQL server of the test's own is stopped with `pg_ctl stop -m immediate`, started again,
//! paused with SIGSTOP and resumed: no acknowledged write is lost, no caller waits past its
//! deadline, and once PostgreSQL is back the reconciler converges and `verify` passes.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sprintlens::Storage;
use sprintlens::core::*;
use sprintlens_testkit::generate::project;
use sprintlens_testkit::pg_cluster::DisposablePg;

const WRITES: u64 = 10_000;
const TASKS: u64 = 8;
const WRITE_WAIT_MS: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_and_paused_during_dual_write_loses_nothing() {
    let Some(pg) = DisposablePg::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = pg.url();
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let target_toml = d.join("target.toml");
    std::fs::write(
        &target_toml,
        format!(
            r#"[records]
url = "{url}"
admin_url = "{url}"
operator_url = "{url}"
acquire_timeout_ms = 1000
statement_timeout_ms = 2000
[vectors]
url = "{url}"
dimension = 16
[embedder]
url = "hash://"
dimension = 16
[analytics]
url = "sqlite://{t}/analytics.db"
[blobs]
url = "file://{t}/blobs"
[cache]
url = "memory://"
[sessions]
url = "memory://"
"#,
            t = d.join("target").display()
        ),
    )
    .unwrap();
    let target_config = sprintlens::config::from_parts(
        Some(&std::fs::read_to_string(&target_toml).unwrap()),
        std::iter::empty(),
    )
    .unwrap();
    let target = Storage::open(target_config).await.unwrap();
    target.apply_schema().await.unwrap();
    // The old store's configuration in `mode`, with its data under `dir`.
    let old = |dir: &str, mode: &str| {
        let migration = if mode == "single" {
            String::new()
        } else {
            format!(
                "[migration]\nmode = \"{mode}\"\ntarget = \"{}\"\nwrite_wait_ms = {WRITE_WAIT_MS}\ndeliver_timeout_ms = 1000\nreconcile_poll_ms = 100\n",
                target_toml.display()
            )
        };
        sprintlens::config::from_parts(
            Some(&format!(
                "data_dir = \"{}\"\n[vectors]\ndimension = 16\n[embedder]\ndimension = 16\n{migration}",
                d.join(dir).display()
            )),
            std::iter::empty(),
        )
        .unwrap()
    };
    let storage = Storage::open(old("old", "dual-write")).await.unwrap();
    let migration = storage.migration().unwrap().clone();

    // The load: 8 writers, 70% new projects, 30% updates of their own earlier ones.
    let done = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<HashMap<RecordId, Record>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    // Embeddings acknowledged (`None`: deleted), through the vector outbox.
    let embedded: Arc<Mutex<HashMap<VectorKey, Option<VectorEntry>>>> = Arc::default();
    let workspaces: Vec<WorkspaceId> = (0..3).map(|_| WorkspaceId::new()).collect();
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let (storage, done, acked, latencies, embedded) = (
            storage.clone(),
            done.clone(),
            acked.clone(),
            latencies.clone(),
            embedded.clone(),
        );
        let ws = workspaces[(t % 3) as usize];
        writers.push(tokio::spawn(async move {
            let mut mine: Vec<Record> = Vec::new();
            let mut rng = sprintlens_testkit::generate::Rng::new(t + 1);
            let mut i = 0u64;
            while done.load(Ordering::SeqCst) < WRITES {
                let record = if i % 10 < 7 || mine.is_empty() {
                    project(ws, &format!("w{t}-{i}"))
                } else {
                    let k = (i as usize * 7919) % mine.len();
                    let body = RecordBody::Project(Project {
                        name: format!("w{t}-{i}-renamed"),
                        description: Some(format!("update {i} ✓")),
                        settings: serde_json::json!({"i": i}),
                    });
                    mine[k].updated(body).unwrap()
                };
                let start = Instant::now();
                storage
                    .records()
                    .upsert(std::slice::from_ref(&record))
                    .await
                    .expect("a dual-write never fails because of the secondary");
                latencies.lock().unwrap().push((start, start.elapsed()));
                acked.lock().unwrap().insert(record.id, record.clone());
                // Every fourth write also embeds the record; every twentieth removes the
                // embedding of an earlier one.
                if i.is_multiple_of(4) {
                    let entry = VectorEntry {
                        workspace: ws,
                        project: None,
                        kind: EmbeddingKind::Message,
                        id: record.id,
                        embedding: sprintlens_testkit::generate::random_embedding(&mut rng, 16),
                        updated_at: Timestamp::now(),
                    };
                    let start = Instant::now();
                    storage
                        .vectors()
                        .upsert(std::slice::from_ref(&entry))
                        .await
                        .expect("a dual-write never fails because of the secondary");
                    latencies.lock().unwrap().push((start, start.elapsed()));
                    embedded
                        .lock()
                        .unwrap()
                        .insert(VectorKey::of(&entry), Some(entry));
                }
                if i % 20 == 10 {
                    let gone = mine[(i as usize * 31) % mine.len()].id;
                    let start = Instant::now();
                    storage
                        .vectors()
                        .delete(ws, EmbeddingKind::Message, gone)
                        .await
                        .expect("a dual-write never fails because of the secondary");
                    latencies.lock().unwrap().push((start, start.elapsed()));
                    let key = VectorKey {
                        workspace: ws,
                        kind: EmbeddingKind::Message,
                        id: gone,
                    };
                    embedded.lock().unwrap().insert(key, None);
                }
                match mine.iter_mut().find(|r| r.id == record.id) {
                    Some(r) => *r = record,
                    None => mine.push(record),
                }
                done.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }

    // The control: a store of the same kind on the same disk, written in `single` mode by as many
    // writers as the load has, during the whole load. What its writes wait for (the disk, the
    // machine, queueing behind SQLite's one writer) is what the primary's commit costs at that
    // moment; the dual-write layer may add at most `write_wait` on top of it. (While PostgreSQL is
    // down a delivery fails at once, so the load's writers meet at the primary's writer: with one
    // control writer the control saw 114 ms where the primary's commits took 185-325 ms.)
    let control = Storage::open(old("control", "single")).await.unwrap();
    let control_writers: Vec<_> = (0..TASKS)
        .map(|t| {
            let (done, control) = (done.clone(), control.clone());
            tokio::spawn(async move {
                let ws = WorkspaceId::new();
                let mut worst = Duration::ZERO;
                let mut i = 0u64;
                while done.load(Ordering::SeqCst) < WRITES {
                    let record = project(ws, &format!("control-{t}-{i}"));
                    let start = Instant::now();
                    control
                        .records()
                        .upsert(std::slice::from_ref(&record))
                        .await
                        .unwrap();
                    worst = worst.max(start.elapsed());
                    i += 1;
                }
                worst
            })
        })
        .collect();

    // The outages, at fixed points of the load.
    let wait_for = |n: u64| {
        let done = done.clone();
        async move {
            while done.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let mut phases = vec![("before the stop", Instant::now())];
    wait_for(2_000).await;
    phases.push(("while stopping", Instant::now()));
    pg.stop_immediate();
    phases.push(("while stopped", Instant::now()));
    let stopped_at = done.load(Ordering::SeqCst);
    wait_for(4_000).await;
    let pending_while_stopped = migration.outbox_stats().await.unwrap().pending;
    phases.push(("while starting again (recovery)", Instant::now()));
    pg.start_again();
    phases.push(("after the restart", Instant::now()));
    wait_for(6_000).await;
    pg.pause();
    phases.push(("while paused", Instant::now()));
    let paused_at = done.load(Ordering::SeqCst);
    wait_for(8_000).await;
    let pending_while_paused = migration.outbox_stats().await.unwrap().pending;
    pg.resume();
    phases.push(("after the resume", Instant::now()));
    for w in writers {
        w.await.unwrap();
    }
    let mut control_worst = Duration::ZERO;
    for c in control_writers {
        control_worst = control_worst.max(c.await.unwrap());
    }
    let total = done.load(Ordering::SeqCst);
    assert!(total >= WRITES);

    // Converge, then compare.
    let start = Instant::now();
    migration.drain(Duration::from_secs(120)).await.unwrap();
    let converged = start.elapsed();
    for outbox in [
        migration.outbox_stats().await.unwrap(),
        migration.vector_outbox_stats().await.unwrap(),
    ] {
        assert_eq!((outbox.pending, outbox.parked), (0, 0));
    }
    let acked = acked.lock().unwrap().clone();
    let source = Storage::open(old("old", "single")).await.unwrap();
    let mut lost = 0;
    for r in acked.values() {
        let stored = source
            .records()
            .get(r.workspace, r.kind(), r.id)
            .await
            .unwrap();
        if stored.as_ref() != Some(r) {
            lost += 1;
        }
    }
    let embedded = embedded.lock().unwrap().clone();
    let keys: Vec<VectorKey> = embedded.keys().copied().collect();
    let stored = source
        .vector_outbox()
        .unwrap()
        .vector_entries(&keys)
        .await
        .unwrap();
    for (key, stored) in keys.iter().zip(&stored) {
        let want = &embedded[key];
        if stored.as_ref().map(|e| e.updated_at) != want.as_ref().map(|e| e.updated_at) {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "acknowledged writes missing from the primary");
    let embeddings = stored.iter().filter(|e| e.is_some()).count() as u64;
    let report = sprintlens::migrate::verify_all(&source, &target, &[])
        .await
        .unwrap();
    assert!(report.ok, "verify after the outages: {report:?}");
    let target_rows: u64 = report.kinds.iter().map(|k| k.target_rows).sum();
    assert_eq!(target_rows, acked.len() as u64 + embeddings);

    let timed = latencies.lock().unwrap().clone();
    let (worst_start, _) = *timed.iter().max_by_key(|(_, d)| *d).unwrap();
    let worst_phase = phases
        .iter()
        .rev()
        .find(|(_, at)| *at <= worst_start)
        .map_or("before the stop", |(name, _)| *name);
    let mut l: Vec<Duration> = timed.into_iter().map(|(_, d)| d).collect();
    l.sort();
    let q = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
    let deadline = Duration::from_millis(WRITE_WAIT_MS);
    eprintln!(
        "figure: {total} acknowledged record writes ({} records) and {} embedding writes ({embeddings} embeddings left); PostgreSQL stopped at write {stopped_at} \
         ({pending_while_stopped} entries pending while down) and paused at write {paused_at} \
         ({pending_while_paused} pending while paused); lost 0; converged {converged:?} after the load; \
         verify identical ({target_rows} rows); caller latency p50 {:?} p99 {:?} max {:?} (write_wait {deadline:?}), \
         the slowest begun {worst_phase}; control store in single mode on the same disk, {TASKS} writers: slowest write {control_worst:?}; \
         reconcilers {:?} {:?}",
        acked.len(),
        l.len() as u64 - total,
        q(0.5),
        q(0.99),
        l[l.len() - 1],
        migration.reconciler().stats(),
        migration.vector_reconciler().stats()
    );
    assert!(pending_while_stopped > 0 && pending_while_paused > 0);
    // The deadline is write_wait on top of the primary's own commit. The allowance for that commit
    // on a loaded 2-core machine is 1 s, or the control store's slowest write + 500 ms when the
    // machine stalled longer. The control's file holds no outbox (smaller commits and checkpoints
    // than the primary's), hence the fixed floor. A caller held by the secondary well past
    // write_wait fails this.
    let allowance = Duration::from_secs(1).max(control_worst + Duration::from_millis(500));
    let allowed = deadline + allowance;
    assert!(
        l[l.len() - 1] < allowed,
        "a caller waited {:?} (allowed {allowed:?}: write_wait {deadline:?} + the larger of 1 s and the control's slowest write {control_worst:?} + 500 ms), begun {worst_phase}",
        l[l.len() - 1]
    );
}
