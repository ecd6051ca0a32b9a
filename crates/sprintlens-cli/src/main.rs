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
