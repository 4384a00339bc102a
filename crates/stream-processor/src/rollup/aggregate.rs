//! Folding a flush's events into rollup deltas: pure, no I/O.
//!
//! Every human event adds to the rows of its event-time minute: the site's totals, its page
//! (pageviews) or event name (track calls), and the rows of its visit's attributes (source,
//! medium, UTM, browser, OS, device), each with the visitor in the row's sketch. Visit figures
//! (visits, bounces, duration, entry and exit pages) come from [`sightline_event::apply_event`]
//! and go to the minute of the visit's *start*, like the batch layer's. Bot events only add to
//! `bot_events` (totals and the `bot` dimension). Hour rows are the union of their minutes.
//! The batch layer folds into hours cut at its local day's edges instead ([`Buckets`]).

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use sightline_db::rollup::{Dimension, Granularity};
use sightline_event::{
    SESSION_TIMEOUT_US, SessionDelta, SessionEvent, VisitorHash, VisitorKey, VisitorSketch,
    apply_event, session::Placement,
};

use super::{
    fact::{Attrs, Fact, Kind},
    state::{Visitor, VisitorState, visitor_hash},
};

pub(crate) type FastMap<K, V> = HashMap<K, V, RandomState>;
pub(crate) type FastSet<T> = HashSet<T, RandomState>;

/// Interned strings of one flush: row keys hold a number instead of a string.
#[derive(Debug, Default)]
pub struct Interner {
    ids: FastMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    /// The number of `value`, adding it on first sight.
    pub fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.to_owned());
        self.ids.insert(value.to_owned(), id);
        id
    }

    /// The string of `id`.
    pub fn get(&self, id: u32) -> &str {
        &self.values[id as usize]
    }
}

/// One rollup row of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub tenant_id: i64,
    pub site_id: i64,
    pub granularity: Granularity,
    /// Bucket start, microseconds since the Unix epoch.
    pub bucket_us: i64,
    pub dimension: Dimension,
    /// Interned value ([`Interner`]).
    pub value: u32,
}

/// Additive figures of a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub events: i64,
    pub pageviews: i64,
    pub visits: i64,
    pub bounces: i64,
    pub duration_us: i64,
    pub orders: i64,
    pub revenue_micros: i64,
    pub bot_events: i64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.events += other.events;
        self.pageviews += other.pageviews;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration_us += other.duration_us;
        self.orders += other.orders;
        self.revenue_micros += other.revenue_micros;
        self.bot_events += other.bot_events;
    }
}

/// What one flush adds to a row.
#[derive(Debug, Clone, Default)]
pub struct RowDelta {
    pub counters: Counters,
    /// Visitors seen in the row this flush; `None` when the row has no visitor figure.
    pub visitors: Option<VisitorSketch>,
}

/// Settings of the fold.
#[derive(Debug, Clone, Copy)]
pub struct FoldSettings {
    /// Wall clock, microseconds since the Unix epoch.
    pub now_us: i64,
    /// Events older than this (event time) are not counted.
    pub late_max_age_us: i64,
    /// The buckets rows are keyed by.
    pub buckets: Buckets,
}

/// The time buckets of a fold's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Buckets {
    /// UTC minutes, and hour rows rolled up from them (the speed layer's rows).
    #[default]
    Minutes,
    /// UTC hours, each cut in two where one of the two given times falls inside it, and nothing
    /// rolled up.
    /// A row of a cut hour is keyed by the start of its part. For the batch layer: with a
    /// local day's start and end as the cuts, both the UTC hours and the local day (which may
    /// start on a half hour) are unions of whole rows, without minute rows to get there.
    HoursCutAt([i64; 2]),
}

impl Buckets {
    /// The granularity of the rows.
    fn granularity(self) -> Granularity {
        match self {
            Buckets::Minutes => Granularity::Minute,
            Buckets::HoursCutAt(_) => Granularity::Hour,
        }
    }

    /// The start of the bucket of `t_us`.
    pub fn start_us(self, t_us: i64) -> i64 {
        match self {
            Buckets::Minutes => Granularity::Minute.truncate_us(t_us),
            Buckets::HoursCutAt(cuts) => cuts
                .into_iter()
                .filter(|&cut| cut <= t_us)
                .fold(Granularity::Hour.truncate_us(t_us), i64::max),
        }
    }
}

