//! The S3 backend on `aws-sdk-s3`, for AWS and S3-compatible servers (MinIO, s3s-fs, Ceph…).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, retry::RetryConfig, timeout::TimeoutConfig,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{BucketLocationConstraint, CreateBucketConfiguration},
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;

use crate::{LakeError, config::S3Config, store::ObjectStore, store::validate_key};

/// An S3 bucket as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
}

fn s3_err<E, R>(op: &'static str, target: &str) -> impl FnOnce(SdkError<E, R>) -> LakeError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let target = target.to_string();
    move |e| LakeError::S3 {
        op,
        target,
        message: DisplayErrorContext(&e).to_string(),
    }
}

impl S3Store {
    /// A client for `config`'s bucket. Nothing is sent until the first request.
    pub fn new(config: &S3Config) -> Self {
        // rustls with ring (already in the tree) instead of the SDK's default aws-lc-rs, which
        // needs cmake and a long C build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.expose().to_string(),
                None,
                None,
                "sightline-config",
            ))
            .force_path_style(config.force_path_style)
            // Newer SDKs send CRC checksums in aws-chunked trailers by default; several
            // S3-compatible servers refuse those, and Parquet carries its own checksums anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(config.endpoint.clone());
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            region: config.region.clone(),
        }
    }

    /// The SDK client (shared by the lake's Arrow object store).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket objects live in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists (dev and tests; production buckets come from
    /// infrastructure code, with their lifecycle and encryption rules).
    pub async fn create_bucket_if_missing(&self) -> Result<(), LakeError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses an explicit location constraint.
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_bucket_already_owned_by_you() || se.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_err("create bucket", &self.bucket)(e)),
        }
    }

    /// Deletes every object and then the bucket itself (tests and dev only).
    pub async fn delete_bucket_and_objects(&self) -> Result<(), LakeError> {
        for key in self.list("").await? {
            self.delete(&key).await?;
        }
        self.client
            .delete_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(s3_err("delete bucket", &self.bucket))?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), LakeError> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(s3_err("put", key))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, LakeError> {
        validate_key(key)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Err(LakeError::NotFound {
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(s3_err("get", key)(e)),
        };
        let body = out.body.collect().await.map_err(|e| LakeError::S3 {
            op: "get body",
            target: key.to_string(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
        Ok(body.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(s3_err("list", prefix))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // AWS answers 204 for a missing key; some compatible servers answer NoSuchKey.
            Err(e) if e.code() == Some("NoSuchKey") => Ok(()),
            Err(e) => Err(s3_err("delete", key)(e)),
        }
    }
}
