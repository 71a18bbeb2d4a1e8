//! The console's routes and handlers: login and logout, the sessions list and a session's page,
//! downloads, the audit trail, access requests, and the compiled-in assets.
//!
//! Every read goes through [`Gateway::own_as`], the JSON API as the logged-in person, so the
//! API's access rules are the console's and every read is in the audit trail. A person who is
//! not logged in is sent to the login (pages) or answered 401 (everything else); a session id
//! that is not theirs is the API's 404 or 403, shown as a page.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::guard::{self, COOKIE};
use super::views::{self, Chrome};
use super::visits::Visit;
use super::{Console, UI_PREFIX};
use crate::gateway::Gateway;
use custody_web::assets;

pub mod audit;
pub mod requests;
pub mod sessions;
pub mod signin;

type Shared = State<Arc<Gateway>>;
type Peer = ConnectInfo<SocketAddr>;

/// The console's routes (under [`UI_PREFIX`]).
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(UI_PREFIX, get(home))
        .route(&format!("{UI_PREFIX}/"), get(home))
        .route(&format!("{UI_PREFIX}/login"), get(signin::login))
        .route(
            &format!("{UI_PREFIX}/login/callback"),
            get(signin::callback),
        )
        .route(&format!("{UI_PREFIX}/logout"), post(signin::logout))
        .route(&format!("{UI_PREFIX}/sessions"), get(sessions::list))
        .route(&format!("{UI_PREFIX}/sessions/{{id}}"), get(sessions::one))
        .route(
            &format!("{UI_PREFIX}/sessions/{{id}}/download"),
            get(sessions::download),
        )
        .route(&format!("{UI_PREFIX}/key"), get(sessions::key))
        .route(&format!("{UI_PREFIX}/audit"), get(audit::trail))
        .route(
            &format!("{UI_PREFIX}/requests"),
            get(requests::list).post(requests::create),
        )
        .route(&format!("{UI_PREFIX}/requests/{{id}}"), get(requests::one))
        .route(
            &format!("{UI_PREFIX}/requests/{{id}}/{{ruling}}"),
            post(requests::decide),
        )
        .route(&format!("{UI_PREFIX}/live"), get(super::live::list))
        .route(
            &format!("{UI_PREFIX}/live/{{id}}"),
            get(super::live::watch_page),
        )
        .route(
            &format!("{UI_PREFIX}/live/{{id}}/watch"),
            get(super::live::watch_socket),
        )
        .route(
            &format!("{UI_PREFIX}/live/{{id}}/end"),
            post(super::live::end),
        )
        .route(&format!("{UI_PREFIX}/assets/{{file}}"), get(asset))
        .route(&format!("{UI_PREFIX}/{{*rest}}"), get(not_found))
        .layer(axum::middleware::map_response(secure))
}

/// Adds the security headers to every console answer; assets may be cached, pages not.
async fn secure(mut response: Response) -> Response {
    let cacheable = response
        .headers()
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v.as_bytes().starts_with(b"public"));
    guard::secure_headers(response.headers_mut(), cacheable);
    response
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the answer to send, at once"
)]
pub(super) fn console(gateway: &Gateway) -> Result<&Console, Response> {
    gateway.console().ok_or_else(|| {
        message(
            StatusCode::NOT_FOUND,
            "No console",
            "This gateway serves no web console ([console] is off).",
            None,
        )
    })
}

/// The visit the request's cookie stands for, or the answer to give instead: a redirect to
/// the login for a page (`GET`), 401 otherwise.
#[allow(
    clippy::result_large_err,
    reason = "the error is the answer to send, at once"
)]
pub(super) fn visit(
    gateway: &Gateway,
    method: &Method,
    headers: &HeaderMap,
    here: &str,
) -> Result<Visit, Response> {
    let console = console(gateway)?;
    if let Some(visit) = guard::cookie(headers, COOKIE).and_then(|c| console.visits.get(c)) {
        return Ok(visit);
    }
    if method == Method::GET {
        let next = form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>();
        return Err(redirect(&format!("{UI_PREFIX}/login?next={next}")));
    }
    Err(message(
        StatusCode::UNAUTHORIZED,
        "Logged out",
        "Your console session has ended; log in again.",
        Some((format!("{UI_PREFIX}/login"), "Log in".into())),
    ))
}

/// The visit of a page request for `path?query` (a redirect to the login that comes back here
/// when there is none).
#[allow(
    clippy::result_large_err,
    reason = "the error is the answer to send, at once"
)]
fn page_visit(
    gateway: &Gateway,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Result<Visit, Response> {
    visit(gateway, &Method::GET, headers, &here(path, query))
}

/// A page's query parameters, in order; without the empty ones unless `keep_empty` (an empty
/// filter field means no filter).
fn query_params(query: Option<&str>, keep_empty: bool) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, v)| keep_empty || !v.is_empty())
        .collect()
}

/// Checks a state-changing request: same origin and the visit's CSRF token.
#[allow(
    clippy::result_large_err,
    reason = "the error is the answer to send, at once"
)]
pub(super) fn same_origin_form(
    console: &Console,
    visit: &Visit,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), Response> {
    let checked = guard::check_same_origin(headers, &console.config().public_origin)
        .and_then(|()| guard::check_csrf(field(form, "csrf"), &visit.csrf));
    checked.map_err(|refusal| {
        tracing::warn!(user = %visit.principal.username, %refusal, "console request refused");
        message(StatusCode::FORBIDDEN, "Refused", &refusal.to_string(), None)
    })
}

pub(super) fn chrome(visit: &Visit, section: &'static str) -> Chrome {
    Chrome {
        user: visit.principal.username.clone(),
        groups: visit.principal.groups.join(", "),
        csrf: visit.csrf.clone(),
        section,
        css: asset_url("console.css"),
        js: asset_url("console.js"),
    }
}

pub(super) fn asset_url(name: &str) -> &'static str {
    assets::url_of(name).unwrap_or("/custody/ui/assets/missing")
}

fn here(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

async fn home() -> Response {
    redirect(&format!("{UI_PREFIX}/sessions"))
}

async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
        Some((format!("{UI_PREFIX}/sessions"), "Sessions".into())),
    )
}

/// `GET /assets/{file}`: a compiled-in asset under its hashed name.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match assets::lookup(&file) {
        Some(asset) => assets::response(asset, &headers).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => {
            tracing::error!(error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
                .into_response()
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

pub(super) fn message(
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<(String, String)>,
) -> Response {
    let page = views::Message {
        title: title.to_owned(),
        text: text.to_owned(),
        link,
        css: asset_url("console.css"),
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(_) => (status, format!("{title}: {text}\n")).into_response(),
    }
}

pub(super) fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// `2026-12-07 01:02:03 UTC` from RFC 3339.
fn utc(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_owned(),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        },
    )
}

/// "3 min", "2 h" for a number of seconds.
pub(super) fn duration_words(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{} s", s.max(0)),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} days", s / 86_400),
    }
}

/// "3 min ago" from RFC 3339.
fn ago(rfc3339: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(rfc3339) else {
        return String::new();
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds();
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024 && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_read_them() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ago("2026-12-07T11:57:00Z", now), "3 min ago");
        assert_eq!(ago("2026-12-05T12:00:00Z", now), "2 days ago");
        assert_eq!(
            utc("2026-12-07T11:57:00.123456Z"),
            "2026-12-07 11:57:00 UTC"
        );
        assert_eq!(human_bytes(1536), "1 KiB");
        assert_eq!(duration_words(3700), "1 h 1 min");
    }
}
