//! Versioned schema migrations, embedded in the crate and applied in order, each in its own
//! transaction together with its row in `schema_migrations`.

use rusqlite::Connection;

/// `(version, name, SQL)` of every migration, in order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        r#"
CREATE TABLE records (
    id          TEXT PRIMARY KEY,
    workspace   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    project     TEXT,
    parent      TEXT,
    name        TEXT,
    unique_key  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    body        TEXT NOT NULL
) STRICT;
CREATE INDEX records_by_kind    ON records (workspace, kind, id) WHERE deleted = 0;
CREATE INDEX records_by_project ON records (workspace, kind, project, id) WHERE deleted = 0;
CREATE INDEX records_by_parent  ON records (workspace, kind, parent, id) WHERE deleted = 0;
CREATE INDEX records_by_name    ON records (workspace, kind, name, id) WHERE deleted = 0;
CREATE UNIQUE INDEX records_unique_key ON records (workspace, kind, unique_key)
    WHERE deleted = 0 AND unique_key IS NOT NULL;
CREATE INDEX records_scan       ON records (kind, updated_at, id);
CREATE INDEX records_scan_ws    ON records (workspace, kind, updated_at, id);

CREATE TABLE vector_meta (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    dimension  INTEGER NOT NULL
) STRICT;
-- A rowid table: vectors (1.5 KB at 384 dimensions) would overflow a WITHOUT ROWID b-tree's cells.
CREATE TABLE embeddings (
    workspace   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    project     TEXT,
    updated_at  INTEGER NOT NULL,
    vector      BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX embeddings_key ON embeddings (workspace, kind, id);
CREATE INDEX embeddings_by_project ON embeddings (workspace, project);

CREATE TABLE eval_results (
    id            TEXT PRIMARY KEY,
    workspace     TEXT NOT NULL,
    project       TEXT NOT NULL,
    run           TEXT NOT NULL,
    dataset_item  TEXT,
    agent         TEXT,
    metric        TEXT NOT NULL,
    score         REAL NOT NULL,
    passed        INTEGER NOT NULL,
    latency_ms    INTEGER NOT NULL,
    cost          INTEGER NOT NULL,
    error         TEXT,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX eval_results_by_run    ON eval_results (workspace, run, metric);
CREATE INDEX eval_results_by_metric ON eval_results (workspace, metric, created_at);
CREATE INDEX eval_results_scan      ON eval_results (created_at, id);

CREATE TABLE usage_events (
    id             TEXT PRIMARY KEY,
    workspace      TEXT NOT NULL,
    project        TEXT NOT NULL,
    agent          TEXT,
    conversation   TEXT,
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost           INTEGER NOT NULL,
    latency_ms     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX usage_events_by_time ON usage_events (workspace, created_at);
CREATE INDEX usage_events_scan    ON usage_events (created_at, id);

CREATE TABLE sessions (
    id                   TEXT PRIMARY KEY,
    workspace            TEXT NOT NULL,
    user_id              TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    idle_expires_at      INTEGER NOT NULL,
    absolute_expires_at  INTEGER NOT NULL,
    idle_micros          INTEGER NOT NULL,
    data                 TEXT NOT NULL
) STRICT;
CREATE INDEX sessions_by_user   ON sessions (workspace, user_id);
CREATE INDEX sessions_by_expiry ON sessions (idle_expires_at);
"#,
    ),
    (
        2,
        "embeddings in time order",
        r#"
-- `VectorIndex::scan` reads embeddings in (updated_at, id, kind) order for migration.
CREATE INDEX embeddings_by_time ON embeddings (updated_at, id, kind);
"#,
    ),
    (
        3,
        "outbox",
        r#"
-- Writes logged in their own transaction for delivery to the other store of a dual-write
-- migration (see the `OutboxStore` port). Delivered entries are deleted; parked ones stay.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    logged_at  INTEGER NOT NULL,
    parked_at  INTEGER,
    error      TEXT
) STRICT;
CREATE INDEX outbox_parked ON outbox (parked_at) WHERE parked_at IS NOT NULL;
"#,
    ),
    (
        4,
        "event outbox",
        r#"
-- Analytics events logged in their own transaction for delivery to the other analytics store of a
-- dual-write migration (the `EventOutboxStore` port). `stream` is `eval_result` or `usage`.
CREATE TABLE event_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream     TEXT NOT NULL,
    id         TEXT NOT NULL,
    logged_at  INTEGER NOT NULL,
    parked_at  INTEGER,
    error      TEXT
) STRICT;
"#,
    ),
    (
        5,
        "vector outbox",
        r#"
-- Embedding writes logged in their own transaction for delivery to the other vector index of a
-- dual-write migration (the `VectorOutboxStore` port). An entry names an embedding.
CREATE TABLE vector_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    logged_at  INTEGER NOT NULL,
    parked_at  INTEGER,
    error      TEXT
) STRICT;
"#,
    ),
];

/// Applies every migration not yet recorded. Each runs in one transaction with its bookkeeping row,
/// so a failing migration leaves the schema as it was.
pub(crate) fn apply(conn: &mut Connection) -> rusqlite::Result<Vec<i64>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT",
    )?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, sprintlens_core::Timestamp::now().as_micros()],
            )?;
            applied.push(*version);
        }
        tx.commit()?;
    }
    Ok(applied)
}
