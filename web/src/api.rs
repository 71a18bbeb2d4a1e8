//! The API's handlers: routing under [`API_PREFIX`], session-id validation, the access rule,
//! and the answers (JSON, exports, and the raw file streamed with `Range`).
//!
//! The gateway authenticates the request (the same bearer tokens kubectl uses) and passes the
//! [`Caller`]; it writes the [`Outcome`] of every request, allowed or refused, into its audit
//! trail. This crate knows nothing of tokens or the audit trail's shape: an audit row becomes
//! JSON through [`ApiConfig::audit_json`].
//!
//! **Access.** A caller sees and downloads the sessions they initiated (the recording's
//! initiator username equals the caller's username); a member of one of
//! [`ApiConfig::auditor_groups`] sees every session. Anything else is 403. The same holds for
//! audit events (their initiator). Lists are narrowed to the caller's own sessions for a
//! non-auditor; asking for someone else's (`initiator=...`) is 403.
//!
//! **Session ids.** A session id must be a UUID in its 36-character form (any case); anything
//! else is 400, and a path with `.` or `..` segments or empty segments is 400 before routing.
//! A file is only ever found through the session's index row, never through a path built from
//! the request, and that path must lie in `<data_dir>/recordings` with the name
//! `<id>.cast.zst`.

mod downloads;
mod range;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use custody_recorder::catalog::Catalog;
use custody_recorder::export::ExportFormat;
use custody_recorder::index::{AuditQuery, AuditRecord, SessionRow};
use custody_recorder::integrity::{public_key_hex, public_key_pem};
use custody_recorder::reader::read_recording;
use custody_recorder::recovery::RECORDINGS_DIR;
use custody_recorder::verdict::{Verdict, last_verified_us};
use ed25519_dalek::VerifyingKey;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::error::{Error, Result};
use crate::model::{
    API_PREFIX, Integrity, SearchResult, SessionDetail, SessionFilter, SessionSummary,
};

/// A boxed error, as bodies carry it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type (the gateway's own).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
/// Turns an audit row into the JSON object the audit trail holds for it.
pub type AuditToJson = Arc<dyn Fn(&AuditRecord) -> serde_json::Value + Send + Sync>;

/// The most rows a list returns, whatever `limit` asks.
pub const MAX_LIMIT: usize = 1000;
/// The longest session id (as asked) an [`Outcome`] keeps for the audit trail.
const MAX_RECORDED_NAME: usize = 128;

/// Who is asking, as the gateway authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The username as the gateway maps it (the initiator username recordings carry).
    pub username: String,
    /// The groups as the gateway maps them.
    pub groups: Vec<String>,
}

/// Where recordings are when they are not files in the data directory: in cluster mode, in an
/// object store, from which a local copy is made for reading.
#[async_trait::async_trait]
pub trait RecordingFiles: Send + Sync {
    /// A local file that holds session `id`'s recording as stored.
    async fn local_copy(&self, id: &str) -> std::result::Result<PathBuf, RecordingFileError>;
}

/// Why a stored recording cannot be read now.
#[derive(Debug, thiserror::Error)]
pub enum RecordingFileError {
    /// The session runs, or its recording is still being stored.
    #[error("the recording is not stored yet (the session runs, or is being sealed)")]
    NotStoredYet,
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// What the API needs: where the index and recordings are, the key, who audits.
#[derive(Clone)]
pub struct ApiConfig {
    /// The data directory (`recordings/`).
    pub data_dir: PathBuf,
    /// The index of sessions and audit events.
    pub catalog: Arc<dyn Catalog>,
    /// Where recordings are read from: `None` for `<data_dir>/recordings`.
    pub files: Option<Arc<dyn RecordingFiles>>,
    /// The public key recordings are verified with.
    pub key: VerifyingKey,
    /// Members of these groups see every session and audit event.
    pub auditor_groups: Vec<String>,
    /// An audit row as the audit trail's JSON.
    pub audit_json: AuditToJson,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("data_dir", &self.data_dir)
            .field("catalog", &self.catalog.describe())
            .field("auditor_groups", &self.auditor_groups)
            .finish_non_exhaustive()
    }
}

