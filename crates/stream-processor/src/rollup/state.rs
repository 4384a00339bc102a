//! Per-visitor state the rollup group keeps between events, persisted with every flush.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sightline_event::VisitorSession;

use super::fact::Attrs;

/// messageIds remembered per visitor: a retried event (another batch, same messageId) within
/// a visitor's latest events is recognised and not counted again.
pub const RECENT_IDS: usize = 64;

/// One visitor's state: the open visit and the latest event ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitorState {
    /// The visitor's current (or last) visit.
    pub session: Option<VisitorSession>,
    /// Attributes of that visit, from its first event.
    pub attrs: Attrs,
    /// Hashes of the latest messageIds, oldest first.
    pub recent: VecDeque<u64>,
    /// Time of the latest event, microseconds since the Unix epoch (any call type).
    pub last_us: i64,
}

impl VisitorState {
    /// Records `message_hash`; `false` when it was already there (a duplicate event).
    pub fn remember(&mut self, message_hash: u64) -> bool {
        if self.recent.contains(&message_hash) {
            return false;
        }
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(message_hash);
        true
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The map key of a visitor: a 128-bit hash of tenant, site and visitor id (collisions are
/// astronomically unlikely), cheaper to hash and compare than the strings.
pub fn visitor_hash(tenant_id: i64, site_id: i64, visitor_id: &str) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&tenant_id.to_le_bytes());
    hasher.update(&site_id.to_le_bytes());
    hasher.update(visitor_id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// A visitor with its identity, as cached and stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Visitor {
    pub tenant_id: i64,
    pub site_id: i64,
    pub visitor_id: String,
    pub state: VisitorState,
}

/// [`Visitor`] borrowed, as the log encodes it (the same fields in the same order).
#[derive(Serialize)]
struct LoggedVisitor<'a> {
    tenant_id: i64,
    site_id: i64,
    visitor_id: &'a str,
    state: &'a VisitorState,
}

/// zstd level of the visitor log: the fastest, as it runs on every flush.
const LOG_ZSTD_LEVEL: i32 = 1;

/// One entry of a partition's visitor log (`migrations/0010_rollup_visitor_log.sql`): the
/// states a flush changed, postcard then zstd.
pub fn encode_log(visitors: &[&Visitor]) -> Vec<u8> {
    let logged: Vec<LoggedVisitor<'_>> = visitors
        .iter()
        .map(|v| LoggedVisitor {
            tenant_id: v.tenant_id,
            site_id: v.site_id,
            visitor_id: &v.visitor_id,
            state: &v.state,
        })
        .collect();
    // Serialising plain data into a Vec, and compressing a slice in memory, cannot fail.
    let raw = postcard::to_allocvec(&logged).unwrap_or_default();
    zstd::bulk::compress(&raw, LOG_ZSTD_LEVEL).unwrap_or_default()
}

/// Reads an entry of the visitor log.
pub fn decode_log(bytes: &[u8]) -> Result<Vec<Visitor>, String> {
    let raw = zstd::decode_all(bytes).map_err(|e| format!("not zstd: {e}"))?;
    postcard::from_bytes(&raw).map_err(|e| format!("not a visitor log entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_ids_only() {
        let mut state = VisitorState::default();
        assert!(state.remember(1));
        assert!(!state.remember(1));
        for h in 2..=(RECENT_IDS as u64 + 1) {
            assert!(state.remember(h));
        }
        assert_eq!(state.recent.len(), RECENT_IDS);
        assert!(state.remember(1), "the oldest id was forgotten");
    }

    #[test]
    fn log_entries_round_trip() {
        let mut state = VisitorState {
            last_us: 42,
            ..Default::default()
        };
        state.remember(7);
        state.attrs.browser = "Firefox".into();
        let visitors = [
            Visitor {
                tenant_id: 1,
                site_id: 2,
                visitor_id: "v-1".into(),
                state: state.clone(),
            },
            Visitor {
                tenant_id: 1,
                site_id: 3,
                visitor_id: "v-2".into(),
                state: VisitorState::default(),
            },
        ];
        let encoded = encode_log(&visitors.iter().collect::<Vec<_>>());
        assert_eq!(decode_log(&encoded).unwrap(), visitors);
        assert!(decode_log(b"not a log").is_err());
    }

    #[test]
    fn state_round_trips() {
        let mut state = VisitorState {
            last_us: 42,
            ..Default::default()
        };
        state.remember(7);
        state.attrs.source = "Google".into();
        assert_eq!(VisitorState::decode(&state.encode()).unwrap(), state);
    }
}
