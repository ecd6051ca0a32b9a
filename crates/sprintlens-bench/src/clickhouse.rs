//! `bench clickhouse`: ingest of evaluation results through the ClickHouse adapter against a plain
//! HTTP POST of the same rows in RowBinary to the same endpoint (the ceiling), and against the
//! engine alone reading the same rows from files on this machine, then the port's dashboard queries
//! over what was ingested.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
use sprintlens_core::analytics::{
    BreakdownQuery, Bucket, GroupBy, LatencyQuery, SeriesQuery, TimeRange,
};
use sprintlens_core::config::{AnalyticsConfig, BackendUrl};
use sprintlens_core::{
    Analytics, AnalyticsEvent, Cost, EvalResult, EventId, RecordId, Timestamp, UsageEvent,
    WorkspaceId,
};
use sprintlens_testkit::generate::Rng;

use crate::percentile;

const BATCH: usize = 100_000;
const METRICS: [&str; 5] = [
    "accuracy",
    "faithfulness",
    "relevance",
    "toxicity",
    "exact_match",
];
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];

/// The fixed cast of the generated data.
struct Cast {
    ws: WorkspaceId,
    projects: Vec<RecordId>,
    runs: Vec<RecordId>,
    agents: Vec<RecordId>,
    start: i64,
    span: i64,
}

impl Cast {
    fn new(days: i64) -> Cast {
        let now = Timestamp::now().as_micros();
        Cast {
            ws: WorkspaceId::new(),
            projects: (0..10).map(|_| RecordId::new()).collect(),
            runs: (0..200).map(|_| RecordId::new()).collect(),
            agents: (0..8).map(|_| RecordId::new()).collect(),
            start: now - days * 86_400_000_000,
            span: days * 86_400_000_000,
        }
    }

    /// Batch `b` of `n` total: evaluation results moving forward in time, as a live system sends.
    fn evals(&self, rng: &mut Rng, b: usize, n: usize) -> Vec<AnalyticsEvent> {
        let per = self.span / n as i64;
        (0..BATCH)
            .map(|i| {
                let k = (b * BATCH + i) as i64;
                let run = (k as usize * 200 / n).min(199);
                let score = rng.unit();
                AnalyticsEvent::EvalResult(EvalResult {
                    id: EventId::new(),
                    workspace: self.ws,
                    project: self.projects[run % 10],
                    run: self.runs[run],
                    dataset_item: None,
                    agent: Some(self.agents[run % 8]),
                    metric: METRICS[(k % 5) as usize].to_string(),
                    score,
                    passed: score > 0.25,
                    latency_ms: rng.below(4_000) as u32,
                    cost: Cost(rng.below(40_000) as i64),
                    error: (rng.below(50) == 0).then(|| "timeout".to_string()),
                    created_at: Timestamp::from_micros(self.start + k * per),
                })
            })
            .collect()
    }

    fn usage(&self, rng: &mut Rng, b: usize, n: usize) -> Vec<AnalyticsEvent> {
        let per = self.span / n as i64;
        (0..BATCH)
            .map(|i| {
                let k = (b * BATCH + i) as i64;
                AnalyticsEvent::Usage(UsageEvent {
                    id: EventId::new(),
                    workspace: self.ws,
                    project: self.projects[(k % 10) as usize],
                    agent: Some(self.agents[(k % 8) as usize]),
                    conversation: None,
                    model: MODELS[(k % 4) as usize].to_string(),
                    input_tokens: rng.below(6_000),
                    output_tokens: rng.below(1_500),
                    cost: Cost(rng.below(700_000) as i64),
                    latency_ms: rng.below(9_000) as u32,
                    created_at: Timestamp::from_micros(self.start + k * per),
                })
            })
            .collect()
    }
}

fn uuid_rb(out: &mut Vec<u8>, u: uuid::Uuid) {
    let b = u.as_bytes();
    out.extend_from_slice(&u64::from_be_bytes(b[0..8].try_into().unwrap()).to_le_bytes());
    out.extend_from_slice(&u64::from_be_bytes(b[8..16].try_into().unwrap()).to_le_bytes());
}

fn string_rb(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
}

