//! The HTTP API: Segment's Tracking API, its short browser paths, and the pixel.

mod collect;
mod pixel;
pub mod response;

use std::{sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use sightline_broker::Publisher;
use sightline_kit::telemetry::trace_context;
use sightline_proto::events::v1::EventType;
use tracing::Instrument;

pub use collect::{INVALID_BATCH_KIND, Shape};

use crate::{
    batcher::Batcher,
    body,
    dedupe::RecentIds,
    keys::KeyCache,
    metrics::{IngestMetrics, OutcomeLabels, RequestLabels},
    validate::Rules,
};

/// What every request handler shares.
pub struct AppState {
    /// Validation settings.
    pub rules: Rules,
    /// Largest body.
    pub max_request_bytes: usize,
    /// How long a request waits for confirms.
    pub publish_timeout: Duration,
    /// Trust `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Live write keys.
    pub keys: Arc<KeyCache>,
    /// Recently accepted messageIds.
    pub recent: RecentIds,
    /// Partition coalescers.
    pub batcher: Batcher,
    /// For the invalid route.
    pub publisher: Arc<dyn Publisher>,
    /// Partition count.
    pub partitions: u32,
    /// Counters.
    pub metrics: IngestMetrics,
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use EventType::*;
    // Segment's documented paths, and the one-letter ones analytics.js posts to.
    for (paths, kind) in [
        (["/v1/track", "/v1/t"], Track),
        (["/v1/page", "/v1/p"], Page),
        (["/v1/screen", "/v1/s"], Screen),
        (["/v1/identify", "/v1/i"], Identify),
        (["/v1/group", "/v1/g"], Group),
        (["/v1/alias", "/v1/a"], Alias),
    ] {
        for path in paths {
            cfg.route(
                path,
                web::post().to(move |state, req, payload| {
                    collect_handler(state, req, payload, Shape::Single(kind))
                }),
            );
        }
    }
    for path in ["/v1/batch", "/v1/b", "/v1/import"] {
        cfg.route(
            path,
            web::post()
                .to(|state, req, payload| collect_handler(state, req, payload, Shape::Batch)),
        );
    }
    cfg.route("/v1/p.gif", web::get().to(pixel::handler));
}

async fn collect_handler(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    shape: Shape,
) -> HttpResponse {
    let span = tracing::info_span!("ingest.collect", path = %req.path());
    if let Some(tp) = req
        .headers()
        .get(trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        trace_context::continue_trace(&span, tp);
    }
    let started = std::time::Instant::now();
    let response = async {
        let body = body::read(&req, payload, state.max_request_bytes).await?;
        collect::process(&state, &req, &body, shape).await
    }
    .instrument(span)
    .await;
    state
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    finish(&state, response)
}

/// Records the outcome and turns errors into their answers.
fn finish(
    state: &AppState,
    result: Result<(HttpResponse, response::Answer), crate::error::ApiError>,
) -> HttpResponse {
    let response = match result {
        Ok((response, answer)) => {
            for (outcome, n) in [
                ("accepted", answer.accepted),
                ("duplicate", answer.duplicates),
                ("rejected", answer.rejected),
            ] {
                state
                    .metrics
                    .events
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc_by(n as u64);
            }
            response
        }
        Err(error) => error.error_response(),
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}
