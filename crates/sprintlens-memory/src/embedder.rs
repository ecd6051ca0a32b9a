//! The built-in offline embedder.

use sprintlens_core::{Embedder, Embedding, Error, Result, async_trait};

/// A deterministic embedder that needs no model: words (less common function words), word bigrams and character trigrams of the
/// lower-cased text are hashed (FNV-1a, signed) into `dimension` buckets, then L2-normalised.
///
/// Texts sharing words and word fragments land close together, which is enough for semantic search
/// demos, tests and offline use. URL: `hash://`. Model name: `hash-ngram-v1`.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
}

impl HashEmbedder {
    /// An embedder of `dimension` components (1..=4096).
    pub fn new(dimension: usize) -> Result<Self> {
        if dimension == 0 || dimension > sprintlens_core::validate::MAX_DIMENSION {
            return Err(Error::config(
                "embedder.dimension",
                "must be between 1 and 4096",
            ));
        }
        Ok(HashEmbedder { dimension })
    }

    /// Embeds one text synchronously.
    pub fn embed_one(&self, text: &str) -> Embedding {
        let mut v = vec![0f32; self.dimension];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
            .collect();
        let mut add = |feature: &[u8], weight: f32| {
            let h = fnv1a(feature);
            let i = (h % self.dimension as u64) as usize;
            let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
            v[i] += sign * weight;
        };
        for w in &words {
            add(w.as_bytes(), 1.0);
            let padded: Vec<char> = format!(" {w} ").chars().collect();
            for tri in padded.windows(3) {
                let s: String = tri.iter().collect();
                add(format!("#{s}").as_bytes(), 0.4);
            }
        }
        for pair in words.windows(2) {
            add(format!("{} {}", pair[0], pair[1]).as_bytes(), 0.7);
        }
        Embedding::new(v).expect("finite components").normalized()
    }
}

/// Function words that carry no topic; dropped before hashing.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "got",
    "has", "have", "i", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our",
    "so", "that", "the", "this", "to", "was", "we", "were", "what", "when", "where", "which",
    "with", "you", "your",
];

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        "hash-ngram-v1"
    }
    fn dimension(&self) -> usize {
        self.dimension
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_normalised_and_semantic_enough() {
        let e = HashEmbedder::new(384).unwrap();
        let a = e.embed_one("refund for my cancelled order");
        assert_eq!(a, e.embed_one("Refund for my CANCELLED order!"));
        let norm: f32 = a.as_slice().iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let near = e.embed_one("how do I get a refund for an order");
        let far = e.embed_one("schedule the database migration");
        assert!(a.cosine(&near) > a.cosine(&far) + 0.2);
        assert!(HashEmbedder::new(0).is_err());
    }
}
