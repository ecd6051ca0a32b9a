//! The [`Cache`] port: bytes by key with a TTL, and single-flight loading.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::id::WorkspaceId;

/// A cache key, always namespaced by workspace: `"{workspace}:{namespace}:{key}"`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Builds a key; `namespace` is a short name such as `"prompt-label"`, `key` any non-empty text.
    pub fn new(workspace: WorkspaceId, namespace: &str, key: &str) -> Result<Self> {
        if namespace.is_empty() || namespace.contains(':') || namespace.len() > 64 {
            return Err(Error::invalid(
                "namespace",
                "must be 1..=64 bytes without `:`",
            ));
        }
        if key.is_empty() || key.len() > 512 {
            return Err(Error::invalid("key", "must be 1..=512 bytes"));
        }
        Ok(CacheKey(format!("{workspace}:{namespace}:{key}")))
    }
    /// The rendered key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The workspace prefix (`"{workspace}:"`), for invalidating a whole workspace.
    pub fn workspace_prefix(workspace: WorkspaceId) -> String {
        format!("{workspace}:")
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.0)
    }
}

/// Loads a value on a cache miss.
pub type Loader = Box<dyn FnOnce() -> BoxFuture<'static, Result<Bytes>> + Send>;

/// Counters of a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Loader calls made by `get_or_load`.
    pub loads: u64,
}

/// A cache of bytes.
///
/// # Behavior
/// - `get` MUST return what `set` stored until its TTL passes, and `None` after.
/// - `delete` MUST make the next `get` miss.
/// - `get_or_load` MUST call the loader at most once per key at a time, however many callers wait;
///   they all get its value. A loader error MUST reach every waiter and MUST NOT be cached.
/// - Keys of different workspaces MUST never collide.
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// The backend name.
    fn backend(&self) -> &'static str;
    /// A cached value.
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>>;
    /// Stores a value for `ttl`.
    async fn set(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()>;
    /// Removes a value; returns whether one was there.
    async fn delete(&self, key: &CacheKey) -> Result<bool>;
    /// The cached value, or the loader's (stored for `ttl`), loading once per key under concurrency.
    async fn get_or_load(&self, key: &CacheKey, ttl: Duration, loader: Loader) -> Result<Bytes>;
    /// Counters since start.
    fn stats(&self) -> CacheStats;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: Cache + ?Sized> Cache for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        (**self).get(key).await
    }
    async fn set(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<()> {
        (**self).set(key, value, ttl).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<bool> {
        (**self).delete(key).await
    }
    async fn get_or_load(&self, key: &CacheKey, ttl: Duration, loader: Loader) -> Result<Bytes> {
        (**self).get_or_load(key, ttl, loader).await
    }
    fn stats(&self) -> CacheStats {
        (**self).stats()
    }
}
