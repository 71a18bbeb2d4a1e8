//! The live sessions of every replica (`live_sessions`): a row per running session naming the
//! replica and epoch that hold it, written with the session's open index row and removed, in
//! the same transaction as its sealed rows, only by its holder.
//!
//! A row whose holder's lease has ended is an **orphan**: another replica claims it (the
//! `UPDATE` names the old holder and epoch, so two replicas cannot both claim it), seals the
//! recording from its segments, and removes the row. A replica that dies while recovering an
//! orphan leaves it claimed under its own epoch, and it becomes an orphan again.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::members::Membership;
use crate::postgres::Postgres;

/// A live session as the table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    /// The session id.
    pub id: String,
    /// The replica that holds it.
    pub replica_id: String,
    /// Under which epoch.
    pub epoch: i64,
    /// The grant that allowed it.
    pub approval_id: Option<String>,
    /// What operators see of it (the gateway's `LiveSession` as JSON).
    pub summary: Value,
}

/// Every live session in the cluster.
pub async fn list(db: &Postgres) -> Result<Vec<LiveRow>> {
    rows(db, "SELECT id, replica_id, epoch, approval_id, summary FROM live_sessions ORDER BY started_at, id", &[]).await
}

/// The live session `id`, if one runs anywhere.
pub async fn get(db: &Postgres, id: &str) -> Result<Option<LiveRow>> {
    Ok(rows(
        db,
        "SELECT id, replica_id, epoch, approval_id, summary FROM live_sessions WHERE id = $1",
        &[&id],
    )
    .await?
    .into_iter()
    .next())
}

/// The replicas holding sessions of grant `approval_id`.
pub async fn replicas_of_grant(db: &Postgres, approval_id: &str) -> Result<Vec<String>> {
    let client = db.get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT replica_id FROM live_sessions WHERE approval_id = $1",
            &[&approval_id],
        )
        .await
        .map_err(Error::pg("find a grant's sessions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The live sessions whose holder no longer has a current lease under that epoch.
pub async fn orphans(db: &Postgres) -> Result<Vec<LiveRow>> {
    rows(
        db,
        "SELECT l.id, l.replica_id, l.epoch, l.approval_id, l.summary FROM live_sessions l
         WHERE NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = l.replica_id
                             AND r.epoch = l.epoch AND r.state <> 'gone'
                             AND r.lease_until > now())
         ORDER BY l.started_at, l.id",
        &[],
    )
    .await
}

/// Claims an orphan for this replica; `false` when another replica claimed it first.
pub async fn claim(db: &Postgres, me: &Membership, orphan: &LiveRow) -> Result<bool> {
    let client = db.get().await?;
    let claimed = client
        .execute(
            "UPDATE live_sessions SET replica_id = $4, epoch = $5
             WHERE id = $1 AND replica_id = $2 AND epoch = $3",
            &[
                &orphan.id,
                &orphan.replica_id,
                &orphan.epoch,
                &me.id(),
                &me.epoch(),
            ],
        )
        .await
        .map_err(Error::pg("claim an orphaned session"))?;
    Ok(claimed == 1)
}

async fn rows(
    db: &Postgres,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<LiveRow>> {
    let client = db.get().await?;
    let rows = client
        .query(sql, args)
        .await
        .map_err(Error::pg("read live sessions"))?;
    Ok(rows
        .iter()
        .map(|r| LiveRow {
            id: r.get(0),
            replica_id: r.get(1),
            epoch: r.get(2),
            approval_id: r.get(3),
            summary: r.get(4),
        })
        .collect())
}
