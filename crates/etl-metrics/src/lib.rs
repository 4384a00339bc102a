//! Sightline's pipeline observability: the ledger that the ETL's "measure processing" stage
//! keeps, turned into something an SRE and a data team can query, chart and be paged by.
//!
//! - [`grpc`]: the run ledger, `sightline.pipeline.v1.PipelineLedger`: job runs, their stages and
//!   stream windows, written idempotently to OLTP tables ([`ledger`]);
//! - [`loader`]: the incremental, watermark-based loader of the `olap` star schema;
//! - [`probe`] and [`metrics`]: the pipeline's health as Prometheus gauges (freshness lag per
//!   tenant, queue and dead-letter depths, age of the last good daily run, stage durations,
//!   rejected-row ratio);
//! - [`alerts`]: rules over the same measures, posted to a webhook when they fire and resolve.
//!
//! See [`run`] for the lifecycle, and this crate's README for pitfalls.

pub mod alerts;
pub mod config;
pub mod grpc;
pub mod ledger;
pub mod loader;
pub mod metrics;
pub mod probe;

use std::{net::TcpListener, time::Duration};

use sightline_db::PgStore;
use sightline_kit::{ComponentHealth, HealthRegistry, Shutdown, admin, telemetry::Metrics};
use sightline_proto::pipeline::v1::pipeline_ledger_server::PipelineLedgerServer;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::{
    alerts::{Alerter, webhook::Webhook},
    metrics::{EtlMetrics, JobLabels, PipelineLabels, QueueLabels, TenantLabels},
    probe::{Probe, Snapshot},
};

/// Why etl-metrics could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    /// The database pool could not be built.
    #[error("database: {0}")]
    Database(#[from] sightline_db::DbError),
    /// A query failed (the one-off load).
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The webhook client could not be built.
    #[error("webhook client: {0}")]
    Webhook(#[from] reqwest::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A server socket failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC reflection service could not read the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
}

/// The sockets etl-metrics serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC server.
    pub grpc: TcpListener,
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &config::EtlMetricsConfig) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(&config.grpc_listen)?,
            admin: TcpListener::bind(&config.admin_listen)?,
        })
    }
}

/// Runs the ledger's gRPC server, the loader loop and the measure-and-alert loop until
/// `shutdown`; readiness turns 503 first, then the loops stop, then the servers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), EtlError> {
    let health = HealthRegistry::new();
    let registry = Metrics::new();
    let metrics = EtlMetrics::register(&registry);
    let store = PgStore::connect_lazy(&config.database)?;
    let pool = store.pool().clone();
    let c = &config.etl_metrics;
    let url = c.webhook.url.expose();
    let webhook = if url.is_empty() {
        None
    } else {
        Some(Webhook::new(
            url.to_string(),
            Duration::from_millis(c.webhook.timeout_ms),
        )?)
    };
    let alerter = Alerter::new(pool.clone(), &c.alerts, webhook, metrics.clone());
    let probe = Probe::new(
        pool.clone(),
        config.broker.url.expose().to_string(),
        config.broker.topology(),
        c,
    );

    let loops_stop = CancellationToken::new();
    let mut loops = JoinSet::new();
    loops.spawn(evaluate_loop(
        probe,
        alerter,
        c.evaluate_interval(),
        metrics.clone(),
        health.register("database"),
        loops_stop.clone(),
    ));
    if let Some(every) = c.load_interval() {
        loops.spawn(load_loop(
            pool.clone(),
            every,
            metrics.clone(),
            loops_stop.clone(),
        ));
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<PipelineLedgerServer<grpc::LedgerService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sightline_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| EtlError::Reflection(e.to_string()))?;
    listeners.grpc.set_nonblocking(true)?;
    let incoming = tonic::transport::server::TcpIncoming::from(tokio::net::TcpListener::from_std(
        listeners.grpc,
    )?);
    let grpc_stop = CancellationToken::new();
    let grpc_server = {
        let stop = grpc_stop.clone();
        let service = grpc::LedgerService::new(pool.clone(), metrics.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(PipelineLedgerServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
        )
    };
    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        registry,
        admin_stop.clone(),
    ));
    info!(grpc = %c.grpc_listen, "etl-metrics started");

    // A server that stops on its own is a failure that stops the service.
    let mut grpc_server = grpc_server;
    let early = tokio::select! {
        _ = shutdown.requested() => None,
        ended = &mut grpc_server => Some(ended),
    };
    info!("draining");
    health.start_draining();
    health_reporter
        .set_not_serving::<PipelineLedgerServer<grpc::LedgerService>>()
        .await;
    loops_stop.cancel();
    while loops.join_next().await.is_some() {}
    grpc_stop.cancel();
    let grpc_result = match early {
        Some(ended) => ended,
        None => grpc_server.await,
    };
    admin_stop.cancel();
    let admin_result = admin_server.await;
    pool.close().await;
    match grpc_result {
        Ok(result) => result?,
        Err(join) => return Err(std::io::Error::other(join).into()),
    }
    match admin_result {
        Ok(result) => result?,
        Err(join) => return Err(std::io::Error::other(join).into()),
    }
    info!("stopped");
    Ok(())
}

