//! The approvals store: [`ApprovalStore`], the rules every store shares, and the one-machine
//! store in `SQLite` (`<data_dir>/approvals.sqlite`); the cluster's is in PostgreSQL
//! ([`super::postgres`]).
//!
//! Every state change is one conditional `UPDATE` whose `WHERE` holds the rule (pending, fresh,
//! not the requester's own), so a decision is made exactly once even when two approvers, or two
//! gateways sharing the store, race. Reads compute `expired` from the clock; nothing needs to
//! sweep the table for a grant to end. Stores are synchronous: the gateway calls them on
//! blocking threads.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{AccessRequest, ApprovalError, PENDING_TTL, State};
use crate::policy::{Grant, Scope};

/// The file name under the data directory.
pub const FILE_NAME: &str = "approvals.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_requests (
    id               TEXT PRIMARY KEY,
    requester        TEXT NOT NULL,
    scope            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    duration_seconds INTEGER NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    decided_by       TEXT,
    decided_at       INTEGER,
    decision_reason  TEXT,
    expires_at       INTEGER,
    groups           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_requests_by_requester
    ON access_requests (requester, state, expires_at);
";

const COLUMNS: &str = "id, requester, scope, reason, duration_seconds, state, created_at, \
                       decided_by, decided_at, decision_reason, expires_at, groups";

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this requester's.
    pub requester: Option<String>,
    /// Only in this state (as computed now).
    pub state: Option<State>,
}

/// Where access requests are kept. The conditional updates (`set_*`) change a row only when
/// the rule allows it and say whether they did; the provided methods explain a refusal.
pub trait ApprovalStore: Send + Sync {
    /// Stores a new pending request.
    fn insert(&self, request: &AccessRequest) -> Result<(), ApprovalError>;

    /// One request as stored (`None` when there is none).
    fn find(&self, id: &str) -> Result<Option<StoredRequest>, ApprovalError>;

    /// Requests of `requester` (everyone's with `None`), newest first, at most 1000.
    fn find_all(&self, requester: Option<&str>) -> Result<Vec<StoredRequest>, ApprovalError>;

    /// Approves a pending, fresh request not `approver`'s own; whether it did.
    fn set_approved(&self, id: &str, approver: &str, now: i64) -> Result<bool, ApprovalError>;

