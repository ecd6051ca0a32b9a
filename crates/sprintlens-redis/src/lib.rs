#![doc = include_str!("../README.md")]

mod breaker;
mod cache;
mod sessions;

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
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
    /// How long one command may take; a Redis that is stopped (not dead) never hangs a request longer.
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

/// A pool with every wait bounded.
#[derive(Clone)]
pub(crate) struct Client {
    pool: Pool,
    command_timeout: Duration,
    pub(crate) prefix: String,
}

impl Client {
    pub(crate) fn new(o: &RedisOptions, key: &str) -> Result<Self> {
        if !(o.url.starts_with("redis://") || o.url.starts_with("rediss://")) {
            return Err(Error::config(
                key,
                "a Redis URL starts with redis:// or rediss://",
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
        let pool = deadpool_redis::Config::from_url(o.url.clone())
            .builder()
            .map_err(|e| Error::config(key, format!("invalid Redis URL: {e}")))?
            .max_size(o.pool_size)
            .wait_timeout(Some(o.wait_timeout))
            .create_timeout(Some(o.create_timeout))
            .recycle_timeout(Some(o.recycle_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::config(key, format!("invalid Redis settings: {e}")))?;
        Ok(Client {
            pool,
            command_timeout: o.command_timeout,
            prefix: o.prefix.clone(),
        })
    }

    /// Runs one command with the command timeout. A connection whose command timed out is discarded,
    /// never returned to the pool in an unknown state.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| unavailable(operation, e))?;
        match tokio::time::timeout(self.command_timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(operation, e)),
            Err(_) => {
                drop(deadpool_redis::Connection::take(conn));
                Err(Error::unavailable(
                    BACKEND,
                    operation,
                    true,
                    Some("command timed out".into()),
                ))
            }
        }
    }

    /// Runs a Lua script with the command timeout.
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        operation: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
    ) -> Result<T> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| unavailable(operation, e))?;
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            a.push(&mut inv);
        }
        match tokio::time::timeout(self.command_timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(operation, e)),
            Err(_) => {
                drop(deadpool_redis::Connection::take(conn));
                Err(Error::unavailable(
                    BACKEND,
                    operation,
                    true,
                    Some("command timed out".into()),
                ))
            }
        }
    }
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
