//! From a client's JSON to a validated [`Event`], or a [`Rejection`] with its reason.
//!
//! Rules follow the Segment spec: required fields per call type, 32 KB an event, ISO-8601
//! times, free-form objects that must be objects. Ingest also assigns missing messageIds,
//! corrects client clock skew from `sentAt` and derives the visitor id.

use std::{borrow::Cow, net::IpAddr};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sightline_proto::events::v1::{Event, EventType};

use crate::{
    privacy::{VisitorHasher, truncate_ip},
    segment::{Context, Id, Page, RawEvent, is_object_or_null, present},
};

/// Longest accepted `messageId`, `event` name or id.
const MAX_ID_CHARS: usize = 512;

/// Why an event was refused; `reason` is a stable code, `detail` says it for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason (`missing_event_name`, `event_too_large`, …).
    pub reason: &'static str,
    /// Human-readable explanation.
    pub detail: String,
    /// The event's messageId, when one could be read.
    pub message_id: Option<String>,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            message_id: None,
        }
    }
}

/// What the whole request contributes to each of its events.
#[derive(Debug, Clone)]
pub struct RequestInfo<'a> {
    /// The write key's tenant.
    pub tenant_id: i64,
    /// The write key's site.
    pub site_id: i64,
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// The call type of single-event endpoints (`/v1/track` …); `None` for batches.
    pub path_type: Option<EventType>,
    /// `sentAt` of a batch envelope.
    pub batch_sent_at: Option<&'a str>,
    /// `context` of a batch envelope, for events without their own.
    pub batch_context: Option<&'a RawValue>,
    /// The client IP from the connection or a trusted proxy header.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header.
    pub header_user_agent: Option<&'a str>,
}

/// The validation settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Largest event in bytes.
    pub max_event_bytes: usize,
    /// Skew under which timestamps are kept.
    pub clock_skew_threshold: chrono::Duration,
    /// Cookieless visitor ids.
    pub visitor_hasher: VisitorHasher,
}

/// Parses a Segment call type.
pub fn parse_type(name: &str) -> Option<EventType> {
    EventType::from_segment_name(name)
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, Rejection> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                Rejection::new(
                    "invalid_timestamp",
                    format!("`{field}` is not an ISO-8601 time ({e}): {text}"),
                )
            }),
    }
}

fn non_empty(id: Option<Id>) -> Option<String> {
    id.map(|Id(s)| s).filter(|s| !s.is_empty())
}

