//! End-to-end: the real `sightline` binary against real PostgreSQL and RabbitMQ.

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use prost::Message as _;
use sightline_broker::Subscription as _;
use support::{AMQP, Env, PG, free_port, wait_ready};

#[test]
fn an_invalid_configuration_lists_every_problem_and_exits_64() {
    let env = Env::new();
    let out = env
        .command(&["ingest"])
        .env("SIGHTLINE__INGEST__LISTEN", "not-an-address")
        .env("SIGHTLINE__BROKER__URL", "http://wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ingest.listen") && stderr.contains("broker.url"),
        "{stderr}"
    );

    let out = env
        .command(&["ingest"])
        .env("SIGHTLINE__INGEST__LISTNE", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "a misspelt key is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("listne"));
}

#[tokio::test]
async fn operators_administer_tenants_sites_keys_and_tokens() {
    let env = Env::new();
    assert!(env.run("admin migrate").status.success());
    assert!(
        env.run("admin migrate").status.success(),
        "migrating twice is a no-op"
    );

    let tenant = env.json("admin --json tenant create --slug acme --name Acme");
    assert_eq!(tenant[0]["slug"], "acme");
    let dup = env.run("admin tenant create --slug acme --name Again");
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let bad_tz =
        env.run("admin site create --tenant acme --domain a.example --time-zone Mars/Olympus");
    assert_eq!(bad_tz.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_tz.stderr).contains("IANA time zone"));
    let site = env.json("admin --json site create --tenant acme --domain shop.example --time-zone America/New_York --currency USD");
    let site_id = site[0]["id"].as_i64().unwrap().to_string();

    let key = env.json(&format!(
        "admin --json write-key issue --tenant acme --site {site_id} --rate-limit 500"
    ));
    let key = key[0]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("wk_"));
    assert!(
        env.run(&format!("admin write-key revoke {key}"))
            .status
            .success()
    );
    assert_eq!(
        env.run(&format!("admin write-key revoke {key}"))
            .status
            .code(),
        Some(2)
    );
    let keys = env.json("admin --json write-key list --tenant acme");
    assert!(keys[0]["revoked_at"].is_string());

    let issued = env.json(&format!(
        "admin --json read-token issue --tenant acme --site {site_id} --label merchant-backend"
    ));
    let token = issued["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("slr_"));
    // Only a hash is stored.
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&format!("{PG}/{}", env.database))
        .await
        .unwrap();
    let clear_anywhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM read_tokens WHERE prefix = $1 OR label = $1 OR encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
    )
    .bind(&token)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(clear_anywhere, 0);
    db.close().await.unwrap();
    let other_tenant_site = env.run("admin read-token issue --tenant acme --site 999");
    assert_eq!(other_tenant_site.status.code(), Some(2));
    let admin = env.json("admin --json read-token issue --admin");
    assert_eq!(admin["scope"], "Admin");
    let tokens = env.json("admin --json read-token list --tenant acme");
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let id = issued["id"].as_i64().unwrap().to_string();
    assert!(
        env.run(&format!("admin read-token revoke {id}"))
            .status
            .success()
    );
    let table = String::from_utf8(env.run("admin read-token list --tenant acme").stdout).unwrap();
    assert!(
        table.starts_with("ID") && table.contains("merchant-backend"),
        "{table}"
    );
    env.drop_database().await;
}

#[tokio::test]
async fn the_ingest_binary_serves_then_drains_on_sigterm() {
    let env = Env::new();
    assert!(env.run("admin migrate").status.success());
    env.json("admin --json tenant create --slug acme --name Acme");
    let site = env.json("admin --json site create --tenant acme --domain s.example");
    let site_id = site[0]["id"].as_i64().unwrap().to_string();
    let key = env.json(&format!(
        "admin --json write-key issue --tenant acme --site {site_id}"
    ));
    let key = key[0]["key"].as_str().unwrap().to_string();

    let (http, admin) = (free_port(), free_port());
    let mut child = env
        .command(&["ingest"])
        .env("SIGHTLINE__INGEST__LISTEN", format!("127.0.0.1:{http}"))
        .env(
            "SIGHTLINE__INGEST__ADMIN_LISTEN",
            format!("127.0.0.1:{admin}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_ready(&client, admin, Duration::from_secs(20)).await;
    let r = client
        .post(format!("http://127.0.0.1:{http}/v1/track"))
        .basic_auth(&key, Some(""))
        .json(&serde_json::json!({"event": "Signed Up", "userId": "u1", "messageId": "m-e2e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sightline_ingest_events_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "ingest exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a clean drain exits 0: {status:?}");

    // The event is in both groups' queues.
    let conn = lapin::Connection::connect(AMQP, Default::default())
        .await
        .unwrap();
    let mut found = 0;
    for group in ["rollup", "archive"] {
        for p in 0..2 {
            let queue = format!("{}.{group}.p{p}", env.namespace);
            let mut sub =
                sightline_broker::rabbitmq::consume(&conn, &queue, "e2e", 10, "unused.dlx")
                    .await
                    .unwrap();
            while let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                let batch =
                    sightline_proto::events::v1::EventBatch::decode(d.payload.as_slice()).unwrap();
                found += batch
                    .events
                    .iter()
                    .filter(|e| e.message_id == "m-e2e")
                    .count();
                d.ack().await.unwrap();
            }
            let ch = conn.create_channel().await.unwrap();
            let _ = ch
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
    assert_eq!(found, 2);
    let ch = conn.create_channel().await.unwrap();
    for q in ["invalid", "dead-letter"] {
        let _ = ch
            .queue_delete(
                format!("{}.{q}", env.namespace).as_str().into(),
                Default::default(),
            )
            .await;
    }
    env.finish().await;
}
