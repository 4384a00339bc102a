//! The event model's shared logic: enrichment, sessionisation and unique-visitor sketches.
//!
//! One implementation for the stream processor (speed layer) and the batch enricher (nightly
//! exact recomputation), so both compute the same numbers. Pure functions and data: no I/O, no
//! async, no clock. The pitfalls are in the crate README.
//!
//! - [`Enricher::enrich`]: one [`Event`] → [`Enriched`] (browser, OS, device class, bot reason,
//!   normalised URL, traffic source and medium, UTM parameters).
//! - [`session::apply_event`]: fold one event into a visitor's visit, get rollup deltas.
//! - [`sketch::VisitorSketch`]: mergeable HyperLogLog of visitor ids.

#![warn(missing_docs)]

mod error;

pub mod bot;
mod campaign;
pub mod referrer;
pub mod session;
pub mod sketch;
pub mod sources;
pub mod url;
pub mod user_agent;

pub use crate::url::{NormalisedUrl, Utm, normalise_url};
pub use bot::{BotReason, detect_bot};
pub use error::EventError;
pub use referrer::{Medium, Traffic, classify};
pub use session::{
    SESSION_TIMEOUT_US, SessionDelta, SessionEvent, SessionStep, VisitorKey, VisitorSession,
    apply_event,
};
pub use sketch::{VisitorHash, VisitorSketch};
pub use user_agent::{DeviceClass, ParsedUserAgent, UserAgentParser};

use serde::{Deserialize, Serialize};
use sightline_proto::events::v1::{Event, EventType};

/// Holds the parsers enrichment needs; build one per process and share it (`Send + Sync`).
#[derive(Debug)]
pub struct Enricher {
    user_agents: UserAgentParser,
}

/// Everything enrichment derives from one event. Plain values, ready for a Parquet row or a
/// rollup key; an absent value is an empty string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enriched {
    /// Browser family ("Chrome", "Mobile Safari"), "Other" when unknown.
    pub browser: String,
    /// Browser major version ("124").
    pub browser_major: String,
    /// Operating system family ("Windows", "iOS"), "Other" when unknown.
    pub os: String,
    /// Operating system major version.
    pub os_major: String,
    /// Desktop, mobile, tablet, bot or unknown.
    pub device_class: DeviceClass,
    /// Why the event is a bot's; `None` for humans. Bot events are counted apart.
    pub bot: Option<BotReason>,
    /// Page host, lowercase, without `www.`.
    pub host: String,
    /// Page path without query, fragment or trailing slash.
    pub path: String,
    /// Traffic source ("Google", "news.example.org", "Direct").
    pub source: String,
    /// Traffic medium.
    pub medium: Medium,
    /// `utm_source` of the page URL, else of Segment's `context.campaign.source`.
    pub utm_source: String,
    /// `utm_medium` (or `context.campaign.medium`).
    pub utm_medium: String,
    /// `utm_campaign` (or `context.campaign.name`).
    pub utm_campaign: String,
    /// `utm_term` (or `context.campaign.term`).
    pub utm_term: String,
    /// `utm_content` (or `context.campaign.content`).
    pub utm_content: String,
}

impl Enricher {
    /// Builds the parsers with their default cache (compiling the user agent rules: do it
    /// once, at startup).
    pub fn new() -> Result<Self, EventError> {
        Ok(Self::with_user_agent_parser(UserAgentParser::new()?))
    }

    /// Uses a parser built elsewhere (another cache size, or shared).
    pub fn with_user_agent_parser(user_agents: UserAgentParser) -> Self {
        Self { user_agents }
    }

    /// The user agent parser.
    pub fn user_agents(&self) -> &UserAgentParser {
        &self.user_agents
    }

    /// Enriches one event. Never fails: unreadable inputs give unknown values.
    pub fn enrich(&self, event: &Event) -> Enriched {
        let parsed = self.user_agents.parse(&event.user_agent);
        let bot = parsed.bot;
        let page = normalise_url(&event.page_url);
        let utm = page.utm.or(campaign::from_context(&event.context_json));
        let traffic = classify(&event.page_referrer, &page.host, &utm);
        Enriched {
            browser: parsed.browser,
            browser_major: parsed.browser_major,
            os: parsed.os,
            os_major: parsed.os_major,
            device_class: parsed.device_class,
            bot,
            host: page.host,
            path: page.path,
            source: traffic.source,
            medium: traffic.medium,
            utm_source: utm.source.unwrap_or_default(),
            utm_medium: utm.medium.unwrap_or_default(),
            utm_campaign: utm.campaign.unwrap_or_default(),
            utm_term: utm.term.unwrap_or_default(),
            utm_content: utm.content.unwrap_or_default(),
        }
    }
}

impl Enriched {
    /// What sessionisation sees of this event, or `None` when the event takes no part in
    /// visits: bot events, and identify, group and alias calls (bookkeeping, not activity).
    /// Page and screen calls are pageviews (a screen's "page" is its path, else its name);
    /// track calls extend visits without being pageviews. Both paths must use this one rule.
    pub fn session_event<'a>(&'a self, event: &'a Event) -> Option<SessionEvent<'a>> {
        if self.bot.is_some() {
            return None;
        }
        let is_pageview = match event.r#type() {
            EventType::Page | EventType::Screen => true,
            EventType::Track => false,
            EventType::Identify | EventType::Group | EventType::Alias => return None,
            EventType::Unspecified => return None,
        };
        let page = if self.path.is_empty() && event.r#type() == EventType::Screen {
            event.name.as_str()
        } else {
            self.path.as_str()
        };
        Some(SessionEvent {
            timestamp_us: event.timestamp_us,
            is_pageview,
            page,
        })
    }
}

