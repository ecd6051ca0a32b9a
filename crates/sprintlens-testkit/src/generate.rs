//! Deterministic data generators for tests, benchmarks and the demo.

use serde_json::json;
use sprintlens_core::*;

/// A small, fast, seedable random source (SplitMix64). Not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "refund",
    "invoice",
    "password",
    "reset",
    "shipping",
    "delay",
    "order",
    "cancel",
    "account",
    "billing",
    "upgrade",
    "plan",
    "error",
    "login",
    "export",
    "report",
    "latency",
    "timeout",
    "summary",
    "translate",
    "email",
    "draft",
    "schedule",
    "meeting",
    "contract",
    "review",
    "bug",
    "deploy",
    "database",
    "migration",
    "search",
    "vector",
    "prompt",
    "model",
    "evaluate",
    "score",
];

/// Topics the demo's conversations are about (each a few related words).
pub const TOPICS: &[&str] = &[
    "refund for a cancelled order",
    "reset my account password",
    "shipping delay on my order",
    "upgrade billing plan",
    "export a latency report",
    "database migration timeout error",
    "translate and summarise an email draft",
    "schedule a contract review meeting",
];

const FILLER: &[&str] = &[
    "thanks",
    "please",
    "could",
    "check",
    "today",
    "soon",
    "help",
    "again",
    "quick",
    "question",
    "sure",
    "great",
    "details",
    "update",
    "looking",
    "into",
    "appreciate",
    "follow",
    "moment",
    "okay",
];

/// Chit-chat of `n` words that names no topic.
pub fn filler(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| *rng.pick(FILLER))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A sentence of `n` random words.
pub fn sentence(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| *rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A project record.
pub fn project(workspace: WorkspaceId, name: &str) -> Record {
    Record::new(
        workspace,
        RecordBody::Project(Project {
            name: name.into(),
            description: Some(format!("generated project {name}")),
            settings: json!({"retention_days": 30}),
        }),
    )
    .expect("valid project")
}

/// An agent record.
pub fn agent(workspace: WorkspaceId, project: ProjectId, name: &str) -> Record {
    Record::new(
        workspace,
        RecordBody::Agent(Agent {
            project,
            name: name.into(),
            model: Some("gpt-4o-mini".into()),
            config: json!({"temperature": 0.2}),
        }),
    )
    .expect("valid agent")
}

/// A conversation record.
pub fn conversation(
    workspace: WorkspaceId,
    project: ProjectId,
    agent: Option<AgentId>,
    title: &str,
) -> Record {
    Record::new(
        workspace,
        RecordBody::Conversation(Conversation {
            project,
            agent,
            title: Some(title.into()),
            metadata: json!({"channel": "web"}),
        }),
    )
    .expect("valid conversation")
}

/// A message record.
pub fn message(
    workspace: WorkspaceId,
    project: ProjectId,
    conversation: ConversationId,
    role: Role,
    content: &str,
) -> Record {
    Record::new(
        workspace,
        RecordBody::Message(Message {
            project,
            conversation,
            parent: None,
            role,
            content: content.into(),
            input_tokens: Some(12),
            output_tokens: Some(34),
            latency_ms: Some(420),
            metadata: json!({}),
        }),
    )
    .expect("valid message")
}

/// One record of every kind, all in one project (parents first).
pub fn one_of_each(workspace: WorkspaceId) -> Vec<Record> {
    let p = project(workspace, &format!("project-{}", RecordId::new()));
    let pid = p.id;
    let a = agent(workspace, pid, "support-bot");
    let c = conversation(workspace, pid, Some(a.id), "help");
    let m = message(workspace, pid, c.id, Role::User, "where is my order?");
    let prompt = Record::new(
        workspace,
        RecordBody::Prompt(Prompt {
            project: pid,
            name: "summarize".into(),
            description: None,
            labels: [("production".to_string(), 1)].into(),
        }),
    )
    .unwrap();
    let pv = Record::new(
        workspace,
        RecordBody::PromptVersion(PromptVersion {
            project: pid,
            prompt: prompt.id,
            version: 1,
            template: "Summarise: {{text}}".into(),
            model: Some("gpt-4o".into()),
            params: json!({"temperature": 0}),
            commit_message: Some("first".into()),
        }),
    )
    .unwrap();
    let ds = Record::new(
        workspace,
        RecordBody::Dataset(Dataset {
            project: pid,
            name: "golden".into(),
            description: None,
        }),
    )
    .unwrap();
    let item = Record::new(
        workspace,
        RecordBody::DatasetItem(DatasetItem {
            project: pid,
            dataset: ds.id,
            input: json!({"q": "2+2"}),
            expected_output: Some(json!("4")),
            metadata: json!({"difficulty": "easy"}),
        }),
    )
    .unwrap();
    let run = Record::new(
        workspace,
        RecordBody::EvalRun(EvalRun {
            project: pid,
            name: "nightly".into(),
            dataset: Some(ds.id),
            prompt_version: Some(pv.id),
            status: RunStatus::Completed,
            metadata: json!({}),
        }),
    )
    .unwrap();
    let file = Record::new(
        workspace,
        RecordBody::FileObject(FileObject {
            project: Some(pid),
            key: "attachments/a.txt".into(),
            size: 5,
            content_type: Some("text/plain".into()),
            sha256: sprintlens_core::blob::sha256_hex(b"hello"),
            blob_key: Some(format!(
                "sha256/{}",
                sprintlens_core::blob::sha256_hex(b"hello")
            )),
        }),
    )
    .unwrap();
    vec![p, a, c, m, prompt, pv, ds, item, run, file]
}

/// An evaluation result with the given values.
#[allow(clippy::too_many_arguments)]
pub fn eval_result(
    workspace: WorkspaceId,
    project: ProjectId,
    run: EvalRunId,
    metric: &str,
    score: f64,
    passed: bool,
    latency_ms: u32,
    cost: Cost,
    at: Timestamp,
) -> AnalyticsEvent {
    AnalyticsEvent::EvalResult(EvalResult {
        id: EventId::new(),
        workspace,
        project,
        run,
        dataset_item: None,
        agent: None,
        metric: metric.into(),
        score,
        passed,
        latency_ms,
        cost,
        error: None,
        created_at: at,
    })
}

/// A usage event with the given values.
#[allow(clippy::too_many_arguments)]
pub fn usage(
    workspace: WorkspaceId,
    project: ProjectId,
    agent: Option<AgentId>,
    model: &str,
    input_tokens: u64,
    output_tokens: u64,
    cost: Cost,
    latency_ms: u32,
    at: Timestamp,
) -> AnalyticsEvent {
    AnalyticsEvent::Usage(UsageEvent {
        id: EventId::new(),
        workspace,
        project,
        agent,
        conversation: None,
        model: model.into(),
        input_tokens,
        output_tokens,
        cost,
        latency_ms,
        created_at: at,
    })
}

/// The ids of the `k` entries closest to `query` by exact cosine similarity, best first: the ground
/// truth recall is measured against.
pub fn exact_top_k(entries: &[VectorEntry], query: &Embedding, k: usize) -> Vec<RecordId> {
    let mut scored: Vec<(f32, RecordId)> = entries
        .iter()
        .map(|e| (e.embedding.cosine(query), e.id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|x| x.1).collect()
}

/// A random unit vector of `dim` components.
pub fn random_embedding(rng: &mut Rng, dim: usize) -> Embedding {
    let v: Vec<f32> = (0..dim).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
    Embedding::new(v).expect("finite").normalized()
}
