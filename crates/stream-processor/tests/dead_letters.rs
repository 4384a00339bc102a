//! Messages the archive group cannot read, against real RabbitMQ, PostgreSQL and the S3 server:
//! an undecodable message or a bad zstd frame is dead-lettered with its reason, as received,
//! without blocking the queue; payloads are read whether compressed on the wire or not.

mod support;

use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties, options::BasicGetOptions, types::AMQPValue};
use sightline_broker::{Route, rabbitmq::consumer::REASON_HEADER};
use stream_processor::archive::EVENT_BATCH;
use support::{
    AMQP, Running, Start, World,
    batches::{assert_archived_exactly_once, batch},
};

/// The archive group running with a delivery limit of 2 (a message it cannot read reaches the
/// dead-letter queue at its second delivery), and a channel of the test's own on the broker.
async fn dead_lettering_world() -> (World, Running, Connection, lapin::Channel) {
    let world = World::with_env(&[("SIGHTLINE__BROKER__DELIVERY_LIMIT", "2")]).await;
    let service = world.start(Start::default()).await;
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    (world, service, conn, channel)
}

/// The next message of the dead-letter queue, waiting up to 30 s for one.
async fn next_dead_letter(
    channel: &lapin::Channel,
    world: &World,
) -> lapin::message::BasicGetMessage {
    let queue = world.topology().dead_letter_queue();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(m) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return m;
        }
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the dead-letter queue is empty now.
async fn no_more_dead_letters(channel: &lapin::Channel, world: &World) -> bool {
    let queue = world.topology().dead_letter_queue();
    channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none()
}

/// The reason a consumer gave for dead-lettering `m`.
fn dead_letter_reason(m: &lapin::message::BasicGetMessage) -> String {
    match m
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(REASON_HEADER).cloned())
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no {REASON_HEADER} header: {other:?}"),
    }
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_with_its_reason_without_blocking_the_queue() {
    let (world, service, conn, channel) = dead_lettering_world().await;
    world
        .publish_message(
            Route::Partition(0),
            "garbage-1",
            EVENT_BATCH,
            vec![0xff; 12],
        )
        .await;
    let after = batch("after-garbage", 0, 0..10);
    world.publish(&after).await;
    world.wait_for_events(10).await;

    // The dead-letter queue receives it once the delivery limit is reached.
    let dead = next_dead_letter(&channel, &world).await;
    service.stop().await;
    assert_eq!(
        dead.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("garbage-1")
    );
    assert_eq!(dead.data, vec![0xff; 12]);
    let reason = dead_letter_reason(&dead);
    assert!(
        reason.contains("not a sightline.events.v1.EventBatch"),
        "{reason}"
    );
    assert_archived_exactly_once(&world, &[&after]).await;
    let queue = world.topology().partition_queue("archive", 0);
    assert_eq!(world.ready_messages(&queue).await, 0);
    assert!(
        no_more_dead_letters(&channel, &world).await,
        "dead-lettered once"
    );
    let _ = conn.close(200, "done".into()).await;
    world.finish().await;
}

#[tokio::test]
async fn compressed_and_plain_payloads_are_read_and_a_bad_frame_is_dead_lettered_as_received() {
    let (world, service, conn, channel) = dead_lettering_world().await;
    let topology = world.topology();
    let send = |id: &'static str, encoding: Option<&'static str>, payload: Vec<u8>| {
        let channel = channel.clone();
        let exchange = topology.events_exchange();
        async move {
            let mut properties = lapin::BasicProperties::default()
                .with_message_id(id.into())
                .with_type(EVENT_BATCH.into())
                .with_delivery_mode(2);
            if let Some(encoding) = encoding {
                properties = properties.with_content_encoding(encoding.into());
            }
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    sightline_broker::Topology::routing_key(Route::Partition(0)).into(),
                    Default::default(),
                    &payload,
                    properties,
                )
                .await
                .unwrap();
        }
    };
    // Through the service's own publisher: zstd on the wire (the default).
    let compressed = batch("compressed", 0, 0..20);
    world.publish(&compressed).await;
    // As a publisher with compression off sends it: no content-encoding.
    let plain = batch("plain", 0, 100..120);
    send("plain", None, prost::Message::encode_to_vec(&plain)).await;
    // A frame that claims zstd and is not.
    let bad_frame = vec![0xee; 700];
    send("bad-frame", Some("zstd"), bad_frame.clone()).await;
    world.wait_for_events(40).await;

    let dead = next_dead_letter(&channel, &world).await;
    service.stop().await;
    assert_eq!(
        dead.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("bad-frame")
    );
    assert_eq!(dead.data, bad_frame, "kept byte for byte");
    assert_eq!(
        dead.properties
            .content_encoding()
            .as_ref()
            .map(|s| s.as_str()),
        Some("zstd"),
        "the dead letter keeps its encoding, so it stays readable"
    );
    let reason = dead_letter_reason(&dead);
    assert!(
        reason.contains("content-encoding \"zstd\"") && reason.contains("not a zstd frame"),
        "{reason}"
    );
    assert_archived_exactly_once(&world, &[&compressed, &plain]).await;
    assert!(
        no_more_dead_letters(&channel, &world).await,
        "dead-lettered once"
    );
    let _ = conn.close(200, "done".into()).await;
    world.finish().await;
}
