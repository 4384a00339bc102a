//! The whole pipeline in one `sightline` process (the newcomer's `sightline all`): events sent
//! over HTTP end up counted in the rollups and archived in the lake exactly once, also when the
//! process is killed with SIGKILL mid-stream and started again.

mod support;

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use support::{Env, PG, free_port, wait_ready};

struct Pipeline {
    child: Child,
    http: u16,
    ingest_admin: u16,
    stream_admin: u16,
}

fn start(env: &Env, lake: &Path) -> Pipeline {
    let (http, ingest_admin, stream_admin) = (free_port(), free_port(), free_port());
    let child = env
        .command(&["all"])
        .env("SIGHTLINE__INGEST__LISTEN", format!("127.0.0.1:{http}"))
        .env(
            "SIGHTLINE__INGEST__ADMIN_LISTEN",
            format!("127.0.0.1:{ingest_admin}"),
        )
        .env(
            "SIGHTLINE__STREAM__ADMIN_LISTEN",
            format!("127.0.0.1:{stream_admin}"),
        )
        .env(
            "SIGHTLINE__QUERY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "SIGHTLINE__QUERY__ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "SIGHTLINE__ETL_METRICS__GRPC_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "SIGHTLINE__ETL_METRICS__ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("SIGHTLINE__INGEST__VISITOR_SALT_SECRET", "e2e-secret")
        .env("SIGHTLINE__LAKE__LOCAL_PATH", lake)
        .env("SIGHTLINE__STREAM__ROLLUP__FLUSH_INTERVAL_MS", "200")
        .env("SIGHTLINE__STREAM__ARCHIVE__FLUSH_INTERVAL_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    Pipeline {
        child,
        http,
        ingest_admin,
        stream_admin,
    }
}

impl Pipeline {
    async fn wait_ready(&self, client: &reqwest::Client) {
        for port in [self.ingest_admin, self.stream_admin] {
            wait_ready(client, port, Duration::from_secs(30)).await;
        }
    }

    /// Sends `count` page views from `request`'s visitors; returns whether ingest accepted them.
    async fn send(
        &self,
        client: &reqwest::Client,
        key: &str,
        request: usize,
        count: usize,
    ) -> bool {
        let batch: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                serde_json::json!({
                    "type": "page",
                    "messageId": format!("e2e-{request}-{i}"),
                    "anonymousId": format!("visitor-{}", (request * count + i) % 17),
                    "properties": {"url": format!("https://s.example/page-{}", i % 5)},
                    "context": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"}
                })
            })
            .collect();
        match client
            .post(format!("http://127.0.0.1:{}/v1/batch", self.http))
            .basic_auth(key, Some(""))
            .json(&serde_json::json!({ "batch": batch }))
            .send()
            .await
        {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean stop exits 0: {status:?}");
    }
}

async fn counted_pageviews(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(pageviews), 0)::bigint FROM rollups \
         WHERE granularity = 'minute' AND dimension = ''",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for_pageviews(pool: &sqlx::PgPool, want: i64) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let n = counted_pageviews(pool).await;
        if n >= want {
            assert_eq!(n, want, "more pageviews counted than accepted");
            return;
        }
        assert!(Instant::now() < until, "{n} of {want} pageviews counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_are_counted_and_archived_once_through_a_sigkill() {
    let env = Env::new();
    assert!(env.run("admin migrate").status.success());
    env.json("admin --json tenant create --slug acme --name Acme");
    let site = env.json("admin --json site create --tenant acme --domain s.example");
    let site_id = site[0]["id"].as_i64().unwrap().to_string();
    let key = env.json(&format!(
        "admin --json write-key issue --tenant acme --site {site_id}"
    ));
    let key = key[0]["key"].as_str().unwrap().to_string();
    let pool = sqlx::PgPool::connect(&format!("{PG}/{}", env.database))
        .await
        .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    const PER_REQUEST: usize = 40;

    let pipeline = start(&env, lake.path());
    pipeline.wait_ready(&client).await;
    let mut accepted = 0;
    for request in 0..5 {
        assert!(pipeline.send(&client, &key, request, PER_REQUEST).await);
        accepted += PER_REQUEST;
    }
    wait_for_pageviews(&pool, accepted as i64).await;

    // More events, then SIGKILL right after the last answer: whatever was acknowledged to the
    // client must survive, whatever state the consumers were in.
    for request in 5..10 {
        assert!(pipeline.send(&client, &key, request, PER_REQUEST).await);
        accepted += PER_REQUEST;
    }
    pipeline.kill();

    let pipeline = start(&env, lake.path());
    pipeline.wait_ready(&client).await;
    for request in 10..12 {
        assert!(pipeline.send(&client, &key, request, PER_REQUEST).await);
        accepted += PER_REQUEST;
    }
    wait_for_pageviews(&pool, accepted as i64).await;

    // The lake, read by DuckDB: every accepted event exactly once.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sightline_testkit::duckdb::query_in(
            lake.path(),
            "SELECT count(*) AS n, count(DISTINCT message_id) AS distinct_ids \
             FROM read_parquet('raw/events/**/*.parquet', hive_partitioning = true)",
        )
        .await;
        if let Ok(rows) = &rows
            && rows[0]["n"].as_i64() == Some(accepted as i64)
        {
            assert_eq!(rows[0]["distinct_ids"].as_i64(), Some(accepted as i64));
            break;
        }
        assert!(
            Instant::now() < until,
            "lake holds {rows:?}, want {accepted}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pipeline.terminate();
    // Still exact after the clean stop's final flushes.
    assert_eq!(counted_pageviews(&pool).await, accepted as i64);
    pool.close().await;
    env.finish().await;
}
