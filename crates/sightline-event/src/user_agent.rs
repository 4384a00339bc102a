//! User agent to browser, operating system and device class, with the uap-core rules run by the
//! official `ua-parser` crate (uap-rust).

use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::EventError;

/// The uap-core rules, converted from `regexes.yaml` to JSON (see `data/README.md`).
const UAP_CORE_RULES: &str = include_str!("../data/regexes.json");

/// Version of the uap-core rules vendored in `data/`. Part of the enrichment logic: a change of
/// rules changes figures, so the batch path records it with its revision.
pub const UAP_CORE_VERSION: &str = "0.18.0";

/// Distinct user agents kept by [`UserAgentParser::new`]'s cache. A day of a busy site has a few
/// thousand distinct user agents; an entry is a few hundred bytes.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// User agents longer than this are parsed but not cached: they are nearly always unique (tracking
/// tokens in the string) and would only evict useful entries.
const MAX_CACHED_LEN: usize = 512;

/// What uap-core calls a browser or OS it does not recognise.
pub const UNKNOWN_FAMILY: &str = "Other";

/// The class of device an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    /// A desktop or laptop computer (Windows, macOS, Linux, ChromeOS without a phone or tablet).
    Desktop,
    /// A phone: iPhone, iPod, Android with the `Mobile` token, other phone operating systems.
    Mobile,
    /// A tablet: iPad, Kindle Fire, Android without the `Mobile` token.
    Tablet,
    /// A crawler, as uap-core's device family `Spider` says.
    Bot,
    /// Anything else: TVs, consoles, watches, empty or unrecognised user agents.
    Unknown,
}

impl DeviceClass {
    /// Stable lowercase code, used as the dimension value in rollups and lake columns.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Desktop => "desktop",
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Bot => "bot",
            Self::Unknown => "unknown",
        }
    }
}

/// What one user agent string says about the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedUserAgent {
    /// Browser family as uap-core names it ("Chrome", "Mobile Safari", "Firefox"), or "Other".
    pub browser: String,
    /// Browser major version ("124"), empty when unknown.
    pub browser_major: String,
    /// Operating system family ("Windows", "Mac OS X", "iOS", "Android"), or "Other".
    pub os: String,
    /// Operating system major version, empty when unknown.
    pub os_major: String,
    /// uap-core device family ("iPhone", "iPad", "Spider", "Samsung SM-G991B"), or "Other".
    pub device_family: String,
    /// Device class derived from the device and the operating system.
    pub device_class: DeviceClass,
    /// [`crate::detect_bot`]'s verdict on this user agent, decided once and cached with the
    /// rest (it depends on nothing else).
    pub bot: Option<crate::BotReason>,
}

/// Parses user agents with the vendored uap-core rules, with a bounded cache in front.
///
/// Built once per process by an explicit constructor, not a global `LazyLock`: compiling the
/// ~1,200 uap-core regexes takes a noticeable time (see the crate README), and a constructor
/// lets a service pay it at startup before it reports ready, return an error instead of
/// panicking on first use, and take the cache size from its configuration. It is `Send + Sync`:
/// share one behind an `Arc` (or inside an [`crate::Enricher`]).
pub struct UserAgentParser {
    extractor: ua_parser::Extractor<'static>,
    cache: Option<Cache<String, ParsedUserAgent>>,
}

