//! The PostgreSQL backend.

mod archive;
mod keys;
mod tenants;
mod tokens;

use std::{str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{DatabaseConfig, DbError};

/// The migrations in the workspace's `migrations/` folder, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Repositories on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Opens a pool lazily: no connection is made until first use, so a service starts (and
    /// reports itself not ready) while the database is down.
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self, DbError> {
        Self::lazy_pool(config, true)
    }

    /// As [`PgStore::connect_lazy`], without the round trip that tests a pooled connection
    /// each time it is handed out. For a service whose calls are each one short statement
    /// (the query service), that test doubles the round trips. A connection that died while
    /// idle then fails the one call that takes it (callers answer "unavailable, retry"), and is
    /// dropped: sqlx still tests every connection when it comes back to the pool.
    pub fn connect_lazy_untested(config: &DatabaseConfig) -> Result<Self, DbError> {
        Self::lazy_pool(config, false)
    }

    fn lazy_pool(config: &DatabaseConfig, test_before_acquire: bool) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(config.url.expose())?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_millis(config.connect_timeout_ms))
            .test_before_acquire(test_before_acquire)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for crates that add their own queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the database named in `config` when it does not exist, then applies every
    /// pending migration. Safe to run concurrently: sqlx takes an advisory lock.
    pub async fn migrate(config: &DatabaseConfig) -> Result<Self, DbError> {
        create_database_if_missing(config.url.expose()).await?;
        let store = Self::connect_lazy(config)?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }
}

async fn create_database_if_missing(url: &str) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(url)?;
    let Some(name) = options.get_database().map(str::to_string) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // The name comes from the operator's own configuration, quoted as an identifier.
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut admin)
            .await;
        // Another process may have created it between the check and here.
        if let Err(e) = created
            && !matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04"))
        {
            return Err(e.into());
        }
        tracing::info!(database = %name, "created database");
    }
    PgConnection::close(admin).await?;
    Ok(())
}
