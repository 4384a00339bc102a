//! Realistic analytics.js-shaped events, and `/v1/batch` bodies made of them whose messageIds
//! and times are filled in per request, so every request carries unique ids at the cost of a
//! memcpy and a few small writes.

use bytes::{BufMut, Bytes, BytesMut};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

/// Width of the variable part of a messageId (hex digits).
pub const ID_HEX: usize = 32;
/// Width of an ISO-8601 time as analytics.js writes it: `2026-05-01T12:00:00.000Z`.
pub const TIME_WIDTH: usize = 24;

const ID_PREFIX: &str = "ajs-next-";
const ID_HOLE: &str = "################################";
const TIME_HOLE: &str = "@@@@@@@@@@@@@@@@@@@@@@@@";

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
];
const LOCALES: &[&str] = &["fr-FR", "en-US", "de-DE", "en-GB", "es-ES", "it-IT"];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://shop.example/",
    "https://t.co/x1Yz",
    "",
];
const PRODUCTS: &[(&str, &str, f64)] = &[
    ("linen-shirt", "Linen shirt", 49.9),
    ("trail-shoes", "Trail running shoes", 119.0),
    ("ceramic-mug", "Ceramic mug", 14.5),
    ("wool-scarf", "Merino wool scarf", 39.0),
    ("desk-lamp", "Adjustable desk lamp", 64.99),
    ("rain-jacket", "Packable rain jacket", 89.0),
];
const TRACK_EVENTS: &[&str] = &[
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Product List Viewed",
    "Order Completed",
];
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("google", "cpc", "spring-sale"),
    ("newsletter", "email", "weekly-42"),
    ("facebook", "social", "retargeting"),
];

/// A visitor: the same browser sends all of its events.
#[derive(Debug, Clone)]
struct Visitor {
    anonymous_id: String,
    user_id: Option<String>,
    user_agent: &'static str,
    locale: &'static str,
}

/// Makes events from a seeded random source, so runs are comparable.
pub struct EventGen {
    rng: StdRng,
    visitors: Vec<Visitor>,
}

impl EventGen {
    /// A generator over `visitors` distinct visitors (anonymousIds), so events spread over
    /// every partition.
    pub fn new(seed: u64, visitors: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let visitors = (0..visitors.max(1))
            .map(|i| {
                let id: u128 = rng.random();
                let hex = format!("{id:032x}");
                Visitor {
                    anonymous_id: format!(
                        "{}-{}-4{}-a{}-{}",
                        &hex[..8],
                        &hex[8..12],
                        &hex[13..16],
                        &hex[17..20],
                        &hex[20..32]
                    ),
                    // About a third of visitors are signed in.
                    user_id: (i % 3 == 0).then(|| format!("user-{}", rng.random_range(1..500_000))),
                    user_agent: USER_AGENTS.choose(&mut rng).copied().unwrap_or_default(),
                    locale: LOCALES.choose(&mut rng).copied().unwrap_or_default(),
                }
            })
            .collect();
        Self { rng, visitors }
    }

