//! The one error type of sprintlens.
//!
//! Every port returns [`Error`]. Its [`ErrorKind`] is what a caller acts on; [`Error::is_retryable`]
//! says whether repeating the same call may succeed. Adapters classify their driver errors into these
//! kinds in one place each.

use std::fmt;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every port.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure happened, as a caller would act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The addressed item does not exist (or belongs to another workspace).
    NotFound,
    /// The write collides with existing state (unique key, immutable record, create-only put).
    Conflict,
    /// The input is invalid; the error names the field.
    InvalidInput,
    /// The input exceeds a size limit; the error names the field and the limit.
    TooLarge,
    /// The backend cannot be reached or is overloaded.
    Unavailable,
    /// The backend does not support the requested operation.
    Unsupported,
    /// The configuration is invalid; the error names the key.
    Config,
    /// Any other backend failure.
    Backend,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::Backend => "backend",
        })
    }
}

/// The error of every sprintlens operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The addressed item does not exist in this workspace.
    #[error("{what} not found: {id}")]
    NotFound {
        /// What was looked up (`"project"`, `"blob"`, …).
        what: String,
        /// Its id or key.
        id: String,
    },
    /// The write collides with existing state.
    #[error("conflict: {message}")]
    Conflict {
        /// What collided.
        message: String,
    },
    /// A field holds an invalid value.
    #[error("invalid `{field}`: {reason}")]
    InvalidInput {
        /// The field, as a dotted path (`"message.content"`).
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A field exceeds its size limit.
    #[error("`{field}` is too large: {size} > {limit} bytes")]
    TooLarge {
        /// The field, as a dotted path.
        field: String,
        /// The size seen (or a lower bound of it).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The backend cannot be reached, timed out, or is busy.
    #[error("{backend} unavailable during {operation}{}", source_suffix(.source))]
    Unavailable {
        /// Backend name (`"sqlite"`, `"postgres"`, …).
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// Whether repeating the call may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend cannot do this; nothing was attempted.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The unsupported operation.
        operation: &'static str,
    },
    /// The configuration is invalid.
    #[error("config key `{key}`: {reason}")]
    Config {
        /// The key, as `section.key` (`"records.url"`).
        key: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Any other backend failure.
    #[error("{backend} failed during {operation}: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

fn source_suffix(source: &Option<BoxError>) -> String {
    match source {
        Some(s) => format!(": {s}"),
        None => String::new(),
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Config { .. } => ErrorKind::Config,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Whether the same call may succeed if repeated.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable {
                retryable: true,
                ..
            }
        )
    }

    /// The field (or config key) this error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidInput { field, .. } | Error::TooLarge { field, .. } => Some(field),
            Error::Config { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A copy of this error with the same kind, fields and retryability; a source error (not
    /// `Clone`) is kept as its message. For handing one failure to many waiters.
    pub fn lossy_clone(&self) -> Error {
        match self {
            Error::NotFound { what, id } => Error::not_found(what.clone(), id),
            Error::Conflict { message } => Error::conflict(message.clone()),
            Error::InvalidInput { field, reason } => Error::invalid(field.clone(), reason.clone()),
            Error::TooLarge { field, size, limit } => {
                Error::too_large(field.clone(), *size, *limit)
            }
            Error::Unavailable {
                backend,
                operation,
                retryable,
                source,
            } => Error::unavailable(
                backend,
                operation,
                *retryable,
                source.as_ref().map(|s| s.to_string().into()),
            ),
            Error::Unsupported { backend, operation } => Error::unsupported(backend, operation),
            Error::Config { key, reason } => Error::config(key.clone(), reason.clone()),
            Error::Backend {
                backend,
                operation,
                source,
            } => Error::backend(backend, operation, source.to_string()),
        }
    }

    /// An [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>, id: impl fmt::Display) -> Self {
        Error::NotFound {
            what: what.into(),
            id: id.to_string(),
        }
    }

    /// An [`Error::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }

    /// An [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::TooLarge`].
    pub fn too_large(field: impl Into<String>, size: u64, limit: u64) -> Self {
        Error::TooLarge {
            field: field.into(),
            size,
            limit,
        }
    }

    /// An [`Error::Config`].
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(backend: &'static str, operation: &'static str) -> Self {
        Error::Unsupported { backend, operation }
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            operation,
            source: source.into(),
        }
    }

    /// An [`Error::Unavailable`].
    pub fn unavailable(
        backend: &'static str,
        operation: &'static str,
        retryable: bool,
        source: Option<BoxError>,
    ) -> Self {
        Error::Unavailable {
            backend,
            operation,
            retryable,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retry() {
        let e = Error::unavailable("sqlite", "upsert", true, None);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(!Error::unavailable("sqlite", "upsert", false, None).is_retryable());
        let e = Error::invalid("project.name", "must not be empty");
        assert_eq!(e.field(), Some("project.name"));
        assert_eq!(e.to_string(), "invalid `project.name`: must not be empty");
        assert_eq!(
            Error::config("records.url", "unknown scheme").to_string(),
            "config key `records.url`: unknown scheme"
        );
    }
}
