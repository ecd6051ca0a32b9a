//! SQLite-specific behaviour: durability settings, migrations, dimension pinning, reopen.

use sprintlens_core::{ErrorKind, RecordKind, RecordStore};
use sprintlens_sqlite::{MIGRATIONS, SqliteOptions, SqliteStore};
use sprintlens_testkit::generate::one_of_each;

#[tokio::test]
async fn reopening_keeps_data_and_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/app.db");
    let ws = sprintlens_core::WorkspaceId::new();
    let records = one_of_each(ws);
    {
        let s = SqliteStore::open(SqliteOptions::new(&path)).await.unwrap();
        s.upsert(&records).await.unwrap();
        assert_eq!(s.schema_versions().await.unwrap().len(), MIGRATIONS.len());
    }
    let s = SqliteStore::open(SqliteOptions::new(&path)).await.unwrap();
    assert_eq!(s.schema_versions().await.unwrap().len(), MIGRATIONS.len());
    for r in &records {
        assert_eq!(s.get(ws, r.kind(), r.id).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(s.count(RecordKind::Project, Some(ws)).await.unwrap(), 1);
}

#[tokio::test]
async fn wal_and_full_sync_are_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let _s = SqliteStore::open(SqliteOptions::new(&path)).await.unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_different_dimension_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    drop(SqliteStore::open(SqliteOptions::new(&path)).await.unwrap());
    let mut o = SqliteOptions::new(&path);
    o.dimension = 128;
    let err = SqliteStore::open(o).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("vectors.dimension"));
}

#[test]
fn urls() {
    assert_eq!(
        SqliteOptions::from_url("records.url", "sqlite://data/app.db")
            .unwrap()
            .path,
        std::path::PathBuf::from("data/app.db")
    );
    assert_eq!(
        SqliteOptions::from_url("records.url", "sqlite:///var/lib/app.db")
            .unwrap()
            .path,
        std::path::PathBuf::from("/var/lib/app.db")
    );
    for bad in [
        "sqlite://",
        "sqlite://:memory:",
        "sqlite://a.db?mode=x",
        "postgres://x",
    ] {
        let e = SqliteOptions::from_url("records.url", bad).unwrap_err();
        assert_eq!(e.field(), Some("records.url"), "{bad}");
    }
}
