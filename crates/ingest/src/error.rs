//! Errors: of the service as a whole, and of one request (mapped to HTTP answers).

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;
use sightline_kit::ServiceErrorCode;

/// Why ingest could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A listener could not be used.
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be set up.
    #[error(transparent)]
    Db(#[from] sightline_db::DbError),
}

/// Why a request as a whole was refused. Per-event refusals are not errors: they are part of
/// a successful answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed body.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown, revoked or missing write key.
    #[error("{0}")]
    Unauthorized(String),
    /// Over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A `Content-Encoding` other than gzip.
    #[error("unsupported Content-Encoding `{0}`; send gzip or nothing")]
    UnsupportedEncoding(String),
    /// The write key is over its rate.
    #[error("the write key is over its rate of events a second")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The broker did not confirm in time; nothing of the request was accepted.
    #[error("events could not be stored right now; nothing from this request was accepted")]
    Unavailable {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
}

impl ApiError {
    /// The service-wide code of this error.
    pub fn code(&self) -> ServiceErrorCode {
        match self {
            Self::BadRequest(_) => ServiceErrorCode::BadRequest,
            Self::Unauthorized(_) => ServiceErrorCode::Unauthenticated,
            Self::PayloadTooLarge(_) => ServiceErrorCode::PayloadTooLarge,
            Self::UnsupportedEncoding(_) => ServiceErrorCode::UnsupportedMediaType,
            Self::RateLimited { .. } => ServiceErrorCode::RateLimited,
            Self::Unavailable { .. } => ServiceErrorCode::Unavailable,
        }
    }

    /// A stable, machine-readable name of the error.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } | Self::Unavailable { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }
}

/// The body of an error answer. `code` and `message` are the fields Segment's own API answers
/// with, which its SDKs log; `error` repeats the message for people reading raw responses.
#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    code: &'static str,
    message: &'a str,
    error: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        let message = self.to_string();
        response.json(ErrorBody {
            success: false,
            code: self.name(),
            message: &message,
            error: &message,
        })
    }
}
