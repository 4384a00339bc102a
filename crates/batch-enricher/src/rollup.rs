//! Stage 2: the day's exact rollup rows, and the transaction that makes them final.
//!
//! The rows come from the stream processor's own [`fold`] over the day's facts in time order:
//! the same dimensions, counters, visit attribution and sketches as the speed layer, computed
//! over complete, deduplicated input. The fold's rows are UTC hours cut in two where the site's
//! local day starts or ends inside one ([`Buckets::HoursCutAt`]); `hour` rows are the UTC hours
//! starting in the local day and the `day` row unites the parts inside it (local days need not
//! start on a UTC hour).

use std::{collections::BTreeMap, ops::Range};

use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use sightline_db::rollup::{Dimension, Granularity, Layer};
use sightline_event::VisitorSketch;
use sqlx::{Postgres, Row, Transaction};
use stream_processor::rollup::{
    aggregate::{Buckets, Counters, FoldSettings, fold},
    fact::Fact,
};

use crate::{BatchError, days::SiteDay};

/// One row the batch layer writes.
#[derive(Debug, Clone)]
pub struct BatchRow {
    /// `hour` or `day`.
    pub granularity: Granularity,
    /// Bucket start, µs.
    pub bucket_us: i64,
    /// Dimension.
    pub dimension: Dimension,
    /// Dimension value.
    pub value: String,
    /// Additive figures.
    pub counters: Counters,
    /// Unique visitors, when the row counts them.
    pub visitors: Option<VisitorSketch>,
}

/// The rows of one site's day.
#[derive(Debug, Clone)]
pub struct SiteRows {
    /// Whose day.
    pub site: SiteDay,
    /// Its `hour` and `day` rows.
    pub rows: Vec<BatchRow>,
}

impl SiteRows {
    /// The `day` row of the site's totals.
    pub fn day_total(&self) -> Option<&BatchRow> {
        self.rows
            .iter()
            .find(|r| r.granularity == Granularity::Day && r.dimension == Dimension::Total)
    }
}

fn is_empty(c: &Counters) -> bool {
    *c == Counters::default()
}

/// A bucket's figures: counters and, when the row counts them, the visitors.
type Acc = (Counters, Option<VisitorSketch>);

fn merge_into(acc: &mut Acc, counters: &Counters, visitors: Option<&VisitorSketch>) {
    add(&mut acc.0, counters);
    if let Some(v) = visitors {
        match &mut acc.1 {
            Some(sketch) => sketch.merge(v),
            None => acc.1 = Some(v.clone()),
        }
    }
}

/// A site's day folded from some of its visitors: the `hour` and `day` buckets so far. Folds of
/// disjoint sets of visitors [`merge`](SiteFold::merge) into the fold of all of them, since
/// visits, counters and visitor sets are each one visitor's.
#[derive(Debug, Clone)]
pub struct SiteFold {
    site: SiteDay,
    hours: BTreeMap<(i64, Dimension, String), Acc>,
    days: BTreeMap<(Dimension, String), Acc>,
}

impl SiteFold {
    /// Nothing folded yet.
    pub fn new(site: &SiteDay) -> Self {
        Self {
            site: site.clone(),
            hours: BTreeMap::new(),
            days: BTreeMap::new(),
        }
    }

    /// The event times whose facts can reach `site`'s rows: its local day, and the rest of the
    /// UTC hour the day ends in (an hour row is the whole hour when it starts in the day). An
    /// event counts in its own bucket and a visit in the bucket of its first event, so a visitor
    /// with no event in this span adds nothing to any row.
    pub fn reach_us(site: &SiteDay) -> Range<i64> {
        const HOUR_US: i64 = 3_600_000_000;
        let last_hour = Granularity::Hour.truncate_us(site.ends_us.saturating_sub(1));
        site.starts_us..site.ends_us.max(last_hour.saturating_add(HOUR_US))
    }

