//! The lake against the real S3 server `scripts/test` starts (s3s-fs on 127.0.0.1:9000).

mod common;

use sightline_lake::ObjectStore;

#[tokio::test]
async fn the_lake_contract_holds_on_s3() {
    let store = common::s3_store().await;
    common::exercise(&store).await;
    store.delete_bucket_and_objects().await.unwrap();
}

#[tokio::test]
async fn listing_pages_past_a_thousand_keys() {
    // S3 returns at most 1000 keys a page; `list` must follow continuation tokens.
    let store = common::s3_store().await;
    let keys: Vec<String> = (0..1005).map(|i| format!("many/k{i:05}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys.clone() {
        let store = store.clone();
        tasks.spawn(async move { store.put(&key, bytes::Bytes::from_static(b"x")).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(store.list("many/").await.unwrap(), keys);
    store.delete_bucket_and_objects().await.unwrap();
}
