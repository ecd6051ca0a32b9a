//! `SessionStore` in process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sprintlens_core::{
    Result, Session, SessionPolicy, SessionStore, SessionToken, Timestamp, WorkspaceId, async_trait,
};

/// Sessions in a map keyed by token hash; lost when the process ends. URL: `memory://`.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<String, (Session, Duration)>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    fn backend(&self) -> &'static str {
        "memory"
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
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (s, _)| s.is_live(now));
        map.insert(session.id.clone(), (session.clone(), policy.idle));
        Ok((token, session))
    }

    async fn validate(&self, token: &SessionToken) -> Result<Option<Session>> {
        let now = Timestamp::now();
        let hash = token.hash();
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some((s, idle)) = map.get(&hash).cloned() else {
            return Ok(None);
        };
        if !s.is_live(now) {
            map.remove(&hash);
            return Ok(None);
        }
        let touched = s.touched(now, idle);
        map.insert(hash, (touched.clone(), idle));
        Ok(Some(touched))
    }

    async fn revoke(&self, token: &SessionToken) -> Result<bool> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.remove(&token.hash()).is_some())
    }

    async fn revoke_all(&self, workspace: WorkspaceId, user: &str) -> Result<u64> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, (s, _)| !(s.workspace == workspace && s.user == user));
        Ok((before - map.len()) as u64)
    }
}
