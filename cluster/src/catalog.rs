//! The shared catalog: `custody_recorder::catalog::Catalog` over PostgreSQL. Sessions, their
//! frames and searchable text here; audit events in [`audit`].
//!
//! Every write is one transaction, committed before the method returns; the rows are those the
//! `SQLite` index holds for the same recordings (`recorder/src/index.rs`), so the web API, the
//! player and recovery read the same facts in either mode.

mod audit;
mod rows;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use custody_recorder::catalog::{AuditChange, Catalog};
use custody_recorder::index::{
    AuditQuery, AuditRecord, FrameRow, IndexedSession, SearchHit, SessionQuery, SessionRow,
    TextSource,
};
use custody_recorder::keyframe::{Keyframe, Seekpoint};
use custody_recorder::model::{SessionKind, SessionMeta};
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::members::Membership;
use crate::partition::{self, Partitioned, Partitions};
use crate::postgres::Postgres;
use crate::search;
use rows::{SESSION_COLUMNS, frame_from_row, session_from_row, to_i64};

/// The most rows a list returns when the query does not say.
const DEFAULT_LIMIT: usize = 100;

/// The catalog in PostgreSQL. Cheap to clone.
///
/// A replica's catalog ([`PgCatalog::for_replica`]) also keeps `live_sessions`: a session that
/// opens gets a row naming this replica and its epoch, in the same transaction as its open
/// index row; its sealed rows are written in one transaction with the removal of that row,
/// which succeeds only while this replica still holds it. A replica whose lease was taken
/// cannot overwrite what the replica that recovered its session wrote.
#[derive(Debug, Clone)]
pub struct PgCatalog {
    db: Postgres,
    partitions: std::sync::Arc<Partitions>,
    owner: Option<Membership>,
}

impl PgCatalog {
    /// A catalog over `db`, whose schema must already be migrated ([`crate::schema::migrate`]).
    pub fn new(db: Postgres) -> Self {
        Self {
            db,
            partitions: std::sync::Arc::default(),
            owner: None,
        }
    }

    /// The catalog of a replica that holds the sessions it records (see the type's docs).
    pub fn for_replica(db: Postgres, owner: Membership) -> Self {
        Self {
            owner: Some(owner),
            ..Self::new(db)
        }
    }

    /// The pool.
    pub fn db(&self) -> &Postgres {
        &self.db
    }

