//! What the etl-metrics tests share: the real service booted in-process against a fresh
//! database and its own broker namespace, a ledger gRPC client, `/metrics` scraping, the broker
//! arrangement (partition and dead-letter queues), and a local HTTP receiver for the webhook.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use etl_metrics::{Config, EtlError, Listeners};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicPublishOptions, QueuePurgeOptions},
};
use parking_lot::Mutex;
use serde_json::Value;
use sightline_broker::Topology;
use sightline_kit::Shutdown;
use sightline_proto::pipeline::v1::pipeline_ledger_client::PipelineLedgerClient;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tonic::transport::Channel as GrpcChannel;

/// Partitions of every test namespace.
pub const PARTITIONS: u32 = 2;

/// One test's world: a database, a broker namespace with its queues declared.
pub struct World {
    /// The database URL.
    pub db_url: String,
    /// A pool on it, for arranging and checking.
    pub pool: PgPool,
    /// The broker names.
    pub topology: Topology,
    connection: Connection,
    /// A channel for publishing and purging.
    pub channel: Channel,
}

impl World {
    /// A fresh database and namespace (`prefix` names both).
    pub async fn new(prefix: &str) -> Self {
        let db_url = sightline_testkit::fresh_database(prefix).await;
        let pool = PgPool::connect(&db_url)
            .await
            .expect("connecting to the test database");
        let topology = Topology {
            namespace: sightline_testkit::unique(prefix),
            partitions: PARTITIONS,
            consumer_groups: vec!["rollup".into(), "archive".into()],
        };
        let connection = Connection::connect(
            sightline_testkit::broker::AMQP,
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (scripts/test starts it)");
        let channel = connection.create_channel().await.expect("a channel");
        sightline_broker::rabbitmq::declare_topology(&channel, &topology, 5)
            .await
            .expect("declaring the test topology");
        Self {
            db_url,
            pool,
            topology,
            connection,
            channel,
        }
    }

    /// The environment of a service on this world.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SIGHTLINE__DATABASE__URL", self.db_url.as_str()),
            ("SIGHTLINE__DATABASE__MAX_CONNECTIONS", "4"),
            ("SIGHTLINE__BROKER__NAMESPACE", &self.topology.namespace),
            ("SIGHTLINE__BROKER__PARTITIONS", "2"),
            ("SIGHTLINE__ETL_METRICS__GRPC_LISTEN", "127.0.0.1:0"),
            ("SIGHTLINE__ETL_METRICS__ADMIN_LISTEN", "127.0.0.1:0"),
            ("SIGHTLINE__ETL_METRICS__EVALUATE_INTERVAL_MS", "100"),
            ("SIGHTLINE__ETL_METRICS__LOAD_INTERVAL_MS", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Publishes `n` messages straight into `queue`.
    pub async fn publish(&self, queue: &str, n: usize) {
        for i in 0..n {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    format!("test message {i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publishing")
                .await
                .expect("the broker's confirm");
        }
    }

    /// Empties `queue`.
    pub async fn purge(&self, queue: &str) {
        self.channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .expect("purging");
    }

    /// Deletes the namespace and the database.
    pub async fn cleanup(self) {
        sightline_broker::rabbitmq::delete_topology(&self.connection, &self.topology).await;
        let _ = self.connection.close(200, "done".into()).await;
        self.pool.close().await;
        sightline_testkit::drop_database(&self.db_url).await;
    }
}

/// The service running in this process.
pub struct Service {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), EtlError>>,
}

impl Service {
    /// Boots etl-metrics with `env` (a [`World::env`] plus overrides) and waits until ready.
    pub async fn start(env: Vec<(String, String)>) -> Self {
        let env: HashMap<String, String> = env.into_iter().collect();
        let config = Config::load(&Config::loader().env_map(env)).expect("a valid configuration");
        let listeners = Listeners::bind(&config.etl_metrics).expect("binding");
        let grpc = listeners.grpc.local_addr().expect("gRPC address");
        let admin = listeners.admin.local_addr().expect("admin address");
        let shutdown = Shutdown::new();
        let task = tokio::spawn(etl_metrics::run(config, listeners, shutdown.clone()));
        let service = Self {
            grpc,
            admin,
            shutdown,
            task,
        };
        wait_for("the service to be ready", || async {
            sightline_testkit::http::get_status(admin, "/readyz").await == Some(200)
        })
        .await;
        service
    }

    /// `http://` endpoint of the gRPC server.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A ledger client.
    pub async fn client(&self) -> PipelineLedgerClient<GrpcChannel> {
        let channel = tonic::transport::Endpoint::from_shared(self.endpoint())
            .expect("an endpoint")
            .connect()
            .await
            .expect("connecting to the ledger");
        PipelineLedgerClient::new(channel)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await
    }

    /// The value of the series `name{labels}` (labels as written in the exposition, e.g.
    /// `queue="ns.rollup.p0"`), if present.
    pub async fn metric(&self, name: &str, label: &str) -> Option<f64> {
        metric_value(&self.metrics().await, name, label)
    }

    /// Completed evaluations so far.
    pub async fn evaluations(&self) -> f64 {
        self.metric("sightline_etl_evaluations_total", "")
            .await
            .unwrap_or_default()
    }

    /// Waits until `n` more evaluations completed (each reads everything afresh).
    pub async fn wait_evaluations(&self, n: u32) {
        let target = self.evaluations().await + f64::from(n);
        wait_for("evaluations", || async {
            self.evaluations().await >= target
        })
        .await;
    }

    /// Stops the service; it must stop cleanly.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task
            .await
            .expect("the service task")
            .expect("a clean stop");
    }
}

/// First line matching `name` with `label` among its labels, parsed.
pub fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let series = l.split_whitespace().next().unwrap_or_default();
            (series == name || series.starts_with(&format!("{name}{{"))) && series.contains(label)
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Polls `condition` until it holds; panics after a minute (a hung service, not a slow one).
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Body of `GET path` on `addr` (HTTP/1.0).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writing");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("reading");
    let text = String::from_utf8_lossy(&response).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// A webhook receiver: answers 503 to its first `fail_first` posts, 200 to the rest, and
/// keeps the JSON of the posts it accepted.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts listening.
    pub async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        let task = {
            let (accepted, refused) = (accepted.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (accepted, refused) = (accepted.clone(), refused.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, fail_first, accepted, refused).await;
                    });
                }
            })
        };
        Self {
            url,
            accepted,
            refused,
            task,
        }
    }

    /// Posts accepted so far.
    pub fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().clone()
    }

    /// Posts refused so far.
    pub fn refused(&self) -> usize {
        *self.refused.lock()
    }

    /// Accepted posts of `alertname` with `status`.
    pub fn count(&self, alertname: &str, status: &str) -> usize {
        self.accepted()
            .iter()
            .filter(|p| p["status"] == status && p["alerts"][0]["labels"]["alertname"] == alertname)
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    fail_first: usize,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Reads the head, then Content-Length bytes of body (reqwest sends one request per post).
    let body = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break body[..length].to_string();
            }
        }
    };
    let refuse = {
        let mut r = refused.lock();
        let refuse = *r < fail_first;
        if refuse {
            *r += 1;
        }
        refuse
    };
    let status = if refuse {
        "503 Service Unavailable"
    } else {
        accepted
            .lock()
            .push(serde_json::from_str(&body).unwrap_or(Value::Null));
        "200 OK"
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
