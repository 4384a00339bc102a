//! The crate's one error type.

/// Why a lake operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The object does not exist.
    #[error("object {key:?} not found")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },
    /// The key is not a safe relative object key (empty, absolute, `..`, empty segments).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event time that cannot be placed on the calendar.
    #[error("timestamp {micros} µs is out of range")]
    TimestampOutOfRange {
        /// The timestamp, microseconds since the Unix epoch.
        micros: i64,
    },
    /// Building or reading Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding or decoding Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A Parquet file does not have the columns of the lake's schema.
    #[error("unexpected parquet schema: {0}")]
    Schema(String),
    /// A local-folder store failed.
    #[error("local store {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An S3 request failed.
    #[error("s3 {op} {target}: {message}")]
    S3 {
        /// The S3 operation.
        op: &'static str,
        /// The bucket or key concerned.
        target: String,
        /// The SDK error with its full context.
        message: String,
    },
}
