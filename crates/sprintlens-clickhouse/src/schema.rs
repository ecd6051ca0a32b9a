//! The ClickHouse schema as versioned migrations: one DDL set for a single node and one for a
//! cluster (`ON CLUSTER`, Replicated engines, Distributed tables), chosen by `[analytics] cluster`.
//!
//! Every statement is idempotent (`IF NOT EXISTS`), so a migration interrupted between its DDL and
//! its bookkeeping row is simply applied again.

/// One migration: a version, a name and its statements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Applied in increasing order.
    pub version: u32,
    /// What it does.
    pub name: &'static str,
    /// DDL statements, in order.
    pub statements: Vec<String>,
}

/// What the DDL depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaOptions {
    /// Days raw events are kept (0 = for ever).
    pub retention_days: u32,
    /// `non_replicated_deduplication_window` (single node) / `replicated_deduplication_window`.
    pub dedup_window: u64,
    /// The cluster, for the replicated DDL set.
    pub cluster: Option<String>,
}

/// The quantile levels every rollup keeps (t-digest states).
pub const LEVELS: &str = "0.5, 0.95, 0.99";

/// The bookkeeping table.
pub const MIGRATIONS_TABLE: &str = "sprintlens_migrations";

struct Ddl<'a> {
    o: &'a SchemaOptions,
}

impl Ddl<'_> {
    /// `ON CLUSTER c` or nothing.
    fn on(&self) -> String {
        match &self.o.cluster {
            Some(c) => format!(" ON CLUSTER `{c}`"),
            None => String::new(),
        }
    }
    /// Where rows are stored: the table itself on one node, `<table>_local` on a cluster.
    fn local(&self, table: &str) -> String {
        match &self.o.cluster {
            Some(_) => format!("{table}_local"),
            None => table.to_string(),
        }
    }
    fn engine(&self, kind: &str, table: &str) -> String {
        match &self.o.cluster {
            Some(_) => format!(
                "Replicated{kind}('/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}')"
            ),
            None => kind.to_string(),
        }
    }
    fn dedup(&self) -> String {
        match &self.o.cluster {
            Some(_) => format!("replicated_deduplication_window = {}", self.o.dedup_window),
            None => format!(
                "non_replicated_deduplication_window = {}",
                self.o.dedup_window
            ),
        }
    }
    fn ttl(&self, column: &str) -> String {
        match self.o.retention_days {
            0 => String::new(),
            d => format!("\nTTL toDateTime({column}) + INTERVAL {d} DAY DELETE"),
        }
    }
    /// On a cluster, the Distributed table that queries and inserts go through.
    fn distributed(&self, table: &str, sharding: &str) -> Vec<String> {
        match &self.o.cluster {
            Some(c) => vec![format!(
                "CREATE TABLE IF NOT EXISTS {table}{on} AS {local}\n\
                 ENGINE = Distributed(`{c}`, currentDatabase(), {local}, {sharding})",
                on = self.on(),
                local = self.local(table),
            )],
            None => vec![],
        }
    }
}

