//! The table of known traffic sources: search engines, social networks and webmail, by host.
//!
//! Written for Sightline from the services' public host names (not copied from Snowplow's
//! GPL-licensed referer database). Host patterns:
//!
//! - `example.com` matches the host and every subdomain (`l.facebook.com`, `uk.search.yahoo.com`);
//!   the longest listed match wins, so `mail.yahoo.com` (email) beats `yahoo.com` (search).
//! - `google.*` matches `google.` followed by one or two short country or generic labels
//!   (`google.de`, `google.co.uk`, `google.com.br`) and no subdomain: `docs.google.com` or
//!   `sites.google.com` are other sites, not a search.
//! - Android app ids (`com.google.android.gm`) are the hosts of `android-app://` referrers.
//!
//! Keep it small and obvious; a change here changes figures from the next batch run on.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::referrer::Medium;
use crate::url::normalise_host;

/// One known source.
#[derive(Debug)]
pub struct KnownSource {
    /// Display name, also the `source` value ("Google").
    pub name: &'static str,
    /// The medium its referrals have.
    pub medium: Medium,
    /// Host patterns (see the module documentation).
    pub hosts: &'static [&'static str],
    /// Extra lowercase `utm_source` spellings besides the lowercased name and the hosts.
    pub aliases: &'static [&'static str],
}

const fn source(
    name: &'static str,
    medium: Medium,
    hosts: &'static [&'static str],
    aliases: &'static [&'static str],
) -> KnownSource {
    KnownSource {
        name,
        medium,
        hosts,
        aliases,
    }
}

use Medium::{Email, Search, Social};

/// Every known source.
#[rustfmt::skip]
pub static KNOWN_SOURCES: &[KnownSource] = &[
    // webmail
    source("Gmail", Email, &["mail.google.com", "inbox.google.com", "com.google.android.gm"], &[]),
    source("Outlook", Email, &["outlook.live.com", "outlook.office.com", "outlook.office365.com", "com.microsoft.office.outlook"], &["hotmail"]),
    source("Yahoo Mail", Email, &["mail.yahoo.com", "mail.yahoo.co.jp"], &[]),
    source("Proton Mail", Email, &["mail.proton.me", "mail.protonmail.com"], &["protonmail"]),
    source("AOL Mail", Email, &["mail.aol.com"], &[]),
    source("Yandex Mail", Email, &["mail.yandex.ru", "mail.yandex.com"], &[]),
    source("Zoho Mail", Email, &["mail.zoho.com", "mail.zoho.eu"], &[]),
    source("Fastmail", Email, &["app.fastmail.com", "fastmail.com"], &[]),
    source("GMX", Email, &["gmx.net", "gmx.de", "gmx.com"], &[]),
    source("WEB.DE", Email, &["web.de"], &[]),
    // search engines
    source("Google", Search, &["google.*", "images.google.*", "news.google.*", "com.google.android.googlequicksearchbox"], &[]),
    source("Bing", Search, &["bing.com"], &["msn"]),
    source("DuckDuckGo", Search, &["duckduckgo.com"], &["ddg"]),
    source("Yahoo", Search, &["yahoo.com", "search.yahoo.co.jp"], &[]),
    source("Baidu", Search, &["baidu.com"], &[]),
    source("Yandex", Search, &["yandex.*", "ya.ru"], &[]),
    source("Ecosia", Search, &["ecosia.org"], &[]),
    source("Qwant", Search, &["qwant.com"], &[]),
    source("Brave Search", Search, &["search.brave.com"], &["brave"]),
    source("Startpage", Search, &["startpage.com"], &[]),
    source("Kagi", Search, &["kagi.com"], &[]),
    source("Naver", Search, &["search.naver.com"], &[]),
    source("Seznam", Search, &["seznam.cz"], &[]),
    source("Sogou", Search, &["sogou.com"], &[]),
    source("Ask", Search, &["ask.com"], &[]),
    source("AOL Search", Search, &["search.aol.com"], &[]),
    // social networks
    source("Facebook", Social, &["facebook.com", "fb.com", "fb.me", "messenger.com", "com.facebook.katana", "com.facebook.orca"], &["fb"]),
    source("Instagram", Social, &["instagram.com", "com.instagram.android"], &["ig"]),
    source("Twitter", Social, &["t.co", "twitter.com", "x.com", "com.twitter.android"], &["x", "tw"]),
    source("LinkedIn", Social, &["linkedin.com", "lnkd.in", "com.linkedin.android"], &["li"]),
    source("Reddit", Social, &["reddit.com", "redd.it", "com.reddit.frontpage"], &[]),
    source("Pinterest", Social, &["pinterest.com", "pinterest.*", "pin.it", "com.pinterest"], &[]),
    source("YouTube", Social, &["youtube.com", "youtu.be", "com.google.android.youtube"], &["yt"]),
    source("TikTok", Social, &["tiktok.com", "com.zhiliaoapp.musically"], &[]),
    source("Threads", Social, &["threads.net", "threads.com"], &[]),
    source("Bluesky", Social, &["bsky.app"], &[]),
    source("Mastodon", Social, &["mastodon.social"], &[]),
    source("Hacker News", Social, &["news.ycombinator.com"], &["hn", "hackernews"]),
    source("VK", Social, &["vk.com"], &["vkontakte"]),
    source("Tumblr", Social, &["tumblr.com"], &[]),
    source("Quora", Social, &["quora.com"], &[]),
    source("Snapchat", Social, &["snapchat.com"], &[]),
    source("Telegram", Social, &["t.me", "telegram.org", "org.telegram.messenger"], &[]),
    source("WhatsApp", Social, &["whatsapp.com", "wa.me", "com.whatsapp"], &[]),
    source("Discord", Social, &["discord.com", "discordapp.com"], &[]),
    source("Slack", Social, &["slack.com", "com.slack"], &[]),
    source("Weibo", Social, &["weibo.com"], &[]),
    source("XING", Social, &["xing.com"], &[]),
];

