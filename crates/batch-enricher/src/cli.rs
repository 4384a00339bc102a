//! `sightline batch …`: the command line of the batch enricher's jobs.

use std::{process::ExitCode, sync::Arc};

use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};
use sightline_kit::{Shutdown, config::EXIT_CONFIG};

use crate::{
    BatchError, Config, Context, Listeners,
    import::{self, ImportJob, Source},
    jobs::{self, DailyJob, ReprocessJob, RunSummary, Shard},
    metrics::BatchMetrics,
};

/// `sightline batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The job.
    #[command(subcommand)]
    pub command: BatchCommand,
}

/// How a run splits over the pods of a Kubernetes Indexed Job.
#[derive(Debug, Args, Clone, Copy)]
pub struct ShardArgs {
    /// This process's share, from 0 (an Indexed Job sets JOB_COMPLETION_INDEX).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub shard: u32,
    /// How many processes share the run.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
}

/// The jobs.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Close yesterday (in each site's time zone) for every tenant.
    Daily {
        /// Close this local date instead of each site's yesterday.
        #[arg(long)]
        date: Option<NaiveDate>,
        #[command(flatten)]
        shard: ShardArgs,
    },
    /// Rerun a tenant's days with today's logic.
    Reprocess {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// First local date.
        #[arg(long)]
        from: NaiveDate,
        /// Last local date (inclusive).
        #[arg(long)]
        to: NaiveDate,
        /// Write nothing; report per day and metric the current figure, the new one and the
        /// difference.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        shard: ShardArgs,
    },
    /// Import CSV or JSON-lines files (optionally gzip) into raw/ (or reference data).
    Import {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Site of rows that name none.
        #[arg(long)]
        site: Option<i64>,
        /// A local file or folder, or `lake:PREFIX`.
        #[arg(long)]
        source: String,
        /// Import a reference dataset under this name instead of events.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Run the daily job on the configured schedule, with health and metrics.
    Serve,
}

/// Runs a `sightline batch` command with `config` (validated by the caller).
pub async fn main(args: BatchArgs, config: Config, shutdown: Shutdown) -> ExitCode {
    let result = match args.command {
        BatchCommand::Serve => {
            let listeners = match Listeners::bind(&config.batch) {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(%error, listen = %config.batch.admin_listen, "cannot bind");
                    return ExitCode::FAILURE;
                }
            };
            crate::run(config, listeners, shutdown).await.map(|()| true)
        }
        command => one_shot(command, &config).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(BatchError::Invalid(message)) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(error) => {
            tracing::error!(%error, "batch job failed");
            eprintln!("batch job failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn one_shot(command: BatchCommand, config: &Config) -> Result<bool, BatchError> {
    let ctx = Arc::new(Context::from_config(config, BatchMetrics::default())?);
    match command {
        BatchCommand::Daily { date, shard } => {
            let job = DailyJob {
                date,
                now: Utc::now(),
                shard: Shard::new(shard.shard, shard.shards)?,
            };
            Ok(report(&jobs::daily(&ctx, job).await?))
        }
        BatchCommand::Reprocess {
            tenant,
            from,
            to,
            dry_run,
            shard,
        } => {
            let job = ReprocessJob {
                tenant,
                from,
                to,
                dry_run,
                shard: Shard::new(shard.shard, shard.shards)?,
            };
            Ok(report(&jobs::reprocess(&ctx, job).await?))
        }
        BatchCommand::Import {
            tenant,
            site,
            source,
            dataset,
        } => {
            let job = ImportJob {
                tenant,
                site,
                source: Source::parse(&source),
                dataset,
            };
            let summary = import::import(&ctx, job).await?;
            println!(
                "imported {} rows from {} files ({} refused, kept in {}/)",
                summary.rows,
                summary.files,
                summary.rejected,
                import::IMPORT_ERRORS
            );
            Ok(true)
        }
        BatchCommand::Serve => Ok(true),
    }
}

/// Prints a run's outcome; whether it succeeded.
fn report(summary: &RunSummary) -> bool {
    if !summary.diff.is_empty() {
        println!(
            "{:>8}  {:<10}  {:<15}  {:>16}  {:>16}  {:>16}",
            "site", "day", "metric", "current", "new", "difference"
        );
        for line in &summary.diff {
            println!(
                "{:>8}  {:<10}  {:<15}  {:>16}  {:>16}  {:>+16}",
                line.site_id,
                line.day,
                line.metric,
                line.current,
                line.new,
                line.difference()
            );
        }
        return true;
    }
    println!(
        "run {}: {} tenant-days closed, {} already closed by an earlier attempt, {} failed",
        summary.run_id,
        summary.closed.len(),
        summary.skipped.len(),
        summary.failed.len()
    );
    for (tenant, day, error) in &summary.failed {
        println!("  tenant {tenant} {day}: {error}");
    }
    summary.succeeded()
}
