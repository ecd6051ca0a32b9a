//! `postgres-vectors` and `postgres-bulk`: the PostgreSQL adapter against plain SQL through psql on the
//! same server, in the same run.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use sprintlens_core::{
    EmbeddingKind, RecordId, RecordStore, Timestamp, VectorEntry, VectorIndex, VectorQuery,
    WorkspaceId,
};
use sprintlens_postgres::{PgOptions, PgStore};
use sprintlens_testkit::generate::{self, Rng, exact_top_k, random_embedding};

use crate::percentile;

pub(crate) struct Env {
    pub(crate) app: String,
    pub(crate) admin: String,
    pub(crate) psql: String,
}

pub(crate) fn env() -> Result<Env> {
    let get = |k: &str| {
        std::env::var(k)
            .with_context(|| format!("{k} is not set (run through `cargo xtask bench`)"))
    };
    Ok(Env {
        app: get("SPRINTLENS_TEST_POSTGRES_URL")?,
        admin: get("SPRINTLENS_TEST_POSTGRES_ADMIN_URL")?,
        psql: get("SPRINTLENS_BENCH_PSQL")?,
    })
}

fn with_db(url: &str, db: &str) -> String {
    format!(
        "{}/{db}",
        url.rsplit_once('/').map(|(h, _)| h).unwrap_or(url)
    )
}

