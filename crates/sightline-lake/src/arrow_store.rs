//! The lake as an [`object_store::ObjectStore`], the storage interface of the Arrow ecosystem,
//! so that DataFusion reads and writes the lake in place.
//!
//! The S3 side goes through the same `aws-sdk-s3` client as [`S3Store`] (one S3 stack, one set
//! of settings); the local side is `object_store`'s own `LocalFileSystem` rooted at the lake's
//! folder. Either way the store is registered under [`LAKE_URL`], and a table over a prefix is
//! `lake://lake/<prefix>` ([`table_url`]), whichever backend holds the objects.

use std::{fmt, ops::Range, sync::Arc};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    UploadPart, local::LocalFileSystem, path::Path,
};
use parking_lot::Mutex;

use crate::{LakeConfig, LakeError, LakeKind, S3Store};

/// The URL every lake store is registered under (`RuntimeEnv::register_object_store`).
pub const LAKE_URL: &str = "lake://lake/";

/// The URL of a table over `prefix` (a folder of the lake, `raw/events/tenant=7/`), for
/// DataFusion's `ListingTableUrl::parse`.
pub fn table_url(prefix: &str) -> String {
    let prefix = prefix.trim_start_matches('/');
    let slash = if prefix.is_empty() || prefix.ends_with('/') {
        ""
    } else {
        "/"
    };
    format!("{LAKE_URL}{prefix}{slash}")
}

/// The lake of `config` as an Arrow object store.
pub fn arrow_store(config: &LakeConfig) -> Result<Arc<dyn object_store::ObjectStore>, LakeError> {
    Ok(match config.kind {
        LakeKind::Local => {
            let path = config.local_path.display().to_string();
            std::fs::create_dir_all(&config.local_path).map_err(|source| LakeError::Io {
                op: "create folder",
                path: path.clone(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(&config.local_path).map_err(|e| {
                LakeError::Io {
                    op: "open folder",
                    path,
                    source: std::io::Error::other(e),
                }
            })?;
            Arc::new(fs)
        }
        LakeKind::S3 => Arc::new(ArrowS3::new(&S3Store::new(&config.s3))),
    })
}

/// An S3 bucket as an [`object_store::ObjectStore`].
#[derive(Debug, Clone)]
pub struct ArrowS3 {
    client: Client,
    bucket: String,
}

const STORE: &str = "S3";

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

/// Maps an SDK error, recognising a missing object (404) as `NotFound`.
fn s3_error<E>(
    op: &'static str,
    path: &str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> object_store::Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let path = path.to_string();
    move |e| {
        let not_found = matches!(e.code(), Some("NoSuchKey" | "NotFound"))
            || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
        let message = format!("{op} {path}: {}", DisplayErrorContext(&e));
        if not_found {
            object_store::Error::NotFound {
                path,
                source: message.into(),
            }
        } else {
            generic(message)
        }
    }
}

fn timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

fn size(len: Option<i64>) -> u64 {
    len.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

impl ArrowS3 {
    /// The bucket of `store`, through its client.
    pub fn new(store: &S3Store) -> Self {
        Self {
            client: store.client().clone(),
            bucket: store.bucket().to_string(),
        }
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(location.as_ref())
            .send()
            .await
            .map_err(s3_error("head", location.as_ref()))?;
        Ok(ObjectMeta {
            location: location.clone(),
            last_modified: timestamp(out.last_modified()),
            size: size(out.content_length()),
            e_tag: out.e_tag().map(str::to_string),
            version: out.version_id().map(str::to_string),
        })
    }

    /// One page of a listing; `delimiter` for `list_with_delimiter`.
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<String>,
    ) -> object_store::Result<(ListResult, Option<String>)> {
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token);
        if delimiter {
            req = req.delimiter("/");
        }
        let out = req.send().await.map_err(s3_error("list", prefix))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    location: Path::parse(o.key()?).ok()?,
                    last_modified: timestamp(o.last_modified()),
                    size: size(o.size()),
                    e_tag: o.e_tag().map(str::to_string),
                    version: None,
                })
            })
            .collect();
        let common_prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| Path::parse(p.prefix()?).ok())
            .collect();
        let next = match out.next_continuation_token() {
            Some(next) if out.is_truncated() == Some(true) => Some(next.to_string()),
            _ => None,
        };
        Ok((
            ListResult {
                common_prefixes,
                objects,
            },
            next,
        ))
    }
}

/// An S3 listing prefix for `prefix`: listing is by path segment, so `a/b` lists `a/b/…`.
fn list_prefix(prefix: Option<&Path>) -> String {
    match prefix {
        Some(p) if !p.as_ref().is_empty() => format!("{}/", p.as_ref()),
        _ => String::new(),
    }
}

impl fmt::Display for ArrowS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArrowS3({})", self.bucket)
    }
}

