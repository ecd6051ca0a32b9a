//! The typed API services use: projects, agents, conversations, prompts, datasets, evaluations,
//! search and files, always within one workspace.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use sprintlens_core::analytics::TimeRange;
use sprintlens_core::blob::sha256_hex;
use sprintlens_core::*;

use crate::Storage;

/// The bytes of a file being attached.
enum Payload {
    Bytes(Bytes),
    Stream(ByteStream),
}

/// The typed API for one workspace. Cheap to make: `storage.workspace(id)`.
#[derive(Clone, Copy)]
pub struct Workspace<'a> {
    storage: &'a Storage,
    id: WorkspaceId,
}

/// A conversation to log.
#[derive(Clone, Debug, PartialEq)]
pub struct NewConversation {
    /// Its project.
    pub project: ProjectId,
    /// Its agent, if any.
    pub agent: Option<AgentId>,
    /// Title.
    pub title: String,
    /// Messages in order; each answers the one before.
    pub messages: Vec<(Role, String)>,
}

/// A logged conversation and its messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// The conversation record.
    pub conversation: Record,
    /// Its message records, in order.
    pub messages: Vec<Record>,
}

/// A search hit with the record it points at (when it still exists).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    /// The index hit.
    pub hit: VectorHit,
    /// The record, if live.
    pub record: Option<Record>,
}

/// One result of an evaluation to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewResult {
    /// Dataset item scored, if any.
    pub dataset_item: Option<DatasetItemId>,
    /// Agent evaluated, if any.
    pub agent: Option<AgentId>,
    /// Metric name.
    pub metric: String,
    /// Score.
    pub score: f64,
    /// Passed?
    pub passed: bool,
    /// Latency, ms.
    pub latency_ms: u32,
    /// Cost.
    pub cost: Cost,
    /// Error text, if it failed.
    pub error: Option<String>,
}

fn body_of<T>(r: &Record, f: impl Fn(&RecordBody) -> Option<&T>) -> Result<&T> {
    f(&r.body).ok_or_else(|| Error::backend("sprintlens", "decode", "unexpected record kind"))
}

impl<'a> Workspace<'a> {
    pub(crate) fn new(storage: &'a Storage, id: WorkspaceId) -> Self {
        Workspace { storage, id }
    }

    /// The workspace id.
    pub fn id(&self) -> WorkspaceId {
        self.id
    }

    async fn put(&self, body: RecordBody) -> Result<Record> {
        let r = Record::new(self.id, body)?;
        self.storage
            .records
            .upsert(std::slice::from_ref(&r))
            .await?;
        Ok(r)
    }

    async fn find_by_name(
        &self,
        kind: RecordKind,
        project: Option<ProjectId>,
        name: &str,
    ) -> Result<Option<Record>> {
        let mut q = ListQuery::new(kind).name(name).limit(1);
        q.project = project;
        Ok(self.storage.records.list(self.id, &q).await?.items.pop())
    }

    /// Creates a project (names are unique per workspace: a second one is a conflict).
    pub async fn create_project(&self, name: &str, description: Option<&str>) -> Result<Record> {
        self.put(RecordBody::Project(Project {
            name: name.into(),
            description: description.map(Into::into),
            settings: json!({}),
        }))
        .await
    }

