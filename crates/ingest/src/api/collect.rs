//! One request from body to answer: authenticate, validate, dedupe, publish, answer.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use actix_web::{HttpRequest, HttpResponse, http::header};
use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use futures_util::future::join_all;
use prost::Message as _;
use serde_json::value::RawValue;
use sightline_broker::{Message, Route, partition_for};
use sightline_kit::telemetry::trace_context;
use sightline_proto::events::v1::{Event, EventType, InvalidEvent, InvalidEventBatch};

use super::{
    AppState,
    response::{Answer, EventResult, Status},
};
use crate::{
    dedupe::id_key,
    error::ApiError,
    keys::{KeyEntry, RateDecision},
    segment::{BatchEnvelope, KeyOnly},
    validate::{Rejection, RequestInfo, scrub_raw, validate_in},
};

/// The protobuf type name of invalid-event messages.
pub const INVALID_BATCH_KIND: &str = "sightline.events.v1.InvalidEventBatch";

/// How the body holds its events.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One event of the endpoint's type (`/v1/track` …).
    Single(EventType),
    /// One event whose `type` is in the body (the pixel).
    SingleTyped,
    /// A `/v1/batch` envelope.
    Batch,
}

/// Seconds a client should wait after a 503.
const UNAVAILABLE_RETRY_SECS: u64 = 5;

/// The write key of the request: HTTP Basic user first, then the body's `writeKey`.
fn basic_auth_key(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_string())
}

fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    req.peer_addr().map(|a| a.ip())
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!("the body is not valid JSON for this endpoint: {e}"))
}

