#![doc = include_str!("../README.md")]

mod demo;
mod doctor;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sprintlens::{Storage, StorageConfig};

/// sprintlens: the storage layer of an AI-agent evaluation platform.
#[derive(Parser, Debug)]
#[command(name = "sprintlens", version, about)]
struct Cli {
    /// A TOML configuration file (sections [records], [vectors], [analytics], [blobs], [cache],
    /// [sessions], [embedder]); SPRINTLENS_* variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of the embedded default stack (overrides data_dir and SPRINTLENS_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the storage layer end to end on the configured backends (embedded by default).
    Demo(demo::Args),
    /// Checks every configured backend and prints what it found.
    Doctor,
    /// Database schemas.
    Schema {
        #[command(subcommand)]
        action: SchemaAction,
    },
    /// Moves records to another storage (e.g. SQLite to PostgreSQL), resumably, and checks it.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Files and media.
    Blobs {
        #[command(subcommand)]
        action: BlobsAction,
    },
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The target's configuration (TOML; SPRINTLENS_* variables apply to the source only). Default:
    /// `[migration] target` of the configuration.
    #[arg(long, value_name = "FILE")]
    to: Option<PathBuf>,
    /// Print machine-readable JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum MigrateAction {
    /// What would be copied: rows per kind in the source and what the target already has.
    Plan(Target),
    /// Copies records in keyset batches; kill it at any moment and run it again to resume.
    Run {
        #[command(flatten)]
        target: Target,
        /// Records per batch (and per target transaction; at most 100,000). Embeddings go in
        /// batches of at most 1,000, analytics events of at most 10,000.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Copy records only, not analytics events.
        #[arg(long)]
        no_events: bool,
        /// Nothing writes to the source during the backfill (services stopped), so it may run
        /// without `[migration] mode = "dual-write"`.
        #[arg(long)]
        offline: bool,
        /// Streams copied at the same time (1–16), each with its own checkpoint: every record kind,
        /// and with 2 or more a kind no run has started is cut into this many lanes of about equal
        /// size (a resumed run keeps the lanes it finds).
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Keep the target's secondary record indexes and its vector index while copying (by default
        /// they are dropped for a large copy into an empty target and built at the end, with
        /// `[records] admin_url`).
        #[arg(long)]
        keep_indexes: bool,
    },
    /// After a cut-over: copies back to the old store everything only the new one has, then records
    /// the rollback so `mode = "dual-write"` may open again. Resumable.
    Rollback(Target),
    /// Where each stream stands in the target, and the last verification.
    Status(Target),
    /// Returns every parked outbox entry (records, embeddings, events) of both stores to the
    /// pending set, once the cause of their delivery failures is fixed; the services' reconcilers
    /// then deliver them.
    Unpark(Target),
    /// Compares every record on both sides; exits 1 on any difference.
    Verify {
        #[command(flatten)]
        target: Target,
        /// Only these workspaces (repeatable; default: all).
        #[arg(long = "workspace")]
        workspaces: Vec<sprintlens::core::WorkspaceId>,
        /// Also write the report (JSON) here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

/// `f` of a store's outbox, when the store keeps that outbox.
async fn kept<O: ?Sized, T>(
    outbox: Option<&std::sync::Arc<O>>,
    f: impl AsyncFnOnce(&O) -> sprintlens::core::Result<T>,
) -> sprintlens::core::Result<Option<T>> {
    match outbox {
        Some(o) => f(o).await.map(Some),
        None => Ok(None),
    }
}

async fn open_target(t: &Target, config: &StorageConfig) -> anyhow::Result<Storage> {
    let path = match (&t.to, &config.migration.target) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => anyhow::bail!(
            "migration.target: name the target configuration with --to FILE or [migration] target"
        ),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = sprintlens::config::from_parts(Some(&text), Vec::<(String, String)>::new())?;
    Ok(Storage::open(config).await?)
}

async fn migrate(config: StorageConfig, action: MigrateAction) -> anyhow::Result<bool> {
    use sprintlens::core::config::MigrationMode;
    // The commands work on the stores themselves: no layers, no reconciler of their own.
    let mode = config.migration.mode;
    let mut plain = config.clone();
    plain.migration.mode = MigrationMode::Single;
    let source = Storage::open(plain).await?;
    match action {
        MigrateAction::Plan(t) => {
            let target = open_target(&t, &config).await?;
            let plan = sprintlens::migrate::plan(&source, &target, mode).await?;
            if t.json {
                println!("{}", serde_json::to_string(&plan)?);
            } else {
                for k in &plan.kinds {
                    println!(
                        "{:<16} {:>10} rows in the source, {:>10} copied, ~{:.1} MB to write",
                        k.kind,
                        k.source_rows,
                        k.copied,
                        k.estimated_bytes as f64 / 1e6
                    );
                }
                let total: u64 = plan.kinds.iter().map(|k| k.source_rows).sum();
                println!(
                    "{total} rows to migrate in all, {} left ({}): about {:.0} s and {:.1} MB in the target",
                    plan.rows_left,
                    if plan.bulk_load {
                        "records by bulk load (COPY)"
                    } else {
                        "records by upserts"
                    },
                    plan.estimated_seconds,
                    plan.estimated_bytes as f64 / 1e6
                );
                for c in &plan.checks {
                    println!(
                        "{} {}: {}",
                        if c.ok { "ok  " } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
            }
            Ok(plan.ok())
        }
        MigrateAction::Run {
            target: t,
            batch,
            no_events,
            offline,
            parallel,
            keep_indexes,
        } => {
            match mode {
                MigrationMode::Single if !offline => anyhow::bail!(
                    "migration.mode: refusing to backfill while dual-write is off: writes made to the \
                     source during the run would never reach the target. Set [migration] mode = \
                     \"dual-write\" on every service first, or pass --offline if nothing writes to the source"
                ),
                MigrationMode::CutOver => anyhow::bail!(
                    "migration.mode: the target is the store of record after cut-over; a backfill from \
                     the old store would copy stale rows into it. Use `sprintlens migrate rollback` to go back"
                ),
                _ => {}
            }
            let target = open_target(&t, &config).await?;
            let options = sprintlens::migrate::RunOptions {
                batch,
                events: !no_events,
                parallel,
                defer_indexes: !keep_indexes,
                ..Default::default()
            };
            let json = t.json;
            let reports = sprintlens::migrate::run(&source, &target, &options, |p| {
                if json {
                    if let Ok(line) = serde_json::to_string(p) {
                        println!("{line}");
                    }
                } else if p.done || p.copied % (batch as u64 * 20) < batch as u64 {
                    println!(
                        "{:<16} {:>10} / {:<10} {:>9.0} rows/s  ETA {:>6.1} s{}",
                        p.kind,
                        p.copied,
                        p.total,
                        p.rate,
                        p.eta_secs,
                        if p.done { "  done" } else { "" }
                    );
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&reports)?);
            } else {
                let rows: u64 = reports.iter().map(|r| r.rows).sum();
                let written: u64 = reports.iter().map(|r| r.written).sum();
                println!("migrate run: {rows} rows read, {written} written to the target");
            }
            Ok(true)
        }
        MigrateAction::Status(t) => {
            let target = open_target(&t, &config).await?;
            let streams = sprintlens::migrate::status(&target).await?;
            let old_outbox = kept(source.outbox(), async |o| o.outbox_stats().await).await?;
            let new_outbox = kept(target.outbox(), async |o| o.outbox_stats().await).await?;
            let old_events = kept(source.event_outbox(), async |o| {
                o.event_outbox_stats().await
            })
            .await?;
            let new_events = kept(target.event_outbox(), async |o| {
                o.event_outbox_stats().await
            })
            .await?;
            let old_vectors = kept(source.vector_outbox(), async |o| {
                o.vector_outbox_stats().await
            })
            .await?;
            let new_vectors = kept(target.vector_outbox(), async |o| {
                o.vector_outbox_stats().await
            })
            .await?;
            let phase = sprintlens::phase::phase(&target).await?;
            let shadow = sprintlens::phase::shadow_totals(&target).await?;
            let (missing_indexes, vector_index_missing, autovacuum_paused) = match target.postgres()
            {
                Some(pg) => {
                    let mut paused = Vec::new();
                    for table in ["records", "embeddings"] {
                        if pg.autovacuum_paused(table).await? {
                            paused.push(table);
                        }
                    }
                    (
                        pg.missing_record_indexes().await?,
                        pg.vector_index_missing().await?,
                        paused,
                    )
                }
                None => (Vec::new(), false, Vec::new()),
            };
            if t.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "mode": mode.as_str(),
                        "phase": phase.as_ref().map(|p| serde_json::json!({"phase": p.phase, "at": p.at})),
                        "outbox": {
                            "old": old_outbox.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                            "new": new_outbox.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                        },
                        "event_outbox": {
                            "old": old_events.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                            "new": new_events.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                        },
                        "vector_outbox": {
                            "old": old_vectors.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                            "new": new_vectors.map(|o| serde_json::json!({"pending": o.pending, "parked": o.parked})),
                        },
                        "shadow_read": shadow,
                        "missing_record_indexes": missing_indexes,
                        "vector_index_missing": vector_index_missing,
                        "autovacuum_paused": autovacuum_paused,
                        "streams": streams,
                    })
                );
            } else {
                println!(
                    "mode: {}{}",
                    mode.as_str(),
                    phase
                        .map(|p| format!(" (target records {} at {})", p.phase, p.at))
                        .unwrap_or_default()
                );
                for (side, o) in [
                    ("outbox of the old store", old_outbox),
                    ("outbox of the new store", new_outbox),
                    ("event outbox of the old store", old_events),
                    ("event outbox of the new store", new_events),
                    ("vector outbox of the old store", old_vectors),
                    ("vector outbox of the new store", new_vectors),
                ] {
                    if let Some(o) = o {
                        println!(
                            "{side}: {} pending, {} parked{}",
                            o.pending,
                            o.parked,
                            o.oldest_pending
                                .map(|t| format!(", oldest {t}"))
                                .unwrap_or_default()
                        );
                    }
                }
                println!(
                    "shadow reads: {} compared, {} mismatched{}",
                    shadow["compared"],
                    shadow["mismatched"],
                    match shadow["recent_ids"].as_array() {
                        Some(ids) if !ids.is_empty() =>
                            format!(" (latest ids: {})", serde_json::Value::from(ids.clone())),
                        _ => String::new(),
                    }
                );
                if !missing_indexes.is_empty() {
                    println!(
                        "target record indexes not built yet (a backfill deferred them; the end of \
                         `migrate run` or `schema apply` builds them): {}",
                        missing_indexes.join(", ")
                    );
                }
                if vector_index_missing {
                    println!(
                        "target vector index not built yet (a backfill deferred it; the end of \
                         `migrate run` or `schema apply` builds it): embeddings_hnsw"
                    );
                }
                if !autovacuum_paused.is_empty() {
                    println!(
                        "autovacuum off on the target's {} until the deferred indexes are built",
                        autovacuum_paused.join(", ")
                    );
                }
                if streams.is_empty() {
                    println!("no migration has run against this target");
                }
                for s in &streams {
                    println!(
                        "{:<32} {:>10} rows  {}  (at {})",
                        s.name, s.rows, s.position, s.updated_at
                    );
                }
            }
            Ok(true)
        }
        MigrateAction::Unpark(t) => {
            let target = open_target(&t, &config).await?;
            for (side, s) in [("old", &source), ("new", &target)] {
                let records = kept(s.outbox(), async |o| o.outbox_unpark().await).await?;
                let embeddings =
                    kept(s.vector_outbox(), async |o| o.vector_outbox_unpark().await).await?;
                let events =
                    kept(s.event_outbox(), async |o| o.event_outbox_unpark().await).await?;
                if t.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "store": side,
                            "records": records,
                            "embeddings": embeddings,
                            "events": events,
                        })
                    );
                } else {
                    let counts: Vec<String> = [
                        ("record", records),
                        ("embedding", embeddings),
                        ("event", events),
                    ]
                    .into_iter()
                    .filter_map(|(what, n)| n.map(|n| format!("{n} {what}")))
                    .collect();
                    println!(
                        "{side} store: {} entries returned to pending",
                        counts.join(", ")
                    );
                }
            }
            Ok(true)
        }
        MigrateAction::Rollback(t) => {
            let target = open_target(&t, &config).await?;
            let json = t.json;
            let r = sprintlens::migrate::rollback(&source, &target, |p| {
                if json && let Ok(line) = serde_json::to_string(p) {
                    println!("{line}");
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else if r.already {
                println!("rollback: already rolled back; nothing to do");
            } else {
                println!(
                    "rollback: {} outbox entries delivered, {} records re-copied to the old store. \
                     Set [migration] mode = \"dual-write\" (or single on the old store) on every service.",
                    r.delivered, r.copied
                );
            }
            Ok(true)
        }
        MigrateAction::Verify {
            target: t,
            workspaces,
            report,
        } => {
            let target = open_target(&t, &config).await?;
            let r = sprintlens::migrate::verify_all(&source, &target, &workspaces).await?;
            sprintlens::migrate::record_verify(&target, &r).await?;
            if let Some(path) = report {
                std::fs::write(&path, serde_json::to_vec_pretty(&r)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if t.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for k in &r.kinds {
                    println!(
                        "{:<16} source {:>9} target {:>9}  missing {} extra {} different {}",
                        k.kind,
                        k.source_rows,
                        k.target_rows,
                        k.missing_count,
                        k.extra_count,
                        k.different_count
                    );
                    if let Some(since) = k.since {
                        println!("  compared since {since} (a side's retention, less an hour)");
                    }
                    for (what, ids) in [
                        ("missing", &k.missing),
                        ("extra", &k.extra),
                        ("different", &k.different),
                    ] {
                        for id in ids.iter().take(10) {
                            println!("  {what} {id}");
                        }
                    }
                }
                println!(
                    "verify: {} in {:.1} s",
                    if r.ok {
                        "identical"
                    } else {
                        "DIFFERENCES FOUND"
                    },
                    r.seconds
                );
            }
            Ok(r.ok)
        }
    }
}

#[derive(Subcommand, Debug)]
enum BlobsAction {
    /// Aborts stale incomplete uploads and removes blobs that no file record points to.
    Gc {
        /// Grace period: younger uploads and blobs are left alone (e.g. 90s, 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this workspace (default: every workspace holding blobs).
        #[arg(long)]
        workspace: Option<sprintlens::core::WorkspaceId>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `90s`, `30m`, `24h`, `7d` or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Subcommand, Debug)]
enum SchemaAction {
    /// Applies pending migrations (re-applying is a no-op) and prints the schema state.
    Apply,
}

fn load_config(cli: &Cli) -> anyhow::Result<StorageConfig> {
    let text = match &cli.config {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(d) = &cli.data_dir {
        env.retain(|(k, _)| k != "SPRINTLENS_DATA_DIR");
        env.push(("SPRINTLENS_DATA_DIR".into(), d.display().to_string()));
    }
    Ok(sprintlens::config::from_parts(text.as_deref(), env)?)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Demo(args) => {
            let storage = Storage::open(config).await?;
            demo::run(&storage, args).await?;
            Ok(true)
        }
        Command::Doctor => doctor::run(config).await,
        Command::Schema {
            action: SchemaAction::Apply,
        } => {
            let storage = Storage::open(config).await?;
            for s in storage.apply_schema().await? {
                println!(
                    "{} {}: {} of {} migrations applied (versions {:?})",
                    s.backend,
                    s.location,
                    s.applied.len(),
                    s.known,
                    s.applied
                );
            }
            println!("schema is up to date");
            Ok(true)
        }
        Command::Migrate { action } => migrate(config, action).await,
        Command::Blobs {
            action:
                BlobsAction::Gc {
                    older_than,
                    dry_run,
                    workspace,
                    json,
                },
        } => {
            let storage = Storage::open(config).await?;
            let report = storage
                .gc_blobs(&sprintlens::gc::GcOptions {
                    workspace,
                    older_than,
                    dry_run,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "blobs gc on {} ({}): {} workspaces, {} blobs scanned, {} referenced, {} orphans ({} bytes) {verb}, {} unreferenced inside the grace period",
                    storage.blobs().backend(),
                    if dry_run { "dry run" } else { "applied" },
                    report.workspaces,
                    report.blobs_scanned,
                    report.blobs_referenced,
                    report.orphans,
                    report.orphan_bytes,
                    report.young_unreferenced,
                );
                println!(
                    "incomplete uploads: {} seen, {} older than {older_than:?} {verb}",
                    report.uploads.seen, report.uploads.aborted
                );
                for k in &report.orphan_sample {
                    println!("  orphan {k}");
                }
            }
            Ok(true)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
