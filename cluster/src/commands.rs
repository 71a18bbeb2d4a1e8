//! Commands from one replica to another: end a session, end the sessions of a grant.
//!
//! A command is a row in `commands` (durable: a replica that is busy or reconnecting finds it
//! later) and a `NOTIFY` on [`CHANNEL`] with the target replica's id, which only wakes it. The
//! target takes its pending commands with one `UPDATE ... RETURNING`, so each is applied once.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::postgres::Postgres;

/// The notification channel replicas listen on.
pub const CHANNEL: &str = "custody_commands";

/// What a command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// End one session (an operator's kill).
    EndSession,
    /// End every session a grant allowed (the grant was revoked).
    EndGrant,
}

impl CommandKind {
    fn name(self) -> &'static str {
        match self {
            Self::EndSession => "end_session",
            Self::EndGrant => "end_grant",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "end_session" => Some(Self::EndSession),
            "end_grant" => Some(Self::EndGrant),
            _ => None,
        }
    }
}

/// A command for a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Its id.
    pub id: i64,
    /// What it asks.
    pub kind: CommandKind,
    /// The session id or the grant id.
    pub target: String,
    /// The reason to seal the session(s) with.
    pub reason: String,
    /// Who asked (a person, or the replica that issued it).
    pub issued_by: String,
}

/// Issues a command to `replica` and wakes it.
pub async fn issue(
    db: &Postgres,
    replica: &str,
    kind: CommandKind,
    target: &str,
    reason: &str,
    issued_by: &str,
) -> Result<i64> {
    let mut client = db.get().await?;
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("begin a command"))?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO commands (replica_id, kind, target, reason, issued_by)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&replica, &kind.name(), &target, &reason, &issued_by],
        )
        .await
        .map_err(Error::pg("issue a command"))?
        .get(0);
    // Delivered when the transaction commits, so the row is there when the replica wakes.
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &replica])
        .await
        .map_err(Error::pg("notify a replica"))?;
    tx.commit().await.map_err(Error::pg("commit a command"))?;
    Ok(id)
}

/// Takes `replica`'s pending commands, oldest first; each is returned once.
pub async fn take(db: &Postgres, replica: &str) -> Result<Vec<Command>> {
    let client = db.get().await?;
    let rows = client
        .query(
            "UPDATE commands SET done_at = now() WHERE replica_id = $1 AND done_at IS NULL
             RETURNING id, kind, target, reason, issued_by",
            &[&replica],
        )
        .await
        .map_err(Error::pg("take commands"))?;
    let mut commands: Vec<Command> = rows
        .iter()
        .filter_map(|r| {
            let kind: String = r.get(1);
            Some(Command {
                id: r.get(0),
                kind: CommandKind::from_name(&kind)?,
                target: r.get(2),
                reason: r.get(3),
                issued_by: r.get(4),
            })
        })
        .collect();
    commands.sort_by_key(|c| c.id);
    Ok(commands)
}

/// Records what applying a command did (`ended 2 sessions`, `no such session`).
pub async fn record_outcome(db: &Postgres, id: i64, outcome: &str) -> Result<()> {
    let client = db.get().await?;
    client
        .execute(
            "UPDATE commands SET outcome = $2 WHERE id = $1",
            &[&id, &outcome],
        )
        .await
        .map_err(Error::pg("record a command's outcome"))?;
    Ok(())
}

/// Deletes commands applied more than `older_than` ago (the table keeps them for the record
/// for that long); returns how many.
pub async fn prune(db: &Postgres, older_than: std::time::Duration) -> Result<u64> {
    let client = db.get().await?;
    let seconds = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    client
        .execute(
            "DELETE FROM commands WHERE done_at IS NOT NULL
               AND done_at < now() - $1::bigint * interval '1 second'",
            &[&seconds],
        )
        .await
        .map_err(Error::pg("prune commands"))
}
