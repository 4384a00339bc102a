//! Sightline's speed layer.
//!
//! Two consumer groups read their own copy of every partition queue, each scalable on its own:
//!
//! - [`rollup`]: enriches and sessionises events, aggregates them per tenant, site, minute and
//!   hour in memory, and applies each flush to PostgreSQL in one transaction that also records
//!   the batch ids it covers (a redelivered batch changes nothing) and the partition's visitor
//!   state; messages are acknowledged after the commit.
//! - [`archive`]: buffers raw events per tenant, date and hour and writes zstd Parquet to the
//!   lake at keys derived from the batches they hold; invalid events go to `errors/`; messages
//!   are acknowledged after the object is stored.
//!
//! [`consumer::PartitionConsumer`] is the broker side both share: acknowledge after a durable
//! flush, hold and retry while the database or the lake is down, dead-letter what cannot be
//! decoded. See [`run`] for the lifecycle.

pub mod archive;
pub mod config;
pub mod consumer;
pub mod metrics;
pub mod report;
pub mod rollup;
pub mod sink;

use std::{net::TcpListener, sync::Arc, time::Duration};

use sightline_db::PgStore;
use sightline_event::Enricher;
use sightline_kit::{HealthRegistry, Shutdown, admin, telemetry::Metrics};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

use crate::{
    config::{ARCHIVE, ROLLUP},
    consumer::ConsumerSettings,
    metrics::StreamMetrics,
};

/// Why the stream processor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The database pool could not be built.
    #[error("database: {0}")]
    Database(#[from] sightline_db::DbError),
    /// The lake could not be opened.
    #[error("lake: {0}")]
    Lake(#[from] sightline_lake::LakeError),
    /// The enrichment rules could not be loaded.
    #[error("enrichment: {0}")]
    Event(#[from] sightline_event::EventError),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
}

/// The sockets the stream processor serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured address.
    pub fn bind(config: &config::StreamConfig) -> std::io::Result<Self> {
        Ok(Self {
            admin: TcpListener::bind(&config.admin_listen)?,
        })
    }
}

/// What every consumer of this process shares.
pub(crate) struct Context {
    pub config: Config,
    pub store: PgStore,
    pub enricher: Arc<Enricher>,
    pub metrics: StreamMetrics,
    pub health: HealthRegistry,
}

impl Context {
    /// Consumer settings for `queue` of `group`, flushing every `flush_interval_ms`. The queue
    /// is `slot.0` of the group's `slot.1` queues: slots flush at times spread evenly over the
    /// interval.
    pub fn consumer_settings(
        &self,
        group: &'static str,
        queue: String,
        flush_interval_ms: u64,
        slot: (u32, u32),
    ) -> ConsumerSettings {
        let stream = &self.config.stream;
        let flush_interval = Duration::from_millis(flush_interval_ms);
        ConsumerSettings {
            group,
            queue,
            broker: self.config.broker.clone(),
            prefetch: stream.prefetch,
            flush_interval,
            flush_phase: flush_interval * slot.0 / slot.1.max(1),
            backoff: stream.backoff(),
            shutdown_grace: Duration::from_millis(stream.shutdown_grace_ms),
        }
    }
}

/// Runs the configured consumer groups until `shutdown`, then lets every consumer flush what it
/// buffered (within `stream.shutdown_grace_ms`) and acknowledge it; anything not flushed by then
/// stays unacknowledged and is redelivered to the next consumer.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), StreamError> {
    let health = HealthRegistry::new();
    let registry = Metrics::new();
    let metrics = StreamMetrics::register(&registry);
    let store = PgStore::connect_lazy(&config.database)?;
    let enricher = Arc::new(Enricher::new()?);
    let ctx = Context {
        config,
        store,
        enricher,
        metrics,
        health: health.clone(),
    };

    let consumers_stop = CancellationToken::new();
    let mut consumers = JoinSet::new();
    if ctx.config.stream.runs(ROLLUP) {
        rollup::start(&ctx, &mut consumers, consumers_stop.clone());
    }
    if ctx.config.stream.runs(ARCHIVE) {
        // Only the archive writes to the lake: a rollup-only process does not need it.
        let lake = ctx.config.lake.open()?;
        archive::start(&ctx, lake, &mut consumers, consumers_stop.clone());
    }
    report::start(&ctx, &mut consumers, consumers_stop.clone());
    info!(groups = ?ctx.config.stream.groups, consumers = consumers.len(), "stream processor started");

    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        registry,
        admin_stop.clone(),
    ));

    shutdown.requested().await;
    info!("draining");
    health.start_draining();
    consumers_stop.cancel();
    while consumers.join_next().await.is_some() {}
    admin_stop.cancel();
    match admin_server.await {
        Ok(result) => result?,
        Err(join) => return Err(std::io::Error::other(join).into()),
    }
    info!("stopped");
    Ok(())
}
