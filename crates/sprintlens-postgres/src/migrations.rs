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
    (
        6,
        "record kind as an enum",
        r#"
-- `kind` leads or follows the workspace in every secondary index of `records`, and nearly every
-- comparison of an index build reaches it (three workspaces, a few kinds): as an enum it compares as
-- four bytes instead of a string, which takes about a third off building the seven indexes of a
-- bulk load (7.5 -> 5.3 s of sort work for a million records). Queries cast the bound text
-- (`$1::record_kind`); COPY sends the label. A new `RecordKind` needs a migration
-- `ALTER TYPE record_kind ADD VALUE '…'` (checked by a test against `RecordKind::ALL`).
-- Rewrites `records` and its indexes under an exclusive lock: instant on the empty table of a new
-- target; 8.8 s for a million records here (the table and its eight indexes rewritten).
--
-- `records_by_name` becomes partial: it serves `list` filtered by `name = …`, which never matches a
-- NULL name, and most records (messages, dataset items) have none; the planner proves the
-- predicate from the strict `=` (generic plans too). A million messages: 0.2 s to build instead of
-- 1.0-1.5 s, and a few kB instead of 65 MB.
DROP INDEX IF EXISTS records_by_name;
CREATE TYPE record_kind AS ENUM (
    'project', 'agent', 'conversation', 'message', 'prompt', 'prompt_version', 'dataset',
    'dataset_item', 'eval_run', 'file_object'
);
ALTER TABLE records ALTER COLUMN kind TYPE record_kind USING kind::record_kind;
CREATE INDEX records_by_name ON records (workspace, kind, name, id)
    WHERE NOT deleted AND name IS NOT NULL;
"#,
    ),
    (
        7,
        "no planner statistics on record bodies",
        r#"
-- No query of the adapter filters or sorts on `body` (its GIN index went in migration 4), yet
-- `ANALYZE` compared the sampled JSON documents to find common values and a histogram: 0.33 s of
-- the 0.40-0.46 s an `ANALYZE records` took after a million-record backfill here (0.24-0.28 s
-- without it), paid again by every automatic analyze. Ad-hoc predicates on `body` get the planner's
-- default estimates. A catalog change only: no rewrite, no lock beyond SHARE UPDATE EXCLUSIVE.
ALTER TABLE records ALTER COLUMN body SET STATISTICS 0;
"#,
    ),
];

/// The secondary indexes of `records` (everything but the primary key), as the migrations leave them
/// (migration 1, `records_by_name` made partial by migration 6): `(name, unique, definition)`. A backfill into a (nearly) empty table drops them and builds them once at
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
        "ON records (workspace, kind, name, id) WHERE NOT deleted AND name IS NOT NULL",
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

    /// The deferred-index list rebuilds exactly what the migrations leave: each index as its last
    /// `CREATE` made it (minus the body index migration 4 dropped).
    #[test]
    fn record_indexes_match_the_migration() {
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let created = squash(MIGRATIONS[0].2);
        for (name, unique, definition) in RECORD_INDEXES {
            let unique = if *unique { "UNIQUE " } else { "" };
            let statement = squash(&format!("CREATE {unique}INDEX {name} {definition};"));
            let prefix = format!("CREATE {unique}INDEX {name} ");
            let last = MIGRATIONS
                .iter()
                .rev()
                .map(|m| squash(m.2))
                .find(|sql| sql.contains(&prefix))
                .unwrap();
            assert!(last.contains(&statement), "{statement}");
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

    /// The build order names every deferred index once.
    #[test]
    fn the_build_order_is_a_permutation_of_the_indexes() {
        let mut order = crate::RECORD_INDEX_BUILD_ORDER.to_vec();
        let mut names: Vec<&str> = RECORD_INDEXES.iter().map(|(n, _, _)| *n).collect();
        order.sort();
        names.sort();
        assert_eq!(order, names);
    }

    /// Every record kind is a label of the `record_kind` enum, in the order of `RecordKind::ALL`
    /// (labels added later come from `ALTER TYPE … ADD VALUE` migrations).
    #[test]
    fn the_kind_enum_names_every_record_kind() {
        let sql = MIGRATIONS
            .iter()
            .find(|m| m.1 == "record kind as an enum")
            .unwrap()
            .2;
        let created = sql
            .split("CREATE TYPE record_kind AS ENUM (")
            .nth(1)
            .and_then(|s| s.split(");").next())
            .unwrap();
        let mut labels: Vec<String> = created
            .split(',')
            .map(|l| l.trim().trim_matches('\'').to_string())
            .collect();
        for m in MIGRATIONS {
            for line in m.2.lines() {
                if let Some(rest) = line
                    .trim()
                    .strip_prefix("ALTER TYPE record_kind ADD VALUE '")
                {
                    labels.push(rest.split('\'').next().unwrap().to_string());
                }
            }
        }
        let kinds: Vec<&str> = sprintlens_core::RecordKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(labels, kinds);
    }
}
