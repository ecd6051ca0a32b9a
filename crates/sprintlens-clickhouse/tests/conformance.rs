//! The `Analytics` suite against the ClickHouse engine of `cargo xtask services up` (chDB behind our
//! HTTP front), and deduplication of re-sent batches.

use std::sync::Arc;

use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
use sprintlens_core::Analytics;
use sprintlens_core::config::{AnalyticsConfig, BackendUrl};
use tokio::sync::OnceCell;

/// The stack's URL with the database replaced.
fn url_for(database: &str) -> Option<String> {
    let url = sprintlens_testkit::service_url("SPRINTLENS_TEST_CLICKHOUSE_URL")?;
    let (head, _) = url.rsplit_once('/').expect("URL with a database");
    Some(format!("{head}/{database}"))
}

async fn open(database: &str, dedup_window: u64) -> Option<ClickHouseAnalytics> {
    let mut cfg =
        AnalyticsConfig::new(BackendUrl::parse("analytics.url", &url_for(database)?).unwrap());
    cfg.dedup_window = dedup_window;
    let store = ClickHouseAnalytics::new(ClickHouseOptions::from_config(&cfg).unwrap());
    // A database of an earlier process that had this id is not this case's.
    store.drop_databases_like(database).await.unwrap();
    store.apply_schema().await.unwrap();
    Some(store)
}

static CLEANED: OnceCell<()> = OnceCell::const_new();
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Each case gets its own database (scans are global, so cases must not see each other's
/// events), named after the process too (under `cargo nextest` every case is a process of its
/// own); databases of earlier, ended runs are dropped first.
async fn clickhouse() -> Option<(Arc<dyn Analytics>, ())> {
    let url = url_for("default")?;
    CLEANED
        .get_or_init(|| async {
            let root = ClickHouseAnalytics::new(
                ClickHouseOptions::from_config(&AnalyticsConfig::new(
                    BackendUrl::parse("analytics.url", &url).unwrap(),
                ))
                .unwrap(),
            );
            root.drop_databases_of_ended_processes("sprintlens_suite")
                .await
                .unwrap();
        })
        .await;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("sprintlens_suite_{n}_{}", std::process::id());
    let store = open(&name, 1000).await?;
    Some((Arc::new(store) as Arc<dyn Analytics>, ()))
}

mod suite {
    use super::*;
    sprintlens_testkit::analytics_suite!(clickhouse);
}
