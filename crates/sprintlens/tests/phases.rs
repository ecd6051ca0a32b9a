//! `[migration] mode` end to end on the live PostgreSQL of the stack: the refusals, dual-write →
//! backfill → verify → cut-over → rollback, and every acknowledged write in SQLite afterwards.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::path::Path;
use std::time::Duration;

use sprintlens::Storage;
use sprintlens::core::config::StorageConfig;
use sprintlens::core::*;
use sprintlens::migrate;
use sprintlens_testkit::faults::snapshot;
use sprintlens_testkit::generate::{one_of_each, project};

/// A fresh database named after this test and a target configuration pointing at it.
async fn fresh_target(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    fresh_target_with(dir, name, "").await
}

/// [`fresh_target`] with `vectors` added to its `[vectors]` section.
async fn fresh_target_with(dir: &Path, name: &str, vectors: &str) -> Option<std::path::PathBuf> {
    let db = sprintlens_testkit::fresh_postgres_database(&format!(
        "sl_phase_{name}_{}",
        std::process::id()
    ))?;
    let t = dir.join("target");
    let toml = format!(
        r#"[records]
url = "{app}"
admin_url = "{admin}"
operator_url = "{operator}"
[vectors]
url = "{app}"
dimension = 16
{vectors}
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
        app = db.app,
        admin = db.admin,
        operator = db.operator,
        t = t.display()
    );
    let path = dir.join("target.toml");
    std::fs::write(&path, toml).unwrap();
    let target = Storage::open(
        sprintlens::config::from_parts(
            Some(&std::fs::read_to_string(&path).unwrap()),
            std::iter::empty(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    target.apply_schema().await.unwrap();
    Some(path)
}

fn old_config(dir: &Path, mode: &str, target: &Path) -> Result<StorageConfig> {
    let migration = if mode == "single" {
        String::new()
    } else {
        format!(
            "[migration]\nmode = \"{mode}\"\ntarget = \"{}\"\nreconcile_poll_ms = 50\nshadow_sample = 1.0\n",
            target.display()
        )
    };
    let toml = format!(
        "data_dir = \"{}\"\n[vectors]\ndimension = 16\n[embedder]\ndimension = 16\n{migration}",
        dir.join("old").display()
    );
    sprintlens::config::from_parts(Some(&toml), std::iter::empty())
}

async fn open(dir: &Path, mode: &str, target: &Path) -> Result<Storage> {
    Storage::open(old_config(dir, mode, target)?).await
}

async fn plain_target(target: &Path) -> Storage {
    Storage::open(
        sprintlens::config::from_parts(
            Some(&std::fs::read_to_string(target).unwrap()),
            std::iter::empty(),
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

fn refused(r: Result<Storage>, says: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.field(), Some("migration.mode"), "{e}");
    assert!(e.to_string().contains(says), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn phases_refuse_what_would_lose_data_and_rollback_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "flow").await else {
        return;
    };
    let d = dir.path();
    let workspaces: Vec<WorkspaceId> = (0..3).map(|_| WorkspaceId::new()).collect();
    let mut acked = 0u64;
    let mut embedded = Vec::new();

    // Single: the service's data before the migration.
    {
        let single = open(d, "single", &target).await.unwrap();
        for ws in &workspaces {
            acked += single
                .records()
                .upsert(&one_of_each(*ws))
                .await
                .unwrap()
                .written;
            let entries = sprintlens_testkit::outbox::some_embeddings(*ws, 16);
            single.vectors().upsert(&entries).await.unwrap();
            embedded.extend(entries);
        }
    }
    refused(open(d, "shadow-read", &target).await, "finished backfill");
    refused(open(d, "cut-over", &target).await, "finished backfill");

    // Dual-write while the backfill runs.
    let dual = open(d, "dual-write", &target).await.unwrap();
    let m = dual.migration().unwrap().clone();
    let mut events = 0;
    for (i, ws) in workspaces.iter().enumerate() {
        events += dual
            .analytics()
            .record(&sprintlens_testkit::outbox::some_events(*ws))
            .await
            .unwrap();
        let p = project(*ws, &format!("during dual-write {i}"));
        dual.records()
            .upsert(std::slice::from_ref(&p))
            .await
            .unwrap();
        acked += 1;
        if i == 0 {
            dual.records()
                .delete(*ws, RecordKind::Project, p.id, p.updated_at.plus_micros(1))
                .await
                .unwrap();
            acked += 1;
        }
    }
    let source = open(d, "single", &target).await.unwrap();
    let new = plain_target(&target).await;
    let runs = migrate::run(&source, &new, &migrate::RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(runs.iter().all(|r| r.done));
    // Embedding writes after the backfill reach the target only through the vector outbox: two
    // new ones per workspace, and the deletion of one the backfill copied.
    let delivered_before = m.vector_reconciler().stats().delivered;
    for ws in &workspaces {
        dual.vectors()
            .upsert(&sprintlens_testkit::outbox::some_embeddings(*ws, 16))
            .await
            .unwrap();
    }
    let gone = &embedded[0];
    assert!(
        dual.vectors()
            .delete(gone.workspace, gone.kind, gone.id)
            .await
            .unwrap()
    );
    refused(open(d, "cut-over", &target).await, "verify");
    // Shadow reads now open (the backfill is done).
    drop(open(d, "shadow-read", &target).await.unwrap());
    m.drain(Duration::from_secs(20)).await.unwrap();
    assert_eq!(m.vector_outbox_stats().await.unwrap().pending, 0);
    assert!(
        m.vector_reconciler().stats().delivered >= delivered_before + 7,
        "six upserts and a delete delivered through the vector outbox"
    );
    assert_eq!(m.mirror_failures(), 0);
    assert_eq!(new.vectors().count(workspaces[0]).await.unwrap(), 3);
    let report = migrate::verify_all(&source, &new, &[]).await.unwrap();
    assert!(report.ok, "{report:?}");
    migrate::record_verify(&new, &report).await.unwrap();
    drop(dual);

    // Cut-over: the new store serves; every write is still delivered to the old one.
    let cut = open(d, "cut-over", &target).await.unwrap();
    assert_eq!(migrate_phase(&new).await.as_deref(), Some("cut-over"));
    for ws in &workspaces {
        events += cut
            .analytics()
            .record(&sprintlens_testkit::outbox::some_events(*ws))
            .await
            .unwrap();
        let p = project(*ws, "during cut-over");
        cut.records()
            .upsert(std::slice::from_ref(&p))
            .await
            .unwrap();
        let again = p
            .updated(RecordBody::Project(Project {
                name: "during cut-over, renamed".into(),
                description: Some("ü".into()),
                settings: serde_json::json!({}),
            }))
            .unwrap();
        cut.records()
            .upsert(std::slice::from_ref(&again))
            .await
            .unwrap();
        acked += 2;
        // Embeddings written while PostgreSQL serves reach SQLite through its vector outbox.
        let entries = sprintlens_testkit::outbox::some_embeddings(*ws, 16);
        cut.vectors().upsert(&entries).await.unwrap();
        embedded.extend(entries);
    }
    let gone = &embedded[1];
    assert!(
        cut.vectors()
            .delete(gone.workspace, gone.kind, gone.id)
            .await
            .unwrap()
    );
    // Logged in PostgreSQL's vector outbox: each entry pending there or delivered already.
    let logged = new
        .vector_outbox()
        .unwrap()
        .vector_outbox_stats()
        .await
        .unwrap()
        .pending
        + cut
            .migration()
            .unwrap()
            .vector_reconciler()
            .stats()
            .delivered;
    assert!(logged >= 7, "{logged}");
    assert_eq!(cut.records().backend(), "postgres");
    // The process stops before its reconciler has necessarily delivered anything.
    drop(cut);
    refused(open(d, "dual-write", &target).await, "rollback");

    let rb = migrate::rollback(&source, &new, |_| {}).await.unwrap();
    assert!(!rb.already);
    assert_eq!(migrate_phase(&new).await.as_deref(), Some("rolled-back"));
    assert!(
        migrate::rollback(&source, &new, |_| {})
            .await
            .unwrap()
            .already
    );
    // Every acknowledged write is in SQLite, and both stores agree; every event too.
    let mut in_sqlite = 0;
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        in_sqlite += source
            .analytics()
            .scan(kind, None, 1000)
            .await
            .unwrap()
            .len() as u64;
    }
    assert_eq!(
        in_sqlite, events,
        "every recorded event is in SQLite after rollback"
    );
    let embeddings = migrate::verify_embeddings(&source, &new).await.unwrap();
    assert_eq!(embeddings.differences(), 0, "{embeddings:?}");
    let back = source
        .vector_outbox()
        .unwrap()
        .vector_entries(&[
            VectorKey::of(&embedded[1]),
            VectorKey::of(embedded.last().unwrap()),
        ])
        .await
        .unwrap();
    assert!(back[0].is_none() && back[1].is_some(), "{back:?}");
    for ws in &workspaces {
        let old_side = snapshot(&**source.records(), *ws).await;
        assert_eq!(old_side, snapshot(&**new.records(), *ws).await);
        assert!(
            old_side
                .iter()
                .any(|r| r.body.name() == Some("during cut-over, renamed"))
        );
    }
    eprintln!(
        "figure: {acked} acknowledged writes across single, dual-write and cut-over; all in SQLite after rollback (delivered {}, re-copied {})",
        rb.delivered, rb.copied
    );
    // Back to dual-write is allowed now; cut-over again needs a new verify.
    drop(open(d, "dual-write", &target).await.unwrap());
    refused(open(d, "cut-over", &target).await, "verify");
}

async fn migrate_phase(target: &Storage) -> Option<String> {
    sprintlens::phase::phase(target)
        .await
        .unwrap()
        .map(|p| p.phase)
}

#[test]
fn migration_config_errors_name_the_key_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = |toml: &str| -> String {
        let text = format!("data_dir = \"{}\"\n{toml}", d.join("x").display());
        match sprintlens::config::from_parts(Some(&text), std::iter::empty()) {
            Err(e) => e.field().unwrap_or_default().to_string(),
            Ok(c) => sprintlens::phase::target_config(&c)
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.field().unwrap_or_default().to_string()),
        }
    };
    assert_eq!(
        key("[migration]\nmode = \"dual-write\""),
        "migration.target"
    );
    assert_eq!(key("[migration]\nmode = \"sideways\""), "migration.mode");
    assert_eq!(key("[migration]\nmodes = \"single\""), "migration.modes");
    assert_eq!(
        key("[migration]\nshadow_sample = 2.0"),
        "migration.shadow_sample"
    );
    assert_eq!(
        key("[migration]\nmode = \"cut-over\"\ntarget = \"/nonexistent/t.toml\""),
        "migration.target"
    );
    let nested = d.join("nested.toml");
    std::fs::write(
        &nested,
        "[migration]\nmode = \"dual-write\"\ntarget = \"elsewhere.toml\"\n",
    )
    .unwrap();
    assert_eq!(
        key(&format!(
            "[migration]\nmode = \"dual-write\"\ntarget = \"{}\"",
            nested.display()
        )),
        "migration.target"
    );
    let same = d.join("same.toml");
    std::fs::write(&same, format!("data_dir = \"{}\"\n", d.join("x").display())).unwrap();
    assert_eq!(
        key(&format!(
            "[migration]\nmode = \"dual-write\"\ntarget = \"{}\"",
            same.display()
        )),
        "migration.target"
    );
    assert!(!d.join("x").exists(), "nothing was created");
}

/// A large backfill into an empty target drops its secondary indexes and builds them at the end;
/// until then the backfill does not count as finished (shadow reads refused), `schema apply`
/// rebuilds them for an abandoned run, and `defer_indexes: false` keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_backfill_defers_the_target_indexes_until_it_is_done() {
    use sprintlens_testkit::generate::{Rng, conversation, message, sentence};
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "indexes").await else {
        return;
    };
    let d = dir.path();
    let ws = WorkspaceId::new();
    let n = migrate::DEFER_INDEXES_MIN_ROWS as usize + 5_000;
    {
        let single = open(d, "single", &target).await.unwrap();
        let p = project(ws, "bulk");
        let c = conversation(ws, p.id, None, "bulk");
        single
            .records()
            .upsert(&[p.clone(), c.clone()])
            .await
            .unwrap();
        let mut rng = Rng::new(7);
        let batch: Vec<Record> = (0..n)
            .map(|i| {
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                message(ws, p.id, c.id, role, &sentence(&mut rng, 8))
            })
            .collect();
        for chunk in batch.chunks(5_000) {
            single.records().upsert(chunk).await.unwrap();
        }
    }
    let source = open(d, "single", &target).await.unwrap();
    let new = plain_target(&target).await;
    let pg = new.postgres().unwrap();
    let partial = migrate::RunOptions {
        batch: 5_000,
        stop_after_batches: Some(2),
        ..Default::default()
    };
    assert!(!pg.autovacuum_paused("records").await.unwrap());
    migrate::run(&source, &new, &partial, |_| {}).await.unwrap();
    assert!(migrate::indexes_deferred(pg).await.unwrap());
    assert_eq!(
        pg.missing_record_indexes().await.unwrap().len(),
        sprintlens_postgres::RECORD_INDEXES.len()
    );
    assert!(
        pg.autovacuum_paused("records").await.unwrap(),
        "autovacuum stays off while the indexes are deferred"
    );
    refused(open(d, "shadow-read", &target).await, "deferred indexes");
    // Abandoned: `schema apply` brings the indexes back (and autovacuum); the next run clears the
    // mark.
    new.apply_schema().await.unwrap();
    assert!(pg.missing_record_indexes().await.unwrap().is_empty());
    assert!(!pg.autovacuum_paused("records").await.unwrap());
    let mut rebuilt = None;
    migrate::run(&source, &new, &migrate::RunOptions::default(), |p| {
        if p.kind == "indexes" {
            rebuilt = Some(p.copied);
        }
    })
    .await
    .unwrap();
    assert_eq!(rebuilt, Some(0), "nothing left to build");
    assert!(!migrate::indexes_deferred(pg).await.unwrap());
    assert!(!pg.autovacuum_paused("records").await.unwrap());
    drop(open(d, "shadow-read", &target).await.unwrap());
    let report = migrate::verify(&source, &new, &[], &[]).await.unwrap();
    assert!(report.ok, "{report:?}");
    // The lists the indexes serve answer the same on both sides.
    assert_eq!(
        snapshot(&**source.records(), ws).await,
        snapshot(&**new.records(), ws).await
    );

    // `defer_indexes: false` keeps them even into an empty table.
    let dir2 = tempfile::tempdir().unwrap();
    let Some(target2) = fresh_target(dir2.path(), "keep").await else {
        return;
    };
    let new2 = plain_target(&target2).await;
    let keep = migrate::RunOptions {
        defer_indexes: false,
        ..partial
    };
    migrate::run(&source, &new2, &keep, |_| {}).await.unwrap();
    let pg2 = new2.postgres().unwrap();
    assert!(pg2.missing_record_indexes().await.unwrap().is_empty());
    assert!(!migrate::indexes_deferred(pg2).await.unwrap());
    eprintln!(
        "figure: {} records backfilled with the {} secondary indexes deferred and rebuilt",
        n + 2,
        sprintlens_postgres::RECORD_INDEXES.len()
    );
}

/// Embeddings into a target that holds none: COPYed straight in with the HNSW index dropped, the
/// index built once at the end. A run stopped mid-way leaves it missing (and the mark set), which
/// refuses shadow reads; the next run finishes the copy and builds it; verify is identical and a
/// search answers from the rebuilt index.
/// `n` random 16-dimension message embeddings of `ws` from the seed `seed`, every third of a
/// project.
fn message_embeddings(ws: WorkspaceId, n: usize, seed: u64) -> Vec<VectorEntry> {
    use sprintlens_testkit::generate::{Rng, random_embedding};
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| VectorEntry {
            workspace: ws,
            project: (i % 3 == 0).then(RecordId::new),
            kind: EmbeddingKind::Message,
            id: RecordId::new(),
            embedding: random_embedding(&mut rng, 16),
            updated_at: Timestamp::now(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vector_backfill_builds_the_hnsw_index_once_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "vectors").await else {
        return;
    };
    let d = dir.path();
    let ws = WorkspaceId::new();
    let n = 2_500;
    let entries = message_embeddings(ws, n, 11);
    {
        let single = open(d, "single", &target).await.unwrap();
        single.records().upsert(&[project(ws, "v")]).await.unwrap();
        for chunk in entries.chunks(1_000) {
            single.vectors().upsert(chunk).await.unwrap();
        }
    }
    let source = open(d, "single", &target).await.unwrap();
    let new = plain_target(&target).await;
    let pg = new.postgres().unwrap();
    assert!(!pg.vector_index_missing().await.unwrap());
    // One batch per record kind (each fits in one), then one batch of embeddings.
    let partial = migrate::RunOptions {
        stop_after_batches: Some(RecordKind::ALL.len() as u64 + 1),
        ..Default::default()
    };
    migrate::run(&source, &new, &partial, |_| {}).await.unwrap();
    let copied = sprintlens_core::VectorIndex::count_all(pg).await.unwrap();
    assert!(copied > 0 && copied < n as u64, "{copied}");
    assert!(pg.vector_index_missing().await.unwrap());
    assert!(pg.autovacuum_paused("embeddings").await.unwrap());
    assert!(migrate::indexes_deferred(pg).await.unwrap());
    refused(open(d, "shadow-read", &target).await, "deferred indexes");
    let (mut built, mut records_rebuilt) = (false, false);
    migrate::run(&source, &new, &migrate::RunOptions::default(), |p| {
        built |= p.kind == "vector-index";
        records_rebuilt |= p.kind == "indexes";
    })
    .await
    .unwrap();
    assert!(built);
    // Only the vector index was deferred: the record indexes were never touched.
    assert!(!records_rebuilt);
    assert_eq!(
        sprintlens_core::VectorIndex::count_all(pg).await.unwrap(),
        n as u64
    );
    assert!(!pg.vector_index_missing().await.unwrap());
    assert!(!pg.autovacuum_paused("embeddings").await.unwrap());
    assert!(!migrate::indexes_deferred(pg).await.unwrap());
    drop(open(d, "shadow-read", &target).await.unwrap());
    let report = migrate::verify(&source, &new, &[], &[]).await.unwrap();
    assert!(report.ok, "{report:?}");
    let hits = new
        .vectors()
        .search(&VectorQuery {
            workspace: ws,
            embedding: entries[42].embedding.clone(),
            k: 5,
            kinds: vec![],
            project: None,
        })
        .await
        .unwrap();
    assert_eq!(hits.first().map(|h| h.id), Some(entries[42].id));
    // A re-run finds the index built and changes nothing.
    migrate::run(&source, &new, &migrate::RunOptions::default(), |p| {
        assert_ne!(p.kind, "vector-index");
    })
    .await
    .unwrap();
    eprintln!("figure: {n} embeddings backfilled with the HNSW index deferred and built once");
}

/// A target storing vectors as `halfvec` holds every component rounded to half precision:
/// `verify` compares embeddings at that precision (a change within it is equal in meaning there),
/// and still names a vector changed beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_compares_embeddings_at_a_half_precision_targets_precision() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target_with(dir.path(), "half", "half = true").await else {
        return;
    };
    let d = dir.path();
    let ws = WorkspaceId::new();
    let entries = message_embeddings(ws, 300, 12);
    let source = open(d, "single", &target).await.unwrap();
    source.records().upsert(&[project(ws, "h")]).await.unwrap();
    source.vectors().upsert(&entries).await.unwrap();
    let new = plain_target(&target).await;
    migrate::run(&source, &new, &migrate::RunOptions::default(), |_| {})
        .await
        .unwrap();
    // Stored rounded: not one of these random components is a half-precision number.
    let stored = new.vectors().scan_entries(None, 1_000).await.unwrap();
    let rounded = stored
        .iter()
        .zip(&entries)
        .filter(|(t, s)| t.embedding != s.embedding)
        .count();
    assert_eq!(rounded, entries.len());
    let k = migrate::verify_embeddings(&source, &new).await.unwrap();
    assert_eq!(k.differences(), 0, "{k:?}");
    assert_eq!((k.source_rows, k.target_rows), (300, 300));
    // A component changed beyond half precision is a difference.
    let mut changed = entries[7].clone();
    let mut v = changed.embedding.as_slice().to_vec();
    v[3] += 0.01;
    changed.embedding = Embedding::new(v).unwrap();
    new.vectors().upsert(&[changed]).await.unwrap();
    let k = migrate::verify_embeddings(&source, &new).await.unwrap();
    assert_eq!(k.different, vec![entries[7].id], "{k:?}");
    assert_eq!(k.differences(), 1);
}