/// Loads the star schema once (`sightline etl-metrics load-once`).
pub async fn load_once(config: &Config) -> Result<loader::LoadReport, EtlError> {
    let store = PgStore::connect_lazy(&config.database)?;
    let report = loader::load(store.pool()).await?;
    store.pool().close().await;
    Ok(report)
}

async fn load_loop(pool: PgPool, every: Duration, metrics: EtlMetrics, stop: CancellationToken) {
    loop {
        match loader::load_counted(&pool, &metrics).await {
            Ok(report) => info!(
                stage_runs = report.stage_runs,
                stream_windows = report.stream_windows,
                "star schema loaded"
            ),
            Err(error) => warn!(%error, "star schema load failed, retrying at the next interval"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn evaluate_loop(
    mut probe: Probe,
    alerter: Alerter,
    every: Duration,
    metrics: EtlMetrics,
    database: ComponentHealth,
    stop: CancellationToken,
) {
    loop {
        let evaluated = async {
            let snapshot = probe.snapshot().await?;
            publish(&snapshot, probe.daily_job(), &metrics);
            alerter.evaluate(&snapshot, probe.daily_job()).await
        }
        .await;
        match evaluated {
            Ok(()) => {
                database.ready();
                metrics.evaluations.inc();
            }
            Err(error) => {
                // The ledger's writes need the database too: not ready without it.
                database.not_ready(format!("database: {error}"));
                metrics.evaluation_failures.inc();
                warn!(%error, "evaluation failed, retrying at the next interval");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Sets the gauges from `s`. Families are cleared first, so series of tenants, queues and
/// pipelines that went away disappear.
fn publish(s: &Snapshot, daily: (&str, &str), m: &EtlMetrics) {
    m.freshness_lag.clear();
    if let Some(lag) = s.freshness_lag_secs() {
        for tenant in &s.tenants {
            m.freshness_lag
                .get_or_create(&TenantLabels {
                    tenant_id: tenant.to_string(),
                })
                .set(lag);
        }
    }
    if let Some(w) = s.speed_watermark() {
        m.speed_watermark.set(w.timestamp_micros() as f64 / 1e6);
    }
    m.queue_depth.clear();
    match &s.depths {
        Some(depths) => {
            m.broker_up.set(1);
            for d in &depths.partitions {
                m.queue_depth
                    .get_or_create(&QueueLabels {
                        queue: d.queue.clone(),
                        group: d.group.clone(),
                        partition: d.partition.to_string(),
                    })
                    .set(i64::from(d.messages));
            }
            m.dead_letter_depth
                .set(depths.dead_letter.map(i64::from).unwrap_or_default());
        }
        None => {
            m.broker_up.set(0);
        }
    }
    m.daily_run_age
        .get_or_create(&JobLabels {
            pipeline: daily.0.to_string(),
            job: daily.1.to_string(),
        })
        .set(s.daily_run_age_secs());
    m.rejected_ratio.clear();
    for (pipeline, ratio) in s.rejected_ratios() {
        m.rejected_ratio
            .get_or_create(&PipelineLabels { pipeline })
            .set(ratio);
    }
}