/// Every migration, in order.
pub fn migrations(o: &SchemaOptions) -> Vec<Migration> {
    let d = Ddl { o };
    let on = d.on();
    let mut events = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    project UUID,
    run UUID,
    id UUID,
    dataset_item Nullable(UUID),
    agent Nullable(UUID),
    metric LowCardinality(String),
    score Float64 CODEC(Gorilla, ZSTD(1)),
    passed Bool,
    latency_ms UInt32 CODEC(T64, ZSTD(1)),
    cost Int64 CODEC(T64, ZSTD(1)),
    error Nullable(String) CODEC(ZSTD(3)),
    created_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    INDEX run_idx run TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX id_idx id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {engine}
PARTITION BY toYYYYMM(created_at)
ORDER BY (workspace, project, created_at, id){ttl}
SETTINGS {dedup}",
            t = d.local("eval_results"),
            engine = d.engine("ReplacingMergeTree", "eval_results"),
            ttl = d.ttl("created_at"),
            dedup = d.dedup(),
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    project UUID,
    id UUID,
    agent Nullable(UUID),
    conversation Nullable(UUID),
    model LowCardinality(String),
    input_tokens UInt64 CODEC(T64, ZSTD(1)),
    output_tokens UInt64 CODEC(T64, ZSTD(1)),
    cost Int64 CODEC(T64, ZSTD(1)),
    latency_ms UInt32 CODEC(T64, ZSTD(1)),
    created_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    INDEX model_idx model TYPE set(256) GRANULARITY 4,
    INDEX id_idx id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {engine}
PARTITION BY toYYYYMM(created_at)
ORDER BY (workspace, project, created_at, id){ttl}
SETTINGS {dedup}",
            t = d.local("usage_events"),
            engine = d.engine("ReplacingMergeTree", "usage_events"),
            ttl = d.ttl("created_at"),
            dedup = d.dedup(),
        ),
    ];
    events.extend(d.distributed("eval_results", "cityHash64(workspace)"));
    events.extend(d.distributed("usage_events", "cityHash64(workspace)"));

    // Rollups: AggregatingMergeTree tables fed by materialized views on the local event tables.
    // Counts and sums are plain sums (exact); quantiles are t-digest states.
    let mut rollups = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    run UUID,
    metric LowCardinality(String),
    results SimpleAggregateFunction(sum, UInt64),
    passed SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    score_sum SimpleAggregateFunction(sum, Float64),
    score_min SimpleAggregateFunction(min, Float64),
    score_max SimpleAggregateFunction(max, Float64),
    cost SimpleAggregateFunction(sum, Int64),
    score_q AggregateFunction(quantilesTDigest({LEVELS}), Float64),
    latency_q AggregateFunction(quantilesTDigest({LEVELS}), UInt32)
)
ENGINE = {engine}
ORDER BY (workspace, run, metric)
SETTINGS {dedup}",
            t = d.local("eval_run_summary"),
            engine = d.engine("AggregatingMergeTree", "eval_run_summary"),
            dedup = d.dedup(),
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {mv}{on} TO {t} AS
SELECT workspace, run, metric,
    count() AS results, countIf(passed) AS passed, countIf(error IS NOT NULL) AS errors,
    sum(score) AS score_sum, min(score) AS score_min, max(score) AS score_max, sum(cost) AS cost,
    quantilesTDigestState({LEVELS})(score) AS score_q,
    quantilesTDigestState({LEVELS})(latency_ms) AS latency_q
FROM {src}
GROUP BY workspace, run, metric",
            mv = d.local("eval_run_summary_mv"),
            t = d.local("eval_run_summary"),
            src = d.local("eval_results"),
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    metric LowCardinality(String),
    project UUID,
    hour DateTime('UTC'),
    results SimpleAggregateFunction(sum, UInt64),
    passed SimpleAggregateFunction(sum, UInt64),
    score_sum SimpleAggregateFunction(sum, Float64)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace, metric, project, hour){ttl}
SETTINGS {dedup}",
            t = d.local("eval_hourly"),
            engine = d.engine("AggregatingMergeTree", "eval_hourly"),
            ttl = d.ttl("hour"),
            dedup = d.dedup(),
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {mv}{on} TO {t} AS
SELECT workspace, metric, project, toStartOfHour(created_at) AS hour,
    count() AS results, countIf(passed) AS passed, sum(score) AS score_sum
FROM {src}
GROUP BY workspace, metric, project, hour",
            mv = d.local("eval_hourly_mv"),
            t = d.local("eval_hourly"),
            src = d.local("eval_results"),
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    project UUID,
    hour DateTime('UTC'),
    model LowCardinality(String),
    agent Nullable(UUID),
    events SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    cost SimpleAggregateFunction(sum, Int64),
    latency_q AggregateFunction(quantilesTDigest({LEVELS}), UInt32)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace, project, hour, model, assumeNotNull(agent)){ttl}
