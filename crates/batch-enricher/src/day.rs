//! One tenant-day through both stages.
//!
//! 1. **trusted**: read the raw window, dedupe (DataFusion), validate, enrich, sessionise, write
//!    the next revision of `trusted/events`, `trusted/sessions`, `trusted/daily_metrics` and
//!    `errors/batch` (rejected rows);
//! 2. **rollups**: in one transaction, replace every site's batch rows of the day, upsert their
//!    closures, switch the lake manifests to the new revision and mark the tenant-day done in
//!    the run; then delete the previous revision's objects.
//!
//! A kill anywhere leaves either the old day (rerun: same revision, same keys, same content) or
//! the new one (the resumed run skips it).

use std::{collections::HashMap, sync::Arc};

use arrow::{array::RecordBatch, compute::concat_batches};
use chrono::{NaiveDate, Utc};
use tracing::info;

use crate::{
    BatchError, Context,
    days::TenantDay,
    enrich::{Prepared, Visit, prepare, sessionise},
    ledger::{StageReport, Status},
    publish::{self, DATASETS, Manifest},
    rollup::{self, METRICS, SiteRows, Totals},
    runs::{self, DayFigures, Run},
    trusted,
};

/// Where a tenant-day is: the points a test may stop a job at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// The trusted objects of the new revision are written; the day is not closed yet.
    TrustedWritten,
    /// The day is closed; the previous revision's objects are not deleted yet.
    Closed,
}

/// One metric of one site-day in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// The site.
    pub site_id: i64,
    /// Its local day.
    pub day: NaiveDate,
    /// One of [`METRICS`].
    pub metric: &'static str,
    /// What the serving database holds now.
    pub current: i64,
    /// What this run would write.
    pub new: i64,
}

impl DiffLine {
    /// `new - current`.
    pub fn difference(&self) -> i64 {
        self.new - self.current
    }
}

/// What one tenant-day run produced.
#[derive(Debug, Clone, Default)]
pub struct DayOutcome {
    /// Figures of the day.
    pub figures: DayFigures,
    /// Dry runs: the comparison, per site and metric.
    pub diff: Vec<DiffLine>,
}

/// The CPU-bound part of stage 1 for a tenant-day.
struct Computed {
    events: RecordBatch,
    sessions: RecordBatch,
    rejected: RecordBatch,
    sites: Vec<SiteRows>,
}

fn compute(
    ctx: &Context,
    day: &TenantDay,
    events: Vec<sightline_proto::events::v1::Event>,
) -> Result<Computed, BatchError> {
    let (mut prepared, mut rejected) = prepare(&ctx.enricher, &ctx.rules, events, &day.known_sites);
    let visits = sessionise(&mut prepared);
    let in_day = |p: &&Prepared| {
        day.site(p.event.site_id)
            .is_some_and(|s| s.contains(p.event.timestamp_us))
    };
    let day_events: Vec<&Prepared> = prepared.iter().filter(in_day).collect();
    let day_visits: Vec<&Visit> = visits
        .iter()
        .filter(|v| day.site(v.site_id).is_some_and(|s| s.contains(v.start_us)))
        .collect();
    // Rejected rows belong to the tenant-day when their time lies in any of its sites' days.
    let (from, to) = day.window_us(0);
    rejected.retain(|r| (from..to).contains(&r.event.timestamp_us));
    let sites = day
        .sites
        .iter()
        .map(|site| {
            let facts = prepared
                .iter()
                .filter(|p| p.event.site_id == site.site_id)
                .map(|p| &p.fact);
            rollup::site_rows(site, facts)
        })
        .collect();
    Ok(Computed {
        events: trusted::events_batch(&day_events, day)?,
        sessions: trusted::sessions_batch(&day_visits)?,
        rejected: trusted::rejected_batch(&rejected)?,
        sites,
    })
}

