//! Live sessions in the console: the list, a watch page whose player reads a WebSocket, and
//! ending a session.
//!
//! Watching is read-only: the WebSocket carries the session's output (redacted as it is
//! recorded) to the browser as an asciicast v2 stream (the `v2.asciicast` subprotocol that
//! `asciinema-player` asks for), and nothing the browser sends reaches the session. Every watch is
//! an audit event (`verb` `watch`, `resource` `sessions`, `subresource` `live`, `name` the
//! session id), written before the first byte is sent; the session's own page lists the events
//! that name it, so whoever audits the watched session sees who watched.
//!
//! Security invariants:
//! - The upgrade's `Origin` must be the console's (`SameSite` does not cover WebSocket
//!   handshakes, so without this any site could watch through a logged-in browser).
//! - A person watches their own sessions; auditors watch every session. Anyone else gets the
//!   same 404 as for a session that does not exist.
//! - Ending a session is for auditors, with a CSRF token and a same-origin check, and audited.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

use super::guard;
use super::pages::{chrome, message, redirect, render, same_origin_form, visit};
use super::views;
use crate::control::registry::LiveSession;
use crate::gateway::Gateway;
use custody_recorder::model::EventKind;

type Shared = State<Arc<Gateway>>;
type Peer = ConnectInfo<SocketAddr>;

/// The subprotocol the player asks for that the gateway speaks.
const PROTOCOL: &str = "v2.asciicast";

/// The live sessions this person may watch, newest first.
fn visible(gateway: &Gateway, principal: &crate::principal::Principal) -> Vec<LiveSession> {
    let Some(live) = gateway.live_sessions() else {
        return Vec::new();
    };
    let auditor = gateway.is_auditor(principal);
    let mut sessions: Vec<LiveSession> = live
        .list()
        .into_iter()
        .filter(|s| auditor || s.initiator == principal.username)
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.started_at));
    sessions
}

/// `GET /live`.
pub async fn list(State(gateway): Shared, headers: HeaderMap) -> Response {
    let visit = match visit(&gateway, &Method::GET, &headers, "/custody/ui/live") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = chrono::Utc::now();
    let rows = visible(&gateway, &visit.principal)
        .iter()
        .map(|s| views::LiveRow {
            id: s.id.clone(),
            started_utc: s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            running_for: super::pages::duration_words((now - s.started_at).num_seconds()),
            initiator: s.initiator.clone(),
            effective_user: s.effective_user.clone(),
            target: format!("{}/{}/{}", s.cluster, s.namespace, s.pod),
            kind: s.kind.name(),
            command: s.command.join(" "),
            replica: s.replica.clone(),
        })
        .collect();
    render(&views::Live {
        chrome: chrome(&visit, "live"),
        rows,
    })
}

/// `GET /live/{id}`: the watch page.
pub async fn watch_page(
    State(gateway): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &format!("/custody/ui/live/{id}"),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(session) = visible(&gateway, &visit.principal)
        .into_iter()
        .find(|s| s.id == id)
    else {
        return gone(&id);
    };
    render(&views::Watch {
        player_css: super::pages::asset_url("asciinema-player.css"),
        player_js: super::pages::asset_url("asciinema-player.min.js"),
        may_end: gateway.is_auditor(&visit.principal),
        chrome: chrome(&visit, "live"),
        target: format!("{}/{}/{}", session.cluster, session.namespace, session.pod),
        command: session.command.join(" "),
        initiator: session.initiator,
        id,
    })
}

fn gone(id: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not running",
        &format!(
            "No session {id} is running that you may watch. If it ended, its recording is on its page."
        ),
        Some((format!("/custody/ui/sessions/{id}"), "Its recording".into())),
    )
}

/// `GET /live/{id}/watch`: the WebSocket the player reads.
pub async fn watch_socket(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers();
    let Ok(console) = super::pages::console(&gateway) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Security: the origin first, before the cookie is even looked at.
    if let Err(refusal) = guard::check_upgrade_origin(headers, &console.config().public_origin) {
        tracing::warn!(%peer, %refusal, "console WebSocket refused");
        return (StatusCode::FORBIDDEN, format!("{refusal}\n")).into_response();
    }
    let Some(visit) = guard::cookie(headers, guard::COOKIE).and_then(|c| console.visits.get(c))
    else {
        return (StatusCode::UNAUTHORIZED, "log in to the console first\n").into_response();
    };
    let Some(key) = websocket_key(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade is expected here\n",
        )
            .into_response();
    };
    if !offers_protocol(headers) {
        return (
            StatusCode::BAD_REQUEST,
            "the v2.asciicast subprotocol is expected\n",
        )
            .into_response();
    }
    let Some(session) = visible(&gateway, &visit.principal)
        .into_iter()
        .find(|s| s.id == id)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(live) = gateway.live_sessions() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(follow) = live.follow(&id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let audit = match gateway
        .audit_console(
            &visit.principal,
            peer,
            &user_agent,
            "watch",
            "live",
            &session.cluster,
            &session.namespace,
            &id,
        )
        .await
    {
        Ok(audit) => audit,
        Err(message) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{message}\n")).into_response();
        }
    };
    let Some(on_upgrade) = request
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .cloned()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    tracing::info!(%peer, user = %visit.principal.username, session = %id, "console watch started");
    tokio::spawn(async move {
        let sent = match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                relay(socket, follow).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "console watch upgrade failed");
                0
            }
        };
        audit.finish(sent).await;
    });
    switching_protocols(&key)
}

