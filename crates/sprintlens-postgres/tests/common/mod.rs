//! Test fixtures: a database of this test process's own, on the stack `cargo xtask services up` runs.

#![allow(dead_code)]

use std::sync::Arc;

use sprintlens_postgres::{PgOptions, PgStore};
use tokio::sync::OnceCell;

pub struct Urls {
    pub app: String,
    pub admin: String,
    pub operator: String,
}

fn with_db(url: &str, db: &str) -> String {
    let (head, _) = url.rsplit_once('/').expect("URL with a database");
    format!("{head}/{db}")
}

/// `None` when the stack is not configured (and not required).
pub fn env() -> Option<Urls> {
    let get = sprintlens_testkit::service_url;
    Some(Urls {
        app: get("SPRINTLENS_TEST_POSTGRES_URL")?,
        admin: get("SPRINTLENS_TEST_POSTGRES_ADMIN_URL")?,
        operator: get("SPRINTLENS_TEST_POSTGRES_OPERATOR_URL")?,
    })
}

static DB: OnceCell<Option<Urls>> = OnceCell::const_new();

/// A fresh database for this test process (created by the owner role from template1, which has
/// pgvector), with the schema applied at `dimension`. Stale test databases of earlier runs are dropped.
pub async fn database() -> Option<&'static Urls> {
    DB.get_or_init(|| async {
        let base = env()?;
        let admin = sqlx::PgPool::connect(&base.admin)
            .await
            .expect("admin connects");
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database d WHERE datname LIKE 'sl_test_%'
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        // `sl_test_<pid>_<uuid>`: only databases of processes that have ended (a running one may
        // have created its database and not connected yet).
        let ended = |db: &String| {
            db.strip_prefix("sl_test_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        };
        for db in stale.into_iter().filter(ended) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\""
            )))
            .execute(&admin)
            .await;
        }
        let name = format!(
            "sl_test_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        Some(Urls {
            app: with_db(&base.app, &name),
            admin: with_db(&base.admin, &name),
            operator: with_db(&base.operator, &name),
        })
    })
    .await
    .as_ref()
}

pub const DIM: usize = 64;

pub async fn store_with(pool_size: u32, operator: bool) -> Option<PgStore> {
    let urls = database().await?;
    let mut o = PgOptions::new(urls.app.clone());
    o.dimension = DIM;
    o.pool_size = pool_size;
    if operator {
        o.operator_url = Some(urls.operator.clone());
    }
    let s = PgStore::open(o).unwrap();
    s.apply_schema(&urls.admin).await.unwrap();
    Some(s)
}

pub async fn store() -> Option<Arc<PgStore>> {
    store_with(8, true).await.map(Arc::new)
}
