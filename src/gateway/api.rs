//! The sessions API on the gateway's listener: requests under `custody_web::model::API_PREFIX`
//! are authenticated like kubectl's, answered by `custody_web::api`, and audited like any
//! other request: one event per request, allowed or refused, with the principal, what was
//! asked and the answer.
//!
//! The event's request attributes are `verb` `get` or `list`, `api_group` `custody.dev`,
//! `version` `v1`, `resource` `sessions`, `key` or `audit`, `subresource` `download` for
//! downloads, `name` the session id as asked, and `path` the request's path **with its query**
//! (so a download's `format=` is in the trail). An allowed request's decision is durable before
//! any byte of the answer is sent (in strict mode; otherwise 503), and its completion carries
//! the status and the bytes sent once the body ends.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use custody_web::api::{Api, Caller, Outcome};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};

use super::{Exchange, Gateway};
use crate::audit::{AuditMode, Decision};
use crate::classify::RequestInfo;
use crate::principal::Principal;
use crate::proxy::{self, Body, Counted, OnEnd};

/// The longest request path (with its query) an audit event keeps.
const MAX_AUDITED_PATH: usize = 2048;

impl Gateway {
    /// Answers and audits one authenticated API request.
    pub(super) async fn api_request(
        &self,
        mut ex: Exchange,
        api: &Api,
        principal: &Principal,
        parts: &Parts,
    ) -> Response<Body> {
        let caller = Caller {
            username: principal.username.clone(),
            groups: principal.groups.clone(),
        };
        let (response, outcome) = api
            .handle(&caller, &parts.method, &parts.uri, &parts.headers)
            .await;
        ex.event.request = request_info(&outcome, &parts.uri);
        let status = response.status();
        let (mut head, body) = response.into_parts();
        if let Ok(id) = HeaderValue::from_str(&ex.event.id.to_string()) {
            head.headers.insert("audit-id", id);
        }
        if let Some(reason) = outcome.refusal {
            ex.event.decision = Decision::Deny(reason);
            ex.event.status_code = Some(status.as_u16());
            ex.event.latency_ms = Some(ex.elapsed_ms());
            ex.event.bytes_in = Some(0);
            ex.event.bytes_out = Some(0);
            if let Err(e) = self.audit.record_decision(&ex.event).await {
                self.metrics.audit_write_failure();
                tracing::error!(request_id = %ex.event.id, error = %e, "audit write failed");
            }
            self.metrics.request_done(
                "",
                &ex.event.request.verb,
                status.as_u16(),
                ex.started.elapsed(),
            );
            return Response::from_parts(head, body);
        }
        ex.event.decision = Decision::Allow;
        if let Err(e) = self.audit.record_decision(&ex.event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %ex.event.id, error = %e, "audit write failed");
            if self.audit.mode() == AuditMode::Strict {
                let msg =
                    "custody: the audit trail cannot be written, so the request was not answered";
                ex.event.decision = Decision::Deny(msg.to_owned());
                return self
                    .finish_refusal(ex, StatusCode::SERVICE_UNAVAILABLE, msg, false)
                    .await;
            }
        }
        let bytes_out = Arc::new(AtomicU64::new(0));
        let counted = Counted::new(body, bytes_out.clone());
        let audit = self.audit.clone();
        let metrics = self.metrics.clone();
        let body = OnEnd::new(counted, move |complete| {
            ex.event.bytes_in = Some(0);
            ex.event.bytes_out = Some(proxy::count(&bytes_out));
            if !complete {
                tracing::debug!(request_id = %ex.event.id, "API response ended early");
            }
            ex.complete(status, metrics, audit);
        });
        Response::from_parts(head, proxy::boxed(body))
    }
}

/// The audited request attributes of an API request.
fn request_info(outcome: &Outcome, uri: &http::Uri) -> RequestInfo {
    let mut path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    if path.len() > MAX_AUDITED_PATH {
        let mut end = MAX_AUDITED_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
    }
    RequestInfo {
        verb: outcome.verb.clone(),
        api_group: API_GROUP.to_owned(),
        version: "v1".to_owned(),
        resource: outcome.resource.clone(),
        subresource: outcome.subresource.clone(),
        namespace: String::new(),
        name: outcome.name.clone(),
        is_resource: !outcome.resource.is_empty(),
        path,
    }
}

/// The API group custody's own requests are audited under.
pub const API_GROUP: &str = "custody.dev";
