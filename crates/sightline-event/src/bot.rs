//! Bot detection. Bot events are archived and counted apart, never mixed into visitor figures,
//! so every bot event carries the reason it was flagged.

use serde::{Deserialize, Serialize};

use crate::user_agent::ParsedUserAgent;

/// Why an event was flagged as coming from a bot. The codes are stable: they are stored in the
/// lake and the rollups, so a variant is never renamed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotReason {
    /// No user agent at all (or only whitespace): browsers always send one.
    EmptyUserAgent,
    /// uap-core classifies the device as `Spider` (Googlebot, Bingbot, AhrefsBot …).
    Crawler,
    /// An automated or headless browser ([`HEADLESS_TOKENS`]).
    HeadlessBrowser,
    /// A token of [`BOT_TOKENS`] appears in the user agent (HTTP libraries, monitors,
    /// link-preview fetchers, crawlers uap-core does not know).
    KnownBotPattern,
}

impl BotReason {
    /// Every reason, in the order they are checked.
    pub const ALL: [Self; 4] = [
        Self::EmptyUserAgent,
        Self::HeadlessBrowser,
        Self::Crawler,
        Self::KnownBotPattern,
    ];

    /// Stable machine-readable code (`empty_user_agent`, `crawler`, `headless_browser`,
    /// `known_bot_pattern`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EmptyUserAgent => "empty_user_agent",
            Self::Crawler => "crawler",
            Self::HeadlessBrowser => "headless_browser",
            Self::KnownBotPattern => "known_bot_pattern",
        }
    }
}

/// Tokens of automated browsers, matched case-insensitively anywhere in the user agent. Checked
/// before the crawler rule: uap-core calls some of them `Spider`, and "headless" is the more
/// precise reason.
pub const HEADLESS_TOKENS: &[&str] = &[
    "headlesschrome",
    "headless",
    "phantomjs",
    "slimerjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "cypress",
];

/// Tokens of non-human clients, matched case-insensitively anywhere in the user agent.
///
/// Keep this list short and specific: a token that also occurs in real browsers' user agents
/// hides real visitors (see [`NOT_BOT_WORDS`] for the known collision of "bot").
pub const BOT_TOKENS: &[&str] = &[
    // generic crawler words
    "bot",
    "crawl",
    "spider",
    "slurp",
    "scraper",
    "archiver",
    // HTTP clients and libraries
    "curl",
    "wget",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpclient",
    "go-http-client",
    "java/",
    "okhttp/",
    "axios/",
    "node-fetch",
    "undici",
    "libwww-perl",
    "guzzlehttp",
    "scrapy",
    "httpie",
    "postmanruntime",
    // performance and uptime monitors
    "lighthouse",
    "pagespeed",
    "gtmetrix",
    "pingdom",
    "uptime",
    "statuscake",
    "site24x7",
    "newrelicpinger",
    "datadog",
    // link-preview fetchers
    "facebookexternalhit",
    "embedly",
    "whatsapp/",
    "preview",
];

/// Words that contain a [`BOT_TOKENS`] token but name real devices ("CUBOT" is a phone brand).
pub const NOT_BOT_WORDS: &[&str] = &["cubot"];

