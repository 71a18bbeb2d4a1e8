//! The `SQLite` index of recordings: sessions, frames with terminal keyframes, API requests, audit
//! events, and a full-text index of session output and typed lines.
//!
//! Everything about sessions here is derived from the recording files ([`Index::index_recording`]
//! is an idempotent upsert of one file's facts) and can be rebuilt with
//! [`crate::reindex::reindex`]. The database runs in WAL mode with `synchronous=FULL`, so a
//! committed transaction survives a power cut when the storage honours fsync (promise P6).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::error::{Error, Result};
use crate::keyframe::{Keyframe, Seekpoint};
use crate::model::{Event, SessionKind, SessionMeta, SessionStatus};
use crate::reader::{FrameInfo, Recording};

mod audit;
mod builder;
mod query;
mod schema;
mod transcript;

pub use audit::{AuditCompletion, AuditQuery, AuditRecord, AuditWrite};
pub use builder::IndexBuilder;
pub use query::{SearchHit, SessionQuery};
pub use schema::latest_version;
pub use transcript::{EscapeFilter, LineEditor, MAX_SESSION_TEXT, TextChunk, TextSource};

/// An open index database.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) the index at `path` and migrates it to the current schema.
    ///
    /// Refuses a database written by a newer build ([`Error::IndexTooNew`]); a file that is not
    /// a database fails with [`Error::IndexDb`] and can be rebuilt from the recordings.
    pub fn open(path: &Path) -> Result<Self> {
        let db = |source| Error::IndexDb { op: "open", source };
        // Owner-only before SQLite creates it (its WAL and shared-memory files take its mode).
        crate::permissions::private_file(path).map_err(|source| Error::IndexFile {
            path: path.to_owned(),
            source,
        })?;
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        // WAL lets readers (the web API) run while the gateway writes; FULL syncs the WAL on
        // every commit, which NORMAL does not (NORMAL may lose the last commits on power loss).
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `SQLite`'s `quick_check`; `false` when the database is damaged.
    pub fn quick_check(&self) -> Result<bool> {
        match self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        {
            Ok(verdict) => Ok(verdict == "ok"),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::IndexDb {
                op: "quick check",
                source,
            }),
        }
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        schema::current_version(&self.conn)
    }

    /// Registers a session that has just started (status `open`), so that recovery finds it if
    /// the gateway dies before the session ends. Does nothing if the session is already known.
    pub fn record_open(&mut self, meta: &SessionMeta, file_path: &Path) -> Result<()> {
        let row = SessionRow {
            meta: meta.clone(),
            ended_at_us: None,
            status: SessionStatus::Open,
            exit_code: None,
            exit_message: None,
            event_count: 0,
            frame_count: 0,
            chain_head: None,
            file_path: file_path.to_owned(),
            file_size: 0,
            damage: None,
        };
        let tx = self.tx()?;
        insert_session(&tx, &row, false)?;
        tx.commit().map_err(|source| Error::IndexDb {
            op: "commit",
            source,
        })
    }

    /// Inserts or replaces everything the index holds about one session, in one transaction.
    pub fn upsert(&mut self, session: &IndexedSession) -> Result<()> {
        let db = |op| move |source| Error::IndexDb { op, source };
        let tx = self.tx()?;
        let id = &session.row.meta.session_id;
        tx.execute("DELETE FROM frames WHERE session_id = ?1", [id])
            .map_err(db("delete frames"))?;
        tx.execute("DELETE FROM session_text WHERE session_id = ?1", [id])
            .map_err(db("delete text"))?;
        insert_session(&tx, &session.row, true)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO frames (session_id, idx, file_offset, compressed_len,
                        first_event_us, last_event_us, event_count, first_event_index,
                        chain_hash, keyframe)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(db("insert frame"))?;
            for f in &session.frames {
                stmt.execute(params![
                    id,
                    f.index,
                    to_i64(f.offset),
                    to_i64(f.compressed_len),
                    to_i64(f.first_event_us),
                    to_i64(f.last_event_us),
                    f.event_count,
                    to_i64(f.first_event_index),
                    &f.chain_hash[..],
                    f.keyframe.as_deref(),
                ])
                .map_err(db("insert frame"))?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO session_text (session_id, seq, source, time_us, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db("insert text"))?;
            for (seq, chunk) in session.text.iter().enumerate() {
                stmt.execute(params![
                    id,
                    to_i64(seq as u64),
                    chunk.source.as_str(),
                    to_i64(chunk.time_us),
                    chunk.body,
                ])
                .map_err(db("insert text"))?;
            }
        }
        tx.commit().map_err(db("commit"))
    }

    /// Indexes (or re-indexes) the recording read from `file_path`: the rows are derived only
    /// from the file, in one transaction.
    pub fn index_recording(&mut self, recording: &Recording, file_path: &Path) -> Result<()> {
        let file_size = std::fs::metadata(file_path)
            .map_err(|source| Error::RecordingIo {
                path: file_path.to_owned(),
                source,
            })?
            .len();
        self.upsert(&IndexedSession::from_recording(
            recording, file_path, file_size,
        )?)
    }

    /// One session's row.
    pub fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], session_from_row)
            .optional()
            .map_err(|source| Error::IndexDb {
                op: "read session",
                source,
            })
    }

    /// One session's frames, in order.
    pub fn frames(&self, id: &str) -> Result<Vec<FrameRow>> {
        let db = |source| Error::IndexDb {
            op: "read frames",
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {FRAME_COLUMNS} FROM frames WHERE session_id = ?1 ORDER BY idx"
            ))
            .map_err(db)?;
        let rows = stmt.query_map([id], frame_from_row).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    /// One session's seekpoints (decoded keyframes), for [`crate::keyframe::seek`]. Empty for a
    /// session without keyframes (non-tty).
    pub fn seekpoints(&self, id: &str) -> Result<Vec<Seekpoint>> {
        let mut out = Vec::new();
        for frame in self.frames(id)? {
            if let Some(blob) = &frame.keyframe {
                let event_index = usize::try_from(frame.first_event_index)
                    .map_err(|_| Error::Keyframe("event index out of range".into()))?;
                out.push(Seekpoint {
                    event_index,
                    keyframe: Keyframe::decode(blob)?,
                });
            }
        }
        Ok(out)
    }

    /// The sessions the index holds as `open`, with their files: what recovery must seal.
    pub fn open_sessions(&self) -> Result<Vec<(String, PathBuf)>> {
        let db = |source| Error::IndexDb {
            op: "read open sessions",
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT id, file_path FROM sessions WHERE status = 'open' ORDER BY id")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PathBuf::from(r.get::<_, String>(1)?),
                ))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    /// The status and file size the index has for a session, to tell whether a file changed.
    pub fn indexed_state(&self, id: &str) -> Result<Option<(String, u64)>> {
        self.conn
            .query_row(
                "SELECT status, file_size FROM sessions WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, String>(0)?, from_i64(r.get(1)?))),
            )
            .optional()
            .map_err(|source| Error::IndexDb {
                op: "read session state",
                source,
            })
    }

    /// Deletes every row derived from recordings (sessions, frames, text), keeping API requests
    /// and audit events, which do not come from recordings.
    pub fn clear_sessions(&mut self) -> Result<()> {
        let db = |source| Error::IndexDb {
            op: "clear sessions",
            source,
        };
        let tx = self.tx()?;
        tx.execute_batch(
            "DELETE FROM session_text; DELETE FROM frames; DELETE FROM sessions;
             INSERT INTO session_text_fts (session_text_fts) VALUES ('optimize');",
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Every derived row in a canonical order: two indexes of the same files dump equal.
    pub fn dump(&self) -> Result<IndexDump> {
        let db = |source| Error::IndexDb { op: "dump", source };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id"
            ))
            .map_err(db)?;
        let sessions = stmt
            .query_map([], session_from_row)
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        let mut frames = Vec::new();
        for s in &sessions {
            frames.push((s.meta.session_id.clone(), self.frames(&s.meta.session_id)?));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT session_id, source, time_us, body FROM session_text
                 ORDER BY session_id, seq",
            )
            .map_err(db)?;
        let text = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TextChunk {
                        source: source_from_sql(&r.get::<_, String>(1)?)?,
                        time_us: from_i64(r.get(2)?),
                        body: r.get(3)?,
                    },
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        Ok(IndexDump {
            sessions,
            frames,
            text,
        })
    }

    /// The underlying connection, for the gateway's API-request and audit-event statements.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn tx(&mut self) -> Result<Transaction<'_>> {
        self.conn.transaction().map_err(|source| Error::IndexDb {
            op: "begin",
            source,
        })
    }
}

