//! `SessionStore` on Redis. Fails closed: any Redis error is returned, never a session.

use std::time::Duration;

use sprintlens_core::{
    Error, Result, Session, SessionPolicy, SessionStore, SessionToken, Timestamp, WorkspaceId,
    async_trait,
};

use crate::{BACKEND, Client, RedisOptions};

/// `SessionStore` on Redis (`redis://…`).
///
/// Sessions live at `{prefix}:s1:{sha256(token)}` (the token itself is never stored) with a Redis
/// expiry at the earlier of the idle and absolute expiry, moved forward on each use; each user's
/// session hashes are kept in `{prefix}:su1:{workspace}:{user}` for revoke-all. Any Redis error fails
/// the call (fail closed): no session is accepted while sessions cannot be checked.
#[derive(Clone)]
pub struct RedisSessionStore {
    client: Client,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisSessionStore")
    }
}

impl RedisSessionStore {
    /// A session store over `options`; nothing connects until the first call.
    pub fn new(options: &RedisOptions) -> Result<Self> {
        Ok(RedisSessionStore {
            client: Client::new(options, "sessions.url")?,
        })
    }

    fn key(&self, hash: &str) -> String {
        format!("{}:s1:{hash}", self.client.prefix)
    }

    fn user_key(&self, ws: WorkspaceId, user: &str) -> String {
        format!("{}:su1:{ws}:{user}", self.client.prefix)
    }
}

fn px_until(now: Timestamp, until: Timestamp) -> u64 {
    ((until.as_micros() - now.as_micros()) / 1000).max(1) as u64
}

fn encode(s: &Session, idle: Duration) -> Result<String> {
    let mut v = serde_json::to_value(s).map_err(|e| Error::backend(BACKEND, "encode", e))?;
    v["idle_ms"] = serde_json::json!(idle.as_millis() as u64);
    Ok(v.to_string())
}

fn decode(text: &str) -> Result<(Session, Duration)> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::backend(BACKEND, "decode", e))?;
    let idle = Duration::from_millis(v["idle_ms"].as_u64().unwrap_or(0));
    let s: Session = serde_json::from_value(v).map_err(|e| Error::backend(BACKEND, "decode", e))?;
    Ok((s, idle))
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(
        &self,
        workspace: WorkspaceId,
        user: &str,
        policy: SessionPolicy,
        data: serde_json::Value,
    ) -> Result<(SessionToken, Session)> {
        let token = SessionToken::generate()?;
        let now = Timestamp::now();
        let session = Session::new(&token, workspace, user, policy, data, now)?;
        let user_key = self.user_key(workspace, user);
        let _: () = self
            .client
            .run(
                "session_create",
                redis::cmd("SET")
                    .arg(self.key(&session.id))
                    .arg(encode(&session, policy.idle)?)
                    .arg("PX")
                    .arg(px_until(now, session.idle_expires_at)),
            )
            .await?;
        let _: i64 = self
            .client
            .run(
                "session_create",
                redis::cmd("SADD").arg(&user_key).arg(&session.id),
            )
            .await?;
        let _: i64 = self
            .client
            .run(
                "session_create",
                redis::cmd("PEXPIRE")
                    .arg(&user_key)
                    .arg(px_until(now, session.absolute_expires_at))
                    .arg("GT"),
            )
            .await
            .or_else(|e| match e {
                // Redis < 7 has no GT: a plain PEXPIRE is fine as a fallback.
                Error::Backend { .. } => Ok(0),
                other => Err(other),
            })?;
        Ok((token, session))
    }

    async fn validate(&self, token: &SessionToken) -> Result<Option<Session>> {
        let key = self.key(&token.hash());
        let text: Option<String> = self
            .client
            .run("session_validate", redis::cmd("GET").arg(&key))
            .await?;
        let Some(text) = text else { return Ok(None) };
        let (session, idle) = decode(&text)?;
        let now = Timestamp::now();
        if !session.is_live(now) {
            let _: i64 = self
                .client
                .run("session_validate", redis::cmd("DEL").arg(&key))
                .await?;
            return Ok(None);
        }
        let touched = session.touched(now, idle);
        // XX: a session revoked meanwhile stays revoked.
        let _: Option<String> = self
            .client
            .run(
                "session_validate",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(encode(&touched, idle)?)
                    .arg("XX")
                    .arg("PX")
                    .arg(px_until(now, touched.idle_expires_at)),
            )
            .await?;
        Ok(Some(touched))
    }

    async fn revoke(&self, token: &SessionToken) -> Result<bool> {
        let hash = token.hash();
        let key = self.key(&hash);
        let text: Option<String> = self
            .client
            .run("session_revoke", redis::cmd("GET").arg(&key))
            .await?;
        let n: i64 = self
            .client
            .run("session_revoke", redis::cmd("DEL").arg(&key))
            .await?;
        if let Some(Ok((s, _))) = text.as_deref().map(decode) {
            let _: i64 = self
                .client
                .run(
                    "session_revoke",
                    redis::cmd("SREM")
                        .arg(self.user_key(s.workspace, &s.user))
                        .arg(&hash),
                )
                .await?;
        }
        Ok(n > 0)
    }

    async fn revoke_all(&self, workspace: WorkspaceId, user: &str) -> Result<u64> {
        // One key per command, so it also works on a cluster (a user's sessions hash to many slots).
        let set = self.user_key(workspace, user);
        let members: Vec<String> = self
            .client
            .run("session_revoke_all", redis::cmd("SMEMBERS").arg(&set))
            .await?;
        let mut n = 0u64;
        for h in members {
            let d: i64 = self
                .client
                .run("session_revoke_all", redis::cmd("DEL").arg(self.key(&h)))
                .await?;
            n += d as u64;
            let _: i64 = self
                .client
                .run("session_revoke_all", redis::cmd("SREM").arg(&set).arg(&h))
                .await?;
        }
        Ok(n)
    }
}
