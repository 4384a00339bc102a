use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::{DbError, ReadScope, ReadToken, ReadTokens, token};

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    tenant_id: Option<i64>,
    scope: String,
    site_ids: Option<Vec<i64>>,
    prefix: String,
    label: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_token(self) -> Result<ReadToken, DbError> {
        let scope = match (self.scope.as_str(), self.tenant_id) {
            ("admin", None) => ReadScope::Admin,
            ("tenant", Some(tenant_id)) => ReadScope::Tenant {
                tenant_id,
                site_ids: self.site_ids,
            },
            (scope, _) => {
                return Err(DbError::Invalid(format!(
                    "read token {} has an inconsistent scope `{scope}`",
                    self.id
                )));
            }
        };
        Ok(ReadToken {
            id: self.id,
            scope,
            prefix: self.prefix,
            label: self.label,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

macro_rules! columns {
    () => {
        "id, tenant_id, scope, site_ids, prefix, label, created_at, revoked_at"
    };
}

#[async_trait]
impl ReadTokens for PgStore {
    async fn issue_read_token(
        &self,
        scope: ReadScope,
        label: &str,
    ) -> Result<(String, ReadToken), DbError> {
        let (scope_name, tenant_id, site_ids) = match &scope {
            ReadScope::Admin => ("admin", None, None),
            ReadScope::Tenant {
                tenant_id,
                site_ids,
            } => ("tenant", Some(*tenant_id), site_ids.clone()),
        };
        if let (Some(tenant_id), Some(ids)) = (tenant_id, &site_ids) {
            let owned: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sites WHERE tenant_id = $1 AND id = ANY($2)",
            )
            .bind(tenant_id)
            .bind(ids)
            .fetch_one(&self.pool)
            .await?;
            if owned != i64::try_from(ids.len()).unwrap_or(i64::MAX) {
                return Err(DbError::Invalid(format!(
                    "every site of a token must belong to tenant {tenant_id}"
                )));
            }
        }
        let clear = token::new_read_token();
        let row: Row = sqlx::query_as(concat!(
            "INSERT INTO read_tokens (tenant_id, scope, site_ids, token_hash, prefix, label) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            columns!()
        ))
        .bind(tenant_id)
        .bind(scope_name)
        .bind(site_ids)
        .bind(token::hash_read_token(&clear))
        .bind(token::display_prefix(&clear))
        .bind(label)
        .fetch_one(&self.pool)
        .await?;
        Ok((clear, row.into_token()?))
    }

    async fn revoke_read_token(&self, id: i64) -> Result<bool, DbError> {
        let result = sqlx::query(
            "UPDATE read_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_read_tokens(&self, tenant_id: Option<i64>) -> Result<Vec<ReadToken>, DbError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM read_tokens WHERE tenant_id IS NOT DISTINCT FROM $1 ORDER BY id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Row::into_token).collect()
    }

    async fn authenticate_read_token(&self, clear: &str) -> Result<Option<ReadToken>, DbError> {
        let row: Option<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM read_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token::hash_read_token(clear))
        .fetch_optional(&self.pool)
        .await?;
        row.map(Row::into_token).transpose()
    }
}
