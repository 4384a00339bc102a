//! The query service's configuration: the `[query]` section and the document it runs on.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigError, ConfigLoader, Problems, TelemetryConfig};
use sightline_lake::LakeConfig;

/// Embedded defaults of the `[query]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// Everything the query service runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`: the serving database with the rollups and the read tokens.
    pub database: DatabaseConfig,
    /// `[lake]`: what SQL queries read.
    pub lake: LakeConfig,
    /// `[query]`.
    pub query: QueryConfig,
}

impl Config {
    /// A loader with every embedded default the query service needs.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::new()
            .defaults(sightline_kit::telemetry::DEFAULTS)
            .defaults(sightline_db::DEFAULTS)
            .defaults(sightline_lake::config::DEFAULTS)
            .defaults(DEFAULTS)
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
        p.extend(self.lake.validate());
        p.extend(self.query.validate());
        p
    }
}

/// `[query]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Address of the gRPC server.
    pub listen: String,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    pub admin_listen: String,
    /// How long token lookups are cached (a revoked token keeps working this long).
    pub token_cache_ttl_ms: u64,
    /// Entries of the token and site caches.
    pub cache_capacity: usize,
    /// Requests a second per read token.
    pub rate_limit_per_sec: u32,
    /// Requests a token may make at once above its rate.
    pub rate_limit_burst: u32,
    /// Longest range of a minute time series, hours.
    pub max_minute_range_hours: u32,
    /// Longest range of an hour time series, days.
    pub max_hour_range_days: u32,
    /// Longest range of day, week and month series, breakdowns and aggregates, days.
    pub max_range_days: u32,
    /// Largest breakdown page.
    pub max_page_size: u32,
    /// Memory for answers kept while the site's rollups are unchanged, MiB; 0 turns it off.
    pub answer_cache_mib: u64,
    /// While one call computes an answer anew, the others for it are given the previous one
    /// (with its own watermark) when it is at most this old, ms; 0: they wait for the new one.
    pub previous_answer_max_age_ms: u64,
    /// Memory for the sums of rows that no longer change (days the batch layer closed, hours
    /// that ended a while ago), kept while their writers leave them alone, MiB; 0 turns it off.
    pub closed_sums_cache_mib: u64,
    /// Time in-flight calls get after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// `[query.sql]`.
    pub sql: SqlConfig,
}

/// `[query.sql]`: limits of SQL over the lake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Deadline of a query, from planning to its last page.
    pub timeout_ms: u64,
    /// Rows a query may return.
    pub max_rows: u64,
    /// Rows per streamed page.
    pub page_rows: u32,
    /// How long a tenant's object listing and table definitions are reused: objects written to
    /// the lake are seen by SQL up to this much later. 0 lists on every query.
    pub listing_ttl_ms: u64,
}

impl SqlConfig {
    /// How long listings and table definitions are reused.
    pub fn listing_ttl(&self) -> Duration {
        Duration::from_millis(self.listing_ttl_ms)
    }
}

impl QueryConfig {
    /// How long token lookups are cached.
    pub fn token_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.token_cache_ttl_ms)
    }

    /// How recent a previous answer given during a computation must be.
    pub fn previous_answer_max_age(&self) -> Duration {
        Duration::from_millis(self.previous_answer_max_age_ms)
    }

    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        for (key, value, example) in [
            ("query.listen", &self.listen, "0.0.0.0:50051"),
            ("query.admin_listen", &self.admin_listen, "0.0.0.0:9104"),
        ] {
            p.check(
                value.parse::<SocketAddr>().is_ok(),
                key,
                format!("`{value}` is not a socket address such as {example}"),
            );
        }
        p.check(
            self.token_cache_ttl_ms <= 300_000,
            "query.token_cache_ttl_ms",
            "must be at most 300000: revoked tokens keep working this long",
        );
        p.check(
            self.cache_capacity > 0,
            "query.cache_capacity",
            "must be positive",
        );
        p.check(
            self.rate_limit_per_sec > 0 && self.rate_limit_burst > 0,
            "query.rate_limit_per_sec",
            "the rate and query.rate_limit_burst must be positive",
        );
        p.check(
            (1..=24 * 31).contains(&self.max_minute_range_hours),
            "query.max_minute_range_hours",
            "must be between 1 and 744",
        );
        p.check(
            (1..=366).contains(&self.max_hour_range_days),
            "query.max_hour_range_days",
            "must be between 1 and 366",
        );
        p.check(
            (1..=3660).contains(&self.max_range_days),
            "query.max_range_days",
            "must be between 1 and 3660",
        );
        p.check(
            (1..=100_000).contains(&self.max_page_size),
            "query.max_page_size",
            "must be between 1 and 100000",
        );
        p.check(
            self.answer_cache_mib <= 1 << 20,
            "query.answer_cache_mib",
            "must be at most 1048576 (1 TiB)",
        );
        p.check(
            self.closed_sums_cache_mib <= 1 << 20,
            "query.closed_sums_cache_mib",
            "must be at most 1048576 (1 TiB)",
        );
        p.check(
            self.sql.timeout_ms > 0,
            "query.sql.timeout_ms",
            "must be positive",
        );
        p.check(
            self.sql.max_rows > 0 && self.sql.page_rows > 0,
            "query.sql.max_rows",
            "the row limit and query.sql.page_rows must be positive",
        );
        p.check(
            self.sql.listing_ttl_ms <= 300_000,
            "query.sql.listing_ttl_ms",
            "must be at most 300000: new lake objects stay unseen this long",
        );
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
    fn defaults_are_valid() {
        let config = load(&[]).unwrap();
        assert_eq!(config.query.listen, "0.0.0.0:50051");
        assert_eq!(config.query.admin_listen, "0.0.0.0:9104");
    }

    #[test]
    fn every_problem_is_reported() {
        let error = load(&[
            ("SIGHTLINE__QUERY__LISTEN", "nowhere"),
            ("SIGHTLINE__QUERY__MAX_RANGE_DAYS", "0"),
            ("SIGHTLINE__QUERY__SQL__TIMEOUT_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        for expected in [
            "query.listen",
            "query.max_range_days",
            "query.sql.timeout_ms",
        ] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = load(&[("SIGHTLINE__QUERY__LISTN", "0.0.0.0:1")]).unwrap_err();
        assert!(error.to_string().contains("listn"), "{error}");
    }
}
