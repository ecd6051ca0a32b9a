//! Records: the entity kinds of the system of record, as data.
//!
//! Every record carries its id (UUIDv7), its workspace, `created_at`, `updated_at` and a tombstone flag,
//! plus a typed [`RecordBody`]. Stores key records by id and resolve concurrent writes by `updated_at`
//! (the newer write wins; an equal one is a no-op re-apply), so retries, dual-writes and backfills can
//! be repeated safely.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::id::*;
use crate::validate;

macro_rules! kinds {
    ($($variant:ident => $s:literal),* $(,)?) => {
        /// The kind of a record.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RecordKind { $(
            #[doc = concat!("A `", $s, "` record.")]
            $variant,
        )* }

        impl RecordKind {
            /// Every kind, in dependency order (parents before children).
            pub const ALL: &'static [RecordKind] = &[$(RecordKind::$variant),*];
            /// The stable name stored by every backend.
            pub fn as_str(&self) -> &'static str {
                match self { $(RecordKind::$variant => $s),* }
            }
        }

        impl FromStr for RecordKind {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(RecordKind::$variant),)*
                    other => Err(Error::invalid("kind", format!("unknown record kind `{other}`"))),
                }
            }
        }
    };
}

kinds! {
    Project => "project",
    Agent => "agent",
    Conversation => "conversation",
    Message => "message",
    Prompt => "prompt",
    PromptVersion => "prompt_version",
    Dataset => "dataset",
    DatasetItem => "dataset_item",
    EvalRun => "eval_run",
    FileObject => "file_object",
}

impl RecordKind {
    /// Whether records of this kind may not change once written (a re-upsert must be identical).
    pub fn is_immutable(&self) -> bool {
        matches!(self, RecordKind::PromptVersion)
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project: groups agents, prompts, datasets and evaluation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Unique within the workspace.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Free-form settings (a JSON object).
    pub settings: Value,
}

/// An AI agent of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Owning project.
    pub project: ProjectId,
    /// Unique within the project.
    pub name: String,
    /// Default model name.
    pub model: Option<String>,
    /// Free-form configuration (a JSON object).
    pub config: Value,
}

/// A conversation with an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Owning project.
    pub project: ProjectId,
    /// The agent, if any.
    pub agent: Option<AgentId>,
    /// Title.
    pub title: Option<String>,
    /// Free-form metadata (a JSON object).
    pub metadata: Value,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// System instructions.
    System,
    /// The user.
    User,
    /// The assistant (the agent).
    Assistant,
    /// A tool result.
    Tool,
}

/// A message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Owning project.
    pub project: ProjectId,
    /// Owning conversation.
    pub conversation: ConversationId,
    /// The message it answers, if any.
    pub parent: Option<MessageId>,
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// Tokens in the prompt that produced it.
    pub input_tokens: Option<u32>,
    /// Tokens it holds.
    pub output_tokens: Option<u32>,
    /// Time to produce it, in milliseconds.
    pub latency_ms: Option<u32>,
    /// Free-form metadata (a JSON object).
    pub metadata: Value,
}

/// A named prompt; its content lives in immutable [`PromptVersion`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// Owning project.
    pub project: ProjectId,
    /// Unique within the project.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Labels (such as `production`) pointing at version numbers.
    pub labels: BTreeMap<String, u32>,
}

/// One immutable version of a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    /// Owning project.
    pub project: ProjectId,
    /// The prompt.
    pub prompt: PromptId,
    /// 1, 2, 3, … unique per prompt.
    pub version: u32,
    /// The template text.
    pub template: String,
    /// The model it is meant for.
    pub model: Option<String>,
    /// Model parameters (a JSON object: temperature, max tokens, …).
    pub params: Value,
    /// Why this version was made.
    pub commit_message: Option<String>,
}

/// A dataset of evaluation items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Owning project.
    pub project: ProjectId,
    /// Unique within the project.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
}

/// One item of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetItem {
    /// Owning project.
    pub project: ProjectId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The input (any JSON).
    pub input: Value,
    /// The expected output (any JSON).
    pub expected_output: Option<Value>,
    /// Free-form metadata (a JSON object).
    pub metadata: Value,
}

