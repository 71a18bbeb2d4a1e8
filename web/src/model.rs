//! The JSON shapes of the sessions API, shared by the gateway's endpoints and every client of
//! them (`custody sessions`, `custody download`, `custody play --server`), and the filter that
//! both the API's query string and the CLI's flags turn into an index query.
//!
//! Endpoints (all under [`API_PREFIX`], on the gateway's HTTPS listener, authenticated with the
//! same bearer tokens kubectl uses):
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /sessions?<filter>` | `[SessionSummary]`, newest first |
//! | `GET /sessions/{id}` | [`SessionDetail`] |
//! | `GET /sessions/{id}/download?format=raw\|cast\|cast-v2\|txt` | the file (`raw` with `Range`) |
//! | `GET /search?q=<words>[&limit=N]` | `[SearchResult]`: where the words occur |
//! | `GET /key` | the PEM public key that verifies this gateway's recordings |
//! | `GET /audit?<filter>` | audit events |

use chrono::{DateTime, SecondsFormat, Utc};
use custody_recorder::index::{SessionQuery, SessionRow};
use custody_recorder::model::{SessionKind, SessionStatus};
use serde::{Deserialize, Serialize};

/// Where the API lives on the gateway's listener (outside the `/clusters/...` proxy space).
pub const API_PREFIX: &str = "/custody/v1";

/// One session in a list: who, where, what, when and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session id (a UUID).
    pub id: String,
    /// `exec`, `attach`, `port-forward` or `api`.
    pub kind: SessionKind,
    /// Who really asked (the initiator's username as the gateway maps it).
    pub initiator: String,
    /// The identity the cluster was told it is.
    pub effective_user: String,
    /// The cluster's name in the gateway's configuration.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container (empty for port-forward).
    pub container: String,
    /// The command (exec only).
    pub command: Vec<String>,
    /// Whether it had a terminal.
    pub tty: bool,
    /// When it started, RFC 3339 UTC.
    pub started_at: String,
    /// When it ended, RFC 3339 UTC; `None` while open.
    pub ended_at: Option<String>,
    /// The process's exit code, when recorded.
    pub exit_code: Option<i32>,
    /// `open`, `complete`, `interrupted` or `terminated`.
    pub status: String,
    /// Why it was terminated (with `status` `terminated`).
    pub reason: Option<String>,
    /// What the reader found wrong with the file when it was indexed, if anything.
    pub damage: Option<String>,
    /// The recording's size in bytes.
    pub file_size: u64,
    /// In cluster mode, the replica that recorded the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
}

impl From<&SessionRow> for SessionSummary {
    fn from(row: &SessionRow) -> Self {
        let meta = &row.meta;
        let (status, reason) = status_parts(&row.status);
        Self {
            id: meta.session_id.clone(),
            kind: meta.kind,
            initiator: meta.initiator.username.clone(),
            effective_user: meta.effective.user.clone(),
            cluster: meta.cluster.clone(),
            namespace: meta.namespace.clone(),
            pod: meta.pod.clone(),
            container: meta.container.clone(),
            command: meta.command.clone(),
            tty: meta.tty,
            started_at: rfc3339(meta.started_at_us),
            ended_at: row.ended_at_us.map(rfc3339),
            exit_code: row.exit_code,
            status,
            reason,
            damage: row.damage.clone(),
            file_size: row.file_size,
            replica_id: meta.replica_id.clone(),
        }
    }
}

/// The name and the reason of a status, as the API shows them.
pub fn status_parts(status: &SessionStatus) -> (String, Option<String>) {
    match status {
        SessionStatus::Open => ("open".into(), None),
        SessionStatus::Complete => ("complete".into(), None),
        SessionStatus::Interrupted => ("interrupted".into(), None),
        SessionStatus::Terminated { reason } => ("terminated".into(), Some(reason.clone())),
    }
}

/// Microseconds since the Unix epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Where searched words occur in a session: its output or a line typed into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The session.
    pub session_id: String,
    /// `output` or `input` (a typed line).
    pub source: String,
    /// When (µs since the session started): a player seeks there.
    pub time_us: u64,
    /// The text around the match, the matched words between `«` and `»`.
    pub snippet: String,
}

/// Everything about one session: [`SessionDetail::session`] plus the full header, how the file
/// verifies, the API requests of the same kubectl invocation and the audit events that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    /// The summary.
    pub session: SessionSummary,
    /// The recording's header as written (initiator with issuer, subject and groups; effective
    /// groups; client address; user agent; gateway id; approval id).
    pub meta: custody_recorder::model::SessionMeta,
    /// How the file verifies against the gateway's key.
    pub integrity: Integrity,
    /// The audit events of the kubectl invocation that started it (same `Kubectl-Session`),
    /// and of the session's own request, as the audit trail holds them (JSON objects).
    pub audit: Vec<serde_json::Value>,
}

/// The verdict on a recording file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// `intact`, `interrupted` (intact up to where a crash cut it: sealed by recovery, or still
    /// open) or `altered`.
    pub verdict: String,
    /// Frames that verified.
    pub verified_frames: u32,
    /// Session time (µs) of the last verified event.
    pub verified_until_us: u64,
    /// The first problem, when not intact: e.g. `frame 3 at byte 81234: hash chain broken`.
    pub problem: Option<String>,
    /// The hex Ed25519 public key the file's signatures are checked against.
    pub public_key: String,
}

/// A session filter, as CLI flags and as the API's query string (the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionFilter {
    /// The initiator's username, exactly.
    pub initiator: Option<String>,
    /// The effective user, exactly.
    pub effective_user: Option<String>,
    /// The cluster.
    pub cluster: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// The pod.
    pub pod: Option<String>,
    /// `exec`, `attach`, `port-forward` or `api`.
    pub kind: Option<SessionKind>,
    /// Still running at or after this time, RFC 3339.
    pub since: Option<String>,
    /// Started at or before this time, RFC 3339.
    pub until: Option<String>,
    /// The exit code.
    pub exit_code: Option<i32>,
    /// Words that must all occur in the output or the typed commands.
    pub grep: Option<String>,
    /// At most this many sessions (default 100).
    pub limit: Option<usize>,
}

/// A filter that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A time that is not RFC 3339.
    #[error("{field}: {value:?} is not an RFC 3339 time (for example 2026-11-27T15:00:00Z)")]
    BadTime {
        /// `since` or `until`.
        field: &'static str,
        /// What was given.
        value: String,
    },
}

impl SessionFilter {
    /// The index query this filter asks for.
    pub fn to_query(&self) -> Result<SessionQuery, FilterError> {
        let time =
            |field: &'static str, value: &Option<String>| -> Result<Option<i64>, FilterError> {
                value
                    .as_deref()
                    .map(|v| {
                        DateTime::parse_from_rfc3339(v)
                            .map(|t| t.with_timezone(&Utc).timestamp_micros())
                            .map_err(|_| FilterError::BadTime {
                                field,
                                value: v.to_owned(),
                            })
                    })
                    .transpose()
            };
        Ok(SessionQuery {
            initiator: self.initiator.clone(),
            effective_user: self.effective_user.clone(),
            cluster: self.cluster.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            kind: self.kind,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            exit_code: self.exit_code,
            status: None,
            text: self.grep.clone(),
            limit: self.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_index_queries() {
        let filter = SessionFilter {
            initiator: Some("oidc:alice".into()),
            since: Some("2026-11-27T15:00:00Z".into()),
            grep: Some("rm -rf".into()),
            ..SessionFilter::default()
        };
        let query = filter.to_query().unwrap();
        assert_eq!(query.initiator.as_deref(), Some("oidc:alice"));
        assert_eq!(query.since, Some(1_795_791_600_000_000));
        assert_eq!(query.text.as_deref(), Some("rm -rf"));
        let bad = SessionFilter {
            until: Some("yesterday".into()),
            ..SessionFilter::default()
        };
        assert!(matches!(
            bad.to_query(),
            Err(FilterError::BadTime { field: "until", .. })
        ));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(
            rfc3339(1_795_791_600_000_001),
            "2026-11-27T15:00:00.000001Z"
        );
    }
}
