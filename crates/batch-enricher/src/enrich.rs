//! Stage 1's per-event work: validation, the shared enrichment, and exact sessionisation.
//!
//! Every event goes through [`Fact::of`], the stream processor's own extraction (so both layers
//! see the same browser, source, page, bot verdict and order), plus the batch layer's extra bot
//! list. Events arrive sorted by site, visitor and time, so one pass of
//! [`sightline_event::apply_event`] per visitor gives every visit exactly.

use std::{collections::HashSet, ops::Range};

use sightline_event::{
    BotReason, Enriched, Enricher, SESSION_TIMEOUT_US, VisitorKey, apply_event, session::Placement,
};
use sightline_proto::events::v1::{Event, EventType};
use stream_processor::rollup::fact::{Attrs, Fact, Kind};
use uuid::Uuid;

/// One valid event, enriched.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its position in the events [`prepare`] was given: the row of [`crate::raw::Sorted`] it
    /// was read from.
    pub row: usize,
    /// The event as stored in `raw/`, with the fields enrichment reads
    /// ([`sightline_lake::parquet::Fields::Derived`]).
    pub event: Event,
    /// What enrichment derived beyond what the fact carries.
    pub detail: Detail,
    /// What the rollups count of it (the stream processor's own extraction): with `detail`,
    /// the whole enrichment (browser, OS, device, source, medium and the first UTM fields are
    /// in its `attrs`, the bot verdict in `bot`).
    pub fact: Fact,
    /// The visit it belongs to (humans' pages, screens and tracks).
    pub session_id: Option<Uuid>,
}

/// The enrichment fields `trusted/events` has and a [`Fact`] does not.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    /// Browser major version.
    pub browser_major: String,
    /// Operating system major version.
    pub os_major: String,
    /// Page host, lowercase, without `www.`.
    pub host: String,
    /// Page path without query, fragment or trailing slash.
    pub path: String,
    /// `utm_term`.
    pub utm_term: String,
    /// `utm_content`.
    pub utm_content: String,
}

impl Detail {
    /// Takes the fields out of `enriched`, but for the path, which the fact needs too.
    fn take(enriched: &mut Enriched) -> Self {
        let take = std::mem::take::<String>;
        Self {
            browser_major: take(&mut enriched.browser_major),
            os_major: take(&mut enriched.os_major),
            host: take(&mut enriched.host),
            path: enriched.path.clone(),
            utm_term: take(&mut enriched.utm_term),
            utm_content: take(&mut enriched.utm_content),
        }
    }
}

/// An event left out, with its reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Its position in the events [`prepare`] was given (see [`Prepared::row`]).
    pub row: usize,
    /// The event as read.
    pub event: Event,
    /// `unknown_site`, `unknown_type` or `missing_id`.
    pub reason: &'static str,
}

/// One visit, from its first event.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    /// Deterministic id ([`sightline_event::session::session_id`]).
    pub session_id: Uuid,
    /// The site.
    pub site_id: i64,
    /// The visitor.
    pub visitor_id: String,
    /// First event, µs.
    pub start_us: i64,
    /// Latest event, µs.
    pub end_us: i64,
    /// Events in the visit.
    pub events: u32,
    /// Pageviews in the visit.
    pub pageviews: u32,
    /// First page.
    pub entry_page: Option<String>,
    /// Last page.
    pub exit_page: Option<String>,
    /// Attributes of the first event.
    pub attrs: Attrs,
}

/// The batch layer's own enrichment rules, on top of the shared ones.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Lowercase user agent substrings that mark bots.
    extra_bots: Vec<String>,
}

impl Rules {
    /// Rules from `batch.extra_bot_user_agents`.
    pub fn new(extra_bot_user_agents: &[String]) -> Self {
        Self {
            extra_bots: extra_bot_user_agents
                .iter()
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    fn is_listed_bot(&self, user_agent: &str) -> bool {
        if self.extra_bots.is_empty() {
            return false;
        }
        let ua = user_agent.to_lowercase();
        self.extra_bots.iter().any(|p| ua.contains(p))
    }
}

/// Why an event cannot be used, if it cannot.
fn rejection(event: &Event, sites: &HashSet<i64>) -> Option<&'static str> {
    rejection_of(
        &event.message_id,
        &event.visitor_id,
        event.r#type(),
        event.site_id,
        sites,
    )
}

/// Why an event with these fields cannot be used, if it cannot (raw rows are checked with it
/// before they become events, through [`Role::of`]).
fn rejection_of(
    message_id: &str,
    visitor_id: &str,
    event_type: EventType,
    site_id: i64,
    sites: &HashSet<i64>,
) -> Option<&'static str> {
    if message_id.is_empty() || visitor_id.is_empty() {
        Some("missing_id")
    } else if event_type == EventType::Unspecified {
        Some("unknown_type")
    } else if !sites.contains(&site_id) {
        Some("unknown_site")
    } else {
        None
    }
}

