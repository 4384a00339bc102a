//! `import`: bulk source files (CSV or JSON lines, optionally gzip) from a local path or a lake
//! prefix into `raw/` as typed Parquet, files in parallel; each bad row is kept in
//! `errors/import/` with its reason. `--dataset NAME` imports reference data instead
//! (`reference/{NAME}/tenant={T}/`, every column text), replacing the dataset whole.
//!
//! Keys are derived from the source file's name, so importing the same files again overwrites
//! the same objects: a rerun changes nothing, and the batch's dedupe by event id absorbs files
//! that overlap.

pub mod record;
pub mod source;

use std::{collections::BTreeMap, sync::Arc};

use arrow::{
    array::{ArrayRef, RecordBatch, StringArray},
    datatypes::{DataType, Field, Schema},
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use sightline_db::Tenants as _;
use sightline_lake::layout::{RawPartition, part_id};
use sightline_proto::events::v1::{Event, InvalidEvent};
use tracing::{info, warn};

pub use source::{Format, Source};

use crate::{
    BatchError, Context,
    ledger::{RunStart, StageReport, Status},
    runs,
};

/// Top folder of rows an import refused.
pub const IMPORT_ERRORS: &str = "errors/import";
/// Top folder of reference datasets.
pub const REFERENCE: &str = "reference";

/// `import`.
#[derive(Debug, Clone)]
pub struct ImportJob {
    /// Tenant id or slug.
    pub tenant: String,
    /// The site of rows that name none.
    pub site: Option<i64>,
    /// Where the files are.
    pub source: Source,
    /// Import reference data under this name instead of events.
    pub dataset: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Files read.
    pub files: usize,
    /// Rows written.
    pub rows: u64,
    /// Rows refused (kept in `errors/import/`).
    pub rejected: u64,
    /// Objects written.
    pub keys: Vec<String>,
}

/// A short stable name of a source file for keys.
fn file_id(file: &str) -> String {
    part_id([file])[..16].to_owned()
}

/// Runs `import`.
pub async fn import(ctx: &Arc<Context>, job: ImportJob) -> Result<ImportSummary, BatchError> {
    let tenant = {
        let tenants = ctx.store.list_tenants().await?;
        tenants
            .into_iter()
            .find(|t| t.slug == job.tenant || t.id.to_string() == job.tenant)
            .ok_or_else(|| BatchError::Invalid(format!("no tenant `{}`", job.tenant)))?
    };
    if let Some(name) = &job.dataset
        && !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(BatchError::Invalid(format!(
            "dataset `{name}`: use lowercase letters, digits and `_`"
        )));
    }
    let files = job.source.files(&*ctx.lake).await?;
    let params = serde_json::json!({
        "tenant_id": tenant.id, "site_id": job.site, "dataset": job.dataset,
        "source": format!("{:?}", job.source), "files": files.len(),
    })
    .to_string();
    let key = format!(
        "import/{}/{:?}/{}",
        tenant.id,
        job.dataset,
        file_id(&params)
    );
    let run = runs::open(ctx.store.pool(), &key, "import", &params).await?;
    ctx.ledger
        .start_run(RunStart {
            run_id: run.run_id,
            job: "import".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            tenant_id: Some(tenant.id),
            params_json: params,
            started_at: Utc::now(),
        })
        .await;
    let result = match &job.dataset {
        Some(name) => import_reference(ctx, &run, tenant.id, name, &job.source, &files).await,
        None => import_events(ctx, &run, tenant.id, job.site, &job.source, &files).await,
    };
    let error = result.as_ref().err().map(ToString::to_string);
    runs::finish(ctx.store.pool(), run.run_id, error.as_deref()).await?;
    let status = if error.is_none() {
        Status::Succeeded
    } else {
        Status::Failed
    };
    ctx.ledger.finish_run(run.run_id, status, error).await;
    ctx.ledger.flush().await;
    result
}

