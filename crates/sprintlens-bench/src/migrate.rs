//! `bench migrate`: SQLite → PostgreSQL backfill of records through `sprintlens migrate run`, against
//! pgloader migrating the same SQLite file to the same server with its default settings, and against
//! psql's binary `\copy` of the same rows into an identical table (the ceiling), in one run.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use sprintlens::core::{RecordId, RecordStore, Role, WorkspaceId};
use sprintlens_testkit::generate::{self, Rng};

use crate::peak_rss_mib;
use crate::postgres::{env, fresh_db, psql, psql_elapsed, quiesce, wal_lsn, wal_since};

/// Current resident memory split into anonymous (heap) and file-backed (mmap'd SQLite pages), MiB.
fn rss_split() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (get("RssAnon:"), get("RssFile:"))
}

fn config(text: &str) -> Result<sprintlens::StorageConfig> {
    Ok(sprintlens::config::from_parts(
        Some(text),
        Vec::<(String, String)>::new(),
    )?)
}

/// A fresh database `db` on the stack and a target configuration for it (records and vectors on
/// PostgreSQL with the application, owner and operator roles; local files under `side` for the rest):
/// `(admin URL, operator URL, configuration text)`.
async fn target_db(
    env: &crate::postgres::Env,
    db: &str,
    side: &std::path::Path,
    dimension: Option<usize>,
) -> Result<(String, String, String)> {
    let (app, admin) = fresh_db(env, db).await?;
    let operator = std::env::var("SPRINTLENS_TEST_POSTGRES_OPERATOR_URL")
        .context("SPRINTLENS_TEST_POSTGRES_OPERATOR_URL (run through `cargo xtask bench`)")?;
    let operator = format!(
        "{}/{db}",
        operator.rsplit_once('/').context("operator URL")?.0
    );
    let dim = dimension
        .map(|d| format!("dimension = {d}\n"))
        .unwrap_or_default();
    let text = format!(
        "[records]\nurl = \"{app}\"\nadmin_url = \"{admin}\"\noperator_url = \"{operator}\"\n[vectors]\nurl = \"{app}\"\n{dim}[analytics]\nurl = \"sqlite://{s}/t.db\"\n[blobs]\nurl = \"file://{s}/tblobs\"\n[cache]\nurl = \"memory://\"\n[sessions]\nurl = \"memory://\"\n[embedder]\nurl = \"hash://\"\n{dim}",
        s = side.display()
    );
    Ok((admin, operator, text))
}

/// Dumps every row of `table` (as the operator role sees them: all workspaces) to `path` in
/// PostgreSQL's binary COPY format, for a ceiling to load.
fn dump_binary(
    env: &crate::postgres::Env,
    operator: &str,
    table: &str,
    path: &std::path::Path,
) -> Result<()> {
    psql(
        env,
        operator,
        &format!(
            "\\copy (SELECT * FROM {table}) TO '{}' (FORMAT binary)\n",
            path.display()
        ),
    )?;
    Ok(())
}

/// Writes the source: `n` messages over three workspaces, unicode and NULLs, through the SQLite adapter.
async fn write_source(source_config: &str, n: usize) -> Result<()> {
    let source = sprintlens::Storage::open(config(source_config)?).await?;
    let mut rng = Rng::new(1);
    for w in 0..3 {
        let ws = WorkspaceId::new();
        let p = generate::project(ws, &format!("p{w}"));
        let pid = p.id;
        let convs: Vec<_> = (0..100)
            .map(|i| generate::conversation(ws, pid, None, &format!("c{i} ünï")))
            .collect();
        let cids: Vec<RecordId> = convs.iter().map(|c| c.id).collect();
        source.records().upsert(&[p]).await?;
        source.records().upsert(&convs).await?;
        let mut batch = Vec::with_capacity(1000);
        for i in 0..n / 3 {
            let mut m = generate::message(
                ws,
                pid,
                cids[i % cids.len()],
                if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                &generate::sentence(&mut rng, 20),
            );
            if i % 5 == 0
                && let sprintlens::core::RecordBody::Message(b) = &mut m.body
            {
                b.input_tokens = None;
            }
            batch.push(m);
            if batch.len() == 1000 {
                source.records().upsert(&batch).await?;
                batch.clear();
            }
        }
        source.records().upsert(&batch).await?;
    }
    drop(source);
    Ok(())
}

