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
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 of 1 migrations applied"));
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
    let (Ok(app), Ok(admin)) = (
        std::env::var("SPRINTLENS_TEST_POSTGRES_URL"),
        std::env::var("SPRINTLENS_TEST_POSTGRES_ADMIN_URL"),
    ) else {
        assert!(
            std::env::var("SPRINTLENS_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "SPRINTLENS_TEST_REQUIRE_SERVICES=1 but SPRINTLENS_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: no PostgreSQL (run `cargo xtask test`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = std::env::var("SPRINTLENS_TEST_S3_URL")
        .expect("the stack sets the S3 URL with the PostgreSQL ones");
    let run = |args: &[&str]| {
        let out = sprintlens()
            .env("SPRINTLENS_BLOBS_URL", &s3)
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
    assert!(
        schema.contains("postgres") && schema.contains("1 of 1 migrations applied"),
        "{schema}"
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
