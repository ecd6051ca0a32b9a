//! PostgreSQL binary COPY encoding of `records` and `embeddings` rows.

use bytes::{BufMut, BytesMut};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One `records` row in binary COPY form.
pub(crate) struct Row<'a> {
    pub id: uuid::Uuid,
    pub workspace: uuid::Uuid,
    pub kind: &'a str,
    pub project: Option<uuid::Uuid>,
    pub parent: Option<uuid::Uuid>,
    pub name: Option<&'a str>,
    pub unique_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted: bool,
    pub body: &'a str,
}

/// The columns [`row`] writes, in order.
pub(crate) const COLUMNS: &str =
    "id, workspace, kind, project, parent, name, unique_key, created_at, updated_at, deleted, body";

impl<'a> Row<'a> {
    /// The row of `r`, with its body already encoded as JSON.
    pub fn of(r: &'a sprintlens_core::Record, body: &'a str) -> Self {
        Row {
            id: r.id.as_uuid(),
            workspace: r.workspace.as_uuid(),
            kind: r.kind().as_str(),
            project: r.body.project().map(|x| x.as_uuid()),
            parent: r.body.parent().map(|x| x.as_uuid()),
            name: r.body.name(),
            unique_key: r.body.unique_key(),
            created_at: r.created_at.as_micros(),
            updated_at: r.updated_at.as_micros(),
            deleted: r.deleted,
            body,
        }
    }
}

pub(crate) fn header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
}

pub(crate) fn trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

fn uuid(buf: &mut BytesMut, v: Option<uuid::Uuid>) {
    match v {
        Some(u) => {
            buf.put_i32(16);
            buf.put_slice(u.as_bytes());
        }
        None => buf.put_i32(-1),
    }
}

fn text(buf: &mut BytesMut, v: Option<&str>) {
    match v {
        Some(s) => {
            buf.put_i32(s.len() as i32);
            buf.put_slice(s.as_bytes());
        }
        None => buf.put_i32(-1),
    }
}

pub(crate) fn row(buf: &mut BytesMut, r: &Row<'_>) {
    columns(buf, r);
    // jsonb binary form: version 1, then the text.
    buf.put_i32(r.body.len() as i32 + 1);
    buf.put_u8(1);
    buf.put_slice(r.body.as_bytes());
}