    /// Denies a pending, fresh request not `approver`'s own; whether it did.
    fn set_denied(
        &self,
        id: &str,
        approver: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, ApprovalError>;

    /// Revokes an unexpired grant; whether it did.
    fn set_revoked(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, ApprovalError>;

    /// `requester`'s approved requests that have not expired at `now`.
    fn find_granted(&self, requester: &str, now: i64) -> Result<Vec<StoredRequest>, ApprovalError>;

    /// Records a new pending request.
    fn create(
        &self,
        requester: &str,
        scope: &Scope,
        reason: &str,
        duration_seconds: u64,
        groups: &[String],
        now: DateTime<Utc>,
    ) -> Result<AccessRequest, ApprovalError> {
        let request = AccessRequest {
            id: uuid::Uuid::new_v4().to_string(),
            requester: requester.to_owned(),
            scope: scope.clone(),
            reason: reason.to_owned(),
            duration_seconds,
            state: State::Pending,
            created_at: now,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            expires_at: None,
            groups: groups.to_vec(),
        };
        self.insert(&request)?;
        Ok(request)
    }

    /// One request, its state as of `now`.
    fn get(&self, id: &str, now: DateTime<Utc>) -> Result<AccessRequest, ApprovalError> {
        self.find(id)?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?
            .at(now)
    }

    /// Requests matching `filter`, newest first.
    fn list(
        &self,
        filter: &ListFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccessRequest>, ApprovalError> {
        let mut out = Vec::new();
        for stored in self.find_all(filter.requester.as_deref())? {
            let request = stored.at(now)?;
            if filter.state.is_none_or(|s| s == request.state) {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// Approves a pending request: it becomes a grant until now + its duration.
    fn approve(
        &self,
        id: &str,
        approver: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequest, ApprovalError> {
        let changed = self.set_approved(id, approver, now.timestamp())?;
        decided(self, changed, id, approver, now, "approve")
    }

    /// Denies a pending request.
    fn deny(
        &self,
        id: &str,
        approver: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequest, ApprovalError> {
        let changed = self.set_denied(id, approver, reason, now.timestamp())?;
        decided(self, changed, id, approver, now, "deny")
    }

    /// Revokes a grant before it expires. Who may revoke is the caller's decision (approvers,
    /// and the requester giving up their own grant).
    fn revoke(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequest, ApprovalError> {
        let changed = self.set_revoked(id, by, reason, now.timestamp())?;
        let request = self.get(id, now)?;
        if changed {
            return Ok(request);
        }
        Err(ApprovalError::Conflict(format!(
            "request {id} is {}, not an active grant; nothing to revoke",
            request.state.as_str()
        )))
    }

    /// The grants `requester` holds now.
    fn active_grants(
        &self,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Grant>, ApprovalError> {
        let mut grants = Vec::new();
        for stored in self.find_granted(requester, now.timestamp())? {
            if let Some(grant) = stored.at(now)?.grant() {
                grants.push(grant);
            }
        }
        Ok(grants)
    }
}

/// A request as a store holds it: times in Unix seconds, scope and groups as JSON, the state
/// as decided (not yet as of a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// The request id.
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// The scope, JSON.
    pub scope: String,
    /// Why.
    pub reason: String,
    /// For how long.
    pub duration_seconds: i64,
    /// `pending`, `approved`, `denied` or `revoked`.
    pub state: String,
    /// When it was made.
    pub created_at: i64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<i64>,
    /// The denial's or revocation's reason.
    pub decision_reason: Option<String>,
    /// When a grant ends.
    pub expires_at: Option<i64>,
    /// The groups a grant adds, JSON.
    pub groups: String,
}

impl StoredRequest {
    /// The stored form of a new request.
    pub fn of(request: &AccessRequest) -> Self {
        Self {
            id: request.id.clone(),
            requester: request.requester.clone(),
            scope: json(&request.scope),
            reason: request.reason.clone(),
            duration_seconds: i64::try_from(request.duration_seconds).unwrap_or(i64::MAX),
            state: request.state.as_str().to_owned(),
            created_at: request.created_at.timestamp(),
            decided_by: request.decided_by.clone(),
            decided_at: request.decided_at.map(|t| t.timestamp()),
            decision_reason: request.decision_reason.clone(),
            expires_at: request.expires_at.map(|t| t.timestamp()),
            groups: json(&request.groups),
        }
    }

    /// The request with its state as of `now` (an approved grant past its end, or a request
    /// unanswered too long, is `expired`).
    pub fn at(self, now: DateTime<Utc>) -> Result<AccessRequest, ApprovalError> {
        let bad = |what: &str, e: serde_json::Error| {
            ApprovalError::SharedStore(format!(
                "request {}: its {what} is unreadable: {e}",
                self.id
            ))
        };
        let created_at = time(self.created_at);
        let expires_at = self.expires_at.map(time);
        let mut state = match self.state.as_str() {
            "approved" => State::Approved,
            "denied" => State::Denied,
            "revoked" => State::Revoked,
            _ => State::Pending,
        };
        let unanswered_too_long = created_at.timestamp() <= stale_before(now.timestamp());
        if (state == State::Approved && expires_at.is_none_or(|at| at <= now))
            || (state == State::Pending && unanswered_too_long)
        {
            state = State::Expired;
        }
        Ok(AccessRequest {
            scope: serde_json::from_str(&self.scope).map_err(|e| bad("scope", e))?,
            groups: serde_json::from_str(&self.groups).map_err(|e| bad("groups", e))?,
            id: self.id,
            requester: self.requester,
            reason: self.reason,
            duration_seconds: u64::try_from(self.duration_seconds).unwrap_or(0),
            state,
            created_at,
            decided_by: self.decided_by,
            decided_at: self.decided_at.map(time),
            decision_reason: self.decision_reason,
            expires_at,
        })
    }
}

/// Explains a decision that changed nothing: missing, own, already decided or stale.
fn decided<S: ApprovalStore + ?Sized>(
    store: &S,
    changed: bool,
    id: &str,
    approver: &str,
    now: DateTime<Utc>,
    verb: &str,
) -> Result<AccessRequest, ApprovalError> {
    let request = store.get(id, now)?;
    if changed {
        return Ok(request);
    }
    if request.requester == approver {
        return Err(ApprovalError::Forbidden(format!(
            "you cannot {verb} your own request; someone else with approval rights must"
        )));
    }
    let by = request
        .decided_by
        .as_deref()
        .map(|who| format!(" by {who}"))
        .unwrap_or_default();
    Err(ApprovalError::Conflict(format!(
        "request {id} is already {}{by}",
        request.state.as_str()
    )))
}

/// Requests created at or before this (Unix seconds) and still pending are stale.
pub fn stale_before(now: i64) -> i64 {
    now - i64::try_from(PENDING_TTL.as_secs()).unwrap_or(i64::MAX / 2)
}

/// The one-machine store. Operations are short statements on one connection behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating) the store under `data_dir`, readable by the gateway's user only.
    pub fn open(data_dir: &Path) -> Result<Store, ApprovalError> {
        custody_recorder::permissions::create_dir(data_dir).map_err(|source| {
            ApprovalError::StoreDir {
                path: data_dir.to_owned(),
                source,
            }
        })?;
        let path = data_dir.join(FILE_NAME);
        let conn = Connection::open(&path)?;
        restrict(&path).map_err(|source| ApprovalError::StoreDir {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no partial state: every change is one statement.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn query(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredRequest>, ApprovalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(args, from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl ApprovalStore for Store {
    fn insert(&self, request: &AccessRequest) -> Result<(), ApprovalError> {
        let r = StoredRequest::of(request);
        self.conn().execute(
            "INSERT INTO access_requests (id, requester, scope, reason, duration_seconds, state, \
             created_at, groups) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
            params![
                r.id,
                r.requester,
                r.scope,
                r.reason,
                r.duration_seconds,
                r.created_at,
                r.groups
            ],
        )?;
        Ok(())
    }

    fn find(&self, id: &str) -> Result<Option<StoredRequest>, ApprovalError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM access_requests WHERE id = ?1"),
                params![id],
                from_row,
            )
            .optional()?)
    }

    fn find_all(&self, requester: Option<&str>) -> Result<Vec<StoredRequest>, ApprovalError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM access_requests \
                 WHERE (?1 IS NULL OR requester = ?1) ORDER BY created_at DESC, id LIMIT 1000"
            ),
            &[&requester],
        )
    }

    fn set_approved(&self, id: &str, approver: &str, now: i64) -> Result<bool, ApprovalError> {
        let changed = self.conn().execute(
            "UPDATE access_requests SET state = 'approved', decided_by = ?2, decided_at = ?3, \
             expires_at = ?3 + duration_seconds \
             WHERE id = ?1 AND state = 'pending' AND created_at > ?4 AND requester <> ?2",
            params![id, approver, now, stale_before(now)],
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
        let changed = self.conn().execute(
            "UPDATE access_requests SET state = 'denied', decided_by = ?2, decided_at = ?3, \
             decision_reason = ?5 \
             WHERE id = ?1 AND state = 'pending' AND created_at > ?4 AND requester <> ?2",
            params![id, approver, now, stale_before(now), reason],
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
        let changed = self.conn().execute(
            "UPDATE access_requests SET state = 'revoked', decided_by = ?2, decided_at = ?3, \
             decision_reason = ?4 \
             WHERE id = ?1 AND state = 'approved' AND expires_at > ?3",
            params![id, by, now, reason],
        )?;
        Ok(changed == 1)
    }

    fn find_granted(&self, requester: &str, now: i64) -> Result<Vec<StoredRequest>, ApprovalError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM access_requests \
                 WHERE requester = ?1 AND state = 'approved' AND expires_at > ?2"
            ),
            &[&requester, &now],
        )
    }
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain structs of strings cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn time(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<StoredRequest> {
    Ok(StoredRequest {
        id: row.get(0)?,
        requester: row.get(1)?,
        scope: row.get(2)?,
        reason: row.get(3)?,
        duration_seconds: row.get(4)?,
        state: row.get(5)?,
        created_at: row.get(6)?,
        decided_by: row.get(7)?,
        decided_at: row.get(8)?,
        decision_reason: row.get(9)?,
        expires_at: row.get(10)?,
        groups: row.get(11)?,
    })
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(pod: &str) -> Scope {
        Scope {
            cluster: "demo".into(),
            namespace: "kube-system".into(),
            pod: Some(pod.into()),
            action: "exec".into(),
            as_user: None,
            as_groups: Vec::new(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        time(1_800_000_000 + seconds)
    }

    #[test]
    fn a_request_becomes_a_grant_for_its_duration_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let groups = vec!["custody:jit".to_owned()];
        let r = store
            .create("alice", &scope("coredns"), "INC-1", 600, &groups, at(0))
            .unwrap();
        assert_eq!(r.state, State::Pending);
        assert!(store.active_grants("alice", at(1)).unwrap().is_empty());

        let own = store.approve(&r.id, "alice", at(5)).unwrap_err();
        assert!(matches!(own, ApprovalError::Forbidden(_)), "{own}");

        let approved = store.approve(&r.id, "bob", at(10)).unwrap();
        assert_eq!(approved.state, State::Approved);
        assert_eq!(approved.decided_by.as_deref(), Some("bob"));
        assert_eq!(approved.expires_at, Some(at(610)));

        let twice = store.approve(&r.id, "carol", at(11)).unwrap_err();
        assert!(
            twice.to_string().contains("already approved by bob"),
            "{twice}"
        );
        let deny_after = store.deny(&r.id, "carol", "no", at(12)).unwrap_err();
        assert!(matches!(deny_after, ApprovalError::Conflict(_)));

        let grants = store.active_grants("alice", at(20)).unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].id, r.id);
        assert_eq!(grants[0].groups, groups);
        assert!(store.active_grants("bob", at(20)).unwrap().is_empty());
        assert!(store.active_grants("alice", at(610)).unwrap().is_empty());
        assert_eq!(store.get(&r.id, at(611)).unwrap().state, State::Expired);
        let late = store.revoke(&r.id, "bob", "done", at(700)).unwrap_err();
        assert!(matches!(late, ApprovalError::Conflict(_)));
    }

    #[test]
    fn revoking_ends_a_grant_and_denials_are_final() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store
            .create("alice", &scope("a"), "x", 600, &[], at(0))
            .unwrap();
        let b = store
            .create("alice", &scope("b"), "y", 600, &[], at(0))
            .unwrap();
        store.approve(&a.id, "bob", at(1)).unwrap();
        let revoked = store.revoke(&a.id, "bob", "done", at(2)).unwrap();
        assert_eq!(revoked.state, State::Revoked);
        assert_eq!(revoked.decision_reason.as_deref(), Some("done"));
        assert!(store.active_grants("alice", at(3)).unwrap().is_empty());

        store.deny(&b.id, "bob", "not now", at(1)).unwrap();
        assert!(store.approve(&b.id, "carol", at(2)).is_err());
        assert_eq!(store.get(&b.id, at(2)).unwrap().state, State::Denied);

        let listed = store
            .list(
                &ListFilter {
                    requester: Some("alice".into()),
                    state: Some(State::Denied),
                },
                at(3),
            )
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(matches!(
            store.get("nope", at(0)),
            Err(ApprovalError::NotFound(_))
        ));
    }

    #[test]
    fn an_unanswered_request_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store
            .create("alice", &scope("a"), "x", 600, &[], at(0))
            .unwrap();
        let ttl = i64::try_from(PENDING_TTL.as_secs()).unwrap();
        assert_eq!(store.get(&r.id, at(ttl)).unwrap().state, State::Expired);
        assert!(store.approve(&r.id, "bob", at(ttl + 1)).is_err());
    }
}
