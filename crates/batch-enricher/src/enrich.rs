//! Stage 1's per-event work: validation, the shared enrichment, and exact sessionisation.
//!
//! Every event goes through [`Fact::of`], the stream processor's own extraction (so both layers
//! see the same browser, source, page, bot verdict and order), plus the batch layer's extra bot
//! list. Events arrive sorted by site, visitor and time, so one pass of
//! [`sightline_event::apply_event`] per visitor gives every visit exactly.

use std::collections::HashSet;

use sightline_event::{
    BotReason, Enriched, Enricher, SESSION_TIMEOUT_US, VisitorKey, apply_event, session::Placement,
};
use sightline_proto::events::v1::{Event, EventType};
use stream_processor::rollup::fact::{Attrs, Fact, Kind};
use uuid::Uuid;

/// One valid event, enriched.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The event as stored in `raw/`.
    pub event: Event,
    /// What enrichment derived.
    pub enriched: Enriched,
    /// What the rollups count of it (the stream processor's own extraction).
    pub fact: Fact,
    /// The visit it belongs to (humans' pages, screens and tracks).
    pub session_id: Option<Uuid>,
}

/// An event left out, with its reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The event as stored.
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
    if event.message_id.is_empty() || event.visitor_id.is_empty() {
        Some("missing_id")
    } else if event.r#type() == EventType::Unspecified {
        Some("unknown_type")
    } else if !sites.contains(&event.site_id) {
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
    for event in events {
        if let Some(reason) = rejection(&event, sites) {
            rejected.push(Rejected { event, reason });
            continue;
        }
        let mut enriched = enricher.enrich(&event);
        let mut fact = Fact::from_enriched(&event, enriched.clone());
        if fact.bot.is_none() && rules.is_listed_bot(&event.user_agent) {
            fact.bot = Some(BotReason::KnownBotPattern);
            enriched.bot = fact.bot;
        }
        prepared.push(Prepared {
            event,
            enriched,
            fact,
            session_id: None,
        });
    }
    (prepared, rejected)
}

/// Sessionises `prepared` (sorted by site, visitor and time) with the shared rules, fills each
/// event's `session_id` and returns every visit.
pub fn sessionise(prepared: &mut [Prepared]) -> Vec<Visit> {
    let mut visits: Vec<Visit> = Vec::new();
    let mut state = None;
    let mut current: Option<(i64, String)> = None;
    for p in prepared.iter_mut() {
        let owner = (p.event.site_id, p.event.visitor_id.clone());
        if current.as_ref() != Some(&owner) {
            state = None;
            current = Some(owner);
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
            visit.entry_page = step.state.entry.as_ref().map(|(page, _)| page.clone());
            visit.exit_page = step.state.exit.as_ref().map(|(page, _)| page.clone());
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
