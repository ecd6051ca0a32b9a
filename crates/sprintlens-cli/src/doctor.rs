//! `sprintlens doctor`: probe every configured backend with a real round trip.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sprintlens::core::*;
use sprintlens::{Storage, StorageConfig};

/// The workspace doctor's probes write into (and clean up).
fn probe_workspace() -> WorkspaceId {
    // A fixed UUIDv7 so probes never mix with real tenants' data.
    "00000000-0000-7000-8000-000000000d0c"
        .parse()
        .expect("valid v7")
}

fn report(section: &str, url: &str, started: Instant, result: Result<String>) -> bool {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(found) => {
            println!("ok    [{section}] {url} ({ms:.1} ms): {found}");
            true
        }
        Err(e) => {
            println!("FAIL  [{section}] {url} ({ms:.1} ms): {e}");
            false
        }
    }
}

pub async fn run(config: StorageConfig) -> anyhow::Result<bool> {
    println!("configuration is valid");
    let urls = config.clone();
    let storage = match Storage::open(config).await {
        Ok(s) => s,
        Err(e) => {
            println!("FAIL  opening the configured backends: {e}");
            return Ok(false);
        }
    };
    let ws = probe_workspace();
    let mut ok = true;

    let t = Instant::now();
    let r = async {
        // A real query inside the probe workspace; the total across workspaces where the backend
        // allows it (PostgreSQL needs an operator role for that).
        storage
            .records()
            .count(RecordKind::Project, Some(ws))
            .await?;
        let mut total = Some(0);
        for k in RecordKind::ALL {
            match storage.records().count(*k, None).await {
                Ok(n) => total = total.map(|t| t + n),
                Err(Error::Unsupported { .. }) => total = None,
                Err(e) => return Err(e),
            }
        }
        Ok(match total {
            Some(n) => format!("{} backend, {n} records", storage.records().backend()),
            None => format!(
                "{} backend, reachable (totals across workspaces need records.operator_url)",
                storage.records().backend()
            ),
        })
    }
    .await;
    ok &= report("records", &urls.records.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let n = storage.vectors().count(ws).await?;
        Ok(format!(
            "{} backend, dimension {}, probe workspace holds {n}",
            storage.vectors().backend(),
            storage.vectors().dimension()
        ))
    }
    .await;
    ok &= report("vectors", &urls.vectors.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let n = storage
            .analytics()
            .scan(EventKind::Usage, None, 1)
            .await?
            .len();
        Ok(format!(
            "{} backend, usage events present: {}",
            storage.analytics().backend(),
            n > 0
        ))
    }
    .await;
    ok &= report("analytics", &urls.analytics.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let key = BlobKey::new("doctor/probe.bin")?;
        let data = Bytes::from_static(b"sprintlens doctor probe");
        storage
            .blobs()
            .put(ws, &key, data.clone(), PutOptions::default())
            .await?;
        let (_, back) = storage.blobs().get_verified(ws, &key).await?;
        storage.blobs().delete(ws, &key).await?;
        if back != data {
            return Err(Error::backend(
                "doctor",
                "blobs",
                "read back different bytes",
            ));
        }
        Ok(format!(
            "{} backend, put/get/delete ok, capabilities {:?}",
            storage.blobs().backend(),
            storage.blobs().capabilities()
        ))
    }
    .await;
    ok &= report("blobs", &urls.blobs.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let key = CacheKey::new(ws, "doctor", "probe")?;
        storage
            .cache()
            .set(&key, Bytes::from_static(b"1"), Duration::from_secs(5))
            .await?;
        let hit = storage.cache().get(&key).await?.is_some();
        storage.cache().delete(&key).await?;
        Ok(format!(
            "{} backend, set/get hit: {hit}",
            storage.cache().backend()
        ))
    }
    .await;
    ok &= report("cache", &urls.cache.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let (token, _) = storage
            .sessions()
            .create(
                ws,
                "doctor",
                storage.session_policy(),
                serde_json::json!({}),
            )
            .await?;
        let valid = storage.sessions().validate(&token).await?.is_some();
        storage.sessions().revoke(&token).await?;
        Ok(format!(
            "{} backend, create/validate/revoke: {valid}",
            storage.sessions().backend()
        ))
    }
    .await;
    ok &= report("sessions", &urls.sessions.url.to_string(), t, r);

    let t = Instant::now();
    let r = async {
        let e = storage
            .embedder()
            .embed(&["doctor probe".to_string()])
            .await?;
        Ok(format!(
            "model {}, dimension {}",
            storage.embedder().model(),
            e[0].dimension()
        ))
    }
    .await;
    ok &= report("embedder", &urls.embedder.url.to_string(), t, r);

    for s in storage.schema_status().await? {
        println!(
            "schema {} {}: {} of {} migrations applied",
            s.backend,
            s.location,
            s.applied.len(),
            s.known
        );
    }
    println!(
        "{}",
        if ok {
            "all backends ok"
        } else {
            "some backends FAILED"
        }
    );
    Ok(ok)
}