fn check_len(field: &str, value: &Option<String>) -> Result<(), Rejection> {
    match value {
        Some(v) if v.chars().count() > MAX_ID_CHARS => Err(Rejection::new(
            "field_too_long",
            format!("`{field}` is longer than {MAX_ID_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

/// `text` as bytes: a slice of `body` when it lies inside it (no copy), else a copy.
fn share(body: Option<&Bytes>, text: &str) -> Bytes {
    match body {
        Some(body) if within(body, text) => body.slice_ref(text.as_bytes()),
        _ => Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn within(body: &Bytes, text: &str) -> bool {
    let start = body.as_ptr() as usize;
    let at = text.as_ptr() as usize;
    at >= start && at + text.len() <= start + body.len()
}

fn object_bytes(
    field: &'static str,
    raw: Option<&RawValue>,
    body: Option<&Bytes>,
) -> Result<Bytes, Rejection> {
    match present(raw) {
        None => Ok(Bytes::new()),
        Some(r) if is_object_or_null(r) => Ok(share(body, r.get())),
        Some(_) => Err(Rejection::new(
            "invalid_field",
            format!("`{field}` must be a JSON object"),
        )),
    }
}

/// The context as stored: the event's own or the batch's, without `ip`.
fn context_without_ip(
    raw: &RawValue,
    has_ip: bool,
    body: Option<&Bytes>,
) -> Result<Bytes, Rejection> {
    if !has_ip {
        return Ok(share(body, raw.get()));
    }
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get())
        .map_err(|e| Rejection::new("invalid_field", format!("`context`: {e}")))?;
    map.remove("ip");
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| Rejection::new("invalid_field", format!("`context`: {e}")))
}

/// Validates one event. `raw` is its JSON exactly as received.
pub fn validate(raw: &RawValue, req: &RequestInfo<'_>, rules: &Rules) -> Result<Event, Rejection> {
    validate_from(raw, None, req, rules)
}

/// [`validate`] for an event that lies inside `body`, the request body it was parsed from (as
/// does the batch context): its `properties`, `traits` and `context` become slices of `body`
/// instead of copies.
pub fn validate_in(
    raw: &RawValue,
    body: &Bytes,
    req: &RequestInfo<'_>,
    rules: &Rules,
) -> Result<Event, Rejection> {
    validate_from(raw, Some(body), req, rules)
}

fn validate_from(
    raw: &RawValue,
    body: Option<&Bytes>,
    req: &RequestInfo<'_>,
    rules: &Rules,
) -> Result<Event, Rejection> {
    let size = raw.get().len();
    if size > rules.max_event_bytes {
        return Err(Rejection::new(
            "event_too_large",
            format!(
                "the event is {size} bytes, over the limit of {} bytes",
                rules.max_event_bytes
            ),
        ));
    }
    if !raw.get().starts_with('{') {
        return Err(Rejection::new(
            "not_an_object",
            "an event must be a JSON object",
        ));
    }
    let event: RawEvent<'_> = serde_json::from_str(raw.get()).map_err(|e| {
        Rejection::new(
            "invalid_field",
            format!("the event does not match the Segment spec: {e}"),
        )
    })?;
    // Kept borrowed: copied only when the event is refused.
    let message_id = event.message_id.clone();
    validate_parsed(event, body, req, rules).map_err(|mut r| {
        r.message_id = message_id.filter(|m| !m.is_empty()).map(Cow::into_owned);
        r
    })
}

fn validate_parsed(
    event: RawEvent<'_>,
    body: Option<&Bytes>,
    req: &RequestInfo<'_>,
    rules: &Rules,
) -> Result<Event, Rejection> {
    let kind = match (req.path_type, event.kind.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some(name)) => parse_type(name).ok_or_else(|| {
            Rejection::new(
                "unknown_type",
                format!("`{name}` is not a Segment call type"),
            )
        })?,
        (None, None) => return Err(Rejection::new("missing_type", "a batch event needs `type`")),
    };

    let anonymous_id = non_empty(event.anonymous_id);
    let user_id = non_empty(event.user_id);
    let group_id = non_empty(event.group_id);
    let previous_id = non_empty(event.previous_id);
    let message_id = event
        .message_id
        .map(Cow::into_owned)
        .filter(|m| !m.is_empty());
    for (field, value) in [
        ("anonymousId", &anonymous_id),
        ("userId", &user_id),
        ("groupId", &group_id),
        ("previousId", &previous_id),
        ("messageId", &message_id),
    ] {
        check_len(field, value)?;
    }
    let name = match kind {
        EventType::Track => event.event,
        EventType::Page | EventType::Screen => event.name,
        _ => None,
    }
    .map(Cow::into_owned)
    .unwrap_or_default();

    match kind {
        EventType::Track if name.is_empty() => {
            return Err(Rejection::new(
                "missing_event_name",
                "a track call needs `event`",
            ));
        }
        EventType::Track if name.chars().count() > MAX_ID_CHARS => {
            return Err(Rejection::new(
                "field_too_long",
                format!("`event` is longer than {MAX_ID_CHARS} characters"),
            ));
        }
        EventType::Identify if anonymous_id.is_none() && user_id.is_none() => {
            return Err(Rejection::new(
                "missing_identity",
                "an identify call needs `userId` or `anonymousId`",
            ));
        }
        EventType::Group if group_id.is_none() => {
            return Err(Rejection::new(
                "missing_group_id",
                "a group call needs `groupId`",
            ));
        }
        EventType::Alias if user_id.is_none() || previous_id.is_none() => {
            return Err(Rejection::new(
                "missing_alias_ids",
                "an alias call needs `userId` and `previousId`",
            ));
        }
        _ => {}
    }

    let properties_json = object_bytes("properties", event.properties, body)?;
    let context_raw = present(event.context).or(req.batch_context);
    let context: Context<'_> = match context_raw {
        Some(raw) if raw.get().starts_with('{') => serde_json::from_str(raw.get())
            .map_err(|e| Rejection::new("invalid_field", format!("`context`: {e}")))?,
        Some(_) => {
            return Err(Rejection::new(
                "invalid_field",
                "`context` must be a JSON object",
            ));
        }
        None => Context::default(),
    };
    let context_json = match context_raw {
        Some(raw) => context_without_ip(raw, context.ip.is_some(), body)?,
        None => Bytes::new(),
    };
    // RudderStack's SDKs send an identify call's traits only in `context.traits`.
    let (traits_field, traits) = match present(event.traits) {
        None if kind == EventType::Identify => ("context.traits", context.traits),
        traits => ("traits", traits),
    };
    let traits_json = object_bytes(traits_field, traits, body)?;

    // Times: the client's event time, corrected by how far its clock is off the server's.
    let original = parse_time("timestamp", event.timestamp.as_deref())?.or(parse_time(
        "originalTimestamp",
        event.original_timestamp.as_deref(),
    )?);
    let sent_at = parse_time("sentAt", event.sent_at.as_deref().or(req.batch_sent_at))?;
    let received = req.received_at;
    let original = original.or(sent_at).unwrap_or(received);
    let timestamp = match sent_at {
        Some(sent) => {
            let skew = received - sent;
            if skew.abs() > rules.clock_skew_threshold {
                original + skew
            } else {
                original
            }
        }
        None => original,
    };

    // The explicit `context.ip` of server-side SDKs wins over the connection's address.
    let ip = context
        .ip
        .as_deref()
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
        .or(req.client_ip);
    let user_agent = context
        .user_agent
        .as_deref()
        .or(req.header_user_agent)
        .unwrap_or_default()
        .to_string();
    let visitor_id = match (&anonymous_id, &user_id, ip) {
        (Some(a), _, _) => a.clone(),
        (None, Some(u), _) => u.clone(),
        (None, None, Some(ip)) => {
            rules
                .visitor_hasher
                .visitor_id(received.date_naive(), req.site_id, ip, &user_agent)
        }
        (None, None, None) => {
            return Err(Rejection::new(
                "missing_identity",
                "no anonymousId, userId or client address to count the visitor by",
            ));
        }
    };

    let page = match context.page {
        Some(page) => page,
        // analytics.js page calls carry the page in `properties` too.
        None if kind == EventType::Page => present(event.properties)
            .and_then(|p| serde_json::from_str::<Page<'_>>(p.get()).ok())
            .unwrap_or_default(),
        None => Page::default(),
    };

    Ok(Event {
        message_id: message_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        tenant_id: req.tenant_id,
        site_id: req.site_id,
        r#type: kind as i32,
        name,
        anonymous_id: anonymous_id.unwrap_or_default(),
        user_id: user_id.unwrap_or_default(),
        visitor_id,
        timestamp_us: timestamp.timestamp_micros(),
        original_timestamp_us: original.timestamp_micros(),
        sent_at_us: sent_at.map(|t| t.timestamp_micros()).unwrap_or_default(),
        received_at_us: received.timestamp_micros(),
        ip_truncated: ip.map(|ip| truncate_ip(ip).to_string()).unwrap_or_default(),
        user_agent,
        page_url: page.url.map(Cow::into_owned).unwrap_or_default(),
        page_referrer: page.referrer.map(Cow::into_owned).unwrap_or_default(),
        page_title: page.title.map(Cow::into_owned).unwrap_or_default(),
        locale: context.locale.map(Cow::into_owned).unwrap_or_default(),
        group_id: group_id.unwrap_or_default(),
        previous_id: previous_id.unwrap_or_default(),
        context_json,
        properties_json,
        traits_json,
    })
}

/// The raw JSON of a refused event as kept for inspection: `context.ip` removed when the
/// event parses as an object; otherwise the bytes as received.
pub fn scrub_raw(raw: &str) -> Bytes {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(raw) else {
        return Bytes::copy_from_slice(raw.as_bytes());
    };
    let removed = value
        .get_mut("context")
        .and_then(|c| c.as_object_mut())
        .and_then(|c| c.remove("ip"))
        .is_some();
    if removed {
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::copy_from_slice(raw.as_bytes()))
    } else {
        Bytes::copy_from_slice(raw.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn rules() -> Rules {
        Rules {
            max_event_bytes: 32 * 1024,
            clock_skew_threshold: chrono::Duration::seconds(10),
            visitor_hasher: VisitorHasher::new("test"),
        }
    }

    fn req(received: DateTime<Utc>) -> RequestInfo<'static> {
        RequestInfo {
            tenant_id: 1,
            site_id: 2,
            received_at: received,
            path_type: None,
            batch_sent_at: None,
            batch_context: None,
            client_ip: Some("198.51.100.23".parse().unwrap()),
            header_user_agent: Some("HeaderUA"),
        }
    }

    fn check(json: &str, req: &RequestInfo<'_>) -> Result<Event, Rejection> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        validate(&raw, req, &rules())
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap()
    }

    #[test]
    fn skew_beyond_the_threshold_is_corrected_and_the_original_kept() {
        // The client clock is one hour behind: it sent at 09:00:05 its time, we got it at 10:00:05.
        let e = check(
            r#"{"type":"track","event":"x","anonymousId":"a",
                "timestamp":"2026-11-21T09:00:00Z","sentAt":"2026-11-21T09:00:05Z"}"#,
            &req(at(10, 0, 5)),
        )
        .unwrap();
        assert_eq!(e.timestamp_us, at(10, 0, 0).timestamp_micros());
        assert_eq!(e.original_timestamp_us, at(9, 0, 0).timestamp_micros());
    }

    #[test]
    fn small_skew_is_left_alone() {
        let e = check(
            r#"{"type":"track","event":"x","anonymousId":"a",
                "timestamp":"2026-11-21T10:00:00Z","sentAt":"2026-11-21T10:00:03Z"}"#,
            &req(at(10, 0, 5)),
        )
        .unwrap();
        assert_eq!(e.timestamp_us, at(10, 0, 0).timestamp_micros());
    }

    #[test]
    fn required_fields_per_type() {
        let r = req(at(10, 0, 0));
        let cases = [
            (r#"{"type":"track"}"#, "missing_event_name"),
            (r#"{"type":"identify"}"#, "missing_identity"),
            (r#"{"type":"group","userId":"u"}"#, "missing_group_id"),
            (r#"{"type":"alias","userId":"u"}"#, "missing_alias_ids"),
            (r#"{"type":"purchase"}"#, "unknown_type"),
            (r#"{"event":"x"}"#, "missing_type"),
            (
                r#"{"type":"track","event":"x","timestamp":"yesterday"}"#,
                "invalid_timestamp",
            ),
            (
                r#"{"type":"track","event":"x","properties":[1]}"#,
                "invalid_field",
            ),
            (r#"{"type":"track","event":7}"#, "invalid_field"),
            (r#"[1,2]"#, "not_an_object"),
        ];
        for (json, reason) in cases {
            assert_eq!(check(json, &r).unwrap_err().reason, reason, "{json}");
        }
        for ok in [
            r#"{"type":"page"}"#,
            r#"{"type":"screen","name":"Home","userId":1}"#,
            r#"{"type":"identify","userId":"u","traits":{"plan":"pro"}}"#,
            r#"{"type":"group","userId":"u","groupId":"g"}"#,
            r#"{"type":"alias","userId":"u","previousId":"p"}"#,
        ] {
            assert!(check(ok, &r).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_raw_ip_is_never_kept() {
        let e = check(
            r#"{"type":"page","context":{"ip":"203.0.113.77","userAgent":"UA","page":{"url":"https://x/y"}}}"#,
            &req(at(10, 0, 0)),
        )
        .unwrap();
        assert_eq!(e.ip_truncated, "203.0.113.0");
        let context = String::from_utf8(e.context_json.to_vec()).unwrap();
        assert!(
            !context.contains("203.0.113.77") && context.contains("\"userAgent\""),
            "{context}"
        );
        assert!(e.visitor_id.starts_with("c:"));
        assert_eq!(e.page_url, "https://x/y");
        assert_eq!(e.user_agent, "UA");
        let scrubbed = scrub_raw(r#"{"type":"nope","context":{"ip":"203.0.113.77"}}"#);
        assert!(!String::from_utf8_lossy(&scrubbed).contains("203.0.113.77"));
    }

    #[test]
    fn identify_traits_come_from_context_when_the_call_has_none() {
        let r = req(at(10, 0, 0));
        let traits = |json: &str| String::from_utf8(check(json, &r).unwrap().traits_json.to_vec());
        // rudder-sdk-python's identify call.
        let rudder = r#"{"type":"identify","userId":"u","context":{"traits":{"plan":"pro"}}}"#;
        assert_eq!(traits(rudder).unwrap(), r#"{"plan":"pro"}"#);
        let both = r#"{"type":"identify","userId":"u","traits":{"plan":"max"},"context":{"traits":{"plan":"pro"}}}"#;
        assert_eq!(traits(both).unwrap(), r#"{"plan":"max"}"#);
        // In other calls `context.traits` describe the user, not the call.
        let group =
            r#"{"type":"group","userId":"u","groupId":"g","context":{"traits":{"plan":"pro"}}}"#;
        assert_eq!(traits(group).unwrap(), "");
    }

    #[test]
    fn message_ids_are_assigned_and_oversized_events_refused() {
        let e = check(
            r#"{"type":"track","event":"x","userId":"u"}"#,
            &req(at(10, 0, 0)),
        )
        .unwrap();
        assert!(!e.message_id.is_empty());
        assert_eq!(e.visitor_id, "u");
        let big = format!(
            r#"{{"type":"track","event":"x","messageId":"m9","properties":{{"p":"{}"}}}}"#,
            "x".repeat(33 * 1024)
        );
        let r = check(&big, &req(at(10, 0, 0))).unwrap_err();
        assert_eq!(r.reason, "event_too_large");
        let r = check(r#"{"type":"track","messageId":"m1"}"#, &req(at(10, 0, 0))).unwrap_err();
        assert_eq!(r.message_id.as_deref(), Some("m1"));
    }
}