/// The rows in RowBinary, in the table's column order (what a hand-rolled client would send).
fn row_binary(events: &[AnalyticsEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 110);
    for e in events {
        let AnalyticsEvent::EvalResult(r) = e else {
            continue;
        };
        uuid_rb(&mut out, r.workspace.as_uuid());
        uuid_rb(&mut out, r.project.as_uuid());
        uuid_rb(&mut out, r.run.as_uuid());
        uuid_rb(&mut out, r.id.as_uuid());
        out.push(1); // dataset_item NULL
        match r.agent {
            Some(a) => {
                out.push(0);
                uuid_rb(&mut out, a.as_uuid());
            }
            None => out.push(1),
        }
        string_rb(&mut out, &r.metric);
        out.extend_from_slice(&r.score.to_le_bytes());
        out.push(u8::from(r.passed));
        out.extend_from_slice(&r.latency_ms.to_le_bytes());
        out.extend_from_slice(&r.cost.0.to_le_bytes());
        match &r.error {
            Some(s) => {
                out.push(0);
                string_rb(&mut out, s);
            }
            None => out.push(1),
        }
        out.extend_from_slice(&r.created_at.as_micros().to_le_bytes());
    }
    out
}

/// One HTTP/1.1 POST on a plain socket; fails unless the server answers 200.
fn post(host: &str, user: &str, password: &str, path: &str, body: &[u8]) -> Result<()> {
    let mut s = TcpStream::connect(host)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {password}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 200 ") {
        let mut rest = String::new();
        reader.read_to_string(&mut rest)?;
        bail!("ceiling insert failed: {status} {rest}");
    }
    Ok(())
}

/// The body of a query's answer (one HTTP/1.1 POST, `Connection: close`), trimmed.
fn answer(host: &str, user: &str, password: &str, sql: &str) -> Result<String> {
    let mut s = TcpStream::connect(host)?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {host}\r\nX-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {password}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sql}",
        sql.len()
    )?;
    let mut text = String::new();
    BufReader::new(s).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    anyhow::ensure!(head.contains(" 200 "), "{head} {body}");
    Ok(body.trim().to_string())
}

fn pct(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn open(url: &str, database: &str) -> Result<ClickHouseAnalytics> {
    let url = format!("{}/{database}", url.rsplit_once('/').context("URL")?.0);
    let ch = ClickHouseAnalytics::new(ClickHouseOptions::from_config(&AnalyticsConfig::new(
        BackendUrl::parse("analytics.url", &url)?,
    ))?);
    ch.drop_databases_like(database).await?;
    ch.apply_schema().await?;
    Ok(ch)
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.95))
}