/// The state of an evaluation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still producing results.
    Running,
    /// Finished.
    Completed,
    /// Stopped by an error.
    Failed,
}

/// An evaluation run; its results are analytics events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRun {
    /// Owning project.
    pub project: ProjectId,
    /// Name of the run.
    pub name: String,
    /// The dataset evaluated, if any.
    pub dataset: Option<DatasetId>,
    /// The prompt version evaluated, if any.
    pub prompt_version: Option<PromptVersionId>,
    /// The state.
    pub status: RunStatus,
    /// Free-form metadata (a JSON object).
    pub metadata: Value,
}

/// A file attachment; its bytes live in the blob store under `key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    /// Owning project, if any.
    pub project: Option<ProjectId>,
    /// Blob key within the workspace.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub content_type: Option<String>,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Where the bytes live when not at `key`: `sha256/<hex>` for content-addressed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_key: Option<String>,
}

impl FileObject {
    /// The blob key holding the bytes (`blob_key`, else `key`).
    pub fn stored_at(&self) -> &str {
        self.blob_key.as_deref().unwrap_or(&self.key)
    }
}

/// The typed content of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RecordBody {
    Project(Project),
    Agent(Agent),
    Conversation(Conversation),
    Message(Message),
    Prompt(Prompt),
    PromptVersion(PromptVersion),
    Dataset(Dataset),
    DatasetItem(DatasetItem),
    EvalRun(EvalRun),
    FileObject(FileObject),
}

/// A record: envelope plus typed body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UUIDv7 id, unique across kinds.
    pub id: RecordId,
    /// The tenant.
    pub workspace: WorkspaceId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last written; the newer write wins.
    pub updated_at: Timestamp,
    /// A tombstone: deleted records stay scannable so deletes migrate too.
    pub deleted: bool,
    /// The typed content.
    pub body: RecordBody,
}

impl Record {
    /// A new, validated record with a fresh id and both times set to now.
    pub fn new(workspace: WorkspaceId, body: RecordBody) -> Result<Self> {
        let now = Timestamp::now();
        let record = Record {
            id: RecordId::new(),
            workspace,
            created_at: now,
            updated_at: now,
            deleted: false,
            body,
        };
        record.validate()?;
        Ok(record)
    }

    /// The kind of its body.
    pub fn kind(&self) -> RecordKind {
        self.body.kind()
    }

    /// Checks every field; stores call this before they write anything.
    pub fn validate(&self) -> Result<()> {
        if self.updated_at < self.created_at {
            return Err(Error::invalid(
                "updated_at",
                "must not be earlier than created_at",
            ));
        }
        self.body.validate()
    }

    /// This record with `body` replaced and `updated_at` moved to now (strictly later than before).
    pub fn updated(&self, body: RecordBody) -> Result<Self> {
        let mut next = self.clone();
        next.body = body;
        next.updated_at = std::cmp::max(Timestamp::now(), self.updated_at.plus_micros(1));
        next.validate()?;
        Ok(next)
    }
}

impl Timestamp {
    /// This instant plus `n` microseconds.
    pub fn plus_micros(&self, n: i64) -> Timestamp {
        Timestamp::from_micros(self.as_micros().saturating_add(n))
    }
}

impl RecordBody {
    /// Decodes a body's JSON (`{"kind": …, "data": …}`) with its keys in either order, without
    /// buffering: serde's adjacently tagged decoding holds `data` in an intermediate tree when it
    /// comes before `kind`, and JSONB gives keys of one length in byte order (`data` first). Here
    /// `data` is kept as raw text and decoded once, by the type its kind names.
    pub fn from_json_slice(text: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Tagged<'a> {
            kind: &'a str,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let tagged: Tagged<'_> = serde_json::from_slice(text)?;
        let data = tagged.data.get();
        macro_rules! by_kind {
            ($($name:literal => $variant:ident),* $(,)?) => {
                match tagged.kind {
                    $($name => serde_json::from_str(data).map(RecordBody::$variant),)*
                    other => Err(serde::de::Error::unknown_variant(
                        other,
                        &[$($name),*],
                    )),
                }
            };
        }
        by_kind!(
            "project" => Project,
            "agent" => Agent,
            "conversation" => Conversation,
            "message" => Message,
            "prompt" => Prompt,
            "prompt_version" => PromptVersion,
            "dataset" => Dataset,
            "dataset_item" => DatasetItem,
            "eval_run" => EvalRun,
            "file_object" => FileObject,
        )
    }

