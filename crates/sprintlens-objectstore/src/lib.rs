#![doc = include_str!("../README.md")]

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use sprintlens_core::blob::sha256_hex;
use sprintlens_core::config::BlobsConfig;
use sprintlens_core::record::check_limit;
use sprintlens_core::{
    BlobCapabilities, BlobKey, BlobMeta, BlobStore, ByteStream, Error, Page, PageToken, PutMode,
    PutOptions, Result, Timestamp, UploadSweep, WorkspaceId, async_trait,
};

mod uploads;

pub use uploads::IncompleteUpload;

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
    /// Sign requests without hashing their bodies (`UNSIGNED-PAYLOAD`), saving one SHA-256 pass
    /// over every byte uploaded. Unset: on for `https://` endpoints and AWS (TLS protects the body,
    /// as the AWS SDKs do), off for `http://` ones.
    pub unsigned_payload: Option<bool>,
}

impl S3Location {
    /// object_store's S3 builder for this bucket: the `AWS_*` environment, then the URL's settings.
    pub fn builder(&self) -> object_store::aws::AmazonS3Builder {
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(self.allow_http)
            .with_unsigned_payload(self.effective_unsigned_payload());
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(k) = &self.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &self.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        b
    }

    /// Whether bodies go unsigned (see [`S3Location::unsigned_payload`]).
    pub fn effective_unsigned_payload(&self) -> bool {
        self.unsigned_payload.unwrap_or_else(|| {
            self.endpoint
                .as_deref()
                .is_none_or(|e| e.starts_with("https://"))
        })
    }
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
            .field("unsigned_payload", &self.unsigned_payload)
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
            unsigned_payload: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = v.to_string();
            match k {
                "endpoint" => loc.endpoint = Some(v),
                "region" => loc.region = Some(v),
                "access_key_id" => loc.access_key_id = Some(v),
                "secret_access_key" => loc.secret_access_key = Some(v),
                "allow_http" | "unsigned_payload" => {
                    let flag: bool = v.parse().map_err(|_| {
                        Error::config(format!("{key}?{k}"), "must be true or false")
                    })?;
                    if k == "allow_http" {
                        loc.allow_http = flag;
                    } else {
                        loc.unsigned_payload = Some(flag);
                    }
                }
                other => {
                    return Err(Error::config(
                        format!("{key}?{other}"),
                        "unknown S3 URL parameter; known: endpoint, region, access_key_id, secret_access_key, allow_http, unsigned_payload",
                    ));
                }
            }
        }
        Ok(loc)
    }
}

/// Settings of an [`ObjectBlobStore`] (from the `[blobs]` section, see [`BlobOptions::from_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobOptions {
    /// Where blobs live.
    pub location: Location,
    /// Largest object accepted, in bytes.
    pub max_object_bytes: u64,
    /// Streams longer than this are uploaded in parts.
    pub multipart_threshold_bytes: u64,
    /// Size of each part.
    pub part_size_bytes: u64,
    /// Parts of one upload in flight at once.
    pub upload_concurrency: usize,
    /// Time to connect (S3).
    pub connect_timeout: Duration,
    /// Time for one HTTP request (S3).
    pub request_timeout: Duration,
    /// Retries of a request that is safe to repeat (S3).
    pub max_retries: u32,
    /// First backoff between retries (S3).
    pub retry_backoff: Duration,
    /// Overall deadline of one non-streamed operation, retries included.
    pub deadline: Duration,
}

impl BlobOptions {
    /// `location` with every other setting at the `[blobs]` defaults.
    pub fn new(location: Location) -> Self {
        Self::tuned(location, &BlobsConfig::default())
    }

    /// The `[blobs]` section: URL and every tuning key (checked first; errors name the key).
    pub fn from_config(config: &BlobsConfig) -> Result<Self> {
        config.validate()?;
        let location =
            Self::from_url("blobs.url", config.url.expose(), config.max_object_bytes)?.location;
        Ok(Self::tuned(location, config))
    }