/// Runs the benchmark with `n` message records (plus their projects and conversations), copied in
/// batches of `batch` records, once per `--parallel` in `parallels` (each into a fresh database).
pub async fn run(n: usize, batch: usize, parallels: &[usize], rounds: usize) -> Result<()> {
    let env = env()?;
    let dir = tempfile::tempdir_in(std::env::var("SPRINTLENS_BENCH_DIR").unwrap_or(".".into()))?;
    // `SPRINTLENS_BENCH_SOURCE=FILE` keeps the generated source between runs (written when missing).
    let kept = std::env::var_os("SPRINTLENS_BENCH_SOURCE").map(std::path::PathBuf::from);
    let src = kept.clone().unwrap_or_else(|| dir.path().join("source.db"));
    let side = dir.path().join("side");
    let embedded = |records: &str| {
        format!(
            "[records]\nurl = \"{records}\"\n[vectors]\nurl = \"{records}\"\n[analytics]\nurl = \"sqlite://{s}/a.db\"\n[blobs]\nurl = \"file://{s}/blobs\"\n[cache]\nurl = \"memory://\"\n[sessions]\nurl = \"memory://\"\n[embedder]\nurl = \"hash://\"\n",
            s = side.display()
        )
    };

    // The source: n messages over three workspaces, unicode and NULLs, written by the SQLite adapter.
    let t = Instant::now();
    if kept.is_none() || !src.exists() {
        write_source(&embedded(&format!("sqlite://{}", src.display())), n).await?;
    }
    let size = std::fs::metadata(&src)?.len();
    println!(
        "source: {} records in {} ({:.0} MB), ready in {:.1} s",
        n + 303,
        src.display(),
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Every step reads the source from the page cache: the first one would otherwise pay for
    // reading a file the earlier benchmarks pushed out of it (2.1 s before the first kind was done,
    // against 0.4 s warm), and pgloader, which runs later, would not.
    let t = Instant::now();
    std::io::copy(&mut std::fs::File::open(&src)?, &mut std::io::sink())?;
    println!(
        "source read once into the page cache in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Ours: `sprintlens migrate run` (records, embeddings, events) into a fresh database, once per
    // `--parallel`; then pgloader (8 GiB heap) on the same file and server: `rounds` times, so the
    // ratio is read over several runs of both (each varies by ±10-15 % from run to run here).
    let source =
        sprintlens::Storage::open(config(&embedded(&format!("sqlite://{}", src.display())))?)
            .await?;
    let mut timings: Vec<(usize, usize, f64)> = Vec::new();
    let mut loaders: Vec<Option<f64>> = Vec::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let mut first = None;
        for &parallel in parallels {
            let (admin, operator, target_text) =
                target_db(&env, &format!("sl_bench_migrate_p{parallel}"), &side, None).await?;
            let target = sprintlens::Storage::open(config(&target_text)?).await?;
            target.apply_schema().await?;
            let rss_before = peak_rss_mib();
            quiesce(&env).await?;
            let wal = wal_lsn(&env, &admin)?;
            let cpu = crate::CpuTimes::now();
            let t = Instant::now();
            let reports = sprintlens::migrate::run(
                &source,
                &target,
                &sprintlens::migrate::RunOptions {
                    batch,
                    parallel,
                    ..Default::default()
                },
                |p| {
                    if p.done {
                        println!("  {} done at {:.1} s", p.kind, t.elapsed().as_secs_f64());
                    }
                },
            )
            .await?;
            let ours = t.elapsed().as_secs_f64();
            let rows: u64 = reports.iter().map(|r| r.rows).sum();
            let (anon, file) = rss_split();
            println!(
                "sprintlens migrate run --parallel {parallel}: {rows} rows in {ours:.1} s = {:.0} rows/s, peak RSS {:.0} MiB (before the run: {rss_before:.0} MiB; after it: {anon:.0} MiB heap, {file:.0} MiB file-backed, i.e. SQLite's mmap)",
                rows as f64 / ours,
                peak_rss_mib()
            );
            println!("  {}; {}", cpu.since(), wal_since(&env, &admin, &wal)?);
            let t = Instant::now();
            let verify = sprintlens::migrate::verify(&source, &target, &[], &[]).await?;
            println!(
                "verify: {} in {:.1} s",
                if verify.ok { "identical" } else { "DIFFERENT" },
                t.elapsed().as_secs_f64()
            );
            // No autovacuum of this table during the later steps.
            psql(
                &env,
                &admin,
                "ALTER TABLE records SET (autovacuum_enabled = off);\n",
            )?;
            timings.push((round, parallel, ours));
            first.get_or_insert((admin, operator));
        }
        let (admin, operator) = first.context("no --parallel to run")?;
        if round == 1 {
            let round_one: Vec<(usize, f64)> = timings.iter().map(|&(_, p, t)| (p, t)).collect();
            ceilings(&env, &dir, &admin, &operator, n, &round_one).await?;
            // pgloader at its default settings, once: it runs out of heap on large files.
            pgloader(&env, &src, n, "defaults", &[]).await?;
        }
        loaders.push(
            pgloader(
                &env,
                &src,
                n,
                "8 GiB heap",
                &["--dynamic-space-size", "8192"],
            )
            .await?,
        );
        for &(r, parallel, ours) in timings.iter().filter(|t| t.0 == round) {
            match loaders[r - 1] {
                Some(pgl) => println!(
                    "ratios (round {r}): sprintlens --parallel {parallel} {:.2}× pgloader (8 GiB heap)",
                    pgl / ours
                ),
                None => println!("ratios (round {r}): pgloader (8 GiB heap) did not finish"),
            }
        }
    }
    summary(parallels, &timings, &loaders);
    Ok(())
}

/// The ceilings, timed once on the rows of our first target (`admin`/`operator` URLs of its
/// database): psql's binary `\copy` of the same rows into an identical table, and into a
/// primary-key-only table followed by the same index builds. Prints each against `timings`
/// (`--parallel`, seconds).
async fn ceilings(
    env: &crate::postgres::Env,
    dir: &tempfile::TempDir,
    admin: &str,
    operator: &str,
    n: usize,
    timings: &[(usize, f64)],
) -> Result<()> {
    // Ceiling: the same rows, dumped in PostgreSQL's binary COPY format, loaded by psql into an
    // identical table (same indexes, no row-level security, no conflict handling).
    let bin = dir.path().join("records.bin");
    dump_binary(env, operator, "records", &bin)?;
    psql(
        env,
        admin,
        "CREATE TABLE records_ref (LIKE records INCLUDING ALL);\n",
    )?;
    quiesce(env).await?;
    let ceiling = psql_elapsed(
        env,
        admin,
        &format!(
            "\\copy records_ref FROM '{}' (FORMAT binary)\n",
            bin.display()
        ),
    )?;
    println!(
        "psql binary \\copy of the same {} records: {ceiling:.1} s = {:.0} rows/s",
        n + 303,
        (n + 303) as f64 / ceiling
    );

    // The bulk-load ceiling: the same binary \copy into a table with only its primary key, then the
    // same secondary indexes built (what our run does into an empty target), timed together.
    psql(
        env,
        admin,
        "CREATE TABLE records_bulk (LIKE records INCLUDING DEFAULTS); ALTER TABLE records_bulk ADD PRIMARY KEY (id);\n",
    )?;
    let mut script = format!(
        "SET maintenance_work_mem = '256MB';\n\\copy records_bulk FROM '{}' (FORMAT binary)\n",
        bin.display()
    );
    for (name, unique, definition) in sprintlens_postgres::RECORD_INDEXES {
        script += &format!(
            "CREATE {}INDEX {name}_bulk {};\n",
            if *unique { "UNIQUE " } else { "" },
            definition.replacen("ON records ", "ON records_bulk ", 1)
        );
    }
    quiesce(env).await?;
    let bulk = psql_elapsed(env, admin, &script)?;
    println!(
        "psql binary \\copy into a primary-key-only table, then the same indexes built: {bulk:.1} s = {:.0} rows/s (ours {} of it)",
        (n + 303) as f64 / bulk,
        timings
            .iter()
            .map(|(p, ours)| format!("{:.2}× at --parallel {p}", bulk / ours))
            .collect::<Vec<_>>()
            .join(", ")
    );

    for (parallel, ours) in timings {
        println!(
            "ratios: sprintlens --parallel {parallel} {:.2}× the binary COPY ceiling",
            ceiling / ours
        );
    }
    Ok(())
}

/// Runs pgloader with `args` from the SQLite file `src` into a fresh database; its seconds when it
/// finished (it prints what it did either way).
async fn pgloader(
    env: &crate::postgres::Env,
    src: &std::path::Path,
    n: usize,
    label: &str,
    args: &[&str],
) -> Result<Option<f64>> {
    let (_, pgl_admin) = fresh_db(env, "sl_bench_pgloader").await?;
    quiesce(env).await?;
    let wal = wal_lsn(env, &pgl_admin)?;
    let cpu = crate::CpuTimes::now();
    let t = Instant::now();
    let out = Command::new("pgloader")
        .args(args)
        .arg(format!("sqlite://{}", src.display()))
        .arg(&pgl_admin)
        .output()
        .context("running pgloader (installed by `cargo xtask bench migrate`)")?;
    let pgl = t.elapsed().as_secs_f64();
    println!(
        "  pgloader ({label}) {}; {}",
        cpu.since(),
        wal_since(env, &pgl_admin, &wal)?
    );
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        println!(
            "pgloader ({label}) FAILED after {pgl:.1} s (exit {:?}); last lines:\n  {}",
            out.status.code(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        );
        return Ok(None);
    }
    let types = psql(
        env,
        &pgl_admin,
        "SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_name = 'records' ORDER BY ordinal_position;\n",
    )
    .unwrap_or_default();
    println!(
        "pgloader ({label}): {pgl:.1} s = {:.0} rows/s; records columns: {}",
        (n + 303) as f64 / pgl,
        types.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    Ok(Some(pgl))
}

/// Per `--parallel`: ours ÷ pgloader in each round, and their median.
fn summary(parallels: &[usize], timings: &[(usize, usize, f64)], loaders: &[Option<f64>]) {
    for &parallel in parallels {
        let mut ratios: Vec<f64> = timings
            .iter()
            .filter(|t| t.1 == parallel)
            .filter_map(|&(round, _, ours)| loaders[round - 1].map(|pgl| pgl / ours))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let each = ratios
            .iter()
            .map(|r| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(", ");
        ratios.sort_by(f64::total_cmp);
        println!(
            "summary: sprintlens --parallel {parallel} ÷ pgloader (8 GiB heap) over {} rounds: {each}; median {:.2}×",
            ratios.len(),
            ratios[ratios.len() / 2]
        );
    }
}

/// `bench migrate-vectors`: `n` embeddings × 384 (clustered, as embeddings of text are) backfilled by
/// `sprintlens migrate run` into a fresh PostgreSQL target with the HNSW index deferred (the default),
/// then with it kept (`--keep-indexes`: the graph maintained row by row), against psql's binary
/// `\copy` of the same rows into a bare table followed by the same `CREATE INDEX` (the ceiling).
pub async fn vectors(n: usize) -> Result<()> {
    const DIM: usize = 384;
    let env = env()?;
    let dir = tempfile::tempdir_in(std::env::var("SPRINTLENS_BENCH_DIR").unwrap_or(".".into()))?;
    let side = dir.path().join("side");
    let src = dir.path().join("vectors.db");
    let source_text = format!(
        "[records]\nurl = \"sqlite://{src}\"\n[vectors]\nurl = \"sqlite://{src}\"\ndimension = {DIM}\n[analytics]\nurl = \"sqlite://{s}/a.db\"\n[blobs]\nurl = \"file://{s}/blobs\"\n[cache]\nurl = \"memory://\"\n[sessions]\nurl = \"memory://\"\n[embedder]\nurl = \"hash://\"\ndimension = {DIM}\n",
        src = src.display(),
        s = side.display()
    );
    let source = sprintlens::Storage::open(config(&source_text)?).await?;
    let mut rng = Rng::new(3);
    let centroids: Vec<_> = (0..1_000)
        .map(|_| generate::random_embedding(&mut rng, DIM))
        .collect();
    let ws = WorkspaceId::new();
    let mut batch = Vec::new();
    for _ in 0..n {
        let c = rng.pick(&centroids).as_slice().to_vec();
        let noise = generate::random_embedding(&mut rng, DIM);
        let v: Vec<f32> = c
            .iter()
            .zip(noise.as_slice())
            .map(|(a, b)| a + 0.6 * b)
            .collect();
        batch.push(sprintlens::core::VectorEntry {
            workspace: ws,
            project: None,
            kind: sprintlens::core::EmbeddingKind::Message,
            id: RecordId::new(),
            embedding: sprintlens::core::Embedding::new(v)?.normalized(),
            updated_at: sprintlens::core::Timestamp::now(),
        });
        if batch.len() == 1_000 {
            source.vectors().upsert(&batch).await?;
            batch.clear();
        }
    }
    source.vectors().upsert(&batch).await?;
    println!("source: {n} embeddings × {DIM} in {}", src.display());

    let mut times = Vec::new();
    for (label, defer) in [("HNSW deferred (default)", true), ("HNSW kept", false)] {
        let (admin, operator, target_text) =
            target_db(&env, "sl_bench_vectors_migrate", &side, Some(DIM)).await?;
        let target = sprintlens::Storage::open(config(&target_text)?).await?;
        target.apply_schema().await?;
        let t = Instant::now();
        let mut copied_at = 0.0;
        sprintlens::migrate::run(
            &source,
            &target,
            &sprintlens::migrate::RunOptions {
                defer_indexes: defer,
                ..Default::default()
            },
            |p| {
                if p.kind == "embedding" && p.done {
                    copied_at = t.elapsed().as_secs_f64();
                }
            },
        )
        .await?;
        let took = t.elapsed().as_secs_f64();
        let ok = sprintlens::migrate::verify_embeddings(&source, &target).await?;
        println!(
            "sprintlens migrate run, {label}: {took:.1} s = {:.0} vectors/s (copy done at {copied_at:.1} s); verify: {}",
            n as f64 / took,
            if ok.differences() == 0 {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
        times.push(took);
        if defer {
            // The ceiling: the same rows dumped in binary, loaded by psql into a bare table, then the
            // same HNSW index built.
            let bin = dir.path().join("embeddings.bin");
            dump_binary(&env, &operator, "embeddings", &bin)?;
            psql(
                &env,
                &admin,
                "CREATE TABLE embeddings_ref (LIKE embeddings INCLUDING DEFAULTS); ALTER TABLE embeddings_ref ADD PRIMARY KEY (workspace, kind, id);\n",
            )?;
            let ceiling = psql_elapsed(
                &env,
                &admin,
                &format!(
                    "SET maintenance_work_mem = '256MB';\n\\copy embeddings_ref FROM '{}' (FORMAT binary)\nCREATE INDEX ON embeddings_ref USING hnsw (embedding vector_cosine_ops);\n",
                    bin.display()
                ),
            )?;
            println!(
                "psql binary \\copy into a bare table + the same HNSW index: {ceiling:.1} s (ours {:.2}× of it)",
                ceiling / took
            );
        }
    }
    println!(
        "deferring the HNSW index: {:.1}× faster than maintaining it",
        times[1] / times[0]
    );
    Ok(())
}

/// `bench migrate-events`: `n` analytics events (half evaluation results, half usage, three
/// workspaces, 30 days) backfilled by `sprintlens migrate run` from SQLite into ClickHouse (batches of
/// 1,000, each with its stored-id lookup and deduplication token), then compared by `verify`.
pub async fn events(n: usize) -> Result<()> {
    let env = env()?;
    let dir = tempfile::tempdir_in(std::env::var("SPRINTLENS_BENCH_DIR").unwrap_or(".".into()))?;
    let side = dir.path().join("side");
    let src = dir.path().join("events.db");
    let embedded = format!(
        "[records]\nurl = \"sqlite://{src}\"\n[vectors]\nurl = \"sqlite://{src}\"\n[analytics]\nurl = \"sqlite://{src}\"\n[blobs]\nurl = \"file://{s}/blobs\"\n[cache]\nurl = \"memory://\"\n[sessions]\nurl = \"memory://\"\n[embedder]\nurl = \"hash://\"\n",
        src = src.display(),
        s = side.display()
    );
    let source = sprintlens::Storage::open(config(&embedded)?).await?;
    let mut rng = Rng::new(9);
    let now = sprintlens::core::Timestamp::now();
    let workspaces: Vec<WorkspaceId> = (0..3).map(|_| WorkspaceId::new()).collect();
    let (project, run) = (RecordId::new(), RecordId::new());
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let ws = workspaces[i % 3];
        let at = now.minus(std::time::Duration::from_micros(
            rng.below(30 * 86_400_000_000),
        ));
        batch.push(if i % 2 == 0 {
            generate::eval_result(
                ws,
                project,
                run,
                ["accuracy", "faithfulness"][i / 2 % 2],
                rng.unit(),
                i % 3 != 0,
                rng.below(2_000) as u32,
                sprintlens::core::Cost(rng.below(9_000) as i64),
                at,
            )
        } else {
            generate::usage(
                ws,
                project,
                None,
                "gpt-4o",
                rng.below(3_000),
                rng.below(800),
                sprintlens::core::Cost(rng.below(50_000) as i64),
                rng.below(5_000) as u32,
                at,
            )
        });
        if batch.len() == 10_000 {
            source.analytics().record(&batch).await?;
            batch.clear();
        }
    }
    source.analytics().record(&batch).await?;
    println!(
        "source: {n} events in {} (written in {:.1} s)",
        src.display(),
        t.elapsed().as_secs_f64()
    );

    // The target: records on PostgreSQL (the migration's state), analytics on a fresh ClickHouse
    // database of the stack.
    let (_, _, text) = target_db(&env, "sl_bench_events", &side, None).await?;
    let ch = std::env::var("SPRINTLENS_TEST_CLICKHOUSE_URL")
        .context("SPRINTLENS_TEST_CLICKHOUSE_URL (run through `cargo xtask bench`)")?;
    let ch = format!("{}/sl_bench_events", ch.rsplit_once('/').context("URL")?.0);
    let text = text.replacen(
        &format!("url = \"sqlite://{}/t.db\"", side.display()),
        &format!("url = \"{ch}\""),
        1,
    );
    sprintlens_clickhouse::ClickHouseAnalytics::new(
        sprintlens_clickhouse::ClickHouseOptions::from_config(
            &sprintlens::core::config::AnalyticsConfig::new(
                sprintlens::core::config::BackendUrl::parse("analytics.url", &ch)?,
            ),
        )?,
    )
    .drop_databases_like("sl_bench_events")
    .await?;
    let target = sprintlens::Storage::open(config(&text)?).await?;
    target.apply_schema().await?;
    let t = Instant::now();
    let reports = sprintlens::migrate::run(
        &source,
        &target,
        &sprintlens::migrate::RunOptions::default(),
        |_| {},
    )
    .await?;
    let took = t.elapsed().as_secs_f64();
    let rows: u64 = reports.iter().map(|r| r.rows).sum();
    let t = Instant::now();
    let verify = sprintlens::migrate::verify_events(&source, &target).await?;
    let same = verify.iter().all(|k| k.differences() == 0);
    println!(
        "sprintlens migrate run: {rows} events into ClickHouse in {took:.1} s = {:.0} events/s; verify: {} in {:.1} s",
        rows as f64 / took,
        if same { "identical" } else { "DIFFERENT" },
        t.elapsed().as_secs_f64()
    );
    anyhow::ensure!(same && rows == n as u64, "{verify:?}");
    Ok(())
}
