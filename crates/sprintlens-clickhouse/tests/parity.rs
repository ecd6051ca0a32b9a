//! ClickHouse against SQLite on the same generated events, and deduplication of re-sent batches.

use std::collections::BTreeMap;
use std::time::Duration;

use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
use sprintlens_core::analytics::{
    BreakdownQuery, Bucket, EventCursor, EventKind, GroupBy, LatencyQuery, SeriesQuery, TimeRange,
};
use sprintlens_core::config::{AnalyticsConfig, BackendUrl};
use sprintlens_core::{
    AgentId, Analytics, AnalyticsEvent, Cost, EvalRunId, ProjectId, RecordId, Timestamp,
    WorkspaceId,
};
use sprintlens_sqlite::{SqliteOptions, SqliteStore};
use sprintlens_testkit::generate::{Rng, eval_result, usage};

async fn clickhouse(database: &str, dedup_window: u64) -> Option<ClickHouseAnalytics> {
    clickhouse_at(database, dedup_window, u32::MAX).await
}

/// A fresh database with the migrations up to `last` applied.
async fn clickhouse_at(
    database: &str,
    dedup_window: u64,
    last: u32,
) -> Option<ClickHouseAnalytics> {
    let url = sprintlens_testkit::service_url("SPRINTLENS_TEST_CLICKHOUSE_URL")?;
    let (head, _) = url.rsplit_once('/').expect("URL with a database");
    // Named after the process: another test process may use the same prefix at the same time.
    let name = format!("{database}_{}", std::process::id());
    let mut cfg = AnalyticsConfig::new(
        BackendUrl::parse("analytics.url", &format!("{head}/{name}")).unwrap(),
    );
    cfg.dedup_window = dedup_window;
    let store = ClickHouseAnalytics::new(ClickHouseOptions::from_config(&cfg).unwrap());
    store
        .drop_databases_of_ended_processes(database)
        .await
        .unwrap();
    store.drop_databases_like(&name).await.unwrap();
    store.apply_schema_up_to(last).await.unwrap();
    Some(store)
}

const METRICS: [&str; 3] = ["accuracy", "faithfulness", "toxicity"];
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];

struct Generated {
    events: Vec<AnalyticsEvent>,
    ws: WorkspaceId,
    projects: Vec<ProjectId>,
    runs: Vec<EvalRunId>,
    base: Timestamp,
}

