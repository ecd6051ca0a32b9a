//! UUIDv7 identifiers and UTC timestamps.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Checks that `uuid` is a version-7 UUID, naming `field` otherwise.
pub fn check_v7(field: &str, uuid: Uuid) -> Result<Uuid> {
    if uuid.get_version_num() != 7 {
        return Err(Error::invalid(
            field,
            format!("must be a UUIDv7, got version {}", uuid.get_version_num()),
        ));
    }
    Ok(uuid)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id: a UUIDv7 of the current time.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// Wraps `uuid` after checking that it is a UUIDv7.
            pub fn from_uuid(uuid: Uuid) -> Result<Self> {
                check_v7($field, uuid).map(Self)
            }
            /// The UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let uuid = Uuid::parse_str(s).map_err(|e| Error::invalid($field, e.to_string()))?;
                Self::from_uuid(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let uuid = Uuid::deserialize(d)?;
                Self::from_uuid(uuid).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A workspace: the tenant every call is scoped by.
    WorkspaceId, "workspace"
);
id_type!(
    /// The id of any record (any [`crate::RecordKind`]).
    RecordId, "id"
);
id_type!(
    /// The id of an analytics event.
    EventId, "event.id"
);

macro_rules! record_id_alias {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        pub type $name = RecordId;
    )*};
}

record_id_alias!(
    /// Id of a project record.
    ProjectId,
    /// Id of an agent record.
    AgentId,
    /// Id of a conversation record.
    ConversationId,
    /// Id of a message record.
    MessageId,
    /// Id of a prompt record.
    PromptId,
    /// Id of a prompt version record.
    PromptVersionId,
    /// Id of a dataset record.
    DatasetId,
    /// Id of a dataset item record.
    DatasetItemId,
    /// Id of an evaluation run record.
    EvalRunId,
    /// Id of a file object record.
    FileObjectId,
);

/// A UTC instant with microsecond precision (what SQLite, PostgreSQL and ClickHouse all keep exactly).
///
/// Serialises as RFC 3339 with microseconds and a `Z` suffix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable instant (used as the start of a scan).
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }
    /// From microseconds since the Unix epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }
    /// Microseconds since the Unix epoch.
    pub fn as_micros(&self) -> i64 {
        self.0
    }
    /// From a chrono instant (sub-microsecond digits are dropped).
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_micros())
    }
    /// As a chrono instant.
    pub fn to_datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
    /// RFC 3339 text with microseconds and `Z`.
    pub fn to_rfc3339(&self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }
    /// Parses RFC 3339 text in any offset; the result is UTC.
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| Self::from_datetime(d.with_timezone(&Utc)))
            .map_err(|e| Error::invalid(field, format!("not an RFC 3339 time: {e}")))
    }
    /// This instant plus `d` (saturating).
    pub fn plus(&self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }
    /// This instant minus `d` (saturating).
    pub fn minus(&self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

/// RFC 3339 text in human-readable formats (JSON); microseconds since the epoch (`i64`) in binary
/// ones (the canonical encoding `verify` fingerprints).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Timestamp);
        }
        let s = String::deserialize(d)?;
        Timestamp::parse("timestamp", &s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_parse_back() {
        let id = WorkspaceId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(id.to_string().parse::<WorkspaceId>().unwrap(), id);
        let v4 = "9c5b94b1-35ad-49bb-b118-8e8fc24abf80";
        let err = v4.parse::<RecordId>().unwrap_err();
        assert_eq!(err.field(), Some("id"));
    }

    #[test]
    fn timestamps_round_trip_with_offsets() {
        let t = Timestamp::parse("t", "2026-01-02T03:04:05.123456+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T01:04:05.123456Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(Timestamp::parse("t", "yesterday").is_err());
    }
}
