//! PostgreSQL-specific behaviour against the live server: the COPY path, tenant isolation enforced by
//! the database (10,000 probes on one pooled connection, as the app role and as the table owner),
//! bad input, migrations.

mod common;

use std::collections::HashMap;

use serde_json::json;
use sprintlens_core::*;
use sprintlens_postgres::{PgOptions, PgStore};
use sprintlens_testkit::generate::{self, Rng, random_embedding};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_go_through_copy_and_stay_idempotent() {
    let Some(store) = common::store().await else {
        return;
    };
    let ws = WorkspaceId::new();
    let p = generate::project(ws, "bulk");
    let mut batch = vec![p.clone()];
    for i in 0..5_000 {
        batch.push(generate::agent(ws, p.id, &format!("agent-{i}")));
    }
    assert_eq!(
        RecordStore::upsert(&*store, &batch).await.unwrap().written,
        5_001
    );
    assert_eq!(
        RecordStore::count(&*store, RecordKind::Agent, Some(ws))
            .await
            .unwrap(),
        5_000
    );
    assert_eq!(
        RecordStore::upsert(&*store, &batch).await.unwrap().skipped,
        5_001
    );
    for r in batch.iter().step_by(97) {
        assert_eq!(
            store.get(ws, r.kind(), r.id).await.unwrap().as_ref(),
            Some(r)
        );
    }
    // Half of them newer: exactly that half is written.
    let newer: Vec<Record> = batch[1..]
        .iter()
        .step_by(2)
        .map(|r| {
            let mut n = r.clone();
            n.updated_at = r.updated_at.plus_micros(1);
            n
        })
        .collect();
    assert_eq!(
        RecordStore::upsert(&*store, &newer).await.unwrap().written,
        2_500
    );
    // A large batch holding one id of another workspace is refused whole.
    let other = WorkspaceId::new();
    let mut mixed: Vec<Record> = (0..1_000)
        .map(|i| generate::agent(other, p.id, &format!("x-{i}")))
        .collect();
    let mut hijack = batch[10].clone();
    hijack.workspace = other;
    hijack.updated_at = hijack.updated_at.plus_micros(1_000);
    mixed.push(hijack);
    let err = RecordStore::upsert(&*store, &mixed).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        RecordStore::count(&*store, RecordKind::Agent, Some(other))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .get(ws, RecordKind::Agent, batch[10].id)
            .await
            .unwrap()
            .unwrap()
            .workspace,
        ws
    );
}

