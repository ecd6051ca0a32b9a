//! Versioned schema migrations, embedded in the crate. Each runs in one transaction together with its
//! row in `sprintlens_migrations`, under an advisory lock, so concurrent appliers serialise and a
//! failing migration leaves the schema as it was (PostgreSQL DDL is transactional).

/// `(version, name, SQL)`; `{app}` is replaced by the application role, quoted.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "records",
        r#"
CREATE TABLE records (
    id          uuid PRIMARY KEY,
    workspace   uuid NOT NULL,
    kind        text NOT NULL,
    project     uuid,
    parent      uuid,
    name        text,
    unique_key  text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    body        jsonb NOT NULL
);
CREATE INDEX records_by_kind    ON records (workspace, kind, id) WHERE NOT deleted;
CREATE INDEX records_by_project ON records (workspace, kind, project, id) WHERE NOT deleted;
CREATE INDEX records_by_parent  ON records (workspace, kind, parent, id) WHERE NOT deleted;
CREATE INDEX records_by_name    ON records (workspace, kind, name, id) WHERE NOT deleted;
CREATE UNIQUE INDEX records_unique_key ON records (workspace, kind, unique_key)
    WHERE NOT deleted AND unique_key IS NOT NULL;
CREATE INDEX records_scan       ON records (kind, updated_at, id);
CREATE INDEX records_scan_ws    ON records (workspace, kind, updated_at, id);
CREATE INDEX records_body       ON records USING gin (body jsonb_path_ops);

-- Tenant isolation by the database: every row is visible and writable only while the transaction's
-- `sprintlens.workspace` setting names its workspace. FORCE makes it hold for the table owner too.
ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON records
    USING (workspace = NULLIF(current_setting('sprintlens.workspace', true), '')::uuid)
    WITH CHECK (workspace = NULLIF(current_setting('sprintlens.workspace', true), '')::uuid);

CREATE TABLE vector_meta (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    dimension  integer NOT NULL,
    half       boolean NOT NULL
);
"#,
    ),
    (
        2,
        "migration checkpoints",
        r#"
-- Where `sprintlens migrate run` stands, per stream; written in the same transaction as the
-- batch it describes, so a resumed run redoes at most the batch in flight.
CREATE TABLE sprintlens_checkpoints (
    name        text PRIMARY KEY,
    position    jsonb NOT NULL,
    rows        bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        3,
        "outbox",
        r#"
-- Writes logged in their own transaction for delivery to the other store of a dual-write
-- migration (the `OutboxStore` port): the store of record after cut-over. Entries name records
-- and carry no content, so the table needs no row-level security.
CREATE TABLE sprintlens_outbox (
    seq        bigserial PRIMARY KEY,
    workspace  uuid NOT NULL,
    kind       text NOT NULL,
    id         uuid NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    parked_at  timestamptz,
    error      text
);
CREATE INDEX sprintlens_outbox_parked ON sprintlens_outbox (parked_at) WHERE parked_at IS NOT NULL;
"#,
    ),
    (
        4,
        "drop the unused body index",
        r#"
-- No query of the RecordStore port filters on the body, and the GIN index cost about a fifth of
-- every insert (and of a backfill).
DROP INDEX IF EXISTS records_body;
"#,
    ),
    (
        5,
        "vector outbox",
        r#"
-- Embedding writes logged in their own transaction for delivery to the other vector index of a
-- dual-write migration (the `VectorOutboxStore` port), after cut-over. Entries name embeddings.
CREATE TABLE sprintlens_vector_outbox (
    seq        bigserial PRIMARY KEY,
    workspace  uuid NOT NULL,
    kind       text NOT NULL,
    id         uuid NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    parked_at  timestamptz,
    error      text
);
"#,
    ),
];

