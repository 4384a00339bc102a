//! What the ingest integration tests share: a real PostgreSQL database and a RabbitMQ namespace
//! of their own, ingest running in-process on `127.0.0.1:0`, and helpers to read what reached
//! the queues. A missing PostgreSQL or RabbitMQ fails the test loudly.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::TcpListener,
    time::{Duration, Instant},
};

use lapin::{Connection, ConnectionProperties};
use prost::Message as _;
use sightline_broker::Subscription as _;
use sightline_db::{NewSite, PgStore, Sites, Tenants, WriteKeys};
use sightline_kit::Shutdown;
use sightline_proto::events::v1::{EventBatch, InvalidEventBatch};
use sightline_testkit::unique;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PARTITIONS: u32 = 4;

/// One test's ingest, with its own database and broker namespace.
pub struct TestIngest {
    pub base: String,
    pub admin: String,
    pub key: String,
    pub tenant_id: i64,
    pub site_id: i64,
    pub namespace: String,
    pub database: String,
    pub store: PgStore,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    pub http: reqwest::Client,
}

/// Options a test may change.
#[derive(Default)]
pub struct Options {
    /// The broker URL (a proxy in outage tests).
    pub amqp_url: Option<String>,
    /// Extra `SIGHTLINE__…` settings.
    pub env: Vec<(&'static str, String)>,
    /// The write key's own rate.
    pub key_rate: Option<i32>,
    /// Issue the write key only once ingest is running (it starts with no key at all).
    pub key_after_start: bool,
}

impl TestIngest {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let namespace = unique("t_ingest");
        let database = namespace.clone();
        let mut env: HashMap<String, String> = [
            ("SIGHTLINE__DATABASE__URL", format!("{PG}/{database}")),
            (
                "SIGHTLINE__BROKER__URL",
                options.amqp_url.unwrap_or_else(|| AMQP.to_string()),
            ),
            ("SIGHTLINE__BROKER__NAMESPACE", namespace.clone()),
            ("SIGHTLINE__BROKER__PARTITIONS", PARTITIONS.to_string()),
            (
                "SIGHTLINE__BROKER__RECONNECT_BACKOFF_MAX_MS",
                "500".to_string(),
            ),
            ("SIGHTLINE__INGEST__WORKERS", "2".to_string()),
            ("SIGHTLINE__INGEST__KEY_REFRESH_MS", "100".to_string()),
            ("SIGHTLINE__INGEST__PUBLISH_TIMEOUT_MS", "2000".to_string()),
            ("SIGHTLINE__INGEST__SHUTDOWN_GRACE_MS", "5000".to_string()),
            (
                "SIGHTLINE__INGEST__VISITOR_SALT_SECRET",
                "test-secret".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in options.env {
            env.insert(k.to_string(), v);
        }
        let config = ingest::Config::load(&ingest::Config::loader().env_map(env))
            .expect("test configuration is valid");

        let store = PgStore::migrate(&config.database)
            .await
            .expect("PostgreSQL must run at 127.0.0.1:5432 (trust auth, user postgres)");
        let tenant = store.create_tenant("acme", "Acme").await.unwrap();
        let site = store
            .create_site(NewSite {
                tenant_id: tenant.id,
                domain: "shop.example".into(),
                time_zone: "Europe/Paris".into(),
                currency: "EUR".into(),
            })
            .await
            .unwrap();
        let issue_key = || store.issue_write_key(tenant.id, site.id, options.key_rate);
        let early_key = match options.key_after_start {
            false => Some(issue_key().await.unwrap()),
            true => None,
        };

        let http_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", http_listener.local_addr().unwrap());
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(ingest::run(
            config,
            ingest::Listeners {
                http: http_listener,
                admin: admin_listener,
            },
            shutdown.clone(),
        ));
        let mut this = Self {
            base,
            admin,
            key: early_key.map(|k| k.key).unwrap_or_default(),
            tenant_id: tenant.id,
            site_id: site.id,
            namespace,
            database,
            store,
            shutdown,
            task,
            http: reqwest::Client::new(),
        };
        assert!(
            this.wait_ready(true, Duration::from_secs(20)).await,
            "ingest did not become ready: is RabbitMQ running at 127.0.0.1:5672?"
        );
        if this.key.is_empty() {
            this.key = this
                .store
                .issue_write_key(this.tenant_id, this.site_id, options.key_rate)
                .await
                .unwrap()
                .key;
        }
        this
    }

    /// Waits until `/readyz` answers ready (or not ready, when `ready` is false).
    pub async fn wait_ready(&self, ready: bool, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.admin)).send().await
                && r.status().is_success() == ready
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with the write key as HTTP Basic user.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .basic_auth(&self.key, Some(""))
            .json(body)
            .send()
            .await
            .expect("ingest answers")
    }

