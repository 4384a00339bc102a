//! The client of the etl-metrics run ledger (`sightline.pipeline.v1.PipelineLedger`).
//!
//! Jobs and services report what they did: a batch run's start, each stage, its end
//! ([`LedgerClient::start_run`], [`LedgerClient::report_stage`], [`LedgerClient::finish_run`]),
//! and a stream partition's windows ([`LedgerClient::report_stream_window`]). Each report is
//! first written to the `ledger_outbox` table in the caller's PostgreSQL database
//! (`migrations/0005_pipeline_ledger.sql`), then delivered over gRPC in the order written and
//! deleted once etl-metrics acknowledged it. So a report call fails only when the database
//! does: while etl-metrics is down, reports wait in the outbox and go out later, from
//! [`LedgerClient::flush`], the next report, or [`LedgerClient::deliver_periodically`].
//!
//! Delivery is at least once (a crash between the answer and the delete sends a report again);
//! etl-metrics makes repeats harmless with the reports' keys: the run id, (run id, stage,
//! attempt), and (pipeline, group, partition, window start).
//!
//! Pitfalls are in this crate's README.

mod outbox;
mod report;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use prost::Message as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

pub use report::{RunStart, StageReport, Status, StreamWindow};

use crate::outbox::Kind;

/// Why a report could not be recorded, or the outbox not drained.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The outbox table could not be written or read.
    #[error("ledger outbox: {0}")]
    Outbox(#[from] sqlx::Error),
    /// The etl-metrics endpoint is not a valid URI.
    #[error("invalid ledger endpoint `{endpoint}`: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// How the client delivers.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Time to open a connection to etl-metrics.
    pub connect_timeout: Duration,
    /// Time for one report's answer.
    pub call_timeout: Duration,
    /// After a failed delivery, report calls only write the outbox for this long (flushes and
    /// the periodic loop still try), so a job is not slowed by an etl-metrics that is down.
    pub retry_delay: Duration,
    /// Reports delivered per outbox transaction.
    pub batch_size: i64,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            retry_delay: Duration::from_secs(10),
            batch_size: 100,
        }
    }
}

/// Reports to the run ledger through the durable outbox. Cheap to clone; clones share one
/// connection and one delivery at a time.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    endpoint: Option<String>,
    options: DeliveryOptions,
    channel: OnceLock<Channel>,
    /// One delivery at a time in this process (the advisory lock covers other processes).
    drain: tokio::sync::Mutex<()>,
    /// Report calls skip delivery until then, after a failure.
    retry_after: std::sync::Mutex<Option<Instant>>,
}

impl LedgerClient {
    /// A client writing its outbox in `pool`'s database and delivering to etl-metrics at
    /// `endpoint` (`http://etl-metrics:50052`). With `None`, reports are only recorded in the
    /// outbox, for a client with an endpoint on the same database to deliver.
    ///
    /// Call it inside a Tokio runtime: it starts delivering what an earlier process left in the
    /// outbox at once, in the background.
    pub fn new(endpoint: Option<String>, pool: PgPool) -> Self {
        Self::with_options(endpoint, pool, DeliveryOptions::default())
    }

