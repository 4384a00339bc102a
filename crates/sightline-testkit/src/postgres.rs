//! A fresh database per test on the local PostgreSQL (`127.0.0.1:5432`, user `postgres`,
//! trust auth).

use sightline_db::{DatabaseConfig, PgStore};
use sightline_kit::config::Secret;

/// The server every test database lives on, without a database name.
pub const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// Creates a new database named [`crate::unique`]`(prefix)` with every migration applied (by
/// [`PgStore::migrate`], the code services and `sightline admin migrate` use) and no rows, and
/// returns its URL. Panics when PostgreSQL is not running.
pub async fn fresh_database(prefix: &str) -> String {
    let url = format!("{PG}/{}", crate::unique(prefix));
    let config = DatabaseConfig {
        url: Secret::new(url.clone()),
        max_connections: 2,
        connect_timeout_ms: 5000,
    };
    let store = PgStore::migrate(&config).await.unwrap_or_else(|e| {
        panic!("creating a test database: {e} (PostgreSQL must run at 127.0.0.1:5432, trust auth, user postgres: run scripts/test)")
    });
    store.pool().close().await;
    url
}

/// Drops the database `url` names, closing its remaining connections; errors are ignored
/// (cleanup only).
pub async fn drop_database(url: &str) {
    use sqlx::Connection as _;
    let Some(name) = url.rsplit('/').next().filter(|n| !n.is_empty()) else {
        return;
    };
    if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{PG}/postgres")).await {
        let quoted = name.replace('"', "\"\"");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}
