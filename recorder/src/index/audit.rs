//! The audit trail in the index: one row per API request decision (denials included), written
//! before the request is forwarded and completed (status, latency, bytes, upstream audit id)
//! when its response ends; queries by identity, target, decision and time; and a cursor (`seq`)
//! for following new events.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params};

use super::Index;
use crate::error::{Error, Result};

/// One audit event as the index stores it. Lists are plain vectors; times are µs since the Unix
/// epoch. Empty strings stand for "not known" (e.g. the initiator of an unauthenticated request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// The row's position in the trail; assigned on insert (ignored by [`Index::insert_audit`]).
    pub seq: i64,
    /// The custody request id.
    pub id: String,
    /// When the request arrived.
    pub time_us: i64,
    /// How the initiator authenticated (`oidc`, `service-account`, ...), empty if it did not.
    pub initiator_method: String,
    /// The initiator's token issuer.
    pub initiator_issuer: String,
    /// The initiator's subject.
    pub initiator_subject: String,
    /// The initiator's username.
    pub initiator_username: String,
    /// The initiator's groups.
    pub initiator_groups: Vec<String>,
    /// The effective (impersonated) user.
    pub effective_user: String,
    /// The effective groups.
    pub effective_groups: Vec<String>,
    /// The effective uid.
    pub effective_uid: String,
    /// The client's socket address.
    pub client_addr: String,
    /// The client's user agent.
    pub user_agent: String,
    /// The cluster.
    pub cluster: String,
    /// The verb.
    pub verb: String,
    /// The API group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource.
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// The namespace.
    pub namespace: String,
    /// The object name.
    pub name: String,
    /// The request path (cluster prefix removed).
    pub path: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why (empty for a plain allow).
    pub reason: String,
    /// The HTTP status returned, once known.
    pub status_code: Option<u16>,
    /// The API server's echoed `Audit-Id`.
    pub upstream_audit_id: Option<String>,
    /// Time to the end of the response.
    pub latency_us: Option<i64>,
    /// Request body bytes.
    pub bytes_in: Option<u64>,
    /// Response body bytes.
    pub bytes_out: Option<u64>,
    /// kubectl's `Kubectl-Session` header.
    pub kubectl_session: Option<String>,
    /// kubectl's `Kubectl-Command` header.
    pub kubectl_command: Option<String>,
    /// In cluster mode, the replica that audited the request (empty on one machine).
    pub replica_id: String,
    /// The access grant (request id) the request was allowed under, if it needed one.
    pub approval_id: Option<String>,
}

/// The end of a request, recorded when its response ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCompletion {
    /// The custody request id.
    pub id: String,
    /// When the request arrived (µs since the Unix epoch), as in its [`AuditRecord`]: a
    /// catalog partitioned by time finds the row with it.
    pub time_us: i64,
    /// The HTTP status returned.
    pub status_code: u16,
    /// The API server's echoed `Audit-Id`, if any.
    pub upstream_audit_id: Option<String>,
    /// Time from arrival to the end of the response.
    pub latency_us: i64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// A filter over audit events; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The initiator's username or subject.
    pub initiator: Option<String>,
    /// The effective user.
    pub effective_user: Option<String>,
    /// The cluster.
    pub cluster: Option<String>,
    /// The verb.
    pub verb: Option<String>,
    /// The resource.
    pub resource: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// The kubectl session.
    pub kubectl_session: Option<String>,
    /// Events at or after this time (µs since the Unix epoch).
    pub since_us: Option<i64>,
    /// Events at or before this time.
    pub until_us: Option<i64>,
    /// Events after this cursor ([`AuditRecord::seq`]), for following; results are then in
    /// ascending order instead of newest first.
    pub after_seq: Option<i64>,
    /// At most this many rows (default 100).
    pub limit: Option<usize>,
}

