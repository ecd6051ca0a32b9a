//! `Cache` conformance cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use sprintlens_core::*;

type C = Arc<dyn Cache>;

/// Set, get and delete.
pub async fn set_get_delete(c: C) {
    let ws = WorkspaceId::new();
    let k = CacheKey::new(ws, "prompt-label", "summarize:production").unwrap();
    assert_eq!(c.get(&k).await.unwrap(), None);
    c.set(&k, Bytes::from_static(b"v1"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.get(&k).await.unwrap(), Some(Bytes::from_static(b"v1")));
    c.set(&k, Bytes::from_static(b"v2"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.get(&k).await.unwrap(), Some(Bytes::from_static(b"v2")));
    assert!(c.delete(&k).await.unwrap());
    assert!(!c.delete(&k).await.unwrap());
    assert_eq!(c.get(&k).await.unwrap(), None);
    assert!(CacheKey::new(ws, "", "k").is_err());
    assert!(CacheKey::new(ws, "a:b", "k").is_err());
}

/// An entry is gone once its TTL has passed.
pub async fn entries_expire(c: C) {
    let ws = WorkspaceId::new();
    let k = CacheKey::new(ws, "t", "short").unwrap();
    let long = CacheKey::new(ws, "t", "long").unwrap();
    c.set(&k, Bytes::from_static(b"x"), Duration::from_millis(300))
        .await
        .unwrap();
    c.set(&long, Bytes::from_static(b"y"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(c.get(&k).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(c.get(&k).await.unwrap(), None);
    assert!(c.get(&long).await.unwrap().is_some());
}

/// 1,000 concurrent callers on one cold key run the loader once and all get its value.
pub async fn get_or_load_loads_once(c: C) {
    let ws = WorkspaceId::new();
    let k = CacheKey::new(ws, "hot", "key").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, k, calls) = (c.clone(), k.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load(
                &k,
                Duration::from_secs(60),
                Box::new(move || {
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(Bytes::from_static(b"loaded"))
                    }
                    .boxed()
                }),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Bytes::from_static(b"loaded"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.get(&k).await.unwrap(),
        Some(Bytes::from_static(b"loaded"))
    );
}

/// A failing loader's error reaches the waiters and the next call loads again.
pub async fn loader_errors_reach_every_waiter_and_are_not_cached(c: C) {
    let ws = WorkspaceId::new();
    let k = CacheKey::new(ws, "flaky", "key").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, k, calls) = (c.clone(), k.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load(
                &k,
                Duration::from_secs(60),
                Box::new(move || {
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(Error::unavailable("test", "load", true, None))
                    }
                    .boxed()
                }),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert!(calls.load(Ordering::SeqCst) >= 1);
    let v = c
        .get_or_load(
            &k,
            Duration::from_secs(60),
            Box::new(|| async { Ok(Bytes::from_static(b"ok")) }.boxed()),
        )
        .await
        .unwrap();
    assert_eq!(v, Bytes::from_static(b"ok"));
}

/// The same namespace and key in two workspaces are two entries.
pub async fn workspaces_do_not_collide(c: C) {
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    let ka = CacheKey::new(a, "n", "k").unwrap();
    let kb = CacheKey::new(b, "n", "k").unwrap();
    c.set(&ka, Bytes::from_static(b"a"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.get(&kb).await.unwrap(), None);
    c.set(&kb, Bytes::from_static(b"b"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.get(&ka).await.unwrap(), Some(Bytes::from_static(b"a")));
}