    /// `location` with the tuning keys of `config`.
    fn tuned(location: Location, config: &BlobsConfig) -> Self {
        BlobOptions {
            location,
            max_object_bytes: config.max_object_bytes,
            multipart_threshold_bytes: config.multipart_threshold_bytes,
            part_size_bytes: config.part_size_bytes,
            upload_concurrency: config.upload_concurrency as usize,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_retries: config.max_retries,
            retry_backoff: Duration::from_millis(config.retry_backoff_ms),
            deadline: Duration::from_millis(config.deadline_ms),
        }
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(matches!(&self.location, Location::S3(l) if l.allow_http))
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
    }

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
            max_object_bytes,
            ..BlobOptions::new(location)
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
    client: ClientOptions,
}

impl std::fmt::Debug for ObjectBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBlobStore")
            .field("location", &self.options.location)
            .finish()
    }
}

/// What the caller of a streamed put sends to the task that owns the multipart upload.
enum Part {
    Data(Bytes),
    Finish,
}

/// A multipart upload in progress.
struct Multipart {
    tx: tokio::sync::mpsc::Sender<Part>,
    task: tokio::task::JoinHandle<object_store::Result<()>>,
}

impl Multipart {
    /// Abandons the upload and waits until it is aborted on the server.
    async fn abort(self) {
        drop(self.tx);
        let _ = self.task.await;
    }

