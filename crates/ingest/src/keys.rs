//! Write keys, cached in memory and refreshed from the database, each with its rate limiter.
//!
//! The request path never waits for the database: a key is known if the last refresh saw it.
//! New and revoked keys take effect within one refresh interval (`ingest.key_refresh_ms`).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
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
    budget: EventBudget,
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
        Self {
            tenant_id: key.tenant_id,
            site_id: key.site_id,
            rate,
            budget: EventBudget::new(rate, Instant::now()),
        }
    }

    /// Takes `events` from the key's budget (see [`EventBudget`]).
    pub fn check_rate(&self, events: usize) -> RateDecision {
        self.budget.take(events, Instant::now())
    }
}

/// A key's events-per-second budget, as a generic cell rate algorithm: the bucket holds one
/// second's worth of events and refills at the rate.
///
/// A request with more events than the whole bucket is admitted when the bucket is full and
/// overdraws it: the key then waits until the debt is paid. So a client whose batches are larger
/// than its key's rate still gets through, at the rate, instead of being refused for ever; and
/// over any span, a key is admitted at most one second's worth more than its rate.
struct EventBudget {
    /// Time one event's share of the budget takes to refill.
    per_event: Duration,
    /// When the bucket will be full again ("theoretical arrival time"): at or before now, it is
    /// full; [`Self::CAPACITY`] past now, it is empty; further, it is overdrawn.
    full_at: Mutex<Instant>,
}

impl EventBudget {
    /// The bucket's capacity, as refill time: one second's worth of events.
    const CAPACITY: Duration = Duration::from_secs(1);

    fn new(rate: u32, now: Instant) -> Self {
        Self {
            per_event: Self::CAPACITY / rate.max(1),
            full_at: Mutex::new(now),
        }
    }

    fn take(&self, events: usize, now: Instant) -> RateDecision {
        let cost = self
            .per_event
            .saturating_mul(u32::try_from(events.max(1)).unwrap_or(u32::MAX));
        let mut full_at = self.full_at.lock();
        let used = full_at.saturating_duration_since(now);
        let fits = used + cost <= Self::CAPACITY;
        let oversized_on_a_full_bucket = cost > Self::CAPACITY && used.is_zero();
        if fits || oversized_on_a_full_bucket {
            *full_at = now.max(*full_at) + cost;
            return RateDecision::Allowed;
        }
        // When it would fit: as soon as enough has refilled, or for an oversized request, once
        // the bucket is full.
        let wait = if cost > Self::CAPACITY {
            used
        } else {
            used + cost - Self::CAPACITY
        };
        RateDecision::Limited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
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

    fn limited(secs: u64) -> RateDecision {
        RateDecision::Limited {
            retry_after_secs: secs,
        }
    }

    #[test]
    fn the_budget_refills_at_the_rate_and_says_when_a_request_fits() {
        let t0 = Instant::now();
        let budget = EventBudget::new(10, t0);
        assert_eq!(budget.take(6, t0), RateDecision::Allowed);
        assert_eq!(
            budget.take(4, t0),
            RateDecision::Allowed,
            "a whole second's worth"
        );
        assert_eq!(budget.take(1, t0), limited(1));
        let half = t0 + Duration::from_millis(500);
        assert_eq!(budget.take(5, half), RateDecision::Allowed, "half refilled");
        assert_eq!(budget.take(1, half), limited(1));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            budget.take(10, later),
            RateDecision::Allowed,
            "a full bucket holds no more than a second's worth"
        );
        assert_eq!(budget.take(1, later), limited(1));
    }

    #[test]
    fn a_request_larger_than_the_rate_gets_through_at_the_rate() {
        let t0 = Instant::now();
        let budget = EventBudget::new(20, t0);
        assert_eq!(budget.take(1, t0), RateDecision::Allowed);
        assert_eq!(
            budget.take(100, t0),
            limited(1),
            "an oversized request waits for a full bucket"
        );
        let full = t0 + Duration::from_millis(50);
        assert_eq!(budget.take(100, full), RateDecision::Allowed);
        // 100 events at 20 a second: five seconds of debt.
        assert_eq!(budget.take(1, full), limited(5));
        assert_eq!(budget.take(100, full + Duration::from_secs(4)), limited(1));
        let paid = full + Duration::from_secs(5);
        assert_eq!(budget.take(100, paid), RateDecision::Allowed);
        assert_eq!(
            budget.take(20, paid + Duration::from_secs(4)),
            limited(1),
            "still a second of debt left"
        );
    }
}
