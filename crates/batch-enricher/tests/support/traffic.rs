//! A generated day of traffic and the figures a merchant expects from it, computed here
//! without any code of the batch enricher or the stream processor: local days with chrono-tz,
//! bots known by construction, visits by the plain 30-minute gap rule, exact visitor sets.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{Datelike as _, NaiveDate, TimeZone};
use chrono_tz::Tz;
use sightline_proto::events::v1::{Event, EventType};

pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
/// A browser the shared detector takes for a person; the reprocess test lists it as a bot.
pub const KIOSK: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 KioskMonitor/2.1";
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const MINUTE: i64 = 60_000_000;

/// One site the traffic goes to.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub site_id: i64,
    pub zone: Tz,
    pub currency: String,
}

/// Events as stored in `raw/` files, and what the generator knows about them.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Unique valid events.
    pub events: Vec<Event>,
    /// Second copies of some events (same messageId), received later: another file.
    pub duplicates: Vec<Event>,
    /// Events received two days after they happened: another file, written later.
    pub late: Vec<Event>,
    /// Rows the batch must refuse (unknown site, unknown type, no visitor).
    pub invalid: Vec<Event>,
}

/// Deterministic pseudo-random numbers (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn local_midnight(zone: Tz, day: NaiveDate) -> i64 {
    zone.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp_micros()
}

fn event(
    tenant_id: i64,
    site: &SiteSpec,
    id: &str,
    visitor: &str,
    kind: EventType,
    t: i64,
) -> Event {
    let mut e = Event {
        message_id: id.into(),
        tenant_id,
        site_id: site.site_id,
        visitor_id: visitor.into(),
        anonymous_id: visitor.into(),
        timestamp_us: t,
        original_timestamp_us: t,
        received_at_us: t + 2_000_000,
        user_agent: CHROME.into(),
        ..Event::default()
    };
    e.set_type(kind);
    e
}

/// A day of traffic on `day` (local) for every site, with visits starting the evening before
/// and running past midnight, orders in the site's and another currency, bots, a kiosk
/// browser, duplicates, late arrivals and invalid rows.
pub fn generate(tenant_id: i64, sites: &[SiteSpec], day: NaiveDate, visitors: usize) -> Traffic {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(day.ordinal()));
    let mut traffic = Traffic::default();
    let mut n = 0;
    let mut id = |prefix: &str| {
        n += 1;
        format!("{day}-{prefix}-{n}")
    };
    for site in sites {
        let start = local_midnight(site.zone, day);
        let pages = ["/", "/shoes", "/shoes/red", "/cart", "/checkout", "/about"];
        for v in 0..visitors {
            let visitor = format!("s{}-v{v}", site.site_id);
            let ua = match v % 7 {
                0 => IPHONE,
                3 => KIOSK,
                _ => CHROME,
            };
            // Visits from 30 minutes before the day to 20 minutes before its end.
            let mut t = start - 30 * MINUTE + rng.below(24 * 60 - 10) as i64 * MINUTE;
            for _visit in 0..1 + rng.below(3) {
                for step in 0..1 + rng.below(5) {
                    let roll = rng.below(10);
                    let (kind, prefix) = match roll {
                        0..=5 => (EventType::Page, "p"),
                        6..=8 => (EventType::Track, "t"),
                        _ => (EventType::Identify, "i"),
                    };
                    let mut e = event(tenant_id, site, &id(prefix), &visitor, kind, t);
                    e.user_agent = ua.into();
                    match kind {
                        EventType::Page => {
                            let page = pages[rng.below(pages.len() as u64) as usize];
                            e.page_url = format!("https://shop{}.example.com{page}", site.site_id);
                            if step == 0 && rng.below(3) == 0 {
                                e.page_referrer = "https://www.google.com/".into();
                            }
                        }
                        EventType::Track if rng.below(3) == 0 => {
                            e.name = "Order Completed".into();
                            let cents = 100 + rng.below(20_000);
                            let currency = if rng.below(5) == 0 {
                                "GBP"
                            } else {
                                site.currency.as_str()
                            };
                            e.properties_json = format!(
                                r#"{{"revenue": {}.{:02}, "currency": "{currency}"}}"#,
                                cents / 100,
                                cents % 100
                            )
                            .into_bytes()
                            .into();
                        }
                        EventType::Track => {
                            e.name = "Added To Cart".into();
                            e.properties_json =
                                format!(r#"{{"product": {{"sku": "{}"}}}}"#, sku_of(v))
                                    .into_bytes()
                                    .into();
                        }
                        _ => e.user_id = format!("user-{v}"),
                    }
                    match rng.below(20) {
                        0 => traffic.duplicates.push(Event {
                            received_at_us: e.received_at_us + 90_000_000,
                            ..e.clone()
                        }),
                        1 => e.received_at_us = e.timestamp_us + 2 * 86_400 * 1_000_000,
                        _ => {}
                    }
                    if e.received_at_us > e.timestamp_us + 86_400 * 1_000_000 {
                        traffic.late.push(e);
                    } else {
                        traffic.events.push(e);
                    }
                    t += (1 + rng.below(12)) as i64 * MINUTE;
                }
                // A new visit after more than 30 minutes.
                t += (31 + rng.below(120)) as i64 * MINUTE;
            }
        }
        for b in 0..visitors / 4 {
            let t = start + rng.below(24 * 60) as i64 * MINUTE;
            let mut e = event(
                tenant_id,
                site,
                &id("bot"),
                &format!("bot-{b}"),
                EventType::Page,
                t,
            );
            e.user_agent = GOOGLEBOT.into();
            e.page_url = format!("https://shop{}.example.com/", site.site_id);
            traffic.events.push(e);
        }
        let t = start + 12 * 60 * MINUTE;
        let mut unknown = event(tenant_id, site, &id("bad"), "x", EventType::Page, t);
        unknown.site_id = 999_999;
        let mut untyped = event(tenant_id, site, &id("bad"), "x", EventType::Page, t);
        untyped.set_type(EventType::Unspecified);
        let mut anonymous = event(tenant_id, site, &id("bad"), "", EventType::Page, t);
        anonymous.anonymous_id.clear();
        traffic.invalid.extend([unknown, untyped, anonymous]);
    }
    traffic
}

