//! Incomplete multipart uploads: listing and aborting them (the janitor's half that object_store
//! does not cover), on S3 and in local folders.

use std::time::{Duration, SystemTime};

use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use serde::Deserialize;
use sprintlens_core::{Error, Result, UploadSweep};

use crate::S3Location;

/// One incomplete multipart upload, as S3's ListMultipartUploads reports it.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IncompleteUpload {
    /// The object key it would create (`<workspace>/<key>`).
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// When it was started (RFC 3339, as the server wrote it).
    pub initiated: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<IncompleteUpload>,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::backend("s3", "sweep_uploads", e.to_string())
}

/// Percent-encodes a query value the way SigV4 canonicalises it (RFC 3986 unreserved kept).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lists every incomplete upload in the bucket under `prefix` (all pages) with SigV4-signed
/// requests.
pub(crate) async fn list(
    s3: &AmazonS3,
    loc: &S3Location,
    options: &ClientOptions,
    prefix: Option<&str>,
) -> Result<Vec<IncompleteUpload>> {
    let client = ReqwestConnector::default()
        .connect(options)
        .map_err(failed)?;
    let region = loc.region.as_deref().unwrap_or("us-east-1");
    let base = match &loc.endpoint {
        Some(e) => format!("{}/{}", e.trim_end_matches('/'), loc.bucket),
        None => format!("https://s3.{region}.amazonaws.com/{}", loc.bucket),
    };
    let mut out = Vec::new();
    let mut markers: Option<(String, String)> = None;
    loop {
        let credential = s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| Error::unavailable("s3", "sweep_uploads", false, Some(Box::new(e))))?;
        let mut url = format!("{base}?uploads=");
        if let Some(p) = prefix {
            url.push_str(&format!("&prefix={}", encode(p)));
        }
        if let Some((key, id)) = &markers {
            url.push_str(&format!(
                "&key-marker={}&upload-id-marker={}",
                encode(key),
                encode(id)
            ));
        }
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(&url)
            .body(HttpRequestBody::empty())
            .map_err(failed)?;
        AwsAuthorizer::new(&credential, "s3", region)
            .try_authorize(&mut request, None)
            .map_err(failed)?;
        let response = client.execute(request).await.map_err(failed)?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!(
                "ListMultipartUploads answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let page: ListResult = quick_xml::de::from_reader(body.as_ref()).map_err(failed)?;
        out.extend(page.uploads);
        match (
            page.is_truncated,
            page.next_key_marker,
            page.next_upload_id_marker,
        ) {
            (true, Some(k), Some(u)) => markers = Some((k, u)),
            _ => return Ok(out),
        }
    }
}

/// Aborts incomplete S3 uploads started before `older_than` ago.
pub(crate) async fn sweep_s3(
    s3: &AmazonS3,
    uploads: Vec<IncompleteUpload>,
    older_than: Duration,
    dry_run: bool,
) -> Result<UploadSweep> {
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(older_than)
            .map_err(|e| Error::invalid("older_than", e.to_string()))?;
    let mut sweep = UploadSweep {
        seen: uploads.len() as u64,
        aborted: 0,
    };
    for u in uploads {
        // An unreadable start time is treated as old: an upload nobody can date is abandoned.
        let old = chrono::DateTime::parse_from_rfc3339(&u.initiated)
            .map(|t| t.with_timezone(&chrono::Utc) <= cutoff)
            .unwrap_or(true);
        if !old {
            continue;
        }
        if !dry_run {
            let path = Path::parse(&u.key).map_err(failed)?;
            match s3.abort_multipart(&path, &u.upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        sweep.aborted += 1;
    }
    Ok(sweep)
}

/// Whether a file name is one of object_store's multipart staging files (`NAME#DIGITS`).
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes staging files of interrupted multipart uploads under `root` older than `older_than`.
pub(crate) fn sweep_folder(
    root: &std::path::Path,
    older_than: Duration,
    dry_run: bool,
) -> Result<UploadSweep> {
    let io =
        |e: std::io::Error| Error::unavailable("file", "sweep_uploads", false, Some(Box::new(e)));
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut sweep = UploadSweep::default();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            if !is_staging(&entry.file_name().to_string_lossy()) {
                continue;
            }
            sweep.seen += 1;
            let modified = entry.metadata().and_then(|m| m.modified()).map_err(io)?;
            if modified <= cutoff {
                if !dry_run {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                sweep.aborted += 1;
            }
        }
    }
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_and_encoding() {
        assert!(is_staging("report.pdf#3"));
        assert!(!is_staging("report.pdf#"));
        assert!(!is_staging("a#b"));
        assert!(!is_staging("plain"));
        assert_eq!(encode("ws/a b+c~"), "ws%2Fa%20b%2Bc~");
    }

    #[test]
    fn parses_list_multipart_uploads() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <IsTruncated>true</IsTruncated>
  <Upload><Key>ws/a&amp;b</Key><UploadId>u1</UploadId><Initiated>2026-11-24T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>k2</Key><UploadId>u2</UploadId><Initiated>2026-11-24T11:00:00Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let r: ListResult = quick_xml::de::from_str(xml).unwrap();
        assert!(r.is_truncated);
        assert_eq!(r.uploads.len(), 2);
        assert_eq!(r.uploads[0].key, "ws/a&b");
        assert_eq!(r.next_upload_id_marker.as_deref(), Some("u2"));
        let empty: ListResult = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty());
    }
}
