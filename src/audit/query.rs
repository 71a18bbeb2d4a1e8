//! Reading the audit trail back: the conversions between [`AuditEvent`] and the index's rows,
//! the filters `custody audit` offers, and a follow helper that returns events after a cursor.

use chrono::{DateTime, TimeZone, Utc};
use custody_recorder::index::{AuditCompletion, AuditQuery, AuditRecord, Index};

use super::{AuditEvent, Decision};
use crate::classify::RequestInfo;
use crate::error::{Error, Result};
use crate::principal::{AuthMethod, EffectiveIdentity, Principal};

/// Which events to return; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The initiator's username (or subject).
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
    /// `Some(true)` for allowed requests only, `Some(false)` for denied ones only.
    pub allowed: Option<bool>,
    /// The kubectl session (`Kubectl-Session`): all requests of one kubectl invocation.
    pub kubectl_session: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many events (default 100).
    pub limit: Option<usize>,
}

/// The events matching `filter`, newest first.
pub fn query(index: &Index, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
    let rows = index
        .audit_events(&to_query(filter, None))
        .map_err(Error::AuditIndex)?;
    Ok(rows.iter().map(from_record).collect())
}

/// The event of one request, by its custody request id (a recorded session's id is the
/// request id of the exec, attach or port-forward request that started it).
pub fn event(index: &Index, id: &str) -> Result<Option<AuditEvent>> {
    let record = index.audit_event(id).map_err(Error::AuditIndex)?;
    Ok(record.as_ref().map(from_record))
}

/// For `--follow`: the events matching `filter` written after the cursor `after` (0 to start
/// from the beginning), oldest first, and the cursor to pass next time. Poll it; events that
/// complete later are not returned again.
pub fn follow(index: &Index, filter: &AuditFilter, after: i64) -> Result<(Vec<AuditEvent>, i64)> {
    let rows = index
        .audit_events(&to_query(filter, Some(after)))
        .map_err(Error::AuditIndex)?;
    let next = rows.last().map_or(after, |r| r.seq);
    Ok((rows.iter().map(from_record).collect(), next))
}

fn to_query(f: &AuditFilter, after_seq: Option<i64>) -> AuditQuery {
    AuditQuery {
        initiator: f.initiator.clone(),
        effective_user: f.effective_user.clone(),
        cluster: f.cluster.clone(),
        verb: f.verb.clone(),
        resource: f.resource.clone(),
        namespace: f.namespace.clone(),
        decision: f
            .allowed
            .map(|a| if a { "allow" } else { "deny" }.to_owned()),
        kubectl_session: f.kubectl_session.clone(),
        since_us: f.since.map(|t| t.timestamp_micros()),
        until_us: f.until.map(|t| t.timestamp_micros()),
        after_seq,
        limit: f.limit,
    }
}

/// An index row as the JSON object the audit trail's file holds for it (an [`AuditEvent`]).
pub fn record_to_json(r: &AuditRecord) -> serde_json::Value {
    serde_json::to_value(from_record(r)).unwrap_or_default()
}

/// The index row for an event.
pub(super) fn to_record(e: &AuditEvent) -> AuditRecord {
    let (decision, reason) = match &e.decision {
        Decision::Allow => ("allow", e.allowed_by.clone().unwrap_or_default()),
        Decision::Deny(reason) => ("deny", reason.clone()),
    };
    let initiator = e.initiator.as_ref();
    let effective = e.effective.as_ref();
    let r = &e.request;
    AuditRecord {
        seq: 0,
        id: e.id.to_string(),
        time_us: e.time.timestamp_micros(),
        initiator_method: initiator
            .map(|p| method_name(p.method))
            .unwrap_or_default()
            .to_owned(),
        initiator_issuer: initiator.map(|p| p.issuer.clone()).unwrap_or_default(),
        initiator_subject: initiator.map(|p| p.subject.clone()).unwrap_or_default(),
        initiator_username: initiator.map(|p| p.username.clone()).unwrap_or_default(),
        initiator_groups: initiator.map(|p| p.groups.clone()).unwrap_or_default(),
        effective_user: effective.map(|i| i.user.clone()).unwrap_or_default(),
        effective_groups: effective.map(|i| i.groups.clone()).unwrap_or_default(),
        effective_uid: effective.map(|i| i.uid.clone()).unwrap_or_default(),
        client_addr: e.client_addr.clone(),
        user_agent: e.user_agent.clone(),
        cluster: e.cluster.clone(),
        verb: r.verb.clone(),
        api_group: r.api_group.clone(),
        api_version: r.version.clone(),
        resource: r.resource.clone(),
        subresource: r.subresource.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        path: r.path.clone(),
        decision: decision.to_owned(),
        reason,
        status_code: e.status_code,
        upstream_audit_id: e.upstream_audit_id.clone(),
        latency_us: e
            .latency_ms
            .map(|ms| i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX)),
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        kubectl_session: e.kubectl_session.clone(),
        kubectl_command: e.kubectl_command.clone(),
        replica_id: e.replica_id.clone().unwrap_or_default(),
        approval_id: e.approval_id.clone(),
    }
}

