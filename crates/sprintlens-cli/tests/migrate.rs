//! `sprintlens migrate` from the embedded SQLite store to the live PostgreSQL of the stack: killed
//! runs resume with nothing lost or doubled, a finished run re-run writes nothing, and `verify`
//! names each kind of difference.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sprintlens::core::{
    OutboxStore, RecordBody, RecordId, RecordStore, Role, VectorOutboxStore, WorkspaceId,
};
use sprintlens_testkit::generate::{self, Rng};

fn sprintlens() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sprintlens"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SPRINTLENS_") && !k.starts_with("SPRINTLENS_TEST_") {
            c.env_remove(k);
        }
    }
    c
}

struct Target {
    toml: std::path::PathBuf,
    operator: String,
}

/// Drops the ClickHouse databases `<prefix>_<pid>` that ended test processes left (`url` names
/// any database of the server).
async fn drop_ended_clickhouse_databases(url: &str, prefix: &str) {
    use sprintlens::core::config::{AnalyticsConfig, BackendUrl};
    use sprintlens_clickhouse::{ClickHouseAnalytics, ClickHouseOptions};
    let cfg = AnalyticsConfig::new(BackendUrl::parse("analytics.url", url).unwrap());
    ClickHouseAnalytics::new(ClickHouseOptions::from_config(&cfg).unwrap())
        .drop_databases_of_ended_processes(prefix)
        .await
        .unwrap();
}

/// A fresh PostgreSQL database and a target configuration that points at it.
async fn fresh_target(dir: &std::path::Path, name: &str) -> Option<Target> {
    let clickhouse = sprintlens_testkit::service_url("SPRINTLENS_TEST_CLICKHOUSE_URL")?;
    let db = format!("sprintlens_migrate_{name}_{}", std::process::id());
    let pg = sprintlens_testkit::fresh_postgres_database(&db)?;
    let clickhouse = format!("{}/{db}", clickhouse.rsplit_once('/').unwrap().0);
    drop_ended_clickhouse_databases(&clickhouse, &format!("sprintlens_migrate_{name}")).await;
    let t = dir.join("target");
    let toml = format!(
        r#"[records]
url = "{app}"
admin_url = "{admin}"
operator_url = "{operator}"
[vectors]
url = "{app}"
[analytics]
url = "{clickhouse}"
[blobs]
url = "file://{t}/blobs"
[cache]
url = "memory://"
[sessions]
url = "memory://"
[embedder]
url = "hash://"
"#,
        app = pg.app,
        admin = pg.admin,
        operator = pg.operator,
        clickhouse = clickhouse,
        t = t.display()
    );
    let path = dir.join("target.toml");
    std::fs::write(&path, toml).unwrap();
    Some(Target {
        toml: path,
        operator: pg.operator.clone(),
    })
}

