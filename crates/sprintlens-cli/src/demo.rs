//! `sprintlens demo`: the storage layer end to end on whatever the configuration names.

use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sprintlens::Storage;
use sprintlens::api::{NewConversation, NewResult};
use sprintlens::core::analytics::TimeRange;
use sprintlens::core::blob::sha256_hex;
use sprintlens::core::*;
use sprintlens_testkit::generate::{Rng, TOPICS, filler, sentence};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Conversations to generate and index.
    #[arg(long, default_value_t = 3000)]
    conversations: usize,
    /// Evaluation results to record.
    #[arg(long, default_value_t = 6000)]
    results: usize,
    /// Usage events to record.
    #[arg(long, default_value_t = 4000)]
    usage: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub async fn run(storage: &Storage, args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let c = storage.config();
    println!("sprintlens demo");
    println!("  records   -> {}", c.records.url);
    println!(
        "  vectors   -> {} (dimension {})",
        c.vectors.url, c.vectors.dimension
    );
    println!("  analytics -> {}", c.analytics.url);
    println!("  blobs     -> {}", c.blobs.url);
    println!("  cache     -> {}", c.cache.url);
    println!("  sessions  -> {}", c.sessions.url);
    println!(
        "  embedder  -> {} ({})",
        c.embedder.url,
        storage.embedder().model()
    );

    let mut rng = Rng::new(args.seed);
    let ws = storage.workspace(WorkspaceId::new());
    println!("\nworkspace {}", ws.id());
    let mut projects = Vec::new();
    let mut agents = Vec::new();
    for name in ["support", "sales", "research"] {
        let p = ws
            .create_project(name, Some(&format!("{name} assistants")))
            .await?;
        for a in ["triage", "resolver"] {
            agents.push((
                p.id,
                ws.create_agent(p.id, &format!("{name}-{a}"), Some("gpt-4o-mini"))
                    .await?
                    .id,
            ));
        }
        projects.push(p);
    }
    println!(
        "created {} projects and {} agents",
        projects.len(),
        agents.len()
    );

    // Conversations with embeddings.
    let t = Instant::now();
    let pb = bar(args.conversations as u64, "conversations");
    let mut titles = std::collections::HashMap::new();
    let mut done = 0;
    let mut messages = 0;
    while done < args.conversations {
        let n = (args.conversations - done).min(250);
        let batch: Vec<NewConversation> = (0..n)
            .map(|_| {
                let topic = *rng.pick(TOPICS);
                let (project, agent) = *rng.pick(&agents);
                let turns = 2 + rng.below(3) as usize;
                let messages = (0..turns)
                    .map(|i| {
                        let role = if i % 2 == 0 {
                            Role::User
                        } else {
                            Role::Assistant
                        };
                        let text = if i == 0 {
                            format!("{topic} {}", filler(&mut rng, 3))
                        } else {
                            filler(&mut rng, 8)
                        };
                        (role, text)
                    })
                    .collect();
                NewConversation {
                    project,
                    agent: Some(agent),
                    title: topic.to_string(),
                    messages,
                }
            })
            .collect();
        for l in ws.log_conversations(&batch).await? {
            messages += l.messages.len();
            if let RecordBody::Conversation(c) = &l.conversation.body {
                titles.insert(l.conversation.id, c.title.clone().unwrap_or_default());
            }
        }
        done += n;
        pb.set_position(done as u64);
    }
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ingested {done} conversations, {messages} messages, {} embeddings in {secs:.2}s ({:.0} conversations/s)",
        done + messages,
        done as f64 / secs
    );

    // Semantic search.
    for query in [
        "I never got my refund",
        "cannot log in, forgot password",
        "the migration keeps timing out",
    ] {
        let t = Instant::now();
        let hits = ws
            .search_similar(query, None, &[EmbeddingKind::Conversation], 3)
            .await?;
        println!(
            "\nsearch {query:?} ({:.1} ms over {} vectors)",
            t.elapsed().as_secs_f64() * 1000.0,
            storage.vectors().count(ws.id()).await?
        );
        for h in hits {
            println!(
                "  {:.3}  {}  {}",
                h.hit.score,
                h.hit.id,
                titles.get(&h.hit.id).map(String::as_str).unwrap_or("?")
            );
        }
    }

    // Prompts, with a cached read by label.
    let support = projects[0].id;
    ws.publish_prompt(
        support,
        "triage",
        "Classify this ticket: {{ticket}}",
        Some("gpt-4o-mini"),
        json!({"temperature": 0}),
        &["production"],
    )
    .await?;
    let v2 = ws
        .publish_prompt(
            support,
            "triage",
            "Classify this ticket into one of {{labels}}: {{ticket}}",
            Some("gpt-4o-mini"),
            json!({"temperature": 0}),
            &["production"],
        )
        .await?;
    let before = storage.cache().stats();
    let t1 = Instant::now();
    let first = ws.prompt_by_label(support, "triage", "production").await?;
    let d1 = t1.elapsed();
    let t2 = Instant::now();
    let second = ws.prompt_by_label(support, "triage", "production").await?;
    let d2 = t2.elapsed();
    let after = storage.cache().stats();
    let version = |r: &Option<Record>| match r.as_ref().map(|r| &r.body) {
        Some(RecordBody::PromptVersion(v)) => v.version,
        _ => 0,
    };
    println!(
        "\nprompt triage@production -> version {} (first read: {:.2} ms, loaded from the store; second read: {:.3} ms, cache hit)",
        version(&first),
        d1.as_secs_f64() * 1000.0,
        d2.as_secs_f64() * 1000.0
    );
    println!(
        "cache: {} hit(s), {} loader call(s) for these two reads",
        after.hits - before.hits,
        after.loads - before.loads
    );
    anyhow::ensure!(
        second.map(|r| r.id) == Some(v2.id),
        "label read returned the wrong version"
    );

    // Dataset and an evaluation run.
    let items: Vec<_> = (0..200)
        .map(|i| {
            (
                json!({"ticket": sentence(&mut rng, 10), "n": i}),
                Some(json!(
                    rng.pick(&["billing", "account", "shipping"]).to_string()
                )),
            )
        })
        .collect();
    let (dataset, items) = ws
        .add_dataset_items(support, "tickets-golden", items)
        .await?;
    let run = ws
        .start_eval_run(support, "triage-nightly", Some(dataset.id), Some(v2.id))
        .await?;
    let metrics = ["exact_match", "faithfulness", "toxicity"];
    let pb = bar(args.results as u64, "eval results");
    let mut results = Vec::with_capacity(args.results);
    for i in 0..args.results {
        let metric = metrics[i % metrics.len()];
        let score = match metric {
            "exact_match" => {
                if rng.unit() < 0.82 {
                    1.0
                } else {
                    0.0
                }
            }
            "faithfulness" => (0.55 + rng.unit() * 0.45).min(1.0),
            _ => rng.unit() * 0.1,
        };
        let passed = match metric {
            "toxicity" => score < 0.08,
            _ => score >= 0.7,
        };
        results.push(NewResult {
            dataset_item: Some(items[i % items.len()].id),
            agent: Some(agents[0].1),
            metric: metric.to_string(),
            score,
            passed,
            latency_ms: 150 + rng.below(900) as u32 + if rng.unit() < 0.03 { 4000 } else { 0 },
            cost: Cost(20_000 + rng.below(80_000) as i64),
            error: (rng.unit() < 0.01).then(|| "upstream timeout".to_string()),
        });
    }
    let t = Instant::now();
    for chunk in results.chunks(1000) {
        ws.record_results(&run, chunk).await?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    ws.finish_eval_run(&run, RunStatus::Completed).await?;
    println!(
        "\nrecorded {} evaluation results in {:.2}s",
        results.len(),
        t.elapsed().as_secs_f64()
    );
    let summary = ws.eval_summary(run.id).await?;
    println!("run triage-nightly:");
    println!(
        "  {:<13} {:>6} {:>9} {:>7} {:>7} {:>7} {:>9} {:>12}",
        "metric", "count", "pass rate", "p50", "p95", "p99", "lat p95", "cost"
    );
    for m in &summary.metrics {
        println!(
            "  {:<13} {:>6} {:>8.1}% {:>7.3} {:>7.3} {:>7.3} {:>7.0}ms {:>12}",
            m.metric,
            m.count,
            m.pass_rate * 100.0,
            m.score.p50,
            m.score.p95,
            m.score.p99,
            m.latency_ms.p95,
            m.cost.to_string()
        );
    }

    // Usage events and cost by model.
    let models = [
        ("gpt-4o", 2_500i64, 10_000i64),
        ("gpt-4o-mini", 150, 600),
        ("claude-haiku", 800, 4_000),
    ];
    let now = Timestamp::now();
    let usage: Vec<UsageEvent> = (0..args.usage)
        .map(|i| {
            let (model, in_price, out_price) = models[i % models.len()];
            let (project, agent) = *rng.pick(&agents);
            let (input, output) = (200 + rng.below(3000), 50 + rng.below(800));
            UsageEvent {
                id: EventId::new(),
                workspace: ws.id(),
                project,
                agent: Some(agent),
                conversation: None,
                model: model.to_string(),
                input_tokens: input,
                output_tokens: output,
                // Prices in nano-dollars per token.
                cost: Cost(input as i64 * in_price + output as i64 * out_price),
                latency_ms: 200 + rng.below(1500) as u32,
                created_at: now.minus(Duration::from_secs(rng.below(7 * 86_400))),
            }
        })
        .collect();
    ws.record_usage(&usage).await?;
    let range = TimeRange {
        from: now.minus(Duration::from_secs(8 * 86_400)),
        to: now.plus(Duration::from_secs(60)),
    };
    println!(
        "\ncost by model over the last 7 days ({} usage events):",
        usage.len()
    );
    for row in ws.cost_breakdown(GroupBy::Model, None, range).await? {
        println!(
            "  {:<13} {:>6} calls {:>10} in {:>9} out {:>12}",
            row.key,
            row.events,
            row.input_tokens,
            row.output_tokens,
            row.cost.to_string()
        );
    }
    let lat = storage
        .analytics()
        .latency(
            ws.id(),
            &LatencyQuery {
                project: None,
                model: None,
                range,
            },
        )
        .await?;
    println!(
        "model latency: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
        lat.latency_ms.p50, lat.latency_ms.p95, lat.latency_ms.p99
    );

    // A file attachment, read back and verified.
    let mut report = Vec::with_capacity(256 * 1024);
    while report.len() < 256 * 1024 {
        report.extend_from_slice(sentence(&mut rng, 12).as_bytes());
        report.push(b'\n');
    }
    let expected = sha256_hex(&report);
    let file = ws
        .attach_file(
            Some(support),
            "reports/triage-nightly.txt",
            Bytes::from(report),
            Some("text/plain"),
        )
        .await?;
    let (_, back) = ws.read_file("reports/triage-nightly.txt").await?;
    anyhow::ensure!(
        sha256_hex(&back) == expected,
        "attachment read back with a different sha256"
    );
    println!(
        "\nattachment reports/triage-nightly.txt: {} bytes, sha256 {} verified on read (record {})",
        back.len(),
        &expected[..16],
        file.id
    );

    // A session.
    let (token, session) = storage
        .sessions()
        .create(
            ws.id(),
            "demo-user",
            storage.session_policy(),
            json!({"role": "admin"}),
        )
        .await?;
    let valid = storage.sessions().validate(&token).await?.is_some();
    println!(
        "session for demo-user valid: {valid} (stored as hash {}…, never the token)",
        &session.id[..12]
    );
    storage.sessions().revoke(&token).await?;

    println!("\ndone in {:.2}s", started.elapsed().as_secs_f64());
    if c.records.url.scheme() == "sqlite" {
        println!("data lives in {} and {}", c.records.url, c.blobs.url);
    }
    Ok(())
}
