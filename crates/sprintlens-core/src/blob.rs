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
