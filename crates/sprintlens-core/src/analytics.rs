//! The [`Analytics`] port: evaluation results and usage events, and the aggregations over them.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{
    AgentId, ConversationId, DatasetItemId, EvalRunId, EventId, ProjectId, Timestamp, WorkspaceId,
};
use crate::validate::{self, MAX_SHORT_TEXT_BYTES};

/// Money in nano-US-dollars (10⁻⁹ USD), so sums are exact on every backend.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cost(pub i64);

impl Cost {
    /// From US dollars (rounded to the nearest nano-dollar).
    pub fn from_usd(usd: f64) -> Cost {
        Cost((usd * 1e9).round() as i64)
    }
    /// In US dollars.
    pub fn as_usd(&self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cost(${:.9})", self.as_usd())
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.as_usd())
    }
}

/// One evaluation result: a metric scored on one item of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Event id (UUIDv7): a replay with the same id is ignored.
    pub id: EventId,
    /// The tenant.
    pub workspace: WorkspaceId,
    /// The project.
    pub project: ProjectId,
    /// The run.
    pub run: EvalRunId,
    /// The dataset item scored, if any.
    pub dataset_item: Option<DatasetItemId>,
    /// The agent evaluated, if any.
    pub agent: Option<AgentId>,
    /// Metric name (`"accuracy"`, `"faithfulness"`, …).
    pub metric: String,
    /// The score (finite).
    pub score: f64,
    /// Whether the item passed.
    pub passed: bool,
    /// Time to produce the scored output, in milliseconds.
    pub latency_ms: u32,
    /// Cost of producing and scoring it.
    pub cost: Cost,
    /// The error, if the item failed to run.
    pub error: Option<String>,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// One model call's token usage and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Event id (UUIDv7): a replay with the same id is ignored.
    pub id: EventId,
    /// The tenant.
    pub workspace: WorkspaceId,
    /// The project.
    pub project: ProjectId,
    /// The agent, if any.
    pub agent: Option<AgentId>,
    /// The conversation, if any.
    pub conversation: Option<ConversationId>,
    /// The model called.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost of the call.
    pub cost: Cost,
    /// Latency of the call, in milliseconds.
    pub latency_ms: u32,
    /// When it happened.
    pub created_at: Timestamp,
}

/// An analytics event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnalyticsEvent {
    /// An evaluation result.
    EvalResult(EvalResult),
    /// A usage event.
    Usage(UsageEvent),
}

/// Largest number of events one `record` call accepts.
pub const MAX_EVENT_BATCH: usize = 100_000;
/// How far in the future an event time may lie (clock skew allowance).
pub const MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl AnalyticsEvent {
    /// The event id.
    pub fn id(&self) -> EventId {
        match self {
            AnalyticsEvent::EvalResult(e) => e.id,
            AnalyticsEvent::Usage(e) => e.id,
        }
    }
    /// The workspace.
    pub fn workspace(&self) -> WorkspaceId {
        match self {
            AnalyticsEvent::EvalResult(e) => e.workspace,
            AnalyticsEvent::Usage(e) => e.workspace,
        }
    }
    /// When it happened.
    pub fn created_at(&self) -> Timestamp {
        match self {
            AnalyticsEvent::EvalResult(e) => e.created_at,
            AnalyticsEvent::Usage(e) => e.created_at,
        }
    }
    /// Which stream it belongs to.
    pub fn kind(&self) -> EventKind {
        match self {
            AnalyticsEvent::EvalResult(_) => EventKind::EvalResult,
            AnalyticsEvent::Usage(_) => EventKind::Usage,
        }
    }

    /// Checks every field, naming the first invalid one. `now` bounds event times in the future.
    pub fn validate(&self, now: Timestamp) -> Result<()> {
        let limit = now.plus(MAX_FUTURE_SKEW);
        if self.created_at() > limit {
            return Err(Error::invalid(
                "event.created_at",
                "lies more than 24 hours in the future",
            ));
        }
        // A UUIDv7 id carries its own time; one far in the future marks a broken clock or a forged
        // id (and would sort after every real event in scans).
        if let Some(ts) = self.id().as_uuid().get_timestamp() {
            let (secs, nanos) = ts.to_unix();
            let micros = (secs as i64)
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(nanos / 1_000));
            if micros > limit.as_micros() {
                return Err(Error::invalid(
                    "event.id",
                    "its UUIDv7 time lies more than 24 hours in the future",
                ));
            }
        }
        match self {
            AnalyticsEvent::EvalResult(e) => {
                validate::name("eval_result.metric", &e.metric)?;
                validate::finite("eval_result.score", e.score)?;
                if e.cost.0 < 0 {
                    return Err(Error::invalid("eval_result.cost", "must not be negative"));
                }
                validate::opt_text("eval_result.error", &e.error, MAX_SHORT_TEXT_BYTES)
            }
            AnalyticsEvent::Usage(e) => {
                validate::name("usage.model", &e.model)?;
                if e.cost.0 < 0 {
                    return Err(Error::invalid("usage.cost", "must not be negative"));
                }
                if e.input_tokens > i64::MAX as u64 || e.output_tokens > i64::MAX as u64 {
                    return Err(Error::invalid("usage.tokens", "too many tokens"));
                }
                Ok(())
            }
        }
    }
}

