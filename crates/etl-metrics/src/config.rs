//! The etl-metrics configuration: the `[etl_metrics]` section and the document it runs on.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;
use sightline_broker::BrokerConfig;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigError, ConfigLoader, Problems, TelemetryConfig, config::Secret};

/// Embedded defaults of the `[etl_metrics]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// Everything etl-metrics runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`: the ledger, the star schema, the speed layer's watermarks.
    pub database: DatabaseConfig,
    /// `[broker]`: the queues whose depths are measured.
    pub broker: BrokerConfig,
    /// `[etl_metrics]`.
    pub etl_metrics: EtlMetricsConfig,
}

impl Config {
    /// A loader with every embedded default etl-metrics needs.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::new()
            .defaults(sightline_kit::telemetry::DEFAULTS)
            .defaults(sightline_db::DEFAULTS)
            .defaults(sightline_broker::config::DEFAULTS)
            .defaults(DEFAULTS)
            .list("broker.consumer_groups")
    }

    /// Loads and validates.
    pub fn load(loader: &ConfigLoader) -> Result<Self, ConfigError> {
        let config: Self = loader.load()?;
        config.validate().into_result()?;
        Ok(config)
    }

    /// Every problem in every section.
    pub fn validate(&self) -> Problems {
        let mut p = self.telemetry.validate();
        p.extend(self.database.validate());
        p.extend(self.broker.validate());
        p.extend(self.etl_metrics.validate(&self.broker));
        p
    }
}

/// `[etl_metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtlMetricsConfig {
    /// Address of the gRPC server (ledger, health, reflection).
    pub grpc_listen: String,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    pub admin_listen: String,
    /// Interval of the star-schema loader; 0 turns it off.
    pub load_interval_ms: u64,
    /// Interval of measuring and alert evaluation.
    pub evaluate_interval_ms: u64,
    /// Pipeline of the daily job watched by `daily_run_age` rules.
    pub daily_pipeline: String,
    /// The daily job's name.
    pub daily_job: String,
    /// How far back the rejected-row ratio looks.
    pub rejected_ratio_window_secs: u64,
    /// The consumer group whose partitions define freshness.
    pub freshness_group: String,
    /// `[etl_metrics.webhook]`.
    pub webhook: WebhookConfig,
    /// `[etl_metrics.alerts.<name>]`: the rules, by alert name.
    pub alerts: BTreeMap<String, AlertRule>,
}

/// `[etl_metrics.webhook]`: where alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http(s)://` URL receiving the JSON posts (masked in logs: such URLs often hold a
    /// token); empty turns posting off.
    pub url: Secret,
    /// Time for the receiver to answer.
    pub timeout_ms: u64,
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Seconds since the last successful daily run.
    DailyRunAge,
    /// Seconds the speed layer is behind.
    FreshnessLag,
    /// Messages in the dead-letter queue.
    DeadLetterDepth,
    /// Rejected rows over rows read, per pipeline.
    RejectedRatio,
}

/// `[etl_metrics.alerts.<name>]`: one alert rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// What it measures.
    pub kind: AlertKind,
    /// Fires when the value is above this.
    pub threshold: f64,
    /// ...for at least this long.
    pub for_secs: u64,
    /// The `severity` label (routing in the receiver: `page`, `ticket`, ...).
    pub severity: String,
    /// The `summary` annotation.
    pub summary: String,
    /// Whether the rule is evaluated.
    pub enabled: bool,
}

impl AlertRule {
    /// The for-duration.
    pub fn for_duration(&self) -> Duration {
        Duration::from_secs(self.for_secs)
    }
}

impl EtlMetricsConfig {
    /// The loader's interval, `None` when off.
    pub fn load_interval(&self) -> Option<Duration> {
        (self.load_interval_ms > 0).then(|| Duration::from_millis(self.load_interval_ms))
    }

    /// The evaluation interval.
    pub fn evaluate_interval(&self) -> Duration {
        Duration::from_millis(self.evaluate_interval_ms)
    }

