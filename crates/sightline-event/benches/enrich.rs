//! Enrichment throughput, one core: `cargo bench -p sightline-event --bench enrich`.
//!
//! The event mix repeats user agents as real traffic does (a few dozen strings make most of
//! it), so `enrich/cached` is the steady state of a stream worker; `enrich/uncached` is the
//! cost when every user agent is new (cold cache, or a flood of unique bot strings).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datasketches::hll::{HllSketch, HllType};
use sightline_event::session::{SESSION_TIMEOUT_US, SessionEvent, VisitorKey, apply_event};
use sightline_event::{Enricher, UserAgentParser, VisitorSketch, detect_bot};
use sightline_proto::events::v1::{Event, EventType};

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.31.0",
];

const PAGES: &[&str] = &[
    "https://www.shop.example.com/",
    "https://shop.example.com/pricing/",
    "https://shop.example.com/blog/launch?ref=nav#comments",
    "https://shop.example.com/?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0K",
    "https://shop.example.com/landing?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
];

const REFERRERS: &[&str] = &[
    "",
    "",
    "https://www.google.com/",
    "https://www.google.co.uk/",
    "https://l.facebook.com/l.php?u=x",
    "https://t.co/AbC",
    "https://news.ycombinator.com/item?id=1",
    "https://shop.example.com/pricing",
    "https://mail.google.com/",
    "https://some-blog.example.org/post/42",
];

/// 1,000 page events cycling through the user agents, pages and referrers.
fn events() -> Vec<Event> {
    (0..1_000usize)
        .map(|i| Event {
            tenant_id: 1,
            site_id: 1,
            r#type: EventType::Page.into(),
            visitor_id: format!("visitor-{}", i % 97),
            timestamp_us: 1_741_600_000_000_000 + i as i64 * 7_000_000,
            user_agent: USER_AGENTS[i % USER_AGENTS.len()].into(),
            page_url: PAGES[i % PAGES.len()].into(),
            page_referrer: REFERRERS[i % REFERRERS.len()].into(),
            ..Event::default()
        })
        .collect()
}

fn enrich(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(events.len() as u64));
    let cached = Enricher::new().unwrap();
    group.bench_function("cached", |b| {
        b.iter(|| {
            events
                .iter()
                .for_each(|e| drop(black_box(cached.enrich(e))))
        })
    });
    let uncached =
        Enricher::with_user_agent_parser(UserAgentParser::with_cache_capacity(0).unwrap());
    group.bench_function("uncached", |b| {
        b.iter(|| {
            events
                .iter()
                .for_each(|e| drop(black_box(uncached.enrich(e))))
        })
    });
    group.finish();
}

fn user_agent(c: &mut Criterion) {
    let mut group = c.benchmark_group("user_agent");
    group.throughput(Throughput::Elements(USER_AGENTS.len() as u64));
    let parser = UserAgentParser::new().unwrap();
    group.bench_function("parse_cached", |b| {
        b.iter(|| {
            USER_AGENTS
                .iter()
                .for_each(|ua| drop(black_box(parser.parse(ua))))
        })
    });
    group.bench_function("parse_uncached", |b| {
        b.iter(|| {
            USER_AGENTS
                .iter()
                .for_each(|ua| drop(black_box(parser.parse_uncached(ua))))
        })
    });
    let parsed: Vec<_> = USER_AGENTS.iter().map(|ua| parser.parse(ua)).collect();
    group.bench_function("detect_bot", |b| {
        b.iter(|| {
            USER_AGENTS.iter().zip(&parsed).for_each(|(ua, p)| {
                black_box(detect_bot(ua, p));
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("build_parser", |b| {
        b.iter(|| UserAgentParser::new().unwrap())
    });
    group.finish();
}

fn session(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(100));
    let key = VisitorKey {
        tenant_id: 1,
        site_id: 1,
        visitor_id: "visitor-1",
    };
    group.bench_function("apply_event", |b| {
        b.iter(|| {
            let mut state = None;
            for i in 0..100i64 {
                let event = SessionEvent {
                    timestamp_us: i * 60_000_000,
                    is_pageview: i % 3 != 0,
                    page: if i % 2 == 0 { "/" } else { "/pricing" },
                };
                let step = apply_event(state, &key, &event, SESSION_TIMEOUT_US);
                black_box(&step.deltas);
                state = Some(step.state);
            }
        })
    });
    group.finish();
}

fn sketch(c: &mut Criterion) {
    let ids: Vec<String> = (0..10_000).map(|i| format!("visitor-{i}")).collect();
    let mut group = c.benchmark_group("sketch");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("insert", |b| {
        b.iter_batched(
            VisitorSketch::new,
            |mut s| {
                ids.iter().for_each(|id| s.insert(id));
                s
            },
            BatchSize::SmallInput,
        )
    });
    // The other register width, for the choice documented in sketch.rs.
    group.bench_function("insert_hll4_raw", |b| {
        b.iter_batched(
            || HllSketch::new(12, HllType::Hll4).unwrap(),
            |mut s| {
                ids.iter()
                    .for_each(|id| s.update(datasketches::hash::value::raw_bytes::from_str(id)));
                s
            },
            BatchSize::SmallInput,
        )
    });
    let (mut a, mut b_) = (VisitorSketch::new(), VisitorSketch::new());
    ids.iter().take(6_000).for_each(|id| a.insert(id));
    ids.iter().skip(4_000).for_each(|id| b_.insert(id));
    group.throughput(Throughput::Elements(1));
    group.bench_function("merge_dense", |b| {
        b.iter_batched(
            || a.clone(),
            |mut s| {
                s.merge(&b_);
                s
            },
            BatchSize::SmallInput,
        )
    });
    let mut raw4 = HllSketch::new(12, HllType::Hll4).unwrap();
    let mut other4 = HllSketch::new(12, HllType::Hll4).unwrap();
    ids.iter()
        .take(6_000)
        .for_each(|id| raw4.update(id.as_str()));
    ids.iter()
        .skip(4_000)
        .for_each(|id| other4.update(id.as_str()));
    group.bench_function("merge_dense_hll4_raw", |b| {
        b.iter(|| {
            let mut union = datasketches::hll::HllUnion::new(12).unwrap();
            union.update(&raw4);
            union.update(&other4);
            union.to_sketch(HllType::Hll4)
        })
    });
    let minutes: Vec<VisitorSketch> = ids
        .chunks(ids.len() / 60)
        .map(|chunk| {
            let mut s = VisitorSketch::new();
            chunk.iter().for_each(|id| s.insert(id));
            s
        })
        .collect();
    group.throughput(Throughput::Elements(minutes.len() as u64));
    group.bench_function("union_of_60", |b| {
        b.iter(|| VisitorSketch::union_of(&minutes))
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("bytes_round_trip_dense", |b| {
        b.iter(|| VisitorSketch::from_bytes(&a.to_bytes()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, enrich, user_agent, session, sketch);
criterion_main!(benches);
