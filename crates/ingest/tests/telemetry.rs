//! Spans reach an OpenTelemetry collector over OTLP, and the trace a client started continues
//! through ingest into the broker message. The collector is a real OTLP/gRPC receiver built
//! from OpenTelemetry's own protocol definitions.
//!
//! Its own test binary: it installs the process-wide tracing subscriber.

mod support;

use std::{net::SocketAddr, sync::Arc};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use parking_lot::Mutex;
use sightline_kit::{Telemetry, TelemetryConfig, telemetry::LogFormat};
use support::{TestIngest, track};

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_and_the_trace_continues_into_the_broker() {
    let (addr, collector) = start_collector().await;
    let telemetry = Telemetry::init(
        "sightline-ingest",
        &TelemetryConfig {
            log_level: "warn,ingest=info".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: format!("http://{addr}"),
            trace_sample_ratio: 1.0,
        },
    )
    .expect("telemetry starts");

    let ingest = TestIngest::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = ingest
        .http
        .post(ingest.url("/v1/track"))
        .basic_auth(&ingest.key, Some(""))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&track("u1", "Traced", "m-otlp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The traceparent on the broker message.
    let messages = ingest.drain_group_messages("archive").await;
    let header = messages
        .iter()
        .find_map(|(_, m)| m.traceparent.clone())
        .expect("the message carries a traceparent");

    telemetry.shutdown(); // flushes the batch exporter
    let received = collector.received.lock().clone();
    let spans: Vec<_> = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            rs.scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(move |span| (service.clone(), span))
        })
        .collect();
    let (service, span) = spans
        .iter()
        .find(|(_, s)| s.name == "ingest.collect")
        .unwrap_or_else(|| panic!("an ingest.collect span was exported; got {spans:?}"));
    assert!(
        service
            .as_deref()
            .unwrap_or_default()
            .contains("sightline-ingest")
    );
    assert_eq!(
        hex::encode(&span.trace_id),
        trace_id,
        "the client's trace continues"
    );
    assert_eq!(hex::encode(&span.parent_span_id), client_span);
    let ingest_span = hex::encode(&span.span_id);
    assert_eq!(
        header,
        format!("00-{trace_id}-{ingest_span}-01"),
        "the broker message is a child of ingest's span"
    );
    ingest.finish().await;
}
