//! The facade over the embedded default: config to ports, and the typed API end to end.

use bytes::Bytes;
use serde_json::json;
use sprintlens::api::{NewConversation, NewResult};
use sprintlens::{Storage, StorageConfig, config};
use sprintlens_core::*;

fn embedded(dir: &std::path::Path) -> StorageConfig {
    config::from_parts(
        None,
        vec![("SPRINTLENS_DATA_DIR".into(), dir.display().to_string())],
    )
    .unwrap()
}

#[tokio::test]
async fn bad_config_fails_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = vec![
        ("SPRINTLENS_DATA_DIR".into(), data.display().to_string()),
        (
            "SPRINTLENS_ANALYTICS_URL".into(),
            "cassandra://localhost:9042/db".into(),
        ),
    ];
    let cfg = config::from_parts(None, env).unwrap();
    let err = Storage::open(cfg).await.unwrap_err();
    assert_eq!(err.field(), Some("analytics.url"));
    assert!(err.to_string().contains("cassandra"), "{err}");
    assert!(
        !data.exists(),
        "nothing may be created before config is valid"
    );

    let mut cfg = embedded(&data);
    cfg.records.url =
        sprintlens_core::config::BackendUrl::parse("records.url", "mongodb://x").unwrap();
    let err = Storage::open(cfg).await.unwrap_err();
    assert_eq!(err.field(), Some("records.url"));
    assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    assert!(!data.exists());
}

#[tokio::test]
async fn blob_tuning_keys_are_checked_and_overridable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let with = |k: &str, v: &str| {
        config::from_parts(
            None,
            vec![
                ("SPRINTLENS_DATA_DIR".into(), data.display().to_string()),
                (k.into(), v.into()),
            ],
        )
    };
    let cfg = with("SPRINTLENS_BLOBS_PART_SIZE_BYTES", "16777216").unwrap();
    assert_eq!(cfg.blobs.part_size_bytes, 16 * 1024 * 1024);
    for (key, value, field) in [
        (
            "SPRINTLENS_BLOBS_PART_SIZE_BYTES",
            "1048576",
            "blobs.part_size_bytes",
        ),
        (
            "SPRINTLENS_BLOBS_UPLOAD_CONCURRENCY",
            "0",
            "blobs.upload_concurrency",
        ),
        ("SPRINTLENS_BLOBS_DEADLINE_MS", "10", "blobs.deadline_ms"),
        (
            "SPRINTLENS_BLOBS_MAX_OBJECT_BYTES",
            "0",
            "blobs.max_object_bytes",
        ),
    ] {
        let err = match with(key, value) {
            Ok(cfg) => Storage::open(cfg).await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(err.field(), Some(field), "{key}={value}: {err}");
        assert!(
            !data.exists(),
            "nothing may be created before config is valid"
        );
    }
    let err = config::from_parts(
        Some("[blobs]\nurl = \"memory://\"\npart_size = 5\n"),
        vec![],
    )
    .unwrap_err();
    assert!(err.to_string().contains("part_size"), "{err}");
}

