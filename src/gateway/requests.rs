//! The access requests API under `/custody/v1/requests`: ask for access the policy holds for
//! approval, list, approve, deny and revoke. Same listener and tokens as kubectl's requests,
//! audited the same way (`api_group` `custody.dev`, `resource` `accessrequests`, `subresource`
//! the decision), with the decision durable before anything changes.
//!
//! Who sees what: everyone sees their own requests; people whose roles may approve a request's
//! scope see it too. Nobody approves or denies their own request (the store enforces it in the
//! same statement that decides). Revoking a grant ends the streams it allowed at once.
//!
//! | Method | Path                           | Does                         |
//! |--------|--------------------------------|------------------------------|
//! | POST   | `/requests`                    | create (JSON [`NewRequest`]) |
//! | GET    | `/requests[?state=pending]`    | list                         |
//! | GET    | `/requests/{id}`               | one request                  |
//! | POST   | `/requests/{id}/approve`       | approve                      |
//! | POST   | `/requests/{id}/deny`          | deny (`{"reason": ".."}`)    |
//! | POST   | `/requests/{id}/revoke`        | revoke (`{"reason": ".."}`)  |

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::api::API_GROUP;
use super::status::status_response;
use super::{Exchange, Gateway};
use crate::approval::notify::{Happening, Notifier};
use crate::approval::store::ListFilter;
use crate::approval::{
    AccessRequest, ApprovalError, ApprovalStore, NewRequest, State, clean_reason,
};
use crate::audit::{AuditMode, Decision};
use crate::classify::RequestInfo;
use crate::control::registry::LiveSessions;
use crate::policy::Policy;
use crate::principal::Principal;
use crate::proxy::{self, Body, BoxError};

/// The path under the API prefix.
pub const REQUESTS_PATH: &str = "/custody/v1/requests";

/// The largest request body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// What the gateway needs for access requests: the store and who to tell.
#[derive(Clone)]
pub struct Approvals {
    /// The requests and grants.
    pub store: Arc<dyn ApprovalStore>,
    /// The webhook, if any.
    pub notifier: Arc<Notifier>,
}

/// Whether `path` belongs to this API.
pub fn is_requests_path(path: &str) -> bool {
    path == REQUESTS_PATH
        || path
            .strip_prefix(REQUESTS_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One operation, from the method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Create,
    List,
    Get(String),
    Decide(String, Ruling),
}

/// The three rulings on an existing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ruling {
    Approve,
    Deny,
    Revoke,
}

impl Ruling {
    fn name(self) -> &'static str {
        match self {
            Ruling::Approve => "approve",
            Ruling::Deny => "deny",
            Ruling::Revoke => "revoke",
        }
    }
}

fn route(method: &Method, path: &str) -> Option<Op> {
    let rest = path.strip_prefix(REQUESTS_PATH)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let id = |s: &str| uuid::Uuid::parse_str(s).ok().map(|u| u.to_string());
    match (method, segments.as_slice()) {
        (&Method::POST, []) => Some(Op::Create),
        (&Method::GET, []) => Some(Op::List),
        (&Method::GET, [one]) => Some(Op::Get(id(one)?)),
        (&Method::POST, [one, action]) => {
            let decision = match *action {
                "approve" => Ruling::Approve,
                "deny" => Ruling::Deny,
                "revoke" => Ruling::Revoke,
                _ => return None,
            };
            Some(Op::Decide(id(one)?, decision))
        }
        _ => None,
    }
}

/// The body of deny and revoke.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

impl Gateway {
    /// Answers and audits one authenticated access-requests API call.
    pub(super) async fn requests_request<B>(
        &self,
        mut ex: Exchange,
        principal: &Principal,
        parts: &Parts,
        body: B,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let op = route(&parts.method, parts.uri.path());
        ex.event.request = request_info(op.as_ref(), parts);
        let (Some(policy), Some(approvals)) = (&self.policy, &self.approvals) else {
            let msg = "custody: access requests are not enabled on this gateway (it has no \
                       policy, or no data directory to keep requests in)";
            return self.refuse(ex, StatusCode::NOT_FOUND, msg, msg).await;
        };
        let Some(op) = op else {
            let msg = "custody: no such access-requests operation; see `custody request --help`";
            return self.refuse(ex, StatusCode::NOT_FOUND, msg, msg).await;
        };
        let Ok(collected) = Limited::new(body, MAX_BODY).collect().await else {
            let msg = "custody: the request body is too large or could not be read";
            return self.refuse(ex, StatusCode::BAD_REQUEST, msg, msg).await;
        };
        let body = collected.to_bytes();
        ex.event.bytes_in = Some(body.len() as u64);
        ex.event.decision = Decision::Allow;
        if let Err(e) = self.audit.record_decision(&ex.event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %ex.event.id, error = %e, "audit write failed");
            if self.audit.mode() == AuditMode::Strict {
                let msg = "custody: the audit trail cannot be written, so nothing was changed";
                ex.event.decision = Decision::Deny(msg.to_owned());
                return self
                    .finish_refusal(ex, StatusCode::SERVICE_UNAVAILABLE, msg, false)
                    .await;
            }
        }
        let work = Work {
            policy: policy.clone(),
            approvals: approvals.clone(),
            live: self.live_sessions(),
            cluster: self.cluster.clone(),
            principal: principal.clone(),
            clusters: self.clusters.keys().cloned().collect(),
        };
        let query = parts.uri.query().map(str::to_owned);
        let outcome = tokio::task::spawn_blocking(move || work.run(&op, query.as_deref(), &body))
            .await
            .unwrap_or_else(|e| Err(ApprovalError::Invalid(format!("the request failed: {e}"))));
        let id = ex.event.id.to_string();
        let (status, response) = match outcome {
            Ok((status, json)) => {
                let mut response = Response::new(proxy::full(Bytes::from(json.to_string())));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                (status, response)
            }
            Err(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(request_id = %id, error = %e, "access request failed");
                }
                (
                    status,
                    status_response(status, &format!("custody: {e}"), &id),
                )
            }
        };
        ex.event.bytes_out = Some(0);
        ex.complete(status, self.metrics.clone(), self.audit.clone());
        response
    }
}