/// The two event streams.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Evaluation results.
    EvalResult,
    /// Usage events.
    Usage,
}

/// How a backend computes [`Quantiles`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantileMethod {
    /// Exact: the value at rank ⌈p·n⌉ of the sorted values.
    NearestRank,
    /// A sketch (e.g. t-digest): the value returned lies between the values at ranks
    /// `(p ± rank_error)·n` (± 1), computed in single precision.
    Approximate {
        /// Largest error in rank, as a fraction of the count.
        rank_error: f64,
    },
}

impl QuantileMethod {
    /// Whether `got` is an acceptable `p`-quantile of `sorted` under this method.
    pub fn accepts(&self, sorted: &[f64], p: f64, got: f64) -> bool {
        if sorted.is_empty() {
            return got == 0.0;
        }
        let n = sorted.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        match self {
            QuantileMethod::NearestRank => sorted[rank] == got,
            QuantileMethod::Approximate { rank_error } => {
                let slack = (rank_error * n as f64).ceil() as usize + 1;
                let (lo, hi) = (
                    sorted[rank.saturating_sub(slack)],
                    sorted[(rank + slack).min(n - 1)],
                );
                // Single precision: allow its rounding at either end.
                let eps = |x: f64| x.abs() * 1e-6 + 1e-9;
                got >= lo - eps(lo) && got <= hi + eps(hi)
            }
        }
    }
}

/// Quantiles of a distribution, by nearest rank on the backend's method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of sorted values (zero when empty).
    pub fn nearest_rank(sorted: &[f64]) -> Quantiles {
        let q = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = (p * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Quantiles {
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// Per-metric summary of an evaluation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Metric name.
    pub metric: String,
    /// Results.
    pub count: u64,
    /// Results that passed.
    pub passed: u64,
    /// Results with an error.
    pub errors: u64,
    /// `passed / count`.
    pub pass_rate: f64,
    /// Mean score.
    pub mean_score: f64,
    /// Lowest score.
    pub min_score: f64,
    /// Highest score.
    pub max_score: f64,
    /// Score quantiles.
    pub score: Quantiles,
    /// Latency quantiles (ms).
    pub latency_ms: Quantiles,
    /// Total cost.
    pub cost: Cost,
}

/// Summary of an evaluation run, one entry per metric, ordered by metric name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The run.
    pub run: EvalRunId,
    /// Per metric.
    pub metrics: Vec<MetricSummary>,
}

/// Time bucket of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Bucket {
    /// Length in microseconds.
    pub fn micros(&self) -> i64 {
        match self {
            Bucket::Hour => 3_600_000_000,
            Bucket::Day => 86_400_000_000,
        }
    }
    /// The start of the bucket holding `t`.
    pub fn floor(&self, t: Timestamp) -> Timestamp {
        Timestamp::from_micros(t.as_micros().div_euclid(self.micros()) * self.micros())
    }
}

/// A time range `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub from: Timestamp,
    /// Exclusive end.
    pub to: Timestamp,
}

impl TimeRange {
    /// Checks `from < to`.
    pub fn validate(&self) -> Result<()> {
        if self.from >= self.to {
            return Err(Error::invalid("range", "`from` must be before `to`"));
        }
        Ok(())
    }
}

/// A time series of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesQuery {
    /// The metric.
    pub metric: String,
    /// Only this project.
    pub project: Option<ProjectId>,
    /// The range.
    pub range: TimeRange,
    /// Bucket size.
    pub bucket: Bucket,
}

/// One bucket of a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Bucket start.
    pub start: Timestamp,
    /// Results.
    pub count: u64,
    /// Results that passed.
    pub passed: u64,
    /// Mean score.
    pub mean_score: f64,
}

/// What a cost breakdown groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Model name.
    Model,
    /// Agent id (`"-"` for none).
    Agent,
    /// Project id.
    Project,
}

/// A cost and token breakdown of usage events.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakdownQuery {
    /// Grouping.
    pub group_by: GroupBy,
    /// Only this project.
    pub project: Option<ProjectId>,
    /// The range.
    pub range: TimeRange,
}

/// One group of a breakdown; rows are ordered by cost descending, then key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    /// Group key.
    pub key: String,
    /// Events.
    pub events: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Total cost.
    pub cost: Cost,
}

/// Latency quantiles of usage events.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyQuery {
    /// Only this project.
    pub project: Option<ProjectId>,
    /// Only this model.
    pub model: Option<String>,
    /// The range.
    pub range: TimeRange,
}

/// Latency of usage events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Events.
    pub count: u64,
    /// Quantiles (ms).
    pub latency_ms: Quantiles,
}

/// A keyset position in an event scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventCursor {
    /// `created_at` of the last event seen.
    pub created_at: Timestamp,
    /// Its id.
    pub id: EventId,
}

