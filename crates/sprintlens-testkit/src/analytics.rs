//! `Analytics` conformance cases.

use std::sync::Arc;

use sprintlens_core::analytics::{EventCursor, TimeRange};
use sprintlens_core::*;

use crate::generate::{Rng, eval_result, usage};

type A = Arc<dyn Analytics>;

fn day_range(t: Timestamp) -> TimeRange {
    TimeRange {
        from: t.minus(std::time::Duration::from_secs(86_400 * 30)),
        to: t.plus(std::time::Duration::from_secs(86_400)),
    }
}

/// Counts, pass rates, sums, min/max and nearest-rank quantiles per metric are exact.
pub async fn eval_summary_is_exact(a: A) {
    let ws = WorkspaceId::new();
    let (p, run) = (RecordId::new(), RecordId::new());
    let now = Timestamp::now();
    let mut events = Vec::new();
    for i in 1..=100u32 {
        events.push(eval_result(
            ws,
            p,
            run,
            "accuracy",
            f64::from(i) / 100.0,
            i % 4 != 0,
            i * 10,
            Cost(1_000),
            now,
        ));
    }
    for i in 0..10u32 {
        let mut e = eval_result(ws, p, run, "faithfulness", 0.5, false, 5, Cost(7), now);
        if let AnalyticsEvent::EvalResult(r) = &mut e {
            r.error = (i < 3).then(|| "timeout".to_string());
        }
        events.push(e);
    }
    events.push(eval_result(
        ws,
        p,
        RecordId::new(),
        "accuracy",
        0.0,
        false,
        1,
        Cost(1),
        now,
    ));
    assert_eq!(a.record(&events).await.unwrap(), 111);
    let s = a.eval_summary(ws, run).await.unwrap();
    assert_eq!(s.metrics.len(), 2);
    let acc = &s.metrics[0];
    assert_eq!(acc.metric, "accuracy");
    assert_eq!((acc.count, acc.passed, acc.errors), (100, 75, 0));
    assert!((acc.pass_rate - 0.75).abs() < 1e-12);
    assert!((acc.mean_score - 0.505).abs() < 1e-9);
    assert_eq!((acc.min_score, acc.max_score), (0.01, 1.0));
    // Exact on nearest-rank backends, within the sketch's rank error on the others.
    let method = a.quantile_method();
    let scores: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
    let lat: Vec<f64> = (1..=100).map(|i| f64::from(i * 10)).collect();
    for (p, got) in [
        (0.5, acc.score.p50),
        (0.95, acc.score.p95),
        (0.99, acc.score.p99),
    ] {
        assert!(
            method.accepts(&scores, p, got),
            "score p{p}: {got} ({method:?})"
        );
    }
    for (p, got) in [(0.5, acc.latency_ms.p50), (0.99, acc.latency_ms.p99)] {
        assert!(
            method.accepts(&lat, p, got),
            "latency p{p}: {got} ({method:?})"
        );
    }
    if method == QuantileMethod::NearestRank {
        assert_eq!(
            (acc.score.p50, acc.score.p95, acc.score.p99),
            (0.5, 0.95, 0.99)
        );
    }
    assert_eq!(acc.cost, Cost(100_000));
    let f = &s.metrics[1];
    assert_eq!((f.count, f.passed, f.errors), (10, 0, 3));
    assert!(
        a.eval_summary(ws, RecordId::new())
            .await
            .unwrap()
            .metrics
            .is_empty()
    );
}

/// A batch sent twice counts once, in the summary and in the stream's count.
pub async fn replayed_batch_counts_once(a: A) {
    let ws = WorkspaceId::new();
    let (p, run) = (RecordId::new(), RecordId::new());
    let now = Timestamp::now();
    let before = (
        a.count(EventKind::EvalResult).await.unwrap(),
        a.count(EventKind::Usage).await.unwrap(),
    );
    let batch: Vec<_> = (0..50)
        .map(|i| eval_result(ws, p, run, "m", f64::from(i), true, 1, Cost(1), now))
        .collect();
    assert_eq!(a.record(&batch).await.unwrap(), 50);
    assert_eq!(a.record(&batch).await.unwrap(), 0);
    assert_eq!(a.record(&batch[10..20]).await.unwrap(), 0);
    assert_eq!(a.eval_summary(ws, run).await.unwrap().metrics[0].count, 50);
    let other = WorkspaceId::new();
    a.record(&[usage(other, p, None, "m", 1, 1, Cost(1), 1, now)])
        .await
        .unwrap();
    assert_eq!(
        (
            a.count(EventKind::EvalResult).await.unwrap(),
            a.count(EventKind::Usage).await.unwrap()
        ),
        (before.0 + 50, before.1 + 1),
        "every workspace, each id once"
    );
}

