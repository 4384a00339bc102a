//! The lake in a local folder (the single-binary mode).

mod common;

use sightline_lake::{LakeConfig, LakeKind, LocalStore, ObjectStore};

#[tokio::test]
async fn the_lake_contract_holds_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("lake")).unwrap();
    common::exercise(&store).await;
}

#[tokio::test]
async fn local_writes_leave_no_temporary_files_and_listing_ignores_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    sightline_lake::write_raw_batches(&store, &common::batches())
        .await
        .unwrap();
    // A crashed writer's leftover must never show up as an object.
    let hour = dir
        .path()
        .join("raw/events/tenant=2/date=2025-03-09/hour=22");
    std::fs::write(hour.join(".tmp-crashed"), b"half").unwrap();
    let listed = store.list("").await.unwrap();
    assert_eq!(listed.len(), 4, "{listed:#?}");
    assert!(listed.iter().all(|k| k.ends_with(".parquet")));
    let on_disk: Vec<_> = std::fs::read_dir(&hour).unwrap().collect();
    assert_eq!(on_disk.len(), 2, "one object and the planted leftover");
}

#[tokio::test]
async fn the_default_config_opens_a_local_lake() {
    let dir = tempfile::tempdir().unwrap();
    let config = LakeConfig {
        kind: LakeKind::Local,
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
    let store = config.open().unwrap();
    store
        .put("a/b.parquet", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(dir.path().join("lake/a/b.parquet").is_file());
}
