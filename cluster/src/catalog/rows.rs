//! Sessions and frames to and from PostgreSQL rows, and the bulk inserts of a session's frames
//! and text (one statement each, whatever their number, through `unnest`).

use std::path::PathBuf;

use custody_recorder::index::{FrameRow, SessionRow, TextChunk};
use custody_recorder::model::{
    EffectiveIdentity, Initiator, SessionKind, SessionMeta, SessionStatus,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::search;

pub(super) const SESSION_COLUMNS: &str = "id, kind, initiator_issuer, initiator_subject,
    initiator_username, initiator_groups, effective_user, effective_groups, effective_uid,
    cluster, namespace, pod, container, command, tty, term_cols, term_rows, client_addr,
    user_agent, approval_id, gateway_id, started_at_us, ended_at_us, status, end_reason,
    exit_code, exit_message, event_count, frame_count, chain_head, file_path, file_size, damage,
    replica_id";

pub(super) const FRAME_COLUMNS: &str = "idx, file_offset, compressed_len, first_event_us,
    last_event_us, event_count, first_event_index, chain_hash, keyframe";

/// Inserts a session's row; with `replace`, an existing row is replaced, without it left alone.
pub(super) async fn insert_session<C: GenericClient + Sync>(
    client: &C,
    row: &SessionRow,
    replace: bool,
) -> Result<()> {
    let m = &row.meta;
    let (status, reason) = row.status.name();
    let conflict = if replace {
        let updates: Vec<String> = SESSION_COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!("ON CONFLICT (id) DO UPDATE SET {}", updates.join(", "))
    } else {
        "ON CONFLICT (id) DO NOTHING".to_owned()
    };
    let sql = format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
         $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
         $27, $28, $29, $30, $31, $32, $33, $34) {conflict}"
    );
    let (cols, rows) = match m.term_size {
        Some((c, r)) => (Some(i32::from(c)), Some(i32::from(r))),
        None => (None, None),
    };
    let frame_count = i32::try_from(row.frame_count).unwrap_or(i32::MAX);
    client
        .execute(
            &sql,
            &[
                &m.session_id,
                &m.kind.name(),
                &m.initiator.issuer,
                &m.initiator.subject,
                &m.initiator.username,
                &m.initiator.groups,
                &m.effective.user,
                &m.effective.groups,
                &m.effective.uid,
                &m.cluster,
                &m.namespace,
                &m.pod,
                &m.container,
                &m.command,
                &m.tty,
                &cols,
                &rows,
                &m.client_addr,
                &m.user_agent,
                &m.approval_id,
                &m.gateway_id,
                &m.started_at_us,
                &row.ended_at_us,
                &status,
                &reason,
                &row.exit_code,
                &row.exit_message,
                &to_i64(row.event_count),
                &frame_count,
                &row.chain_head,
                &row.file_path.to_string_lossy().as_ref(),
                &to_i64(row.file_size),
                &row.damage,
                &m.replica_id.as_deref().unwrap_or_default(),
            ],
        )
        .await
        .map_err(Error::pg("upsert session"))?;
    Ok(())
}

/// Inserts a session's frames in one statement.
pub(super) async fn insert_frames<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    frames: &[FrameRow],
) -> Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let idx: Vec<i32> = frames
        .iter()
        .map(|f| i32::try_from(f.index).unwrap_or(i32::MAX))
        .collect();
    let offset: Vec<i64> = frames.iter().map(|f| to_i64(f.offset)).collect();
    let len: Vec<i64> = frames.iter().map(|f| to_i64(f.compressed_len)).collect();
    let first_us: Vec<i64> = frames.iter().map(|f| to_i64(f.first_event_us)).collect();
    let last_us: Vec<i64> = frames.iter().map(|f| to_i64(f.last_event_us)).collect();
    let count: Vec<i32> = frames
        .iter()
        .map(|f| i32::try_from(f.event_count).unwrap_or(i32::MAX))
        .collect();
    let first_index: Vec<i64> = frames.iter().map(|f| to_i64(f.first_event_index)).collect();
    let hash: Vec<&[u8]> = frames.iter().map(|f| &f.chain_hash[..]).collect();
    let keyframe: Vec<Option<&[u8]>> = frames.iter().map(|f| f.keyframe.as_deref()).collect();
    client
        .execute(
            &format!(
                "INSERT INTO frames (session_id, {FRAME_COLUMNS})
                 SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::bigint[],
                    $5::bigint[], $6::bigint[], $7::integer[], $8::bigint[], $9::bytea[],
                    $10::bytea[])"
            ),
            &[
                &id,
                &idx,
                &offset,
                &len,
                &first_us,
                &last_us,
                &count,
                &first_index,
                &hash,
                &keyframe,
            ],
        )
        .await
        .map_err(Error::pg("insert frames"))?;
    Ok(())
}