/// The backfill load: COPY straight into `records` through the operator role while no id is stored;
/// a batch holding a stored id falls back to the upsert (newest wins, another workspace's id is a
/// conflict and nothing of the batch or its checkpoint stays); bad input writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_loads_copy_straight_in_and_fall_back_to_the_upsert_on_stored_ids() {
    let Some(store) = common::store().await else {
        return;
    };
    let count = |ws| RecordStore::count(&*store, RecordKind::Agent, Some(ws));
    let stream = format!("test/load/{}", RecordId::new());
    let ws = WorkspaceId::new();
    let p = generate::project(ws, "load");
    let mut first = vec![p.clone()];
    for i in 0..2_000 {
        first.push(generate::agent(ws, p.id, &format!("agent-{i}")));
    }
    // One id twice in the batch: the newer copy is the one stored.
    let mut twice = first[7].clone();
    twice.updated_at = twice.updated_at.plus_micros(5);
    first.push(twice.clone());
    let out = store
        .load_with_checkpoint(&first, &stream, &json!({"at": 1}), 2_001)
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (2_001, 1));
    assert_eq!(count(ws).await.unwrap(), 2_000);
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Some((json!({"at": 1}), 2_001))
    );
    for r in first[..first.len() - 1].iter().step_by(101) {
        let want = if r.id == twice.id { &twice } else { r };
        assert_eq!(
            store.get(ws, r.kind(), r.id).await.unwrap().as_ref(),
            Some(want)
        );
    }
    assert_eq!(
        store.get(ws, RecordKind::Agent, twice.id).await.unwrap(),
        Some(twice.clone())
    );

    // Stored ids in the batch (one newer than stored, one not): the upsert decides, as it would
    // have for the whole batch.
    let mut second: Vec<Record> = (0..1_000)
        .map(|i| generate::agent(ws, p.id, &format!("second-{i}")))
        .collect();
    let mut newer = first[20].clone();
    newer.updated_at = newer.updated_at.plus_micros(10);
    // Same time as the stored copy, different content: the stored one stays.
    let mut older = generate::agent(ws, p.id, "not-stored");
    older.id = first[30].id;
    older.created_at = first[30].created_at;
    older.updated_at = first[30].updated_at;
    second.push(newer.clone());
    second.push(older);
    let out = store
        .load_with_checkpoint(&second, &stream, &json!({"at": 2}), 3_003)
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (1_001, 1));
    assert_eq!(count(ws).await.unwrap(), 3_000);
    assert_eq!(
        store.get(ws, RecordKind::Agent, newer.id).await.unwrap(),
        Some(newer)
    );
    assert_eq!(
        store
            .get(ws, RecordKind::Agent, first[30].id)
            .await
            .unwrap()
            .as_ref(),
        Some(&first[30])
    );
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Some((json!({"at": 2}), 3_003))
    );

    // An id stored in another workspace: a conflict, and neither the batch nor its checkpoint stays.
    let other = WorkspaceId::new();
    let mut third: Vec<Record> = (0..1_000)
        .map(|i| generate::agent(other, p.id, &format!("third-{i}")))
        .collect();
    let mut hijack = first[40].clone();
    hijack.workspace = other;
    hijack.updated_at = hijack.updated_at.plus_micros(1_000);
    third.push(hijack);
    let err = store
        .load_with_checkpoint(&third, &stream, &json!({"at": 3}), 4_004)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(count(other).await.unwrap(), 0);
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Some((json!({"at": 2}), 3_003))
    );

    // A stored id first in a batch several streamed chunks long (about 1.5 MB of rows): the server
    // refuses the COPY while the rest is still being sent, and the upsert takes the batch.
    let mut stored = first[50].clone();
    stored.updated_at = stored.updated_at.plus_micros(10);
    let mut big = vec![stored.clone()];
    big.extend((0..6_000).map(|i| generate::agent(ws, p.id, &format!("big-{i}"))));
    let out = store
        .load_with_checkpoint(&big, &stream, &json!({"at": 3}), 9_004)
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (6_001, 0));
    assert_eq!(count(ws).await.unwrap(), 9_000);
    assert_eq!(
        store.get(ws, RecordKind::Agent, stored.id).await.unwrap(),
        Some(stored)
    );
    assert_eq!(
        store.checkpoint(&stream).await.unwrap(),
        Some((json!({"at": 3}), 9_004))
    );

    // Bad input: a typed error naming the field, nothing written.
    let mut long = generate::agent(other, p.id, "long");
    long.body = RecordBody::Project(Project {
        name: "n".repeat(validate::MAX_NAME_BYTES * 10),
        description: None,
        settings: json!({}),
    });
    let err = store
        .load_with_checkpoint(&[third[0].clone(), long], &stream, &json!({"at": 4}), 1)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.field()),
        (ErrorKind::TooLarge, Some("project.name"))
    );
    assert_eq!(count(other).await.unwrap(), 0);

    // An "operator" role without BYPASSRLS: a configuration error naming the key, nothing written.
    let urls = common::database().await.unwrap();
    let mut o = PgOptions::new(urls.app.clone());
    o.dimension = common::DIM;
    o.operator_url = Some(urls.app.clone());
    let wrong = PgStore::open(o).unwrap();
    let err = wrong
        .load_with_checkpoint(&third[..10], &stream, &json!({"at": 9}), 1)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("records.operator_url"), "{err}");
    assert_eq!(count(other).await.unwrap(), 0);

    // Without the operator role it is the upsert.
    let plain = common::store_with(2, false).await.unwrap();
    let fourth: Vec<Record> = (0..600)
        .map(|i| generate::agent(other, p.id, &format!("fourth-{i}")))
        .collect();
    let out = plain
        .load_with_checkpoint(&fourth, &stream, &json!({"at": 5}), 5_005)
        .await
        .unwrap();
    assert_eq!(out.written, 600);
    assert_eq!(count(other).await.unwrap(), 600);
}

