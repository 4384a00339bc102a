//! The repository interfaces, one per concern.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{ArchiveFlush, DbError, NewSite, ReadScope, ReadToken, Site, Tenant, WriteKey};

/// Tenants.
#[async_trait]
pub trait Tenants: Send + Sync {
    /// Creates a tenant; `slug` is lowercase letters, digits and dashes.
    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, DbError>;
    /// Every tenant, oldest first.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, DbError>;
    /// The tenant with this slug.
    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant, DbError>;
}

/// Sites of tenants.
#[async_trait]
pub trait Sites: Send + Sync {
    /// Creates a site; the time zone must be an IANA name and the currency an ISO 4217 code.
    async fn create_site(&self, site: NewSite) -> Result<Site, DbError>;
    /// The sites of a tenant, oldest first.
    async fn list_sites(&self, tenant_id: i64) -> Result<Vec<Site>, DbError>;
}

/// Public write keys.
#[async_trait]
pub trait WriteKeys: Send + Sync {
    /// Issues a key for a site.
    async fn issue_write_key(
        &self,
        tenant_id: i64,
        site_id: i64,
        rate_limit_per_sec: Option<i32>,
    ) -> Result<WriteKey, DbError>;
    /// Revokes a key; false when it was unknown or revoked already.
    async fn revoke_write_key(&self, key: &str) -> Result<bool, DbError>;
    /// The keys of a tenant, revoked ones included.
    async fn list_write_keys(&self, tenant_id: i64) -> Result<Vec<WriteKey>, DbError>;
    /// Keys created or changed at or after `since` (all keys when `None`), for caches.
    async fn write_keys_changed_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<WriteKey>, DbError>;
}

/// Hashed read tokens.
#[async_trait]
pub trait ReadTokens: Send + Sync {
    /// Issues a token; returns it in clear text once, with its stored form.
    async fn issue_read_token(
        &self,
        scope: ReadScope,
        label: &str,
    ) -> Result<(String, ReadToken), DbError>;
    /// Revokes a token by id; false when unknown or revoked already.
    async fn revoke_read_token(&self, id: i64) -> Result<bool, DbError>;
    /// Tokens of a tenant (`None`: admin tokens).
    async fn list_read_tokens(&self, tenant_id: Option<i64>) -> Result<Vec<ReadToken>, DbError>;
    /// The live token matching this clear text.
    async fn authenticate_read_token(&self, token: &str) -> Result<Option<ReadToken>, DbError>;
}

/// The archive consumer group's ledger of which broker batches went into which lake objects
/// (`migrations/0003_archive_ledger.sql`). Batch ids are per queue.
#[async_trait]
pub trait ArchiveLedger: Send + Sync {
    /// The flushes of `queue` holding any of `batch_ids`, each with those of `batch_ids` it holds.
    async fn archive_flushes_holding(
        &self,
        queue: &str,
        batch_ids: &[String],
    ) -> Result<Vec<ArchiveFlush>, DbError>;
    /// Records, in one transaction, a pending flush of `queue` that will write `keys` and holds
    /// `batch_ids`. [`DbError::Conflict`] when one of the batches is recorded already.
    async fn begin_archive_flush(
        &self,
        flush_id: uuid::Uuid,
        queue: &str,
        keys: &[String],
        batch_ids: &[String],
    ) -> Result<(), DbError>;
    /// Marks a pending flush stored. [`DbError::NotFound`] when it is no longer pending (another
    /// consumer cleaned it up meanwhile).
    async fn finish_archive_flush(&self, flush_id: uuid::Uuid) -> Result<(), DbError>;
    /// Forgets a flush and its batches (once its objects are deleted).
    async fn forget_archive_flush(&self, flush_id: uuid::Uuid) -> Result<(), DbError>;
    /// Forgets up to `limit` stored flushes created before `before`; returns how many.
    async fn prune_archive_ledger(&self, before: DateTime<Utc>, limit: i64)
    -> Result<u64, DbError>;
}