/// Runs both stages of `day` for `run` (`None`: a dry run, which writes nothing).
pub async fn process(
    ctx: &Arc<Context>,
    run: Option<&Run>,
    day: &TenantDay,
) -> Result<DayOutcome, BatchError> {
    let (tenant_id, date) = (day.tenant_id, day.day);
    let started_at = Utc::now();
    let manifests = publish::manifests(ctx.store.pool(), tenant_id, date).await?;
    if run.is_some() {
        // Objects a killed run left behind (its revision was never committed).
        for dataset in DATASETS {
            let keep = manifests
                .get(dataset)
                .map(|m| m.keys.as_slice())
                .unwrap_or(&[]);
            publish::sweep(&*ctx.lake, dataset, tenant_id, date, keep).await?;
        }
    }
    let revision = manifests.values().map(|m| m.revision).max().unwrap_or(0) + 1;
    let (from, to) = day.window_us(ctx.settings.margin_us);
    let raw = crate::raw::read_window(&*ctx.lake, tenant_id, from, to).await?;
    let (rows_read, bytes_read) = (raw.rows_read, raw.bytes_read);
    let computed = {
        let (ctx, day) = (ctx.clone(), day.clone());
        tokio::task::spawn_blocking(move || compute(&ctx, &day, raw.events)).await??
    };
    let daily =
        trusted::daily_metrics(day, computed.events.clone(), computed.sessions.clone()).await?;
    let daily = concat_batches(&daily_schema(&daily)?, &daily)?;
    let mut figures = DayFigures {
        revision,
        rows_read,
        rows_written: computed.events.num_rows() as u64,
        rows_rejected: computed.rejected.num_rows() as u64,
    };

    let Some(run) = run else {
        let mut diff = Vec::new();
        for site in &computed.sites {
            let current = rollup::current_totals(ctx.store.pool(), &site.site).await?;
            let new = Totals::of(site);
            for ((metric, current), new) in METRICS.iter().zip(current.metrics()).zip(new.metrics())
            {
                diff.push(DiffLine {
                    site_id: site.site.site_id,
                    day: date,
                    metric,
                    current,
                    new,
                });
            }
        }
        figures.revision = revision - 1;
        return Ok(DayOutcome { figures, diff });
    };

    let mut new_manifests: HashMap<&str, Manifest> = HashMap::new();
    let mut bytes_written = 0;
    for (dataset, batch) in [
        ("events", &computed.events),
        ("sessions", &computed.sessions),
        ("daily_metrics", &daily),
        ("rejected", &computed.rejected),
    ] {
        let (keys, bytes) = publish::write_dataset(
            &*ctx.lake,
            dataset,
            tenant_id,
            date,
            revision,
            batch,
            ctx.settings.max_rows_per_file,
        )
        .await?;
        bytes_written += bytes;
        new_manifests.insert(dataset, Manifest { revision, keys });
    }
    let trusted_at = Utc::now();
    ctx.ledger
        .report_stage(StageReport {
            run_id: run.run_id,
            stage: format!("trusted/{date}"),
            attempt: run.attempt,
            tenant_id: Some(tenant_id),
            rows_read,
            rows_written: figures.rows_written,
            rows_rejected: figures.rows_rejected,
            bytes_read,
            bytes_written,
            started_at,
            finished_at: trusted_at,
            status: Status::Succeeded,
            error: None,
        })
        .await;
    ctx.checkpoint(Checkpoint::TrustedWritten, tenant_id, date)
        .await;

    let mut tx = ctx.store.pool().begin().await?;
    let mut rows_written = 0;
    for site in &computed.sites {
        rollup::close_site_day(&mut tx, site).await?;
        rows_written += site.rows.len() as u64;
    }
    for (dataset, manifest) in &new_manifests {
        publish::commit_manifest(&mut tx, dataset, tenant_id, date, manifest).await?;
    }
    runs::mark_done(&mut tx, run.run_id, tenant_id, date, figures).await?;
    tx.commit().await?;
    ctx.ledger
        .report_stage(StageReport {
            run_id: run.run_id,
            stage: format!("rollups/{date}"),
            attempt: run.attempt,
            tenant_id: Some(tenant_id),
            rows_read: figures.rows_written,
            rows_written,
            rows_rejected: 0,
            bytes_read: 0,
            bytes_written: 0,
            started_at: trusted_at,
            finished_at: Utc::now(),
            status: Status::Succeeded,
            error: None,
        })
        .await;
    ctx.checkpoint(Checkpoint::Closed, tenant_id, date).await;

    for (dataset, manifest) in &new_manifests {
        publish::sweep(&*ctx.lake, dataset, tenant_id, date, &manifest.keys).await?;
    }
    info!(tenant_id, day = %date, revision, events = figures.rows_written, rejected = figures.rows_rejected, "tenant-day closed");
    Ok(DayOutcome {
        figures,
        diff: Vec::new(),
    })
}

/// The schema of the metrics table; the query always yields a row per site, so a batch.
fn daily_schema(batches: &[RecordBatch]) -> Result<arrow::datatypes::SchemaRef, BatchError> {
    batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| BatchError::Invalid("daily metrics query returned no batch".into()))
}