/// Runs the benchmark with `n` evaluation results and `n / 5` usage events.
pub async fn run(n: usize) -> Result<()> {
    let n = n.div_ceil(BATCH) * BATCH;
    let url = std::env::var("SPRINTLENS_TEST_CLICKHOUSE_URL")
        .context("SPRINTLENS_TEST_CLICKHOUSE_URL (run through `cargo xtask bench clickhouse`)")?;
    let ours = open(&url, "sprintlens_bench").await?;
    let ceiling_db = "sprintlens_bench_ceiling";
    let _ceiling = open(&url, ceiling_db).await?;
    let o = ours.options().clone();
    let host = o.endpoint.trim_start_matches("http://").to_string();
    let cast = Cast::new(30);
    let batches = n / BATCH;
    println!(
        "{n} evaluation results in {batches} batches of {BATCH}, 200 runs, 5 metrics, 10 projects, 30 days, one workspace"
    );

    // Interleaved batch by batch so both paths see the same server state and load.
    let (mut t_ours, mut t_plain) = (Duration::ZERO, Duration::ZERO);
    let mut rng = Rng::new(42);
    // The same engine work as the adapter's INSERTs: every id distinct, so the adapter turns off
    // `optimize_on_insert` (nothing to collapse), and so does the ceiling.
    let path = format!(
        "/?database={ceiling_db}&optimize_on_insert=0&query={}",
        pct("INSERT INTO eval_results FORMAT RowBinary")
    );
    let mut stored = 0u64;
    for b in 0..batches {
        let batch = cast.evals(&mut rng, b, n);
        let t = Instant::now();
        stored += ours.record(&batch).await?;
        t_ours += t.elapsed();
        let body = row_binary(&batch);
        let t = Instant::now();
        post(&host, &o.user, &o.password, &path, &body)?;
        t_plain += t.elapsed();
        if (b + 1) % 10 == 0 || b + 1 == batches {
            println!(
                "  {:>9} rows: adapter {:>9.0} rows/s, plain POST {:>9.0} rows/s",
                (b + 1) * BATCH,
                ((b + 1) * BATCH) as f64 / t_ours.as_secs_f64(),
                ((b + 1) * BATCH) as f64 / t_plain.as_secs_f64()
            );
        }
    }
    anyhow::ensure!(stored == n as u64, "stored {stored} of {n}");
    let ours_rate = n as f64 / t_ours.as_secs_f64();
    let plain_rate = n as f64 / t_plain.as_secs_f64();
    println!(
        "ingest: adapter {:.0} rows/s ({:.1} s), plain RowBinary POST {:.0} rows/s ({:.1} s): {:.2}× the ceiling",
        ours_rate,
        t_ours.as_secs_f64(),
        plain_rate,
        t_plain.as_secs_f64(),
        ours_rate / plain_rate
    );

    // The engine alone: the same rows as RowBinary files in memory on this machine, read by the
    // engine itself (`INSERT … FROM INFILE`: no HTTP body, no client encoding in the timing) into
    // another copy of the schema, views included. One INSERT of a whole batch, and two INSERTs of
    // its halves at once, batch by batch in turn. What the engine can store here with nothing else
    // in the way; meaningful only where the server shares this machine (the local stack).
    let (one_rate, two_rate) = engine_alone(&url, &host, &o, &cast, n).await?;
    println!(
        "engine alone: {one_rate:.0} rows/s one INSERT at a time, {two_rate:.0} rows/s two at once: \
         the adapter is {:.2}× the engine's best",
        ours_rate / one_rate.max(two_rate)
    );

    // Usage events for the cost and latency queries.
    let usage_n = (n / 5).div_ceil(BATCH) * BATCH;
    let t = Instant::now();
    for b in 0..usage_n / BATCH {
        let batch = cast.usage(&mut rng, b, usage_n);
        ours.record(&batch).await?;
    }
    println!(
        "usage: {usage_n} events through the adapter in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // What the engine still has to merge when the queries start (they read every active part);
    // `SPRINTLENS_BENCH_SETTLE_SECS` waits up to that long for the merges to finish first.
    let state = || {
        answer(
            &host,
            &o.user,
            &o.password,
            "SELECT (SELECT count() FROM system.parts WHERE database = 'sprintlens_bench' AND active), \
             (SELECT count() FROM system.merges WHERE database = 'sprintlens_bench') FORMAT CSV",
        )
    };
    println!(
        "before the queries: active parts, merges running = {}",
        state()?
    );
    let settle: u64 = std::env::var("SPRINTLENS_BENCH_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if settle > 0 {
        let t = Instant::now();
        while t.elapsed().as_secs() < settle && !state()?.ends_with(",0") {
            std::thread::sleep(Duration::from_millis(500));
        }
        println!(
            "after waiting {:.1} s: active parts, merges running = {}",
            t.elapsed().as_secs_f64(),
            state()?
        );
    }

    let fresh = dashboard_queries(&ours, &cast, &mut rng).await?;
    // The same queries once background merges have left each partition one part (what a table
    // that has stopped taking a burst of inserts comes to): every active part is one more read.
    let t = Instant::now();
    let tables = answer(
        &host,
        &o.user,
        &o.password,
        "SELECT name FROM system.tables WHERE database = 'sprintlens_bench' AND engine LIKE '%MergeTree' FORMAT TSV",
    )?;
    for table in tables.lines() {
        answer(
            &host,
            &o.user,
            &o.password,
            &format!("OPTIMIZE TABLE sprintlens_bench.`{table}` FINAL"),
        )?;
    }
    println!(
        "merged every partition into one part in {:.1} s: active parts, merges running = {}",
        t.elapsed().as_secs_f64(),
        state()?
    );
    let merged = dashboard_queries(&ours, &cast, &mut rng).await?;
    println!();
    println!("| query | p50 | p95 | p50 merged | p95 merged |");
    println!("|---|---|---|---|---|");
    for ((name, p50, p95), (_, m50, m95)) in fresh.iter().zip(&merged) {
        println!("| {name} | {p50:.1} ms | {p95:.1} ms | {m50:.1} ms | {m95:.1} ms |");
    }
    Ok(())
}

/// Batches each mode of [`engine_alone`] stores.
const ENGINE_BATCHES: usize = 20;

/// `INSERT … FROM INFILE` of RowBinary files the engine reads itself (see `run`): rows/s of one
/// INSERT of a whole batch at a time, and of two INSERTs of its halves at once.
async fn engine_alone(
    url: &str,
    host: &str,
    o: &ClickHouseOptions,
    cast: &Cast,
    n: usize,
) -> Result<(f64, f64)> {
    let db = "sprintlens_bench_engine";
    let _schema = open(url, db).await?;
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let files: Vec<std::path::PathBuf> = ["whole", "a", "b"]
        .iter()
        .map(|f| dir.join(format!("sprintlens-bench-{}-{f}.rb", std::process::id())))
        .collect();
    let insert = |path: &std::path::Path| {
        answer(
            host,
            &o.user,
            &o.password,
            &format!(
                "INSERT INTO {db}.eval_results FROM INFILE '{}' SETTINGS optimize_on_insert = 0 FORMAT RowBinary",
                path.display()
            ),
        )
    };
    let mut rng = Rng::new(7);
    let (mut t_one, mut t_two) = (Duration::ZERO, Duration::ZERO);
    let batches = ENGINE_BATCHES.min(n / BATCH).max(1);
    let result = (|| {
        for b in 0..2 * batches {
            let batch = cast.evals(&mut rng, b, n);
            if b % 2 == 0 {
                std::fs::write(&files[0], row_binary(&batch))?;
                let t = Instant::now();
                insert(&files[0])?;
                t_one += t.elapsed();
            } else {
                let (a, c) = batch.split_at(batch.len() / 2);
                std::fs::write(&files[1], row_binary(a))?;
                std::fs::write(&files[2], row_binary(c))?;
                let t = Instant::now();
                std::thread::scope(|s| {
                    let other = s.spawn(|| insert(&files[2]));
                    let mine = insert(&files[1]);
                    mine.and(other.join().expect("the insert thread"))
                })?;
                t_two += t.elapsed();
            }
        }
        Ok::<_, anyhow::Error>(())
    })();
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    result?;
    let rows = (batches * BATCH) as f64;
    Ok((rows / t_one.as_secs_f64(), rows / t_two.as_secs_f64()))
}

/// Each port query [`REPS`] times over ranges that do not fall on hours (rollups plus raw edges):
/// `(name, p50 ms, p95 ms)`.
async fn dashboard_queries(
    ours: &ClickHouseAnalytics,
    cast: &Cast,
    rng: &mut Rng,
) -> Result<Vec<(&'static str, f64, f64)>> {
    let now = Timestamp::now().as_micros();
    let ranges = |rng: &mut Rng| {
        let days = 1 + rng.below(30) as i64;
        let to = now - rng.below(3_600_000_000) as i64;
        TimeRange {
            from: Timestamp::from_micros(to - days * 86_400_000_000 - 1_234_567),
            to: Timestamp::from_micros(to),
        }
    };
    let mut rows = Vec::new();
    let mut time = |name: &'static str, v: Vec<f64>| {
        let (p50, p95) = stats(v);
        println!("  {name:<34} p50 {p50:>7.2} ms  p95 {p95:>7.2} ms");
        rows.push((name, p50, p95));
    };
    let mut lat = Vec::new();
    for i in 0..REPS {
        let t = Instant::now();
        let s = ours.eval_summary(cast.ws, cast.runs[i * 5 % 200]).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!s.metrics.is_empty());
    }
    time("eval_summary (one run)", lat);
    for bucket in [Bucket::Hour, Bucket::Day] {
        let mut lat = Vec::new();
        for i in 0..REPS {
            let q = SeriesQuery {
                metric: METRICS[i % 5].into(),
                project: (i % 2 == 0).then(|| cast.projects[i % 10]),
                range: ranges(rng),
                bucket,
            };
            let t = Instant::now();
            ours.metric_series(cast.ws, &q).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        time(
            if bucket == Bucket::Hour {
                "metric_series (hourly)"
            } else {
                "metric_series (daily)"
            },
            lat,
        );
    }
    for group_by in [GroupBy::Model, GroupBy::Agent, GroupBy::Project] {
        let mut lat = Vec::new();
        for _ in 0..REPS {
            let q = BreakdownQuery {
                group_by,
                project: None,
                range: ranges(rng),
            };
            let t = Instant::now();
            ours.cost_breakdown(cast.ws, &q).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        time(
            match group_by {
                GroupBy::Model => "cost_breakdown (by model)",
                GroupBy::Agent => "cost_breakdown (by agent)",
                GroupBy::Project => "cost_breakdown (by project)",
            },
            lat,
        );
    }
    let mut lat = Vec::new();
    for i in 0..REPS {
        let q = LatencyQuery {
            project: None,
            model: (i % 2 == 0).then(|| MODELS[i % 4].to_string()),
            range: ranges(rng),
        };
        let t = Instant::now();
        ours.latency(cast.ws, &q).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    time("latency p50/p95/p99", lat);
    Ok(rows)
}

/// Repetitions of each dashboard query.
const REPS: usize = 40;