/// The result of a flush's fold.
#[derive(Debug, Default)]
pub struct Fold {
    pub values: Interner,
    pub rows: FastMap<RowKey, RowDelta>,
    /// Visitors whose state changed, by [`visitor_hash`].
    pub visitors: FastMap<u128, Visitor>,
    /// Events counted (human and bot).
    pub counted: u64,
    /// Events older than the late-event bound.
    pub late: u64,
    /// Events whose messageId the visitor sent before.
    pub duplicates: u64,
    /// Newest receipt time of the events folded.
    pub received_until_us: i64,
    /// Newest event time of the events folded.
    pub event_until_us: i64,
    /// The buckets of `rows`.
    pub buckets: Buckets,
}

/// Folds facts, in stream order, into row deltas and new visitor states. `known` gives the
/// current state of a visitor (from the cache or the database); it is not modified: changed
/// states are in [`Fold::visitors`], applied by the caller once the flush committed.
pub fn fold<'f>(
    facts: impl IntoIterator<Item = &'f Fact>,
    known: impl Fn(u128) -> Option<Visitor>,
    site_currencies: &FastMap<i64, String>,
    settings: FoldSettings,
) -> Fold {
    let mut fold = Fold {
        buckets: settings.buckets,
        received_until_us: i64::MIN,
        event_until_us: i64::MIN,
        ..Fold::default()
    };
    for fact in facts {
        if fact.timestamp_us < settings.now_us.saturating_sub(settings.late_max_age_us) {
            fold.late += 1;
            continue;
        }
        fold.received_until_us = fold.received_until_us.max(fact.received_at_us);
        fold.event_until_us = fold.event_until_us.max(fact.timestamp_us);
        if let Some(reason) = fact.bot {
            fold.add_bot(fact, reason.as_str());
            continue;
        }
        let hash = visitor_hash(fact.tenant_id, fact.site_id, &fact.visitor_id);
        let visitor = fold.visitors.entry(hash).or_insert_with(|| {
            known(hash).unwrap_or_else(|| Visitor {
                tenant_id: fact.tenant_id,
                site_id: fact.site_id,
                visitor_id: fact.visitor_id.clone(),
                state: VisitorState::default(),
            })
        });
        if !visitor.state.remember(fact.message_hash) {
            fold.duplicates += 1;
            continue;
        }
        visitor.state.last_us = visitor.state.last_us.max(fact.timestamp_us);
        let visit = apply_visit(&mut visitor.state, fact);
        // The visit's attributes if the event belongs to one, else the event's own; taken out
        // of the state while the rows are updated, then put back.
        let visit_attrs = match visitor.state.session {
            Some(_) => Some(std::mem::take(&mut visitor.state.attrs)),
            None => None,
        };
        let attrs = visit_attrs.as_ref().unwrap_or(&fact.attrs);
        fold.counted += 1;
        if let Some(visit) = visit {
            fold.add_visit(fact, attrs, &visit);
        }
        let currency = site_currencies.get(&fact.site_id).map(String::as_str);
        fold.add_event(fact, attrs, currency);
        if let (Some(attrs), Some(visitor)) = (visit_attrs, fold.visitors.get_mut(&hash)) {
            visitor.state.attrs = attrs;
        }
    }
    if fold.buckets == Buckets::Minutes {
        fold.roll_up_hours();
    }
    fold
}

/// What a fact did to its visitor's visit.
struct VisitStep {
    /// Start of the visit: the bucket visit figures go to.
    start_us: i64,
    deltas: Vec<SessionDelta>,
    /// The visit's entry page after the event.
    entry: Option<String>,
}

fn apply_visit(state: &mut VisitorState, fact: &Fact) -> Option<VisitStep> {
    if fact.kind == Kind::Other {
        return None;
    }
    let key = VisitorKey {
        tenant_id: fact.tenant_id,
        site_id: fact.site_id,
        visitor_id: &fact.visitor_id,
    };
    let event = SessionEvent {
        timestamp_us: fact.timestamp_us,
        is_pageview: fact.kind == Kind::Pageview,
        page: &fact.page,
    };
    let step = apply_event(state.session.take(), &key, &event, SESSION_TIMEOUT_US);
    if step.placement == Placement::Started {
        state.attrs = fact.attrs.clone();
    }
    let entry = step.state.entry.as_ref().map(|(page, _)| page.clone());
    state.session = Some(step.state);
    Some(VisitStep {
        start_us: step.session_start_us,
        deltas: step.deltas,
        entry,
    })
}

