//! What the batch enricher's tests share: a fresh database with a tenant and sites in three
//! time zones, a fresh bucket on the S3 server as the lake, raw files written as the archive
//! writes them, and DuckDB reading back what the batch wrote. A missing service fails loudly.

#![allow(dead_code)]

pub mod traffic;

use std::{collections::HashMap, sync::Arc};

use batch_enricher::{Config, Context, ledger::MemoryLedger, metrics::BatchMetrics};
use chrono::NaiveDate;
use sightline_db::{NewSite, PgStore, Sites, Tenants};
use sightline_lake::{ObjectStore, layout::RawPartition, parquet::events_to_parquet};
use sightline_proto::events::v1::Event;
use sightline_testkit::{
    S3_ENDPOINT, TestBucket, drop_database, duckdb, fresh_bucket, fresh_database,
};
use sqlx::PgPool;
use traffic::SiteSpec;

/// The local day the tests close.
pub fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 10).unwrap()
}

/// One test's database, bucket, tenant and sites.
pub struct World {
    pub database_url: String,
    pub bucket: TestBucket,
    pub store: PgStore,
    pub tenant_id: i64,
    pub sites: Vec<SiteSpec>,
}

impl World {
    /// A tenant with sites in Paris (EUR), New York (USD) and Kolkata (INR, a half-hour offset).
    pub async fn new() -> Self {
        let database_url = fresh_database("t_batch").await;
        let bucket = fresh_bucket().await;
        let config = Self::config_for(&database_url, &bucket, &[]);
        let store = PgStore::connect_lazy(&config.database).unwrap();
        let tenant = store.create_tenant("acme", "Acme").await.unwrap();
        let mut sites = Vec::new();
        for (domain, zone, currency) in [
            ("paris.example", "Europe/Paris", "EUR"),
            ("ny.example", "America/New_York", "USD"),
            ("delhi.example", "Asia/Kolkata", "INR"),
        ] {
            let site = store
                .create_site(NewSite {
                    tenant_id: tenant.id,
                    domain: domain.into(),
                    time_zone: zone.into(),
                    currency: currency.into(),
                })
                .await
                .unwrap();
            sites.push(SiteSpec {
                site_id: site.id,
                zone: zone.parse().unwrap(),
                currency: currency.into(),
            });
        }
        World {
            database_url,
            bucket,
            store,
            tenant_id: tenant.id,
            sites,
        }
    }

    fn config_for(database_url: &str, bucket: &TestBucket, extra: &[(&str, &str)]) -> Config {
        let mut env: HashMap<String, String> = bucket.env(S3_ENDPOINT).into_iter().collect();
        env.insert("SIGHTLINE__DATABASE__URL".into(), database_url.into());
        env.insert("SIGHTLINE__DATABASE__MAX_CONNECTIONS".into(), "4".into());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        Config::load(&Config::loader().env_map(env)).expect("valid test configuration")
    }

    /// The batch enricher's configuration for this world, with `extra` settings.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        Self::config_for(&self.database_url, &self.bucket, extra)
    }

    /// A job context on this world recording the ledger in memory.
    pub fn context(&self, extra: &[(&str, &str)]) -> (Context, Arc<MemoryLedger>) {
        let ledger = Arc::new(MemoryLedger::default());
        let ctx = Context::new(&self.config(extra), ledger.clone(), BatchMetrics::default())
            .expect("a batch context");
        (ctx, ledger)
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Writes `events` into `raw/` as the archive would: per tenant, date and hour of event
    /// time, one file per call (`file` names it).
    pub async fn write_raw(&self, file: &str, events: &[Event]) {
        let mut by_partition: HashMap<RawPartition, Vec<Event>> = HashMap::new();
        for e in events {
            by_partition
                .entry(RawPartition::of_event(e.tenant_id, e.timestamp_us).unwrap())
                .or_default()
                .push(e.clone());
        }
        for (partition, events) in by_partition {
            let key = partition.key(&sightline_lake::layout::part_id([file]));
            self.bucket
                .store
                .put(&key, events_to_parquet(&events).unwrap())
                .await
                .unwrap();
        }
    }

    /// Runs `sql` in DuckDB over a copy of the bucket's objects under `prefix`.
    pub async fn duck(&self, prefix: &str, sql: &str) -> Vec<duckdb::Row> {
        duckdb::query_store(&self.bucket.store, prefix, sql)
            .await
            .expect("DuckDB reads the lake")
    }

    /// Every batch rollup row, in a stable order, as text (for before/after comparisons).
    pub async fn batch_rows(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT concat_ws('|', site_id, granularity, bucket, dimension, value, events, \
               pageviews, visits, bounces, duration_us, orders, revenue_micros, bot_events, \
               encode(visitors, 'hex')) FROM rollups WHERE layer = 'batch' ORDER BY 1",
        )
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    /// Every object key and its bytes under `prefix`, sorted.
    pub async fn objects(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for key in self.bucket.keys(prefix).await {
            let body = self.bucket.store.get(&key).await.unwrap();
            out.push((key, body.to_vec()));
        }
        out
    }

    pub async fn finish(self) {
        self.store.pool().close().await;
        drop_database(&self.database_url).await;
        self.bucket.delete().await;
    }
}
