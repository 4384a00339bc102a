//! The rollup answers: time series, breakdowns, aggregates, realtime and freshness, each read
//! from one [`Snapshot`].

use chrono::Utc;
use sightline_db::rollup::{Dimension, Granularity, Layer};
use sightline_proto::query::v1 as pb;
use sqlx::PgPool;

use std::{collections::HashMap, sync::Arc};

use crate::{
    QueryError,
    cache::{AnswerCache, AnswerKey, Cacheable, Turn},
    calendar::{self, Interval, Limits, MINUTE_US, Part, Plan, Window},
    closed::{self, ClosedSums},
    measure::{Metric, Totals, values},
    request::{self, Selection},
    sites::Site,
    store::{self, Look, Marks, RowSum, Rows, Snapshot},
};

/// Minutes the realtime view covers, the current one included.
const REALTIME_MINUTES: i64 = 5;

/// Answers from the rollups.
#[derive(Clone)]
pub struct Reader {
    pool: PgPool,
    limits: Limits,
    max_page_size: u32,
    answers: Option<Arc<AnswerCache>>,
    closed: Option<Arc<ClosedSums>>,
}

fn watermark(marks: Marks) -> pb::Watermark {
    pb::Watermark {
        complete_until_us: marks.speed_us.max(marks.batch_us).unwrap_or(0),
        speed_complete_until_us: marks.speed_us.unwrap_or(0),
        batch_complete_until_us: marks.batch_us.unwrap_or(0),
    }
}

/// The kept answer of `key` when it was computed on what `now` shows, with `now`'s watermark.
fn fresh<T: Cacheable>(cache: &AnswerCache, key: &AnswerKey, now: &Look) -> Option<T> {
    cache.get::<T>(key, now).map(|mut answer| {
        answer.set_watermark(watermark(now.marks));
        answer
    })
}

/// What the answer cache has for a request.
enum Lookup<'a, T> {
    /// The answer, still what computing it would give.
    Hit(T),
    /// Compute it, holding the key's turn (when answers are cached).
    Compute(Option<Turn<'a>>),
}

/// Totals per slot of `plan`, and the conversions per slot when asked for.
struct Read {
    slots: Vec<Totals>,
    conversions: Option<Vec<Totals>>,
}

impl Reader {
    /// A reader on `pool` with these limits, keeping answers in `answers` and the sums of
    /// closed days in `closed` when given.
    pub fn new(
        pool: PgPool,
        limits: Limits,
        max_page_size: u32,
        answers: Option<AnswerCache>,
        closed: Option<ClosedSums>,
    ) -> Self {
        Self {
            pool,
            limits,
            max_page_size,
            answers: answers.map(Arc::new),
            closed: closed.map(Arc::new),
        }
    }

    /// The sums of `rows` over every part of `parts` together (see [`Snapshot::sums`]), read in
    /// `snapshot` on what `look` shows. The settled pieces of the parts (closed days, ended
    /// hours: [`closed::settled`]) come from the kept sums when they hold them, and are kept
    /// there when read.
    async fn sums(
        &self,
        snapshot: &mut Snapshot,
        look: &Look,
        rows: &Rows<'_>,
        parts: &[Part],
    ) -> Result<Vec<RowSum>, QueryError> {
        let mut kept: Vec<Arc<[RowSum]>> = Vec::new();
        // What to read, and whether to keep it.
        let mut unread: Vec<(Part, bool)> = Vec::with_capacity(parts.len() + 1);
        for part in parts {
            let Some(cache) = self.closed.as_deref() else {
                unread.push((*part, false));
                continue;
            };
            let split = closed::settled(part, look);
            if let Some(settled) = split.settled {
                match cache.get(rows, &settled, look) {
                    Some(sums) => kept.push(sums),
                    None => unread.push((settled, true)),
                }
            }
            unread.extend(split.live.map(|live| (live, false)));
        }
        let mut groups: HashMap<(i64, String), Totals> = HashMap::new();
        let mut add = |sum: RowSum| {
            groups
                .entry((sum.bucket_us, sum.value))
                .or_default()
                .add(sum.totals);
        };
        let to_read: Vec<Part> = unread.iter().map(|(part, _)| *part).collect();
        let read = snapshot.sums(rows, &to_read).await?;
        for ((part, keep), sums) in unread.iter().zip(read) {
            match self.closed.as_deref().filter(|_| *keep) {
                Some(cache) => kept.push(cache.insert(rows, part, look, sums)?),
                None => sums.into_iter().for_each(&mut add),
            }
        }
        for sums in kept {
            sums.iter().cloned().for_each(&mut add);
        }
        Ok(groups
            .into_iter()
            .map(|((bucket_us, value), totals)| RowSum {
                bucket_us,
                value,
                totals,
            })
            .collect())
    }

