//! The service kit every Sightline service is built on.
//!
//! - [`config`]: layered configuration (embedded defaults, optional file, `SIGHTLINE__SECTION__KEY`
//!   environment variables) with validation that reports every problem at once;
//! - [`telemetry`]: `tracing` logs, OpenTelemetry traces (OTLP when an endpoint is set) and the
//!   Prometheus registry served on `/metrics`;
//! - [`health`]: separate liveness and readiness, fed by the components of a service;
//! - [`lifecycle`]: one cancellation token per process, tripped by SIGTERM/SIGINT or by a failing
//!   component, and the drain that follows;
//! - [`admin`]: the admin HTTP server (`/livez`, `/readyz`, `/metrics`).

pub mod admin;
pub mod config;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod telemetry;

pub use config::{ConfigError, ConfigLoader, Problems};
pub use error::ServiceErrorCode;
pub use health::{ComponentHealth, HealthRegistry};
pub use lifecycle::Shutdown;
pub use telemetry::{Telemetry, TelemetryConfig};
