//! Page and referrer URLs normalised to what rollups group by: host and path, plus the
//! `utm_*` campaign parameters. Everything else in the query string and the fragment is dropped
//! (it is where session tokens, emails and click ids hide, and it would explode the number of
//! distinct pages).

use ::url::Url;
use serde::{Deserialize, Serialize};

/// Campaign parameters (`utm_*`) of a URL. `None` when a parameter is absent or blank.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utm {
    /// `utm_source`: who sent the traffic ("google", "newsletter").
    pub source: Option<String>,
    /// `utm_medium`: the kind of traffic ("cpc", "email", "social").
    pub medium: Option<String>,
    /// `utm_campaign`: the campaign name.
    pub campaign: Option<String>,
    /// `utm_term`: paid search keywords.
    pub term: Option<String>,
    /// `utm_content`: which ad or link was clicked.
    pub content: Option<String>,
}

impl Utm {
    /// True when no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.campaign.is_none()
            && self.term.is_none()
            && self.content.is_none()
    }

    /// Fills each parameter missing here from `fallback` (e.g. Segment's `context.campaign`).
    pub fn or(self, fallback: Utm) -> Utm {
        Utm {
            source: self.source.or(fallback.source),
            medium: self.medium.or(fallback.medium),
            campaign: self.campaign.or(fallback.campaign),
            term: self.term.or(fallback.term),
            content: self.content.or(fallback.content),
        }
    }

    /// Records one query parameter if it is one of the five; the first occurrence wins.
    fn set(&mut self, key: &str, value: &str) {
        let slot = match key {
            "utm_source" => &mut self.source,
            "utm_medium" => &mut self.medium,
            "utm_campaign" => &mut self.campaign,
            "utm_term" => &mut self.term,
            "utm_content" => &mut self.content,
            _ => return,
        };
        let value = value.trim();
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value.to_owned());
        }
    }
}

/// A URL reduced to host, path and campaign parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalisedUrl {
    /// Lowercase host without a leading `www.`, port or trailing dot; IDNs in punycode.
    /// Empty when the input has no host (a bare path, `about:blank`, garbage).
    pub host: String,
    /// Path, percent-encoded as the WHATWG URL standard does, case kept, without trailing
    /// slashes except the root `/`. The input as given when it is not a URL at all.
    pub path: String,
    /// The `utm_*` query parameters kept, keys lowercased, sorted by key, form-encoded
    /// (`utm_medium=cpc&utm_source=google`); empty when there are none.
    pub query: String,
    /// The five standard campaign parameters, decoded.
    pub utm: Utm,
}

/// Normalises a page or referrer URL. Never fails and never panics.
///
/// - `https://WWW.Example.com:443/Shop/?utm_source=x&id=7#top` → host `example.com`, path
///   `/Shop`, query `utm_source=x`.
/// - A bare path (`/pricing?utm_medium=email`) or a protocol-relative URL (`//example.com/a`)
///   is read as such: empty host for the former.
/// - Anything unparseable: empty host, path = the input as given, no campaign parameters.
pub fn normalise_url(input: &str) -> NormalisedUrl {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return NormalisedUrl::default();
    }
    let parsed = if trimmed.starts_with("//") {
        Url::parse(&format!("https:{trimmed}"))
    } else if trimmed.starts_with('/') {
        // Any base will do: its host is not reported.
        Url::parse("http://relative.invalid").and_then(|base| base.join(trimmed))
    } else {
        Url::parse(trimmed)
    };
    match parsed {
        Ok(url) if !url.cannot_be_a_base() => {
            let host = if trimmed.starts_with('/') && !trimmed.starts_with("//") {
                String::new()
            } else {
                url.host_str().map(normalise_host).unwrap_or_default()
            };
            let (query, utm) = campaign_parameters(&url);
            NormalisedUrl {
                host,
                path: normalise_path(url.path()),
                query,
                utm,
            }
        }
        _ => NormalisedUrl {
            path: input.to_owned(),
            ..NormalisedUrl::default()
        },
    }
}

/// Lowercases a host and strips a trailing dot and one leading `www.`.
///
/// `www.` is stripped so that `www.example.com` and `example.com` count as one site (in page
/// reports and in the same-site referrer check); other subdomains stay distinct.
pub fn normalise_host(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.strip_prefix("www.") {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => host,
    }
}

