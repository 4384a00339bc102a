//! Object storage: the [`ObjectStore`] trait and its local-folder backend.
//!
//! Keys are `/`-separated relative paths such as those of [`crate::layout`]. `put` of an existing
//! key replaces it whole (the lake's retries rely on that); `list` is a plain string-prefix match
//! like S3's, sorted; `delete` of a missing key succeeds.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;

use crate::LakeError;

/// Where the lake's objects are stored.
#[async_trait]
pub trait ObjectStore: fmt::Debug + Send + Sync {
    /// Stores `body` under `key`, replacing any object already there. Readers see the old or the
    /// new object, never a partial one.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), LakeError>;
    /// The object under `key`; [`LakeError::NotFound`] when there is none.
    async fn get(&self, key: &str) -> Result<Bytes, LakeError>;
    /// Every key starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), LakeError>;
}

/// Refuses keys that could escape a folder or that S3 and a file system would treat differently.
pub fn validate_key(key: &str) -> Result<(), LakeError> {
    let bad = |reason| {
        Err(LakeError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("starts or ends with '/'");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("contains '\\' or NUL");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("has an empty, '.' or '..' segment");
        }
        if segment.starts_with(TMP_PREFIX) {
            return bad("uses the temporary-file prefix");
        }
    }
    Ok(())
}

/// Prefix of in-flight files of [`LocalStore`]; hidden from `list`.
const TMP_PREFIX: &str = ".tmp-";

/// A lake in a local folder, for the single-binary mode and tests.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LakeError {
    let path = path.display().to_string();
    move |source| LakeError::Io { op, path, source }
}

impl LocalStore {
    /// A store rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, LakeError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        Ok(Self { root })
    }

    /// The folder objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, LakeError> {
        validate_key(key)?;
        Ok(key.split('/').fold(self.root.clone(), |p, s| p.join(s)))
    }

    /// Writes to a temporary file in the destination folder, syncs it, renames it over the key
    /// and syncs the folder: a crash leaves the old object or the new one, and once `put`
    /// returned the object survives a power cut.
    fn put_blocking(path: &Path, body: &[u8]) -> Result<(), LakeError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)
            .map_err(io("create temp in", dir))?;
        tmp.write_all(body).map_err(io("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("sync", tmp.path()))?;
        tmp.persist(path)
            .map_err(|e| io("rename to", path)(e.error))?;
        // Directory fsync makes the rename durable (POSIX; a no-op elsewhere).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>, LakeError> {
        // Start at the deepest folder the prefix names fully, then filter by string prefix.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = dir_part
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(root.to_path_buf(), |p, s| p.join(s));
        let mut keys = Vec::new();
        let mut stack = vec![(start, dir_part.trim_end_matches('/').to_string())];
        while let Some((dir, key_dir)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io("list", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let key = if key_dir.is_empty() {
                    name
                } else {
                    format!("{key_dir}/{name}")
                };
                let kind = entry.file_type().map_err(io("stat", &entry.path()))?;
                if kind.is_dir() {
                    // Only descend where a key could still match the prefix.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push((entry.path(), key));
                    }
                } else if kind.is_file() && key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LakeError> + Send + 'static,
) -> Result<T, LakeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LakeError::Io {
            op: "join",
            path: String::new(),
            source: std::io::Error::other(e),
        })?
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), LakeError> {
        let path = self.path(key)?;
        blocking(move || Self::put_blocking(&path, &body)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, LakeError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(body) => Ok(Bytes::from(body)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(LakeError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || Self::list_blocking(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("delete", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_keys_are_refused() {
        for key in [
            "", "/abs", "a//b", "a/../b", "..", "a/./b", "dir/", "a\\b", "a/.tmp-x",
        ] {
            assert!(validate_key(key).is_err(), "{key:?}");
        }
        validate_key("raw/events/tenant=1/date=2025-01-01/hour=00/part-x.parquet").unwrap();
    }
}
