use async_trait::async_trait;

use super::PgStore;
use crate::{DbError, NewSite, Site, Sites, Tenant, Tenants};

#[async_trait]
impl Tenants for PgStore {
    async fn create_tenant(&self, slug: &str, name: &str) -> Result<Tenant, DbError> {
        let valid = !slug.is_empty()
            && slug.len() <= 63
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !slug.starts_with('-');
        if !valid {
            return Err(DbError::Invalid(format!(
                "tenant slug `{slug}` must be 1-63 lowercase letters, digits or dashes, not starting with a dash"
            )));
        }
        Ok(sqlx::query_as(
            "INSERT INTO tenants (slug, name) VALUES ($1, $2) \
             RETURNING id, slug, name, created_at",
        )
        .bind(slug)
        .bind(name)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, DbError> {
        Ok(
            sqlx::query_as("SELECT id, slug, name, created_at FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant, DbError> {
        sqlx::query_as("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("tenant `{slug}`")))
    }
}

#[async_trait]
impl Sites for PgStore {
    async fn create_site(&self, site: NewSite) -> Result<Site, DbError> {
        if site.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(DbError::Invalid(format!(
                "`{}` is not an IANA time zone (such as Europe/Paris)",
                site.time_zone
            )));
        }
        if site.currency.len() != 3 || !site.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(DbError::Invalid(format!(
                "`{}` is not an ISO 4217 currency code (such as EUR)",
                site.currency
            )));
        }
        Ok(sqlx::query_as(
            "INSERT INTO sites (tenant_id, domain, time_zone, currency) VALUES ($1, $2, $3, $4) \
             RETURNING tenant_id, id, domain, time_zone, currency, created_at",
        )
        .bind(site.tenant_id)
        .bind(&site.domain)
        .bind(&site.time_zone)
        .bind(&site.currency)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn list_sites(&self, tenant_id: i64) -> Result<Vec<Site>, DbError> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, id, domain, time_zone, currency, created_at FROM sites \
             WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
