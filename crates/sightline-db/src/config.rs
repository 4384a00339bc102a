//! `[database]`.

use serde::Deserialize;
use sightline_kit::{Problems, config::Secret};

/// Embedded defaults of the `[database]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// `[database]`: where the serving database is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database` (masked in logs).
    pub url: Secret,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a connection from the pool.
    pub connect_timeout_ms: u64,
}

impl DatabaseConfig {
    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        let url = self.url.expose();
        p.check(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "database.url",
            "must be a postgres:// URL",
        );
        p.check(
            (1..=1000).contains(&self.max_connections),
            "database.max_connections",
            "must be between 1 and 1000",
        );
        p.check(
            self.connect_timeout_ms > 0,
            "database.connect_timeout_ms",
            "must be positive",
        );
        p
    }
}