#[async_trait]
impl object_store::ObjectStore for ArrowS3 {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(location.as_ref())
            .body(ByteStream::from(Bytes::from(payload)));
        match opts.mode {
            PutMode::Overwrite => {}
            PutMode::Create => req = req.if_none_match("*"),
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: "ArrowS3".into(),
                });
            }
        }
        let out = req.send().await.map_err(|e| {
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) {
                object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "the object exists".into(),
                }
            } else {
                s3_error("put", location.as_ref())(e)
            }
        })?;
        Ok(PutResult {
            e_tag: out.e_tag().map(str::to_string),
            version: out.version_id().map(str::to_string),
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(location.as_ref())
            .send()
            .await
            .map_err(s3_error("create multipart upload", location.as_ref()))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| generic(format!("no upload id for {location}")))?
            .to_string();
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: location.to_string(),
            upload_id,
            next_part: 1,
            parts: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            let meta = self.head(location).await?;
            options.check_preconditions(&meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures_util::stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Attributes::default(),
            });
        }
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(location.as_ref())
            .set_if_match(options.if_match.clone())
            .set_if_none_match(options.if_none_match.clone());
        if let Some(range) = &options.range {
            req = req.range(range.to_string());
        }
        let out = req
            .send()
            .await
            .map_err(s3_error("get", location.as_ref()))?;
        // Content-Range: "bytes start-end/total"; without it the whole object came back.
        let length = size(out.content_length());
        let (range, total) = match out.content_range().and_then(parse_content_range) {
            Some((range, total)) => (range, total),
            None => (0..length, length),
        };
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: timestamp(out.last_modified()),
            size: total,
            e_tag: out.e_tag().map(str::to_string),
            version: out.version_id().map(str::to_string),
        };
        let path = location.to_string();
        let body = futures_util::stream::try_unfold(out.body, move |mut body| {
            let path = path.clone();
            async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, body))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(generic(format!("read {path}: {e}"))),
                }
            }
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(body.boxed()),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .and_then(move |location| {
                let store = store.clone();
                async move {
                    match store
                        .client
                        .delete_object()
                        .bucket(&store.bucket)
                        .key(location.as_ref())
                        .send()
                        .await
                    {
                        Ok(_) => Ok(location),
                        Err(e) if e.code() == Some("NoSuchKey") => Ok(location),
                        Err(e) => Err(s3_error("delete", location.as_ref())(e)),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = list_prefix(prefix);
        // (continuation token, done): pages until S3 says the listing is complete.
        futures_util::stream::try_unfold((None, false), move |(token, done)| {
            let store = store.clone();
            let prefix = prefix.clone();
            async move {
                if done {
                    return Ok::<_, object_store::Error>(None);
                }
                let (page, next) = store.list_page(&prefix, false, token).await?;
                let done = next.is_none();
                Ok(Some((
                    futures_util::stream::iter(page.objects.into_iter().map(Ok)),
                    (next, done),
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = list_prefix(prefix);
        let mut all = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
        };
        let mut token = None;
        loop {
            let (page, next) = self.list_page(&prefix, true, token).await?;
            all.common_prefixes.extend(page.common_prefixes);
            all.objects.extend(page.objects);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if options.mode == CopyMode::Create {
            return Err(object_store::Error::NotImplemented {
                operation: "copy with CopyMode::Create".into(),
                implementer: "ArrowS3".into(),
            });
        }
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{}", self.bucket, from.as_ref()))
            .key(to.as_ref())
            .send()
            .await
            .map_err(s3_error("copy", from.as_ref()))?;
        Ok(())
    }
}

/// `bytes 0-99/1234` → (0..100, 1234).
fn parse_content_range(header: &str) -> Option<(Range<u64>, u64)> {
    let rest = header.strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = end.parse().ok()?;
    Some((start..end + 1, total.parse().ok()?))
}

/// A multipart upload in progress: parts upload concurrently and are listed in part order at
/// completion, as S3 requires.
#[derive(Debug)]
struct S3Upload {
    store: ArrowS3,
    key: String,
    upload_id: String,
    next_part: i32,
    parts: Arc<Mutex<Vec<(i32, String)>>>,
}

#[async_trait]
impl MultipartUpload for S3Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone();
        let parts = Arc::clone(&self.parts);
        Box::pin(async move {
            let out = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(Bytes::from(data)))
                .send()
                .await
                .map_err(s3_error("upload part", &key))?;
            let etag = out.e_tag().unwrap_or_default().to_string();
            parts.lock().push((number, etag));
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut parts = std::mem::take(&mut *self.parts.lock());
        parts.sort_by_key(|(number, _)| *number);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .into_iter()
                    .map(|(number, etag)| {
                        CompletedPart::builder()
                            .part_number(number)
                            .e_tag(etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(s3_error("complete multipart upload", &self.key))?;
        Ok(PutResult {
            e_tag: out.e_tag().map(str::to_string),
            version: out.version_id().map(str::to_string),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(s3_error("abort multipart upload", &self.key))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_urls_name_folders_of_the_lake() {
        assert_eq!(
            table_url("raw/events/tenant=7"),
            "lake://lake/raw/events/tenant=7/"
        );
        assert_eq!(table_url("/trusted/events/"), "lake://lake/trusted/events/");
        assert_eq!(table_url(""), "lake://lake/");
    }

    #[test]
    fn content_ranges_are_parsed_inclusively() {
        assert_eq!(parse_content_range("bytes 0-99/1234"), Some((0..100, 1234)));
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(list_prefix(Some(&Path::from("raw/events"))), "raw/events/");
        assert_eq!(list_prefix(None), "");
    }
}
