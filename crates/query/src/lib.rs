//! Sightline's serving side: the gRPC `sightline.query.v1.Query` service.
//!
//! - Metrics from the rollups ([`answers`]): time series, breakdowns, aggregates with the
//!   previous period, realtime and freshness. Each answer reads closures, rows and watermarks
//!   from one snapshot ([`store`]), taking a local day from the batch layer when a closure covers
//!   it and from the speed layer otherwise ([`calendar`]), so a day the batch enricher closes
//!   switches from provisional to final atomically.
//! - SQL over the caller's tenant's lake tables with DataFusion ([`sql`]).
//! - Bearer read tokens, cached briefly and rate-limited per token ([`auth`]); one error type
//!   mapped once to gRPC codes ([`QueryError`]).
//!
//! `grpc.health.v1` and server reflection are served beside it, so grpcurl-style tools work.
//! See [`run`] for the lifecycle and docs/query.md for the API.

pub mod answers;
pub mod auth;
pub mod cache;
pub mod calendar;
pub mod cli;
pub mod closed;
pub mod config;
mod error;
pub mod measure;
pub mod metrics;
pub mod request;
pub mod service;
pub mod sites;
pub mod sql;
pub mod store;

use std::{net::TcpListener, time::Duration};

use sightline_db::PgStore;
use sightline_kit::{HealthRegistry, Shutdown, admin, telemetry::Metrics};
use sightline_proto::query::v1::query_server::QueryServer;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use error::QueryError;

use crate::{
    answers::Reader,
    auth::Authenticator,
    cache::{AnswerCache, CacheSettings},
    calendar::Limits,
    closed::ClosedSums,
    metrics::QueryMetrics,
    service::QueryService,
    sites::SiteDirectory,
    sql::SqlEngine,
};

/// How often idle tokens' rate state is forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The sockets the query service serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &config::QueryConfig) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(&config.listen)?,
            admin: TcpListener::bind(&config.admin_listen)?,
        })
    }
}

/// Serves until `shutdown`: then readiness and gRPC health turn to not serving, new
/// connections are refused, and in-flight calls get `query.shutdown_grace_ms` to finish.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), QueryError> {
    let health = HealthRegistry::new();
    let registry = Metrics::new();
    let metrics = QueryMetrics::register(&registry);
    // Every answer is one or two short statements: no extra round trip to test the connection.
    let store = PgStore::connect_lazy_untested(&config.database)?;
    let q = &config.query;
    let lake = sightline_lake::arrow_store::arrow_store(&config.lake)
        .map_err(|e| QueryError::Lake(e.to_string()))?;
    let auth = Authenticator::new(store.clone(), q);
    let service = QueryService {
        auth: auth.clone(),
        sites: SiteDirectory::new(store.pool().clone(), q.cache_capacity, q.token_cache_ttl()),
        reader: Reader::new(
            store.pool().clone(),
            Limits {
                minute_hours: q.max_minute_range_hours,
                hour_days: q.max_hour_range_days,
                days: q.max_range_days,
            },
            q.max_page_size,
            AnswerCache::new(CacheSettings {
                bytes: q.answer_cache_mib * 1024 * 1024,
                previous_max_age: q.previous_answer_max_age(),
                hits: metrics.answer_cache_hits.clone(),
                previous: metrics.answer_cache_previous.clone(),
                misses: metrics.answer_cache_misses.clone(),
            }),
            ClosedSums::new(
                q.closed_sums_cache_mib * 1024 * 1024,
                metrics.closed_sums_hits.clone(),
                metrics.closed_sums_misses.clone(),
            ),
        ),
        sql: SqlEngine::new(lake, q.sql.clone(), q.cache_capacity, metrics.clone())?,
        metrics,
    };

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<QueryServer<QueryService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sightline_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| QueryError::Internal(format!("reflection: {e}")))?;

    let database = health.register("database");
    let probe_stop = CancellationToken::new();
    tokio::spawn(probe_database(
        store.clone(),
        database,
        auth,
        probe_stop.clone(),
    ));

    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        registry,
        admin_stop.clone(),
    ));

    listeners.grpc.set_nonblocking(true)?;
    let grpc = tokio::net::TcpListener::from_std(listeners.grpc)?;
    let local = grpc.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let stop_serving = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(QueryServer::new(service))
        .serve_with_incoming_shutdown(incoming, stop_serving.clone().cancelled_owned());
    let mut server = tokio::spawn(server);
    info!(listen = %local, "query service started");

    let failed = tokio::select! {
        _ = shutdown.requested() => None,
        result = &mut server => Some(result),
    };
    info!("draining");
    health.start_draining();
    reporter
        .set_not_serving::<QueryServer<QueryService>>()
        .await;
    probe_stop.cancel();
    let result = match failed {
        Some(result) => result,
        None => {
            stop_serving.cancel();
            let grace = Duration::from_millis(config.query.shutdown_grace_ms);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(
                        grace_ms = config.query.shutdown_grace_ms,
                        "calls still running after the grace period"
                    );
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    admin_stop.cancel();
    let admin_result = admin_server.await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(QueryError::Io(std::io::Error::other(e))),
        Err(join) => return Err(QueryError::Io(std::io::Error::other(join))),
    }
    match admin_result {
        Ok(result) => result?,
        Err(join) => return Err(std::io::Error::other(join).into()),
    }
    info!("stopped");
    Ok(())
}

/// Keeps readiness in step with the database, and prunes the rate limiter now and then.
async fn probe_database(
    store: PgStore,
    health: sightline_kit::ComponentHealth,
    auth: Authenticator,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sqlx::query("SELECT 1").execute(store.pool()).await {
            Ok(_) => health.ready(),
            Err(error) => {
                warn!(%error, "database unreachable");
                health.not_ready(format!("database unreachable: {error}"));
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            auth.prune();
            last_prune = tokio::time::Instant::now();
        }
    }
}
