//! Writes a small sample lake into a folder, for checking the files with other engines:
//! `cargo run -p sightline-lake --example write_sample -- /tmp/lake`, then for instance
//! `duckdb -c "select * from read_parquet('/tmp/lake/raw/events/**/*.parquet', hive_partitioning = true)"`.

use bytes::Bytes;
use sightline_lake::{LocalStore, write_invalid_batches, write_raw_batches};
use sightline_proto::events::v1::{Event, EventBatch, EventType, InvalidEvent, InvalidEventBatch};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: write_sample <folder>")?;
    let store = LocalStore::new(dir)?;
    // 2025-03-09T22:30:00Z and one hour later.
    let t0 = 1_741_559_400_000_000;
    let events = (0..4)
        .map(|n| {
            let mut e = Event {
                message_id: format!("msg-{n}"),
                tenant_id: 1 + n % 2,
                site_id: 10,
                name: "Order Completed".into(),
                visitor_id: format!("v-{n}"),
                timestamp_us: t0 + n * 3_600_000_000 / 2,
                original_timestamp_us: t0,
                received_at_us: t0 + 1,
                properties_json: Bytes::from(format!(r#"{{"revenue":{n}}}"#)),
                ..Default::default()
            };
            e.set_type(EventType::Track);
            e
        })
        .collect();
    let batch = EventBatch {
        batch_id: "sample".into(),
        partition: 0,
        created_at_us: t0,
        events,
    };
    for key in write_raw_batches(&store, &[batch]).await? {
        println!("{key}");
    }
    let invalid = InvalidEventBatch {
        batch_id: "sample-invalid".into(),
        created_at_us: t0,
        events: vec![InvalidEvent {
            tenant_id: 1,
            site_id: 10,
            reason: "missing_event_name".into(),
            detail: "track calls need `event`".into(),
            raw: Bytes::from_static(br#"{"type":"track"}"#),
            received_at_us: t0,
            message_id: "bad-1".into(),
        }],
    };
    for key in write_invalid_batches(&store, &[invalid]).await? {
        println!("{key}");
    }
    Ok(())
}
