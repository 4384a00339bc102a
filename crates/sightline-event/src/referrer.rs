//! Traffic source and medium from the referrer, overridden by UTM parameters.
//!
//! The known hosts are a small table in [`crate::sources`], written for Sightline. Snowplow's
//! referer-parser database was not vendored: it derives from Piwik's lists and is GPL-3.0.

use serde::{Deserialize, Serialize};

use crate::sources::{self, KnownSource};
use crate::url::{Utm, normalise_url};

/// Source name of traffic without a referrer.
pub const DIRECT_SOURCE: &str = "Direct";

/// Source name when UTM parameters say it is a campaign but neither `utm_source` nor the
/// referrer names who sent it (Google Analytics' convention).
pub const NOT_SET_SOURCE: &str = "(not set)";

/// The kind of traffic a visit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    /// No referrer: typed or bookmarked URL, apps that strip referrers.
    Direct,
    /// A search engine, or `utm_medium=organic`.
    Search,
    /// A social network, or `utm_medium=social`.
    Social,
    /// A webmail client, or `utm_medium=email` / `newsletter`.
    Email,
    /// Paid traffic: `utm_medium` of [`PAID_MEDIUMS`] or containing "paid".
    Paid,
    /// Any other site, or an unrecognised `utm_medium`.
    Referral,
    /// The referrer is the page's own host: navigation inside the site. Kept apart from
    /// `Direct` so a report can tell "came back through an old tab" from "typed the URL".
    Internal,
}

impl Medium {
    /// Stable lowercase code, used as the dimension value in rollups and lake columns.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Search => "search",
            Self::Social => "social",
            Self::Email => "email",
            Self::Paid => "paid",
            Self::Referral => "referral",
            Self::Internal => "internal",
        }
    }
}

/// Where a visit came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Human source name ("Google", "Facebook", "Gmail"), the referrer host for other sites
    /// ("news.example.org"), `utm_source` when given, or [`DIRECT_SOURCE`] / [`NOT_SET_SOURCE`].
    pub source: String,
    /// The kind of traffic.
    pub medium: Medium,
}

/// `utm_medium` values that mean paid traffic (compared lowercase). Any value containing
/// "paid" (`paid_social`, `paidsearch`) is paid too.
pub const PAID_MEDIUMS: &[&str] = &[
    "cpc",
    "ppc",
    "cpm",
    "cpv",
    "cpa",
    "cpp",
    "display",
    "banner",
    "retargeting",
    "paid",
    "ads",
];
/// `utm_medium` values that mean email.
pub const EMAIL_MEDIUMS: &[&str] = &["email", "e-mail", "e_mail", "mail", "newsletter"];
/// `utm_medium` values that mean unpaid social.
pub const SOCIAL_MEDIUMS: &[&str] = &[
    "social",
    "social-network",
    "social_network",
    "social-media",
    "social_media",
    "sm",
];
/// `utm_medium` values that mean unpaid search.
pub const SEARCH_MEDIUMS: &[&str] = &["organic", "search", "seo"];

/// Classifies a visit's traffic from its referrer URL, the host of the page it landed on
/// (normalised, see [`crate::url::normalise_host`]) and the page's UTM parameters.
///
/// Without UTM parameters: no (or an unreadable) referrer → `Direct`; the page's own host →
/// `Internal`; a host of the known-sources table → its name and medium; any other host →
/// `Referral` with the host as source. Subdomains are other sites: `blog.example.com` is a
/// referral for `example.com`.
///
/// UTM parameters win over the referrer: `utm_medium` sets the medium (unrecognised values
/// give `Referral`), `utm_source` names the source (mapped to a known name when it is one:
/// `google` → "Google", `fb` → "Facebook"). With only `utm_source`, the medium is that known
/// source's, else the referrer's, else `Referral`. With only `utm_medium`, the source is the
/// referrer's, else [`NOT_SET_SOURCE`].
pub fn classify(referrer_url: &str, page_host: &str, utm: &Utm) -> Traffic {
    let by_referrer = classify_referrer(referrer_url, page_host);
    let utm_source = utm
        .source
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let utm_medium = utm
        .medium
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if utm_source.is_none() && utm_medium.is_none() {
        return by_referrer;
    }
    let referrer_names_someone = !matches!(by_referrer.medium, Medium::Direct | Medium::Internal);
    let known = utm_source.and_then(sources::lookup_name);
    let medium = match (utm_medium, known) {
        (Some(tag), _) => medium_from_utm(tag),
        (None, Some(known)) => known.medium,
        (None, None) if referrer_names_someone => by_referrer.medium,
        (None, None) => Medium::Referral,
    };
    let source = match (utm_source, known) {
        (Some(_), Some(known)) => known.name.to_owned(),
        (Some(given), None) => given.to_owned(),
        (None, _) if referrer_names_someone => by_referrer.source,
        (None, _) => NOT_SET_SOURCE.to_owned(),
    };
    Traffic { source, medium }
}

