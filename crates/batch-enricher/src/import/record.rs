//! One source row to one raw event, or the reason it cannot be one.
//!
//! Rows are Segment-shaped JSON (`messageId`, `anonymousId`, `context.page.url` …) or flat
//! columns (`message_id`, `anonymous_id`, `page_url` …, as CSV headers); both spellings are read.

use chrono::DateTime;
use serde_json::{Map, Value};
use sightline_proto::events::v1::{Event, EventType};

/// Reads a field by any of its names; dotted names walk into objects.
fn field<'a>(row: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|name| {
        let mut parts = name.split('.');
        let mut value = row.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        (!value.is_null()).then_some(value)
    })
}

fn text(row: &Map<String, Value>, names: &[&str]) -> String {
    match field(row, names) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A JSON object field, or a string holding one (CSV), as compact JSON bytes.
fn json(row: &Map<String, Value>, names: &[&str]) -> Result<Vec<u8>, &'static str> {
    match field(row, names) {
        None => Ok(Vec::new()),
        Some(Value::Object(o)) => Ok(serde_json::to_vec(o).unwrap_or_default()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Ok(serde_json::to_vec(&o).unwrap_or_default()),
            _ => Err("invalid_properties"),
        },
        Some(_) => Err("invalid_properties"),
    }
}

/// An instant: RFC 3339 text, or a number of milliseconds since the Unix epoch.
fn instant_us(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().and_then(|ms| ms.checked_mul(1000)),
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(ms) => ms.checked_mul(1000),
            Err(_) => DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| t.timestamp_micros()),
        },
        _ => None,
    }
}

/// The raw event of `row` for `tenant_id` (`default_site`: when the row names no site), or
/// the reason it is refused. `fallback_id` names an event without a messageId, stably.
pub fn event_of(
    row: &Map<String, Value>,
    tenant_id: i64,
    default_site: Option<i64>,
    fallback_id: &str,
) -> Result<Event, &'static str> {
    let site_id = match text(row, &["site_id", "siteId"]) {
        s if s.is_empty() => default_site.ok_or("missing_site")?,
        s => s.parse().map_err(|_| "invalid_site")?,
    };
    let name = text(row, &["name", "event"]);
    let kind = match text(row, &["type"]).to_ascii_lowercase() {
        t if t.is_empty() && !name.is_empty() => EventType::Track,
        t => EventType::from_segment_name(&t).ok_or("invalid_type")?,
    };
    if kind == EventType::Track && name.is_empty() {
        return Err("missing_event_name");
    }
    let timestamp_us =
        instant_us(field(row, &["timestamp", "originalTimestamp"])).ok_or("invalid_timestamp")?;
    if DateTime::from_timestamp_micros(timestamp_us).is_none() {
        return Err("invalid_timestamp");
    }
    let anonymous_id = text(row, &["anonymous_id", "anonymousId"]);
    let user_id = text(row, &["user_id", "userId"]);
    let visitor_id = if anonymous_id.is_empty() {
        user_id.clone()
    } else {
        anonymous_id.clone()
    };
    if visitor_id.is_empty() {
        return Err("missing_visitor");
    }
    let message_id = match text(row, &["message_id", "messageId"]) {
        id if id.is_empty() => fallback_id.to_owned(),
        id => id,
    };
    let mut event = Event {
        message_id,
        tenant_id,
        site_id,
        name,
        anonymous_id,
        user_id,
        visitor_id,
        timestamp_us,
        original_timestamp_us: timestamp_us,
        sent_at_us: instant_us(field(row, &["sent_at", "sentAt"])).unwrap_or(0),
        // Imports have no receipt: the event time stands in, so reimports are identical.
        received_at_us: timestamp_us,
        user_agent: text(row, &["user_agent", "context.userAgent"]),
        page_url: text(row, &["page_url", "context.page.url", "properties.url"]),
        page_referrer: text(
            row,
            &[
                "page_referrer",
                "context.page.referrer",
                "properties.referrer",
            ],
        ),
        page_title: text(
            row,
            &["page_title", "context.page.title", "properties.title"],
        ),
        locale: text(row, &["locale", "context.locale"]),
        context_json: json(row, &["context"])?.into(),
        properties_json: json(row, &["properties"])?.into(),
        traits_json: json(row, &["traits"])?.into(),
        ..Event::default()
    };
    event.set_type(kind);
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn segment_shaped_rows_become_events() {
        let e = event_of(
            &row(
                r#"{"type":"page","messageId":"m1","anonymousId":"a","userId":"u",
                     "timestamp":"2025-03-10T09:00:00Z",
                     "context":{"userAgent":"UA","page":{"url":"https://s.example/x"}},
                     "properties":{"revenue":3}}"#,
            ),
            1,
            Some(2),
            "f",
        )
        .unwrap();
        assert_eq!((e.site_id, e.visitor_id.as_str()), (2, "a"));
        assert_eq!(e.timestamp_us, 1_741_597_200_000_000);
        assert_eq!(
            (e.user_agent.as_str(), e.page_url.as_str()),
            ("UA", "https://s.example/x")
        );
        assert_eq!(&e.properties_json[..], br#"{"revenue":3}"#);
    }

    #[test]
    fn flat_rows_read_like_csv_columns() {
        let e = event_of(
            &row(r#"{"site_id":"5","event":"Order Completed","user_id":"u",
                     "timestamp":"1741597200000","properties":"{\"revenue\": 9}"}"#),
            1,
            None,
            "fallback",
        )
        .unwrap();
        assert_eq!(
            (e.site_id, e.r#type(), e.message_id.as_str()),
            (5, EventType::Track, "fallback")
        );
        assert_eq!(e.visitor_id, "u");
    }

    #[test]
    fn bad_rows_say_why() {
        for (json, reason) in [
            (r#"{"type":"page","userId":"u"}"#, "invalid_timestamp"),
            (
                r#"{"type":"track","userId":"u","timestamp":"2025-03-10T09:00:00Z"}"#,
                "missing_event_name",
            ),
            (
                r#"{"type":"page","timestamp":"2025-03-10T09:00:00Z"}"#,
                "missing_visitor",
            ),
            (
                r#"{"type":"bogus","userId":"u","timestamp":"2025-03-10T09:00:00Z"}"#,
                "invalid_type",
            ),
            (
                r#"{"type":"page","userId":"u","timestamp":"2025-03-10T09:00:00Z","properties":"[1"}"#,
                "invalid_properties",
            ),
        ] {
            assert_eq!(
                event_of(&row(json), 1, Some(2), "f").unwrap_err(),
                reason,
                "{json}"
            );
        }
        assert_eq!(
            event_of(&row(r#"{"type":"page"}"#), 1, None, "f").unwrap_err(),
            "missing_site"
        );
    }
}