/// A NaN score, an empty model name or a far-future time refuses the whole batch.
pub async fn invalid_batch_writes_nothing(a: A) {
    let ws = WorkspaceId::new();
    let (p, run) = (RecordId::new(), RecordId::new());
    let now = Timestamp::now();
    let good = eval_result(ws, p, run, "m", 1.0, true, 1, Cost(1), now);
    let nan = eval_result(ws, p, run, "m", f64::NAN, true, 1, Cost(1), now);
    let err = a.record(&[good.clone(), nan]).await.unwrap_err();
    assert_eq!(err.field(), Some("eval_result.score"));
    let future = eval_result(
        ws,
        p,
        run,
        "m",
        1.0,
        true,
        1,
        Cost(1),
        now.plus(std::time::Duration::from_secs(86_400 * 365)),
    );
    assert_eq!(
        a.record(&[good.clone(), future]).await.unwrap_err().field(),
        Some("event.created_at")
    );
    // An id whose UUIDv7 time lies a year ahead (a broken clock or a forged id).
    let mut forged = good.clone();
    let ahead = now
        .plus(std::time::Duration::from_secs(86_400 * 365))
        .as_micros();
    let uuid = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        (ahead / 1_000_000) as u64,
        0,
    ));
    if let AnalyticsEvent::EvalResult(r) = &mut forged {
        r.id = EventId::from_uuid(uuid).unwrap();
    }
    let mut fresh = good.clone();
    if let AnalyticsEvent::EvalResult(r) = &mut fresh {
        r.id = EventId::new();
    }
    assert_eq!(
        a.record(&[fresh, forged]).await.unwrap_err().field(),
        Some("event.id")
    );
    let no_model = usage(ws, p, None, "", 1, 1, Cost(1), 1, now);
    assert_eq!(
        a.record(&[good, no_model]).await.unwrap_err().field(),
        Some("usage.model")
    );
    assert!(a.eval_summary(ws, run).await.unwrap().metrics.is_empty());
    let rows = a
        .cost_breakdown(
            ws,
            &BreakdownQuery {
                group_by: GroupBy::Model,
                project: None,
                range: day_range(now),
            },
        )
        .await
        .unwrap();
    assert!(rows.is_empty());
}