/// The 101 that accepts the upgrade with the `v2.asciicast` subprotocol.
fn switching_protocols(key: &str) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(PROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION)?.as_bytes() != b"13" {
        return None;
    }
    Some(
        headers
            .get(header::SEC_WEBSOCKET_KEY)?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

fn offers_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL)
}

/// Sends the session's output as an asciicast v2 stream until it ends or the viewer leaves;
/// returns the bytes sent. What the viewer sends is read only to notice that it left.
async fn relay<S>(
    mut socket: WebSocketStream<S>,
    mut follow: crate::control::registry::Follow,
) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut sent = 0u64;
    let header = serde_json::json!({ "version": 2, "width": 80, "height": 24 }).to_string();
    let started = std::time::Instant::now();
    if socket.send(Message::text(header)).await.is_err() {
        return 0;
    }
    loop {
        tokio::select! {
            received = follow.events.recv() => {
                let line = match received {
                    Ok(event) => v2_event(&event.kind, started.elapsed().as_secs_f64()),
                    Err(broadcast::error::RecvError::Lagged(missed)) => Some(
                        serde_json::json!([started.elapsed().as_secs_f64(), "o",
                            format!("\r\n[custody: this view fell behind; {missed} events skipped]\r\n")]).to_string()
                    ),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if let Some(line) = line {
                    sent += line.len() as u64;
                    if socket.send(Message::text(line)).await.is_err() {
                        return sent;
                    }
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return sent,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "the session ended".into(),
        })))
        .await;
    sent
}

/// One event as an asciicast v2 line, timed from when the viewer joined; `None` for what a
/// viewer does not see (input, markers).
fn v2_event(kind: &EventKind, at: f64) -> Option<String> {
    let value = match kind {
        EventKind::Output(bytes) | EventKind::Stderr(bytes) => {
            serde_json::json!([at, "o", String::from_utf8_lossy(bytes)])
        }
        EventKind::Resize { cols, rows } => serde_json::json!([at, "r", format!("{cols}x{rows}")]),
        EventKind::Exit { code, message } => {
            let text = match code {
                Some(code) => format!("\r\n[custody: the process exited with {code}]\r\n"),
                None => format!("\r\n[custody: {message}]\r\n"),
            };
            serde_json::json!([at, "o", text])
        }
        _ => return None,
    };
    Some(value.to_string())
}

/// `POST /live/{id}/end`: ends a session (auditors).
pub async fn end(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let visit = match visit(&gateway, &Method::POST, &headers, "") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(console) = super::pages::console(&gateway) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    if let Err(r) = same_origin_form(console, &visit, &headers, &form) {
        return r;
    }
    let Some(session) = visible(&gateway, &visit.principal)
        .into_iter()
        .find(|s| s.id == id)
    else {
        return gone(&id);
    };
    if !gateway.is_auditor(&visit.principal) {
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "Only auditors end other people's sessions.",
            None,
        );
    }
    let reason = form
        .iter()
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|r| !r.is_empty());
    let reason = format!(
        "ended from the console by {}{}",
        visit.principal.username,
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    );
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let audit = match gateway
        .audit_console(
            &visit.principal,
            peer,
            &user_agent,
            "delete",
            "live",
            &session.cluster,
            &session.namespace,
            &id,
        )
        .await
    {
        Ok(audit) => audit,
        Err(message_text) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not ended",
                &message_text,
                None,
            );
        }
    };
    let ended = gateway
        .live_sessions()
        .and_then(|live| live.kill(&id, Some(&reason)))
        .is_some();
    audit.finish(0).await;
    if ended {
        redirect(&format!("/custody/ui/sessions/{id}"))
    } else {
        gone(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_asciicast_v2_lines() {
        assert_eq!(
            v2_event(&EventKind::Output(b"hi\n".to_vec()), 1.5).unwrap(),
            r#"[1.5,"o","hi\n"]"#
        );
        assert_eq!(
            v2_event(
                &EventKind::Resize {
                    cols: 100,
                    rows: 30
                },
                2.0
            )
            .unwrap(),
            r#"[2.0,"r","100x30"]"#
        );
        assert!(v2_event(&EventKind::Input(b"secret".to_vec()), 0.0).is_none());
    }

    #[test]
    fn the_upgrade_must_offer_the_protocol() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v1.alis, v2.asciicast, raw"),
        );
        assert!(offers_protocol(&h));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("raw"),
        );
        assert!(!offers_protocol(&h));
    }
}
