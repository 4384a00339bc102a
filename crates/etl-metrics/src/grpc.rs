//! The `PipelineLedger` gRPC service: validates reports, writes them idempotently, observes
//! stage durations, and answers `ListRuns` / `GetRun`.

use chrono::{DateTime, Utc};
use sightline_kit::ServiceErrorCode;
use sightline_proto::pipeline::v1::{self as pb, pipeline_ledger_server::PipelineLedger};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use tracing::warn;
use uuid::Uuid;

use crate::{
    ledger::{self, NewRun, RunFilter, RunRow, StageRow, WindowRow, Written},
    metrics::{EtlMetrics, ReportLabels, StageLabels},
};

/// Longest pipeline, job, version, stage or group name.
const MAX_NAME: usize = 200;
/// Default and largest `ListRuns` page.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The ledger service.
#[derive(Clone)]
pub struct LedgerService {
    pool: PgPool,
    metrics: EtlMetrics,
}

impl LedgerService {
    /// A service writing to `pool`.
    pub fn new(pool: PgPool, metrics: EtlMetrics) -> Self {
        Self { pool, metrics }
    }

    fn count(&self, kind: &'static str, outcome: &'static str) {
        self.metrics
            .reports
            .get_or_create(&ReportLabels { kind, outcome })
            .inc();
    }

    fn answer<T>(
        &self,
        kind: &'static str,
        written: Result<Written<T>, sqlx::Error>,
    ) -> Result<(Response<pb::WriteResponse>, Option<T>), Status> {
        match written {
            Ok(Written::Recorded(t)) => {
                self.count(kind, "recorded");
                Ok((
                    Response::new(pb::WriteResponse { duplicate: false }),
                    Some(t),
                ))
            }
            Ok(Written::Duplicate) => {
                self.count(kind, "duplicate");
                Ok((Response::new(pb::WriteResponse { duplicate: true }), None))
            }
            Ok(Written::UnknownRun) => {
                self.count(kind, "invalid");
                Err(Status::failed_precondition(
                    "unknown run_id: start the run first",
                ))
            }
            Err(error) => Err(database(kind, error)),
        }
    }

    fn invalid(&self, kind: &'static str, message: String) -> Status {
        self.count(kind, "invalid");
        status(ServiceErrorCode::BadRequest, message)
    }
}

fn status(code: ServiceErrorCode, message: impl Into<String>) -> Status {
    Status::new(code.grpc_code(), message)
}

fn database(what: &str, error: sqlx::Error) -> Status {
    warn!(%error, what, "ledger database error");
    status(
        ServiceErrorCode::Unavailable,
        "the ledger database is unavailable",
    )
}

/// Field checks, collecting every problem of a request.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, problem: impl Into<String>) {
        if !ok {
            self.0.push(problem.into());
        }
    }

    fn name(&mut self, field: &str, value: &str) {
        self.check(
            !value.trim().is_empty() && value.len() <= MAX_NAME,
            format!("{field} must be 1 to {MAX_NAME} characters"),
        );
    }

    fn uuid(&mut self, field: &str, value: &str) -> Uuid {
        let parsed = Uuid::parse_str(value);
        self.check(parsed.is_ok(), format!("{field} must be a UUID"));
        parsed.unwrap_or_default()
    }

    fn time(&mut self, field: &str, us: i64) -> DateTime<Utc> {
        let t = (us > 0)
            .then(|| DateTime::from_timestamp_micros(us))
            .flatten();
        self.check(
            t.is_some(),
            format!("{field} must be microseconds since the epoch"),
        );
        t.unwrap_or_default()
    }

    fn counters(&mut self, fields: &[(&str, i64)]) {
        for (field, value) in fields {
            self.check(*value >= 0, format!("{field} must not be negative"));
        }
    }

    fn finished_status(&mut self, value: i32) -> &'static str {
        let name = match pb::Status::try_from(value) {
            Ok(pb::Status::Succeeded) => Some("succeeded"),
            Ok(pb::Status::Failed) => Some("failed"),
            Ok(pb::Status::Skipped) => Some("skipped"),
            _ => None,
        };
        self.check(
            name.is_some(),
            "status must be SUCCEEDED, FAILED or SKIPPED",
        );
        name.unwrap_or_default()
    }

    fn done(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("; "))
        }
    }
}

fn status_name(status: pb::Status) -> &'static str {
    match status {
        pb::Status::Unspecified => "",
        pb::Status::Running => "running",
        pb::Status::Succeeded => "succeeded",
        pb::Status::Failed => "failed",
        pb::Status::Skipped => "skipped",
    }
}

