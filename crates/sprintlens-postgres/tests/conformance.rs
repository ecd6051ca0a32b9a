//! The conformance suites against the live PostgreSQL of `cargo xtask services up`.

mod common;

use std::sync::Arc;

use sprintlens_core::{OutboxStore, RecordStore, VectorIndex, VectorOutboxStore};

async fn records() -> Option<(Arc<dyn RecordStore>, ())> {
    common::store()
        .await
        .map(|s| (s as Arc<dyn RecordStore>, ()))
}

async fn outbox() -> Option<(Arc<dyn OutboxStore>, ())> {
    common::store()
        .await
        .map(|s| (s as Arc<dyn OutboxStore>, ()))
}

async fn vector_outbox() -> Option<(Arc<dyn VectorOutboxStore>, ())> {
    common::store()
        .await
        .map(|s| (s as Arc<dyn VectorOutboxStore>, ()))
}

async fn vectors() -> Option<(Arc<dyn VectorIndex>, ())> {
    common::store()
        .await
        .map(|s| (s as Arc<dyn VectorIndex>, ()))
}

mod record_store {
    use super::*;
    sprintlens_testkit::record_store_suite!(records);
}

mod vector_index {
    use super::*;
    sprintlens_testkit::vector_index_suite!(vectors);
}

mod outbox_store {
    use super::*;
    sprintlens_testkit::outbox_store_suite!(outbox);
}

mod vector_outbox_store {
    use super::*;
    sprintlens_testkit::vector_outbox_store_suite!(vector_outbox);
}
