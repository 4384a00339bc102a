//! The configuration document of the `sightline` command: every section of every service, so
//! one file can configure the whole pipeline and a misspelt section or key is refused.

use serde::Deserialize;
use sightline_broker::BrokerConfig;
use sightline_db::DatabaseConfig;
use sightline_kit::{ConfigLoader, Problems, TelemetryConfig};
use sightline_lake::LakeConfig;

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
    /// `[lake]`.
    pub lake: LakeConfig,
    /// `[ingest]`.
    pub ingest: ingest::config::IngestConfig,
    /// `[stream]`.
    pub stream: stream_processor::config::StreamConfig,
    /// `[query]`.
    pub query: query::config::QueryConfig,
    /// `[batch]`.
    pub batch: batch_enricher::config::BatchConfig,
    /// `[etl_metrics]`.
    pub etl_metrics: etl_metrics::config::EtlMetricsConfig,
}

impl Document {
    /// Every embedded default, then `file`, then the `SIGHTLINE__*` environment.
    pub fn loader(file: Option<std::path::PathBuf>) -> ConfigLoader {
        ingest::Config::loader()
            .defaults(sightline_lake::config::DEFAULTS)
            .defaults(stream_processor::config::DEFAULTS)
            .defaults(query::config::DEFAULTS)
            .defaults(batch_enricher::config::DEFAULTS)
            .defaults(etl_metrics::config::DEFAULTS)
            .list("batch.extra_bot_user_agents")
            .list("stream.groups")
            .list("broker.consumer_groups")
            .file(file)
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

    /// The sections the stream processor runs on.
    pub fn stream(&self) -> stream_processor::Config {
        stream_processor::Config {
            telemetry: self.telemetry.clone(),
            database: self.database.clone(),
            broker: self.broker.clone(),
            lake: self.lake.clone(),
            stream: self.stream.clone(),
        }
    }

    /// The sections the batch enricher runs on.
    pub fn batch(&self) -> batch_enricher::Config {
        batch_enricher::Config {
            telemetry: self.telemetry.clone(),
            database: self.database.clone(),
            lake: self.lake.clone(),
            batch: self.batch.clone(),
        }
    }

    /// The sections etl-metrics runs on.
    pub fn etl_metrics(&self) -> etl_metrics::Config {
        etl_metrics::Config {
            telemetry: self.telemetry.clone(),
            database: self.database.clone(),
            broker: self.broker.clone(),
            etl_metrics: self.etl_metrics.clone(),
        }
    }

    /// The sections the query service runs on.
    pub fn query(&self) -> query::Config {
        query::Config {
            telemetry: self.telemetry.clone(),
            database: self.database.clone(),
            lake: self.lake.clone(),
            query: self.query.clone(),
        }
    }

    /// Problems in the sections the administration commands use.
    pub fn validate_admin(&self) -> Problems {
        let mut p = self.telemetry.validate();
        p.extend(self.database.validate());
        p
    }
}