pub(crate) async fn fresh_db(env: &Env, name: &str) -> Result<(String, String)> {
    let admin = sqlx::PgPool::connect(&env.admin).await?;
    // An autovacuum worker on the previous run's database cannot be terminated by a non-superuser:
    // wait for it to finish.
    let mut tries = 0;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        {
            Ok(_) => break,
            Err(e) if tries < 60 && e.to_string().contains("permission denied to terminate") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok((with_db(&env.app, name), with_db(&env.admin, name)))
}

/// Waits (up to two minutes) until no autovacuum worker runs on the server, so a timed step does not
/// share the machine with the vacuum of an earlier step's tables.
pub(crate) async fn quiesce(env: &Env) -> Result<()> {
    let t = Instant::now();
    let admin = sqlx::PgPool::connect(&env.admin).await?;
    while t.elapsed().as_secs() < 120 {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_one(&admin)
        .await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    admin.close().await;
    Ok(())
}

/// The server's current WAL insert position (`pg_current_wal_lsn()`), as text.
pub(crate) fn wal_lsn(env: &Env, url: &str) -> Result<String> {
    Ok(psql(env, url, "\\t on\nSELECT pg_current_wal_lsn();\n")?
        .trim()
        .to_string())
}

/// The WAL the server wrote since `from` (a [`wal_lsn`]), as "WAL: N MB (from … to …)".
pub(crate) fn wal_since(env: &Env, url: &str, from: &str) -> Result<String> {
    let to = wal_lsn(env, url)?;
    let bytes = psql(
        env,
        url,
        &format!("\\t on\nSELECT pg_wal_lsn_diff('{to}', '{from}')::bigint;\n"),
    )?;
    let mb = bytes.trim().parse::<f64>().unwrap_or(f64::NAN) / 1e6;
    Ok(format!("WAL: {mb:.0} MB (from {from} to {to})"))
}

/// [`psql`], timed: the seconds it took.
pub(crate) fn psql_elapsed(env: &Env, url: &str, input: &str) -> Result<f64> {
    let t = Instant::now();
    psql(env, url, input)?;
    Ok(t.elapsed().as_secs_f64())
}

pub(crate) fn psql(env: &Env, url: &str, input: &str) -> Result<String> {
    let mut child = Command::new(&env.psql)
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn vector_literal(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(","))
}

pub async fn vectors(n: usize, clients: &[usize]) -> Result<()> {
    const DIM: usize = 384;
    const K: usize = 10;
    const QUERIES: usize = 200;
    let env = env()?;
    let (app, admin) = fresh_db(&env, "sl_bench_vectors").await?;
    let mut o = PgOptions::new(app.clone());
    o.dimension = DIM;
    o.pool_size = 16;
    let store = Arc::new(PgStore::open(o)?);
    store.apply_schema(&admin).await?;
    let mut rng = Rng::new(7);
    let ws = WorkspaceId::new();
    // Embeddings of real text cluster by topic; uniformly random vectors (no structure at all) are a
    // degenerate worst case for any approximate index. 1,000 topics, each vector its topic plus noise.
    let centroids: Vec<_> = (0..1_000)
        .map(|_| random_embedding(&mut rng, DIM))
        .collect();
    let near = |rng: &mut Rng| {
        let c = rng.pick(&centroids).as_slice().to_vec();
        let noise = random_embedding(rng, DIM);
        let v: Vec<f32> = c
            .iter()
            .zip(noise.as_slice())
            .map(|(a, b)| a + 0.6 * b)
            .collect();
        sprintlens_core::Embedding::new(v).unwrap().normalized()
    };
    let entries: Vec<VectorEntry> = (0..n)
        .map(|_| VectorEntry {
            workspace: ws,
            project: None,
            kind: EmbeddingKind::Message,
            id: RecordId::new(),
            embedding: near(&mut rng),
            updated_at: Timestamp::now(),
        })
        .collect();
    let t = Instant::now();
    for chunk in entries.chunks(5_000) {
        VectorIndex::upsert(&*store, chunk).await?;
    }
    let load = t.elapsed().as_secs_f64();
    psql(&env, &admin, "VACUUM ANALYZE embeddings;")?;
    let queries: Vec<_> = (0..QUERIES).map(|_| near(&mut rng)).collect();
    let truth: Vec<Vec<RecordId>> = queries
        .iter()
        .map(|q| exact_top_k(&entries, q, K))
        .collect();
    println!(
        "loaded {n} × {DIM} vectors through the adapter in {load:.1} s ({:.0} vectors/s)",
        n as f64 / load
    );
    println!(
        "| ef_search | clients | sprintlens p50 / p95 | psql p50 / p95 (same SQL) | p50 overhead | recall@10 |"
    );
    println!("|---|---|---|---|---|---|");
    for ef in [40u32, 100, 200] {
        let mut o = PgOptions::new(app.clone());
        o.dimension = DIM;
        o.pool_size = 16;
        o.ef_search = ef;
        let store = Arc::new(PgStore::open(o)?);
        for &c in clients {
            // Ours: c tasks sharing the queries.
            let found = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let t = Instant::now();
            for w in 0..c {
                let store = store.clone();
                let queries = queries.clone();
                let truth = truth.clone();
                let found = found.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for (i, q) in queries.iter().enumerate().filter(|(i, _)| i % c == w) {
                        let t = Instant::now();
                        let hits = store
                            .search(&VectorQuery {
                                workspace: ws,
                                project: None,
                                kinds: vec![],
                                embedding: q.clone(),
                                k: K,
                            })
                            .await
                            .unwrap();
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        found.fetch_add(
                            hits.iter().filter(|h| truth[i].contains(&h.id)).count(),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    lat
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await?);
            }
            let _wall = t.elapsed();
            lat.sort_by(f64::total_cmp);
            let recall =
                found.load(std::sync::atomic::Ordering::Relaxed) as f64 / (QUERIES * K) as f64;
            // Reference: the same statements through psql (c sessions in parallel), timed by psql.
            let mut scripts = vec![String::new(); c];
            for (i, q) in queries.iter().enumerate() {
                let s = &mut scripts[i % c];
                s.push_str(&format!(
                "BEGIN; SELECT set_config('sprintlens.workspace', '{ws}', true), set_config('hnsw.ef_search', '{ef}', true), set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.max_scan_tuples', '100000', true) \\g /dev/null\n\
                 SELECT kind, id, project, (embedding <=> '{v}'::vector) AS distance FROM embeddings WHERE workspace = '{ws}' ORDER BY embedding <=> '{v}'::vector LIMIT {K} \\g /dev/null\nCOMMIT;\n",
                v = vector_literal(q.as_slice())
            ));
            }
            let handles: Vec<_> = scripts
                .into_iter()
                .map(|s| {
                    let psql = env.psql.clone();
                    let url = app.clone();
                    std::thread::spawn(move || -> Result<Vec<f64>> {
                        let e = Env {
                            app: String::new(),
                            admin: String::new(),
                            psql,
                        };
                        let out = psql_timed(&e, &url, &s)?;
                        Ok(out)
                    })
                })
                .collect();
            let mut plat = Vec::new();
            for h in handles {
                plat.extend(h.join().expect("psql thread")?);
            }
            plat.sort_by(f64::total_cmp);
            let (o50, o95, p50, p95) = (
                percentile(&lat, 0.5),
                percentile(&lat, 0.95),
                percentile(&plat, 0.5),
                percentile(&plat, 0.95),
            );
            println!(
                "| {ef} | {c} | {o50:.2} / {o95:.2} ms | {p50:.2} / {p95:.2} ms | {:+.0}% | {recall:.3} |",
                (o50 / p50 - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

/// psql's own `\timing` of each transaction (BEGIN + settings + query + COMMIT), summed per query.
fn psql_timed(env: &Env, url: &str, script: &str) -> Result<Vec<f64>> {
    let out = psql(env, url, &format!("\\timing on\n{script}"))?;
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|v| v.parse().ok())
        .collect();
    // Four timed statements per query: BEGIN, settings, search, COMMIT.
    Ok(times.chunks(4).map(|c| c.iter().sum()).collect())
}

pub async fn bulk(n: usize, batch: usize) -> Result<()> {
    let env = env()?;
    let (app, admin) = fresh_db(&env, "sl_bench_bulk").await?;
    let store = PgStore::open(PgOptions::new(app.clone()))?;
    store.apply_schema(&admin).await?;
    let ws = WorkspaceId::new();
    let p = generate::project(ws, "bulk");
    let records: Vec<_> = (0..n)
        .map(|i| generate::agent(ws, p.id, &format!("agent-{i}")))
        .collect();
    // The reference: the same rows as CSV, COPY'd by psql into an identical table (same indexes,
    // no row-level security, no conflict handling): the ceiling.
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("rows.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        for r in &records {
            let body = serde_json::to_string(&r.body)?.replace('"', "\"\"");
            writeln!(
                f,
                "{},{},agent,{},,{},{},{},{},false,\"{}\"",
                r.id,
                r.workspace,
                p.id,
                r.body.name().unwrap_or_default(),
                r.body.unique_key().unwrap_or_default(),
                r.created_at.to_rfc3339(),
                r.updated_at.to_rfc3339(),
                body
            )?;
        }
    }
    psql(
        &env,
        &admin,
        "CREATE TABLE records_ref (LIKE records INCLUDING ALL);",
    )?;
    let ceiling = psql_elapsed(
        &env,
        &admin,
        &format!(
            "\\copy records_ref (id, workspace, kind, project, parent, name, unique_key, created_at, updated_at, deleted, body) FROM '{}' (FORMAT csv)\n",
            csv.display()
        ),
    )?;
    let t = Instant::now();
    let mut written = 0;
    for chunk in records.chunks(batch) {
        written += RecordStore::upsert(&store, chunk).await?.written;
    }
    let ours = t.elapsed().as_secs_f64();
    anyhow::ensure!(written == n as u64, "wrote {written} of {n}");
    let t = Instant::now();
    let mut skipped = 0;
    for chunk in records.chunks(batch) {
        skipped += RecordStore::upsert(&store, chunk).await?.skipped;
    }
    let rerun = t.elapsed().as_secs_f64();
    println!(
        "| rows | psql COPY (ceiling) | sprintlens upsert (COPY path) | ratio | re-run (all skipped) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {n} | {ceiling:.1} s ({:.0} rows/s) | {ours:.1} s ({:.0} rows/s) | {:.2}× | {rerun:.1} s, {skipped} skipped |",
        n as f64 / ceiling,
        n as f64 / ours,
        ceiling / ours
    );
    Ok(())
}
