//! Reading rollups: closures, rows and watermarks from one snapshot of the serving database,
//! so a day the batch layer closes meanwhile is seen either wholly speed or wholly batch.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sightline_db::rollup::{self, BATCH_WRITER, Dimension, Granularity};
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

/// Which rows to sum: those of one site and dimension (one value of it, or all), per bucket
/// and value, or per value only.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The site's tenant.
    pub tenant_id: i64,
    /// The site.
    pub site_id: i64,
    /// The dimension whose rows are read.
    pub dimension: Dimension,
    /// Only this value's rows, when given.
    pub value: Option<&'a str>,
    /// Sum every bucket of a value together (bucket 0).
    pub by_value: bool,
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

type Row = (
    i64,
    DateTime<Utc>,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
);

// The parts arrive as parallel arrays. Each is read by its own index range scan (the
// `rollups_by_dimension` index of migration 0008: dimension, granularity, layer, then the bucket
// range): `OFFSET 0` keeps the planner from flattening the subquery, so the generic plan of this
// prepared statement cannot trade the ranges for a scan of the site's whole history when it
// misestimates `unnest`. Rows come back unsorted and ungrouped: summing them here spares the
// database a sort of every sketch.
const ROWS_OF_PARTS: &str = "SELECT p.i, r.bucket, r.value, r.events, r.pageviews, r.visits, r.bounces, \
        r.duration_us, r.revenue_micros, r.visitors \
    FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[]) \
        WITH ORDINALITY AS p(layer, granularity, lo, hi, i) \
    CROSS JOIN LATERAL ( \
        SELECT * FROM rollups r \
        WHERE r.tenant_id = $1 AND r.site_id = $2 AND r.dimension = $7 \
            AND r.granularity = p.granularity AND r.layer = p.layer \
            AND r.bucket >= p.lo AND r.bucket < p.hi";
const ONE_VALUE: &str = " AND r.value = $8";
const END_OF_PARTS: &str = " OFFSET 0) r";

// The slowest speed partition's receipt watermark.
const SPEED_MARK: &str = "(SELECT min(received_until) FROM rollup_watermarks)";
// The closed days form runs of consecutive dates; the batch watermark is the first run's end.
// Usually there is one run (no gaps: as many days as from the first to the last), whose end is
// the last `ends_at`; only with a gap are the runs numbered, which costs a sort of every day.
const BATCH_MARK: &str = "(SELECT CASE WHEN s.last - s.first + 1 = s.days THEN s.last_end ELSE ( \
        WITH runs AS ( \
            SELECT ends_at, day - (row_number() OVER (ORDER BY day))::int AS run \
            FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2) \
        SELECT max(ends_at) FROM runs \
        WHERE run = (SELECT run FROM runs ORDER BY ends_at LIMIT 1)) END \
    FROM (SELECT min(day) AS first, max(day) AS last, count(*) AS days, max(ends_at) AS last_end \
          FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2) s)";

fn marks_of(speed: Option<DateTime<Utc>>, batch: Option<DateTime<Utc>>) -> Marks {
    Marks {
        speed_us: speed.map(|t| t.timestamp_micros()),
        batch_us: batch.map(|t| t.timestamp_micros()),
    }
}

// The site's rollup version: the sum of its writers' change counters (migration 0009); the
// batch writer's own counter; the sum of the changes to ended hours (migration 0011); and the
// database's clock.
const VERSIONS: &str = "(SELECT coalesce(sum(changes), 0)::bigint FROM rollup_versions \
    WHERE tenant_id = $1 AND site_id = $2), \
    (SELECT coalesce(sum(changes), 0)::bigint FROM rollup_versions \
    WHERE tenant_id = $1 AND site_id = $2 AND writer = $6), \
    (SELECT coalesce(sum(past_changes), 0)::bigint FROM rollup_versions \
    WHERE tenant_id = $1 AND site_id = $2), \
    statement_timestamp()";

/// What answers over a window rest on besides the rows: which days the batch layer closed,
/// the watermarks, and the site's rollup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// The closures overlapping the window, by day.
    pub closures: Vec<Closure>,
    /// Up to when each layer is complete.
    pub marks: Marks,
    /// Grows with every commit that changes the site's rollups.
    pub version: i64,
    /// Grows with every commit of the batch layer that changes the site's rollups (a day
    /// closed, or closed again): the batch layer's rows are what they were while it stays.
    pub batch_version: i64,
    /// Grows with every commit that writes an hour of the site long after it ended (a late
    /// event, a closure): the rows of hours settled by [`Look::settled_until_us`] are what they
    /// were while it stays.
    pub past_version: i64,
    /// The database's clock when this was read, µs.
    pub now_us: i64,
}

impl Look {
    /// Hours that ended before this (a UTC hour boundary) are settled: a write to them raises
    /// [`Look::past_version`]. Writers count a change as past once the hour ended
    /// `SETTLED_AFTER_US` before; the margin covers a writer's commit after its clock reading.
    pub fn settled_until_us(&self) -> i64 {
        Granularity::Hour
            .truncate_us(self.now_us - rollup::SETTLED_AFTER_US - rollup::SETTLED_MARGIN_US)
    }
}

