//! End-to-end: `sightline query serve` and the `sightline query …` client subcommands of the
//! real binary, against real PostgreSQL, with a read token issued by `sightline admin`.

mod support;

use std::{process::Stdio, time::Duration};

use support::{Env, PG, free_port, wait_ready};

#[tokio::test]
async fn a_person_reads_figures_with_the_command_line() {
    let env = Env::new();
    assert!(env.run("admin migrate").status.success());
    env.json("admin --json tenant create --slug acme --name Acme");
    let site = env.json("admin --json site create --tenant acme --domain shop.example --time-zone UTC --currency EUR");
    let site_id = site[0]["id"].as_i64().unwrap();
    let tenant_id = site[0]["tenant_id"].as_i64().unwrap();
    let token = env.json("admin --json read-token issue --tenant acme");
    let token = token["token"].as_str().unwrap().to_string();

    // Yesterday 10:00 UTC: 7 pageviews from the speed layer's two partitions.
    let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    let hour = yesterday.and_hms_opt(10, 0, 0).unwrap().and_utc();
    let pool = sqlx::PgPool::connect(&format!("{PG}/{}", env.database))
        .await
        .unwrap();
    for (shard, pageviews) in [(0, 3i64), (1, 4)] {
        sqlx::query(
            "INSERT INTO rollups (tenant_id, site_id, granularity, bucket, dimension, value, layer, \
             shard, events, pageviews) VALUES ($1, $2, 'hour', $3, '', '', 'speed', $4, $5, $5)",
        )
        .bind(tenant_id)
        .bind(site_id)
        .bind(hour)
        .bind(shard)
        .bind(pageviews)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let (grpc, admin) = (free_port(), free_port());
    let mut server = env
        .command(&["query", "serve"])
        .env("SIGHTLINE__QUERY__LISTEN", format!("127.0.0.1:{grpc}"))
        .env(
            "SIGHTLINE__QUERY__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&reqwest::Client::new(), admin, Duration::from_secs(30)).await;

    let address = format!("http://127.0.0.1:{grpc}");
    let client = |args: &[&str], token: &str| {
        let mut c = env.command(&["query"]);
        c.args(args)
            .env("SIGHTLINE_QUERY_ADDRESS", &address)
            .env("SIGHTLINE_QUERY_TOKEN", token);
        c.output().unwrap()
    };
    let day = yesterday.to_string();
    let site = site_id.to_string();
    let series = [
        "timeseries",
        "--site",
        &site,
        "--metrics",
        "pageviews,visitors",
        "--from",
        &day,
        "--to",
        &day,
    ];
    let mut json_args = series.to_vec();
    json_args.push("--json");
    let out = client(&json_args, &token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["buckets"][0]["bucket"], day);
    assert_eq!(answer["buckets"][0]["values"]["pageviews"], 7.0);
    assert_eq!(answer["buckets"][0]["is_final"], false);

    let out = client(&series, &token);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("BUCKET") && table.contains(&day) && table.contains(" 7"),
        "{table}"
    );

    let out = client(&["freshness"], &token);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&site));

    let out = client(&series, "slr_wrong");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));

    // SIGTERM drains and exits cleanly.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    env.drop_database().await;
}
