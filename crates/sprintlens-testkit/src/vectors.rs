//! `VectorIndex` conformance cases.

use std::sync::Arc;

use sprintlens_core::*;

use crate::generate::{Rng, random_embedding};

type Index = Arc<dyn VectorIndex>;

fn entry(
    ws: WorkspaceId,
    project: Option<ProjectId>,
    kind: EmbeddingKind,
    e: Embedding,
) -> VectorEntry {
    VectorEntry {
        workspace: ws,
        project,
        kind,
        id: RecordId::new(),
        embedding: e,
        updated_at: Timestamp::now(),
    }
}

/// `n` random message embeddings of `ws`, no project.
fn messages(ws: WorkspaceId, n: usize, rng: &mut Rng, dim: usize) -> Vec<VectorEntry> {
    (0..n)
        .map(|_| entry(ws, None, EmbeddingKind::Message, random_embedding(rng, dim)))
        .collect()
}

fn query(ws: WorkspaceId, e: Embedding, k: usize) -> VectorQuery {
    VectorQuery {
        workspace: ws,
        project: None,
        kinds: vec![],
        embedding: e,
        k,
    }
}

/// A stored vector is its own nearest neighbour with a score of about 1.
pub async fn nearest_is_itself(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(1);
    let dim = index.dimension();
    let entries: Vec<VectorEntry> = (0..50)
        .map(|_| {
            entry(
                ws,
                None,
                EmbeddingKind::Message,
                random_embedding(&mut rng, dim),
            )
        })
        .collect();
    assert_eq!(index.upsert(&entries).await.unwrap(), 50);
    assert_eq!(index.count(ws).await.unwrap(), 50);
    for e in entries.iter().take(10) {
        let hits = index
            .search(&query(ws, e.embedding.clone(), 3))
            .await
            .unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].id, e.id);
        assert!(
            (hits[0].score - 1.0).abs() < 1e-4,
            "score {}",
            hits[0].score
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

/// `count_all` counts the entries of every workspace, not one.
pub async fn count_all_spans_workspaces(index: Index) {
    let mut rng = Rng::new(13);
    let dim = index.dimension();
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    for (ws, n) in [(a, 3), (b, 2)] {
        index.upsert(&messages(ws, n, &mut rng, dim)).await.unwrap();
    }
    assert_eq!(
        index.count(a).await.unwrap() + index.count(b).await.unwrap(),
        5
    );
    // Other cases may write and delete at the same time: at least these five.
    assert!(index.count_all().await.unwrap() >= 5);
}

/// A vector is stored scaled to unit length, and storing what was read back changes no bit: two
/// indexes holding the same writes hold the same components, and a copy between them is exact.
pub async fn vectors_are_stored_at_unit_length(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(9);
    let dim = index.dimension();
    let raw = Embedding::new(
        random_embedding(&mut rng, dim)
            .as_slice()
            .iter()
            .map(|x| x * 3.0 + 0.5)
            .collect(),
    )
    .unwrap();
    let mut e = entry(ws, None, EmbeddingKind::Message, raw.clone());
    index.upsert(std::slice::from_ref(&e)).await.unwrap();
    let read = |index: Index| async move {
        let mut after = None;
        loop {
            let page = index.scan_entries(after, 1000).await.unwrap();
            if let Some(found) = page.iter().find(|x| x.workspace == ws) {
                return found.clone();
            }
            after = Some(page.last().expect("the entry is scanned").cursor());
        }
    };
    let stored = read(index.clone()).await;
    assert_eq!(
        stored.embedding,
        raw.normalized(),
        "unit length, as normalized() makes it"
    );
    e.embedding = stored.embedding.clone();
    e.updated_at = e.updated_at.plus_micros(1);
    index.upsert(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(read(index).await.embedding, stored.embedding, "bit for bit");
}

/// A batch with one vector of the wrong dimension is refused and writes nothing; so is a query.
pub async fn wrong_dimension_writes_nothing(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(2);
    let dim = index.dimension();
    let good = entry(
        ws,
        None,
        EmbeddingKind::Prompt,
        random_embedding(&mut rng, dim),
    );
    let bad = entry(
        ws,
        None,
        EmbeddingKind::Prompt,
        random_embedding(&mut rng, dim + 1),
    );
    let err = index.upsert(&[good, bad]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.field(), Some("embedding"));
    assert_eq!(index.count(ws).await.unwrap(), 0);
    let err = index
        .search(&query(ws, random_embedding(&mut rng, dim - 1), 5))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("embedding"));
    let err = index
        .search(&query(ws, random_embedding(&mut rng, dim), 0))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("k"));
    // NaN and infinity never become an embedding at all.
    assert!(Embedding::new(vec![f32::NAN; dim]).is_err());
    assert!(Embedding::new(vec![f32::INFINITY; dim]).is_err());
}

/// Project and kind filters apply, and still return k hits when k entries match.
pub async fn filters_still_return_k(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(3);
    let dim = index.dimension();
    let rare = RecordId::new();
    let mut entries = Vec::new();
    for i in 0..300 {
        let (project, kind) = if i % 30 == 0 {
            (Some(rare), EmbeddingKind::DatasetItem)
        } else {
            (Some(RecordId::new()), EmbeddingKind::Message)
        };
        entries.push(entry(ws, project, kind, random_embedding(&mut rng, dim)));
    }
    index.upsert(&entries).await.unwrap();
    let mut q = query(ws, random_embedding(&mut rng, dim), 10);
    q.project = Some(rare);
    let hits = index.search(&q).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(
        hits.iter()
            .all(|h| h.project == Some(rare) && h.kind == EmbeddingKind::DatasetItem)
    );
    let mut q = query(ws, random_embedding(&mut rng, dim), 10);
    q.kinds = vec![EmbeddingKind::DatasetItem];
    let hits = index.search(&q).await.unwrap();
    assert_eq!(hits.len(), 10);
    q.kinds = vec![EmbeddingKind::Conversation];
    assert!(index.search(&q).await.unwrap().is_empty());
}

