//! `[migration] mode`: composing this configuration's stores (the old ones) with the target's (the
//! new ones) into the layers of [`crate::dual`], and the interlocks that refuse combinations that
//! would lose data.
//!
//! | mode | serves, store of record | receives every write too | outbox in |
//! |---|---|---|---|
//! | `single` | this configuration's stores | — | — |
//! | `dual-write` | old | new (reconciler) | old |
//! | `shadow-read` | old, a sample of reads compared with new | new | old |
//! | `cut-over` | new | old (reconciler) | new |
//!
//! Record writes and embeddings go through the outbox protocol of [`crate::dual`] (both SQLite and
//! PostgreSQL keep outboxes for them); analytics events too when the primary's analytics keeps an
//! event outbox (SQLite), and are mirrored when it does not (ClickHouse after cut-over: bounded by
//! `write_wait_ms`, failures counted; `sprintlens migrate run` resumes past its checkpoints and
//! `verify` compares them).
//!
//! # Interlocks, checked when the storage opens
//! - Every mode but `single` needs `[migration] target` and records on PostgreSQL there (it keeps
//!   the checkpoints, the verification and the phase), and an outbox on both sides' records and
//!   vectors.
//! - `shadow-read` and `cut-over` need a finished backfill (every record kind's checkpoint done).
//! - `cut-over` needs a passing `verify` newer than the last backfill run and the last rollback.
//! - `dual-write` and `shadow-read` are refused after a cut-over until `sprintlens migrate rollback`
//!   has run (the new store holds writes the old one may not have).
//! - Before serving, the opening process delivers whatever the *other* direction's outbox still
//!   holds (the old store's at cut-over, the new store's after a rollback), so switching direction
//!   never strands a write; it refuses to start if that cannot finish within 6 × `deliver_timeout_ms`.
//!
//! Switch every process of a deployment together (stop, change `mode`, start): two processes in
//! different modes would each treat their own primary as the store of record.

use std::sync::Arc;
use std::time::Duration;

use sprintlens_core::config::{MigrationMode, StorageConfig};
use sprintlens_core::{Error, OutboxStats, Result};

use crate::Storage;
use crate::dual::{Reconciler, ShadowReadRecordStore, ShadowStats};

/// A migration in progress, as `[migration]` configured it.
#[derive(Debug)]
pub struct Migration {
    mode: MigrationMode,
    target: Storage,
    reconciler: Arc<Reconciler>,
    events: Option<Arc<Reconciler<crate::dual::EventDelivery>>>,
    vectors: Arc<Reconciler<crate::dual::VectorDelivery>>,
    shadow: Option<Arc<ShadowReadRecordStore>>,
    mirror_failures: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Names this process's shadow-read counters in the target.
    instance: String,
    _flush: Option<FlushTask>,
}

/// Stops the periodic shadow-read flush with the migration.
#[derive(Debug)]
struct FlushTask(tokio::task::JoinHandle<()>);