    /// Folds one site's facts (whole visitors, each in time order; margins included).
    pub fn of<'f>(site: &SiteDay, facts: impl IntoIterator<Item = &'f Fact>) -> Self {
        let currencies = [(site.site_id, site.currency.clone())]
            .into_iter()
            .collect::<std::collections::HashMap<_, _, RandomState>>();
        // The batch reads what it was given: no event is too late for it. Its rows are UTC
        // hours cut at the local day's edges, so that hours and the day are unions of them.
        let settings = FoldSettings {
            now_us: i64::MIN,
            late_max_age_us: 0,
            buckets: Buckets::HoursCutAt([site.starts_us, site.ends_us]),
        };
        let folded = fold(facts, |_| None, &currencies, settings);
        // Rows in a fixed order, so the sketches are united in the same order on every run (the
        // fold's rows come out of a hash map).
        let mut parts: Vec<_> = folded
            .rows
            .iter()
            .map(|(key, delta)| {
                (
                    key.bucket_us,
                    key.dimension,
                    folded.values.get(key.value),
                    delta,
                )
            })
            .collect();
        parts.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        type Refs<'a> = (Counters, Vec<&'a VisitorSketch>);
        let mut days: BTreeMap<(Dimension, &str), Refs<'_>> = BTreeMap::new();
        let mut hours: BTreeMap<(i64, Dimension, &str), Refs<'_>> = BTreeMap::new();
        for (bucket_us, dimension, value, delta) in parts {
            let hour = Granularity::Hour.truncate_us(bucket_us);
            // Hours that start in the local day, whole (their parts may pass its end).
            if site.contains(hour) {
                let entry = hours.entry((hour, dimension, value)).or_default();
                add(&mut entry.0, &delta.counters);
                entry.1.extend(delta.visitors.as_ref());
            }
            if site.contains(bucket_us) {
                let entry = days.entry((dimension, value)).or_default();
                add(&mut entry.0, &delta.counters);
                entry.1.extend(delta.visitors.as_ref());
            }
        }
        let united = |(counters, sketches): Refs<'_>| {
            let visitors = (!sketches.is_empty()).then(|| VisitorSketch::union_of(sketches));
            (counters, visitors)
        };
        Self {
            site: site.clone(),
            hours: hours
                .into_iter()
                .map(|((h, d, v), refs)| ((h, d, v.to_owned()), united(refs)))
                .collect(),
            days: days
                .into_iter()
                .map(|((d, v), refs)| ((d, v.to_owned()), united(refs)))
                .collect(),
        }
    }

    /// Adds the fold of other visitors of the same site-day.
    pub fn merge(&mut self, other: SiteFold) {
        for (key, (counters, visitors)) in other.hours {
            merge_into(
                self.hours.entry(key).or_default(),
                &counters,
                visitors.as_ref(),
            );
        }
        for (key, (counters, visitors)) in other.days {
            merge_into(
                self.days.entry(key).or_default(),
                &counters,
                visitors.as_ref(),
            );
        }
    }

    /// The site's `hour` and `day` rows.
    pub fn rows(self) -> SiteRows {
        let site = self.site;
        let buckets = self
            .hours
            .into_iter()
            .map(|((hour, d, v), acc)| (Granularity::Hour, hour, d, v, acc))
            .chain(
                self.days
                    .into_iter()
                    .map(|((d, v), acc)| (Granularity::Day, site.starts_us, d, v, acc)),
            );
        let mut rows = Vec::new();
        for (granularity, bucket_us, dimension, value, (counters, visitors)) in buckets {
            if is_empty(&counters) && visitors.is_none() {
                continue;
            }
            rows.push(BatchRow {
                granularity,
                bucket_us,
                dimension,
                value,
                counters,
                visitors,
            });
        }
        rows.sort_by(|a, b| {
            (a.granularity, a.bucket_us, a.dimension, &a.value).cmp(&(
                b.granularity,
                b.bucket_us,
                b.dimension,
                &b.value,
            ))
        });
        SiteRows { site, rows }
    }
}

fn add(to: &mut Counters, c: &Counters) {
    to.events += c.events;
    to.pageviews += c.pageviews;
    to.visits += c.visits;
    to.bounces += c.bounces;
    to.duration_us += c.duration_us;
    to.orders += c.orders;
    to.revenue_micros += c.revenue_micros;
    to.bot_events += c.bot_events;
}

