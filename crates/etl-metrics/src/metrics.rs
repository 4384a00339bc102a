//! etl-metrics' Prometheus metrics: the pipeline's health as SREs chart and page on it.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use sightline_kit::telemetry::Metrics;

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels of per-tenant series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// The tenant's id.
    pub tenant_id: String,
}

/// Labels of a partition queue.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's name.
    pub queue: String,
    /// Its consumer group.
    pub group: String,
    /// Its partition.
    pub partition: String,
}

/// Labels of a job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The pipeline.
    pub pipeline: String,
    /// The job.
    pub job: String,
}

/// Labels of stage durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The pipeline.
    pub pipeline: String,
    /// The job.
    pub job: String,
    /// The stage name up to its first `/` (stage names may carry a tenant-day suffix).
    pub stage: String,
    /// `succeeded`, `failed` or `skipped`.
    pub status: String,
}

/// Labels of per-pipeline series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// The pipeline.
    pub pipeline: String,
}

/// Labels of ledger writes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    /// `start_run`, `report_stage`, `finish_run`, `stream_window`.
    pub kind: &'static str,
    /// `recorded`, `duplicate` or `invalid`.
    pub outcome: &'static str,
}

/// Labels of alert series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// The rule's name.
    pub alertname: String,
}

/// Labels of webhook posts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// `sent` or `failed`.
    pub outcome: &'static str,
}

/// Labels of loader series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The ledger table loaded.
    pub source: &'static str,
}

/// Everything etl-metrics exports.
#[derive(Clone)]
pub struct EtlMetrics {
    /// Now minus the speed watermark, per tenant with sites.
    pub freshness_lag: Family<TenantLabels, FloatGauge>,
    /// The speed watermark, Unix seconds.
    pub speed_watermark: FloatGauge,
    /// Ready messages per partition queue.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Messages in the dead-letter queue.
    pub dead_letter_depth: Gauge,
    /// 1 when the last depth reading reached the broker.
    pub broker_up: Gauge,
    /// Seconds since the daily job last succeeded.
    pub daily_run_age: Family<JobLabels, FloatGauge>,
    /// Stage durations as reported.
    pub stage_duration: Family<StageLabels, Histogram>,
    /// Rejected over read, per pipeline, over the configured window.
    pub rejected_ratio: Family<PipelineLabels, FloatGauge>,
    /// Ledger writes by kind and outcome.
    pub reports: Family<ReportLabels, Counter>,
    /// 1 while an alert rule has a firing instance.
    pub alert_firing: Family<AlertLabels, Gauge>,
    /// Webhook posts.
    pub notifications: Family<NotificationLabels, Counter>,
    /// Completed evaluations (measure, then alerts).
    pub evaluations: Counter,
    /// Failed evaluations.
    pub evaluation_failures: Counter,
    /// Star-schema loads committed.
    pub loads: Counter,
    /// Failed loads.
    pub load_failures: Counter,
    /// Fact rows upserted, per source table.
    pub loaded_rows: Family<SourceLabels, Counter>,
}

impl EtlMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Self {
        let m = Self {
            freshness_lag: Family::default(),
            speed_watermark: FloatGauge::default(),
            queue_depth: Family::default(),
            dead_letter_depth: Gauge::default(),
            broker_up: Gauge::default(),
            daily_run_age: Family::default(),
            stage_duration: Family::new_with_constructor(|| {
                // Stages last from seconds to hours.
                Histogram::new([
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
                    7200.0, 14400.0,
                ])
            }),
            rejected_ratio: Family::default(),
            reports: Family::default(),
            alert_firing: Family::default(),
            notifications: Family::default(),
            evaluations: Counter::default(),
            evaluation_failures: Counter::default(),
            loads: Counter::default(),
            load_failures: Counter::default(),
            loaded_rows: Family::default(),
        };
        registry.register(|r| {
            let r = r.sub_registry_with_prefix("sightline_etl");
            r.register(
                "freshness_lag_seconds",
                "Now minus the speed layer's watermark, per tenant",
                m.freshness_lag.clone(),
            );
            r.register(
                "speed_watermark_seconds",
                "The speed layer's watermark (Unix seconds): every event received before it is in the rollups",
                m.speed_watermark.clone(),
            );
            r.register(
                "queue_depth_messages",
                "Ready messages in a partition queue",
                m.queue_depth.clone(),
            );
            r.register(
                "dead_letter_depth_messages",
                "Messages in the dead-letter queue",
                m.dead_letter_depth.clone(),
            );
            r.register(
                "broker_up",
                "1 when the last queue-depth reading reached the broker",
                m.broker_up.clone(),
            );
            r.register(
                "daily_run_age_seconds",
                "Seconds since the daily job last succeeded",
                m.daily_run_age.clone(),
            );
            r.register(
                "stage_duration_seconds",
                "Duration of reported stage runs",
                m.stage_duration.clone(),
            );
            r.register(
                "rejected_ratio",
                "Rows rejected over rows read in the recent window, per pipeline",
                m.rejected_ratio.clone(),
            );
            r.register(
                "ledger_reports",
                "Ledger writes by kind and outcome",
                m.reports.clone(),
            );
            r.register(
                "alert_firing",
                "1 while the alert rule has a firing instance",
                m.alert_firing.clone(),
            );
            r.register(
                "alert_notifications",
                "Webhook posts by status and outcome",
                m.notifications.clone(),
            );
            r.register(
                "evaluations",
                "Completed measure-and-alert evaluations",
                m.evaluations.clone(),
            );
            r.register(
                "evaluation_failures",
                "Failed evaluations (database unreachable)",
                m.evaluation_failures.clone(),
            );
            r.register("loads", "Star-schema loads committed", m.loads.clone());
            r.register(
                "load_failures",
                "Failed star-schema loads",
                m.load_failures.clone(),
            );
            r.register(
                "loaded_rows",
                "Fact rows upserted by the loader, per ledger table",
                m.loaded_rows.clone(),
            );
        });
        m
    }
}
