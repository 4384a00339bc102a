//! Ingest's Prometheus metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use sightline_kit::telemetry::Metrics;

/// Labels of per-event outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: &'static str,
}

/// Labels of requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status code.
    pub status: u16,
}

/// Everything ingest counts.
#[derive(Clone)]
pub struct IngestMetrics {
    /// Events by outcome.
    pub events: Family<OutcomeLabels, Counter>,
    /// Requests by status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from request to answer.
    pub request_seconds: Histogram,
    /// Broker messages confirmed.
    pub batches_confirmed: Counter,
    /// Events per broker message.
    pub batch_events: Histogram,
    /// Broker messages not confirmed in time.
    pub batches_failed: Counter,
}

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self {
            events: Family::default(),
            requests: Family::default(),
            request_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
            batches_confirmed: Counter::default(),
            batch_events: Histogram::new([1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]),
            batches_failed: Counter::default(),
        };
        registry.register(|r| {
            let r = r.sub_registry_with_prefix("sightline_ingest");
            r.register("events", "Events received, by outcome", m.events.clone());
            r.register(
                "requests",
                "HTTP requests answered, by status",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from request to answer",
                m.request_seconds.clone(),
            );
            r.register(
                "batches_confirmed",
                "Broker messages confirmed",
                m.batches_confirmed.clone(),
            );
            r.register(
                "batch_events",
                "Events per broker message",
                m.batch_events.clone(),
            );
            r.register(
                "batches_failed",
                "Broker messages not confirmed before their deadline",
                m.batches_failed.clone(),
            );
        });
        m
    }
}