/// Tokens and cost by model, agent and project are exact integer sums, ordered by cost.
pub async fn cost_breakdown_sums_exactly(a: A) {
    let ws = WorkspaceId::new();
    let (p1, p2, agent) = (RecordId::new(), RecordId::new(), RecordId::new());
    let now = Timestamp::now();
    let mut rng = Rng::new(9);
    let mut events = Vec::new();
    let (mut big_cost, mut small_cost, mut big_in) = (0i64, 0i64, 0u64);
    for i in 0..400 {
        let big = i % 3 == 0;
        let (model, proj) = if big {
            ("gpt-4o", p1)
        } else {
            ("gpt-4o-mini", p2)
        };
        let tokens = rng.below(5_000);
        let cost = Cost(rng.below(1_000_000_000) as i64);
        if big {
            big_cost += cost.0;
            big_in += tokens;
        } else {
            small_cost += cost.0;
        }
        events.push(usage(
            ws,
            proj,
            big.then_some(agent),
            model,
            tokens,
            2 * tokens,
            cost,
            100,
            now,
        ));
    }
    a.record(&events).await.unwrap();
    let range = day_range(now);
    let by_model = a
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
    assert_eq!(by_model.len(), 2);
    let big = by_model.iter().find(|r| r.key == "gpt-4o").unwrap();
    assert_eq!(
        (big.events, big.cost, big.input_tokens, big.output_tokens),
        (134, Cost(big_cost), big_in, 2 * big_in)
    );
    let small = by_model.iter().find(|r| r.key == "gpt-4o-mini").unwrap();
    assert_eq!(small.cost, Cost(small_cost));
    assert!(by_model[0].cost >= by_model[1].cost);
    let by_agent = a
        .cost_breakdown(
            ws,
            &BreakdownQuery {
                group_by: GroupBy::Agent,
                project: None,
                range,
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = by_agent.iter().map(|r| r.key.as_str()).collect();
    assert!(keys.contains(&"-") && keys.contains(&agent.to_string().as_str()));
    let by_project = a
        .cost_breakdown(
            ws,
            &BreakdownQuery {
                group_by: GroupBy::Project,
                project: Some(p1),
                range,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_project.len(), 1);
    assert_eq!(by_project[0].key, p1.to_string());
    assert_eq!(by_project[0].cost, Cost(big_cost));
}

/// Results fall into hourly and daily buckets by time; the range is half-open.
pub async fn metric_series_buckets(a: A) {
    let ws = WorkspaceId::new();
    let (p, run) = (RecordId::new(), RecordId::new());
    let day = sprintlens_core::Bucket::Day
        .floor(Timestamp::now().minus(std::time::Duration::from_secs(3 * 86_400)));
    let hour = std::time::Duration::from_secs(3600);
    let mut events = Vec::new();
    for h in 0..5u32 {
        for j in 0..=h {
            let at = day
                .plus(hour * h)
                .plus(std::time::Duration::from_secs(u64::from(j) * 60));
            events.push(eval_result(
                ws,
                p,
                run,
                "latency_ok",
                f64::from(j),
                j % 2 == 0,
                1,
                Cost(0),
                at,
            ));
        }
    }
    events.push(eval_result(
        ws,
        p,
        run,
        "latency_ok",
        1.0,
        true,
        1,
        Cost(0),
        day.plus(hour * 30),
    ));
    a.record(&events).await.unwrap();
    let range = TimeRange {
        from: day,
        to: day.plus(hour * 48),
    };
    let hourly = a
        .metric_series(
            ws,
            &SeriesQuery {
                metric: "latency_ok".into(),
                project: None,
                range,
                bucket: Bucket::Hour,
            },
        )
        .await
        .unwrap();
    assert_eq!(hourly.len(), 6);
    assert_eq!(hourly[0].start, day);
    assert_eq!(hourly[2].count, 3);
    assert_eq!(hourly[2].passed, 2);
    assert!((hourly[2].mean_score - 1.0).abs() < 1e-12);
    assert_eq!(hourly[5].start, day.plus(hour * 30));
    let daily = a
        .metric_series(
            ws,
            &SeriesQuery {
                metric: "latency_ok".into(),
                project: Some(p),
                range,
                bucket: Bucket::Day,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        daily.iter().map(|d| d.count).collect::<Vec<_>>(),
        vec![15, 1]
    );
    let narrow = TimeRange {
        from: day,
        to: day.plus(hour),
    };
    let first = a
        .metric_series(
            ws,
            &SeriesQuery {
                metric: "latency_ok".into(),
                project: None,
                range: narrow,
                bucket: Bucket::Day,
            },
        )
        .await
        .unwrap();
    assert_eq!(first[0].count, 1);
    let bad = TimeRange { from: day, to: day };
    assert_eq!(
        a.metric_series(
            ws,
            &SeriesQuery {
                metric: "x".into(),
                project: None,
                range: bad,
                bucket: Bucket::Day
            }
        )
        .await
        .unwrap_err()
        .field(),
        Some("range")
    );
}

/// Latency quantiles of usage events match nearest rank, per model filter.
pub async fn latency_quantiles(a: A) {
    let ws = WorkspaceId::new();
    let p = RecordId::new();
    let now = Timestamp::now();
    let mut rng = Rng::new(11);
    let mut lat: Vec<f64> = Vec::new();
    let mut events = Vec::new();
    for _ in 0..1000 {
        let l = rng.below(2_000) as u32;
        lat.push(f64::from(l));
        events.push(usage(ws, p, None, "m1", 1, 1, Cost(1), l, now));
    }
    events.push(usage(ws, p, None, "m2", 1, 1, Cost(1), 99_999, now));
    a.record(&events).await.unwrap();
    lat.sort_by(f64::total_cmp);
    let expected = Quantiles::nearest_rank(&lat);
    let got = a
        .latency(
            ws,
            &LatencyQuery {
                project: Some(p),
                model: Some("m1".into()),
                range: day_range(now),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.count, 1000);
    let tolerance = |x: f64| (x * 0.02).max(20.0);
    for (g, e) in [
        (got.latency_ms.p50, expected.p50),
        (got.latency_ms.p95, expected.p95),
        (got.latency_ms.p99, expected.p99),
    ] {
        assert!((g - e).abs() <= tolerance(e), "quantile {g} vs {e}");
    }
    let all = a
        .latency(
            ws,
            &LatencyQuery {
                project: None,
                model: None,
                range: day_range(now),
            },
        )
        .await
        .unwrap();
    assert_eq!(all.count, 1001);
}

/// No query sees another workspace's events.
pub async fn workspaces_are_isolated(a: A) {
    let (wa, wb) = (WorkspaceId::new(), WorkspaceId::new());
    let (p, run) = (RecordId::new(), RecordId::new());
    let now = Timestamp::now();
    a.record(&[
        eval_result(wa, p, run, "m", 1.0, true, 1, Cost(5), now),
        usage(wa, p, None, "gpt", 10, 10, Cost(5), 10, now),
    ])
    .await
    .unwrap();
    assert!(a.eval_summary(wb, run).await.unwrap().metrics.is_empty());
    let range = day_range(now);
    assert!(
        a.cost_breakdown(
            wb,
            &BreakdownQuery {
                group_by: GroupBy::Model,
                project: None,
                range
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert_eq!(
        a.latency(
            wb,
            &LatencyQuery {
                project: None,
                model: None,
                range
            }
        )
        .await
        .unwrap()
        .count,
        0
    );
    assert!(
        a.metric_series(
            wb,
            &SeriesQuery {
                metric: "m".into(),
                project: None,
                range,
                bucket: Bucket::Day
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
}

/// Event scans return every event once, in `(created_at, id)` order, across batches.
pub async fn scan_follows_the_keyset_cursor(a: A) {
    let ws = WorkspaceId::new();
    let p = RecordId::new();
    let base = Timestamp::now().minus(std::time::Duration::from_secs(3600));
    let events: Vec<_> = (0..30)
        .map(|i| usage(ws, p, None, "m", 1, 1, Cost(1), 1, base.plus_micros(i / 3)))
        .collect();
    a.record(&events).await.unwrap();
    let mut cursor: Option<EventCursor> = None;
    let mut seen = Vec::new();
    loop {
        let batch = a.scan(EventKind::Usage, cursor, 4).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = Some(EventCursor {
            created_at: last.created_at(),
            id: last.id(),
        });
        seen.extend(batch.into_iter().filter(|e| e.workspace() == ws));
    }
    let mut expected = events.clone();
    expected.sort_by_key(|e| (e.created_at(), e.id()));
    assert_eq!(seen, expected);
}

/// A scan crosses sparse time: events days and weeks apart (and a burst within a second) come back
/// in `(created_at, id)` order, each once, whatever gaps lie between pages.
pub async fn scan_crosses_gaps_in_time(a: A) {
    let ws = WorkspaceId::new();
    let p = RecordId::new();
    let base = Timestamp::now().minus(std::time::Duration::from_secs(80 * 86_400));
    let day = |d: u64| base.plus(std::time::Duration::from_secs(d * 86_400));
    let mut times = vec![base, base.plus_micros(1), day(1), day(5), day(20), day(40)];
    times.extend((0..10).map(|i| day(30).plus_micros(i * 100_000)));
    times.extend([day(60), day(79)]);
    let events: Vec<_> = times
        .iter()
        .map(|t| usage(ws, p, None, "m", 1, 1, Cost(1), 1, *t))
        .collect();
    a.record(&events).await.unwrap();
    for limit in [0, MAX_SCAN_PAGE + 1] {
        let e = a.scan(EventKind::Usage, None, limit).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
    for page in [1, 3, 7, MAX_SCAN_PAGE] {
        let mut cursor: Option<EventCursor> = None;
        let mut seen = Vec::new();
        loop {
            let batch = a.scan(EventKind::Usage, cursor, page).await.unwrap();
            assert!(batch.len() <= page);
            let Some(last) = batch.last() else { break };
            assert!(
                batch
                    .windows(2)
                    .all(|w| (w[0].created_at(), w[0].id().to_string())
                        < (w[1].created_at(), w[1].id().to_string())),
                "a page out of order"
            );
            cursor = Some(EventCursor {
                created_at: last.created_at(),
                id: last.id(),
            });
            let full = batch.len() == page;
            seen.extend(batch.into_iter().filter(|e| e.workspace() == ws));
            if !full {
                break;
            }
        }
        let mut expected = events.clone();
        expected.sort_by_key(|e| (e.created_at(), e.id()));
        assert_eq!(seen, expected, "pages of {page}");
    }
}
