//! The batch enricher's errors.

/// What stopped a job, a stage or the service.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A repository of the serving database failed.
    #[error("database: {0}")]
    Db(#[from] sightline_db::DbError),
    /// A query of the batch enricher's own failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The lake could not be read or written.
    #[error("lake: {0}")]
    Lake(#[from] sightline_lake::LakeError),
    /// A DataFusion plan failed.
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow data could not be built.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet could not be read or written.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The enrichment rules could not be loaded.
    #[error("enrichment: {0}")]
    Event(#[from] sightline_event::EventError),
    /// A local file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The job's arguments cannot be run (unknown tenant, reversed range …).
    #[error("{0}")]
    Invalid(String),
    /// A task of the job panicked or was cancelled.
    #[error("task: {0}")]
    Task(String),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(std::io::Error),
}

impl From<tokio::task::JoinError> for BatchError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}
