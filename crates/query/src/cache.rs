//! Answers computed earlier, reused while what they rest on is unchanged.
//!
//! A time series, breakdown or aggregate depends on its request, on the window the request
//! resolved to (a relative range moves with the clock), on the site's time zone and currency,
//! and on the rollup rows it read. The rows are vouched for by two things read in one statement
//! ([`crate::store::look`]): the site's rollup version, which every writer of `rollups` raises in
//! the transaction that changes them (`migrations/0009_rollup_versions.sql`), and the closures
//! over the window, which decide the layer of each bucket. A cached answer is served only when
//! both are what they were when it was computed, with the watermark read now; it is therefore
//! what computing it again would give, without reading a row or uniting a sketch.
//!
//! A dashboard that many people open, or that refreshes every few seconds, asks the same
//! questions over and over; between two of the speed layer's flushes for the site (and for days
//! the batch layer closed, between two closures) each is computed once. Requests that find the
//! same answer missing or stale at the same time do not all compute it: one takes the key's
//! turn ([`AnswerCache::turn`]) and computes. Without that, every flush of a busy site would
//! start as many computations of each question as there are requests in flight, and the service
//! would fall behind.
//!
//! The others do not wait for it either, when they need not: while one request computes an
//! answer anew, the rest are given the previous answer ([`AnswerCache::previous`]), with the
//! watermark it was computed with, so its figures are exactly as complete as it says. That is
//! allowed only while the closures it rests on still hold (once the batch layer closed a day, no
//! answer shows that day's speed figures again) and while the answer is recent
//! (`query.previous_answer_max_age_ms`); otherwise they wait for the turn and look again. A
//! request that finds no other computing computes itself, so a caller that asks after a change
//! it knows of (and nobody else is asking) gets the change.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use prost::Message;
use quick_cache::{Weighter, sync::Cache};
use sightline_proto::query::v1 as pb;

use crate::{
    calendar::{Closure, Window},
    sites::Site,
    store::Look,
};

/// An answer the cache can hold.
pub trait Cacheable: Message + Clone + Sized {
    /// The RPC it answers.
    const RPC: &'static str;
    /// Wraps it for the cache.
    fn into_answer(self) -> Answer;
    /// Unwraps it, when `answer` is of this kind.
    fn from_answer(answer: Answer) -> Option<Self>;
    /// Replaces its watermark.
    fn set_watermark(&mut self, watermark: pb::Watermark);
}

/// What [`AnswerCache::new`] is given.
pub struct CacheSettings {
    /// About how many bytes of answers to keep; 0 turns caching off.
    pub bytes: u64,
    /// How recent a previous answer must be to be given while another request computes the
    /// new one; zero: never given, requests wait for the new one.
    pub previous_max_age: Duration,
    /// Requests answered from the cache, with the watermark read now.
    pub hits: Counter,
    /// Requests given the previous answer while another computed the new one.
    pub previous: Counter,
    /// Requests that computed their answer.
    pub misses: Counter,
}

/// Every kind of cached answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Timeseries(pb::TimeseriesResponse),
    Breakdown(pb::BreakdownResponse),
    Aggregate(pb::AggregateResponse),
}

macro_rules! cacheable {
    ($response:ty, $variant:ident, $rpc:literal) => {
        impl Cacheable for $response {
            const RPC: &'static str = $rpc;

            fn into_answer(self) -> Answer {
                Answer::$variant(self)
            }

            fn from_answer(answer: Answer) -> Option<Self> {
                match answer {
                    Answer::$variant(a) => Some(a),
                    _ => None,
                }
            }

            fn set_watermark(&mut self, watermark: pb::Watermark) {
                self.watermark = Some(watermark);
            }
        }
    };
}

cacheable!(pb::TimeseriesResponse, Timeseries, "GetTimeseries");
cacheable!(pb::BreakdownResponse, Breakdown, "GetBreakdown");
cacheable!(pb::AggregateResponse, Aggregate, "GetAggregate");

/// Everything an answer depends on but the rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    rpc: &'static str,
    /// The request as encoded (site, metrics, range, filter, page…).
    request: Vec<u8>,
    from_us: i64,
    to_us: i64,
    zone: &'static str,
    currency: String,
}

