//! The rollup group's SQL: what it reads before a flush and the one transaction that commits it.
//!
//! Multi-row statements take parallel arrays (`unnest`), one round trip per table whatever the
//! number of rows. Reads outside the transaction are safe because a partition's rows and
//! visitors have one writer: the queue's single active consumer.

use chrono::{DateTime, Utc};
use sightline_db::rollup::{Dimension, Granularity, Layer, SiteChange};
use sqlx::{PgPool, Row};

use super::{
    aggregate::{FastMap, RowKey},
    state::{Visitor, VisitorState},
};

/// A row's full sketch, keyed with its value spelled out (the cache outlives a flush's interner).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SketchKey {
    pub tenant_id: i64,
    pub site_id: i64,
    pub granularity: Granularity,
    pub bucket_us: i64,
    pub dimension: Dimension,
    pub value: String,
}

impl SketchKey {
    pub fn of(key: &RowKey, value: &str) -> Self {
        Self {
            tenant_id: key.tenant_id,
            site_id: key.site_id,
            granularity: key.granularity,
            bucket_us: key.bucket_us,
            dimension: key.dimension,
            value: value.to_owned(),
        }
    }
}

fn timestamp(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Which of `batch_ids` the rollups already hold.
pub async fn known_batches(pool: &PgPool, batch_ids: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT batch_id FROM rollup_batches WHERE batch_id = ANY($1)")
        .bind(batch_ids)
        .fetch_all(pool)
        .await
}

/// The stored state of these visitors (those without one are absent).
pub async fn load_visitors(
    pool: &PgPool,
    keys: &[(i64, i64, String)],
) -> sqlx::Result<Vec<Result<Visitor, String>>> {
    let (tenants, sites, ids) = split3(keys);
    let rows = sqlx::query(
        "SELECT v.tenant_id, v.site_id, v.visitor_id, v.state FROM rollup_visitors v \
         JOIN unnest($1::bigint[], $2::bigint[], $3::text[]) AS k(t, s, id) \
           ON v.tenant_id = k.t AND v.site_id = k.s AND v.visitor_id = k.id",
    )
    .bind(&tenants)
    .bind(&sites)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let bytes: Vec<u8> = row.get(3);
            let visitor_id: String = row.get(2);
            VisitorState::decode(&bytes)
                .map(|state| Visitor {
                    tenant_id: row.get(0),
                    site_id: row.get(1),
                    visitor_id: visitor_id.clone(),
                    state,
                })
                .map_err(|e| format!("visitor {visitor_id}: {e}"))
        })
        .collect())
}

fn split3(keys: &[(i64, i64, String)]) -> (Vec<i64>, Vec<i64>, Vec<String>) {
    let mut a = Vec::with_capacity(keys.len());
    let mut b = Vec::with_capacity(keys.len());
    let mut c = Vec::with_capacity(keys.len());
    for (x, y, z) in keys {
        a.push(*x);
        b.push(*y);
        c.push(z.clone());
    }
    (a, b, c)
}

/// The currency of each of these sites.
pub async fn site_currencies(pool: &PgPool, site_ids: &[i64]) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as("SELECT id, currency FROM sites WHERE id = ANY($1)")
        .bind(site_ids)
        .fetch_all(pool)
        .await
}

