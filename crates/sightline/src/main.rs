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
    /// Run the stream processor (rollup and archive consumer groups).
    Stream,
    /// Administration: migrations, tenants, sites, keys and tokens.
    Admin(admin::AdminArgs),
}

/// A service this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Ingest,
    Stream,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Ingest => "sightline-ingest",
            Service::Stream => "sightline-stream-processor",
        }
    }
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
                run_services(&document, &[Service::Ingest, Service::Stream]).await
            }
            Command::Ingest => run_services(&document, &[Service::Ingest]).await,
            Command::Stream => run_services(&document, &[Service::Stream]).await,
        }
    })
}

/// Runs `services` side by side until a signal or until one of them fails, which stops the
/// others: the process exits non-zero so the orchestrator restarts it.
async fn run_services(document: &Document, services: &[Service]) -> std::process::ExitCode {
    let mut problems = document.telemetry.validate();
    for service in services {
        problems.extend(match service {
            Service::Ingest => document.ingest().validate(),
            Service::Stream => document.stream().validate(),
        });
    }
    exit_on_error(problems.into_result());
    let name = match services {
        [one] => one.name(),
        _ => "sightline",
    };
    let telemetry = match Telemetry::init(name, &document.telemetry) {
        Ok(t) => t,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    let mut tasks = Vec::new();
    for &service in services {
        let task = match service {
            Service::Ingest => {
                let config = document.ingest();
                let listeners = match ingest::Listeners::bind(&config.ingest) {
                    Ok(l) => l,
                    Err(error) => {
                        tracing::error!(%error, listen = %config.ingest.listen, "cannot bind");
                        shutdown.fail(service.name(), &error);
                        break;
                    }
                };
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    // A failed service stops the others at once.
                    let result = ingest::run(config, listeners, shutdown.clone()).await;
                    if let Err(error) = &result {
                        shutdown.fail(service.name(), error);
                    }
                })
            }
            Service::Stream => {
                let config = document.stream();
                let listeners = match stream_processor::Listeners::bind(&config.stream) {
                    Ok(l) => l,
                    Err(error) => {
                        tracing::error!(%error, listen = %config.stream.admin_listen, "cannot bind");
                        shutdown.fail(service.name(), &error);
                        break;
                    }
                };
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    // A failed service stops the others at once.
                    let result = stream_processor::run(config, listeners, shutdown.clone()).await;
                    if let Err(error) = &result {
                        shutdown.fail(service.name(), error);
                    }
                })
            }
        };
        tasks.push((service, task));
    }
    for (service, task) in tasks {
        if let Err(panic) = task.await {
            shutdown.fail(service.name(), &panic);
        }
    }
    telemetry.shutdown();
    if shutdown.has_failed() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