impl Drop for FlushTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Migration {
    /// The configured mode.
    pub fn mode(&self) -> MigrationMode {
        self.mode
    }
    /// The new stores (opened in `single` mode).
    pub fn target(&self) -> &Storage {
        &self.target
    }
    /// The reconciler delivering the primary's outbox to the secondary.
    pub fn reconciler(&self) -> &Arc<Reconciler> {
        &self.reconciler
    }
    /// The reconciler delivering the primary's event outbox, when the primary's analytics keeps one
    /// (SQLite); otherwise events are mirrored.
    pub fn event_reconciler(&self) -> Option<&Arc<Reconciler<crate::dual::EventDelivery>>> {
        self.events.as_ref()
    }
    /// The reconciler delivering the primary's vector outbox.
    pub fn vector_reconciler(&self) -> &Arc<Reconciler<crate::dual::VectorDelivery>> {
        &self.vectors
    }
    /// Delivers everything pending (records, then events, then embeddings) or fails when
    /// `deadline` passes.
    pub async fn drain(&self, deadline: Duration) -> Result<()> {
        self.reconciler.drain(deadline).await?;
        if let Some(e) = &self.events {
            e.drain(deadline).await?;
        }
        self.vectors.drain(deadline).await?;
        Ok(())
    }
    /// The primary's vector outbox depth.
    pub async fn vector_outbox_stats(&self) -> Result<OutboxStats> {
        self.vectors.outbox_stats().await
    }
    /// The primary's event outbox depth (zero when events are mirrored).
    pub async fn event_outbox_stats(&self) -> Result<OutboxStats> {
        match &self.events {
            Some(e) => e.outbox_stats().await,
            None => Ok(OutboxStats::default()),
        }
    }
    /// Shadow-read counters (`shadow-read` mode).
    pub fn shadow(&self) -> Option<ShadowStats> {
        self.shadow.as_ref().map(|s| s.stats())
    }
    /// The primary's outbox depth.
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.reconciler.outbox_stats().await
    }
    /// Writes this process's shadow-read counters to the target, where `sprintlens migrate status`
    /// sums them over processes (done every 5 s in the background too).
    #[cfg(feature = "postgres")]
    pub async fn flush_shadow(&self) -> Result<()> {
        match &self.shadow {
            Some(s) => write_shadow(&self.target, &self.instance, &s.stats()).await,
            None => Ok(()),
        }
    }
    /// Event writes the secondary missed when events are mirrored (closed by `migrate run` +
    /// `verify`).
    pub fn mirror_failures(&self) -> u64 {
        self.mirror_failures
            .as_ref()
            .map_or(0, |f| f.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The target configuration of a migrating `config`, read and validated (no `SPRINTLENS_*`
/// overrides: those address the service's own stores); `None` in `single` mode.
pub fn target_config(config: &StorageConfig) -> Result<Option<StorageConfig>> {
    if config.migration.mode == MigrationMode::Single {
        return Ok(None);
    }
    let path = config.migration.target.as_deref().unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            "migration.target",
            format!("cannot read the target configuration {path}: {e}"),
        )
    })?;
    let target = crate::config::from_parts(Some(&text), std::iter::empty()).map_err(|e| {
        Error::config(
            "migration.target",
            format!("the target configuration {path} is invalid: {e}"),
        )
    })?;
    if target.migration.mode != MigrationMode::Single {
        return Err(Error::config(
            "migration.target",
            format!("the target configuration {path} must itself be in mode = \"single\""),
        ));
    }
    if target.records.url.expose() == config.records.url.expose() {
        return Err(Error::config(
            "migration.target",
            "the target's records.url is this configuration's own: a store cannot migrate to itself",
        ));
    }
    crate::open::plan(&target)?;
    Ok(Some(target))
}

/// Names of the phase marker and of the checkpoints the interlocks read.
pub(crate) const PHASE: &str = "migrate/phase";

#[cfg(not(feature = "postgres"))]
pub(crate) async fn compose(_base: Storage, _target: StorageConfig) -> Result<Storage> {
    Err(Error::config(
        "migration.mode",
        "migrations keep their state in the target's PostgreSQL: turn on the `postgres` feature",
    ))
}

#[cfg(feature = "postgres")]
pub use with_postgres::*;

#[cfg(feature = "postgres")]
mod with_postgres {
    use super::*;
    use crate::dual::{
        DualWriteAnalytics, DualWriteRecordStore, DualWriteVectorIndex, MirroredAnalytics,
        ReconcilerOptions,
    };
    use serde_json::json;
    use sprintlens_core::{RecordKind, Timestamp};

