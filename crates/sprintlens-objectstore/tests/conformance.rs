//! The `BlobStore` conformance suite against a local folder and memory.

use std::sync::Arc;

use sprintlens_core::BlobStore;
use sprintlens_objectstore::{BlobOptions, Location, ObjectBlobStore};
use tempfile::TempDir;

/// Room for the suite's streamed (multipart) cases.
const SUITE_MAX: u64 = 34 * 1024 * 1024;

async fn folder() -> (Arc<dyn BlobStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectBlobStore::open(BlobOptions {
        max_object_bytes: SUITE_MAX,
        ..BlobOptions::new(Location::Folder(dir.path().join("blobs")))
    })
    .unwrap();
    (Arc::new(store), dir)
}

async fn memory() -> (Arc<dyn BlobStore>, ()) {
    let store = ObjectBlobStore::open(BlobOptions {
        max_object_bytes: SUITE_MAX,
        ..BlobOptions::new(Location::Memory)
    })
    .unwrap();
    (Arc::new(store), ())
}

mod local_folder {
    use super::*;
    sprintlens_testkit::blob_store_suite!(folder);
}

mod in_memory {
    use super::*;
    sprintlens_testkit::blob_store_suite!(memory);
}

#[test]
fn urls() {
    let o = BlobOptions::from_url("blobs.url", "file://data/blobs", 10).unwrap();
    assert_eq!(o.location, Location::Folder("data/blobs".into()));
    assert_eq!(
        BlobOptions::from_url("blobs.url", "memory://", 10)
            .unwrap()
            .location,
        Location::Memory
    );
    for bad in ["file://", "s4://x", "file://a?b=c"] {
        assert_eq!(
            BlobOptions::from_url("blobs.url", bad, 10)
                .unwrap_err()
                .field(),
            Some("blobs.url")
        );
    }
}

#[tokio::test]
async fn keys_stay_inside_the_workspace_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = ObjectBlobStore::open(BlobOptions {
        max_object_bytes: 1024,
        ..BlobOptions::new(Location::Folder(root.clone()))
    })
    .unwrap();
    let ws = sprintlens_core::WorkspaceId::new();
    let key = sprintlens_core::BlobKey::new("a/b.txt").unwrap();
    store
        .put(
            ws,
            &key,
            bytes::Bytes::from_static(b"x"),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(root.join(ws.to_string()).join("a/b.txt").is_file());
    assert!(sprintlens_core::BlobKey::new("../escape").is_err());
}

fn s3_url() -> Option<String> {
    sprintlens_testkit::service_url("SPRINTLENS_TEST_S3_URL")
}

async fn s3() -> Option<(Arc<dyn BlobStore>, ())> {
    let store =
        ObjectBlobStore::open(BlobOptions::from_url("blobs.url", &s3_url()?, SUITE_MAX).unwrap())
            .unwrap();
    store.probe().await.unwrap();
    Some((Arc::new(store) as Arc<dyn BlobStore>, ()))
}

/// The same suite against the S3 server of the local stack (Garage).
mod s3_bucket {
    use super::*;
    sprintlens_testkit::blob_store_suite!(s3);
}

#[tokio::test]
async fn s3_capabilities_are_probed_not_assumed() {
    let Some(url) = s3_url() else { return };
    let store =
        ObjectBlobStore::open(BlobOptions::from_url("blobs.url", &url, 1024).unwrap()).unwrap();
    assert!(
        !store.capabilities().conditional_create,
        "unknown until probed"
    );
    let caps = store.probe().await.unwrap();
    // Garage ignores If-None-Match: the probe sees its second create-only put succeed.
    assert!(!caps.conditional_create);
    let ws = sprintlens_core::WorkspaceId::new();
    let key = sprintlens_core::BlobKey::new("once").unwrap();
    let err = store
        .put(
            ws,
            &key,
            bytes::Bytes::from_static(b"x"),
            sprintlens_core::PutOptions {
                content_type: None,
                mode: sprintlens_core::PutMode::Create,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sprintlens_core::ErrorKind::Unsupported);
    assert!(
        store.head(ws, &key).await.is_err(),
        "nothing may be written"
    );
}

#[test]
fn s3_urls_name_bad_parameters_and_redact_secrets() {
    let o = BlobOptions::from_url(
        "blobs.url",
        "s3://b?endpoint=http://h:9000&region=r&access_key_id=k&secret_access_key=SECRET&allow_http=true",
        10,
    )
    .unwrap();
    assert!(!format!("{o:?}").contains("SECRET"));
    let e = BlobOptions::from_url("blobs.url", "s3://b?endpont=x", 10).unwrap_err();
    assert_eq!(e.field(), Some("blobs.url?endpont"));
    assert!(BlobOptions::from_url("blobs.url", "s3://", 10).is_err());
}

#[test]
fn payload_signing_defaults_follow_the_transport() {
    let loc = |url: &str| match BlobOptions::from_url("blobs.url", url, 10)
        .unwrap()
        .location
    {
        Location::S3(l) => l,
        other => panic!("{other:?}"),
    };
    assert!(!loc("s3://b?endpoint=http://h:9000&allow_http=true").effective_unsigned_payload());
    assert!(loc("s3://b?endpoint=https://minio.internal").effective_unsigned_payload());
    assert!(loc("s3://b").effective_unsigned_payload(), "AWS is https");
    assert!(!loc("s3://b?endpoint=https://h&unsigned_payload=false").effective_unsigned_payload());
    assert!(
        loc("s3://b?endpoint=http://h&allow_http=true&unsigned_payload=true")
            .effective_unsigned_payload()
    );
    assert_eq!(
        BlobOptions::from_url("blobs.url", "s3://b?unsigned_payload=yes", 10)
            .unwrap_err()
            .field(),
        Some("blobs.url?unsigned_payload")
    );
}