/// Searches never return another workspace's vectors, even identical ones.
pub async fn workspaces_are_isolated(index: Index) {
    let a = WorkspaceId::new();
    let b = WorkspaceId::new();
    let mut rng = Rng::new(4);
    let e = random_embedding(&mut rng, index.dimension());
    let in_a = entry(a, None, EmbeddingKind::Conversation, e.clone());
    index.upsert(std::slice::from_ref(&in_a)).await.unwrap();
    assert!(
        index
            .search(&query(b, e.clone(), 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !index
            .delete(b, EmbeddingKind::Conversation, in_a.id)
            .await
            .unwrap()
    );
    assert_eq!(index.search(&query(a, e, 10)).await.unwrap().len(), 1);
}

/// Delete removes; a newer upsert replaces; an older one is ignored.
pub async fn delete_and_replace(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(5);
    let dim = index.dimension();
    let v1 = random_embedding(&mut rng, dim);
    let v2 = random_embedding(&mut rng, dim);
    let first = entry(ws, None, EmbeddingKind::Message, v1.clone());
    index.upsert(std::slice::from_ref(&first)).await.unwrap();
    let mut newer = first.clone();
    newer.embedding = v2.clone();
    newer.updated_at = first.updated_at.plus_micros(10);
    index.upsert(&[newer]).await.unwrap();
    let mut older = first.clone();
    older.updated_at = first.updated_at.plus_micros(-10);
    index.upsert(&[older]).await.unwrap();
    let hit = &index.search(&query(ws, v2, 1)).await.unwrap()[0];
    assert_eq!(hit.id, first.id);
    assert!((hit.score - 1.0).abs() < 1e-4);
    assert_eq!(index.count(ws).await.unwrap(), 1);
    assert!(
        index
            .delete(ws, EmbeddingKind::Message, first.id)
            .await
            .unwrap()
    );
    assert!(
        !index
            .delete(ws, EmbeddingKind::Message, first.id)
            .await
            .unwrap()
    );
    assert!(index.search(&query(ws, v1, 5)).await.unwrap().is_empty());
}

/// Over 500 vectors the ranking equals exact cosine ranking computed here (recall@10 = 1 for exact
/// indexes; approximate ones must still reach 0.9).
pub async fn search_matches_exact_ranking(index: Index) {
    let ws = WorkspaceId::new();
    let mut rng = Rng::new(6);
    let dim = index.dimension();
    let entries = messages(ws, 500, &mut rng, dim);
    index.upsert(&entries).await.unwrap();
    let mut found = 0;
    for _ in 0..10 {
        let q = random_embedding(&mut rng, dim);
        let truth = crate::generate::exact_top_k(&entries, &q, 10);
        let hits = index.search(&query(ws, q, 10)).await.unwrap();
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    assert!(found >= 90, "recall@10 = {}", found as f64 / 100.0);
}

/// `scan_entries` returns every entry of every workspace once, in `(updated_at, id, kind)` order,
/// across pages, with its vector (as stored: unit length where the backend normalises).
pub async fn scan_entries_follow_the_keyset_cursor(v: Index) {
    let dim = v.dimension();
    let (wa, wb) = (WorkspaceId::new(), WorkspaceId::new());
    let base = Timestamp::now();
    let mut rng = Rng::new(21);
    let entries: Vec<VectorEntry> = (0..25i64)
        .map(|i| VectorEntry {
            workspace: if i % 2 == 0 { wa } else { wb },
            project: (i % 5 == 0).then(RecordId::new),
            kind: if i % 3 == 0 {
                EmbeddingKind::Conversation
            } else {
                EmbeddingKind::Message
            },
            id: RecordId::new(),
            embedding: random_embedding(&mut rng, dim),
            updated_at: base.plus_micros(i / 4),
        })
        .collect();
    assert_eq!(v.upsert(&entries).await.unwrap(), 25);
    // Start just before our entries (the store may hold other cases' entries too).
    let mut cursor = Some(VectorCursor {
        updated_at: base.plus_micros(-1),
        id: entries[0].id,
        kind: EmbeddingKind::Message,
    });
    let mut seen: Vec<VectorEntry> = Vec::new();
    loop {
        let page = v.scan_entries(cursor, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor());
        seen.extend(
            page.into_iter()
                .filter(|e| e.workspace == wa || e.workspace == wb),
        );
    }
    let mut expected = entries.clone();
    expected.sort_by_key(|e| (e.updated_at, e.id.to_string(), e.kind.as_str()));
    assert_eq!(seen.len(), expected.len());
    for (g, e) in seen.iter().zip(&expected) {
        assert_eq!(
            (g.workspace, g.kind, g.id, g.project, g.updated_at),
            (e.workspace, e.kind, e.id, e.project, e.updated_at)
        );
        let (a, b) = (g.embedding.normalized(), e.embedding.normalized());
        assert!(
            a.as_slice()
                .iter()
                .zip(b.as_slice())
                .all(|(x, y)| (x - y).abs() < 1e-5),
            "vector of {} changed",
            e.id
        );
    }
}
