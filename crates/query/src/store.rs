//! Reading rollups: closures, rows and watermarks from one snapshot of the serving database,
//! so a day the batch layer closes meanwhile is seen either wholly speed or wholly batch.

use chrono::{DateTime, NaiveDate, Utc};
use sightline_db::rollup::Dimension;
use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    QueryError,
    calendar::{Closure, Part},
    measure::Totals,
};

/// The rows of one bucket (or, for breakdowns, of one value over every bucket).
#[derive(Debug, Clone)]
pub struct RowSum {
    /// The bucket, µs (0 in breakdowns).
    pub bucket_us: i64,
    /// The dimension value.
    pub value: String,
    /// Summed counters and the sketches to unite.
    pub totals: Totals,
}

/// Up to when the layers are complete, µs; `None` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// The slowest speed partition's receipt watermark.
    pub speed_us: Option<i64>,
    /// The end of the contiguous closed days from the site's first closed day.
    pub batch_us: Option<i64>,
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

type SumRow = (
    Option<DateTime<Utc>>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Vec<Vec<u8>>,
);

const SUMS: &str = "sum(r.events)::int8, sum(r.pageviews)::int8, sum(r.visits)::int8, \
    sum(r.bounces)::int8, sum(r.duration_us)::int8, sum(r.revenue_micros)::int8, \
    coalesce(array_agg(r.visitors) FILTER (WHERE r.visitors IS NOT NULL), '{}')";

// The parts arrive as parallel arrays; each joins the primary key's (tenant, site, granularity,
// bucket) prefix as a range scan.
const FROM_PARTS: &str = "FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[]) \
        AS p(layer, granularity, lo, hi) \
    JOIN rollups r ON r.tenant_id = $1 AND r.site_id = $2 AND r.granularity = p.granularity \
        AND r.bucket >= p.lo AND r.bucket < p.hi AND r.layer = p.layer \
    WHERE r.dimension = $7 AND ($8::text IS NULL OR r.value = $8)";

/// One consistent view of the rollups, for the duration of an answer.
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
}

impl Snapshot {
    /// Opens a read-only REPEATABLE READ transaction: every read sees the same commit.
    pub async fn begin(pool: &PgPool) -> Result<Self, QueryError> {
        let tx = pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        Ok(Self { tx })
    }

    /// Ends the transaction (it wrote nothing).
    pub async fn finish(self) -> Result<(), QueryError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// The site's closures overlapping `[from_us, to_us)`, by day.
    pub async fn closures(
        &mut self,
        tenant_id: i64,
        site_id: i64,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<Closure>, QueryError> {
        let rows: Vec<(NaiveDate, DateTime<Utc>, DateTime<Utc>, i32)> = sqlx::query_as(
            "SELECT day, starts_at, ends_at, revision FROM rollup_closures \
             WHERE tenant_id = $1 AND site_id = $2 AND ends_at > $3 AND starts_at < $4 \
             ORDER BY day",
        )
        .bind(tenant_id)
        .bind(site_id)
        .bind(at(from_us))
        .bind(at(to_us))
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(day, starts_at, ends_at, revision)| Closure {
                day,
                starts_at_us: starts_at.timestamp_micros(),
                ends_at_us: ends_at.timestamp_micros(),
                revision,
            })
            .collect())
    }

    /// Sums of the rows of `dimension` (one `value`, or all) in `parts`, every shard added up:
    /// per bucket and value, or per value only when `by_value`.
    pub async fn sums(
        &mut self,
        tenant_id: i64,
        site_id: i64,
        parts: &[Part],
        dimension: Dimension,
        value: Option<&str>,
        by_value: bool,
    ) -> Result<Vec<RowSum>, QueryError> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = if by_value {
            format!("SELECT NULL::timestamptz, r.value, {SUMS} {FROM_PARTS} GROUP BY r.value")
        } else {
            format!(
                "SELECT r.bucket, r.value, {SUMS} {FROM_PARTS} GROUP BY r.granularity, r.bucket, r.value"
            )
        };
        let layers: Vec<&str> = parts.iter().map(|p| p.layer.as_str()).collect();
        let granularities: Vec<&str> = parts.iter().map(|p| p.granularity.as_str()).collect();
        let lows: Vec<DateTime<Utc>> = parts.iter().map(|p| at(p.lo_us)).collect();
        let highs: Vec<DateTime<Utc>> = parts.iter().map(|p| at(p.hi_us)).collect();
        // Built from constants only; every input is a bind parameter.
        let rows: Vec<SumRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(site_id)
            .bind(layers)
            .bind(granularities)
            .bind(lows)
            .bind(highs)
            .bind(dimension.as_str())
            .bind(value)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(bucket, value, ev, pv, vi, bo, du, re, sketches)| RowSum {
                bucket_us: bucket.map_or(0, |b| b.timestamp_micros()),
                value,
                totals: Totals {
                    events: ev,
                    pageviews: pv,
                    visits: vi,
                    bounces: bo,
                    duration_us: du,
                    revenue_micros: re,
                    sketches,
                },
            })
            .collect())
    }

    /// The watermarks of the speed layer and of the site's batch layer.
    pub async fn marks(&mut self, tenant_id: i64, site_id: i64) -> Result<Marks, QueryError> {
        // Batch: the closed days form runs of consecutive dates; the first run's end.
        let (speed, batch): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
            "WITH runs AS ( \
                 SELECT ends_at, day - (row_number() OVER (ORDER BY day))::int AS run \
                 FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2) \
             SELECT (SELECT min(received_until) FROM rollup_watermarks), \
                    (SELECT max(ends_at) FROM runs \
                     WHERE run = (SELECT run FROM runs ORDER BY ends_at LIMIT 1))",
        )
        .bind(tenant_id)
        .bind(site_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(Marks {
            speed_us: speed.map(|t| t.timestamp_micros()),
            batch_us: batch.map(|t| t.timestamp_micros()),
        })
    }

    /// The site's latest closed day and its revision.
    pub async fn last_closure(
        &mut self,
        tenant_id: i64,
        site_id: i64,
    ) -> Result<Option<(NaiveDate, i32)>, QueryError> {
        Ok(sqlx::query_as(
            "SELECT day, revision FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2 \
             ORDER BY day DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(site_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }
}
