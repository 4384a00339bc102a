//! The testkit against the real local services and DuckDB.

use std::time::Duration;

use bytes::Bytes;
use sightline_lake::{LocalStore, ObjectStore, write_raw_batches};
use sightline_proto::events::v1::{Event, EventBatch};
use sightline_testkit::{drop_database, duckdb, fresh_bucket, fresh_database, proxy::Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn batch(id: &str, events: &[(i64, &str, i64)]) -> EventBatch {
    EventBatch {
        batch_id: id.into(),
        partition: 0,
        created_at_us: 0,
        events: events
            .iter()
            .map(|(tenant, message_id, ts)| Event {
                message_id: (*message_id).into(),
                tenant_id: *tenant,
                site_id: 7,
                visitor_id: "v".into(),
                timestamp_us: *ts,
                received_at_us: *ts,
                properties_json: Bytes::from_static(br#"{"n":1}"#),
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test]
async fn duckdb_reads_a_local_lake_with_its_hive_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    // 2025-03-09T22:30:00Z and one hour later.
    let t0 = 1_741_559_400_000_000;
    write_raw_batches(
        &store,
        &[batch(
            "b1",
            &[(1, "m1", t0), (1, "m2", t0 + 3_600_000_000), (2, "m3", t0)],
        )],
    )
    .await
    .unwrap();
    let rows = duckdb::query_in(
        dir.path(),
        "SELECT tenant, date::VARCHAR AS date, hour, message_id, epoch_us(timestamp) AS ts, \
         properties FROM read_parquet('raw/events/**/*.parquet', hive_partitioning = true) \
         ORDER BY message_id",
    )
    .await
    .unwrap();
    let got: Vec<(i64, String, String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["tenant"].as_i64().unwrap(),
                r["date"].as_str().unwrap().to_string(),
                r["hour"].to_string().trim_matches('"').to_string(),
                r["message_id"].as_str().unwrap().to_string(),
                r["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "2025-03-09".into(), "22".into(), "m1".into(), t0),
            (
                1,
                "2025-03-09".into(),
                "23".into(),
                "m2".into(),
                t0 + 3_600_000_000
            ),
            (2, "2025-03-09".into(), "22".into(), "m3".into(), t0),
        ]
    );
    assert_eq!(rows[0]["properties"], r#"{"n":1}"#);
}

#[tokio::test]
async fn duckdb_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let error = duckdb::query_in(dir.path(), "SELECT * FROM no_such_table")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no_such_table"), "{error}");
}

#[tokio::test]
async fn a_fresh_bucket_is_empty_and_objects_download_for_duckdb() {
    let bucket = fresh_bucket().await;
    assert!(bucket.keys("").await.is_empty());
    write_raw_batches(&bucket.store, &[batch("b1", &[(3, "m1", 0)])])
        .await
        .unwrap();
    let rows = duckdb::query_store(
        &bucket.store,
        "raw/",
        "SELECT tenant, message_id FROM read_parquet('raw/**/*.parquet', hive_partitioning = true)",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["tenant"], 3);
    assert!(fresh_bucket().await.name() != bucket.name());
    bucket.store.delete("x/y").await.unwrap();
    bucket.delete().await;
}

#[tokio::test]
async fn a_fresh_database_is_migrated_and_empty() {
    use sqlx::Connection as _;
    let url = fresh_database("t_testkit").await;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
    c.close().await.unwrap();
    drop_database(&url).await;
    assert!(sqlx::PgConnection::connect(&url).await.is_err());
}

/// An echo server, the proxy's upstream.
async fn echo() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(addr: std::net::SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"ping")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[tokio::test]
async fn the_proxy_forwards_cuts_and_restores() {
    let proxy = Proxy::start(&echo().await.to_string()).await;
    assert!(round_trip(proxy.addr).await);
    // An open connection drops when the proxy is cut.
    let mut open = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    open.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).await.unwrap();
    proxy.cut();
    assert!(!round_trip(proxy.addr).await);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), open.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    proxy.restore();
    assert!(round_trip(proxy.addr).await);
}
