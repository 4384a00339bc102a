//! What the rollups need of one event, extracted when its message arrives.
//!
//! Decoding and enrichment (user agent, URL, referrer) are the costly, state-free part of the
//! work: they run as messages arrive, so a flush only folds compact facts into visitor state.

use serde::Deserialize;
use sightline_event::{BotReason, Enriched, Enricher};
use sightline_proto::events::v1::{Event, EventType};

/// The rollup-relevant part of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub tenant_id: i64,
    pub site_id: i64,
    pub visitor_id: String,
    /// Hash of the event's messageId, for duplicate detection.
    pub message_hash: u64,
    /// Event time, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Receipt time at ingest, microseconds since the Unix epoch.
    pub received_at_us: i64,
    pub kind: Kind,
    /// Track event name (empty for other calls).
    pub name: String,
    /// Normalised page path, or a screen's name.
    pub page: String,
    /// Why a bot sent it; `None` for people.
    pub bot: Option<BotReason>,
    /// The visit attributes this event would give a visit it starts.
    pub attrs: Attrs,
    /// An order: `properties.revenue` with its currency.
    pub order: Option<Order>,
}

/// The kind of call, as far as rollups care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `page` or `screen`: a pageview.
    Pageview,
    /// `track`: an action; extends visits.
    Track,
    /// `identify`, `group`, `alias`: bookkeeping, counted as events only.
    Other,
}

/// Visit-level attributes, taken from a visit's first event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Attrs {
    pub source: String,
    pub medium: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub browser: String,
    pub os: String,
    pub device: String,
}

/// Revenue of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Millionths of the currency unit.
    pub revenue_micros: i64,
    /// ISO 4217 code as sent, upper-cased; `None` means the site's currency.
    pub currency: Option<String>,
}

/// Stable 64-bit hash of a messageId (the same across restarts and machines).
pub fn message_hash(message_id: &str) -> u64 {
    let digest = blake3::hash(message_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl Fact {
    /// Enriches `event` into a fact.
    pub fn of(enricher: &Enricher, event: &Event) -> Self {
        Self::from_enriched(event, enricher.enrich(event))
    }

    /// The fact of an event enriched already (the batch layer keeps the enrichment for the
    /// trusted tables and must not pay for it twice).
    pub fn from_enriched(event: &Event, enriched: Enriched) -> Self {
        let kind = match event.r#type() {
            EventType::Page | EventType::Screen => Kind::Pageview,
            EventType::Track => Kind::Track,
            _ => Kind::Other,
        };
        let page = match enriched.session_event(event) {
            Some(session) if session.is_pageview => session.page.to_owned(),
            _ => String::new(),
        };
        let order = match kind {
            Kind::Track => order_of(&event.properties_json),
            _ => None,
        };
        Fact {
            tenant_id: event.tenant_id,
            site_id: event.site_id,
            visitor_id: event.visitor_id.clone(),
            message_hash: message_hash(&event.message_id),
            timestamp_us: event.timestamp_us,
            received_at_us: event.received_at_us,
            kind,
            name: if kind == Kind::Track {
                event.name.clone()
            } else {
                String::new()
            },
            page,
            bot: enriched.bot,
            attrs: Attrs {
                source: enriched.source,
                medium: enriched.medium.as_str().to_owned(),
                utm_source: enriched.utm_source,
                utm_medium: enriched.utm_medium,
                utm_campaign: enriched.utm_campaign,
                browser: enriched.browser,
                os: enriched.os,
                device: enriched.device_class.as_str().to_owned(),
            },
            order,
        }
    }
}

/// `revenue` may come as a number or a numeric string (some SDKs stringify).
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
struct Properties {
    revenue: Option<Amount>,
    currency: Option<String>,
}

/// The order in a track call's properties: Segment's `revenue` (with `currency`) on any track
/// event. Revenue is kept in millionths, so sums stay exact integers; amounts are read as
/// doubles, exact to the micro for anything below about nine billion.
fn order_of(properties_json: &[u8]) -> Option<Order> {
    if properties_json.is_empty() {
        return None;
    }
    let properties: Properties = serde_json::from_slice(properties_json).ok()?;
    let amount = match properties.revenue? {
        Amount::Number(n) => n,
        Amount::Text(s) => s.trim().parse().ok()?,
    };
    if !amount.is_finite() {
        return None;
    }
    let micros = (amount * 1_000_000.0).round();
    if micros.abs() >= 9.0e18 {
        return None;
    }
    let currency = properties
        .currency
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()));
    Some(Order {
        revenue_micros: micros as i64,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_is_read_exactly_from_numbers_and_numeric_strings() {
        let order = order_of(br#"{"revenue": 19.99, "currency": "eur", "items": [1,2]}"#).unwrap();
        assert_eq!(order.revenue_micros, 19_990_000);
        assert_eq!(order.currency.as_deref(), Some("EUR"));
        let order = order_of(br#"{"revenue": " 5.5 "}"#).unwrap();
        assert_eq!((order.revenue_micros, order.currency), (5_500_000, None));
        assert_eq!(
            order_of(br#"{"revenue": 0.1}"#).unwrap().revenue_micros,
            100_000
        );
    }

    #[test]
    fn events_without_usable_revenue_are_no_orders() {
        for json in [
            &br#"{"price": 3}"#[..],
            br#"{"revenue": "n/a"}"#,
            br#"{"revenue": null}"#,
            br#"not json"#,
            b"",
            br#"{"revenue": 1e300}"#,
        ] {
            assert_eq!(order_of(json), None, "{}", String::from_utf8_lossy(json));
        }
        let order = order_of(br#"{"revenue": 1, "currency": "euro"}"#).unwrap();
        assert_eq!(
            order.currency, None,
            "an invalid code falls back to the site's currency"
        );
    }

    #[test]
    fn message_hash_is_stable() {
        assert_eq!(message_hash("m-1"), message_hash("m-1"));
        assert_ne!(message_hash("m-1"), message_hash("m-2"));
        // Pinned: persisted visitor state holds these hashes across releases.
        assert_eq!(message_hash(""), 0xa6a1_f9f5_b949_13af);
    }
}
