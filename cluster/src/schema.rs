//! Versioned migrations of the shared database, as the `SQLite` index has them: ordered SQL
//! steps, each applied in its own transaction with its version row, so a crash mid-migration
//! leaves the previous version whole. Replicas that start together take an advisory lock, so
//! each step runs once; a database newer than this build is refused, never migrated down.

use crate::error::{Error, Result};
use crate::postgres::Postgres;

/// The ordered migration steps; append new ones, never edit a released one.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_catalog.sql")];

/// The advisory lock key migrations hold (`custody` in ASCII).
const MIGRATION_LOCK: i64 = 0x0063_7573_746f_6479;

/// The schema version this build writes and reads.
pub fn latest_version() -> i32 {
    // The list is a short compile-time constant.
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// Brings the database to [`latest_version`] (or refuses one that is newer); returns the
/// version it is at.
pub async fn migrate(db: &Postgres) -> Result<i32> {
    let mut client = db.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS custody_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(Error::pg("create the schema table"))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Error::pg("lock for migrations"))?;
    let outcome = apply(&mut client).await;
    // Released whatever happened: the connection goes back to the pool.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Error::pg("unlock after migrations"));
    let version = outcome?;
    unlocked?;
    Ok(version)
}

async fn apply(client: &mut deadpool_postgres::Object) -> Result<i32> {
    let found: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM custody_schema", &[])
        .await
        .map_err(Error::pg("read the schema version"))?
        .get(0);
    let supported = latest_version();
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for (step, sql) in (found + 1..).zip(&MIGRATIONS[start..]) {
        let tx = client
            .transaction()
            .await
            .map_err(Error::pg("begin a migration"))?;
        tx.batch_execute(sql).await.map_err(Error::pg("migrate"))?;
        tx.execute("INSERT INTO custody_schema (version) VALUES ($1)", &[&step])
            .await
            .map_err(Error::pg("record the schema version"))?;
        tx.commit().await.map_err(Error::pg("commit a migration"))?;
        tracing::info!(version = step, "postgresql schema migrated");
    }
    Ok(supported)
}