/// The stored sketches of these rows of `shard` (rows without one are absent).
pub async fn load_sketches(
    pool: &PgPool,
    shard: i32,
    keys: &[SketchKey],
) -> sqlx::Result<Vec<(SketchKey, Vec<u8>)>> {
    let rows = sqlx::query(
        "SELECT r.tenant_id, r.site_id, r.granularity, r.bucket, r.dimension, r.value, r.visitors \
         FROM rollups r \
         JOIN unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
           AS k(t, s, g, b, d, v) \
           ON r.tenant_id = k.t AND r.site_id = k.s AND r.granularity = k.g AND r.bucket = k.b \
          AND r.dimension = k.d AND r.value = k.v \
         WHERE r.layer = 'speed' AND r.shard = $7 AND r.visitors IS NOT NULL",
    )
    .bind(keys.iter().map(|k| k.tenant_id).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.site_id).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.granularity.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| timestamp(k.bucket_us)).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.dimension.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.value.as_str()).collect::<Vec<_>>())
    .bind(shard)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let granularity: String = row.get(2);
            let dimension: String = row.get(4);
            let bucket: DateTime<Utc> = row.get(3);
            let key = SketchKey {
                tenant_id: row.get(0),
                site_id: row.get(1),
                granularity: Granularity::from_name(&granularity)?,
                bucket_us: bucket.timestamp_micros(),
                dimension: Dimension::from_name(&dimension)?,
                value: row.get(5),
            };
            Some((key, row.get::<Vec<u8>, _>(6)))
        })
        .collect())
}

/// One row of the commit.
pub struct RowWrite<'a> {
    pub key: SketchKey,
    pub counters: &'a super::aggregate::Counters,
    /// The row's full sketch after the flush (empty: no visitor figure).
    pub visitors: Vec<u8>,
}

/// A visitor's state as the snapshot table holds it (`rollup_visitors`), encoded.
pub struct SnapshotRow {
    pub tenant_id: i64,
    pub site_id: i64,
    pub visitor_id: String,
    pub last_us: i64,
    pub state: Vec<u8>,
}

impl SnapshotRow {
    pub fn of(v: &Visitor) -> Self {
        Self {
            tenant_id: v.tenant_id,
            site_id: v.site_id,
            visitor_id: v.visitor_id.clone(),
            last_us: v.state.last_us,
            state: v.state.encode(),
        }
    }
}

/// A snapshot of a partition's visitor states, written beside its flushes
/// ([`write_snapshot`]).
pub struct Snapshot {
    pub shard: i32,
    /// The latest committed state of every visitor changed since the last snapshot.
    pub rows: Vec<SnapshotRow>,
    /// The log's last entry when the states were taken: the snapshot replaces every entry up to
    /// it (`None`: the log has none).
    pub covers_seq: Option<i64>,
    /// Snapshot rows of visitors whose latest event is older than this are deleted.
    pub expire_before_us: i64,
}

/// Everything one flush commits.
pub struct Commit<'a> {
    pub shard: i32,
    pub batch_ids: &'a [String],
    pub rows: Vec<RowWrite<'a>>,
    /// The visitor states the flush changed: one entry appended to the partition's log.
    pub visitors: Vec<&'a Visitor>,
    pub received_until_us: i64,
    pub event_until_us: i64,
    /// Forget processed batch ids older than this many hours (`None`: not this time).
    pub prune_batches_hours: Option<i64>,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Another consumer recorded one of the batches first (two active consumers on one
    /// partition): nothing was written; the next attempt re-reads and skips them.
    #[error("{0} of the flush's batches were recorded concurrently")]
    Raced(u64),
}