SETTINGS allow_nullable_key = 1, {dedup}",
            t = d.local("usage_hourly"),
            engine = d.engine("AggregatingMergeTree", "usage_hourly"),
            ttl = d.ttl("hour"),
            dedup = d.dedup(),
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {mv}{on} TO {t} AS
SELECT workspace, project, toStartOfHour(created_at) AS hour, model, agent,
    count() AS events, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cost) AS cost, quantilesTDigestState({LEVELS})(latency_ms) AS latency_q
FROM {src}
GROUP BY workspace, project, hour, model, agent",
            mv = d.local("usage_hourly_mv"),
            t = d.local("usage_hourly"),
            src = d.local("usage_events"),
        ),
    ];
    // Latency over long ranges without a project filter merges far fewer t-digest states here
    // (no project and agent dimensions).
    rollups.push(format!(
        "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    model LowCardinality(String),
    hour DateTime('UTC'),
    events SimpleAggregateFunction(sum, UInt64),
    latency_q AggregateFunction(quantilesTDigest({LEVELS}), UInt32)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(hour)
ORDER BY (workspace, hour, model){ttl}
SETTINGS {dedup}",
        t = d.local("usage_latency_hourly"),
        engine = d.engine("AggregatingMergeTree", "usage_latency_hourly"),
        ttl = d.ttl("hour"),
        dedup = d.dedup(),
    ));
    rollups.push(format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {mv}{on} TO {t} AS
SELECT workspace, model, toStartOfHour(created_at) AS hour,
    count() AS events, quantilesTDigestState({LEVELS})(latency_ms) AS latency_q
FROM {src}
GROUP BY workspace, model, hour",
        mv = d.local("usage_latency_hourly_mv"),
        t = d.local("usage_latency_hourly"),
        src = d.local("usage_events"),
    ));
    rollups.extend(d.distributed("eval_run_summary", "cityHash64(workspace)"));
    rollups.extend(d.distributed("usage_latency_hourly", "cityHash64(workspace)"));
    rollups.extend(d.distributed("eval_hourly", "cityHash64(workspace)"));
    rollups.extend(d.distributed("usage_hourly", "cityHash64(workspace)"));

    // Latency over ranges of days (dashboards default to 7–30 days): one table holding an hour grain
    // and a day grain of the same rollup, so a query merges one state per whole day and model, and
    // per hour only at the two partial days, in one scan. 256-row granules: a query reads whole
    // granules, and these rows are mostly t-digest states. It replaces `usage_latency_hourly`.
    // Existing events are rolled up by the migration itself: apply it while nothing is being
    // ingested (an insert between the views and the backfill would be counted twice in this
    // rollup), as with ClickHouse's own POPULATE.
    let grains = [("hour", 0, "toStartOfHour"), ("day", 1, "toStartOfDay")];
    let select = |grain: u8, bucket: &str| {
        format!(
            "SELECT workspace, toUInt8({grain}) AS grain, {bucket}(created_at) AS start, model,
    count() AS events, quantilesTDigestState({LEVELS})(latency_ms) AS latency_q
FROM {src}
GROUP BY workspace, grain, start, model",
            src = d.local("usage_events"),
        )
    };
    let mut latency = vec![format!(
        "CREATE TABLE IF NOT EXISTS {t}{on} (
    workspace UUID,
    grain UInt8,
    start DateTime('UTC'),
    model LowCardinality(String),
    events SimpleAggregateFunction(sum, UInt64),
    latency_q AggregateFunction(quantilesTDigest({LEVELS}), UInt32)
)
ENGINE = {engine}
PARTITION BY toYYYYMM(start)
ORDER BY (workspace, grain, start, model){ttl}
SETTINGS index_granularity = 256, {dedup}",
        t = d.local("usage_latency"),
        engine = d.engine("AggregatingMergeTree", "usage_latency"),
        ttl = d.ttl("start"),
        dedup = d.dedup(),
    )];
    for (name, grain, bucket) in grains {
        latency.push(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {mv}{on} TO {t} AS\n{select}",
            mv = d.local(&format!("usage_latency_{name}_mv")),
            t = d.local("usage_latency"),
            select = select(grain, bucket),
        ));
    }
    latency.extend(d.distributed("usage_latency", "cityHash64(workspace)"));
    // The rollup of the events already stored, rebuilt whole (so a re-applied, interrupted migration
    // counts nothing twice). On a cluster each shard holds its own events: run these statements on
    // every shard (documented in docs/adapters/clickhouse.md).
    if o.cluster.is_none() {
        latency.push(format!("TRUNCATE TABLE {}", d.local("usage_latency")));
        for (_, grain, bucket) in grains {
            latency.push(format!(
                "INSERT INTO {t}\n{select}",
                t = d.local("usage_latency"),
                select = select(grain, bucket),
            ));
        }
    }
    // The hourly rollup it replaces.
    latency.push(format!(
        "DROP VIEW IF EXISTS {}{on}",
        d.local("usage_latency_hourly_mv")
    ));
    if o.cluster.is_some() {
        latency.push(format!("DROP TABLE IF EXISTS usage_latency_hourly{on}"));
    }
    latency.push(format!(
        "DROP TABLE IF EXISTS {}{on}",
        d.local("usage_latency_hourly")
    ));

    let regranulate = match o.cluster {
        None => regranulate(rollups.iter()),
        // Replicated tables keep their coordination path under their first name: on a cluster,
        // rebuild them by hand (docs/adapters/clickhouse.md).
        Some(_) => Vec::new(),
    };

    vec![
        Migration {
            version: 1,
            name: "event tables (eval_results, usage_events)",
            statements: events,
        },
        Migration {
            version: 2,
            name: "rollups (eval_run_summary, eval_hourly, usage_hourly, usage_latency_hourly) and their views",
            statements: rollups,
        },
        Migration {
            version: 3,
            name: "latency rollup with hour and day grains (usage_latency), replacing usage_latency_hourly",
            statements: latency,
        },
        Migration {
            version: 4,
            name: "eval_run_summary rebuilt with small granules",
            statements: regranulate,
        },
    ]
}

