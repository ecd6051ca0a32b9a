//! `SessionStore` conformance cases.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sprintlens_core::*;

type S = Arc<dyn SessionStore>;

fn policy(idle_ms: u64, absolute_ms: u64) -> SessionPolicy {
    SessionPolicy {
        idle: Duration::from_millis(idle_ms),
        absolute: Duration::from_millis(absolute_ms),
    }
}

/// A new token validates to its session; the session id is the hash, never the token.
pub async fn create_and_validate(s: S) {
    let ws = WorkspaceId::new();
    let (token, session) = s
        .create(
            ws,
            "alice",
            SessionPolicy::default(),
            json!({"role": "admin"}),
        )
        .await
        .unwrap();
    assert_ne!(session.id, token.expose());
    assert_eq!(session.id, token.hash());
    let got = s.validate(&token).await.unwrap().unwrap();
    assert_eq!((got.workspace, got.user.as_str()), (ws, "alice"));
    assert_eq!(got.data, json!({"role": "admin"}));
    assert!(got.last_seen_at >= session.last_seen_at);
    let stranger = SessionToken::generate().unwrap();
    assert!(s.validate(&stranger).await.unwrap().is_none());
}

/// An unused session expires after its idle timeout; use keeps it alive.
pub async fn idle_expiry(s: S) {
    let ws = WorkspaceId::new();
    let (kept, _) = s
        .create(ws, "u", policy(800, 60_000), json!({}))
        .await
        .unwrap();
    let (idle, _) = s
        .create(ws, "u", policy(800, 60_000), json!({}))
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(s.validate(&kept).await.unwrap().is_some());
    }
    assert!(s.validate(&idle).await.unwrap().is_none());
}

/// However busy, a session ends at its absolute expiry.
pub async fn absolute_expiry(s: S) {
    let ws = WorkspaceId::new();
    let (t, _) = s
        .create(ws, "u", policy(1_000, 1_200), json!({}))
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(s.validate(&t).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.validate(&t).await.unwrap().is_none());
}

/// Revoking a token ends it at once and only it.
pub async fn revoke_one(s: S) {
    let ws = WorkspaceId::new();
    let (a, _) = s
        .create(ws, "bob", SessionPolicy::default(), json!({}))
        .await
        .unwrap();
    let (b, _) = s
        .create(ws, "bob", SessionPolicy::default(), json!({}))
        .await
        .unwrap();
    assert!(s.revoke(&a).await.unwrap());
    assert!(!s.revoke(&a).await.unwrap());
    assert!(s.validate(&a).await.unwrap().is_none());
    assert!(s.validate(&b).await.unwrap().is_some());
}

/// Revoking all of a user's sessions leaves other users and workspaces alone.
pub async fn revoke_all_of_a_user(s: S) {
    let (ws, other_ws) = (WorkspaceId::new(), WorkspaceId::new());
    let mut carol = Vec::new();
    for _ in 0..3 {
        carol.push(
            s.create(ws, "carol", SessionPolicy::default(), json!({}))
                .await
                .unwrap()
                .0,
        );
    }
    let (dave, _) = s
        .create(ws, "dave", SessionPolicy::default(), json!({}))
        .await
        .unwrap();
    let (carol_elsewhere, _) = s
        .create(other_ws, "carol", SessionPolicy::default(), json!({}))
        .await
        .unwrap();
    assert_eq!(s.revoke_all(ws, "carol").await.unwrap(), 3);
    for t in &carol {
        assert!(s.validate(t).await.unwrap().is_none());
    }
    assert!(s.validate(&dave).await.unwrap().is_some());
    assert!(s.validate(&carol_elsewhere).await.unwrap().is_some());
}

/// Empty users, non-object data and zero lifetimes are refused.
pub async fn invalid_input_is_rejected(s: S) {
    let ws = WorkspaceId::new();
    assert_eq!(
        s.create(ws, "", SessionPolicy::default(), json!({}))
            .await
            .unwrap_err()
            .field(),
        Some("user")
    );
    assert_eq!(
        s.create(ws, "u", SessionPolicy::default(), json!([1]))
            .await
            .unwrap_err()
            .field(),
        Some("data")
    );
    assert_eq!(
        s.create(ws, "u", policy(0, 10), json!({}))
            .await
            .unwrap_err()
            .field(),
        Some("policy")
    );
}
