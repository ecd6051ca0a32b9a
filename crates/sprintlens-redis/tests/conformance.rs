//! The `Cache` and `SessionStore` suites against the live Redis of `cargo xtask services up`, and
//! single-flight loading across two independent clients (as two processes would be).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use sprintlens_core::{Cache, CacheKey, SessionStore, WorkspaceId};
use sprintlens_redis::{RedisCache, RedisOptions, RedisSessionStore};

fn url() -> Option<String> {
    sprintlens_testkit::service_url("SPRINTLENS_TEST_REDIS_URL")
}

fn options(url: String) -> RedisOptions {
    let mut o = RedisOptions::new(url);
    // The suite runs many cases at once on a 2-core machine: allow for scheduling delays.
    o.command_timeout = Duration::from_secs(2);
    o.wait_timeout = Duration::from_secs(2);
    o
}

async fn cache() -> Option<(Arc<dyn Cache>, ())> {
    let c = RedisCache::new(&options(url()?)).unwrap();
    Some((Arc::new(c) as Arc<dyn Cache>, ()))
}

async fn sessions() -> Option<(Arc<dyn SessionStore>, ())> {
    let s = RedisSessionStore::new(&options(url()?)).unwrap();
    Some((Arc::new(s) as Arc<dyn SessionStore>, ()))
}

mod cache_suite {
    use super::*;
    sprintlens_testkit::cache_suite!(cache);
}

mod session_store {
    use super::*;
    sprintlens_testkit::session_store_suite!(sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_load_across_two_processes_worth_of_clients() {
    let Some(url) = url() else { return };
    // Two caches with their own pools and their own in-process single flight: two "processes".
    let a = Arc::new(RedisCache::new(&options(url.clone())).unwrap());
    let b = Arc::new(RedisCache::new(&options(url)).unwrap());
    let key = CacheKey::new(WorkspaceId::new(), "cold", "key").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (key, calls) = (key.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load(
                &key,
                Duration::from_secs(60),
                Box::new(move || {
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(Bytes::from_static(b"once"))
                    }
                    .boxed()
                }),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Bytes::from_static(b"once"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the loader must run once across both clients"
    );
}

#[tokio::test]
async fn keys_are_namespaced_and_a_dump_holds_no_session_token() {
    let Some(url) = url() else { return };
    let store = RedisSessionStore::new(&options(url.clone())).unwrap();
    let ws = WorkspaceId::new();
    let (token, _) = store
        .create(ws, "alice", Default::default(), serde_json::json!({}))
        .await
        .unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains(&token.hash())));
    // Every value of every key, dumped: the raw token appears nowhere.
    for k in &keys {
        let t: String = redis::cmd("TYPE")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!k.contains(token.expose()), "key {k} holds the token");
        assert!(
            !String::from_utf8_lossy(&dump).contains(token.expose()),
            "{t} {k} holds the token"
        );
    }
}

fn cluster_url() -> Option<String> {
    sprintlens_testkit::service_url("SPRINTLENS_TEST_REDIS_CLUSTER_URL")
}

async fn cluster_cache() -> Option<(Arc<dyn Cache>, ())> {
    let c = RedisCache::new(&options(cluster_url()?)).unwrap();
    Some((Arc::new(c) as Arc<dyn Cache>, ()))
}

async fn cluster_sessions() -> Option<(Arc<dyn SessionStore>, ())> {
    let s = RedisSessionStore::new(&options(cluster_url()?)).unwrap();
    Some((Arc::new(s) as Arc<dyn SessionStore>, ()))
}

/// The same suites on a three-master Redis Cluster (`redis+cluster://…`).
mod cluster_cache_suite {
    use super::*;
    sprintlens_testkit::cache_suite!(cluster_cache);
}

mod cluster_session_store {
    use super::*;
    sprintlens_testkit::session_store_suite!(cluster_sessions);
}

#[tokio::test]
async fn cluster_keys_spread_over_the_masters() {
    let Some(url) = cluster_url() else { return };
    let cache = RedisCache::new(&options(url.clone())).unwrap();
    let ws = WorkspaceId::new();
    for i in 0..60 {
        let k = CacheKey::new(ws, "spread", &format!("k{i}")).unwrap();
        cache
            .set(&k, Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(cache.get(&k).await.unwrap(), Some(Bytes::from_static(b"v")));
    }
    // Every master holds some of them.
    let nodes = url.split('@').nth(1).unwrap().split(',');
    let password = url
        .trim_start_matches("redis+cluster://")
        .split('@')
        .next()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    for node in nodes {
        let client = redis::Client::open(format!("redis://default:{password}@{node}")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert!(n > 0, "master {node} holds no key");
    }
}
