//! `ExecuteSql`: read-only SQL over one tenant's lake tables with DataFusion, streamed back as
//! pages of Arrow IPC.
//!
//! Each query gets its own session holding only the caller's tables: `events` over
//! `raw/events/tenant=T/` (Hive partitions `date` and `hour` become string columns), and
//! `trusted_events` over `trusted/events/tenant=T/` when the batch layer has written it. Nothing
//! else of the lake is reachable: DDL (`CREATE EXTERNAL TABLE … LOCATION`), DML (`COPY`,
//! `INSERT`) and statements (`SET`) are refused, and URL tables are off.
//!
//! What does not depend on the query is kept between queries, for `query.sql.listing_ttl_ms`:
//! each tenant's table definitions (so the trusted schema is not inferred again), and, in one
//! DataFusion runtime shared by every session, each table's object listing, the Parquet footers
//! and the per-file statistics (footers and statistics are checked against the listed size and
//! modification time). Sessions themselves are never shared: their catalogs are per query, so no
//! tenant's tables are ever visible to another's query.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use datafusion::{
    arrow::{datatypes::DataType, ipc::writer::StreamWriter, record_batch::RecordBatch},
    datasource::{
        file_format::parquet::ParquetFormat,
        listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl},
    },
    error::DataFusionError,
    execution::{
        cache::cache_manager::CacheManagerConfig,
        context::{SQLOptions, SessionConfig, SessionContext},
        runtime_env::{RuntimeEnv, RuntimeEnvBuilder},
    },
};
use futures_util::StreamExt;
use object_store::{ObjectStore, path::Path};
use quick_cache::sync::Cache;
use sightline_lake::{
    arrow_store::{LAKE_URL, table_url},
    schema::raw_event_schema,
};
use sightline_proto::query::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{QueryError, config::SqlConfig, metrics::QueryMetrics, service::SqlPages};

/// Runs SQL over the lake.
#[derive(Clone)]
pub struct SqlEngine {
    store: Arc<dyn ObjectStore>,
    /// Object store registry and caches, shared by every session (never the catalogs).
    runtime: Arc<RuntimeEnv>,
    /// Each tenant's table definitions, with when they were made.
    tables: Arc<Cache<i64, TenantTables>>,
    config: SqlConfig,
    metrics: QueryMetrics,
}

/// The tables a tenant's sessions hold.
#[derive(Clone)]
struct TenantTables {
    events: Arc<ListingTable>,
    trusted_events: Option<Arc<ListingTable>>,
    made: Instant,
}

fn planning(e: DataFusionError) -> QueryError {
    match e {
        DataFusionError::ObjectStore(e) => QueryError::Lake(e.to_string()),
        DataFusionError::IoError(e) => QueryError::Lake(e.to_string()),
        other => QueryError::InvalidArgument(format!("sql: {}", other.strip_backtrace())),
    }
}

fn status(e: QueryError) -> Status {
    Status::from(e)
}