/// Processes a request whose body has been read (and decompressed).
pub async fn process(
    state: &AppState,
    req: &HttpRequest,
    body: &Bytes,
    shape: Shape,
) -> Result<(HttpResponse, Answer), ApiError> {
    let received_at = Utc::now();
    let started = Instant::now();
    let deadline = started + state.publish_timeout;
    let header_key = basic_auth_key(req);

    // Parse the envelope; the events stay raw JSON slices of the body.
    let parsed = match shape {
        Shape::Batch => serde_json::from_slice::<BatchEnvelope<'_>>(body).map(|b| {
            (
                b.batch,
                b.write_key.map(|k| k.into_owned()),
                b.sent_at,
                b.context,
            )
        }),
        Shape::Single(_) | Shape::SingleTyped => serde_json::from_slice::<&RawValue>(body)
            .and_then(|raw| {
                let key = match &header_key {
                    Some(_) => None,
                    None => serde_json::from_str::<KeyOnly<'_>>(raw.get())?
                        .write_key
                        .map(|k| k.into_owned()),
                };
                Ok((vec![raw], key, None, None))
            }),
    };
    let (raws, body_key, batch_sent_at, batch_context) = match parsed {
        Ok(p) => p,
        Err(e) => {
            // Keep a malformed body when the header says whose it is.
            if let Some(entry) = header_key.as_deref().and_then(|k| state.keys.get(k)) {
                let rejection = Rejection {
                    reason: "malformed_json",
                    detail: e.to_string(),
                    message_id: None,
                };
                let raw = String::from_utf8_lossy(body);
                publish_invalid(
                    state,
                    &entry,
                    &[(raw.as_ref(), rejection)],
                    received_at,
                    deadline,
                )
                .await?;
            }
            return Err(malformed(&e));
        }
    };

    let key = header_key.or(body_key).ok_or_else(|| {
        ApiError::Unauthorized("missing write key (HTTP Basic user or `writeKey`)".into())
    })?;
    let entry = state
        .keys
        .get(&key)
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked write key".into()))?;
    if let RateDecision::Limited { retry_after_secs } = entry.check_rate(raws.len().max(1)) {
        return Err(ApiError::RateLimited { retry_after_secs });
    }

    let info = RequestInfo {
        tenant_id: entry.tenant_id,
        site_id: entry.site_id,
        received_at,
        path_type: match shape {
            Shape::Single(t) => Some(t),
            _ => None,
        },
        batch_sent_at: batch_sent_at.as_deref(),
        batch_context,
        client_ip: client_ip(req, state.trust_forwarded_for),
        header_user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };

    // Validate and dedupe, remembering each event's place in the request.
    let mut results = Vec::with_capacity(raws.len());
    let mut by_partition: HashMap<u32, Vec<Event>> = HashMap::new();
    let mut accepted_keys = Vec::new();
    let mut rejected = Vec::new();
    for (index, raw) in raws.iter().enumerate() {
        match validate_in(raw, body, &info, &state.rules) {
            Ok(event) => {
                let dedupe_key = id_key(entry.site_id, &event.message_id);
                let duplicate =
                    state.recent.contains(dedupe_key) || accepted_keys.contains(&dedupe_key);
                results.push(EventResult {
                    index,
                    message_id: Some(event.message_id.clone()),
                    status: if duplicate {
                        Status::Duplicate
                    } else {
                        Status::Accepted
                    },
                    reason: None,
                    detail: None,
                });
                if !duplicate {
                    accepted_keys.push(dedupe_key);
                    let partition =
                        partition_for(entry.tenant_id, &event.visitor_id, state.partitions);
                    by_partition.entry(partition).or_default().push(event);
                }
            }
            Err(rejection) => {
                results.push(EventResult {
                    index,
                    message_id: rejection.message_id.clone(),
                    status: Status::Rejected,
                    reason: Some(rejection.reason),
                    detail: Some(rejection.detail.clone()),
                });
                rejected.push((raw.get(), rejection));
            }
        }
    }

    // Publish: each partition's events through its coalescer, refused events to the invalid
    // route; answer only when all of it is confirmed.
    let span = tracing::Span::current();
    let incoming = req
        .headers()
        .get(trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let traceparent = trace_context::outgoing(&span, incoming);
    let submissions = by_partition.into_iter().map(|(partition, events)| {
        state
            .batcher
            .submit(partition, events, traceparent.clone(), deadline)
    });
    let (published, invalid) = tokio::join!(
        join_all(submissions),
        publish_invalid(state, &entry, &rejected, received_at, deadline)
    );
    invalid?;
    if published.iter().any(Result::is_err) {
        return Err(ApiError::Unavailable {
            retry_after_secs: UNAVAILABLE_RETRY_SECS,
        });
    }
    for key in accepted_keys {
        state.recent.insert(key);
    }

    let answer = Answer::new(results);
    let mut response = if answer.success {
        HttpResponse::Ok()
    } else {
        HttpResponse::BadRequest()
    };
    Ok((response.json(&answer), answer))
}

async fn publish_invalid(
    state: &AppState,
    entry: &KeyEntry,
    rejected: &[(&str, Rejection)],
    received_at: chrono::DateTime<Utc>,
    deadline: Instant,
) -> Result<(), ApiError> {
    if rejected.is_empty() {
        return Ok(());
    }
    let received_at_us = received_at.timestamp_micros();
    let batch_id = uuid::Uuid::now_v7().to_string();
    let batch = InvalidEventBatch {
        batch_id: batch_id.clone(),
        created_at_us: received_at_us,
        events: rejected
            .iter()
            .map(|(raw, r)| InvalidEvent {
                tenant_id: entry.tenant_id,
                site_id: entry.site_id,
                reason: r.reason.to_string(),
                detail: r.detail.clone(),
                raw: scrub_raw(raw),
                received_at_us,
                message_id: r.message_id.clone().unwrap_or_default(),
            })
            .collect(),
    };
    let message = Message {
        route: Route::Invalid,
        id: batch_id,
        kind: INVALID_BATCH_KIND,
        payload: batch.encode_to_vec().into(),
        traceparent: None,
    };
    state
        .publisher
        .publish(&message, deadline)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "invalid events not confirmed");
            ApiError::Unavailable {
                retry_after_secs: UNAVAILABLE_RETRY_SECS,
            }
        })
}