/// The visitor an event's visit belongs to.
pub fn visitor_key(event: &Event) -> VisitorKey<'_> {
    VisitorKey {
        tenant_id: event.tenant_id,
        site_id: event.site_id,
        visitor_id: &event.visitor_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_agent::tests::{CURL, IPHONE};

    fn page_event(url: &str, referrer: &str, user_agent: &str) -> Event {
        Event {
            message_id: "m-1".into(),
            tenant_id: 7,
            site_id: 9,
            r#type: EventType::Page.into(),
            visitor_id: "anon-1".into(),
            timestamp_us: 1_741_600_000_000_000,
            user_agent: user_agent.into(),
            page_url: url.into(),
            page_referrer: referrer.into(),
            ..Event::default()
        }
    }

    #[test]
    fn enrich_fills_every_field_of_a_real_page_event() {
        let enricher = Enricher::new().unwrap();
        let event = page_event(
            "https://www.shop.example.com/Shoes/?utm_source=fb&utm_medium=paid_social&utm_campaign=spring&fbclid=x",
            "https://l.facebook.com/",
            IPHONE,
        );
        let enriched = enricher.enrich(&event);
        assert_eq!(
            enriched,
            Enriched {
                browser: "Mobile Safari".into(),
                browser_major: "17".into(),
                os: "iOS".into(),
                os_major: "17".into(),
                device_class: DeviceClass::Mobile,
                bot: None,
                host: "shop.example.com".into(),
                path: "/Shoes".into(),
                source: "Facebook".into(),
                medium: Medium::Paid,
                utm_source: "fb".into(),
                utm_medium: "paid_social".into(),
                utm_campaign: "spring".into(),
                utm_term: String::new(),
                utm_content: String::new(),
            }
        );
    }

    #[test]
    fn context_campaign_fills_in_when_the_url_has_no_utm() {
        let enricher = Enricher::new().unwrap();
        let mut event = page_event("https://shop.example.com/", "", IPHONE);
        event.context_json =
            br#"{"campaign":{"name":"winter","source":"Newsletter","medium":"email"}}"#
                .to_vec()
                .into();
        let enriched = enricher.enrich(&event);
        assert_eq!(
            (enriched.source.as_str(), enriched.medium),
            ("Newsletter", Medium::Email)
        );
        assert_eq!(enriched.utm_campaign, "winter");

        event.page_url = "https://shop.example.com/?utm_source=google&utm_medium=cpc".into();
        let enriched = enricher.enrich(&event);
        assert_eq!(
            (enriched.source.as_str(), enriched.medium),
            ("Google", Medium::Paid)
        );
        assert_eq!(
            enriched.utm_campaign, "winter",
            "fields missing in the URL still come from context"
        );
    }

    #[test]
    fn an_empty_event_enriches_to_unknowns_and_a_bot_flag() {
        let enriched = Enricher::new().unwrap().enrich(&Event::default());
        assert_eq!(enriched.bot, Some(BotReason::EmptyUserAgent));
        assert_eq!(
            (enriched.browser.as_str(), enriched.device_class),
            ("Other", DeviceClass::Unknown)
        );
        assert_eq!((enriched.host.as_str(), enriched.path.as_str()), ("", ""));
        assert_eq!(
            (enriched.source.as_str(), enriched.medium),
            ("Direct", Medium::Direct)
        );
    }

    #[test]
    fn only_human_activity_takes_part_in_visits() {
        let enricher = Enricher::new().unwrap();
        let page = page_event("https://shop.example.com/cart/", "", IPHONE);
        let enriched = enricher.enrich(&page);
        let session = enriched.session_event(&page).unwrap();
        assert_eq!((session.is_pageview, session.page), (true, "/cart"));
        assert_eq!(session.timestamp_us, page.timestamp_us);

        let track = Event {
            r#type: EventType::Track.into(),
            ..page.clone()
        };
        assert!(
            !enricher
                .enrich(&track)
                .session_event(&track)
                .unwrap()
                .is_pageview
        );

        let screen = Event {
            r#type: EventType::Screen.into(),
            name: "Checkout".into(),
            page_url: String::new(),
            ..page.clone()
        };
        let enriched = enricher.enrich(&screen);
        assert_eq!(enriched.session_event(&screen).unwrap().page, "Checkout");

        for kind in [
            EventType::Identify,
            EventType::Group,
            EventType::Alias,
            EventType::Unspecified,
        ] {
            let event = Event {
                r#type: kind.into(),
                ..page.clone()
            };
            assert!(
                enricher.enrich(&event).session_event(&event).is_none(),
                "{kind:?}"
            );
        }
        let bot = page_event("https://shop.example.com/", "", CURL);
        assert!(enricher.enrich(&bot).session_event(&bot).is_none());
    }

    #[test]
    fn visitor_key_comes_from_the_event() {
        let event = page_event("", "", "");
        let key = visitor_key(&event);
        assert_eq!(
            (key.tenant_id, key.site_id, key.visitor_id),
            (7, 9, "anon-1")
        );
    }

    #[test]
    fn enricher_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Enricher>();
    }
}
