//! What the archive tests share: a broker namespace, a fresh database and a fresh bucket per
//! test on the real RabbitMQ, PostgreSQL and S3 server; the stream processor booted in-process
//! with only the archive group; DuckDB reading back what reached the lake. A missing service
//! fails loudly.

#![allow(dead_code)]

pub mod batches;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use lapin::{Connection, ConnectionProperties};
use prost::Message as _;
use sightline_broker::{Message, Publisher, Route, Topology, rabbitmq::RabbitPublisher};
use sightline_db::PgStore;
use sightline_kit::{HealthRegistry, Shutdown, telemetry::Metrics};
use sightline_lake::ObjectStore;
use sightline_proto::events::v1::{EventBatch, InvalidEventBatch};
use sightline_testkit::{
    TestBucket, drop_database, duckdb, fresh_bucket, fresh_database, http::get_status, unique,
};
use stream_processor::{
    Config, Listeners,
    archive::{EVENT_BATCH, INVALID_EVENT_BATCH, RawArchiveSink},
    metrics::StreamMetrics,
};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Partitions of the test topology (`SIGHTLINE__BROKER__PARTITIONS` below).
pub const PARTITIONS: u32 = 2;

/// Everything one test owns.
pub struct World {
    pub namespace: String,
    pub database_url: String,
    pub bucket: TestBucket,
    pub store: PgStore,
    pub publisher: RabbitPublisher,
    /// Extra `SIGHTLINE__…` settings of every service this world starts.
    pub env: Vec<(String, String)>,
}

/// How one service start differs from the default.
#[derive(Default)]
pub struct Start {
    /// The database URL the service uses (a proxy's), instead of the world's.
    pub database_url: Option<String>,
    /// The S3 endpoint the service uses (a proxy's), instead of the server itself.
    pub s3_endpoint: Option<String>,
}

impl World {
    /// A world with default settings.
    pub async fn new() -> Self {
        Self::with_env(&[]).await
    }

    /// A world whose services also get `env`.
    pub async fn with_env(env: &[(&str, &str)]) -> Self {
        let namespace = unique("t_archive");
        let database_url = fresh_database("t_archive").await;
        let bucket = fresh_bucket().await;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = config(&namespace, &database_url, &bucket, &env, &Start::default());
        let store = PgStore::connect_lazy(&config.database).unwrap();
        // Declares the topology on connect, so messages published before the service starts
        // wait in their queues.
        let publisher = RabbitPublisher::start(
            &config.broker,
            "t-archive-publisher",
            HealthRegistry::new().register("broker"),
        );
        World {
            namespace,
            database_url,
            bucket,
            store,
            publisher,
            env,
        }
    }

    /// The service's settings for `start`.
    pub fn config(&self, start: &Start) -> Config {
        config(
            &self.namespace,
            &self.database_url,
            &self.bucket,
            &self.env,
            start,
        )
    }

    pub fn topology(&self) -> Topology {
        self.config(&Start::default()).broker.topology()
    }

    /// Boots the stream processor in this process.
    pub async fn start(&self, start: Start) -> Running {
        let config = self.config(&start);
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = admin.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(stream_processor::run(
            config,
            Listeners { admin },
            shutdown.clone(),
        ));
        let running = Running {
            admin: addr,
            shutdown,
            task,
        };
        running
            .wait_status(200, Duration::from_secs(30))
            .await
            .expect("the archive consumers did not become ready (is RabbitMQ running?)");
        running
    }

    /// A sink on partition `partition`'s queue, driven by the test instead of a consumer.
    pub fn sink(&self, partition: u32, lake: Arc<dyn ObjectStore>) -> RawArchiveSink {
        let config = self.config(&Start::default());
        RawArchiveSink::new(
            self.topology().partition_queue("archive", partition),
            Arc::new(self.store.clone()),
            lake,
            config.stream.archive,
            StreamMetrics::register(&Metrics::new()),
        )
    }

    /// Publishes with confirms, message id = batch id.
    pub async fn publish_message(
        &self,
        route: Route,
        id: &str,
        kind: &'static str,
        payload: Vec<u8>,
    ) {
        let message = Message {
            route,
            id: id.to_string(),
            kind,
            payload: payload.into(),
            traceparent: None,
        };
        self.publisher
            .publish(&message, Instant::now() + Duration::from_secs(10))
            .await
            .expect("RabbitMQ confirms");
    }

    /// Publishes an event batch to its partition queue.
    pub async fn publish(&self, batch: &EventBatch) {
        self.publish_message(
            Route::Partition(batch.partition),
            &batch.batch_id,
            EVENT_BATCH,
            batch.encode_to_vec(),
        )
        .await;
    }

    /// Publishes an invalid-event batch to the invalid queue.
    pub async fn publish_invalid(&self, batch: &InvalidEventBatch) {
        self.publish_message(
            Route::Invalid,
            &batch.batch_id,
            INVALID_EVENT_BATCH,
            batch.encode_to_vec(),
        )
        .await;
    }

    /// Raw events as DuckDB reads them from the bucket, one JSON object per row.
    pub async fn raw_rows(&self) -> Vec<duckdb::Row> {
        self.try_raw_rows()
            .await
            .expect("DuckDB reads the raw events")
    }

