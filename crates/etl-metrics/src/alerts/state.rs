//! The `alert_state` table (`migrations/0005_pipeline_ledger.sql`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Labels;

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Above the threshold, for less than the rule's duration.
    Pending,
    /// Firing.
    Firing,
    /// No longer above; its resolution is still to be posted.
    Resolved,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Pending, Self::Firing, Self::Resolved]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One alert instance's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Where it is.
    pub state: State,
    /// When the value went above the threshold (the webhook's `startsAt`).
    pub active_since: DateTime<Utc>,
    /// When it started firing.
    pub fired_at: Option<DateTime<Utc>>,
    /// When it resolved (the webhook's `endsAt`).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last value measured above the threshold (or the one that resolved it).
    pub last_value: f64,
    /// When the firing post was delivered; `None` before, and after the resolution's.
    pub notified_at: Option<DateTime<Utc>>,
}

type Row = (
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    f64,
    Option<DateTime<Utc>>,
);

/// Every stored instance: (rule, labels, state).
pub(super) async fn load(c: &mut PgConnection) -> sqlx::Result<Vec<(String, Labels, Instance)>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT rule, labels::text, state, active_since, fired_at, resolved_at, last_value, notified_at \
           FROM alert_state ORDER BY rule, fingerprint FOR UPDATE",
    )
    .fetch_all(&mut *c)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(
                rule,
                labels,
                state,
                active_since,
                fired_at,
                resolved_at,
                last_value,
                notified_at,
            )| {
                Some((
                    rule,
                    serde_json::from_str(&labels).ok()?,
                    Instance {
                        state: State::from_name(&state)?,
                        active_since,
                        fired_at,
                        resolved_at,
                        last_value,
                        notified_at,
                    },
                ))
            },
        )
        .collect())
}

pub(super) async fn upsert(
    c: &mut PgConnection,
    rule: &str,
    fingerprint: &str,
    labels: &Labels,
    i: &Instance,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO alert_state (rule, fingerprint, labels, state, active_since, fired_at, \
           resolved_at, last_value, notified_at, updated_at) \
         VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, now()) \
         ON CONFLICT (rule, fingerprint) DO UPDATE SET labels = excluded.labels, \
           state = excluded.state, active_since = excluded.active_since, \
           fired_at = excluded.fired_at, resolved_at = excluded.resolved_at, \
           last_value = excluded.last_value, notified_at = excluded.notified_at, updated_at = now()",
    )
    .bind(rule)
    .bind(fingerprint)
    .bind(serde_json::to_string(labels).unwrap_or_default())
    .bind(i.state.as_str())
    .bind(i.active_since)
    .bind(i.fired_at)
    .bind(i.resolved_at)
    .bind(i.last_value)
    .bind(i.notified_at)
    .execute(&mut *c)
    .await
    .map(|_| ())
}

pub(super) async fn delete(
    c: &mut PgConnection,
    rule: &str,
    fingerprint: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM alert_state WHERE rule = $1 AND fingerprint = $2")
        .bind(rule)
        .bind(fingerprint)
        .execute(&mut *c)
        .await
        .map(|_| ())
}