    /// The live project of that name.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Record>> {
        self.find_by_name(RecordKind::Project, None, name).await
    }

    /// Creates an agent in a project.
    pub async fn create_agent(
        &self,
        project: ProjectId,
        name: &str,
        model: Option<&str>,
    ) -> Result<Record> {
        self.put(RecordBody::Agent(Agent {
            project,
            name: name.into(),
            model: model.map(Into::into),
            config: json!({}),
        }))
        .await
    }

    /// Logs conversations with their messages in one batch, then indexes an embedding of each
    /// conversation (title and messages) and of each message for semantic search.
    ///
    /// The records commit first; if indexing then fails the records stay and the error is returned,
    /// so the caller may retry (upserts are idempotent by id).
    pub async fn log_conversations(&self, batch: &[NewConversation]) -> Result<Vec<Logged>> {
        let mut logged = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        for c in batch {
            let conv = Record::new(
                self.id,
                RecordBody::Conversation(Conversation {
                    project: c.project,
                    agent: c.agent,
                    title: Some(c.title.clone()),
                    metadata: json!({"messages": c.messages.len()}),
                }),
            )?;
            let mut parent = None;
            let mut msgs = Vec::with_capacity(c.messages.len());
            for (role, content) in &c.messages {
                let m = Record::new(
                    self.id,
                    RecordBody::Message(Message {
                        project: c.project,
                        conversation: conv.id,
                        parent,
                        role: *role,
                        content: content.clone(),
                        input_tokens: None,
                        output_tokens: None,
                        latency_ms: None,
                        metadata: json!({}),
                    }),
                )?;
                parent = Some(m.id);
                msgs.push(m);
            }
            records.push(conv.clone());
            records.extend(msgs.iter().cloned());
            logged.push(Logged {
                conversation: conv,
                messages: msgs,
            });
        }
        self.storage.records.upsert(&records).await?;

        let mut texts = Vec::new();
        let mut targets = Vec::new();
        for (l, c) in logged.iter().zip(batch) {
            let all: Vec<&str> = c.messages.iter().map(|(_, t)| t.as_str()).collect();
            texts.push(format!("{}\n{}", c.title, all.join("\n")));
            targets.push((EmbeddingKind::Conversation, l.conversation.id, c.project));
            for (m, (_, t)) in l.messages.iter().zip(&c.messages) {
                texts.push(t.clone());
                targets.push((EmbeddingKind::Message, m.id, c.project));
            }
        }
        let embeddings = self.storage.embedder.embed(&texts).await?;
        let now = Timestamp::now();
        let entries: Vec<VectorEntry> = targets
            .into_iter()
            .zip(embeddings)
            .map(|((kind, id, project), embedding)| VectorEntry {
                workspace: self.id,
                project: Some(project),
                kind,
                id,
                embedding,
                updated_at: now,
            })
            .collect();
        self.storage.vectors.upsert(&entries).await?;
        Ok(logged)
    }

    /// Logs one conversation (see [`Self::log_conversations`]).
    pub async fn log_conversation(&self, c: NewConversation) -> Result<Logged> {
        Ok(self.log_conversations(&[c]).await?.remove(0))
    }

    /// Semantic search: embeds `text` and returns the `k` closest conversations/messages/prompts/
    /// dataset items (filtered by project and kinds) with their records.
    pub async fn search_similar(
        &self,
        text: &str,
        project: Option<ProjectId>,
        kinds: &[EmbeddingKind],
        k: usize,
    ) -> Result<Vec<SearchHit>> {
        let embedding = self
            .storage
            .embedder
            .embed(&[text.to_string()])
            .await?
            .remove(0);
        let hits = self
            .storage
            .vectors
            .search(&VectorQuery {
                workspace: self.id,
                project,
                kinds: kinds.to_vec(),
                embedding,
                k,
            })
            .await?;
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let kind = match hit.kind {
                EmbeddingKind::Conversation => RecordKind::Conversation,
                EmbeddingKind::Message => RecordKind::Message,
                EmbeddingKind::Prompt => RecordKind::PromptVersion,
                EmbeddingKind::DatasetItem => RecordKind::DatasetItem,
            };
            let record = self.storage.records.get(self.id, kind, hit.id).await?;
            out.push(SearchHit { hit, record });
        }
        Ok(out)
    }

    /// Publishes a new immutable version of a prompt (creating the prompt on first use) and points
    /// `labels` at it. Concurrent publishers never get the same version number: the loser of a race
    /// retries with the next one.
    pub async fn publish_prompt(
        &self,
        project: ProjectId,
        name: &str,
        template: &str,
        model: Option<&str>,
        params: Value,
        labels: &[&str],
    ) -> Result<Record> {
        for attempt in 0..8 {
            match self
                .try_publish(project, name, template, model, params.clone(), labels)
                .await
            {
                Err(Error::Conflict { .. }) if attempt < 7 => continue,
                other => return other,
            }
        }
        Err(Error::conflict(
            "publish_prompt: too many concurrent publishers",
        ))
    }

    async fn try_publish(
        &self,
        project: ProjectId,
        name: &str,
        template: &str,
        model: Option<&str>,
        params: Value,
        labels: &[&str],
    ) -> Result<Record> {
        let prompt = match self
            .find_by_name(RecordKind::Prompt, Some(project), name)
            .await?
        {
            Some(p) => p,
            None => {
                self.put(RecordBody::Prompt(Prompt {
                    project,
                    name: name.into(),
                    description: None,
                    labels: BTreeMap::new(),
                }))
                .await?
            }
        };
        let versions = self
            .storage
            .records
            .list_all(
                self.id,
                &ListQuery::new(RecordKind::PromptVersion)
                    .parent(prompt.id)
                    .limit(MAX_PAGE),
            )
            .await?;
        let next = versions
            .iter()
            .filter_map(|r| match &r.body {
                RecordBody::PromptVersion(v) => Some(v.version),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            + 1;
        let version = self
            .put(RecordBody::PromptVersion(PromptVersion {
                project,
                prompt: prompt.id,
                version: next,
                template: template.into(),
                model: model.map(Into::into),
                params,
                commit_message: None,
            }))
            .await?;
        // Index the template for semantic search over prompts.
        let embedding = self
            .storage
            .embedder
            .embed(&[template.to_string()])
            .await?
            .remove(0);
        self.storage
            .vectors
            .upsert(&[VectorEntry {
                workspace: self.id,
                project: Some(project),
                kind: EmbeddingKind::Prompt,
                id: version.id,
                embedding,
                updated_at: version.updated_at,
            }])
            .await?;
        if !labels.is_empty() {
            let mut body = body_of(&prompt, |b| match b {
                RecordBody::Prompt(p) => Some(p),
                _ => None,
            })?
            .clone();
            for l in labels {
                body.labels.insert((*l).to_string(), next);
            }
            let updated = prompt.updated(RecordBody::Prompt(body))?;
            self.storage
                .records
                .upsert(std::slice::from_ref(&updated))
                .await?;
            // Invalidate after the store committed, so no reader caches the old pointer again.
            for l in labels {
                self.storage
                    .cache
                    .delete(&self.label_key(project, name, l)?)
                    .await?;
            }
        }
        Ok(version)
    }

    fn label_key(&self, project: ProjectId, name: &str, label: &str) -> Result<CacheKey> {
        CacheKey::new(
            self.id,
            "prompt-label",
            &format!("{project}/{name}/{label}"),
        )
    }

    /// The prompt version a label points at, read through the cache.
    pub async fn prompt_by_label(
        &self,
        project: ProjectId,
        name: &str,
        label: &str,
    ) -> Result<Option<Record>> {
        let key = self.label_key(project, name, label)?;
        let (records, ws) = (self.storage.records.clone(), self.id);
        let (name_owned, label_owned) = (name.to_string(), label.to_string());
        let bytes = self
            .storage
            .cache
            .get_or_load(
                &key,
                self.storage.cache_ttl,
                Box::new(move || {
                    Box::pin(async move {
                        let found =
                            load_label(&*records, ws, project, &name_owned, &label_owned).await?;
                        let v = json!({"v": 1, "record": found});
                        serde_json::to_vec(&v)
                            .map(Bytes::from)
                            .map_err(|e| Error::backend("sprintlens", "cache encode", e))
                    })
                }),
            )
            .await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::backend("sprintlens", "cache decode", e))?;
        if v.get("v") != Some(&json!(1)) {
            // Written by another version of this layer: drop it and read from the store.
            self.storage.cache.delete(&key).await?;
            return load_label(&*self.storage.records, self.id, project, name, label).await;
        }
        serde_json::from_value(v["record"].clone())
            .map_err(|e| Error::backend("sprintlens", "cache decode", e))
    }

    /// Adds items to a dataset (created on first use).
    pub async fn add_dataset_items(
        &self,
        project: ProjectId,
        dataset: &str,
        items: Vec<(Value, Option<Value>)>,
    ) -> Result<(Record, Vec<Record>)> {
        let ds = match self
            .find_by_name(RecordKind::Dataset, Some(project), dataset)
            .await?
        {
            Some(d) => d,
            None => {
                self.put(RecordBody::Dataset(Dataset {
                    project,
                    name: dataset.into(),
                    description: None,
                }))
                .await?
            }
        };
        let records = items
            .into_iter()
            .map(|(input, expected_output)| {
                Record::new(
                    self.id,
                    RecordBody::DatasetItem(DatasetItem {
                        project,
                        dataset: ds.id,
                        input,
                        expected_output,
                        metadata: json!({}),
                    }),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.storage.records.upsert(&records).await?;
        Ok((ds, records))
    }

    /// Starts an evaluation run.
    pub async fn start_eval_run(
        &self,
        project: ProjectId,
        name: &str,
        dataset: Option<DatasetId>,
        prompt_version: Option<PromptVersionId>,
    ) -> Result<Record> {
        self.put(RecordBody::EvalRun(EvalRun {
            project,
            name: name.into(),
            dataset,
            prompt_version,
            status: RunStatus::Running,
            metadata: json!({}),
        }))
        .await
    }

    /// Records results of a run (idempotent per result id; batches of any size).
    pub async fn record_results(&self, run: &Record, results: &[NewResult]) -> Result<u64> {
        let project = run
            .body
            .project()
            .ok_or_else(|| Error::invalid("run", "not an evaluation run"))?;
        let now = Timestamp::now();
        let events: Vec<AnalyticsEvent> = results
            .iter()
            .map(|r| {
                AnalyticsEvent::EvalResult(EvalResult {
                    id: EventId::new(),
                    workspace: self.id,
                    project,
                    run: run.id,
                    dataset_item: r.dataset_item,
                    agent: r.agent,
                    metric: r.metric.clone(),
                    score: r.score,
                    passed: r.passed,
                    latency_ms: r.latency_ms,
                    cost: r.cost,
                    error: r.error.clone(),
                    created_at: now,
                })
            })
            .collect();
        let mut written = 0;
        for chunk in events.chunks(10_000) {
            written += self.storage.analytics.record(chunk).await?;
        }
        Ok(written)
    }

    /// Marks a run finished.
    pub async fn finish_eval_run(&self, run: &Record, status: RunStatus) -> Result<Record> {
        let mut body = body_of(run, |b| match b {
            RecordBody::EvalRun(r) => Some(r),
            _ => None,
        })?
        .clone();
        body.status = status;
        let next = run.updated(RecordBody::EvalRun(body))?;
        self.storage
            .records
            .upsert(std::slice::from_ref(&next))
            .await?;
        Ok(next)
    }

    /// Records usage events.
    pub async fn record_usage(&self, events: &[UsageEvent]) -> Result<u64> {
        let events: Vec<AnalyticsEvent> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.workspace = self.id;
                AnalyticsEvent::Usage(e)
            })
            .collect();
        let mut written = 0;
        for chunk in events.chunks(10_000) {
            written += self.storage.analytics.record(chunk).await?;
        }
        Ok(written)
    }

    /// Per-metric summary of a run.
    pub async fn eval_summary(&self, run: EvalRunId) -> Result<EvalSummary> {
        self.storage.analytics.eval_summary(self.id, run).await
    }

    /// Cost and tokens grouped by model, agent or project over a time range.
    pub async fn cost_breakdown(
        &self,
        group_by: GroupBy,
        project: Option<ProjectId>,
        range: TimeRange,
    ) -> Result<Vec<CostRow>> {
        self.storage
            .analytics
            .cost_breakdown(
                self.id,
                &BreakdownQuery {
                    group_by,
                    project,
                    range,
                },
            )
            .await
    }

    /// Stores a file and its record (key, size, content type, SHA-256). With
    /// `[blobs] content_addressed = true` the bytes are stored once per distinct SHA-256 (at
    /// `sha256/<hex>`) and the record points there.
    pub async fn attach_file(
        &self,
        project: Option<ProjectId>,
        key: &str,
        data: Bytes,
        content_type: Option<&str>,
    ) -> Result<Record> {
        self.attach(project, key, Payload::Bytes(data), content_type)
            .await
    }

    /// Like [`Workspace::attach_file`], from a stream: large files go up in concurrent parts with
    /// bounded memory, and a stream that fails or passes `[blobs] max_object_bytes` stores nothing.
    pub async fn attach_file_stream(
        &self,
        project: Option<ProjectId>,
        key: &str,
        data: ByteStream,
        content_type: Option<&str>,
    ) -> Result<Record> {
        self.attach(project, key, Payload::Stream(data), content_type)
            .await
    }

    async fn attach(
        &self,
        project: Option<ProjectId>,
        key: &str,
        data: Payload,
        content_type: Option<&str>,
    ) -> Result<Record> {
        let blob_key = BlobKey::new(key)?;
        let blobs = &self.storage.blobs;
        let content_type = content_type.map(String::from);
        let (meta, stored_at) = if self.storage.config.blobs.content_addressed {
            let stream = match data {
                Payload::Bytes(b) => blob::once(b),
                Payload::Stream(s) => s,
            };
            let (meta, _) = blobs
                .put_content_addressed(self.id, stream, content_type.clone())
                .await?;
            let at = meta.key.to_string();
            (meta, Some(at))
        } else {
            let options = PutOptions {
                content_type: content_type.clone(),
                mode: PutMode::Overwrite,
            };
            let meta = match data {
                Payload::Bytes(b) => blobs.put(self.id, &blob_key, b, options).await?,
                Payload::Stream(s) => blobs.put_stream(self.id, &blob_key, s, options).await?,
            };
            (meta, None)
        };
        let sha256 = meta
            .sha256
            .ok_or_else(|| Error::backend("sprintlens", "attach_file", "no sha256"))?;
        let existing = self.find_by_name(RecordKind::FileObject, None, key).await?;
        let body = RecordBody::FileObject(FileObject {
            project,
            key: key.into(),
            size: meta.size,
            // The caller's content type (a content-addressed blob keeps its first uploader's).
            content_type: content_type.or(meta.content_type),
            sha256,
            blob_key: stored_at,
        });
        match existing {
            Some(r) => {
                let next = r.updated(body)?;
                self.storage
                    .records
                    .upsert(std::slice::from_ref(&next))
                    .await?;
                Ok(next)
            }
            None => self.put(body).await,
        }
    }

    /// Reads a file back and checks its bytes against the SHA-256 in its record.
    pub async fn read_file(&self, key: &str) -> Result<(Record, Bytes)> {
        let record = self
            .find_by_name(RecordKind::FileObject, None, key)
            .await?
            .ok_or_else(|| Error::not_found("file", key))?;
        let (stored_at, expected) = match &record.body {
            RecordBody::FileObject(f) => (f.stored_at().to_string(), f.sha256.clone()),
            _ => (key.to_string(), String::new()),
        };
        let (_, data) = self
            .storage
            .blobs
            .get(self.id, &BlobKey::new(&stored_at)?)
            .await?;
        let actual = sha256_hex(&data);
        if actual != expected {
            return Err(Error::backend(
                "sprintlens",
                "read_file",
                format!("sha256 mismatch for {key}: record {expected}, bytes {actual}"),
            ));
        }
        Ok((record, data))
    }
}

async fn load_label(
    records: &dyn RecordStore,
    ws: WorkspaceId,
    project: ProjectId,
    name: &str,
    label: &str,
) -> Result<Option<Record>> {
    let q = ListQuery::new(RecordKind::Prompt)
        .name(name)
        .project(project)
        .limit(1);
    let Some(prompt) = records.list(ws, &q).await?.items.pop() else {
        return Ok(None);
    };
    let Some(version) = (match &prompt.body {
        RecordBody::Prompt(p) => p.labels.get(label).copied(),
        _ => None,
    }) else {
        return Ok(None);
    };
    let versions = records
        .list_all(
            ws,
            &ListQuery::new(RecordKind::PromptVersion)
                .parent(prompt.id)
                .limit(MAX_PAGE),
        )
        .await?;
    Ok(versions
        .into_iter()
        .find(|r| matches!(&r.body, RecordBody::PromptVersion(v) if v.version == version)))
}
