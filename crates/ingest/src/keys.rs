//! Write keys, cached in memory and refreshed from the database, each with its rate limiter.
//!
//! The request path never waits for the database: a key is known if the last refresh saw it.
//! New and revoked keys take effect within one refresh interval (`ingest.key_refresh_ms`).

use std::{collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use parking_lot::RwLock;
use sightline_db::{WriteKey, WriteKeys};
use sightline_kit::ComponentHealth;
use tokio_util::sync::CancellationToken;

/// A known, live write key.
pub struct KeyEntry {
    /// Tenant of the key's site.
    pub tenant_id: i64,
    /// The key's site.
    pub site_id: i64,
    rate: u32,
    limiter: DefaultDirectRateLimiter,
}

/// The answer of a rate check.
#[derive(Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Over the rate; retry after this many seconds.
    Limited {
        /// Seconds until the request would fit.
        retry_after_secs: u64,
    },
}

impl KeyEntry {
    fn new(key: &WriteKey, default_rate: u32) -> Self {
        let rate = key
            .rate_limit_per_sec
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(default_rate)
            .max(1);
        let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        Self {
            tenant_id: key.tenant_id,
            site_id: key.site_id,
            rate,
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
        }
    }

    /// Takes `events` from the key's budget (a burst of one second's worth).
    pub fn check_rate(&self, events: usize) -> RateDecision {
        let n =
            NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_n(n) {
            Ok(Ok(())) => RateDecision::Allowed,
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                RateDecision::Limited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
            // More events in one request than the key may send in a second.
            Err(_) => RateDecision::Limited {
                retry_after_secs: 1,
            },
        }
    }
}

/// The in-memory view of every live write key.
pub struct KeyCache {
    keys: RwLock<HashMap<String, Arc<KeyEntry>>>,
    default_rate: u32,
}

impl KeyCache {
    /// An empty cache.
    pub fn new(default_rate: u32) -> Self {
        Self {
            keys: RwLock::new(HashMap::new()),
            default_rate,
        }
    }

    /// The live key, if known.
    pub fn get(&self, key: &str) -> Option<Arc<KeyEntry>> {
        self.keys.read().get(key).cloned()
    }

    /// Applies changed rows: revoked keys leave, new ones arrive, changed rates take effect.
    pub fn apply(&self, rows: &[WriteKey]) {
        let mut keys = self.keys.write();
        for row in rows {
            if row.revoked_at.is_some() {
                keys.remove(&row.key);
                continue;
            }
            let entry = KeyEntry::new(row, self.default_rate);
            let unchanged = keys.get(&row.key).is_some_and(|e| {
                e.rate == entry.rate && e.site_id == entry.site_id && e.tenant_id == entry.tenant_id
            });
            if !unchanged {
                keys.insert(row.key.clone(), Arc::new(entry));
            }
        }
    }

    /// Keeps the cache in step with the database until `shutdown`. The component is ready once
    /// the first full load succeeded; later failures keep the last known keys.
    pub async fn refresh_loop(
        self: Arc<Self>,
        repo: Arc<dyn WriteKeys>,
        every: Duration,
        health: ComponentHealth,
        shutdown: CancellationToken,
    ) {
        // Rows are re-read a little before the newest change seen, so a transaction that
        // committed late with an earlier `updated_at` is not missed.
        const OVERLAP: chrono::Duration = chrono::Duration::seconds(5);
        let mut since: Option<DateTime<Utc>> = None;
        let mut loaded = false;
        loop {
            match repo
                .write_keys_changed_since(since.map(|s| s - OVERLAP))
                .await
            {
                Ok(rows) => {
                    self.apply(&rows);
                    // Until a first key exists every refresh is a full (empty) load.
                    if let Some(newest) = rows.iter().map(|r| r.updated_at).max() {
                        since = Some(since.map_or(newest, |s| s.max(newest)));
                    }
                    loaded = true;
                    health.ready();
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot refresh write keys, keeping the last known ones");
                    if !loaded {
                        health.not_ready(format!("write keys not loaded: {error}"));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, rate: Option<i32>, revoked: bool) -> WriteKey {
        WriteKey {
            key: key.into(),
            tenant_id: 1,
            site_id: 2,
            rate_limit_per_sec: rate,
            created_at: Utc::now(),
            revoked_at: revoked.then(Utc::now),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn revoked_keys_leave_and_rates_apply() {
        let cache = KeyCache::new(1000);
        cache.apply(&[row("a", Some(10), false), row("b", None, false)]);
        let a = cache.get("a").unwrap();
        assert_eq!(a.check_rate(10), RateDecision::Allowed);
        assert!(matches!(a.check_rate(1), RateDecision::Limited { .. }));
        assert!(matches!(a.check_rate(11), RateDecision::Limited { .. }));
        assert_eq!(
            cache.get("b").unwrap().check_rate(1000),
            RateDecision::Allowed
        );
        cache.apply(&[row("a", Some(10), true)]);
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_none());
    }
}
