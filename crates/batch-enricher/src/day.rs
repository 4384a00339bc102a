//! One tenant-day through both stages.
//!
//! 1. **trusted**: spill the raw window to disk by visitor bucket, then a chunk of whole visitors
//!    at a time: dedupe, sort (DataFusion), leave out the rows that cannot reach the day,
//!    validate, enrich, sessionise, join reference data, write its part of the next revision of
//!    `trusted/events` and `trusted/sessions`, fold its rollups and daily metrics; last, the
//!    day's `trusted/daily_metrics` and `errors/batch` (rejected rows). Each chunk is a task of
//!    its own, Parquet encoding included, and two run at a time; the day's task only puts their
//!    objects in order and adds up their figures;
//! 2. **rollups**: in one transaction, replace every site's batch rows of the day, upsert their
//!    closures, switch the lake manifests to the new revision and mark the tenant-day done in
//!    the run; then delete the previous revision's objects.
//!
//! A kill anywhere leaves either the old day (rerun: same revision, same keys, same content) or
//! the new one (the resumed run skips it).

use std::{collections::HashMap, sync::Arc, time::Instant};

use arrow::{array::RecordBatch, compute::concat_batches};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt as _;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;

use crate::{
    BatchError, Context,
    days::TenantDay,
    enrich::{Prepared, Visit, prepare, sessionise},
    ledger::{StageReport, Status},
    publish::{self, DATASETS, Encoded, Manifest, Parts},
    raw, reference,
    rollup::{self, METRICS, SiteFold, SiteRows, Totals},
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

/// What a chunk of a tenant-day's visitors makes: its share of every output of the day.
struct Computed {
    /// Rows of `trusted/events`.
    events: u64,
    /// Its rows of `trusted/daily_metrics`, to be added up with the other chunks'.
    metrics: Vec<RecordBatch>,
    /// Its objects of `trusted/events` and `trusted/sessions` (none in a dry run).
    objects: Option<[Encoded; 2]>,
    rejected: RecordBatch,
    sites: Vec<SiteFold>,
}

/// The tables of a chunk, made from its sorted unique rows.
struct Tables {
    events: RecordBatch,
    sessions: RecordBatch,
    rejected: RecordBatch,
    sites: Vec<SiteFold>,
}

/// The CPU-bound part of a chunk, for the blocking pool: events from the rows, validate,
/// enrich, sessionise, join, fold; the columns that pass through are copied from `rows`.
fn tables(
    ctx: &Context,
    day: &TenantDay,
    rows: raw::Sorted,
    references: &[reference::Table],
) -> Result<Tables, BatchError> {
    let events = rows.events()?;
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
            SiteFold::of(site, facts)
        })
        .collect();
    Ok(Tables {
        events: trusted::events_batch(&day_events, &rows, day, references)?,
        sessions: trusted::sessions_batch(&day_visits)?,
        rejected: trusted::rejected_batch(&rejected, &rows)?,
        sites,
    })
}

/// Everything stage 1 does for the visitors of `buckets`, Parquet encoding included (`write`),
/// so that a chunk's work runs on both cores beside the next chunk's, and what is left to the
/// day's own task is putting objects in order.
async fn chunk(
    ctx: Arc<Context>,
    day: TenantDay,
    spill: Arc<raw::Spill>,
    wanted: Arc<raw::Wanted>,
    references: Arc<Vec<reference::Table>>,
    buckets: std::ops::Range<usize>,
    write: bool,
) -> Result<Computed, BatchError> {
    let rows = spill.read(buckets, &wanted).await?;
    let (tables, objects) = {
        let (ctx, day) = (ctx.clone(), day.clone());
        tokio::task::spawn_blocking(move || {
            let tables = tables(&ctx, &day, rows, &references)?;
            let max_rows = ctx.settings.max_rows_per_file;
            let objects = if write {
                Some([
                    Encoded::of(&tables.events, max_rows)?,
                    Encoded::of(&tables.sessions, max_rows)?,
                ])
            } else {
                None
            };
            Ok::<_, BatchError>((tables, objects))
        })
        .await??
    };
    let metrics =
        trusted::daily_metrics(&day, tables.events.clone(), tables.sessions.clone()).await?;
    Ok(Computed {
        events: tables.events.num_rows() as u64,
        metrics,
        objects,
        rejected: tables.rejected,
        sites: tables.sites,
    })
}