/// What happened to one API request, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status answered.
    pub status: u16,
    /// `get` or `list` (the HTTP method, lowercase, for requests that matched no endpoint).
    pub verb: String,
    /// `sessions`, `key` or `audit`; empty when no endpoint matched.
    pub resource: String,
    /// `download` for downloads.
    pub subresource: String,
    /// The session id as asked (at most 128 characters), for session requests.
    pub name: String,
    /// The download format asked for (`raw` when none was).
    pub format: Option<String>,
    /// Why it was refused (the message returned), for a status of 400 or more.
    pub refusal: Option<String>,
}

/// The API: stateless apart from the downloads in flight.
pub struct Api {
    config: ApiConfig,
    downloads: downloads::Downloads,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether `path` belongs to the API (`/custody/v1` or below it).
pub fn is_api_path(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The endpoint a path names.
enum Route<'a> {
    Sessions,
    Session(&'a str),
    Download(&'a str),
    Key,
    Audit,
    Search,
}

impl Api {
    /// An API over the data directory in `config`.
    pub fn new(config: ApiConfig) -> Self {
        Self {
            config,
            downloads: downloads::Downloads::default(),
        }
    }

    /// Answers one authenticated request; returns the response and what to audit.
    pub async fn handle(
        &self,
        caller: &Caller,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> (Response<Body>, Outcome) {
        let mut outcome = Outcome {
            verb: method.as_str().to_ascii_lowercase(),
            ..Outcome::default()
        };
        let result = self.route(caller, method, uri, headers, &mut outcome).await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let message = match &error {
                    Error::Internal(detail) => {
                        tracing::error!(path = uri.path(), %detail, "sessions API failure");
                        "custody: the request failed inside the gateway; its log has the detail"
                            .to_owned()
                    }
                    other => other.to_string(),
                };
                outcome.refusal = Some(match &error {
                    Error::Internal(detail) => detail.clone(),
                    _ => message.clone(),
                });
                let mut response = status_json(error.status(), &message);
                if let Error::RangeNotSatisfiable { len } = error
                    && let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}"))
                {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                response
            }
        };
        outcome.status = response.status().as_u16();
        (response, outcome)
    }

    async fn route(
        &self,
        caller: &Caller,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>> {
        let rest = uri.path().strip_prefix(API_PREFIX).unwrap_or_default();
        let mut segments: Vec<&str> = rest.split('/').skip(1).collect();
        if segments.len() > 1 && segments.last() == Some(&"") {
            segments.pop();
        }
        let route = match segments.as_slice() {
            ["sessions"] => Route::Sessions,
            ["sessions", id] => Route::Session(id),
            ["sessions", id, "download"] => Route::Download(id),
            ["key"] => Route::Key,
            ["audit"] => Route::Audit,
            ["search"] => Route::Search,
            _ => {
                if let ["sessions", id, ..] = segments.as_slice() {
                    "sessions".clone_into(&mut outcome.resource);
                    outcome.name = truncate(id, MAX_RECORDED_NAME);
                }
                if segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
                    return Err(Error::BadRequest(
                        "custody: the path has empty, '.' or '..' segments and was refused".into(),
                    ));
                }
                return Err(Error::NotFound(format!(
                    "custody: no such endpoint; the API under {API_PREFIX} serves /sessions, \
                     /sessions/{{id}}, /sessions/{{id}}/download, /search, /key and /audit"
                )));
            }
        };
        let query = uri.query().unwrap_or_default();
        match route {
            Route::Sessions | Route::Audit | Route::Search => {
                "list".clone_into(&mut outcome.verb);
            }
            _ => "get".clone_into(&mut outcome.verb),
        }
        match &route {
            Route::Sessions => "sessions".clone_into(&mut outcome.resource),
            Route::Session(id) | Route::Download(id) => {
                "sessions".clone_into(&mut outcome.resource);
                outcome.name = truncate(id, MAX_RECORDED_NAME);
            }
            Route::Key => "key".clone_into(&mut outcome.resource),
            Route::Audit => "audit".clone_into(&mut outcome.resource),
            Route::Search => "search".clone_into(&mut outcome.resource),
        }
        if let Route::Download(_) = route {
            "download".clone_into(&mut outcome.subresource);
            outcome.format = Some(query_value(query, "format").unwrap_or_else(|| "raw".into()));
        }
        if method != Method::GET {
            return Err(Error::MethodNotAllowed(format!(
                "custody: the sessions API answers GET only, not {method}"
            )));
        }
        match route {
            Route::Sessions => self.list(caller, query).await,
            Route::Session(id) => self.detail(caller, id).await,
            Route::Download(id) => {
                let format = outcome.format.clone().unwrap_or_default();
                self.download(caller, id, &format, headers).await
            }
            Route::Key => key_response(&self.config.key),
            Route::Audit => self.audit(caller, query).await,
            Route::Search => self.search(caller, query).await,
        }
    }

    fn is_auditor(&self, caller: &Caller) -> bool {
        caller
            .groups
            .iter()
            .any(|g| self.config.auditor_groups.contains(g))
    }

    /// 403 unless the caller started the session or audits.
    fn authorize(&self, caller: &Caller, row: &SessionRow) -> Result<()> {
        if row.meta.initiator.username == caller.username || self.is_auditor(caller) {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "custody: {} may see only the sessions they started; session {} was started by \
             someone else (seeing every session needs membership in an auditor group, \
             access.auditor_groups)",
            caller.username, row.meta.session_id
        )))
    }

