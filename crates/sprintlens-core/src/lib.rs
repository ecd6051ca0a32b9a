#![doc = include_str!("../README.md")]

pub mod analytics;
pub mod blob;
pub mod cache;
pub mod config;
pub mod error;
pub mod id;
pub mod outbox;
pub mod record;
pub mod session;
pub mod store;
pub mod validate;
pub mod vector;

pub use analytics::*;
pub use blob::{
    BlobCapabilities, BlobKey, BlobMeta, BlobStore, BlobStoreExt, ByteStream, PresignMethod,
    PutMode, PutOptions, UploadSweep,
};
pub use cache::{Cache, CacheKey, CacheStats, Loader};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use id::*;
pub use outbox::{
    EventOutboxStore, OutboxEntry, OutboxStats, OutboxStore, ParkedEntry, PendingEvent,
    PendingVector, PendingWrite, VectorKey, VectorOutboxStore,
};
pub use record::*;
pub use session::{Session, SessionPolicy, SessionStore, SessionToken};
pub use store::{MAX_SPLIT, RecordStore, RecordStoreExt, check_split, split_offsets};
pub use vector::{
    Embedder, Embedding, EmbeddingKind, VectorCursor, VectorEntry, VectorHit, VectorIndex,
    VectorQuery,
};

/// Re-exported so adapters and users name the same versions.
pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use serde_json;