/// Rows per granule of the rollups whose t-digest states are read and that were created with the
/// default of 8,192 (`usage_latency` is created with 256). A query reads whole granules, and one
/// such granule held every run's states: `eval_summary` of one run deserialised the states of all
/// runs (12 ms → 5.5 ms with 64-row granules on the 10M-row benchmark). `eval_hourly` and
/// `usage_hourly` keep the default: their queries sum plain columns over long ranges, which small
/// granules slow down (a 29-day cost breakdown: 6–7 ms → 9–11 ms at 256).
const ROLLUP_GRANULES: &[(&str, u32)] = &[("eval_run_summary", 64)];

/// The statements that rebuild each rollup of [`ROLLUP_GRANULES`] with its granule size: the view
/// dropped, the rows copied into a table created like it, the two exchanged, the view created again.
/// Every step can run again after an interruption (apply while nothing is ingested: rows inserted
/// while the view is gone are not rolled up). Built from the tables' and views' own DDL in
/// `earlier`, so a rebuilt table has the same columns, engine, key and settings.
fn regranulate<'a>(earlier: impl Iterator<Item = &'a String> + Clone) -> Vec<String> {
    let mut out = Vec::new();
    for (table, granule) in ROLLUP_GRANULES {
        let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
        let view = format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS");
        let ddl = earlier
            .clone()
            .find(|s| s.starts_with(&create))
            .unwrap_or_else(|| panic!("the DDL of {table}"));
        let mv = earlier
            .clone()
            .find(|s| s.starts_with(&view))
            .unwrap_or_else(|| panic!("the view of {table}"));
        let rebuild = format!("{table}_rebuild");
        let new_ddl = ddl
            .replacen(&create, &format!("CREATE TABLE {rebuild} ("), 1)
            .replacen(
                "\nSETTINGS ",
                &format!("\nSETTINGS index_granularity = {granule}, "),
                1,
            );
        assert!(
            new_ddl.contains("index_granularity"),
            "{table}: no SETTINGS"
        );
        out.extend([
            format!("DROP VIEW IF EXISTS {table}_mv"),
            format!("DROP TABLE IF EXISTS {rebuild}"),
            new_ddl,
            format!("INSERT INTO {rebuild} SELECT * FROM {table}"),
            format!("EXCHANGE TABLES {table} AND {rebuild}"),
            format!("DROP TABLE {rebuild}"),
            mv.clone(),
        ]);
    }
    out
}