impl UserAgentParser {
    /// Compiles the rules, with a cache of [`DEFAULT_CACHE_CAPACITY`] user agents.
    pub fn new() -> Result<Self, EventError> {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// Compiles the rules, with a cache of `capacity` user agents (0: no cache).
    pub fn with_cache_capacity(capacity: usize) -> Result<Self, EventError> {
        let rules: ua_parser::Regexes<'static> =
            serde_json::from_str(UAP_CORE_RULES).map_err(EventError::UserAgentRules)?;
        let extractor =
            ua_parser::Extractor::try_from(rules).map_err(EventError::UserAgentCompile)?;
        let cache = (capacity > 0).then(|| Cache::new(capacity));
        Ok(Self { extractor, cache })
    }

    /// Parses one user agent. Results are the same with or without the cache.
    pub fn parse(&self, user_agent: &str) -> ParsedUserAgent {
        let Some(cache) = &self.cache else {
            return self.parse_uncached(user_agent);
        };
        if user_agent.len() > MAX_CACHED_LEN {
            return self.parse_uncached(user_agent);
        }
        if let Some(hit) = cache.get(user_agent) {
            return hit;
        }
        let parsed = self.parse_uncached(user_agent);
        cache.insert(user_agent.to_owned(), parsed.clone());
        parsed
    }

    /// Parses one user agent with the rules, bypassing the cache.
    pub fn parse_uncached(&self, user_agent: &str) -> ParsedUserAgent {
        let (browser, os, device) = self.extractor.extract(user_agent);
        let (browser, browser_major) = browser.map_or_else(unknown, |b| {
            (
                b.family.into_owned(),
                b.major.unwrap_or_default().to_owned(),
            )
        });
        let (os, os_major) = os.map_or_else(unknown, |o| {
            (
                o.os.into_owned(),
                o.major.map(|m| m.into_owned()).unwrap_or_default(),
            )
        });
        let (device_family, model) = device.map_or_else(unknown, |d| {
            let model = d.model.map(|m| m.into_owned()).unwrap_or_default();
            (d.device.into_owned(), model)
        });
        let device_class = classify_device(&device_family, &model, &os, user_agent);
        let mut parsed = ParsedUserAgent {
            browser,
            browser_major,
            os,
            os_major,
            device_family,
            device_class,
            bot: None,
        };
        parsed.bot = crate::detect_bot(user_agent, &parsed);
        parsed
    }

    /// Number of user agents in the cache (0 without a cache).
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::len)
    }
}

impl std::fmt::Debug for UserAgentParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgentParser")
            .field("uap_core", &UAP_CORE_VERSION)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

fn unknown() -> (String, String) {
    (UNKNOWN_FAMILY.to_owned(), String::new())
}

/// Operating systems uap-core reports for desktop and laptop computers.
const DESKTOP_OSES: &[&str] = &[
    "Windows",
    "Mac OS X",
    "Mac OS",
    "Linux",
    "Ubuntu",
    "Kubuntu",
    "Xubuntu",
    "Linux Mint",
    "Fedora",
    "Debian",
    "Gentoo",
    "Red Hat",
    "SUSE",
    "openSUSE",
    "Mandriva",
    "Slackware",
    "CentOS",
    "Arch Linux",
    "Chrome OS",
    "ChromeOS",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
];

/// Phone operating systems (Android and iOS are decided by the device and the UA itself).
const PHONE_OSES: &[&str] = &[
    "Windows Phone",
    "Windows Mobile",
    "BlackBerry OS",
    "KaiOS",
    "Firefox OS",
    "Symbian OS",
    "Symbian^3",
    "Symbian^3 Anna",
    "Symbian^3 Belle",
    "Nokia Series 40",
    "Nokia Series 30 Plus",
    "Brew MP",
];

/// Words in a uap-core device family or model that mean a tablet.
const TABLET_DEVICE_HINTS: &[&str] =
    &["ipad", "tablet", "kindle", "nexus 7", "nexus 9", "nexus 10"];

