//! Sessions: the list with every filter of the API and full-text search, a session's page
//! (player, typed commands, markers, search hits, integrity, downloads; a log for sessions
//! without a terminal; connections for port-forward), and downloads.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, StatusCode};

use super::{
    Peer, Shared, ago, asset_url, chrome, field, here, human_bytes, message, page_visit,
    query_params, render, utc, visit,
};
use crate::console::UI_PREFIX;
use crate::console::calls::{api_bytes, api_json, forwarded};
use crate::console::views;
use crate::console::visits::Visit;
use crate::gateway::{Gateway, OwnEndpoint};
use custody_web::model::{SearchResult, SessionDetail, SessionSummary};

/// The largest recording a session page reads to list commands, markers and hits.
const MAX_RECORDING: usize = 64 * 1024 * 1024;
/// Sessions per page.
const PAGE: usize = 50;
/// Search hits listed on a session's page at most.
const MAX_HITS: usize = 100;

/// `GET /sessions?filters`.
pub(super) async fn list(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions");
    let visit = match page_visit(&gateway, &headers, &path, query.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params = query_params(query.as_deref(), false);
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
    let mut hits = if f.grep.is_empty() || rows.is_empty() {
        std::collections::HashMap::new()
    } else {
        first_hits(&gateway, &visit, peer, &headers, &f.grep).await
    };
    let now = Utc::now();
    let rows = rows
        .iter()
        .take(PAGE)
        .map(|s| {
            let mut r = row(s, now);
            r.hit = hits.remove(&s.id);
            r
        })
        .collect();
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

/// Where `words` occur first in each session the person may see (the API's search, under the
/// same access rule as the list); empty when the search fails (the list still shows).
async fn first_hits(
    gateway: &Gateway,
    visit: &Visit,
    peer: SocketAddr,
    headers: &HeaderMap,
    words: &str,
) -> std::collections::HashMap<String, views::Hit> {
    let mut hits = std::collections::HashMap::new();
    let words = form_urlencoded::byte_serialize(words.as_bytes()).collect::<String>();
    let search = format!("/custody/v1/search?q={words}&limit={}", PAGE * 4);
    match api_json::<Vec<SearchResult>>(gateway, visit, peer, headers, &search).await {
        Ok(results) => {
            for result in &results {
                hits.entry(result.session_id.clone())
                    .or_insert_with(|| hit(result));
            }
        }
        Err(e) => tracing::warn!(error = %e, "console: the search hits could not be read"),
    }
    hits
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
        hit: None,
    }
}

/// A search hit as the list shows it: the moment to seek to and the snippet in pieces (the
/// index marks matched words with `«` and `»`).
fn hit(result: &SearchResult) -> views::Hit {
    let mut parts = Vec::new();
    let mut rest = result.snippet.as_str();
    while let Some(open) = rest.find('«') {
        if open > 0 {
            parts.push((rest[..open].to_owned(), false));
        }
        let after = &rest[open + '«'.len_utf8()..];
        let close = after.find('»').unwrap_or(after.len());
        parts.push((after[..close].to_owned(), true));
        rest = after.get(close + '»'.len_utf8()..).unwrap_or_default();
    }
    if !rest.is_empty() {
        parts.push((rest.to_owned(), false));
    }
    views::Hit {
        at: seek_point(result.time_us),
        parts,
    }
}

/// `GET /sessions/{id}[?t=&q=]`.
pub(super) async fn one(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions/{id}");
    let visit = match page_visit(&gateway, &headers, &path, query.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let params = query_params(query.as_deref(), true);
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
            return no_such_session(&id);
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
    let mut page = session_view(&visit, &detail, q, start);
    // Who watched it live: the watch events name the session (an auditor sees everyone's,
    // anyone else their own).
    let watches = format!(
        "/custody/v1/audit?verb=watch&resource=sessions&limit={}",
        custody_web::api::MAX_LIMIT
    );
    if let Ok(events) =
        api_json::<Vec<crate::audit::AuditEvent>>(&gateway, &visit, peer, &headers, &watches).await
    {
        page.watched_by = events
            .iter()
            .filter(|e| e.request.name == detail.session.id)
            .map(|e| {
                let who = e
                    .initiator
                    .as_ref()
                    .map_or_else(String::new, |p| p.username.clone());
                format!("{who} at {}", e.time.format("%Y-%m-%d %H:%M:%S UTC"))
            })
            .collect();
    }
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

/// A session's page from its details, before the recording is read.
fn session_view(visit: &Visit, detail: &SessionDetail, q: String, start: f64) -> views::Session {
    let s = row(&detail.session, Utc::now());
    views::Session {
        chrome: chrome(visit, "sessions"),
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
        events: Vec::new(),
        q,
        hits: Vec::new(),
        stdout: String::new(),
        stderr: String::new(),
        transcript: String::new(),
        watched_by: Vec::new(),
        s,
    }
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
        // `search` finds the next hit after a position, wrapping to the first when none is
        // after it: walk forward from 0; once it wraps, only a hit at 0 itself can be new.
        let mut position = 0;
        while page.hits.len() < MAX_HITS {
            match timeline.search(&page.q, position) {
                Some((at, false)) => {
                    page.hits.push(entry(at, &page.q, "hit"));
                    position = at;
                }
                Some((0, true)) => {
                    page.hits.insert(0, entry(0, &page.q, "hit"));
                    break;
                }
                Some((_, true)) | None => break,
            }
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

/// `GET /sessions/{id}/download?format=`: the API's download, as the person, with `Range`.
pub(super) async fn download(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let path = format!("{UI_PREFIX}/sessions/{id}/download");
    let visit = match page_visit(&gateway, &headers, &path, query.as_deref()) {
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
    // As on the session's page: someone else's session reads as no session at all.
    if matches!(
        response.status(),
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) {
        return no_such_session(&id);
    }
    response.into_response()
}

fn no_such_session(id: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "No such session",
        &format!("There is no session {id} that you may see."),
        Some((format!("{UI_PREFIX}/sessions"), "Sessions".into())),
    )
}

/// `GET /key`: the gateway's public key (PEM).
pub(super) async fn key(
    State(gateway): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_seek_just_after_their_event() {
        assert_eq!(seek_point(2_034_400), "2.036");
        assert_eq!(seek_point(2_034_000), "2.035");
        assert_eq!(seek_point(0), "0.001");
    }

    #[test]
    fn snippets_become_marked_pieces() {
        let result = SearchResult {
            session_id: "s".into(),
            source: "output".into(),
            time_us: 1_500_000,
            snippet: "cat /etc/«passwd» and «shadow»".into(),
        };
        let h = hit(&result);
        assert_eq!(h.at, "1.501");
        assert_eq!(
            h.parts,
            [
                ("cat /etc/".to_owned(), false),
                ("passwd".to_owned(), true),
                (" and ".to_owned(), false),
                ("shadow".to_owned(), true),
            ]
        );
    }

    #[test]
    fn the_next_page_ends_before_this_one() {
        assert_eq!(
            before("2026-12-07T11:57:00.000000Z"),
            "2026-12-07T11:56:59.999999Z"
        );
    }
}