    /// Every problem with this section (`broker`: the freshness group must have queues).
    pub fn validate(&self, broker: &BrokerConfig) -> Problems {
        let mut p = Problems::new();
        for (key, value) in [
            ("etl_metrics.grpc_listen", &self.grpc_listen),
            ("etl_metrics.admin_listen", &self.admin_listen),
        ] {
            p.check(
                value.parse::<SocketAddr>().is_ok(),
                key,
                format!("`{value}` is not a socket address such as 0.0.0.0:50052"),
            );
        }
        p.check(
            self.evaluate_interval_ms > 0,
            "etl_metrics.evaluate_interval_ms",
            "must be positive",
        );
        p.check(
            !self.daily_pipeline.is_empty() && !self.daily_job.is_empty(),
            "etl_metrics.daily_job",
            "daily_pipeline and daily_job must not be empty",
        );
        p.check(
            self.rejected_ratio_window_secs > 0,
            "etl_metrics.rejected_ratio_window_secs",
            "must be positive",
        );
        p.check(
            broker.consumer_groups.contains(&self.freshness_group),
            "etl_metrics.freshness_group",
            format!(
                "`{}` is not one of broker.consumer_groups",
                self.freshness_group
            ),
        );
        let url = self.webhook.url.expose();
        p.check(
            url.is_empty() || url.starts_with("http://") || url.starts_with("https://"),
            "etl_metrics.webhook.url",
            "must be an http:// or https:// URL, or empty",
        );
        p.check(
            self.webhook.timeout_ms > 0,
            "etl_metrics.webhook.timeout_ms",
            "must be positive",
        );
        for (name, rule) in &self.alerts {
            let key = format!("etl_metrics.alerts.{name}");
            p.check(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                &key,
                "alert names are ASCII letters, digits and '_'",
            );
            p.check(
                rule.threshold.is_finite() && rule.threshold >= 0.0,
                &format!("{key}.threshold"),
                "must be a finite number >= 0",
            );
            p.check(
                rule.kind != AlertKind::RejectedRatio || rule.threshold < 1.0,
                &format!("{key}.threshold"),
                "a ratio threshold must be below 1",
            );
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&Config::loader().env_map(env))
    }

    #[test]
    fn defaults_are_valid_and_hold_the_four_rules() {
        let config = load(&[]).unwrap();
        let c = &config.etl_metrics;
        assert_eq!(c.grpc_listen, "0.0.0.0:50052");
        assert_eq!(c.admin_listen, "0.0.0.0:9105");
        let kinds: Vec<_> = c.alerts.values().map(|r| r.kind).collect();
        for kind in [
            AlertKind::DailyRunAge,
            AlertKind::FreshnessLag,
            AlertKind::DeadLetterDepth,
            AlertKind::RejectedRatio,
        ] {
            assert!(kinds.contains(&kind), "{kind:?}");
        }
        assert_eq!(c.alerts["freshness_lag"].threshold, 3600.0);
        assert_eq!(c.alerts["daily_run_missing"].threshold, 26.0 * 3600.0);
    }

    #[test]
    fn rules_are_changed_by_environment_and_every_problem_is_reported() {
        let config = load(&[(
            "SIGHTLINE__ETL_METRICS__ALERTS__FRESHNESS_LAG__THRESHOLD",
            "1800",
        )])
        .unwrap();
        assert_eq!(config.etl_metrics.alerts["freshness_lag"].threshold, 1800.0);

        let error = load(&[
            ("SIGHTLINE__ETL_METRICS__GRPC_LISTEN", "nowhere"),
            ("SIGHTLINE__ETL_METRICS__WEBHOOK__URL", "ftp://x"),
            (
                "SIGHTLINE__ETL_METRICS__ALERTS__REJECTED_RATIO__THRESHOLD",
                "2",
            ),
            ("SIGHTLINE__ETL_METRICS__FRESHNESS_GROUP", "sessions"),
        ])
        .unwrap_err()
        .to_string();
        for expected in [
            "etl_metrics.grpc_listen",
            "etl_metrics.webhook.url",
            "alerts.rejected_ratio.threshold",
            "`sessions`",
        ] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn unknown_keys_in_a_rule_are_refused() {
        let error = load(&[(
            "SIGHTLINE__ETL_METRICS__ALERTS__DEAD_LETTERS__TRESHOLD",
            "1",
        )])
        .unwrap_err()
        .to_string();
        assert!(error.contains("treshold"), "{error}");
    }
}