/// One write of an audit batch ([`Index::audit_batch`]).
#[derive(Debug, Clone, Copy)]
pub enum AuditWrite<'a> {
    /// A new event ([`Index::insert_audit`]).
    Insert(&'a AuditRecord),
    /// An event's completion ([`Index::complete_audit`]).
    Complete(&'a AuditCompletion),
}

impl Index {
    /// Applies `writes` in one committed transaction: all of them or none, with one sync for
    /// the lot (how the gateway writes the events of concurrent requests together).
    pub fn audit_batch(&mut self, writes: &[AuditWrite<'_>]) -> Result<()> {
        let db = |op: &'static str| move |source| Error::IndexDb { op, source };
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db("begin an audit batch"))?;
        let applied = writes.iter().try_for_each(|write| match write {
            AuditWrite::Insert(record) => self.insert_audit(record).map(|_| ()),
            AuditWrite::Complete(done) => self.complete_audit(done).map(|_| ()),
        });
        match applied {
            Ok(()) => self
                .conn
                .execute_batch("COMMIT")
                .map_err(db("commit an audit batch")),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Appends an audit event in its own committed transaction (durable on return, given the
    /// index's `synchronous=FULL`). Returns its `seq`.
    pub fn insert_audit(&mut self, record: &AuditRecord) -> Result<i64> {
        let db = |source| Error::IndexDb {
            op: "insert audit event",
            source,
        };
        let r = record;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO audit_events ({INSERT_COLUMNS}) VALUES
                     (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                      ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31,
                      ?32)"
                ),
                params![
                    r.id,
                    r.time_us,
                    r.initiator_method,
                    r.initiator_issuer,
                    r.initiator_subject,
                    r.initiator_username,
                    serde_json::to_string(&r.initiator_groups)?,
                    r.effective_user,
                    serde_json::to_string(&r.effective_groups)?,
                    r.effective_uid,
                    r.client_addr,
                    r.user_agent,
                    r.cluster,
                    r.verb,
                    r.api_group,
                    r.api_version,
                    r.resource,
                    r.subresource,
                    r.namespace,
                    r.name,
                    r.path,
                    r.decision,
                    r.reason,
                    r.status_code,
                    r.upstream_audit_id,
                    r.latency_us,
                    r.bytes_in.map(to_i64),
                    r.bytes_out.map(to_i64),
                    r.kubectl_session,
                    r.kubectl_command,
                    r.replica_id,
                    r.approval_id,
                ],
            )
            .map_err(db)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how a request ended. `false` when no event has that id.
    pub fn complete_audit(&mut self, done: &AuditCompletion) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE audit_events SET status_code = ?2, upstream_audit_id = ?3,
                    latency_us = ?4, bytes_in = ?5, bytes_out = ?6
                 WHERE id = ?1",
                params![
                    done.id,
                    done.status_code,
                    done.upstream_audit_id,
                    done.latency_us,
                    to_i64(done.bytes_in),
                    to_i64(done.bytes_out),
                ],
            )
            .map_err(|source| Error::IndexDb {
                op: "complete audit event",
                source,
            })?;
        Ok(changed > 0)
    }

    /// One audit event by request id.
    pub fn audit_event(&self, id: &str) -> Result<Option<AuditRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {SELECT_COLUMNS} FROM audit_events WHERE id = ?1"),
                [id],
                record_from_row,
            )
            .optional()
            .map_err(|source| Error::IndexDb {
                op: "read audit event",
                source,
            })
    }

    /// The audit events matching `query`: newest first, or oldest first after a cursor.
    pub fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let db = |source| Error::IndexDb {
            op: "query audit events",
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
        text_eq("verb = ?N", &query.verb);
        text_eq("resource = ?N", &query.resource);
        text_eq("namespace = ?N", &query.namespace);
        text_eq("decision = ?N", &query.decision);
        text_eq("kubectl_session = ?N", &query.kubectl_session);
        for (clause, value) in [
            ("time_us >= ?N", query.since_us),
            ("time_us <= ?N", query.until_us),
            ("seq > ?N", query.after_seq),
        ] {
            if let Some(v) = value {
                clauses.push(clause);
                args.push(Value::Integer(v));
            }
        }
        let mut sql = format!("SELECT {SELECT_COLUMNS} FROM audit_events");
        for (i, clause) in clauses.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(&clause.replace("?N", &format!("?{}", i + 1)));
        }
        sql.push_str(if query.after_seq.is_some() {
            " ORDER BY seq ASC LIMIT ?"
        } else {
            " ORDER BY time_us DESC, seq DESC LIMIT ?"
        });
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let mut stmt = self.conn.prepare(&sql).map_err(db)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), record_from_row)
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }
}

fn record_from_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let json = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let unsigned = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?
            .map(|n| u64::try_from(n).unwrap_or(0)))
    };
    Ok(AuditRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        time_us: r.get(2)?,
        initiator_method: r.get(3)?,
        initiator_issuer: r.get(4)?,
        initiator_subject: r.get(5)?,
        initiator_username: r.get(6)?,
        initiator_groups: json(7)?,
        effective_user: r.get(8)?,
        effective_groups: json(9)?,
        effective_uid: r.get(10)?,
        client_addr: r.get(11)?,
        user_agent: r.get(12)?,
        cluster: r.get(13)?,
        verb: r.get(14)?,
        api_group: r.get(15)?,
        api_version: r.get(16)?,
        resource: r.get(17)?,
        subresource: r.get(18)?,
        namespace: r.get(19)?,
        name: r.get(20)?,
        path: r.get(21)?,
        decision: r.get(22)?,
        reason: r.get(23)?,
        status_code: r.get(24)?,
        upstream_audit_id: r.get(25)?,
        latency_us: r.get(26)?,
        bytes_in: unsigned(27)?,
        bytes_out: unsigned(28)?,
        kubectl_session: r.get(29)?,
        kubectl_command: r.get(30)?,
        replica_id: r.get(31)?,
        approval_id: r.get(32)?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The insert's columns; `id` and `request_id` are both the custody request id.
const INSERT_COLUMNS: &str = "id, request_id, time_us, initiator_method, initiator_issuer,
    initiator_subject, initiator_username, initiator_groups, effective_user, effective_groups,
    effective_uid, client_addr, user_agent, cluster, verb, api_group, api_version, resource,
    subresource, namespace, name, path, decision, reason, status_code, upstream_audit_id,
    latency_us, bytes_in, bytes_out, kubectl_session, kubectl_command, replica_id, approval_id";

const SELECT_COLUMNS: &str = "seq, id, time_us, initiator_method, initiator_issuer,
    initiator_subject, initiator_username, initiator_groups, effective_user, effective_groups,
    effective_uid, client_addr, user_agent, cluster, verb, api_group, api_version, resource,
    subresource, namespace, name, path, decision, reason, status_code, upstream_audit_id,
    latency_us, bytes_in, bytes_out, kubectl_session, kubectl_command, replica_id, approval_id";

const DEFAULT_LIMIT: usize = 100;

#[cfg(test)]
mod tests;
