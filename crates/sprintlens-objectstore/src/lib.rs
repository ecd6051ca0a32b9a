#![doc = include_str!("../README.md")]

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sprintlens_core::blob::sha256_hex;
use sprintlens_core::record::check_limit;
use sprintlens_core::{
    BlobCapabilities, BlobKey, BlobMeta, BlobStore, Error, Page, PageToken, PutMode, PutOptions,
    Result, Timestamp, WorkspaceId, async_trait,
};

/// The folder (a reserved first segment under each workspace) holding metadata sidecars.
const META_DIR: &str = ".sprintlens-meta";

/// Where blobs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local folder (`file://DIR`); created if missing.
    Folder(std::path::PathBuf),
    /// Process memory (`memory://`); lost at exit.
    Memory,
    /// An S3 bucket (AWS, MinIO, Garage, any S3).
    S3(S3Location),
}

/// An S3 bucket and how to reach it: `s3://BUCKET?endpoint=URL&region=R&access_key_id=K&secret_access_key=S`
/// (`allow_http=true` for a plain-HTTP endpoint). Without `endpoint`, AWS; without keys, the AWS
/// environment (`AWS_ACCESS_KEY_ID`, …).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The endpoint (MinIO, Garage, …); AWS when absent.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints.
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Location {
    fn parse(key: &str, rest: &str) -> Result<Self> {
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(Error::config(
                key,
                "s3:// needs a bucket name, e.g. s3://attachments?endpoint=…",
            ));
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.to_string();
            match k {
                "endpoint" => loc.endpoint = Some(v),
                "region" => loc.region = Some(v),
                "access_key_id" => loc.access_key_id = Some(v),
                "secret_access_key" => loc.secret_access_key = Some(v),
                "allow_http" => {
                    loc.allow_http = v.parse().map_err(|_| {
                        Error::config(format!("{key}?allow_http"), "must be true or false")
                    })?
                }
                other => {
                    return Err(Error::config(
                        format!("{key}?{other}"),
                        "unknown S3 URL parameter; known: endpoint, region, access_key_id, secret_access_key, allow_http",
                    ));
                }
            }
        }
        Ok(loc)
    }
}

/// Settings of an [`ObjectBlobStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobOptions {
    /// Where blobs live.
    pub location: Location,
    /// Largest object accepted, in bytes.
    pub max_object_bytes: u64,
}

impl BlobOptions {
    /// Parses `file://DIR` (relative, or absolute with a third slash) or `memory://`.
    pub fn from_url(key: &str, url: &str, max_object_bytes: u64) -> Result<Self> {
        let location = if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() || dir.contains('?') {
                return Err(Error::config(
                    key,
                    "file:// needs a folder path and takes no query, e.g. file://data/blobs",
                ));
            }
            Location::Folder(dir.into())
        } else if url == "memory://" {
            Location::Memory
        } else if let Some(rest) = url.strip_prefix("s3://") {
            Location::S3(S3Location::parse(key, rest)?)
        } else {
            return Err(Error::config(
                key,
                "a blob URL is file://DIR, memory:// or s3://BUCKET?endpoint=…",
            ));
        };
        Ok(BlobOptions {
            location,
            max_object_bytes,
        })
    }
}

/// What the sidecar next to each object records.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    sha256: String,
    content_type: Option<String>,
}

/// [`BlobStore`] over the `object_store` crate: a local folder or memory.
///
/// Every key lives under the workspace's prefix, built segment by segment with object_store's
/// [`Path`], so no key can reach another workspace. Size, content type and SHA-256 are kept in a
/// JSON sidecar under the workspace's reserved `.sprintlens-meta/` folder (local folders cannot hold
/// object attributes), written after the bytes; a sidecar that does not match the object's size is
/// ignored.
///
/// Capabilities: conditional create on folders and memory, and on S3 when [`ObjectBlobStore::probe`]
/// finds the server honours it (MinIO, AWS; not Garage); presigned GET/PUT URLs on S3.
#[derive(Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    options: BlobOptions,
    backend: &'static str,
    conditional: Arc<std::sync::atomic::AtomicBool>,
    signer: Option<Arc<object_store::aws::AmazonS3>>,
}

impl std::fmt::Debug for ObjectBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBlobStore")
            .field("location", &self.options.location)
            .finish()
    }
}

fn classify(backend: &'static str, operation: &'static str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    match e {
        E::NotFound { path, .. } => Error::not_found("blob", path),
        E::AlreadyExists { path, .. } => Error::conflict(format!("blob {path} already exists")),
        E::Precondition { path, .. } => {
            Error::conflict(format!("blob {path} changed concurrently"))
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => Error::unsupported(backend, operation),
        E::InvalidPath { .. } => Error::invalid("key", e.to_string()),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            Error::unavailable(backend, operation, false, Some(Box::new(e)))
        }
        other => Error::backend(backend, operation, other),
    }
}

