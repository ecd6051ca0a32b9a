//! `Cache` in process, over moka.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use sprintlens_core::{Cache, CacheKey, CacheStats, Error, Loader, Result, async_trait};

const BACKEND: &str = "memory";

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, e: &Entry, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
    fn expire_after_update(
        &self,
        _: &String,
        e: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// An in-process cache with a TTL per entry and single-flight `get_or_load` (concurrent callers of
/// one key wait for one loader run; a loader error reaches them all and is not cached).
///
/// Capabilities: bounded by entry count (least-recently-used eviction beyond it); values are shared
/// within this process only. URL: `memory://`.
pub struct MemoryCache {
    inner: moka::future::Cache<String, Entry>,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            inner: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let v = self.inner.get(key.as_str()).await.map(|e| e.value);
        let counter = if v.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    async fn set(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        self.inner
            .insert(key.as_str().to_string(), Entry { value, ttl })
            .await;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.inner.remove(key.as_str()).await.is_some())
    }

    async fn get_or_load(&self, key: &CacheKey, ttl: Duration, loader: Loader) -> Result<Bytes> {
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        if let Some(e) = self.inner.get(key.as_str()).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(e.value);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let loads = &self.loads;
        self.inner
            .try_get_with(key.as_str().to_string(), async move {
                loads.fetch_add(1, Ordering::Relaxed);
                loader().await.map(|value| Entry { value, ttl })
            })
            .await
            .map(|e| e.value)
            .map_err(|e| e.lossy_clone())
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
        }
    }
}