/// The visit-attribute dimensions and their values.
fn attr_rows(attrs: &Attrs) -> [(Dimension, &str); 8] {
    [
        (Dimension::Source, &attrs.source),
        (Dimension::Medium, &attrs.medium),
        (Dimension::UtmSource, &attrs.utm_source),
        (Dimension::UtmMedium, &attrs.utm_medium),
        (Dimension::UtmCampaign, &attrs.utm_campaign),
        (Dimension::Browser, &attrs.browser),
        (Dimension::Os, &attrs.os),
        (Dimension::Device, &attrs.device),
    ]
}

impl Fold {
    fn row(
        &mut self,
        fact: &Fact,
        bucket_us: i64,
        dimension: Dimension,
        value: &str,
    ) -> &mut RowDelta {
        let key = RowKey {
            tenant_id: fact.tenant_id,
            site_id: fact.site_id,
            granularity: self.buckets.granularity(),
            bucket_us,
            dimension,
            value: self.values.intern(value),
        };
        self.rows.entry(key).or_default()
    }

    fn add_bot(&mut self, fact: &Fact, reason: &str) {
        self.counted += 1;
        let bucket = self.buckets.start_us(fact.timestamp_us);
        self.row(fact, bucket, Dimension::Total, "")
            .counters
            .bot_events += 1;
        self.row(fact, bucket, Dimension::Bot, reason)
            .counters
            .bot_events += 1;
    }

    fn add_event(&mut self, fact: &Fact, attrs: &Attrs, site_currency: Option<&str>) {
        let bucket = self.buckets.start_us(fact.timestamp_us);
        let pageview = i64::from(fact.kind == Kind::Pageview);
        // Revenue in the site's currency goes on every row of the event; revenue in any
        // currency goes on its `currency` row, so foreign-currency orders are kept, not mixed.
        let mut site_revenue = None;
        if let Some(order) = &fact.order {
            let currency = order.currency.as_deref().or(site_currency).unwrap_or("");
            let row = self.row(fact, bucket, Dimension::Currency, currency);
            row.counters.orders += 1;
            row.counters.revenue_micros += order.revenue_micros;
            if order.currency.is_none() || order.currency.as_deref() == site_currency {
                site_revenue = Some(order.revenue_micros);
            }
        }
        let mut rows: Vec<(Dimension, &str)> = Vec::with_capacity(10);
        rows.push((Dimension::Total, ""));
        if fact.kind != Kind::Other {
            rows.extend(attr_rows(attrs).into_iter().filter(|(_, v)| !v.is_empty()));
        }
        match fact.kind {
            Kind::Pageview if !fact.page.is_empty() => rows.push((Dimension::Page, &fact.page)),
            Kind::Track if !fact.name.is_empty() => rows.push((Dimension::Event, &fact.name)),
            _ => {}
        }
        let visitor = VisitorHash::of(&fact.visitor_id);
        for (dimension, value) in rows {
            let row = self.row(fact, bucket, dimension, value);
            row.counters.events += 1;
            row.counters.pageviews += pageview;
            if let Some(revenue) = site_revenue {
                row.counters.orders += 1;
                row.counters.revenue_micros += revenue;
            }
            row.visitors
                .get_or_insert_with(VisitorSketch::new)
                .insert_hashed(visitor);
        }
    }

    fn add_visit(&mut self, fact: &Fact, attrs: &Attrs, visit: &VisitStep) {
        let bucket = self.buckets.start_us(visit.start_us);
        for delta in &visit.deltas {
            let (counters, entry_page) = match delta {
                SessionDelta::EntryPage { page, delta } => {
                    self.row(fact, bucket, Dimension::EntryPage, page)
                        .counters
                        .visits += delta;
                    continue;
                }
                SessionDelta::ExitPage { page, delta } => {
                    self.row(fact, bucket, Dimension::ExitPage, page)
                        .counters
                        .visits += delta;
                    continue;
                }
                SessionDelta::Visits(n) => (
                    Counters {
                        visits: *n,
                        ..Counters::default()
                    },
                    false,
                ),
                SessionDelta::Bounces(n) => (
                    Counters {
                        bounces: *n,
                        ..Counters::default()
                    },
                    true,
                ),
                SessionDelta::DurationUs(d) => (
                    Counters {
                        duration_us: *d,
                        ..Counters::default()
                    },
                    false,
                ),
            };
            self.row(fact, bucket, Dimension::Total, "")
                .counters
                .add(&counters);
            for (dimension, value) in attr_rows(attrs) {
                if !value.is_empty() {
                    self.row(fact, bucket, dimension, value)
                        .counters
                        .add(&counters);
                }
            }
            // Bounce rate by landing page: the bounce goes to the visit's entry page.
            if entry_page && let Some(page) = &visit.entry {
                self.row(fact, bucket, Dimension::EntryPage, page)
                    .counters
                    .add(&counters);
            }
        }
    }

