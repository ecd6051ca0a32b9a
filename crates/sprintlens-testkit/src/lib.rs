#![doc = include_str!("../README.md")]

pub mod analytics;
pub mod blobs;
pub mod cache;
pub mod faults;
pub mod generate;
pub mod outbox;
pub mod pg_cluster;
pub mod records;
pub mod sessions;
pub mod vectors;

#[doc(hidden)]
pub use tokio as __tokio;

use std::sync::Arc;

/// The URL of a live service from the environment variable `var` (set by `cargo xtask test` or
/// `cargo xtask services env`), or `None` with a "skipped" line. Panics when it is missing and
/// `SPRINTLENS_TEST_REQUIRE_SERVICES=1`, so CI cannot pass by skipping.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var("SPRINTLENS_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "SPRINTLENS_TEST_REQUIRE_SERVICES=1 but {var} is not set"
            );
            eprintln!("skipped: {var} not set (run `cargo xtask test`)");
            None
        }
    }
}

/// The URLs of one PostgreSQL database on the stack, for its three roles.
#[derive(Clone, Debug)]
pub struct PgDatabase {
    /// The application role (row-level security applies).
    pub app: String,
    /// The owner role (schema).
    pub admin: String,
    /// The BYPASSRLS operator role (scans across workspaces).
    pub operator: String,
}

/// A fresh database `name` on the stack's PostgreSQL (dropped first if an earlier run left it; for a
/// name ending in `_<pid>`, the same test's databases of processes no longer running are dropped too),
/// created by the owner role with `psql` from `SPRINTLENS_TEST_PG_BIN`; `None` when the stack is not
/// configured (and not required).
pub fn fresh_postgres_database(name: &str) -> Option<PgDatabase> {
    let app = service_url("SPRINTLENS_TEST_POSTGRES_URL")?;
    let admin = service_url("SPRINTLENS_TEST_POSTGRES_ADMIN_URL")?;
    let operator = service_url("SPRINTLENS_TEST_POSTGRES_OPERATOR_URL")?;
    let bin = service_url("SPRINTLENS_TEST_PG_BIN")?;
    assert!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database names are [A-Za-z0-9_]+"
    );
    let psql = std::path::Path::new(&bin).join("psql");
    // Names ending in `_<pid>`: databases an earlier, finished process of the same test left behind
    // (a long-lived local stack otherwise fills its disk with them) go too.
    let mut stale = Vec::new();
    if let Some((prefix, pid)) = name.rsplit_once('_')
        && pid.parse::<u32>().is_ok()
    {
        let listed = std::process::Command::new(&psql)
            .arg(&admin)
            .args(["-X", "-q", "-A", "-t", "-c"])
            .arg(format!(
                "SELECT datname FROM pg_database WHERE datname ~ '^{prefix}_[0-9]+$'"
            ))
            .output()
            .expect("psql runs");
        for db in String::from_utf8_lossy(&listed.stdout).lines() {
            let other = db.rsplit_once('_').and_then(|(_, p)| p.parse::<u32>().ok());
            if let Some(other) = other
                && db != name
                && !std::path::Path::new(&format!("/proc/{other}")).exists()
            {
                stale.push(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        }
    }
    let mut recreate = std::process::Command::new(&psql);
    recreate
        .arg(&admin)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    for statement in &stale {
        recreate.args(["-c", statement]);
    }
    let out = recreate
        .args([
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .args(["-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "creating {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let with_db = |url: &str| {
        format!(
            "{}/{name}",
            url.rsplit_once('/').expect("URL with a database").0
        )
    };
    Some(PgDatabase {
        app: with_db(&app),
        admin: with_db(&admin),
        operator: with_db(&operator),
    })
}

/// What a suite's factory returns: a port and a guard dropped after the case, or `None` when the
/// backend is not available here (the case then says "skipped" and returns; server adapters make
/// absence a failure when `SPRINTLENS_TEST_REQUIRE_SERVICES=1`, as `cargo xtask test` sets).
pub trait Fixture {
    /// The port type (`dyn RecordStore`, …).
    type Port: ?Sized;
    /// Kept alive for the case (a temporary folder, …).
    type Guard;
    /// The fixture, if the backend is available.
    fn into_fixture(self) -> Option<(Arc<Self::Port>, Self::Guard)>;
}

impl<P: ?Sized, G> Fixture for (Arc<P>, G) {
    type Port = P;
    type Guard = G;
    fn into_fixture(self) -> Option<(Arc<P>, G)> {
        Some(self)
    }
}

impl<P: ?Sized, G> Fixture for Option<(Arc<P>, G)> {
    type Port = P;
    type Guard = G;
    fn into_fixture(self) -> Option<(Arc<P>, G)> {
        self
    }
}

/// Emits one `#[tokio::test]` per case of a suite module, each with a fresh fixture from `$factory`
/// (an async fn returning `(Arc<dyn Port>, guard)`; the guard is dropped after the case).
#[doc(hidden)]
#[macro_export]
macro_rules! __emit_cases {
    ($module:path, $factory:path, [$($case:ident),* $(,)?]) => {
        $(
            #[$crate::__tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((port, guard)) = $crate::Fixture::into_fixture($factory().await) else {
                    eprintln!("skipped: backend not available");
                    return;
                };
                { use $module as suite; suite::$case(port).await; }
                drop(guard);
            }
        )*
    };
}

/// The `RecordStore` conformance suite, plus a property test against an in-memory reference model.
///
/// ```ignore
/// async fn store() -> (Arc<dyn RecordStore>, TempDir) { /* open the store under test */ }
/// sprintlens_testkit::record_store_suite!(store);
/// ```
#[macro_export]
macro_rules! record_store_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::records,
            $factory,
            [
                round_trip_every_kind,
                reupsert_is_idempotent,
                newer_wins_older_is_skipped,
                list_pages_without_gaps_or_repeats,
                list_filters,
                workspaces_are_isolated,
                invalid_input_writes_nothing,
                batch_is_atomic_on_conflict,
                unique_keys_conflict_until_deleted,
                immutable_kinds_refuse_changes,
                delete_leaves_a_tombstone,
                scan_follows_the_keyset_cursor,
                split_cuts_the_scan_into_equal_ranges,
                concurrent_writers_lose_nothing,
                bad_pages_and_limits_are_rejected,
            ]
        );

        #[test]
        fn matches_reference_model() {
            let rt = $crate::__tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let Some((port, guard)) = $crate::Fixture::into_fixture(rt.block_on($factory())) else {
                eprintln!("skipped: backend not available");
                return;
            };
            $crate::records::matches_reference_model(&rt, port);
            drop(guard);
        }
    };
}

/// The `OutboxStore` conformance suite: one test running every case in order (an outbox is one log
/// per store). The factory's store must not be logged to by other tests of the process.
#[macro_export]
macro_rules! outbox_store_suite {
    ($factory:path) => {
        #[$crate::__tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn outbox_cases_in_order() {
            let Some((port, guard)) = $crate::Fixture::into_fixture($factory().await) else {
                eprintln!("skipped: backend not available");
                return;
            };
            $crate::outbox::run_all(port).await;
            drop(guard);
        }
    };
}

