//! `Cache` on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use sprintlens_core::{Cache, CacheKey, CacheStats, Error, Loader, Result, async_trait};
use tokio::sync::Semaphore;

use crate::{BACKEND, Breaker, Client, RedisOptions};

enum Lookup {
    Hit(Bytes),
    Miss,
    Down,
}

type Flight = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<Error>>>>;

/// Releases the lock only if it still holds our token.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// `Cache` on Redis (`redis://…`).
///
/// - Keys: `{prefix}:c1:{workspace}:{namespace}:{key}`; the `c1` generation changes with the stored
///   format, so a format change never reads old bytes.
/// - TTLs get ±10 % jitter so entries written together do not expire together.
/// - `get_or_load` loads once per key across processes: one caller per process leads (in-process
///   single flight), and leaders of different processes take a short lock key (`SET NX PX` with a
///   random token, released by compare-and-delete); the others poll for the value.
/// - Fails open: when Redis errors or times out, reads are misses, loads go straight to the loader
///   (at most `store_concurrency` at a time, so the store is not flooded) and a circuit breaker skips
///   Redis for a cool-down after repeated failures. An invalidation that cannot reach Redis is kept and
///   retried before this process reads that key again.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    breaker: Breaker,
    inflight: Mutex<HashMap<String, Flight>>,
    pending_deletes: Mutex<HashSet<String>>,
    store_permits: Semaphore,
    lock_ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("breaker_open", &self.inner.breaker.is_open())
            .finish()
    }
}

fn jitter(ttl: Duration) -> u64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    let ms = ttl.as_millis() as f64 * (0.9 + 0.2 * r);
    (ms.round() as u64).max(1)
}

fn token() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

impl RedisCache {
    /// A cache over `options`; nothing connects until the first call.
    pub fn new(options: &RedisOptions) -> Result<Self> {
        Ok(RedisCache {
            inner: Arc::new(Inner {
                client: Client::new(options, "cache.url")?,
                breaker: Breaker::new(3, Duration::from_secs(2)),
                inflight: Mutex::new(HashMap::new()),
                pending_deletes: Mutex::new(HashSet::new()),
                store_permits: Semaphore::new(8),
                lock_ttl: Duration::from_secs(10),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                loads: AtomicU64::new(0),
            }),
        })
    }

    /// At most `n` loads at a time go to the store while Redis is unavailable.
    pub fn with_store_concurrency(self, n: usize) -> Self {
        let inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("configure before sharing"));
        RedisCache {
            inner: Arc::new(Inner {
                store_permits: Semaphore::new(n.max(1)),
                ..inner
            }),
        }
    }

    /// Whether the circuit breaker currently skips Redis.
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }
}

impl Inner {
    fn key(&self, k: &CacheKey) -> String {
        format!("{}:c1:{}", self.client.prefix, k.as_str())
    }

