//! Access requests: ask, list, and approve, deny or revoke with a reason. The store refuses a
//! requester's own approval in the same statement that decides; the page never offers it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, StatusCode};

use super::{Peer, Shared, chrome, field, message, page_visit, redirect, render, visit};
use super::{console, not_found, parse_form, same_origin_form};
use crate::console::UI_PREFIX;
use crate::console::calls::{ApiFailure, MAX_JSON, api_json_at, json_headers, ok_body, parse};
use crate::console::views;
use crate::console::visits::Visit;
use crate::gateway::{Gateway, OwnEndpoint};

/// `GET /requests?state=`.
pub(super) async fn list(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/requests");
    let visit = match page_visit(&gateway, &headers, &path, query.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let state = query
        .as_deref()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "state")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "all".into());
    requests_page(&gateway, &visit, peer, &headers, state, None, false).await
}

async fn requests_page(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    state: String,
    error: Option<String>,
    open_form: bool,
) -> Response {
    let state_q = form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>();
    let listed: Result<Vec<crate::approval::AccessRequest>, ApiFailure> = api_json_at(
        gateway,
        visit,
        peer,
        headers,
        OwnEndpoint::Requests,
        &format!("/custody/v1/requests?state={state_q}"),
    )
    .await;
    let (rows, list_error) = match listed {
        Ok(list) => (list.iter().map(request_row).collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    render(&views::Requests {
        chrome: chrome(visit, "requests"),
        rows,
        states: ["all", "pending", "approved", "denied", "revoked", "expired"]
            .into_iter()
            .map(|s| (s, s == state))
            .collect(),
        error: error.or(list_error),
        open_form,
        default_cluster: gateway.cluster_names().first().cloned().unwrap_or_default(),
    })
}

fn request_row(r: &crate::approval::AccessRequest) -> views::RequestRow {
    let scope = &r.scope;
    let mut what = format!(
        "{} in {}/{}",
        scope.action,
        scope.cluster,
        if scope.namespace.is_empty() {
            "(cluster)"
        } else {
            &scope.namespace
        }
    );
    if let Some(pod) = &scope.pod {
        what = format!("{what}, pod {pod}");
    }
    if let Some(user) = &scope.as_user {
        what = format!("{what}, as {user}");
    }
    let stamp = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    views::RequestRow {
        id: r.id.clone(),
        requester: r.requester.clone(),
        scope: what,
        reason: r.reason.clone(),
        state: r.state.as_str().to_owned(),
        created: stamp(&r.created_at),
        duration: crate::approval::human(r.duration_seconds),
        decided: r.decided_by.as_ref().map(|by| {
            let mut text = format!("by {by}");
            if let Some(at) = &r.decided_at {
                text = format!("{text} at {}", stamp(at));
            }
            if let Some(why) = &r.decision_reason {
                text = format!("{text}: {why}");
            }
            text
        }),
        expires: r.expires_at.as_ref().map(stamp),
    }
}

/// `POST /requests`: asks for access (form fields as `custody request`'s flags).
pub(super) async fn create(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let visit = match visit(&gateway, &Method::POST, &headers, "") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(console) = console(&gateway) else {
        return not_found().await;
    };
    let form = parse_form(&body);
    if let Err(r) = same_origin_form(console, &visit, &headers, &form) {
        return r;
    }
    let get = |k: &str| field(&form, k).map(str::trim).filter(|v| !v.is_empty());
    let minutes = match get("minutes").map(str::parse::<u64>) {
        None => None,
        Some(Ok(m)) => Some(m.saturating_mul(60)),
        Some(Err(_)) => {
            return requests_page(
                &gateway,
                &visit,
                peer,
                &headers,
                "all".into(),
                Some("“For” must be a whole number of minutes".into()),
                true,
            )
            .await;
        }
    };
    let new = serde_json::json!({
        "cluster": get("cluster").unwrap_or_default(),
        "namespace": get("namespace").unwrap_or_default(),
        "pod": get("pod"),
        "action": get("action"),
        "duration_seconds": minutes,
        "reason": get("reason").unwrap_or_default(),
    });
    let response = gateway
        .own_as(
            &visit.principal,
            peer,
            OwnEndpoint::Requests,
            Method::POST,
            "/custody/v1/requests",
            json_headers(&headers),
            Bytes::from(new.to_string()),
        )
        .await;
    match parse::<crate::approval::AccessRequest>(ok_body(response, MAX_JSON).await) {
        Ok(created) => redirect(&format!("{UI_PREFIX}/requests/{}", created.id)),
        Err(e) => {
            requests_page(
                &gateway,
                &visit,
                peer,
                &headers,
                "all".into(),
                Some(e.to_string()),
                true,
            )
            .await
        }
    }
}

/// `GET /requests/{id}`: one request, with approve, deny and revoke for those who may.
pub(super) async fn one(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &format!("{UI_PREFIX}/requests/{id}"),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    request_page(&gateway, &visit, peer, &headers, &id, None).await
}

async fn request_page(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    id: &str,
    error: Option<String>,
) -> Response {
    let id_segment = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let found: Result<crate::approval::AccessRequest, ApiFailure> = api_json_at(
        gateway,
        visit,
        peer,
        headers,
        OwnEndpoint::Requests,
        &format!("/custody/v1/requests/{id_segment}"),
    )
    .await;
    match found {
        Ok(r) => {
            let mine = r.requester == visit.principal.username;
            let pending = r.state == crate::approval::State::Pending;
            render(&views::Request {
                chrome: chrome(visit, "requests"),
                r: request_row(&r),
                mine,
                can_decide: pending && !mine,
                error,
            })
        }
        Err(e) => message(
            if e.hides_existence() {
                StatusCode::NOT_FOUND
            } else {
                e.status
            },
            "Request not shown",
            &e.message,
            Some((format!("{UI_PREFIX}/requests"), "Requests".into())),
        ),
    }
}

/// `POST /requests/{id}/{approve|deny|revoke}`.
pub(super) async fn decide(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((id, ruling)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let visit = match visit(&gateway, &Method::POST, &headers, "") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(console) = console(&gateway) else {
        return not_found().await;
    };
    let form = parse_form(&body);
    if let Err(r) = same_origin_form(console, &visit, &headers, &form) {
        return r;
    }
    if !matches!(ruling.as_str(), "approve" | "deny" | "revoke") {
        return not_found().await;
    }
    let reason = field(&form, "reason").unwrap_or_default();
    let payload = if ruling == "approve" {
        "{}".to_owned()
    } else {
        serde_json::json!({ "reason": reason }).to_string()
    };
    let id_segment = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let response = gateway
        .own_as(
            &visit.principal,
            peer,
            OwnEndpoint::Requests,
            Method::POST,
            &format!("/custody/v1/requests/{id_segment}/{ruling}"),
            json_headers(&headers),
            Bytes::from(payload),
        )
        .await;
    match parse::<serde_json::Value>(ok_body(response, MAX_JSON).await) {
        Ok(_) => redirect(&format!("{UI_PREFIX}/requests/{id_segment}")),
        Err(e) => request_page(&gateway, &visit, peer, &headers, &id, Some(e.to_string())).await,
    }
}