fn normalise_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn campaign_parameters(url: &Url) -> (String, Utm) {
    let mut utm = Utm::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    if url
        .query()
        .is_none_or(|q| !q.to_ascii_lowercase().contains("utm_"))
    {
        return (String::new(), utm);
    }
    for (key, value) in url.query_pairs() {
        let key = key.to_ascii_lowercase();
        if key.starts_with("utm_") {
            utm.set(&key, &value);
            kept.push((key, value.into_owned()));
        }
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let query = ::url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish();
    (query, utm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(input: &str) -> (String, String, String) {
        let n = normalise_url(input);
        (n.host, n.path, n.query)
    }

    fn s(host: &str, path: &str, query: &str) -> (String, String, String) {
        (host.into(), path.into(), query.into())
    }

    #[test]
    fn urls_reduce_to_host_path_and_utm_query() {
        let cases = [
            ("https://example.com", s("example.com", "/", "")),
            ("https://example.com/", s("example.com", "/", "")),
            (
                "https://WWW.Example.COM:443/Shop/Shoes/?id=7&sort=asc#reviews",
                s("example.com", "/Shop/Shoes", ""),
            ),
            (
                "http://shop.example.com:8080/a//",
                s("shop.example.com", "/a", ""),
            ),
            (
                "https://example.com./pricing",
                s("example.com", "/pricing", ""),
            ),
            (
                "https://www.example.com/?utm_source=google&gclid=abc&utm_medium=cpc",
                s("example.com", "/", "utm_medium=cpc&utm_source=google"),
            ),
            (
                "https://example.com/p?UTM_Campaign=Spring%20Sale&email=a%40b.c",
                s("example.com", "/p", "utm_campaign=Spring+Sale"),
            ),
            (
                "https://münchen.example/straße",
                s("xn--mnchen-3ya.example", "/stra%C3%9Fe", ""),
            ),
            ("https://www/", s("www", "/", "")),
            (
                "/pricing/?utm_medium=email&x=1",
                s("", "/pricing", "utm_medium=email"),
            ),
            ("//cdn.example.com/a/", s("cdn.example.com", "/a", "")),
            (
                "android-app://com.google.android.gm/",
                s("com.google.android.gm", "/", ""),
            ),
            ("", s("", "", "")),
            ("   ", s("", "", "")),
            ("not a url", s("", "not a url", "")),
            ("about:blank", s("", "about:blank", "")),
            (
                "https://exa mple.com/x",
                s("", "https://exa mple.com/x", ""),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parts(input), expected, "{input:?}");
        }
    }

    #[test]
    fn utm_parameters_are_decoded_trimmed_and_first_wins() {
        let n = normalise_url(
            "https://example.com/?utm_source=news+letter&utm_medium=%20email%20&utm_campaign=&utm_term=shoes&utm_content=hero&utm_source=other",
        );
        assert_eq!(
            n.utm,
            Utm {
                source: Some("news letter".into()),
                medium: Some("email".into()),
                campaign: None,
                term: Some("shoes".into()),
                content: Some("hero".into()),
            }
        );
        assert!(normalise_url("https://example.com/?q=1").utm.is_empty());
        assert!(
            normalise_url("https://example.com/#utm_source=x")
                .utm
                .is_empty()
        );
    }

    #[test]
    fn utm_or_fills_only_missing_fields() {
        let url = Utm {
            source: Some("google".into()),
            ..Utm::default()
        };
        let context = Utm {
            source: Some("ignored".into()),
            medium: Some("cpc".into()),
            ..Utm::default()
        };
        let merged = url.or(context);
        assert_eq!(merged.source.as_deref(), Some("google"));
        assert_eq!(merged.medium.as_deref(), Some("cpc"));
    }

    #[test]
    fn hosts_lose_case_trailing_dot_and_one_www() {
        assert_eq!(normalise_host("WWW.Example.com."), "example.com");
        assert_eq!(normalise_host("www.www.example.com"), "www.example.com");
        assert_eq!(normalise_host("www."), "www");
        assert_eq!(normalise_host("blog.example.com"), "blog.example.com");
    }

    #[test]
    fn odd_inputs_never_panic() {
        for input in [
            "http://",
            "https://[::1]:99/x?",
            "?utm_source=x",
            "#",
            "/%",
            "ftp://a/b",
            "\u{0}",
            "http://a.com/\u{1F600}",
        ] {
            let _ = normalise_url(input);
        }
    }
}
