//! What Sightline's integration tests share: unique names, a fresh PostgreSQL database and a
//! fresh S3 bucket per test on the real local services, a TCP [`proxy::Proxy`] to cut a service
//! away, a tiny HTTP probe for admin ports, and [`duckdb`], an independent reader of the lake's
//! Parquet.
//!
//! A missing service is a loud failure (a panic naming `scripts/test`), never a skip. This is a
//! dev-dependency only; its helpers panic or return `anyhow` errors as tests like.

pub mod broker;
pub mod duckdb;
pub mod http;
pub mod postgres;
pub mod proxy;
pub mod s3;

pub use broker::delete_topology;
pub use postgres::{PG, drop_database, fresh_database};
pub use s3::{S3_ENDPOINT, TestBucket, fresh_bucket};

/// `{prefix}_{12 hex digits}`: a name no other test (or run) uses, valid as a PostgreSQL
/// database, a RabbitMQ namespace and (with `-` for `_`) part of a bucket name.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The cache folder shared with `scripts/` (`$SIGHTLINE_CACHE`, else `~/.cache/sightline`).
pub fn cache_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("SIGHTLINE_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    std::path::Path::new(&home).join(".cache").join("sightline")
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_differ_and_keep_their_prefix() {
        let (a, b) = (super::unique("t_x"), super::unique("t_x"));
        assert_ne!(a, b);
        assert!(a.starts_with("t_x_") && a.len() == "t_x_".len() + 12);
    }
}
