//! The Segment Tracking API payloads, borrowed from the request body.
//!
//! Free-form parts (`properties`, `traits`, `context`, `integrations`) stay `&RawValue`: they are
//! checked to be JSON objects and passed on as bytes, never parsed into maps.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};
use serde_json::value::RawValue;

/// One event as a client sent it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub name: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Id>,
    pub user_id: Option<Id>,
    pub group_id: Option<Id>,
    pub previous_id: Option<Id>,
    #[serde(borrow)]
    pub message_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub original_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub sent_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub write_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub context: Option<&'a RawValue>,
    #[serde(borrow)]
    pub properties: Option<&'a RawValue>,
    #[serde(borrow)]
    pub traits: Option<&'a RawValue>,
}

/// A `/v1/batch` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEnvelope<'a> {
    #[serde(borrow)]
    pub batch: Vec<&'a RawValue>,
    #[serde(borrow)]
    pub write_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub sent_at: Option<Cow<'a, str>>,
    /// Applies to events that carry no context of their own.
    #[serde(borrow)]
    pub context: Option<&'a RawValue>,
}

/// Only the write key of a body, for single-event calls.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyOnly<'a> {
    #[serde(borrow)]
    pub write_key: Option<Cow<'a, str>>,
}

/// The parts of `context` ingest reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context<'a> {
    #[serde(borrow)]
    pub ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub locale: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub page: Option<Page<'a>>,
    /// The user's traits; RudderStack's SDKs send an identify call's traits only here.
    #[serde(borrow)]
    pub traits: Option<&'a RawValue>,
}

/// `context.page`, or the page fields of a page call's `properties`.
#[derive(Debug, Default, Deserialize)]
pub struct Page<'a> {
    #[serde(borrow)]
    pub url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub referrer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub title: Option<Cow<'a, str>>,
}

/// An identifier Segment allows as a string or a number (`userId: 42`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                Ok(Id(v.to_string()))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// Whether a raw JSON value is an object (`null` counts as absent, so it passes).
pub fn is_object_or_null(raw: &RawValue) -> bool {
    let text = raw.get();
    text.starts_with('{') || text == "null"
}

/// A raw value that is present and not `null`.
pub fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_analytics_js_track_call_without_parsing_properties() {
        let body = br#"{"type":"track","event":"Order Completed","userId":42,
            "anonymousId":"a-1","messageId":"m1","timestamp":"2026-11-21T10:00:00.000Z",
            "properties":{"revenue":12.5,"nested":{"x":[1,2]}},
            "context":{"ip":"203.0.113.9","userAgent":"UA","page":{"url":"https://s.example/p"}},
            "integrations":{"All":true}}"#;
        let e: RawEvent<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(e.kind.as_deref(), Some("track"));
        assert_eq!(e.user_id, Some(Id("42".into())));
        assert_eq!(
            e.properties.unwrap().get(),
            r#"{"revenue":12.5,"nested":{"x":[1,2]}}"#
        );
        let c: Context<'_> = serde_json::from_str(e.context.unwrap().get()).unwrap();
        assert_eq!(c.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(c.page.unwrap().url.as_deref(), Some("https://s.example/p"));
    }

    #[test]
    fn batch_elements_stay_raw() {
        let body = br#"{"batch":[{"type":"page"},{"type":"track","event":"x"}],"sentAt":"2026-11-21T10:00:00Z"}"#;
        let b: BatchEnvelope<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(b.batch.len(), 2);
        assert_eq!(b.batch[0].get(), r#"{"type":"page"}"#);
    }
}