/// Decides whether an event comes from a bot, and why.
///
/// Checks in order: empty user agent, [`HEADLESS_TOKENS`], uap-core's `Spider` device,
/// [`BOT_TOKENS`]; the first that applies is the reason. `None` means a human browser as far
/// as the user agent tells.
pub fn detect_bot(user_agent: &str, parsed: &ParsedUserAgent) -> Option<BotReason> {
    let user_agent = user_agent.trim();
    if user_agent.is_empty() {
        return Some(BotReason::EmptyUserAgent);
    }
    let mut lower = user_agent.to_ascii_lowercase();
    if HEADLESS_TOKENS.iter().any(|t| lower.contains(t)) {
        return Some(BotReason::HeadlessBrowser);
    }
    if parsed.device_family == "Spider" {
        return Some(BotReason::Crawler);
    }
    for word in NOT_BOT_WORDS {
        if lower.contains(word) {
            lower = lower.replace(word, " ");
        }
    }
    BOT_TOKENS
        .iter()
        .any(|t| lower.contains(t))
        .then_some(BotReason::KnownBotPattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_agent::tests::*;
    use crate::user_agent::{DeviceClass, UserAgentParser};

    /// What uap-core says about an unknown client: no device family.
    fn other() -> ParsedUserAgent {
        ParsedUserAgent {
            browser: "Other".into(),
            browser_major: String::new(),
            os: "Other".into(),
            os_major: String::new(),
            device_family: "Other".into(),
            device_class: DeviceClass::Unknown,
            bot: None,
        }
    }

    #[test]
    fn real_user_agents_get_the_expected_reason() {
        let parser = UserAgentParser::new().unwrap();
        let lighthouse = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Chrome-Lighthouse";
        let cubot = "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.116 Mobile Safari/537.36";
        let facebook_app = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.43.109;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.4]";
        let cases = [
            (CHROME_WINDOWS, None),
            (SAFARI_MAC, None),
            (FIREFOX_UBUNTU, None),
            (IPHONE, None),
            (IPAD, None),
            (ANDROID_PHONE, None),
            (ANDROID_TABLET, None),
            (facebook_app, None),
            (cubot, None),
            ("", Some(BotReason::EmptyUserAgent)),
            ("  \t", Some(BotReason::EmptyUserAgent)),
            (GOOGLEBOT, Some(BotReason::Crawler)),
            (GOOGLEBOT_SMARTPHONE, Some(BotReason::Crawler)),
            (
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                Some(BotReason::Crawler),
            ),
            (
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                Some(BotReason::Crawler),
            ),
            (HEADLESS_CHROME, Some(BotReason::HeadlessBrowser)),
            (CURL, Some(BotReason::KnownBotPattern)),
            ("Wget/1.21.4", Some(BotReason::KnownBotPattern)),
            ("python-requests/2.31.0", Some(BotReason::KnownBotPattern)),
            (
                "Apache-HttpClient/4.5.14 (Java/17.0.2)",
                Some(BotReason::KnownBotPattern),
            ),
            (lighthouse, Some(BotReason::KnownBotPattern)),
        ];
        for (ua, expected) in cases {
            assert_eq!(detect_bot(ua, &parser.parse(ua)), expected, "{ua}");
        }
    }

    #[test]
    fn tokens_match_case_insensitively_anywhere() {
        for ua in [
            "MyCompany-PINGDOM.com_bot_version_1.4",
            "Go-http-client/2.0",
            "x SELENIUM y",
        ] {
            assert!(detect_bot(ua, &other()).is_some(), "{ua}");
        }
        assert_eq!(
            detect_bot("node-fetch/1.0", &other()),
            Some(BotReason::KnownBotPattern)
        );
        assert_eq!(
            detect_bot("Puppeteer", &other()),
            Some(BotReason::HeadlessBrowser)
        );
    }

    #[test]
    fn headless_wins_over_crawler_and_crawler_over_patterns() {
        let spider = ParsedUserAgent {
            device_family: "Spider".into(),
            ..other()
        };
        assert_eq!(
            detect_bot("HeadlessChrome/1 bot", &spider),
            Some(BotReason::HeadlessBrowser)
        );
        assert_eq!(detect_bot("curl/8 bot", &spider), Some(BotReason::Crawler));
        assert_eq!(
            detect_bot("curl/8 bot", &other()),
            Some(BotReason::KnownBotPattern)
        );
    }

    #[test]
    fn a_bot_token_next_to_a_real_brand_still_counts() {
        assert_eq!(detect_bot("CUBOT phone", &other()), None);
        assert_eq!(
            detect_bot("CUBOT phone Googlebot", &other()),
            Some(BotReason::KnownBotPattern)
        );
    }

    #[test]
    fn reason_codes_are_stable() {
        let codes: Vec<_> = BotReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            codes,
            [
                "empty_user_agent",
                "headless_browser",
                "crawler",
                "known_bot_pattern"
            ]
        );
        for reason in BotReason::ALL {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }

    #[test]
    fn token_lists_are_lowercase() {
        for token in HEADLESS_TOKENS
            .iter()
            .chain(BOT_TOKENS)
            .chain(NOT_BOT_WORDS)
        {
            assert_eq!(*token, token.to_ascii_lowercase());
        }
    }
}
