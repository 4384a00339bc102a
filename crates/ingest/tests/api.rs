//! The HTTP API against real PostgreSQL and RabbitMQ: every endpoint with SDK-shaped payloads,
//! the limits, the error answers, and what reaches the queues.

mod support;

use std::{io::Write, time::Duration};

use serde_json::{Value, json};
use sightline_db::WriteKeys;
use sightline_proto::events::v1::{Event, EventType};
use support::{TestIngest, track};

fn all_events(batches: &[(u32, sightline_proto::events::v1::EventBatch)]) -> Vec<Event> {
    batches.iter().flat_map(|(_, b)| b.events.clone()).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn every_segment_call_type_arrives_intact_in_both_consumer_groups() {
    let ingest = TestIngest::start().await;
    let calls = [
        ("/v1/track", track("u1", "Order Completed", "m-track")),
        (
            "/v1/page",
            json!({"anonymousId": "a1", "name": "Home", "messageId": "m-page",
                   "properties": {"path": "/", "url": "https://shop.example/?utm_source=news"},
                   "context": {"page": {"url": "https://shop.example/?utm_source=news",
                               "referrer": "https://www.google.com/", "title": "Shop"},
                               "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
                               "locale": "fr-FR"}}),
        ),
        (
            "/v1/screen",
            json!({"userId": 7, "name": "Cart", "messageId": "m-screen"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "messageId": "m-identify", "traits": {"plan": "pro", "email": "x@example.com"}}),
        ),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "g1", "messageId": "m-group", "traits": {"name": "Org"}}),
        ),
        (
            "/v1/alias",
            json!({"userId": "u1", "previousId": "a1", "messageId": "m-alias"}),
        ),
        // analytics.js posts to the one-letter paths.
        ("/v1/t", track("u2", "Clicked", "m-short")),
    ];
    for (path, body) in &calls {
        let r = ingest.post(path, body).await;
        assert_eq!(r.status(), 200, "{path}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            answer["results"][0]["status"], "accepted",
            "{path}: {answer}"
        );
    }

    for group in ["rollup", "archive"] {
        let events = all_events(&ingest.drain_group(group).await);
        assert_eq!(events.len(), calls.len(), "{group}");
        let by_id = |id: &str| events.iter().find(|e| e.message_id == id).unwrap().clone();

        let t = by_id("m-track");
        assert_eq!(t.r#type(), EventType::Track);
        assert_eq!(t.name, "Order Completed");
        assert_eq!((t.tenant_id, t.site_id), (ingest.tenant_id, ingest.site_id));
        assert_eq!(t.visitor_id, "u1");
        let props: Value = serde_json::from_slice(&t.properties_json).unwrap();
        assert_eq!(
            props,
            track("u1", "Order Completed", "m-track")["properties"]
        );
        // The raw IP is never published: only its network.
        assert_eq!(t.ip_truncated, "203.0.113.0");
        let context = String::from_utf8(t.context_json.to_vec()).unwrap();
        assert!(!context.contains("203.0.113.77") && context.contains("analytics-node"));

        let p = by_id("m-page");
        assert_eq!(p.r#type(), EventType::Page);
        assert_eq!(p.name, "Home");
        assert_eq!(p.page_url, "https://shop.example/?utm_source=news");
        assert_eq!(p.page_referrer, "https://www.google.com/");
        assert_eq!(p.locale, "fr-FR");
        assert!(p.user_agent.contains("Firefox"));

        assert_eq!(by_id("m-screen").user_id, "7");
        let i = by_id("m-identify");
        assert_eq!(
            serde_json::from_slice::<Value>(&i.traits_json).unwrap()["plan"],
            "pro"
        );
        assert_eq!(by_id("m-group").group_id, "g1");
        assert_eq!(by_id("m-alias").previous_id, "a1");
        assert_eq!(by_id("m-short").name, "Clicked");
    }
    ingest.finish().await;
}

#[tokio::test]
async fn beacons_gzip_batches_and_the_write_key_in_the_body() {
    let ingest = TestIngest::start().await;
    // sendBeacon: text/plain body with the write key inside, no Authorization header.
    let beacon = json!({"writeKey": ingest.key, "event": "Beacon", "anonymousId": "a9", "messageId": "m-beacon"});
    let r = ingest
        .http
        .post(ingest.url("/v1/track"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A gzip batch as analytics-python and the mobile SDKs send it.
    let batch = json!({
        "batch": [track("u1", "A", "m-gz-1"), track("u1", "B", "m-gz-2"),
                  {"type": "page", "anonymousId": "a2", "messageId": "m-gz-3"}],
        "sentAt": chrono::Utc::now().to_rfc3339(),
    });
    let r = ingest
        .http
        .post(ingest.url("/v1/batch"))
        .basic_auth(&ingest.key, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");

    let mut ids: Vec<String> = all_events(&ingest.drain_group("rollup").await)
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["m-beacon", "m-gz-1", "m-gz-2", "m-gz-3"]);
    ingest.finish().await;
}

#[tokio::test]
async fn the_pixel_tracks_pages_without_javascript() {
    use base64::Engine;
    let ingest = TestIngest::start().await;
    let r = ingest
        .http
        .get(ingest.url(&format!(
            "/v1/p.gif?writeKey={}&messageId=m-px1",
            ingest.key
        )))
        .header("referer", "https://shop.example/landing")
        .header("user-agent", "Mozilla/5.0 (iPhone) Mobile Safari")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert!(r.bytes().await.unwrap().starts_with(b"GIF89a"));

    // Segment's pixel form: base64 JSON in `data`.
    let data = base64::engine::general_purpose::STANDARD.encode(
        json!({"writeKey": ingest.key, "type": "track", "event": "Email Opened",
               "userId": "u5", "messageId": "m-px2"})
        .to_string(),
    );
    let r = ingest
        .http
        .get(ingest.url(&format!("/v1/p.gif?data={}", urlencode(&data))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ingest
        .http
        .get(ingest.url("/v1/p.gif?writeKey=wk_unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "image/gif");

    let events = all_events(&ingest.drain_group("archive").await);
    let page = events.iter().find(|e| e.message_id == "m-px1").unwrap();
    assert_eq!(page.r#type(), EventType::Page);
    assert_eq!(page.page_url, "https://shop.example/landing");
    // No anonymousId: a cookieless visitor id from the salted hash, never the IP itself.
    assert!(page.visitor_id.starts_with("c:"), "{}", page.visitor_id);
    assert_eq!(page.ip_truncated, "127.0.0.0");
    let mail = events.iter().find(|e| e.message_id == "m-px2").unwrap();
    assert_eq!(
        (mail.name.as_str(), mail.user_id.as_str()),
        ("Email Opened", "u5")
    );
    ingest.finish().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test]
async fn limits_just_under_pass_and_just_over_are_refused() {
    let ingest = TestIngest::start().await;
    let event_with_size = |size: usize, id: &str| {
        let mut e = json!({"type": "track", "event": "Big", "userId": "u1", "messageId": id,
                           "properties": {"pad": ""}});
        let base = e.to_string().len();
        e["properties"]["pad"] = Value::String("x".repeat(size - base));
        assert_eq!(e.to_string().len(), size);
        e
    };
    // Events: 32 KB each, measured after decompression.
    let r = ingest
        .post(
            "/v1/batch",
            &json!({"batch": [event_with_size(32768, "m-fits"), event_with_size(32769, "m-over")]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["results"][0]["status"], "accepted");
    assert_eq!(answer["results"][1]["status"], "rejected");
    assert_eq!(answer["results"][1]["reason"], "event_too_large");

    // Requests: 512000 bytes, plain or once decompressed.
    let request_with_size = |size: usize| {
        let mut batch = Vec::new();
        for i in 0..16 {
            batch.push(event_with_size(30000, &format!("m-r{i}")));
        }
        let mut body = json!({"batch": batch, "pad": ""});
        let base = body.to_string().len();
        body["pad"] = Value::String("y".repeat(size - base));
        body.to_string()
    };
    let fits = request_with_size(512_000);
    let over = request_with_size(512_001);
    let send = |body: Vec<u8>, gz: bool| {
        let mut r = ingest
            .http
            .post(ingest.url("/v1/batch"))
            .basic_auth(&ingest.key, Some(""))
            .body(body);
        if gz {
            r = r.header("content-encoding", "gzip");
        }
        r.send()
    };
    assert_eq!(
        send(fits.clone().into_bytes(), false)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(over.clone().into_bytes(), false)
            .await
            .unwrap()
            .status(),
        413
    );
    let compressed = gzip(over.as_bytes());
    assert!(compressed.len() < 100_000, "small on the wire");
    assert_eq!(send(compressed, true).await.unwrap().status(), 413);
    assert_eq!(
        send(gzip(fits.as_bytes()), true).await.unwrap().status(),
        200
    );

    let invalid = ingest.drain_invalid().await;
    let refused: Vec<_> = invalid.iter().flat_map(|b| b.events.clone()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason, "event_too_large");
    assert_eq!(refused[0].raw.len(), 32769, "kept whole for inspection");
    ingest.finish().await;
}

#[tokio::test]
async fn malformed_bodies_unknown_and_revoked_keys() {
    let ingest = TestIngest::start().await;
    let send = |body: &'static str, key: Option<&str>| {
        let mut r = ingest.http.post(ingest.url("/v1/track")).body(body);
        if let Some(k) = key {
            r = r.basic_auth(k, Some(""));
        }
        r.send()
    };
    let r = send("{\"event\": \"x\", ", Some(&ingest.key))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    let r = ingest
        .http
        .post(ingest.url("/v1/batch"))
        .basic_auth(&ingest.key, Some(""))
        .body(r#"{"batch": {"not": "an array"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(send("{\"event\":\"x\"}", None).await.unwrap().status(), 401);
    assert_eq!(
        send("{\"event\":\"x\"}", Some("wk_nope"))
            .await
            .unwrap()
            .status(),
        401
    );
    let r = ingest
        .http
        .post(ingest.url("/v1/track"))
        .basic_auth(&ingest.key, Some(""))
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // A batch whose every event is refused: 400, each kept with its reason.
    let r = ingest
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "userId": "u", "messageId": "m-noname"},
                               {"type": "unknown", "messageId": "m-type"},
                               {"type": "alias", "userId": "u", "messageId": "m-alias"},
                               {"type": "track", "event": "x", "timestamp": "last tuesday", "messageId": "m-ts",
                                "context": {"ip": "198.51.100.200"}}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["rejected"], 4);

    // Revocation takes effect within the key refresh interval.
    assert!(ingest.store.revoke_write_key(&ingest.key).await.unwrap());
    let mut status = 200;
    for _ in 0..50 {
        status = send("{\"event\":\"x\",\"userId\":\"u\"}", Some(&ingest.key))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "a revoked key is refused");

    let refused: Vec<_> = ingest
        .drain_invalid()
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .collect();
    let reason_of = |id: &str| {
        refused
            .iter()
            .find(|e| e.message_id == id)
            .map(|e| e.reason.clone())
    };
    assert_eq!(reason_of("m-noname").as_deref(), Some("missing_event_name"));
    assert_eq!(reason_of("m-type").as_deref(), Some("unknown_type"));
    assert_eq!(reason_of("m-alias").as_deref(), Some("missing_alias_ids"));
    assert_eq!(reason_of("m-ts").as_deref(), Some("invalid_timestamp"));
    let ts = refused.iter().find(|e| e.message_id == "m-ts").unwrap();
    assert!(
        !String::from_utf8_lossy(&ts.raw).contains("198.51.100.200"),
        "no raw IP kept"
    );
    // The malformed body (key in the header) is kept too.
    let malformed = refused
        .iter()
        .find(|e| e.reason == "malformed_json")
        .unwrap();
    assert_eq!(malformed.raw.as_ref(), b"{\"event\": \"x\", ");
    assert!(refused.iter().all(|e| e.tenant_id == ingest.tenant_id));
    let published = all_events(&ingest.drain_group("rollup").await);
    assert!(
        published.iter().all(|e| e.name == "x" && e.user_id == "u"),
        "only the revocation probes were published, nothing refused"
    );
    ingest.finish().await;
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let ingest = TestIngest::start_with(support::Options {
        key_rate: Some(20),
        ..Default::default()
    })
    .await;
    let batch = |n: usize, from: usize| json!({"batch": (from..from + n).map(|i| track("u", "E", &format!("m-{i}"))).collect::<Vec<_>>()});
    // Two requests of a full second's budget each, sent together: their rate checks are
    // milliseconds apart, so however slow the machine, exactly one of them must be refused.
    let (first, second) = (batch(20, 0), batch(20, 100));
    let (a, b) = tokio::join!(
        ingest.post("/v1/batch", &first),
        ingest.post("/v1/batch", &second)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 429],
        "one request fits the budget, the other is refused"
    );
    let r = if a.status() == 429 { a } else { b };
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        ingest.post("/v1/batch", &batch(20, 200)).await.status(),
        200
    );
    let published = all_events(&ingest.drain_group("rollup").await);
    assert_eq!(published.len(), 40, "the refused request published nothing");
    ingest.finish().await;
}

#[tokio::test]
async fn retried_message_ids_are_answered_as_duplicates_and_not_republished() {
    let ingest = TestIngest::start().await;
    let first = ingest
        .post("/v1/track", &track("u1", "Paid", "m-once"))
        .await;
    assert_eq!(first.status(), 200);
    let again = ingest
        .post(
            "/v1/batch",
            &json!({"batch": [track("u1", "Paid", "m-once"), track("u1", "Paid", "m-new"),
                               track("u1", "Paid", "m-new")]}),
        )
        .await;
    let answer: Value = again.json().await.unwrap();
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["duplicate", "accepted", "duplicate"]);
    let mut ids: Vec<String> = all_events(&ingest.drain_group("rollup").await)
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["m-new", "m-once"]);
    ingest.finish().await;
}

#[tokio::test]
async fn browsers_get_cors_and_traces_continue_into_the_broker() {
    let ingest = TestIngest::start().await;
    let r = ingest
        .http
        .request(reqwest::Method::OPTIONS, ingest.url("/v1/t"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = ingest
        .http
        .post(ingest.url("/v1/track"))
        .basic_auth(&ingest.key, Some(""))
        .header("traceparent", traceparent)
        .json(&track("u1", "Traced", "m-trace"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let messages = ingest.drain_group_messages("rollup").await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0].1;
    assert_eq!(
        message.kind.as_deref(),
        Some("sightline.events.v1.EventBatch")
    );
    let found = message.traceparent.clone();
    let found = found.expect("the batch carries a traceparent header");
    assert!(
        found.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "same trace id: {found}"
    );
    ingest.finish().await;
}

#[tokio::test]
async fn a_key_issued_after_start_is_accepted_within_the_refresh_interval() {
    // A newcomer's first run: ingest starts on an empty database, then the key is created.
    let ingest = TestIngest::start_with(support::Options {
        key_after_start: true,
        ..Default::default()
    })
    .await;
    let mut status = 0;
    for _ in 0..50 {
        status = ingest
            .post("/v1/track", &track("u1", "First", "m-first"))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the new key is accepted");
    ingest.finish().await;
}