/// Validates and enriches `events` (sorted by site, visitor and time); `sites` are the tenant's.
pub fn prepare(
    enricher: &Enricher,
    rules: &Rules,
    events: Vec<Event>,
    sites: &HashSet<i64>,
) -> (Vec<Prepared>, Vec<Rejected>) {
    let mut prepared = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (row, event) in events.into_iter().enumerate() {
        if let Some(reason) = rejection(&event, sites) {
            rejected.push(Rejected { row, event, reason });
            continue;
        }
        let mut enriched = enricher.enrich(&event);
        let detail = Detail::take(&mut enriched);
        let mut fact = Fact::from_enriched(&event, enriched);
        if fact.bot.is_none() && rules.is_listed_bot(&event.user_agent) {
            fact.bot = Some(BotReason::KnownBotPattern);
        }
        prepared.push(Prepared {
            row,
            event,
            detail,
            fact,
            session_id: None,
        });
    }
    (prepared, rejected)
}

/// What a raw row is to sessionisation, as far as reaching a day's figures goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It will be rejected ([`rejection_of`]): kept wherever it lies, so that it is reported.
    Rejected,
    /// `identify`, `group` or `alias`: counted in its own bucket, and part of no visit.
    Bookkeeping,
    /// `page`, `screen` or `track`: it may start or extend a visit (bots' included, so that
    /// no chain of visits is ever cut short).
    Activity,
}

impl Role {
    /// The role of a row with these fields.
    pub fn of(
        message_id: &str,
        visitor_id: &str,
        event_type: EventType,
        site_id: i64,
        sites: &HashSet<i64>,
    ) -> Self {
        if rejection_of(message_id, visitor_id, event_type, site_id, sites).is_some() {
            Self::Rejected
        } else if matches!(
            event_type,
            EventType::Identify | EventType::Group | EventType::Alias
        ) {
            Self::Bookkeeping
        } else {
            Self::Activity
        }
    }
}

/// Marks in `keep` which of one visitor's rows (`rows`, time and role, in time order) can change
/// a figure of a site-day whose events in `reach` count (`None`: the site has no day here).
///
/// An event counts in its own bucket and a visit in the bucket of its first event, and a visit
/// is a chain of activity less than [`SESSION_TIMEOUT_US`] apart. So the activity rows kept are
/// the chains (split where activity pauses that long) with a row in `reach`, margins included:
/// the visits that start before the day or end after it stay whole. A pause in all activity,
/// bots' included, is a pause in every visit, so no visit is cut. Bookkeeping rows are kept when
/// they lie in `reach`, rejected rows always. Every other row only feeds visits and buckets
/// outside the day.
pub fn mark_reaching(rows: &[(i64, Role)], reach: Option<&Range<i64>>, keep: &mut [bool]) {
    let in_reach = |t: &i64| reach.is_some_and(|r| r.contains(t));
    // The activity rows of the chain in progress, and whether one of them is in reach.
    let mut chain: Vec<usize> = Vec::new();
    let mut chain_reaches = false;
    let mut last_us = None;
    fn close(keep: &mut [bool], chain: &mut Vec<usize>, reaches: bool) {
        for &i in chain.iter() {
            keep[i] = reaches;
        }
        chain.clear();
    }
    for (i, &(t, role)) in rows.iter().enumerate() {
        match role {
            Role::Rejected => keep[i] = true,
            Role::Bookkeeping => keep[i] = in_reach(&t),
            Role::Activity => {
                if last_us.is_some_and(|last: i64| t.saturating_sub(last) >= SESSION_TIMEOUT_US) {
                    close(keep, &mut chain, chain_reaches);
                    chain_reaches = false;
                }
                chain.push(i);
                chain_reaches |= in_reach(&t);
                last_us = Some(t);
            }
        }
    }
    close(keep, &mut chain, chain_reaches);
}

/// Makes `page` the page of `state` (a visit's entry or exit so far), copying it only when it
/// changed: most events leave both as they were.
fn follow(page: &mut Option<String>, state: &Option<(String, i64)>) {
    let now = state.as_ref().map(|(page, _)| page.as_str());
    if page.as_deref() != now {
        *page = now.map(str::to_owned);
    }
}

