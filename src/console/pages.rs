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
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::guard::{self, COOKIE, LOGIN_COOKIE};
use super::views::{self, Chrome};
use super::visits::Visit;
use super::{Console, UI_PREFIX};
use crate::gateway::{Gateway, OwnEndpoint};
use custody_web::assets;
use custody_web::model::{SessionDetail, SessionSummary};

/// The largest JSON answer a page reads, in bytes.
const MAX_JSON: usize = 16 * 1024 * 1024;
/// The largest recording a session page reads to list commands, markers and hits.
const MAX_RECORDING: usize = 64 * 1024 * 1024;
/// Sessions per page.
const PAGE: usize = 50;

type Shared = State<Arc<Gateway>>;
type Peer = ConnectInfo<SocketAddr>;

/// The console's routes (under [`UI_PREFIX`]).
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(UI_PREFIX, get(home))
        .route(&format!("{UI_PREFIX}/"), get(home))
        .route(&format!("{UI_PREFIX}/login"), get(login))
        .route(&format!("{UI_PREFIX}/login/callback"), get(callback))
        .route(&format!("{UI_PREFIX}/logout"), post(logout))
        .route(&format!("{UI_PREFIX}/sessions"), get(sessions))
        .route(&format!("{UI_PREFIX}/sessions/{{id}}"), get(session))
        .route(
            &format!("{UI_PREFIX}/sessions/{{id}}/download"),
            get(download),
        )
        .route(&format!("{UI_PREFIX}/key"), get(key))
        .route(&format!("{UI_PREFIX}/audit"), get(audit))
        .route(
            &format!("{UI_PREFIX}/requests"),
            get(requests).post(create_request),
        )
        .route(&format!("{UI_PREFIX}/requests/{{id}}"), get(request))
        .route(
            &format!("{UI_PREFIX}/requests/{{id}}/{{ruling}}"),
            post(decide),
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

/// Checks a state-changing request: same origin and the visit's CSRF token.
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

/// `GET /login?next=`: starts the authorization code flow.
async fn login(State(gateway): Shared, RawQuery(query): RawQuery) -> Response {
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
async fn callback(
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
async fn logout(State(gateway): Shared, headers: HeaderMap, body: Bytes) -> Response {
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

/// `GET /sessions?filters`.
async fn sessions(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions");
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &here(&path, query.as_deref()),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .filter(|(_, v)| !v.is_empty())
            .collect();
    let get = |k: &str| field(&params, k).unwrap_or_default().to_owned();
    let f = views::SessionFilterForm {
        grep: get("grep"),
        initiator: get("initiator"),
        effective_user: get("effective_user"),
        cluster: get("cluster"),
        namespace: get("namespace"),
        pod: get("pod"),
        kind: get("kind"),
        since: get("since"),
        until: get("until"),
        exit_code: get("exit_code"),
    };
    let auditor = gateway.is_auditor(&visit.principal);
    let api_query = {
        let mut api_query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            if matches!(
                k.as_str(),
                "grep"
                    | "initiator"
                    | "effective_user"
                    | "cluster"
                    | "namespace"
                    | "pod"
                    | "kind"
                    | "since"
                    | "until"
                    | "exit_code"
            ) {
                api_query.append_pair(k, v);
            }
        }
        api_query.append_pair("limit", &(PAGE + 1).to_string());
        api_query.finish()
    };
    let api_path = format!("/custody/v1/sessions?{api_query}");
    let (rows, error): (Vec<SessionSummary>, _) =
        match api_json(&gateway, &visit, peer, &headers, &api_path).await {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
    let next = (rows.len() > PAGE).then(|| {
        let last = &rows[PAGE - 1];
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "until") {
            q.append_pair(k, v);
        }
        // Sessions are newest first: the next page ends where this one did, a microsecond
        // before its oldest start (starts are distinct in practice; ties would repeat a row,
        // never lose one).
        q.append_pair("until", &before(&last.started_at));
        format!("{path}?{}", q.finish())
    });
    let now = Utc::now();
    let rows = rows.iter().take(PAGE).map(|s| row(s, now)).collect();
    render(&views::Sessions {
        chrome: chrome(&visit, "sessions"),
        heading: "Sessions",
        kinds: kinds(&f.kind),
        f,
        auditor,
        rows,
        error,
        next,
    })
}

fn kinds(chosen: &str) -> Vec<(&'static str, &'static str, bool)> {
    [
        ("", "any"),
        ("exec", "exec"),
        ("attach", "attach"),
        ("port-forward", "port-forward"),
    ]
    .into_iter()
    .map(|(value, label)| (value, label, value == chosen))
    .collect()
}

fn before(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_owned(),
        |t| {
            (t.with_timezone(&Utc) - chrono::Duration::microseconds(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        },
    )
}

fn row(s: &SessionSummary, now: DateTime<Utc>) -> views::SessionRow {
    views::SessionRow {
        id: s.id.clone(),
        started_at: s.started_at.clone(),
        started_utc: utc(&s.started_at),
        started_ago: ago(&s.started_at, now),
        initiator: s.initiator.clone(),
        effective_user: s.effective_user.clone(),
        cluster: s.cluster.clone(),
        namespace: s.namespace.clone(),
        pod: s.pod.clone(),
        container: s.container.clone(),
        kind: s.kind.name().to_owned(),
        command: s.command.join(" "),
        tty: s.tty,
        status: s.status.clone(),
        reason: s.reason.clone(),
        exit_code: s.exit_code,
        size: human_bytes(s.file_size),
    }
}

/// `GET /sessions/{id}[?t=&q=]`.
async fn session(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions/{id}");
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &here(&path, query.as_deref()),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let id_segment = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let detail: SessionDetail = match api_json(
        &gateway,
        &visit,
        peer,
        &headers,
        &format!("/custody/v1/sessions/{id_segment}"),
    )
    .await
    {
        Ok(d) => d,
        Err(e) if e.hides_existence() => {
            tracing::info!(user = %visit.principal.username, session = %id, reason = %e, "console: session not shown");
            return message(
                StatusCode::NOT_FOUND,
                "No such session",
                &format!("There is no session {id} that you may see."),
                Some((format!("{UI_PREFIX}/sessions"), "Sessions".into())),
            );
        }
        Err(e) => {
            return message(
                e.status,
                "Session not shown",
                &e.message,
                Some((format!("{UI_PREFIX}/sessions"), "Sessions".into())),
            );
        }
    };
    let q = field(&params, "q").unwrap_or_default().to_owned();
    let start = field(&params, "t")
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .unwrap_or(0.0);
    let now = Utc::now();
    let s = row(&detail.session, now);
    let mut page = views::Session {
        chrome: chrome(&visit, "sessions"),
        player_css: asset_url("asciinema-player.css"),
        player_js: asset_url("asciinema-player.min.js"),
        integrity: detail.integrity.clone(),
        meta_groups: detail.meta.initiator.groups.join(", "),
        issuer: detail.meta.initiator.issuer.clone(),
        client_addr: detail.meta.client_addr.clone(),
        approval: detail.meta.approval_id.clone(),
        started_utc: s.started_utc.clone(),
        started_ago: s.started_ago.clone(),
        ended_utc: detail
            .session
            .ended_at
            .as_deref()
            .map_or_else(|| "still open".to_owned(), utc),
        start: format!("{start:.3}"),
        duration: String::new(),
        markers_json: "[]".into(),
        events: Vec::new(),
        q,
        hits: Vec::new(),
        stdout: String::new(),
        stderr: String::new(),
        transcript: String::new(),
        s,
    };
    if detail.session.kind == custody_recorder::model::SessionKind::PortForward {
        match api_bytes(
            &gateway,
            &visit,
            peer,
            &headers,
            &format!("/custody/v1/sessions/{id_segment}/download?format=txt"),
            MAX_RECORDING,
        )
        .await
        {
            Ok(text) => page.transcript = String::from_utf8_lossy(&text).into_owned(),
            Err(e) => page.transcript = format!("(the transcript cannot be shown: {e})"),
        }
    } else {
        match api_bytes(
            &gateway,
            &visit,
            peer,
            &headers,
            &format!("/custody/v1/sessions/{id_segment}/download?format=raw"),
            MAX_RECORDING,
        )
        .await
        {
            Ok(raw) => fill_timeline(&mut page, &raw),
            Err(e) => page.stderr = format!("(the recording cannot be read here: {e})"),
        }
    }
    render(&page)
}

/// Fills a session page from its recording: duration, markers, typed commands, the search
/// hits, and a non-tty session's output.
fn fill_timeline(page: &mut views::Session, raw: &[u8]) {
    let timeline = custody_recorder::reader::read_recording_bytes(raw, None)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            custody_replay::Timeline::from_recording(&r, None).map_err(|e| e.to_string())
        });
    let timeline = match timeline {
        Ok(t) => t,
        Err(e) => {
            page.stderr = format!("(the recording cannot be read here: {e})");
            return;
        }
    };
    page.duration = seconds(timeline.end_us());
    let markers: Vec<(f64, String)> = timeline
        .markers()
        .iter()
        .map(|m| (to_secs(m.time_us), m.label.clone()))
        .collect();
    page.markers_json = serde_json::to_string(&markers).unwrap_or_else(|_| "[]".into());
    let mut events: Vec<(u64, views::TimelineEntry)> = timeline
        .markers()
        .iter()
        .map(|m| (m.time_us, entry(m.time_us, &m.label, "marker")))
        .chain(
            timeline
                .commands()
                .iter()
                .map(|c| (c.time_us, entry(c.time_us, &c.text, "command"))),
        )
        .collect();
    events.sort_by_key(|(t, _)| *t);
    page.events = events.into_iter().map(|(_, e)| e).collect();
    if !page.q.is_empty() {
        let mut position = 0;
        let mut first = true;
        while page.hits.len() < 100 {
            let Some((at, wrapped)) = timeline.search(&page.q, if first { 0 } else { position })
            else {
                break;
            };
            if wrapped && !first || (!first && at <= position) {
                break;
            }
            if first && at == 0 {
                // A hit at 0 is found again as "after 0"; record it once.
            }
            page.hits.push(entry(at, &page.q, "hit"));
            position = at;
            first = false;
        }
    }
    if !timeline.is_tty() {
        let end = timeline.end_us();
        for line in timeline.log() {
            let text = line.text_at(end);
            let out = if line.stderr {
                &mut page.stderr
            } else {
                &mut page.stdout
            };
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
}

fn entry(at_us: u64, text: &str, class: &'static str) -> views::TimelineEntry {
    let secs = at_us / 1_000_000;
    views::TimelineEntry {
        at: seek_point(at_us),
        label_time: format!("{:02}:{:02}", secs / 60, secs % 60),
        text: text.to_owned(),
        class,
    }
}

/// Where a link to an event seeks, in seconds with three decimals: the first millisecond
/// after the event, so that the screen shows it (a player shows the events up to the time it
/// is at, and rounding down could land just before this one).
fn seek_point(us: u64) -> String {
    let ms = us.div_ceil(1000) + 1;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn seconds(us: u64) -> String {
    format!("{:.3}", to_secs(us))
}

#[allow(
    clippy::cast_precision_loss,
    reason = "a session's seconds fit an f64 exactly enough"
)]
fn to_secs(us: u64) -> f64 {
    us as f64 / 1_000_000.0
}

/// `GET /sessions/{id}/download?format=`: the API's download, as the person, with `Range`.
async fn download(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions/{id}/download");
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &here(&path, query.as_deref()),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id_segment = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let api_path = here(
        &format!("/custody/v1/sessions/{id_segment}/download"),
        query.as_deref(),
    );
    let response = gateway
        .own_as(
            &visit.principal,
            peer,
            OwnEndpoint::Sessions,
            Method::GET,
            &api_path,
            forwarded(&headers, true),
            Bytes::new(),
        )
        .await;
    response.into_response()
}

/// `GET /key`: the gateway's public key (PEM).
async fn key(State(gateway): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &format!("{UI_PREFIX}/key"),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    gateway
        .own_as(
            &visit.principal,
            peer,
            OwnEndpoint::Sessions,
            Method::GET,
            "/custody/v1/key",
            forwarded(&headers, false),
            Bytes::new(),
        )
        .await
        .into_response()
}

/// `GET /audit?filters`: the trail, grouped by kubectl invocation.
async fn audit(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/audit");
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &here(&path, query.as_deref()),
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .filter(|(_, v)| !v.is_empty())
            .collect();
    const FIELDS: [(&str, &str); 7] = [
        ("initiator", "Initiator"),
        ("cluster", "Cluster"),
        ("namespace", "Namespace"),
        ("verb", "Verb"),
        ("resource", "Resource"),
        ("since", "Since (UTC)"),
        ("until", "Until (UTC)"),
    ];
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
        match keys.iter().position(|k| k.is_some() && *k == key) {
            Some(i) => groups[i].events.push(row),
            None => {
                keys.push(key);
                groups.push(views::AuditGroup {
                    command: event.kubectl_command.clone(),
                    who,
                    events: vec![row],
                });
            }
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
    if !r.resource.is_empty() {
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
    } else {
        what.clone_from(&r.path);
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

/// `GET /requests?state=`.
async fn requests(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/requests");
    let visit = match visit(
        &gateway,
        &Method::GET,
        &headers,
        &here(&path, query.as_deref()),
    ) {
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
async fn create_request(
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
async fn request(
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
async fn decide(
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

/// `GET /assets/{file}`: a compiled-in asset under its hashed name.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match assets::lookup(&file) {
        Some(asset) => assets::response(asset, &headers).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// The JSON answer of a sessions API call as the person.
async fn api_json<T: serde::de::DeserializeOwned>(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
) -> Result<T, ApiFailure> {
    let body = api_ok_body(
        gateway,
        visit,
        peer,
        headers,
        OwnEndpoint::Sessions,
        path,
        MAX_JSON,
    )
    .await;
    parse(body)
}

async fn api_json_at<T: serde::de::DeserializeOwned>(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    endpoint: OwnEndpoint,
    path: &str,
) -> Result<T, ApiFailure> {
    let body = api_ok_body(gateway, visit, peer, headers, endpoint, path, MAX_JSON).await;
    parse(body)
}

async fn api_bytes(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    max: usize,
) -> Result<Bytes, ApiFailure> {
    api_ok_body(
        gateway,
        visit,
        peer,
        headers,
        OwnEndpoint::Sessions,
        path,
        max,
    )
    .await
}

/// The body of a successful `GET` of the API as the person; the API's message otherwise.
#[allow(clippy::too_many_arguments, reason = "one request, spelled out")]
async fn api_ok_body(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    endpoint: OwnEndpoint,
    path: &str,
    max: usize,
) -> Result<Bytes, ApiFailure> {
    let response = gateway
        .own_as(
            &visit.principal,
            peer,
            endpoint,
            Method::GET,
            path,
            forwarded(headers, false),
            Bytes::new(),
        )
        .await;
    ok_body(response, max).await
}

/// An API answer's body when it succeeded; its message otherwise.
async fn ok_body(
    response: http::Response<crate::proxy::Body>,
    max: usize,
) -> Result<Bytes, ApiFailure> {
    let status = response.status();
    let body = read_body(response.into_body(), max)
        .await
        .map_err(|message| ApiFailure { status, message })?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ApiFailure {
            status,
            message: api_message(&body, status),
        })
    }
}

/// An API call that did not succeed: its status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(super) struct ApiFailure {
    /// The API's status.
    pub status: StatusCode,
    /// Its message.
    pub message: String,
}

impl ApiFailure {
    /// Whether the API refused for who is asking or found nothing: to a person, both read as
    /// "there is nothing here for you" (a 403 would tell that the session exists).
    fn hides_existence(&self) -> bool {
        matches!(self.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, ApiFailure>) -> Result<T, ApiFailure> {
    serde_json::from_slice(&body?).map_err(|e| ApiFailure {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the API's answer is not what the console expects: {e}"),
    })
}

/// Reads a whole answer of at most `max` bytes. (A loop over frames rather than
/// `Limited::collect`: the latter's error bound trips rustc's check that handler futures are
/// `Send`.)
async fn read_body(mut body: crate::proxy::Body, max: usize) -> Result<Bytes, String> {
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the answer could not be read: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > max {
                return Err(format!("the answer is larger than {max} bytes"));
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// The message of an API error (a `Status`'s `message`, or `{"error": ...}`).
fn api_message(body: &[u8], status: StatusCode) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| format!("the API answered {status}"), str::to_owned)
}

/// The browser's headers the API call carries: its user agent (for the audit trail) and, for
/// downloads, `Range` and `If-Range`.
fn forwarded(headers: &HeaderMap, ranges: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut copy = |name: header::HeaderName| {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    };
    copy(header::USER_AGENT);
    if ranges {
        copy(header::RANGE);
        copy(header::IF_RANGE);
    }
    out
}

fn json_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = forwarded(headers, false);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
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
    fn only_console_paths_are_followed_after_login() {
        assert!(is_console_path("/custody/ui/sessions/abc?t=3"));
        assert!(!is_console_path("https://evil.example/"));
        assert!(!is_console_path("//evil.example/custody/ui/"));
        assert!(!is_console_path("/custody/ui//evil.example"));
        assert!(!is_console_path("/custody/ui/\\evil"));
        assert!(!is_console_path("/clusters/demo/api"));
    }

    #[test]
    fn links_seek_just_after_their_event() {
        assert_eq!(seek_point(2_034_400), "2.036");
        assert_eq!(seek_point(2_034_000), "2.035");
        assert_eq!(seek_point(0), "0.001");
    }

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
        assert_eq!(
            before("2026-12-07T11:57:00.000000Z"),
            "2026-12-07T11:56:59.999999Z"
        );
        assert_eq!(human_bytes(1536), "1 KiB");
    }
}