/// A session's row in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Identity and target, as the recording's header says.
    pub meta: SessionMeta,
    /// When it ended (µs since the Unix epoch); `None` while open.
    pub ended_at_us: Option<i64>,
    /// Open, complete, interrupted or terminated (with the reason).
    pub status: SessionStatus,
    /// The process's exit code, when an exit status was recorded with one.
    pub exit_code: Option<i32>,
    /// The exit status message, when one was recorded.
    pub exit_message: Option<String>,
    /// Events in the (verified part of the) file.
    pub event_count: u64,
    /// Frames in the (verified part of the) file.
    pub frame_count: u32,
    /// The chain hash of the last verified frame, hex.
    pub chain_head: Option<String>,
    /// The recording file.
    pub file_path: PathBuf,
    /// Its size in bytes when indexed.
    pub file_size: u64,
    /// What the reader found wrong with the file, if anything.
    pub damage: Option<String>,
}

/// A frame's row: where it is in the file, what it covers, and the keyframe at its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRow {
    /// The frame's position in the file (0 is the first).
    pub index: u32,
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// Its compressed length.
    pub compressed_len: u64,
    /// Time of its first event (µs since the session start).
    pub first_event_us: u64,
    /// Time of its last event.
    pub last_event_us: u64,
    /// How many events it holds.
    pub event_count: u32,
    /// How many events precede it in the session.
    pub first_event_index: u64,
    /// The SHA-256 chain hash after this frame.
    pub chain_hash: [u8; 32],
    /// The encoded [`Keyframe`] of the terminal at the frame's start (tty sessions only).
    pub keyframe: Option<Vec<u8>>,
}