impl AnswerKey {
    /// The key of `request` on `site`, resolved to `window`.
    pub fn new<R: Message>(rpc: &'static str, request: &R, window: &Window, site: &Site) -> Self {
        Self {
            rpc,
            request: request.encode_to_vec(),
            from_us: window.from_us,
            to_us: window.to_us,
            zone: site.time_zone.name(),
            currency: site.currency.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    closures: Vec<Closure>,
    version: i64,
    /// As computed: its watermark is the one it was computed with.
    answer: Answer,
    computed_at: Instant,
    weight: u64,
}

#[derive(Debug, Clone)]
struct ByBytes;

impl Weighter<AnswerKey, Arc<Entry>> for ByBytes {
    fn weight(&self, _key: &AnswerKey, entry: &Arc<Entry>) -> u64 {
        entry.weight
    }
}

/// Answers by key, bounded by their encoded size.
pub struct AnswerCache {
    entries: Cache<AnswerKey, Arc<Entry>, ByBytes>,
    /// A lock per key being computed, while anyone holds or waits for it.
    turns: Mutex<HashMap<AnswerKey, Arc<tokio::sync::Mutex<()>>>>,
    previous_max_age: Duration,
    hits: Counter,
    previous: Counter,
    misses: Counter,
}

/// The right to compute one key's answer, while the others that want it wait; see
/// [`AnswerCache::turn`].
pub struct Turn<'a> {
    cache: &'a AnswerCache,
    key: AnswerKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.cache.turns();
        // Only the map still holds the lock: nobody computes or waits.
        if turns
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

/// Bytes an entry is counted for beyond its encoded key and answer (the map's own overhead).
const ENTRY_OVERHEAD: u64 = 256;

impl AnswerCache {
    /// A cache of `settings.bytes` of answers; `None` when that is 0 (caching off).
    pub fn new(settings: CacheSettings) -> Option<Self> {
        let CacheSettings {
            bytes,
            previous_max_age,
            hits,
            previous,
            misses,
        } = settings;
        (bytes > 0).then(|| Self {
            // A guess of the entry count only sizes the first allocation.
            entries: Cache::with_weighter(
                usize::try_from(bytes / 4096).unwrap_or(usize::MAX).max(16),
                bytes,
                ByBytes,
            ),
            turns: Mutex::new(HashMap::new()),
            previous_max_age,
            hits,
            previous,
            misses,
        })
    }

    /// The turn locks (a panic elsewhere cannot leave the map half-changed: each change is one
    /// call).
    fn turns(&self) -> MutexGuard<'_, HashMap<AnswerKey, Arc<tokio::sync::Mutex<()>>>> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock of `key`'s turn, made when nobody holds it.
    fn turn_lock(&self, key: &AnswerKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.turns().entry(key.clone()).or_default())
    }

    /// Waits until no other request computes `key`'s answer, and returns the right to compute
    /// it, held until the [`Turn`] is dropped (after [`AnswerCache::insert`]). Whoever waited
    /// looks in the cache again before computing: usually the answer is there.
    pub async fn turn(&self, key: &AnswerKey) -> Turn<'_> {
        let guard = self.turn_lock(key).lock_owned().await;
        Turn {
            cache: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// The right to compute `key`'s answer, when no other request holds it (then the map
    /// keeps the lock for its holder, who tidies it).
    pub fn try_turn(&self, key: &AnswerKey) -> Option<Turn<'_>> {
        let guard = self.turn_lock(key).try_lock_owned().ok()?;
        Some(Turn {
            cache: self,
            key: key.clone(),
            guard: Some(guard),
        })
    }

    /// Whether `key` has an entry (fresh or not): only then is checking it worth a statement.
    pub fn holds(&self, key: &AnswerKey) -> bool {
        self.entries.peek(key).is_some()
    }

    /// The answer of `key` when it was computed on what `now` shows (its watermark is the
    /// caller's to set: the rows are what they were, the marks may have moved).
    pub fn get<T: Cacheable>(&self, key: &AnswerKey, now: &Look) -> Option<T> {
        let entry = self
            .entries
            .get(key)
            .filter(|e| e.version == now.version && e.closures == now.closures)?;
        self.hits.inc();
        T::from_answer(entry.answer.clone())
    }

    /// The answer of `key` as it was computed, with its own watermark, when the closures of
    /// `now` are those it was computed on and it is at most `query.previous_answer_max_age_ms`
    /// old: what a request is given while another computes the new answer.
    pub fn previous<T: Cacheable>(&self, key: &AnswerKey, now: &Look) -> Option<T> {
        let entry = self.entries.get(key).filter(|e| {
            e.closures == now.closures && e.computed_at.elapsed() <= self.previous_max_age
        })?;
        self.previous.inc();
        T::from_answer(entry.answer.clone())
    }

    /// Counts a request that computes its answer.
    pub fn count_computed(&self) {
        self.misses.inc();
    }

    /// Keeps `answer` of `key`, computed on what `basis` shows.
    pub fn insert<T: Cacheable>(&self, key: AnswerKey, basis: &Look, answer: &T) {
        let weight = (key.request.len() + answer.encoded_len()) as u64 + ENTRY_OVERHEAD;
        let entry = Entry {
            closures: basis.closures.clone(),
            version: basis.version,
            answer: answer.clone().into_answer(),
            computed_at: Instant::now(),
            weight,
        };
        self.entries.insert(key, Arc::new(entry));
    }
}