/// Events over three days, three projects, five runs, three metrics, four models, three agents
/// and none; times at random microseconds (so hour edges fall between events).
fn generate(n: usize) -> Generated {
    let mut rng = Rng::new(7);
    let ws = WorkspaceId::new();
    let projects: Vec<ProjectId> = (0..3).map(|_| RecordId::new()).collect();
    let runs: Vec<EvalRunId> = (0..5).map(|_| RecordId::new()).collect();
    let agents: Vec<Option<AgentId>> = vec![
        Some(RecordId::new()),
        Some(RecordId::new()),
        Some(RecordId::new()),
        None,
    ];
    let base = Timestamp::from_micros(
        Timestamp::now()
            .minus(Duration::from_secs(4 * 86_400))
            .as_micros()
            / 1_000
            * 1_000,
    );
    let span = 3 * 86_400 * 1_000_000u64;
    let mut events = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let at = base.plus_micros(rng.below(span) as i64);
        let score = (rng.unit() * 1000.0).round() / 1000.0;
        let mut e = eval_result(
            ws,
            *rng.pick(&projects),
            *rng.pick(&runs),
            METRICS[rng.below(3) as usize],
            score,
            score > 0.3,
            rng.below(5_000) as u32,
            Cost(rng.below(50_000) as i64),
            at,
        );
        if let AnalyticsEvent::EvalResult(r) = &mut e {
            r.agent = *rng.pick(&agents);
            r.error = (rng.below(20) == 0).then(|| "timeout".to_string());
        }
        events.push(e);
        let at = base.plus_micros(rng.below(span) as i64);
        events.push(usage(
            ws,
            *rng.pick(&projects),
            *rng.pick(&agents),
            MODELS[rng.below(4) as usize],
            rng.below(8_000),
            rng.below(2_000),
            Cost(rng.below(900_000) as i64),
            rng.below(10_000) as u32,
            at,
        ));
    }
    Generated {
        events,
        ws,
        projects,
        runs,
        base,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn scan_all(a: &dyn Analytics, kind: EventKind) -> Vec<AnalyticsEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = a.scan(kind, cursor, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        cursor = Some(EventCursor {
            created_at: last.created_at(),
            id: last.id(),
        });
        out.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_answers_as_sqlite_does() {
    let Some(ch) = clickhouse("sprintlens_parity", 1000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(SqliteOptions::new(dir.path().join("a.db")))
        .await
        .unwrap();
    let g = generate(20_000);
    for chunk in g.events.chunks(5_000) {
        let (a, b) = (
            sqlite.record(chunk).await.unwrap(),
            ch.record(chunk).await.unwrap(),
        );
        assert_eq!(a, b, "new events per batch");
    }
    let method = ch.quantile_method();
    let mut checked = 0usize;

    // Per run and metric: exact counts and sums, quantiles within the sketch's rank error.
    let mut values: BTreeMap<(EvalRunId, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for e in &g.events {
        if let AnalyticsEvent::EvalResult(r) = e {
            let v = values.entry((r.run, r.metric.clone())).or_default();
            v.0.push(r.score);
            v.1.push(f64::from(r.latency_ms));
        }
    }
    for v in values.values_mut() {
        v.0.sort_by(f64::total_cmp);
        v.1.sort_by(f64::total_cmp);
    }
    for run in &g.runs {
        let (a, b) = (
            sqlite.eval_summary(g.ws, *run).await.unwrap(),
            ch.eval_summary(g.ws, *run).await.unwrap(),
        );
        assert_eq!(a.metrics.len(), b.metrics.len());
        for (x, y) in a.metrics.iter().zip(&b.metrics) {
            assert_eq!(
                (&x.metric, x.count, x.passed, x.errors, x.cost),
                (&y.metric, y.count, y.passed, y.errors, y.cost)
            );
            assert_eq!((x.min_score, x.max_score), (y.min_score, y.max_score));
            assert!(close(x.mean_score, y.mean_score), "{x:?} vs {y:?}");
            assert!(close(x.pass_rate, y.pass_rate));
            let (scores, lat) = &values[&(*run, x.metric.clone())];
            for (p, got) in [(0.5, y.score.p50), (0.95, y.score.p95), (0.99, y.score.p99)] {
                assert!(
                    method.accepts(scores, p, got),
                    "score p{p} {got} ({})",
                    x.metric
                );
            }
            for (p, got) in [
                (0.5, y.latency_ms.p50),
                (0.95, y.latency_ms.p95),
                (0.99, y.latency_ms.p99),
            ] {
                assert!(method.accepts(lat, p, got), "latency p{p} {got}");
            }
            checked += 1;
        }
    }

    // Ranges that start and end between hours: rollups plus raw edges must add up exactly.
    let ranges = [
        TimeRange {
            from: g.base.plus_micros(17 * 60_000_000 + 123),
            to: g
                .base
                .plus_micros(2 * 86_400_000_000 + 5 * 3_600_000_000 + 7),
        },
        TimeRange {
            from: g.base.minus(Duration::from_secs(86_400)),
            to: g.base.plus_micros(4 * 86_400_000_000),
        },
        TimeRange {
            from: g.base.plus_micros(3_600_000_000 + 1),
            to: g.base.plus_micros(2 * 3_600_000_000 - 1),
        },
    ];
    for range in ranges {
        for project in [None, Some(g.projects[1])] {
            for metric in ["accuracy", "toxicity"] {
                for bucket in [Bucket::Hour, Bucket::Day] {
                    let q = SeriesQuery {
                        metric: metric.into(),
                        project,
                        range,
                        bucket,
                    };
                    let (a, b) = (
                        sqlite.metric_series(g.ws, &q).await.unwrap(),
                        ch.metric_series(g.ws, &q).await.unwrap(),
                    );
                    assert_eq!(a.len(), b.len(), "{q:?}");
                    for (x, y) in a.iter().zip(&b) {
                        assert_eq!((x.start, x.count, x.passed), (y.start, y.count, y.passed));
                        assert!(close(x.mean_score, y.mean_score));
                    }
                    checked += a.len();
                }
            }
            for group_by in [GroupBy::Model, GroupBy::Agent, GroupBy::Project] {
                let q = BreakdownQuery {
                    group_by,
                    project,
                    range,
                };
                let (a, b) = (
                    sqlite.cost_breakdown(g.ws, &q).await.unwrap(),
                    ch.cost_breakdown(g.ws, &q).await.unwrap(),
                );
                assert_eq!(a, b, "{q:?}");
                checked += a.len();
            }
            for model in [None, Some("gpt-4o".to_string())] {
                let q = LatencyQuery {
                    project,
                    model: model.clone(),
                    range,
                };
                let (a, b) = (
                    sqlite.latency(g.ws, &q).await.unwrap(),
                    ch.latency(g.ws, &q).await.unwrap(),
                );
                assert_eq!(a.count, b.count, "{q:?}");
                let mut lat: Vec<f64> = g
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        AnalyticsEvent::Usage(u)
                            if u.created_at >= range.from
                                && u.created_at < range.to
                                && project.is_none_or(|p| u.project == p)
                                && model.as_ref().is_none_or(|m| &u.model == m) =>
                        {
                            Some(f64::from(u.latency_ms))
                        }
                        _ => None,
                    })
                    .collect();
                lat.sort_by(f64::total_cmp);
                assert_eq!(lat.len() as u64, a.count);
                for (p, got) in [
                    (0.5, b.latency_ms.p50),
                    (0.95, b.latency_ms.p95),
                    (0.99, b.latency_ms.p99),
                ] {
                    assert!(method.accepts(&lat, p, got), "latency p{p} {got} {q:?}");
                }
                checked += 1;
            }
        }
    }

    // Scans return the same events in the same order.
    for kind in [EventKind::EvalResult, EventKind::Usage] {
        let (a, b) = (scan_all(&sqlite, kind).await, scan_all(&ch, kind).await);
        assert_eq!(a.len(), 20_000);
        assert!(a == b, "{kind:?} scans differ");
    }
    // A replay of every batch adds nothing.
    for chunk in g.events.chunks(5_000) {
        assert_eq!(ch.record(chunk).await.unwrap(), 0);
    }
    let again = ch.eval_summary(g.ws, g.runs[0]).await.unwrap();
    let first = sqlite.eval_summary(g.ws, g.runs[0]).await.unwrap();
    assert_eq!(
        again.metrics.iter().map(|m| m.count).sum::<u64>(),
        first.metrics.iter().map(|m| m.count).sum::<u64>()
    );
    println!(
        "parity: 40,000 events, {checked} answers compared, all equal (quantiles within t-digest rank error)"
    );
}

/// A batch re-sent after a lost response (the stored-id check could not see it yet) is stored
/// once thanks to its deduplication token, and twice when the window is 0.
#[tokio::test]
async fn a_resent_batch_is_counted_once_and_window_zero_shows_the_duplicate() {
    for (db, window, copies) in [
        ("sprintlens_dedup_on", 1000, 1u64),
        ("sprintlens_dedup_off", 0, 2),
    ] {
        let Some(ch) = clickhouse(db, window).await else {
            return;
        };
        let ws = WorkspaceId::new();
        let (p, run) = (RecordId::new(), RecordId::new());
        let now = Timestamp::now();
        let mut batch: Vec<AnalyticsEvent> = (0..50)
            .map(|i| eval_result(ws, p, run, "accuracy", 0.5, i % 2 == 0, 10, Cost(3), now))
            .collect();
        batch.extend((0..20).map(|_| usage(ws, p, None, "m", 5, 7, Cost(11), 100, now)));
        ch.send_unchecked(&batch).await.unwrap();
        ch.send_unchecked(&batch).await.unwrap();
        let s = ch.eval_summary(ws, run).await.unwrap();
        assert_eq!(s.metrics[0].count, 50 * copies, "window {window}");
        assert_eq!(s.metrics[0].cost, Cost(150 * copies as i64));
        let range = TimeRange {
            from: now.minus(Duration::from_secs(3600)),
            to: now.plus(Duration::from_secs(3600)),
        };
        let rows = ch
            .cost_breakdown(
                ws,
                &BreakdownQuery {
                    group_by: GroupBy::Model,
                    project: None,
                    range,
                },
            )
            .await
            .unwrap();
        assert_eq!(rows[0].events, 20 * copies, "window {window}");
        println!("dedup window {window}: a batch sent twice counted {copies}×");
    }
}

/// What the rollups answer over everything generated: per run and metric (count, passed, errors,
/// cost, p50 score), cost per model, and the latency count and p95.
async fn rollup_answers(
    ch: &ClickHouseAnalytics,
    g: &Generated,
) -> (
    Vec<(String, u64, u64, u64, i64, f64)>,
    Vec<(String, u64, i64)>,
    u64,
    f64,
) {
    let mut per_run = Vec::new();
    for run in &g.runs {
        for m in ch.eval_summary(g.ws, *run).await.unwrap().metrics {
            per_run.push((m.metric, m.count, m.passed, m.errors, m.cost.0, m.score.p50));
        }
    }
    let range = TimeRange {
        from: g.base.minus(Duration::from_secs(86_400)),
        to: g.base.plus_micros(5 * 86_400_000_000 + 17),
    };
    let cost = ch
        .cost_breakdown(
            g.ws,
            &BreakdownQuery {
                group_by: GroupBy::Model,
                project: None,
                range,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.events, r.cost.0))
        .collect();
    let latency = ch
        .latency(
            g.ws,
            &LatencyQuery {
                project: None,
                model: None,
                range,
            },
        )
        .await
        .unwrap();
    (per_run, cost, latency.count, latency.latency_ms.p95)
}

/// Migration 3 rolls up the latency of events stored before it; migration 4 rebuilds
/// `eval_run_summary` with small granules: the rows written before it answer the same afterwards,
/// the views feed the rebuilt tables, and the tables carry the new setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_rollups_keep_their_rows_and_their_views() {
    let Some(ch) = clickhouse_at("sprintlens_regranulate", 1000, 2).await else {
        return;
    };
    let g = generate(3_000);
    let (before, after) = g.events.split_at(g.events.len() / 2);
    ch.record(before).await.unwrap();
    assert_eq!(ch.apply_schema_up_to(3).await.unwrap(), vec![3]);
    let old = rollup_answers(&ch, &g).await;
    // The latency rollup of migration 3 holds what was stored before it.
    let mut latencies: Vec<f64> = before
        .iter()
        .filter_map(|e| match e {
            AnalyticsEvent::Usage(u) => Some(f64::from(u.latency_ms)),
            _ => None,
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    assert_eq!(old.2, latencies.len() as u64);
    assert!(
        ch.quantile_method().accepts(&latencies, 0.95, old.3),
        "p95 {}",
        old.3
    );
    assert_eq!(ch.apply_schema().await.unwrap(), vec![4]);
    let new = rollup_answers(&ch, &g).await;
    // Counts and sums exactly; quantiles from the same states (merged in another order).
    assert_eq!(old.1, new.1);
    assert_eq!(old.2, new.2);
    assert!(
        (old.3 - new.3).abs() <= old.3 * 0.02,
        "{} vs {}",
        old.3,
        new.3
    );
    assert_eq!(old.0.len(), new.0.len());
    for (a, b) in old.0.iter().zip(&new.0) {
        assert_eq!((&a.0, a.1, a.2, a.3, a.4), (&b.0, b.1, b.2, b.3, b.4));
        assert!((a.5 - b.5).abs() <= 0.02, "{a:?} vs {b:?}");
    }
    // Written after the rebuild: the views feed the new tables.
    ch.record(after).await.unwrap();
    let (per_run, cost, latency_count, _) = rollup_answers(&ch, &g).await;
    let results = g
        .events
        .iter()
        .filter(|e| matches!(e, AnalyticsEvent::EvalResult(_)))
        .count() as u64;
    let usage = g.events.len() as u64 - results;
    assert_eq!(per_run.iter().map(|r| r.1).sum::<u64>(), results);
    assert_eq!(cost.iter().map(|r| r.1).sum::<u64>(), usage);
    assert_eq!(latency_count, usage);
    for (table, granule) in [("eval_run_summary", 64), ("usage_latency", 256)] {
        let ddl: String = ch
            .client()
            .query("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = ?")
            .bind(table)
            .fetch_one()
            .await
            .unwrap();
        assert!(
            ddl.contains(&format!("index_granularity = {granule}")),
            "{ddl}"
        );
    }
    eprintln!(
        "figure: {} events before and {} after the rollups were rebuilt; every count and sum unchanged",
        before.len(),
        after.len()
    );
}

/// A large batch (sent as two INSERTs, the first streamed while the stored-id gate runs) that
/// repeats stored events: the gate finds them, the streamed INSERT is dropped unended (so the
/// server stores nothing of it) and only the new events are sent. Fails if the dropped INSERT
/// were stored (the rollups would count the repeated events twice).
#[tokio::test]
async fn a_large_batch_over_stored_events_stores_only_the_new_ones() {
    let Some(ch) = clickhouse("sprintlens_overlap", 1000).await else {
        return;
    };
    let ws = WorkspaceId::new();
    let (p, run) = (RecordId::new(), RecordId::new());
    let base = Timestamp::now().minus(Duration::from_secs(7200));
    let batch: Vec<AnalyticsEvent> = (0..30_000)
        .map(|i| {
            let at = base.plus_micros(i * 100_000);
            eval_result(ws, p, run, "accuracy", 0.5, i % 2 == 0, 10, Cost(3), at)
        })
        .collect();
    let stored: Vec<AnalyticsEvent> = batch.iter().step_by(3).cloned().collect();
    assert_eq!(ch.record(&stored).await.unwrap(), 10_000);
    assert_eq!(ch.record(&batch).await.unwrap(), 20_000);
    assert_eq!(ch.record(&batch).await.unwrap(), 0);
    let s = ch.eval_summary(ws, run).await.unwrap();
    assert_eq!(s.metrics[0].count, 30_000);
    assert_eq!(s.metrics[0].passed, 15_000);
    assert_eq!(s.metrics[0].cost, Cost(90_000));
    let raw = scan_all(&ch, EventKind::EvalResult).await;
    assert_eq!(raw.len(), 30_000);
    println!(
        "overlap: 10,000 stored, then 30,000 (two INSERTs) → 20,000 new, rollups count 30,000"
    );
}
