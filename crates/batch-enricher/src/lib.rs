//! Sightline's batch layer.
//!
//! On a schedule (a Kubernetes CronJob at 03:00, or [`run`]'s own schedule in `serve` mode) the
//! batch enricher closes yesterday for every tenant in each site's time zone; on demand it
//! reprocesses a range with today's logic, or imports bulk source files into `raw/`. A tenant-day
//! goes through two stages ([`day`]): raw → deduplicated, enriched `trusted/` Parquet
//! (DataFusion for reading, dedupe and the daily metrics; the shared enrichment and
//! sessionisation of `sightline-event` on the Arrow rows), then the exact rollups that replace the
//! speed layer's for that day in one transaction. Every run and stage is reported to the run
//! ledger ([`ledger`]).

pub mod cli;
pub mod config;
pub mod day;
pub mod days;
pub mod enrich;
mod error;
pub mod import;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod publish;
pub mod raw;
pub mod reference;
pub mod rollup;
pub mod runs;
mod serve;
pub mod trusted;

use std::{future::Future, pin::Pin, sync::Arc};

use chrono::NaiveDate;
use sightline_db::PgStore;
use sightline_event::Enricher;
use sightline_lake::ObjectStore;

pub use config::Config;
pub use error::BatchError;
pub use serve::{Listeners, run};

use crate::{day::Checkpoint, enrich::Rules, ledger::Ledger, metrics::BatchMetrics};

/// A hook called at each [`Checkpoint`]; the job waits for the future it returns. Tests stop a
/// job there to kill it between stages.
pub type CheckpointHook = Arc<
    dyn Fn(Checkpoint, i64, NaiveDate) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// Settings the jobs read, validated from `[batch]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time read around each local day, µs.
    pub margin_us: i64,
    /// Tenant-days at the same time.
    pub parallelism: usize,
    /// Raw rows processed at once.
    pub chunk_rows: u64,
    /// Rows per Parquet object at most.
    pub max_rows_per_file: usize,
    /// Source files imported at the same time.
    pub import_parallelism: usize,
    /// Reference datasets joined into `trusted/events`.
    pub joins: Vec<reference::Join>,
}

/// What every job of a process shares.
pub struct Context {
    /// Sites, rollups, closures, run state.
    pub store: PgStore,
    /// The lake.
    pub lake: Arc<dyn ObjectStore>,
    /// The shared enrichment.
    pub enricher: Arc<Enricher>,
    /// The batch layer's own rules.
    pub rules: Rules,
    /// Job settings.
    pub settings: Settings,
    /// Where runs and stages are reported.
    pub ledger: Arc<dyn Ledger>,
    /// Counters.
    pub metrics: BatchMetrics,
    /// Test hook between stages.
    pub hook: Option<CheckpointHook>,
}

impl Context {
    /// Connects the database (lazily), opens the lake and loads the enrichment rules.
    pub fn new(
        config: &Config,
        ledger: Arc<dyn Ledger>,
        metrics: BatchMetrics,
    ) -> Result<Self, BatchError> {
        let batch = &config.batch;
        Ok(Self {
            store: PgStore::connect_lazy(&config.database)?,
            lake: config.lake.open()?,
            enricher: Arc::new(Enricher::new()?),
            rules: Rules::new(&batch.extra_bot_user_agents),
            settings: Settings {
                margin_us: i64::from(batch.session_margin_hours) * 3_600_000_000,
                parallelism: batch.parallelism,
                chunk_rows: batch.chunk_rows,
                max_rows_per_file: batch.import.max_rows_per_file,
                import_parallelism: batch.import.parallelism,
                joins: batch.joins().map_err(BatchError::Invalid)?,
            },
            ledger,
            metrics,
            hook: None,
        })
    }

    /// [`Context::new`] with the ledger the configuration names: the etl-metrics client (with
    /// its outbox) when `batch.ledger_endpoint` is set, else the log. Call inside a runtime.
    pub fn from_config(config: &Config, metrics: BatchMetrics) -> Result<Self, BatchError> {
        let mut ctx = Self::new(config, Arc::new(ledger::LogLedger), metrics)?;
        if !config.batch.ledger_endpoint.is_empty() {
            let client =
                ledger::GrpcLedger::new(&config.batch.ledger_endpoint, ctx.store.pool().clone());
            ctx.ledger = Arc::new(client);
        }
        Ok(ctx)
    }

    /// Sets the checkpoint hook.
    pub fn with_hook(mut self, hook: CheckpointHook) -> Self {
        self.hook = Some(hook);
        self
    }

    async fn checkpoint(&self, point: Checkpoint, tenant_id: i64, day: NaiveDate) {
        if let Some(hook) = &self.hook {
            hook(point, tenant_id, day).await;
        }
    }
}