#[tokio::test]
async fn typed_api_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(embedded(dir.path())).await.unwrap();
    let ws = storage.workspace(WorkspaceId::new());
    let project = ws
        .create_project("support", Some("customer support"))
        .await
        .unwrap();
    assert_eq!(
        ws.create_project("support", None).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        ws.project_by_name("support").await.unwrap().unwrap().id,
        project.id
    );
    let agent = ws
        .create_agent(project.id, "helper", Some("gpt-4o-mini"))
        .await
        .unwrap();

    let logged = ws
        .log_conversations(&[
            NewConversation {
                project: project.id,
                agent: Some(agent.id),
                title: "refund".into(),
                messages: vec![
                    (Role::User, "I want a refund for my cancelled order".into()),
                    (Role::Assistant, "Your refund is on its way".into()),
                ],
            },
            NewConversation {
                project: project.id,
                agent: Some(agent.id),
                title: "password".into(),
                messages: vec![(Role::User, "please reset my account password".into())],
            },
        ])
        .await
        .unwrap();
    assert_eq!(logged[0].messages.len(), 2);
    match &logged[0].messages[1].body {
        RecordBody::Message(m) => assert_eq!(m.parent, Some(logged[0].messages[0].id)),
        _ => unreachable!(),
    }
    let hits = ws
        .search_similar(
            "refund for an order",
            Some(project.id),
            &[EmbeddingKind::Conversation],
            2,
        )
        .await
        .unwrap();
    assert_eq!(hits[0].hit.id, logged[0].conversation.id);
    assert!(hits[0].record.is_some());

    // Prompts: versions count up, labels move, reads by label are cached and invalidated.
    let v1 = ws
        .publish_prompt(
            project.id,
            "summarize",
            "Summarise {{text}}",
            Some("gpt-4o"),
            json!({}),
            &["production"],
        )
        .await
        .unwrap();
    let got = ws
        .prompt_by_label(project.id, "summarize", "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, v1.id);
    let hits_before = storage.cache().stats().hits;
    let again = ws
        .prompt_by_label(project.id, "summarize", "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, v1.id);
    assert_eq!(storage.cache().stats().hits, hits_before + 1);
    let v2 = ws
        .publish_prompt(
            project.id,
            "summarize",
            "Summarise briefly {{text}}",
            None,
            json!({}),
            &["production"],
        )
        .await
        .unwrap();
    match &v2.body {
        RecordBody::PromptVersion(v) => assert_eq!(v.version, 2),
        _ => unreachable!(),
    }
    let moved = ws
        .prompt_by_label(project.id, "summarize", "production")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        moved.id, v2.id,
        "label read after publish must not be stale"
    );
    assert!(
        ws.prompt_by_label(project.id, "summarize", "staging")
            .await
            .unwrap()
            .is_none()
    );

    // Datasets and evaluations.
    let (ds, items) = ws
        .add_dataset_items(
            project.id,
            "golden",
            vec![(json!({"q": "2+2"}), Some(json!("4"))); 5],
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 5);
    let run = ws
        .start_eval_run(project.id, "nightly", Some(ds.id), Some(v2.id))
        .await
        .unwrap();
    let results: Vec<NewResult> = (0..10)
        .map(|i| NewResult {
            dataset_item: Some(items[i % 5].id),
            agent: Some(agent.id),
            metric: "exact_match".into(),
            score: if i < 8 { 1.0 } else { 0.0 },
            passed: i < 8,
            latency_ms: 100 + i as u32,
            cost: Cost::from_usd(0.001),
            error: None,
        })
        .collect();
    assert_eq!(ws.record_results(&run, &results).await.unwrap(), 10);
    let summary = ws.eval_summary(run.id).await.unwrap();
    assert_eq!(summary.metrics[0].count, 10);
    assert!((summary.metrics[0].pass_rate - 0.8).abs() < 1e-12);
    let done = ws
        .finish_eval_run(&run, RunStatus::Completed)
        .await
        .unwrap();
    assert!(done.updated_at > run.updated_at);

    // Files: stored, recorded with their hash, read back verified; other workspaces see nothing.
    let bytes = Bytes::from_static(b"%PDF-1.7 pretend");
    let file = ws
        .attach_file(
            Some(project.id),
            "attachments/r.pdf",
            bytes.clone(),
            Some("application/pdf"),
        )
        .await
        .unwrap();
    let (rec, back) = ws.read_file("attachments/r.pdf").await.unwrap();
    assert_eq!((rec.id, back), (file.id, bytes));
    let other = storage.workspace(WorkspaceId::new());
    assert_eq!(
        other
            .read_file("attachments/r.pdf")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // Sessions come from the same configuration.
    let (token, _) = storage
        .sessions()
        .create(ws.id(), "alice", storage.session_policy(), json!({}))
        .await
        .unwrap();
    assert!(storage.sessions().validate(&token).await.unwrap().is_some());

    let schema = storage.schema_status().await.unwrap();
    assert_eq!(
        schema.len(),
        1,
        "records, vectors, analytics and sessions share one file"
    );
    assert_eq!(schema[0].applied.len(), schema[0].known);
}

#[tokio::test]
async fn concurrent_publishers_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(embedded(dir.path())).await.unwrap();
    let wsid = WorkspaceId::new();
    let project = storage
        .workspace(wsid)
        .create_project("p", None)
        .await
        .unwrap();
    storage
        .workspace(wsid)
        .publish_prompt(project.id, "race", "v0", None, json!({}), &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = storage.clone();
        tasks.push(tokio::spawn(async move {
            s.workspace(wsid)
                .publish_prompt(
                    project.id,
                    "race",
                    &format!("template {i}"),
                    None,
                    json!({}),
                    &[],
                )
                .await
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        match t.await.unwrap().body {
            RecordBody::PromptVersion(v) => versions.push(v.version),
            _ => unreachable!(),
        }
    }
    versions.sort();
    assert_eq!(versions, vec![2, 3, 4, 5, 6, 7]);
}

/// Two "processes" (two Storage instances) on one SQLite file and the live Redis, records read through
/// the cache: reads hit the cache, and a write in one is seen by the other at once (invalidation after
/// commit through the shared cache).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_cache_on_redis_is_invalidated_on_write() {
    let Some(redis) = sprintlens_testkit::service_url("SPRINTLENS_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        config::from_parts(
            None,
            vec![
                (
                    "SPRINTLENS_DATA_DIR".into(),
                    dir.path().display().to_string(),
                ),
                ("SPRINTLENS_CACHE_URL".into(), redis.clone()),
                ("SPRINTLENS_CACHE_READ_THROUGH".into(), "true".into()),
                ("SPRINTLENS_SESSIONS_URL".into(), redis.clone()),
            ],
        )
        .unwrap()
    };
    let a = Storage::open(cfg()).await.unwrap();
    let b = Storage::open(cfg()).await.unwrap();
    let ws = WorkspaceId::new();
    let p = a
        .workspace(ws)
        .create_project("cached", None)
        .await
        .unwrap();
    let before = b.cache().stats();
    for _ in 0..5 {
        assert_eq!(
            b.records()
                .get(ws, RecordKind::Project, p.id)
                .await
                .unwrap()
                .unwrap(),
            p
        );
    }
    let after = b.cache().stats();
    assert_eq!(after.loads - before.loads, 1, "one load, then hits");
    assert!(after.hits - before.hits >= 4);
    let renamed = p
        .updated(RecordBody::Project(Project {
            name: "renamed".into(),
            description: None,
            settings: json!({}),
        }))
        .unwrap();
    a.records()
        .upsert(std::slice::from_ref(&renamed))
        .await
        .unwrap();
    assert_eq!(
        b.records()
            .get(ws, RecordKind::Project, p.id)
            .await
            .unwrap()
            .unwrap(),
        renamed
    );
    a.records()
        .delete(
            ws,
            RecordKind::Project,
            p.id,
            renamed.updated_at.plus_micros(1),
        )
        .await
        .unwrap();
    assert!(
        b.records()
            .get(ws, RecordKind::Project, p.id)
            .await
            .unwrap()
            .is_none()
    );
    // Sessions on Redis through the same configuration.
    let (t, _) = a
        .sessions()
        .create(ws, "u", a.session_policy(), json!({}))
        .await
        .unwrap();
    assert!(b.sessions().validate(&t).await.unwrap().is_some());
    assert_eq!(a.sessions().backend(), "redis");
}
