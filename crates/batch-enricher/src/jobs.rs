//! The jobs: `daily` (yesterday, every tenant, in each site's time zone) and `reprocess` (a
//! tenant's range again, or a dry run of it). Both schedule tenant-days, keep the ones of their
//! shard, skip those an interrupted run with the same key finished, and run the rest
//! `batch.parallelism` at a time.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt as _;
use sightline_db::{Site, Sites as _, Tenant, Tenants as _};
use tracing::{error, info};

use crate::{
    BatchError, Context,
    day::{self, DiffLine},
    days::{SiteDay, TenantDay, previous_local_day},
    ledger::{RunStart, Status},
    metrics::{JobLabels, OutcomeLabels},
    runs,
};

/// Which part of a run this process does (a Kubernetes Indexed Job's completion index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's index, from 0.
    pub index: u32,
    /// How many processes share the run.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// Checks `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, BatchError> {
        if count == 0 || index >= count {
            return Err(BatchError::Invalid(format!(
                "--shard {index} --shards {count}: the shard must be below the number of shards"
            )));
        }
        Ok(Self { index, count })
    }
}

/// `daily`.
#[derive(Debug, Clone)]
pub struct DailyJob {
    /// The local date to close for every site; `None`: each site's yesterday at `now`.
    pub date: Option<NaiveDate>,
    /// The run's reference time.
    pub now: DateTime<Utc>,
    /// This process's share.
    pub shard: Shard,
}

/// `reprocess`.
#[derive(Debug, Clone)]
pub struct ReprocessJob {
    /// Tenant id or slug.
    pub tenant: String,
    /// First local date.
    pub from: NaiveDate,
    /// Last local date (inclusive).
    pub to: NaiveDate,
    /// Report what would change; write nothing.
    pub dry_run: bool,
    /// This process's share.
    pub shard: Shard,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The run (nil for a dry run).
    pub run_id: uuid::Uuid,
    /// Tenant-days closed by this attempt.
    pub closed: Vec<(i64, NaiveDate)>,
    /// Tenant-days an earlier attempt had closed.
    pub skipped: Vec<(i64, NaiveDate)>,
    /// Tenant-days that failed, with the error.
    pub failed: Vec<(i64, NaiveDate, String)>,
    /// Dry run: per site, day and metric, the current and the new figure.
    pub diff: Vec<DiffLine>,
}

impl RunSummary {
    /// Whether every tenant-day succeeded.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
    }
}

fn tenant_days(
    tenant: &Tenant,
    sites: &[Site],
    day_of: impl Fn(&Site) -> Result<Vec<NaiveDate>, BatchError>,
) -> Result<Vec<TenantDay>, BatchError> {
    let known_sites: HashSet<i64> = sites.iter().map(|s| s.id).collect();
    let mut by_day: BTreeMap<NaiveDate, Vec<SiteDay>> = BTreeMap::new();
    for site in sites {
        for day in day_of(site)? {
            by_day.entry(day).or_default().push(SiteDay::of(site, day)?);
        }
    }
    Ok(by_day
        .into_iter()
        .map(|(day, sites)| TenantDay {
            tenant_id: tenant.id,
            day,
            sites,
            known_sites: known_sites.clone(),
        })
        .collect())
}

/// Runs `daily`.
pub async fn daily(ctx: &Arc<Context>, job: DailyJob) -> Result<RunSummary, BatchError> {
    let mut days = Vec::new();
    for tenant in ctx.store.list_tenants().await? {
        let sites = ctx.store.list_sites(tenant.id).await?;
        days.extend(tenant_days(&tenant, &sites, |site| {
            Ok(vec![match job.date {
                Some(date) => date,
                None => previous_local_day(SiteDay::of(site, job.now.date_naive())?.zone, job.now),
            }])
        })?);
    }
    let label = job
        .date
        .map_or_else(|| format!("at={}", job.now.date_naive()), |d| d.to_string());
    let key = format!(
        "daily/{label}/shard={}of{}",
        job.shard.index, job.shard.count
    );
    let params = serde_json::json!({
        "date": job.date, "now": job.now, "shard": job.shard.index, "shards": job.shard.count,
    });
    execute(
        ctx,
        "daily",
        &key,
        None,
        &params.to_string(),
        days,
        job.shard,
    )
    .await
}

