//! Sessionisation, one event at a time, shared by the stream and the batch path.
//!
//! A visit (session) of one visitor of one site ends after [`SESSION_TIMEOUT_US`] without events
//! from that visitor. [`apply_event`] folds one event into the visitor's [`VisitorSession`] state
//! and returns [`SessionDelta`]s: increments a rollup adds up. Folding a visitor's events in
//! time order gives exactly the per-session figures (visits, bounces, duration, entry and exit
//! pages) of the whole day; the batch path does that, the stream path does it as events arrive.
//!
//! **Attribution**: every delta belongs to the bucket (minute, hour, day) of its session's
//! *start*, [`SessionStep::session_start_us`], even when the event that causes it comes later. A
//! visit that crosses midnight counts on the day it started, with its full duration.
//!
//! **Definitions**: a bounce is a visit with exactly one pageview. The entry page is the page of
//! the visit's earliest pageview, the exit page that of its latest (ties: the one applied
//! last). A visit with no pageview (only track events) has neither and is no bounce. Duration
//! is the time from the first to the last event of the visit, any event type.
//!
//! **Out-of-order events** (earlier than the state's last event, as the stream path may see):
//! - at or after the session start: the event belongs to the current session and counts
//!   (pageviews, bounce, entry page if it is now the earliest pageview, exit page if it is the
//!   latest), but does not move the last-seen time, so it adds no duration;
//! - before the session start by less than the timeout: as above, and the start (hence bucket,
//!   session id and duration) stays where it is;
//! - earlier still: [`Placement::Dropped`], state and figures unchanged. It belonged to an
//!   earlier visit whose state is gone; the nightly batch, which sorts by time, counts it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Inactivity that ends a visit: 30 minutes, in microseconds. An event exactly this long
/// after the previous one starts a new visit.
pub const SESSION_TIMEOUT_US: i64 = 30 * 60 * 1_000_000;

/// Whose visit: sessions never span tenants, sites or visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorKey<'a> {
    /// Tenant id.
    pub tenant_id: i64,
    /// Site id.
    pub site_id: i64,
    /// The pipeline's visitor id (`Event::visitor_id`).
    pub visitor_id: &'a str,
}

/// The part of an event sessionisation looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent<'a> {
    /// Event time, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// A page or screen view (counts for bounces, entry and exit pages).
    pub is_pageview: bool,
    /// The normalised page path (or screen name) of a pageview.
    pub page: &'a str,
}

/// One visitor's current visit: the state the stream processor keeps per (tenant, site,
/// visitor) between events. Serialisable so it can be checkpointed with the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorSession {
    /// Deterministic id: a hash of tenant, site, visitor and start time ([`session_id`]).
    pub session_id: Uuid,
    /// Time of the first event, microseconds since the Unix epoch; the rollup bucket.
    pub start_us: i64,
    /// Time of the latest event (never moved back by out-of-order events).
    pub last_us: i64,
    /// Events in the visit.
    pub events: u32,
    /// Pageviews in the visit.
    pub pageviews: u32,
    /// Entry page and the time of its pageview; `None` until the first pageview.
    pub entry: Option<(String, i64)>,
    /// Exit page (latest pageview so far) and the time of its pageview.
    pub exit: Option<(String, i64)>,
}

impl VisitorSession {
    /// Visit duration so far: last event minus first event.
    pub fn duration_us(&self) -> i64 {
        self.last_us.saturating_sub(self.start_us)
    }

    /// Whether an event at `now_us` would still continue this visit. A state for which this
    /// is false at the stream's watermark can be evicted: it will emit nothing more.
    pub fn is_open_at(&self, now_us: i64, timeout_us: i64) -> bool {
        now_us.saturating_sub(self.last_us) < timeout_us
    }
}

/// What [`apply_event`] did with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The event started a new visit.
    Started,
    /// The event continued the visit, in time order.
    Continued,
    /// The event was earlier than the last one but belongs to the current visit.
    OutOfOrder,
    /// The event is too old for the current visit and changed nothing.
    Dropped,
}

/// An increment for the rollup of the session start's bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionDelta {
    /// Visits: +1 when a visit starts.
    Visits(i64),
    /// Bounces: +1 at a visit's first pageview, -1 at its second.
    Bounces(i64),
    /// Total visit duration in microseconds: + the time the visit was extended by.
    DurationUs(i64),
    /// Visits entering on `page`: +1 at the first pageview, -1/+1 if an earlier one arrives.
    EntryPage {
        /// Normalised page path.
        page: String,
        /// +1 or -1.
        delta: i64,
    },
    /// Visits leaving on `page`: +1 at the first pageview, -1 old / +1 new as it changes.
    ExitPage {
        /// Normalised page path.
        page: String,
        /// +1 or -1.
        delta: i64,
    },
}