/// `parallel` cuts a kind no run has started into lanes of about equal size, each with its own
/// checkpoint: a run stopped part-way and resumed with another `parallel` keeps the lanes, rows
/// updated in the source meanwhile move to the last (open-ended) lane, and the copy ends identical
/// with one report and one finished progress line per kind; a re-run writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_cut_a_kind_and_survive_a_change_of_parallelism() {
    use sprintlens_testkit::generate::{Rng, conversation, message, sentence};
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "lanes").await else {
        return;
    };
    let d = dir.path();
    let ws = WorkspaceId::new();
    let p = project(ws, "lanes");
    let c = conversation(ws, p.id, None, "lanes");
    let mut rng = Rng::new(11);
    let mut messages: Vec<Record> = (0..12_000)
        .map(|_| message(ws, p.id, c.id, Role::User, &sentence(&mut rng, 6)))
        .collect();
    {
        let single = open(d, "single", &target).await.unwrap();
        single
            .records()
            .upsert(&[p.clone(), c.clone()])
            .await
            .unwrap();
        for chunk in messages.chunks(4_000) {
            single.records().upsert(chunk).await.unwrap();
        }
    }
    let source = open(d, "single", &target).await.unwrap();
    let new = plain_target(&target).await;
    let cuts = source
        .records()
        .split(RecordKind::Message, 3)
        .await
        .unwrap();
    assert_eq!(cuts.len(), 2);

    let partial = migrate::RunOptions {
        batch: 1_000,
        parallel: 3,
        kinds: vec![RecordKind::Message],
        stop_after_batches: Some(4),
        ..Default::default()
    };
    migrate::run(&source, &new, &partial, |_| {}).await.unwrap();
    let lanes: Vec<_> = migrate::status(&new)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.name.starts_with("migrate/records/message"))
        .collect();
    let names: Vec<&str> = lanes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "migrate/records/message/00",
            "migrate/records/message/01",
            "migrate/records/message/02"
        ]
    );
    let end = |i: usize| serde_json::to_value(cuts[i]).unwrap();
    assert_eq!(lanes[0].position["end"], end(0));
    assert_eq!(lanes[1].position["end"], end(1));
    assert!(
        lanes[2].position.get("end").is_none(),
        "the last lane is open-ended"
    );
    assert_eq!(lanes.iter().map(|s| s.rows).sum::<u64>(), 4_000);
    assert!(
        lanes.iter().filter(|s| s.rows > 0).count() >= 2,
        "{lanes:?}"
    );

    // Lanes part-way: the backfill is not done, so shadow reads are refused.
    refused(open(d, "shadow-read", &target).await, "backfill");

    // Meanwhile the source changes: the first message is updated (it moves past every cut) and
    // new ones arrive.
    {
        let writer = open(d, "single", &target).await.unwrap();
        messages[0].updated_at = Timestamp::now();
        let mut more = vec![messages[0].clone()];
        more.extend((0..500).map(|_| message(ws, p.id, c.id, Role::User, "late")));
        writer.records().upsert(&more).await.unwrap();
    }
    let mut finished = Vec::new();
    let options = migrate::RunOptions {
        batch: 1_000,
        parallel: 1,
        ..Default::default()
    };
    let runs = migrate::run(&source, &new, &options, |p| {
        if p.kind == "message" && p.done {
            finished.push(p.copied);
        }
    })
    .await
    .unwrap();
    assert_eq!(
        finished.len(),
        1,
        "one finished line for the kind: {finished:?}"
    );
    let run = runs.iter().find(|r| r.kind == "message").unwrap();
    assert_eq!(runs.iter().filter(|r| r.kind == "message").count(), 1);
    assert!(run.done);
    assert_eq!(run.resumed_at, 4_000);
    let report = migrate::verify(&source, &new, &[], &[]).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        snapshot(&**source.records(), ws).await,
        snapshot(&**new.records(), ws).await
    );
    // Each lane stopped at its end: the rows copied add up to the source's (the updated message
    // twice if its first lane copied it before it moved).
    let copied: u64 = migrate::status(&new)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.name.starts_with("migrate/records/message/"))
        .map(|s| s.rows)
        .sum();
    assert!((12_500..=12_501).contains(&copied), "{copied}");
    let again = migrate::run(&source, &new, &options, |_| {}).await.unwrap();
    assert!(again.iter().all(|r| r.written == 0 && r.done), "{again:?}");
    // Every lane done: the backfill counts as finished.
    drop(open(d, "shadow-read", &target).await.unwrap());
    eprintln!(
        "figure: 12,502 records in 3 lanes, stopped after 4 batches, resumed with parallel 1: identical"
    );
}