    pub fn topology(&self) -> sightline_broker::Topology {
        sightline_broker::Topology {
            namespace: self.namespace.clone(),
            partitions: PARTITIONS,
            consumer_groups: vec!["rollup".into(), "archive".into()],
        }
    }

    /// Every message now in one consumer group's partition queues, by partition.
    pub async fn drain_group_messages(&self, group: &str) -> Vec<(u32, Drained)> {
        let topology = self.topology();
        let mut out = Vec::new();
        for p in 0..PARTITIONS {
            for message in drain_queue(&topology.partition_queue(group, p)).await {
                out.push((p, message));
            }
        }
        out
    }

    /// Every batch now in one consumer group's partition queues, by partition.
    pub async fn drain_group(&self, group: &str) -> Vec<(u32, EventBatch)> {
        self.drain_group_messages(group)
            .await
            .into_iter()
            .map(|(p, m)| {
                (
                    p,
                    EventBatch::decode(m.payload.as_slice()).expect("an EventBatch"),
                )
            })
            .collect()
    }

    /// Every invalid-event batch now in the invalid queue.
    pub async fn drain_invalid(&self) -> Vec<InvalidEventBatch> {
        drain_queue(&self.topology().invalid_queue())
            .await
            .iter()
            .map(|m| InvalidEventBatch::decode(m.payload.as_slice()).expect("an InvalidEventBatch"))
            .collect()
    }

    /// Stops ingest, then deletes the test's queues and database.
    pub async fn finish(self) {
        let topology = self.topology();
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        sightline_testkit::delete_topology(&topology).await;
        self.store.pool().close().await;
        drop_database(&self.database).await;
    }
}

/// A message taken off a queue by [`drain_queue`].
pub struct Drained {
    pub payload: Vec<u8>,
    pub kind: Option<String>,
    pub traceparent: Option<String>,
}

/// Takes every message from a queue, acknowledging each; stops once the queue stays quiet.
/// (Quorum queues with a single active consumer refuse `basic.get`, so this consumes.)
pub async fn drain_queue(queue: &str) -> Vec<Drained> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (guest/guest)");
    let mut sub =
        sightline_broker::rabbitmq::consume(&conn, queue, "test-drain", 500, "unused.dlx")
            .await
            .expect("queue exists");
    let mut out = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(300), sub.next()).await
    {
        let delivery = delivery.expect("a delivery");
        delivery.ack().await.unwrap();
        out.push(Drained {
            payload: delivery.payload,
            kind: delivery.kind,
            traceparent: delivery.traceparent,
        });
    }
    drop(sub);
    let _ = conn.close(200, "drained".into()).await;
    out
}

async fn drop_database(name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{PG}/postgres")).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
}

/// A Segment track call as analytics-node sends it.
pub fn track(user: &str, event: &str, message_id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "track",
        "event": event,
        "userId": user,
        "messageId": message_id,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": {"revenue": 19.99, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]},
        "context": {"library": {"name": "analytics-node", "version": "6.2.0"}, "ip": "203.0.113.77"},
        "integrations": {"All": true}
    })
}
