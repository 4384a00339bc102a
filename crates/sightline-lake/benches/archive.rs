//! Encoding raw events as the archive's Parquet files, one core:
//! `cargo bench -p sightline-lake --bench archive`.
//!
//! The events mimic a shop's live traffic as `stream-load` generates it (100,000 visitors
//! over 200 product pages, five user agents, a referrer per visitor, a campaign on every
//! seventh, one call in five a track call, one in 25 an order). One iteration encodes the
//! 62,500 events a partition's 1-second buffer holds at 500,000 events/s over 8 partitions.
//!
//! `encode/lake` is the archive's writer ([`events_to_parquet`]: events borrowed, zstd level 1,
//! no dictionary on the columns that rarely repeat); the other rows build the record batch and
//! write it under other settings, for comparison in the same run: Parquet's defaults with zstd
//! level 3 (the archive's settings before they were tuned), and each tuned setting alone. The
//! file sizes of every variant are printed after the timings.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::{EnabledStatistics, WriterProperties},
    schema::types::ColumnPath,
};
use sightline_lake::parquet::{UNIQUE_COLUMNS, events_to_parquet, events_to_record_batch};
use sightline_proto::events::v1::{Event, EventType};

const EVENTS: usize = 62_500;

const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: [&str; 4] = [
    "",
    "https://www.google.com/",
    "https://l.facebook.com/",
    "https://news.example.org/article",
];

/// A deterministic pseudo-random walk (no `rand` needed for a fixed mix).
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 29)
}

fn events() -> Vec<Event> {
    let received = 1_763_769_600_000_000;
    (0..EVENTS as u64)
        .map(|i| {
            let v = mix(i) % 100_000;
            let track = i % 5 == 4;
            let campaign = if v.is_multiple_of(7) {
                "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
            } else {
                ""
            };
            let visitor = format!("anon-{v:08}");
            Event {
                message_id: format!("ajs-next-{:032x}", mix(i + EVENTS as u64)),
                tenant_id: 1,
                site_id: 1,
                r#type: if track { EventType::Track } else { EventType::Page }.into(),
                name: if track { "Added To Cart".into() } else { String::new() },
                anonymous_id: visitor.clone(),
                visitor_id: visitor,
                timestamp_us: received - 1_000_000 + (i as i64) * 16,
                original_timestamp_us: received - 1_000_000 + (i as i64) * 16,
                received_at_us: received + (i as i64) * 16,
                ip_truncated: format!("203.0.{}.0", v % 256),
                user_agent: AGENTS[v as usize % AGENTS.len()].into(),
                page_url: format!(
                    "https://www.shop.example.com/products/{}{campaign}",
                    mix(i + 7) % 200
                ),
                page_referrer: REFERRERS[v as usize % REFERRERS.len()].into(),
                page_title: "Product".into(),
                context_json: br#"{"library":{"name":"analytics.js","version":"5.2.0"},"locale":"en-US"}"#.to_vec().into(),
                properties_json: if track && i % 25 == 24 {
                    br#"{"revenue": 42.5, "currency": "EUR", "products": [{"sku": "a1", "price": 42.5}]}"#.to_vec().into()
                } else {
                    br#"{"path": "/", "title": "Shop"}"#.to_vec().into()
                },
                ..Event::default()
            }
        })
        .collect()
}

fn zstd(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).expect("a valid zstd level"))
}

/// Parquet's defaults (dictionary on every column, page statistics) with zstd at `level`.
fn defaults(level: i32) -> parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder().set_compression(zstd(level))
}

fn without_unique_dictionaries(
    mut builder: parquet::file::properties::WriterPropertiesBuilder,
) -> parquet::file::properties::WriterPropertiesBuilder {
    for column in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder
}

fn encode(c: &mut Criterion) {
    let events = events();
    let batch = events_to_record_batch(&events).expect("a valid batch");
    let variants = [
        ("parquet_defaults_zstd3", defaults(3).build()),
        ("zstd1", defaults(1).build()),
        (
            "no_dictionary_on_unique_columns",
            without_unique_dictionaries(defaults(3)).build(),
        ),
        (
            "no_dictionary_on_unique_columns_zstd1",
            without_unique_dictionaries(defaults(1)).build(),
        ),
        (
            "chunk_statistics",
            defaults(3)
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .build(),
        ),
    ];

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("lake", |b| {
        b.iter(|| events_to_parquet(black_box(&events)).expect("encoded"))
    });
    for (name, props) in &variants {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let rows = events_to_record_batch(black_box(&events)).expect("a valid batch");
                let mut writer =
                    ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props.clone()))
                        .expect("a writer");
                writer.write(&rows).expect("written");
                writer.into_inner().expect("closed")
            })
        });
    }
    group.finish();

    // Sizes, for the trade-off's other side (printed once, not timed).
    println!(
        "file size for {EVENTS} events: lake {} bytes",
        events_to_parquet(&events).expect("encoded").len()
    );
    for (name, props) in variants {
        let mut writer =
            ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).expect("a writer");
        writer.write(&batch).expect("written");
        let bytes = writer.into_inner().expect("closed").len();
        println!("file size for {EVENTS} events: {name} {bytes} bytes");
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
