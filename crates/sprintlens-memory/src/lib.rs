#![doc = include_str!("../README.md")]

mod cache;
mod embedder;
mod sessions;

pub use cache::MemoryCache;
pub use embedder::HashEmbedder;
pub use sessions::MemorySessionStore;
