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
    /// The query service (`serve`) and a client for it (`timeseries`, `breakdown`, `sql`, …).
    Query(query::cli::QueryArgs),
    /// The batch layer's jobs: daily, reprocess, import, or serve on a schedule.
    Batch(batch_enricher::cli::BatchArgs),
    /// The pipeline's run ledger, star schema, metrics and alerts (`load-once`: load the star
    /// schema and exit).
    EtlMetrics(EtlMetricsArgs),
}

/// `sightline etl-metrics [load-once]`.
#[derive(Debug, clap::Args)]
struct EtlMetricsArgs {
    #[command(subcommand)]
    command: Option<EtlMetricsCommand>,
}

#[derive(Debug, Subcommand)]
enum EtlMetricsCommand {
    /// Load new ledger rows into the `olap` star schema once, then exit.
    LoadOnce,
}

/// A service this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Ingest,
    Stream,
    Query,
    EtlMetrics,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Ingest => "sightline-ingest",
            Service::Stream => "sightline-stream-processor",
            Service::Query => "sightline-query",
            Service::EtlMetrics => "sightline-etl-metrics",
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
                run_services(
                    &document,
                    &[
                        Service::Ingest,
                        Service::Stream,
                        Service::Query,
                        Service::EtlMetrics,
                    ],
                )
                .await
            }
            Command::Ingest => run_services(&document, &[Service::Ingest]).await,
            Command::EtlMetrics(args) => match args.command {
                None => run_services(&document, &[Service::EtlMetrics]).await,
                Some(EtlMetricsCommand::LoadOnce) => load_once(&document).await,
            },
            Command::Batch(args) => run_batch(args, &document).await,
            Command::Stream => run_services(&document, &[Service::Stream]).await,
            Command::Query(args) => match args.command {
                query::cli::QueryCommand::Serve => run_services(&document, &[Service::Query]).await,
                client => query::cli::client(client).await,
            },
        }
    })
}

/// Runs a batch job (or the batch enricher's `serve` mode) to its end.
async fn run_batch(
    args: batch_enricher::cli::BatchArgs,
    document: &Document,
) -> std::process::ExitCode {
    let config = document.batch();
    exit_on_error(config.validate().into_result());
    let telemetry = match Telemetry::init("sightline-batch-enricher", &document.telemetry) {
        Ok(t) => t,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    let code = batch_enricher::cli::main(args, config, shutdown).await;
    telemetry.shutdown();
    code
}

/// `sightline etl-metrics load-once`: loads the star schema and prints what it loaded.
async fn load_once(document: &Document) -> std::process::ExitCode {
    let config = document.etl_metrics();
    exit_on_error(config.validate().into_result());
    match etl_metrics::load_once(&config).await {
        Ok(report) => {
            println!(
                "loaded {} stage runs and {} stream windows",
                report.stage_runs, report.stream_windows
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot load the star schema: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a service whose listeners are `bound` on a task of its own. A bind error, or the
/// service failing later, stops every service of the process (`None`: it never started).
fn start<L, B, E, F>(
    service: Service,
    shutdown: &Shutdown,
    listen: &dyn std::fmt::Display,
    bound: Result<L, B>,
    run: impl FnOnce(L, Shutdown) -> F,
) -> Option<tokio::task::JoinHandle<()>>
where
    B: std::fmt::Display,
    E: std::fmt::Display,
    F: Future<Output = Result<(), E>> + Send + 'static,
{
    let listeners = match bound {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, %listen, "cannot bind");
            shutdown.fail(service.name(), &error);
            return None;
        }
    };
    let running = run(listeners, shutdown.clone());
    let shutdown = shutdown.clone();
    Some(tokio::spawn(async move {
        if let Err(error) = running.await {
            shutdown.fail(service.name(), &error);
        }
    }))
}

/// The loopback address of a service listening on `listen` (`0.0.0.0:50052` →
/// `http://127.0.0.1:50052`).
fn local_endpoint(listen: &str) -> Option<String> {
    let addr: std::net::SocketAddr = listen.parse().ok()?;
    (addr.port() != 0).then(|| format!("http://127.0.0.1:{}", addr.port()))
}

/// Runs `services` side by side until a signal or until one of them fails, which stops the
/// others: the process exits non-zero so the orchestrator restarts it.
async fn run_services(document: &Document, services: &[Service]) -> std::process::ExitCode {
    let mut problems = document.telemetry.validate();
    for service in services {
        problems.extend(match service {
            Service::Ingest => document.ingest().validate(),
            Service::Stream => document.stream().validate(),
            Service::Query => document.query().validate(),
            Service::EtlMetrics => document.etl_metrics().validate(),
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
                let bound = ingest::Listeners::bind(&config.ingest);
                let listen = config.ingest.listen.clone();
                start(service, &shutdown, &listen, bound, |l, s| {
                    ingest::run(config, l, s)
                })
            }
            Service::Stream => {
                let mut config = document.stream();
                // In one process the stream processor reports its windows to the etl-metrics
                // beside it, unless told otherwise.
                if services.contains(&Service::EtlMetrics)
                    && config.stream.ledger_endpoint.trim().is_empty()
                    && let Some(endpoint) = local_endpoint(&document.etl_metrics.grpc_listen)
                {
                    config.stream.ledger_endpoint = endpoint;
                }
                let bound = stream_processor::Listeners::bind(&config.stream);
                let listen = config.stream.admin_listen.clone();
                start(service, &shutdown, &listen, bound, |l, s| {
                    stream_processor::run(config, l, s)
                })
            }
            Service::Query => {
                let config = document.query();
                let bound = query::Listeners::bind(&config.query);
                let listen = config.query.listen.clone();
                start(service, &shutdown, &listen, bound, |l, s| {
                    query::run(config, l, s)
                })
            }
            Service::EtlMetrics => {
                let config = document.etl_metrics();
                let bound = etl_metrics::Listeners::bind(&config.etl_metrics);
                let listen = config.etl_metrics.grpc_listen.clone();
                start(service, &shutdown, &listen, bound, |l, s| {
                    etl_metrics::run(config, l, s)
                })
            }
        };
        // A service that cannot bind has stopped the process already.
        let Some(task) = task else { break };
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