    async fn list(&self, caller: &Caller, query: &str) -> Result<Response<Body>> {
        let mut filter = parse_session_filter(query)?;
        if !self.is_auditor(caller) {
            match &filter.initiator {
                Some(who) if *who != caller.username => {
                    return Err(Error::Forbidden(format!(
                        "custody: {} may list only their own sessions, not those of {who:?} \
                         (listing others' sessions needs membership in an auditor group, \
                         access.auditor_groups)",
                        caller.username
                    )));
                }
                _ => filter.initiator = Some(caller.username.clone()),
            }
        }
        let mut query = filter
            .to_query()
            .map_err(|e| Error::BadRequest(format!("custody: {e}")))?;
        query.limit = Some(query.limit.unwrap_or(100).min(MAX_LIMIT));
        let rows = self
            .config
            .catalog
            .sessions(&query)
            .await
            .map_err(internal)?;
        let own = (!self.is_auditor(caller)).then(|| caller.username.clone());
        let list: Vec<SessionSummary> = rows
            .iter()
            .filter(|r| own.as_ref().is_none_or(|u| r.meta.initiator.username == *u))
            .map(SessionSummary::from)
            .collect();
        json_response(&list)
    }

    /// `GET /search?q=<words>[&limit=N]`: where the words occur in the output and typed lines
    /// of the sessions the caller may see (every session for an auditor), newest sessions
    /// first, with a snippet and the time to seek to.
    async fn search(&self, caller: &Caller, query: &str) -> Result<Response<Body>> {
        let words = query_value(query, "q")
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| {
                Error::BadRequest("custody: search needs the words to find: ?q=<words>".into())
            })?;
        let limit = match query_value(query, "limit") {
            None => 100,
            Some(raw) => raw.parse::<usize>().map_err(|_| {
                Error::BadRequest(format!("custody: limit {raw:?} is not a whole number"))
            })?,
        }
        .min(MAX_LIMIT);
        let hits = self
            .config
            .catalog
            .search(&words, Some(limit))
            .await
            .map_err(internal)?;
        let auditor = self.is_auditor(caller);
        // Security: hits are filtered by the same rule as sessions, one index read per session
        // (a hit names its session only; its initiator is on the session's row).
        let mut visible: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        let mut results = Vec::new();
        for hit in hits {
            let may_see = if auditor {
                true
            } else if let Some(known) = visible.get(&hit.session_id) {
                *known
            } else {
                let row = self
                    .config
                    .catalog
                    .session(&hit.session_id)
                    .await
                    .map_err(internal)?;
                let mine = row.is_some_and(|r| r.meta.initiator.username == caller.username);
                visible.insert(hit.session_id.clone(), mine);
                mine
            };
            if may_see {
                results.push(SearchResult {
                    session_id: hit.session_id,
                    source: hit.source.as_str().to_owned(),
                    time_us: hit.time_us,
                    snippet: hit.snippet,
                });
            }
        }
        json_response(&results)
    }

    /// The index row of a valid session id the caller may see.
    async fn session_row(&self, caller: &Caller, raw_id: &str) -> Result<SessionRow> {
        let id = parse_session_id(raw_id)?;
        let row = self
            .config
            .catalog
            .session(&id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Error::NotFound(format!("custody: no session {id}")))?;
        self.authorize(caller, &row)?;
        Ok(row)
    }

    async fn detail(&self, caller: &Caller, raw_id: &str) -> Result<Response<Body>> {
        let row = self.session_row(caller, raw_id).await?;
        let path = self.file_of(&row).await?;
        let key = self.config.key;
        let integrity = blocking(move || Ok(integrity(&path, &key))).await?;
        let audit = self
            .invocation(&row.meta.session_id)
            .await
            .map_err(internal)?;
        json_response(&SessionDetail {
            session: SessionSummary::from(&row),
            meta: row.meta.clone(),
            integrity,
            audit,
        })
    }

    async fn download(
        &self,
        caller: &Caller,
        raw_id: &str,
        format: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>> {
        let export = match format {
            "raw" => None,
            other => Some(ExportFormat::parse(other).ok_or_else(|| {
                Error::BadRequest(format!(
                    "custody: format {:?} is not one of raw, cast, cast-v2, txt",
                    truncate(other, 32)
                ))
            })?),
        };
        let row = self.session_row(caller, raw_id).await?;
        let path = self.file_of(&row).await?;
        let id = row.meta.session_id.clone();
        let slot = self.downloads.start(&caller.username)?;
        let Some(export) = export else {
            let response = range::serve_file(&path, &format!("{id}.cast.zst"), headers).await?;
            return Ok(response.map(|body| holding(body, slot)));
        };
        let key = self.config.key;
        let (bytes, verdict) = blocking(move || {
            let recording = match read_recording(&path, Some(&key)) {
                Ok(recording) => recording,
                Err(custody_recorder::Error::HeaderDamaged(damage)) => {
                    return Err(Error::Unprocessable(format!(
                        "custody: the recording's header does not verify ({damage}); only \
                         format=raw can be downloaded"
                    )));
                }
                Err(e) => return Err(Error::Internal(e.to_string())),
            };
            let bytes = export
                .export(&recording)
                .map_err(|e| Error::Internal(e.to_string()))?;
            Ok((bytes, Verdict::of(&recording).name()))
        })
        .await?;
        let len = bytes.len();
        let mut response = Response::new(holding(full(bytes), slot));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(export.content_type()),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        insert_disposition(h, &format!("{id}.{}", export.extension()));
        h.insert("x-custody-integrity", HeaderValue::from_static(verdict));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    async fn audit(&self, caller: &Caller, query: &str) -> Result<Response<Body>> {
        let mut filter = parse_audit_query(query)?;
        let auditor = self.is_auditor(caller);
        if !auditor {
            match &filter.initiator {
                Some(who) if *who != caller.username => {
                    return Err(Error::Forbidden(format!(
                        "custody: {} may read only the audit events of their own requests, not \
                         those of {who:?} (reading others' needs membership in an auditor \
                         group, access.auditor_groups)",
                        caller.username
                    )));
                }
                _ => filter.initiator = Some(caller.username.clone()),
            }
        }
        let own = (!auditor).then(|| caller.username.clone());
        let to_json = &self.config.audit_json;
        let events: Vec<_> = self
            .config
            .catalog
            .audit_events(&filter)
            .await
            .map_err(internal)?
            .iter()
            .filter(|r| own.as_ref().is_none_or(|u| r.initiator_username == *u))
            .map(|r| to_json(r))
            .collect();
        json_response(&events)
    }

    /// The recording file of an index row: a local copy from the object store in cluster
    /// mode, or the file, checked to be `<data_dir>/recordings/<id>.cast.zst`.
    async fn file_of(&self, row: &SessionRow) -> Result<PathBuf> {
        if let Some(files) = &self.config.files {
            // The id comes from the index row of a validated session id, never the request.
            return files.local_copy(&row.meta.session_id).await.map_err(|e| {
                Error::Internal(format!(
                    "session {}: the recording cannot be read from the object store: {e}",
                    row.meta.session_id
                ))
            });
        }
        let expected = format!("{}.cast.zst", row.meta.session_id);
        let dir = self.config.data_dir.join(RECORDINGS_DIR);
        let unreadable = |e: std::io::Error| {
            Error::Internal(format!(
                "session {}: the recording {} cannot be opened: {e}",
                row.meta.session_id,
                row.file_path.display()
            ))
        };
        let file = row.file_path.canonicalize().map_err(unreadable)?;
        let dir = dir.canonicalize().map_err(unreadable)?;
        if file.parent() != Some(dir.as_path())
            || file.file_name().and_then(|n| n.to_str()) != Some(expected.as_str())
        {
            return Err(Error::Internal(format!(
                "session {}: the index names {} as its recording, which is not {expected} in \
                 the recordings directory; refused",
                row.meta.session_id,
                row.file_path.display()
            )));
        }
        Ok(file)
    }

    /// The audit events of the kubectl invocation that started session `id`: its own event
    /// and the same person's requests with the same `Kubectl-Session` to the same cluster,
    /// oldest first, as the audit trail's JSON.
    async fn invocation(&self, id: &str) -> custody_recorder::Result<Vec<serde_json::Value>> {
        let catalog = &self.config.catalog;
        let mut records = Vec::new();
        if let Some(own) = catalog.audit_event(id).await? {
            if let Some(kubectl) = own.kubectl_session.clone() {
                records = catalog
                    .audit_events(&AuditQuery {
                        kubectl_session: Some(kubectl),
                        initiator: Some(own.initiator_username.clone()),
                        cluster: Some(own.cluster.clone()),
                        limit: Some(MAX_LIMIT),
                        ..AuditQuery::default()
                    })
                    .await?;
                // `Kubectl-Session` is chosen by the client: anyone can send another person's.
                // Only the same person's requests (same issuer and subject) to the same cluster
                // belong to this session's invocation.
                records.retain(|r| same_invocation(&own, r));
            }
            if !records.iter().any(|r| r.id == own.id) {
                records.push(own);
            }
        }
        records.sort_by_key(|r| r.seq);
        let to_json = &self.config.audit_json;
        Ok(records.iter().map(|r| to_json(r)).collect())
    }
}

/// A catalog failure, as the API reports it.
#[allow(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(internal)`, which hands the error over"
)]
fn internal(e: custody_recorder::Error) -> Error {
    Error::Internal(e.to_string())
}

