//! Audit events in PostgreSQL: batches in one transaction, queries, and the follow cursor.
//!
//! **The cursor never skips a late commit.** Replicas write concurrently, so an id or a
//! sequence number taken when a row is written says nothing of when it becomes visible: a
//! follower that read row 11 and moved its cursor past it would never see row 10, committed a
//! moment later. Each row keeps the id of the transaction that wrote it (`txid`), and a
//! follower reads only rows whose transaction is older than the oldest one still running
//! (`pg_snapshot_xmin`): every such transaction has ended, so nothing can appear behind the
//! cursor later. The cursor is that transaction id ([`AuditRecord::seq`]); one batch is one
//! transaction of at most `MAX_BATCH` rows, and a page never ends inside one.

use custody_recorder::catalog::AuditChange;
use custody_recorder::index::{AuditQuery, AuditRecord};
use tokio_postgres::Row;

use super::Sql;
use super::rows::to_i64;
use crate::error::{Error, Result};
use crate::partition::{Partitioned, Partitions};
use crate::postgres::Postgres;

/// The most rows one batch (one transaction) writes: the gateway's audit writer batches at
/// most this many.
pub const MAX_BATCH_ROWS: usize = 256;

const DEFAULT_LIMIT: usize = 100;

const COLUMNS: &str = "id, time_us, initiator_method, initiator_issuer,
    initiator_subject, initiator_username, initiator_groups, effective_user, effective_groups,
    effective_uid, client_addr, user_agent, cluster, verb, api_group, api_version, resource,
    subresource, namespace, name, path, decision, reason, status_code, upstream_audit_id,
    latency_us, bytes_in, bytes_out, kubectl_session, kubectl_command, replica_id, approval_id";

/// Applies `changes` in one transaction.
#[allow(
    clippy::too_many_lines,
    reason = "one batch's statements, each with its thirty-odd parameters, in the order sent"
)]
pub(super) async fn batch(
    db: &Postgres,
    partitions: &Partitions,
    changes: &[AuditChange],
) -> Result<()> {
    for change in changes {
        if let AuditChange::Insert(record) = change {
            partitions
                .ensure(db, Partitioned::AuditEvents, record.time_us)
                .await?;
        }
    }
    let mut client = db.get().await?;
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("begin an audit batch"))?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25,
             $26, $27, $28, $29, $30, $31, $32)"
        ))
        .await
        .map_err(Error::pg("prepare an audit insert"))?;
    let complete = tx
        .prepare_cached(
            "UPDATE audit_events SET status_code = $3, upstream_audit_id = $4,
                latency_us = $5, bytes_in = $6, bytes_out = $7
             WHERE id = $1 AND time_us = $2",
        )
        .await
        .map_err(Error::pg("prepare an audit completion"))?;
    // The statements are pipelined: all of them are sent before the first answer is awaited
    // (tokio-postgres sends them in the order the futures are first polled, which
    // `try_join_all` does in order), so a batch costs one round trip, not one per event.
    let owned: Vec<Owned> = changes.iter().map(Owned::of).collect();
    let statements = changes.iter().zip(&owned).map(|(change, owned)| {
        let (tx, insert, complete) = (&tx, &insert, &complete);
        async move {
            match (change, owned) {
                (
                    AuditChange::Insert(r),
                    Owned::Insert {
                        status,
                        bytes_in,
                        bytes_out,
                    },
                ) => tx
                    .execute(
                        insert,
                        &[
                            &r.id,
                            &r.time_us,
                            &r.initiator_method,
                            &r.initiator_issuer,
                            &r.initiator_subject,
                            &r.initiator_username,
                            &r.initiator_groups,
                            &r.effective_user,
                            &r.effective_groups,
                            &r.effective_uid,
                            &r.client_addr,
                            &r.user_agent,
                            &r.cluster,
                            &r.verb,
                            &r.api_group,
                            &r.api_version,
                            &r.resource,
                            &r.subresource,
                            &r.namespace,
                            &r.name,
                            &r.path,
                            &r.decision,
                            &r.reason,
                            status,
                            &r.upstream_audit_id,
                            &r.latency_us,
                            bytes_in,
                            bytes_out,
                            &r.kubectl_session,
                            &r.kubectl_command,
                            &r.replica_id,
                            &r.approval_id,
                        ],
                    )
                    .await
                    .map_err(Error::pg("insert an audit event")),
                (
                    AuditChange::Complete(done),
                    Owned::Complete {
                        status,
                        bytes_in,
                        bytes_out,
                    },
                ) => tx
                    .execute(
                        complete,
                        &[
                            &done.id,
                            &done.time_us,
                            status,
                            &done.upstream_audit_id,
                            &done.latency_us,
                            bytes_in,
                            bytes_out,
                        ],
                    )
                    .await
                    .map_err(Error::pg("complete an audit event")),
                // `Owned::of` made each from its own change.
                _ => Ok(0),
            }
        }
    });
    futures_util::future::try_join_all(statements).await?;
    tx.commit()
        .await
        .map_err(Error::pg("commit an audit batch"))
}

