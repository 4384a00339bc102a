//! What the binary's end-to-end tests share: a database and broker namespace of their own, and
//! the real `sightline` binary run against them.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub struct Env {
    pub database: String,
    pub namespace: String,
}

impl Env {
    pub fn new() -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Self {
            database: format!("t_cli_{id}"),
            namespace: format!("t_cli_{id}"),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sightline"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "SIGHTLINE__DATABASE__URL",
                format!("{PG}/{}", self.database),
            )
            .env("SIGHTLINE__BROKER__NAMESPACE", &self.namespace)
            .env("SIGHTLINE__BROKER__PARTITIONS", "2")
            .env("SIGHTLINE__TELEMETRY__LOG_LEVEL", "warn");
        c
    }

    /// Runs `sightline` with a command line of space-separated arguments.
    pub fn run(&self, line: &str) -> Output {
        let args: Vec<&str> = line.split_whitespace().collect();
        self.command(&args).output().expect("the binary runs")
    }

    /// Runs a command that must succeed and print JSON.
    pub fn json(&self, line: &str) -> Value {
        let out = self.run(line);
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// Deletes the test's queues, exchanges and database.
    pub async fn finish(&self) {
        sightline_testkit::delete_topology(&sightline_broker::Topology {
            namespace: self.namespace.clone(),
            partitions: 2,
            consumer_groups: vec!["rollup".into(), "archive".into()],
        })
        .await;
        self.drop_database().await;
    }

    pub async fn drop_database(&self) {
        use sqlx::Connection as _;
        if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{PG}/postgres")).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            )))
            .execute(&mut c)
            .await;
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `GET /readyz` on `127.0.0.1:port` answers 200; fails the test after `within`.
pub async fn wait_ready(client: &reqwest::Client, port: u16, within: Duration) {
    let until = Instant::now() + within;
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < until, "port {port} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
