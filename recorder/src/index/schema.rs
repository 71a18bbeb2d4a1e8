//! Versioned migrations of the index schema.
//!
//! The schema version is `SQLite`'s `PRAGMA user_version`. [`MIGRATIONS`] are ordered SQL steps:
//! step `n` (1-based) takes a database from version `n - 1` to `n`, and each step runs in its own
//! transaction together with the version bump, so a crash mid-migration leaves the previous
//! version intact. A database newer than this build is refused, never "migrated" downwards.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The ordered migration steps; append new ones, never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_audit_request_context.sql"),
    include_str!("migrations/0003_subject_indexes.sql"),
    include_str!("migrations/0004_replica.sql"),
];

/// The schema version this build writes and reads.
pub fn latest_version() -> u32 {
    // The list is a short compile-time constant.
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// The database's schema version (0 for a new, empty database).
pub(crate) fn current_version(conn: &Connection) -> Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, u32>(0))
        .map_err(|source| Error::IndexDb {
            op: "read schema version",
            source,
        })
}

/// Brings the database to [`latest_version`], or refuses one that is newer.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32> {
    let found = current_version(conn)?;
    let supported = latest_version();
    if found > supported {
        return Err(Error::IndexTooNew { found, supported });
    }
    let db = |source| Error::IndexDb {
        op: "migrate",
        source,
    };
    for (step, sql) in (found + 1..).zip(&MIGRATIONS[found as usize..]) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", step).map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(supported)
}