    /// Adds every minute row to its hour row (counters summed, sketches united).
    fn roll_up_hours(&mut self) {
        let mut hours: FastMap<RowKey, (Counters, Vec<&VisitorSketch>)> = FastMap::default();
        for (key, delta) in &self.rows {
            let hour = RowKey {
                granularity: Granularity::Hour,
                bucket_us: Granularity::Hour.truncate_us(key.bucket_us),
                ..*key
            };
            let entry = hours.entry(hour).or_default();
            entry.0.add(&delta.counters);
            if let Some(sketch) = &delta.visitors {
                entry.1.push(sketch);
            }
        }
        let hours: Vec<(RowKey, RowDelta)> = hours
            .into_iter()
            .map(|(key, (counters, sketches))| {
                let visitors = (!sketches.is_empty()).then(|| VisitorSketch::union_of(sketches));
                (key, RowDelta { counters, visitors })
            })
            .collect();
        self.rows.extend(hours);
    }
}

#[cfg(test)]
mod tests {
    use sightline_event::BotReason;

    use super::*;
    use crate::rollup::fact::Order;

    const T0: i64 = 1_741_600_000_000_000; // 2025-03-10T09:46:40Z

    fn fact(visitor: &str, id: u64, at_us: i64, kind: Kind, detail: &str) -> Fact {
        Fact {
            tenant_id: 1,
            site_id: 2,
            visitor_id: visitor.into(),
            message_hash: id,
            timestamp_us: at_us,
            received_at_us: at_us + 5,
            kind,
            name: if kind == Kind::Track {
                detail.into()
            } else {
                String::new()
            },
            page: if kind == Kind::Pageview {
                detail.into()
            } else {
                String::new()
            },
            bot: None,
            attrs: Attrs {
                source: "Google".into(),
                medium: "search".into(),
                browser: "Chrome".into(),
                os: "Windows".into(),
                device: "desktop".into(),
                ..Attrs::default()
            },
            order: None,
        }
    }

    fn settings() -> FoldSettings {
        FoldSettings {
            now_us: T0 + 3_600_000_000,
            late_max_age_us: 86_400_000_000,
            buckets: Buckets::Minutes,
        }
    }

    #[test]
    fn cut_hours_start_at_the_hour_or_at_the_cut_before_the_time() {
        const HOUR: i64 = 3_600_000_000;
        let h = Granularity::Hour.truncate_us(T0);
        // A local day from h + 30 min to h + 24 h + 30 min (a half-hour zone).
        let buckets = Buckets::HoursCutAt([h + HOUR / 2, h + 24 * HOUR + HOUR / 2]);
        assert_eq!(buckets.start_us(h + 1), h);
        assert_eq!(buckets.start_us(h + HOUR / 2 - 1), h);
        assert_eq!(buckets.start_us(h + HOUR / 2), h + HOUR / 2);
        assert_eq!(buckets.start_us(h + HOUR + 7), h + HOUR);
        assert_eq!(
            buckets.start_us(h + 24 * HOUR + HOUR / 2 + 1),
            h + 24 * HOUR + HOUR / 2
        );
        assert_eq!(buckets.start_us(h + 25 * HOUR), h + 25 * HOUR);
        // Cuts on the hour cut nothing.
        let whole = Buckets::HoursCutAt([h, h + 24 * HOUR]);
        assert_eq!(whole.start_us(h + HOUR - 1), h);
        assert_eq!(
            Buckets::Minutes.start_us(T0),
            Granularity::Minute.truncate_us(T0)
        );
    }

    fn currencies() -> FastMap<i64, String> {
        [(2, "EUR".to_string())].into_iter().collect()
    }

    fn counters(
        fold: &Fold,
        granularity: Granularity,
        dimension: Dimension,
        value: &str,
    ) -> Counters {
        fold.rows
            .iter()
            .filter(|(k, _)| {
                k.granularity == granularity
                    && k.dimension == dimension
                    && fold.values.get(k.value) == value
            })
            .fold(Counters::default(), |mut acc, (_, d)| {
                acc.add(&d.counters);
                acc
            })
    }

