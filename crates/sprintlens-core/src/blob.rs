//! The [`BlobStore`] port: files and media, under a per-workspace prefix.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{Timestamp, WorkspaceId};
use crate::record::{Page, PageToken};

/// Longest blob key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A key within a workspace: `/`-separated segments, none empty, `.` or `..`, no control characters,
/// no backslash, not absolute. It can never escape the workspace prefix.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobKey(String);

impl BlobKey {
    /// Checks and wraps a key.
    pub fn new(key: &str) -> Result<Self> {
        let bad = |reason: &str| Err(Error::invalid("key", reason.to_string()));
        if key.is_empty() {
            return bad("must not be empty");
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::too_large(
                "key",
                key.len() as u64,
                MAX_KEY_BYTES as u64,
            ));
        }
        if key.starts_with('/') {
            return bad("must be relative (no leading `/`)");
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return bad("must not contain control characters or `\\`");
        }
        for seg in key.split('/') {
            if seg.is_empty() {
                return bad("must not contain empty segments");
            }
            if seg == "." || seg == ".." {
                return bad("must not contain `.` or `..` segments");
            }
            if seg.starts_with(".sprintlens") {
                return bad("segments starting with `.sprintlens` are reserved");
            }
        }
        Ok(BlobKey(key.to_string()))
    }
    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl TryFrom<String> for BlobKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        BlobKey::new(&s)
    }
}

impl From<BlobKey> for String {
    fn from(k: BlobKey) -> String {
        k.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({:?})", self.0)
    }
}

/// What is known of a stored blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// The key.
    pub key: BlobKey,
    /// Size in bytes.
    pub size: u64,
    /// MIME type given at put.
    pub content_type: Option<String>,
    /// Lowercase hex SHA-256 of the bytes, computed at put.
    pub sha256: Option<String>,
    /// When it was last written.
    pub last_modified: Option<Timestamp>,
}

/// How a put treats an existing blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it.
    #[default]
    Overwrite,
    /// Fail with [`Error::Conflict`] if it exists (needs `conditional_create`).
    Create,
}

/// Options of a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type.
    pub content_type: Option<String>,
    /// Overwrite or create-only.
    pub mode: PutMode,
}

/// What a presigned URL lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresignMethod {
    /// Read the blob.
    Get,
    /// Write the blob.
    Put,
}

/// Longest lifetime of a presigned URL (S3's limit).
pub const MAX_PRESIGN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Bytes flowing into or out of a blob, chunk by chunk.
pub type ByteStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// A [`ByteStream`] of one chunk.
pub fn once(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

/// What the janitor found and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UploadSweep {
    /// Incomplete multipart uploads seen.
    pub seen: u64,
    /// Incomplete uploads older than the cut-off that were aborted (or would be, in a dry run).
    pub aborted: u64,
}

/// What a blob backend can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BlobCapabilities {
    /// Atomic create-if-absent.
    pub conditional_create: bool,
    /// Presigned URLs.
    pub presign: bool,
    /// Largest object accepted, in bytes.
    pub max_object_bytes: u64,
}

