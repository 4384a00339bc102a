//! Where runs and stages are reported: the etl-metrics run ledger.
//!
//! The jobs talk to a [`Ledger`]; reporting never fails a job. [`GrpcLedger`] (used when
//! `batch.ledger_endpoint` is set) keeps what it cannot deliver in `sightline-ledger`'s durable
//! outbox and sends it when etl-metrics is back; without an endpoint, [`LogLedger`] writes each
//! record to the log. The run tables (`batch_runs`, `batch_run_days`) hold the same facts
//! durably either way.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::runs::Run;

/// The pipeline name every record carries.
pub const PIPELINE: &str = "batch-enricher";

/// A run starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStart {
    /// The run (stable across resumes).
    pub run_id: Uuid,
    /// `daily`, `reprocess` or `import`.
    pub job: String,
    /// The code's version.
    pub version: String,
    /// The tenant, when the run is for one.
    pub tenant_id: Option<i64>,
    /// The job's parameters as JSON.
    pub params_json: String,
    /// When.
    pub started_at: DateTime<Utc>,
}

/// How a stage or a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything done.
    Succeeded,
    /// Stopped by an error.
    Failed,
}

impl Status {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One stage of one tenant-day.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    /// The run.
    pub run_id: Uuid,
    /// `trusted`, `rollups` or `import`, with the tenant-day (`trusted/2025-03-10`).
    pub stage: String,
    /// The run's attempt (1, then one more per resume).
    pub attempt: i32,
    /// The tenant.
    pub tenant_id: Option<i64>,
    /// Rows read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows rejected (kept in `errors/`).
    pub rows_rejected: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Outcome.
    pub status: Status,
    /// Why it failed.
    pub error: Option<String>,
}

impl StageReport {
    /// `stage` of `run`, started at `started_at`, stopped now by `error`: nothing is counted
    /// (the stage's work is undone or will be redone).
    pub fn failed(
        run: &Run,
        stage: String,
        tenant_id: Option<i64>,
        started_at: DateTime<Utc>,
        error: &impl std::fmt::Display,
    ) -> Self {
        Self {
            run_id: run.run_id,
            stage,
            attempt: run.attempt,
            tenant_id,
            rows_read: 0,
            rows_written: 0,
            rows_rejected: 0,
            bytes_read: 0,
            bytes_written: 0,
            started_at,
            finished_at: Utc::now(),
            status: Status::Failed,
            error: Some(error.to_string()),
        }
    }
}

/// The run ledger as the jobs see it. Reporting is infallible: an implementation that cannot
/// deliver keeps the record and retries.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// A run started (or resumed).
    async fn start_run(&self, run: RunStart);
    /// A stage ended.
    async fn report_stage(&self, stage: StageReport);
    /// A run ended.
    async fn finish_run(&self, run_id: Uuid, status: Status, error: Option<String>);
    /// Delivers what is pending, as far as possible now.
    async fn flush(&self) {}
}

/// Logs every record.
#[derive(Debug, Default)]
pub struct LogLedger;

#[async_trait]
impl Ledger for LogLedger {
    async fn start_run(&self, run: RunStart) {
        tracing::info!(run_id = %run.run_id, job = %run.job, params = %run.params_json, "run started");
    }

    async fn report_stage(&self, s: StageReport) {
        tracing::info!(
            run_id = %s.run_id,
            stage = %s.stage,
            attempt = s.attempt,
            rows_read = s.rows_read,
            rows_written = s.rows_written,
            rows_rejected = s.rows_rejected,
            bytes_read = s.bytes_read,
            bytes_written = s.bytes_written,
            seconds = (s.finished_at - s.started_at).as_seconds_f64(),
            status = s.status.as_str(),
            error = s.error.as_deref().unwrap_or(""),
            "stage finished"
        );
    }

    async fn finish_run(&self, run_id: Uuid, status: Status, error: Option<String>) {
        tracing::info!(%run_id, status = status.as_str(), error = error.as_deref().unwrap_or(""), "run finished");
    }
}

/// Keeps every record in memory: for tests, and for a job's own summary.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    /// Runs started.
    pub runs: Mutex<Vec<RunStart>>,
    /// Stages reported.
    pub stages: Mutex<Vec<StageReport>>,
    /// Runs finished.
    pub finished: Mutex<Vec<(Uuid, Status, Option<String>)>>,
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn start_run(&self, run: RunStart) {
        self.runs.lock().push(run);
    }

    async fn report_stage(&self, stage: StageReport) {
        self.stages.lock().push(stage);
    }

    async fn finish_run(&self, run_id: Uuid, status: Status, error: Option<String>) {
        self.finished.lock().push((run_id, status, error));
    }
}

/// The etl-metrics run ledger through `sightline-ledger`'s durable outbox: while etl-metrics is
/// down, records wait in PostgreSQL and are delivered later (by [`Ledger::flush`], the next
/// record, or the next process with the same database).
#[derive(Debug, Clone)]
pub struct GrpcLedger {
    client: sightline_ledger::LedgerClient,
}

impl GrpcLedger {
    /// Reports to `endpoint`, with the outbox in `pool`'s database. Call inside a Tokio runtime.
    pub fn new(endpoint: &str, pool: sqlx::PgPool) -> Self {
        Self {
            client: sightline_ledger::LedgerClient::new(Some(endpoint.to_owned()), pool),
        }
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn wire_status(status: Status) -> sightline_ledger::Status {
    match status {
        Status::Succeeded => sightline_ledger::Status::Succeeded,
        Status::Failed => sightline_ledger::Status::Failed,
    }
}

#[async_trait]
impl Ledger for GrpcLedger {
    async fn start_run(&self, run: RunStart) {
        let run_id = run.run_id;
        let record = sightline_ledger::RunStart {
            run_id,
            pipeline: PIPELINE.to_owned(),
            job: run.job,
            version: run.version,
            tenant_id: run.tenant_id,
            params_json: run.params_json,
            started_at: run.started_at,
        };
        if let Err(error) = self.client.start_run(record).await {
            tracing::warn!(%run_id, %error, "cannot record the run's start in the ledger outbox");
        }
    }

    async fn report_stage(&self, s: StageReport) {
        let (run_id, stage) = (s.run_id, s.stage.clone());
        let record = sightline_ledger::StageReport {
            run_id,
            stage: s.stage,
            attempt: u32::try_from(s.attempt).unwrap_or(1),
            tenant_id: s.tenant_id,
            rows_read: count(s.rows_read),
            rows_written: count(s.rows_written),
            rows_rejected: count(s.rows_rejected),
            bytes_read: count(s.bytes_read),
            bytes_written: count(s.bytes_written),
            started_at: s.started_at,
            finished_at: s.finished_at,
            status: wire_status(s.status),
            error: s.error,
        };
        if let Err(error) = self.client.report_stage(record).await {
            tracing::warn!(%run_id, stage, %error, "cannot record a stage in the ledger outbox");
        }
    }

    async fn finish_run(&self, run_id: Uuid, status: Status, error: Option<String>) {
        if let Err(e) = self
            .client
            .finish_run(run_id, wire_status(status), error)
            .await
        {
            tracing::warn!(%run_id, error = %e, "cannot record the run's end in the ledger outbox");
        }
    }

    async fn flush(&self) {
        match self.client.flush().await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "ledger records stay in the outbox for later"),
        }
    }
}