/// How a file verifies against `key`.
pub fn integrity(path: &Path, key: &VerifyingKey) -> Integrity {
    let public_key = public_key_hex(key);
    match read_recording(path, Some(key)) {
        Ok(recording) => {
            let verdict = Verdict::of(&recording);
            Integrity {
                verdict: verdict.name().to_owned(),
                verified_frames: u32::try_from(recording.frames.len()).unwrap_or(u32::MAX),
                verified_until_us: last_verified_us(&recording),
                problem: verdict.problem(&recording),
                public_key,
            }
        }
        Err(e) => Integrity {
            verdict: "altered".into(),
            verified_frames: 0,
            verified_until_us: 0,
            problem: Some(match e {
                custody_recorder::Error::HeaderDamaged(damage) => damage.to_string(),
                other => format!("the file cannot be read: {other}"),
            }),
            public_key,
        },
    }
}

/// A session id as asked: a UUID in its 36-character form; returned lowercase.
pub fn parse_session_id(raw: &str) -> Result<String> {
    let bad = || {
        Error::BadRequest(format!(
            "custody: {:?} is not a session id (a UUID such as \
             0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70)",
            truncate(raw, 64)
        ))
    };
    if raw.len() != 36 {
        return Err(bad());
    }
    let id = uuid::Uuid::try_parse(raw).map_err(|_| bad())?;
    Ok(id.hyphenated().to_string())
}