    /// The cache key of `request` resolved to `window`, when answers are cached.
    fn key<T: Cacheable>(
        &self,
        request: &impl prost::Message,
        window: &Window,
        site: &Site,
    ) -> Option<AnswerKey> {
        self.answers
            .as_ref()
            .map(|_| AnswerKey::new(T::RPC, request, window, site))
    }

    /// The cached answer of `key` when the site's rollups and the closures over `window` are
    /// still what it was computed on (one statement), with the watermark read now. Otherwise
    /// the turn to compute it; when another request holds that turn, the previous answer with
    /// its own watermark if it may be given ([`AnswerCache::previous`]), else the turn once the
    /// other is done and this one still finds no answer (so each answer is computed once).
    async fn cached<T: Cacheable>(
        &self,
        key: Option<&AnswerKey>,
        site_id: i64,
        site: &Site,
        window: Option<(i64, i64)>,
    ) -> Result<Lookup<'_, T>, QueryError> {
        let (Some(cache), Some(key)) = (self.answers.as_deref(), key) else {
            return Ok(Lookup::Compute(None));
        };
        if let Some(now) = self.look_if_held(cache, key, site_id, site, window).await? {
            if let Some(hit) = fresh(cache, key, &now) {
                return Ok(Lookup::Hit(hit));
            }
            if let Some(turn) = cache.try_turn(key) {
                // Kept by whoever held the turn since this looked?
                if let Some(hit) = fresh(cache, key, &now) {
                    return Ok(Lookup::Hit(hit));
                }
                cache.count_computed();
                return Ok(Lookup::Compute(Some(turn)));
            }
            if let Some(previous) = cache.previous(key, &now) {
                return Ok(Lookup::Hit(previous));
            }
        }
        let turn = cache.turn(key).await;
        if let Some(now) = self.look_if_held(cache, key, site_id, site, window).await?
            && let Some(hit) = fresh(cache, key, &now)
        {
            return Ok(Lookup::Hit(hit));
        }
        cache.count_computed();
        Ok(Lookup::Compute(Some(turn)))
    }

    /// What the site's rollups rest on now, when the cache holds an answer of `key` (fresh or
    /// not): only then is checking it worth a statement.
    async fn look_if_held(
        &self,
        cache: &AnswerCache,
        key: &AnswerKey,
        site_id: i64,
        site: &Site,
        window: Option<(i64, i64)>,
    ) -> Result<Option<Look>, QueryError> {
        if !cache.holds(key) {
            return Ok(None);
        }
        Ok(Some(
            store::look(&self.pool, site.tenant_id, site_id, window).await?,
        ))
    }

    /// Keeps `answer` of `key`, computed on `basis`.
    fn remember<T: Cacheable>(&self, key: Option<AnswerKey>, basis: &Look, answer: &T) {
        if let (Some(cache), Some(key)) = (&self.answers, key) {
            cache.insert(key, basis, answer);
        }
    }

    /// The span whose closures an answer over `window` needs: none for minute series (minute
    /// rows are the speed layer's only).
    fn over(window: &Window, interval: Interval) -> Option<(i64, i64)> {
        (interval != Interval::Minute).then_some((window.from_us, window.to_us))
    }

    async fn read(
        &self,
        snapshot: &mut Snapshot,
        look: &Look,
        site_id: i64,
        site: &Site,
        plan: &Plan,
        selection: &Selection,
    ) -> Result<Read, QueryError> {
        let rows = Rows {
            tenant_id: site.tenant_id,
            site_id,
            dimension: selection.dimension,
            value: selection.value.as_deref(),
            by_value: false,
        };
        let sums = self.sums(snapshot, look, &rows, &plan.parts).await?;
        let fold = |sums: Vec<crate::store::RowSum>| {
            let mut slots = vec![Totals::default(); plan.slots.len()];
            for row in sums {
                if let Some(i) = plan.slot_of(row.bucket_us) {
                    slots[i].add(row.totals);
                }
            }
            slots
        };
        let conversions = match &selection.conversion_event {
            Some(event) => {
                let converting = Rows {
                    dimension: Dimension::Event,
                    value: Some(event),
                    ..rows
                };
                Some(fold(
                    self.sums(snapshot, look, &converting, &plan.parts).await?,
                ))
            }
            None => None,
        };
        Ok(Read {
            slots: fold(sums),
            conversions,
        })
    }

    /// `GetTimeseries`.
    pub async fn timeseries(
        &self,
        site: &Site,
        req: &pb::TimeseriesRequest,
    ) -> Result<pb::TimeseriesResponse, QueryError> {
        let selection = request::totals(&req.metrics, req.filter.as_ref(), &req.conversion_event)?;
        let interval = Interval::parse(&req.interval)?;
        let window = calendar::resolve(req.range.as_ref(), interval, site.time_zone, self.limits)?;
        let over = Self::over(&window, interval);
        let key = self.key::<pb::TimeseriesResponse>(req, &window, site);
        // Held until the answer is kept: others asking the same wait for it.
        let _turn = match self.cached(key.as_ref(), req.site_id, site, over).await? {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Compute(turn) => turn,
        };
        let mut snapshot = Snapshot::begin(&self.pool).await?;
        let look = snapshot.look(site.tenant_id, req.site_id, over).await?;
        let plan = calendar::plan(&window, interval, site.time_zone, &look.closures, false);
        let read = self
            .read(&mut snapshot, &look, req.site_id, site, &plan, &selection)
            .await?;
        snapshot.finish().await?;
        let mut buckets = Vec::with_capacity(plan.slots.len());
        for (i, (slot, totals)) in plan.slots.iter().zip(&read.slots).enumerate() {
            let conversions = read.conversions.as_ref().and_then(|c| c.get(i));
            buckets.push(pb::Bucket {
                start_us: slot.start_us,
                end_us: slot.end_us,
                label: slot.label.clone(),
                is_final: slot.is_final,
                revision: slot.revision,
                values: values(&selection.metrics, totals, conversions)?,
            });
        }
        let answer = pb::TimeseriesResponse {
            time_zone: site.time_zone.name().to_string(),
            currency: site.currency.clone(),
            buckets,
            watermark: Some(watermark(look.marks)),
        };
        self.remember(key, &look, &answer);
        Ok(answer)
    }

    /// `GetAggregate`: the range, and the same number of local days before it.
    pub async fn aggregate(
        &self,
        site: &Site,
        req: &pb::AggregateRequest,
    ) -> Result<pb::AggregateResponse, QueryError> {
        let selection = request::totals(&req.metrics, req.filter.as_ref(), &req.conversion_event)?;
        let tz = site.time_zone;
        let window = calendar::resolve(req.range.as_ref(), Interval::Day, tz, self.limits)?;
        let Some((first, last)) = window.days else {
            return Err(QueryError::Internal("a day window without days".into()));
        };
        let length = last - first + chrono::Duration::days(1);
        let previous_first = first - length;
        let previous = Window {
            from_us: calendar::day_start(tz, previous_first),
            to_us: window.from_us,
            days: Some((previous_first, first - chrono::Duration::days(1))),
        };
        // One read of the closures of both periods (they are adjacent).
        let both = Some((previous.from_us, window.to_us));
        let key = self.key::<pb::AggregateResponse>(req, &window, site);
        // Held until the answer is kept: others asking the same wait for it.
        let _turn = match self.cached(key.as_ref(), req.site_id, site, both).await? {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Compute(turn) => turn,
        };
        let mut snapshot = Snapshot::begin(&self.pool).await?;
        let look = snapshot.look(site.tenant_id, req.site_id, both).await?;
        let mut periods = Vec::with_capacity(2);
        for w in [&window, &previous] {
            let plan = calendar::plan(w, Interval::Day, tz, &look.closures, true);
            let read = self
                .read(&mut snapshot, &look, req.site_id, site, &plan, &selection)
                .await?;
            let (is_final, revision) = plan.finality();
            let totals = read.slots.into_iter().next().unwrap_or_default();
            let conversions = read.conversions.and_then(|c| c.into_iter().next());
            periods.push(pb::Period {
                start_us: w.from_us,
                end_us: w.to_us,
                is_final,
                revision,
                values: values(&selection.metrics, &totals, conversions.as_ref())?,
            });
        }
        snapshot.finish().await?;
        let previous = periods.pop();
        let answer = pb::AggregateResponse {
            time_zone: tz.name().to_string(),
            currency: site.currency.clone(),
            current: periods.pop(),
            previous,
            watermark: Some(watermark(look.marks)),
        };
        self.remember(key, &look, &answer);
        Ok(answer)
    }

    /// `GetBreakdown`.
    pub async fn breakdown(
        &self,
        site: &Site,
        req: &pb::BreakdownRequest,
    ) -> Result<pb::BreakdownResponse, QueryError> {
        let selection = request::breakdown(&req.dimension, &req.metrics, req.filter.as_ref())?;
        let order = if req.order_by.is_empty() {
            selection.metrics[0]
        } else {
            *selection
                .metrics
                .iter()
                .find(|m| m.name() == req.order_by)
                .ok_or_else(|| {
                    QueryError::InvalidArgument(format!(
                        "order_by: `{}` is not one of the requested metrics",
                        req.order_by
                    ))
                })?
        };
        let page_size = match req.page_size {
            0 => 10,
            n if n < 0 || n.unsigned_abs() > self.max_page_size => {
                return Err(QueryError::InvalidArgument(format!(
                    "page_size: must be between 1 and {}",
                    self.max_page_size
                )));
            }
            n => n.unsigned_abs() as usize,
        };
        let offset: usize = match req.page_token.as_str() {
            "" => 0,
            token => token.parse().map_err(|_| {
                QueryError::InvalidArgument("page_token: not a token this service issued".into())
            })?,
        };
        let window = calendar::resolve(
            req.range.as_ref(),
            Interval::Day,
            site.time_zone,
            self.limits,
        )?;
        let over = Self::over(&window, Interval::Day);
        let key = self.key::<pb::BreakdownResponse>(req, &window, site);
        // Held until the answer is kept: others asking the same wait for it.
        let _turn = match self.cached(key.as_ref(), req.site_id, site, over).await? {
            Lookup::Hit(hit) => return Ok(hit),
            Lookup::Compute(turn) => turn,
        };
        let mut snapshot = Snapshot::begin(&self.pool).await?;
        let look = snapshot.look(site.tenant_id, req.site_id, over).await?;
        let plan = calendar::plan(&window, Interval::Day, site.time_zone, &look.closures, true);
        let by_value = Rows {
            tenant_id: site.tenant_id,
            site_id: req.site_id,
            dimension: selection.dimension,
            value: selection.value.as_deref(),
            by_value: true,
        };
        let rows = self
            .sums(&mut snapshot, &look, &by_value, &plan.parts)
            .await?;
        // The denominator of each event's conversion rate: every visitor of the site.
        let everyone = if selection.converts() {
            let site_total = Rows {
                dimension: Dimension::Total,
                value: Some(""),
                ..by_value
            };
            let all = self
                .sums(&mut snapshot, &look, &site_total, &plan.parts)
                .await?;
            all.into_iter().next().map(|r| r.totals).unwrap_or_default()
        } else {
            Totals::default()
        };
        snapshot.finish().await?;

        let mut computed = Vec::with_capacity(rows.len());
        for row in rows {
            let figures = if selection.converts() {
                let mut v = values(&selection.metrics, &everyone, Some(&row.totals))?;
                // Everything but the conversion rate is the row's own.
                let own = values(&selection.metrics, &row.totals, None)?;
                for (slot, own) in v.iter_mut().zip(own) {
                    if slot.metric != Metric::ConversionRate.name() {
                        *slot = own;
                    }
                }
                v
            } else {
                values(&selection.metrics, &row.totals, None)?
            };
            computed.push(pb::BreakdownRow {
                value: row.value,
                values: figures,
            });
        }
        let order_value = |r: &pb::BreakdownRow| {
            r.values
                .iter()
                .find(|v| v.metric == order.name())
                .map_or(0.0, |v| v.value)
        };
        computed.sort_by(|a, b| {
            order_value(b)
                .total_cmp(&order_value(a))
                .then_with(|| a.value.cmp(&b.value))
        });
        let total = computed.len();
        let end = offset.saturating_add(page_size).min(total);
        let page: Vec<pb::BreakdownRow> = computed
            .into_iter()
            .skip(offset)
            .take(end.saturating_sub(offset))
            .collect();
        let (is_final, revision) = plan.finality();
        let answer = pb::BreakdownResponse {
            time_zone: site.time_zone.name().to_string(),
            currency: site.currency.clone(),
            rows: page,
            next_page_token: if end < total {
                end.to_string()
            } else {
                String::new()
            },
            total_values: i64::try_from(total).unwrap_or(i64::MAX),
            is_final,
            revision,
            watermark: Some(watermark(look.marks)),
        };
        self.remember(key, &look, &answer);
        Ok(answer)
    }

    /// `GetRealtime`: the current UTC minute and the four before it, from the speed layer.
    pub async fn realtime(
        &self,
        site_id: i64,
        site: &Site,
        top_pages: i32,
    ) -> Result<pb::RealtimeResponse, QueryError> {
        let top = match top_pages {
            0 => 10,
            n if n < 0 || n.unsigned_abs() > self.max_page_size => {
                return Err(QueryError::InvalidArgument(format!(
                    "top_pages: must be between 1 and {}",
                    self.max_page_size
                )));
            }
            n => n.unsigned_abs() as usize,
        };
        let to_us = Granularity::Minute.truncate_us(Utc::now().timestamp_micros()) + MINUTE_US;
        let from_us = to_us - REALTIME_MINUTES * MINUTE_US;
        let parts = [Part {
            layer: Layer::Speed,
            granularity: Granularity::Minute,
            lo_us: from_us,
            hi_us: to_us,
        }];
        let mut snapshot = Snapshot::begin(&self.pool).await?;
        let look = snapshot.look(site.tenant_id, site_id, None).await?;
        let site_total = Rows {
            tenant_id: site.tenant_id,
            site_id,
            dimension: Dimension::Total,
            value: Some(""),
            by_value: true,
        };
        let totals = self
            .sums(&mut snapshot, &look, &site_total, &parts)
            .await?
            .into_iter()
            .next()
            .map(|r| r.totals)
            .unwrap_or_default();
        let every_page = Rows {
            dimension: Dimension::Page,
            value: None,
            ..site_total
        };
        let pages = self.sums(&mut snapshot, &look, &every_page, &parts).await?;
        snapshot.finish().await?;
        let marks = look.marks;
        let visitors_of = |t: &Totals| -> Result<pb::Value, QueryError> {
            Ok(values(&[Metric::Visitors], t, None)?
                .into_iter()
                .next()
                .unwrap_or_default())
        };
        let mut top_pages = Vec::with_capacity(pages.len());
        for page in pages {
            top_pages.push(pb::RealtimePage {
                visitors: Some(visitors_of(&page.totals)?),
                pageviews: page.totals.pageviews,
                page: page.value,
            });
        }
        let visitors = |p: &pb::RealtimePage| p.visitors.as_ref().map_or(0.0, |v| v.value);
        top_pages.sort_by(|a, b| {
            visitors(b)
                .total_cmp(&visitors(a))
                .then(b.pageviews.cmp(&a.pageviews))
                .then_with(|| a.page.cmp(&b.page))
        });
        top_pages.truncate(top);
        Ok(pb::RealtimeResponse {
            from_us,
            to_us,
            visitors: Some(visitors_of(&totals)?),
            pageviews: totals.pageviews,
            top_pages,
            watermark: Some(watermark(marks)),
        })
    }

    /// One site's part of `GetFreshness`.
    pub async fn freshness(
        &self,
        site_id: i64,
        site: &Site,
    ) -> Result<pb::SiteFreshness, QueryError> {
        let mut snapshot = Snapshot::begin(&self.pool).await?;
        let marks = snapshot.look(site.tenant_id, site_id, None).await?.marks;
        let last = snapshot.last_closure(site.tenant_id, site_id).await?;
        snapshot.finish().await?;
        Ok(pb::SiteFreshness {
            site_id,
            time_zone: site.time_zone.name().to_string(),
            watermark: Some(watermark(marks)),
            last_closed_day: last.map(|(d, _)| d.to_string()).unwrap_or_default(),
            last_closed_revision: last.map_or(0, |(_, r)| r),
        })
    }
}
