//! `serve` mode: the batch enricher alone, running `daily` on its configured schedule, with the
//! admin server (`/livez`, `/readyz`, `/metrics`). In Kubernetes a CronJob runs `daily` instead.

use std::{net::TcpListener, sync::Arc, time::Duration};

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use sightline_kit::{HealthRegistry, Shutdown, admin, telemetry::Metrics};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    BatchError, Config, Context,
    jobs::{self, DailyJob, Shard},
    metrics::BatchMetrics,
};

/// The sockets `serve` mode listens on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured address.
    pub fn bind(config: &crate::config::BatchConfig) -> std::io::Result<Self> {
        Ok(Self {
            admin: TcpListener::bind(&config.admin_listen)?,
        })
    }
}

/// The next instant at `time` in `zone` strictly after `now`.
pub fn next_run(now: DateTime<Utc>, time: NaiveTime, zone: Tz) -> DateTime<Utc> {
    let local_today = now.with_timezone(&zone).date_naive();
    for date in local_today.iter_days().take(3) {
        if let Some(at) = zone.from_local_datetime(&date.and_time(time)).earliest() {
            let at = at.with_timezone(&Utc);
            if at > now {
                return at;
            }
        }
    }
    now + chrono::Duration::days(1)
}

/// Runs the schedule until `shutdown`; a run in progress is finished first (a run stopped
/// halfway would be resumed by the next one anyway).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), BatchError> {
    let health = HealthRegistry::new();
    let registry = Metrics::new();
    let metrics = BatchMetrics::register(&registry);
    let ctx = Arc::new(Context::from_config(&config, metrics)?);
    let admin_stop = CancellationToken::new();
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        health.clone(),
        registry,
        admin_stop.clone(),
    ));
    let scheduler = health.register("scheduler");
    scheduler.ready();
    let schedule = &config.batch.schedule;
    match (schedule.enabled, schedule.time(), schedule.zone()) {
        (true, Some(time), Some(zone)) => loop {
            let at = next_run(Utc::now(), time, zone);
            info!(next_run = %at, "daily job scheduled");
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = shutdown.requested() => break,
                () = tokio::time::sleep(wait) => {}
            }
            let job = DailyJob {
                date: None,
                now: Utc::now(),
                shard: Shard::default(),
            };
            match jobs::daily(&ctx, job).await {
                Ok(summary) if summary.succeeded() => {
                    info!(closed = summary.closed.len(), "daily job done");
                }
                Ok(summary) => warn!(
                    failed = summary.failed.len(),
                    "daily job left tenant-days to the next run"
                ),
                Err(e) => error!(error = %e, "daily job failed"),
            }
        },
        _ => {
            info!("no schedule: serving health and metrics only");
            shutdown.requested().await;
        }
    }
    health.start_draining();
    admin_stop.cancel();
    match admin_server.await {
        Ok(result) => result.map_err(BatchError::Admin)?,
        Err(join) => return Err(join.into()),
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_the_next_local_occurrence() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let three = NaiveTime::from_hms_opt(3, 0, 0).unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(
            next_run(at("2025-03-10T01:00:00Z"), three, paris),
            at("2025-03-10T02:00:00Z")
        );
        assert_eq!(
            next_run(at("2025-03-10T02:00:00Z"), three, paris),
            at("2025-03-11T02:00:00Z")
        );
    }
}
