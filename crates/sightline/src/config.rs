//! The configuration document of the `sightline` command: every section of every service, so
//! one file can configure the whole pipeline and a misspelt section or key is refused.

use serde::Deserialize;
use sightline_broker::BrokerConfig;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigLoader, Problems, TelemetryConfig};

/// The whole document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[broker]`.
    pub broker: BrokerConfig,
    /// `[ingest]`.
    pub ingest: ingest::config::IngestConfig,
}

impl Document {
    /// Every embedded default, then `file`, then the `SIGHTLINE__*` environment.
    pub fn loader(file: Option<std::path::PathBuf>) -> ConfigLoader {
        ingest::Config::loader().file(file)
    }

    /// The sections ingest runs on.
    pub fn ingest(&self) -> ingest::Config {
        ingest::Config {
            telemetry: self.telemetry.clone(),
            database: self.database.clone(),
            broker: self.broker.clone(),
            ingest: self.ingest.clone(),
        }
    }

    /// Problems in the sections the administration commands use.
    pub fn validate_admin(&self) -> Problems {
        let mut p = self.telemetry.validate();
        p.extend(self.database.validate());
        p
    }
}
