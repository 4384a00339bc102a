//! Job runs in PostgreSQL (`migrations/0007_batch_runs.sql`): a killed or failed run is resumed
//! by the next run with the same key, skipping the tenant-days it finished.

use std::collections::HashSet;

use chrono::NaiveDate;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::BatchError;

/// A run as opened.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id.
    pub run_id: Uuid,
    /// 1 for a new run, more for a resumed one.
    pub attempt: i32,
    /// Tenant-days finished by earlier attempts.
    pub done: HashSet<(i64, NaiveDate)>,
}

/// Opens the run of `key`: the unfinished one, resumed, or a new one.
pub async fn open(
    pool: &PgPool,
    key: &str,
    job: &str,
    params_json: &str,
) -> Result<Run, BatchError> {
    let mut tx = pool.begin().await?;
    // Serialises two processes opening the same key.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let open: Option<(Uuid, i32)> = sqlx::query_as(
        "UPDATE batch_runs SET status = 'running', attempts = attempts + 1, finished_at = NULL, \
           error = NULL WHERE run_key = $1 AND status <> 'succeeded' \
         RETURNING run_id, attempts",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let run = match open {
        Some((run_id, attempt)) => {
            let done: Vec<(i64, NaiveDate)> =
                sqlx::query_as("SELECT tenant_id, day FROM batch_run_days WHERE run_id = $1")
                    .bind(run_id)
                    .fetch_all(&mut *tx)
                    .await?;
            Run {
                run_id,
                attempt,
                done: done.into_iter().collect(),
            }
        }
        None => {
            let run_id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO batch_runs (run_id, run_key, job, params, status) \
                 VALUES ($1, $2, $3, $4::jsonb, 'running')",
            )
            .bind(run_id)
            .bind(key)
            .bind(job)
            .bind(params_json)
            .execute(&mut *tx)
            .await?;
            Run {
                run_id,
                attempt: 1,
                done: HashSet::new(),
            }
        }
    };
    tx.commit().await?;
    Ok(run)
}

/// Figures of a finished tenant-day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayFigures {
    /// The revision written.
    pub revision: i32,
    /// Raw rows read.
    pub rows_read: u64,
    /// Trusted event rows written.
    pub rows_written: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
}

/// Records a finished tenant-day inside the transaction that closes it.
pub async fn mark_done(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    tenant_id: i64,
    day: NaiveDate,
    figures: DayFigures,
) -> Result<(), BatchError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO batch_run_days (run_id, tenant_id, day, revision, rows_read, rows_written, \
           rows_rejected) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (run_id, tenant_id, day) DO NOTHING",
    )
    .bind(run_id)
    .bind(tenant_id)
    .bind(day)
    .bind(figures.revision)
    .bind(n(figures.rows_read))
    .bind(n(figures.rows_written))
    .bind(n(figures.rows_rejected))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a run.
pub async fn finish(pool: &PgPool, run_id: Uuid, error: Option<&str>) -> Result<(), BatchError> {
    sqlx::query(
        "UPDATE batch_runs SET status = $2, error = $3, finished_at = now() WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(if error.is_none() {
        "succeeded"
    } else {
        "failed"
    })
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
