//! Who may read what: tenant isolation on every RPC (SQL included), every error code the API
//! promises, health and reflection for grpcurl-style tools, and SQL over the lake compared
//! with the events written there.

mod support;

use std::collections::BTreeMap;

use arrow::{
    array::{Array, Int64Array, StringArray},
    ipc::reader::StreamReader,
    record_batch::RecordBatch,
};
use sightline_proto::{
    events::v1::EventBatch,
    query::v1::{self as pb, query_client::QueryClient},
};
use sightline_testkit::{S3_ENDPOINT, fresh_bucket};
use support::*;
use tonic::{Code, transport::Channel};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn last_days() -> Option<pb::TimeRange> {
    let today = chrono::Utc::now().date_naive();
    Some(pb::TimeRange {
        from_date: (today - chrono::Duration::days(6)).to_string(),
        to_date: today.to_string(),
        ..Default::default()
    })
}

/// The status of each metrics RPC for `site_id` with `token`.
async fn every_rpc(
    client: &mut QueryClient<Channel>,
    token: &str,
    site_id: i64,
) -> Vec<(&'static str, Code)> {
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    vec![
        (
            "timeseries",
            code(
                client
                    .get_timeseries(authed(
                        pb::TimeseriesRequest {
                            site_id,
                            metrics: names(&["pageviews"]),
                            interval: "day".into(),
                            range: last_days(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "breakdown",
            code(
                client
                    .get_breakdown(authed(
                        pb::BreakdownRequest {
                            site_id,
                            dimension: "page".into(),
                            metrics: names(&["pageviews"]),
                            range: last_days(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "aggregate",
            code(
                client
                    .get_aggregate(authed(
                        pb::AggregateRequest {
                            site_id,
                            metrics: names(&["pageviews"]),
                            range: last_days(),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "realtime",
            code(
                client
                    .get_realtime(authed(
                        pb::RealtimeRequest {
                            site_id,
                            top_pages: 0,
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "freshness",
            code(
                client
                    .get_freshness(authed(
                        pb::FreshnessRequest {
                            site_ids: vec![site_id],
                        },
                        token,
                    ))
                    .await
                    .map(drop),
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_sites_and_errors_have_their_codes() {
    let world = World::new().await;
    world.roll_up().await;
    let running = Running::start(&world.database_url, &[]).await;
    let mut client = running.client().await;
    let acme_utc = world.utc.id;

    for (rpc, code) in every_rpc(&mut client, &world.acme_token, acme_utc).await {
        assert_eq!(code, Code::Ok, "{rpc} for the owner");
    }
    for (rpc, code) in every_rpc(&mut client, &world.globex_token, acme_utc).await {
        assert_eq!(code, Code::PermissionDenied, "{rpc} for another tenant");
    }
    for (rpc, code) in every_rpc(&mut client, &world.acme_utc_only_token, world.new_york.id).await {
        assert_eq!(
            code,
            Code::PermissionDenied,
            "{rpc} for a site the token does not list"
        );
    }
    for (rpc, code) in every_rpc(&mut client, &world.globex_token, 999_999).await {
        assert_eq!(
            code,
            Code::PermissionDenied,
            "{rpc}: tenants cannot probe for site ids"
        );
    }
    for (rpc, code) in every_rpc(&mut client, &world.admin_token, 999_999).await {
        assert_eq!(
            code,
            Code::NotFound,
            "{rpc}: admins learn a site does not exist"
        );
    }
    for (rpc, code) in every_rpc(&mut client, &world.admin_token, world.globex_site.id).await {
        assert_eq!(code, Code::Ok, "{rpc}: admins read every tenant");
    }
    for (rpc, code) in every_rpc(&mut client, "slr_not-a-token", acme_utc).await {
        assert_eq!(code, Code::Unauthenticated, "{rpc} with an unknown token");
    }
    let status = client
        .get_freshness(tonic::Request::new(pb::FreshnessRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no token");
    let own = client
        .get_freshness(authed(pb::FreshnessRequest::default(), &world.globex_token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = own.sites.iter().map(|s| s.site_id).collect();
    assert_eq!(
        ids,
        [world.globex_site.id],
        "freshness lists the caller's sites only"
    );

    // Invalid arguments, each with a message naming the problem.
    let series = |metrics: &[&str],
                  interval: &str,
                  range: Option<pb::TimeRange>,
                  filter: Option<pb::Filter>| pb::TimeseriesRequest {
        site_id: acme_utc,
        metrics: names(metrics),
        interval: interval.into(),
        range,
        filter,
        ..Default::default()
    };
    let range = |from: &str, to: &str| {
        Some(pb::TimeRange {
            from_date: from.into(),
            to_date: to.into(),
            ..Default::default()
        })
    };
    let cases = [
        (
            series(&["pagevews"], "day", last_days(), None),
            "`pagevews`",
        ),
        (
            series(&["pageviews"], "fortnight", last_days(), None),
            "`fortnight`",
        ),
        (
            series(
                &["pageviews"],
                "day",
                range("2026-11-05", "2026-11-01"),
                None,
            ),
            "before",
        ),
        (
            series(
                &["pageviews"],
                "day",
                range("2026-02-30", "2026-03-01"),
                None,
            ),
            "from_date",
        ),
        (
            series(
                &["pageviews"],
                "hour",
                range("2026-01-01", "2026-03-01"),
                None,
            ),
            "too long",
        ),
        (
            series(
                &["pageviews"],
                "day",
                range("2020-01-01", "2026-03-01"),
                None,
            ),
            "too long",
        ),
        (series(&["pageviews"], "day", None, None), "range"),
        (
            series(
                &["pageviews"],
                "day",
                last_days(),
                Some(pb::Filter {
                    dimension: "colour".into(),
                    value: "red".into(),
                }),
            ),
            "`colour`",
        ),
        (
            series(
                &["bounce_rate"],
                "day",
                last_days(),
                Some(pb::Filter {
                    dimension: "page".into(),
                    value: "/".into(),
                }),
            ),
            "`bounce_rate` is not available for dimension `page`",
        ),
        (
            series(&["conversion_rate"], "day", last_days(), None),
            "conversion_event",
        ),
    ];
    for (request, expected) in cases {
        let status = client
            .get_timeseries(authed(request.clone(), &world.acme_token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains(expected),
            "{expected} not in {}",
            status.message()
        );
    }
    let status = client
        .get_breakdown(authed(
            pb::BreakdownRequest {
                site_id: acme_utc,
                dimension: "shoe_size".into(),
                metrics: names(&["pageviews"]),
                range: last_days(),
                ..Default::default()
            },
            &world.acme_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("`shoe_size`"),
        "{}",
        status.message()
    );

    // grpc.health.v1 and reflection answer, for grpcurl-style tools.
    let channel = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sightline.query.v1.Query".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let listed = format!("{:?}", answer.message_response);
    assert!(listed.contains("sightline.query.v1.Query"), "{listed}");
    running.stop().await;

    // Over its rate, a token is told to come back later.
    let limited = Running::start(
        &world.database_url,
        &[
            ("SIGHTLINE__QUERY__RATE_LIMIT_PER_SEC".into(), "1".into()),
            ("SIGHTLINE__QUERY__RATE_LIMIT_BURST".into(), "2".into()),
        ],
    )
    .await;
    let mut client = limited.client().await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        let result = client
            .get_freshness(authed(pb::FreshnessRequest::default(), &world.acme_token))
            .await;
        codes.push(result.err().map_or(Code::Ok, |s| s.code()));
    }
    assert_eq!(codes[0], Code::Ok);
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    limited.stop().await;
    world.finish().await;
}

/// Every batch of an SQL answer.
async fn sql(
    client: &mut QueryClient<Channel>,
    token: &str,
    tenant_id: i64,
    sql: &str,
) -> Result<(Vec<pb::SqlPage>, Vec<RecordBatch>), tonic::Status> {
    let mut stream = client
        .execute_sql(authed(
            pb::SqlRequest {
                sql: sql.into(),
                tenant_id,
                page_size: 0,
            },
            token,
        ))
        .await?
        .into_inner();
    let mut pages = Vec::new();
    let mut batches = Vec::new();
    while let Some(page) = stream.message().await? {
        let reader =
            StreamReader::try_new(std::io::Cursor::new(page.arrow_ipc.clone()), None).unwrap();
        for batch in reader {
            batches.push(batch.unwrap());
        }
        pages.push(page);
    }
    Ok((pages, batches))
}

fn int(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

fn text(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(column)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_only_the_callers_tenant_within_its_limits() {
    let world = World::new().await;
    let bucket = fresh_bucket().await;
    let events = world.all_events();
    let batch = EventBatch {
        batch_id: "b-1".into(),
        partition: 0,
        created_at_us: 0,
        events: events.clone(),
    };
    sightline_lake::write_raw_batches(&bucket.store, &[batch])
        .await
        .unwrap();
    let mut env = bucket.env(S3_ENDPOINT);
    env.push(("SIGHTLINE__QUERY__SQL__MAX_ROWS".into(), "10".into()));
    env.push(("SIGHTLINE__QUERY__SQL__PAGE_ROWS".into(), "4".into()));
    let running = Running::start(&world.database_url, &env).await;
    let mut client = running.client().await;

    let of = |tenant: i64| {
        events
            .iter()
            .filter(|e| e.tenant_id == tenant)
            .collect::<Vec<_>>()
    };
    let (_, counted) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    assert_eq!(int(&counted, 0), [of(world.acme).len() as i64]);
    let (_, counted) = sql(
        &mut client,
        &world.globex_token,
        0,
        "SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    assert_eq!(int(&counted, 0), [of(world.globex).len() as i64]);
    let (_, by_type) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type",
    )
    .await
    .unwrap();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in of(world.acme) {
        *want
            .entry(e.r#type().segment_name().to_string())
            .or_default() += 1;
    }
    let got: BTreeMap<String, i64> = text(&by_type, 0)
        .into_iter()
        .zip(int(&by_type, 1))
        .collect();
    assert_eq!(got, want);
    let (_, tenants) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT DISTINCT tenant_id FROM events",
    )
    .await
    .unwrap();
    assert_eq!(int(&tenants, 0), [world.acme]);
    let (_, admin) = sql(
        &mut client,
        &world.admin_token,
        world.globex,
        "SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    assert_eq!(int(&admin, 0), [of(world.globex).len() as i64]);

    // Another tenant's data is out of reach, whatever the SQL says.
    let refused = [
        (
            world.globex_token.as_str(),
            world.acme,
            "SELECT count(*) FROM events",
            Code::PermissionDenied,
        ),
        (
            world.admin_token.as_str(),
            0,
            "SELECT count(*) FROM events",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION 'lake://lake/raw/events/'",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "SELECT count(*) FROM 'lake://lake/raw/events/'",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "COPY events TO 'lake://lake/out/' STORED AS PARQUET",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "INSERT INTO events SELECT * FROM events",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "SET datafusion.execution.batch_size = 1",
            Code::InvalidArgument,
        ),
        (
            world.globex_token.as_str(),
            0,
            "SELECT nope FROM events",
            Code::InvalidArgument,
        ),
        ("slr_unknown", 0, "SELECT 1", Code::Unauthenticated),
    ];
    for (token, tenant, query, code) in refused {
        let status = sql(&mut client, token, tenant, query).await.unwrap_err();
        assert_eq!(status.code(), code, "{query}: {}", status.message());
    }

    // The row limit cuts the answer, in pages, and says so.
    let (pages, rows) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT message_id FROM events",
    )
    .await
    .unwrap();
    let sizes: Vec<i64> = pages.iter().map(|p| p.rows).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
    assert!(pages.last().unwrap().truncated && pages.last().unwrap().last);
    assert_eq!(pages[0].columns[0].name, "message_id");
    let (pages, _) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT message_id FROM events LIMIT 3",
    )
    .await
    .unwrap();
    assert!(!pages.last().unwrap().truncated);
    running.stop().await;

    // Listings are reused for `listing_ttl_ms`; with 0, an object written after a query is seen
    // by the next one.
    let mut env = bucket.env(S3_ENDPOINT);
    env.push(("SIGHTLINE__QUERY__SQL__LISTING_TTL_MS".into(), "0".into()));
    let fresh = Running::start(&world.database_url, &env).await;
    let mut client = fresh.client().await;
    let count = |batches: &[RecordBatch]| int(batches, 0);
    let (_, before) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    assert_eq!(count(&before), [of(world.acme).len() as i64]);
    let again = EventBatch {
        batch_id: "b-2".into(),
        partition: 0,
        created_at_us: 0,
        events: of(world.acme).into_iter().cloned().collect(),
    };
    sightline_lake::write_raw_batches(&bucket.store, &[again])
        .await
        .unwrap();
    let (_, after) = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    assert_eq!(count(&after), [2 * of(world.acme).len() as i64]);
    fresh.stop().await;

    // A query past its deadline is stopped.
    let mut env = bucket.env(S3_ENDPOINT);
    // One millisecond: listing the tenant's objects on the S3 server alone takes longer, and the
    // query would take seconds, so the deadline is reached whatever the machine's speed.
    env.push(("SIGHTLINE__QUERY__SQL__TIMEOUT_MS".into(), "1".into()));
    let slow = Running::start(&world.database_url, &env).await;
    let mut client = slow.client().await;
    let status = sql(
        &mut client,
        &world.acme_token,
        0,
        "SELECT count(DISTINCT a.message_id || b.message_id) FROM events a, events b",
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    slow.stop().await;
    bucket.delete().await;
    world.finish().await;
}
