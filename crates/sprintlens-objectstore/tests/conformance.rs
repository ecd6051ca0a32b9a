//! The `BlobStore` conformance suite against a local folder and memory.

use std::sync::Arc;

use sprintlens_core::BlobStore;
use sprintlens_objectstore::{BlobOptions, Location, ObjectBlobStore};
use tempfile::TempDir;

async fn folder() -> (Arc<dyn BlobStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectBlobStore::open(BlobOptions {
        location: Location::Folder(dir.path().join("blobs")),
        max_object_bytes: 1024 * 1024,
    })
    .unwrap();
    (Arc::new(store), dir)
}

async fn memory() -> (Arc<dyn BlobStore>, ()) {
    let store = ObjectBlobStore::open(BlobOptions {
        location: Location::Memory,
        max_object_bytes: 1024 * 1024,
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
        location: Location::Folder(root.clone()),
        max_object_bytes: 1024,
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