fn timestamp(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Rows inserted per statement.
const INSERT_CHUNK: usize = 5_000;

/// Closes one site's day inside `tx` (see `migrations/0004_rollup_closures.sql`): deletes its
/// earlier batch rows, inserts `rows` at the next revision and upserts the closure. Returns the
/// new revision.
pub async fn close_site_day(
    tx: &mut Transaction<'_, Postgres>,
    site_rows: &SiteRows,
) -> Result<i32, BatchError> {
    let site = &site_rows.site;
    let (starts, ends) = (timestamp(site.starts_us), timestamp(site.ends_us));
    // Locks the closure row, so two runs closing the same day take turns.
    let previous: Option<i32> = sqlx::query_scalar(
        "SELECT revision FROM rollup_closures \
         WHERE tenant_id = $1 AND site_id = $2 AND day = $3 FOR UPDATE",
    )
    .bind(site.tenant_id)
    .bind(site.site_id)
    .bind(site.day)
    .fetch_optional(&mut **tx)
    .await?;
    let revision = previous.unwrap_or(0) + 1;
    sqlx::query(
        "DELETE FROM rollups WHERE tenant_id = $1 AND site_id = $2 AND layer = $5 \
         AND ((granularity = 'day' AND bucket = $3) \
           OR (granularity = 'hour' AND bucket >= $3 AND bucket < $4))",
    )
    .bind(site.tenant_id)
    .bind(site.site_id)
    .bind(starts)
    .bind(ends)
    .bind(Layer::Batch.as_str())
    .execute(&mut **tx)
    .await?;
    for rows in site_rows.rows.chunks(INSERT_CHUNK) {
        insert_rows(tx, site, rows, revision).await?;
    }
    sqlx::query(
        "INSERT INTO rollup_closures (tenant_id, site_id, day, starts_at, ends_at, revision) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id, site_id, day) DO UPDATE SET starts_at = excluded.starts_at, \
           ends_at = excluded.ends_at, revision = excluded.revision, closed_at = now()",
    )
    .bind(site.tenant_id)
    .bind(site.site_id)
    .bind(site.day)
    .bind(starts)
    .bind(ends)
    .bind(revision)
    .execute(&mut **tx)
    .await?;
    // The day is past: the change counts for readers of ended hours too.
    sightline_db::rollup::record_change(
        tx,
        &[sightline_db::rollup::SiteChange {
            tenant_id: site.tenant_id,
            site_id: site.site_id,
            earliest_bucket_us: site.starts_us,
        }],
        sightline_db::rollup::BATCH_WRITER,
    )
    .await?;
    Ok(revision)
}

async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    site: &SiteDay,
    rows: &[BatchRow],
    revision: i32,
) -> Result<(), BatchError> {
    let col =
        |f: fn(&Counters) -> i64| -> Vec<i64> { rows.iter().map(|r| f(&r.counters)).collect() };
    let sketches: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| {
            r.visitors
                .as_ref()
                .map(VisitorSketch::to_bytes)
                .unwrap_or_default()
        })
        .collect();
    sqlx::query(
        "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, \
           layer, shard, events, pageviews, visits, bounces, duration_us, orders, \
           revenue_micros, bot_events, visitors, revision) \
         SELECT $1, $2, g, b, d, v, $14, 0, e, p, vi, bo, du, o, r, bot, NULLIF(sk, ''), $15 \
         FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::bigint[], \
           $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
           $13::bigint[], $16::bigint[], $17::bytea[]) \
           AS u(g, b, d, v, e, p, vi, bo, du, o, r, bot, sk)",
    )
    .bind(site.tenant_id)
    .bind(site.site_id)
    .bind(
        rows.iter()
            .map(|r| r.granularity.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| timestamp(r.bucket_us))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.dimension.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.value.as_str()).collect::<Vec<_>>())
    .bind(col(|c| c.events))
    .bind(col(|c| c.pageviews))
    .bind(col(|c| c.visits))
    .bind(col(|c| c.bounces))
    .bind(col(|c| c.duration_us))
    .bind(col(|c| c.orders))
    .bind(col(|c| c.revenue_micros))
    .bind(Layer::Batch.as_str())
    .bind(revision)
    .bind(col(|c| c.bot_events))
    .bind(sketches)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A site-day's totals as one figure per metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Counters of the site's totals row.
    pub counters: Counters,
    /// Estimated unique visitors, rounded.
    pub visitors: i64,
}

