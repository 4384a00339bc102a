//! The admin HTTP server every service runs beside its main port: `/livez`, `/readyz` and
//! `/metrics`. Consumer-only services have it too, so Kubernetes can probe and scrape them.

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::{health::HealthRegistry, telemetry::Metrics};

#[derive(Clone)]
struct State {
    health: HealthRegistry,
    metrics: Metrics,
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: HealthRegistry,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = State { health, metrics };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/livez", web::get().to(livez))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_endpoint))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.stop(true).await;
    });
    server.await
}

async fn livez(state: web::Data<State>) -> HttpResponse {
    probe(state.health.liveness())
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    probe(state.health.readiness())
}

fn probe(status: crate::health::HealthStatus) -> HttpResponse {
    let mut body = if status.ok { "ok\n" } else { "not ok\n" }.to_string();
    for line in status.details {
        body.push_str(&line);
        body.push('\n');
    }
    let mut response = if status.ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

async fn metrics_endpoint(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}
