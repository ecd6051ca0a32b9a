//! `RecordStore` conformance cases. Each case makes its own workspaces, so cases may share a store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use sprintlens_core::*;

use crate::generate::{self, one_of_each, project};

type Store = Arc<dyn RecordStore>;

fn kind_of(e: &Error) -> ErrorKind {
    e.kind()
}

fn named(workspace: WorkspaceId, project_id: ProjectId, name: &str) -> Record {
    generate::agent(workspace, project_id, name)
}

/// Every kind written comes back equal from `get`, and `count` sees it.
pub async fn round_trip_every_kind(store: Store) {
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    let out = store.upsert(&records).await.unwrap();
    assert_eq!(out.written, records.len() as u64);
    for r in &records {
        let got = store.get(ws, r.kind(), r.id).await.unwrap();
        assert_eq!(got.as_ref(), Some(r), "{} round trip", r.kind());
        assert_eq!(store.count(r.kind(), Some(ws)).await.unwrap(), 1);
    }
    // The wrong kind finds nothing.
    assert!(
        store
            .get(ws, RecordKind::Agent, records[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

/// Writing the same records again is counted as skipped and changes nothing.
pub async fn reupsert_is_idempotent(store: Store) {
    let ws = WorkspaceId::new();
    let records = one_of_each(ws);
    store.upsert(&records).await.unwrap();
    let again = store.upsert(&records).await.unwrap();
    assert_eq!(
        again,
        UpsertOutcome {
            written: 0,
            skipped: records.len() as u64
        }
    );
    for r in &records {
        assert_eq!(
            store.get(ws, r.kind(), r.id).await.unwrap().as_ref(),
            Some(r)
        );
    }
}

/// A newer `updated_at` replaces; an older or equal one is skipped whatever its content.
pub async fn newer_wins_older_is_skipped(store: Store) {
    let ws = WorkspaceId::new();
    let v1 = project(ws, "alpha");
    store.upsert(std::slice::from_ref(&v1)).await.unwrap();
    let mut v2 = v1.clone();
    v2.body = RecordBody::Project(Project {
        name: "beta".into(),
        description: None,
        settings: json!({}),
    });
    v2.updated_at = v1.updated_at.plus_micros(10);
    let mut stale = v1.clone();
    stale.body = RecordBody::Project(Project {
        name: "stale".into(),
        description: None,
        settings: json!({}),
    });
    stale.updated_at = v1.updated_at.plus_micros(5);
    // Newer first, then the stale one arrives late (as a retry or a backfill would).
    assert_eq!(
        store
            .upsert(std::slice::from_ref(&v2))
            .await
            .unwrap()
            .written,
        1
    );
    assert_eq!(
        store
            .upsert(std::slice::from_ref(&stale))
            .await
            .unwrap()
            .skipped,
        1
    );
    let mut same_time = v2.clone();
    same_time.body = RecordBody::Project(Project {
        name: "tie".into(),
        description: None,
        settings: json!({}),
    });
    assert_eq!(store.upsert(&[same_time]).await.unwrap().skipped, 1);
    assert_eq!(
        store.get(ws, RecordKind::Project, v1.id).await.unwrap(),
        Some(v2)
    );
}

/// 250 records read 7 at a time: every one exactly once, in id order.
pub async fn list_pages_without_gaps_or_repeats(store: Store) {
    let ws = WorkspaceId::new();
    let p = project(ws, "p");
    let pid = p.id;
    let mut records = vec![p];
    for i in 0..250 {
        records.push(named(ws, pid, &format!("agent-{i:03}")));
    }
    store.upsert(&records).await.unwrap();
    let mut query = ListQuery::new(RecordKind::Agent).limit(7);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list(ws, &query).await.unwrap();
        assert!(page.items.len() <= 7);
        pages += 1;
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(t) => query.page = Some(t),
            None => break,
        }
    }
    let mut expected: Vec<RecordId> = records[1..].iter().map(|r| r.id).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(pages, 250usize.div_ceil(7));
}

/// Project, parent and name filters select exactly the matching records.
pub async fn list_filters(store: Store) {
    let ws = WorkspaceId::new();
    let p1 = project(ws, "one");
    let p2 = project(ws, "two");
    let c1 = generate::conversation(ws, p1.id, None, "c1");
    let c2 = generate::conversation(ws, p2.id, None, "c2");
    let mut batch = vec![p1.clone(), p2.clone(), c1.clone(), c2.clone()];
    for i in 0..5 {
        batch.push(generate::message(
            ws,
            p1.id,
            c1.id,
            Role::User,
            &format!("m{i}"),
        ));
    }
    for i in 0..3 {
        batch.push(generate::message(
            ws,
            p2.id,
            c2.id,
            Role::Assistant,
            &format!("n{i}"),
        ));
    }
    batch.push(named(ws, p1.id, "finder"));
    batch.push(named(ws, p2.id, "finder"));
    batch.push(named(ws, p2.id, "other"));
    store.upsert(&batch).await.unwrap();

    let by_parent = store
        .list_all(ws, &ListQuery::new(RecordKind::Message).parent(c1.id))
        .await
        .unwrap();
    assert_eq!(by_parent.len(), 5);
    let by_project = store
        .list_all(ws, &ListQuery::new(RecordKind::Message).project(p2.id))
        .await
        .unwrap();
    assert_eq!(by_project.len(), 3);
    let by_name = store
        .list_all(ws, &ListQuery::new(RecordKind::Agent).name("finder"))
        .await
        .unwrap();
    assert_eq!(by_name.len(), 2);
    let both = store
        .list_all(
            ws,
            &ListQuery::new(RecordKind::Agent)
                .name("finder")
                .project(p2.id),
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].body.project(), Some(p2.id));
    let none = store
        .list_all(ws, &ListQuery::new(RecordKind::Agent).name("nobody"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Workspace B never sees, deletes or overwrites workspace A's records.
pub async fn workspaces_are_isolated(store: Store) {
    let a = WorkspaceId::new();
    let b = WorkspaceId::new();
    let records = one_of_each(a);
    store.upsert(&records).await.unwrap();
    for r in &records {
        assert!(store.get(b, r.kind(), r.id).await.unwrap().is_none());
        assert!(
            !store
                .delete(b, r.kind(), r.id, Timestamp::now().plus_micros(1_000_000))
                .await
                .unwrap()
        );
        assert!(
            store
                .list(b, &ListQuery::new(r.kind()))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(store.count(r.kind(), Some(b)).await.unwrap(), 0);
    }
    // The same id written into B is a conflict, and A's record is unchanged.
    let mut hijack = records[0].clone();
    hijack.workspace = b;
    hijack.updated_at = hijack.updated_at.plus_micros(1);
    let err = store.upsert(&[hijack]).await.unwrap_err();
    assert_eq!(kind_of(&err), ErrorKind::Conflict);
    assert_eq!(
        store
            .get(a, records[0].kind(), records[0].id)
            .await
            .unwrap()
            .as_ref(),
        Some(&records[0])
    );
    // The same unique name in another workspace is fine.
    store
        .upsert(&[project(
            b,
            match &records[0].body {
                RecordBody::Project(p) => &p.name,
                _ => unreachable!(),
            },
        )])
        .await
        .unwrap();
}

/// A batch with one invalid record is refused with the field named, and none of it is written.
pub async fn invalid_input_writes_nothing(store: Store) {
    let ws = WorkspaceId::new();
    let good = project(ws, "good");
    let mut bad = generate::message(ws, good.id, RecordId::new(), Role::User, "hi");
    if let RecordBody::Message(m) = &mut bad.body {
        m.content = "x".repeat(validate::MAX_TEXT_BYTES * 10);
    }
    let err = store.upsert(&[good.clone(), bad]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(err.field(), Some("message.content"));
    let mut empty = project(ws, "x");
    empty.body = RecordBody::Project(Project {
        name: "".into(),
        description: None,
        settings: json!({}),
    });
    let err = store.upsert(&[good.clone(), empty]).await.unwrap_err();
    assert_eq!(err.field(), Some("project.name"));
    let mut not_object = project(ws, "y");
    not_object.body = RecordBody::Project(Project {
        name: "y".into(),
        description: None,
        settings: json!([1, 2]),
    });
    assert_eq!(
        store.upsert(&[not_object]).await.unwrap_err().field(),
        Some("project.settings")
    );
    let mut backwards = project(ws, "z");
    backwards.created_at = backwards.updated_at.plus_micros(1);
    assert_eq!(
        store.upsert(&[backwards]).await.unwrap_err().field(),
        Some("updated_at")
    );
    for k in RecordKind::ALL {
        assert_eq!(store.count(*k, Some(ws)).await.unwrap(), 0, "{k} written");
    }
}

/// A conflict in the middle of a batch rolls back the records before it.
pub async fn batch_is_atomic_on_conflict(store: Store) {
    let ws = WorkspaceId::new();
    let first = project(ws, "taken");
    store.upsert(std::slice::from_ref(&first)).await.unwrap();
    let fresh = project(ws, "fresh");
    let dup = project(ws, "taken");
    let err = store.upsert(&[fresh.clone(), dup]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        store
            .get(ws, RecordKind::Project, fresh.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.count(RecordKind::Project, Some(ws)).await.unwrap(), 1);
}

/// A unique key (project name, prompt version number, …) is taken until its holder is deleted.
pub async fn unique_keys_conflict_until_deleted(store: Store) {
    let ws = WorkspaceId::new();
    let a = project(ws, "same");
    store.upsert(std::slice::from_ref(&a)).await.unwrap();
    let b = project(ws, "same");
    assert_eq!(
        store
            .upsert(std::slice::from_ref(&b))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    assert!(
        store
            .delete(ws, RecordKind::Project, a.id, a.updated_at.plus_micros(1))
            .await
            .unwrap()
    );
    store.upsert(std::slice::from_ref(&b)).await.unwrap();
    assert_eq!(
        store.get(ws, RecordKind::Project, b.id).await.unwrap(),
        Some(b)
    );
}

/// An immutable record (prompt version) can be re-sent identically but never changed.
pub async fn immutable_kinds_refuse_changes(store: Store) {
    let ws = WorkspaceId::new();
    let all = one_of_each(ws);
    store.upsert(&all).await.unwrap();
    let pv = all
        .iter()
        .find(|r| r.kind() == RecordKind::PromptVersion)
        .unwrap()
        .clone();
    assert_eq!(
        store
            .upsert(std::slice::from_ref(&pv))
            .await
            .unwrap()
            .skipped,
        1
    );
    let mut changed = pv.clone();
    if let RecordBody::PromptVersion(v) = &mut changed.body {
        v.template = "changed {{text}}".into();
    }
    changed.updated_at = pv.updated_at.plus_micros(1);
    assert_eq!(
        store.upsert(&[changed]).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .get(ws, RecordKind::PromptVersion, pv.id)
            .await
            .unwrap(),
        Some(pv)
    );
}

/// Deleting hides a record from get and list but leaves a tombstone that scans return.
pub async fn delete_leaves_a_tombstone(store: Store) {
    let ws = WorkspaceId::new();
    let p = project(ws, "doomed");
    store.upsert(std::slice::from_ref(&p)).await.unwrap();
    let at = p.updated_at.plus_micros(100);
    assert!(
        store
            .delete(ws, RecordKind::Project, p.id, at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete(ws, RecordKind::Project, p.id, at.plus_micros(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .get(ws, RecordKind::Project, p.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list(ws, &ListQuery::new(RecordKind::Project))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let scanned = store
        .scan(&ScanRequest {
            kind: RecordKind::Project,
            workspace: Some(ws),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(scanned.len(), 1);
    assert!(scanned[0].deleted);
    assert_eq!(scanned[0].updated_at, at);
    // A stale write does not resurrect it; a newer one does.
    assert_eq!(
        store
            .upsert(std::slice::from_ref(&p))
            .await
            .unwrap()
            .skipped,
        1
    );
    assert!(
        store
            .get(ws, RecordKind::Project, p.id)
            .await
            .unwrap()
            .is_none()
    );
    let mut revived = p.clone();
    revived.updated_at = at.plus_micros(1);
    store.upsert(std::slice::from_ref(&revived)).await.unwrap();
    assert_eq!(
        store.get(ws, RecordKind::Project, p.id).await.unwrap(),
        Some(revived)
    );
}

/// Scans in `(updated_at, id)` order from a cursor, in small batches, see every record once,
/// including records that share an `updated_at`.
pub async fn scan_follows_the_keyset_cursor(store: Store) {
    let ws = WorkspaceId::new();
    let other = WorkspaceId::new();
    let base = Timestamp::now();
    let p = project(ws, "scan");
    let mut records = vec![p.clone()];
    for i in 0..40 {
        let mut a = named(ws, p.id, &format!("a{i}"));
        // Groups of four share a timestamp, so the id must break ties.
        a.created_at = base;
        a.updated_at = base.plus_micros((i / 4) as i64);
        records.push(a);
    }
    store.upsert(&records).await.unwrap();
    let op = project(other, "elsewhere");
    store
        .upsert(&[op.clone(), named(other, op.id, "x")])
        .await
        .unwrap();

    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let batch = store
            .scan(&ScanRequest {
                kind: RecordKind::Agent,
                workspace: Some(ws),
                after: cursor,
                limit: 3,
            })
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        cursor = Some(batch.last().unwrap().cursor());
        seen.extend(batch);
    }
    let mut expected: Vec<Record> = records[1..].to_vec();
    expected.sort_by_key(|r| r.cursor());
    assert_eq!(seen, expected);
    // An all-workspace scan includes the other workspace's agent too.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let batch = store
            .scan(&ScanRequest {
                kind: RecordKind::Agent,
                workspace: None,
                after: cursor,
                limit: 1000,
            })
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        cursor = Some(batch.last().unwrap().cursor());
        all.extend(batch);
    }
    let mine: HashSet<RecordId> = all
        .iter()
        .filter(|r| r.workspace == ws || r.workspace == other)
        .map(|r| r.id)
        .collect();
    assert_eq!(mine.len(), 41);
    assert!(all.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
}

/// Every record of `kind` (all workspaces, tombstones included) in scan order, as cursors.
async fn all_cursors(store: &Store, kind: RecordKind) -> Vec<ScanCursor> {
    let mut out = Vec::new();
    loop {
        let batch = store
            .scan(&ScanRequest {
                kind,
                workspace: None,
                after: out.last().copied(),
                limit: MAX_PAGE,
            })
            .await
            .unwrap();
        let short = batch.len() < MAX_PAGE;
        out.extend(batch.iter().map(Record::cursor));
        if short {
            return out;
        }
    }
}

/// `split` cuts a kind's scan order into ranges whose sizes differ by at most one, at cursors of
/// stored records; bad `parts` are refused. Other cases may write the same kind meanwhile (a shared
/// store), so the sizes are checked on a pass during which the kind did not change.
pub async fn split_cuts_the_scan_into_equal_ranges(store: Store) {
    let ws = WorkspaceId::new();
    let base = Timestamp::now();
    let p = project(ws, "split");
    let mut records = vec![p.clone()];
    for i in 0..41 {
        let mut a = named(ws, p.id, &format!("s{i}"));
        a.created_at = base;
        a.updated_at = base.plus_micros((i / 3) as i64);
        records.push(a);
    }
    store.upsert(&records).await.unwrap();
    store
        .delete(ws, RecordKind::Agent, records[5].id, base.plus_micros(100))
        .await
        .unwrap();
    for parts in [0, MAX_SPLIT + 1] {
        let e = store.split(RecordKind::Agent, parts).await.unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("parts"), "{e}");
    }
    assert!(store.split(RecordKind::Agent, 1).await.unwrap().is_empty());
    // MAX_SPLIT: more parts than a fresh store holds agents (one record per range then).
    for parts in [2, 4, 7, MAX_SPLIT] {
        let mut checked = false;
        for _ in 0..20 {
            let before = all_cursors(&store, RecordKind::Agent).await;
            let cuts = store.split(RecordKind::Agent, parts).await.unwrap();
            let after = all_cursors(&store, RecordKind::Agent).await;
            if before != after {
                continue;
            }
            let expected = parts.min(before.len()) - 1;
            assert_eq!(cuts.len(), expected, "{parts} parts of {}", before.len());
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
            let mut sizes = Vec::new();
            let mut from = 0;
            for cut in &cuts {
                let at = before
                    .iter()
                    .position(|c| c == cut)
                    .expect("each cut is a stored record's cursor");
                sizes.push(at + 1 - from);
                from = at + 1;
            }
            sizes.push(before.len() - from);
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1 && *min > 0, "{parts} parts: sizes {sizes:?}");
            checked = true;
            break;
        }
        assert!(checked, "the agents kept changing during 20 passes");
    }
}

/// 16 writers at once: every insert lands, and concurrent updates of one record end at the newest.
pub async fn concurrent_writers_lose_nothing(store: Store) {
    let ws = WorkspaceId::new();
    let p = project(ws, "busy");
    store.upsert(std::slice::from_ref(&p)).await.unwrap();
    let shared = named(ws, p.id, "shared");
    store.upsert(std::slice::from_ref(&shared)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16i64 {
        let store = store.clone();
        let shared = shared.clone();
        let pid = p.id;
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                store
                    .upsert(&[named(ws, pid, &format!("w{t}-{i}"))])
                    .await
                    .unwrap();
                let mut next = shared.clone();
                next.updated_at = shared.updated_at.plus_micros(1 + t * 25 + i);
                if let RecordBody::Agent(a) = &mut next.body {
                    a.model = Some(format!("model-{t}-{i}"));
                }
                store.upsert(&[next]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store.count(RecordKind::Agent, Some(ws)).await.unwrap(),
        16 * 25 + 1
    );
    let last = store
        .get(ws, RecordKind::Agent, shared.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.updated_at, shared.updated_at.plus_micros(16 * 25));
    match last.body {
        RecordBody::Agent(a) => assert_eq!(a.model.as_deref(), Some("model-15-24")),
        _ => unreachable!(),
    }
}

/// Out-of-range limits and foreign page tokens are invalid input.
pub async fn bad_pages_and_limits_are_rejected(store: Store) {
    let ws = WorkspaceId::new();
    let err = store
        .list(ws, &ListQuery::new(RecordKind::Project).limit(0))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("limit"));
    let err = store
        .list(ws, &ListQuery::new(RecordKind::Project).limit(MAX_PAGE + 1))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("limit"));
    let mut q = ListQuery::new(RecordKind::Project);
    q.page = Some(PageToken("'; DROP TABLE records; --".into()));
    assert_eq!(store.list(ws, &q).await.unwrap_err().field(), Some("page"));
    let err = store
        .scan(&ScanRequest {
            kind: RecordKind::Project,
            workspace: None,
            after: None,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("limit"));
}

#[derive(Clone, Debug)]
enum Op {
    Upsert { slot: usize, name: u8, dt: i64 },
    Delete { slot: usize, dt: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..6, 0u8..4, 0i64..20).prop_map(|(slot, name, dt)| Op::Upsert { slot, name, dt }),
        1 => (0usize..6, 0i64..20).prop_map(|(slot, dt)| Op::Delete { slot, dt }),
    ]
}

/// Random sequences of upserts and deletes over a few ids and clashing names: the store agrees with
/// a simple in-memory model (last writer by `updated_at` wins, tombstones, unique names among live
/// records, failed batches change nothing) on every `get`, `list` and `scan`.
pub fn matches_reference_model(rt: &tokio::runtime::Runtime, store: Store) {
    let config = ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..30))| {
        rt.block_on(async {
            let ws = WorkspaceId::new();
            let base = Timestamp::now();
            let ids: Vec<RecordId> = (0..6).map(|_| RecordId::new()).collect();
            // The model: id -> (record, deleted flag lives in the record).
            let mut model: BTreeMap<RecordId, Record> = BTreeMap::new();
            for op in &ops {
                match *op {
                    Op::Upsert { slot, name, dt } => {
                        let id = ids[slot];
                        let rec = Record {
                            id,
                            workspace: ws,
                            created_at: base,
                            updated_at: base.plus_micros(dt),
                            deleted: false,
                            body: RecordBody::Project(Project {
                                name: format!("n{name}"),
                                description: None,
                                settings: json!({}),
                            }),
                        };
                        let newer = model.get(&id).is_none_or(|old| rec.updated_at > old.updated_at);
                        let clash = newer && model.values().any(|o| {
                            o.id != id && !o.deleted && o.body.unique_key() == rec.body.unique_key()
                        });
                        let result = store.upsert(std::slice::from_ref(&rec)).await;
                        if clash {
                            assert_eq!(result.unwrap_err().kind(), ErrorKind::Conflict);
                        } else {
                            let out = result.unwrap();
                            assert_eq!(out.written, u64::from(newer));
                            if newer {
                                model.insert(id, rec);
                            }
                        }
                    }
                    Op::Delete { slot, dt } => {
                        let id = ids[slot];
                        let at = base.plus_micros(dt);
                        let expect = model.get(&id).is_some_and(|o| !o.deleted && o.updated_at < at);
                        let got = store.delete(ws, RecordKind::Project, id, at).await.unwrap();
                        assert_eq!(got, expect);
                        if expect {
                            let o = model.get_mut(&id).unwrap();
                            o.deleted = true;
                            o.updated_at = at;
                        }
                    }
                }
            }
            for id in &ids {
                let expected = model.get(id).filter(|r| !r.deleted).cloned();
                assert_eq!(store.get(ws, RecordKind::Project, *id).await.unwrap(), expected);
            }
            let listed = store.list_all(ws, &ListQuery::new(RecordKind::Project)).await.unwrap();
            let live: Vec<Record> = model.values().filter(|r| !r.deleted).cloned().collect();
            assert_eq!(listed, live);
            let scanned = store
                .scan(&ScanRequest { kind: RecordKind::Project, workspace: Some(ws), after: None, limit: 1000 })
                .await
                .unwrap();
            let mut all: Vec<Record> = model.values().cloned().collect();
            all.sort_by_key(|r| r.cursor());
            assert_eq!(scanned, all);
        });
    });
}
