//! Loading [`StorageConfig`] from TOML plus `SPRINTLENS_*` environment overrides.
//!
//! Precedence, lowest first: the embedded defaults (everything under `data_dir`, default
//! `sprintlens-data`), the TOML file, then the environment. Every section key can be overridden
//! with `SPRINTLENS_<SECTION>_<KEY>` (e.g. `SPRINTLENS_RECORDS_URL`, `SPRINTLENS_CACHE_TTL_MS`), and
//! `data_dir` with `SPRINTLENS_DATA_DIR`. Unknown sections, unknown keys and ill-typed values are
//! errors that name the key, raised before anything connects.

use std::path::Path;

use sprintlens_core::config::{SECTIONS, StorageConfig};
use sprintlens_core::{Error, Result};

/// The default data folder of the embedded configuration.
pub const DEFAULT_DATA_DIR: &str = "sprintlens-data";

/// Loads the configuration from an optional TOML file and the process environment.
pub fn load(file: Option<&Path>) -> Result<StorageConfig> {
    let text =
        match file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                Error::config("config", format!("cannot read {}: {e}", p.display()))
            })?),
            None => None,
        };
    from_parts(text.as_deref(), std::env::vars())
}

/// Builds the configuration from TOML text and `(name, value)` environment pairs.
pub fn from_parts(
    toml_text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<StorageConfig> {
    let mut file = match toml_text {
        Some(t) => t
            .parse::<toml::Table>()
            .map_err(|e| Error::config("config", format!("not valid TOML: {e}")))?,
        None => toml::Table::new(),
    };
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SPRINTLENS_"))
        .collect();

    // data_dir decides the defaults of every section not set explicitly.
    let data_dir = match env.iter().find(|(k, _)| k == "SPRINTLENS_DATA_DIR") {
        Some((_, v)) => v.clone(),
        None => match file.remove("data_dir") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(Error::config("data_dir", "must be a string")),
            None => DEFAULT_DATA_DIR.to_string(),
        },
    };
    if data_dir.is_empty() {
        return Err(Error::config("data_dir", "must not be empty"));
    }
    let defaults = StorageConfig::embedded(&data_dir);
    let mut merged = match toml::Value::try_from(&defaults) {
        Ok(toml::Value::Table(t)) => t,
        _ => return Err(Error::config("config", "defaults do not serialise")),
    };

    // Overlay the file, refusing unknown sections and keys.
    for (section, value) in file {
        let Some((_, keys)) = SECTIONS.iter().find(|(s, _)| *s == section) else {
            let known: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
            return Err(Error::config(
                section,
                format!("unknown section; known: data_dir, {}", known.join(", ")),
            ));
        };
        let toml::Value::Table(table) = value else {
            return Err(Error::config(section, "must be a table ([section])"));
        };
        let target = merged
            .get_mut(&section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| Error::config(section.clone(), "missing in defaults"))?;
        for (key, v) in table {
            if !keys.contains(&key.as_str()) {
                return Err(Error::config(
                    format!("{section}.{key}"),
                    format!("unknown key; [{section}] accepts {}", keys.join(", ")),
                ));
            }
            target.insert(key, v);
        }
    }

    // Overlay the environment: SPRINTLENS_<SECTION>_<KEY>.
    for (name, value) in &env {
        let rest = &name["SPRINTLENS_".len()..];
        let Some((section, keys)) = SECTIONS
            .iter()
            .find(|(s, _)| rest.starts_with(&format!("{}_", s.to_ascii_uppercase())))
        else {
            continue; // Not a section override (e.g. SPRINTLENS_TEST_*, SPRINTLENS_DATA_DIR).
        };
        let key = rest[section.len() + 1..].to_ascii_lowercase();
        if !keys.contains(&key.as_str()) {
            return Err(Error::config(
                name.clone(),
                format!(
                    "unknown key `{key}`; [{section}] accepts {}",
                    keys.join(", ")
                ),
            ));
        }
        let parsed = if let Ok(i) = value.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(f) = value.parse::<f64>()
            && value.contains('.')
        {
            toml::Value::Float(f)
        } else if let Ok(b) = value.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(value.clone())
        };
        if let Some(t) = merged.get_mut(*section).and_then(toml::Value::as_table_mut) {
            t.insert(key, parsed);
        }
    }

    let config: StorageConfig = serde_path_to_error::deserialize(toml::Value::Table(merged))
        .map_err(|e| {
            let key = e.path().to_string();
            Error::config(key, e.into_inner().to_string())
        })?;
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_are_the_embedded_stack() {
        let c = from_parts(None, none()).unwrap();
        assert_eq!(
            c.records.url.expose(),
            "sqlite://sprintlens-data/sprintlens.db"
        );
        assert_eq!(c.blobs.url.expose(), "file://sprintlens-data/blobs");
        assert_eq!(c.cache.url.expose(), "memory://");
    }

    #[test]
    fn file_then_env() {
        let c = from_parts(
            Some("data_dir = \"/srv/x\"\n[records]\npool_size = 8\n[cache]\nttl_ms = 5\n"),
            vec![
                ("SPRINTLENS_CACHE_TTL_MS".into(), "7".into()),
                ("SPRINTLENS_BLOBS_URL".into(), "memory://".into()),
                ("SPRINTLENS_TEST_POSTGRES_URL".into(), "ignored".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.records.pool_size, 8);
        assert_eq!(c.records.url.expose(), "sqlite:///srv/x/sprintlens.db");
        assert_eq!(c.cache.ttl_ms, 7);
        assert_eq!(c.blobs.url.expose(), "memory://");
    }

    #[test]
    fn errors_name_the_key() {
        let key = |toml: &str| {
            from_parts(Some(toml), none())
                .unwrap_err()
                .field()
                .map(String::from)
        };
        assert_eq!(
            key("[records]\npoolsize = 3").as_deref(),
            Some("records.poolsize")
        );
        assert_eq!(key("[recrods]\nurl = \"x\"").as_deref(), Some("recrods"));
        assert_eq!(
            key("[records]\npool_size = \"four\"").as_deref(),
            Some("records.pool_size")
        );
        assert_eq!(
            key("[records]\nsynchronous = \"sometimes\"").as_deref(),
            Some("records.synchronous")
        );
        assert_eq!(
            key("[records]\nurl = \"nope\"").as_deref(),
            Some("records.url")
        );
        assert_eq!(
            key("[vectors]\ndimension = 0").as_deref(),
            Some("vectors.dimension")
        );
        assert_eq!(key("records = 3").as_deref(), Some("records"));
        assert_eq!(key("not toml [").as_deref(), Some("config"));
        let e = from_parts(
            None,
            vec![("SPRINTLENS_RECORDS_POOLSIZE".into(), "1".into())],
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("SPRINTLENS_RECORDS_POOLSIZE"));
    }
}