    /// Like [`Self::raw_rows`], but an object listed and then deleted before DuckDB read it (a
    /// restarted service cleaning up an unfinished flush) is an error to retry, not a failure.
    async fn try_raw_rows(&self) -> anyhow::Result<Vec<duckdb::Row>> {
        if self.bucket.keys("raw/events/").await.is_empty() {
            return Ok(Vec::new());
        }
        duckdb::query_store(&self.bucket.store, "raw/events/", RAW_SQL).await
    }

    /// Polls until DuckDB sees `n` distinct event ids in `raw/` (or fails at the deadline).
    pub async fn wait_for_events(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = match self.try_raw_rows().await {
                Ok(rows) => rows,
                // The bucket changed under the reader: read again.
                Err(error) if Instant::now() < deadline => {
                    eprintln!("reading the lake again: {error:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(error) => panic!("DuckDB reads the raw events: {error:#}"),
            };
            let mut ids: Vec<&str> = rows
                .iter()
                .map(|r| r["message_id"].as_str().unwrap())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events reached the lake",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ledger rows: (pending flushes, stored flushes, recorded batches).
    pub async fn ledger(&self) -> (i64, i64, i64) {
        let pool = self.store.pool();
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap()
        };
        (
            count("SELECT count(*) FROM archive_flushes WHERE state = 'pending'").await,
            count("SELECT count(*) FROM archive_flushes WHERE state = 'stored'").await,
            count("SELECT count(*) FROM archive_batches").await,
        )
    }

    /// Messages ready in a queue (unacknowledged ones come back once their consumer is gone).
    pub async fn ready_messages(&self, queue: &str) -> u32 {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run at 127.0.0.1:5672 (guest/guest)");
        let channel = conn.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "counted".into()).await;
        q.message_count()
    }

    /// Deletes the test's queues, exchanges, database and bucket.
    pub async fn finish(self) {
        self.publisher.close().await;
        let topology = self.topology();
        sightline_testkit::delete_topology(&topology).await;
        self.store.pool().close().await;
        drop_database(&self.database_url).await;
        self.bucket.delete().await;
    }
}

/// The service's settings: archive group only, small bounds and intervals, then `env`.
fn config(
    namespace: &str,
    database_url: &str,
    bucket: &TestBucket,
    extra: &[(String, String)],
    start: &Start,
) -> Config {
    let database_url = start.database_url.as_deref().unwrap_or(database_url);
    let mut env: HashMap<String, String> = [
        ("SIGHTLINE__DATABASE__URL", database_url),
        ("SIGHTLINE__DATABASE__CONNECT_TIMEOUT_MS", "1000"),
        ("SIGHTLINE__BROKER__URL", AMQP),
        ("SIGHTLINE__BROKER__NAMESPACE", namespace),
        ("SIGHTLINE__BROKER__PARTITIONS", "2"),
        ("SIGHTLINE__BROKER__CONSUMER_GROUPS", "archive"),
        ("SIGHTLINE__BROKER__RECONNECT_BACKOFF_MAX_MS", "500"),
        ("SIGHTLINE__STREAM__GROUPS", "archive"),
        ("SIGHTLINE__STREAM__ADMIN_LISTEN", "127.0.0.1:0"),
        ("SIGHTLINE__STREAM__RETRY_BACKOFF_MIN_MS", "50"),
        ("SIGHTLINE__STREAM__RETRY_BACKOFF_MAX_MS", "500"),
        ("SIGHTLINE__STREAM__SHUTDOWN_GRACE_MS", "5000"),
        ("SIGHTLINE__STREAM__ARCHIVE__FLUSH_INTERVAL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let endpoint = start
        .s3_endpoint
        .as_deref()
        .unwrap_or(sightline_testkit::S3_ENDPOINT);
    env.extend(bucket.env(endpoint));
    env.extend(extra.iter().cloned());
    Config::load(&Config::loader().env_map(env)).expect("valid test configuration")
}

/// Every raw event with its Hive partition columns and the file it is in; times as µs.
pub const RAW_SQL: &str = "SELECT tenant, CAST(date AS VARCHAR) AS date, CAST(hour AS INTEGER) AS hour, \
     filename, message_id, tenant_id, site_id, type, name, anonymous_id, user_id, visitor_id, \
     epoch_us(timestamp) AS timestamp_us, epoch_us(original_timestamp) AS original_timestamp_us, \
     epoch_us(sent_at) AS sent_at_us, epoch_us(received_at) AS received_at_us, \
     page_url, context, properties, traits \
     FROM read_parquet('raw/events/**/*.parquet', hive_partitioning = true, filename = true)";

/// The stream processor running in this process.
pub struct Running {
    pub admin: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), stream_processor::StreamError>>,
}

impl Running {
    /// Polls `/readyz` until it answers `status`; `Err` with the last answer at the deadline.
    pub async fn wait_status(&self, status: u16, within: Duration) -> Result<(), Option<u16>> {
        let deadline = Instant::now() + within;
        loop {
            let got = get_status(self.admin, "/readyz").await;
            if got == Some(status) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(got);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: flushes, acknowledges and stops.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the stream processor stops within its grace period")
            .unwrap()
            .unwrap();
    }
}
