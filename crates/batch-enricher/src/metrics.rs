//! The batch enricher's Prometheus metrics (served in `serve` mode, under `sightline_batch_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use sightline_kit::telemetry::Metrics;

/// Labels of per-job series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `daily`, `reprocess` or `import`.
    pub job: &'static str,
}

/// Labels of run outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The job.
    pub job: &'static str,
    /// `succeeded` or `failed`.
    pub status: &'static str,
}

/// Everything the batch enricher counts.
#[derive(Clone, Default)]
pub struct BatchMetrics {
    /// Runs ended, by job and outcome.
    pub runs: Family<OutcomeLabels, Counter>,
    /// Tenant-days closed.
    pub tenant_days: Family<JobLabels, Counter>,
    /// Raw rows read.
    pub rows_read: Family<JobLabels, Counter>,
    /// Trusted event rows written.
    pub rows_written: Family<JobLabels, Counter>,
    /// Rows rejected to `errors/`.
    pub rows_rejected: Family<JobLabels, Counter>,
    /// Unix time of the last successful run, by job.
    pub last_success_seconds: Family<JobLabels, Gauge>,
}

impl BatchMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self::default();
        registry.register(|r| {
            let r = r.sub_registry_with_prefix("sightline_batch");
            r.register("runs", "Job runs ended, by job and status", m.runs.clone());
            r.register("tenant_days", "Tenant-days closed", m.tenant_days.clone());
            r.register("rows_read", "Raw rows read", m.rows_read.clone());
            r.register(
                "rows_written",
                "Trusted event rows written",
                m.rows_written.clone(),
            );
            r.register(
                "rows_rejected",
                "Rows rejected to errors/",
                m.rows_rejected.clone(),
            );
            r.register(
                "last_success_seconds",
                "Unix time of the last successful run",
                m.last_success_seconds.clone(),
            );
        });
        m
    }
}