fn status_of(name: &str) -> i32 {
    match name {
        "running" => pb::Status::Running,
        "succeeded" => pb::Status::Succeeded,
        "failed" => pb::Status::Failed,
        "skipped" => pb::Status::Skipped,
        _ => pb::Status::Unspecified,
    }
    .into()
}

/// The stage name for labels and dimensions: up to the first `/`.
pub fn stage_family(stage: &str) -> &str {
    stage.split('/').next().unwrap_or(stage)
}

fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn stage_to_wire(s: StageRow) -> pb::StageReport {
    pb::StageReport {
        run_id: s.run_id.to_string(),
        stage: s.stage,
        attempt: u32::try_from(s.attempt).unwrap_or_default(),
        tenant_id: s.tenant_id,
        rows_read: s.rows_read,
        rows_written: s.rows_written,
        rows_rejected: s.rows_rejected,
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        started_at_us: us(s.started_at),
        finished_at_us: us(s.finished_at),
        status: status_of(&s.status),
        error: s.error.unwrap_or_default(),
    }
}

fn run_to_wire(r: RunRow, stages: Vec<StageRow>) -> pb::Run {
    pb::Run {
        run_id: r.run_id.to_string(),
        pipeline: r.pipeline,
        job: r.job,
        version: r.version,
        tenant_id: r.tenant_id,
        params_json: r.params,
        started_at_us: us(r.started_at),
        finished_at_us: r.finished_at.map(us).unwrap_or_default(),
        status: status_of(&r.status),
        error: r.error.unwrap_or_default(),
        stages: stages.into_iter().map(stage_to_wire).collect(),
    }
}

fn page_token(run: &RunRow) -> String {
    format!("{}:{}", us(run.started_at), run.run_id)
}

