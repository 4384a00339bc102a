//! A day of raw events for the batch benchmark (`batch-bench`): visits of a few events each,
//! written into a lake's `raw/` as the archive writes them (one object per batch and UTC hour),
//! with what the batch must cope with: copies of events redelivered in other files (some
//! received earlier than the original), bots, orders in and out of the site's currency, and a
//! few invalid rows.
//!
//! Everything derives from a seed, so the same arguments write the same files.

use rand::{Rng, SeedableRng, rngs::StdRng};
use sightline_lake::ObjectStore;
use sightline_proto::events::v1::{Event, EventBatch, EventType};

const HOUR_US: i64 = 3_600_000_000;
const SECOND_US: i64 = 1_000_000;

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
];
/// One visitor in [`BOT_EVERY`] is one of these: a crawler, a headless browser, a script.
const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "",
];
const BOT_EVERY: u64 = 37;
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://t.co/x1Yz",
    "https://news.ycombinator.com/",
    "",
    "",
];
const PRODUCTS: &[(&str, f64)] = &[
    ("linen-shirt", 49.9),
    ("trail-shoes", 119.0),
    ("ceramic-mug", 14.5),
    ("wool-scarf", 39.0),
    ("desk-lamp", 64.99),
    ("rain-jacket", 89.0),
];
const CAMPAIGNS: &[&str] = &[
    "?utm_source=google&utm_medium=cpc&utm_campaign=spring-sale",
    "?utm_source=newsletter&utm_medium=email&utm_campaign=weekly-42",
];

