//! What ingest does with the client IP: derive the cookieless visitor id, keep a truncated
//! network, and forget the rest. The raw IP never leaves this module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::NaiveDate;

/// The IP's network: /24 for IPv4, /48 for IPv6 (the host part zeroed).
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// Derives cookieless visitor ids from a secret whose salt rotates every UTC day, so that one
/// day's ids cannot be linked to the next day's and the IP cannot be recovered.
#[derive(Clone)]
pub struct VisitorHasher {
    secret: [u8; 32],
}

impl std::fmt::Debug for VisitorHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorHasher(***)")
    }
}

impl VisitorHasher {
    /// From the configured secret; an empty one is replaced by a random per-process secret.
    pub fn new(secret: &str) -> Self {
        let secret = if secret.is_empty() {
            tracing::warn!(
                "ingest.visitor_salt_secret is empty: cookieless visitor ids change on restart \
                 and differ between replicas"
            );
            uuid::Uuid::new_v4().to_string()
        } else {
            secret.to_string()
        };
        Self {
            secret: blake3::derive_key("sightline visitor secret v1", secret.as_bytes()),
        }
    }

    /// The visitor id of a request without anonymousId or userId.
    pub fn visitor_id(&self, day: NaiveDate, site_id: i64, ip: IpAddr, user_agent: &str) -> String {
        let mut salt_input = Vec::with_capacity(48);
        salt_input.extend_from_slice(&self.secret);
        salt_input.extend_from_slice(day.to_string().as_bytes());
        let salt = blake3::derive_key("sightline daily visitor salt v1", &salt_input);
        let mut hasher = blake3::Hasher::new_keyed(&salt);
        hasher.update(&site_id.to_le_bytes());
        match ip {
            IpAddr::V4(v4) => hasher.update(&v4.octets()),
            IpAddr::V6(v6) => hasher.update(&v6.octets()),
        };
        hasher.update(user_agent.as_bytes());
        let digest = hasher.finalize();
        format!("c:{}", &digest.to_hex()[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_drops_the_host_part() {
        assert_eq!(
            truncate_ip("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()).to_string(),
            "2001:db8:85a3::"
        );
    }

    #[test]
    fn visitor_ids_rotate_daily_and_depend_on_every_input() {
        let h = VisitorHasher::new("secret");
        let d1 = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let d2 = d1.succ_opt().unwrap();
        let ip: IpAddr = "198.51.100.4".parse().unwrap();
        let id = h.visitor_id(d1, 1, ip, "UA");
        assert_eq!(id, h.visitor_id(d1, 1, ip, "UA"));
        assert_ne!(id, h.visitor_id(d2, 1, ip, "UA"));
        assert_ne!(id, h.visitor_id(d1, 2, ip, "UA"));
        assert_ne!(
            id,
            h.visitor_id(d1, 1, "198.51.100.5".parse().unwrap(), "UA")
        );
        assert_ne!(id, h.visitor_id(d1, 1, ip, "UA2"));
        assert_ne!(id, VisitorHasher::new("other").visitor_id(d1, 1, ip, "UA"));
        assert!(!id.contains("198"));
    }
}
