//! The rows the repositories hand out.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A customer of Sightline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Tenant {
    /// Tenant id.
    pub id: i64,
    /// Short unique name used on the command line.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A web site or app of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Site {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Site id.
    pub id: i64,
    /// Domain (or app name), unique within the tenant.
    pub domain: String,
    /// IANA time zone for day, week and month buckets.
    pub time_zone: String,
    /// ISO 4217 currency code for revenue.
    pub currency: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// What it takes to create a site.
#[derive(Debug, Clone)]
pub struct NewSite {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Domain (or app name).
    pub domain: String,
    /// IANA time zone, such as `Europe/Paris`.
    pub time_zone: String,
    /// ISO 4217 code, such as `EUR`.
    pub currency: String,
}

/// A public key a site sends events with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WriteKey {
    /// The key itself.
    pub key: String,
    /// Tenant of the site.
    pub tenant_id: i64,
    /// The site events are attributed to.
    pub site_id: i64,
    /// Events a second; `None` takes ingest's default.
    pub rate_limit_per_sec: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Set once revoked; a revoked key is refused.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a read token may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ReadScope {
    /// Every tenant (internal teams).
    Admin,
    /// One tenant, all of its sites or only those listed.
    Tenant {
        /// The tenant.
        tenant_id: i64,
        /// `None`: every site of the tenant.
        site_ids: Option<Vec<i64>>,
    },
}

/// A read token as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadToken {
    /// Token id.
    pub id: i64,
    /// What it may read.
    pub scope: ReadScope,
    /// The first characters of the token, to recognise it by.
    pub prefix: String,
    /// Free text.
    pub label: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Set once revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Where an archive flush is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ArchiveFlushState {
    /// Intent recorded; its objects may be missing or partly written.
    Pending,
    /// Every object written.
    Stored,
}

/// An archive flush that holds some of the batches asked about.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArchiveFlush {
    /// The flush.
    pub flush_id: uuid::Uuid,
    /// Pending or stored.
    pub state: ArchiveFlushState,
    /// Every object key the flush writes.
    pub keys: Vec<String>,
    /// The batches asked about that this flush holds (it may hold others too).
    pub batch_ids: Vec<String>,
}