/// The session filter of a query string (the names of [`SessionFilter`]'s fields).
pub fn parse_session_filter(query: &str) -> Result<SessionFilter> {
    let mut filter = SessionFilter::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "initiator" => filter.initiator = Some(value),
            "effective_user" => filter.effective_user = Some(value),
            "cluster" => filter.cluster = Some(value),
            "namespace" => filter.namespace = Some(value),
            "pod" => filter.pod = Some(value),
            "kind" => {
                filter.kind = Some(
                    serde_json::from_value(serde_json::Value::String(value.clone())).map_err(
                        |_| bad_filter("kind", &value, "exec, attach, port-forward or api"),
                    )?,
                );
            }
            "since" => filter.since = Some(value),
            "until" => filter.until = Some(value),
            "exit_code" => {
                filter.exit_code = Some(
                    value
                        .parse()
                        .map_err(|_| bad_filter("exit_code", &value, "an integer"))?,
                );
            }
            "grep" => filter.grep = Some(value),
            "limit" => {
                filter.limit = Some(
                    value
                        .parse()
                        .map_err(|_| bad_filter("limit", &value, "a positive integer"))?,
                );
            }
            other => return Err(unknown_filter(other)),
        }
    }
    Ok(filter)
}

/// The audit query of a query string: `initiator`, `effective_user`, `cluster`, `verb`,
/// `resource`, `namespace`, `decision` (`allow` or `deny`), `kubectl_session`, `since` and
/// `until` (RFC 3339), `limit` (at most 1000).
pub fn parse_audit_query(query: &str) -> Result<AuditQuery> {
    let mut q = AuditQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let time = |field: &str, v: &str| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_micros())
                .map_err(|_| bad_filter(field, v, "an RFC 3339 time"))
        };
        match key.as_ref() {
            "initiator" => q.initiator = Some(value),
            "effective_user" => q.effective_user = Some(value),
            "cluster" => q.cluster = Some(value),
            "verb" => q.verb = Some(value),
            "resource" => q.resource = Some(value),
            "namespace" => q.namespace = Some(value),
            "decision" if value == "allow" || value == "deny" => q.decision = Some(value),
            "decision" => return Err(bad_filter("decision", &value, "allow or deny")),
            "kubectl_session" => q.kubectl_session = Some(value),
            "since" => q.since_us = Some(time("since", &value)?),
            "until" => q.until_us = Some(time("until", &value)?),
            "limit" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| bad_filter("limit", &value, "a positive integer"))?;
                q.limit = Some(n);
            }
            other => return Err(unknown_filter(other)),
        }
    }
    q.limit = Some(q.limit.unwrap_or(100).min(MAX_LIMIT));
    Ok(q)
}