/// One site of the generated tenant.
#[derive(Debug, Clone)]
pub struct GenSite {
    /// Its id.
    pub site_id: i64,
    /// Its host name.
    pub domain: String,
    /// Its currency (most orders are in it).
    pub currency: String,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct DaySpec {
    /// The tenant.
    pub tenant_id: i64,
    /// Its sites; a visitor belongs to one.
    pub sites: Vec<GenSite>,
    /// First event time, µs (whole hours from there on).
    pub from_us: i64,
    /// Hours the events spread over.
    pub hours: usize,
    /// Events to write (duplicate copies and invalid rows not included).
    pub events: usize,
    /// Seed of everything random.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Unique events.
    pub events: u64,
    /// Copies of them in other files.
    pub duplicates: u64,
    /// Invalid rows.
    pub invalid: u64,
    /// Objects.
    pub objects: usize,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: a visitor's id and browser from its number, without a table.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Gen<'a> {
    spec: &'a DaySpec,
    rng: StdRng,
    visitors: u64,
    next_id: u64,
}

impl Gen<'_> {
    fn message_id(&mut self) -> String {
        self.next_id += 1;
        format!("ajs-{:016x}-{:010}", self.spec.seed, self.next_id)
    }

    /// The events of one visit starting at `start_us`.
    fn visit(&mut self, start_us: i64, out: &mut Vec<Event>) {
        let spec = self.spec;
        let v = self.rng.random_range(0..self.visitors);
        let h = mix(v ^ spec.seed);
        let site = &spec.sites[(v % spec.sites.len() as u64) as usize];
        let user_agent = if v % BOT_EVERY == 0 {
            BOTS[(h % BOTS.len() as u64) as usize]
        } else {
            BROWSERS[(h % BROWSERS.len() as u64) as usize]
        };
        let visitor_id = format!("{:016x}{:016x}", h, mix(h));
        let referrer = REFERRERS[self.rng.random_range(0..REFERRERS.len())];
        let campaign = if self.rng.random_bool(0.2) {
            CAMPAIGNS[self.rng.random_range(0..CAMPAIGNS.len())]
        } else {
            ""
        };
        let length = self.rng.random_range(1..=12);
        let mut t = start_us;
        for i in 0..length {
            if i > 0 {
                // Mostly a few seconds to minutes apart; sometimes a pause that ends the visit.
                t += if self.rng.random_bool(0.04) {
                    self.rng.random_range(30 * 60..50 * 60) * SECOND_US
                } else {
                    self.rng.random_range(2..300) * SECOND_US + self.rng.random_range(0..SECOND_US)
                };
            }
            let (slug, price) = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
            let roll = self.rng.random_range(0..100);
            let kind = match roll {
                _ if i == 0 => EventType::Page,
                0..=49 => EventType::Page,
                50..=54 => EventType::Screen,
                55..=94 => EventType::Track,
                _ => EventType::Identify,
            };
            let (name, properties) = match kind {
                EventType::Track if roll >= 90 => {
                    let currency = match self.rng.random_range(0..10) {
                        0 => "usd".to_owned(),
                        1 => "GBP".to_owned(),
                        _ => site.currency.to_ascii_lowercase(),
                    };
                    let revenue = price * f64::from(self.rng.random_range(1..4_u8));
                    (
                        "Order Completed",
                        format!(
                            r#"{{"order_id":"o-{}","revenue":{revenue},"currency":"{currency}","products":[{{"product_id":"{slug}","price":{price}}}]}}"#,
                            self.next_id
                        ),
                    )
                }
                EventType::Track => (
                    if roll >= 75 {
                        "Product Added"
                    } else {
                        "Product Viewed"
                    },
                    format!(r#"{{"product_id":"{slug}","price":{price},"currency":"EUR"}}"#),
                ),
                EventType::Screen => ("Product", format!(r#"{{"path":"/products/{slug}"}}"#)),
                EventType::Identify => ("", r#"{"plan":"free"}"#.to_owned()),
                _ => ("", format!(r#"{{"path":"/products/{slug}"}}"#)),
            };
            let url = format!("https://{}/products/{slug}{campaign}", site.domain);
            let context = format!(
                r#"{{"library":{{"name":"analytics.js","version":"1.72.0"}},"page":{{"referrer":"{referrer}","url":"{url}"}},"userAgent":"{user_agent}","locale":"fr-FR"}}"#
            );
            let mut event = Event {
                message_id: self.message_id(),
                tenant_id: spec.tenant_id,
                site_id: site.site_id,
                name: name.to_owned(),
                anonymous_id: visitor_id.clone(),
                visitor_id: visitor_id.clone(),
                timestamp_us: t,
                original_timestamp_us: t,
                sent_at_us: t,
                received_at_us: t + self.rng.random_range(50_000..2_000_000),
                user_agent: user_agent.to_owned(),
                page_url: if kind == EventType::Screen {
                    String::new()
                } else {
                    url
                },
                page_referrer: if i == 0 {
                    referrer.to_owned()
                } else {
                    String::new()
                },
                page_title: format!("{slug} | Shop"),
                locale: "fr-FR".into(),
                context_json: context.into_bytes().into(),
                properties_json: properties.into_bytes().into(),
                ..Event::default()
            };
            event.set_type(kind);
            out.push(event);
        }
    }

    /// Copies of about 1 % of `events`, received a little later (or, for a third, earlier: then
    /// the copy is the one the batch keeps).
    fn redelivered(&mut self, events: &[Event]) -> Vec<Event> {
        let mut copies = Vec::new();
        for e in events {
            if self.rng.random_bool(0.01) {
                let mut copy = e.clone();
                copy.received_at_us += if self.rng.random_bool(0.33) {
                    -SECOND_US
                } else {
                    self.rng.random_range(1..60) * SECOND_US
                };
                copies.push(copy);
            }
        }
        copies
    }

    /// Rows the batch must refuse: an unknown site, no messageId, no type.
    fn invalid(&mut self, t: i64) -> Vec<Event> {
        let mut out = Vec::new();
        self.visit(t, &mut out);
        out.truncate(3);
        for (i, e) in out.iter_mut().enumerate() {
            match i {
                0 => e.site_id = 999_999,
                1 => e.message_id.clear(),
                _ => e.set_type(EventType::Unspecified),
            }
        }
        out
    }
}

/// Writes the events of `spec` into `lake`'s `raw/`, an hour of visit starts at a time.
pub async fn write_day(lake: &dyn ObjectStore, spec: &DaySpec) -> anyhow::Result<Written> {
    anyhow::ensure!(
        !spec.sites.is_empty() && spec.hours > 0,
        "no sites or hours"
    );
    let mut generator = Gen {
        spec,
        rng: StdRng::seed_from_u64(spec.seed),
        // About 20 events per visitor over the span: a few visits each.
        visitors: (spec.events as u64 / 20).max(10),
        next_id: 0,
    };
    let end_us = spec.from_us + spec.hours as i64 * HOUR_US;
    let mut written = Written::default();
    let mut remaining = spec.events;
    for hour in 0..spec.hours {
        let quota = remaining / (spec.hours - hour);
        let hour_us = spec.from_us + hour as i64 * HOUR_US;
        let mut events = Vec::with_capacity(quota + 16);
        while events.len() < quota {
            let start = hour_us + generator.rng.random_range(0..HOUR_US);
            generator.visit(start, &mut events);
        }
        // Visits near the end of the span stop there; the last one may pass the quota.
        events.retain(|e| e.timestamp_us < end_us);
        events.truncate(quota);
        remaining -= events.len();
        let duplicates = generator.redelivered(&events);
        let invalid = generator.invalid(hour_us);
        written.events += events.len() as u64;
        written.duplicates += duplicates.len() as u64;
        written.invalid += invalid.len() as u64;
        for (name, events) in [
            ("archive", events),
            ("redelivered", duplicates),
            ("invalid", invalid),
        ] {
            let batch = EventBatch {
                batch_id: format!("bench-{name}-{hour}"),
                partition: 0,
                created_at_us: 0,
                events,
            };
            written.objects += sightline_lake::write_raw_batches(lake, &[batch])
                .await?
                .len();
        }
    }
    Ok(written)
}
