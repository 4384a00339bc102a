//! Sightline's serving database: connection pools, migrations and repositories.
//!
//! Each concern sits behind a small repository trait ([`Tenants`], [`Sites`], [`WriteKeys`],
//! [`ReadTokens`], [`ArchiveLedger`]) so that a second backend (SQLite for the single binary) is
//! an addition. The PostgreSQL backend is [`PgStore`]. Migrations live in the workspace's
//! `migrations/` folder and are embedded in the binary.

mod config;
mod error;
mod model;
mod postgres;
mod repo;
pub mod rollup;
pub mod token;

pub use config::{DEFAULTS, DatabaseConfig};
pub use error::DbError;
pub use model::{
    ArchiveFlush, ArchiveFlushState, NewSite, ReadScope, ReadToken, Site, Tenant, WriteKey,
};
pub use postgres::PgStore;
pub use repo::{ArchiveLedger, ReadTokens, Sites, Tenants, WriteKeys};