/// The parameters of a change that are not fields of it (converted to PostgreSQL's types).
enum Owned {
    Insert {
        status: Option<i32>,
        bytes_in: Option<i64>,
        bytes_out: Option<i64>,
    },
    Complete {
        status: i32,
        bytes_in: i64,
        bytes_out: i64,
    },
}

impl Owned {
    fn of(change: &AuditChange) -> Self {
        match change {
            AuditChange::Insert(r) => Self::Insert {
                status: r.status_code.map(i32::from),
                bytes_in: r.bytes_in.map(to_i64),
                bytes_out: r.bytes_out.map(to_i64),
            },
            AuditChange::Complete(done) => Self::Complete {
                status: i32::from(done.status_code),
                bytes_in: to_i64(done.bytes_in),
                bytes_out: to_i64(done.bytes_out),
            },
        }
    }
}

/// The event of one request.
pub(super) async fn event(db: &Postgres, id: &str) -> Result<Option<AuditRecord>> {
    let client = db.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT txid::text::bigint AS seq, {COLUMNS} FROM audit_events WHERE id = $1
                 ORDER BY time_us DESC LIMIT 1"
            ),
            &[&id],
        )
        .await
        .map_err(Error::pg("read an audit event"))?;
    row.as_ref().map(record_from_row).transpose()
}