    /// [`LedgerClient::new`] with delivery options.
    pub fn with_options(endpoint: Option<String>, pool: PgPool, options: DeliveryOptions) -> Self {
        let endpoint = endpoint.filter(|e| !e.trim().is_empty());
        let client = Self {
            inner: Arc::new(Inner {
                pool,
                endpoint,
                options,
                channel: OnceLock::new(),
                drain: tokio::sync::Mutex::new(()),
                retry_after: std::sync::Mutex::new(None),
            }),
        };
        if client.inner.endpoint.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let this = client.clone();
            runtime.spawn(async move {
                if let Err(error) = this.flush().await {
                    warn!(%error, "cannot deliver the ledger outbox");
                }
            });
        }
        client
    }

    /// Records that a run started.
    pub async fn start_run(&self, run: RunStart) -> Result<(), LedgerError> {
        self.record(Kind::StartRun, run.into_request().encode_to_vec())
            .await
    }

    /// Records one stage of a run (after [`LedgerClient::start_run`] of its run).
    pub async fn report_stage(&self, stage: StageReport) -> Result<(), LedgerError> {
        self.record(Kind::ReportStage, stage.into_request().encode_to_vec())
            .await
    }

    /// Records how a run ended, now.
    pub async fn finish_run(
        &self,
        run_id: uuid::Uuid,
        status: Status,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        let request = report::finish_request(run_id, status, error, chrono::Utc::now());
        self.record(Kind::FinishRun, request.encode_to_vec()).await
    }

    /// Records one window of a stream partition.
    pub async fn report_stream_window(&self, window: StreamWindow) -> Result<(), LedgerError> {
        self.record(Kind::StreamWindow, window.into_request().encode_to_vec())
            .await
    }

    /// Delivers every report it can, in order, and returns how many are still pending (not
    /// delivered and not refused). Stops at the first report etl-metrics does not take (it
    /// is unreachable): the rest would overtake it. Reports etl-metrics refuses as invalid are
    /// kept aside in the outbox (`rejected_at`) and skipped. Fails only when the outbox cannot
    /// be read or written.
    pub async fn flush(&self) -> Result<usize, LedgerError> {
        let _one = self.inner.drain.lock().await;
        self.drain().await
    }

    /// Reports recorded and not yet delivered (refused ones excluded), in every process
    /// sharing this database.
    pub async fn pending(&self) -> Result<usize, LedgerError> {
        Ok(outbox::pending(&self.inner.pool).await?)
    }

    /// Flushes every `every` until `shutdown`, then once more: the delivery loop a service
    /// spawns beside its work.
    pub async fn deliver_periodically(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            match self.flush().await {
                Ok(0) => {}
                Ok(pending) => debug!(pending, "ledger reports still pending"),
                Err(error) => warn!(%error, "cannot deliver the ledger outbox"),
            }
        }
        if let Err(error) = self.flush().await {
            warn!(%error, "cannot deliver the ledger outbox at shutdown");
        }
    }

    async fn record(&self, kind: Kind, payload: Vec<u8>) -> Result<(), LedgerError> {
        outbox::insert(&self.inner.pool, kind, &payload).await?;
        if self.inner.endpoint.is_none() || self.backing_off() {
            return Ok(());
        }
        // Another task delivering will take this report too, or the next flush will.
        let Ok(_one) = self.inner.drain.try_lock() else {
            return Ok(());
        };
        if let Err(error) = self.drain().await {
            warn!(%error, "cannot deliver the ledger outbox; the report waits in it");
        }
        Ok(())
    }

    fn backing_off(&self) -> bool {
        match self.inner.retry_after.lock() {
            Ok(guard) => guard.is_some_and(|until| Instant::now() < until),
            Err(_) => false,
        }
    }

    fn set_retry_after(&self, failed: bool) {
        if let Ok(mut guard) = self.inner.retry_after.lock() {
            *guard = failed.then(|| Instant::now() + self.inner.options.retry_delay);
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, LedgerError> {
        if let Some(channel) = self.inner.channel.get() {
            return Ok(channel.clone());
        }
        let invalid = |reason: String| LedgerError::Endpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.inner.options.connect_timeout)
            .timeout(self.inner.options.call_timeout)
            .connect_lazy();
        Ok(self.inner.channel.get_or_init(|| channel).clone())
    }

    /// The delivery loop proper; the caller holds `drain`.
    async fn drain(&self) -> Result<usize, LedgerError> {
        let Some(endpoint) = self.inner.endpoint.as_deref() else {
            return self.pending().await;
        };
        let channel = self.channel(endpoint)?;
        loop {
            let outcome =
                outbox::deliver_batch(&self.inner.pool, &channel, self.inner.options.batch_size)
                    .await?;
            match outcome {
                outbox::Batch::Empty => {
                    self.set_retry_after(false);
                    return Ok(0);
                }
                outbox::Batch::Delivered => continue,
                outbox::Batch::Busy => return self.pending().await,
                outbox::Batch::Stopped => {
                    self.set_retry_after(true);
                    return self.pending().await;
                }
            }
        }
    }
}