/// Stores bytes by key within a workspace.
///
/// # Behavior
/// - Every call MUST touch only the workspace's own prefix; another workspace's blobs are invisible.
/// - `put` MUST refuse more than `max_object_bytes` with [`Error::TooLarge`] and store nothing.
/// - `put` MUST record size, content type and SHA-256, returned by `head` and `get`.
/// - `put` in [`PutMode::Create`] MUST return [`Error::Conflict`] if the key exists, or
///   [`Error::Unsupported`] when the backend cannot do it atomically.
/// - `get`, `get_range` and `head` MUST return [`Error::NotFound`] for a missing key.
/// - `get_range` MUST return exactly the bytes in the range (clamped to the size).
/// - `list` MUST return keys under the prefix in key order, pages without gaps or repeats.
/// - `delete` MUST return whether the blob existed.
/// - `presign` MUST return [`Error::Unsupported`] when `capabilities().presign` is false; otherwise the URL
///   MUST work with a plain HTTP client for that key only, and MUST stop working after `expires_in`.
/// - `put_stream` MUST hold at most a bounded amount of the stream in memory whatever its length,
///   refuse with [`Error::TooLarge`] as soon as the bytes received pass `max_object_bytes`, and on
///   any failure, refusal or cancellation leave no object (and no sidecar) visible at `key`; a
///   previous object at `key` stays as it was.
/// - `get_stream` MUST yield the bytes (of the range, clamped) without reading the whole object
///   into memory first.
/// - `copy` MUST copy bytes and metadata, replacing `to`, and return [`Error::NotFound`] if `from`
///   is missing.
/// - `workspaces` MUST list each workspace holding at least one blob, once.
/// - `sweep_uploads` MUST abort only incomplete uploads (of the workspace, when given) started
///   before `older_than` ago, and count without aborting when `dry_run`.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// The backend name.
    fn backend(&self) -> &'static str;
    /// What it can do.
    fn capabilities(&self) -> BlobCapabilities;
    /// Stores `data` at `key`.
    async fn put(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        data: Bytes,
        options: PutOptions,
    ) -> Result<BlobMeta>;
    /// The whole blob.
    async fn get(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<(BlobMeta, Bytes)>;
    /// A byte range of the blob.
    async fn get_range(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Range<u64>,
    ) -> Result<Bytes>;
    /// Metadata only.
    async fn head(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<BlobMeta>;
    /// Keys starting with `prefix` (a plain string prefix of the key).
    async fn list(
        &self,
        workspace: WorkspaceId,
        prefix: &str,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page<BlobMeta>>;
    /// Removes a blob.
    async fn delete(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<bool>;
    /// A URL with which a plain HTTP client may GET or PUT the blob until `expires_in` passes.
    async fn presign(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        method: PresignMethod,
        expires_in: std::time::Duration,
    ) -> Result<String>;
    /// Stores the bytes of `data` at `key`, in parts when large.
    async fn put_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        data: ByteStream,
        options: PutOptions,
    ) -> Result<BlobMeta>;
    /// The blob (or a byte range of it) as a stream.
    async fn get_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<(BlobMeta, ByteStream)>;
    /// Copies `from` to `to` within the workspace (server-side where the backend can).
    async fn copy(&self, workspace: WorkspaceId, from: &BlobKey, to: &BlobKey) -> Result<BlobMeta>;
    /// Workspaces that hold blobs.
    async fn workspaces(&self) -> Result<Vec<WorkspaceId>>;
    /// Aborts incomplete multipart uploads started more than `older_than` ago, in one workspace
    /// or (None) in all of them.
    async fn sweep_uploads(
        &self,
        workspace: Option<WorkspaceId>,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<UploadSweep>;
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<T: BlobStore + ?Sized> BlobStore for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn capabilities(&self) -> BlobCapabilities {
        (**self).capabilities()
    }
    async fn put(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        data: Bytes,
        options: PutOptions,
    ) -> Result<BlobMeta> {
        (**self).put(workspace, key, data, options).await
    }
    async fn get(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<(BlobMeta, Bytes)> {
        (**self).get(workspace, key).await
    }
    async fn get_range(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Range<u64>,
    ) -> Result<Bytes> {
        (**self).get_range(workspace, key, range).await
    }
    async fn head(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<BlobMeta> {
        (**self).head(workspace, key).await
    }
    async fn list(
        &self,
        workspace: WorkspaceId,
        prefix: &str,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page<BlobMeta>> {
        (**self).list(workspace, prefix, page, limit).await
    }
    async fn delete(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<bool> {
        (**self).delete(workspace, key).await
    }
    async fn presign(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        method: PresignMethod,
        expires_in: std::time::Duration,
    ) -> Result<String> {
        (**self).presign(workspace, key, method, expires_in).await
    }
    async fn put_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        data: ByteStream,
        options: PutOptions,
    ) -> Result<BlobMeta> {
        (**self).put_stream(workspace, key, data, options).await
    }
    async fn get_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<(BlobMeta, ByteStream)> {
        (**self).get_stream(workspace, key, range).await
    }
    async fn copy(&self, workspace: WorkspaceId, from: &BlobKey, to: &BlobKey) -> Result<BlobMeta> {
        (**self).copy(workspace, from, to).await
    }
    async fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        (**self).workspaces().await
    }
    async fn sweep_uploads(
        &self,
        workspace: Option<WorkspaceId>,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<UploadSweep> {
        (**self).sweep_uploads(workspace, older_than, dry_run).await
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Convenience methods over any [`BlobStore`].
#[async_trait]
pub trait BlobStoreExt: BlobStore {
    /// The whole blob, after checking its bytes against the SHA-256 recorded at put.
    async fn get_verified(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
    ) -> Result<(BlobMeta, Bytes)> {
        let (meta, data) = self.get(workspace, key).await?;
        if let Some(expected) = &meta.sha256 {
            let actual = sha256_hex(&data);
            if &actual != expected {
                return Err(Error::backend(
                    self.backend(),
                    "get_verified",
                    format!("sha256 mismatch for {key}: stored {expected}, read {actual}"),
                ));
            }
        }
        Ok((meta, data))
    }

    /// Stores `data` under `sha256/<hex of its SHA-256>`, so identical bytes are stored once.
    /// Returns the blob and whether it was new. The bytes are streamed to a staging key first
    /// (the hash is known only at the end), then copied into place unless already there.
    async fn put_content_addressed(
        &self,
        workspace: WorkspaceId,
        data: ByteStream,
        content_type: Option<String>,
    ) -> Result<(BlobMeta, bool)> {
        let staging = BlobKey::new(&format!("staging/{}", crate::id::EventId::new()))?;
        let options = PutOptions {
            content_type,
            mode: PutMode::Overwrite,
        };
        let staged = self.put_stream(workspace, &staging, data, options).await?;
        let outcome = async {
            let sha = staged.sha256.clone().ok_or_else(|| {
                Error::backend(
                    self.backend(),
                    "put_content_addressed",
                    "no sha256 recorded",
                )
            })?;
            let key = content_key(&sha)?;
            match self.head(workspace, &key).await {
                // Same hash, same size: the bytes are already there (identical writers race
                // harmlessly, they write the same bytes).
                Ok(existing) if existing.size == staged.size && existing.sha256.is_some() => {
                    Ok((existing, false))
                }
                Ok(_) | Err(_) => Ok((self.copy(workspace, &staging, &key).await?, true)),
            }
        }
        .await;
        self.delete(workspace, &staging).await?;
        outcome
    }
}

/// The key of content-addressed bytes: `sha256/<lowercase hex>`.
pub fn content_key(sha256: &str) -> Result<BlobKey> {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(Error::invalid("sha256", "must be 64 lowercase hex digits"));
    }
    BlobKey::new(&format!("sha256/{sha256}"))
}

impl<T: BlobStore + ?Sized> BlobStoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "..",
            "./a",
            "a\\b",
            "a\nb",
            "a/",
            ".sprintlens/x",
        ] {
            assert!(BlobKey::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BlobKey::new("attachments/2026/report.pdf").is_ok());
        assert_eq!(
            BlobKey::new(&"a".repeat(2000)).unwrap_err().kind(),
            crate::ErrorKind::TooLarge
        );
    }
}