/// Everything the index stores about one session, derived from its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSession {
    /// The session's row.
    pub row: SessionRow,
    /// Its frames.
    pub frames: Vec<FrameRow>,
    /// Its searchable text, in order.
    pub text: Vec<TextChunk>,
}

/// What a frame of a recording covers, as the reader reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameFacts {
    /// The frame's position in the file.
    pub index: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Compressed length.
    pub compressed_len: u64,
    /// Time of the first event.
    pub first_event_us: u64,
    /// Time of the last event.
    pub last_event_us: u64,
    /// Number of events.
    pub event_count: u32,
    /// The chain hash after this frame.
    pub chain_hash: [u8; 32],
}

impl From<&FrameInfo> for FrameFacts {
    fn from(f: &FrameInfo) -> Self {
        Self {
            index: f.index,
            offset: f.offset,
            compressed_len: f.compressed_len,
            first_event_us: f.first_event_us,
            last_event_us: f.last_event_us,
            event_count: f.event_count,
            chain_hash: f.chain_hash,
        }
    }
}

/// How a recording ended, as far as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// The status (from the manifest; `Open` without one).
    pub status: SessionStatus,
    /// The end time (µs since the Unix epoch), when the file says.
    pub ended_at_us: Option<i64>,
    /// The chain head, when there is at least one frame.
    pub chain_head: Option<[u8; 32]>,
    /// What the reader found wrong, if anything.
    pub damage: Option<String>,
}

impl IndexedSession {
    /// Derives the rows of a recording as the reader returned it.
    pub fn from_recording(recording: &Recording, file_path: &Path, file_size: u64) -> Result<Self> {
        let frames: Vec<FrameFacts> = recording.frames.iter().map(FrameFacts::from).collect();
        let last_event_us = recording.events.last().map_or(0, |e| e.time_us);
        let ended_at_us = match (&recording.manifest, &recording.status) {
            (Some(manifest), _) => Some(manifest.ended_at_us),
            (None, SessionStatus::Open) => None,
            // An end line without a manifest: the last event is the best end time there is.
            (None, _) => Some(
                recording
                    .meta
                    .started_at_us
                    .saturating_add(i64::try_from(last_event_us).unwrap_or(0)),
            ),
        };
        let end = SessionEnd {
            status: recording.status.clone(),
            ended_at_us,
            chain_head: recording
                .manifest
                .as_ref()
                .map(|m| m.chain_head)
                .or_else(|| recording.frames.last().map(|f| f.chain_hash)),
            damage: recording.damage.as_ref().map(ToString::to_string),
        };
        Self::derive(
            &recording.meta,
            &recording.events,
            &frames,
            end,
            file_path,
            file_size,
        )
    }

