//! The client of a running gateway's sessions API (under [`API_PREFIX`]), as `custody sessions
//! --server` and `custody download --server` use it: HTTPS verified against a given CA file or
//! the system roots (`ring` only), a bearer token from a [`TokenSource`], the contract's JSON
//! types from `custody_web::model`, and errors that say what the gateway answered.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use custody_web::model::{API_PREFIX, SessionDetail, SessionFilter, SessionSummary};
use ed25519_dalek::VerifyingKey;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the gateway may take to start answering, and to send a whole JSON answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a download may go without receiving a byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer read (a session list, a session's detail).
const MAX_JSON: usize = 64 * 1024 * 1024;
/// The most of an error answer shown.
const MAX_MESSAGE_CHARS: usize = 500;

/// What went wrong talking to a gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--server` value is not an `https://HOST[:PORT]` URL.
    #[error("--server {url:?}: {why} (expected https://HOST:PORT)")]
    BadServer {
        /// What was given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The CA file cannot be read or holds no usable certificate.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No token, or the token file cannot be read or is empty.
    #[error("{0}")]
    Token(String),
    /// A session id that cannot be one (ids are UUIDs).
    #[error("{0:?} is not a session id")]
    BadId(String),
    /// The gateway could not be reached, or the connection failed before an answer.
    #[error("cannot reach {server}: {why}")]
    Connect {
        /// The gateway's URL.
        server: String,
        /// The cause, with its chain.
        why: String,
    },
    /// The gateway's certificate is not trusted, or TLS failed.
    #[error(
        "cannot reach {server}: TLS failed: {why} (pass the CA that signed the gateway's \
         certificate with --ca-file)"
    )]
    Tls {
        /// The gateway's URL.
        server: String,
        /// The cause, with its chain.
        why: String,
    },
    /// The gateway did not answer in time.
    #[error("{server} did not answer within {} s", .after.as_secs())]
    Timeout {
        /// The gateway's URL.
        server: String,
        /// How long was waited.
        after: Duration,
    },
    /// The gateway answered with an error status.
    #[error("{}", describe_status(*.status, .message))]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The gateway's message (its `Status` message or `error` field).
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("unexpected answer from {server}: {why}")]
    Protocol {
        /// The gateway's URL.
        server: String,
        /// What was wrong.
        why: String,
    },
}

impl Error {
    /// The HTTP status the gateway answered with, for an answer that was an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn describe_status(status: StatusCode, message: &str) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("error");
    let hint = match code {
        401 => {
            "; the gateway did not accept the token (pass a valid one with --token, \
             --token-file or CUSTODY_TOKEN)"
        }
        403 if message.is_empty() => "; the gateway does not allow this identity to do that",
        _ => "",
    };
    if message.is_empty() {
        format!("the gateway answered {code} {reason}{hint}")
    } else {
        format!("the gateway answered {code} {reason}: {message}{hint}")
    }
}

/// Where the bearer token for the gateway comes from. More sources (a cached login) fit here.
#[derive(Clone)]
pub enum TokenSource {
    /// A token given directly (`--token` or `CUSTODY_TOKEN`).
    Value(SecretString),
    /// A file holding the token; surrounding whitespace is ignored.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Value(_) => f.write_str("TokenSource::Value(..)"),
            TokenSource::File(path) => f.debug_tuple("TokenSource::File").field(path).finish(),
        }
    }
}

impl TokenSource {
    /// The token.
    pub fn token(&self) -> Result<SecretString, Error> {
        let token = match self {
            TokenSource::Value(token) => token.expose_secret().trim().to_owned(),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    Error::Token(format!(
                        "cannot read the token file {}: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned(),
        };
        if token.is_empty() {
            return Err(Error::Token(match self {
                TokenSource::Value(_) => "the token is empty".into(),
                TokenSource::File(path) => format!("the token file {} is empty", path.display()),
            }));
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::Token(
                "the token holds spaces or control characters".into(),
            ));
        }
        Ok(SecretString::from(token))
    }
}

/// A client of one gateway's sessions API.
#[derive(Clone)]
pub struct ApiClient {
    /// `https://host:port` plus any path prefix, without a trailing slash.
    base: String,
    token: SecretString,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of the gateway at `server` (`https://HOST[:PORT]`), authenticating with
    /// `token`, trusting the PEM certificates in `ca_file` or else the system's roots.
    pub fn new(server: &str, token: &TokenSource, ca_file: Option<&Path>) -> Result<Self, Error> {
        let pem = match ca_file {
            Some(path) => Some((
                path,
                std::fs::read(path).map_err(|e| Error::CaFile {
                    path: path.to_owned(),
                    why: e.to_string(),
                })?,
            )),
            None => None,
        };
        Self::build(
            server,
            token,
            pem.as_ref().map(|(path, pem)| (*path, pem.as_slice())),
        )
    }

