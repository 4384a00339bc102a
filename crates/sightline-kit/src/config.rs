//! Layered configuration.
//!
//! Layers, later ones winning: the embedded defaults of every crate a service uses
//! (`include_str!` of their `default.toml`), an optional TOML file, then environment variables
//! `SIGHTLINE__SECTION__KEY` (double underscores separate levels; `SIGHTLINE__INGEST__LISTEN`
//! sets `ingest.listen`). Keys registered with [`ConfigLoader::list`] take comma-separated lists
//! from the environment (`SIGHTLINE__STREAM__GROUPS=rollup,archive`). Tests pass the environment as a map instead of mutating the process
//! environment.

use std::{collections::HashMap, fmt, path::PathBuf};

use serde::de::DeserializeOwned;

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "SIGHTLINE";

/// Builds a service's configuration from its layers.
#[derive(Debug, Default, Clone)]
pub struct ConfigLoader {
    defaults: Vec<&'static str>,
    file: Option<PathBuf>,
    env: Option<HashMap<String, String>>,
    lists: Vec<&'static str>,
}

impl ConfigLoader {
    /// A loader with no layers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an embedded TOML document of defaults (applied in the order added).
    pub fn defaults(mut self, toml: &'static str) -> Self {
        self.defaults.push(toml);
        self
    }

    /// Declares `key` (`section.key`) a list, written comma-separated in the environment.
    pub fn list(mut self, key: &'static str) -> Self {
        self.lists.push(key);
        self
    }

    /// Adds a TOML file; it must exist.
    pub fn file(mut self, path: Option<PathBuf>) -> Self {
        self.file = path;
        self
    }

    /// Reads `SIGHTLINE__*` variables from this map instead of the process environment.
    pub fn env_map(mut self, env: HashMap<String, String>) -> Self {
        self.env = Some(env);
        self
    }

    /// Merges the layers and deserializes them into `T`.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut builder = config::Config::builder();
        for toml in &self.defaults {
            builder = builder.add_source(config::File::from_str(toml, config::FileFormat::Toml));
        }
        if let Some(path) = &self.file {
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        let env = if self.lists.is_empty() {
            env
        } else {
            self.lists.iter().fold(env.list_separator(","), |env, key| {
                env.with_list_parse_key(key)
            })
        };
        let env = match &self.env {
            Some(map) => env.source(Some(map.clone().into_iter().collect())),
            None => env,
        };
        builder = builder.add_source(env);
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Invalid(Problems(vec![e.to_string()])))?;
        merged
            .try_deserialize()
            .map_err(|e| ConfigError::Invalid(Problems(vec![e.to_string()])))
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with the key it concerns.
    pub fn push(&mut self, key: &str, problem: impl fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// Records a problem when `ok` is false.
    pub fn check(&mut self, ok: bool, key: &str, problem: impl fmt::Display) {
        if !ok {
            self.push(key, problem);
        }
    }

    /// Adds another section's problems.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(())` when there is nothing to report.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self))
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be merged, parsed or validated.
    #[error("invalid configuration:\n{0}")]
    Invalid(Problems),
}

/// The exit code of a service whose configuration is invalid (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Prints every problem to stderr and exits with [`EXIT_CONFIG`].
pub fn exit_on_error<T>(result: Result<T, ConfigError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// A secret string whose `Debug` output is masked.
#[derive(Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        section: Section,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        port: u16,
        name: String,
        secret: Secret,
    }

    const DEFAULTS: &str = "[section]\nport = 1\nname = \"default\"\nsecret = \"s3cr3t\"\n";

    #[test]
    fn env_overrides_defaults_and_secrets_are_masked() {
        let env = HashMap::from([("SIGHTLINE__SECTION__PORT".to_string(), "8080".to_string())]);
        let doc: Doc = ConfigLoader::new()
            .defaults(DEFAULTS)
            .env_map(env)
            .load()
            .unwrap();
        assert_eq!(doc.section.port, 8080);
        assert_eq!(doc.section.name, "default");
        assert_eq!(doc.section.secret.expose(), "s3cr3t");
        assert!(!format!("{doc:?}").contains("s3cr3t"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let env = HashMap::from([("SIGHTLINE__SECTION__PROT".to_string(), "1".to_string())]);
        let err = ConfigLoader::new()
            .defaults(DEFAULTS)
            .env_map(env)
            .load::<Doc>()
            .unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn problems_are_reported_together() {
        let mut problems = Problems::new();
        problems.check(false, "a.b", "must be positive");
        problems.check(true, "a.c", "never shown");
        problems.push("a.d", "is empty");
        let text = problems.into_result().unwrap_err().to_string();
        assert!(text.contains("a.b: must be positive") && text.contains("a.d: is empty"));
        assert!(!text.contains("never shown"));
    }
}