    #[test]
    fn a_visit_lands_in_its_start_minute_with_bounce_entry_and_duration() {
        let facts = [
            fact("v", 1, T0, Kind::Pageview, "/"),
            fact("v", 2, T0 + 90_000_000, Kind::Pageview, "/shoes"),
            fact("v", 3, T0 + 100_000_000, Kind::Track, "Added To Cart"),
        ];
        let fold = fold(facts.iter(), |_| None, &currencies(), settings());
        let start = Granularity::Minute.truncate_us(T0);
        let totals_at_start = fold
            .rows
            .iter()
            .find(|(k, _)| {
                k.dimension == Dimension::Total
                    && k.granularity == Granularity::Minute
                    && k.bucket_us == start
            })
            .map(|(_, d)| d.counters)
            .unwrap();
        assert_eq!(
            (
                totals_at_start.visits,
                totals_at_start.bounces,
                totals_at_start.duration_us
            ),
            (1, 0, 100_000_000),
            "the second pageview undid the bounce; duration counts at the visit's start"
        );
        let hour = counters(&fold, Granularity::Hour, Dimension::Total, "");
        assert_eq!((hour.events, hour.pageviews, hour.visits), (3, 2, 1));
        assert_eq!(
            counters(&fold, Granularity::Hour, Dimension::EntryPage, "/").visits,
            1
        );
        assert_eq!(
            counters(&fold, Granularity::Hour, Dimension::ExitPage, "/shoes").visits,
            1
        );
        assert_eq!(
            counters(&fold, Granularity::Hour, Dimension::Source, "Google").visits,
            1
        );
        assert_eq!(
            counters(&fold, Granularity::Hour, Dimension::Event, "Added To Cart").events,
            1
        );
        assert_eq!(fold.visitors.len(), 1);
    }

    #[test]
    fn bots_duplicates_and_late_events_count_apart_or_not_at_all() {
        let mut bot = fact("crawler", 9, T0, Kind::Pageview, "/");
        bot.bot = Some(BotReason::Crawler);
        let facts = [
            fact("v", 1, T0, Kind::Pageview, "/"),
            fact("v", 1, T0 + 1, Kind::Pageview, "/"),
            fact("old", 2, T0 - 2 * 86_400_000_000, Kind::Pageview, "/"),
            bot,
        ];
        let fold = fold(facts.iter(), |_| None, &currencies(), settings());
        let totals = counters(&fold, Granularity::Minute, Dimension::Total, "");
        assert_eq!((totals.pageviews, totals.bot_events), (1, 1));
        assert_eq!((fold.duplicates, fold.late, fold.counted), (1, 1, 2));
        assert_eq!(
            counters(&fold, Granularity::Minute, Dimension::Bot, "crawler").bot_events,
            1
        );
        let sketch = fold
            .rows
            .iter()
            .find(|(k, _)| k.dimension == Dimension::Total && k.granularity == Granularity::Hour)
            .and_then(|(_, d)| d.visitors.as_ref())
            .unwrap();
        assert_eq!(sketch.estimate().round(), 1.0, "the crawler is no visitor");
    }

    #[test]
    fn foreign_currency_revenue_stays_on_its_currency_row() {
        let mut eur = fact("v", 1, T0, Kind::Track, "Order Completed");
        eur.order = Some(Order {
            revenue_micros: 10_000_000,
            currency: None,
        });
        let mut usd = fact("v", 2, T0 + 1, Kind::Track, "Order Completed");
        usd.order = Some(Order {
            revenue_micros: 7_000_000,
            currency: Some("USD".into()),
        });
        let fold = fold([eur, usd].iter(), |_| None, &currencies(), settings());
        let totals = counters(&fold, Granularity::Hour, Dimension::Total, "");
        assert_eq!((totals.orders, totals.revenue_micros), (1, 10_000_000));
        let by = |c| counters(&fold, Granularity::Hour, Dimension::Currency, c);
        assert_eq!(
            (by("EUR").orders, by("EUR").revenue_micros),
            (1, 10_000_000)
        );
        assert_eq!((by("USD").orders, by("USD").revenue_micros), (1, 7_000_000));
    }

    #[test]
    fn a_known_visit_continues_instead_of_starting_again() {
        let first = [fact("v", 1, T0, Kind::Pageview, "/")];
        let before = fold(first.iter(), |_| None, &currencies(), settings());
        let known = before.visitors.values().next().cloned().unwrap();
        let next = [fact("v", 2, T0 + 60_000_000, Kind::Pageview, "/a")];
        let after = fold(
            next.iter(),
            |_| Some(known.clone()),
            &currencies(),
            settings(),
        );
        let totals = counters(&after, Granularity::Hour, Dimension::Total, "");
        assert_eq!(
            (totals.visits, totals.bounces, totals.duration_us),
            (0, -1, 60_000_000),
            "no new visit; the first pageview's bounce is taken back"
        );
    }
}