/// The `EventOutboxStore` cases: one test, on a store nothing else logs events to.
#[macro_export]
macro_rules! event_outbox_store_suite {
    ($factory:path) => {
        #[$crate::__tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn event_outbox_cases_in_order() {
            let Some((port, guard)) = $crate::Fixture::into_fixture($factory().await) else {
                eprintln!("skipped: backend not available");
                return;
            };
            $crate::outbox::event_outbox_cases(port).await;
            drop(guard);
        }
    };
}

/// The `VectorOutboxStore` cases, in one test (one log per store).
#[macro_export]
macro_rules! vector_outbox_store_suite {
    ($factory:path) => {
        #[$crate::__tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn vector_outbox_cases_in_order() {
            let Some((port, guard)) = $crate::Fixture::into_fixture($factory().await) else {
                eprintln!("skipped: backend not available");
                return;
            };
            $crate::outbox::vector_outbox_cases(port).await;
            drop(guard);
        }
    };
}

/// The `VectorIndex` conformance suite.
#[macro_export]
macro_rules! vector_index_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::vectors,
            $factory,
            [
                nearest_is_itself,
                vectors_are_stored_at_unit_length,
                count_all_spans_workspaces,
                wrong_dimension_writes_nothing,
                filters_still_return_k,
                workspaces_are_isolated,
                delete_and_replace,
                search_matches_exact_ranking,
                scan_entries_follow_the_keyset_cursor,
            ]
        );
    };
}

/// The `Analytics` conformance suite.
#[macro_export]
macro_rules! analytics_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::analytics,
            $factory,
            [
                eval_summary_is_exact,
                replayed_batch_counts_once,
                invalid_batch_writes_nothing,
                cost_breakdown_sums_exactly,
                metric_series_buckets,
                latency_quantiles,
                workspaces_are_isolated,
                scan_follows_the_keyset_cursor,
                scan_crosses_gaps_in_time,
            ]
        );
    };
}

/// The `BlobStore` conformance suite.
#[macro_export]
macro_rules! blob_store_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::blobs,
            $factory,
            [
                put_get_head_round_trip,
                ranged_reads,
                list_by_prefix_pages,
                delete_and_not_found,
                workspaces_are_isolated,
                too_large_writes_nothing,
                create_mode_conflicts_or_is_unsupported,
                presigned_urls_work_and_expire,
                streamed_put_in_parts_round_trips,
                failed_or_refused_streams_leave_nothing,
                copy_keeps_bytes_and_metadata,
                content_addressed_bytes_are_stored_once,
                workspaces_with_blobs_are_listed,
            ]
        );
    };
}

/// The `Cache` conformance suite.
#[macro_export]
macro_rules! cache_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::cache,
            $factory,
            [
                set_get_delete,
                entries_expire,
                get_or_load_loads_once,
                loader_errors_reach_every_waiter_and_are_not_cached,
                workspaces_do_not_collide,
            ]
        );
    };
}

/// The `SessionStore` conformance suite.
#[macro_export]
macro_rules! session_store_suite {
    ($factory:path) => {
        $crate::__emit_cases!(
            $crate::sessions,
            $factory,
            [
                create_and_validate,
                idle_expiry,
                absolute_expiry,
                revoke_one,
                revoke_all_of_a_user,
                invalid_input_is_rejected,
            ]
        );
    };
}
