//! `[lake]`: where the lake is stored.

use std::{path::PathBuf, sync::Arc};

use serde::Deserialize;
use sightline_kit::{Problems, config::Secret};

use crate::{LakeError, LocalStore, ObjectStore, S3Store};

/// Embedded defaults of the `[lake]` section.
pub const DEFAULTS: &str = include_str!("../default.toml");

/// The storage backend.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LakeKind {
    /// A local folder ([`LocalStore`]).
    Local,
    /// An S3 bucket ([`S3Store`]).
    S3,
}

/// `[lake]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Which backend.
    pub kind: LakeKind,
    /// Folder of the `local` backend.
    pub local_path: PathBuf,
    /// Settings of the `s3` backend.
    pub s3: S3Config,
}

/// `[lake.s3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL; empty for AWS.
    pub endpoint: String,
    /// Signing region (also the bucket's region when it is created).
    pub region: String,
    /// The lake's bucket.
    pub bucket: String,
    /// Static access key id.
    pub access_key_id: String,
    /// Static secret access key (masked in logs).
    pub secret_access_key: Secret,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted servers.
    pub force_path_style: bool,
}

/// S3's bucket naming rules (the subset that matters: length, characters, ends).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

impl LakeConfig {
    /// Every problem with this section.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        match self.kind {
            LakeKind::Local => p.check(
                !self.local_path.as_os_str().is_empty(),
                "lake.local_path",
                "must not be empty",
            ),
            LakeKind::S3 => p.extend(self.s3.validate()),
        }
        p
    }

    /// The store this configuration names (the local folder is created if missing).
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        Ok(match self.kind {
            LakeKind::Local => Arc::new(LocalStore::new(&self.local_path)?),
            LakeKind::S3 => Arc::new(S3Store::new(&self.s3)),
        })
    }
}

impl S3Config {
    /// Every problem with `[lake.s3]`.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::new();
        p.check(
            self.endpoint.is_empty()
                || self.endpoint.starts_with("http://")
                || self.endpoint.starts_with("https://"),
            "lake.s3.endpoint",
            "must be empty (AWS) or an http:// or https:// URL",
        );
        p.check(
            !self.region.is_empty(),
            "lake.s3.region",
            "must not be empty",
        );
        p.check(
            valid_bucket(&self.bucket),
            "lake.s3.bucket",
            "must be 3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
        );
        p.check(
            !self.access_key_id.is_empty(),
            "lake.s3.access_key_id",
            "must be set (the AWS default credential chain is not supported yet)",
        );
        p.check(
            !self.secret_access_key.expose().is_empty(),
            "lake.s3.secret_access_key",
            "must be set",
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use sightline_kit::ConfigLoader;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        lake: LakeConfig,
    }

    fn load(env: &[(&str, &str)]) -> Result<LakeConfig, sightline_kit::ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConfigLoader::new()
            .defaults(DEFAULTS)
            .env_map(env)
            .load::<Doc>()
            .map(|d| d.lake)
    }

    #[test]
    fn defaults_are_a_valid_local_lake() {
        let c = load(&[]).unwrap();
        assert_eq!(c.kind, LakeKind::Local);
        assert_eq!(c.validate(), Problems::new());
    }

    #[test]
    fn s3_settings_come_from_the_environment_and_the_secret_is_masked() {
        let c = load(&[
            ("SIGHTLINE__LAKE__KIND", "s3"),
            ("SIGHTLINE__LAKE__S3__ENDPOINT", "http://127.0.0.1:9000"),
            ("SIGHTLINE__LAKE__S3__ACCESS_KEY_ID", "sightline"),
            ("SIGHTLINE__LAKE__S3__SECRET_ACCESS_KEY", "hunter22"),
            ("SIGHTLINE__LAKE__S3__FORCE_PATH_STYLE", "true"),
        ])
        .unwrap();
        assert_eq!(c.kind, LakeKind::S3);
        assert!(c.s3.force_path_style);
        assert_eq!(c.s3.secret_access_key.expose(), "hunter22");
        assert!(!format!("{c:?}").contains("hunter22"));
        assert_eq!(c.validate(), Problems::new());
    }

    #[test]
    fn an_s3_lake_without_credentials_or_with_a_bad_bucket_is_refused() {
        let c = load(&[
            ("SIGHTLINE__LAKE__KIND", "s3"),
            ("SIGHTLINE__LAKE__S3__BUCKET", "Bad_Bucket"),
            ("SIGHTLINE__LAKE__S3__ENDPOINT", "127.0.0.1:9000"),
        ])
        .unwrap();
        let text = c.validate().to_string();
        for key in [
            "lake.s3.bucket",
            "lake.s3.endpoint",
            "lake.s3.access_key_id",
            "lake.s3.secret_access_key",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        assert!(load(&[("SIGHTLINE__LAKE__S3__BUKET", "x")]).is_err());
        assert!(load(&[("SIGHTLINE__LAKE__KIND", "gcs")]).is_err());
    }
}
