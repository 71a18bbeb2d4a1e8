//! Just-in-time access: the requests people make for access the policy holds for approval,
//! the decisions other people make on them, and the grants an approval becomes.
//!
//! Invariants, each enforced in [`store`] in one conditional SQL statement so that two
//! gateways (or two approvers racing) can never both win:
//! - nobody approves their own request;
//! - a request is decided once (approve or deny), and only while it is pending and fresh;
//! - a grant is exactly its request's scope, and ends at `expires_at` or when revoked;
//! - the duration is fixed when the request is made, within what the policy allows.
//!
//! The grant id is the request id, so a session's header and an audit row name the request
//! that allowed them.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{Grant, Scope};

pub mod notify;
pub mod postgres;
pub mod store;

pub use store::{ApprovalStore, Store};

/// How long a request waits for a decision before it expires unanswered.
pub const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);

/// The duration a request gets when it names none.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30 * 60);

/// The longest reason text kept, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for someone else's decision.
    Pending,
    /// Approved: a grant, until `expires_at`.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Approved, then revoked before it expired.
    Revoked,
    /// Approved and past `expires_at`, or pending for longer than [`PENDING_TTL`].
    Expired,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Revoked => "revoked",
            State::Expired => "expired",
        }
    }
}

/// One access request and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// The request id (a UUID), also the grant id.
    pub id: String,
    /// Who asked (the authenticated username).
    pub requester: String,
    /// Exactly what is asked for.
    pub scope: Scope,
    /// Why, in the requester's words.
    pub reason: String,
    /// How long the grant lasts once approved.
    pub duration_seconds: u64,
    /// Where it stands now.
    pub state: State,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// Who approved, denied or revoked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The denier's or revoker's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// When the grant ends (approved requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Groups the grant adds to the effective identity, for its scope only.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AccessRequest {
    /// The grant this request is, while it is one.
    pub fn grant(&self) -> Option<Grant> {
        if self.state != State::Approved {
            return None;
        }
        Some(Grant {
            id: self.id.clone(),
            requester: self.requester.clone(),
            scope: self.scope.clone(),
            expires_at: self.expires_at?.timestamp(),
            groups: self.groups.clone(),
        })
    }

    /// One line for people: `oidc:alice: exec in kube-system/coredns-sim on demo for 30m`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} for {}",
            self.requester,
            describe_scope(&self.scope),
            human(self.duration_seconds)
        )
    }
}

/// `exec in kube-system/coredns-sim on demo as carol`.
pub fn describe_scope(scope: &Scope) -> String {
    let mut out = scope.action.clone();
    let place = match &scope.pod {
        Some(pod) => format!("{}/{pod}", scope.namespace),
        None if scope.namespace.is_empty() => "the cluster".to_owned(),
        None => format!("namespace {}", scope.namespace),
    };
    // Writing to a String cannot fail.
    let _ = write!(out, " in {place} on {}", scope.cluster);
    if let Some(user) = &scope.as_user {
        let _ = write!(out, " as {user}");
        if !scope.as_groups.is_empty() {
            let _ = write!(out, " (groups {})", scope.as_groups.join(", "));
        }
    }
    out
}

/// `30m`, `2h`, `1h30m`, `45s`.
pub fn human(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = String::new();
    // Writing to a String cannot fail.
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

/// Reads a duration as people write it: `90s`, `30m`, `2h`, `1h30m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (write it like 30m, 2h or 1h30m)");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// What a person sends to ask for access (`POST /custody/v1/requests`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The cluster, as the gateway names it.
    pub cluster: String,
    /// The namespace; empty for cluster-scoped access.
    #[serde(default)]
    pub namespace: String,
    /// One pod (object) only; `None` for the whole namespace.
    #[serde(default)]
    pub pod: Option<String>,
    /// The action: `exec` unless said otherwise.
    #[serde(default)]
    pub action: Option<String>,
    /// Impersonate this user under the grant (`--as`).
    #[serde(default)]
    pub as_user: Option<String>,
    /// With these groups (`--as-group`).
    #[serde(default)]
    pub as_groups: Vec<String>,
    /// How long, in seconds; [`DEFAULT_DURATION`] when absent.
    #[serde(default)]
    pub duration_seconds: Option<u64>,
    /// Why. Required: an approver decides on it, an auditor reads it later.
    pub reason: String,
}