/// The completion update for an event.
pub(super) fn to_completion(e: &AuditEvent) -> AuditCompletion {
    let record = to_record(e);
    AuditCompletion {
        id: record.id,
        time_us: record.time_us,
        status_code: e.status_code.unwrap_or(0),
        upstream_audit_id: record.upstream_audit_id,
        latency_us: record.latency_us.unwrap_or(0),
        bytes_in: e.bytes_in.unwrap_or(0),
        bytes_out: e.bytes_out.unwrap_or(0),
    }
}

/// The event for an index row. Rows written by other tools with unparseable ids or methods are
/// still returned, with a nil id or an absent initiator.
pub(super) fn from_record(r: &AuditRecord) -> AuditEvent {
    let initiator = parse_method(&r.initiator_method).map(|method| Principal {
        method,
        issuer: r.initiator_issuer.clone(),
        subject: r.initiator_subject.clone(),
        username: r.initiator_username.clone(),
        groups: r.initiator_groups.clone(),
        expires_at: None,
    });
    let effective = (!r.effective_user.is_empty()).then(|| EffectiveIdentity {
        user: r.effective_user.clone(),
        groups: r.effective_groups.clone(),
        uid: r.effective_uid.clone(),
    });
    AuditEvent {
        id: uuid::Uuid::parse_str(&r.id).unwrap_or_default(),
        time: Utc.timestamp_micros(r.time_us).single().unwrap_or_default(),
        initiator,
        effective,
        client_addr: r.client_addr.clone(),
        user_agent: r.user_agent.clone(),
        cluster: r.cluster.clone(),
        request: RequestInfo {
            verb: r.verb.clone(),
            api_group: r.api_group.clone(),
            version: r.api_version.clone(),
            resource: r.resource.clone(),
            subresource: r.subresource.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            is_resource: !r.resource.is_empty(),
            path: r.path.clone(),
        },
        decision: if r.decision == "allow" {
            Decision::Allow
        } else {
            Decision::Deny(r.reason.clone())
        },
        status_code: r.status_code,
        upstream_audit_id: r.upstream_audit_id.clone(),
        latency_ms: r.latency_us.map(|us| u64::try_from(us / 1000).unwrap_or(0)),
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        kubectl_session: r.kubectl_session.clone(),
        kubectl_command: r.kubectl_command.clone(),
        replica_id: Some(r.replica_id.clone()).filter(|id| !id.is_empty()),
        allowed_by: (r.decision == "allow" && !r.reason.is_empty()).then(|| r.reason.clone()),
        // Rows written before the column was filled name the grant only in their reason.
        approval_id: r.approval_id.clone().or_else(|| grant_in(&r.reason)),
    }
}

/// The grant id an allow reason names (`... under grant <uuid> ...`): the index keeps the
/// reason text, which names the grant, rather than a column of its own.
/// The grant a policy decision's reason names (`approved access request <id> allows ...`).
fn grant_in(reason: &str) -> Option<String> {
    let (_, rest) = reason.split_once("approved access request ")?;
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .collect();
    uuid::Uuid::parse_str(&id).ok().map(|u| u.to_string())
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::Oidc => "oidc",
        AuthMethod::ServiceAccount => "service-account",
        AuthMethod::ClientCertificate => "client-certificate",
    }
}

fn parse_method(s: &str) -> Option<AuthMethod> {
    Some(match s {
        "oidc" => AuthMethod::Oidc,
        "service-account" => AuthMethod::ServiceAccount,
        "client-certificate" => AuthMethod::ClientCertificate,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
