//! Alert rules over the pipeline's [`Snapshot`], with their state in PostgreSQL so that a
//! restart neither forgets a firing alert nor pages for it again.
//!
//! Each rule yields samples (one per instance: the freshness lag is one, the rejected ratio
//! one per pipeline). An instance whose value is above the threshold turns `pending`, then
//! `firing` once it stayed there for the rule's `for_secs`; when it is no longer above, a firing
//! instance turns `resolved`. A post goes to the webhook when an instance fires and when it
//! resolves, each once: the state row records that the firing post was delivered
//! (`notified_at`) and a resolved row is deleted once its post was. A post that fails is tried
//! again at the next evaluation. Delivery is at least once: a crash between a post and the
//! commit posts again (receivers dedupe on `fingerprint` and `startsAt`).
//!
//! One process evaluates at a time (an advisory lock), so replicas do not page twice.

mod state;
pub mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::{info, warn};

pub use state::{Instance, State};
use webhook::Webhook;

use crate::{
    config::{AlertKind, AlertRule},
    metrics::{AlertLabels, EtlMetrics, NotificationLabels},
    probe::Snapshot,
};

/// Held while evaluating: `"alertevl"` in ASCII.
const EVALUATE_LOCK: i64 = 0x616c_6572_7465_766c;

/// Labels that tell a rule's instances apart.
pub type Labels = BTreeMap<String, String>;

/// One instance's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The instance's labels (empty for a rule with one instance).
    pub labels: Labels,
    /// The measured value.
    pub value: f64,
}

/// The samples of `rule` in `snapshot`; `None` when it cannot be measured now (broker
/// unreachable, no watermark yet): its instances then stay as they are.
pub fn samples(rule: &AlertRule, snapshot: &Snapshot, daily: (&str, &str)) -> Option<Vec<Sample>> {
    let one = |value: f64| {
        vec![Sample {
            labels: Labels::new(),
            value,
        }]
    };
    match rule.kind {
        AlertKind::DailyRunAge => Some(vec![Sample {
            labels: Labels::from([
                ("pipeline".to_string(), daily.0.to_string()),
                ("job".to_string(), daily.1.to_string()),
            ]),
            value: snapshot.daily_run_age_secs(),
        }]),
        AlertKind::FreshnessLag => snapshot.freshness_lag_secs().map(one),
        AlertKind::DeadLetterDepth => snapshot
            .depths
            .as_ref()
            .and_then(|d| d.dead_letter)
            .map(|n| one(f64::from(n))),
        AlertKind::RejectedRatio => Some(
            snapshot
                .rejected_ratios()
                .into_iter()
                .map(|(pipeline, value)| Sample {
                    labels: Labels::from([("pipeline".to_string(), pipeline)]),
                    value,
                })
                .collect(),
        ),
    }
}

/// The instance's next state, given whether its value is above the threshold now.
pub fn advance(
    current: Option<Instance>,
    sample: Option<&Sample>,
    rule: Option<&AlertRule>,
    now: DateTime<Utc>,
) -> Option<Instance> {
    let breached = match (sample, rule) {
        (Some(s), Some(r)) => s.value > r.threshold,
        _ => false,
    };
    let value = sample.map(|s| s.value);
    let due = |since: DateTime<Utc>| {
        rule.is_some_and(|r| (now - since).to_std().unwrap_or_default() >= r.for_duration())
    };
    match (current, breached) {
        (None, false) => None,
        (None, true) => {
            let mut i = Instance {
                state: State::Pending,
                active_since: now,
                fired_at: None,
                resolved_at: None,
                last_value: value.unwrap_or_default(),
                notified_at: None,
            };
            if due(now) {
                i.state = State::Firing;
                i.fired_at = Some(now);
            }
            Some(i)
        }
        (Some(mut i), true) => {
            i.last_value = value.unwrap_or(i.last_value);
            match i.state {
                State::Pending if due(i.active_since) => {
                    i.state = State::Firing;
                    i.fired_at = Some(now);
                }
                State::Pending | State::Firing => {}
                // Breached again before the resolution went out: still the same page.
                State::Resolved => {
                    i.state = State::Firing;
                    i.resolved_at = None;
                }
            }
            Some(i)
        }
        (Some(mut i), false) => match i.state {
            State::Pending => None,
            State::Firing => {
                i.state = State::Resolved;
                i.resolved_at = Some(now);
                Some(i)
            }
            State::Resolved => Some(i),
        },
    }
}