/// The site's closures overlapping `window` (`[from_us, to_us)`; none without a window), the
/// watermarks and the site's rollup version, in one statement (so from one snapshot, also
/// outside a transaction).
pub async fn look<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    tenant_id: i64,
    site_id: i64,
    window: Option<(i64, i64)>,
) -> Result<Look, QueryError> {
    type Found = (
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        i64,
        i64,
        i64,
        DateTime<Utc>,
        Vec<NaiveDate>,
        Vec<DateTime<Utc>>,
        Vec<DateTime<Utc>>,
        Vec<i32>,
    );
    let sql = format!(
        "SELECT {SPEED_MARK}, {BATCH_MARK}, {VERSIONS}, \
             coalesce(array_agg(day ORDER BY day), '{{}}'), \
             coalesce(array_agg(starts_at ORDER BY day), '{{}}'), \
             coalesce(array_agg(ends_at ORDER BY day), '{{}}'), \
             coalesce(array_agg(revision ORDER BY day), '{{}}') \
         FROM rollup_closures \
         WHERE $5 AND tenant_id = $1 AND site_id = $2 AND ends_at > $3 AND starts_at < $4"
    );
    let (from_us, to_us) = window.unwrap_or((0, 0));
    // Built from constants only; every input is a bind parameter.
    let (speed, batch, version, batch_version, past_version, now, days, starts, ends, revisions): Found =
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(site_id)
            .bind(at(from_us))
            .bind(at(to_us))
            .bind(window.is_some())
            .bind(BATCH_WRITER)
            .fetch_one(executor)
            .await?;
    let closures = days
        .into_iter()
        .zip(starts)
        .zip(ends)
        .zip(revisions)
        .map(|(((day, starts_at), ends_at), revision)| Closure {
            day,
            starts_at_us: starts_at.timestamp_micros(),
            ends_at_us: ends_at.timestamp_micros(),
            revision,
        })
        .collect();
    Ok(Look {
        closures,
        marks: marks_of(speed, batch),
        version,
        batch_version,
        past_version,
        now_us: now.timestamp_micros(),
    })
}

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

    /// [`look`] inside the snapshot.
    pub async fn look(
        &mut self,
        tenant_id: i64,
        site_id: i64,
        window: Option<(i64, i64)>,
    ) -> Result<Look, QueryError> {
        look(&mut *self.tx, tenant_id, site_id, window).await
    }

    /// Sums of the rows of `dimension` (one `value`, or all) in each of `parts`, every shard
    /// added up: per bucket and value, or per value only when `by_value`. One list per part, in
    /// the order of `parts`.
    pub async fn sums(
        &mut self,
        rows: &Rows<'_>,
        parts: &[Part],
    ) -> Result<Vec<Vec<RowSum>>, QueryError> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let filter = if rows.value.is_some() { ONE_VALUE } else { "" };
        let sql = format!("{ROWS_OF_PARTS}{filter}{END_OF_PARTS}");
        let layers: Vec<&str> = parts.iter().map(|p| p.layer.as_str()).collect();
        let granularities: Vec<&str> = parts.iter().map(|p| p.granularity.as_str()).collect();
        let lows: Vec<DateTime<Utc>> = parts.iter().map(|p| at(p.lo_us)).collect();
        let highs: Vec<DateTime<Utc>> = parts.iter().map(|p| at(p.hi_us)).collect();
        // Built from constants only; every input is a bind parameter.
        let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(rows.tenant_id)
            .bind(rows.site_id)
            .bind(layers)
            .bind(granularities)
            .bind(lows)
            .bind(highs)
            .bind(rows.dimension.as_str());
        if let Some(value) = rows.value {
            query = query.bind(value);
        }
        let by_value = rows.by_value;
        let mut groups: Vec<HashMap<(i64, String), Totals>> = vec![HashMap::new(); parts.len()];
        let mut found = query.fetch(&mut *self.tx);
        while let Some((part, bucket, value, ev, pv, vi, bo, du, re, sketch)) =
            found.try_next().await?
        {
            let bucket_us = if by_value {
                0
            } else {
                bucket.timestamp_micros()
            };
            // Ordinality counts from 1.
            let Some(part) = usize::try_from(part - 1)
                .ok()
                .and_then(|i| groups.get_mut(i))
            else {
                return Err(QueryError::Internal(format!("row of unknown part {part}")));
            };
            let totals = part.entry((bucket_us, value)).or_default();
            totals.events += ev;
            totals.pageviews += pv;
            totals.visits += vi;
            totals.bounces += bo;
            totals.duration_us += du;
            totals.revenue_micros += re;
            totals.sketches.extend(sketch);
        }
        Ok(groups
            .into_iter()
            .map(|part| {
                part.into_iter()
                    .map(|((bucket_us, value), totals)| RowSum {
                        bucket_us,
                        value,
                        totals,
                    })
                    .collect()
            })
            .collect())
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