    /// The kind of this body.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::Project(_) => RecordKind::Project,
            RecordBody::Agent(_) => RecordKind::Agent,
            RecordBody::Conversation(_) => RecordKind::Conversation,
            RecordBody::Message(_) => RecordKind::Message,
            RecordBody::Prompt(_) => RecordKind::Prompt,
            RecordBody::PromptVersion(_) => RecordKind::PromptVersion,
            RecordBody::Dataset(_) => RecordKind::Dataset,
            RecordBody::DatasetItem(_) => RecordKind::DatasetItem,
            RecordBody::EvalRun(_) => RecordKind::EvalRun,
            RecordBody::FileObject(_) => RecordKind::FileObject,
        }
    }

    /// The project the record belongs to (indexed; a list filter).
    pub fn project(&self) -> Option<ProjectId> {
        match self {
            RecordBody::Project(_) => None,
            RecordBody::Agent(b) => Some(b.project),
            RecordBody::Conversation(b) => Some(b.project),
            RecordBody::Message(b) => Some(b.project),
            RecordBody::Prompt(b) => Some(b.project),
            RecordBody::PromptVersion(b) => Some(b.project),
            RecordBody::Dataset(b) => Some(b.project),
            RecordBody::DatasetItem(b) => Some(b.project),
            RecordBody::EvalRun(b) => Some(b.project),
            RecordBody::FileObject(b) => b.project,
        }
    }

    /// The containing record (indexed; a list filter): the conversation of a message, the prompt of a
    /// version, the dataset of an item, the agent of a conversation.
    pub fn parent(&self) -> Option<RecordId> {
        match self {
            RecordBody::Conversation(b) => b.agent,
            RecordBody::Message(b) => Some(b.conversation),
            RecordBody::PromptVersion(b) => Some(b.prompt),
            RecordBody::DatasetItem(b) => Some(b.dataset),
            RecordBody::EvalRun(b) => b.dataset,
            _ => None,
        }
    }

    /// The name a list can filter on exactly.
    pub fn name(&self) -> Option<&str> {
        match self {
            RecordBody::Project(b) => Some(&b.name),
            RecordBody::Agent(b) => Some(&b.name),
            RecordBody::Prompt(b) => Some(&b.name),
            RecordBody::Dataset(b) => Some(&b.name),
            RecordBody::EvalRun(b) => Some(&b.name),
            RecordBody::FileObject(b) => Some(&b.key),
            _ => None,
        }
    }

    /// The key that must be unique among live records of this kind in a workspace, if any.
    ///
    /// Writing a different id with the same unique key is a [`Error::Conflict`].
    pub fn unique_key(&self) -> Option<String> {
        match self {
            RecordBody::Project(b) => Some(b.name.clone()),
            RecordBody::Agent(b) => Some(format!("{}/{}", b.project, b.name)),
            RecordBody::Prompt(b) => Some(format!("{}/{}", b.project, b.name)),
            RecordBody::PromptVersion(b) => Some(format!("{}/{}", b.prompt, b.version)),
            RecordBody::Dataset(b) => Some(format!("{}/{}", b.project, b.name)),
            RecordBody::FileObject(b) => Some(b.key.clone()),
            _ => None,
        }
    }

    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        use validate::*;
        match self {
            RecordBody::Project(b) => {
                name("project.name", &b.name)?;
                opt_text("project.description", &b.description, MAX_SHORT_TEXT_BYTES)?;
                json_object("project.settings", &b.settings)
            }
            RecordBody::Agent(b) => {
                name("agent.name", &b.name)?;
                if let Some(m) = &b.model {
                    name("agent.model", m)?;
                }
                json_object("agent.config", &b.config)
            }
            RecordBody::Conversation(b) => {
                opt_text("conversation.title", &b.title, MAX_SHORT_TEXT_BYTES)?;
                json_object("conversation.metadata", &b.metadata)
            }
            RecordBody::Message(b) => {
                text("message.content", &b.content, MAX_TEXT_BYTES)?;
                json_object("message.metadata", &b.metadata)
            }
            RecordBody::Prompt(b) => {
                name("prompt.name", &b.name)?;
                opt_text("prompt.description", &b.description, MAX_SHORT_TEXT_BYTES)?;
                for label in b.labels.keys() {
                    name("prompt.labels", label)?;
                }
                if b.labels.values().any(|v| *v == 0) {
                    return Err(Error::invalid(
                        "prompt.labels",
                        "label must point at a version >= 1",
                    ));
                }
                Ok(())
            }
            RecordBody::PromptVersion(b) => {
                if b.version == 0 {
                    return Err(Error::invalid("prompt_version.version", "must be >= 1"));
                }
                if b.template.trim().is_empty() {
                    return Err(Error::invalid(
                        "prompt_version.template",
                        "must not be empty",
                    ));
                }
                text("prompt_version.template", &b.template, MAX_TEXT_BYTES)?;
                if let Some(m) = &b.model {
                    name("prompt_version.model", m)?;
                }
                opt_text(
                    "prompt_version.commit_message",
                    &b.commit_message,
                    MAX_SHORT_TEXT_BYTES,
                )?;
                json_object("prompt_version.params", &b.params)
            }
            RecordBody::Dataset(b) => {
                name("dataset.name", &b.name)?;
                opt_text("dataset.description", &b.description, MAX_SHORT_TEXT_BYTES)
            }
            RecordBody::DatasetItem(b) => {
                json_any("dataset_item.input", &b.input)?;
                if let Some(e) = &b.expected_output {
                    json_any("dataset_item.expected_output", e)?;
                }
                json_object("dataset_item.metadata", &b.metadata)
            }
            RecordBody::EvalRun(b) => {
                name("eval_run.name", &b.name)?;
                json_object("eval_run.metadata", &b.metadata)
            }
            RecordBody::FileObject(b) => {
                crate::blob::BlobKey::new(&b.key).map_err(|e| match e {
                    Error::InvalidInput { reason, .. } => Error::invalid("file_object.key", reason),
                    other => other,
                })?;
                if let Some(k) = &b.blob_key {
                    crate::blob::BlobKey::new(k).map_err(|e| match e {
                        Error::InvalidInput { reason, .. } => {
                            Error::invalid("file_object.blob_key", reason)
                        }
                        other => other,
                    })?;
                }
                if let Some(ct) = &b.content_type {
                    name("file_object.content_type", ct)?;
                }
                sha256_hex("file_object.sha256", &b.sha256)
            }
        }
    }
}

