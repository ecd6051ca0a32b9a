#![doc = include_str!("../README.md")]

mod breaker;
mod cache;
mod sessions;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, ToRedisArgs};
use sprintlens_core::{Error, Result};

pub use breaker::Breaker;
pub use cache::RedisCache;
pub use sessions::RedisSessionStore;

/// The backend name used in errors.
pub const BACKEND: &str = "redis";

/// Settings of the Redis adapters.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a request waits for a pooled connection.
    pub wait_timeout: Duration,
    /// How long opening a connection may take.
    pub create_timeout: Duration,
    /// How long checking a pooled connection may take.
    pub recycle_timeout: Duration,
    /// How long one command may take once it has a connection; a Redis that is stopped (not dead)
    /// never hangs a request longer than `wait_timeout + create_timeout + command_timeout`.
    pub command_timeout: Duration,
    /// Prefix of every key this adapter writes.
    pub prefix: String,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &sprintlens_core::config::redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisOptions {
    /// Defaults: 16 connections, 200 ms to wait for one, 500 ms to open one, 200 ms per command,
    /// prefix `sl`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            pool_size: 16,
            wait_timeout: Duration::from_millis(200),
            create_timeout: Duration::from_millis(500),
            recycle_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_millis(200),
            prefix: "sl".into(),
        }
    }
}

/// Connections with every wait bounded.
///
/// deadpool-redis creates connections (with create and wait timeouts) and checks them with a PING on
/// every checkout; a multiplexed Redis connection needs no exclusive checkout, so each of `pool_size`
/// slots keeps one taken from the pool and reuses it (one round trip per command instead of two). A
/// slot whose connection failed or whose command timed out is emptied and refilled from the pool on
/// its next use.
#[derive(Clone)]
pub(crate) struct Client {
    pool: Pools,
    slots: Arc<Vec<Mutex<Option<Conn>>>>,
    next: Arc<AtomicUsize>,
    connect_timeout: Duration,
    command_timeout: Duration,
    pub(crate) prefix: String,
}

