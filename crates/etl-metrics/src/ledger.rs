//! The ledger's OLTP tables (`migrations/0005_pipeline_ledger.sql`): idempotent writes keyed by
//! the clients' keys, and the reads of `ListRuns` / `GetRun`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T = ()> {
    /// Recorded (or, for a run, reopened or finished), with what the caller needs next.
    Recorded(T),
    /// The key was recorded before: nothing changed.
    Duplicate,
    /// The run it refers to is unknown.
    UnknownRun,
}

/// A run that starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub run_id: Uuid,
    /// Pipeline.
    pub pipeline: String,
    /// Job.
    pub job: String,
    /// Code version.
    pub version: String,
    /// Tenant, if the run is for one.
    pub tenant_id: Option<i64>,
    /// Parameters, a JSON object.
    pub params_json: String,
    /// Start.
    pub started_at: DateTime<Utc>,
}

/// A stage as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StageRow {
    /// The run.
    pub run_id: Uuid,
    /// Stage name.
    pub stage: String,
    /// Attempt, from 1.
    pub attempt: i32,
    /// Tenant, if any.
    pub tenant_id: Option<i64>,
    /// Rows read.
    pub rows_read: i64,
    /// Rows written.
    pub rows_written: i64,
    /// Rows rejected.
    pub rows_rejected: i64,
    /// Bytes read.
    pub bytes_read: i64,
    /// Bytes written.
    pub bytes_written: i64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, `failed`, `skipped`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// A stream window as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    /// Pipeline.
    pub pipeline: String,
    /// Consumer group.
    pub consumer_group: String,
    /// Partition.
    pub partition: i32,
    /// Window start.
    pub window_start: DateTime<Utc>,
    /// Window end.
    pub window_end: DateTime<Utc>,
    /// Code version.
    pub version: String,
    /// Events in.
    pub events_in: i64,
    /// Events made durable.
    pub events_out: i64,
    /// Events refused.
    pub events_rejected: i64,
    /// Lag, milliseconds.
    pub lag_ms: i64,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunRow {
    /// Its id.
    pub run_id: Uuid,
    /// Pipeline.
    pub pipeline: String,
    /// Job.
    pub job: String,
    /// Code version.
    pub version: String,
    /// Tenant.
    pub tenant_id: Option<i64>,
    /// Parameters as JSON text.
    pub params: String,
    /// `running`, `succeeded`, `failed`, `skipped`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End, once finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters of [`list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Pipeline, empty: any.
    pub pipeline: String,
    /// Job, empty: any.
    pub job: String,
    /// Status, empty: any.
    pub status: String,
    /// Tenant.
    pub tenant_id: Option<i64>,
    /// Started at or after.
    pub started_after: DateTime<Utc>,
    /// Runs before this (start, id) position: the page token.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: i64,
}

const RUN_COLUMNS: &str = "run_id, pipeline, job, version, tenant_id, params::text AS params, \
                           status, error, started_at, finished_at";

/// Records a run start. A repeat is a duplicate, except a later start of a finished run (a
/// resumed run), which reopens it.
pub async fn start_run(pool: &PgPool, run: &NewRun) -> sqlx::Result<Written> {
    let row: Option<bool> = sqlx::query_scalar(
        "INSERT INTO pipeline_runs (run_id, pipeline, job, version, tenant_id, params, status, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'running', $7) \
         ON CONFLICT (run_id) DO UPDATE \
           SET status = 'running', finished_at = NULL, error = NULL, changed_xid = pg_current_xact_id() \
           WHERE pipeline_runs.status <> 'running' AND excluded.started_at > pipeline_runs.finished_at \
         RETURNING true",
    )
    .bind(run.run_id)
    .bind(&run.pipeline)
    .bind(&run.job)
    .bind(&run.version)
    .bind(run.tenant_id)
    .bind(&run.params_json)
    .bind(run.started_at)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(_) => Written::Recorded(()),
        None => Written::Duplicate,
    })
}