/// Chunks of visitors in progress at the same time, each a task of its own: while one is
/// sorted (DataFusion) another is enriched and encoded (the blocking pool), so both cores work.
const CHUNKS_AT_ONCE: usize = 2;

/// What stage 1 made of a whole tenant-day.
struct Stage1 {
    rows_read: u64,
    bytes_read: u64,
    events: u64,
    rejected: u64,
    sites: Vec<SiteRows>,
    /// Object keys and bytes by dataset; `None` for a dry run.
    written: Option<(HashMap<&'static str, Vec<String>>, u64)>,
}

/// Stage 1, a chunk of whole visitors at a time: read, dedupe, enrich, sessionise, and (unless
/// `revision` is `None`, a dry run) write `revision`'s trusted objects.
async fn stage1(
    ctx: &Arc<Context>,
    day: &TenantDay,
    revision: Option<i32>,
) -> Result<Stage1, BatchError> {
    let (tenant_id, date) = (day.tenant_id, day.day);
    let margin_us = ctx.settings.margin_us;
    let (from, to) = day.window_us(margin_us);
    let (days_from, days_to) = day.window_us(0);
    let wanted = Arc::new(raw::Wanted {
        tenant_id,
        window_us: from..to,
        read_us: day
            .sites
            .iter()
            .map(|site| {
                let read = site.starts_us.saturating_sub(margin_us)
                    ..site.ends_us.saturating_add(margin_us);
                (site.site_id, read)
            })
            .collect(),
        days_us: days_from..days_to,
        reach_us: day
            .sites
            .iter()
            .map(|site| (site.site_id, SiteFold::reach_us(site)))
            .collect(),
        known_sites: day.known_sites.clone(),
    });
    let spilling = Instant::now();
    let spill = Arc::new(raw::spill_window(&*ctx.lake, &wanted).await?);
    info!(
        tenant_id, day = %date, objects = spill.objects, rows = spill.rows(),
        seconds = spilling.elapsed().as_secs_f64(), "raw window spilled"
    );
    let references = Arc::new(reference::load(&*ctx.lake, tenant_id, &ctx.settings.joins).await?);
    let mut chunks = spill.chunks(ctx.settings.chunk_rows);
    if chunks.is_empty() {
        // An empty day still has its (empty) tables and a zero row per site.
        chunks.push(0..0);
    }
    let lake = &*ctx.lake;
    let max_rows = ctx.settings.max_rows_per_file;
    let parts = |dataset: &'static str| {
        Parts::new(
            lake,
            dataset,
            tenant_id,
            date,
            revision.unwrap_or(0),
            max_rows,
        )
    };
    let (mut events, mut sessions) = (parts("events"), parts("sessions"));
    let mut rejected = Vec::new();
    let mut metrics = Vec::new();
    let mut sites: Vec<SiteFold> = day.sites.iter().map(SiteFold::new).collect();
    let mut figures = (0, 0);
    let enriching = Instant::now();
    let n_chunks = chunks.len();
    // Each chunk is a task; a failure drops the rest, which aborts them.
    let mut computed = futures_util::stream::iter(chunks)
        .map(|buckets| {
            AbortOnDropHandle::new(tokio::spawn(chunk(
                ctx.clone(),
                day.clone(),
                spill.clone(),
                wanted.clone(),
                references.clone(),
                buckets,
                revision.is_some(),
            )))
        })
        .buffered(CHUNKS_AT_ONCE);
    while let Some(chunk) = computed.next().await {
        let chunk = chunk??;
        metrics.extend(chunk.metrics);
        figures.0 += chunk.events;
        figures.1 += chunk.rejected.num_rows() as u64;
        for (site, fold) in sites.iter_mut().zip(chunk.sites) {
            site.merge(fold);
        }
        if let Some([chunk_events, chunk_sessions]) = chunk.objects {
            events.put_all(chunk_events).await?;
            sessions.put_all(chunk_sessions).await?;
        }
        rejected.push(chunk.rejected);
    }
    drop(computed);
    info!(
        tenant_id, day = %date, chunks = n_chunks, events = figures.0,
        seconds = enriching.elapsed().as_secs_f64(), "raw window enriched"
    );
    let mut stage = Stage1 {
        rows_read: spill.rows_read,
        bytes_read: spill.bytes_read,
        events: figures.0,
        rejected: figures.1,
        sites: sites.into_iter().map(SiteFold::rows).collect(),
        written: None,
    };
    let Some(revision) = revision else {
        return Ok(stage);
    };
    let daily = trusted::total_metrics(metrics).await?;
    let daily = concat_batches(&daily_schema(&daily)?, &daily)?;
    let rejected = concat_batches(&trusted::rejected_schema(), &rejected)?;
    let mut keys = HashMap::new();
    let mut bytes = 0;
    for (dataset, finished) in [
        ("events", events.finish().await?),
        ("sessions", sessions.finish().await?),
    ] {
        bytes += finished.1;
        keys.insert(dataset, finished.0);
    }
    for (dataset, batch) in [("daily_metrics", &daily), ("rejected", &rejected)] {
        let (written, n) =
            publish::write_dataset(lake, dataset, tenant_id, date, revision, batch, max_rows)
                .await?;
        bytes += n;
        keys.insert(dataset, written);
    }
    stage.written = Some((keys, bytes));
    Ok(stage)
}

