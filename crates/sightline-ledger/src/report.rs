//! What clients report, and its wire form.

use chrono::{DateTime, Utc};
use sightline_proto::pipeline::v1 as pb;
use uuid::Uuid;

/// How a run or a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Succeeded,
    /// Failed; the report carries why.
    Failed,
    /// Nothing to do.
    Skipped,
}

impl Status {
    fn wire(self) -> i32 {
        match self {
            Self::Succeeded => pb::Status::Succeeded,
            Self::Failed => pb::Status::Failed,
            Self::Skipped => pb::Status::Skipped,
        }
        .into()
    }
}

/// A run that starts. The run id is the run's idempotency key: generate it once, before the
/// run, and use it in every report of the run.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The run's id.
    pub run_id: Uuid,
    /// The pipeline, such as `batch`.
    pub pipeline: String,
    /// The job, such as `daily`, `reprocess`, `import`.
    pub job: String,
    /// Version of the running code.
    pub version: String,
    /// The tenant the run is about; `None` for every tenant.
    pub tenant_id: Option<i64>,
    /// The run's parameters, a JSON object (`{}` when none).
    pub params_json: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// One attempt of one stage of a run, keyed by (run id, stage, attempt).
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The run.
    pub run_id: Uuid,
    /// Stage name, such as `dedupe`, `enrich`, `rollup`.
    pub stage: String,
    /// 1 for the stage's first try in the run, 2 for its first retry, …
    pub attempt: u32,
    /// The tenant the stage worked on; `None`: the run's tenant.
    pub tenant_id: Option<i64>,
    /// Rows read.
    pub rows_read: i64,
    /// Rows written.
    pub rows_written: i64,
    /// Rows refused (kept in the lake's `errors/`).
    pub rows_rejected: i64,
    /// Bytes read.
    pub bytes_read: i64,
    /// Bytes written.
    pub bytes_written: i64,
    /// When the stage started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub status: Status,
    /// Why it failed.
    pub error: Option<String>,
}

/// One window of one stream partition, keyed by (pipeline, group, partition, window start).
#[derive(Debug, Clone)]
pub struct StreamWindow {
    /// The streaming pipeline, such as `stream`.
    pub pipeline: String,
    /// The consumer group (`rollup`, `archive`).
    pub consumer_group: String,
    /// The partition.
    pub partition: u32,
    /// Start of the window.
    pub window_start: DateTime<Utc>,
    /// End of the window (after its start).
    pub window_end: DateTime<Utc>,
    /// Version of the running code.
    pub version: String,
    /// Events taken from the broker.
    pub events_in: i64,
    /// Events made durable (rolled up or archived).
    pub events_out: i64,
    /// Events refused (dead-lettered).
    pub events_rejected: i64,
    /// Receipt-to-durable lag at the end of the window, milliseconds.
    pub lag_ms: i64,
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl RunStart {
    pub(crate) fn into_request(self) -> pb::StartRunRequest {
        pb::StartRunRequest {
            run_id: self.run_id.to_string(),
            pipeline: self.pipeline,
            job: self.job,
            version: self.version,
            tenant_id: self.tenant_id,
            params_json: self.params_json,
            started_at_us: us(self.started_at),
        }
    }
}

impl StageReport {
    pub(crate) fn into_request(self) -> pb::ReportStageRequest {
        pb::ReportStageRequest {
            report: Some(pb::StageReport {
                run_id: self.run_id.to_string(),
                stage: self.stage,
                attempt: self.attempt,
                tenant_id: self.tenant_id,
                rows_read: self.rows_read,
                rows_written: self.rows_written,
                rows_rejected: self.rows_rejected,
                bytes_read: self.bytes_read,
                bytes_written: self.bytes_written,
                started_at_us: us(self.started_at),
                finished_at_us: us(self.finished_at),
                status: self.status.wire(),
                error: self.error.unwrap_or_default(),
            }),
        }
    }
}

impl StreamWindow {
    pub(crate) fn into_request(self) -> pb::ReportStreamWindowRequest {
        pb::ReportStreamWindowRequest {
            window: Some(pb::StreamWindow {
                pipeline: self.pipeline,
                consumer_group: self.consumer_group,
                partition: i32::try_from(self.partition).unwrap_or(i32::MAX),
                window_start_us: us(self.window_start),
                window_end_us: us(self.window_end),
                version: self.version,
                events_in: self.events_in,
                events_out: self.events_out,
                events_rejected: self.events_rejected,
                lag_ms: self.lag_ms,
            }),
        }
    }
}

pub(crate) fn finish_request(
    run_id: Uuid,
    status: Status,
    error: Option<String>,
    finished_at: DateTime<Utc>,
) -> pb::FinishRunRequest {
    pb::FinishRunRequest {
        run_id: run_id.to_string(),
        status: status.wire(),
        error: error.unwrap_or_default(),
        finished_at_us: us(finished_at),
    }
}
