//! The conformance suites against the live PostgreSQL of `cargo xtask services up`.

mod common;

use std::sync::Arc;

use sprintlens_core::{OutboxStore, RecordStore, VectorIndex};

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
