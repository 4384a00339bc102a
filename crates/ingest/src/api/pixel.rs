//! `GET /v1/p.gif`: tracking for pages without JavaScript and for e-mails.
//!
//! Either Segment's pixel form, `?data=<base64 JSON event with writeKey>`, or plain
//! parameters: `writeKey` (required), `type` (default `page`), `event`, `name`, `url` (default:
//! the `Referer` header), `referrer`, `title`, `anonymousId`, `userId`. The answer is always a
//! 1x1 transparent GIF, with the status code telling what happened.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::{AppState, Shape, collect, finish};
use crate::error::ApiError;

/// The smallest transparent GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn decode_data(data: &str) -> Result<Value, ApiError> {
    let trimmed = data.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| ApiError::BadRequest(format!("`data` is not base64: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("`data` is not a JSON event: {e}")))
}

fn from_params(params: &HashMap<String, String>, req: &HttpRequest) -> Value {
    let get = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let url = get("url").or_else(|| {
        req.headers()
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let mut event = Map::new();
    for (field, value) in [
        ("type", get("type")),
        ("event", get("event")),
        ("name", get("name")),
        ("anonymousId", get("anonymousId")),
        ("userId", get("userId")),
        ("messageId", get("messageId")),
        ("writeKey", get("writeKey")),
    ] {
        if let Some(v) = value {
            event.insert(field.into(), Value::String(v));
        }
    }
    event.insert(
        "context".into(),
        json!({ "page": { "url": url, "referrer": get("referrer"), "title": get("title") } }),
    );
    Value::Object(event)
}

pub(super) async fn handler(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let result = async {
        let mut event = match query.get("data") {
            Some(data) => decode_data(data)?,
            None => from_params(&query, &req),
        };
        let Some(object) = event.as_object_mut() else {
            return Err(ApiError::BadRequest(
                "the pixel event must be a JSON object".into(),
            ));
        };
        object
            .entry("type")
            .or_insert_with(|| Value::String("page".into()));
        let body = serde_json::to_vec(&event)
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::BadRequest(format!("cannot encode the event: {e}")))?;
        collect::process(&state, &req, &body, Shape::SingleTyped).await
    }
    .await;
    let status = finish(&state, result).status();
    HttpResponse::build(status)
        .content_type("image/gif")
        .insert_header((header::CACHE_CONTROL, "no-store, max-age=0"))
        .body(GIF)
}
