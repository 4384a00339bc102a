//! The query service's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use sightline_kit::telemetry::Metrics;

/// Labels of answered calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The RPC, such as `GetTimeseries`.
    pub rpc: &'static str,
    /// `ok` or the error's kind (`invalid_argument`, `rate_limited`, `database`, …).
    pub outcome: &'static str,
}

/// Labels of per-RPC series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The RPC.
    pub rpc: &'static str,
}

/// Everything the query service counts.
#[derive(Clone)]
pub struct QueryMetrics {
    /// Calls answered, by outcome.
    pub calls: Family<CallLabels, Counter>,
    /// Time to answer (for SQL: to the first page).
    pub call_seconds: Family<RpcLabels, Histogram>,
    /// Rows streamed by SQL queries.
    pub sql_rows: Counter,
    /// Answers served from the answer cache.
    pub answer_cache_hits: Counter,
    /// Previous answers given while another call computed the new one.
    pub answer_cache_previous: Counter,
    /// Cacheable answers computed (not held, or held but stale).
    pub answer_cache_misses: Counter,
    /// Batch parts of answers summed from the closed-day sums.
    pub closed_sums_hits: Counter,
    /// Batch parts of answers read from the database.
    pub closed_sums_misses: Counter,
}

impl QueryMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ])
            }),
            sql_rows: Counter::default(),
            answer_cache_hits: Counter::default(),
            answer_cache_previous: Counter::default(),
            answer_cache_misses: Counter::default(),
            closed_sums_hits: Counter::default(),
            closed_sums_misses: Counter::default(),
        };
        registry.register(|r| {
            let r = r.sub_registry_with_prefix("sightline_query");
            r.register(
                "calls",
                "gRPC calls answered, by RPC and outcome",
                m.calls.clone(),
            );
            r.register(
                "call_seconds",
                "Time to answer a gRPC call (SQL: to the first page)",
                m.call_seconds.clone(),
            );
            r.register(
                "sql_rows",
                "Rows returned by SQL queries",
                m.sql_rows.clone(),
            );
            r.register(
                "answer_cache_hits",
                "Time series, breakdowns and aggregates served from the answer cache",
                m.answer_cache_hits.clone(),
            );
            r.register(
                "answer_cache_previous",
                "Previous answers (with their own watermark) given while another call computed the new one",
                m.answer_cache_previous.clone(),
            );
            r.register(
                "answer_cache_misses",
                "Time series, breakdowns and aggregates computed from the rollups",
                m.answer_cache_misses.clone(),
            );
            r.register(
                "closed_sums_hits",
                "Closed days' parts of answers summed from the closed-day sums",
                m.closed_sums_hits.clone(),
            );
            r.register(
                "closed_sums_misses",
                "Closed days' parts of answers read from the rollups",
                m.closed_sums_misses.clone(),
            );
        });
        m
    }
}