/// The embeddings backfill load: binary COPY through the operator role while no key is stored
/// (vectors come back bit for bit); a batch holding a stored key falls back to the upsert (newest
/// wins); a wrong dimension is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_loads_copy_straight_in_and_fall_back_to_the_upsert_on_stored_keys() {
    let Some(store) = common::store().await else {
        return;
    };
    let mut rng = Rng::new(17);
    let ws = WorkspaceId::new();
    let entry = |rng: &mut Rng, project: Option<RecordId>| VectorEntry {
        workspace: ws,
        project,
        kind: EmbeddingKind::Message,
        id: RecordId::new(),
        embedding: random_embedding(rng, common::DIM),
        updated_at: Timestamp::now(),
    };
    let first: Vec<VectorEntry> = (0..1_500)
        .map(|i| entry(&mut rng, (i % 2 == 0).then(RecordId::new)))
        .collect();
    assert_eq!(store.load_vectors(&first).await.unwrap(), 1_500);
    assert_eq!(VectorIndex::count(&*store, ws).await.unwrap(), 1_500);
    // Read back across workspaces from just before the first entry's time: every entry of this
    // batch comes back equal, components bit for bit.
    let mut after = Some(VectorCursor {
        updated_at: first[0].updated_at.plus_micros(-1),
        id: first[0].id,
        kind: EmbeddingKind::Message,
    });
    let mut back = HashMap::new();
    loop {
        let page = store.scan_entries(after, 1_000).await.unwrap();
        after = page.last().map(VectorEntry::cursor);
        back.extend(page.into_iter().map(|e| (e.id, e)));
        if after.is_none() {
            break;
        }
    }
    for e in &first {
        assert_eq!(back.get(&e.id), Some(e));
    }
    let hits = VectorIndex::search(
        &*store,
        &VectorQuery {
            workspace: ws,
            project: None,
            kinds: vec![],
            embedding: first[9].embedding.clone(),
            k: 3,
        },
    )
    .await
    .unwrap();
    assert_eq!(hits[0].id, first[9].id);

    // A stored key in the batch (newer): the upsert writes all of it.
    let mut second: Vec<VectorEntry> = (0..300).map(|_| entry(&mut rng, None)).collect();
    let mut newer = first[3].clone();
    newer.embedding = random_embedding(&mut rng, common::DIM);
    newer.updated_at = newer.updated_at.plus_micros(10);
    second.push(newer.clone());
    assert_eq!(store.load_vectors(&second).await.unwrap(), 301);
    assert_eq!(VectorIndex::count(&*store, ws).await.unwrap(), 1_800);
    let hits = VectorIndex::search(
        &*store,
        &VectorQuery {
            workspace: ws,
            project: None,
            kinds: vec![],
            embedding: newer.embedding.clone(),
            k: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(hits[0].id, newer.id);

    // A wrong dimension: refused, nothing written.
    let mut wrong = vec![entry(&mut rng, None)];
    wrong.push(VectorEntry {
        embedding: random_embedding(&mut rng, common::DIM * 2),
        ..entry(&mut rng, None)
    });
    assert_eq!(
        store.load_vectors(&wrong).await.unwrap_err().field(),
        Some("embedding")
    );
    assert_eq!(VectorIndex::count(&*store, ws).await.unwrap(), 1_800);

    // Without the operator role it is the upsert.
    let plain = common::store_with(2, false).await.unwrap();
    let third: Vec<VectorEntry> = (0..200).map(|_| entry(&mut rng, None)).collect();
    assert_eq!(plain.load_vectors(&third).await.unwrap(), 200);
    assert_eq!(VectorIndex::count(&*store, ws).await.unwrap(), 2_000);
}

/// Workspaces with records and embeddings, then 10,000 random probes on a pool of ONE connection (so
/// every probe reuses a connection another workspace just used): no probe ever sees another
/// workspace's row, through get, list, count, scan or vector search.
async fn probe(store: &PgStore, label: &str) {
    let mut rng = Rng::new(99);
    let workspaces: Vec<WorkspaceId> = (0..12).map(|_| WorkspaceId::new()).collect();
    let mut owned: HashMap<RecordId, WorkspaceId> = HashMap::new();
    let mut ids = Vec::new();
    for ws in &workspaces {
        let records = generate::one_of_each(*ws);
        RecordStore::upsert(store, &records).await.unwrap();
        for r in &records {
            owned.insert(r.id, *ws);
            ids.push((r.kind(), r.id));
        }
        let entries: Vec<VectorEntry> = records
            .iter()
            .take(5)
            .map(|r| VectorEntry {
                workspace: *ws,
                project: r.body.project(),
                kind: EmbeddingKind::Message,
                id: r.id,
                embedding: random_embedding(&mut rng, common::DIM),
                updated_at: Timestamp::now(),
            })
            .collect();
        VectorIndex::upsert(store, &entries).await.unwrap();
    }
    let mut seen_own = 0u64;
    for _ in 0..10_000 {
        let ws = *rng.pick(&workspaces);
        let (kind, id) = *rng.pick(&ids);
        match rng.below(5) {
            0 => {
                if let Some(r) = store.get(ws, kind, id).await.unwrap() {
                    assert_eq!(r.workspace, ws, "{label}: get leaked");
                    seen_own += 1;
                }
            }
            1 => {
                for r in store.list(ws, &ListQuery::new(kind)).await.unwrap().items {
                    assert_eq!(owned[&r.id], ws, "{label}: list leaked");
                    seen_own += 1;
                }
            }
            2 => {
                let n = RecordStore::count(store, kind, Some(ws)).await.unwrap();
                assert_eq!(n, 1, "{label}: count saw other workspaces");
            }
            3 => {
                let rows = store
                    .scan(&ScanRequest {
                        kind,
                        workspace: Some(ws),
                        after: None,
                        limit: 100,
                    })
                    .await
                    .unwrap();
                assert!(
                    rows.iter().all(|r| r.workspace == ws),
                    "{label}: scan leaked"
                );
            }
            _ => {
                let hits = store
                    .search(&VectorQuery {
                        workspace: ws,
                        project: None,
                        kinds: vec![],
                        embedding: random_embedding(&mut rng, common::DIM),
                        k: 20,
                    })
                    .await
                    .unwrap();
                assert!(
                    hits.len() <= 5,
                    "{label}: search saw more than this workspace's 5"
                );
                for h in hits {
                    assert_eq!(owned[&h.id], ws, "{label}: search leaked");
                    seen_own += 1;
                }
            }
        }
    }
    assert!(
        seen_own > 1_000,
        "{label}: the probes must also see the workspace's own rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_probes_find_no_other_workspace_on_one_pooled_connection() {
    let Some(store) = common::store_with(1, false).await else {
        return;
    };
    probe(&store, "app role").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_holds_for_the_table_owner_too() {
    let Some(urls) = common::database().await else {
        return;
    };
    common::store().await.unwrap(); // schema applied
    let mut o = PgOptions::new(urls.admin.clone());
    o.dimension = common::DIM;
    o.pool_size = 1;
    let owner = PgStore::open(o).unwrap();
    probe(&owner, "owner role").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workspace_setting_means_no_rows_and_nothing_leaks_between_transactions() {
    let Some(store) = common::store().await else {
        return;
    };
    let Some(urls) = common::database().await else {
        return;
    };
    let ws = WorkspaceId::new();
    RecordStore::upsert(&*store, &generate::one_of_each(ws))
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&urls.app)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 0, "no setting must mean no rows");
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('sprintlens.workspace', $1, true)")
        .bind(ws.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 10);
    tx.commit().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        n, 0,
        "the setting must not outlive its transaction on a pooled connection"
    );
    // Writing into another workspace than the one set is refused by the database itself.
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query("SELECT set_config('sprintlens.workspace', $1, true)")
        .bind(WorkspaceId::new().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO records (id, workspace, kind, created_at, updated_at, body)
         VALUES (gen_random_uuid(), $1, 'project', now(), now(), '{}')",
    )
    .bind(ws.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_sql_and_writes_nothing() {
    let Some(store) = common::store().await else {
        return;
    };
    let ws = WorkspaceId::new();
    let good = generate::project(ws, "fine");
    let mut long = generate::project(ws, "long");
    long.body = RecordBody::Project(Project {
        name: "n".repeat(validate::MAX_NAME_BYTES * 10),
        description: None,
        settings: json!({}),
    });
    let err = RecordStore::upsert(&*store, &[good.clone(), long])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.field()),
        (ErrorKind::TooLarge, Some("project.name"))
    );
    let mut nul = generate::project(ws, "nul");
    nul.body = RecordBody::Project(Project {
        name: "nul".into(),
        description: None,
        settings: json!({"k": "a\u{0}b"}),
    });
    let err = RecordStore::upsert(&*store, &[good.clone(), nul])
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("project.settings"));
    let mut huge = generate::message(ws, good.id, RecordId::new(), Role::User, "x");
    if let RecordBody::Message(m) = &mut huge.body {
        m.metadata = json!({"blob": "x".repeat(validate::MAX_JSON_BYTES * 10)});
    }
    let err = RecordStore::upsert(&*store, &[good.clone(), huge])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.field()),
        (ErrorKind::TooLarge, Some("message.metadata"))
    );
    let mut rng = Rng::new(5);
    let wrong = VectorEntry {
        workspace: ws,
        project: None,
        kind: EmbeddingKind::Message,
        id: RecordId::new(),
        embedding: random_embedding(&mut rng, common::DIM * 10),
        updated_at: Timestamp::now(),
    };
    assert_eq!(
        VectorIndex::upsert(&*store, &[wrong])
            .await
            .unwrap_err()
            .field(),
        Some("embedding")
    );
    assert!(Embedding::new(vec![f32::NAN; common::DIM]).is_err());
    assert_eq!(
        RecordStore::count(&*store, RecordKind::Project, Some(ws))
            .await
            .unwrap(),
        0
    );
    assert_eq!(VectorIndex::count(&*store, ws).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_reapply_as_no_ops_and_a_failing_one_changes_nothing() {
    let Some(store) = common::store().await else {
        return;
    };
    let Some(urls) = common::database().await else {
        return;
    };
    assert!(store.apply_schema(&urls.admin).await.unwrap().is_empty());
    let bad: &[(i64, &str, &str)] = &[(
        9_000_001,
        "half-broken",
        "CREATE TABLE half_done (x int); INSERT INTO no_such_table VALUES (1);",
    )];
    assert!(store.apply_migrations(&urls.admin, bad).await.is_err());
    let admin = sqlx::PgPool::connect(&urls.admin).await.unwrap();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('half_done') IS NOT NULL")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(!exists, "a failed migration must leave no table behind");
    let recorded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sprintlens_migrations WHERE version = 9000001)",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(!recorded);
    // Opening with another dimension is a config error naming the key.
    let mut o = PgOptions::new(urls.app.clone());
    o.dimension = common::DIM + 1;
    let err = PgStore::open(o)
        .unwrap()
        .apply_schema(&urls.admin)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("vectors.dimension"));
    assert_eq!(
        store.schema_versions().await.unwrap(),
        sprintlens_postgres::MIGRATIONS
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>()
    );
    // Migration 7: `ANALYZE` keeps no statistics on bodies (PostgreSQL 17+: NULL is the default).
    let admin = sqlx::PgPool::connect(&urls.admin).await.unwrap();
    let body_target: Option<i16> = sqlx::query_scalar(
        "SELECT attstattarget FROM pg_attribute
         WHERE attrelid = 'records'::regclass AND attname = 'body'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(body_target, Some(0));
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halfvec_collections_search_like_full_precision() {
    let Some(base) = common::env() else { return };
    // Half precision is pinned per database: a database of its own.
    let admin = sqlx::PgPool::connect(&base.admin).await.unwrap();
    let name = format!("sl_test_half_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let with_db = |u: &str| format!("{}/{name}", u.rsplit_once('/').unwrap().0);
    let mut o = PgOptions::new(with_db(&base.app));
    o.dimension = common::DIM;
    o.half = true;
    o.operator_url = Some(with_db(&base.operator));
    let store = PgStore::open(o).unwrap();
    store.apply_schema(&with_db(&base.admin)).await.unwrap();
    let typ: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&sqlx::PgPool::connect(&with_db(&base.admin)).await.unwrap())
    .await
    .unwrap();
    assert_eq!(typ, format!("halfvec({})", common::DIM));
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(3);
    let entries: Vec<VectorEntry> = (0..200)
        .map(|_| VectorEntry {
            workspace: ws,
            project: None,
            kind: EmbeddingKind::DatasetItem,
            id: RecordId::new(),
            embedding: random_embedding(&mut rng, common::DIM),
            updated_at: Timestamp::now(),
        })
        .collect();
    VectorIndex::upsert(&store, &entries).await.unwrap();
    for e in entries.iter().take(20) {
        let hits = store
            .search(&VectorQuery {
                workspace: ws,
                project: None,
                kinds: vec![EmbeddingKind::DatasetItem],
                embedding: e.embedding.clone(),
                k: 3,
            })
            .await
            .unwrap();
        assert_eq!(hits[0].id, e.id);
        assert!(
            (hits[0].score - 1.0).abs() < 1e-2,
            "half precision score {}",
            hits[0].score
        );
    }
    // The backfill load COPYs binary `halfvec`, rounded as PostgreSQL's own `vector::halfvec` cast
    // (the upsert path above) rounds: the same vectors under another kind come back bit for bit.
    let copies: Vec<VectorEntry> = entries
        .iter()
        .map(|e| VectorEntry {
            kind: EmbeddingKind::Message,
            ..e.clone()
        })
        .collect();
    assert_eq!(store.load_vectors(&copies).await.unwrap(), 200);
    let mut back: HashMap<(RecordId, EmbeddingKind), Embedding> = HashMap::new();
    let mut after = None;
    loop {
        let page = store.scan_entries(after, 1_000).await.unwrap();
        after = page.last().map(VectorEntry::cursor);
        back.extend(page.into_iter().map(|e| ((e.id, e.kind), e.embedding)));
        if after.is_none() {
            break;
        }
    }
    for e in &entries {
        let cast = &back[&(e.id, EmbeddingKind::DatasetItem)];
        assert_eq!(&back[&(e.id, EmbeddingKind::Message)], cast);
        assert_ne!(cast, &e.embedding, "stored at half precision");
    }
    assert_eq!(VectorIndex::count(&store, ws).await.unwrap(), 400);
    // Reopening the same database at full precision is a config error naming the key.
    let mut full = PgOptions::new(with_db(&base.app));
    full.dimension = common::DIM;
    let err = PgStore::open(full)
        .unwrap()
        .apply_schema(&with_db(&base.admin))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("vectors.half"));
    drop(store);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}