/// The product a visitor adds to its cart: one of `sku-0` to `sku-3`.
pub fn sku_of(visitor: usize) -> String {
    format!("sku-{}", visitor % 4)
}

/// A site-day's figures, as a merchant reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub events: i64,
    pub pageviews: i64,
    pub visitors: i64,
    pub visits: i64,
    pub bounces: i64,
    pub duration_us: i64,
    pub orders: i64,
    pub revenue_micros: i64,
    pub bot_events: i64,
}

fn is_bot(e: &Event, listed: &[&str]) -> bool {
    e.user_agent == GOOGLEBOT || listed.iter().any(|l| e.user_agent.contains(l))
}

fn revenue(e: &Event) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_slice(&e.properties_json).ok()?;
    let micros = (v["revenue"].as_f64()? * 1e6).round() as i64;
    Some((micros, v["currency"].as_str()?.to_owned()))
}

/// The expected figures of every site's `day`; `listed` user agents count as bots.
pub fn expected(
    traffic: &Traffic,
    sites: &[SiteSpec],
    day: NaiveDate,
    listed: &[&str],
) -> BTreeMap<i64, Expected> {
    let mut seen = HashSet::new();
    let unique: Vec<&Event> = traffic
        .events
        .iter()
        .chain(&traffic.late)
        .filter(|e| seen.insert(e.message_id.clone()))
        .collect();
    let mut out = BTreeMap::new();
    for site in sites {
        let (start, end) = (
            local_midnight(site.zone, day),
            local_midnight(site.zone, day.succ_opt().unwrap()),
        );
        let of_site: Vec<&&Event> = unique
            .iter()
            .filter(|e| e.site_id == site.site_id)
            .collect();
        let in_day = |t: i64| (start..end).contains(&t);
        let mut x = Expected::default();
        let mut visitors = BTreeSet::new();
        let mut by_visitor: BTreeMap<&str, Vec<(i64, bool)>> = BTreeMap::new();
        for e in &of_site {
            let human = !is_bot(e, listed);
            if human && e.r#type() != EventType::Identify {
                by_visitor
                    .entry(e.visitor_id.as_str())
                    .or_default()
                    .push((e.timestamp_us, e.r#type() == EventType::Page));
            }
            if !in_day(e.timestamp_us) {
                continue;
            }
            if !human {
                x.bot_events += 1;
                continue;
            }
            x.events += 1;
            visitors.insert(e.visitor_id.clone());
            x.pageviews += i64::from(e.r#type() == EventType::Page);
            if e.r#type() == EventType::Track
                && let Some((micros, currency)) = revenue(e)
                && currency == site.currency
            {
                x.orders += 1;
                x.revenue_micros += micros;
            }
        }
        x.visitors = visitors.len() as i64;
        for events in by_visitor.values_mut() {
            events.sort();
            let mut visits: Vec<(i64, i64, i64)> = Vec::new(); // start, last, pageviews
            for &(t, page) in events.iter() {
                match visits.last_mut() {
                    Some(v) if t - v.1 < 30 * MINUTE => {
                        v.1 = t;
                        v.2 += i64::from(page);
                    }
                    _ => visits.push((t, t, i64::from(page))),
                }
            }
            for (s, last, pageviews) in visits {
                if in_day(s) {
                    x.visits += 1;
                    x.bounces += i64::from(pageviews == 1);
                    x.duration_us += last - s;
                }
            }
        }
        out.insert(site.site_id, x);
    }
    out
}