async fn import_events(
    ctx: &Arc<Context>,
    run: &runs::Run,
    tenant_id: i64,
    site: Option<i64>,
    source: &Source,
    files: &[String],
) -> Result<ImportSummary, BatchError> {
    let mut summary = ImportSummary {
        files: files.len(),
        ..ImportSummary::default()
    };
    let mut results = futures_util::stream::iter(files.to_vec())
        .map(|file| async move {
            let started_at = Utc::now();
            let result = import_file(ctx, run, tenant_id, site, source, &file).await;
            if let Err(error) = &result {
                let stage = format!("import/{file}");
                let report = StageReport::failed(run, stage, Some(tenant_id), started_at, error);
                ctx.ledger.report_stage(report).await;
            }
            result
        })
        .buffer_unordered(ctx.settings.import_parallelism);
    while let Some(result) = results.next().await {
        let one = result?;
        summary.rows += one.rows;
        summary.rejected += one.rejected;
        summary.keys.extend(one.keys);
    }
    summary.keys.sort();
    info!(
        files = summary.files,
        rows = summary.rows,
        rejected = summary.rejected,
        "import done"
    );
    Ok(summary)
}

async fn import_file(
    ctx: &Arc<Context>,
    run: &runs::Run,
    tenant_id: i64,
    site: Option<i64>,
    source: &Source,
    file: &str,
) -> Result<ImportSummary, BatchError> {
    let started_at = Utc::now();
    let format =
        Format::of(file).ok_or_else(|| BatchError::Invalid(format!("{file}: unknown format")))?;
    let body = source.read(&*ctx.lake, file).await?;
    let bytes_read = body.len() as u64;
    let id = file_id(file);
    let (file_owned, received_at_us) = (file.to_owned(), started_at.timestamp_micros());
    let (partitions, invalid) = tokio::task::spawn_blocking(move || {
        let mut partitions: BTreeMap<RawPartition, Vec<Event>> = BTreeMap::new();
        let mut invalid = Vec::new();
        for row in source::rows(format, &body) {
            let fallback = format!("import-{id}-{}", row.line);
            let parsed = row.fields.and_then(|fields| {
                record::event_of(&fields, tenant_id, site, &fallback).map_err(str::to_owned)
            });
            let partition = parsed.and_then(|e| {
                RawPartition::of_event(tenant_id, e.timestamp_us)
                    .map(|p| (p, e))
                    .map_err(|_| "invalid_timestamp".to_owned())
            });
            match partition {
                Ok((p, e)) => partitions.entry(p).or_default().push(e),
                Err(reason) => invalid.push(InvalidEvent {
                    tenant_id,
                    site_id: site.unwrap_or(0),
                    reason,
                    detail: format!("{file_owned}:{}", row.line),
                    raw: row.text.into_bytes().into(),
                    received_at_us,
                    message_id: String::new(),
                }),
            }
        }
        (partitions, invalid)
    })
    .await?;
    let mut summary = ImportSummary {
        files: 1,
        rejected: invalid.len() as u64,
        ..ImportSummary::default()
    };
    let mut bytes_written = 0;
    let max = ctx.settings.max_rows_per_file.max(1);
    for (partition, events) in partitions {
        for (n, chunk) in events.chunks(max).enumerate() {
            let key = partition.key(&part_id([format!("import:{file}:{n}").as_str()]));
            let body = sightline_lake::parquet::events_to_parquet(chunk)?;
            bytes_written += body.len() as u64;
            ctx.lake.put(&key, body).await?;
            summary.rows += chunk.len() as u64;
            summary.keys.push(key);
        }
    }
    if !invalid.is_empty() {
        let key = format!(
            "{IMPORT_ERRORS}/tenant={tenant_id}/part-{}.parquet",
            file_id(file)
        );
        let body = sightline_lake::parquet::invalid_to_parquet(&invalid)?;
        bytes_written += body.len() as u64;
        ctx.lake.put(&key, body).await?;
        summary.keys.push(key);
        warn!(file, rejected = invalid.len(), "rows refused");
    }
    let stage = format!("import/{file}");
    let report = succeeded(
        run,
        stage,
        tenant_id,
        &summary,
        started_at,
        bytes_read,
        bytes_written,
    );
    ctx.ledger.report_stage(report).await;
    Ok(summary)
}