/// Reports `stage` of `day` as failed with `error` (a dry run reports nothing) and returns the
/// error: a failed tenant-day shows in the ledger as the stage it stopped in, with the reason.
async fn failed(
    ctx: &Context,
    run: Option<&Run>,
    day: &TenantDay,
    stage: &str,
    started_at: DateTime<Utc>,
    error: BatchError,
) -> BatchError {
    if let Some(run) = run {
        ctx.ledger
            .report_stage(StageReport::failed(
                run,
                format!("{stage}/{}", day.day),
                Some(day.tenant_id),
                started_at,
                &error,
            ))
            .await;
    }
    error
}

/// Runs both stages of `day` for `run` (`None`: a dry run, which writes nothing).
/// A stage that fails is reported to the ledger as failed, with its error.
pub async fn process(
    ctx: &Arc<Context>,
    run: Option<&Run>,
    day: &TenantDay,
) -> Result<DayOutcome, BatchError> {
    let (tenant_id, date) = (day.tenant_id, day.day);
    let started_at = Utc::now();
    let trusted = async {
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
        Ok::<_, BatchError>((revision, stage1(ctx, day, run.map(|_| revision)).await?))
    };
    let (revision, stage) = match trusted.await {
        Ok(done) => done,
        Err(e) => return Err(failed(ctx, run, day, "trusted", started_at, e).await),
    };
    let mut figures = DayFigures {
        revision,
        rows_read: stage.rows_read,
        rows_written: stage.events,
        rows_rejected: stage.rejected,
    };

    let (Some(run), Some((keys, bytes_written))) = (run, stage.written) else {
        let mut diff = Vec::new();
        for site in &stage.sites {
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
    let new_manifests: HashMap<&str, Manifest> = keys
        .into_iter()
        .map(|(dataset, keys)| (dataset, Manifest { revision, keys }))
        .collect();
    let rows_read = stage.rows_read;
    let bytes_read = stage.bytes_read;
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

    let close = async {
        let mut tx = ctx.store.pool().begin().await?;
        let mut rows_written = 0;
        for site in &stage.sites {
            rollup::close_site_day(&mut tx, site).await?;
            rows_written += site.rows.len() as u64;
        }
        for (dataset, manifest) in &new_manifests {
            publish::commit_manifest(&mut tx, dataset, tenant_id, date, manifest).await?;
        }
        runs::mark_done(&mut tx, run.run_id, tenant_id, date, figures).await?;
        tx.commit().await?;
        Ok::<_, BatchError>(rows_written)
    };
    let rows_written = match close.await {
        Ok(rows) => rows,
        Err(e) => return Err(failed(ctx, Some(run), day, "rollups", trusted_at, e).await),
    };
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