impl NewRequest {
    /// The scope asked for, after checking every field is something the cluster could mean.
    pub fn scope(&self) -> Result<Scope, ApprovalError> {
        name_field("cluster", &self.cluster, false)?;
        name_field("namespace", &self.namespace, true)?;
        if let Some(pod) = &self.pod {
            name_field("pod", pod, false)?;
        }
        let action = self.action.clone().unwrap_or_else(|| "exec".to_owned());
        name_field("action", &action, false)?;
        if let Some(user) = &self.as_user {
            text_field("as_user", user)?;
        }
        for group in &self.as_groups {
            text_field("as_groups", group)?;
        }
        if self.as_user.is_none() && !self.as_groups.is_empty() {
            return Err(ApprovalError::Invalid(
                "impersonating groups needs a user to impersonate (--as)".into(),
            ));
        }
        Ok(Scope {
            cluster: self.cluster.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            action,
            as_user: self.as_user.clone(),
            as_groups: self.as_groups.clone(),
        })
    }

    /// The reason, trimmed, one line, checked.
    pub fn reason(&self) -> Result<String, ApprovalError> {
        clean_reason(&self.reason).ok_or_else(|| {
            ApprovalError::Invalid("a reason is required (--reason \"INC-1234: ...\")".into())
        })
    }
}

/// A reason as kept: trimmed, control characters as spaces, at most [`MAX_REASON_CHARS`];
/// `None` when nothing is left.
pub fn clean_reason(text: &str) -> Option<String> {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A DNS-label-like name (cluster, namespace, pod, action): what Kubernetes allows, so a scope
/// can never name something the cluster would read differently.
fn name_field(field: &str, value: &str, empty_ok: bool) -> Result<(), ApprovalError> {
    if value.is_empty() && empty_ok {
        return Ok(());
    }
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApprovalError::Invalid(format!(
            "{field} {value:?} is not a valid name"
        )))
    }
}

/// An identity name: printable, no control characters, bounded.
fn text_field(field: &str, value: &str) -> Result<(), ApprovalError> {
    if value.is_empty() || value.len() > 253 || value.chars().any(char::is_control) {
        return Err(ApprovalError::Invalid(format!(
            "{field} {value:?} is not a valid name"
        )));
    }
    Ok(())
}

/// Why an approvals operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// No such request, or not one the asker may see (404).
    #[error("no access request {0}")]
    NotFound(String),
    /// The asker may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
    /// The store could not be read or written (500).
    #[error("the approvals store failed: {0}")]
    Store(#[from] rusqlite::Error),
    /// The shared store (PostgreSQL, in cluster mode) could not be read or written (500).
    #[error("the approvals store failed: {0}")]
    SharedStore(String),
    /// The store's directory could not be prepared.
    #[error("cannot prepare the approvals store at {path}: {source}")]
    StoreDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ApprovalError {
    /// The HTTP status for the API.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
            ApprovalError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApprovalError::Conflict(_) => StatusCode::CONFLICT,
            ApprovalError::Store(_)
            | ApprovalError::SharedStore(_)
            | ApprovalError::StoreDir { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "m", "30x", "1h30", "-5m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human(5400), "1h30m");
        assert_eq!(human(0), "0s");
    }

    #[test]
    fn a_scope_is_checked_field_by_field() {
        let ok = NewRequest {
            cluster: "demo".into(),
            namespace: "kube-system".into(),
            pod: Some("coredns-sim".into()),
            reason: "INC-1".into(),
            ..NewRequest::default()
        };
        let scope = ok.scope().unwrap();
        assert_eq!(scope.action, "exec");
        assert_eq!(
            describe_scope(&scope),
            "exec in kube-system/coredns-sim on demo"
        );
        for bad in [
            NewRequest {
                pod: Some("../x".into()),
                ..ok.clone()
            },
            NewRequest {
                namespace: "a/b".into(),
                ..ok.clone()
            },
            NewRequest {
                as_user: Some("eve\r\nImpersonate-Group: system:masters".into()),
                ..ok.clone()
            },
            NewRequest {
                as_groups: vec!["sre".into()],
                ..ok.clone()
            },
            NewRequest {
                cluster: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(bad.scope().is_err(), "{bad:?}");
        }
        let blank = NewRequest {
            reason: " \n\t".into(),
            ..ok.clone()
        };
        assert!(blank.reason().is_err());
        assert_eq!(
            clean_reason("INC-1\nrm").as_deref(),
            Some("INC-1 rm"),
            "one line"
        );
    }
}