    /// Runs a command through the breaker; `None` when Redis is unavailable (fail open).
    async fn soft<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<Option<T>> {
        if !self.breaker.allow() {
            return Ok(None);
        }
        match self.client.run::<T>(op, cmd).await {
            Ok(v) => {
                self.breaker.success();
                Ok(Some(v))
            }
            Err(Error::Unavailable { .. }) => {
                self.breaker.failure();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Retries a pending invalidation of `key`; true when the key may be read from Redis.
    async fn settle(&self, key: &str) -> Result<bool> {
        let pending = self
            .pending_deletes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key);
        if !pending {
            return Ok(true);
        }
        let done: Option<i64> = self.soft("delete", redis::cmd("DEL").arg(key)).await?;
        if done.is_some() {
            self.pending_deletes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        Ok(false)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(match self.lookup(key).await? {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss | Lookup::Down => None,
        })
    }

    async fn lookup(&self, key: &str) -> Result<Lookup> {
        if !self.settle(key).await? {
            return Ok(Lookup::Miss);
        }
        let v: Option<Option<Vec<u8>>> = self.soft("get", redis::cmd("GET").arg(key)).await?;
        Ok(match v {
            None => Lookup::Down,
            Some(None) => Lookup::Miss,
            Some(Some(v)) => Lookup::Hit(Bytes::from(v)),
        })
    }

    async fn direct_load(&self, loader: Loader) -> Result<Bytes> {
        let _permit = self
            .store_permits
            .acquire()
            .await
            .map_err(|e| Error::backend(BACKEND, "get_or_load", e))?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        loader().await
    }

    /// The leader's path: value, or cross-process lock then load, or poll.
    async fn lead(self: Arc<Self>, key: String, ttl: Duration, loader: Loader) -> Result<Bytes> {
        match self.lookup(&key).await? {
            Lookup::Hit(v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v);
            }
            Lookup::Down => {
                // Redis did not answer: go to the store now rather than spend another timeout.
                self.misses.fetch_add(1, Ordering::Relaxed);
                return self.direct_load(loader).await;
            }
            Lookup::Miss => {}
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let lock = format!("{key}:lock");
        let deadline = Instant::now() + self.lock_ttl;
        let me = token();
        loop {
            if !self.breaker.allow() {
                return self.direct_load(loader).await;
            }
            let got: Option<Option<String>> = self
                .soft(
                    "lock",
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(&me)
                        .arg("NX")
                        .arg("PX")
                        .arg(self.lock_ttl.as_millis() as u64),
                )
                .await?;
            match got {
                None => return self.direct_load(loader).await,
                Some(Some(_)) => {
                    // We hold the lock: load once for every process.
                    self.loads.fetch_add(1, Ordering::Relaxed);
                    let result = loader().await;
                    if let Ok(v) = &result {
                        let _: Option<()> = self
                            .soft(
                                "set",
                                redis::cmd("SET")
                                    .arg(&key)
                                    .arg(v.as_ref())
                                    .arg("PX")
                                    .arg(jitter(ttl)),
                            )
                            .await?;
                    }
                    if self.breaker.allow() {
                        let unlock = redis::Script::new(UNLOCK);
                        let _ = self
                            .client
                            .script::<i64>("unlock", &unlock, &[&lock], &[&me])
                            .await;
                    }
                    return result;
                }
                Some(None) => {
                    // Another process loads: wait for its value, or for its lock to go.
                    loop {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Some(v) = self.get(&key).await? {
                            self.hits.fetch_add(1, Ordering::Relaxed);
                            return Ok(v);
                        }
                        let held: Option<i64> =
                            self.soft("lock", redis::cmd("EXISTS").arg(&lock)).await?;
                        match held {
                            None => return self.direct_load(loader).await,
                            Some(0) => break,
                            Some(_) if Instant::now() > deadline => {
                                return self.direct_load(loader).await;
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let v = self.inner.get(&self.inner.key(key)).await?;
        let counter = if v.is_some() {
            &self.inner.hits
        } else {
            &self.inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    async fn set(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let k = self.inner.key(key);
        let _: Option<()> = self
            .inner
            .soft(
                "set",
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value.as_ref())
                    .arg("PX")
                    .arg(jitter(ttl)),
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let k = self.inner.key(key);
        let n: Option<i64> = self.inner.soft("delete", redis::cmd("DEL").arg(&k)).await?;
        match n {
            Some(n) => Ok(n > 0),
            None => {
                // Redis is unreachable: remember the invalidation and apply it before this process
                // reads the key again.
                self.inner
                    .pending_deletes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(k);
                Ok(false)
            }
        }
    }

    async fn get_or_load(&self, key: &CacheKey, ttl: Duration, loader: Loader) -> Result<Bytes> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let k = self.inner.key(key);
        let (flight, leader) = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match map.get(&k) {
                Some(f) => (f.clone(), false),
                None => {
                    let inner = self.inner.clone();
                    let key = k.clone();
                    // The flight removes itself when done, whoever drives it to completion.
                    let fut: BoxFuture<'static, std::result::Result<Bytes, Arc<Error>>> =
                        async move {
                            let r = inner.clone().lead(key.clone(), ttl, loader).await;
                            inner
                                .inflight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            r.map_err(Arc::new)
                        }
                        .boxed();
                    let f = fut.shared();
                    map.insert(k.clone(), f.clone());
                    (f, true)
                }
            }
        };
        let result = flight.await;
        if !leader && result.is_ok() {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|e| e.lossy_clone())
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            loads: self.inner.loads.load(Ordering::Relaxed),
        }
    }
}
