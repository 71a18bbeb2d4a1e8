//! Logging in and out: the start of the authorization code flow, its callback (which starts
//! the visit), and logout (which ends it on the server first).

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, StatusCode};

use super::{
    Peer, Shared, console, field, message, parse_form, redirect, same_origin_form, set_cookie,
    visit,
};
use crate::console::UI_PREFIX;
use crate::console::guard::{self, COOKIE, LOGIN_COOKIE};

/// `GET /login?next=`: starts the authorization code flow.
pub(super) async fn login(State(gateway): Shared, RawQuery(query): RawQuery) -> Response {
    let console = match console(&gateway) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let next = query
        .as_deref()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|n| is_console_path(n))
        .unwrap_or_else(|| format!("{UI_PREFIX}/sessions"));
    match console.login.start(&console.visits, next).await {
        Ok((url, state)) => {
            let mut response = redirect(&url);
            set_cookie(&mut response, &guard::login_cookie(&state));
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "console login could not start");
            message(
                StatusCode::BAD_GATEWAY,
                "Cannot log in now",
                &format!("The identity provider could not be reached: {e}"),
                Some((format!("{UI_PREFIX}/login"), "Try again".into())),
            )
        }
    }
}

/// Only console paths are followed after login: never another host (an open redirect).
fn is_console_path(next: &str) -> bool {
    next.starts_with(&format!("{UI_PREFIX}/"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
}

/// `GET /login/callback?code=&state=`: finishes the login and starts the visit.
pub(super) async fn callback(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let console = match console(&gateway) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let again = Some((format!("{UI_PREFIX}/login"), "Log in again".into()));
    if let Some(error) = field(&params, "error") {
        return message(
            StatusCode::FORBIDDEN,
            "Login refused",
            &format!("The identity provider said: {error}"),
            again,
        );
    }
    let (Some(code), Some(state)) = (field(&params, "code"), field(&params, "state")) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "The identity provider's answer has no code or state.",
            again,
        );
    };
    let bound = guard::cookie(&headers, LOGIN_COOKIE);
    let logged_in = match console
        .login
        .finish(&console.visits, state, bound, code)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            gateway.metrics().console_login_failed();
            tracing::warn!(%peer, error = %e, "console login failed");
            return message(StatusCode::FORBIDDEN, "Login failed", &e.to_string(), again);
        }
    };
    let principal = match gateway.authenticate_id_token(&logged_in.id_token).await {
        Ok(p) => p,
        Err(failure) => {
            tracing::warn!(%peer, %failure, "console login refused by the authenticator");
            return message(
                StatusCode::FORBIDDEN,
                "Login refused",
                &crate::authn::failure_message(&failure),
                again,
            );
        }
    };
    tracing::info!(%peer, user = %principal.username, "console login");
    let now = Utc::now().timestamp();
    let lifetime = principal
        .expires_at
        .map_or(console.config().max_session.as_secs(), |e| {
            u64::try_from(e - now)
                .unwrap_or(0)
                .min(console.config().max_session.as_secs())
        });
    let cookie = console.visits.begin(principal, now);
    let mut response = redirect(&logged_in.next);
    set_cookie(&mut response, &guard::session_cookie(&cookie, lifetime));
    set_cookie(&mut response, &guard::removal(LOGIN_COOKIE));
    response
}

/// `POST /logout`: ends the visit on the server, then the cookie.
pub(super) async fn logout(State(gateway): Shared, headers: HeaderMap, body: Bytes) -> Response {
    let here = format!("{UI_PREFIX}/sessions");
    let visit = match visit(&gateway, &Method::POST, &headers, &here) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let console = match console(&gateway) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let form = parse_form(&body);
    if let Err(r) = same_origin_form(console, &visit, &headers, &form) {
        return r;
    }
    if let Some(cookie) = guard::cookie(&headers, COOKIE) {
        console.visits.end(cookie);
    }
    let mut response = message(
        StatusCode::OK,
        "Logged out",
        "Your console session has ended.",
        Some((format!("{UI_PREFIX}/login"), "Log in again".into())),
    );
    set_cookie(&mut response, &guard::removal(COOKIE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_login() {
        assert!(is_console_path("/custody/ui/sessions/abc?t=3"));
        assert!(!is_console_path("https://evil.example/"));
        assert!(!is_console_path("//evil.example/custody/ui/"));
        assert!(!is_console_path("/custody/ui//evil.example"));
        assert!(!is_console_path("/custody/ui/\\evil"));
        assert!(!is_console_path("/clusters/demo/api"));
    }
}
