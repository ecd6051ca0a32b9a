//! The blob janitor behind `sprintlens blobs gc`: aborts stale incomplete uploads and removes
//! blobs that no file record points to.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use sprintlens_core::{
    BlobStore, ListQuery, PageToken, RecordBody, RecordKind, RecordStoreExt, Result, Timestamp,
    UploadSweep, WorkspaceId,
};

use crate::Storage;

/// What the janitor does.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// One workspace, or all that hold blobs.
    pub workspace: Option<WorkspaceId>,
    /// Grace period: uploads and unreferenced blobs younger than this are left alone (an attach
    /// writes the blob before its record; a shorter grace than the slowest attach can delete a
    /// file being attached).
    pub older_than: Duration,
    /// Report without removing anything.
    pub dry_run: bool,
}

/// What the janitor found (and removed unless it was a dry run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Whether nothing was removed.
    pub dry_run: bool,
    /// Workspaces walked.
    pub workspaces: u64,
    /// Incomplete multipart uploads.
    pub uploads: UploadSweep,
    /// Blobs looked at.
    pub blobs_scanned: u64,
    /// Blobs that a file record points to.
    pub blobs_referenced: u64,
    /// Unreferenced blobs older than the grace period (removed unless dry run).
    pub orphans: u64,
    /// Their bytes.
    pub orphan_bytes: u64,
    /// Up to 20 of them, as `workspace/key`.
    pub orphan_sample: Vec<String>,
    /// Unreferenced blobs inside the grace period, left alone.
    pub young_unreferenced: u64,
}

impl Storage {
    /// Runs the blob janitor (see [`GcOptions`]).
    pub async fn gc_blobs(&self, options: &GcOptions) -> Result<GcReport> {
        let blobs = self.blobs();
        let mut report = GcReport {
            dry_run: options.dry_run,
            uploads: blobs
                .sweep_uploads(options.workspace, options.older_than, options.dry_run)
                .await?,
            ..Default::default()
        };
        let workspaces = match options.workspace {
            Some(ws) => vec![ws],
            None => blobs.workspaces().await?,
        };
        let cutoff = Timestamp::now().as_micros() - options.older_than.as_micros() as i64;
        for ws in workspaces {
            report.workspaces += 1;
            // Referenced keys first: a record written after this point is younger than the
            // cut-off, and so is its blob, which is then left alone.
            let referenced: HashSet<String> = self
                .records()
                .list_all(ws, &ListQuery::new(RecordKind::FileObject))
                .await?
                .into_iter()
                .filter_map(|r| match r.body {
                    RecordBody::FileObject(f) => Some(f.stored_at().to_string()),
                    _ => None,
                })
                .collect();
            let mut page: Option<PageToken> = None;
            loop {
                let listing = blobs.list(ws, "", page.take(), 1000).await?;
                for meta in &listing.items {
                    report.blobs_scanned += 1;
                    if referenced.contains(meta.key.as_str()) {
                        report.blobs_referenced += 1;
                        continue;
                    }
                    let old = meta.last_modified.is_none_or(|t| t.as_micros() <= cutoff);
                    if !old {
                        report.young_unreferenced += 1;
                        continue;
                    }
                    report.orphans += 1;
                    report.orphan_bytes += meta.size;
                    if report.orphan_sample.len() < 20 {
                        report.orphan_sample.push(format!("{ws}/{}", meta.key));
                    }
                    if !options.dry_run {
                        blobs.delete(ws, &meta.key).await?;
                    }
                }
                match listing.next {
                    Some(t) => page = Some(t),
                    None => break,
                }
            }
        }
        Ok(report)
    }
}
