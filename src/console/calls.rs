//! The console's calls to custody's JSON API, as the person logged in: through
//! [`Gateway::own_as`], so the API's access rules and audit apply unchanged; answers read whole
//! within a size cap.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::visits::Visit;
use crate::gateway::{Gateway, OwnEndpoint};

/// The largest JSON answer a page reads, in bytes.
pub(super) const MAX_JSON: usize = 16 * 1024 * 1024;

/// The JSON answer of a sessions API call as the person.
pub(super) async fn api_json<T: serde::de::DeserializeOwned>(
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

pub(super) async fn api_json_at<T: serde::de::DeserializeOwned>(
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

pub(super) async fn api_bytes(
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
pub(super) async fn api_ok_body(
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
pub(super) async fn ok_body(
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
pub struct ApiFailure {
    /// The API's status.
    pub status: StatusCode,
    /// Its message.
    pub message: String,
}

impl ApiFailure {
    /// Whether the API refused for who is asking or found nothing: to a person, both read as
    /// "there is nothing here for you" (a 403 would tell that the session exists).
    pub(super) fn hides_existence(&self) -> bool {
        matches!(self.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, ApiFailure>,
) -> Result<T, ApiFailure> {
    serde_json::from_slice(&body?).map_err(|e| ApiFailure {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the API's answer is not what the console expects: {e}"),
    })
}

/// Reads a whole answer of at most `max` bytes. (A loop over frames rather than
/// `Limited::collect`: the latter's error bound trips rustc's check that handler futures are
/// `Send`.)
pub(super) async fn read_body(mut body: crate::proxy::Body, max: usize) -> Result<Bytes, String> {
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
pub(super) fn api_message(body: &[u8], status: StatusCode) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| format!("the API answered {status}"), str::to_owned)
}

/// The browser's headers the API call carries: its user agent (for the audit trail) and, for
/// downloads, `Range` and `If-Range`.
pub(super) fn forwarded(headers: &HeaderMap, ranges: bool) -> HeaderMap {
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

pub(super) fn json_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = forwarded(headers, false);
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}