fn bad_filter(field: &str, value: &str, want: &str) -> Error {
    Error::BadRequest(format!(
        "custody: {field}: {:?} is not {want}",
        truncate(value, 64)
    ))
}

fn unknown_filter(name: &str) -> Error {
    Error::BadRequest(format!(
        "custody: unknown query parameter {:?}",
        truncate(name, 64)
    ))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn key_response(key: &VerifyingKey) -> Result<Response<Body>> {
    let pem = public_key_pem(key).map_err(|e| Error::Internal(e.to_string()))?;
    let mut response = Response::new(full(pem));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    Ok(response)
}

fn json_response<T: serde::Serialize>(value: &T) -> Result<Response<Body>> {
    let body = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?;
    let mut response = Response::new(full(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A Kubernetes `Status` failure, as the gateway answers every refusal.
pub fn status_json(code: StatusCode, message: &str) -> Response<Body> {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        416 => "RequestedRangeNotSatisfiable",
        422 => "Invalid",
        _ => "InternalError",
    };
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut response = Response::new(full(status.to_string()));
    *response.status_mut() = code;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn insert_disposition(headers: &mut HeaderMap, filename: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
/// `body`, holding its download slot until it has been sent.
fn holding(body: Body, slot: downloads::Slot) -> Body {
    UnsyncBoxBody::new(downloads::Holding::new(body, slot))
}

/// Whether `other` was sent by the same person to the same cluster as `own`: the only audit
/// rows a session's detail may show beside its own (see [`Api::detail`]).
pub fn same_invocation(own: &AuditRecord, other: &AuditRecord) -> bool {
    other.initiator_issuer == own.initiator_issuer
        && other.initiator_subject == own.initiator_subject
        && other.initiator_username == own.initiator_username
        && other.cluster == own.cluster
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("an API task failed: {e}")))?
}

#[cfg(test)]
mod tests;
