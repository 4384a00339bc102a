//! Sessionisation tests: hand-written cases, then property tests that compare folding events
//! through [`apply_event`] with an independent, straightforward computation of sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const T: i64 = SESSION_TIMEOUT_US;
/// 2025-03-10T00:00:00Z.
const DAY: i64 = 1_741_564_800 * SEC;

const KEY: VisitorKey<'static> = VisitorKey {
    tenant_id: 1,
    site_id: 2,
    visitor_id: "visitor-a",
};

fn pv(t: i64, page: &str) -> SessionEvent<'_> {
    SessionEvent {
        timestamp_us: t,
        is_pageview: true,
        page,
    }
}

fn track(t: i64) -> SessionEvent<'static> {
    SessionEvent {
        timestamp_us: t,
        is_pageview: false,
        page: "",
    }
}

/// Folds one visitor's events in the given order; returns the last state and every step.
fn run(events: &[SessionEvent<'_>]) -> (Option<VisitorSession>, Vec<SessionStep>) {
    let mut state = None;
    let mut steps = Vec::new();
    for event in events {
        let step = apply_event(state.take(), &KEY, event, T);
        state = Some(step.state.clone());
        steps.push(step);
    }
    (state, steps)
}

fn entry(page: &str, delta: i64) -> SessionDelta {
    SessionDelta::EntryPage {
        page: page.into(),
        delta,
    }
}

fn exit(page: &str, delta: i64) -> SessionDelta {
    SessionDelta::ExitPage {
        page: page.into(),
        delta,
    }
}

#[test]
fn a_single_pageview_is_a_bounced_visit() {
    let (state, steps) = run(&[pv(DAY, "/")]);
    let step = &steps[0];
    assert_eq!(step.placement, Placement::Started);
    assert_eq!(step.session_start_us, DAY);
    assert_eq!(
        step.deltas,
        [
            SessionDelta::Visits(1),
            SessionDelta::Bounces(1),
            entry("/", 1),
            exit("/", 1)
        ]
    );
    let state = state.unwrap();
    assert_eq!((state.pageviews, state.duration_us()), (1, 0));
    assert_eq!(state.session_id, session_id(&KEY, DAY));
}

#[test]
fn a_second_pageview_retracts_the_bounce_and_moves_the_exit() {
    let (_, steps) = run(&[pv(DAY, "/"), pv(DAY + 5 * MIN, "/pricing")]);
    assert_eq!(steps[1].placement, Placement::Continued);
    assert_eq!(
        steps[1].deltas,
        [
            SessionDelta::DurationUs(5 * MIN),
            SessionDelta::Bounces(-1),
            exit("/", -1),
            exit("/pricing", 1)
        ]
    );
}

#[test]
fn thirty_minutes_of_silence_end_the_visit() {
    let (_, steps) = run(&[
        pv(DAY, "/"),
        pv(DAY + T - 1, "/a"),
        pv(DAY + 2 * T - 1, "/b"),
    ]);
    assert_eq!(steps[1].placement, Placement::Continued);
    assert_eq!(
        steps[2].placement,
        Placement::Started,
        "exactly 30 minutes later"
    );
    assert_eq!(steps[2].session_start_us, DAY + 2 * T - 1);
    assert_ne!(steps[2].state.session_id, steps[0].state.session_id);
}

#[test]
fn a_visit_without_pageviews_has_no_bounce_nor_pages() {
    let (state, steps) = run(&[track(DAY), track(DAY + MIN)]);
    assert_eq!(steps[0].deltas, [SessionDelta::Visits(1)]);
    assert_eq!(steps[1].deltas, [SessionDelta::DurationUs(MIN)]);
    let state = state.unwrap();
    assert_eq!((state.entry, state.exit), (None, None));
}

#[test]
fn track_events_extend_duration_but_do_not_change_pages() {
    let (_, steps) = run(&[pv(DAY, "/"), track(DAY + 20 * MIN), track(DAY + 45 * MIN)]);
    assert_eq!(
        steps[2].placement,
        Placement::Continued,
        "20 minutes after the track event"
    );
    assert_eq!(steps[2].deltas, [SessionDelta::DurationUs(25 * MIN)]);
}

#[test]
fn deltas_belong_to_the_bucket_where_the_visit_started() {
    let start = DAY + 23 * HOUR + 50 * MIN;
    let (_, steps) = run(&[pv(start, "/"), pv(start + 20 * MIN, "/next-day")]);
    assert!(steps.iter().all(|s| s.session_start_us == start));
}

#[test]
fn a_late_event_inside_the_visit_counts_without_moving_last_seen() {
    let (state, steps) = run(&[
        pv(DAY, "/"),
        track(DAY + 10 * MIN),
        pv(DAY + 4 * MIN, "/late"),
    ]);
    let late = &steps[2];
    assert_eq!(late.placement, Placement::OutOfOrder);
    assert_eq!(
        late.deltas,
        [SessionDelta::Bounces(-1), exit("/", -1), exit("/late", 1)],
        "no duration: it does not extend the visit; the latest pageview is the exit"
    );
    let state = state.unwrap();
    assert_eq!(
        (state.last_us, state.pageviews, state.events),
        (DAY + 10 * MIN, 2, 3)
    );
}

#[test]
fn a_late_pageview_before_the_entry_becomes_the_entry() {
    let (_, steps) = run(&[track(DAY), pv(DAY + 5 * MIN, "/b"), pv(DAY + 2 * MIN, "/a")]);
    assert_eq!(
        steps[2].deltas,
        [SessionDelta::Bounces(-1), entry("/b", -1), entry("/a", 1)],
        "/b stays the exit: it is the later pageview"
    );
}

#[test]
fn a_late_event_shortly_before_the_start_joins_without_moving_the_start() {
    let (state, steps) = run(&[pv(DAY + HOUR, "/"), pv(DAY + HOUR - 10 * MIN, "/early")]);
    assert_eq!(steps[1].placement, Placement::OutOfOrder);
    assert_eq!(steps[1].session_start_us, DAY + HOUR);
    let state = state.unwrap();
    assert_eq!(
        (state.start_us, state.duration_us(), state.pageviews),
        (DAY + HOUR, 0, 2)
    );
    assert_eq!(
        state.entry,
        Some(("/early".to_owned(), DAY + HOUR - 10 * MIN))
    );
}

#[test]
fn an_event_older_than_the_visit_window_is_dropped() {
    let (state, steps) = run(&[pv(DAY + HOUR, "/"), pv(DAY + HOUR - T, "/old")]);
    assert_eq!(steps[1].placement, Placement::Dropped);
    assert!(steps[1].deltas.is_empty());
    assert_eq!(state.unwrap(), steps[0].state);
}

#[test]
fn absurd_timestamps_do_not_overflow() {
    let (state, steps) = run(&[pv(i64::MIN, "/"), pv(i64::MAX, "/"), pv(i64::MIN, "/")]);
    assert_eq!(steps[1].placement, Placement::Started);
    assert_eq!(steps[2].placement, Placement::Dropped);
    assert_eq!(state.unwrap().duration_us(), 0);
}

#[test]
fn session_ids_are_deterministic_and_distinct() {
    let other_visitor = VisitorKey {
        visitor_id: "visitor-b",
        ..KEY
    };
    let other_site = VisitorKey { site_id: 3, ..KEY };
    assert_eq!(session_id(&KEY, DAY), session_id(&KEY, DAY));
    let ids: BTreeSet<_> = [
        session_id(&KEY, DAY),
        session_id(&KEY, DAY + 1),
        session_id(&other_visitor, DAY),
        session_id(&other_site, DAY),
    ]
    .into();
    assert_eq!(ids.len(), 4);
    assert_eq!(session_id(&KEY, DAY).get_version_num(), 8);
}

#[test]
fn open_visits_close_after_the_timeout() {
    let (state, _) = run(&[pv(DAY, "/")]);
    let state = state.unwrap();
    assert!(state.is_open_at(DAY + T - 1, T));
    assert!(!state.is_open_at(DAY + T, T));
}

#[test]
fn state_survives_a_serde_round_trip() {
    let (state, _) = run(&[pv(DAY, "/"), pv(DAY + MIN, "/b")]);
    let json = serde_json::to_string(&state).unwrap();
    let back: Option<VisitorSession> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
}

// ---- property tests against a straightforward reference ----

/// Rollup totals: (bucket, metric) → sum, zeros removed.
type Totals = BTreeMap<(i64, String), i64>;

#[derive(Clone, Debug)]
struct Ev {
    visitor: usize,
    t: i64,
    pageview: bool,
    page: &'static str,
}

const PAGES: [&str; 4] = ["/", "/pricing", "/docs", "/blog/post"];

fn hour_bucket(start_us: i64) -> i64 {
    start_us.div_euclid(HOUR)
}

fn visitor_id(visitor: usize) -> String {
    format!("visitor-{visitor}")
}

fn add(totals: &mut Totals, bucket: i64, delta: &SessionDelta) {
    let (metric, value) = match delta {
        SessionDelta::Visits(v) => ("visits".to_owned(), *v),
        SessionDelta::Bounces(v) => ("bounces".to_owned(), *v),
        SessionDelta::DurationUs(v) => ("duration_us".to_owned(), *v),
        SessionDelta::EntryPage { page, delta } => (format!("entry:{page}"), *delta),
        SessionDelta::ExitPage { page, delta } => (format!("exit:{page}"), *delta),
    };
    *totals.entry((bucket, metric)).or_default() += value;
}

/// The stream/batch path: fold events in the given order, per visitor state, summing deltas.
/// Returns the totals and the ids of the visits started.
fn fold(events: &[Ev], bucket: fn(i64) -> i64, checkpoint: bool) -> (Totals, BTreeSet<Uuid>) {
    let mut states: HashMap<usize, VisitorSession> = HashMap::new();
    let mut totals = Totals::new();
    let mut ids = BTreeSet::new();
    for e in events {
        let id = visitor_id(e.visitor);
        let key = VisitorKey {
            tenant_id: 1,
            site_id: 2,
            visitor_id: &id,
        };
        let mut state = states.remove(&e.visitor);
        if checkpoint {
            let json = serde_json::to_vec(&state).unwrap();
            state = serde_json::from_slice(&json).unwrap();
        }
        let event = SessionEvent {
            timestamp_us: e.t,
            is_pageview: e.pageview,
            page: e.page,
        };
        let step = apply_event(state, &key, &event, T);
        if step.placement == Placement::Started {
            ids.insert(step.state.session_id);
        }
        for delta in &step.deltas {
            add(&mut totals, bucket(step.session_start_us), delta);
        }
        states.insert(e.visitor, step.state);
    }
    totals.retain(|_, v| *v != 0);
    (totals, ids)
}

/// The reference: per visitor, sort by time, cut where the gap reaches the timeout, then
/// compute each visit's figures directly.
fn reference(events: &[Ev], bucket: fn(i64) -> i64) -> (Totals, BTreeSet<Uuid>) {
    let mut by_visitor: BTreeMap<usize, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_visitor.entry(e.visitor).or_default().push(e);
    }
    let mut totals = Totals::new();
    let mut ids = BTreeSet::new();
    for (visitor, mut evs) in by_visitor {
        evs.sort_by_key(|e| e.t);
        let mut visits: Vec<Vec<&Ev>> = Vec::new();
        for e in evs {
            match visits.last_mut() {
                Some(visit) if e.t - visit[visit.len() - 1].t < T => visit.push(e),
                _ => visits.push(vec![e]),
            }
        }
        for visit in visits {
            let (first, last) = (visit[0].t, visit[visit.len() - 1].t);
            let b = bucket(first);
            let mut bump = |metric: String, v: i64| *totals.entry((b, metric)).or_default() += v;
            bump("visits".into(), 1);
            bump("duration_us".into(), last - first);
            let pages: Vec<&str> = visit
                .iter()
                .filter(|e| e.pageview)
                .map(|e| e.page)
                .collect();
            if pages.len() == 1 {
                bump("bounces".into(), 1);
            }
            if let (Some(entry), Some(exit)) = (pages.first(), pages.last()) {
                bump(format!("entry:{entry}"), 1);
                bump(format!("exit:{exit}"), 1);
            }
            let id = visitor_id(visitor);
            let key = VisitorKey {
                tenant_id: 1,
                site_id: 2,
                visitor_id: &id,
            };
            ids.insert(session_id(&key, first));
        }
    }
    totals.retain(|_, v| *v != 0);
    (totals, ids)
}

