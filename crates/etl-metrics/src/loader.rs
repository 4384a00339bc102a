//! The incremental loader of the `olap` star schema (`migrations/0006_olap_star_schema.sql`).
//!
//! One load is one transaction: it takes an advisory lock (a concurrent load waits, then finds
//! nothing new), reads each ledger table's rows written since its watermark, adds the
//! dimension rows they need, upserts the facts by their natural key, and moves the watermark.
//!
//! The watermark is a transaction id, not a time: a load takes the rows whose writing
//! transaction (`changed_xid`) is older than every transaction still running
//! (`pg_snapshot_xmin`), so a row committed after a later one is never skipped, and rows of
//! transactions still running wait for the next load. Loading a row twice upserts the same
//! values, so a load that runs again (after a reset watermark, or concurrently) changes nothing.

use sqlx::{PgPool, Postgres, Transaction};

use crate::metrics::{EtlMetrics, SourceLabels};

/// Held by a load: `"olapload"` in ASCII.
const LOAD_LOCK: i64 = 0x6f6c_6170_6c6f_6164;

/// What one load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Stage-run facts upserted.
    pub stage_runs: u64,
    /// Stream-window facts upserted.
    pub stream_windows: u64,
}

/// Loads what the ledger holds beyond the watermarks.
pub async fn load(pool: &PgPool) -> sqlx::Result<LoadReport> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOAD_LOCK)
        .execute(&mut *tx)
        .await?;
    // Every transaction below this id has ended: its rows are visible from here on.
    let below: String = sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        .fetch_one(&mut *tx)
        .await?;
    let stage_runs = load_stage_runs(&mut tx, &below).await?;
    let stream_windows = load_stream_windows(&mut tx, &below).await?;
    tx.commit().await?;
    Ok(LoadReport {
        stage_runs,
        stream_windows,
    })
}

/// [`load`], counted in `metrics`.
pub async fn load_counted(pool: &PgPool, metrics: &EtlMetrics) -> sqlx::Result<LoadReport> {
    match load(pool).await {
        Ok(report) => {
            metrics.loads.inc();
            for (source, n) in [
                ("pipeline_stage_runs", report.stage_runs),
                ("pipeline_stream_windows", report.stream_windows),
            ] {
                metrics
                    .loaded_rows
                    .get_or_create(&SourceLabels { source })
                    .inc_by(n);
            }
            Ok(report)
        }
        Err(e) => {
            metrics.load_failures.inc();
            Err(e)
        }
    }
}

async fn watermark(tx: &mut Transaction<'_, Postgres>, source: &str) -> sqlx::Result<String> {
    sqlx::query_scalar(
        "SELECT loaded_below_xid::text FROM olap.load_watermarks WHERE source = $1 FOR UPDATE",
    )
    .bind(source)
    .fetch_one(&mut **tx)
    .await
}

async fn advance(
    tx: &mut Transaction<'_, Postgres>,
    source: &str,
    below: &str,
    rows: u64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE olap.load_watermarks \
            SET loaded_below_xid = greatest(loaded_below_xid, $2::text::xid8), \
                rows_loaded = rows_loaded + $3, loaded_at = now() \
          WHERE source = $1",
    )
    .bind(source)
    .bind(below)
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// Dimension rows for the dates in `column` of the temporary table `source`.
async fn add_dates(
    tx: &mut Transaction<'_, Postgres>,
    source: &str,
    column: &str,
) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO olap.dim_date (date_key, date, year, quarter, month, day, iso_year, iso_week, iso_dow, is_weekend) \
         SELECT to_char(d, 'YYYYMMDD')::int, d, extract(year FROM d), extract(quarter FROM d), \
                extract(month FROM d), extract(day FROM d), extract(isoyear FROM d), \
                extract(week FROM d), extract(isodow FROM d), extract(isodow FROM d) >= 6 \
           FROM (SELECT DISTINCT ({column} AT TIME ZONE 'UTC')::date AS d FROM {source}) days \
         ON CONFLICT DO NOTHING"
    )))
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// The date and time-of-day keys of a UTC instant, as SQL over `column`.
fn date_key(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYYMMDD')::int")
}

fn time_key(column: &str) -> String {
    format!(
        "(extract(hour FROM {column} AT TIME ZONE 'UTC') * 60 + extract(minute FROM {column} AT TIME ZONE 'UTC'))::int"
    )
}

