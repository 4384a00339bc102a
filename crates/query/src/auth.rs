//! Who is calling: bearer read tokens, cached briefly, rate-limited per token, and the sites
//! and tenants each may read.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use quick_cache::sync::Cache;
use sightline_db::{PgStore, ReadScope, ReadTokens, token::hash_read_token};
use tonic::metadata::MetadataMap;

use crate::{QueryError, config::QueryConfig, sites::Site};

/// A caller whose token was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id (rate limits and logs).
    pub token_id: i64,
    /// What the token may read.
    pub scope: ReadScope,
}

impl Caller {
    /// Whether the caller may read `site`. Tenants learn nothing about sites not theirs,
    /// whether or not they exist.
    pub fn check_site(&self, site_id: i64, site: Option<&Site>) -> Result<(), QueryError> {
        let denied =
            || QueryError::PermissionDenied(format!("this read token may not read site {site_id}"));
        match (&self.scope, site) {
            (ReadScope::Admin, Some(_)) => Ok(()),
            (ReadScope::Admin, None) => Err(QueryError::NotFound(format!("site {site_id}"))),
            (ReadScope::Tenant { .. }, None) => Err(denied()),
            (
                ReadScope::Tenant {
                    tenant_id,
                    site_ids,
                },
                Some(site),
            ) => {
                let listed = site_ids.as_ref().is_none_or(|ids| ids.contains(&site_id));
                if site.tenant_id == *tenant_id && listed {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
        }
    }

    /// The tenant whose lake tables a SQL query reads: a tenant token's own (asking for another
    /// is refused), or the one an admin token names.
    pub fn sql_tenant(&self, requested: i64) -> Result<i64, QueryError> {
        match &self.scope {
            ReadScope::Admin if requested > 0 => Ok(requested),
            ReadScope::Admin => Err(QueryError::InvalidArgument(
                "tenant_id: an admin token must name the tenant to query".into(),
            )),
            ReadScope::Tenant { tenant_id, .. } if requested == 0 || requested == *tenant_id => {
                Ok(*tenant_id)
            }
            ReadScope::Tenant { .. } => Err(QueryError::PermissionDenied(format!(
                "this read token may not read tenant {requested}"
            ))),
        }
    }
}

#[derive(Clone)]
struct Cached {
    caller: Option<Caller>,
    at: Instant,
}

/// Checks bearer tokens against the database, remembering answers for `token_cache_ttl_ms`.
#[derive(Clone)]
pub struct Authenticator {
    store: PgStore,
    cache: Arc<Cache<Vec<u8>, Cached>>,
    ttl: Duration,
    limiter: Arc<DefaultKeyedRateLimiter<i64>>,
}

impl Authenticator {
    /// An authenticator reading tokens from `store`.
    pub fn new(store: PgStore, config: &QueryConfig) -> Self {
        let rate = NonZeroU32::new(config.rate_limit_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            store,
            cache: Arc::new(Cache::new(config.cache_capacity)),
            ttl: config.token_cache_ttl(),
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
        }
    }

    /// The caller of a request with these metadata, within its rate.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, QueryError> {
        let token = bearer(metadata)?;
        let key = hash_read_token(token);
        let caller = match self.cache.get(&key) {
            Some(hit) if hit.at.elapsed() < self.ttl => hit.caller,
            _ => {
                let caller = self
                    .store
                    .authenticate_read_token(token)
                    .await?
                    .map(|t| Caller {
                        token_id: t.id,
                        scope: t.scope,
                    });
                self.cache.insert(
                    key,
                    Cached {
                        caller: caller.clone(),
                        at: Instant::now(),
                    },
                );
                caller
            }
        };
        let caller = caller
            .ok_or_else(|| QueryError::Unauthenticated("unknown or revoked read token".into()))?;
        if self.limiter.check_key(&caller.token_id).is_err() {
            return Err(QueryError::RateLimited);
        }
        Ok(caller)
    }

    /// Forgets the rate state of tokens idle long enough to be back at their full burst.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(metadata: &MetadataMap) -> Result<&str, QueryError> {
    let missing =
        || QueryError::Unauthenticated("missing `authorization: Bearer <read token>`".into());
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(tenant_id: i64) -> Site {
        Site {
            tenant_id,
            time_zone: chrono_tz::UTC,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn tenants_read_their_listed_sites_only() {
        let all = Caller {
            token_id: 1,
            scope: ReadScope::Tenant {
                tenant_id: 7,
                site_ids: None,
            },
        };
        let listed = Caller {
            token_id: 2,
            scope: ReadScope::Tenant {
                tenant_id: 7,
                site_ids: Some(vec![3]),
            },
        };
        assert!(all.check_site(3, Some(&site(7))).is_ok());
        assert!(all.check_site(4, Some(&site(7))).is_ok());
        assert!(listed.check_site(3, Some(&site(7))).is_ok());
        for (caller, id, s) in [
            (&all, 5, Some(site(8))),
            (&listed, 4, Some(site(7))),
            (&all, 9, None),
        ] {
            let error = caller.check_site(id, s.as_ref()).unwrap_err();
            assert!(matches!(error, QueryError::PermissionDenied(_)), "{error}");
        }
        let admin = Caller {
            token_id: 3,
            scope: ReadScope::Admin,
        };
        assert!(admin.check_site(5, Some(&site(8))).is_ok());
        assert!(matches!(
            admin.check_site(9, None),
            Err(QueryError::NotFound(_))
        ));
    }

    #[test]
    fn sql_runs_on_the_callers_own_tenant() {
        let tenant = Caller {
            token_id: 1,
            scope: ReadScope::Tenant {
                tenant_id: 7,
                site_ids: None,
            },
        };
        assert_eq!(tenant.sql_tenant(0).unwrap(), 7);
        assert_eq!(tenant.sql_tenant(7).unwrap(), 7);
        assert!(matches!(
            tenant.sql_tenant(8),
            Err(QueryError::PermissionDenied(_))
        ));
        let admin = Caller {
            token_id: 2,
            scope: ReadScope::Admin,
        };
        assert_eq!(admin.sql_tenant(8).unwrap(), 8);
        assert!(admin.sql_tenant(0).is_err());
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        let mut m = MetadataMap::new();
        assert!(bearer(&m).is_err());
        m.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&m).is_err());
        m.insert("authorization", "Bearer slr_abc".parse().unwrap());
        assert_eq!(bearer(&m).unwrap(), "slr_abc");
    }
}