impl ObjectBlobStore {
    /// Opens the store (creating the folder if needed).
    pub fn open(options: BlobOptions) -> Result<Self> {
        let mut signer = None;
        let (store, backend): (Arc<dyn ObjectStore>, &'static str) = match &options.location {
            Location::Folder(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::unavailable("file", "open", false, Some(Box::new(e))))?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| classify("file", "open", e))?;
                (Arc::new(fs), "file")
            }
            Location::Memory => (Arc::new(InMemory::new()), "memory"),
            Location::S3(loc) => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&loc.bucket)
                    .with_allow_http(loc.allow_http);
                if let Some(e) = &loc.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &loc.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &loc.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &loc.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                let s3 = Arc::new(b.build().map_err(|e| {
                    Error::config("blobs.url", format!("invalid S3 settings: {e}"))
                })?);
                signer = Some(s3.clone());
                (s3, "s3")
            }
        };
        // Local folders and memory create atomically; S3 only after a probe shows the server
        // honours If-None-Match (MinIO and AWS do, Garage does not).
        let conditional = !matches!(options.location, Location::S3(_));
        Ok(ObjectBlobStore {
            store,
            options,
            backend,
            conditional: Arc::new(std::sync::atomic::AtomicBool::new(conditional)),
            signer,
        })
    }

    /// Probes what the server can do (S3: whether a create-only put is refused when the key exists)
    /// and returns the capabilities in force. Cheap for folders and memory.
    pub async fn probe(&self) -> Result<BlobCapabilities> {
        if matches!(self.options.location, Location::S3(_)) {
            let name = uuid_like();
            let path = Path::from_iter([".sprintlens-probe", name.as_str()]);
            let create = || object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            self.store
                .put_opts(&path, PutPayload::from_static(b"1"), create())
                .await
                .map_err(|e| classify(self.backend, "probe", e))?;
            let second = self
                .store
                .put_opts(&path, PutPayload::from_static(b"2"), create())
                .await;
            let honoured = matches!(
                second,
                Err(object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. })
            );
            let _ = self.store.delete(&path).await;
            self.conditional
                .store(honoured, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.capabilities())
    }

    fn path(&self, ws: WorkspaceId, key: &BlobKey) -> Path {
        let ws = ws.to_string();
        Path::from_iter(std::iter::once(ws.as_str()).chain(key.segments()))
    }

    fn meta_path(&self, ws: WorkspaceId, key: &BlobKey) -> Path {
        let ws = ws.to_string();
        let mut parts: Vec<String> = vec![ws, META_DIR.to_string()];
        parts.extend(key.segments().map(str::to_string));
        if let Some(last) = parts.last_mut() {
            last.push_str(".json");
        }
        Path::from_iter(parts.iter().map(String::as_str))
    }

    fn key_of(&self, path: &Path) -> Option<BlobKey> {
        let parts: Vec<PathPart<'_>> = path.parts().skip(1).collect();
        if parts.first().is_some_and(|p| p.as_ref() == META_DIR) {
            return None;
        }
        let joined = parts
            .iter()
            .map(|p| p.as_ref())
            .collect::<Vec<_>>()
            .join("/");
        BlobKey::new(&joined).ok()
    }

    async fn sidecar(&self, ws: WorkspaceId, key: &BlobKey, size: u64) -> Option<Sidecar> {
        let bytes = self
            .store
            .get(&self.meta_path(ws, key))
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        let s: Sidecar = serde_json::from_slice(&bytes).ok()?;
        (s.size == size).then_some(s)
    }

    async fn meta_of(
        &self,
        ws: WorkspaceId,
        key: &BlobKey,
        om: &object_store::ObjectMeta,
    ) -> BlobMeta {
        let side = self.sidecar(ws, key, om.size).await;
        BlobMeta {
            key: key.clone(),
            size: om.size,
            content_type: side.as_ref().and_then(|s| s.content_type.clone()),
            sha256: side.map(|s| s.sha256),
            last_modified: Some(Timestamp::from_datetime(om.last_modified)),
        }
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            conditional_create: self.conditional.load(std::sync::atomic::Ordering::Relaxed),
            presign: self.signer.is_some(),
            max_object_bytes: self.options.max_object_bytes,
        }
    }

    async fn put(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        data: Bytes,
        options: PutOptions,
    ) -> Result<BlobMeta> {
        let size = data.len() as u64;
        if size > self.options.max_object_bytes {
            return Err(Error::too_large(
                "data",
                size,
                self.options.max_object_bytes,
            ));
        }
        if let Some(ct) = &options.content_type {
            sprintlens_core::validate::name("content_type", ct)?;
        }
        let sha256 = sha256_hex(&data);
        let mode = match options.mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create if !self.capabilities().conditional_create => {
                return Err(Error::unsupported(
                    self.backend,
                    "create-only put (no conditional writes)",
                ));
            }
            PutMode::Create => object_store::PutMode::Create,
        };
        let opts = object_store::PutOptions {
            mode,
            ..Default::default()
        };
        let path = self.path(workspace, key);
        self.store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await
            .map_err(|e| classify(self.backend, "put", e))?;
        let side = Sidecar {
            size,
            sha256: sha256.clone(),
            content_type: options.content_type.clone(),
        };
        let side = serde_json::to_vec(&side).map_err(|e| Error::backend(self.backend, "put", e))?;
        self.store
            .put(&self.meta_path(workspace, key), PutPayload::from(side))
            .await
            .map_err(|e| classify(self.backend, "put", e))?;
        Ok(BlobMeta {
            key: key.clone(),
            size,
            content_type: options.content_type,
            sha256: Some(sha256),
            last_modified: Some(Timestamp::now()),
        })
    }

    async fn get(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<(BlobMeta, Bytes)> {
        let path = self.path(workspace, key);
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| classify(self.backend, "get", e))?;
        let om = result.meta.clone();
        let data = result
            .bytes()
            .await
            .map_err(|e| classify(self.backend, "get", e))?;
        Ok((self.meta_of(workspace, key, &om).await, data))
    }

    async fn get_range(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Range<u64>,
    ) -> Result<Bytes> {
        if range.start > range.end {
            return Err(Error::invalid("range", "start must not exceed end"));
        }
        let path = self.path(workspace, key);
        let om = self
            .store
            .head(&path)
            .await
            .map_err(|e| classify(self.backend, "get_range", e))?;
        let end = range.end.min(om.size);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(&path, range.start..end)
            .await
            .map_err(|e| classify(self.backend, "get_range", e))
    }

    async fn head(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<BlobMeta> {
        let om = self
            .store
            .head(&self.path(workspace, key))
            .await
            .map_err(|e| classify(self.backend, "head", e))?;
        Ok(self.meta_of(workspace, key, &om).await)
    }

    async fn list(
        &self,
        workspace: WorkspaceId,
        prefix: &str,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page<BlobMeta>> {
        check_limit(limit)?;
        // List the deepest folder the prefix names, then filter by the plain string prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => Some(BlobKey::new(&prefix[..i])?),
            None => None,
        };
        let root = match &dir {
            Some(d) => self.path(workspace, d),
            None => Path::from(workspace.to_string()),
        };
        let after = page.map(|t| t.0);
        let mut metas: Vec<(BlobKey, object_store::ObjectMeta)> = self
            .store
            .list(Some(&root))
            .map_err(|e| classify(self.backend, "list", e))
            .try_filter_map(|om| {
                let key = self.key_of(&om.location);
                let keep = key.filter(|k| {
                    k.as_str().starts_with(prefix)
                        && after.as_deref().is_none_or(|a| k.as_str() > a)
                });
                futures::future::ready(Ok(keep.map(|k| (k, om))))
            })
            .try_collect()
            .await?;
        // Backends do not promise an order: sort, so pages never skip or repeat.
        metas.sort_by(|a, b| a.0.cmp(&b.0));
        let more = metas.len() > limit;
        metas.truncate(limit);
        let mut items = Vec::with_capacity(metas.len());
        for (k, om) in &metas {
            items.push(self.meta_of(workspace, k, om).await);
        }
        let next =
            more.then(|| PageToken(items.last().map(|m| m.key.to_string()).unwrap_or_default()));
        Ok(Page { items, next })
    }

    async fn delete(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<bool> {
        let path = self.path(workspace, key);
        let existed = match self.store.head(&path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(classify(self.backend, "delete", e)),
        };
        if existed {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(classify(self.backend, "delete", e)),
            }
        }
        match self.store.delete(&self.meta_path(workspace, key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(classify(self.backend, "delete", e)),
        }
        Ok(existed)
    }

    async fn presign(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        method: sprintlens_core::PresignMethod,
        expires_in: std::time::Duration,
    ) -> Result<String> {
        let Some(signer) = &self.signer else {
            return Err(Error::unsupported(self.backend, "presigned URLs"));
        };
        if expires_in.is_zero() || expires_in > sprintlens_core::blob::MAX_PRESIGN {
            return Err(Error::invalid(
                "expires_in",
                "must be between 1 s and 7 days",
            ));
        }
        use object_store::signer::{Method, Signer};
        let m = match method {
            sprintlens_core::PresignMethod::Get => Method::GET,
            sprintlens_core::PresignMethod::Put => Method::PUT,
        };
        signer
            .signed_url(m, &self.path(workspace, key), expires_in)
            .await
            .map(|u| u.to_string())
            .map_err(|e| classify(self.backend, "presign", e))
    }
}

/// A unique probe name (time and a counter; no randomness needed).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_micros(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
