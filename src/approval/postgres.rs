//! The cluster's approvals store: the same table and the same conditional updates as the
//! one-machine store, in the shared PostgreSQL, so a request made through one replica is
//! decided through another exactly once.
//!
//! [`ApprovalStore`] is synchronous (the gateway calls it on blocking threads); this store
//! runs each statement on the gateway's runtime and waits for it there, which a blocking
//! thread may do.

use custody_cluster::postgres::Postgres;
use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::store::{ApprovalStore, StoredRequest, stale_before};
use super::{AccessRequest, ApprovalError};

const COLUMNS: &str = "id, requester, scope, reason, duration_seconds, state, created_at, \
                       decided_by, decided_at, decision_reason, expires_at, groups";

/// Access requests in PostgreSQL (the `access_requests` table of the cluster schema).
#[derive(Debug, Clone)]
pub struct PgStore {
    db: Postgres,
    runtime: Handle,
}

impl PgStore {
    /// A store over `db`, whose statements run on `runtime`.
    pub fn new(db: Postgres, runtime: Handle) -> Self {
        Self { db, runtime }
    }

    fn execute(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, ApprovalError> {
        self.runtime.block_on(async {
            let client = self.db.get().await.map_err(shared)?;
            client.execute(sql, args).await.map_err(statement)
        })
    }

    fn query(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<StoredRequest>, ApprovalError> {
        self.runtime.block_on(async {
            let client = self.db.get().await.map_err(shared)?;
            let rows = client.query(sql, args).await.map_err(statement)?;
            rows.iter().map(from_row).collect()
        })
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(shared)`, which hands the error over"
)]
fn shared(e: custody_cluster::Error) -> ApprovalError {
    ApprovalError::SharedStore(e.to_string())
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(statement)`, which hands the error over"
)]
fn statement(e: tokio_postgres::Error) -> ApprovalError {
    ApprovalError::SharedStore(custody_cluster::error::error_chain(&e))
}

impl ApprovalStore for PgStore {
    fn insert(&self, request: &AccessRequest) -> Result<(), ApprovalError> {
        let r = StoredRequest::of(request);
        self.execute(
            "INSERT INTO access_requests (id, requester, scope, reason, duration_seconds, state,
             created_at, groups) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
            &[
                &r.id,
                &r.requester,
                &r.scope,
                &r.reason,
                &r.duration_seconds,
                &r.created_at,
                &r.groups,
            ],
        )?;
        Ok(())
    }

    fn find(&self, id: &str) -> Result<Option<StoredRequest>, ApprovalError> {
        Ok(self
            .query(
                &format!("SELECT {COLUMNS} FROM access_requests WHERE id = $1"),
                &[&id],
            )?
            .into_iter()
            .next())
    }

    fn find_all(&self, requester: Option<&str>) -> Result<Vec<StoredRequest>, ApprovalError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM access_requests
                 WHERE ($1::text IS NULL OR requester = $1) ORDER BY created_at DESC, id
                 LIMIT 1000"
            ),
            &[&requester],
        )
    }

    fn set_approved(&self, id: &str, approver: &str, now: i64) -> Result<bool, ApprovalError> {
        let changed = self.execute(
            "UPDATE access_requests SET state = 'approved', decided_by = $2, decided_at = $3,
             expires_at = $3 + duration_seconds
             WHERE id = $1 AND state = 'pending' AND created_at > $4 AND requester <> $2",
            &[&id, &approver, &now, &stale_before(now)],
        )?;
        Ok(changed == 1)
    }

    fn set_denied(
        &self,
        id: &str,
        approver: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, ApprovalError> {
        let changed = self.execute(
            "UPDATE access_requests SET state = 'denied', decided_by = $2, decided_at = $3,
             decision_reason = $5
             WHERE id = $1 AND state = 'pending' AND created_at > $4 AND requester <> $2",
            &[&id, &approver, &now, &stale_before(now), &reason],
        )?;
        Ok(changed == 1)
    }

    fn set_revoked(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, ApprovalError> {
        let changed = self.execute(
            "UPDATE access_requests SET state = 'revoked', decided_by = $2, decided_at = $3,
             decision_reason = $4
             WHERE id = $1 AND state = 'approved' AND expires_at > $3",
            &[&id, &by, &now, &reason],
        )?;
        Ok(changed == 1)
    }

    fn find_granted(&self, requester: &str, now: i64) -> Result<Vec<StoredRequest>, ApprovalError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM access_requests
                 WHERE requester = $1 AND state = 'approved' AND expires_at > $2"
            ),
            &[&requester, &now],
        )
    }
}

fn from_row(row: &Row) -> Result<StoredRequest, ApprovalError> {
    let get = |e: tokio_postgres::Error| ApprovalError::SharedStore(format!("a request row: {e}"));
    Ok(StoredRequest {
        id: row.try_get(0).map_err(get)?,
        requester: row.try_get(1).map_err(get)?,
        scope: row.try_get(2).map_err(get)?,
        reason: row.try_get(3).map_err(get)?,
        duration_seconds: row.try_get(4).map_err(get)?,
        state: row.try_get(5).map_err(get)?,
        created_at: row.try_get(6).map_err(get)?,
        decided_by: row.try_get(7).map_err(get)?,
        decided_at: row.try_get(8).map_err(get)?,
        decision_reason: row.try_get(9).map_err(get)?,
        expires_at: row.try_get(10).map_err(get)?,
        groups: row.try_get(11).map_err(get)?,
    })
}