fn parse_page_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (at, id) = token.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(at.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

#[tonic::async_trait]
impl PipelineLedger for LedgerService {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        const KIND: &str = "start_run";
        let r = request.into_inner();
        let mut c = Checks::default();
        let run_id = c.uuid("run_id", &r.run_id);
        c.name("pipeline", &r.pipeline);
        c.name("job", &r.job);
        c.name("version", &r.version);
        let started_at = c.time("started_at_us", r.started_at_us);
        let params_json = if r.params_json.trim().is_empty() {
            "{}".to_string()
        } else {
            r.params_json
        };
        c.check(
            serde_json::from_str::<serde_json::Value>(&params_json).is_ok_and(|v| v.is_object()),
            "params_json must be a JSON object",
        );
        c.done().map_err(|m| self.invalid(KIND, m))?;
        let run = NewRun {
            run_id,
            pipeline: r.pipeline,
            job: r.job,
            version: r.version,
            tenant_id: r.tenant_id,
            params_json,
            started_at,
        };
        let (response, _) = self.answer(KIND, ledger::start_run(&self.pool, &run).await)?;
        Ok(response)
    }

    async fn report_stage(
        &self,
        request: Request<pb::ReportStageRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        const KIND: &str = "report_stage";
        let Some(r) = request.into_inner().report else {
            return Err(self.invalid(KIND, "report is required".into()));
        };
        let mut c = Checks::default();
        let run_id = c.uuid("run_id", &r.run_id);
        c.name("stage", &r.stage);
        c.check(r.attempt >= 1, "attempt starts at 1");
        let attempt = i32::try_from(r.attempt).unwrap_or(i32::MAX);
        c.counters(&[
            ("rows_read", r.rows_read),
            ("rows_written", r.rows_written),
            ("rows_rejected", r.rows_rejected),
            ("bytes_read", r.bytes_read),
            ("bytes_written", r.bytes_written),
        ]);
        let started_at = c.time("started_at_us", r.started_at_us);
        let finished_at = c.time("finished_at_us", r.finished_at_us);
        c.check(
            r.started_at_us <= r.finished_at_us,
            "started_at_us must not be after finished_at_us",
        );
        let status = c.finished_status(r.status);
        c.done().map_err(|m| self.invalid(KIND, m))?;
        let row = StageRow {
            run_id,
            stage: r.stage,
            attempt,
            tenant_id: r.tenant_id,
            rows_read: r.rows_read,
            rows_written: r.rows_written,
            rows_rejected: r.rows_rejected,
            bytes_read: r.bytes_read,
            bytes_written: r.bytes_written,
            started_at,
            finished_at,
            status: status.to_string(),
            error: none_if_empty(r.error),
        };
        let (response, job) = self.answer(KIND, ledger::report_stage(&self.pool, &row).await)?;
        // Observed once per stage: a retried report is a duplicate and lands here with `None`.
        if let Some((pipeline, job)) = job {
            let seconds = (finished_at - started_at).as_seconds_f64();
            self.metrics
                .stage_duration
                .get_or_create(&StageLabels {
                    pipeline,
                    job,
                    stage: stage_family(&row.stage).to_string(),
                    status: status.to_string(),
                })
                .observe(seconds);
        }
        Ok(response)
    }

    async fn finish_run(
        &self,
        request: Request<pb::FinishRunRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        const KIND: &str = "finish_run";
        let r = request.into_inner();
        let mut c = Checks::default();
        let run_id = c.uuid("run_id", &r.run_id);
        let status = c.finished_status(r.status);
        let finished_at = c.time("finished_at_us", r.finished_at_us);
        c.done().map_err(|m| self.invalid(KIND, m))?;
        let error = none_if_empty(r.error);
        let written =
            ledger::finish_run(&self.pool, run_id, status, error.as_deref(), finished_at).await;
        let (response, _) = self.answer(KIND, written)?;
        Ok(response)
    }

    async fn report_stream_window(
        &self,
        request: Request<pb::ReportStreamWindowRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        const KIND: &str = "stream_window";
        let Some(w) = request.into_inner().window else {
            return Err(self.invalid(KIND, "window is required".into()));
        };
        let mut c = Checks::default();
        c.name("pipeline", &w.pipeline);
        c.name("consumer_group", &w.consumer_group);
        c.name("version", &w.version);
        c.check(w.partition >= 0, "partition must not be negative");
        let window_start = c.time("window_start_us", w.window_start_us);
        let window_end = c.time("window_end_us", w.window_end_us);
        c.check(
            w.window_start_us < w.window_end_us,
            "window_start_us must be before window_end_us",
        );
        c.counters(&[
            ("events_in", w.events_in),
            ("events_out", w.events_out),
            ("events_rejected", w.events_rejected),
            ("lag_ms", w.lag_ms),
        ]);
        c.done().map_err(|m| self.invalid(KIND, m))?;
        let row = WindowRow {
            pipeline: w.pipeline,
            consumer_group: w.consumer_group,
            partition: w.partition,
            window_start,
            window_end,
            version: w.version,
            events_in: w.events_in,
            events_out: w.events_out,
            events_rejected: w.events_rejected,
            lag_ms: w.lag_ms,
        };
        let (response, _) = self.answer(KIND, ledger::report_window(&self.pool, &row).await)?;
        Ok(response)
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_page_token(&r.page_token).ok_or_else(|| {
                status(
                    ServiceErrorCode::BadRequest,
                    "page_token is not one of ours",
                )
            })?)
        };
        let filter = RunFilter {
            pipeline: r.pipeline,
            job: r.job,
            status: status_name(pb::Status::try_from(r.status).unwrap_or_default()).to_string(),
            tenant_id: r.tenant_id,
            started_after: DateTime::from_timestamp_micros(r.started_after_us.max(0))
                .unwrap_or_default(),
            before,
            limit: i64::from(limit) + 1,
        };
        let mut runs = ledger::list_runs(&self.pool, &filter)
            .await
            .map_err(|e| database("list_runs", e))?;
        let more = runs.len() > limit as usize;
        runs.truncate(limit as usize);
        let next_page_token = match runs.last() {
            Some(last) if more => page_token(last),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .into_iter()
                .map(|run| run_to_wire(run, Vec::new()))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let r = request.into_inner();
        let run_id = Uuid::parse_str(&r.run_id)
            .map_err(|_| status(ServiceErrorCode::BadRequest, "run_id must be a UUID"))?;
        match ledger::get_run(&self.pool, run_id).await {
            Ok(Some((run, stages))) => Ok(Response::new(pb::GetRunResponse {
                run: Some(run_to_wire(run, stages)),
            })),
            Ok(None) => Err(status(ServiceErrorCode::NotFound, "no such run")),
            Err(e) => Err(database("get_run", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_stage_families_drop_the_suffix() {
        let run = RunRow {
            run_id: Uuid::new_v4(),
            pipeline: "p".into(),
            job: "j".into(),
            version: "v".into(),
            tenant_id: None,
            params: "{}".into(),
            status: "running".into(),
            error: None,
            started_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            finished_at: None,
        };
        assert_eq!(
            parse_page_token(&page_token(&run)),
            Some((run.started_at, run.run_id))
        );
        assert_eq!(parse_page_token("garbage"), None);
        assert_eq!(stage_family("trusted/2025-03-10"), "trusted");
        assert_eq!(stage_family("rollup"), "rollup");
    }

    #[test]
    fn every_problem_of_a_request_is_named() {
        let mut c = Checks::default();
        c.uuid("run_id", "nope");
        c.name("stage", "");
        c.counters(&[("rows_read", -1)]);
        c.finished_status(pb::Status::Running.into());
        let message = c.done().unwrap_err();
        for field in ["run_id", "stage", "rows_read", "status"] {
            assert!(message.contains(field), "{field} missing in {message}");
        }
    }
}