/// One call's work, run off the async threads (the store is synchronous `SQLite`).
struct Work {
    policy: Arc<Policy>,
    approvals: Approvals,
    live: Option<Arc<LiveSessions>>,
    cluster: Option<crate::cluster::ClusterMode>,
    principal: Principal,
    clusters: Vec<String>,
}

impl Work {
    fn run(
        &self,
        op: &Op,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<(StatusCode, serde_json::Value), ApprovalError> {
        let now = Utc::now();
        let store = &self.approvals.store;
        match op {
            Op::Create => self.create(body, now),
            Op::List => {
                let state = query.and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "state")
                        .map(|(_, v)| v.into_owned())
                });
                let state = match state.as_deref() {
                    None | Some("" | "all") => None,
                    Some("pending") => Some(State::Pending),
                    Some("approved") => Some(State::Approved),
                    Some("denied") => Some(State::Denied),
                    Some("revoked") => Some(State::Revoked),
                    Some("expired") => Some(State::Expired),
                    Some(other) => {
                        return Err(ApprovalError::Invalid(format!(
                            "state {other:?} is not one of pending, approved, denied, revoked, \
                             expired, all"
                        )));
                    }
                };
                let all = store.list(
                    &ListFilter {
                        requester: None,
                        state,
                    },
                    now,
                )?;
                let visible: Vec<&AccessRequest> = all.iter().filter(|r| self.may_see(r)).collect();
                Ok((StatusCode::OK, json(&visible)))
            }
            Op::Get(id) => {
                let request = store.get(id, now)?;
                if !self.may_see(&request) {
                    return Err(ApprovalError::NotFound(id.clone()));
                }
                Ok((StatusCode::OK, json(&request)))
            }
            Op::Decide(id, ruling) => self.decide(id, *ruling, body, now),
        }
    }

    /// `POST /requests`.
    fn create(
        &self,
        body: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<(StatusCode, serde_json::Value), ApprovalError> {
        let store = &self.approvals.store;
        let me = &self.principal.username;
        let new: NewRequest = serde_json::from_slice(body).map_err(|e| {
            ApprovalError::Invalid(format!("the request body is not a valid request: {e}"))
        })?;
        let scope = new.scope()?;
        let reason = new.reason()?;
        if !self.clusters.contains(&scope.cluster) {
            return Err(ApprovalError::Invalid(format!(
                "cluster {:?} is not served by this gateway",
                scope.cluster
            )));
        }
        let terms = self
            .policy
            .requestable(&self.principal, &scope)
            .map_err(ApprovalError::Forbidden)?;
        let duration = new
            .duration_seconds
            .unwrap_or(crate::approval::DEFAULT_DURATION.as_secs());
        if duration == 0 {
            return Err(ApprovalError::Invalid(
                "the duration must be positive".into(),
            ));
        }
        if duration > terms.max.as_secs() {
            return Err(ApprovalError::Invalid(format!(
                "the policy grants this for at most {}; ask for less (--for)",
                crate::approval::human(terms.max.as_secs())
            )));
        }
        let request = store.create(me, &scope, &reason, duration, &terms.groups, now)?;
        tracing::info!(request = %request.id, "{}", request.describe());
        self.approvals
            .notifier
            .notify(Happening::Requested, &request);
        Ok((StatusCode::CREATED, json(&request)))
    }

    /// `POST /requests/{id}/approve|deny|revoke`.
    fn decide(
        &self,
        id: &str,
        decision: Ruling,
        body: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<(StatusCode, serde_json::Value), ApprovalError> {
        let store = &self.approvals.store;
        let me = &self.principal.username;
        let request = store.get(id, now)?;
        if !self.may_see(&request) {
            return Err(ApprovalError::NotFound(id.to_owned()));
        }
        let approver = self.policy.may_approve(&self.principal, &request.scope);
        let reason = if body.is_empty() {
            ReasonBody::default()
        } else {
            serde_json::from_slice::<ReasonBody>(body).map_err(|e| {
                ApprovalError::Invalid(format!("the body is not {{\"reason\": ...}}: {e}"))
            })?
        };
        let reason = clean_reason(&reason.reason);
        let done = match decision {
            Ruling::Approve | Ruling::Deny => {
                if request.requester == *me {
                    return Err(ApprovalError::Forbidden(format!(
                        "you cannot {} your own request; someone else with approval \
                         rights must",
                        decision.name()
                    )));
                }
                if !approver {
                    return Err(ApprovalError::Forbidden(format!(
                        "{me} may not decide on access to {}",
                        crate::approval::describe_scope(&request.scope)
                    )));
                }
                if decision == Ruling::Approve {
                    store.approve(id, me, now)?
                } else {
                    let reason = reason.ok_or_else(|| {
                        ApprovalError::Invalid("a denial needs a reason (--reason)".into())
                    })?;
                    store.deny(id, me, &reason, now)?
                }
            }
            Ruling::Revoke => {
                if request.requester != *me && !approver {
                    return Err(ApprovalError::Forbidden(format!(
                        "{me} may not revoke access to {}",
                        crate::approval::describe_scope(&request.scope)
                    )));
                }
                let reason = reason.unwrap_or_else(|| "revoked".to_owned());
                let revoked = store.revoke(id, me, &reason, now)?;
                let ended = self.end_sessions(id, &reason);
                tracing::info!(request = %id, ended, "grant revoked");
                revoked
            }
        };
        let happening = match decision {
            Ruling::Approve => Happening::Approved,
            Ruling::Deny => Happening::Denied,
            Ruling::Revoke => Happening::Revoked,
        };
        tracing::info!(request = %id, by = %me, decision = decision.name(), "{}", done.describe());
        self.approvals.notifier.notify(happening, &done);
        Ok((StatusCode::OK, json(&done)))
    }

    fn may_see(&self, request: &AccessRequest) -> bool {
        request.requester == self.principal.username
            || self.policy.may_approve(&self.principal, &request.scope)
    }

    /// Ends every live session the grant allowed; returns how many.
    /// Ends the sessions grant `grant` allowed: here, and in cluster mode on every replica
    /// that holds one (through a command each). Returns how many ended here.
    fn end_sessions(&self, grant: &str, reason: &str) -> usize {
        let reason = format!("{GRANT_REVOKED}: {reason}");
        if let Some(cluster) = &self.cluster {
            // A blocking thread (see `Work`) may wait on the runtime.
            let told = tokio::runtime::Handle::current().block_on(cluster.end_grant_elsewhere(
                grant,
                &reason,
                &self.principal.username,
            ));
            match told {
                Ok(replicas) if !replicas.is_empty() => {
                    tracing::info!(request = %grant, ?replicas, "other replicas told to end the grant's sessions");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(request = %grant, error = %e, "other replicas could not be told to end the grant's sessions; they end when it would have expired");
                }
            }
        }
        let Some(live) = &self.live else { return 0 };
        live.end_grant(grant, &reason)
    }
}

/// The reason a session ended because its grant was revoked (manifest and farewell).
pub const GRANT_REVOKED: &str = "grant_revoked";

/// The reason a session ended because its grant expired.
pub const GRANT_EXPIRED: &str = "grant_expired";

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The audited attributes of an access-requests call.
fn request_info(op: Option<&Op>, parts: &Parts) -> RequestInfo {
    let (verb, name, subresource) = match op {
        Some(Op::Create) => ("create", String::new(), ""),
        Some(Op::List) | None => ("list", String::new(), ""),
        Some(Op::Get(id)) => ("get", id.clone(), ""),
        Some(Op::Decide(id, decision)) => ("update", id.clone(), decision.name()),
    };
    RequestInfo {
        verb: verb.to_owned(),
        api_group: API_GROUP.to_owned(),
        version: "v1".to_owned(),
        resource: "accessrequests".to_owned(),
        subresource: subresource.to_owned(),
        namespace: String::new(),
        name,
        is_resource: true,
        path: parts.uri.path().chars().take(512).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_exact() {
        let id = "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70";
        assert_eq!(route(&Method::POST, REQUESTS_PATH), Some(Op::Create));
        assert_eq!(route(&Method::GET, "/custody/v1/requests/"), Some(Op::List));
        assert_eq!(
            route(&Method::POST, &format!("{REQUESTS_PATH}/{id}/approve")),
            Some(Op::Decide(id.into(), Ruling::Approve))
        );
        assert_eq!(
            route(&Method::GET, &format!("{REQUESTS_PATH}/{id}")),
            Some(Op::Get(id.into()))
        );
        for (method, path) in [
            (Method::DELETE, REQUESTS_PATH.to_owned()),
            (Method::POST, format!("{REQUESTS_PATH}/{id}/merge")),
            (Method::POST, format!("{REQUESTS_PATH}/not-a-uuid/approve")),
            (Method::GET, format!("{REQUESTS_PATH}/{id}/approve/x")),
        ] {
            assert_eq!(route(&method, &path), None, "{method} {path}");
        }
        assert!(is_requests_path("/custody/v1/requests/x"));
        assert!(!is_requests_path("/custody/v1/requestsx"));
    }
}