/// Source and medium from the referrer alone.
fn classify_referrer(referrer_url: &str, page_host: &str) -> Traffic {
    let host = normalise_url(referrer_url).host;
    if host.is_empty() {
        return traffic(DIRECT_SOURCE, Medium::Direct);
    }
    if !page_host.is_empty() && host == page_host {
        return Traffic {
            source: host,
            medium: Medium::Internal,
        };
    }
    match sources::lookup_host(&host) {
        Some(KnownSource { name, medium, .. }) => traffic(name, *medium),
        None => Traffic {
            source: host,
            medium: Medium::Referral,
        },
    }
}

/// Medium for a `utm_medium` value.
fn medium_from_utm(tag: &str) -> Medium {
    let tag = tag.to_ascii_lowercase();
    let tag = tag.as_str();
    if tag.contains("paid") || PAID_MEDIUMS.contains(&tag) {
        Medium::Paid
    } else if EMAIL_MEDIUMS.contains(&tag) {
        Medium::Email
    } else if SOCIAL_MEDIUMS.contains(&tag) {
        Medium::Social
    } else if SEARCH_MEDIUMS.contains(&tag) {
        Medium::Search
    } else {
        Medium::Referral
    }
}

fn traffic(source: &str, medium: Medium) -> Traffic {
    Traffic {
        source: source.to_owned(),
        medium,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_utm() -> Utm {
        Utm::default()
    }

    fn utm(source: Option<&str>, medium: Option<&str>) -> Utm {
        Utm {
            source: source.map(Into::into),
            medium: medium.map(Into::into),
            ..Utm::default()
        }
    }

    fn got(referrer: &str, utm: &Utm) -> (String, Medium) {
        let t = classify(referrer, "shop.example.com", utm);
        (t.source, t.medium)
    }

    fn want(source: &str, medium: Medium) -> (String, Medium) {
        (source.to_owned(), medium)
    }

    #[test]
    fn referrers_without_utm() {
        use Medium::*;
        let cases = [
            ("", want("Direct", Direct)),
            ("not a url", want("Direct", Direct)),
            (
                "https://shop.example.com/cart",
                want("shop.example.com", Internal),
            ),
            (
                "https://www.shop.example.com/",
                want("shop.example.com", Internal),
            ),
            (
                "https://blog.example.com/post",
                want("blog.example.com", Referral),
            ),
            ("https://www.google.com/", want("Google", Search)),
            (
                "https://www.google.co.uk/search?q=shoes",
                want("Google", Search),
            ),
            ("https://google.com.br/", want("Google", Search)),
            (
                "android-app://com.google.android.googlequicksearchbox/",
                want("Google", Search),
            ),
            (
                "https://docs.google.com/document/d/1",
                want("docs.google.com", Referral),
            ),
            ("https://www.bing.com/search?q=x", want("Bing", Search)),
            ("https://duckduckgo.com/", want("DuckDuckGo", Search)),
            ("https://uk.search.yahoo.com/", want("Yahoo", Search)),
            ("https://yandex.ru/search/?text=x", want("Yandex", Search)),
            ("https://www.ecosia.org/", want("Ecosia", Search)),
            (
                "https://search.brave.com/search?q=x",
                want("Brave Search", Search),
            ),
            ("https://www.baidu.com/link?url=x", want("Baidu", Search)),
            (
                "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example.com",
                want("Facebook", Social),
            ),
            ("https://m.facebook.com/", want("Facebook", Social)),
            ("https://t.co/AbC123", want("Twitter", Social)),
            ("https://x.com/someone/status/1", want("Twitter", Social)),
            ("https://www.linkedin.com/feed/", want("LinkedIn", Social)),
            ("https://old.reddit.com/r/rust/", want("Reddit", Social)),
            ("https://www.youtube.com/watch?v=x", want("YouTube", Social)),
            (
                "https://news.ycombinator.com/item?id=1",
                want("Hacker News", Social),
            ),
            ("https://mail.google.com/", want("Gmail", Email)),
            ("android-app://com.google.android.gm/", want("Gmail", Email)),
            ("https://outlook.live.com/mail/0/", want("Outlook", Email)),
            (
                "https://mail.yahoo.com/d/folders/1",
                want("Yahoo Mail", Email),
            ),
            (
                "https://news.example.org/article?id=5",
                want("news.example.org", Referral),
            ),
        ];
        for (referrer, expected) in cases {
            assert_eq!(got(referrer, &no_utm()), expected, "{referrer:?}");
        }
    }

    #[test]
    fn utm_parameters_override_the_referrer() {
        use Medium::*;
        let google = "https://www.google.com/";
        let cases = [
            (
                google,
                utm(Some("google"), Some("cpc")),
                want("Google", Paid),
            ),
            ("", utm(Some("google"), Some("cpc")), want("Google", Paid)),
            (
                "",
                utm(Some("Newsletter"), Some("email")),
                want("Newsletter", Email),
            ),
            (
                "https://mail.google.com/",
                utm(Some("weekly"), Some("newsletter")),
                want("weekly", Email),
            ),
            (
                "",
                utm(Some("fb"), Some("paid_social")),
                want("Facebook", Paid),
            ),
            (
                "",
                utm(Some("facebook.com"), Some("social")),
                want("Facebook", Social),
            ),
            (
                "",
                utm(Some("partner-blog"), Some("affiliate")),
                want("partner-blog", Referral),
            ),
            (
                google,
                utm(Some("google"), Some("organic")),
                want("Google", Search),
            ),
            ("", utm(Some("bing"), Some("Display")), want("Bing", Paid)),
            ("", utm(Some("instagram"), None), want("Instagram", Social)),
            (
                "https://t.co/x",
                utm(Some("spring-launch"), None),
                want("spring-launch", Social),
            ),
            (
                "",
                utm(Some("spring-launch"), None),
                want("spring-launch", Referral),
            ),
            (
                "https://t.co/x",
                utm(None, Some("paid")),
                want("Twitter", Paid),
            ),
            ("", utm(None, Some("email")), want("(not set)", Email)),
            (
                "https://shop.example.com/",
                utm(None, Some("email")),
                want("(not set)", Email),
            ),
            (google, utm(Some("  "), Some("")), want("Google", Search)),
        ];
        for (referrer, utm, expected) in cases {
            assert_eq!(got(referrer, &utm), expected, "{referrer:?} {utm:?}");
        }
    }

    #[test]
    fn without_a_page_host_nothing_is_internal() {
        let t = classify("https://shop.example.com/", "", &no_utm());
        assert_eq!(t.medium, Medium::Referral);
    }

    #[test]
    fn medium_codes_are_stable() {
        use Medium::*;
        let all = [Direct, Search, Social, Email, Paid, Referral, Internal];
        let codes: Vec<_> = all.iter().map(|m| m.as_str()).collect();
        assert_eq!(
            codes,
            [
                "direct", "search", "social", "email", "paid", "referral", "internal"
            ]
        );
        for medium in all {
            assert_eq!(
                serde_json::to_string(&medium).unwrap(),
                format!("\"{}\"", medium.as_str())
            );
        }
    }
}
