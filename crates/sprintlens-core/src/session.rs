//! The [`SessionStore`] port: user sessions with idle and absolute expiry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{Timestamp, WorkspaceId};

/// A session token: 256 random bits from the OS, shown once to the client as 64 hex characters.
/// Stores keep only its SHA-256 ([`SessionToken::hash`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::unavailable("os", "random token", true, Some(e.to_string().into()))
        })?;
        Ok(SessionToken(hex::encode(bytes)))
    }
    /// Parses a token presented by a client.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("token", "must be 64 hex characters"));
        }
        Ok(SessionToken(s.to_ascii_lowercase()))
    }
    /// The token text (give it to the client; never store it).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The lowercase hex SHA-256 of the token: the only form a store keeps.
    pub fn hash(&self) -> String {
        crate::blob::sha256_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The token's hash (safe to log).
    pub id: String,
    /// The tenant.
    pub workspace: WorkspaceId,
    /// The user.
    pub user: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last validated.
    pub last_seen_at: Timestamp,
    /// Expires if unused until then.
    pub idle_expires_at: Timestamp,
    /// Expires then whatever the use.
    pub absolute_expires_at: Timestamp,
    /// Free-form data (a JSON object).
    pub data: serde_json::Value,
}

/// Lifetimes of a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle timeout: each validation extends the session by this much.
    pub idle: Duration,
    /// Absolute lifetime.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(24 * 3600),
        }
    }
}

impl Session {
    /// A new session record for `token` created at `now`.
    pub fn new(
        token: &SessionToken,
        workspace: WorkspaceId,
        user: &str,
        policy: SessionPolicy,
        data: serde_json::Value,
        now: Timestamp,
    ) -> Result<Self> {
        crate::validate::name("user", user)?;
        crate::validate::json_object("data", &data)?;
        if policy.idle.is_zero() || policy.absolute.is_zero() {
            return Err(Error::invalid("policy", "lifetimes must be positive"));
        }
        let absolute = now.plus(policy.absolute);
        Ok(Session {
            id: token.hash(),
            workspace,
            user: user.to_string(),
            created_at: now,
            last_seen_at: now,
            idle_expires_at: std::cmp::min(now.plus(policy.idle), absolute),
            absolute_expires_at: absolute,
            data,
        })
    }
    /// Whether it is still valid at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.idle_expires_at && now < self.absolute_expires_at
    }
    /// The session after a use at `now`, its idle expiry moved forward (never past the absolute one).
    pub fn touched(&self, now: Timestamp, idle: Duration) -> Session {
        let mut s = self.clone();
        s.last_seen_at = now;
        s.idle_expires_at = std::cmp::min(now.plus(idle), self.absolute_expires_at);
        s
    }
}

/// Stores sessions by token hash.
///
/// # Behavior
/// - `create` MUST store only the token's hash, never the token.
/// - `validate` MUST return the session while it is within both its idle and absolute expiry, extend
///   its idle expiry, and return `None` after either passes or after revocation.
/// - `revoke` MUST make the token invalid at once; `revoke_all` MUST do so for every session of a
///   user in a workspace and return how many it revoked.
/// - When the store cannot be reached, calls MUST fail (sessions fail closed), never return a session.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The backend name.
    fn backend(&self) -> &'static str;
    /// Starts a session for `user`; returns the token (once) and the session.
    async fn create(
        &self,
        workspace: WorkspaceId,
        user: &str,
        policy: SessionPolicy,
        data: serde_json::Value,
    ) -> Result<(SessionToken, Session)>;
    /// The live session of a token, touched.
    async fn validate(&self, token: &SessionToken) -> Result<Option<Session>>;
    /// Ends one session.
    async fn revoke(&self, token: &SessionToken) -> Result<bool>;
    /// Ends every session of a user in a workspace.
    async fn revoke_all(&self, workspace: WorkspaceId, user: &str) -> Result<u64>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: SessionStore + ?Sized> SessionStore for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    async fn create(
        &self,
        workspace: WorkspaceId,
        user: &str,
        policy: SessionPolicy,
        data: serde_json::Value,
    ) -> Result<(SessionToken, Session)> {
        (**self).create(workspace, user, policy, data).await
    }
    async fn validate(&self, token: &SessionToken) -> Result<Option<Session>> {
        (**self).validate(token).await
    }
    async fn revoke(&self, token: &SessionToken) -> Result<bool> {
        (**self).revoke(token).await
    }
    async fn revoke_all(&self, workspace: WorkspaceId, user: &str) -> Result<u64> {
        (**self).revoke_all(workspace, user).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_redacted() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_ne!(a.hash(), a.expose());
        assert_eq!(SessionToken::parse(a.expose()).unwrap(), a);
        assert!(SessionToken::parse("short").is_err());
    }

    #[test]
    fn idle_never_passes_absolute() {
        let t = SessionToken::generate().unwrap();
        let now = Timestamp::now();
        let policy = SessionPolicy {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(90),
        };
        let s = Session::new(
            &t,
            WorkspaceId::new(),
            "u",
            policy,
            serde_json::json!({}),
            now,
        )
        .unwrap();
        let later = now.plus(Duration::from_secs(50));
        let s2 = s.touched(later, policy.idle);
        assert_eq!(s2.idle_expires_at, s.absolute_expires_at);
        assert!(!s2.is_live(now.plus(Duration::from_secs(91))));
    }
}
