//! Recently seen messageIds per site, to answer client retries as duplicates.
//!
//! Two generations of hashes: the current one takes inserts, the previous one still answers
//! lookups; they rotate every half window or when the current one is full. Memory is bounded
//! by the capacity; an id is remembered between half a window and a whole one. This is a
//! courtesy to clients: the consumers' dedupe by event id is what guarantees correct figures.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

const SHARDS: usize = 16;

struct Generations {
    current: HashSet<u128>,
    previous: HashSet<u128>,
    rotated_at: Instant,
}

/// The duplicate detector.
pub struct RecentIds {
    shards: Vec<Mutex<Generations>>,
    half_window: Duration,
    capacity_per_shard: usize,
}

/// The key of a messageId within a site.
pub fn id_key(site_id: i64, message_id: &str) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&site_id.to_le_bytes());
    hasher.update(message_id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(first)
}

impl RecentIds {
    /// Remembers ids for about `window`, at most `capacity` per half window.
    pub fn new(window: Duration, capacity: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Generations {
                    current: HashSet::new(),
                    previous: HashSet::new(),
                    rotated_at: Instant::now(),
                })
            })
            .collect();
        Self {
            shards,
            half_window: window / 2,
            capacity_per_shard: (capacity / SHARDS).max(1),
        }
    }

    fn shard(&self, key: u128) -> &Mutex<Generations> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Ages a shard on every access, so a shard that sees no inserts still forgets.
    fn rotate_if_due(&self, g: &mut Generations) {
        let age = g.rotated_at.elapsed();
        if age >= self.half_window * 2 {
            g.current.clear();
            g.previous.clear();
            g.rotated_at = Instant::now();
        } else if age >= self.half_window || g.current.len() >= self.capacity_per_shard {
            g.previous = std::mem::take(&mut g.current);
            g.rotated_at = Instant::now();
        }
    }

    /// Whether the key was recorded recently.
    pub fn contains(&self, key: u128) -> bool {
        let mut g = self.shard(key).lock();
        self.rotate_if_due(&mut g);
        g.current.contains(&key) || g.previous.contains(&key)
    }

    /// Records keys of events the broker confirmed.
    pub fn insert(&self, key: u128) {
        let mut g = self.shard(key).lock();
        self.rotate_if_due(&mut g);
        g.current.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_site_and_forgets_after_the_window() {
        let ids = RecentIds::new(Duration::from_millis(40), 1000);
        ids.insert(id_key(1, "m"));
        assert!(ids.contains(id_key(1, "m")));
        assert!(!ids.contains(id_key(2, "m")));
        std::thread::sleep(Duration::from_millis(25));
        // Half a window later "m" moved to the previous generation: still known.
        assert!(ids.contains(id_key(1, "m")));
        std::thread::sleep(Duration::from_millis(25));
        // A whole window later it is forgotten, though its shard saw no inserts.
        assert!(!ids.contains(id_key(1, "m")));
    }
}
