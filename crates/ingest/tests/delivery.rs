//! Delivery guarantees against real RabbitMQ: every event answered 2xx is in the queues, with a
//! visitor's events in order, through broker outages and shutdowns under load.

mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::{Value, json};
use sightline_testkit::proxy::Proxy;
use support::{Options, TestIngest, track};

/// Message ids of every event in a consumer group's queues, with how often each appears.
async fn published_ids(ingest: &TestIngest, group: &str) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for (_, batch) in ingest.drain_group(group).await {
        for e in batch.events {
            *ids.entry(e.message_id).or_insert(0) += 1;
        }
    }
    ids
}

#[tokio::test]
async fn concurrent_visitors_keep_their_order_and_nothing_is_lost() {
    let ingest = Arc::new(TestIngest::start().await);
    const VISITORS: usize = 24;
    const STEPS: usize = 30;
    let mut clients = Vec::new();
    for v in 0..VISITORS {
        let ingest = ingest.clone();
        clients.push(tokio::spawn(async move {
            for step in 0..STEPS {
                // Alternate single calls and small batches, as SDKs do.
                let event = |s: usize| {
                    json!({"type": "track", "event": "Step", "anonymousId": format!("visitor-{v}"),
                           "messageId": format!("v{v}-s{s}"), "properties": {"step": s}})
                };
                let r = if step % 3 == 0 {
                    ingest.post("/v1/track", &event(step)).await
                } else {
                    ingest
                        .post("/v1/batch", &json!({"batch": [event(step)]}))
                        .await
                };
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }

    let batches = ingest.drain_group("rollup").await;
    let mut steps: HashMap<String, Vec<i64>> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<u32>> = HashMap::new();
    let mut batch_ids = HashSet::new();
    for (partition, batch) in &batches {
        assert_eq!(batch.partition, *partition);
        assert!(
            batch_ids.insert(batch.batch_id.clone()),
            "batch ids are unique"
        );
        for e in &batch.events {
            let props: Value = serde_json::from_slice(&e.properties_json).unwrap();
            steps
                .entry(e.visitor_id.clone())
                .or_default()
                .push(props["step"].as_i64().unwrap());
            partitions
                .entry(e.visitor_id.clone())
                .or_default()
                .insert(*partition);
        }
    }
    assert_eq!(steps.len(), VISITORS);
    let expected: Vec<i64> = (0..STEPS as i64).collect();
    for (visitor, seen) in &steps {
        assert_eq!(seen, &expected, "{visitor}: every step once, in order");
        assert_eq!(
            partitions[visitor].len(),
            1,
            "{visitor} stays on one partition"
        );
    }
    assert!(
        batches.len() < VISITORS * STEPS,
        "concurrent requests were coalesced into fewer messages ({} for {} requests)",
        batches.len(),
        VISITORS * STEPS
    );
    Arc::into_inner(ingest).unwrap().finish().await;
}

/// Each request's status (0: no answer) and the message ids it carried.
type RequestLog = Arc<Mutex<Vec<(u16, Vec<String>)>>>;

/// Sends 10-event batches from `clients` concurrent clients until `stop`, recording each
/// request's status and message ids.
fn load(
    ingest: &Arc<TestIngest>,
    clients: usize,
    stop: &Arc<AtomicBool>,
    log: &RequestLog,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (ingest, stop, log) = (ingest.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let ids: Vec<String> = (0..10).map(|i| format!("c{c}-r{n}-e{i}")).collect();
                    n += 1;
                    let batch: Vec<Value> = ids
                        .iter()
                        .map(|id| track(&format!("user-{c}"), "Load", id))
                        .collect();
                    let status = match ingest
                        .http
                        .post(ingest.url("/v1/batch"))
                        .basic_auth(&ingest.key, Some(""))
                        .timeout(Duration::from_secs(10))
                        .json(&json!({"batch": batch}))
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0, // connection refused or reset: no answer
                    };
                    log.lock().push((status, ids));
                    if status == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn a_broker_outage_under_load_loses_no_acknowledged_event() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let ingest = Arc::new(
        TestIngest::start_with(Options {
            amqp_url: Some(proxy.amqp_url()),
            // The default cap (5 s) lets one retry land up to 5 s after the broker is back;
            // with a short cap, "ready again" measures the reconnection, not the backoff.
            env: vec![("SIGHTLINE__BROKER__RECONNECT_BACKOFF_MAX_MS", "400".into())],
            ..Default::default()
        })
        .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients = load(&ingest, 6, &stop, &log);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_outage = log.lock().len();
    proxy.cut();
    assert!(
        ingest.wait_ready(false, Duration::from_secs(5)).await,
        "readiness turns false while the broker is away"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during_outage: Vec<u16> = log.lock()[before_outage..]
        .iter()
        .map(|(s, _)| *s)
        .collect();
    proxy.restore();
    assert!(
        ingest.wait_ready(true, Duration::from_secs(10)).await,
        "ready again"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let log = log.lock().clone();
    assert!(
        during_outage.contains(&503),
        "requests during the outage got 503: {during_outage:?}"
    );
    assert!(
        log.iter().all(|(s, _)| *s == 200 || *s == 503),
        "only 200 or 503 answers"
    );
    let acknowledged: Vec<&String> = log
        .iter()
        .filter(|(s, _)| *s == 200)
        .flat_map(|(_, ids)| ids)
        .collect();
    let after = log.iter().rev().take_while(|(s, _)| *s == 200).count();
    assert!(after > 0, "requests succeed again after the outage");
    for group in ["rollup", "archive"] {
        let published = published_ids(&ingest, group).await;
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|id| !published.contains_key(**id))
            .collect();
        assert!(
            missing.is_empty(),
            "{group}: {} of {} acknowledged events missing, e.g. {:?}",
            missing.len(),
            acknowledged.len(),
            missing.iter().take(3).collect::<Vec<_>>()
        );
    }
    drop(proxy);
    Arc::into_inner(ingest).unwrap().finish().await;
}

#[tokio::test]
async fn a_broker_that_accepts_connections_but_never_answers_does_not_hold_ingest_for_good() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let ingest = TestIngest::start_with(Options {
        amqp_url: Some(proxy.amqp_url()),
        env: vec![
            ("SIGHTLINE__BROKER__CONNECT_TIMEOUT_MS", "500".into()),
            ("SIGHTLINE__BROKER__RECONNECT_BACKOFF_MAX_MS", "200".into()),
        ],
        ..Default::default()
    })
    .await;
    // The connection drops and every new one is taken and then never answered, as by a broker
    // that hangs or a load balancer in front of a dead one.
    proxy.stall();
    assert!(
        ingest.wait_ready(false, Duration::from_secs(5)).await,
        "readiness turns false while the broker is silent"
    );
    let during = ingest
        .post("/v1/track", &track("user-1", "Stalled", "stalled-1"))
        .await;
    assert_eq!(
        during.status(),
        503,
        "nothing is accepted while unconfirmed"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The broker answers again; connections taken while it was silent stay silent.
    proxy.restore();
    assert!(
        ingest.wait_ready(true, Duration::from_secs(5)).await,
        "ready again once an attempt is given up and a new one answered"
    );
    let after = ingest
        .post("/v1/track", &track("user-1", "Answered", "answered-1"))
        .await;
    assert_eq!(after.status(), 200);
    let published = published_ids(&ingest, "rollup").await;
    assert!(
        published.contains_key("answered-1"),
        "the answered event is in the queues"
    );
    drop(proxy);
    ingest.finish().await;
}

#[tokio::test]
async fn a_shutdown_under_load_loses_no_acknowledged_event() {
    let ingest = Arc::new(TestIngest::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients = load(&ingest, 6, &stop, &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    ingest.shutdown.trigger();
    // Keep the load on while ingest drains, then stop the clients.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let log = log.lock().clone();
    let acknowledged: Vec<&String> = log
        .iter()
        .filter(|(s, _)| *s == 200)
        .flat_map(|(_, ids)| ids)
        .collect();
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );
    assert!(
        log.iter().any(|(s, _)| *s != 200),
        "requests after shutdown were not accepted"
    );

    let ingest = Arc::into_inner(ingest).unwrap();
    let published = published_ids(&ingest, "rollup").await;
    let missing = acknowledged
        .iter()
        .filter(|id| !published.contains_key(**id))
        .count();
    assert_eq!(missing, 0, "of {} acknowledged events", acknowledged.len());
    ingest.finish().await;
}