/// The secondary indexes of `records` (everything but the primary key), as created by migration 1:
/// `(name, unique, definition)`. A backfill into a (nearly) empty table drops them and builds them once at
/// the end ([`crate::PgStore::defer_record_indexes`]), as bulk loaders do.
pub const RECORD_INDEXES: &[(&str, bool, &str)] = &[
    (
        "records_by_kind",
        false,
        "ON records (workspace, kind, id) WHERE NOT deleted",
    ),
    (
        "records_by_project",
        false,
        "ON records (workspace, kind, project, id) WHERE NOT deleted",
    ),
    (
        "records_by_parent",
        false,
        "ON records (workspace, kind, parent, id) WHERE NOT deleted",
    ),
    (
        "records_by_name",
        false,
        "ON records (workspace, kind, name, id) WHERE NOT deleted",
    ),
    (
        "records_unique_key",
        true,
        "ON records (workspace, kind, unique_key) WHERE NOT deleted AND unique_key IS NOT NULL",
    ),
    ("records_scan", false, "ON records (kind, updated_at, id)"),
    (
        "records_scan_ws",
        false,
        "ON records (workspace, kind, updated_at, id)",
    ),
];

/// The HNSW index of `embeddings`. A backfill into an empty table drops it and builds it once at the
/// end ([`crate::PgStore::defer_vector_index`]): inserting into the graph row by row costs about ten
/// times a build over the loaded table.
pub const VECTOR_INDEX: &str = "embeddings_hnsw";

/// `CREATE INDEX` of [`VECTOR_INDEX`] for a precision.
pub fn vector_index_ddl(half: bool) -> String {
    let ops = if half {
        "halfvec_cosine_ops"
    } else {
        "vector_cosine_ops"
    };
    format!("CREATE INDEX IF NOT EXISTS {VECTOR_INDEX} ON embeddings USING hnsw (embedding {ops})")
}

/// The vector table for a dimension and precision (created by `schema apply` with the configured values).
pub fn vector_ddl(dimension: usize, half: bool) -> String {
    let ty = if half { "halfvec" } else { "vector" };
    let hnsw = vector_index_ddl(half);
    format!(
        r#"
CREATE TABLE IF NOT EXISTS embeddings (
    workspace   uuid NOT NULL,
    kind        text NOT NULL,
    id          uuid NOT NULL,
    project     uuid,
    updated_at  timestamptz NOT NULL,
    embedding   {ty}({dimension}) NOT NULL,
    PRIMARY KEY (workspace, kind, id)
);
{hnsw};
CREATE INDEX IF NOT EXISTS embeddings_by_project ON embeddings (workspace, project);
CREATE INDEX IF NOT EXISTS embeddings_by_time ON embeddings (updated_at, id, kind);
ALTER TABLE embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE embeddings FORCE ROW LEVEL SECURITY;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_policies WHERE tablename = 'embeddings' AND policyname = 'tenant') THEN
    CREATE POLICY tenant ON embeddings
      USING (workspace = NULLIF(current_setting('sprintlens.workspace', true), '')::uuid)
      WITH CHECK (workspace = NULLIF(current_setting('sprintlens.workspace', true), '')::uuid);
  END IF;
END $$;
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deferred-index list rebuilds exactly what migration 1 created (minus the body index
    /// migration 4 dropped).
    #[test]
    fn record_indexes_match_the_migration() {
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let created = squash(MIGRATIONS[0].2);
        for (name, unique, definition) in RECORD_INDEXES {
            let unique = if *unique { "UNIQUE " } else { "" };
            let statement = squash(&format!("CREATE {unique}INDEX {name} {definition};"));
            assert!(created.contains(&statement), "{statement}");
        }
        let in_migration = created.matches("CREATE INDEX").count()
            + created.matches("CREATE UNIQUE INDEX").count();
        assert_eq!(in_migration, RECORD_INDEXES.len() + 1, "plus records_body");
        assert!(
            MIGRATIONS[3]
                .2
                .contains("DROP INDEX IF EXISTS records_body")
        );
    }
}
