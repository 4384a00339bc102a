//! The query service's one error type, mapped once to a gRPC status.

use sightline_kit::ServiceErrorCode;

/// What went wrong serving a call, or starting the service.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No bearer token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token may not read this site or tenant.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request names something invalid; the message says what.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist (admin tokens only: tenants get PermissionDenied).
    #[error("{0}")]
    NotFound(String),
    /// The token is over its rate.
    #[error("rate limit of this read token exceeded, retry later")]
    RateLimited,
    /// A SQL query ran past its deadline.
    #[error("the query ran longer than {0} ms")]
    Deadline(u64),
    /// The serving database failed.
    #[error("database: {0}")]
    Database(#[from] sightline_db::DbError),
    /// The lake failed.
    #[error("lake: {0}")]
    Lake(String),
    /// Stored data could not be read (a corrupt sketch); a bug or corruption, not the caller's.
    #[error("{0}")]
    Internal(String),
    /// A listener or server failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Database(e.into())
    }
}

impl QueryError {
    /// The kind of error, as a client should act on it.
    pub fn code(&self) -> ServiceErrorCode {
        match self {
            Self::Unauthenticated(_) => ServiceErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ServiceErrorCode::PermissionDenied,
            Self::InvalidArgument(_) => ServiceErrorCode::BadRequest,
            Self::NotFound(_) => ServiceErrorCode::NotFound,
            Self::RateLimited | Self::Deadline(_) => ServiceErrorCode::RateLimited,
            Self::Database(_) | Self::Lake(_) => ServiceErrorCode::Unavailable,
            Self::Internal(_) | Self::Io(_) => ServiceErrorCode::Internal,
        }
    }

    /// The gRPC code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            // A deadline is not a rate: gRPC has its own code for it.
            Self::Deadline(_) => tonic::Code::DeadlineExceeded,
            other => other.code().grpc_code(),
        }
    }

    /// A short name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Deadline(_) => "deadline",
            Self::Database(_) => "database",
            Self::Lake(_) => "lake",
            Self::Internal(_) | Self::Io(_) => "internal",
        }
    }
}

impl From<QueryError> for tonic::Status {
    fn from(e: QueryError) -> Self {
        match &e {
            // Details of infrastructure failures go to the log, not to callers.
            QueryError::Database(_) | QueryError::Lake(_) | QueryError::Io(_) => {
                tracing::warn!(error = %e, "query failed");
                tonic::Status::new(
                    e.grpc_code(),
                    "the serving store is unavailable, retry later",
                )
            }
            QueryError::Internal(_) => {
                tracing::error!(error = %e, "query failed");
                tonic::Status::new(e.grpc_code(), "internal error")
            }
            _ => tonic::Status::new(e.grpc_code(), e.to_string()),
        }
    }
}
