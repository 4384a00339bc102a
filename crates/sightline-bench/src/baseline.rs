//! The baseline's messages: the load generator's events turned into the very `Event`s ingest
//! would publish (through ingest's own validation), routed and batched as ingest does.

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use sightline_broker::partition_for;
use sightline_proto::events::v1::{Event, EventBatch};

use crate::events::{IdSource, Template, TimeText};

/// Ingest's answer to these events, done in-process: every event validated with ingest's
/// rules and grouped by the partition ingest would route it to.
pub fn events_by_partition(
    templates: &[Template],
    tenant_id: i64,
    site_id: i64,
    partitions: u32,
) -> anyhow::Result<Vec<Vec<Event>>> {
    let rules = ingest::validate::Rules {
        max_event_bytes: 32 * 1024,
        clock_skew_threshold: chrono::Duration::seconds(10),
        visitor_hasher: ingest::privacy::VisitorHasher::new("bench"),
    };
    let mut ids = IdSource::new(rand::random(), u32::MAX);
    let now = TimeText::default();
    let mut buf = BytesMut::new();
    let mut out = vec![Vec::new(); partitions as usize];
    for template in templates {
        let body = template.render(&mut buf, &mut ids, &now);
        let envelope: ingest::segment::BatchEnvelope<'_> = serde_json::from_slice(&body)?;
        let info = ingest::validate::RequestInfo {
            tenant_id,
            site_id,
            received_at: chrono::Utc::now(),
            path_type: None,
            batch_sent_at: envelope.sent_at.as_deref(),
            batch_context: envelope.context,
            client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            header_user_agent: None,
        };
        for raw in &envelope.batch {
            let event = ingest::validate::validate(raw, &info, &rules)
                .map_err(|r| anyhow::anyhow!("generated event rejected: {}", r.detail))?;
            let partition = partition_for(tenant_id, &event.visitor_id, partitions);
            out[partition as usize].push(event);
        }
    }
    Ok(out)
}

/// `count` encoded `EventBatch` messages of `events_per_message` events of one partition,
/// taking its events in turn.
pub fn payloads(
    events: &[Event],
    partition: u32,
    events_per_message: usize,
    count: usize,
) -> Vec<Bytes> {
    if events.is_empty() {
        return Vec::new();
    }
    let mut next = 0;
    (0..count)
        .map(|_| {
            let batch = EventBatch {
                batch_id: uuid::Uuid::now_v7().to_string(),
                partition,
                created_at_us: chrono::Utc::now().timestamp_micros(),
                events: (0..events_per_message)
                    .map(|_| {
                        let e = events[next % events.len()].clone();
                        next += 1;
                        e
                    })
                    .collect(),
            };
            Bytes::from(batch.encode_to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventGen;

    #[test]
    fn generated_events_pass_ingest_validation_and_spread_over_partitions() {
        let mut generator = EventGen::new(1, 5000);
        let templates: Vec<Template> = (0..20).map(|_| generator.batch_template(50)).collect();
        let by_partition = events_by_partition(&templates, 1, 1, 8).unwrap();
        assert_eq!(by_partition.iter().map(Vec::len).sum::<usize>(), 1000);
        assert!(
            by_partition.iter().all(|p| p.len() > 60),
            "{:?}",
            by_partition.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let encoded = payloads(&by_partition[0], 0, 100, 2);
        assert_eq!(encoded.len(), 2);
        let batch = EventBatch::decode(encoded[0].clone()).unwrap();
        assert_eq!(batch.events.len(), 100);
        let per_event = encoded[0].len() / 100;
        assert!(
            (500..1200).contains(&per_event),
            "{per_event} bytes an event"
        );
    }
}
