//! Campaign parameters from Segment's `context.campaign`, the fallback when the page URL has
//! no `utm_*` (mobile SDKs and server-side sources send them there, not in a URL).

use serde::Deserialize;
use serde_json::Value;

use crate::url::Utm;

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    campaign: Option<Value>,
}

/// The campaign of a Segment `context` JSON object. Anything unreadable (not JSON, not an
/// object, non-string values) is ignored field by field: it never fails an event.
pub(crate) fn from_context(context_json: &[u8]) -> Utm {
    // Most events carry no campaign: skip the JSON parse for them.
    if memchr::memmem::find(context_json, b"\"campaign\"").is_none() {
        return Utm::default();
    }
    let Ok(Context {
        campaign: Some(Value::Object(campaign)),
    }) = serde_json::from_slice::<Context>(context_json)
    else {
        return Utm::default();
    };
    let field = |name: &str| {
        campaign
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Utm {
        source: field("source"),
        medium: field("medium"),
        campaign: field("name"),
        term: field("term"),
        content: field("content"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_segment_campaign_with_name_as_campaign() {
        let context = br#"{"page":{"path":"/"},"campaign":{"name":"spring_sale","source":"Newsletter","medium":"email","term":"","content":7}}"#;
        let utm = from_context(context);
        assert_eq!(utm.campaign.as_deref(), Some("spring_sale"));
        assert_eq!(utm.source.as_deref(), Some("Newsletter"));
        assert_eq!(utm.medium.as_deref(), Some("email"));
        assert_eq!(utm.term, None, "blank values are absent");
        assert_eq!(utm.content, None, "non-string values are ignored");
    }

    #[test]
    fn anything_else_gives_no_campaign() {
        for context in [
            &b""[..],
            b"not json",
            br#"{"campaign":"spring"}"#,
            br#"{"campaign":null}"#,
            br#"{"library":{"name":"analytics.js"}}"#,
            br#"{"campaign":{"source":"x""#,
        ] {
            assert!(from_context(context).is_empty(), "{context:?}");
        }
    }
}
