//! Every SQL query of the Grafana dashboards in `docker/grafana/` runs against the test engine on
//! seeded events and returns rows of the expected columns.

use std::time::Duration;

use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
use sprintlens_core::config::{AnalyticsConfig, BackendUrl};
use sprintlens_core::{Analytics, Cost, RecordId, Timestamp, WorkspaceId};
use sprintlens_testkit::generate::{Rng, eval_result, usage};

/// (dashboard file, panel title, columns in order).
const EXPECTED: &[(&str, &str, &[&str])] = &[
    (
        "evaluations.json",
        "Success rate by metric",
        &["time", "metric", "success_rate"],
    ),
    (
        "evaluations.json",
        "Results per hour",
        &["time", "metric", "results"],
    ),
    (
        "evaluations.json",
        "Runs: success rate, scores, latency and cost",
        &[
            "run",
            "metric",
            "results",
            "success_rate",
            "errors",
            "mean_score",
            "score_p50",
            "latency_p95_ms",
            "cost_usd",
        ],
    ),
    (
        "cost-and-latency.json",
        "Cost per model",
        &["time", "model", "cost_usd"],
    ),
    (
        "cost-and-latency.json",
        "Cost per agent",
        &["time", "agent", "cost_usd"],
    ),
    (
        "cost-and-latency.json",
        "Cost per project",
        &["time", "project", "cost_usd"],
    ),
    (
        "cost-and-latency.json",
        "Token volume",
        &["time", "input_tokens", "output_tokens"],
    ),
    (
        "cost-and-latency.json",
        "Latency p50 / p95 / p99",
        &["time", "p50_ms", "p95_ms", "p99_ms"],
    ),
    (
        "cost-and-latency.json",
        "Cost by model (range)",
        &[
            "model",
            "calls",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        ],
    ),
];

/// Grafana's macros and variables as the ClickHouse data source expands them.
fn expand(sql: &str, ws: WorkspaceId, from: i64, to: i64) -> String {
    let mut out = sql.replace("${workspace}", &ws.to_string());
    while let Some(start) = out.find("$__timeFilter(") {
        let end = start + out[start..].find(')').expect("closing parenthesis");
        let column = &out[start + "$__timeFilter(".len()..end];
        let expanded = format!("{column} >= toDateTime({from}) AND {column} <= toDateTime({to})");
        out.replace_range(start..=end, &expanded);
    }
    out.replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
}

#[tokio::test]
async fn every_dashboard_query_runs_and_returns_its_columns() {
    let Some(url) = sprintlens_testkit::service_url("SPRINTLENS_TEST_CLICKHOUSE_URL") else {
        return;
    };
    let name = format!("sprintlens_dashboards_{}", std::process::id());
    let url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    let ch = ClickHouseAnalytics::new(
        ClickHouseOptions::from_config(&AnalyticsConfig::new(
            BackendUrl::parse("analytics.url", &url).unwrap(),
        ))
        .unwrap(),
    );
    ch.drop_databases_of_ended_processes("sprintlens_dashboards")
        .await
        .unwrap();
    ch.drop_databases_like(&name).await.unwrap();
    ch.apply_schema().await.unwrap();

    let ws = WorkspaceId::new();
    let mut rng = Rng::new(3);
    let now = Timestamp::now();
    let projects = [RecordId::new(), RecordId::new()];
    let runs = [RecordId::new(), RecordId::new(), RecordId::new()];
    let mut events = Vec::new();
    for i in 0..3_000u64 {
        let at = now.minus(Duration::from_secs(rng.below(3 * 86_400)));
        let p = projects[(i % 2) as usize];
        events.push(eval_result(
            ws,
            p,
            runs[(i % 3) as usize],
            ["accuracy", "faithfulness"][(i % 2) as usize],
            rng.unit(),
            rng.below(4) != 0,
            rng.below(3_000) as u32,
            Cost(rng.below(10_000) as i64),
            at,
        ));
        let agent = (i % 3 != 0).then(RecordId::new);
        events.push(usage(
            ws,
            p,
            agent,
            ["gpt-4o", "claude-sonnet", "llama-3-70b"][(i % 3) as usize],
            rng.below(4_000),
            rng.below(1_000),
            Cost(rng.below(500_000) as i64),
            rng.below(8_000) as u32,
            at,
        ));
    }
    assert_eq!(ch.record(&events).await.unwrap(), 6_000);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docker/grafana/provisioning/dashboards");
    let (from, to) = (
        now.minus(Duration::from_secs(7 * 86_400)).as_micros() / 1_000_000,
        now.plus(Duration::from_secs(3_600)).as_micros() / 1_000_000,
    );
    let mut seen = Vec::new();
    for file in ["evaluations.json", "cost-and-latency.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(dash["templating"]["list"][0]["name"], "workspace", "{file}");
        for panel in dash["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            let kind = panel["type"].as_str().unwrap();
            // The data source's formats (grafana sqlds): 0 time series, 1 table.
            let format = if kind == "timeseries" { 0 } else { 1 };
            assert_eq!(panel["targets"][0]["format"], format, "{file}: {title}");
            assert_eq!(
                panel["datasource"]["uid"], "sprintlens-clickhouse",
                "{file}: {title} uses the provisioned data source"
            );
            let (_, _, columns) = EXPECTED
                .iter()
                .find(|(f, t, _)| *f == file && *t == title)
                .unwrap_or_else(|| panic!("{file}: panel {title:?} is not listed in EXPECTED"));
            for target in panel["targets"].as_array().unwrap() {
                let sql = expand(target["rawSql"].as_str().unwrap(), ws, from, to);
                let body = ch
                    .client()
                    .query(&sql)
                    .fetch_bytes("JSON")
                    .unwrap()
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("{file}: {title}: {e}\n{sql}"));
                let result: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let names: Vec<&str> = result["meta"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["name"].as_str().unwrap())
                    .collect();
                assert_eq!(&names, columns, "{file}: {title}");
                let rows = result["rows"].as_u64().unwrap();
                assert!(rows > 0, "{file}: {title} returned no rows");
                if kind == "timeseries" {
                    let t = result["meta"][0]["type"].as_str().unwrap();
                    assert!(t.starts_with("DateTime"), "{file}: {title}: time is {t}");
                }
                println!("{file}: {title}: {rows} rows");
                seen.push((file, title.to_string()));
            }
        }
    }
    assert_eq!(seen.len(), EXPECTED.len(), "every expected panel was found");
}
