//! The conformance suites against the in-process adapters.

use std::sync::Arc;

use sprintlens_core::{Cache, SessionStore};
use sprintlens_memory::{MemoryCache, MemorySessionStore};

async fn cache() -> (Arc<dyn Cache>, ()) {
    (Arc::new(MemoryCache::new(10_000)), ())
}

async fn sessions() -> (Arc<dyn SessionStore>, ()) {
    (Arc::new(MemorySessionStore::new()), ())
}

mod cache_suite {
    use super::*;
    sprintlens_testkit::cache_suite!(cache);
}

mod session_store {
    use super::*;
    sprintlens_testkit::session_store_suite!(sessions);
}
