//! Sites as the query service needs them: owner, time zone and currency, cached briefly.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono_tz::Tz;
use quick_cache::sync::Cache;
use sqlx::PgPool;

use crate::QueryError;

/// What answers about a site depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Day, week and month buckets follow it.
    pub time_zone: Tz,
    /// ISO 4217 code of its revenue.
    pub currency: String,
}

#[derive(Clone)]
struct Cached {
    site: Option<Site>,
    at: Instant,
}

/// Looks sites up, remembering them for a while (a site's zone or currency changes rarely, and
/// its owner never).
#[derive(Clone)]
pub struct SiteDirectory {
    pool: PgPool,
    cache: Arc<Cache<i64, Cached>>,
    ttl: Duration,
}

type Row = (i64, i64, String, String);

fn site_of(row: Row) -> Result<(i64, Site), QueryError> {
    let (id, tenant_id, zone, currency) = row;
    let time_zone = zone.parse::<Tz>().map_err(|_| {
        QueryError::Internal(format!("site {id} has an unknown time zone `{zone}`"))
    })?;
    Ok((
        id,
        Site {
            tenant_id,
            time_zone,
            currency,
        },
    ))
}

impl SiteDirectory {
    /// A directory over `pool`, caching `capacity` sites for `ttl`.
    pub fn new(pool: PgPool, capacity: usize, ttl: Duration) -> Self {
        Self {
            pool,
            cache: Arc::new(Cache::new(capacity)),
            ttl,
        }
    }

    /// The site `id`; `None` when it does not exist.
    pub async fn get(&self, id: i64) -> Result<Option<Site>, QueryError> {
        if let Some(hit) = self.cache.get(&id)
            && hit.at.elapsed() < self.ttl
        {
            return Ok(hit.site);
        }
        let row: Option<Row> =
            sqlx::query_as("SELECT id, tenant_id, time_zone, currency FROM sites WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let site = row.map(site_of).transpose()?.map(|(_, s)| s);
        self.cache.insert(
            id,
            Cached {
                site: site.clone(),
                at: Instant::now(),
            },
        );
        Ok(site)
    }

    /// Every site of `tenant_id` (every site at all when `None`), by id.
    pub async fn list(&self, tenant_id: Option<i64>) -> Result<Vec<(i64, Site)>, QueryError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, tenant_id, time_zone, currency FROM sites \
             WHERE $1::bigint IS NULL OR tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(site_of).collect()
    }
}