/// Sessionises `prepared` (sorted by site, visitor and time) with the shared rules, fills each
/// event's `session_id` and returns every visit.
pub fn sessionise(prepared: &mut [Prepared]) -> Vec<Visit> {
    let mut visits: Vec<Visit> = Vec::new();
    let mut state = None;
    let mut current: Option<(i64, String)> = None;
    for p in prepared.iter_mut() {
        let same_visitor = current.as_ref().is_some_and(|(site, visitor)| {
            *site == p.event.site_id && *visitor == p.event.visitor_id
        });
        if !same_visitor {
            state = None;
            current = Some((p.event.site_id, p.event.visitor_id.clone()));
        }
        if p.fact.bot.is_some() || p.fact.kind == Kind::Other {
            continue;
        }
        let key = VisitorKey {
            tenant_id: p.event.tenant_id,
            site_id: p.event.site_id,
            visitor_id: &p.event.visitor_id,
        };
        let event = sightline_event::SessionEvent {
            timestamp_us: p.fact.timestamp_us,
            is_pageview: p.fact.kind == Kind::Pageview,
            page: &p.fact.page,
        };
        let step = apply_event(state.take(), &key, &event, SESSION_TIMEOUT_US);
        if step.placement == Placement::Started {
            visits.push(Visit {
                session_id: step.state.session_id,
                site_id: p.event.site_id,
                visitor_id: p.event.visitor_id.clone(),
                start_us: step.state.start_us,
                end_us: step.state.last_us,
                events: 0,
                pageviews: 0,
                entry_page: None,
                exit_page: None,
                attrs: p.fact.attrs.clone(),
            });
        }
        if let Some(visit) = visits.last_mut() {
            visit.end_us = step.state.last_us;
            visit.events = step.state.events;
            visit.pageviews = step.state.pageviews;
            follow(&mut visit.entry_page, &step.state.entry);
            follow(&mut visit.exit_page, &step.state.exit);
        }
        p.session_id = Some(step.state.session_id);
        state = Some(step.state);
    }
    visits
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const MINUTE: i64 = 60_000_000;

    fn page(id: &str, visitor: &str, site_id: i64, t: i64, url: &str) -> Event {
        let mut e = Event {
            message_id: id.into(),
            tenant_id: 1,
            site_id,
            visitor_id: visitor.into(),
            timestamp_us: t,
            user_agent: CHROME.into(),
            page_url: url.into(),
            ..Event::default()
        };
        e.set_type(EventType::Page);
        e
    }

    #[test]
    fn invalid_events_are_rejected_with_their_reason() {
        let enricher = Enricher::new().unwrap();
        let mut unknown_type = page("a", "v", 2, 0, "");
        unknown_type.set_type(EventType::Unspecified);
        let events = vec![
            page("", "v", 2, 0, ""),
            unknown_type,
            page("b", "v", 99, 0, ""),
            page("c", "v", 2, 0, "https://s.example/x"),
        ];
        let (ok, rejected) = prepare(&enricher, &Rules::default(), events, &HashSet::from([2]));
        let reasons: Vec<&str> = rejected.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, ["missing_id", "unknown_type", "unknown_site"]);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].fact.page, "/x");
    }

    #[test]
    fn listed_user_agents_become_bots() {
        let enricher = Enricher::new().unwrap();
        let events = vec![page("a", "v", 2, 0, "")];
        let rules = Rules::new(&["  windows NT 10 ".into()]);
        let (ok, _) = prepare(&enricher, &rules, events, &HashSet::from([2]));
        assert_eq!(ok[0].fact.bot, Some(BotReason::KnownBotPattern));
    }

    #[test]
    fn whole_visits_that_reach_the_day_are_kept_and_nothing_else() {
        use Role::{Activity, Bookkeeping, Rejected};
        let reach = 100 * MINUTE..200 * MINUTE;
        let rows = [
            (10 * MINUTE, Activity),    // a visit before the day: out
            (20 * MINUTE, Bookkeeping), // before the day: out
            (30 * MINUTE, Rejected),    // reported wherever it lies
            // 60 minutes later, a visit that starts before the day and runs into it: whole.
            (90 * MINUTE, Activity),
            (99 * MINUTE, Bookkeeping), // outside the day, and in no visit: out
            (110 * MINUTE, Activity),
            (150 * MINUTE, Bookkeeping), // in the day
            // Starts in the day and goes on after it; the rejected row in between does not
            // join it to the next.
            (190 * MINUTE, Activity),
            (205 * MINUTE, Rejected),
            (215 * MINUTE, Activity),
            (250 * MINUTE, Activity), // 35 minutes after: a new visit, after the day: out
        ];
        let mut keep = [false; 11];
        mark_reaching(&rows, Some(&reach), &mut keep);
        let kept: Vec<i64> = rows
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|((t, _), _)| t / MINUTE)
            .collect();
        assert_eq!(kept, [30, 90, 110, 150, 190, 205, 215]);
        // A site without a day here: only what is rejected.
        let mut keep = [true; 11];
        mark_reaching(&rows, None, &mut keep);
        assert_eq!(keep.iter().filter(|k| **k).count(), 2);
    }

    #[test]
    fn visits_split_on_inactivity_and_visitors() {
        let enricher = Enricher::new().unwrap();
        let events = vec![
            page("1", "a", 2, 0, "https://s.example/"),
            page("2", "a", 2, 10 * MINUTE, "https://s.example/b"),
            page("3", "a", 2, 41 * MINUTE, "https://s.example/c"),
            page("4", "b", 2, 11 * MINUTE, "https://s.example/"),
        ];
        let (mut ok, _) = prepare(&enricher, &Rules::default(), events, &HashSet::from([2]));
        let visits = sessionise(&mut ok);
        let shape: Vec<(&str, i64, u32, Option<&str>)> = visits
            .iter()
            .map(|v| {
                (
                    v.visitor_id.as_str(),
                    v.end_us - v.start_us,
                    v.pageviews,
                    v.exit_page.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("a", 10 * MINUTE, 2, Some("/b")),
                ("a", 0, 1, Some("/c")),
                ("b", 0, 1, Some("/"))
            ]
        );
        assert_eq!(ok[0].session_id, ok[1].session_id);
        assert_ne!(ok[1].session_id, ok[2].session_id);
    }
}
