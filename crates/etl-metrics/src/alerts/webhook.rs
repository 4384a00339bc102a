//! The webhook: one JSON post per alert transition, in Alertmanager's webhook format (version
//! 4), so receivers written for Alertmanager (PagerDuty, Opsgenie and Slack bridges, ...) take
//! it as is. docs/etl-metrics.md shows a payload.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Instance, Labels};
use crate::config::AlertRule;

/// The receiver name in payloads.
pub const RECEIVER: &str = "sightline-etl-metrics";

/// `endsAt` of an alert still firing (Alertmanager's zero time).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A webhook receiver.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    /// Posts to `url`, each post within `timeout`.
    pub fn new(url: String, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, url })
    }

    /// Posts `payload`; an answer other than 2xx is a failure.
    pub async fn post(&self, payload: &Value) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(payload)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", response.status()))
        }
    }
}

/// FNV-1a, 64 bits: a fingerprint stable across processes and versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The post for `instance` of `rule_name` turning `status` (`firing` or `resolved`). `rule` is
/// `None` when the rule was removed from the configuration.
pub fn payload(
    rule_name: &str,
    rule: Option<&AlertRule>,
    labels: &Labels,
    instance: &Instance,
    status: &str,
) -> Value {
    let mut all = labels.clone();
    all.insert("alertname".into(), rule_name.into());
    all.insert("service".into(), "sightline-etl-metrics".into());
    if let Some(r) = rule {
        all.insert("severity".into(), r.severity.clone());
    }
    let value = instance.last_value;
    let annotations = match rule {
        Some(r) => json!({
            "summary": r.summary,
            "description": format!("{rule_name}: value {value} is above the threshold {}", r.threshold),
            "value": value.to_string(),
            "threshold": r.threshold.to_string(),
        }),
        None => json!({
            "summary": format!("{rule_name} (rule removed from the configuration)"),
            "value": value.to_string(),
        }),
    };
    let ends_at = match (status, instance.resolved_at) {
        ("resolved", Some(t)) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        _ => ZERO_TIME.to_string(),
    };
    let fingerprint = format!(
        "{:016x}",
        fnv1a(format!("{rule_name}\0{}", super::fingerprint(labels)).as_bytes())
    );
    let alert = json!({
        "status": status,
        "labels": all,
        "annotations": annotations,
        "startsAt": instance.active_since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "endsAt": ends_at,
        "generatorURL": "",
        "fingerprint": fingerprint,
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{rule_name}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": RECEIVER,
        "groupLabels": { "alertname": rule_name },
        "commonLabels": all,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    })
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::{alerts::State, config::AlertKind};

    #[test]
    fn payload_is_alertmanager_shaped_with_a_stable_fingerprint() {
        let rule = AlertRule {
            kind: AlertKind::RejectedRatio,
            threshold: 0.01,
            for_secs: 0,
            severity: "ticket".into(),
            summary: "too many rejects".into(),
            enabled: true,
        };
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut instance = Instance {
            state: State::Firing,
            active_since: t0,
            fired_at: Some(t0),
            resolved_at: None,
            last_value: 0.5,
            notified_at: None,
        };
        let labels = Labels::from([("pipeline".to_string(), "batch".to_string())]);
        let firing = payload("rejected_ratio", Some(&rule), &labels, &instance, "firing");
        assert_eq!(firing["version"], "4");
        assert_eq!(firing["status"], "firing");
        let alert = &firing["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "rejected_ratio");
        assert_eq!(alert["labels"]["pipeline"], "batch");
        assert_eq!(alert["labels"]["severity"], "ticket");
        assert_eq!(alert["startsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(alert["endsAt"], ZERO_TIME);

        instance.state = State::Resolved;
        instance.resolved_at = Some(t0 + chrono::Duration::minutes(5));
        let resolved = payload(
            "rejected_ratio",
            Some(&rule),
            &labels,
            &instance,
            "resolved",
        );
        assert_eq!(resolved["alerts"][0]["endsAt"], "2027-01-15T08:05:00.000Z");
        assert_eq!(
            resolved["alerts"][0]["fingerprint"], alert["fingerprint"],
            "one alert, one fingerprint"
        );
    }
}
