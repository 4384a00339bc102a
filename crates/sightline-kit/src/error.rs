//! The small set of error codes every Sightline service answers with, mapped once to both HTTP
//! and gRPC so the two front doors never disagree.

/// A service error's kind, as a client should act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorCode {
    /// The request is malformed or names something invalid; do not retry as is.
    BadRequest,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials, but not for this resource.
    PermissionDenied,
    /// The thing asked for does not exist.
    NotFound,
    /// The request is over a size limit.
    PayloadTooLarge,
    /// The body's encoding is not supported.
    UnsupportedMediaType,
    /// Over a rate; retry later.
    RateLimited,
    /// A dependency is down or too slow; retry later.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ServiceErrorCode {
    /// The HTTP status.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::BadRequest | Self::UnsupportedMediaType => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::PayloadTooLarge | Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }
}
