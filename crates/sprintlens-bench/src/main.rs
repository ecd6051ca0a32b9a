#![doc = include_str!("../README.md")]
// Registering sqlite-vec as an auto-extension is an FFI call; only this benchmark binary does it.
#![allow(unsafe_code)]

mod clickhouse;
mod dualwrite;
mod migrate;
mod objects;
mod postgres;
mod redis;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sprintlens_core::{
    EmbeddingKind, RecordId, Timestamp, VectorEntry, VectorIndex, VectorQuery, WorkspaceId,
};
use sprintlens_sqlite::{SqliteOptions, SqliteStore};
use sprintlens_testkit::generate::{Rng, exact_top_k, random_embedding};

const DIM: usize = 384;
const QUERIES: usize = 30;
const K: usize = 10;

/// CPU time so far, in seconds (clock ticks of 1/100 s): this process's user + system time, and
/// the whole machine's busy and idle time over all cores, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuTimes {
    pub(crate) ours: f64,
    pub(crate) busy: f64,
    pub(crate) idle: f64,
}

impl CpuTimes {
    pub(crate) fn now() -> CpuTimes {
        let ticks = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN) / 100.0;
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let after = own.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ours = fields.get(11).map_or(f64::NAN, |u| ticks(u))
            + fields.get(12).map_or(f64::NAN, |s| ticks(s));
        let machine = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // "cpu  user nice system idle iowait irq softirq steal …": idle and iowait are idle.
        let all: Vec<f64> = machine
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(ticks)
            .collect();
        let idle =
            all.get(3).copied().unwrap_or(f64::NAN) + all.get(4).copied().unwrap_or(f64::NAN);
        CpuTimes {
            ours,
            busy: all.iter().sum::<f64>() - idle,
            idle,
        }
    }

    /// What was spent since `self`, as "ours X s, rest of the machine Y s, idle Z s".
    pub(crate) fn since(self) -> String {
        let now = CpuTimes::now();
        let ours = now.ours - self.ours;
        format!(
            "CPU: ours {ours:.1} s, the rest of the machine {:.1} s, idle {:.1} s",
            now.busy - self.busy - ours,
            now.idle - self.idle
        )
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Stats {
    load_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    recall: f64,
}

fn blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

async fn run_size(n: usize) -> Result<(Stats, Stats)> {
    let mut rng = Rng::new(42);
    let ws = WorkspaceId::new();
    let entries: Vec<VectorEntry> = (0..n)
        .map(|_| VectorEntry {
            workspace: ws,
            project: None,
            kind: EmbeddingKind::Message,
            id: RecordId::new(),
            embedding: random_embedding(&mut rng, DIM),
            updated_at: Timestamp::now(),
        })
        .collect();
    let queries: Vec<_> = (0..QUERIES)
        .map(|_| random_embedding(&mut rng, DIM))
        .collect();
    // Exact ground truth.
    let truth: Vec<Vec<RecordId>> = queries
        .iter()
        .map(|q| exact_top_k(&entries, q, K))
        .collect();

    // sprintlens-sqlite.
    let dir = tempfile::tempdir()?;
    let mut o = SqliteOptions::new(dir.path().join("ours.db"));
    o.dimension = DIM;
    let store = Arc::new(SqliteStore::open(o).await?);
    let t = Instant::now();
    for chunk in entries.chunks(5_000) {
        store.upsert(chunk).await?;
    }
    let ours_load = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut found = 0;
    for (q, truth) in queries.iter().zip(&truth) {
        let t = Instant::now();
        let hits = store
            .search(&VectorQuery {
                workspace: ws,
                project: None,
                kinds: vec![],
                embedding: q.clone(),
                k: K,
            })
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    lat.sort_by(f64::total_cmp);
    let ours = Stats {
        load_s: ours_load,
        p50_ms: percentile(&lat, 0.5),
        p95_ms: percentile(&lat, 0.95),
        recall: found as f64 / (QUERIES * K) as f64,
    };

    // sqlite-vec vec0 (brute-force KNN in C), same vectors, cosine distance, in one transaction.
    let path = dir.path().join("vec0.db");
    let entries2 = entries.clone();
    let queries2 = queries.clone();
    let truth2 = truth.clone();
    let theirs = tokio::task::spawn_blocking(move || -> Result<Stats> {
        let mut c = rusqlite::Connection::open(path)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.execute_batch(&format!(
            "CREATE VIRTUAL TABLE v USING vec0(id TEXT PRIMARY KEY, embedding float[{DIM}] distance_metric=cosine)"
        ))?;
        let t = Instant::now();
        for chunk in entries2.chunks(5_000) {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT INTO v (id, embedding) VALUES (?1, ?2)")?;
                for e in chunk {
                    st.execute(rusqlite::params![
                        e.id.to_string(),
                        blob(e.embedding.normalized().as_slice())
                    ])?;
                }
            }
            tx.commit()?;
        }
        let load = t.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        let mut found = 0;
        let mut st = c.prepare(
            "SELECT id FROM v WHERE embedding MATCH ?1 AND k = ?2 ORDER BY distance",
        )?;
        for (q, truth) in queries2.iter().zip(&truth2) {
            let t = Instant::now();
            let ids: Vec<String> = st
                .query_map(rusqlite::params![blob(q.as_slice()), K as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            found += ids
                .iter()
                .filter(|id| truth.iter().any(|t| t.to_string() == **id))
                .count();
        }
        lat.sort_by(f64::total_cmp);
        Ok(Stats {
            load_s: load,
            p50_ms: percentile(&lat, 0.5),
            p95_ms: percentile(&lat, 0.95),
            recall: found as f64 / (QUERIES * K) as f64,
        })
    })
    .await??;
    Ok((ours, theirs))
}

async fn sqlite_vectors(sizes: &[usize]) -> Result<()> {
    unsafe {
        rusqlite::ffi::sqlite3_auto_extension(Some(std::mem::transmute::<
            *const (),
            unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> i32,
        >(
            sqlite_vec::sqlite3_vec_init as *const ()
        )));
    }
    println!(
        "| vectors × dim | sprintlens load | sqlite-vec load | sprintlens p50 / p95 | sqlite-vec p50 / p95 | p50 ratio (sqlite-vec ÷ sprintlens) | recall@10 ours / theirs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in sizes {
        let (ours, theirs) = run_size(n).await?;
        println!(
            "| {n} × {DIM} | {:.2} s | {:.2} s | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.2} | {:.2} / {:.2} |",
            ours.load_s,
            theirs.load_s,
            ours.p50_ms,
            ours.p95_ms,
            theirs.p50_ms,
            theirs.p95_ms,
            theirs.p50_ms / ours.p50_ms,
            ours.recall,
            theirs.recall
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sqlite-vectors") => {
            let sizes: Vec<usize> = if args.len() > 1 {
                args[1..]
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            } else {
                vec![10_000, 100_000]
            };
            sqlite_vectors(&sizes).await
        }
        Some("postgres-vectors") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(100_000);
            postgres::vectors(n, &[1, 16]).await
        }
        Some("postgres-bulk") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            let batch = args
                .get(2)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            postgres::bulk(n, batch).await
        }
        Some("migrate") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            let batch = args
                .get(2)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(sprintlens::migrate::RunOptions::default().batch);
            // `--parallel` values to run ours with, comma-separated (default 1,2).
            let parallels = args
                .get(3)
                .map_or("1,2", String::as_str)
                .split(',')
                .map(str::parse)
                .collect::<std::result::Result<Vec<usize>, _>>()?;
            // Rounds of ours and pgloader (default 3): the ratio over several runs of both.
            let rounds = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(3);
            anyhow::ensure!(rounds > 0, "rounds must be at least 1");
            migrate::run(n, batch, &parallels, rounds).await?;
            dualwrite::run(5_000).await
        }
        Some("migrate-events") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            migrate::events(n).await
        }
        Some("migrate-vectors") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(50_000);
            migrate::vectors(n).await
        }
        Some("dual-write") => {
            let n = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5_000);
            dualwrite::run(n).await
        }
        Some("clickhouse") => {
            let n = args
                .get(1)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000_000);
            clickhouse::run(n).await
        }
        Some("objects") => {
            let sizes: Vec<u64> = if args.len() > 1 {
                args[1..]
                    .iter()
                    .map(|s| s.parse::<u64>().map(|mb| mb * 1024 * 1024))
                    .collect::<Result<_, _>>()?
            } else {
                vec![1 << 20, 64 << 20, 1 << 30]
            };
            objects::run(&sizes).await
        }
        Some("redis") => {
            let c = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(50);
            redis::run(c, 10).await
        }
        _ => anyhow::bail!(
            "usage: sprintlens-bench sqlite-vectors [sizes…] | postgres-vectors [n] | postgres-bulk [n] [batch] | redis [concurrency] | objects [sizes in MiB…] | clickhouse [rows] | migrate [rows] [batch] [parallel,…] | migrate-vectors [n] | migrate-events [n] | dual-write [writes]"
        ),
    }
}