/// The metric names of [`Totals::metrics`], in order.
pub const METRICS: [&str; 9] = [
    "events",
    "pageviews",
    "visitors",
    "visits",
    "bounces",
    "duration_us",
    "orders",
    "revenue_micros",
    "bot_events",
];

impl Totals {
    /// Totals of the rows computed for a day.
    pub fn of(rows: &SiteRows) -> Self {
        rows.day_total().map_or_else(Self::default, |r| Self {
            counters: r.counters,
            visitors: r
                .visitors
                .as_ref()
                .map_or(0, |s| s.estimate().round() as i64),
        })
    }

    /// The figures in the order of [`METRICS`].
    pub fn metrics(&self) -> [i64; 9] {
        let c = &self.counters;
        [
            c.events,
            c.pageviews,
            self.visitors,
            c.visits,
            c.bounces,
            c.duration_us,
            c.orders,
            c.revenue_micros,
            c.bot_events,
        ]
    }
}

/// What the serving database reports for a site's day now: the batch `day` row when the day is
/// closed, else the speed layer's minute rows of the day (every shard).
pub async fn current_totals(pool: &sqlx::PgPool, site: &SiteDay) -> Result<Totals, BatchError> {
    let (starts, ends) = (timestamp(site.starts_us), timestamp(site.ends_us));
    let closed: Option<i32> = sqlx::query_scalar(
        "SELECT revision FROM rollup_closures WHERE tenant_id = $1 AND site_id = $2 AND day = $3",
    )
    .bind(site.tenant_id)
    .bind(site.site_id)
    .bind(site.day)
    .fetch_optional(pool)
    .await?;
    let sql = if closed.is_some() {
        "SELECT events, pageviews, visits, bounces, duration_us, orders, revenue_micros, \
           bot_events, visitors FROM rollups \
         WHERE tenant_id = $1 AND site_id = $2 AND layer = 'batch' AND granularity = 'day' \
           AND bucket = $3 AND $4 > $3 AND dimension = '' AND value = ''"
    } else {
        "SELECT events, pageviews, visits, bounces, duration_us, orders, revenue_micros, \
           bot_events, visitors FROM rollups \
         WHERE tenant_id = $1 AND site_id = $2 AND layer = 'speed' AND granularity = 'minute' \
           AND bucket >= $3 AND bucket < $4 AND dimension = '' AND value = ''"
    };
    let rows = sqlx::query(sql)
        .bind(site.tenant_id)
        .bind(site.site_id)
        .bind(starts)
        .bind(ends)
        .fetch_all(pool)
        .await?;
    let mut totals = Counters::default();
    let mut sketch = VisitorSketch::new();
    for row in rows {
        add(
            &mut totals,
            &Counters {
                events: row.try_get(0)?,
                pageviews: row.try_get(1)?,
                visits: row.try_get(2)?,
                bounces: row.try_get(3)?,
                duration_us: row.try_get(4)?,
                orders: row.try_get(5)?,
                revenue_micros: row.try_get(6)?,
                bot_events: row.try_get(7)?,
            },
        );
        let bytes: Option<Vec<u8>> = row.try_get(8)?;
        if let Some(bytes) = bytes {
            sketch.merge(&VisitorSketch::from_bytes(&bytes)?);
        }
    }
    Ok(Totals {
        counters: totals,
        visitors: sketch.estimate().round() as i64,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::NaiveDate;
    use sightline_event::Enricher;
    use sightline_proto::events::v1::{Event, EventType};

    use super::*;
    use crate::enrich::{Role, Rules, mark_reaching, prepare, sessionise};

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn folds_of_disjoint_visitors_merge_into_the_fold_of_all() {
        let day = NaiveDate::from_ymd_opt(2025, 3, 10).unwrap();
        let starts_us = 1_741_564_800_000_000;
        let site = SiteDay {
            tenant_id: 1,
            site_id: 2,
            day,
            zone: chrono_tz::UTC,
            currency: "EUR".into(),
            starts_us,
            ends_us: starts_us + 24 * 60 * MINUTE,
        };
        let mut events = Vec::new();
        for (v, visitor) in ["a", "b", "c"].iter().enumerate() {
            for i in 0..4 {
                let mut e = Event {
                    message_id: format!("{visitor}{i}"),
                    tenant_id: 1,
                    site_id: 2,
                    visitor_id: (*visitor).into(),
                    timestamp_us: starts_us + (v as i64 * 7 + i * 20) * MINUTE,
                    user_agent:
                        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
                            .into(),
                    page_url: format!("https://s.example/p{i}"),
                    ..Event::default()
                };
                e.set_type(EventType::Page);
                events.push(e);
            }
        }
        let enricher = Enricher::new().unwrap();
        let (prepared, _) = prepare(&enricher, &Rules::default(), events, &HashSet::from([2]));
        let facts: Vec<&Fact> = prepared.iter().map(|p| &p.fact).collect();
        type Shape = Vec<(Granularity, i64, Dimension, String, Counters, Option<f64>)>;
        let shape = |rows: SiteRows| -> Shape {
            rows.rows
                .into_iter()
                .map(|r| {
                    let visitors = r.visitors.map(|v| v.estimate());
                    (
                        r.granularity,
                        r.bucket_us,
                        r.dimension,
                        r.value,
                        r.counters,
                        visitors,
                    )
                })
                .collect()
        };
        let whole = shape(SiteFold::of(&site, facts.iter().copied()).rows());
        let mut merged = SiteFold::of(&site, facts[..4].iter().copied());
        merged.merge(SiteFold::of(&site, facts[4..].iter().copied()));
        let merged = shape(merged.rows());
        assert_eq!(merged, whole);
        let total = whole
            .iter()
            .find(|r| r.0 == Granularity::Day && r.2 == Dimension::Total)
            .unwrap();
        assert_eq!(total.4.pageviews, 12);
        assert_eq!(total.5.map(f64::round), Some(3.0));
    }

    /// Site 2's 2025-03-10 in Kolkata: from 2025-03-09T18:30Z, 24 hours.
    fn kolkata_day() -> SiteDay {
        let starts_us = 1_741_545_000_000_000;
        SiteDay {
            tenant_id: 1,
            site_id: 2,
            day: NaiveDate::from_ymd_opt(2025, 3, 10).unwrap(),
            zone: chrono_tz::Asia::Kolkata,
            currency: "INR".into(),
            starts_us,
            ends_us: starts_us + 24 * 60 * MINUTE,
        }
    }

    #[test]
    fn only_visitors_with_an_event_in_reach_add_to_the_rows() {
        // A day that ends at half past an hour, as in Kolkata: its last hour row runs on to the
        // full hour.
        let site = kolkata_day();
        let starts_us = site.starts_us;
        let reach = SiteFold::reach_us(&site);
        assert_eq!(reach, site.starts_us..site.ends_us + 30 * MINUTE);
        let visit = |visitor: &str, from_us: i64| -> Vec<Event> {
            (0..3)
                .map(|i| {
                    let mut e = Event {
                        message_id: format!("{visitor}{i}"),
                        tenant_id: 1,
                        site_id: 2,
                        visitor_id: visitor.into(),
                        timestamp_us: from_us + i * 5 * MINUTE,
                        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 \
                                     Firefox/125.0"
                            .into(),
                        page_url: format!("https://s.example/p{i}"),
                        ..Event::default()
                    };
                    e.set_type(EventType::Page);
                    e
                })
                .collect()
        };
        let enricher = Enricher::new().unwrap();
        let rows_of = |visitors: &[Vec<Event>]| {
            let events = visitors.concat();
            let (prepared, _) = prepare(&enricher, &Rules::default(), events, &HashSet::from([2]));
            let rows = SiteFold::of(&site, prepared.iter().map(|p| &p.fact)).rows();
            rows.rows
                .into_iter()
                .map(|r| {
                    let visitors = r.visitors.map(|v| v.estimate().round());
                    (
                        r.granularity,
                        r.bucket_us,
                        r.dimension,
                        r.value,
                        r.counters,
                        visitors,
                    )
                })
                .collect::<Vec<_>>()
        };
        // In the day, starting before it, and in the rest of its last hour: all three count.
        let (inside, crossing, late_hour) = (
            visit("in", starts_us + 60 * MINUTE),
            visit("crossing", starts_us - 7 * MINUTE),
            visit("late-hour", site.ends_us + 10 * MINUTE),
        );
        // Only before the day, and only after its last hour: neither reaches a row.
        let (before, after) = (
            visit("before", starts_us - 3 * 60 * MINUTE),
            visit("after", reach.end),
        );
        let reached = rows_of(&[inside.clone(), crossing.clone(), late_hour.clone()]);
        let everyone = rows_of(&[inside.clone(), crossing.clone(), late_hour, before, after]);
        assert_eq!(everyone, reached);
        assert_ne!(
            reached,
            rows_of(&[inside, crossing]),
            "the last hour's rest counts"
        );
    }

    #[test]
    fn leaving_out_what_cannot_reach_the_day_changes_no_figure() {
        let site = kolkata_day();
        let starts_us = site.starts_us;
        let reach = SiteFold::reach_us(&site);
        // Visitors active across the day and 8 hours either side, with pauses just under and
        // just over the visit timeout, bookkeeping calls, and a bot among them.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut events = Vec::new();
        for v in 0..60 {
            let mut t = starts_us - 8 * 60 * MINUTE + next(40 * 60) as i64 * MINUTE;
            for i in 0..1 + next(40) {
                t += match next(10) {
                    0 => 29 * MINUTE + next(2 * MINUTE as u64) as i64,
                    1 => 3 * 60 * MINUTE,
                    _ => next(5 * MINUTE as u64) as i64,
                };
                let mut e = Event {
                    message_id: format!("{v}-{i}"),
                    tenant_id: 1,
                    site_id: 2,
                    visitor_id: format!("v{v:02}"),
                    timestamp_us: t,
                    user_agent: if v % 7 == 0 {
                        "Googlebot/2.1 (+http://www.google.com/bot.html)"
                    } else {
                        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
                    }
                    .into(),
                    page_url: format!("https://s.example/p{}?utm_source=s{}", next(4), v % 3),
                    ..Event::default()
                };
                e.set_type(match next(10) {
                    0 => EventType::Identify,
                    1 => EventType::Screen,
                    2..=4 => EventType::Track,
                    _ => EventType::Page,
                });
                events.push(e);
            }
        }
        let sites = HashSet::from([2]);
        let mut kept = Vec::new();
        for visitor in events.chunk_by(|a, b| a.visitor_id == b.visitor_id) {
            let rows: Vec<(i64, Role)> = visitor
                .iter()
                .map(|e| {
                    let role = Role::of(&e.message_id, &e.visitor_id, e.r#type(), 2, &sites);
                    (e.timestamp_us, role)
                })
                .collect();
            let mut keep = vec![false; rows.len()];
            mark_reaching(&rows, Some(&reach), &mut keep);
            kept.extend(
                visitor
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(e, _)| e.clone()),
            );
        }
        assert!(
            kept.len() < events.len() * 3 / 4,
            "{} of {} kept",
            kept.len(),
            events.len()
        );
        let enricher = Enricher::new().unwrap();
        let figures = |events: Vec<Event>| {
            let (mut prepared, _) = prepare(&enricher, &Rules::default(), events, &sites);
            let visits: Vec<_> = sessionise(&mut prepared)
                .into_iter()
                .filter(|v| site.contains(v.start_us))
                .collect();
            let day_events: Vec<_> = prepared
                .iter()
                .filter(|p| site.contains(p.event.timestamp_us))
                .map(|p| (p.event.message_id.clone(), p.session_id))
                .collect();
            let rows: Vec<_> = SiteFold::of(&site, prepared.iter().map(|p| &p.fact))
                .rows()
                .rows
                .into_iter()
                .map(|r| {
                    let visitors = r.visitors.map(|v| v.estimate().round());
                    (
                        r.granularity,
                        r.bucket_us,
                        r.dimension,
                        r.value,
                        r.counters,
                        visitors,
                    )
                })
                .collect();
            (visits, day_events, rows)
        };
        let (all, pruned) = (figures(events), figures(kept));
        assert!(all.0.len() > 20 && all.1.len() > 200, "a real day");
        assert_eq!(pruned.0, all.0, "visits");
        assert_eq!(pruned.1, all.1, "events");
        assert_eq!(pruned.2, all.2, "rollup rows");
    }
}
