//! The body of a successful answer: what happened to each event of the request.

use serde::Serialize;

/// What ingest did with one event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored: the broker confirmed it.
    Accepted,
    /// The same messageId was accepted for this site recently; not stored again.
    Duplicate,
    /// Refused; kept on the invalid route with the reason.
    Rejected,
}

/// One event's result, in the order of the request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// Position in the request (0 for single-event calls).
    pub index: usize,
    /// The event's messageId (assigned by ingest when the client sent none).
    pub message_id: Option<String>,
    /// What happened.
    pub status: Status,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The reason, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answer to a request that was processed.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// False when every event was rejected.
    pub success: bool,
    /// Events accepted.
    pub accepted: usize,
    /// Events answered as duplicates.
    pub duplicates: usize,
    /// Events rejected.
    pub rejected: usize,
    /// Per event.
    pub results: Vec<EventResult>,
}

impl Answer {
    /// Counts the results.
    pub fn new(results: Vec<EventResult>) -> Self {
        let count = |s: Status| results.iter().filter(|r| r.status == s).count();
        let accepted = count(Status::Accepted);
        let duplicates = count(Status::Duplicate);
        let rejected = count(Status::Rejected);
        Self {
            success: results.is_empty() || accepted + duplicates > 0,
            accepted,
            duplicates,
            rejected,
            results,
        }
    }
}
