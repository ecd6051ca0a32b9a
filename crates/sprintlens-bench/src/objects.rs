//! `bench objects`: upload and download throughput of the S3 blob adapter against a plain HTTP
//! client (curl with a presigned URL) on the same server, and against copying the same bytes on
//! local disk (the ceiling), in one run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use sprintlens_core::{BlobKey, BlobStore, ByteStream, PresignMethod, PutOptions, WorkspaceId};
use sprintlens_objectstore::{BlobOptions, ObjectBlobStore};

use crate::peak_rss_mib;

const MB: u64 = 1024 * 1024;
const READ_CHUNK: usize = 8 * 1024 * 1024;

/// A file of `size` bytes that differ along the file (nothing compresses or dedups).
fn make_source(dir: &Path, size: u64) -> Result<PathBuf> {
    use std::io::Write;
    let path = dir.join(format!("source-{size}"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut left = size;
    while left > 0 {
        for b in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(path)
}

/// The file as a stream of 8 MiB chunks, read off the async workers.
fn file_stream(path: PathBuf) -> ByteStream {
    let file = std::fs::File::open(path).map(|f| Arc::new(std::sync::Mutex::new(f)));
    Box::pin(futures::stream::unfold(Some(file), |state| async move {
        let file = match state? {
            Ok(f) => f,
            Err(e) => {
                return Some((
                    Err(sprintlens_core::Error::backend("bench", "read", e)),
                    None,
                ));
            }
        };
        let reader = file.clone();
        let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut filled = 0;
            let mut f = reader.lock().expect("one reader");
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            Ok(buf)
        })
        .await
        .expect("reader task");
        match chunk {
            Ok(b) if b.is_empty() => None,
            Ok(b) => Some((Ok(Bytes::from(b)), Some(Ok(file)))),
            Err(e) => Some((
                Err(sprintlens_core::Error::backend("bench", "read", e)),
                None,
            )),
        }
    }))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MB as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn curl(args: &[&str]) -> Result<()> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-o", "/dev/null"])
        .args(args)
        .output()
        .context("running curl (installed by `cargo xtask services up`)")?;
    if !out.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

struct Row {
    size: u64,
    disk: Duration,
    ours_up: Duration,
    curl_up: Duration,
    ours_down: Duration,
    curl_down: Duration,
    peak_mib: f64,
}

/// Runs the benchmark for each size (bytes).
pub async fn run(sizes: &[u64]) -> Result<()> {
    let url = std::env::var("SPRINTLENS_TEST_S3_URL")
        .context("SPRINTLENS_TEST_S3_URL (run through `cargo xtask bench objects`)")?;
    let mut options = BlobOptions::from_url("blobs.url", &url, 5 * 1024 * MB)?;
    // Tuning under test, from the same keys a service would set.
    if let Ok(v) = std::env::var("SPRINTLENS_BLOBS_PART_SIZE_BYTES") {
        options.part_size_bytes = v.parse()?;
        options.multipart_threshold_bytes = options.part_size_bytes;
    }
    if let Ok(v) = std::env::var("SPRINTLENS_BLOBS_UPLOAD_CONCURRENCY") {
        options.upload_concurrency = v.parse()?;
    }
    let mut unsigned = false;
    if let sprintlens_objectstore::Location::S3(l) = &mut options.location {
        if let Ok(v) = std::env::var("SPRINTLENS_BENCH_UNSIGNED_PAYLOAD") {
            l.unsigned_payload = Some(v == "1");
        }
        unsigned = l.effective_unsigned_payload();
    }
    println!(
        "S3 adapter: multipart above {} MiB, {} MiB parts, {} in flight, unsigned payload {unsigned}",
        options.multipart_threshold_bytes / MB,
        options.part_size_bytes / MB,
        options.upload_concurrency
    );
    let store = ObjectBlobStore::open(options)?;
    let ws = WorkspaceId::new();
    let dir = tempfile::tempdir_in(std::env::var("SPRINTLENS_BENCH_DIR").unwrap_or(".".into()))?;
    let mut rows = Vec::new();
    for &size in sizes {
        let reps = match size {
            s if s <= 4 * MB => 15,
            s if s <= 256 * MB => 3,
            _ => 1,
        };
        let src = make_source(dir.path(), size)?;
        let key = BlobKey::new(&format!("bench/object-{size}"))?;
        let curl_key = BlobKey::new(&format!("bench/curl-{size}"))?;
        let (mut disk, mut ours_up, mut curl_up, mut ours_down, mut curl_down) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            // Ceiling: the same bytes copied on local disk (page cache included, as for the servers).
            let dst = dir.path().join("copy");
            let t = Instant::now();
            std::fs::copy(&src, &dst)?;
            let f = std::fs::File::open(&dst)?;
            f.sync_all()?;
            disk.push(t.elapsed());
            std::fs::remove_file(&dst)?;

            let t = Instant::now();
            let meta = store
                .put_stream(ws, &key, file_stream(src.clone()), PutOptions::default())
                .await?;
            ours_up.push(t.elapsed());
            anyhow::ensure!(meta.size == size, "uploaded {} of {size}", meta.size);

            let put_url = store
                .presign(ws, &curl_key, PresignMethod::Put, Duration::from_secs(3600))
                .await?;
            let src_arg = src.display().to_string();
            let t = Instant::now();
            curl(&["-X", "PUT", "--upload-file", &src_arg, &put_url])?;
            curl_up.push(t.elapsed());

            let t = Instant::now();
            let (_, mut stream) = store.get_stream(ws, &key, None).await?;
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                got += chunk?.len() as u64;
            }
            ours_down.push(t.elapsed());
            anyhow::ensure!(got == size, "downloaded {got} of {size}");

            let get_url = store
                .presign(ws, &key, PresignMethod::Get, Duration::from_secs(3600))
                .await?;
            let t = Instant::now();
            curl(&[&get_url])?;
            curl_down.push(t.elapsed());
        }
        store.delete(ws, &key).await?;
        store.delete(ws, &curl_key).await?;
        std::fs::remove_file(&src)?;
        let row = Row {
            size,
            disk: median(disk),
            ours_up: median(ours_up),
            curl_up: median(curl_up),
            ours_down: median(ours_down),
            curl_down: median(curl_down),
            peak_mib: peak_rss_mib(),
        };
        println!(
            "{:>6} MiB ×{reps}: disk copy {:>7.1} MB/s | upload ours {:>7.1} MB/s, curl {:>7.1} MB/s ({:.2}× curl, {:.2}× disk) | download ours {:>7.1} MB/s, curl {:>7.1} MB/s ({:.2}× curl, {:.2}× disk) | peak RSS {:.0} MiB",
            size / MB,
            mbps(size, row.disk),
            mbps(size, row.ours_up),
            mbps(size, row.curl_up),
            row.curl_up.as_secs_f64() / row.ours_up.as_secs_f64(),
            row.disk.as_secs_f64() / row.ours_up.as_secs_f64(),
            mbps(size, row.ours_down),
            mbps(size, row.curl_down),
            row.curl_down.as_secs_f64() / row.ours_down.as_secs_f64(),
            row.disk.as_secs_f64() / row.ours_down.as_secs_f64(),
            row.peak_mib,
        );
        rows.push(row);
    }
    println!();
    println!(
        "| object | disk copy (ceiling) | upload: ours | upload: curl PUT (presigned) | ours / curl | ours / disk | download: ours (streamed) | download: curl GET | ours / curl | ours / disk | peak RSS after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} MiB | {:.0} MB/s | {:.0} MB/s | {:.0} MB/s | {:.2}× | {:.2}× | {:.0} MB/s | {:.0} MB/s | {:.2}× | {:.2}× | {:.0} MiB |",
            r.size / MB,
            mbps(r.size, r.disk),
            mbps(r.size, r.ours_up),
            mbps(r.size, r.curl_up),
            r.curl_up.as_secs_f64() / r.ours_up.as_secs_f64(),
            r.disk.as_secs_f64() / r.ours_up.as_secs_f64(),
            mbps(r.size, r.ours_down),
            mbps(r.size, r.curl_down),
            r.curl_down.as_secs_f64() / r.ours_down.as_secs_f64(),
            r.disk.as_secs_f64() / r.ours_down.as_secs_f64(),
            r.peak_mib,
        );
    }
    Ok(())
}