/// Gaps between a visitor's consecutive events, weighted towards the interesting ones: same
/// microsecond, within a visit, right at the timeout, well past it.
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(0i64),
        6 => 1..10 * MIN,
        2 => (T - 2)..=(T + 2),
        1 => T..(6 * HOUR),
        2 => 0..T,
    ]
}

/// Up to four visitors' events over a day, sorted by time (ties keep generation order).
fn day_of_events() -> impl Strategy<Value = Vec<Ev>> {
    let visitor = (
        0..20 * HOUR,
        prop::collection::vec((gap(), any::<bool>(), 0..PAGES.len()), 1..25),
    );
    prop::collection::vec(visitor, 1..5).prop_map(|visitors| {
        let mut events = Vec::new();
        for (v, (offset, steps)) in visitors.into_iter().enumerate() {
            let mut t = DAY + offset;
            for (gap, pageview, page) in steps {
                t += gap;
                events.push(Ev {
                    visitor: v,
                    t,
                    pageview,
                    page: PAGES[page],
                });
            }
        }
        events.sort_by_key(|e| e.t);
        events
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn folding_sorted_events_equals_the_reference(events in day_of_events()) {
        prop_assert_eq!(fold(&events, hour_bucket, false), reference(&events, hour_bucket));
        prop_assert_eq!(fold(&events, |t| t, false), reference(&events, |t| t));
    }

    #[test]
    fn checkpointing_the_state_between_events_changes_nothing(events in day_of_events()) {
        prop_assert_eq!(fold(&events, hour_bucket, true), fold(&events, hour_bucket, false));
    }

    #[test]
    fn any_arrival_order_keeps_rollups_consistent(
        events in day_of_events().prop_shuffle(),
    ) {
        let (totals, _) = fold(&events, hour_bucket, false);
        let mut per_bucket: BTreeMap<i64, BTreeMap<&str, i64>> = BTreeMap::new();
        for ((bucket, metric), value) in &totals {
            let kind = metric.split(':').next().unwrap();
            prop_assert!(*value >= 0, "{metric} is {value} in bucket {bucket}");
            *per_bucket.entry(*bucket).or_default().entry(kind).or_default() += value;
        }
        for (bucket, sums) in per_bucket {
            let get = |k: &str| sums.get(k).copied().unwrap_or(0);
            prop_assert!(get("bounces") <= get("visits"), "bucket {}", bucket);
            prop_assert!(get("entry") <= get("visits"), "bucket {}", bucket);
            prop_assert_eq!(get("entry"), get("exit"), "bucket {}", bucket);
        }
    }
}