static BY_HOST: LazyLock<HashMap<&'static str, &'static KnownSource>> = LazyLock::new(|| {
    KNOWN_SOURCES
        .iter()
        .flat_map(|s| s.hosts.iter().map(move |h| (*h, s)))
        .collect()
});

static BY_NAME: LazyLock<HashMap<String, &'static KnownSource>> = LazyLock::new(|| {
    KNOWN_SOURCES
        .iter()
        .flat_map(|s| {
            let name = std::iter::once(s.name.to_ascii_lowercase());
            name.chain(s.aliases.iter().map(|a| (*a).to_owned()))
                .map(move |n| (n, s))
        })
        .collect()
});

/// The known source of a normalised host (lowercase, no `www.`), if any.
pub fn lookup_host(host: &str) -> Option<&'static KnownSource> {
    if let Some(found) = BY_HOST.get(host).copied().or_else(|| lookup_wildcard(host)) {
        return Some(found);
    }
    let mut parent = host;
    while let Some((_, rest)) = parent.split_once('.') {
        if let Some(found) = BY_HOST.get(rest).copied() {
            return Some(found);
        }
        parent = rest;
    }
    None
}

/// The known source a `utm_source` value names: a name ("Google", case-insensitive), an alias
/// ("fb") or a host ("facebook.com", "www.google.de").
pub fn lookup_name(utm_source: &str) -> Option<&'static KnownSource> {
    let lower = utm_source.trim().to_ascii_lowercase();
    BY_NAME.get(&lower).copied().or_else(|| {
        lower
            .contains('.')
            .then(|| lookup_host(&normalise_host(&lower)))
            .flatten()
    })
}

/// `google.co.uk` → the `google.*` entry: try the host without a one- or two-label suffix of
/// short alphabetic labels.
fn lookup_wildcard(host: &str) -> Option<&'static KnownSource> {
    let mut end = host.len();
    for _ in 0..2 {
        let (base, label) = host[..end].rsplit_once('.')?;
        if !(2..=3).contains(&label.len()) || !label.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        if let Some(found) = BY_HOST.get(format!("{base}.*").as_str()).copied() {
            return Some(found);
        }
        end = base.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicate_or_unnormalised_keys() {
        let hosts: Vec<_> = KNOWN_SOURCES.iter().flat_map(|s| s.hosts.iter()).collect();
        assert_eq!(BY_HOST.len(), hosts.len(), "a host is listed twice");
        for host in hosts {
            assert_eq!(*host, normalise_host(host), "{host} is not normalised");
        }
        let names = KNOWN_SOURCES
            .iter()
            .map(|s| s.aliases.len() + 1)
            .sum::<usize>();
        assert_eq!(BY_NAME.len(), names, "a name or alias is listed twice");
        for alias in KNOWN_SOURCES.iter().flat_map(|s| s.aliases.iter()) {
            assert_eq!(*alias, alias.to_ascii_lowercase());
        }
    }

    #[test]
    fn longest_listed_host_wins_and_wildcards_take_no_subdomain() {
        let name = |host: &str| lookup_host(host).map(|s| s.name);
        assert_eq!(name("mail.yahoo.com"), Some("Yahoo Mail"));
        assert_eq!(name("de.mail.yahoo.com"), Some("Yahoo Mail"));
        assert_eq!(name("search.yahoo.com"), Some("Yahoo"));
        assert_eq!(name("google.de"), Some("Google"));
        assert_eq!(name("images.google.co.jp"), Some("Google"));
        assert_eq!(name("mail.google.com"), Some("Gmail"));
        assert_eq!(name("sites.google.com"), None);
        assert_eq!(name("google.example.com"), None);
        assert_eq!(name("notgoogle.com"), None);
        assert_eq!(name("fakefacebook.com"), None);
        assert_eq!(name("pinterest.co.uk"), Some("Pinterest"));
        assert_eq!(name("com"), None);
        assert_eq!(name(""), None);
    }

    #[test]
    fn utm_source_names_aliases_and_hosts_resolve() {
        let name = |s: &str| lookup_name(s).map(|s| s.name);
        assert_eq!(name("Google"), Some("Google"));
        assert_eq!(name(" hacker news "), Some("Hacker News"));
        assert_eq!(name("fb"), Some("Facebook"));
        assert_eq!(name("www.Facebook.com"), Some("Facebook"));
        assert_eq!(name("t.co"), Some("Twitter"));
        assert_eq!(name("newsletter"), None);
    }
}