/// An opaque keyset page token (the last id of the previous page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken(pub String);

/// One page of a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

impl<T> Page<T> {
    /// A page from a query that fetched up to `limit + 1` items: the extra item only tells that
    /// another page exists; the token is taken from the last item kept.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: usize,
        token: impl Fn(&T) -> PageToken,
    ) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(token)
        } else {
            None
        };
        Page { items, next }
    }
}

/// Largest page a list or scan returns.
pub const MAX_PAGE: usize = 1000;

/// A list of live records of one kind in one workspace, ordered by id.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// The kind to list.
    pub kind: RecordKind,
    /// Only records of this project.
    pub project: Option<ProjectId>,
    /// Only records under this parent (see [`RecordBody::parent`]).
    pub parent: Option<RecordId>,
    /// Only records with this exact name (see [`RecordBody::name`]).
    pub name: Option<String>,
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: usize,
    /// Continue after this token.
    pub page: Option<PageToken>,
}

impl ListQuery {
    /// All records of `kind`, 100 a page.
    pub fn new(kind: RecordKind) -> Self {
        ListQuery {
            kind,
            project: None,
            parent: None,
            name: None,
            limit: 100,
            page: None,
        }
    }
    /// Filter by project.
    pub fn project(mut self, p: ProjectId) -> Self {
        self.project = Some(p);
        self
    }
    /// Filter by parent.
    pub fn parent(mut self, p: RecordId) -> Self {
        self.parent = Some(p);
        self
    }
    /// Filter by exact name.
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = Some(n.into());
        self
    }
    /// Page size.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }
    /// Checks the page size and token.
    pub fn validate(&self) -> Result<Option<RecordId>> {
        check_limit(self.limit)?;
        self.page
            .as_ref()
            .map(|t| {
                t.0.parse::<RecordId>()
                    .map_err(|_| Error::invalid("page", "not a page token of this list"))
            })
            .transpose()
    }
}