/// Runs `reprocess`.
pub async fn reprocess(ctx: &Arc<Context>, job: ReprocessJob) -> Result<RunSummary, BatchError> {
    if job.from > job.to {
        return Err(BatchError::Invalid(format!(
            "--from {} is after --to {}",
            job.from, job.to
        )));
    }
    let tenant = find_tenant(ctx, &job.tenant).await?;
    let sites = ctx.store.list_sites(tenant.id).await?;
    let dates: Vec<NaiveDate> = job.from.iter_days().take_while(|d| *d <= job.to).collect();
    let days = tenant_days(&tenant, &sites, |_| Ok(dates.clone()))?;
    if job.dry_run {
        return dry_run(ctx, days, job.shard).await;
    }
    let key = format!(
        "reprocess/{}/{}..{}/shard={}of{}",
        tenant.id, job.from, job.to, job.shard.index, job.shard.count
    );
    let params = serde_json::json!({
        "tenant_id": tenant.id, "from": job.from, "to": job.to,
        "shard": job.shard.index, "shards": job.shard.count,
    });
    execute(
        ctx,
        "reprocess",
        &key,
        Some(tenant.id),
        &params.to_string(),
        days,
        job.shard,
    )
    .await
}

async fn find_tenant(ctx: &Context, tenant: &str) -> Result<Tenant, BatchError> {
    let tenants = ctx.store.list_tenants().await?;
    tenants
        .into_iter()
        .find(|t| t.slug == tenant || t.id.to_string() == tenant)
        .ok_or_else(|| BatchError::Invalid(format!("no tenant `{tenant}`")))
}

async fn dry_run(
    ctx: &Arc<Context>,
    days: Vec<TenantDay>,
    shard: Shard,
) -> Result<RunSummary, BatchError> {
    let mut summary = RunSummary::default();
    for day in days.iter().filter(|d| d.in_shard(shard.index, shard.count)) {
        let outcome = day::process(ctx, None, day).await?;
        summary.diff.extend(outcome.diff);
    }
    Ok(summary)
}

async fn execute(
    ctx: &Arc<Context>,
    job: &'static str,
    key: &str,
    tenant_id: Option<i64>,
    params_json: &str,
    days: Vec<TenantDay>,
    shard: Shard,
) -> Result<RunSummary, BatchError> {
    let run = runs::open(ctx.store.pool(), key, job, params_json).await?;
    ctx.ledger
        .start_run(RunStart {
            run_id: run.run_id,
            job: job.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tenant_id,
            params_json: params_json.to_owned(),
            started_at: Utc::now(),
        })
        .await;
    info!(run_id = %run.run_id, key, attempt = run.attempt, "run started");
    let mut summary = RunSummary {
        run_id: run.run_id,
        ..RunSummary::default()
    };
    let (todo, done): (Vec<TenantDay>, Vec<TenantDay>) = days
        .into_iter()
        .filter(|d| d.in_shard(shard.index, shard.count))
        .partition(|d| !run.done.contains(&(d.tenant_id, d.day)));
    summary.skipped = done.iter().map(|d| (d.tenant_id, d.day)).collect();
    let labels = JobLabels { job };
    let run = &run;
    let mut results = futures_util::stream::iter(todo)
        .map(|d| async move {
            let result = day::process(ctx, Some(run), &d).await;
            (d, result)
        })
        .buffer_unordered(ctx.settings.parallelism);
    while let Some((d, result)) = results.next().await {
        match result {
            Ok(outcome) => {
                ctx.metrics.tenant_days.get_or_create(&labels).inc();
                ctx.metrics
                    .rows_read
                    .get_or_create(&labels)
                    .inc_by(outcome.figures.rows_read);
                ctx.metrics
                    .rows_written
                    .get_or_create(&labels)
                    .inc_by(outcome.figures.rows_written);
                ctx.metrics
                    .rows_rejected
                    .get_or_create(&labels)
                    .inc_by(outcome.figures.rows_rejected);
                summary.closed.push((d.tenant_id, d.day));
            }
            Err(e) => {
                error!(tenant_id = d.tenant_id, day = %d.day, error = %e, "tenant-day failed");
                summary.failed.push((d.tenant_id, d.day, e.to_string()));
            }
        }
    }
    drop(results);
    let error = (!summary.failed.is_empty())
        .then(|| format!("{} tenant-days failed", summary.failed.len()));
    runs::finish(ctx.store.pool(), run.run_id, error.as_deref()).await?;
    let status = if error.is_none() {
        Status::Succeeded
    } else {
        Status::Failed
    };
    ctx.ledger.finish_run(run.run_id, status, error).await;
    ctx.ledger.flush().await;
    ctx.metrics
        .runs
        .get_or_create(&OutcomeLabels {
            job,
            status: status.as_str(),
        })
        .inc();
    if status == Status::Succeeded {
        ctx.metrics
            .last_success_seconds
            .get_or_create(&labels)
            .set(Utc::now().timestamp());
    }
    Ok(summary)
}
