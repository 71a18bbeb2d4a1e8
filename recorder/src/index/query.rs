//! Queries over the index: sessions by identity, target, time, outcome and text, and full-text
//! search that returns sessions with a snippet of the best match.

use rusqlite::types::Value;

use super::{Index, SESSION_COLUMNS, SessionRow, TextSource, kind_to_sql, session_from_row};
use crate::error::{Error, Result};
use crate::model::{SessionKind, SessionStatus};

/// A filter over sessions; every field that is set must match (they are combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// The initiator's username or subject, exactly.
    pub initiator: Option<String>,
    /// The effective (impersonated) user, exactly.
    pub effective_user: Option<String>,
    /// The cluster.
    pub cluster: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// The pod.
    pub pod: Option<String>,
    /// The session kind.
    pub kind: Option<SessionKind>,
    /// Sessions still running at or after this time (µs since the Unix epoch): ended at or
    /// after it, or not ended.
    pub since: Option<i64>,
    /// Sessions started at or before this time (µs since the Unix epoch).
    pub until: Option<i64>,
    /// The exit code.
    pub exit_code: Option<i32>,
    /// The status; for `Terminated`, a non-empty reason must match too.
    pub status: Option<SessionStatus>,
    /// Words that must all occur in the session's output or typed lines (plain words, not FTS
    /// syntax).
    pub text: Option<String>,
    /// At most this many rows (default 100).
    pub limit: Option<usize>,
}

/// A session found by full-text search, with its best-matching piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The session.
    pub session_id: String,
    /// Output or a typed line.
    pub source: TextSource,
    /// When that text occurred (µs since the session start): a player can seek there.
    pub time_us: u64,
    /// The matching text around the match, matched words in `«` `»`.
    pub snippet: String,
}

impl Index {
    /// The sessions matching `query`, newest first.
    pub fn sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRow>> {
        let db = |source| Error::IndexDb {
            op: "query sessions",
            source,
        };
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        let mut text_eq = |clause, value: &Option<String>| {
            if let Some(v) = value {
                clauses.push(clause);
                args.push(Value::Text(v.clone()));
            }
        };
        text_eq(
            "(initiator_username = ?N OR initiator_subject = ?N)",
            &query.initiator,
        );
        text_eq("effective_user = ?N", &query.effective_user);
        text_eq("cluster = ?N", &query.cluster);
        text_eq("namespace = ?N", &query.namespace);
        text_eq("pod = ?N", &query.pod);
        text_eq("kind = ?N", &query.kind.map(|k| kind_to_sql(k).to_owned()));
        if let Some(since) = query.since {
            clauses.push("(ended_at_us IS NULL OR ended_at_us >= ?N)");
            args.push(Value::Integer(since));
        }
        if let Some(until) = query.until {
            clauses.push("started_at_us <= ?N");
            args.push(Value::Integer(until));
        }
        if let Some(code) = query.exit_code {
            clauses.push("exit_code = ?N");
            args.push(Value::Integer(i64::from(code)));
        }
        if let Some(status) = &query.status {
            let (name, reason) = super::status_to_sql(status);
            clauses.push("status = ?N");
            args.push(Value::Text(name.to_owned()));
            if let Some(reason) = reason.filter(|r| !r.is_empty()) {
                clauses.push("end_reason = ?N");
                args.push(Value::Text(reason.to_owned()));
            }
        }
        if let Some(text) = &query.text {
            let Some(fts) = fts_query(text) else {
                return Ok(Vec::new());
            };
            clauses.push(
                "id IN (SELECT t.session_id FROM session_text_fts
                        JOIN session_text t ON t.id = session_text_fts.rowid
                        WHERE session_text_fts MATCH ?N)",
            );
            args.push(Value::Text(fts));
        }
        let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions");
        for (i, clause) in clauses.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(&clause.replace("?N", &format!("?{}", i + 1)));
        }
        sql.push_str(" ORDER BY started_at_us DESC, id LIMIT ?");
        args.push(Value::Integer(limit(query.limit)));
        let mut stmt = self.conn.prepare(&sql).map_err(db)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), session_from_row)
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    /// Full-text search over output and typed lines: the sessions where all the words of `text`
    /// occur in one piece of text, best match first, one hit per session.
    pub fn search(&self, text: &str, limit_sessions: Option<usize>) -> Result<Vec<SearchHit>> {
        let db = |source| Error::IndexDb {
            op: "search",
            source,
        };
        let Some(fts) = fts_query(text) else {
            return Ok(Vec::new());
        };
        let max = usize::try_from(limit(limit_sessions)).unwrap_or(usize::MAX);
        // Rank every matching row, keep each session's best; snippets are made only for those.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t.session_id, t.id, t.source, t.time_us
                 FROM session_text_fts JOIN session_text t ON t.id = session_text_fts.rowid
                 WHERE session_text_fts MATCH ?1
                 ORDER BY bm25(session_text_fts), t.session_id, t.seq",
            )
            .map_err(db)?;
        let mut rows = stmt.query([&fts]).map_err(db)?;
        let mut best: Vec<(String, i64, String, i64)> = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let session: String = r.get(0).map_err(db)?;
            if best.iter().any(|b| b.0 == session) {
                continue;
            }
            best.push((
                session,
                r.get(1).map_err(db)?,
                r.get(2).map_err(db)?,
                r.get(3).map_err(db)?,
            ));
            if best.len() >= max {
                break;
            }
        }
        let mut snippet = self
            .conn
            .prepare(
                "SELECT snippet(session_text_fts, 0, '«', '»', '…', 16) FROM session_text_fts
                 WHERE session_text_fts MATCH ?1 AND rowid = ?2",
            )
            .map_err(db)?;
        let mut hits = Vec::with_capacity(best.len());
        for (session_id, rowid, source, time_us) in best {
            let snippet: String = snippet
                .query_row(rusqlite::params![&fts, rowid], |r| r.get(0))
                .map_err(db)?;
            hits.push(SearchHit {
                session_id,
                source: TextSource::parse(&source).unwrap_or(TextSource::Output),
                time_us: u64::try_from(time_us).unwrap_or(0),
                snippet,
            });
        }
        Ok(hits)
    }
}

/// Turns plain words into an FTS5 query that needs all of them: each word becomes a quoted
/// string (FTS5 syntax in user text is never interpreted). `None` when nothing is searchable.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

fn limit(limit: Option<usize>) -> i64 {
    i64::try_from(limit.unwrap_or(DEFAULT_LIMIT)).unwrap_or(i64::MAX)
}

const DEFAULT_LIMIT: usize = 100;
