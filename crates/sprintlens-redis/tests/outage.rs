//! Redis paused (SIGSTOP) and then killed under a load of reads: no request exceeds its deadline,
//! cached reads never return an error (they fall back to the store), sessions are refused, and
//! everything recovers when Redis returns. One test in its own binary: it stops the shared server.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use sprintlens_core::{Cache, CacheKey, SessionStore, WorkspaceId};
use sprintlens_redis::{RedisCache, RedisOptions, RedisSessionStore};

struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

async fn server_pid(url: &str) -> u32 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// 200 concurrent cached reads of 20 hot keys; returns (slowest call, errors, loader calls).
async fn load_of_reads(cache: &Arc<RedisCache>, ws: WorkspaceId) -> (Duration, u32, u32) {
    let loads = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (cache, loads) = (cache.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            let key = CacheKey::new(ws, "hot", &format!("k{}", i % 20)).unwrap();
            let t = Instant::now();
            let r = cache
                .get_or_load(
                    &key,
                    Duration::from_secs(60),
                    Box::new(move || {
                        async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await; // the store
                            Ok(Bytes::from_static(b"from the store"))
                        }
                        .boxed()
                    }),
                )
                .await;
            (t.elapsed(), r.is_err())
        }));
    }
    let mut slowest = Duration::ZERO;
    let mut errors = 0;
    for t in tasks {
        let (d, err) = t.await.unwrap();
        slowest = slowest.max(d);
        errors += u32::from(err);
    }
    (slowest, errors, loads.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_survive_a_paused_or_killed_redis_and_sessions_fail_closed() {
    let Some(url) = sprintlens_testkit::service_url("SPRINTLENS_TEST_REDIS_URL") else {
        return;
    };
    let opts = RedisOptions::new(url.clone()); // 200 ms waits and command timeout
    let deadline = Duration::from_secs(1);
    let cache = Arc::new(RedisCache::new(&opts).unwrap());
    let sessions = RedisSessionStore::new(&opts).unwrap();
    let ws = WorkspaceId::new();
    let (token, _) = sessions
        .create(ws, "u", Default::default(), serde_json::json!({}))
        .await
        .unwrap();
    let (_, errors, loads) = load_of_reads(&cache, ws).await;
    assert_eq!((errors, loads), (0, 20), "warm-up: one load per key");

    // 1. Paused: the process exists but answers nothing.
    let pid = server_pid(&url).await;
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let resume = Resume(pid);
    let (slowest, errors, loads) = load_of_reads(&cache, ws).await;
    assert_eq!(
        errors, 0,
        "cached reads must not fail while Redis is paused"
    );
    assert!(
        slowest < deadline,
        "a read took {slowest:?} with Redis paused"
    );
    assert!(loads >= 1, "reads went to the store");
    let t = Instant::now();
    let v = tokio::time::timeout(deadline, sessions.validate(&token))
        .await
        .expect("session check hung");
    assert!(v.is_err(), "sessions must fail closed, got {v:?}");
    assert!(t.elapsed() < deadline);
    drop(resume);

    // Recovery: once the breaker's cool-down passes, Redis serves again.
    let start = Instant::now();
    loop {
        let (_, errors, loads) = load_of_reads(&cache, ws).await;
        if errors == 0 && loads == 0 && !cache.breaker_open() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "did not recover after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(sessions.validate(&token).await.unwrap().is_some());

    // 2. Killed: connections refused until it is back.
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (slowest, errors, _) = load_of_reads(&cache, ws).await;
    assert_eq!(errors, 0, "cached reads must not fail while Redis is down");
    assert!(
        slowest < deadline,
        "a read took {slowest:?} with Redis down"
    );
    assert!(
        sessions.validate(&token).await.is_err(),
        "sessions must fail closed"
    );
    // Bring it back as the stack starts it (daemonized, same port, password and folder).
    let status = Command::new("redis-server")
        .args(restart_args(&url))
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        let (_, errors, _) = load_of_reads(&cache, ws).await;
        if errors == 0
            && !cache.breaker_open()
            && cache
                .get(&CacheKey::new(ws, "probe", "x").unwrap())
                .await
                .is_ok()
        {
            let key = CacheKey::new(ws, "after", "restart").unwrap();
            cache
                .set(&key, Bytes::from_static(b"v"), Duration::from_secs(30))
                .await
                .unwrap();
            if cache.get(&key).await.unwrap().is_some() {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "did not recover after restart: breaker open {}, probe {:?}, sessions {:?}",
            cache.breaker_open(),
            cache.get(&CacheKey::new(ws, "probe", "x").unwrap()).await,
            sessions.validate(&token).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Sessions were in memory only (the test stack runs Redis without persistence): the old token is
    // gone, and new sessions work.
    let (t2, _) = sessions
        .create(ws, "u", Default::default(), serde_json::json!({}))
        .await
        .unwrap();
    assert!(sessions.validate(&t2).await.unwrap().is_some());
}

/// The arguments `cargo xtask services up` starts Redis with, rebuilt from the URL and the stack's
/// folder (`target/services/redis`).
fn restart_args(url: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/services/redis");
    let rest = url.trim_start_matches("redis://");
    let (auth, host) = rest.split_once('@').unwrap();
    let password = auth.split_once(':').map(|(_, p)| p).unwrap_or(auth);
    let port = host.split(['/', ':']).nth(1).unwrap();
    vec![
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.into(),
        "--protected-mode".into(),
        "yes".into(),
        "--requirepass".into(),
        password.into(),
        "--daemonize".into(),
        "yes".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--pidfile".into(),
        dir.join("redis.pid").display().to_string(),
        "--logfile".into(),
        dir.join("redis.log").display().to_string(),
    ]
}
