//! The `sprintlens` binary, run as a user would.

use std::process::Command;

fn sprintlens() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sprintlens"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SPRINTLENS_") && !k.starts_with("SPRINTLENS_TEST_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn demo_runs_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = sprintlens()
        .args([
            "demo",
            "--conversations",
            "300",
            "--results",
            "600",
            "--usage",
            "300",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "ingested 300 conversations",
        "cache hit",
        "exact_match",
        "cost by model",
        "verified on read",
        "valid: true",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert!(dir.path().join("sprintlens.db").is_file());
    // The second run applies no migration and still works; doctor and schema apply agree.
    let out = sprintlens()
        .args(["schema", "apply", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sqlite") && l.contains(": 5 of 5 migrations applied")),
        "{stdout}"
    );
    let out = sprintlens()
        .args(["doctor", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("all backends ok"), "{stdout}");
}

#[test]
fn bad_config_names_the_key_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sprintlens.toml");
    std::fs::write(&cfg, "[records]\nurl = \"sqlite://x.db\"\npool_sise = 4\n").unwrap();
    let out = sprintlens()
        .current_dir(dir.path())
        .args(["doctor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("records.pool_sise"), "{stderr}");
    assert!(!dir.path().join("x.db").exists());
    assert!(!dir.path().join("sprintlens-data").exists());
}

/// The same demo with records and vectors on the live PostgreSQL of `cargo xtask services up`, and
/// attachments in its S3 bucket.
#[test]
fn demo_runs_with_records_and_vectors_on_postgres() {
    let (Some(app), Some(admin)) = (
        sprintlens_testkit::service_url("SPRINTLENS_TEST_POSTGRES_URL"),
        sprintlens_testkit::service_url("SPRINTLENS_TEST_POSTGRES_ADMIN_URL"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = std::env::var("SPRINTLENS_TEST_S3_URL")
        .expect("the stack sets the S3 URL with the PostgreSQL ones");
    let clickhouse = std::env::var("SPRINTLENS_TEST_CLICKHOUSE_URL")
        .expect("the stack sets the ClickHouse URL with the PostgreSQL ones");
    // A database of its own, created by `schema apply` (those of ended runs dropped first).
    let clickhouse = format!(
        "{}/sprintlens_cli_{}",
        clickhouse.rsplit_once('/').unwrap().0,
        std::process::id()
    );
    {
        use sprintlens::core::config::{AnalyticsConfig, BackendUrl};
        use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
        let cfg = AnalyticsConfig::new(BackendUrl::parse("analytics.url", &clickhouse).unwrap());
        let ch = ClickHouseAnalytics::new(ClickHouseOptions::from_config(&cfg).unwrap());
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(ch.drop_databases_of_ended_processes("sprintlens_cli"))
            .unwrap();
    }
    let run = |args: &[&str]| {
        let out = sprintlens()
            .env("SPRINTLENS_BLOBS_URL", &s3)
            .env("SPRINTLENS_ANALYTICS_URL", &clickhouse)
            .env("SPRINTLENS_RECORDS_URL", &app)
            .env("SPRINTLENS_VECTORS_URL", &app)
            .env("SPRINTLENS_RECORDS_ADMIN_URL", &admin)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let schema = run(&["schema", "apply"]);
    // "<backend> <url>: N of N migrations applied (versions [1, …, N])", every migration known.
    let applied = |backend: &str| {
        schema.lines().any(|l| {
            let Some((_, counts)) = l.split_once(": ") else {
                return false;
            };
            let n: Vec<&str> = counts.split(' ').collect();
            l.starts_with(backend)
                && n.len() > 4
                && n[0] == n[2]
                && n[0] != "0"
                && n[1] == "of"
                && counts.contains(&format!(", {}])", n[0]))
        })
    };
    assert!(applied("postgres"), "{schema}");
    assert!(applied("clickhouse"), "{schema}");
    assert!(
        !schema.contains("sprintlens-clickhouse-dev"),
        "passwords must be redacted:\n{schema}"
    );
    assert!(
        !schema.contains("sprintlens-app-dev"),
        "passwords must be redacted:\n{schema}"
    );
    let demo = run(&[
        "demo",
        "--conversations",
        "200",
        "--results",
        "300",
        "--usage",
        "100",
    ]);
    for needle in [
        "records   -> postgres://",
        "blobs     -> s3://",
        "analytics -> clickhouse://",
        "exact_match",
        "cost by model",
        "ingested 200 conversations",
        "cache hit",
        "verified on read",
    ] {
        assert!(demo.contains(needle), "missing {needle:?} in:\n{demo}");
    }
    assert!(
        !demo.contains("6d1f0c5e9b8a7f6e"),
        "the S3 secret must be redacted:\n{demo}"
    );
    assert!(
        !demo.contains("sprintlens-app-dev"),
        "passwords must be redacted:\n{demo}"
    );
    let doctor = run(&["doctor"]);
    assert!(doctor.contains("all backends ok"), "{doctor}");
}

/// Attaches files through the library, leaves one orphan blob, then runs `sprintlens blobs gc`:
/// a dry run and a run inside the grace period remove nothing; the real run removes exactly the
/// orphan, and every attached file still reads back verified.
fn blobs_gc_case(blobs_url: Option<&str>, content_addressed: bool) {
    use sprintlens::core::{BlobKey, BlobStore, ErrorKind, PutOptions, WorkspaceId};
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![(
        "SPRINTLENS_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    )];
    if let Some(u) = blobs_url {
        env.push(("SPRINTLENS_BLOBS_URL".into(), u.into()));
    }
    if content_addressed {
        env.push(("SPRINTLENS_BLOBS_CONTENT_ADDRESSED".into(), "true".into()));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ws = WorkspaceId::new();
    let big: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let open = || {
        let config = sprintlens::config::from_parts(None, env.clone()).unwrap();
        rt.block_on(sprintlens::Storage::open(config)).unwrap()
    };
    {
        let storage = open();
        let w = storage.workspace(ws);
        rt.block_on(async {
            w.attach_file(None, "notes/a.txt", "hello".into(), Some("text/plain"))
                .await
                .unwrap();
            // The same bytes under a second name: one blob when content-addressed.
            w.attach_file(None, "notes/copy-of-a.txt", "hello".into(), None)
                .await
                .unwrap();
            let chunks: Vec<_> = big
                .chunks(1 << 20)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            w.attach_file_stream(
                None,
                "media/big.bin",
                Box::pin(futures::stream::iter(chunks)),
                None,
            )
            .await
            .unwrap();
            storage
                .blobs()
                .put(
                    ws,
                    &BlobKey::new("orphan.bin").unwrap(),
                    "nobody points here".into(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
        });
    }
    let gc = |extra: &[&str]| -> serde_json::Value {
        let mut c = sprintlens();
        c.envs(env.iter().cloned())
            .args(["blobs", "gc", "--json", "--workspace", &ws.to_string()])
            .args(extra);
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{extra:?}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap()
    };
    let blobs = if content_addressed { 3 } else { 4 };
    let dry = gc(&["--older-than", "0s", "--dry-run"]);
    assert_eq!(dry["blobs_scanned"], blobs, "{dry}");
    assert_eq!(dry["blobs_referenced"], blobs - 1, "{dry}");
    assert_eq!(dry["orphans"], 1, "{dry}");
    assert_eq!(dry["orphan_sample"][0], format!("{ws}/orphan.bin"), "{dry}");
    let young = gc(&["--older-than", "1h"]);
    assert_eq!(
        (
            young["orphans"].clone(),
            young["young_unreferenced"].clone()
        ),
        (0.into(), 1.into())
    );
    let applied = gc(&["--older-than", "0s"]);
    assert_eq!(applied["orphans"], 1, "{applied}");
    let again = gc(&["--older-than", "0s"]);
    assert_eq!(again["orphans"], 0, "{again}");
    assert_eq!(again["blobs_scanned"], blobs - 1, "{again}");
    let storage = open();
    let w = storage.workspace(ws);
    rt.block_on(async {
        assert_eq!(&w.read_file("notes/a.txt").await.unwrap().1[..], b"hello");
        assert_eq!(
            &w.read_file("notes/copy-of-a.txt").await.unwrap().1[..],
            b"hello"
        );
        assert!(w.read_file("media/big.bin").await.unwrap().1 == big);
        let gone = storage
            .blobs()
            .head(ws, &BlobKey::new("orphan.bin").unwrap())
            .await
            .unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn blobs_gc_on_a_local_folder() {
    blobs_gc_case(None, false);
}

#[test]
fn blobs_gc_with_content_addressed_files() {
    blobs_gc_case(None, true);
}

#[test]
fn blobs_gc_on_s3() {
    let Some(s3) = sprintlens_testkit::service_url("SPRINTLENS_TEST_S3_URL") else {
        return;
    };
    blobs_gc_case(Some(&s3), true);
}