/// The largest page [`Analytics::scan`] returns: larger than the records' [`crate::MAX_PAGE`], since a
/// verification reads whole streams (a million events in pages of 1,000 took 2,000 requests).
pub const MAX_SCAN_PAGE: usize = 10_000;

/// Checks the `limit` of [`Analytics::scan`].
pub fn check_scan_limit(limit: usize) -> Result<()> {
    validate::count_between("limit", limit, MAX_SCAN_PAGE)
}

/// Records events and answers aggregations, always within one workspace.
///
/// # Behavior
/// - `record` MUST validate every event first and record none if one is invalid.
/// - `record` MUST ignore an event whose id was already recorded, so a replayed batch is counted once;
///   it returns the number of new events.
/// - `eval_summary` MUST count exactly, and MUST return no metrics for an unknown run.
/// - `cost_breakdown` MUST sum tokens and cost exactly.
/// - Every query MUST see only the given workspace.
/// - `scan` MUST return events of one stream in `(created_at, id)` order strictly after the cursor.
/// - `count` MUST count one stream's events of every workspace, each id once.
#[async_trait]
pub trait Analytics: Send + Sync + std::fmt::Debug {
    /// The backend name.
    fn backend(&self) -> &'static str;
    /// How [`Quantiles`] are computed here.
    fn quantile_method(&self) -> QuantileMethod {
        QuantileMethod::NearestRank
    }
    /// Records a batch of events.
    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64>;
    /// Per-metric summary of a run.
    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary>;
    /// Time series of one metric; empty buckets are omitted.
    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>>;
    /// Cost and tokens by model, agent or project.
    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>>;
    /// Latency quantiles of usage events.
    async fn latency(&self, workspace: WorkspaceId, query: &LatencyQuery)
    -> Result<LatencySummary>;
    /// A batch of one stream's events, for migration and verification: `limit` is 1..=[`MAX_SCAN_PAGE`].
    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>>;
    /// Number of events of one stream in every workspace (migration plans).
    async fn count(&self, kind: EventKind) -> Result<u64>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: Analytics + ?Sized> Analytics for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn quantile_method(&self) -> QuantileMethod {
        (**self).quantile_method()
    }
    async fn record(&self, events: &[AnalyticsEvent]) -> Result<u64> {
        (**self).record(events).await
    }
    async fn eval_summary(&self, workspace: WorkspaceId, run: EvalRunId) -> Result<EvalSummary> {
        (**self).eval_summary(workspace, run).await
    }
    async fn metric_series(
        &self,
        workspace: WorkspaceId,
        query: &SeriesQuery,
    ) -> Result<Vec<SeriesPoint>> {
        (**self).metric_series(workspace, query).await
    }
    async fn cost_breakdown(
        &self,
        workspace: WorkspaceId,
        query: &BreakdownQuery,
    ) -> Result<Vec<CostRow>> {
        (**self).cost_breakdown(workspace, query).await
    }
    async fn latency(
        &self,
        workspace: WorkspaceId,
        query: &LatencyQuery,
    ) -> Result<LatencySummary> {
        (**self).latency(workspace, query).await
    }
    async fn scan(
        &self,
        kind: EventKind,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<AnalyticsEvent>> {
        (**self).scan(kind, after, limit).await
    }
    async fn count(&self, kind: EventKind) -> Result<u64> {
        (**self).count(kind).await
    }
}

/// Validates a batch against the size limit and each event.
pub fn validate_batch(events: &[AnalyticsEvent]) -> Result<()> {
    if events.len() > MAX_EVENT_BATCH {
        return Err(Error::too_large(
            "events",
            events.len() as u64,
            MAX_EVENT_BATCH as u64,
        ));
    }
    let now = Timestamp::now();
    events.iter().try_for_each(|e| e.validate(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = Quantiles::nearest_rank(&v);
        assert_eq!((q.p50, q.p95, q.p99), (50.0, 95.0, 99.0));
        assert_eq!(Quantiles::nearest_rank(&[7.0]).p99, 7.0);
        assert_eq!(Quantiles::nearest_rank(&[]).p50, 0.0);
    }

    #[test]
    fn cost_is_exact_in_nanos() {
        assert_eq!(Cost::from_usd(0.000015).0, 15_000);
        assert_eq!(Cost::from_usd(1.5).to_string(), "$1.500000");
    }
}

#[cfg(test)]
mod quantile_tests {
    use super::*;

    #[test]
    fn quantile_methods_accept_what_they_promise_and_nothing_more() {
        let sorted: Vec<f64> = (1..=1000).map(f64::from).collect();
        let exact = QuantileMethod::NearestRank;
        assert!(exact.accepts(&sorted, 0.5, 500.0));
        assert!(!exact.accepts(&sorted, 0.5, 501.0));
        let sketch = QuantileMethod::Approximate { rank_error: 0.01 };
        assert!(sketch.accepts(&sorted, 0.95, 950.0));
        assert!(sketch.accepts(&sorted, 0.95, 960.5));
        assert!(!sketch.accepts(&sorted, 0.95, 962.0));
        assert!(!sketch.accepts(&sorted, 0.5, 480.0));
        assert!(sketch.accepts(&[], 0.5, 0.0));
    }
}