/// The result of folding one event into a visitor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStep {
    /// The visitor's state after the event: store it for the next event.
    pub state: VisitorSession,
    /// What happened to the event.
    pub placement: Placement,
    /// Start of the visit the deltas belong to: the rollup bucket to add them to.
    pub session_start_us: i64,
    /// Increments for that bucket (empty for a dropped event).
    pub deltas: Vec<SessionDelta>,
}

/// Folds one event into a visitor's state (`None`: no open visit), ending visits after
/// `timeout_us` of inactivity (normally [`SESSION_TIMEOUT_US`]). Pure: the same state and
/// event always give the same result. See the module documentation for the rules.
pub fn apply_event(
    state: Option<VisitorSession>,
    key: &VisitorKey<'_>,
    event: &SessionEvent<'_>,
    timeout_us: i64,
) -> SessionStep {
    let t = event.timestamp_us;
    let (mut session, placement, mut deltas) = match state {
        Some(s) if t >= s.last_us && t.saturating_sub(s.last_us) < timeout_us => {
            let extension = t.saturating_sub(s.last_us);
            let deltas = if extension > 0 {
                vec![SessionDelta::DurationUs(extension)]
            } else {
                Vec::new()
            };
            let s = VisitorSession { last_us: t, ..s };
            (s, Placement::Continued, deltas)
        }
        Some(s) if t < s.last_us && s.start_us.saturating_sub(t) < timeout_us => {
            (s, Placement::OutOfOrder, Vec::new())
        }
        Some(s) if t < s.last_us => {
            let session_start_us = s.start_us;
            return SessionStep {
                state: s,
                placement: Placement::Dropped,
                session_start_us,
                deltas: Vec::new(),
            };
        }
        _ => (
            new_session(key, t),
            Placement::Started,
            vec![SessionDelta::Visits(1)],
        ),
    };
    session.events = session.events.saturating_add(1);
    if event.is_pageview {
        count_pageview(&mut session, event, &mut deltas);
    }
    SessionStep {
        session_start_us: session.start_us,
        state: session,
        placement,
        deltas,
    }
}

fn new_session(key: &VisitorKey<'_>, t: i64) -> VisitorSession {
    VisitorSession {
        session_id: session_id(key, t),
        start_us: t,
        last_us: t,
        events: 0,
        pageviews: 0,
        entry: None,
        exit: None,
    }
}

fn count_pageview(
    s: &mut VisitorSession,
    event: &SessionEvent<'_>,
    deltas: &mut Vec<SessionDelta>,
) {
    let (t, page) = (event.timestamp_us, event.page);
    s.pageviews = s.pageviews.saturating_add(1);
    match s.pageviews {
        1 => deltas.push(SessionDelta::Bounces(1)),
        2 => deltas.push(SessionDelta::Bounces(-1)),
        _ => {}
    }
    match &mut s.entry {
        None => {
            deltas.push(entry_delta(page, 1));
            s.entry = Some((page.to_owned(), t));
        }
        Some((old, old_t)) if t < *old_t => {
            if old != page {
                deltas.push(entry_delta(old, -1));
                deltas.push(entry_delta(page, 1));
                *old = page.to_owned();
            }
            *old_t = t;
        }
        Some(_) => {}
    }
    match &mut s.exit {
        None => {
            deltas.push(exit_delta(page, 1));
            s.exit = Some((page.to_owned(), t));
        }
        Some((old, old_t)) if t >= *old_t => {
            if old != page {
                deltas.push(exit_delta(old, -1));
                deltas.push(exit_delta(page, 1));
                *old = page.to_owned();
            }
            *old_t = t;
        }
        Some(_) => {}
    }
}

fn entry_delta(page: &str, delta: i64) -> SessionDelta {
    SessionDelta::EntryPage {
        page: page.to_owned(),
        delta,
    }
}

fn exit_delta(page: &str, delta: i64) -> SessionDelta {
    SessionDelta::ExitPage {
        page: page.to_owned(),
        delta,
    }
}

/// The deterministic id of the visit of `key` starting at `start_us`: a UUID (version 8,
/// RFC 9562 "custom") from a keyed BLAKE3 hash, so the stream and the batch path, and any
/// rerun, name the same visit the same.
pub fn session_id(key: &VisitorKey<'_>, start_us: i64) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key("sightline-event 2025 session id v1");
    hasher.update(&key.tenant_id.to_le_bytes());
    hasher.update(&key.site_id.to_le_bytes());
    hasher.update(&(key.visitor_id.len() as u64).to_le_bytes());
    hasher.update(key.visitor_id.as_bytes());
    hasher.update(&start_us.to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests;