    async fn record_open_row(&self, meta: &SessionMeta, file_path: &Path) -> Result<()> {
        let row = SessionRow {
            meta: meta.clone(),
            ended_at_us: None,
            status: custody_recorder::model::SessionStatus::Open,
            exit_code: None,
            exit_message: None,
            event_count: 0,
            frame_count: 0,
            chain_head: None,
            file_path: file_path.to_owned(),
            file_size: 0,
            damage: None,
        };
        let mut client = self.db.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::pg("begin opening a session"))?;
        rows::insert_session(&tx, &row, false).await?;
        if let Some(owner) = &self.owner {
            let summary = serde_json::to_value(meta)
                .map_err(|e| Error::BadRow(format!("a session header as JSON: {e}")))?;
            tx.execute(
                "INSERT INTO live_sessions (id, replica_id, epoch, approval_id, summary)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &meta.session_id,
                    &owner.id(),
                    &owner.epoch(),
                    &meta.approval_id,
                    &summary,
                ],
            )
            .await
            .map_err(Error::pg("register a live session"))?;
        }
        tx.commit()
            .await
            .map_err(Error::pg("commit opening a session"))
    }

    async fn upsert_rows(&self, session: &IndexedSession) -> Result<()> {
        let started = session.row.meta.started_at_us;
        if !session.text.is_empty() {
            self.partitions
                .ensure(&self.db, Partitioned::SessionText, started)
                .await?;
        }
        let mut client = self.db.get().await?;
        let tx = client
            .transaction()
            .await
            .map_err(Error::pg("begin an upsert"))?;
        let id = &session.row.meta.session_id;
        if let Some(owner) = &self.owner
            && session.row.status != custody_recorder::model::SessionStatus::Open
        {
            release(&tx, owner, id).await?;
        }
        tx.execute("DELETE FROM frames WHERE session_id = $1", &[id])
            .await
            .map_err(Error::pg("delete frames"))?;
        tx.execute(
            "DELETE FROM session_text WHERE session_id = $1 AND started_at_us = $2",
            &[id, &started],
        )
        .await
        .map_err(Error::pg("delete text"))?;
        rows::insert_session(&tx, &session.row, true).await?;
        rows::insert_frames(&tx, id, &session.frames).await?;
        rows::insert_text(&tx, id, started, &session.text).await?;
        tx.commit().await.map_err(Error::pg("commit an upsert"))
    }

    async fn query_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRow>> {
        let mut sql = Sql::new();
        if let Some(who) = &query.initiator {
            sql.initiator(who);
        }
        sql.text_eq("effective_user", query.effective_user.as_deref());
        sql.text_eq("cluster", query.cluster.as_deref());
        sql.text_eq("namespace", query.namespace.as_deref());
        sql.text_eq("pod", query.pod.as_deref());
        sql.text_eq("kind", query.kind.map(SessionKind::name));
        if let Some(since) = query.since {
            sql.clause("(ended_at_us IS NULL OR ended_at_us >= {})", since);
        }
        if let Some(until) = query.until {
            sql.clause("started_at_us <= {}", until);
        }
        if let Some(code) = query.exit_code {
            sql.clause("exit_code = {}", code);
        }
        if let Some(status) = &query.status {
            let (name, reason) = status.name();
            sql.clause("status = {}", name.to_owned());
            if let Some(reason) = reason.filter(|r| !r.is_empty()) {
                sql.clause("end_reason = {}", reason.to_owned());
            }
        }
        if let Some(text) = &query.text {
            let Some(wanted) = search::query_tokens(text) else {
                return Ok(Vec::new());
            };
            sql.clause(
                "id IN (SELECT t.session_id FROM session_text t WHERE t.tokens @> {})",
                wanted,
            );
        }
        let limit = to_i64(query.limit.unwrap_or(DEFAULT_LIMIT) as u64);
        let text = sql.render(
            SESSION_COLUMNS,
            "sessions",
            "started_at_us DESC, id",
            "started_at_us DESC, id",
            limit,
        );
        let client = self.db.get().await?;
        let rows = client
            .query(&text, &sql.params())
            .await
            .map_err(Error::pg("query sessions"))?;
        rows.iter().map(session_from_row).collect()
    }

    /// The newest sessions where one piece of text holds every token asked for, one hit per
    /// session. Months are searched newest first and the search stops when it has enough, so
    /// a common word costs the recent months, not the whole history.
    async fn search_text(&self, text: &str, limit: Option<usize>) -> Result<Vec<SearchHit>> {
        let Some(wanted) = search::query_tokens(text) else {
            return Ok(Vec::new());
        };
        let max = limit.unwrap_or(DEFAULT_LIMIT);
        let months = partition::existing(&self.db, Partitioned::SessionText).await?;
        let client = self.db.get().await?;
        let statement = client
            .prepare(
                "SELECT DISTINCT ON (t.started_at_us, t.session_id)
                        t.session_id, t.source, t.time_us, t.body
                 FROM session_text t
                 WHERE t.tokens @> $1 AND t.started_at_us >= $2 AND t.started_at_us < $3
                 ORDER BY t.started_at_us DESC, t.session_id, t.seq
                 LIMIT $4",
            )
            .await
            .map_err(Error::pg("prepare a search"))?;
        let mut hits = Vec::new();
        for month in months {
            let left = to_i64((max - hits.len()) as u64);
            let rows = client
                .query(
                    &statement,
                    &[&wanted, &month.start_us(), &month.end_us(), &left],
                )
                .await
                .map_err(Error::pg("search"))?;
            for row in rows {
                let source: String = row.get(1);
                let body: String = row.get(3);
                hits.push(SearchHit {
                    session_id: row.get(0),
                    source: TextSource::parse(&source).unwrap_or(TextSource::Output),
                    time_us: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                    snippet: search::snippet(&body, &wanted),
                });
            }
            if hits.len() >= max {
                break;
            }
        }
        Ok(hits)
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    fn describe(&self) -> String {
        self.db.shown().to_owned()
    }

    async fn record_open(
        &self,
        meta: &SessionMeta,
        file_path: &Path,
    ) -> custody_recorder::Result<()> {
        Ok(self.record_open_row(meta, file_path).await?)
    }

    async fn upsert(&self, session: IndexedSession) -> custody_recorder::Result<()> {
        Ok(self.upsert_rows(&session).await?)
    }

    async fn session(&self, id: &str) -> custody_recorder::Result<Option<SessionRow>> {
        let client = self.db.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(Error::pg("read session"))?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    async fn frames(&self, id: &str) -> custody_recorder::Result<Vec<FrameRow>> {
        let client = self.db.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM frames WHERE session_id = $1 ORDER BY idx",
                    rows::FRAME_COLUMNS
                ),
                &[&id],
            )
            .await
            .map_err(Error::pg("read frames"))?;
        Ok(rows.iter().map(frame_from_row).collect::<Result<_>>()?)
    }

    async fn seekpoints(&self, id: &str) -> custody_recorder::Result<Vec<Seekpoint>> {
        let mut out = Vec::new();
        for frame in self.frames(id).await? {
            if let Some(blob) = &frame.keyframe {
                let event_index = usize::try_from(frame.first_event_index).map_err(|_| {
                    custody_recorder::Error::Keyframe("event index out of range".into())
                })?;
                out.push(Seekpoint {
                    event_index,
                    keyframe: Keyframe::decode(blob)?,
                });
            }
        }
        Ok(out)
    }

    async fn sessions(&self, query: &SessionQuery) -> custody_recorder::Result<Vec<SessionRow>> {
        Ok(self.query_sessions(query).await?)
    }

    async fn search(
        &self,
        text: &str,
        limit_sessions: Option<usize>,
    ) -> custody_recorder::Result<Vec<SearchHit>> {
        Ok(self.search_text(text, limit_sessions).await?)
    }

    async fn open_sessions(&self) -> custody_recorder::Result<Vec<(String, PathBuf)>> {
        let client = self.db.get().await?;
        let rows = client
            .query(
                "SELECT id, file_path FROM sessions WHERE status = 'open' ORDER BY id",
                &[],
            )
            .await
            .map_err(Error::pg("read open sessions"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), PathBuf::from(r.get::<_, String>(1))))
            .collect())
    }

    async fn audit_batch(&self, changes: &[AuditChange]) -> custody_recorder::Result<()> {
        Ok(audit::batch(&self.db, &self.partitions, changes).await?)
    }

    async fn audit_event(&self, id: &str) -> custody_recorder::Result<Option<AuditRecord>> {
        Ok(audit::event(&self.db, id).await?)
    }

    async fn audit_events(&self, query: &AuditQuery) -> custody_recorder::Result<Vec<AuditRecord>> {
        Ok(audit::events(&self.db, query).await?)
    }
}