/// The ledger's record of an import stage that ended now, having done what `summary` says.
fn succeeded(
    run: &runs::Run,
    stage: String,
    tenant_id: i64,
    summary: &ImportSummary,
    started_at: DateTime<Utc>,
    bytes_read: u64,
    bytes_written: u64,
) -> StageReport {
    StageReport {
        run_id: run.run_id,
        stage,
        attempt: run.attempt,
        tenant_id: Some(tenant_id),
        rows_read: summary.rows + summary.rejected,
        rows_written: summary.rows,
        rows_rejected: summary.rejected,
        bytes_read,
        bytes_written,
        started_at,
        finished_at: Utc::now(),
        status: Status::Succeeded,
        error: None,
    }
}

/// Reference data: every row of every file, one text column per field name, reported to the
/// ledger as the stage `reference/NAME`.
async fn import_reference(
    ctx: &Arc<Context>,
    run: &runs::Run,
    tenant_id: i64,
    name: &str,
    source: &Source,
    files: &[String],
) -> Result<ImportSummary, BatchError> {
    let started_at = Utc::now();
    let stage = format!("reference/{name}");
    match write_reference(ctx, tenant_id, name, source, files).await {
        Ok((summary, bytes_read, bytes_written)) => {
            let report = succeeded(
                run,
                stage,
                tenant_id,
                &summary,
                started_at,
                bytes_read,
                bytes_written,
            );
            ctx.ledger.report_stage(report).await;
            Ok(summary)
        }
        Err(error) => {
            let report = StageReport::failed(run, stage, Some(tenant_id), started_at, &error);
            ctx.ledger.report_stage(report).await;
            Err(error)
        }
    }
}

/// Writes reference dataset `name` from `files`; returns what it did, the bytes read and the
/// bytes written.
async fn write_reference(
    ctx: &Arc<Context>,
    tenant_id: i64,
    name: &str,
    source: &Source,
    files: &[String],
) -> Result<(ImportSummary, u64, u64), BatchError> {
    let mut rows = Vec::new();
    let mut rejected = 0;
    let mut bytes_read = 0;
    for file in files {
        let format = Format::of(file)
            .ok_or_else(|| BatchError::Invalid(format!("{file}: unknown format")))?;
        let body = source.read(&*ctx.lake, file).await?;
        bytes_read += body.len() as u64;
        for row in source::rows(format, &body) {
            match row.fields {
                Ok(fields) => rows.push(fields),
                Err(_) => rejected += 1,
            }
        }
    }
    let mut names: Vec<String> = rows.iter().flat_map(|r| r.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let columns: Vec<ArrayRef> = names
        .iter()
        .map(|n| {
            Arc::new(
                rows.iter()
                    .map(|r| {
                        r.get(n).map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    })
                    .collect::<StringArray>(),
            ) as ArrayRef
        })
        .collect();
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema, columns)?;
    let prefix = format!("{REFERENCE}/{name}/tenant={tenant_id}/");
    let key = format!("{prefix}part-0000.parquet");
    let body = sightline_lake::parquet::write_parquet(&batch)?;
    let bytes_written = body.len() as u64;
    ctx.lake.put(&key, body).await?;
    for old in ctx.lake.list(&prefix).await? {
        if old != key {
            ctx.lake.delete(&old).await?;
        }
    }
    let summary = ImportSummary {
        files: files.len(),
        rows: rows.len() as u64,
        rejected,
        keys: vec![key],
    };
    Ok((summary, bytes_read, bytes_written))
}