    /// The phase recorded in the target: `cut-over` (since when) or `rolled-back`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Phase {
        /// `"cut-over"` or `"rolled-back"`.
        pub phase: String,
        /// When it was recorded.
        pub at: Timestamp,
    }

    /// The target's PostgreSQL store, which holds the migration's state.
    pub(crate) fn state_store(target: &Storage) -> Result<&sprintlens_postgres::PgStore> {
        target.postgres.as_ref().ok_or_else(|| {
            Error::config(
                "migration.target",
                "the target's records must be on PostgreSQL (it keeps the migration's checkpoints and phase)",
            )
        })
    }

    /// The recorded phase, if any.
    pub async fn phase(target: &Storage) -> Result<Option<Phase>> {
        let pg = state_store(target)?;
        Ok(pg
            .checkpoints(PHASE)
            .await?
            .into_iter()
            .find(|(n, ..)| n == PHASE)
            .map(|(_, v, _, at)| Phase {
                phase: v["phase"].as_str().unwrap_or_default().to_string(),
                at,
            }))
    }

    /// Writes one process's shadow-read counters (`migrate/shadow/<instance>`).
    pub(crate) async fn write_shadow(
        target: &Storage,
        instance: &str,
        stats: &ShadowStats,
    ) -> Result<()> {
        let ids: Vec<String> = stats
            .recent
            .iter()
            .rev()
            .flat_map(|m| m.ids.iter().map(|i| i.to_string()))
            .take(20)
            .collect();
        state_store(target)?
            .upsert_with_checkpoint(
                &[],
                &format!("migrate/shadow/{instance}"),
                &json!({
                    "compared": stats.compared,
                    "mismatched": stats.mismatched,
                    "errors": stats.errors,
                    "recent_ids": ids,
                }),
                stats.mismatched,
            )
            .await
            .map(|_| ())
    }

    /// Shadow-read counters summed over every process that flushed them, with the latest ids.
    pub async fn shadow_totals(target: &Storage) -> Result<serde_json::Value> {
        let mut totals = json!({"compared": 0, "mismatched": 0, "errors": 0, "recent_ids": []});
        let mut ids = Vec::new();
        for (_, v, ..) in state_store(target)?.checkpoints("migrate/shadow/").await? {
            for k in ["compared", "mismatched", "errors"] {
                totals[k] = json!(totals[k].as_u64().unwrap_or(0) + v[k].as_u64().unwrap_or(0));
            }
            if let Some(a) = v["recent_ids"].as_array() {
                ids.extend(a.iter().cloned());
            }
        }
        ids.truncate(20);
        totals["recent_ids"] = json!(ids);
        Ok(totals)
    }

    /// Records `phase` in the target.
    pub async fn set_phase(target: &Storage, phase: &str) -> Result<()> {
        state_store(target)?
            .upsert_with_checkpoint(&[], PHASE, &json!({ "phase": phase }), 0)
            .await
            .map(|_| ())
    }

    /// Whether every record kind's backfill checkpoint says done and no deferred index waits to be
    /// rebuilt, and the latest checkpoint time.
    async fn backfill(pg: &sprintlens_postgres::PgStore) -> Result<(bool, Option<Timestamp>)> {
        let cps = crate::migrate::record_checkpoints(pg).await?;
        let done = RecordKind::ALL
            .iter()
            .all(|k| crate::migrate::kind_done(&cps, *k))
            && !crate::migrate::indexes_deferred(pg).await?;
        Ok((done, cps.iter().map(|c| c.3).max()))
    }

    fn refuse(reason: String) -> Error {
        Error::config("migration.mode", reason)
    }

    /// Checks the interlocks of `mode` against the target's recorded state.
    pub async fn check(mode: MigrationMode, target: &Storage) -> Result<()> {
        let pg = state_store(target)?;
        let phase = phase(target).await?;
        let (done, last_run) = backfill(pg).await?;
        match mode {
            MigrationMode::Single => Ok(()),
            MigrationMode::DualWrite | MigrationMode::ShadowRead
                if phase.as_ref().is_some_and(|p| p.phase == "cut-over") =>
            {
                Err(refuse(format!(
                    "the new store has been the store of record since {} (cut-over); going back to {} \
                     without `sprintlens migrate rollback` would lose the writes made there",
                    phase.map(|p| p.at.to_string()).unwrap_or_default(),
                    mode.as_str()
                )))
            }
            MigrationMode::DualWrite => Ok(()),
            MigrationMode::ShadowRead | MigrationMode::CutOver if !done => Err(refuse(format!(
                "{} needs a finished backfill: run `sprintlens migrate run` until every kind is done \
                 and its deferred indexes are rebuilt (`sprintlens migrate status` shows where it stands)",
                mode.as_str()
            ))),
            MigrationMode::ShadowRead => Ok(()),
            MigrationMode::CutOver => {
                let verify = pg.checkpoints("migrate/verify").await?;
                let verify = verify.iter().find(|(n, ..)| n == "migrate/verify");
                let Some((_, summary, _, verified_at)) = verify else {
                    return Err(refuse(
                        "cut-over needs a completed `sprintlens migrate verify`; none was recorded"
                            .into(),
                    ));
                };
                if summary["ok"] != json!(true) {
                    return Err(refuse(format!(
                        "cut-over needs a passing verify; the last one ({verified_at}) found differences"
                    )));
                }
                let rolled_back = phase.filter(|p| p.phase == "rolled-back").map(|p| p.at);
                if let Some(newer) = [last_run, rolled_back].into_iter().flatten().max()
                    && newer > *verified_at
                {
                    return Err(refuse(format!(
                        "the last verify ({verified_at}) is older than the last backfill run or \
                         rollback ({newer}); run `sprintlens migrate verify` again"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Composes `base` (the old stores) with the target's according to `[migration] mode`.
    pub(crate) async fn compose(
        mut base: Storage,
        target_config: StorageConfig,
    ) -> Result<Storage> {
        let m = base.config.migration.clone();
        let target = Box::pin(Storage::open_plain(target_config)).await?;
        // Dual-write starts even while the new store is unreachable (the old one serves and the
        // outbox keeps every write); every other mode needs the new store's word.
        let lenient = |e: Error| -> Result<()> {
            if m.mode == MigrationMode::DualWrite
                && e.kind() == sprintlens_core::ErrorKind::Unavailable
            {
                tracing::warn!(target: "sprintlens::migration", error = %e, "the new store is unreachable; dual-write starts and its outbox keeps every write");
                Ok(())
            } else {
                Err(e)
            }
        };
        check(m.mode, &target).await.or_else(lenient)?;
        let old_outbox = base
            .outbox
            .clone()
            .ok_or_else(|| Error::config("records.url", "this records backend keeps no outbox"))?;
        let new_outbox = target.outbox.clone().ok_or_else(|| {
            Error::config(
                "migration.target",
                "the target's records backend keeps no outbox",
            )
        })?;
        // Every vector backend keeps an outbox (SQLite, PostgreSQL); the check names the side that
        // does not.
        let vector_outbox = |s: &Storage, key: &'static str| {
            s.vector_outbox
                .clone()
                .ok_or_else(|| Error::config(key, "this vector backend keeps no outbox"))
        };
        let (old_vectors, new_vectors) = (
            vector_outbox(&base, "vectors.url")?,
            vector_outbox(&target, "migration.target")?,
        );
        let options = ReconcilerOptions {
            batch: m.reconcile_batch,
            poll: Duration::from_millis(m.reconcile_poll_ms),
            deliver_timeout: Duration::from_millis(m.deliver_timeout_ms),
            linger: Duration::from_millis(m.reconcile_linger_ms),
            ..ReconcilerOptions::default()
        };
        let wait = Duration::from_millis(m.write_wait_ms);
        let timeout = options.deliver_timeout;
        let cut_over = m.mode == MigrationMode::CutOver;
        let (primary, secondary) = if cut_over {
            (&target, &base)
        } else {
            (&base, &target)
        };
        let (primary_outbox, secondary_outbox) = if cut_over {
            (new_outbox, old_outbox)
        } else {
            (old_outbox, new_outbox)
        };
        let (primary_vector_outbox, secondary_vector_outbox) = if cut_over {
            (new_vectors, old_vectors)
        } else {
            (old_vectors, new_vectors)
        };
        // How long catching up may take before this process refuses to serve (dual-write does not
        // wait long: the old store serves regardless).
        let catch_up = if m.mode == MigrationMode::DualWrite {
            timeout
        } else {
            timeout * 6
        };
        // Whatever the other direction logged is delivered before this one serves.
        Reconciler::new(
            secondary_outbox,
            primary.records.clone(),
            options,
        )
        .drain(catch_up)
        .await
        .or_else(lenient)
        .map_err(|e| {
            Error::unavailable(
                "migration",
                "open",
                true,
                Some(
                    format!(
                        "writes logged by the other direction could not be delivered to the new primary; \
                         refusing to serve without them: {e}"
                    )
                    .into(),
                ),
            )
        })?;
        if let Some(other) = secondary.event_outbox.clone() {
            Reconciler::events(other, primary.analytics.clone(), options)
                .drain(catch_up)
                .await
                .or_else(lenient)?;
        }
        Reconciler::vectors(secondary_vector_outbox, primary.vectors.clone(), options)
            .drain(catch_up)
            .await
            .or_else(lenient)?;
        if cut_over && phase(&target).await?.is_none_or(|p| p.phase != "cut-over") {
            set_phase(&target, "cut-over").await?;
        }
        let dual = Arc::new(DualWriteRecordStore::start(
            primary_outbox,
            secondary.records.clone(),
            wait,
            options,
        ));
        let reconciler = dual.reconciler().clone();
        let (records, shadow): (Arc<dyn sprintlens_core::RecordStore>, _) =
            if m.mode == MigrationMode::ShadowRead {
                let s = Arc::new(ShadowReadRecordStore::new(
                    dual,
                    target.records.clone(),
                    Some(reconciler.clone()),
                    m.shadow_sample,
                ));
                (s.clone(), Some(s))
            } else {
                (dual, None)
            };
        // Embeddings likewise, through the primary's vector outbox.
        let vectors = Arc::new(DualWriteVectorIndex::start(
            primary_vector_outbox,
            secondary.vectors.clone(),
            wait,
            options,
        ));
        let vector_reconciler = vectors.reconciler().clone();
        // Events go through the primary's event outbox when it keeps one (SQLite); a ClickHouse
        // primary (after cut-over) mirrors them.
        let (analytics, events, analytics_mirror): (Arc<dyn sprintlens_core::Analytics>, _, _) =
            match primary.event_outbox.clone() {
                Some(outbox) => {
                    let layer = Arc::new(DualWriteAnalytics::start(
                        outbox,
                        secondary.analytics.clone(),
                        wait,
                        options,
                    ));
                    let r = layer.reconciler().clone();
                    (layer, Some(r), None)
                }
                None => {
                    let layer = Arc::new(MirroredAnalytics::new(
                        primary.analytics.clone(),
                        secondary.analytics.clone(),
                        wait,
                        timeout,
                    ));
                    let failures = layer.failure_counter();
                    (layer, None, Some(failures))
                }
            };
        let instance = format!("{}", sprintlens_core::RecordId::new());
        let flush = shadow.as_ref().map(|s| {
            let (s, target, instance) = (s.clone(), target.clone(), instance.clone());
            FlushTask(tokio::spawn(async move {
                let mut last = None;
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let stats = s.stats();
                    let key = (stats.compared, stats.mismatched, stats.errors);
                    if last != Some(key) && write_shadow(&target, &instance, &stats).await.is_ok() {
                        last = Some(key);
                    }
                }
            }))
        });
        base.records = records;
        base.vectors = vectors;
        base.analytics = analytics;
        base.migration = Some(Arc::new(Migration {
            mode: m.mode,
            target,
            reconciler,
            events,
            vectors: vector_reconciler,
            shadow,
            mirror_failures: analytics_mirror,
            instance,
            _flush: flush,
        }));
        Ok(base)
    }
}