/// Removes the live row of session `id` if `owner` holds it; refuses when another replica
/// does (this one's lease was taken and the session recovered elsewhere).
async fn release(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &Membership,
    id: &str,
) -> Result<()> {
    let held = tx
        .query_opt(
            "SELECT replica_id, epoch FROM live_sessions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(Error::pg("read a live session"))?;
    let Some(row) = held else {
        // Not live (recovery, or reindexing a sealed file): nothing to release.
        return Ok(());
    };
    let (replica, epoch): (String, i64) = (row.get(0), row.get(1));
    if replica != owner.id() || epoch != owner.epoch() {
        return Err(Error::LostOwnership {
            session: id.to_owned(),
            replica: owner.id().to_owned(),
            epoch: owner.epoch(),
        });
    }
    tx.execute("DELETE FROM live_sessions WHERE id = $1", &[&id])
        .await
        .map_err(Error::pg("release a live session"))?;
    Ok(())
}

/// A statement built from clauses with numbered parameters (`{}` in a clause becomes the
/// next `$n`). Values are always parameters, never text in the statement.
///
/// A filter by initiator (a username or a subject) is two index-ordered queries, one per
/// column, joined with `UNION ALL` and cut to the limit: written as `username = $1 OR
/// subject = $1`, PostgreSQL walks the time index and filters, which for a person with few
/// rows reads the whole table.
struct Sql {
    clauses: Vec<String>,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    initiator: Option<usize>,
}

impl Sql {
    fn new() -> Self {
        Self {
            clauses: Vec::new(),
            values: Vec::new(),
            initiator: None,
        }
    }

    /// Adds `value` as the next parameter; returns its number.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> usize {
        self.values.push(Box::new(value));
        self.values.len()
    }

    fn clause(&mut self, fragment: &str, value: impl ToSql + Sync + Send + 'static) {
        let n = self.param(value);
        self.raw_clause(&fragment.replace("{}", &format!("${n}")));
    }

    /// A clause without a value.
    fn raw_clause(&mut self, fragment: &str) {
        self.clauses.push(fragment.to_owned());
    }

    fn text_eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.clause(&format!("{column} = {{}}"), v.to_owned());
        }
    }

    /// Rows whose initiator (username or subject) is `who`.
    fn initiator(&mut self, who: &str) {
        self.initiator = Some(self.param(who.to_owned()));
    }

    /// The statement: `columns` of `table` under the clauses, ordered by `order` (columns of
    /// the table) and, around a union, by `outer_order` (the same, as output columns).
    fn render(
        &mut self,
        columns: &str,
        table: &str,
        order: &str,
        outer_order: &str,
        limit: i64,
    ) -> String {
        let l = self.param(limit);
        let select = |extra: &[String]| {
            let all: Vec<&str> = extra
                .iter()
                .chain(&self.clauses)
                .map(String::as_str)
                .collect();
            let filter = if all.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", all.join(" AND "))
            };
            format!("SELECT {columns} FROM {table}{filter} ORDER BY {order} LIMIT ${l}")
        };
        match self.initiator {
            None => select(&[]),
            Some(k) => format!(
                "SELECT * FROM (({}) UNION ALL ({})) AS u ORDER BY {outer_order} LIMIT ${l}",
                select(&[format!("initiator_username = ${k}")]),
                select(&[
                    format!("initiator_subject = ${k}"),
                    format!("initiator_username <> ${k}"),
                ]),
            ),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| &**v as &(dyn ToSql + Sync))
            .collect()
    }
}
