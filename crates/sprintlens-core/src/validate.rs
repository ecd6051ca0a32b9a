//! Validation helpers and the limits every store enforces.

use serde_json::Value;

use crate::error::{Error, Result};

/// Longest name (project, agent, prompt, dataset, metric, model, label, user id), in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest short free text (description, title, error text), in bytes.
pub const MAX_SHORT_TEXT_BYTES: usize = 4 * 1024;
/// Longest long text (message content, prompt template), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Largest JSON document (metadata, settings, parameters, dataset input), serialised, in bytes.
pub const MAX_JSON_BYTES: usize = 256 * 1024;
/// Largest embedding dimension accepted.
pub const MAX_DIMENSION: usize = 4096;

/// A non-empty name of at most [`MAX_NAME_BYTES`] without control characters.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::too_large(
            field,
            value.len() as u64,
            MAX_NAME_BYTES as u64,
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Text of at most `limit` bytes without NUL characters.
pub fn text(field: &str, value: &str, limit: usize) -> Result<()> {
    if value.len() > limit {
        return Err(Error::too_large(field, value.len() as u64, limit as u64));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// Optional short text.
pub fn opt_text(field: &str, value: &Option<String>, limit: usize) -> Result<()> {
    match value {
        Some(v) => text(field, v, limit),
        None => Ok(()),
    }
}

/// A JSON object (or null) of at most [`MAX_JSON_BYTES`] serialised.
pub fn json_object(field: &str, value: &Value) -> Result<()> {
    if !(value.is_object() || value.is_null()) {
        return Err(Error::invalid(field, "must be a JSON object"));
    }
    json_any(field, value)
}

/// Any JSON value of at most [`MAX_JSON_BYTES`] serialised, with no NUL character in any string or
/// key (PostgreSQL `jsonb` cannot hold one, so no backend accepts it).
pub fn json_any(field: &str, value: &Value) -> Result<()> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
    if size > MAX_JSON_BYTES {
        return Err(Error::too_large(field, size as u64, MAX_JSON_BYTES as u64));
    }
    Ok(())
}

/// A count (page size, parts) of 1..=`max`.
pub fn count_between(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::invalid(
            field,
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(())
}

/// A finite float.
pub fn finite(field: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(field, "must be a finite number"));
    }
    Ok(())
}

/// A lowercase hex SHA-256 digest.
pub fn sha256_hex(field: &str, value: &str) -> Result<()> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(
            field,
            "must be 64 lowercase hex characters (SHA-256)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("n", "ok").is_ok());
        assert_eq!(name("n", " ").unwrap_err().field(), Some("n"));
        assert_eq!(
            name("n", &"x".repeat(257)).unwrap_err().kind(),
            crate::ErrorKind::TooLarge
        );
        assert!(name("n", "a\nb").is_err());
    }

    #[test]
    fn json_and_numbers() {
        assert!(json_object("m", &serde_json::json!({"a": 1})).is_ok());
        assert!(json_object("m", &serde_json::json!([1])).is_err());
        assert!(json_object("m", &serde_json::json!({"a": ["x\u{0}"]})).is_err());
        assert!(finite("s", f64::NAN).is_err());
        assert!(sha256_hex("h", &"a".repeat(64)).is_ok());
        assert!(sha256_hex("h", &"A".repeat(64)).is_err());
    }
}
