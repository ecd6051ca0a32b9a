//! Developer tooling for sprintlens: `cargo xtask <command>`.
//!
//! - `test`   — format check, `services up`, clippy (warnings are errors) and the whole workspace's
//!   tests against the real services.
//! - `services up|status|down|env` — the local stack (PostgreSQL, Redis, ClickHouse, S3) on loopback.
//! - `tidy`   — the repository checks (also run by `test`, as `cargo test -p xtask`).
//! - `bench`  — benchmarks against the references the issues name (`bench sqlite-vectors`).
//! - `demo`   — `sprintlens demo` in release mode.
//! - `migrate plan|run|status|verify|rollback …` — `sprintlens migrate …` in release mode (the
//!   arguments are passed on; the CWD is the workspace root, so give absolute paths).

mod services;
mod tidy;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match args.first().map(String::as_str) {
        Some("test") => test(&sh, &args[1..]),
        Some("services") => services::main(&project_root(), &args[1..]),
        Some("tidy") => {
            cmd!(sh, "cargo test -p xtask --quiet").run()?;
            Ok(())
        }
        Some("bench") => {
            let rest = &args[1..];
            // Server benchmarks run against the local stack, with psql as the plain-SQL reference.
            let mut _env = Vec::new();
            if rest.first().is_some_and(|b| {
                b.starts_with("postgres")
                    || [
                        "redis",
                        "objects",
                        "clickhouse",
                        "migrate",
                        "migrate-vectors",
                        "migrate-events",
                        "dual-write",
                    ]
                    .contains(&b.as_str())
            }) {
                // The migration benchmark's peer: pgloader (Debian), installed on first use.
                if rest.first().is_some_and(|b| b == "migrate") {
                    services::install_debian(&[("pgloader", "pgloader")])?;
                }
                let stack = services::Stack::new(&project_root());
                stack.up()?;
                for (k, v) in stack.env() {
                    _env.push(sh.push_env(k, v));
                }
                let psql = stack.pg_bin()?.join("psql");
                _env.push(sh.push_env("SPRINTLENS_BENCH_PSQL", psql));
            }
            cmd!(
                sh,
                "cargo run --release --locked -p sprintlens-bench -- {rest...}"
            )
            .run()?;
            Ok(())
        }
        Some("demo") => {
            let rest = &args[1..];
            cmd!(
                sh,
                "cargo run --release -p sprintlens-cli -- demo {rest...}"
            )
            .run()?;
            Ok(())
        }
        Some("migrate") => {
            let rest = &args[1..];
            cmd!(
                sh,
                "cargo run --release --locked -p sprintlens-cli -- migrate {rest...}"
            )
            .run()?;
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask <test|services|tidy|bench|demo|migrate> [args]");
            bail!("unknown command {:?}", args.first())
        }
    }
}

fn test(sh: &Shell, extra: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    cmd!(sh, "cargo fmt --all --check").run()?;
    // The real servers every adapter is proven against; their URLs go to the tests.
    let stack = services::Stack::new(&project_root());
    stack.up()?;
    let _env: Vec<_> = stack
        .env()
        .into_iter()
        .map(|(k, v)| sh.push_env(k, v))
        .collect();
    let _require = sh.push_env("SPRINTLENS_TEST_REQUIRE_SERVICES", "1");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    {
        // Every public item's docs build, links included.
        let _docs = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        cmd!(sh, "cargo doc --workspace --no-deps --locked").run()?;
    }
    cmd!(sh, "cargo test --workspace --locked {extra...}").run()?;
    eprintln!(
        "xtask test: all green in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The workspace root (the parent of this crate's folder).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