impl SqlEngine {
    /// An engine over `store` (the lake, see `sightline_lake::arrow_store`), keeping the table
    /// definitions of up to `tenants` tenants.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        config: SqlConfig,
        tenants: usize,
        metrics: QueryMetrics,
    ) -> Result<Self, QueryError> {
        let ttl = config.listing_ttl();
        // DataFusion keeps listings forever unless told otherwise; none at all when the TTL is 0.
        let caches = if ttl.is_zero() {
            CacheManagerConfig::default().with_list_files_cache_limit(0)
        } else {
            CacheManagerConfig::default().with_list_files_cache_ttl(Some(ttl))
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()
            .map_err(|e| QueryError::Internal(format!("sql runtime: {e}")))?;
        let url = url::Url::parse(LAKE_URL).map_err(|e| QueryError::Internal(e.to_string()))?;
        runtime.register_object_store(&url, store.clone());
        Ok(Self {
            store,
            runtime,
            tables: Arc::new(Cache::new(tenants.max(1))),
            config,
            metrics,
        })
    }

    /// Whether anything lies under `prefix`.
    async fn exists(&self, prefix: &str) -> Result<bool, QueryError> {
        let path = Path::from(prefix);
        let mut list = self.store.list(Some(&path));
        match list.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(QueryError::Lake(e.to_string())),
        }
    }

    /// A session that sees only `tenant_id`'s tables.
    async fn session(&self, tenant_id: i64) -> Result<SessionContext, QueryError> {
        let tables = self.tables_of(tenant_id).await?;
        let config = SessionConfig::new().with_information_schema(false);
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        ctx.register_table("events", tables.events)
            .map_err(planning)?;
        if let Some(trusted) = tables.trusted_events {
            ctx.register_table("trusted_events", trusted)
                .map_err(planning)?;
        }
        Ok(ctx)
    }

    /// `tenant_id`'s table definitions, made again once older than the listing TTL (the
    /// trusted table appears, or its schema changes).
    async fn tables_of(&self, tenant_id: i64) -> Result<TenantTables, QueryError> {
        if let Some(hit) = self.tables.get(&tenant_id)
            && hit.made.elapsed() < self.config.listing_ttl()
        {
            return Ok(hit);
        }
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), self.runtime.clone());
        let raw = format!("raw/events/tenant={tenant_id}/");
        let events = self.table(&ctx, &raw, &["date", "hour"], true).await?;
        let trusted = format!("trusted/events/tenant={tenant_id}/");
        let trusted_events = if self.exists(&trusted).await? {
            Some(self.table(&ctx, &trusted, &["date"], false).await?)
        } else {
            None
        };
        let tables = TenantTables {
            events,
            trusted_events,
            made: Instant::now(),
        };
        self.tables.insert(tenant_id, tables.clone());
        Ok(tables)
    }

    /// A Parquet table over `prefix` with Hive `partitions`.
    async fn table(
        &self,
        ctx: &SessionContext,
        prefix: &str,
        partitions: &[&str],
        raw_schema: bool,
    ) -> Result<Arc<ListingTable>, QueryError> {
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                partitions
                    .iter()
                    .map(|p| (p.to_string(), DataType::Utf8))
                    .collect(),
            );
        let url = ListingTableUrl::parse(table_url(prefix)).map_err(planning)?;
        let config = ListingTableConfig::new(url).with_listing_options(options.clone());
        // The raw schema is known, so a tenant without events yet gets an empty table; the
        // trusted tables are the batch layer's, read as written.
        let config = if raw_schema {
            config.with_schema(raw_event_schema())
        } else {
            let schema = options
                .infer_schema(
                    &ctx.state(),
                    config.table_paths.first().ok_or_else(|| {
                        QueryError::Internal("a listing table without a path".into())
                    })?,
                )
                .await
                .map_err(planning)?;
            config.with_schema(schema)
        };
        Ok(Arc::new(ListingTable::try_new(config).map_err(planning)?))
    }

    /// Plans `request.sql` for `tenant_id` and streams its pages. Planning errors are returned
    /// at once; errors while running end the stream.
    pub async fn execute(
        &self,
        tenant_id: i64,
        request: &pb::SqlRequest,
    ) -> Result<SqlPages, QueryError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.timeout_ms);
        let page_rows = match request.page_size {
            0 => self.config.page_rows,
            n if n < 0 => {
                return Err(QueryError::InvalidArgument(
                    "page_size: must not be negative".into(),
                ));
            }
            n => n.unsigned_abs().min(self.config.page_rows),
        } as usize;
        let max_rows = self.config.max_rows;
        let timeout_ms = self.config.timeout_ms;
        let planned = async {
            let ctx = self.session(tenant_id).await?;
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let frame = ctx
                .sql_with_options(&request.sql, options)
                .await
                .map_err(planning)?;
            // One row over the limit tells a cut result from one that fits exactly.
            let limit = usize::try_from(max_rows.saturating_add(1)).unwrap_or(usize::MAX);
            let frame = frame.limit(0, Some(limit)).map_err(planning)?;
            frame.execute_stream().await.map_err(planning)
        };
        let mut stream = tokio::time::timeout_at(deadline.into(), planned)
            .await
            .map_err(|_| QueryError::Deadline(timeout_ms))??;
        let schema = stream.schema();
        let columns: Vec<pb::Column> = schema
            .fields()
            .iter()
            .map(|f| pb::Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect();

        let (tx, rx) = mpsc::channel::<Result<pb::SqlPage, Status>>(2);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0usize;
            let mut sent: u64 = 0;
            let mut columns = Some(columns);
            loop {
                let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
                let batch = match next {
                    Err(_) => {
                        let _ = tx.send(Err(status(QueryError::Deadline(timeout_ms)))).await;
                        return;
                    }
                    Ok(Some(Err(e))) => {
                        let _ = tx.send(Err(status(planning(e)))).await;
                        return;
                    }
                    Ok(Some(Ok(batch))) => Some(batch),
                    Ok(None) => None,
                };
                let done = batch.is_none();
                if let Some(batch) = batch {
                    pending_rows += batch.num_rows();
                    pending.push(batch);
                }
                // Pages of page_rows rows, the last one whatever is left; an empty result
                // still gets one page (with the columns).
                loop {
                    let remaining = max_rows.saturating_sub(sent);
                    let over = pending_rows as u64 > remaining;
                    if !(pending_rows >= page_rows || over || done) {
                        break;
                    }
                    let take = pending_rows
                        .min(page_rows)
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let (rows, ipc) = match cut(&schema, &mut pending, &mut pending_rows, take) {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    };
                    sent += rows as u64;
                    let truncated = over && sent == max_rows;
                    let last = truncated || (done && pending_rows == 0);
                    metrics.sql_rows.inc_by(rows as u64);
                    let message = pb::SqlPage {
                        columns: columns.take().unwrap_or_default(),
                        arrow_ipc: ipc,
                        rows: rows as i64,
                        truncated,
                        last,
                    };
                    if tx.send(Ok(message)).await.is_err() || last {
                        // The caller went away, or this was the last page.
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Takes `take` rows off the front of `pending` and encodes them as one Arrow IPC stream.
fn cut(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    pending: &mut Vec<RecordBatch>,
    pending_rows: &mut usize,
    take: usize,
) -> Result<(usize, Vec<u8>), QueryError> {
    let mut parts = Vec::new();
    let mut left = take;
    while left > 0 && !pending.is_empty() {
        let batch = pending.remove(0);
        if batch.num_rows() <= left {
            left -= batch.num_rows();
            parts.push(batch);
        } else {
            parts.push(batch.slice(0, left));
            pending.insert(0, batch.slice(left, batch.num_rows() - left));
            left = 0;
        }
    }
    *pending_rows -= take - left;
    let joined = datafusion::arrow::compute::concat_batches(schema, &parts)
        .map_err(|e| QueryError::Internal(format!("joining result batches: {e}")))?;
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, schema)
            .map_err(|e| QueryError::Internal(format!("encoding Arrow IPC: {e}")))?;
        writer
            .write(&joined)
            .and_then(|()| writer.finish())
            .map_err(|e| QueryError::Internal(format!("encoding Arrow IPC: {e}")))?;
    }
    Ok((take - left, bytes))
}