/// The row of `r` with its body serialised straight into `buf` (no string of its own on the way).
pub(crate) fn record_row(
    buf: &mut BytesMut,
    r: &sprintlens_core::Record,
) -> serde_json::Result<()> {
    columns(buf, &Row::of(r, ""));
    let at = buf.len();
    buf.put_i32(0); // the length, written once known
    buf.put_u8(1); // jsonb binary form: version 1, then the text
    serde_json::to_writer((&mut *buf).writer(), &r.body)?;
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Every column of [`COLUMNS`] but the last (`body`), with the field count first.
fn columns(buf: &mut BytesMut, r: &Row<'_>) {
    buf.put_i16(11);
    uuid(buf, Some(r.id));
    uuid(buf, Some(r.workspace));
    text(buf, Some(r.kind));
    uuid(buf, r.project);
    uuid(buf, r.parent);
    text(buf, r.name);
    text(buf, r.unique_key.as_deref());
    buf.put_i32(8);
    buf.put_i64(r.created_at - PG_EPOCH_OFFSET_MICROS);
    buf.put_i32(8);
    buf.put_i64(r.updated_at - PG_EPOCH_OFFSET_MICROS);
    buf.put_i32(1);
    buf.put_u8(u8::from(r.deleted));
}

/// The columns [`vector_row`] writes, in order.
pub(crate) const VECTOR_COLUMNS: &str = "workspace, kind, id, project, updated_at, embedding";

/// One `embeddings` row (unit length, as every write stores it) in binary COPY form: pgvector's
/// binary `vector` is the dimension and an unused field (two 16-bit integers), then each component
/// as a big-endian float4; its binary `halfvec` (`half` storage) the same with each component as a
/// big-endian IEEE half, rounded to nearest even as pgvector's own `vector::halfvec` cast rounds.
pub(crate) fn vector_row(buf: &mut BytesMut, e: &sprintlens_core::VectorEntry, half: bool) {
    buf.put_i16(6);
    uuid(buf, Some(e.workspace.as_uuid()));
    text(buf, Some(e.kind.as_str()));
    uuid(buf, Some(e.id.as_uuid()));
    uuid(buf, e.project.map(|p| p.as_uuid()));
    buf.put_i32(8);
    buf.put_i64(e.updated_at.as_micros() - PG_EPOCH_OFFSET_MICROS);
    let unit = e.embedding.normalized();
    let v = unit.as_slice();
    let width = if half { 2 } else { 4 };
    buf.put_i32(4 + width * v.len() as i32);
    buf.put_i16(v.len() as i16);
    buf.put_i16(0);
    for x in v {
        if half {
            buf.put_u16(half::f16::from_f32(*x).to_bits());
        } else {
            buf.put_f32(*x);
        }
    }
}

/// The error of a COPY through the operator role: a role without BYPASSRLS is a configuration error
/// naming `records.operator_url` (PostgreSQL refuses COPY into a table under row-level security).
pub(crate) fn refused(err: sqlx::Error, operation: &'static str) -> sprintlens_core::Error {
    if let sqlx::Error::Database(db) = &err
        && db.code().as_deref() == Some("0A000")
        && db.message().contains("row-level security")
    {
        return sprintlens_core::Error::config(
            "records.operator_url",
            "this role needs BYPASSRLS: PostgreSQL refuses COPY into a table under row-level security",
        );
    }
    crate::classify(operation, err)
}

/// Sends `buf` (a whole binary COPY stream) with `statement` (`COPY … FROM STDIN (FORMAT binary)`)
/// inside `tx`; returns the rows copied.
pub(crate) async fn send(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    statement: &str,
    buf: BytesMut,
) -> sqlx::Result<u64> {
    let mut copy_in = tx.copy_in_raw(statement).await?;
    copy_in.send(buf.freeze()).await?;
    copy_in.finish().await
}

/// A backfill load of `records`' rows with `statement` (`COPY records (…) FROM STDIN (FORMAT
/// binary)`) inside `tx` through the operator role, streamed: each [`LOAD_CHUNK_BYTES`] of rows
/// goes out as soon as it is encoded, so the server parses and stores the first rows while the
/// rest are encoded. `None` when a row's key is already stored (the COPY failed on the primary key
/// and left nothing; the caller upserts instead), [`refused`] errors otherwise.
pub(crate) async fn load_records<'r>(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    statement: &str,
    records: impl Iterator<Item = &'r sprintlens_core::Record>,
    operation: &'static str,
) -> sprintlens_core::Result<Option<u64>> {
    let stream = async {
        let mut copy_in = tx.copy_in_raw(statement).await?;
        let mut buf = BytesMut::with_capacity(LOAD_CHUNK_BYTES + (64 << 10));
        header(&mut buf);
        for r in records {
            if let Err(e) = record_row(&mut buf, r) {
                copy_in
                    .abort(format!("encoding record {}: {e}", r.id))
                    .await?;
                return Err(sqlx::Error::Encode(Box::new(e)));
            }
            if buf.len() >= LOAD_CHUNK_BYTES {
                copy_in.send(buf.split()).await?;
            }
        }
        trailer(&mut buf);
        copy_in.send(buf).await?;
        copy_in.finish().await
    };
    loaded(stream.await, operation)
}

/// A backfill load of a whole binary COPY stream `buf` (as [`send`] takes it); the outcome as
/// [`load_records`] gives it.
pub(crate) async fn load(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    statement: &str,
    buf: BytesMut,
    operation: &'static str,
) -> sprintlens_core::Result<Option<u64>> {
    loaded(send(tx, statement, buf).await, operation)
}

/// The outcome of a backfill COPY: the rows copied, `None` on a key already stored.
fn loaded(
    copied: sqlx::Result<u64>,
    operation: &'static str,
) -> sprintlens_core::Result<Option<u64>> {
    match copied {
        Ok(n) => Ok(Some(n)),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Ok(None),
        Err(sqlx::Error::Encode(e)) => {
            Err(sprintlens_core::Error::backend(crate::BACKEND, "encode", e))
        }
        Err(e) => Err(refused(e, operation)),
    }
}

/// How much of a [`load_records`] stream is encoded before it is sent: about 500 message rows.
const LOAD_CHUNK_BYTES: usize = 256 << 10;
