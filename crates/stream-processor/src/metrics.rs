//! The stream processor's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use sightline_kit::telemetry::Metrics;

/// Labels of per-group series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// `rollup` or `archive`.
    pub group: &'static str,
}

/// Labels of flush failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `rollup` or `archive`.
    pub group: &'static str,
    /// `database` or `lake`.
    pub target: &'static str,
}

/// Labels of events the rollup group leaves out.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    /// `late` (older than `late_event_max_age_secs`), `duplicate_batch` or `duplicate_event`.
    pub reason: &'static str,
}

/// Everything the stream processor counts.
#[derive(Clone)]
pub struct StreamMetrics {
    /// Broker messages accepted into a buffer.
    pub messages: Family<GroupLabels, Counter>,
    /// Events made durable by a flush.
    pub events_flushed: Family<GroupLabels, Counter>,
    /// Successful flushes.
    pub flushes: Family<GroupLabels, Counter>,
    /// Failed flush attempts (retried).
    pub flush_failures: Family<FailureLabels, Counter>,
    /// Duration of successful flushes.
    pub flush_seconds: Family<GroupLabels, Histogram>,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: Family<GroupLabels, Counter>,
    /// Messages given back for another delivery because they could not be decoded.
    pub undecodable: Family<GroupLabels, Counter>,
    /// Events the rollup group did not count, by reason.
    pub rollup_skipped: Family<SkipLabels, Counter>,
    /// Unix time of the newest receipt time made durable, per group (freshness).
    pub watermark_seconds: Family<GroupLabels, Gauge>,
    /// Per-queue counts of the current ledger window (`report`), not exported.
    pub windows: crate::report::WindowCounters,
}

impl StreamMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self {
            messages: Family::default(),
            events_flushed: Family::default(),
            flushes: Family::default(),
            flush_failures: Family::default(),
            flush_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            dead_lettered: Family::default(),
            undecodable: Family::default(),
            rollup_skipped: Family::default(),
            watermark_seconds: Family::default(),
            windows: crate::report::WindowCounters::default(),
        };
        registry.register(|r| {
            let r = r.sub_registry_with_prefix("sightline_stream");
            r.register(
                "messages",
                "Broker messages accepted, by consumer group",
                m.messages.clone(),
            );
            r.register(
                "events_flushed",
                "Events made durable, by consumer group",
                m.events_flushed.clone(),
            );
            r.register("flushes", "Successful flushes", m.flushes.clone());
            r.register(
                "flush_failures",
                "Failed flush attempts, retried, by group and target",
                m.flush_failures.clone(),
            );
            r.register(
                "flush_seconds",
                "Duration of successful flushes",
                m.flush_seconds.clone(),
            );
            r.register(
                "dead_lettered",
                "Messages moved to the dead-letter queue",
                m.dead_lettered.clone(),
            );
            r.register(
                "undecodable",
                "Undecodable messages given back for redelivery",
                m.undecodable.clone(),
            );
            r.register(
                "rollup_skipped_events",
                "Events the rollup group did not count, by reason",
                m.rollup_skipped.clone(),
            );
            r.register(
                "watermark_seconds",
                "Receipt time (Unix seconds) of the newest event made durable",
                m.watermark_seconds.clone(),
            );
        });
        m
    }
}