/// Applies a flush in one transaction; returns the `seq` of the log entry it appended, if any.
pub async fn commit(pool: &PgPool, c: Commit<'_>) -> Result<Option<i64>, CommitError> {
    let mut tx = pool.begin().await?;

    let recorded = sqlx::query(
        "INSERT INTO rollup_batches (batch_id, shard) SELECT unnest($1::text[]), $2 \
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(c.batch_ids)
    .bind(c.shard)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let expected = c.batch_ids.len() as u64;
    if recorded != expected {
        tx.rollback().await?;
        return Err(CommitError::Raced(expected - recorded));
    }

    if !c.rows.is_empty() {
        let rows = &c.rows;
        let col = |f: fn(&super::aggregate::Counters) -> i64| -> Vec<i64> {
            rows.iter().map(|r| f(r.counters)).collect()
        };
        sqlx::query(
            "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, \
               layer, shard, events, pageviews, visits, bounces, duration_us, orders, \
               revenue_micros, bot_events, visitors) \
             SELECT t, s, g, b, d, v, $16, $17, e, p, vi, bo, du, o, r, bot, NULLIF(sk, '') \
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], \
               $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
               $12::bigint[], $13::bigint[], $14::bigint[], $15::bytea[]) \
               AS u(t, s, g, b, d, v, e, p, vi, bo, du, o, r, bot, sk) \
             ON CONFLICT (tenant_id, site_id, granularity, bucket, dimension, value, layer, shard) \
             DO UPDATE SET events = rollups.events + excluded.events, \
               pageviews = rollups.pageviews + excluded.pageviews, \
               visits = rollups.visits + excluded.visits, \
               bounces = rollups.bounces + excluded.bounces, \
               duration_us = rollups.duration_us + excluded.duration_us, \
               orders = rollups.orders + excluded.orders, \
               revenue_micros = rollups.revenue_micros + excluded.revenue_micros, \
               bot_events = rollups.bot_events + excluded.bot_events, \
               visitors = COALESCE(excluded.visitors, rollups.visitors), \
               updated_at = now()",
        )
        .bind(rows.iter().map(|r| r.key.tenant_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.key.site_id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.key.granularity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| timestamp(r.key.bucket_us))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.key.dimension.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.key.value.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(col(|c| c.events))
        .bind(col(|c| c.pageviews))
        .bind(col(|c| c.visits))
        .bind(col(|c| c.bounces))
        .bind(col(|c| c.duration_us))
        .bind(col(|c| c.orders))
        .bind(col(|c| c.revenue_micros))
        .bind(col(|c| c.bot_events))
        .bind(
            rows.iter()
                .map(|r| r.visitors.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(Layer::Speed.as_str())
        .bind(c.shard)
        .execute(&mut *tx)
        .await?;
    }

    let logged = if c.visitors.is_empty() {
        None
    } else {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO rollup_visitor_log (shard, seq, states) \
             SELECT $1, coalesce(max(seq), 0) + 1, $2 FROM rollup_visitor_log \
             WHERE shard = $1 RETURNING seq",
        )
        .bind(c.shard)
        .bind(super::state::encode_log(&c.visitors))
        .fetch_one(&mut *tx)
        .await?;
        Some(seq)
    };

    if c.event_until_us > i64::MIN {
        sqlx::query(
            "INSERT INTO rollup_watermarks (shard, flushed_at, received_until, event_until) \
             VALUES ($1, now(), $2, $3) \
             ON CONFLICT (shard) DO UPDATE SET flushed_at = now(), \
               received_until = GREATEST(rollup_watermarks.received_until, excluded.received_until), \
               event_until = GREATEST(rollup_watermarks.event_until, excluded.event_until)",
        )
        .bind(c.shard)
        .bind(timestamp(c.received_until_us))
        .bind(timestamp(c.event_until_us))
        .execute(&mut *tx)
        .await?;
    }

    if let Some(hours) = c.prune_batches_hours {
        sqlx::query(
            "DELETE FROM rollup_batches WHERE shard = $1 \
             AND processed_at < now() - make_interval(hours => $2::int)",
        )
        .bind(c.shard)
        .bind(i32::try_from(hours).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    }

    // Last, so that the clock it reads for late changes is as near the commit as can be.
    if !c.rows.is_empty() {
        let sites: Vec<SiteChange> = c
            .rows
            .iter()
            .map(|r| SiteChange {
                tenant_id: r.key.tenant_id,
                site_id: r.key.site_id,
                earliest_bucket_us: r.key.bucket_us,
            })
            .collect();
        sightline_db::rollup::record_change(&mut tx, &sites, c.shard).await?;
    }

    tx.commit().await?;
    Ok(logged)
}

/// Writes `s` in one transaction: its states into `rollup_visitors`, the log entries it covers
/// deleted, expired visitors' rows deleted. Runs beside the partition's flushes, which append
/// to the log and never touch `rollup_visitors`, so neither waits for the other's locks.
///
/// The covering entry is kept, emptied, rather than deleted: the log's `seq` then never starts
/// again from 1, and a snapshot taken earlier than one already written (by a consumer that
/// lost its partition to another) finds its entry gone and writes nothing. Returns whether it
/// was written.
pub async fn write_snapshot(pool: &PgPool, s: &Snapshot) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    if let Some(seq) = s.covers_seq {
        let kept =
            sqlx::query("UPDATE rollup_visitor_log SET states = $3 WHERE shard = $1 AND seq = $2")
                .bind(s.shard)
                .bind(seq)
                .bind(super::state::encode_log(&[]))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if kept == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM rollup_visitor_log WHERE shard = $1 AND seq < $2")
            .bind(s.shard)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    }
    upsert_visitors(&mut tx, s.shard, &s.rows).await?;
    sqlx::query("DELETE FROM rollup_visitors WHERE shard = $1 AND last_us < $2")
        .bind(s.shard)
        .bind(s.expire_before_us)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Writes the latest state of `visitors` into the snapshot table.
async fn upsert_visitors(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    shard: i32,
    v: &[SnapshotRow],
) -> sqlx::Result<()> {
    if v.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rollup_visitors (tenant_id, site_id, visitor_id, shard, last_us, state) \
         SELECT t, s, id, $6, l, st \
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bytea[]) \
           AS u(t, s, id, l, st) \
         ON CONFLICT (tenant_id, site_id, visitor_id) DO UPDATE SET shard = excluded.shard, \
           last_us = excluded.last_us, state = excluded.state",
    )
    .bind(v.iter().map(|x| x.tenant_id).collect::<Vec<_>>())
    .bind(v.iter().map(|x| x.site_id).collect::<Vec<_>>())
    .bind(v.iter().map(|x| x.visitor_id.as_str()).collect::<Vec<_>>())
    .bind(v.iter().map(|x| x.last_us).collect::<Vec<_>>())
    .bind(v.iter().map(|x| x.state.as_slice()).collect::<Vec<_>>())
    .bind(shard)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A partition's visitor log as read at start ([`load_visitor_log`]).
pub struct VisitorLog {
    /// The entries, oldest first: the states changed since the last snapshot (a later entry's
    /// state of a visitor replaces an earlier one's).
    pub entries: Vec<Result<Vec<Visitor>, String>>,
    /// The last entry's `seq`, if any.
    pub last_seq: Option<i64>,
}

/// The entries of `shard`'s visitor log.
pub async fn load_visitor_log(pool: &PgPool, shard: i32) -> sqlx::Result<VisitorLog> {
    let entries: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, states FROM rollup_visitor_log WHERE shard = $1 ORDER BY seq")
            .bind(shard)
            .fetch_all(pool)
            .await?;
    Ok(VisitorLog {
        last_seq: entries.last().map(|(seq, _)| *seq),
        entries: entries
            .into_iter()
            .map(|(seq, states)| {
                super::state::decode_log(&states)
                    .map_err(|e| format!("visitor log entry {seq}: {e}"))
            })
            .collect(),
    })
}

/// The newest event time this shard committed (its event-time watermark), if any.
pub async fn event_watermark(pool: &PgPool, shard: i32) -> sqlx::Result<Option<i64>> {
    let at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT event_until FROM rollup_watermarks WHERE shard = $1")
            .bind(shard)
            .fetch_optional(pool)
            .await?;
    Ok(at.map(|t| t.timestamp_micros()))
}

/// Keeps `FastMap` in this module's vocabulary for callers building sketch caches.
pub type SketchCache = FastMap<SketchKey, sightline_event::VisitorSketch>;

/// An idle partition (drained, nothing unacknowledged) has counted everything ingest received
/// until `margin` ago: its receipt watermark moves there. A partition that never committed
/// has no row and stays out of the minimum.
pub async fn advance_idle_watermark(
    pool: &PgPool,
    shard: i32,
    margin: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rollup_watermarks SET flushed_at = now(), \
           received_until = GREATEST(received_until, now() - make_interval(secs => $2)) \
         WHERE shard = $1",
    )
    .bind(shard)
    .bind(margin.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}
