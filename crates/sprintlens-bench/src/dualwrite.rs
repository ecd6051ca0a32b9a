//! `bench dual-write`: write latency of `[migration] mode = "dual-write"` (SQLite primary with its
//! outbox, PostgreSQL secondary delivered by the reconciler) against `single` on SQLite, in one run,
//! interleaved in rounds so drift of the machine hits both alike. Also run at the end of
//! `bench migrate`.

use std::time::{Duration, Instant};

use anyhow::Result;
use sprintlens::Storage;
use sprintlens::core::WorkspaceId;
use sprintlens_testkit::generate;

use crate::percentile;
use crate::postgres::{env, fresh_db};

fn config(text: &str) -> Result<sprintlens::StorageConfig> {
    Ok(sprintlens::config::from_parts(
        Some(text),
        Vec::<(String, String)>::new(),
    )?)
}

/// `writes` single-record upserts per mode, one caller, in rounds of 250.
pub async fn run(writes: usize) -> Result<()> {
    let env = env()?;
    let dir = tempfile::tempdir_in(std::env::var("SPRINTLENS_BENCH_DIR").unwrap_or(".".into()))?;
    let (app, admin) = fresh_db(&env, "sprintlens_bench_dualwrite").await?;
    let t = dir.path();
    let target = t.join("target.toml");
    std::fs::write(
        &target,
        format!(
            "[records]\nurl = \"{app}\"\nadmin_url = \"{admin}\"\n[vectors]\nurl = \"{app}\"\n\
             [analytics]\nurl = \"sqlite://{d}/target/a.db\"\n[blobs]\nurl = \"file://{d}/target/blobs\"\n\
             [cache]\nurl = \"memory://\"\n[sessions]\nurl = \"memory://\"\n",
            d = t.display()
        ),
    )?;
    Storage::open(config(&std::fs::read_to_string(&target)?)?)
        .await?
        .apply_schema()
        .await?;
    let single = Storage::open(config(&format!(
        "data_dir = \"{}\"\n",
        t.join("single").display()
    ))?)
    .await?;
    let dual = Storage::open(config(&format!(
        "data_dir = \"{}\"\n[migration]\nmode = \"dual-write\"\ntarget = \"{}\"\n",
        t.join("dual").display(),
        target.display()
    ))?)
    .await?;
    let ws = WorkspaceId::new();
    let mut lat: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let round = 250;
    let mut i = 0;
    while lat[0].len() < writes {
        for (m, storage) in [&single, &dual].into_iter().enumerate() {
            for _ in 0..round {
                let p = generate::project(ws, &format!("p{i}"));
                i += 1;
                let start = Instant::now();
                storage.records().upsert(&[p]).await?;
                lat[m].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let migration = dual.migration().expect("dual-write");
    let start = Instant::now();
    migration
        .reconciler()
        .drain(Duration::from_secs(60))
        .await?;
    let lag = start.elapsed();
    for l in &mut lat {
        l.sort_by(f64::total_cmp);
    }
    let (s50, s99) = (percentile(&lat[0], 0.5), percentile(&lat[0], 0.99));
    let (d50, d99) = (percentile(&lat[1], 0.5), percentile(&lat[1], 0.99));
    println!(
        "dual-write vs single ({} writes each, one caller, SQLite synchronous=full):\n\
         | mode | p50 ms | p99 ms |\n|---|---|---|\n\
         | single (SQLite) | {s50:.3} | {s99:.3} |\n\
         | dual-write (SQLite + outbox → PostgreSQL) | {d50:.3} | {d99:.3} |\n\
         | ratio | {:.2}× | {:.2}× |\n\
         delivered to PostgreSQL: {} entries, outbox drained {:.0} ms after the last write, reconciler {:?}",
        lat[0].len(),
        d50 / s50,
        d99 / s99,
        migration.reconciler().stats().delivered,
        lag.as_secs_f64() * 1e3,
        migration.reconciler().stats(),
    );
    Ok(())
}