/// The bookkeeping table's DDL.
pub fn migrations_table(o: &SchemaOptions) -> String {
    let d = Ddl { o };
    format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{on} (
    version UInt32,
    name String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {engine}
ORDER BY version",
        on = d.on(),
        engine = d.engine("ReplacingMergeTree", MIGRATIONS_TABLE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_and_cluster_sets_differ_only_where_they_must() {
        let single = migrations(&SchemaOptions {
            retention_days: 0,
            dedup_window: 1000,
            cluster: None,
        });
        let all = single
            .iter()
            .flat_map(|m| m.statements.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("non_replicated_deduplication_window = 1000"));
        assert!(!all.contains("ON CLUSTER") && !all.contains("Replicated"));
        assert!(!all.contains("TTL"));
        let cluster = migrations(&SchemaOptions {
            retention_days: 90,
            dedup_window: 100,
            cluster: Some("analytics".into()),
        });
        let all = cluster
            .iter()
            .flat_map(|m| m.statements.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("ON CLUSTER `analytics`"));
        assert!(all.contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/eval_results', '{replica}')"));
        assert!(all.contains("ENGINE = Distributed(`analytics`, currentDatabase(), eval_results_local, cityHash64(workspace))"));
        assert!(all.contains("TTL toDateTime(created_at) + INTERVAL 90 DAY DELETE"));
        assert!(all.contains("replicated_deduplication_window = 100"));
        assert!(all.contains("TO eval_run_summary_local"));
        assert!(
            cluster[3].statements.is_empty(),
            "rebuilt by hand on a cluster"
        );
    }

    #[test]
    fn every_rollup_is_rebuilt_with_its_granule_and_its_view() {
        let single = migrations(&SchemaOptions {
            retention_days: 30,
            dedup_window: 1000,
            cluster: None,
        });
        let rebuild = &single[3].statements;
        assert_eq!(rebuild.len(), ROLLUP_GRANULES.len() * 7);
        for (table, granule) in ROLLUP_GRANULES {
            let create = rebuild
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE {table}_rebuild (")))
                .unwrap();
            assert!(
                create.contains(&format!("\nSETTINGS index_granularity = {granule}, ")),
                "{create}"
            );
            // Otherwise the table as created before (columns, engine, key, TTL).
            let before = single[1]
                .statements
                .iter()
                .chain(&single[2].statements)
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (")))
                .unwrap();
            assert_eq!(
                create.replacen(&format!("index_granularity = {granule}, "), "", 1),
                before.replacen(
                    &format!("CREATE TABLE IF NOT EXISTS {table} ("),
                    &format!("CREATE TABLE {table}_rebuild ("),
                    1
                )
            );
            let at = |needle: String| rebuild.iter().position(|s| *s == needle).unwrap();
            let view = rebuild
                .iter()
                .position(|s| {
                    s.starts_with(&format!(
                        "CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS"
                    ))
                })
                .unwrap();
            assert!(
                at(format!("DROP VIEW IF EXISTS {table}_mv"))
                    < at(format!("INSERT INTO {table}_rebuild SELECT * FROM {table}"))
            );
            assert!(at(format!("EXCHANGE TABLES {table} AND {table}_rebuild")) < view);
        }
    }
}