    /// Derives the index rows of a session from what its file holds: the header, the events,
    /// the frames (events are split among frames in order by their counts) and the ending.
    pub fn derive(
        meta: &SessionMeta,
        events: &[Event],
        frames: &[FrameFacts],
        end: SessionEnd,
        file_path: &Path,
        file_size: u64,
    ) -> Result<Self> {
        let mut builder = IndexBuilder::new(meta)?;
        let mut next = 0usize;
        for f in frames {
            let end_index = next
                .saturating_add(f.event_count as usize)
                .min(events.len());
            for event in &events[next..end_index] {
                builder.event(event);
            }
            builder.frame_closed(f)?;
            next = end_index;
        }
        // Events past the last listed frame (there should be none) still count.
        for event in &events[next..] {
            builder.event(event);
        }
        Ok(builder.finish(end, file_path, file_size))
    }
}

/// Every derived row of an index in canonical order (see [`Index::dump`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDump {
    /// Sessions by id.
    pub sessions: Vec<SessionRow>,
    /// Each session's frames.
    pub frames: Vec<(String, Vec<FrameRow>)>,
    /// Each session's text rows, in order.
    pub text: Vec<(String, TextChunk)>,
}

fn insert_session(tx: &Transaction<'_>, row: &SessionRow, replace: bool) -> Result<()> {
    let db = |source| Error::IndexDb {
        op: "upsert session",
        source,
    };
    let m = &row.meta;
    let (status, reason) = status_to_sql(&row.status);
    let conflict = if replace {
        "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,
            initiator_issuer = excluded.initiator_issuer,
            initiator_subject = excluded.initiator_subject,
            initiator_username = excluded.initiator_username,
            initiator_groups = excluded.initiator_groups,
            effective_user = excluded.effective_user, effective_groups = excluded.effective_groups,
            effective_uid = excluded.effective_uid, cluster = excluded.cluster,
            namespace = excluded.namespace, pod = excluded.pod, container = excluded.container,
            command = excluded.command, tty = excluded.tty, term_cols = excluded.term_cols,
            term_rows = excluded.term_rows, client_addr = excluded.client_addr,
            user_agent = excluded.user_agent, approval_id = excluded.approval_id,
            gateway_id = excluded.gateway_id, started_at_us = excluded.started_at_us,
            ended_at_us = excluded.ended_at_us, status = excluded.status,
            end_reason = excluded.end_reason, exit_code = excluded.exit_code,
            exit_message = excluded.exit_message, event_count = excluded.event_count,
            frame_count = excluded.frame_count, chain_head = excluded.chain_head,
            file_path = excluded.file_path, file_size = excluded.file_size,
            damage = excluded.damage, replica_id = excluded.replica_id"
    } else {
        "ON CONFLICT (id) DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
            ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26,
            ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34) {conflict}"
    );
    tx.execute(
        &sql,
        params![
            m.session_id,
            kind_to_sql(m.kind),
            m.initiator.issuer,
            m.initiator.subject,
            m.initiator.username,
            serde_json::to_string(&m.initiator.groups)?,
            m.effective.user,
            serde_json::to_string(&m.effective.groups)?,
            m.effective.uid,
            m.cluster,
            m.namespace,
            m.pod,
            m.container,
            serde_json::to_string(&m.command)?,
            m.tty,
            m.term_size.map(|s| s.0),
            m.term_size.map(|s| s.1),
            m.client_addr,
            m.user_agent,
            m.approval_id,
            m.gateway_id,
            m.started_at_us,
            row.ended_at_us,
            status,
            reason,
            row.exit_code,
            row.exit_message,
            to_i64(row.event_count),
            row.frame_count,
            row.chain_head,
            row.file_path.to_string_lossy(),
            to_i64(row.file_size),
            row.damage,
            m.replica_id.as_deref().unwrap_or_default(),
        ],
    )
    .map_err(db)?;
    Ok(())
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRow> {
    let json = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let cols: Option<u16> = r.get(15)?;
    let rows: Option<u16> = r.get(16)?;
    let meta = SessionMeta {
        session_id: r.get(0)?,
        kind: kind_from_sql(&r.get::<_, String>(1)?)?,
        initiator: crate::model::Initiator {
            issuer: r.get(2)?,
            subject: r.get(3)?,
            username: r.get(4)?,
            groups: json(5)?,
        },
        effective: crate::model::EffectiveIdentity {
            user: r.get(6)?,
            groups: json(7)?,
            uid: r.get(8)?,
        },
        cluster: r.get(9)?,
        namespace: r.get(10)?,
        pod: r.get(11)?,
        container: r.get(12)?,
        command: json(13)?,
        tty: r.get(14)?,
        term_size: cols.zip(rows),
        client_addr: r.get(17)?,
        user_agent: r.get(18)?,
        approval_id: r.get(19)?,
        gateway_id: r.get(20)?,
        replica_id: Some(r.get::<_, String>(33)?).filter(|id| !id.is_empty()),
        started_at_us: r.get(21)?,
    };
    Ok(SessionRow {
        meta,
        ended_at_us: r.get(22)?,
        status: status_from_sql(&r.get::<_, String>(23)?, r.get(24)?)?,
        exit_code: r.get(25)?,
        exit_message: r.get(26)?,
        event_count: from_i64(r.get(27)?),
        frame_count: r.get(28)?,
        chain_head: r.get(29)?,
        file_path: PathBuf::from(r.get::<_, String>(30)?),
        file_size: from_i64(r.get(31)?),
        damage: r.get(32)?,
    })
}