    /// A client trusting the PEM certificates `ca_pem` (from a kubeconfig's
    /// `certificate-authority-data`, named `origin` in errors).
    pub fn with_ca_pem(
        server: &str,
        token: &TokenSource,
        origin: &Path,
        ca_pem: &[u8],
    ) -> Result<Self, Error> {
        Self::build(server, token, Some((origin, ca_pem)))
    }

    fn build(server: &str, token: &TokenSource, ca: Option<(&Path, &[u8])>) -> Result<Self, Error> {
        let base = parse_server(server)?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some((path, pem)) = ca {
            let ca_error = |why: String| Error::CaFile {
                path: path.to_owned(),
                why,
            };
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| ca_error(format!("not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
        } else {
            let native = rustls_native_certs::load_native_certs();
            let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls {
                server: base.clone(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            token: token.token()?,
            base,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The gateway's URL as given (without a trailing slash).
    pub fn server(&self) -> &str {
        &self.base
    }

    /// The sessions matching `filter`, newest first (`GET /sessions`).
    pub async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, Error> {
        let query = query_string(filter);
        let path = if query.is_empty() {
            "/sessions".to_owned()
        } else {
            format!("/sessions?{query}")
        };
        self.get_json(&path).await
    }

    /// The audit events matching `filter` (`GET /audit?...`: `initiator`, `verb`, `since`, ...
    /// as `docs/api.md` lists them), newest first, as the audit trail's JSON.
    pub async fn audit(&self, filter: &[(&str, String)]) -> Result<Vec<serde_json::Value>, Error> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in filter {
            query.append_pair(key, value);
        }
        let query = query.finish();
        let path = if query.is_empty() {
            "/audit".to_owned()
        } else {
            format!("/audit?{query}")
        };
        self.get_json(&path).await
    }

    /// Everything about one session (`GET /sessions/{id}`).
    pub async fn session(&self, id: &str) -> Result<SessionDetail, Error> {
        let id = checked_id(id)?;
        self.get_json(&format!("/sessions/{id}")).await
    }

    /// The public key that verifies the gateway's recordings (`GET /key`).
    pub async fn key(&self) -> Result<VerifyingKey, Error> {
        let response = self.get("/key").await?;
        let body = tokio::time::timeout(
            ANSWER_TIMEOUT,
            Limited::new(response.into_body(), MAX_JSON).collect(),
        )
        .await
        .map_err(|_| self.timeout())?
        .map_err(|e| self.protocol(format!("reading the key: {e}")))?
        .to_bytes();
        let text = String::from_utf8_lossy(&body);
        custody_recorder::integrity::parse_verifying_key(&text)
            .map_err(|e| self.protocol(format!("the gateway's key: {e}")))
    }

    /// Starts downloading a session's file in `format` (`raw`, `cast`, `cast-v2`, `txt`).
    pub async fn download(&self, id: &str, format: &str) -> Result<Download, Error> {
        let id = checked_id(id)?;
        let format: String = form_urlencoded::byte_serialize(format.as_bytes()).collect();
        let response = self
            .get(&format!("/sessions/{id}/download?format={format}"))
            .await?;
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Download {
            length,
            body: response.into_body(),
            server: self.base.clone(),
        })
    }

    /// The access requests this identity may see (`GET /requests`), newest first; `state`
    /// filters (`pending`, `approved`, ...).
    pub async fn access_requests(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<crate::approval::AccessRequest>, Error> {
        let path = match state {
            Some(state) => format!(
                "/requests?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("state", state)
                    .finish()
            ),
            None => "/requests".to_owned(),
        };
        self.get_json(&path).await
    }

    /// Asks for access (`POST /requests`).
    pub async fn create_access_request(
        &self,
        request: &crate::approval::NewRequest,
    ) -> Result<crate::approval::AccessRequest, Error> {
        let body = serde_json::to_vec(request).map_err(|e| self.protocol(e.to_string()))?;
        self.post_json("/requests", body).await
    }

    /// Approves, denies or revokes (`POST /requests/{id}/{ruling}`), with a reason.
    pub async fn rule_on_access_request(
        &self,
        id: &str,
        ruling: &str,
        reason: Option<&str>,
    ) -> Result<crate::approval::AccessRequest, Error> {
        let body = match reason {
            Some(reason) => serde_json::to_vec(&serde_json::json!({ "reason": reason }))
                .map_err(|e| self.protocol(e.to_string()))?,
            None => Vec::new(),
        };
        self.post_json(&format!("/requests/{id}/{ruling}"), body)
            .await
    }

    async fn post_json<T: DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> Result<T, Error> {
        let response = self.send(Method::POST, path, Bytes::from(body)).await?;
        self.read_json(response).await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let response = self.get(path).await?;
        self.read_json(response).await
    }

    async fn read_json<T: DeserializeOwned>(
        &self,
        response: Response<Incoming>,
    ) -> Result<T, Error> {
        let body = tokio::time::timeout(
            ANSWER_TIMEOUT,
            Limited::new(response.into_body(), MAX_JSON).collect(),
        )
        .await
        .map_err(|_| self.timeout())?
        .map_err(|e| self.protocol(format!("reading the answer: {e}")))?
        .to_bytes();
        serde_json::from_slice(&body).map_err(|e| self.protocol(format!("bad JSON: {e}")))
    }

    /// `GET {API_PREFIX}{path}`; an answer other than 200 (or 206) becomes [`Error::Status`].
    async fn get(&self, path: &str) -> Result<Response<Incoming>, Error> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    /// `{method} {API_PREFIX}{path}` with `body` (JSON when not empty); an answer other than
    /// 200, 201 or 206 becomes [`Error::Status`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        let url = format!("{}{API_PREFIX}{path}", self.base);
        let mut request = Request::builder().method(method);
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .uri(&url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose_secret()),
            )
            .header(
                header::USER_AGENT,
                concat!("custody/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.connect_error(&e))?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::OK | StatusCode::CREATED | StatusCode::PARTIAL_CONTENT
        ) {
            return Ok(response);
        }
        let body = tokio::time::timeout(
            ANSWER_TIMEOUT,
            Limited::new(response.into_body(), MAX_JSON).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
        Err(Error::Status {
            status,
            message: server_message(&body),
        })
    }

    fn connect_error(&self, error: &hyper_util::client::legacy::Error) -> Error {
        let mut why = error.to_string();
        let mut tls = false;
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            if cause.downcast_ref::<rustls::Error>().is_some() {
                tls = true;
            }
            let text = cause.to_string();
            if !why.contains(&text) {
                why = format!("{why}: {text}");
            }
            source = cause.source();
        }
        let server = self.base.clone();
        if tls || why.contains("certificate") {
            Error::Tls { server, why }
        } else {
            Error::Connect { server, why }
        }
    }

    fn timeout(&self) -> Error {
        Error::Timeout {
            server: self.base.clone(),
            after: ANSWER_TIMEOUT,
        }
    }

    fn protocol(&self, why: String) -> Error {
        Error::Protocol {
            server: self.base.clone(),
            why,
        }
    }
}

/// A download in progress: the body of the gateway's answer.
#[derive(Debug)]
pub struct Download {
    /// The size announced by the gateway, when it did.
    pub length: Option<u64>,
    body: Incoming,
    server: String,
}

impl Download {
    /// The next piece of the file; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| Error::Timeout {
                    server: self.server.clone(),
                    after: IDLE_TIMEOUT,
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(Error::Connect {
                        server: self.server.clone(),
                        why: format!("the download broke off: {e}"),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// `https://host[:port][/prefix]` without a trailing slash, or why not.
fn parse_server(server: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::BadServer {
        url: server.to_owned(),
        why: why.to_owned(),
    };
    let trimmed = server.trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(_) => return Err(bad("only https is supported")),
        None => return Err(bad("no scheme")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string does not belong in it"));
    }
    Ok(trimmed.to_owned())
}

/// Session ids are UUIDs; anything else never reaches a URL.
fn checked_id(id: &str) -> Result<&str, Error> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::BadId(id.to_owned()));
    }
    Ok(id)
}

/// The filter as the API's query string: the same names as the fields, set fields only.
pub fn query_string(filter: &SessionFilter) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(filter) {
        for (name, value) in fields {
            match value {
                serde_json::Value::String(text) => {
                    query.append_pair(&name, &text);
                }
                serde_json::Value::Number(n) => {
                    query.append_pair(&name, &n.to_string());
                }
                serde_json::Value::Bool(b) => {
                    query.append_pair(&name, if b { "true" } else { "false" });
                }
                _ => {}
            }
        }
    }
    query.finish()
}

/// The message of an error answer: a Kubernetes `Status`'s `message`, an `{"error": ...}`
/// object's text, or the body itself, shortened.
fn server_message(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) {
        for name in ["message", "error"] {
            if let Some(serde_json::Value::String(text)) = fields.get(name) {
                return shorten(text);
            }
        }
    }
    shorten(String::from_utf8_lossy(body).trim())
}

fn shorten(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use custody_recorder::model::SessionKind;

    use super::*;

    #[test]
    fn filters_become_the_query_string_with_the_same_names() {
        let filter = SessionFilter {
            initiator: Some("oidc:alice".into()),
            kind: Some(SessionKind::PortForward),
            since: Some("2026-11-27T15:00:00Z".into()),
            exit_code: Some(-1),
            grep: Some("rm -rf /".into()),
            limit: Some(5),
            ..SessionFilter::default()
        };
        let query = query_string(&filter);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("initiator"), Some("oidc:alice"));
        assert_eq!(get("kind"), Some("port-forward"));
        assert_eq!(get("since"), Some("2026-11-27T15:00:00Z"));
        assert_eq!(get("exit_code"), Some("-1"));
        assert_eq!(get("grep"), Some("rm -rf /"));
        assert_eq!(get("limit"), Some("5"));
        assert_eq!(pairs.len(), 6, "{query}");
        assert_eq!(query_string(&SessionFilter::default()), "");
    }

    #[test]
    fn servers_must_be_https_urls() {
        assert_eq!(
            parse_server("https://custody.example:8443/").unwrap(),
            "https://custody.example:8443"
        );
        for bad in [
            "http://x:1",
            "custody:8443",
            "https://",
            "https://x/?a=b",
            "",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_never_reach_a_url_unchecked() {
        assert!(checked_id("0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70").is_ok());
        for bad in ["", "../key", "a/b", "a?b", "a b", "%2e%2e"] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_answers_show_the_gateways_message() {
        assert_eq!(
            server_message(br#"{"kind":"Status","message":"forbidden: alice","code":403}"#),
            "forbidden: alice"
        );
        assert_eq!(
            server_message(br#"{"error":"no such session"}"#),
            "no such session"
        );
        assert_eq!(server_message(b"  plain\ntext "), "plain text");
        let error = Error::Status {
            status: StatusCode::FORBIDDEN,
            message: "alice may not list other people's sessions".into(),
        };
        assert_eq!(
            error.to_string(),
            "the gateway answered 403 Forbidden: alice may not list other people's sessions"
        );
    }

    #[test]
    fn tokens_come_from_a_value_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc.def.ghi\n").unwrap();
        let token = TokenSource::File(file.clone()).token().unwrap();
        assert_eq!(token.expose_secret(), "abc.def.ghi");
        std::fs::write(&file, "\n").unwrap();
        assert!(TokenSource::File(file).token().is_err());
        assert!(TokenSource::File(dir.path().join("none")).token().is_err());
        assert!(TokenSource::Value(SecretString::from(" ")).token().is_err());
    }
}