/// Inserts a session's searchable text in one statement, each row with its tokens.
pub(super) async fn insert_text<C: GenericClient + Sync>(
    client: &C,
    id: &str,
    started_at_us: i64,
    text: &[TextChunk],
) -> Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let seq: Vec<i32> = (0..text.len())
        .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    let source: Vec<&str> = text.iter().map(|c| c.source.as_str()).collect();
    let time_us: Vec<i64> = text.iter().map(|c| to_i64(c.time_us)).collect();
    let body: Vec<&str> = text.iter().map(|c| c.body.as_str()).collect();
    // Tokens never contain a space: one string per row, split back into an array by SQL
    // (`unnest` of a two-dimensional array would flatten it).
    let tokens: Vec<String> = text
        .iter()
        .map(|c| search::tokens(&c.body).join(" "))
        .collect();
    client
        .execute(
            "INSERT INTO session_text (session_id, started_at_us, seq, source, time_us, body,
                tokens)
             SELECT $1, $2, s, src, t, b, string_to_array(k, ' ')
             FROM unnest($3::integer[], $4::text[], $5::bigint[], $6::text[], $7::text[])
                  AS u(s, src, t, b, k)",
            &[&id, &started_at_us, &seq, &source, &time_us, &body, &tokens],
        )
        .await
        .map_err(Error::pg("insert text"))?;
    Ok(())
}

/// A session's row as [`SESSION_COLUMNS`] selects it.
pub(super) fn session_from_row(r: &Row) -> Result<SessionRow> {
    let get = |e: tokio_postgres::Error| Error::BadRow(format!("session: {e}"));
    let kind: String = r.try_get(1).map_err(get)?;
    let cols: Option<i32> = r.try_get(15).map_err(get)?;
    let rows: Option<i32> = r.try_get(16).map_err(get)?;
    let term_size = match (cols, rows) {
        (Some(c), Some(r)) => u16::try_from(c).ok().zip(u16::try_from(r).ok()),
        _ => None,
    };
    let meta = SessionMeta {
        session_id: r.try_get(0).map_err(get)?,
        kind: SessionKind::from_name(&kind)
            .ok_or_else(|| Error::BadRow(format!("unknown session kind {kind:?}")))?,
        initiator: Initiator {
            issuer: r.try_get(2).map_err(get)?,
            subject: r.try_get(3).map_err(get)?,
            username: r.try_get(4).map_err(get)?,
            groups: r.try_get(5).map_err(get)?,
        },
        effective: EffectiveIdentity {
            user: r.try_get(6).map_err(get)?,
            groups: r.try_get(7).map_err(get)?,
            uid: r.try_get(8).map_err(get)?,
        },
        cluster: r.try_get(9).map_err(get)?,
        namespace: r.try_get(10).map_err(get)?,
        pod: r.try_get(11).map_err(get)?,
        container: r.try_get(12).map_err(get)?,
        command: r.try_get(13).map_err(get)?,
        tty: r.try_get(14).map_err(get)?,
        term_size,
        client_addr: r.try_get(17).map_err(get)?,
        user_agent: r.try_get(18).map_err(get)?,
        approval_id: r.try_get(19).map_err(get)?,
        gateway_id: r.try_get(20).map_err(get)?,
        replica_id: Some(r.try_get::<_, String>(33).map_err(get)?).filter(|id| !id.is_empty()),
        started_at_us: r.try_get(21).map_err(get)?,
    };
    let status: String = r.try_get(23).map_err(get)?;
    let reason: Option<String> = r.try_get(24).map_err(get)?;
    Ok(SessionRow {
        meta,
        ended_at_us: r.try_get(22).map_err(get)?,
        status: SessionStatus::from_name(&status, reason)
            .ok_or_else(|| Error::BadRow(format!("unknown status {status:?}")))?,
        exit_code: r.try_get(25).map_err(get)?,
        exit_message: r.try_get(26).map_err(get)?,
        event_count: from_i64(r.try_get(27).map_err(get)?),
        frame_count: u32::try_from(r.try_get::<_, i32>(28).map_err(get)?).unwrap_or(0),
        chain_head: r.try_get(29).map_err(get)?,
        file_path: PathBuf::from(r.try_get::<_, String>(30).map_err(get)?),
        file_size: from_i64(r.try_get(31).map_err(get)?),
        damage: r.try_get(32).map_err(get)?,
    })
}

/// A frame's row as [`FRAME_COLUMNS`] selects it.
pub(super) fn frame_from_row(r: &Row) -> Result<FrameRow> {
    let get = |e: tokio_postgres::Error| Error::BadRow(format!("frame: {e}"));
    let hash: Vec<u8> = r.try_get(7).map_err(get)?;
    Ok(FrameRow {
        index: u32::try_from(r.try_get::<_, i32>(0).map_err(get)?).unwrap_or(0),
        offset: from_i64(r.try_get(1).map_err(get)?),
        compressed_len: from_i64(r.try_get(2).map_err(get)?),
        first_event_us: from_i64(r.try_get(3).map_err(get)?),
        last_event_us: from_i64(r.try_get(4).map_err(get)?),
        event_count: u32::try_from(r.try_get::<_, i32>(5).map_err(get)?).unwrap_or(0),
        first_event_index: from_i64(r.try_get(6).map_err(get)?),
        chain_hash: hash
            .try_into()
            .map_err(|_| Error::BadRow("frame: a chain hash is not 32 bytes".into()))?,
        keyframe: r.try_get(8).map_err(get)?,
    })
}

/// PostgreSQL integers are signed; sizes, offsets and times past `i64::MAX` do not occur.
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn from_i64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
