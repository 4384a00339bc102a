//! The lake seen through `object_store` (what DataFusion reads and writes with), against the
//! real S3 server `scripts/test` starts and against a local folder: the same behaviour on both.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload, path::Path};
use sightline_lake::{
    ObjectStore, S3Store,
    arrow_store::{ArrowS3, arrow_store},
};

async fn exercise(store: Arc<dyn object_store::ObjectStore>) {
    let data: Bytes = (0..=255u8).cycle().take(10_000).collect::<Vec<_>>().into();
    let key = Path::from("raw/events/tenant=1/date=2026-11-20/hour=07/part-a.parquet");
    store
        .put(&key, PutPayload::from_bytes(data.clone()))
        .await
        .unwrap();
    store
        .put(
            &Path::from("raw/events/tenant=1/date=2026-11-20/hour=08/part-b.parquet"),
            PutPayload::from_static(b"b"),
        )
        .await
        .unwrap();
    store
        .put(
            &Path::from("raw/events/tenant=12/x.parquet"),
            PutPayload::from_static(b"c"),
        )
        .await
        .unwrap();

    // Whole objects, ranges and suffixes (Parquet readers fetch the footer first).
    assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), data);
    assert_eq!(
        store.get_range(&key, 100..300).await.unwrap(),
        data.slice(100..300)
    );
    let suffix = store
        .get_opts(
            &key,
            object_store::GetOptions {
                range: Some(object_store::GetRange::Suffix(8)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        suffix.meta.size, 10_000,
        "the size is the object's, not the range's"
    );
    assert_eq!(suffix.range, 9_992..10_000);
    assert_eq!(suffix.bytes().await.unwrap(), data.slice(9_992..));
    assert_eq!(store.head(&key).await.unwrap().size, 10_000);
    let missing = store
        .head(&Path::from("raw/none.parquet"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, object_store::Error::NotFound { .. }),
        "{missing}"
    );

    // Listing is by path segment: tenant=1 does not list tenant=12.
    let mut listed: Vec<String> = store
        .list(Some(&Path::from("raw/events/tenant=1")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            "raw/events/tenant=1/date=2026-11-20/hour=07/part-a.parquet",
            "raw/events/tenant=1/date=2026-11-20/hour=08/part-b.parquet"
        ]
    );
    let folders = store
        .list_with_delimiter(Some(&Path::from("raw/events/tenant=1/date=2026-11-20")))
        .await
        .unwrap();
    let mut prefixes: Vec<String> = folders
        .common_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        [
            "raw/events/tenant=1/date=2026-11-20/hour=07",
            "raw/events/tenant=1/date=2026-11-20/hour=08"
        ]
    );
    assert!(folders.objects.is_empty());

    // A multipart upload (DataFusion's writers use one for large files) reads back whole.
    let big = Path::from("trusted/events/tenant=1/date=2026-11-20/part-0.parquet");
    let part: Bytes = vec![7u8; 5 * 1024 * 1024].into();
    let mut upload = store.put_multipart(&big).await.unwrap();
    upload
        .put_part(PutPayload::from_bytes(part.clone()))
        .await
        .unwrap();
    upload
        .put_part(PutPayload::from_static(b"tail"))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    let back = store.get(&big).await.unwrap().bytes().await.unwrap();
    assert_eq!(back.len(), part.len() + 4);
    assert_eq!(&back[back.len() - 4..], b"tail");

    // Copy and delete.
    let copy = Path::from("trusted/copy.parquet");
    store.copy(&big, &copy).await.unwrap();
    assert_eq!(store.head(&copy).await.unwrap().size, back.len() as u64);
    store.delete(&copy).await.unwrap();
    assert!(store.head(&copy).await.is_err());
}

#[tokio::test]
async fn object_store_readers_see_the_lake_on_s3() {
    let bucket: S3Store = common::s3_store().await;
    exercise(Arc::new(ArrowS3::new(&bucket))).await;
    // What the adapter wrote is what the lake's own client lists.
    assert!(
        bucket
            .list("raw/events/tenant=1/")
            .await
            .unwrap()
            .iter()
            .any(|k| k.ends_with("hour=07/part-a.parquet"))
    );
    bucket.delete_bucket_and_objects().await.unwrap();
}

#[tokio::test]
async fn object_store_readers_see_the_lake_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = sightline_lake::LakeConfig {
        kind: sightline_lake::LakeKind::Local,
        local_path: dir.path().join("lake"),
        s3: sightline_lake::S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "unused".into(),
            access_key_id: String::new(),
            secret_access_key: Default::default(),
            force_path_style: false,
        },
    };
    exercise(arrow_store(&config).unwrap()).await;
    assert!(
        dir.path()
            .join("lake/raw/events/tenant=1/date=2026-11-20/hour=07/part-a.parquet")
            .exists()
    );
}