/// Records a stage; returns the run's pipeline and job when it was new.
pub async fn report_stage(pool: &PgPool, s: &StageRow) -> sqlx::Result<Written<(String, String)>> {
    let inserted: Result<Option<(String, String)>, sqlx::Error> = sqlx::query_as(
        "WITH ins AS ( \
           INSERT INTO pipeline_stage_runs (run_id, stage, attempt, tenant_id, rows_read, rows_written, \
             rows_rejected, bytes_read, bytes_written, started_at, finished_at, status, error) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
           ON CONFLICT DO NOTHING RETURNING run_id) \
         SELECT r.pipeline, r.job FROM ins JOIN pipeline_runs r USING (run_id)",
    )
    .bind(s.run_id)
    .bind(&s.stage)
    .bind(s.attempt)
    .bind(s.tenant_id)
    .bind(s.rows_read)
    .bind(s.rows_written)
    .bind(s.rows_rejected)
    .bind(s.bytes_read)
    .bind(s.bytes_written)
    .bind(s.started_at)
    .bind(s.finished_at)
    .bind(&s.status)
    .bind(&s.error)
    .fetch_optional(pool)
    .await;
    match inserted {
        Ok(Some(job)) => Ok(Written::Recorded(job)),
        Ok(None) => Ok(Written::Duplicate),
        Err(sqlx::Error::Database(db))
            if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            Ok(Written::UnknownRun)
        }
        Err(e) => Err(e),
    }
}

/// Records how a run ended. The first finish wins, unless a later one comes (a resumed run
/// that ended again).
pub async fn finish_run(
    pool: &PgPool,
    run_id: Uuid,
    status: &str,
    error: Option<&str>,
    finished_at: DateTime<Utc>,
) -> sqlx::Result<Written> {
    let updated: Option<bool> = sqlx::query_scalar(
        "UPDATE pipeline_runs \
            SET status = $2, error = $3, finished_at = $4, changed_xid = pg_current_xact_id() \
          WHERE run_id = $1 AND (status = 'running' OR finished_at < $4) \
          RETURNING true",
    )
    .bind(run_id)
    .bind(status)
    .bind(error)
    .bind(finished_at)
    .fetch_optional(pool)
    .await?;
    if updated.is_some() {
        return Ok(Written::Recorded(()));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pipeline_runs WHERE run_id = $1)")
            .bind(run_id)
            .fetch_one(pool)
            .await?;
    Ok(if exists {
        Written::Duplicate
    } else {
        Written::UnknownRun
    })
}

/// Records a stream window.
pub async fn report_window(pool: &PgPool, w: &WindowRow) -> sqlx::Result<Written> {
    let row: Option<bool> = sqlx::query_scalar(
        "INSERT INTO pipeline_stream_windows (pipeline, consumer_group, partition, window_start, \
           window_end, version, events_in, events_out, events_rejected, lag_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING RETURNING true",
    )
    .bind(&w.pipeline)
    .bind(&w.consumer_group)
    .bind(w.partition)
    .bind(w.window_start)
    .bind(w.window_end)
    .bind(&w.version)
    .bind(w.events_in)
    .bind(w.events_out)
    .bind(w.events_rejected)
    .bind(w.lag_ms)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(_) => Written::Recorded(()),
        None => Written::Duplicate,
    })
}

/// Runs matching `filter`, newest start first, at most `filter.limit`.
pub async fn list_runs(pool: &PgPool, filter: &RunFilter) -> sqlx::Result<Vec<RunRow>> {
    let (before_at, before_id) = filter.before.unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM pipeline_runs \
          WHERE ($1 = '' OR pipeline = $1) AND ($2 = '' OR job = $2) AND ($3 = '' OR status = $3) \
            AND ($4::bigint IS NULL OR tenant_id = $4) AND started_at >= $5 \
            AND ($6::timestamptz IS NULL OR (started_at, run_id) < ($6, $7)) \
          ORDER BY started_at DESC, run_id DESC LIMIT $8"
    )))
    .bind(&filter.pipeline)
    .bind(&filter.job)
    .bind(&filter.status)
    .bind(filter.tenant_id)
    .bind(filter.started_after)
    .bind(before_at)
    .bind(before_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// One run and its stages (by start), if known.
pub async fn get_run(pool: &PgPool, run_id: Uuid) -> sqlx::Result<Option<(RunRow, Vec<StageRow>)>> {
    let run: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE run_id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    let Some(run) = run else {
        return Ok(None);
    };
    let stages = sqlx::query_as(
        "SELECT run_id, stage, attempt, tenant_id, rows_read, rows_written, rows_rejected, \
                bytes_read, bytes_written, started_at, finished_at, status, error \
           FROM pipeline_stage_runs WHERE run_id = $1 ORDER BY started_at, stage, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((run, stages)))
}
