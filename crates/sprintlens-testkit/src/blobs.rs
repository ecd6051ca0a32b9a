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
