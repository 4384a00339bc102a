use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{DbError, WriteKey, WriteKeys, token};

// A macro rather than a const so `concat!` builds `&'static str` queries, which sqlx accepts
// as audited SQL.
macro_rules! columns {
    () => {
        "key, tenant_id, site_id, rate_limit_per_sec, created_at, revoked_at, updated_at"
    };
}

#[async_trait]
impl WriteKeys for PgStore {
    async fn issue_write_key(
        &self,
        tenant_id: i64,
        site_id: i64,
        rate_limit_per_sec: Option<i32>,
    ) -> Result<WriteKey, DbError> {
        if rate_limit_per_sec.is_some_and(|r| r <= 0) {
            return Err(DbError::Invalid("a rate limit must be positive".into()));
        }
        Ok(sqlx::query_as(concat!(
            "INSERT INTO write_keys (key, tenant_id, site_id, rate_limit_per_sec) \
             VALUES ($1, $2, $3, $4) RETURNING ",
            columns!()
        ))
        .bind(token::new_write_key())
        .bind(tenant_id)
        .bind(site_id)
        .bind(rate_limit_per_sec)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn revoke_write_key(&self, key: &str) -> Result<bool, DbError> {
        let result = sqlx::query(
            "UPDATE write_keys SET revoked_at = now(), updated_at = now() \
             WHERE key = $1 AND revoked_at IS NULL",
        )
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_write_keys(&self, tenant_id: i64) -> Result<Vec<WriteKey>, DbError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM write_keys WHERE tenant_id = $1 ORDER BY created_at"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn write_keys_changed_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<WriteKey>, DbError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM write_keys WHERE $1::timestamptz IS NULL OR updated_at >= $1 \
             ORDER BY updated_at"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}