    /// One event as analytics.js sends it in a batch, with holes for its messageId and time.
    pub fn event_template(&mut self) -> String {
        let rng = &mut self.rng;
        let visitor = self
            .visitors
            .choose(rng)
            .cloned()
            .unwrap_or_else(|| Visitor {
                anonymous_id: "anonymous".into(),
                user_id: None,
                user_agent: USER_AGENTS[0],
                locale: LOCALES[0],
            });
        let (slug, product, price) = *PRODUCTS.choose(rng).unwrap_or(&PRODUCTS[0]);
        let referrer = REFERRERS.choose(rng).copied().unwrap_or_default();
        let campaign = CAMPAIGNS
            .choose(rng)
            .copied()
            .filter(|_| rng.random_bool(0.3));
        let search = match campaign {
            Some((source, medium, name)) => {
                format!("?utm_source={source}&utm_medium={medium}&utm_campaign={name}")
            }
            None => String::new(),
        };
        let path = format!("/products/{slug}");
        let title = format!("{product} | Shop");
        let url = format!("https://shop.example{path}{search}");
        let context = format!(
            r#"{{"library":{{"name":"analytics.js","version":"1.72.0"}},"page":{{"referrer":"{referrer}","title":"{title}","url":"{url}"}},"userAgent":"{}","locale":"{}"}}"#,
            visitor.user_agent, visitor.locale
        );
        let user_id = match &visitor.user_id {
            Some(u) => format!(r#""userId":"{u}","#),
            None => String::new(),
        };
        let head = format!(
            r#""anonymousId":"{}",{user_id}"messageId":"{ID_PREFIX}{ID_HOLE}","timestamp":"{TIME_HOLE}""#,
            visitor.anonymous_id
        );
        if rng.random_bool(0.35) {
            format!(
                r#"{{"type":"page","name":"Product",{head},"properties":{{"path":"{path}","title":"{title}"}},"context":{context}}}"#
            )
        } else {
            let event = TRACK_EVENTS
                .choose(rng)
                .copied()
                .unwrap_or("Product Viewed");
            format!(
                r#"{{"type":"track","event":"{event}",{head},"properties":{{"product_id":"sku-{}","name":"{product}","price":{price},"currency":"EUR"}},"context":{context}}}"#,
                rng.random_range(10_000..99_999)
            )
        }
    }

    /// A `/v1/batch` body template of `events` events.
    pub fn batch_template(&mut self, events: usize) -> Template {
        let mut text = String::from(r#"{"batch":["#);
        for i in 0..events {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&self.event_template());
        }
        text.push_str(r#"],"sentAt":""#);
        text.push_str(TIME_HOLE);
        text.push_str(r#""}"#);
        Template::new(text)
    }
}

/// A body with holes: messageIds to make unique and times to set to now.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Bytes,
    id_holes: Vec<usize>,
    time_holes: Vec<usize>,
}

fn holes(text: &str, hole: &str) -> Vec<usize> {
    text.match_indices(hole).map(|(at, _)| at).collect()
}

impl Template {
    fn new(text: String) -> Self {
        Self {
            id_holes: holes(&text, ID_HOLE),
            time_holes: holes(&text, TIME_HOLE),
            bytes: Bytes::from(text),
        }
    }

    /// Events in the body.
    pub fn events(&self) -> usize {
        self.id_holes.len()
    }

    /// Size of a rendered body.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body is empty (never, for a generated one).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body with unique messageIds (`prefix` then a sequence number per event) and every
    /// time set to `now`. `buf` is reused between calls.
    pub fn render(&self, buf: &mut BytesMut, ids: &mut IdSource, now: &TimeText) -> Bytes {
        buf.reserve(self.bytes.len());
        buf.put_slice(&self.bytes);
        for &at in &self.id_holes {
            ids.write_next(&mut buf[at..at + ID_HEX]);
        }
        for &at in &self.time_holes {
            buf[at..at + TIME_WIDTH].copy_from_slice(now.as_bytes());
        }
        buf.split().freeze()
    }
}

/// Unique messageIds: a random run id, the source's own id, and a counter.
#[derive(Debug, Clone)]
pub struct IdSource {
    prefix: [u8; 16],
    next: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl IdSource {
    /// Ids of run `run` (random per process) from source `source` (one per connection).
    pub fn new(run: u32, source: u32) -> Self {
        let mut prefix = [0u8; 16];
        let value = (u64::from(run) << 32) | u64::from(source);
        for (i, b) in prefix.iter_mut().enumerate() {
            *b = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self { prefix, next: 0 }
    }

    fn write_next(&mut self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.prefix);
        let n = self.next;
        self.next += 1;
        for (i, b) in out[16..32].iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
}

/// The current time as analytics.js writes it, refreshed at most once a millisecond.
#[derive(Debug, Clone)]
pub struct TimeText {
    text: [u8; TIME_WIDTH],
    millis: i64,
}

impl Default for TimeText {
    fn default() -> Self {
        let mut t = Self {
            text: [b'0'; TIME_WIDTH],
            millis: i64::MIN,
        };
        t.refresh();
        t
    }
}

impl TimeText {
    /// Updates the text to the current time.
    pub fn refresh(&mut self) {
        let now = chrono::Utc::now();
        let millis = now.timestamp_millis();
        if millis != self.millis {
            let text = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            if text.len() == TIME_WIDTH {
                self.text.copy_from_slice(text.as_bytes());
                self.millis = millis;
            }
        }
    }

    /// The text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn events_are_about_600_bytes_valid_and_unique() {
        let mut generator = EventGen::new(7, 1000);
        let template = generator.batch_template(50);
        assert_eq!(template.events(), 50);
        let mut ids = IdSource::new(0xdead_beef, 3);
        let now = TimeText::default();
        let mut buf = BytesMut::new();
        let first = template.render(&mut buf, &mut ids, &now);
        let second = template.render(&mut buf, &mut ids, &now);
        assert_ne!(first, second, "each rendering has new messageIds");

        #[derive(serde::Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            batch: Vec<&'a RawValue>,
        }
        let body: Body<'_> = serde_json::from_slice(&first).unwrap();
        let sizes: Vec<usize> = body.batch.iter().map(|e| e.get().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((520..=680).contains(&mean), "mean event size {mean}");
        let mut message_ids = std::collections::HashSet::new();
        let mut visitors = std::collections::HashSet::new();
        for raw in &body.batch {
            let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            assert!(message_ids.insert(v["messageId"].as_str().unwrap().to_string()));
            visitors.insert(v["anonymousId"].as_str().unwrap().to_string());
            chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        }
        assert!(visitors.len() > 40, "{} visitors", visitors.len());
    }
}
