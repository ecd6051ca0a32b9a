//! The conformance suites against a real SQLite file.

use std::sync::Arc;

use sprintlens_core::{
    Analytics, EventOutboxStore, OutboxStore, RecordStore, SessionStore, VectorIndex,
    VectorOutboxStore,
};
use sprintlens_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

async fn open() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SqliteOptions::new(dir.path().join("test.db"));
    opts.dimension = 64;
    (SqliteStore::open(opts).await.unwrap(), dir)
}

async fn records() -> (Arc<dyn RecordStore>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn outbox() -> (Arc<dyn OutboxStore>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn event_outbox() -> (Arc<dyn EventOutboxStore>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn vector_outbox() -> (Arc<dyn VectorOutboxStore>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn vectors() -> (Arc<dyn VectorIndex>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn analytics() -> (Arc<dyn Analytics>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}
async fn sessions() -> (Arc<dyn SessionStore>, TempDir) {
    let (s, d) = open().await;
    (Arc::new(s), d)
}

mod record_store {
    use super::*;
    sprintlens_testkit::record_store_suite!(records);
}
mod vector_index {
    use super::*;
    sprintlens_testkit::vector_index_suite!(vectors);
}
mod analytics_suite {
    use super::*;
    sprintlens_testkit::analytics_suite!(analytics);
}
mod session_store {
    use super::*;
    sprintlens_testkit::session_store_suite!(sessions);
}
mod outbox_store {
    use super::*;
    sprintlens_testkit::outbox_store_suite!(outbox);
}
mod event_outbox_store {
    use super::*;
    sprintlens_testkit::event_outbox_store_suite!(event_outbox);
}
mod vector_outbox_store {
    use super::*;
    sprintlens_testkit::vector_outbox_store_suite!(vector_outbox);
}
