//! The audit trail: every filter of the API, events grouped by kubectl invocation, each
//! streaming request linked to its recorded session.

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::Response;
use http::HeaderMap;

use super::{Peer, Shared, chrome, field, page_visit, query_params, render, utc};
use crate::console::UI_PREFIX;
use crate::console::calls::api_json;
use crate::console::views;

/// The filters the page offers (the API's names).
const FIELDS: [(&str, &str); 7] = [
    ("initiator", "Initiator"),
    ("cluster", "Cluster"),
    ("namespace", "Namespace"),
    ("verb", "Verb"),
    ("resource", "Resource"),
    ("since", "Since (UTC)"),
    ("until", "Until (UTC)"),
];

/// `GET /audit?filters`: the trail, grouped by kubectl invocation.
pub(super) async fn trail(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/audit");
    let visit = match page_visit(&gateway, &headers, &path, query.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params = query_params(query.as_deref(), false);

    let fields = FIELDS
        .iter()
        .map(|(name, label)| {
            (
                *name,
                *label,
                field(&params, name).unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let api_query = {
        let mut api_query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if FIELDS.iter().any(|(name, _)| name == k) {
                api_query.append_pair(k, v);
            }
        }
        api_query.append_pair("limit", "200");
        api_query.finish()
    };
    let api_path = format!("/custody/v1/audit?{api_query}");
    let (events, error): (Vec<crate::audit::AuditEvent>, _) =
        match api_json::<Vec<serde_json::Value>>(&gateway, &visit, peer, &headers, &api_path).await
        {
            Ok(values) => (
                values
                    .into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
    let mut groups: Vec<views::AuditGroup> = Vec::new();
    let mut keys: Vec<Option<(String, String)>> = Vec::new();
    for event in &events {
        let who = event
            .initiator
            .as_ref()
            .map_or_else(|| "(unauthenticated)".to_owned(), |p| p.username.clone());
        let key = event.kubectl_session.clone().map(|s| (s, who.clone()));
        let row = audit_row(event);
        if let Some(i) = keys.iter().position(|k| k.is_some() && *k == key) {
            groups[i].events.push(row);
        } else {
            keys.push(key);
            groups.push(views::AuditGroup {
                command: event.kubectl_command.clone(),
                who,
                events: vec![row],
            });
        }
    }
    render(&views::Audit {
        chrome: chrome(&visit, "audit"),
        fields,
        error,
        groups,
    })
}

fn audit_row(event: &crate::audit::AuditEvent) -> views::AuditRow {
    let r = &event.request;
    let mut what = String::new();
    if r.resource.is_empty() {
        what.clone_from(&r.path);
    } else {
        what.push_str(&r.resource);
        if !r.subresource.is_empty() {
            what.push('/');
            what.push_str(&r.subresource);
        }
        if !r.namespace.is_empty() {
            what = format!("{what} in {}", r.namespace);
        }
        if !r.name.is_empty() {
            what = format!("{what} {}", r.name);
        }
    }
    if !event.cluster.is_empty() {
        what = format!("{what} ({})", event.cluster);
    }
    let (decision, reason) = match &event.decision {
        crate::audit::Decision::Allow => ("allow".to_owned(), None),
        crate::audit::Decision::Deny(reason) => ("deny".to_owned(), Some(reason.clone())),
    };
    let session = (matches!(r.subresource.as_str(), "exec" | "attach" | "portforward"))
        .then(|| event.id.to_string());
    let time = event
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    views::AuditRow {
        time_utc: utc(&time),
        time,
        verb: r.verb.clone(),
        what,
        decision,
        reason,
        status: event
            .status_code
            .map_or_else(|| "…".to_owned(), |c| c.to_string()),
        session,
    }
}
