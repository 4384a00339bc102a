//! A fresh bucket per test on the local S3 server (s3s-fs on `127.0.0.1:9000`, path style,
//! started by `ensure_s3` in `scripts/lib/services.sh`).

use sightline_kit::config::Secret;
use sightline_lake::{ObjectStore, S3Config, S3Store};

/// The dev S3 server.
pub const S3_ENDPOINT: &str = "http://127.0.0.1:9000";
/// Its access key.
pub const S3_ACCESS_KEY: &str = "sightline";
/// Its secret key.
pub const S3_SECRET_KEY: &str = "sightline-dev-secret";

/// A bucket of one test.
pub struct TestBucket {
    /// Settings naming the bucket on the dev server (`lake.s3.*`).
    pub config: S3Config,
    /// A client on it.
    pub store: S3Store,
}

impl TestBucket {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.config.bucket
    }

    /// The `SIGHTLINE__LAKE__…` settings of a service writing to this bucket through
    /// `endpoint` (the server itself, or a proxy in front of it).
    pub fn env(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("SIGHTLINE__LAKE__KIND", "s3"),
            ("SIGHTLINE__LAKE__S3__ENDPOINT", endpoint),
            ("SIGHTLINE__LAKE__S3__REGION", &self.config.region),
            ("SIGHTLINE__LAKE__S3__BUCKET", &self.config.bucket),
            ("SIGHTLINE__LAKE__S3__ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("SIGHTLINE__LAKE__S3__SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("SIGHTLINE__LAKE__S3__FORCE_PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Every key in the bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.store.list(prefix).await.expect("listing the bucket")
    }

    /// Deletes every object and the bucket (cleanup; errors are ignored).
    pub async fn delete(self) {
        let _ = self.store.delete_bucket_and_objects().await;
    }
}

/// Settings for a bucket named `bucket` on the dev server at `endpoint`.
pub fn s3_config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: endpoint.to_string(),
        region: "us-east-1".into(),
        bucket: bucket.to_string(),
        access_key_id: S3_ACCESS_KEY.into(),
        secret_access_key: Secret::new(S3_SECRET_KEY),
        force_path_style: true,
    }
}

/// Creates a uniquely named bucket on the dev server. Panics when the server is not running.
/// The name is short on purpose: s3s-fs packs base64(bucket) + base64(key) into one file name.
pub async fn fresh_bucket() -> TestBucket {
    let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let config = s3_config(S3_ENDPOINT, &name);
    if std::net::TcpStream::connect("127.0.0.1:9000").is_err() {
        panic!(
            "no S3 server at {S3_ENDPOINT}: run scripts/test (or `source scripts/lib/services.sh && ensure_s3`) first"
        );
    }
    let store = S3Store::new(&config);
    store
        .create_bucket_if_missing()
        .await
        .unwrap_or_else(|e| panic!("creating test bucket {name}: {e}"));
    TestBucket { config, store }
}
