//! Logs, traces and metrics.
//!
//! Logs go to stdout through `tracing` (text or JSON). Traces are OpenTelemetry spans: exported
//! over OTLP when `telemetry.otlp_endpoint` is set, and in every case carried across services as
//! W3C `traceparent` headers ([`trace_context`]). Metrics live in a Prometheus registry that the
//! admin server renders on `/metrics`.

use std::{sync::Arc, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::Problems;

/// Embedded defaults of the `[telemetry]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// `[telemetry]`: how a service logs, traces and measures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, such as `info` or `info,ingest=debug`.
    pub log_level: String,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector address (`http://otel-collector:4317`); empty disables export.
    pub otlp_endpoint: String,
    /// Share of traces sampled when exporting, 0.0 to 1.0 (parent decisions are respected).
    pub trace_sample_ratio: f64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl TelemetryConfig {
    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        p.check(
            EnvFilter::try_new(&self.log_level).is_ok(),
            "telemetry.log_level",
            format!("`{}` is not a valid filter", self.log_level),
        );
        p.check(
            (0.0..=1.0).contains(&self.trace_sample_ratio),
            "telemetry.trace_sample_ratio",
            "must be between 0.0 and 1.0",
        );
        p
    }
}

/// The Prometheus registry of one process, shared by its components.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers metrics under `prefix` (for example `sightline_ingest`).
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock());
    }

    /// The registry in the Prometheus text format (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut out, &self.registry.lock())
        {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}

/// What a process keeps of its telemetry: flushed on [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    /// The process's metrics registry.
    pub metrics: Metrics,
    provider: Option<SdkTracerProvider>,
}

/// Telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber was installed already.
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(String),
}

impl Telemetry {
    /// Installs the global `tracing` subscriber (logs, and spans to OTLP when configured).
    /// Call once per process.
    pub fn init(service: &str, config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        let filter =
            EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
        let provider = build_provider(service, config)?;
        let otel_layer = provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
        let (text, json) = match config.log_format {
            LogFormat::Text => (Some(tracing_subscriber::fmt::layer()), None),
            LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json())),
        };
        tracing_subscriber::registry()
            .with(filter)
            .with(text)
            .with(json)
            .with(otel_layer)
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        Ok(Self {
            metrics: Metrics::new(),
            provider,
        })
    }

    /// Telemetry for tests and embedding: a metrics registry, nothing installed globally.
    pub fn detached() -> Self {
        Self {
            metrics: Metrics::new(),
            provider: None,
        }
    }

    /// Flushes spans not yet exported; waits at most a few seconds.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("telemetry: cannot flush spans: {error}");
        }
    }
}

fn build_provider(
    service: &str,
    config: &TelemetryConfig,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if config.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.trace_sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// W3C trace context across HTTP and broker headers.
pub mod trace_context {
    use std::collections::HashMap;

    use opentelemetry::{
        Context,
        propagation::{Extractor, TextMapPropagator},
        trace::TraceContextExt,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// The W3C header name.
    pub const TRACEPARENT: &str = "traceparent";

    struct One<'a>(&'a str);

    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }

    /// Parses a `traceparent` header; `None` when it is not a valid W3C trace context.
    pub fn parse(traceparent: &str) -> Option<Context> {
        let cx = TraceContextPropagator::new().extract(&One(traceparent));
        cx.span().span_context().is_valid().then_some(cx)
    }

    /// Makes `span` a child of the trace in `traceparent` (no-op when it is invalid).
    pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
        if let Some(cx) = parse(traceparent) {
            let _ = span.set_parent(cx);
        }
    }

    /// The `traceparent` to send onwards from `span`: the span's own context when OpenTelemetry
    /// is recording it, else the incoming one unchanged, so the trace id continues either way.
    pub fn outgoing(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            let mut carrier = HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut carrier);
            if let Some(tp) = carrier.remove(TRACEPARENT) {
                return Some(tp);
            }
        }
        incoming
            .filter(|tp| parse(tp).is_some())
            .map(str::to_string)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn valid_and_invalid_traceparents() {
            let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            assert!(parse(tp).is_some());
            assert!(parse("00-zz-00f067aa0ba902b7-01").is_none());
            let span = tracing::Span::none();
            assert_eq!(outgoing(&span, Some(tp)).as_deref(), Some(tp));
            assert_eq!(outgoing(&span, Some("garbage")), None);
        }
    }
}
