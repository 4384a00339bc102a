//! `sightline`: every Sightline service in one process, each service alone, and the operators'
//! administration commands.

mod admin;
mod config;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sightline_kit::{Shutdown, Telemetry, config::exit_on_error};

use crate::config::Document;

// mimalloc instead of the system allocator: ingest allocates and frees many small strings per
// event on several threads, where glibc's malloc spent a fifth of ingest's CPU
// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sightline: event analytics you can trust.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; every key can also be set as SIGHTLINE__SECTION__KEY.
    #[arg(long, global = true, env = "SIGHTLINE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process after applying migrations (the default).
    All,
    /// Run the HTTP collector.
    Ingest,
    /// Administration: migrations, tenants, sites, keys and tokens.
    Admin(admin::AdminArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let document: Document = exit_on_error(Document::loader(cli.config.clone()).load());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::All) {
            Command::Admin(args) => {
                exit_on_error(document.validate_admin().into_result());
                admin::run(args, &document).await
            }
            Command::All => {
                // One process on one machine: bring the schema up to date first, as a newcomer
                // expects. In Kubernetes a Job runs `admin migrate` before the services start.
                if let Err(error) = sightline_db::PgStore::migrate(&document.database).await {
                    eprintln!("cannot migrate the database: {error}");
                    return std::process::ExitCode::FAILURE;
                }
                run_ingest(&document).await
            }
            Command::Ingest => run_ingest(&document).await,
        }
    })
}

async fn run_ingest(document: &Document) -> std::process::ExitCode {
    let config = document.ingest();
    exit_on_error(config.validate().into_result());
    let telemetry = match Telemetry::init("sightline-ingest", &config.telemetry) {
        Ok(t) => t,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listeners = match ingest::Listeners::bind(&config.ingest) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, listen = %config.ingest.listen, "cannot bind");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    let result = ingest::run(config, listeners, shutdown.clone()).await;
    telemetry.shutdown();
    match result {
        Ok(()) if !shutdown.has_failed() => std::process::ExitCode::SUCCESS,
        Ok(()) => std::process::ExitCode::FAILURE,
        Err(error) => {
            tracing::error!(%error, "ingest failed");
            std::process::ExitCode::FAILURE
        }
    }
}