/// Three workspaces: one record of every kind each, conversations, and `messages` messages with
/// unicode, NULLs and large JSON (every `large_every`-th message carries 200 tool calls).
async fn fill_source(data: &std::path::Path, messages: usize, large_every: usize) {
    let config = sprintlens::config::from_parts(
        None,
        vec![("SPRINTLENS_DATA_DIR".into(), data.display().to_string())],
    )
    .unwrap();
    let storage = sprintlens::Storage::open(config).await.unwrap();
    let mut rng = Rng::new(5);
    let workspaces: Vec<WorkspaceId> = (0..3).map(|_| WorkspaceId::new()).collect();
    for ws in &workspaces {
        let mut batch = generate::one_of_each(*ws);
        let p = generate::project(*ws, "migrated");
        let pid = p.id;
        batch.push(p);
        let convs: Vec<_> = (0..20)
            .map(|i| {
                let mut c = generate::conversation(
                    *ws,
                    pid,
                    None,
                    &format!("conversation {i} — ünïcødé 🚀"),
                );
                if let (0, RecordBody::Conversation(b)) = (i % 5, &mut c.body) {
                    b.title = None;
                }
                c
            })
            .collect();
        let cids: Vec<RecordId> = convs.iter().map(|c| c.id).collect();
        batch.extend(convs);
        storage.records().upsert(&batch).await.unwrap();
        let mut msgs = Vec::new();
        for i in 0..messages / 3 {
            let mut m = generate::message(
                *ws,
                pid,
                cids[i % cids.len()],
                if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                &format!("{} 日本語 «{}»", generate::sentence(&mut rng, 12), i),
            );
            if let RecordBody::Message(b) = &mut m.body {
                if i % 7 == 0 {
                    b.input_tokens = None;
                    b.latency_ms = None;
                }
                if i % large_every == 0 {
                    b.metadata = json!({"tool_calls": (0..200).map(|k| json!({"name": format!("t{k}"), "args": {"q": "x".repeat(40)}})).collect::<Vec<_>>()});
                }
                // Numbers whose text JSONB writes differently (`0.0`, 301 digits, `0.00000015`):
                // the same values, so verify must find them identical.
                if i % large_every == 1 {
                    b.metadata = json!({"score": -0.0, "big": 1e300, "small": 1.5e-7, "zero": -0});
                }
            }
            msgs.push(m);
            if msgs.len() == 1000 {
                storage.records().upsert(&msgs).await.unwrap();
                msgs.clear();
            }
        }
        storage.records().upsert(&msgs).await.unwrap();
        // 1,000 message embeddings per workspace.
        let vectors: Vec<sprintlens::core::VectorEntry> = (0..1_000)
            .map(|i| sprintlens::core::VectorEntry {
                workspace: *ws,
                project: Some(pid),
                kind: sprintlens::core::EmbeddingKind::Message,
                id: RecordId::new(),
                embedding: generate::random_embedding(&mut rng, 384),
                updated_at: sprintlens::core::Timestamp::now().plus_micros(i),
            })
            .collect();
        storage.vectors().upsert(&vectors).await.unwrap();
        // Analytics events: evaluation results and usage, some with NULL agents and errors.
        let now = sprintlens::core::Timestamp::now();
        let mut events = Vec::new();
        for i in 0..2_000u64 {
            let at = now.minus(Duration::from_secs(rng.below(20 * 86_400)));
            let mut e = generate::eval_result(
                *ws,
                pid,
                cids[0],
                ["accuracy", "faithfulness"][(i % 2) as usize],
                rng.unit(),
                i % 3 != 0,
                rng.below(2_000) as u32,
                sprintlens::core::Cost(rng.below(9_000) as i64),
                at,
            );
            if let sprintlens::core::AnalyticsEvent::EvalResult(r) = &mut e {
                r.error = (i % 11 == 0).then(|| "tïmeout".to_string());
            }
            events.push(e);
            events.push(generate::usage(
                *ws,
                pid,
                None,
                "gpt-4o",
                rng.below(3_000),
                rng.below(800),
                sprintlens::core::Cost(rng.below(50_000) as i64),
                rng.below(5_000) as u32,
                at,
            ));
        }
        storage.analytics().record(&events).await.unwrap();
    }
}