/// Device class from uap-core's device family and model, the OS family and the raw UA.
///
/// The order matters: crawlers first (they often claim to be an iPhone), then tablets (an iPad
/// also runs iOS), then phones, then desktop operating systems.
fn classify_device(device: &str, model: &str, os: &str, user_agent: &str) -> DeviceClass {
    if device == "Spider" {
        return DeviceClass::Bot;
    }
    let names = [device.to_ascii_lowercase(), model.to_ascii_lowercase()];
    let has_hint = |hints: &[&str]| names.iter().any(|n| hints.iter().any(|h| n.contains(h)));
    if has_hint(TABLET_DEVICE_HINTS) || os == "BlackBerry Tablet OS" {
        return DeviceClass::Tablet;
    }
    if has_hint(&["iphone", "ipod", "smartphone", "feature phone"]) || PHONE_OSES.contains(&os) {
        return DeviceClass::Mobile;
    }
    match os {
        "iOS" => DeviceClass::Mobile,
        // Google's rule for Android: phones send `Mobile`, tablets do not.
        "Android" if user_agent.contains("Mobile") => DeviceClass::Mobile,
        "Android" => DeviceClass::Tablet,
        os if DESKTOP_OSES.contains(&os) => DeviceClass::Desktop,
        _ => DeviceClass::Unknown,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    pub(crate) const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15";
    pub(crate) const FIREFOX_UBUNTU: &str =
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    pub(crate) const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";
    pub(crate) const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    pub(crate) const ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36";
    pub(crate) const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Safari/537.36";
    pub(crate) const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    pub(crate) const GOOGLEBOT_SMARTPHONE: &str = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    pub(crate) const CURL: &str = "curl/8.5.0";
    pub(crate) const HEADLESS_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36";

    fn parser() -> UserAgentParser {
        UserAgentParser::new().unwrap()
    }

    #[test]
    fn real_user_agents_give_browser_os_and_device_class() {
        use DeviceClass::*;
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80";
        let chromebook = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
        let firefox_android =
            "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0";
        let kindle = "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.7 like Chrome/124.0.6367.219 Safari/537.36";
        let chrome_ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1";
        let lumia = "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063";
        let smart_tv = "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36";
        let cases = [
            (CHROME_WINDOWS, "Chrome", "124", "Windows", "10", Desktop),
            (SAFARI_MAC, "Safari", "17", "Mac OS X", "10", Desktop),
            (FIREFOX_UBUNTU, "Firefox", "125", "Ubuntu", "", Desktop),
            (edge, "Edge", "124", "Windows", "10", Desktop),
            (chromebook, "Chrome", "124", "Chrome OS", "14541", Desktop),
            (IPHONE, "Mobile Safari", "17", "iOS", "17", Mobile),
            (chrome_ios, "Chrome Mobile iOS", "124", "iOS", "17", Mobile),
            (IPAD, "Mobile Safari", "17", "iOS", "17", Tablet),
            (
                ANDROID_PHONE,
                "Chrome Mobile",
                "124",
                "Android",
                "14",
                Mobile,
            ),
            (
                firefox_android,
                "Firefox Mobile",
                "125",
                "Android",
                "14",
                Mobile,
            ),
            (ANDROID_TABLET, "Chrome", "124", "Android", "13", Tablet),
            (kindle, "Amazon Silk", "124", "Android", "11", Tablet),
            (lumia, "Edge Mobile", "15", "Windows Phone", "10", Mobile),
            (GOOGLEBOT, "Googlebot", "2", "Other", "", Bot),
            (GOOGLEBOT_SMARTPHONE, "Googlebot", "2", "Android", "6", Bot),
            (CURL, "curl", "8", "Other", "", Unknown),
            (smart_tv, "Samsung Internet", "4", "Tizen", "6", Unknown),
            ("", "Other", "", "Other", "", Unknown),
            (
                "definitely not a browser",
                "Other",
                "",
                "Other",
                "",
                Unknown,
            ),
        ];
        let parser = parser();
        for (ua, browser, browser_major, os, os_major, class) in cases {
            let p = parser.parse(ua);
            let got = (p.browser.as_str(), p.browser_major.as_str(), p.os.as_str());
            assert_eq!(got, (browser, browser_major, os), "{ua}");
            assert_eq!(
                (p.os_major.as_str(), p.device_class),
                (os_major, class),
                "{ua}"
            );
        }
    }

    #[test]
    fn cache_returns_what_parsing_returns_and_stays_bounded() {
        let cached = UserAgentParser::with_cache_capacity(4).unwrap();
        let uncached = UserAgentParser::with_cache_capacity(0).unwrap();
        let uas = [CHROME_WINDOWS, SAFARI_MAC, IPHONE, IPAD, GOOGLEBOT, CURL];
        for _ in 0..3 {
            for ua in uas {
                assert_eq!(cached.parse(ua), uncached.parse(ua));
            }
        }
        for i in 0..100 {
            cached.parse(&format!("{CHROME_WINDOWS} build/{i}"));
        }
        assert!(cached.cached() <= 4, "cache grew to {}", cached.cached());
        assert_eq!(uncached.cached(), 0);
    }

    #[test]
    fn very_long_user_agents_are_parsed_but_not_cached() {
        let parser = parser();
        let long = format!("{CHROME_WINDOWS} {}", "x".repeat(MAX_CACHED_LEN));
        assert_eq!(parser.parse(&long).browser, "Chrome");
        assert_eq!(parser.cached(), 0);
        parser.parse(CHROME_WINDOWS);
        assert_eq!(parser.cached(), 1);
    }

    #[test]
    fn device_class_codes_are_stable() {
        let all = [
            DeviceClass::Desktop,
            DeviceClass::Mobile,
            DeviceClass::Tablet,
            DeviceClass::Bot,
            DeviceClass::Unknown,
        ];
        let codes: Vec<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes, ["desktop", "mobile", "tablet", "bot", "unknown"]);
        for class in all {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }

    #[test]
    fn parser_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<UserAgentParser>();
    }
}