/// The canonical form of labels, the instance's key.
pub fn fingerprint(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

/// Evaluates the rules and posts to the webhook.
pub struct Alerter {
    pool: PgPool,
    rules: BTreeMap<String, AlertRule>,
    webhook: Option<Webhook>,
    metrics: EtlMetrics,
}

/// A stored instance with its identity.
struct Keyed {
    rule: String,
    labels: Labels,
    instance: Option<Instance>,
    changed: bool,
}

impl Alerter {
    /// Alerts for the enabled `rules`, posted to `webhook` when there is one.
    pub fn new(
        pool: PgPool,
        rules: &BTreeMap<String, AlertRule>,
        webhook: Option<Webhook>,
        metrics: EtlMetrics,
    ) -> Self {
        let rules = rules
            .iter()
            .filter(|(_, r)| r.enabled)
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        Self {
            pool,
            rules,
            webhook,
            metrics,
        }
    }

    /// One evaluation of every rule against `snapshot`. `daily` is the watched job.
    pub async fn evaluate(&self, snapshot: &Snapshot, daily: (&str, &str)) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(EVALUATE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(());
        }
        let mut stored: BTreeMap<(String, String), (Labels, Instance)> = state::load(&mut tx)
            .await?
            .into_iter()
            .map(|(rule, labels, i)| ((rule, fingerprint(&labels)), (labels, i)))
            .collect();
        let now = snapshot.now;
        let mut work = Vec::new();
        for (name, rule) in &self.rules {
            let Some(samples) = samples(rule, snapshot, daily) else {
                continue; // unknown now: the stored instances stay as they are
            };
            for sample in samples {
                let key = (name.clone(), fingerprint(&sample.labels));
                let current = stored.remove(&key).map(|(_, i)| i);
                let next = advance(current.clone(), Some(&sample), Some(rule), now);
                work.push(Keyed {
                    rule: name.clone(),
                    changed: next != current,
                    labels: sample.labels,
                    instance: next,
                });
            }
            let gone: Vec<_> = stored.keys().filter(|(r, _)| r == name).cloned().collect();
            for key in gone {
                if let Some((labels, current)) = stored.remove(&key) {
                    let next = advance(Some(current.clone()), None, Some(rule), now);
                    work.push(Keyed {
                        rule: key.0,
                        changed: next.as_ref() != Some(&current),
                        labels,
                        instance: next,
                    });
                }
            }
        }
        // Rules unknown now keep their instances; rules removed from the configuration resolve.
        for ((rule, _), (labels, current)) in stored {
            let next = if self.rules.contains_key(&rule) {
                Some(current.clone())
            } else {
                advance(Some(current.clone()), None, None, now)
            };
            work.push(Keyed {
                changed: next.as_ref() != Some(&current),
                rule,
                labels,
                instance: next,
            });
        }

        let mut firing: BTreeMap<&str, i64> = self.rules.keys().map(|r| (r.as_str(), 0)).collect();
        for mut item in work {
            let fp = fingerprint(&item.labels);
            if let Some(i) = item.instance.as_mut() {
                item.changed |= self.notify(&item.rule, &item.labels, i, now).await;
            }
            match &item.instance {
                Some(i) if i.state == State::Resolved && i.notified_at.is_none() => {
                    // Resolved after its resolution went out, or never paged: done.
                    state::delete(&mut tx, &item.rule, &fp).await?;
                }
                Some(i) if item.changed => {
                    state::upsert(&mut tx, &item.rule, &fp, &item.labels, i).await?;
                }
                Some(_) => {}
                None => state::delete(&mut tx, &item.rule, &fp).await?,
            }
            if let Some(i) = &item.instance
                && i.state == State::Firing
                && let Some(n) = firing.get_mut(item.rule.as_str())
            {
                *n = 1;
            }
        }
        tx.commit().await?;
        for (rule, value) in firing {
            self.metrics
                .alert_firing
                .get_or_create(&AlertLabels {
                    alertname: rule.to_string(),
                })
                .set(value);
        }
        Ok(())
    }

    /// Posts what `instance` owes the receiver; true when it changed the instance. A resolved
    /// instance whose resolution went out has `notified_at` cleared.
    async fn notify(
        &self,
        rule_name: &str,
        labels: &Labels,
        instance: &mut Instance,
        now: DateTime<Utc>,
    ) -> bool {
        let status = match (instance.state, instance.notified_at) {
            (State::Firing, None) => "firing",
            (State::Resolved, Some(_)) => "resolved",
            _ => return false,
        };
        let rule = self.rules.get(rule_name);
        let payload = webhook::payload(rule_name, rule, labels, instance, status);
        let sent = match &self.webhook {
            None => {
                info!(alert = rule_name, status, labels = ?labels, value = instance.last_value, "alert (no webhook configured)");
                true
            }
            Some(w) => match w.post(&payload).await {
                Ok(()) => true,
                Err(error) => {
                    warn!(alert = rule_name, status, %error, "alert webhook failed, retrying at the next evaluation");
                    false
                }
            },
        };
        self.metrics
            .notifications
            .get_or_create(&NotificationLabels {
                status,
                outcome: if sent { "sent" } else { "failed" },
            })
            .inc();
        if !sent {
            return false;
        }
        instance.notified_at = match status {
            "firing" => Some(now),
            _ => None,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn rule(for_secs: u64) -> AlertRule {
        AlertRule {
            kind: AlertKind::FreshnessLag,
            threshold: 10.0,
            for_secs,
            severity: "page".into(),
            summary: "s".into(),
            enabled: true,
        }
    }

    fn sample(value: f64) -> Sample {
        Sample {
            labels: Labels::new(),
            value,
        }
    }

    #[test]
    fn pending_fires_after_its_duration_and_resolves_when_below() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let r = rule(60);
        let i = advance(None, Some(&sample(11.0)), Some(&r), t0).unwrap();
        assert_eq!(i.state, State::Pending);
        let i = advance(
            Some(i),
            Some(&sample(12.0)),
            Some(&r),
            t0 + Duration::seconds(30),
        )
        .unwrap();
        assert_eq!(i.state, State::Pending);
        let t1 = t0 + Duration::seconds(60);
        let i = advance(Some(i), Some(&sample(12.0)), Some(&r), t1).unwrap();
        assert_eq!(
            (i.state, i.fired_at, i.active_since),
            (State::Firing, Some(t1), t0)
        );
        let i = advance(Some(i), Some(&sample(3.0)), Some(&r), t1).unwrap();
        assert_eq!(i.state, State::Resolved);
        // A pending instance that recovers simply goes away.
        let p = advance(None, Some(&sample(11.0)), Some(&r), t0).unwrap();
        assert_eq!(advance(Some(p), Some(&sample(1.0)), Some(&r), t1), None);
    }

    #[test]
    fn zero_duration_fires_at_once_and_rebreach_before_resolution_is_the_same_page() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let r = rule(0);
        let mut i = advance(None, Some(&sample(11.0)), Some(&r), t0).unwrap();
        assert_eq!(i.state, State::Firing);
        i.notified_at = Some(t0);
        let resolved = advance(Some(i), Some(&sample(0.0)), Some(&r), t0).unwrap();
        let again = advance(Some(resolved), Some(&sample(20.0)), Some(&r), t0).unwrap();
        assert_eq!(again.state, State::Firing);
        assert_eq!(again.notified_at, Some(t0), "no second firing page");
        // A value at the threshold is not above it.
        assert_eq!(advance(None, Some(&sample(10.0)), Some(&r), t0), None);
    }
}