impl Client {
    pub(crate) fn new(o: &RedisOptions, key: &str) -> Result<Self> {
        if ![
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
        ]
        .iter()
        .any(|p| o.url.starts_with(p))
        {
            return Err(Error::config(
                key,
                "a Redis URL starts with redis://, rediss:// or redis+cluster://",
            ));
        }
        if o.pool_size == 0 {
            return Err(Error::config(key, "pool size must be at least 1"));
        }
        if o.prefix.is_empty() || o.prefix.contains(char::is_whitespace) {
            return Err(Error::config(
                key,
                "the key prefix must be non-empty without spaces",
            ));
        }
        let pool = match cluster_nodes(&o.url) {
            Some(nodes) => Pools::Cluster(
                deadpool_redis::cluster::Config::from_urls(nodes)
                    .builder()
                    .map_err(|e| Error::config(key, format!("invalid Redis Cluster URL: {e}")))?
                    .max_size(o.pool_size)
                    .wait_timeout(Some(o.wait_timeout))
                    .create_timeout(Some(o.create_timeout))
                    .recycle_timeout(Some(o.recycle_timeout))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| Error::config(key, format!("invalid Redis settings: {e}")))?,
            ),
            None => Pools::Single(
                deadpool_redis::Config::from_url(o.url.clone())
                    .builder()
                    .map_err(|e| Error::config(key, format!("invalid Redis URL: {e}")))?
                    .max_size(o.pool_size)
                    .wait_timeout(Some(o.wait_timeout))
                    .create_timeout(Some(o.create_timeout))
                    .recycle_timeout(Some(o.recycle_timeout))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| Error::config(key, format!("invalid Redis settings: {e}")))?,
            ),
        };
        Ok(Client {
            pool,
            slots: Arc::new((0..o.pool_size).map(|_| Mutex::new(None)).collect()),
            next: Arc::new(AtomicUsize::new(0)),
            connect_timeout: o.wait_timeout + o.create_timeout,
            command_timeout: o.command_timeout,
            prefix: o.prefix.clone(),
        })
    }

    /// A connection of the next slot, opened through the pool if the slot is empty.
    async fn conn(&self, operation: &'static str) -> Result<(usize, Conn)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let existing = self.slots[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(c) = existing {
            return Ok((i, c));
        }
        let c = match &self.pool {
            Pools::Single(p) => Conn::Single(deadpool_redis::Connection::take(
                p.get().await.map_err(|e| unavailable(operation, e))?,
            )),
            Pools::Cluster(p) => Conn::Cluster(deadpool_redis::cluster::Connection::take(
                p.get().await.map_err(|e| unavailable(operation, e))?,
            )),
        };
        *self.slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok((i, c))
    }

    fn discard(&self, slot: Option<usize>) {
        let range = match slot {
            Some(i) => i..i + 1,
            None => 0..self.slots.len(),
        };
        for i in range {
            *self.slots[i].lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// A connection within the wait and create timeouts, then the command within the command
    /// timeout; a command that times out empties its slot (its connection may be stuck).
    async fn bounded<T, F>(
        &self,
        operation: &'static str,
        command: impl FnOnce(Conn) -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, redis::RedisError>>,
    {
        let timed_out = || Error::unavailable(BACKEND, operation, true, Some("timed out".into()));
        let (slot, conn) = tokio::time::timeout(self.connect_timeout, self.conn(operation))
            .await
            .map_err(|_| timed_out())??;
        match tokio::time::timeout(self.command_timeout, command(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(operation, slot, e)),
            Err(_) => {
                self.discard(Some(slot));
                Err(timed_out())
            }
        }
    }

    fn failed(&self, operation: &'static str, slot: usize, e: redis::RedisError) -> Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            // The server went away (or restarted): every connection to it is dead, not only this one.
            self.discard(None);
        } else if e.is_timeout() {
            self.discard(Some(slot));
        }
        classify(operation, e)
    }

    /// Runs one command within the command timeout (which also bounds getting a connection).
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.bounded(operation, |conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        })
        .await
    }

    /// Runs a Lua script within the command timeout.
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
    ) -> Result<T> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            a.push(&mut inv);
        }
        let inv = &inv;
        self.bounded(operation, |conn| async move {
            match conn {
                Conn::Single(mut c) => inv.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async::<T>(&mut c).await,
            }
        })
        .await
    }
}

#[derive(Clone)]
enum Pools {
    Single(Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection to one server or to a cluster (both multiplexed and cheap to clone).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// `redis+cluster://[user:password@]host1:port1,host2:port2,…` → one `redis://` URL per seed node.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = match url.strip_prefix("redis+cluster://") {
        Some(r) => ("redis", r),
        None => ("rediss", url.strip_prefix("rediss+cluster://")?),
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.split('/').next().unwrap_or(hosts);
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{auth}{h}"))
            .collect(),
    )
}

/// Object-safe argument pushing for scripts.
pub(crate) trait ToRedisArgsDyn: Send + Sync {
    fn push(&self, inv: &mut redis::ScriptInvocation<'_>);
}

impl<T: ToRedisArgs + Send + Sync> ToRedisArgsDyn for T {
    fn push(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.arg(self);
    }
}

fn unavailable(
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::unavailable(BACKEND, operation, true, Some(Box::new(e)))
}

/// Maps redis errors: I/O, timeouts, connection refusals, LOADING and BUSY → retryable unavailable;
/// authentication failures → unavailable, not retryable; the rest → backend.
pub fn classify(operation: &'static str, e: redis::RedisError) -> Error {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Error::unavailable(BACKEND, operation, true, Some(Box::new(e)));
    }
    match e.kind() {
        redis::ErrorKind::AuthenticationFailed => {
            Error::unavailable(BACKEND, operation, false, Some(Box::new(e)))
        }
        _ => {
            let text = e.to_string();
            if text.contains("LOADING") || text.contains("BUSY") || text.contains("TRYAGAIN") {
                Error::unavailable(BACKEND, operation, true, Some(Box::new(e)))
            } else {
                Error::backend(BACKEND, operation, e)
            }
        }
    }
}
