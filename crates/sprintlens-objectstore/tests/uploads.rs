//! Interrupted uploads: nothing visible, and the janitor (`sweep_uploads`) clears what is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use sprintlens_core::{BlobKey, BlobStore, ByteStream, ErrorKind, PutOptions, WorkspaceId};
use sprintlens_objectstore::{BlobOptions, Location, ObjectBlobStore};

const MB: u64 = 1024 * 1024;

fn s3_url() -> Option<String> {
    sprintlens_testkit::service_url("SPRINTLENS_TEST_S3_URL")
}

/// 64 chunks of 1 MiB, but the stream stalls for ever after `stall_after` chunks (a client that
/// went quiet); `sent` counts the chunks handed out.
fn stalling_64mb(stall_after: u64, sent: Arc<AtomicU64>) -> ByteStream {
    let chunks = futures::stream::iter(0..64u64).map(move |i| {
        sent.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from(vec![i as u8; MB as usize]))
    });
    Box::pin(
        chunks
            .take(stall_after as usize)
            .chain(futures::stream::pending()),
    )
}

/// Starts a 64 MB streamed upload in its own task and returns once 40 MB were handed out and the
/// stream stalled (the task is still waiting on it).
async fn upload_stalled_at_40mb(
    store: &Arc<ObjectBlobStore>,
    ws: WorkspaceId,
    key: &BlobKey,
) -> tokio::task::JoinHandle<sprintlens_core::Result<sprintlens_core::BlobMeta>> {
    let sent = Arc::new(AtomicU64::new(0));
    let task = {
        let (store, key, sent) = (store.clone(), key.clone(), sent.clone());
        tokio::spawn(async move {
            store
                .put_stream(ws, &key, stalling_64mb(40, sent), PutOptions::default())
                .await
        })
    };
    while sent.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task
}

async fn eventually_no_uploads(store: &ObjectBlobStore, ws: WorkspaceId) -> usize {
    for _ in 0..100 {
        let n = store.incomplete_uploads(Some(ws)).await.unwrap().len();
        if n == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.incomplete_uploads(Some(ws)).await.unwrap().len()
}

#[tokio::test]
async fn interrupted_64mb_s3_upload_leaves_no_object_and_the_janitor_no_upload() {
    let Some(url) = s3_url() else { return };
    let options = BlobOptions::from_url("blobs.url", &url, 128 * MB).unwrap();
    let Location::S3(loc) = options.location.clone() else {
        panic!("not s3")
    };
    let store = Arc::new(ObjectBlobStore::open(options).unwrap());
    let ws = WorkspaceId::new();
    let key = BlobKey::new("uploads/video.bin").unwrap();

    // 1. The caller goes away mid-way (its task is cancelled after 40 of 64 MB).
    let task = upload_stalled_at_40mb(&store, ws, &key).await;
    // The multipart upload exists while the stream is stalled (so the checks below can fail).
    let mut open = 0;
    for _ in 0..100 {
        open = store.incomplete_uploads(Some(ws)).await.unwrap().len();
        if open == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 1, "a multipart upload should be in progress");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        store.head(ws, &key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        eventually_no_uploads(&store, ws).await,
        0,
        "cancelled upload aborted"
    );
    println!("cancelled 64 MB upload after 40 MB: no object, no incomplete upload");

    // 2. The process dies (kill -9): nothing can abort; the upload stays until the janitor runs.
    let raw = loc.builder().build().unwrap();
    let path = object_store::path::Path::from(format!("{ws}/uploads/killed.bin"));
    let mut upload = raw.put_multipart(&path).await.unwrap();
    upload
        .put_part(vec![7u8; 5 * MB as usize].into())
        .await
        .unwrap();
    drop(upload); // never completed, never aborted
    assert_eq!(store.incomplete_uploads(Some(ws)).await.unwrap().len(), 1);
    let fresh = store
        .sweep_uploads(Some(ws), Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!(
        (fresh.seen, fresh.aborted),
        (1, 0),
        "younger than the cut-off"
    );
    let dry = store
        .sweep_uploads(Some(ws), Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!((dry.seen, dry.aborted), (1, 1));
    assert_eq!(store.incomplete_uploads(Some(ws)).await.unwrap().len(), 1);
    let swept = store
        .sweep_uploads(Some(ws), Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(swept.aborted, 1);
    assert!(store.incomplete_uploads(Some(ws)).await.unwrap().is_empty());
    assert!(store.list(ws, "", None, 10).await.unwrap().items.is_empty());
    println!(
        "killed upload: janitor aborted {} of {}",
        swept.aborted, swept.seen
    );
}

#[tokio::test]
async fn cancelled_folder_upload_leaves_nothing_and_stale_staging_files_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = Arc::new(
        ObjectBlobStore::open(BlobOptions {
            max_object_bytes: 128 * MB,
            ..BlobOptions::new(Location::Folder(root.clone()))
        })
        .unwrap(),
    );
    let ws = WorkspaceId::new();
    let key = BlobKey::new("uploads/video.bin").unwrap();
    let task = upload_stalled_at_40mb(&store, ws, &key).await;
    task.abort();
    let _ = task.await;
    assert_eq!(
        store.head(ws, &key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // object_store aborts local uploads by deleting the staging file; give the abort a moment.
    let staging = |root: &std::path::Path| -> usize {
        let mut n = 0;
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else if e.file_name().to_string_lossy().contains('#') {
                    n += 1;
                }
            }
        }
        n
    };
    for _ in 0..100 {
        if staging(&root) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(staging(&root), 0, "cancelled upload left a staging file");
    // What kill -9 leaves behind: a staging file. The janitor removes it, and only it.
    let wsdir = root.join(ws.to_string()).join("uploads");
    std::fs::create_dir_all(&wsdir).unwrap();
    std::fs::write(wsdir.join("video.bin#3"), vec![0u8; 1024]).unwrap();
    store
        .put(
            ws,
            &BlobKey::new("uploads/kept.bin").unwrap(),
            Bytes::from_static(b"kept"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let fresh = store
        .sweep_uploads(Some(ws), Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!((fresh.seen, fresh.aborted), (1, 0));
    let swept = store
        .sweep_uploads(None, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!((swept.seen, swept.aborted), (1, 1));
    assert_eq!(staging(&root), 0);
    assert_eq!(
        &store
            .get(ws, &BlobKey::new("uploads/kept.bin").unwrap())
            .await
            .unwrap()
            .1[..],
        b"kept"
    );
}