    /// The task's own error, when it stopped before the caller did.
    async fn failure(self, backend: &'static str) -> Error {
        drop(self.tx);
        match self.task.await {
            Ok(Err(e)) => classify(backend, "put_stream", e),
            Ok(Ok(())) => Error::backend(backend, "put_stream", "upload ended early"),
            Err(e) => Error::backend(backend, "put_stream", e),
        }
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
                let retry = object_store::RetryConfig {
                    backoff: object_store::BackoffConfig {
                        init_backoff: options.retry_backoff,
                        max_backoff: Duration::from_secs(15),
                        base: 2.0,
                    },
                    max_retries: options.max_retries as usize,
                    retry_timeout: options.deadline,
                };
                let b = loc
                    .builder()
                    .with_client_options(options.client_options())
                    .with_retry(retry);
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
            backend,
            conditional: Arc::new(std::sync::atomic::AtomicBool::new(conditional)),
            signer,
            client: options.client_options(),
            options,
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

    /// Runs a non-streamed operation within the configured overall deadline.
    async fn within<T>(
        &self,
        operation: &'static str,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let deadline = self.options.deadline;
        match tokio::time::timeout(deadline, f).await {
            Ok(r) => r,
            Err(_) => Err(Error::unavailable(
                self.backend,
                operation,
                true,
                Some(format!("deadline of {deadline:?} passed").into()),
            )),
        }
    }

    /// The object_store mode for a put, or `Unsupported` when create-only cannot be atomic.
    fn put_mode(&self, mode: PutMode) -> Result<object_store::PutMode> {
        match mode {
            PutMode::Overwrite => Ok(object_store::PutMode::Overwrite),
            PutMode::Create if !self.capabilities().conditional_create => Err(Error::unsupported(
                self.backend,
                "create-only put (no conditional writes)",
            )),
            PutMode::Create => Ok(object_store::PutMode::Create),
        }
    }

    /// Writes the sidecar after the bytes are in place and returns what `head` will say.
    async fn finish_put(
        &self,
        ws: WorkspaceId,
        key: &BlobKey,
        size: u64,
        sha256: String,
        content_type: Option<String>,
    ) -> Result<BlobMeta> {
        let side = Sidecar {
            size,
            sha256: sha256.clone(),
            content_type: content_type.clone(),
        };
        let side = serde_json::to_vec(&side).map_err(|e| Error::backend(self.backend, "put", e))?;
        self.store
            .put(&self.meta_path(ws, key), PutPayload::from(side))
            .await
            .map_err(|e| classify(self.backend, "put", e))?;
        Ok(BlobMeta {
            key: key.clone(),
            size,
            content_type,
            sha256: Some(sha256),
            last_modified: Some(Timestamp::now()),
        })
    }

    /// Starts a multipart upload owned by a task: parts go up `upload_concurrency` at a time;
    /// the upload completes only on [`Part::Finish`], and is aborted if the sender goes away
    /// first (the caller failed, refused the stream or was cancelled).
    fn start_multipart(&self, path: Path) -> Multipart {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(2);
        let store = self.store.clone();
        let part_size = self.options.part_size_bytes as usize;
        let concurrency = self.options.upload_concurrency;
        let task = tokio::spawn(async move {
            let upload = store.put_multipart(&path).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
            loop {
                match rx.recv().await {
                    Some(Part::Data(bytes)) => {
                        if let Err(e) = writer.wait_for_capacity(concurrency).await {
                            let _ = writer.abort().await;
                            return Err(e);
                        }
                        writer.put(bytes);
                    }
                    // `finish` aborts the upload itself when completing fails.
                    Some(Part::Finish) => return writer.finish().await.map(|_| ()),
                    None => {
                        writer.abort().await?;
                        return Err(object_store::Error::Generic {
                            store: "sprintlens",
                            source: "upload abandoned by its writer".into(),
                        });
                    }
                }
            }
        });
        Multipart { tx, task }
    }

    /// Incomplete multipart uploads on S3 (of one workspace, or all), oldest first; empty for
    /// folders and memory. `sprintlens blobs gc --dry-run` prints these.
    pub async fn incomplete_uploads(
        &self,
        workspace: Option<WorkspaceId>,
    ) -> Result<Vec<IncompleteUpload>> {
        let (Location::S3(loc), Some(s3)) = (&self.options.location, &self.signer) else {
            return Ok(Vec::new());
        };
        let prefix = workspace.map(|ws| format!("{ws}/"));
        let mut all = uploads::list(s3, loc, &self.client, prefix.as_deref()).await?;
        all.sort_by(|a, b| a.initiated.cmp(&b.initiated));
        Ok(all)
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
        // Large overwrites go up in concurrent parts like a stream does.
        if size > self.options.multipart_threshold_bytes && options.mode == PutMode::Overwrite {
            return self
                .put_stream(workspace, key, sprintlens_core::blob::once(data), options)
                .await;
        }
        if let Some(ct) = &options.content_type {
            sprintlens_core::validate::name("content_type", ct)?;
        }
        let mode = self.put_mode(options.mode)?;
        let sha256 = sha256_hex(&data);
        let path = self.path(workspace, key);
        self.within("put", async {
            self.store
                .put_opts(
                    &path,
                    PutPayload::from_bytes(data),
                    object_store::PutOptions {
                        mode,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| classify(self.backend, "put", e))?;
            self.finish_put(workspace, key, size, sha256, options.content_type)
                .await
        })
        .await
    }

    async fn get(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<(BlobMeta, Bytes)> {
        self.within("get", async move {
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
        })
        .await
    }

    async fn get_range(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Range<u64>,
    ) -> Result<Bytes> {
        self.within("get_range", async move {
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
        })
        .await
    }

    async fn head(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<BlobMeta> {
        self.within("head", async move {
            let om = self
                .store
                .head(&self.path(workspace, key))
                .await
                .map_err(|e| classify(self.backend, "head", e))?;
            Ok(self.meta_of(workspace, key, &om).await)
        })
        .await
    }

    async fn list(
        &self,
        workspace: WorkspaceId,
        prefix: &str,
        page: Option<PageToken>,
        limit: usize,
    ) -> Result<Page<BlobMeta>> {
        self.within("list", async move {
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
            let next = more
                .then(|| PageToken(items.last().map(|m| m.key.to_string()).unwrap_or_default()));
            Ok(Page { items, next })
        })
        .await
    }

    async fn delete(&self, workspace: WorkspaceId, key: &BlobKey) -> Result<bool> {
        self.within("delete", async move {
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
        })
        .await
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

    async fn put_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        mut data: ByteStream,
        options: PutOptions,
    ) -> Result<BlobMeta> {
        if let Some(ct) = &options.content_type {
            sprintlens_core::validate::name("content_type", ct)?;
        }
        let mode = self.put_mode(options.mode)?;
        let (max, threshold) = (
            self.options.max_object_bytes,
            self.options.multipart_threshold_bytes,
        );
        let path = self.path(workspace, key);
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        // Up to `threshold` bytes are held to decide between one request and a multipart upload;
        // past it they are handed to the upload task and memory stays at a few parts.
        let mut head: Vec<Bytes> = Vec::new();
        let mut upload: Option<Multipart> = None;
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    if let Some(u) = upload {
                        u.abort().await;
                    }
                    return Err(e);
                }
            };
            size += chunk.len() as u64;
            if size > max {
                if let Some(u) = upload {
                    u.abort().await;
                }
                return Err(Error::too_large("data", size, max));
            }
            hasher.update(&chunk);
            match &upload {
                Some(u) => {
                    if u.tx.send(Part::Data(chunk)).await.is_err() {
                        let u = upload.take().expect("checked above");
                        return Err(u.failure(self.backend).await);
                    }
                }
                None => {
                    head.push(chunk);
                    if size > threshold {
                        if mode != object_store::PutMode::Overwrite {
                            return Err(Error::unsupported(
                                self.backend,
                                "create-only put above multipart_threshold_bytes",
                            ));
                        }
                        let u = self.start_multipart(path.clone());
                        for c in head.drain(..) {
                            if u.tx.send(Part::Data(c)).await.is_err() {
                                return Err(u.failure(self.backend).await);
                            }
                        }
                        upload = Some(u);
                    }
                }
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        match upload {
            Some(u) => {
                if u.tx.send(Part::Finish).await.is_err() {
                    return Err(u.failure(self.backend).await);
                }
                drop(u.tx);
                match u.task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(classify(self.backend, "put_stream", e)),
                    Err(e) => return Err(Error::backend(self.backend, "put_stream", e)),
                }
            }
            None => {
                let payload: PutPayload = head.into_iter().collect();
                self.within("put_stream", async {
                    self.store
                        .put_opts(
                            &path,
                            payload,
                            object_store::PutOptions {
                                mode,
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| classify(self.backend, "put_stream", e))
                })
                .await?;
            }
        }
        self.finish_put(workspace, key, size, sha256, options.content_type)
            .await
    }

    async fn get_stream(
        &self,
        workspace: WorkspaceId,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<(BlobMeta, ByteStream)> {
        if let Some(r) = &range
            && r.start > r.end
        {
            return Err(Error::invalid("range", "start must not exceed end"));
        }
        let path = self.path(workspace, key);
        let om = self
            .within("get_stream", async {
                self.store
                    .head(&path)
                    .await
                    .map_err(|e| classify(self.backend, "get_stream", e))
            })
            .await?;
        let meta = self.meta_of(workspace, key, &om).await;
        let range = range.map(|r| r.start.min(om.size)..r.end.min(om.size));
        if range.as_ref().is_some_and(|r| r.is_empty()) || om.size == 0 {
            return Ok((meta, Box::pin(futures::stream::empty())));
        }
        let span = range.clone().unwrap_or(0..om.size);
        let part = self.options.part_size_bytes;
        // Large reads from S3: ranges of one part each, `upload_concurrency` in flight, yielded
        // in order (memory: parts in flight × part size), as SDK downloaders do.
        if matches!(self.options.location, Location::S3(_))
            && span.end - span.start > self.options.multipart_threshold_bytes
        {
            let (store, backend, etag) = (self.store.clone(), self.backend, om.e_tag.clone());
            let ranges: Vec<Range<u64>> = (span.start..span.end)
                .step_by(part as usize)
                .map(|s| s..(s + part).min(span.end))
                .collect();
            let stream = futures::stream::iter(ranges)
                .map(move |r| {
                    let (store, path, etag) = (store.clone(), path.clone(), etag.clone());
                    async move {
                        let opts = object_store::GetOptions {
                            range: Some(r.into()),
                            if_match: etag,
                            ..Default::default()
                        };
                        let result = store.get_opts(&path, opts).await?;
                        result.bytes().await
                    }
                })
                .buffered(self.options.upload_concurrency)
                .map_err(move |e| classify(backend, "get_stream", e));
            return Ok((meta, Box::pin(stream)));
        }
        // Pinned to the version `head` saw: a replacement in between is a conflict, not a mix.
        let opts = object_store::GetOptions {
            range: range.map(Into::into),
            if_match: om.e_tag.clone(),
            ..Default::default()
        };
        let result = self
            .within("get_stream", async {
                self.store
                    .get_opts(&path, opts)
                    .await
                    .map_err(|e| classify(self.backend, "get_stream", e))
            })
            .await?;
        let backend = self.backend;
        let stream = result
            .into_stream()
            .map_err(move |e| classify(backend, "get_stream", e));
        Ok((meta, Box::pin(stream)))
    }

    async fn copy(&self, workspace: WorkspaceId, from: &BlobKey, to: &BlobKey) -> Result<BlobMeta> {
        let (src, dst) = (self.path(workspace, from), self.path(workspace, to));
        self.within("copy", async {
            let om = self
                .store
                .head(&src)
                .await
                .map_err(|e| classify(self.backend, "copy", e))?;
            let side = self.sidecar(workspace, from, om.size).await;
            self.store
                .copy(&src, &dst)
                .await
                .map_err(|e| classify(self.backend, "copy", e))?;
            let meta_path = self.meta_path(workspace, to);
            match side {
                Some(side) => {
                    let side = serde_json::to_vec(&side)
                        .map_err(|e| Error::backend(self.backend, "copy", e))?;
                    self.store
                        .put(&meta_path, PutPayload::from(side))
                        .await
                        .map_err(|e| classify(self.backend, "copy", e))?;
                }
                None => match self.store.delete(&meta_path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(classify(self.backend, "copy", e)),
                },
            }
            let om = self
                .store
                .head(&dst)
                .await
                .map_err(|e| classify(self.backend, "copy", e))?;
            Ok(self.meta_of(workspace, to, &om).await)
        })
        .await
    }

    async fn workspaces(&self) -> Result<Vec<WorkspaceId>> {
        let listing = self
            .within("workspaces", async {
                self.store
                    .list_with_delimiter(None)
                    .await
                    .map_err(|e| classify(self.backend, "workspaces", e))
            })
            .await?;
        let mut out: Vec<WorkspaceId> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.as_ref().parse().ok())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn sweep_uploads(
        &self,
        workspace: Option<WorkspaceId>,
        older_than: Duration,
        dry_run: bool,
    ) -> Result<UploadSweep> {
        match &self.options.location {
            Location::S3(_) => {
                let s3 = self
                    .signer
                    .as_ref()
                    .ok_or_else(|| Error::unsupported(self.backend, "sweep_uploads"))?;
                let uploads = self.incomplete_uploads(workspace).await?;
                uploads::sweep_s3(s3, uploads, older_than, dry_run).await
            }
            Location::Folder(dir) => {
                let dir = match workspace {
                    Some(ws) => dir.join(ws.to_string()),
                    None => dir.clone(),
                };
                tokio::task::spawn_blocking(move || {
                    uploads::sweep_folder(&dir, older_than, dry_run)
                })
                .await
                .map_err(|e| Error::backend("file", "sweep_uploads", e))?
            }
            // Uploads in memory die with the process; nothing can be left over.
            Location::Memory => Ok(UploadSweep::default()),
        }
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