fn frame_from_row(r: &Row<'_>) -> rusqlite::Result<FrameRow> {
    let hash: Vec<u8> = r.get(7)?;
    let chain_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    Ok(FrameRow {
        index: r.get(0)?,
        offset: from_i64(r.get(1)?),
        compressed_len: from_i64(r.get(2)?),
        first_event_us: from_i64(r.get(3)?),
        last_event_us: from_i64(r.get(4)?),
        event_count: r.get(5)?,
        first_event_index: from_i64(r.get(6)?),
        chain_hash,
        keyframe: r.get(8)?,
    })
}

fn kind_to_sql(kind: SessionKind) -> &'static str {
    kind.name()
}

fn kind_from_sql(s: &str) -> rusqlite::Result<SessionKind> {
    SessionKind::from_name(s).ok_or_else(|| bad_text(1, format!("unknown session kind {s:?}")))
}

pub(crate) fn status_to_sql(status: &SessionStatus) -> (&'static str, Option<&str>) {
    status.name()
}

fn status_from_sql(s: &str, reason: Option<String>) -> rusqlite::Result<SessionStatus> {
    SessionStatus::from_name(s, reason).ok_or_else(|| bad_text(23, format!("unknown status {s:?}")))
}

fn source_from_sql(s: &str) -> rusqlite::Result<TextSource> {
    TextSource::parse(s).ok_or_else(|| bad_text(1, format!("unknown text source {s:?}")))
}

fn bad_text(col: usize, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, why.into())
}

/// `SQLite` integers are signed; sizes, offsets and times past `i64::MAX` do not occur.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_i64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const SESSION_COLUMNS: &str = "id, kind, initiator_issuer, initiator_subject, initiator_username,
    initiator_groups, effective_user, effective_groups, effective_uid, cluster, namespace, pod,
    container, command, tty, term_cols, term_rows, client_addr, user_agent, approval_id,
    gateway_id, started_at_us, ended_at_us, status, end_reason, exit_code, exit_message,
    event_count, frame_count, chain_head, file_path, file_size, damage, replica_id";

const FRAME_COLUMNS: &str = "idx, file_offset, compressed_len, first_event_us, last_event_us,
    event_count, first_event_index, chain_hash, keyframe";

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
