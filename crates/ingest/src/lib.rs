//! Sightline's HTTP collector.
//!
//! Client sites and SDKs send Segment Tracking API calls; ingest authenticates the write key,
//! validates each event, assigns ids and the visitor, routes it to its partition and answers
//! only once RabbitMQ confirmed the message holding it. Refused events go to the invalid route
//! with their reason. See `run` for the lifecycle.

pub mod api;
pub mod batcher;
pub mod body;
pub mod config;
pub mod dedupe;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod privacy;
pub mod segment;
pub mod validate;

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_cors::Cors;
use actix_web::{App, HttpResponse, HttpServer, web};
use sightline_broker::{Publisher, rabbitmq::RabbitPublisher};
use sightline_db::PgStore;
use sightline_kit::{HealthRegistry, Shutdown, admin, telemetry::Metrics};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::IngestError;

use crate::{
    api::AppState, batcher::Batcher, dedupe::RecentIds, keys::KeyCache, metrics::IngestMetrics,
    privacy::VisitorHasher, validate::Rules,
};

/// The sockets ingest serves on, bound by the caller (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// The collector API.
    pub http: TcpListener,
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &config::IngestConfig) -> std::io::Result<Self> {
        Ok(Self {
            http: TcpListener::bind(&config.listen)?,
            admin: TcpListener::bind(&config.admin_listen)?,
        })
    }
}

/// Runs ingest until `shutdown` is triggered, then drains: readiness turns 503, the HTTP server
/// stops accepting and lets in-flight requests finish (they wait for their confirms) within
/// `ingest.shutdown_grace_ms`, and the broker connection closes last.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    let health = HealthRegistry::new();
    let registry = Metrics::new();
    let metrics = IngestMetrics::register(&registry);
    let background = CancellationToken::new();
    let settings = &config.ingest;

    let store = PgStore::connect_lazy(&config.database)?;
    let keys = Arc::new(KeyCache::new(settings.default_rate_limit_per_sec));
    tokio::spawn(keys.clone().refresh_loop(
        Arc::new(store),
        Duration::from_millis(settings.key_refresh_ms),
        health.register("write_keys"),
        background.clone(),
    ));

    let rabbit = RabbitPublisher::start(
        &config.broker,
        "sightline-ingest",
        health.register("broker"),
    );
    let publisher: Arc<dyn Publisher> = Arc::new(rabbit);
    let (batcher, _coalescers) = Batcher::start(
        publisher.clone(),
        config.broker.partitions,
        &settings.batching,
        metrics.clone(),
    );

    let state = web::Data::new(AppState {
        rules: Rules {
            max_event_bytes: settings.max_event_bytes,
            clock_skew_threshold: chrono::Duration::milliseconds(
                i64::try_from(settings.clock_skew_threshold_ms).unwrap_or(i64::MAX),
            ),
            visitor_hasher: VisitorHasher::new(settings.visitor_salt_secret.expose()),
        },
        max_request_bytes: settings.max_request_bytes,
        publish_timeout: Duration::from_millis(settings.publish_timeout_ms),
        trust_forwarded_for: settings.trust_forwarded_for,
        keys,
        recent: RecentIds::new(
            Duration::from_secs(settings.dedupe_window_secs),
            settings.dedupe_capacity,
        ),
        batcher,
        publisher: publisher.clone(),
        partitions: config.broker.partitions,
        metrics,
    });

    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        registry,
        admin_stop.clone(),
    ));

    let workers = match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // Write keys are public and no cookies are used: any origin, no credentials.
            .wrap(
                Cors::default()
                    .allow_any_origin()
                    .allow_any_method()
                    .allow_any_header()
                    .max_age(86_400),
            )
            .configure(api::routes)
            .default_service(web::to(|| async {
                HttpResponse::NotFound()
                    .json(serde_json::json!({"success": false, "error": "no such endpoint"}))
            }))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(grace.as_secs().max(1))
    .listen(listeners.http)?
    .run();
    let handle = server.handle();
    let mut server = tokio::spawn(server);
    tracing::info!(workers, "ingest is serving");

    let result = tokio::select! {
        _ = shutdown.requested() => Ok(()),
        exited = &mut server => {
            // The server stopped on its own: stop every service of this process with it.
            let error = match exited {
                Ok(Ok(())) => std::io::Error::other("the HTTP server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => std::io::Error::other(e),
            };
            shutdown.fail("ingest", &error);
            Err(IngestError::Io(error))
        }
    };
    tracing::info!("ingest is draining");
    health.start_draining();
    handle.stop(true).await;
    publisher.close().await;
    background.cancel();
    admin_stop.cancel();
    let _ = admin_server.await;
    tracing::info!("ingest stopped");
    result
}
