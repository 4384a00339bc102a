//! The gRPC `sightline.query.v1.Query` service: authenticate, check the site, answer, count.

use std::{pin::Pin, time::Instant};

use futures_util::Stream;
use sightline_proto::query::v1::{self as pb, query_server::Query};
use tonic::{Request, Response, Status};

use crate::{
    QueryError,
    answers::Reader,
    auth::{Authenticator, Caller},
    metrics::{CallLabels, QueryMetrics, RpcLabels},
    sites::{Site, SiteDirectory},
    sql::SqlEngine,
};

/// The service's state, shared by every call.
#[derive(Clone)]
pub struct QueryService {
    pub(crate) auth: Authenticator,
    pub(crate) sites: SiteDirectory,
    pub(crate) reader: Reader,
    pub(crate) sql: SqlEngine,
    pub(crate) metrics: QueryMetrics,
}

impl QueryService {
    /// Counts the outcome and duration of a call.
    fn observe<T>(&self, rpc: &'static str, started: Instant, result: &Result<T, QueryError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.metrics
            .calls
            .get_or_create(&CallLabels { rpc, outcome })
            .inc();
        self.metrics
            .call_seconds
            .get_or_create(&RpcLabels { rpc })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The site `site_id`, when `caller` may read it.
    async fn site(&self, caller: &Caller, site_id: i64) -> Result<Site, QueryError> {
        if site_id <= 0 {
            return Err(QueryError::InvalidArgument(
                "site_id: must be a site's id".into(),
            ));
        }
        let site = self.sites.get(site_id).await?;
        caller.check_site(site_id, site.as_ref())?;
        site.ok_or_else(|| QueryError::NotFound(format!("site {site_id}")))
    }

    async fn answer<Req, Res, F>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        f: impl FnOnce(Caller, Req) -> F,
    ) -> Result<Response<Res>, Status>
    where
        F: Future<Output = Result<Res, QueryError>>,
    {
        let started = Instant::now();
        let result = async {
            let caller = self.auth.authenticate(request.metadata()).await?;
            f(caller, request.into_inner()).await
        }
        .await;
        self.observe(rpc, started, &result);
        result.map(Response::new).map_err(Status::from)
    }
}

/// The stream of pages `ExecuteSql` answers with.
pub type SqlPages = Pin<Box<dyn Stream<Item = Result<pb::SqlPage, Status>> + Send>>;

#[tonic::async_trait]
impl Query for QueryService {
    async fn get_timeseries(
        &self,
        request: Request<pb::TimeseriesRequest>,
    ) -> Result<Response<pb::TimeseriesResponse>, Status> {
        self.answer("GetTimeseries", request, |caller, req| async move {
            let site = self.site(&caller, req.site_id).await?;
            self.reader.timeseries(&site, &req).await
        })
        .await
    }

    async fn get_breakdown(
        &self,
        request: Request<pb::BreakdownRequest>,
    ) -> Result<Response<pb::BreakdownResponse>, Status> {
        self.answer("GetBreakdown", request, |caller, req| async move {
            let site = self.site(&caller, req.site_id).await?;
            self.reader.breakdown(&site, &req).await
        })
        .await
    }

    async fn get_aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        self.answer("GetAggregate", request, |caller, req| async move {
            let site = self.site(&caller, req.site_id).await?;
            self.reader.aggregate(&site, &req).await
        })
        .await
    }

    async fn get_realtime(
        &self,
        request: Request<pb::RealtimeRequest>,
    ) -> Result<Response<pb::RealtimeResponse>, Status> {
        self.answer("GetRealtime", request, |caller, req| async move {
            let site = self.site(&caller, req.site_id).await?;
            self.reader
                .realtime(req.site_id, &site, req.top_pages)
                .await
        })
        .await
    }

    async fn get_freshness(
        &self,
        request: Request<pb::FreshnessRequest>,
    ) -> Result<Response<pb::FreshnessResponse>, Status> {
        self.answer("GetFreshness", request, |caller, req| async move {
            let mut sites = Vec::new();
            if req.site_ids.is_empty() {
                let tenant = match &caller.scope {
                    sightline_db::ReadScope::Admin => None,
                    sightline_db::ReadScope::Tenant { tenant_id, .. } => Some(*tenant_id),
                };
                for (id, site) in self.sites.list(tenant).await? {
                    if caller.check_site(id, Some(&site)).is_ok() {
                        sites.push((id, site));
                    }
                }
            } else {
                for id in &req.site_ids {
                    sites.push((*id, self.site(&caller, *id).await?));
                }
            }
            let mut out = Vec::with_capacity(sites.len());
            for (id, site) in &sites {
                out.push(self.reader.freshness(*id, site).await?);
            }
            Ok(pb::FreshnessResponse { sites: out })
        })
        .await
    }

    type ExecuteSqlStream = SqlPages;

    async fn execute_sql(
        &self,
        request: Request<pb::SqlRequest>,
    ) -> Result<Response<SqlPages>, Status> {
        self.answer("ExecuteSql", request, |caller, req| async move {
            let tenant_id = caller.sql_tenant(req.tenant_id)?;
            self.sql.execute(tenant_id, &req).await
        })
        .await
    }
}
