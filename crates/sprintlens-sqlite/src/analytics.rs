//! `Analytics` on SQLite: two append-only event tables and SQL aggregations; quantiles are exact
//! (nearest rank) over the sorted values.

use std::collections::BTreeMap;

use rusqlite::{Row, params};
use sprintlens_core::analytics::{EventCursor, validate_batch};
use sprintlens_core::{
    Analytics, AnalyticsEvent, BreakdownQuery, Cost, CostRow, Error, EvalResult, EvalRunId,
    EvalSummary, EventKind, GroupBy, LatencyQuery, LatencySummary, MetricSummary, Quantiles,
    Result, SeriesPoint, SeriesQuery, Timestamp, UsageEvent, WorkspaceId, async_trait,
};

use crate::{BACKEND, SqliteStore, classify, uuid_text};

fn id<T: std::str::FromStr<Err = Error>>(s: &str) -> rusqlite::Result<T> {
    s.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_id<T: std::str::FromStr<Err = Error>>(s: Option<String>) -> rusqlite::Result<Option<T>> {
    s.as_deref().map(id).transpose()
}

pub(crate) fn eval_row(r: &Row<'_>) -> rusqlite::Result<AnalyticsEvent> {
    Ok(AnalyticsEvent::EvalResult(EvalResult {
        id: id(&r.get::<_, String>(0)?)?,
        workspace: id(&r.get::<_, String>(1)?)?,
        project: id(&r.get::<_, String>(2)?)?,
        run: id(&r.get::<_, String>(3)?)?,
        dataset_item: opt_id(r.get(4)?)?,
        agent: opt_id(r.get(5)?)?,
        metric: r.get(6)?,
        score: r.get(7)?,
        passed: r.get(8)?,
        latency_ms: r.get(9)?,
        cost: Cost(r.get(10)?),
        error: r.get(11)?,
        created_at: Timestamp::from_micros(r.get(12)?),
    }))
}

pub(crate) fn usage_row(r: &Row<'_>) -> rusqlite::Result<AnalyticsEvent> {
    Ok(AnalyticsEvent::Usage(UsageEvent {
        id: id(&r.get::<_, String>(0)?)?,
        workspace: id(&r.get::<_, String>(1)?)?,
        project: id(&r.get::<_, String>(2)?)?,
        agent: opt_id(r.get(3)?)?,
        conversation: opt_id(r.get(4)?)?,
        model: r.get(5)?,
        input_tokens: r.get::<_, i64>(6)? as u64,
        output_tokens: r.get::<_, i64>(7)? as u64,
        cost: Cost(r.get(8)?),
        latency_ms: r.get(9)?,
        created_at: Timestamp::from_micros(r.get(10)?),
    }))
}

/// The inserts of `record` inside an open write transaction; returns the events newly stored.
pub(crate) fn record_tx(tx: &rusqlite::Transaction<'_>, events: &[AnalyticsEvent]) -> Result<u64> {
    let mut eval = tx
        .prepare_cached(
            "INSERT INTO eval_results (id, workspace, project, run, dataset_item, agent,
                metric, score, passed, latency_ms, cost, error, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (id) DO NOTHING",
        )
        .map_err(|e| classify("record", e))?;
    let mut usage = tx
        .prepare_cached(
            "INSERT INTO usage_events (id, workspace, project, agent, conversation, model,
                input_tokens, output_tokens, cost, latency_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (id) DO NOTHING",
        )
        .map_err(|e| classify("record", e))?;
    let mut inserted = 0u64;
    for e in events {
        let n = match e {
            AnalyticsEvent::EvalResult(e) => eval.execute(params![
                uuid_text(e.id),
                uuid_text(e.workspace),
                uuid_text(e.project),
                uuid_text(e.run),
                e.dataset_item.map(uuid_text),
                e.agent.map(uuid_text),
                e.metric,
                e.score,
                e.passed,
                e.latency_ms,
                e.cost.0,
                e.error,
                e.created_at.as_micros(),
            ]),
            AnalyticsEvent::Usage(e) => usage.execute(params![
                uuid_text(e.id),
                uuid_text(e.workspace),
                uuid_text(e.project),
                e.agent.map(uuid_text),
                e.conversation.map(uuid_text),
                e.model,
                e.input_tokens as i64,
                e.output_tokens as i64,
                e.cost.0,
                e.latency_ms,
                e.created_at.as_micros(),
            ]),
        }
        .map_err(|e| classify("record", e))?;
        inserted += n as u64;
    }
    Ok(inserted)
}

#[async_trait]
impl Analytics for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        validate_batch(events)?;
        let events = events.to_vec();
        self.write("record", move |tx| record_tx(tx, &events)).await
    }

    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        type Acc = (Vec<f64>, Vec<f64>, u64, u64, i64);
        let per_metric: BTreeMap<String, Acc> = self
            .read("eval_summary", move |c| {
                let mut st = c.prepare_cached(
                    "SELECT metric, score, passed, latency_ms, cost, error IS NOT NULL
                     FROM eval_results WHERE workspace = ?1 AND run = ?2",
                )?;
                let mut rows = st.query(params![uuid_text(workspace), uuid_text(run)])?;
                let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
                while let Some(r) = rows.next()? {
                    let e = acc.entry(r.get(0)?).or_default();
                    e.0.push(r.get(1)?);
                    e.1.push(r.get::<_, i64>(3)? as f64);
                    e.2 += u64::from(r.get::<_, bool>(2)?);
                    e.3 += u64::from(r.get::<_, bool>(5)?);
                    e.4 += r.get::<_, i64>(4)?;
                }
                Ok(acc)
            })
            .await?;
        let metrics = per_metric
            .into_iter()
            .map(|(metric, (mut scores, mut lat, passed, errors, cost))| {
                let count = scores.len() as u64;
                let sum: f64 = scores.iter().sum();
                scores.sort_by(f64::total_cmp);
                lat.sort_by(f64::total_cmp);
                MetricSummary {
                    metric,
                    count,
                    passed,
                    errors,
                    pass_rate: passed as f64 / count as f64,
                    mean_score: sum / count as f64,
                    min_score: scores[0],
                    max_score: scores[scores.len() - 1],
                    score: Quantiles::nearest_rank(&scores),
                    latency_ms: Quantiles::nearest_rank(&lat),
                    cost: Cost(cost),
                }
            })
            .collect();
        Ok(EvalSummary { run, metrics })
    }

    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        query.range.validate()?;
        let q = query.clone();
        self.read("metric_series", move |c| {
            let width = q.bucket.micros();
            let mut st = c.prepare_cached(
                "SELECT (created_at - (created_at % ?1 + ?1) % ?1) AS b, COUNT(*), SUM(passed), AVG(score)
                 FROM eval_results
                 WHERE workspace = ?2 AND metric = ?3 AND created_at >= ?4 AND created_at < ?5
                   AND (?6 IS NULL OR project = ?6)
                 GROUP BY b ORDER BY b",
            )?;
            let rows = st.query_map(
                params![
                    width,
                    uuid_text(workspace),
                    q.metric,
                    q.range.from.as_micros(),
                    q.range.to.as_micros(),
                    q.project.map(uuid_text)
                ],
                |r| {
                    Ok(SeriesPoint {
                        start: Timestamp::from_micros(r.get(0)?),
                        count: r.get::<_, i64>(1)? as u64,
                        passed: r.get::<_, i64>(2)? as u64,
                        mean_score: r.get(3)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        query.range.validate()?;
        let q = query.clone();
        self.read("cost_breakdown", move |c| {
            // The grouping column comes from a closed enum, never from input text.
            let column = match q.group_by {
                GroupBy::Model => "model",
                GroupBy::Agent => "COALESCE(agent, '-')",
                GroupBy::Project => "project",
            };
            let sql = format!(
                "SELECT {column} AS k, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost)
                 FROM usage_events
                 WHERE workspace = ?1 AND created_at >= ?2 AND created_at < ?3
                   AND (?4 IS NULL OR project = ?4)
                 GROUP BY k ORDER BY SUM(cost) DESC, k"
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    uuid_text(workspace),
                    q.range.from.as_micros(),
                    q.range.to.as_micros(),
                    q.project.map(uuid_text)
                ],
                |r| {
                    Ok(CostRow {
                        key: r.get(0)?,
                        events: r.get::<_, i64>(1)? as u64,
                        input_tokens: r.get::<_, i64>(2)? as u64,
                        output_tokens: r.get::<_, i64>(3)? as u64,
                        cost: Cost(r.get(4)?),
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        query.range.validate()?;
        let q = query.clone();
        let values: Vec<f64> = self
            .read("latency", move |c| {
                let mut st = c.prepare_cached(
                    "SELECT latency_ms FROM usage_events
                     WHERE workspace = ?1 AND created_at >= ?2 AND created_at < ?3
                       AND (?4 IS NULL OR project = ?4) AND (?5 IS NULL OR model = ?5)
                     ORDER BY latency_ms",
                )?;
                let rows = st.query_map(
                    params![
                        uuid_text(workspace),
                        q.range.from.as_micros(),
                        q.range.to.as_micros(),
                        q.project.map(uuid_text),
                        q.model
                    ],
                    |r| Ok(r.get::<_, i64>(0)? as f64),
                )?;
                rows.collect()
            })
            .await?;
        Ok(LatencySummary {
            count: values.len() as u64,
            latency_ms: Quantiles::nearest_rank(&values),
        })
    }

    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        sprintlens_core::check_scan_limit(limit)?;
        self.read("event_scan", move |c| {
            let (t, i) = match after {
                Some(cur) => (cur.created_at.as_micros(), uuid_text(cur.id)),
                None => (i64::MIN, String::new()),
            };
            let (sql, map): (&str, fn(&Row<'_>) -> rusqlite::Result<AnalyticsEvent>) = match kind {
                EventKind::EvalResult => (
                    "SELECT id, workspace, project, run, dataset_item, agent, metric, score, passed,
                        latency_ms, cost, error, created_at
                     FROM eval_results WHERE (created_at, id) > (?1, ?2)
                     ORDER BY created_at, id LIMIT ?3",
                    eval_row,
                ),
                EventKind::Usage => (
                    "SELECT id, workspace, project, agent, conversation, model, input_tokens,
                        output_tokens, cost, latency_ms, created_at
                     FROM usage_events WHERE (created_at, id) > (?1, ?2)
                     ORDER BY created_at, id LIMIT ?3",
                    usage_row,
                ),
            };
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map(params![t, i, limit as i64], map)?;
            rows.collect()
        })
        .await
    }

    async fn count(&self, kind: EventKind) -> Result<u64> {
        let sql = match kind {
            EventKind::EvalResult => "SELECT COUNT(*) FROM eval_results",
            EventKind::Usage => "SELECT COUNT(*) FROM usage_events",
        };
        self.read("event_count", move |c| {
            c.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }
}