/// A loaded batch leaves its rows' commit hint bits set, so the first scan after a bulk load has
/// (almost) no page to dirty; otherwise the first index build would rewrite the heap, with a full-page
/// image of every page in the WAL when data checksums are on. The batch is larger than COPY's 16 MB
/// ring of buffers, so its first pages are written out during the COPY and would be dirtied again by
/// the first reader: 1,628 of 3,676 pages without the read, 0 with it. The server may skip a page
/// (e.g. while it writes it out), so the bound is a tenth of the pages. A database of its own, so no
/// other test's rows are on the scanned pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_batch_leaves_few_pages_for_the_next_reader_to_dirty() {
    let name = format!("sl_hints_{}", std::process::id());
    let Some(db) = sprintlens_testkit::fresh_postgres_database(&name) else {
        return;
    };
    let mut o = PgOptions::new(db.app.clone());
    o.dimension = common::DIM;
    o.operator_url = Some(db.operator.clone());
    let store = PgStore::open(o).unwrap();
    store.apply_schema(&db.admin).await.unwrap();
    let ws = WorkspaceId::new();
    let p = generate::project(ws, "hints");
    // One batch: its COPY fills more pages than its ring holds, so the ring writes the first ones
    // out (clean, and without hint bits unless the load sets them) before the batch commits.
    let batch: Vec<Record> = (0..80_000)
        .map(|i| generate::agent(ws, p.id, &format!("agent-{i}")))
        .collect();
    store
        .load_with_checkpoint(&batch, "test/hints", &json!({ "round": 1 }), 0)
        .await
        .unwrap();
    let operator = sqlx::PgPool::connect(&db.operator).await.unwrap();
    let plan: serde_json::Value =
        sqlx::query_scalar("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT count(*) FROM records")
            .fetch_one(&operator)
            .await
            .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
        .fetch_one(&operator)
        .await
        .unwrap();
    assert_eq!(rows, 80_000);
    // The top node counts the buffers of every process of the (possibly parallel) scan.
    let scan = &plan[0]["Plan"];
    let touched =
        scan["Shared Hit Blocks"].as_i64().unwrap() + scan["Shared Read Blocks"].as_i64().unwrap();
    assert!(
        touched > 2_048,
        "more pages than the COPY ring holds: {plan}"
    );
    let dirtied = scan["Shared Dirtied Blocks"].as_i64().unwrap();
    assert!(
        dirtied * 10 < touched,
        "{dirtied} of {touched} pages dirtied"
    );
    eprintln!(
        "figure: 80,000 loaded rows over {touched} pages, {dirtied} dirtied by the first scan"
    );
}