/// The events matching `query`: newest first, or after a cursor oldest first (and only those
/// whose transaction is older than every transaction still running).
pub(super) async fn events(db: &Postgres, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let mut sql = Sql::new();
    if let Some(who) = &query.initiator {
        sql.initiator(who);
    }
    sql.text_eq("effective_user", query.effective_user.as_deref());
    sql.text_eq("cluster", query.cluster.as_deref());
    sql.text_eq("verb", query.verb.as_deref());
    sql.text_eq("resource", query.resource.as_deref());
    sql.text_eq("namespace", query.namespace.as_deref());
    sql.text_eq("decision", query.decision.as_deref());
    sql.text_eq("kubectl_session", query.kubectl_session.as_deref());
    if let Some(since) = query.since_us {
        sql.clause("time_us >= {}", since);
    }
    if let Some(until) = query.until_us {
        sql.clause("time_us <= {}", until);
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let following = query.after_seq.is_some();
    let columns = format!("txid::text::bigint AS seq, {COLUMNS}");
    let text = if let Some(after) = query.after_seq {
        sql.clause("txid > ({}::bigint)::text::xid8", after.max(0));
        sql.raw_clause("txid < pg_snapshot_xmin(pg_current_snapshot())");
        // The table's column `txid`, not the output's `seq` (an expression no index gives in
        // order), and enough rows to finish the last transaction a page reaches.
        sql.render(
            &columns,
            "audit_events",
            "audit_events.txid ASC, time_us ASC, id ASC",
            "seq ASC, time_us ASC, id ASC",
            to_i64((limit + MAX_BATCH_ROWS) as u64),
        )
    } else {
        sql.render(
            &columns,
            "audit_events",
            "time_us DESC, audit_events.txid DESC, id DESC",
            "time_us DESC, seq DESC, id DESC",
            to_i64(limit as u64),
        )
    };
    let client = db.get().await?;
    let rows = client
        .query(&text, &sql.params())
        .await
        .map_err(Error::pg("query audit events"))?;
    let mut records = rows
        .iter()
        .map(record_from_row)
        .collect::<Result<Vec<_>>>()?;
    if following {
        records.truncate(whole_transactions(&records, limit));
    }
    Ok(records)
}

/// How many of `records` (in cursor order) a page of about `limit` keeps: at least `limit`
/// when there are that many, then up to the end of the last transaction reached, so the next
/// page's cursor (`> seq`) skips nothing.
fn whole_transactions(records: &[AuditRecord], limit: usize) -> usize {
    if limit == 0 || records.len() <= limit {
        return records.len().min(limit);
    }
    let last = records[limit - 1].seq;
    limit
        + records[limit..]
            .iter()
            .take_while(|r| r.seq == last)
            .count()
}

fn record_from_row(r: &Row) -> Result<AuditRecord> {
    let get = |e: tokio_postgres::Error| Error::BadRow(format!("audit event: {e}"));
    let unsigned = |i: usize| -> Result<Option<u64>> {
        Ok(r.try_get::<_, Option<i64>>(i)
            .map_err(get)?
            .map(|n| u64::try_from(n).unwrap_or(0)))
    };
    let status: Option<i32> = r.try_get(24).map_err(get)?;
    Ok(AuditRecord {
        seq: r.try_get(0).map_err(get)?,
        id: r.try_get(1).map_err(get)?,
        time_us: r.try_get(2).map_err(get)?,
        initiator_method: r.try_get(3).map_err(get)?,
        initiator_issuer: r.try_get(4).map_err(get)?,
        initiator_subject: r.try_get(5).map_err(get)?,
        initiator_username: r.try_get(6).map_err(get)?,
        initiator_groups: r.try_get(7).map_err(get)?,
        effective_user: r.try_get(8).map_err(get)?,
        effective_groups: r.try_get(9).map_err(get)?,
        effective_uid: r.try_get(10).map_err(get)?,
        client_addr: r.try_get(11).map_err(get)?,
        user_agent: r.try_get(12).map_err(get)?,
        cluster: r.try_get(13).map_err(get)?,
        verb: r.try_get(14).map_err(get)?,
        api_group: r.try_get(15).map_err(get)?,
        api_version: r.try_get(16).map_err(get)?,
        resource: r.try_get(17).map_err(get)?,
        subresource: r.try_get(18).map_err(get)?,
        namespace: r.try_get(19).map_err(get)?,
        name: r.try_get(20).map_err(get)?,
        path: r.try_get(21).map_err(get)?,
        decision: r.try_get(22).map_err(get)?,
        reason: r.try_get(23).map_err(get)?,
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        upstream_audit_id: r.try_get(25).map_err(get)?,
        latency_us: r.try_get(26).map_err(get)?,
        bytes_in: unsigned(27)?,
        bytes_out: unsigned(28)?,
        kubectl_session: r.try_get(29).map_err(get)?,
        kubectl_command: r.try_get(30).map_err(get)?,
        replica_id: r.try_get(31).map_err(get)?,
        approval_id: r.try_get(32).map_err(get)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: i64) -> AuditRecord {
        AuditRecord {
            seq,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn a_page_never_ends_inside_a_transaction() {
        let rows: Vec<AuditRecord> = [1, 1, 2, 2, 2, 3].into_iter().map(at).collect();
        assert_eq!(whole_transactions(&rows, 1), 2);
        assert_eq!(whole_transactions(&rows, 2), 2);
        assert_eq!(whole_transactions(&rows, 3), 5);
        assert_eq!(whole_transactions(&rows, 5), 5);
        assert_eq!(whole_transactions(&rows, 6), 6);
        assert_eq!(whole_transactions(&rows, 100), 6);
    }
}