/// Checks a page size.
pub fn check_limit(limit: usize) -> Result<()> {
    crate::validate::count_between("limit", limit, MAX_PAGE)
}

/// A keyset position in a scan: the `(updated_at, id)` of the last record seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScanCursor {
    /// `updated_at` of the last record seen.
    pub updated_at: Timestamp,
    /// Its id.
    pub id: RecordId,
}

impl Record {
    /// The scan cursor positioned at this record.
    pub fn cursor(&self) -> ScanCursor {
        ScanCursor {
            updated_at: self.updated_at,
            id: self.id,
        }
    }
}

/// A scan of every record of a kind (tombstones included) in `(updated_at, id)` order: what backfill,
/// verification and repair read.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanRequest {
    /// The kind to scan.
    pub kind: RecordKind,
    /// One workspace, or all of them (an operator's scan).
    pub workspace: Option<WorkspaceId>,
    /// Start strictly after this position.
    pub after: Option<ScanCursor>,
    /// Batch size, 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// What an upsert did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// Records written (new, or newer than the stored one).
    pub written: u64,
    /// Records skipped because the stored one was as new or newer.
    pub skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn project(name: &str) -> RecordBody {
        RecordBody::Project(Project {
            name: name.into(),
            description: None,
            settings: json!({}),
        })
    }

    #[test]
    fn bodies_decode_with_their_keys_in_either_order() {
        let body = project("p ü \"q\"");
        let text = serde_json::to_string(&body).unwrap();
        assert!(text.starts_with(r#"{"kind":"#), "{text}");
        assert_eq!(RecordBody::from_json_slice(text.as_bytes()).unwrap(), body);
        // JSONB's order: `data` first.
        let data = serde_json::to_string(&serde_json::to_value(&body).unwrap()["data"]).unwrap();
        let jsonb = format!(r#"{{"data": {data}, "kind": "project"}}"#);
        assert_eq!(RecordBody::from_json_slice(jsonb.as_bytes()).unwrap(), body);
        // Every kind has its arm: a kind's own name is never an unknown variant.
        for k in RecordKind::ALL {
            let text = format!(r#"{{"kind":"{}","data":null}}"#, k.as_str());
            let err = RecordBody::from_json_slice(text.as_bytes()).unwrap_err();
            assert!(!err.to_string().contains("unknown variant"), "{k:?}: {err}");
        }
        let err = RecordBody::from_json_slice(br#"{"kind":"nope","data":{}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `nope`"), "{err}");
        assert!(RecordBody::from_json_slice(br#"{"kind":"project"}"#).is_err());
    }

    #[test]
    fn kinds_round_trip() {
        for k in RecordKind::ALL {
            assert_eq!(k.as_str().parse::<RecordKind>().unwrap(), *k);
        }
        assert!("nope".parse::<RecordKind>().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let ws = WorkspaceId::new();
        assert_eq!(
            Record::new(ws, project("")).unwrap_err().field(),
            Some("project.name")
        );
        let msg = RecordBody::Message(Message {
            project: RecordId::new(),
            conversation: RecordId::new(),
            parent: None,
            role: Role::User,
            content: "x".repeat(validate::MAX_TEXT_BYTES + 1),
            input_tokens: None,
            output_tokens: None,
            latency_ms: None,
            metadata: json!({}),
        });
        let err = Record::new(ws, msg).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::TooLarge);
        assert_eq!(err.field(), Some("message.content"));
    }

    #[test]
    fn body_serialises_with_kind_tag() {
        let r = Record::new(WorkspaceId::new(), project("p")).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["body"]["kind"], "project");
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn updated_moves_forward() {
        let r = Record::new(WorkspaceId::new(), project("p")).unwrap();
        let n = r.updated(project("q")).unwrap();
        assert!(n.updated_at > r.updated_at);
        assert_eq!(n.created_at, r.created_at);
    }
}
