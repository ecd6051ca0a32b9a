//! `BlobStore` conformance cases.

use std::sync::Arc;

use bytes::Bytes;
use sprintlens_core::blob::sha256_hex;
use sprintlens_core::*;

type B = Arc<dyn BlobStore>;

fn key(s: &str) -> BlobKey {
    BlobKey::new(s).unwrap()
}

/// Put records size, content type and SHA-256; get and head return them.
pub async fn put_get_head_round_trip(b: B) {
    let ws = WorkspaceId::new();
    let data = Bytes::from(vec![7u8; 100_003]);
    let opts = PutOptions {
        content_type: Some("application/pdf".into()),
        mode: PutMode::Overwrite,
    };
    let meta = b
        .put(ws, &key("files/report.pdf"), data.clone(), opts)
        .await
        .unwrap();
    assert_eq!(meta.size, 100_003);
    assert_eq!(meta.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    let head = b.head(ws, &key("files/report.pdf")).await.unwrap();
    assert_eq!(head.size, 100_003);
    assert_eq!(head.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(head.sha256, meta.sha256);
    let (m, got) = b.get_verified(ws, &key("files/report.pdf")).await.unwrap();
    assert_eq!(got, data);
    assert_eq!(m.sha256, meta.sha256);
    // Overwrite replaces bytes and metadata.
    b.put(
        ws,
        &key("files/report.pdf"),
        Bytes::from_static(b"v2"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let (m, got) = b.get(ws, &key("files/report.pdf")).await.unwrap();
    assert_eq!(&got[..], b"v2");
    assert_eq!(m.size, 2);
    assert_eq!(m.content_type, None);
    // Empty objects are fine.
    b.put(ws, &key("empty"), Bytes::new(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(b.head(ws, &key("empty")).await.unwrap().size, 0);
}

/// Ranges return exactly their bytes, clamped to the object's size.
pub async fn ranged_reads(b: B) {
    let ws = WorkspaceId::new();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    b.put(
        ws,
        &key("r"),
        Bytes::from(data.clone()),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        &b.get_range(ws, &key("r"), 0..10).await.unwrap()[..],
        &data[0..10]
    );
    assert_eq!(
        &b.get_range(ws, &key("r"), 4_321..8_765).await.unwrap()[..],
        &data[4_321..8_765]
    );
    assert_eq!(
        &b.get_range(ws, &key("r"), 9_990..20_000).await.unwrap()[..],
        &data[9_990..]
    );
    let err = b.get_range(ws, &key("missing"), 0..1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 5..2;
    let err = b.get_range(ws, &key("r"), backwards).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// Listing by prefix pages through every key once, in order, and only under the prefix.
pub async fn list_by_prefix_pages(b: B) {
    let ws = WorkspaceId::new();
    let mut expected = Vec::new();
    for i in 0..23 {
        let k = format!("exports/{i:02}.csv");
        b.put(
            ws,
            &key(&k),
            Bytes::from(vec![1u8; i]),
            PutOptions::default(),
        )
        .await
        .unwrap();
        expected.push(k);
    }
    b.put(
        ws,
        &key("other/x"),
        Bytes::from_static(b"x"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    b.put(
        ws,
        &key("exportsnot/y"),
        Bytes::from_static(b"y"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let mut page = None;
    let mut seen = Vec::new();
    loop {
        let p = b.list(ws, "exports/", page, 5).await.unwrap();
        assert!(p.items.len() <= 5);
        seen.extend(p.items.into_iter().map(|m| (m.key.to_string(), m.size)));
        match p.next {
            Some(t) => page = Some(t),
            None => break,
        }
    }
    let keys: Vec<String> = seen.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, expected);
    assert_eq!(seen[7].1, 7);
    let all = b.list(ws, "", None, 1000).await.unwrap();
    assert_eq!(all.items.len(), 25);
}

/// Missing keys are not found; delete says whether something was there.
pub async fn delete_and_not_found(b: B) {
    let ws = WorkspaceId::new();
    b.put(
        ws,
        &key("a/b"),
        Bytes::from_static(b"1"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert!(b.delete(ws, &key("a/b")).await.unwrap());
    assert!(!b.delete(ws, &key("a/b")).await.unwrap());
    assert_eq!(
        b.get(ws, &key("a/b")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.head(ws, &key("a/b")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(b.list(ws, "a/", None, 10).await.unwrap().items.is_empty());
}

/// Another workspace cannot read, list or delete a blob.
pub async fn workspaces_are_isolated(b: B) {
    let (wa, wb) = (WorkspaceId::new(), WorkspaceId::new());
    b.put(
        wa,
        &key("secret.txt"),
        Bytes::from_static(b"A only"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        b.get(wb, &key("secret.txt")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(b.list(wb, "", None, 100).await.unwrap().items.is_empty());
    assert!(!b.delete(wb, &key("secret.txt")).await.unwrap());
    assert_eq!(
        &b.get(wa, &key("secret.txt")).await.unwrap().1[..],
        b"A only"
    );
}

/// Above the limit a put is refused and nothing is stored.
pub async fn too_large_writes_nothing(b: B) {
    let ws = WorkspaceId::new();
    let limit = b.capabilities().max_object_bytes;
    if limit > 64 * 1024 * 1024 {
        return; // Not exercised for huge limits: the suite does not allocate that much.
    }
    let data = Bytes::from(vec![0u8; limit as usize + 1]);
    let err = b
        .put(ws, &key("big"), data, PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        b.head(ws, &key("big")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// Create-only puts conflict on an existing key where supported, and say unsupported elsewhere.
pub async fn create_mode_conflicts_or_is_unsupported(b: B) {
    let ws = WorkspaceId::new();
    let create = PutOptions {
        content_type: None,
        mode: PutMode::Create,
    };
    let first = b
        .put(ws, &key("once"), Bytes::from_static(b"1"), create.clone())
        .await;
    if !b.capabilities().conditional_create {
        assert_eq!(first.unwrap_err().kind(), ErrorKind::Unsupported);
        return;
    }
    first.unwrap();
    let err = b
        .put(ws, &key("once"), Bytes::from_static(b"2"), create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(&b.get(ws, &key("once")).await.unwrap().1[..], b"1");
}

/// A plain HTTP/1.1 client (no SDK, no TLS): `(status, body)`.
pub fn plain_http(method: &str, url: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Ok((status, body))
}

/// Presigned URLs work with a plain HTTP client for their key, and stop working once expired; a backend
/// without them says unsupported.
pub async fn presigned_urls_work_and_expire(b: B) {
    let ws = WorkspaceId::new();
    let k = key("shared/report.txt");
    let res = b
        .presign(
            ws,
            &k,
            PresignMethod::Get,
            std::time::Duration::from_secs(60),
        )
        .await;
    if !b.capabilities().presign {
        assert_eq!(res.unwrap_err().kind(), ErrorKind::Unsupported);
        return;
    }
    b.put(
        ws,
        &k,
        Bytes::from_static(b"hello from sprintlens"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let url = res.unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || plain_http("GET", &url, b""))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, &body[..]), (200, &b"hello from sprintlens"[..]));
    // PUT through a presigned URL, read back through the store.
    let up = key("shared/upload.bin");
    let url = b
        .presign(
            ws,
            &up,
            PresignMethod::Put,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let (status, _) = tokio::task::spawn_blocking(move || plain_http("PUT", &url, b"uploaded"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(&b.get(ws, &up).await.unwrap().1[..], b"uploaded");
    // Expired.
    let url = b
        .presign(
            ws,
            &k,
            PresignMethod::Get,
            std::time::Duration::from_secs(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (status, _) = tokio::task::spawn_blocking(move || plain_http("GET", &url, b""))
        .await
        .unwrap()
        .unwrap();
    assert!(
        (400..500).contains(&status),
        "expired URL answered {status}"
    );
    let err = b
        .presign(ws, &k, PresignMethod::Get, std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("expires_in"));
}

/// Bytes that differ at every position (so reordered or dropped parts are caught): `len` bytes
/// in chunks of `chunk`.
fn patterned(len: usize, chunk: usize) -> (Vec<Bytes>, Vec<u8>) {
    let all: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let chunks = all.chunks(chunk).map(Bytes::copy_from_slice).collect();
    (chunks, all)
}

fn stream_of(chunks: Vec<Bytes>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

async fn collect(mut s: ByteStream) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

/// Needs room for a streamed object of this many bytes; smaller limits skip the case.
const STREAMED: usize = 13 * 1024 * 1024 + 12_345;

/// A stream longer than the multipart threshold (8 MiB default) round-trips byte for byte, with
/// its SHA-256; streamed and ranged reads (across a part boundary) return exactly the bytes.
pub async fn streamed_put_in_parts_round_trips(b: B) {
    if b.capabilities().max_object_bytes < STREAMED as u64 {
        return;
    }
    let ws = WorkspaceId::new();
    let (chunks, all) = patterned(STREAMED, 256 * 1024 + 7);
    let opts = PutOptions {
        content_type: Some("video/mp4".into()),
        mode: PutMode::Overwrite,
    };
    let meta = b
        .put_stream(ws, &key("media/clip.mp4"), stream_of(chunks), opts)
        .await
        .unwrap();
    assert_eq!(meta.size, STREAMED as u64);
    assert_eq!(meta.sha256.as_deref(), Some(sha256_hex(&all).as_str()));
    let head = b.head(ws, &key("media/clip.mp4")).await.unwrap();
    assert_eq!((head.size, head.sha256.clone()), (meta.size, meta.sha256));
    assert_eq!(head.content_type.as_deref(), Some("video/mp4"));
    let (m, s) = b
        .get_stream(ws, &key("media/clip.mp4"), None)
        .await
        .unwrap();
    assert_eq!(m.size, STREAMED as u64);
    let got = collect(s).await;
    assert!(got == all, "streamed read differs from what was written");
    let boundary = 8 * 1024 * 1024u64;
    let (_, s) = b
        .get_stream(
            ws,
            &key("media/clip.mp4"),
            Some(boundary - 10..boundary + 10),
        )
        .await
        .unwrap();
    assert_eq!(
        collect(s).await,
        &all[boundary as usize - 10..boundary as usize + 10]
    );
    // Clamped past the end, and empty beyond it.
    let (_, s) = b
        .get_stream(
            ws,
            &key("media/clip.mp4"),
            Some(STREAMED as u64 - 3..u64::MAX),
        )
        .await
        .unwrap();
    assert_eq!(collect(s).await, &all[STREAMED - 3..]);
    let (_, s) = b
        .get_stream(ws, &key("media/clip.mp4"), Some(u64::MAX - 1..u64::MAX))
        .await
        .unwrap();
    assert!(collect(s).await.is_empty());
    assert_eq!(
        b.get_stream(ws, &key("missing"), None)
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotFound
    );
    // A small stream is one request and round-trips too.
    b.put_stream(
        ws,
        &key("small"),
        stream_of(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")]),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(&b.get(ws, &key("small")).await.unwrap().1[..], b"abc");
}

/// A stream that never ends is refused once it passes the limit (it is never fully buffered); a
/// stream that fails half-way after the multipart threshold leaves nothing at a new key and the
/// old object untouched at an existing one.
pub async fn failed_or_refused_streams_leave_nothing(b: B) {
    let limit = b.capabilities().max_object_bytes;
    if limit < STREAMED as u64 || limit > 256 * 1024 * 1024 {
        return;
    }
    let ws = WorkspaceId::new();
    let endless: ByteStream = Box::pin(futures::stream::repeat_with(|| {
        Ok(Bytes::from(vec![1u8; 1024 * 1024]))
    }));
    let err = b
        .put_stream(ws, &key("endless"), endless, PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        b.head(ws, &key("endless")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    b.put(
        ws,
        &key("kept"),
        Bytes::from_static(b"old"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    for k in ["fresh", "kept"] {
        let (chunks, _) = patterned(STREAMED, 1024 * 1024);
        let failing = futures::stream::iter(chunks.into_iter().take(10).map(Ok).chain(
            std::iter::once(Err(Error::unavailable(
                "client",
                "read upload body",
                true,
                None,
            ))),
        ));
        let err = b
            .put_stream(ws, &key(k), Box::pin(failing), PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "the stream's own error");
    }
    assert_eq!(
        b.head(ws, &key("fresh")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let (m, data) = b.get_verified(ws, &key("kept")).await.unwrap();
    assert_eq!((&data[..], m.size), (&b"old"[..], 3));
    let keys: Vec<String> = b
        .list(ws, "", None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(keys, ["kept"]);
}

/// Copy carries bytes and metadata, replaces the target, and names a missing source.
pub async fn copy_keeps_bytes_and_metadata(b: B) {
    let ws = WorkspaceId::new();
    let opts = PutOptions {
        content_type: Some("text/csv".into()),
        mode: PutMode::Overwrite,
    };
    let src = b
        .put(
            ws,
            &key("exports/a.csv"),
            Bytes::from_static(b"id,x\n1,2\n"),
            opts,
        )
        .await
        .unwrap();
    b.put(
        ws,
        &key("exports/b.csv"),
        Bytes::from_static(b"stale"),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let copied = b
        .copy(ws, &key("exports/a.csv"), &key("exports/b.csv"))
        .await
        .unwrap();
    assert_eq!(copied.sha256, src.sha256);
    assert_eq!(copied.content_type.as_deref(), Some("text/csv"));
    let (m, data) = b.get_verified(ws, &key("exports/b.csv")).await.unwrap();
    assert_eq!(&data[..], b"id,x\n1,2\n");
    assert_eq!(m.size, 9);
    assert_eq!(
        &b.get(ws, &key("exports/a.csv")).await.unwrap().1[..],
        b"id,x\n1,2\n"
    );
    assert_eq!(
        b.copy(ws, &key("nope"), &key("exports/c.csv"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.head(ws, &key("exports/c.csv")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// The same bytes stored content-addressed twice are one object; no staging copy is left.
pub async fn content_addressed_bytes_are_stored_once(b: B) {
    let ws = WorkspaceId::new();
    let data = Bytes::from_static(b"the same attachment");
    let (first, new) = b
        .put_content_addressed(ws, blob::once(data.clone()), Some("text/plain".into()))
        .await
        .unwrap();
    assert!(new);
    assert_eq!(first.key.as_str(), format!("sha256/{}", sha256_hex(&data)));
    let (second, new) = b
        .put_content_addressed(ws, blob::once(data.clone()), None)
        .await
        .unwrap();
    assert!(!new, "identical bytes must not be stored again");
    assert_eq!(second.key, first.key);
    let all = b.list(ws, "", None, 100).await.unwrap().items;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        &b.get_verified(ws, &first.key).await.unwrap().1[..],
        &data[..]
    );
}

/// Workspaces holding blobs are listed (the janitor walks them).
pub async fn workspaces_with_blobs_are_listed(b: B) {
    let (wa, wb) = (WorkspaceId::new(), WorkspaceId::new());
    for ws in [wa, wb] {
        b.put(
            ws,
            &key("x"),
            Bytes::from_static(b"1"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    }
    let listed = b.workspaces().await.unwrap();
    assert!(listed.contains(&wa) && listed.contains(&wb), "{listed:?}");
    let mut dedup = listed.clone();
    dedup.dedup();
    assert_eq!(dedup, listed, "each workspace once");
}