async fn load_stage_runs(tx: &mut Transaction<'_, Postgres>, below: &str) -> sqlx::Result<u64> {
    const SOURCE: &str = "pipeline_stage_runs";
    let from = watermark(tx, SOURCE).await?;
    sqlx::query(
        "CREATE TEMPORARY TABLE load_stage ON COMMIT DROP AS \
         SELECT s.*, split_part(s.stage, '/', 1) AS stage_family, r.pipeline, r.job, r.version, \
                coalesce(s.tenant_id, r.tenant_id, 0) AS tid \
           FROM pipeline_stage_runs s JOIN pipeline_runs r USING (run_id) \
          WHERE s.changed_xid >= $1::text::xid8 AND s.changed_xid < $2::text::xid8",
    )
    .bind(&from)
    .bind(below)
    .execute(&mut **tx)
    .await?;
    add_dates(tx, "load_stage", "started_at").await?;
    for statement in [
        "INSERT INTO olap.dim_stage (stage) SELECT DISTINCT stage_family FROM load_stage \
         ON CONFLICT DO NOTHING",
        "INSERT INTO olap.dim_pipeline (pipeline, job, version) \
         SELECT DISTINCT pipeline, job, version FROM load_stage ON CONFLICT DO NOTHING",
        // Slugs and names follow the tenants table (a tenant deleted since keeps its row).
        "INSERT INTO olap.dim_tenant AS d (tenant_id, slug, name) \
         SELECT DISTINCT l.tid, coalesce(t.slug, 'tenant-' || l.tid), coalesce(t.name, '') \
           FROM load_stage l LEFT JOIN tenants t ON t.id = l.tid WHERE l.tid <> 0 \
         ON CONFLICT (tenant_id) DO UPDATE SET slug = excluded.slug, name = excluded.name \
           WHERE (d.slug, d.name) IS DISTINCT FROM (excluded.slug, excluded.name)",
    ] {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    let upserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO olap.fact_stage_run (run_id, stage, attempt, date_key, time_key, stage_key, \
           pipeline_key, tenant_key, status_key, started_at, finished_at, duration_s, rows_read, \
           rows_written, rows_rejected, bytes_read, bytes_written) \
         SELECT l.run_id, l.stage, l.attempt, {}, {}, st.stage_key, p.pipeline_key, t.tenant_key, \
                ds.status_key, l.started_at, l.finished_at, \
                extract(epoch FROM l.finished_at - l.started_at)::double precision, \
                l.rows_read, l.rows_written, l.rows_rejected, l.bytes_read, l.bytes_written \
           FROM load_stage l \
           JOIN olap.dim_stage st ON st.stage = l.stage_family \
           JOIN olap.dim_pipeline p ON (p.pipeline, p.job, p.version) = (l.pipeline, l.job, l.version) \
           JOIN olap.dim_tenant t ON t.tenant_id = l.tid \
           JOIN olap.dim_status ds ON ds.status = l.status \
         ON CONFLICT (run_id, stage, attempt) DO UPDATE SET \
           date_key = excluded.date_key, time_key = excluded.time_key, stage_key = excluded.stage_key, \
           pipeline_key = excluded.pipeline_key, tenant_key = excluded.tenant_key, \
           status_key = excluded.status_key, started_at = excluded.started_at, \
           finished_at = excluded.finished_at, duration_s = excluded.duration_s, \
           rows_read = excluded.rows_read, rows_written = excluded.rows_written, \
           rows_rejected = excluded.rows_rejected, bytes_read = excluded.bytes_read, \
           bytes_written = excluded.bytes_written",
        date_key("l.started_at"),
        time_key("l.started_at"),
    )))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    advance(tx, SOURCE, below, upserted).await?;
    Ok(upserted)
}

async fn load_stream_windows(tx: &mut Transaction<'_, Postgres>, below: &str) -> sqlx::Result<u64> {
    const SOURCE: &str = "pipeline_stream_windows";
    let from = watermark(tx, SOURCE).await?;
    sqlx::query(
        "CREATE TEMPORARY TABLE load_window ON COMMIT DROP AS \
         SELECT * FROM pipeline_stream_windows \
          WHERE changed_xid >= $1::text::xid8 AND changed_xid < $2::text::xid8",
    )
    .bind(&from)
    .bind(below)
    .execute(&mut **tx)
    .await?;
    add_dates(tx, "load_window", "window_start").await?;
    for statement in [
        "INSERT INTO olap.dim_stage (stage) SELECT DISTINCT consumer_group FROM load_window \
         ON CONFLICT DO NOTHING",
        "INSERT INTO olap.dim_pipeline (pipeline, job, version) \
         SELECT DISTINCT pipeline, consumer_group, version FROM load_window ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    let upserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO olap.fact_stream_window (pipeline, consumer_group, partition, window_start, \
           date_key, time_key, stage_key, pipeline_key, window_s, events_in, events_out, \
           events_rejected, lag_ms) \
         SELECT l.pipeline, l.consumer_group, l.partition, l.window_start, {}, {}, st.stage_key, \
                p.pipeline_key, extract(epoch FROM l.window_end - l.window_start)::double precision, \
                l.events_in, l.events_out, l.events_rejected, l.lag_ms \
           FROM load_window l \
           JOIN olap.dim_stage st ON st.stage = l.consumer_group \
           JOIN olap.dim_pipeline p \
             ON (p.pipeline, p.job, p.version) = (l.pipeline, l.consumer_group, l.version) \
         ON CONFLICT (pipeline, consumer_group, partition, window_start) DO UPDATE SET \
           date_key = excluded.date_key, time_key = excluded.time_key, stage_key = excluded.stage_key, \
           pipeline_key = excluded.pipeline_key, window_s = excluded.window_s, \
           events_in = excluded.events_in, events_out = excluded.events_out, \
           events_rejected = excluded.events_rejected, lag_ms = excluded.lag_ms",
        date_key("l.window_start"),
        time_key("l.window_start"),
    )))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    advance(tx, SOURCE, below, upserted).await?;
    Ok(upserted)
}
