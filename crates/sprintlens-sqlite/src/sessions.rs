//! `SessionStore` on SQLite: rows keyed by the token's SHA-256; the token itself is never stored.

use rusqlite::{OptionalExtension, params};
use sprintlens_core::{
    Error, Result, Session, SessionPolicy, SessionStore, SessionToken, Timestamp, WorkspaceId,
    async_trait,
};

use crate::{BACKEND, SqliteStore, classify, uuid_text};

#[async_trait]
impl SessionStore for SqliteStore {
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
        let s = session.clone();
        let idle = i64::try_from(policy.idle.as_micros()).unwrap_or(i64::MAX);
        self.write("session_create", move |tx| {
            // Expired sessions are purged a bounded batch at a time as new ones arrive.
            tx.execute(
                "DELETE FROM sessions WHERE id IN
                   (SELECT id FROM sessions WHERE idle_expires_at <= ?1 LIMIT 100)",
                [now.as_micros()],
            )
            .map_err(|e| classify("session_create", e))?;
            tx.execute(
                "INSERT INTO sessions (id, workspace, user_id, created_at, last_seen_at,
                    idle_expires_at, absolute_expires_at, idle_micros, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    s.id,
                    uuid_text(s.workspace),
                    s.user,
                    s.created_at.as_micros(),
                    s.last_seen_at.as_micros(),
                    s.idle_expires_at.as_micros(),
                    s.absolute_expires_at.as_micros(),
                    idle,
                    s.data.to_string()
                ],
            )
            .map_err(|e| classify("session_create", e))?;
            Ok(())
        })
        .await?;
        Ok((token, session))
    }

    async fn validate(&self, token: &SessionToken) -> Result<Option<Session>> {
        let hash = token.hash();
        self.write("session_validate", move |tx| {
            let row = tx
                .query_row(
                    "SELECT workspace, user_id, created_at, last_seen_at, idle_expires_at,
                        absolute_expires_at, idle_micros, data
                     FROM sessions WHERE id = ?1",
                    [&hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, String>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(|e| classify("session_validate", e))?;
            let Some((ws, user, created, seen, idle_exp, abs_exp, idle, data)) = row else {
                return Ok(None);
            };
            let session = Session {
                id: hash.clone(),
                workspace: ws.parse().map_err(|e: Error| {
                    Error::backend(BACKEND, "session_validate", e.to_string())
                })?,
                user,
                created_at: Timestamp::from_micros(created),
                last_seen_at: Timestamp::from_micros(seen),
                idle_expires_at: Timestamp::from_micros(idle_exp),
                absolute_expires_at: Timestamp::from_micros(abs_exp),
                data: serde_json::from_str(&data)
                    .map_err(|e| Error::backend(BACKEND, "session_validate", e))?,
            };
            let now = Timestamp::now();
            if !session.is_live(now) {
                tx.execute("DELETE FROM sessions WHERE id = ?1", [&hash])
                    .map_err(|e| classify("session_validate", e))?;
                return Ok(None);
            }
            let touched =
                session.touched(now, std::time::Duration::from_micros(idle.max(0) as u64));
            tx.execute(
                "UPDATE sessions SET last_seen_at = ?2, idle_expires_at = ?3 WHERE id = ?1",
                params![
                    hash,
                    touched.last_seen_at.as_micros(),
                    touched.idle_expires_at.as_micros()
                ],
            )
            .map_err(|e| classify("session_validate", e))?;
            Ok(Some(touched))
        })
        .await
    }

    async fn revoke(&self, token: &SessionToken) -> Result<bool> {
        let hash = token.hash();
        self.write("session_revoke", move |tx| {
            tx.execute("DELETE FROM sessions WHERE id = ?1", [hash])
                .map(|n| n > 0)
                .map_err(|e| classify("session_revoke", e))
        })
        .await
    }

    async fn revoke_all(&self, workspace: WorkspaceId, user: &str) -> Result<u64> {
        let user = user.to_string();
        self.write("session_revoke_all", move |tx| {
            tx.execute(
                "DELETE FROM sessions WHERE workspace = ?1 AND user_id = ?2",
                params![uuid_text(workspace), user],
            )
            .map(|n| n as u64)
            .map_err(|e| classify("session_revoke_all", e))
        })
        .await
    }
}
