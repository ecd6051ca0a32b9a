//! `redis`: cache GET hits per second through the adapter against `redis-benchmark` GET on the same
//! server with the same concurrency, in the same run, without pipelining.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use sprintlens_core::{Cache, CacheKey, WorkspaceId};
use sprintlens_redis::{RedisCache, RedisOptions};

pub async fn run(concurrency: usize, seconds: u64) -> Result<()> {
    let url = std::env::var("SPRINTLENS_TEST_REDIS_URL")
        .context("run through `cargo xtask bench redis`")?;
    let mut o = RedisOptions::new(url.clone());
    o.pool_size = concurrency;
    o.command_timeout = Duration::from_secs(2);
    o.wait_timeout = Duration::from_secs(2);
    let cache = Arc::new(RedisCache::new(&o)?);
    let ws = WorkspaceId::new();
    let keys: Vec<CacheKey> = (0..100)
        .map(|i| CacheKey::new(ws, "bench", &format!("k{i}")).unwrap())
        .collect();
    let value = Bytes::from(vec![b'x'; 3]); // redis-benchmark's default value size is 3 bytes
    for k in &keys {
        cache
            .set(k, value.clone(), Duration::from_secs(600))
            .await?;
    }
    // Ours: `concurrency` tasks issuing GETs back to back (no pipelining), for `seconds`.
    let ops = Arc::new(AtomicU64::new(0));
    let misses = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (cache, keys, ops, misses) = (cache.clone(), keys.clone(), ops.clone(), misses.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < stop {
                if cache.get(&keys[i % keys.len()]).await.unwrap().is_none() {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    let ours = ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    // Reference: redis-benchmark GET, same server, same concurrency, no pipelining.
    let rest = url.trim_start_matches("redis://");
    let (auth, host) = rest.split_once('@').context("URL with a password")?;
    let password = auth.split_once(':').map(|(_, p)| p).unwrap_or(auth);
    let port = host.split(['/', ':']).nth(1).context("port")?;
    let n = (ours * seconds as f64).max(100_000.0) as u64;
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-a",
            password,
            "-t",
            "get",
            "-P",
            "1",
            "-q",
        ])
        .args(["-c", &concurrency.to_string(), "-n", &n.to_string()])
        .output()
        .context("redis-benchmark (Debian redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last "GET: N requests per second" (earlier ones are progress lines ended by \r).
    let reference: f64 = text
        .rsplit("GET: ")
        .next()
        .and_then(|last| last.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("could not read redis-benchmark output: {text}"))?;
    println!(
        "| concurrency | sprintlens cache GET hits/s | redis-benchmark GET/s | ratio | misses |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {concurrency} | {ours:.0} | {reference:.0} | {:.2}× | {} |",
        ours / reference,
        misses.load(Ordering::Relaxed)
    );
    Ok(())
}