fn run_cli(args: &[&str], data: &std::path::Path, target: &std::path::Path) -> (bool, String) {
    let out = sprintlens()
        .args(["migrate"])
        .args(args)
        .arg("--to")
        .arg(target)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// Starts `command` `runs` times and SIGKILLs it after a random delay in `delay_ms` (seeded);
/// returns how many runs were still running when killed.
fn kill_at_random_moments(
    command: impl Fn() -> Command,
    runs: usize,
    seed: u64,
    delay_ms: std::ops::Range<u64>,
) -> usize {
    let mut rng = Rng::new(seed);
    let mut killed_mid_run = 0;
    for _ in 0..runs {
        let mut child = command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(
            delay_ms.start + rng.below(delay_ms.end - delay_ms.start),
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed_mid_run += 1;
        }
        child.wait().unwrap();
    }
    killed_mid_run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_and_verify_names_every_difference() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "kills").await else {
        return;
    };
    let data = dir.path().join("source");
    fill_source(&data, 30_000, 50).await;
    let out = sprintlens()
        .args(["schema", "apply", "--config"])
        .arg(&target.toml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The plan counts, estimates and checks; the source is not dual-writing, so a check fails.
    let (ok, plan) = run_cli(&["plan"], &data, &target.toml);
    assert!(!ok, "{plan}");
    assert!(plan.contains("rows to migrate in all"), "{plan}");
    // Embeddings and both event streams are in the plan, counted across the three workspaces.
    for (stream, rows) in [
        ("embedding", 3_000),
        ("eval_result", 6_000),
        ("usage", 6_000),
    ] {
        assert!(
            plan.lines()
                .any(|l| l.starts_with(stream)
                    && l.contains(&format!(" {rows} rows in the source,"))),
            "{stream}: {plan}"
        );
    }
    assert!(plan.contains("MB in the target"), "{plan}");
    assert!(
        plan.contains("FAIL writes made during the backfill reach the target"),
        "{plan}"
    );
    assert!(plan.contains("ok   vector dimension"), "{plan}");
    assert!(plan.contains("ok   target schema applied"), "{plan}");

    // Without dual-write a backfill is refused unless declared offline.
    let (ok, refused) = run_cli(&["run"], &data, &target.toml);
    assert!(!ok, "{refused}");
    assert!(
        refused.contains("migration.mode") && refused.contains("--offline"),
        "{refused}"
    );

    // kill -9 at random moments, then resume to the end.
    let killed_mid_run = kill_at_random_moments(
        || {
            let mut c = sprintlens();
            c.args(["migrate", "run", "--offline", "--batch", "1000", "--to"])
                .arg(&target.toml)
                .arg("--data-dir")
                .arg(&data);
            c
        },
        12,
        9,
        150..650,
    );
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} runs were killed mid-run: the test did not exercise resuming"
    );
    let t = Instant::now();
    let (ok, last) = run_cli(
        &["run", "--offline", "--batch", "1000", "--parallel", "4"],
        &data,
        &target.toml,
    );
    assert!(ok, "{last}");
    let resumed = t.elapsed();

    let (ok, verify) = run_cli(&["verify"], &data, &target.toml);
    assert!(ok, "verify after {killed_mid_run} kills:\n{verify}");
    assert!(verify.contains("identical"), "{verify}");
    let (ok, status) = run_cli(&["status"], &data, &target.toml);
    assert!(ok, "{status}");
    for stream in [
        "migrate/records/message",
        "migrate/embeddings",
        "migrate/events/eval_result",
        "migrate/verify",
    ] {
        assert!(status.contains(stream), "{stream} missing in:\n{status}");
    }
    assert!(status.contains("\"done\":true"), "{status}");
    assert!(status.contains("\"ok\":true"), "{status}");
    assert!(status.contains("mode: single"), "{status}");
    assert!(
        status.contains("outbox of the old store: 0 pending, 0 parked"),
        "{status}"
    );
    let (ok, again) = run_cli(&["run", "--offline", "--json"], &data, &target.toml);
    assert!(ok, "{again}");
    let reports: serde_json::Value = serde_json::from_str(again.lines().last().unwrap()).unwrap();
    let written: u64 = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["written"].as_u64().unwrap())
        .sum();
    assert_eq!(written, 0, "a finished migration re-run writes nothing");
    println!(
        "migrate: 30,000+ records, {killed_mid_run} of 12 runs killed (SIGKILL) mid-run, the last run took {:.1} s; verify identical (rows lost 0, duplicates 0)",
        resumed.as_secs_f64()
    );

    // Tamper with the target, one row per kind of difference.
    let pg = sqlx::PgPool::connect(&target.operator).await.unwrap();
    let ids: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT id FROM records WHERE kind = 'message' ORDER BY id LIMIT 5")
            .fetch_all(&pg)
            .await
            .unwrap();
    let ids: Vec<uuid::Uuid> = ids.into_iter().map(|r| r.0).collect();
    let exec = |sql: String| {
        let pg = pg.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pg)
                .await
                .unwrap()
        }
    };
    // A changed column.
    exec(format!(
        "UPDATE records SET body = jsonb_set(body, '{{data,content}}', '\"edited\"') WHERE id = '{}'",
        ids[0]
    ))
    .await;
    // A deleted row.
    exec(format!("DELETE FROM records WHERE id = '{}'", ids[1])).await;
    // NULL where the source has a value (and the source's NULLs compare as NULL).
    exec(format!(
        "UPDATE records SET body = jsonb_set(body, '{{data,latency_ms}}', 'null') WHERE id = '{}'",
        ids[2]
    ))
    .await;
    // A timestamp one microsecond off.
    exec(format!(
        "UPDATE records SET updated_at = updated_at + interval '1 microsecond' WHERE id = '{}'",
        ids[3]
    ))
    .await;
    // Two rows swapped between workspaces.
    let (other, other_ws): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT id, workspace FROM records WHERE kind = 'message'
           AND workspace <> (SELECT workspace FROM records WHERE id = $1) LIMIT 1",
    )
    .bind(ids[4])
    .fetch_one(&pg)
    .await
    .unwrap();
    exec(format!(
        "UPDATE records SET workspace = CASE WHEN id = '{a}' THEN '{other_ws}'::uuid
            ELSE (SELECT workspace FROM records WHERE id = '{a}') END
         WHERE id IN ('{a}', '{other}')",
        a = ids[4]
    ))
    .await;
    // An empty string where the source has NULL.
    let (untitled,): (uuid::Uuid,) = sqlx::query_as(
        "SELECT id FROM records WHERE kind = 'conversation' AND body->'data'->'title' = 'null' LIMIT 1",
    )
    .fetch_one(&pg)
    .await
    .unwrap();
    exec(format!(
        "UPDATE records SET body = jsonb_set(body, '{{data,title}}', '\"\"') WHERE id = '{untitled}'"
    ))
    .await;
    // One vector component changed.
    let (vid,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM embeddings LIMIT 1")
        .fetch_one(&pg)
        .await
        .unwrap();
    exec(format!(
        "UPDATE embeddings SET embedding = array_cat(ARRAY[0.123::real], (embedding::real[])[2:])::vector WHERE id = '{vid}'"
    ))
    .await;
    // An extra row that the source never had.
    let extra = uuid::Uuid::now_v7();
    exec(format!(
        "INSERT INTO records (id, workspace, kind, project, parent, name, unique_key, created_at, updated_at, deleted, body)
         SELECT '{extra}', workspace, kind, project, parent, name, NULL, created_at, updated_at, deleted, body
         FROM records WHERE kind = 'project' LIMIT 1"
    ))
    .await;
    let report_path = dir.path().join("verify.json");
    let (ok, verify) = run_cli(
        &["verify", "--report", report_path.to_str().unwrap()],
        &data,
        &target.toml,
    );
    assert!(!ok, "verify must fail:\n{verify}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let kind = |k: &str| {
        report["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["kind"] == k)
            .unwrap()
            .clone()
    };
    let messages = kind("message");
    let has = |list: &serde_json::Value, id: &uuid::Uuid| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x == &json!(id.to_string()))
    };
    assert!(
        has(&messages["different"], &ids[0]),
        "changed column: {messages}"
    );
    assert!(
        has(&messages["missing"], &ids[1]),
        "deleted row: {messages}"
    );
    assert!(
        has(&messages["different"], &ids[2]),
        "NULL vs value: {messages}"
    );
    assert!(has(&messages["different"], &ids[3]), "1 µs: {messages}");
    assert!(
        has(&messages["different"], &ids[4]) && has(&messages["different"], &other),
        "workspace swap: {messages}"
    );
    assert_eq!(
        (
            messages["missing_count"].as_u64(),
            messages["different_count"].as_u64(),
            messages["extra_count"].as_u64()
        ),
        (Some(1), Some(5), Some(0))
    );
    let conversations = kind("conversation");
    assert!(
        has(&conversations["different"], &untitled),
        "NULL vs empty string: {conversations}"
    );
    assert_eq!(conversations["different_count"].as_u64(), Some(1));
    for stream in ["eval_result", "usage"] {
        let k = kind(stream);
        assert_eq!(
            (
                k["source_rows"].as_u64(),
                k["target_rows"].as_u64(),
                k["different_count"].as_u64()
            ),
            (Some(6_000), Some(6_000), Some(0)),
            "{stream} events copied to ClickHouse: {k}"
        );
    }
    let emb = kind("embedding");
    assert_eq!(
        (emb["source_rows"].as_u64(), emb["target_rows"].as_u64()),
        (Some(3_000), Some(3_000))
    );
    assert!(has(&emb["different"], &vid), "vector component: {emb}");
    assert_eq!(emb["different_count"].as_u64(), Some(1));
    let projects = kind("project");
    assert!(has(&projects["extra"], &extra), "extra row: {projects}");
    println!(
        "verify flagged: changed column, deleted row, NULL vs value, NULL vs empty string, 1 µs, two rows swapped between workspaces, extra row, vector component"
    );

    // Entries parked after permanent delivery failures go back to pending with `migrate unpark`,
    // in every outbox of both stores.
    let storage = sprintlens::Storage::open(
        sprintlens::config::from_parts(
            None,
            vec![("SPRINTLENS_DATA_DIR".into(), data.display().to_string())],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let ws = WorkspaceId::new();
    let records = storage.outbox().unwrap().clone();
    let (_, seqs) = records
        .upsert_logged(&[generate::project(ws, "parked")], &[])
        .await
        .unwrap();
    records.outbox_park(seqs[0], "refused").await.unwrap();
    let vectors = storage.vector_outbox().unwrap().clone();
    let key = sprintlens::core::VectorKey {
        workspace: ws,
        kind: sprintlens::core::EmbeddingKind::Message,
        id: RecordId::new(),
    };
    let (_, seq) = vectors.vector_delete_logged(key, &[]).await.unwrap();
    vectors.vector_outbox_park(seq, "refused").await.unwrap();
    let (ok, out) = run_cli(&["unpark"], &data, &target.toml);
    assert!(ok, "{out}");
    assert!(
        out.contains("old store: 1 record, 1 embedding, 0 event entries returned to pending"),
        "{out}"
    );
    assert!(
        out.contains("new store: 0 record, 0 embedding entries returned to pending"),
        "{out}"
    );
    assert_eq!(records.outbox_stats().await.unwrap().parked, 0);
    assert_eq!(vectors.vector_outbox_stats().await.unwrap().pending, 1);
}

/// 1,000,000 records over three workspaces (NULLs, unicode, large JSON, embeddings, events): one
/// kill at each named point of `migrate run`, then 20 kill -9s at random moments, each followed by
/// a resume; `verify` killed once too; then identical: rows lost 0, duplicates 0. The messages are
/// copied in two lanes at once, the resumed runs alternating `--parallel` 1 and 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_survive_named_and_random_kills() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "million").await else {
        return;
    };
    let data = dir.path().join("source");
    let started = Instant::now();
    // 3 × (one of each kind + a project + 20 conversations + messages) ≥ 1,000,000 records.
    let per_workspace = sprintlens::core::RecordKind::ALL.len() + 21;
    fill_source(
        &data,
        3 * (1_000_000_usize.div_ceil(3) - per_workspace),
        1_000,
    )
    .await;
    let filled = started.elapsed();
    let out = sprintlens()
        .args(["schema", "apply", "--config"])
        .arg(&target.toml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every run copies two streams at once: the first cuts the messages into two lanes, which the
    // later runs follow (the random ones alternate `--parallel` 1 and 3).
    let run = |kill_at: Option<String>, parallel: &str| {
        let mut c = sprintlens();
        c.args([
            "migrate",
            "run",
            "--offline",
            "--parallel",
            parallel,
            "--to",
        ])
        .arg(&target.toml)
        .arg("--data-dir")
        .arg(&data);
        if let Some(k) = kill_at {
            c.env("SPRINTLENS_MIGRATE_KILL_AT", k);
        }
        c
    };

    // One kill at each named point, early enough that data is still in flight.
    for (point, n) in [
        ("after-read", 3),
        ("mid-batch", 2),
        ("after-commit", 4),
        ("after-checkpoint", 2),
    ] {
        let out = run(Some(format!("{point}:{n}")), "2").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the run was not killed");
        assert!(
            stderr.contains(&format!("aborting at {point}")),
            "{point}: {stderr}"
        );
    }

    // 20 kill -9s at random moments.
    let runs = std::cell::Cell::new(0);
    let killed_mid_run = kill_at_random_moments(
        || {
            runs.set(runs.get() + 1);
            run(None, if runs.get() % 2 == 0 { "1" } else { "3" })
        },
        20,
        20,
        300..2_800,
    );
    assert!(
        killed_mid_run >= 15,
        "only {killed_mid_run} of 20 runs were killed mid-run"
    );
    // Killed once every kind is copied, before the deferred indexes are rebuilt (unless a random
    // run above got that far and finished).
    let out = run(Some("before-indexes:1".into()), "2").output().unwrap();
    let killed_before_indexes = !out.status.success();
    if killed_before_indexes {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("aborting at before-indexes"), "{stderr}");
        let (_, status) = run_cli(&["status", "--json"], &data, &target.toml);
        let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
        assert_eq!(status["autovacuum_paused"], serde_json::json!(["records"]));
    }
    let out = run(None, "2").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, status) = run_cli(&["status", "--json"], &data, &target.toml);
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["missing_record_indexes"], serde_json::json!([]));
    assert_eq!(status["autovacuum_paused"], serde_json::json!([]));
    let lanes: Vec<&serde_json::Value> = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["name"]
                .as_str()
                .unwrap()
                .starts_with("migrate/records/message/")
        })
        .collect();
    assert_eq!(
        lanes.len(),
        2,
        "the messages were copied in two lanes: {status}"
    );
    assert!(
        lanes.iter().all(|l| l["position"]["done"] == true),
        "{status}"
    );
    assert!(
        status["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "migrate/indexes" && s["position"]["deferred"] == false),
        "the deferral was recorded and cleared: {status}"
    );

    // A verify killed midway, then a full one.
    let out = sprintlens()
        .env("SPRINTLENS_MIGRATE_KILL_AT", "during-verify:5")
        .args(["migrate", "verify", "--to"])
        .arg(&target.toml)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborting at during-verify"));
    let report_path = dir.path().join("verify.json");
    let (ok, verify) = run_cli(
        &["verify", "--report", report_path.to_str().unwrap()],
        &data,
        &target.toml,
    );
    assert!(ok, "{verify}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let mut records = 0;
    for k in report["kinds"].as_array().unwrap() {
        assert_eq!(k["source_rows"], k["target_rows"], "{k}");
        assert_eq!(
            (k["missing_count"].as_u64(), k["extra_count"].as_u64()),
            (Some(0), Some(0)),
            "{k}"
        );
        if !["embedding", "eval_result", "usage"].contains(&k["kind"].as_str().unwrap()) {
            records += k["source_rows"].as_u64().unwrap();
        }
    }
    assert!(records >= 1_000_000, "{records} records");
    println!(
        "migrate: {records} records (+ embeddings, events) filled in {:.0} s; killed at after-read, \
         mid-batch, after-commit, after-checkpoint, during-verify{}, and {killed_mid_run} of 20 runs \
         SIGKILLed mid-run; verify identical: rows lost 0, duplicates 0; {:.0} s in all",
        filled.as_secs_f64(),
        if killed_before_indexes {
            " and before-indexes"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );
}

/// A ClickHouse target with `retention_days` drops events older than that at insert: `run` copies
/// only the events the target keeps, and `verify` compares only events inside the retention (with an
/// hour's margin), so a target that is complete verifies identical instead of naming every expired
/// event missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_targets_retention_are_neither_copied_nor_compared() {
    let dir = tempfile::tempdir().unwrap();
    let Some(target) = fresh_target(dir.path(), "retention").await else {
        return;
    };
    let toml = std::fs::read_to_string(&target.toml)
        .unwrap()
        .replace("[blobs]", "retention_days = 30\n[blobs]");
    let open = |text: String| async move {
        sprintlens::Storage::open(sprintlens::config::from_parts(Some(&text), Vec::new()).unwrap())
            .await
            .unwrap()
    };
    let new = open(toml).await;
    new.apply_schema().await.unwrap();
    let source = open(format!(
        "data_dir = \"{}\"\n",
        dir.path().join("source").display()
    ))
    .await;
    let (ws, pid, run) = (WorkspaceId::new(), RecordId::new(), RecordId::new());
    let now = sprintlens::core::Timestamp::now();
    let day = Duration::from_secs(86_400);
    let mut events = Vec::new();
    // 40 and 31 days old (expired), 29 days 23 hours old (inside, within the hour's margin), 10
    // days old and now (inside).
    for (age, n) in [
        (day * 40, 150i64),
        (day * 31, 50),
        (day * 30 - Duration::from_secs(1_800), 5),
        (day * 10, 100),
        (Duration::ZERO, 20),
    ] {
        for i in 0..n {
            let at = now.minus(age);
            events.push(generate::eval_result(
                ws,
                pid,
                run,
                "accuracy",
                0.5,
                i % 2 == 0,
                10,
                sprintlens::core::Cost(i),
                at,
            ));
            events.push(generate::usage(
                ws,
                pid,
                None,
                "gpt-4o",
                i as u64,
                1,
                sprintlens::core::Cost(i),
                5,
                at,
            ));
        }
    }
    source.analytics().record(&events).await.unwrap();
    let plan = sprintlens::migrate::plan(
        &source,
        &new,
        sprintlens::core::config::MigrationMode::DualWrite,
    )
    .await
    .unwrap();
    let kept = plan
        .checks
        .iter()
        .find(|c| c.name == "events the target keeps")
        .expect("the plan names the retention");
    assert!(kept.ok && kept.detail.contains("30 days"), "{kept:?}");
    let reports = sprintlens::migrate::run(
        &source,
        &new,
        &sprintlens::migrate::RunOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    for stream in ["eval_result", "usage"] {
        let r = reports.iter().find(|r| r.kind == stream).unwrap();
        assert_eq!(
            r.rows, 125,
            "{stream}: only the events the target keeps are read: {r:?}"
        );
    }
    let verified = sprintlens::migrate::verify_events(&source, &new)
        .await
        .unwrap();
    for k in &verified {
        assert_eq!(k.differences(), 0, "{k:?}");
        // Inside the retention less the margin: the 10-day-old events and the new ones.
        assert_eq!((k.source_rows, k.target_rows), (120, 120), "{k:?}");
        assert!(k.since.is_some(), "{k:?}");
    }
    // A missing event inside the retention is still named.
    let lost = generate::eval_result(
        ws,
        pid,
        run,
        "accuracy",
        0.1,
        true,
        1,
        sprintlens::core::Cost(1),
        now.minus(day * 2),
    );
    source.analytics().record(&[lost]).await.unwrap();
    let verified = sprintlens::migrate::verify_events(&source, &new)
        .await
        .unwrap();
    let k = verified.iter().find(|k| k.kind == "eval_result").unwrap();
    assert_eq!(k.missing_count, 1, "{k:?}");
    eprintln!(
        "figure: 200 of 325 events per stream past a 30-day retention: 125 copied, 120 compared, identical"
    );
}
