//! The upgrade handshake with the API server, done so that an upgrade can never turn into a
//! raw pipe the client did not earn (CVE-2018-1002105 class, k8s-protocols §6).
//!
//! 1. [`classify_upgrade`] decides whether an upgrade request may be attempted at all: only
//!    `Upgrade: websocket` (RFC 6455 version 13) or `Upgrade: SPDY/3.1`, over HTTP/1.1, on
//!    `pods/exec`, `pods/attach` or `pods/portforward`, with no request body. It records what
//!    the client offered (WebSocket subprotocols, SPDY stream protocol versions).
//! 2. [`UpstreamHandshake`] dials a fresh TLS connection to the API server (HTTP/1.1 only, never
//!    pooled), writes the request head, reads the response head and decides:
//!    [`HandshakeOutcome::Upgraded`] only for a 101 with the requested `Upgrade`, a `Connection`
//!    naming `upgrade`, and a subprotocol the client offered (plus, for WebSocket, the right
//!    `Sec-WebSocket-Accept`); [`HandshakeOutcome::Refused`] for anything else, with the answer
//!    read (body bounded) and the upstream connection dropped. Redirects are never followed.
//!
//! Invariant: no byte the client sent after its request head reaches the API server before the
//! API server answered 101. The handshake writes only a head built from the parsed request; the
//! client's later bytes stay in hyper's connection buffer, and hyper hands them out (through
//! `hyper::upgrade::on`) only after the gateway has answered 101 itself, which it does only with
//! [`Upgraded`] in hand. On a refusal the gateway must answer with `Connection: close`
//! ([`Refused::client_response`] does) so hyper never parses those bytes as a next request.

use http::{HeaderMap, Method, Version};

use crate::classify::RequestInfo;

mod handshake;
mod head;

#[cfg(test)]
mod tests;

pub use handshake::{HandshakeOutcome, RefusalReason, Refused, Upgraded, UpstreamHandshake};

/// The upgrade protocol the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeProtocol {
    /// `Upgrade: websocket`.
    WebSocket,
    /// `Upgrade: SPDY/3.1`.
    Spdy,
}

impl UpgradeProtocol {
    /// The `Upgrade` token the gateway sends upstream.
    pub fn token(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Spdy => "SPDY/3.1",
        }
    }
}

/// The streaming subresource of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSubresource {
    /// `pods/exec`.
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
}

/// An upgrade request the gateway may attempt, and what the client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// WebSocket or SPDY/3.1.
    pub protocol: UpgradeProtocol,
    /// Exec, attach or port-forward.
    pub subresource: StreamSubresource,
    /// The offered subprotocols in the client's order: `Sec-WebSocket-Protocol` tokens, or one
    /// entry per `X-Stream-Protocol-Version` token. Empty for a WebSocket offering none.
    pub offered: Vec<String>,
    /// `Sec-WebSocket-Key` (WebSocket only).
    pub websocket_key: Option<String>,
}

/// Why an upgrade request is refused before anything is sent upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// `CONNECT` (or HTTP/2 extended CONNECT) is never tunnelled.
    #[error("CONNECT is not supported")]
    Connect,
    /// Upgrades exist only in HTTP/1.1.
    #[error("upgrades need HTTP/1.1, not {0}")]
    HttpVersion(String),
    /// The `Upgrade` header is missing, repeated, lists several protocols, or names a protocol
    /// other than `websocket` and `SPDY/3.1` (e.g. `h2c`).
    #[error("the upgrade {0:?} is not supported; only websocket and SPDY/3.1 are")]
    Protocol(String),
    /// `Connection` does not name `upgrade`.
    #[error("the Connection header does not name upgrade")]
    ConnectionHeader,
    /// The path is not a pod's `exec`, `attach` or `portforward` subresource.
    #[error("upgrades are only allowed on pods/exec, pods/attach and pods/portforward")]
    NotAStream,
    /// A method the protocol does not use (WebSocket: GET; SPDY: GET or POST).
    #[error("the method {0} cannot start a {1} upgrade")]
    Method(String, &'static str),
    /// The request announces a body; bytes after the head are never sent before the 101.
    #[error("an upgrade request must not have a body")]
    Body,
    /// `Sec-WebSocket-Key` missing, repeated or not 16 bytes in base64.
    #[error("the Sec-WebSocket-Key header is missing or invalid")]
    WebSocketKey,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("the Sec-WebSocket-Version must be 13")]
    WebSocketVersion,
    /// No `X-Stream-Protocol-Version` on a SPDY upgrade.
    #[error("X-Stream-Protocol-Version is required")]
    NoStreamProtocol,
    /// A protocol token that cannot be sent in a header.
    #[error("a requested protocol is not valid text")]
    BadProtocolValue,
}

/// Classifies an upgrade request (one carrying `Upgrade` or using `CONNECT`) whose path was
/// classified as `info`. Anything that is not a well-formed WebSocket or SPDY/3.1 upgrade to a
/// pod's streaming subresource is refused.
pub fn classify_upgrade(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    info: &RequestInfo,
) -> Result<UpgradeRequest, UpgradeRefusal> {
    if method == Method::CONNECT {
        return Err(UpgradeRefusal::Connect);
    }
    let upgrade = single_value(headers, "upgrade")
        .ok_or_else(|| UpgradeRefusal::Protocol(joined(headers, "upgrade")))?;
    let protocol = if upgrade.eq_ignore_ascii_case("websocket") {
        UpgradeProtocol::WebSocket
    } else if upgrade.eq_ignore_ascii_case("spdy/3.1") {
        UpgradeProtocol::Spdy
    } else {
        return Err(UpgradeRefusal::Protocol(upgrade.to_owned()));
    };
    if version != Version::HTTP_11 {
        return Err(UpgradeRefusal::HttpVersion(format!("{version:?}")));
    }
    if !header_tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(UpgradeRefusal::ConnectionHeader);
    }
    let subresource = stream_subresource(info).ok_or(UpgradeRefusal::NotAStream)?;
    if has_body(headers) {
        return Err(UpgradeRefusal::Body);
    }
    let offered: Vec<String>;
    let mut websocket_key = None;
    match protocol {
        UpgradeProtocol::WebSocket => {
            if method != Method::GET {
                return Err(UpgradeRefusal::Method(method.to_string(), "WebSocket"));
            }
            let key = single_value(headers, "sec-websocket-key")
                .filter(|k| is_websocket_key(k))
                .ok_or(UpgradeRefusal::WebSocketKey)?;
            if single_value(headers, "sec-websocket-version") != Some("13") {
                return Err(UpgradeRefusal::WebSocketVersion);
            }
            websocket_key = Some(key.to_owned());
            offered = protocol_tokens(headers, "sec-websocket-protocol")?;
        }
        UpgradeProtocol::Spdy => {
            if method != Method::POST && method != Method::GET {
                return Err(UpgradeRefusal::Method(method.to_string(), "SPDY"));
            }
            offered = protocol_tokens(headers, STREAM_PROTOCOL_VERSION)?;
            if offered.is_empty() {
                return Err(UpgradeRefusal::NoStreamProtocol);
            }
        }
    }
    Ok(UpgradeRequest {
        protocol,
        subresource,
        offered,
        websocket_key,
    })
}

/// `X-Stream-Protocol-Version`, lowercase as `http` stores names.
pub(crate) const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// The SPDY protocol a 101 without `X-Stream-Protocol-Version` means (client-go falls back to
/// the v1 handler).
pub const SPDY_DEFAULT_PROTOCOL: &str = "channel.k8s.io";

/// The streaming subresource `info` names, if any.
fn stream_subresource(info: &RequestInfo) -> Option<StreamSubresource> {
    if !info.is_resource
        || !info.api_group.is_empty()
        || info.version != "v1"
        || info.resource != "pods"
        || info.name.is_empty()
        || info.namespace.is_empty()
    {
        return None;
    }
    match info.subresource.as_str() {
        "exec" => Some(StreamSubresource::Exec),
        "attach" => Some(StreamSubresource::Attach),
        "portforward" => Some(StreamSubresource::PortForward),
        _ => None,
    }
}

/// Whether the request announces a body: any `Transfer-Encoding`, or a `Content-Length` other
/// than one `0`.
fn has_body(headers: &HeaderMap) -> bool {
    if headers.contains_key("transfer-encoding") {
        return true;
    }
    let mut lengths = headers.get_all("content-length").iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => false,
        (Some(v), None) => v.as_bytes().trim_ascii() != b"0",
        (Some(_), Some(_)) => true,
    }
}

/// A base64 `Sec-WebSocket-Key` of 16 bytes (RFC 6455 §4.1).
fn is_websocket_key(key: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|raw| raw.len() == 16)
}

/// The only line of a header, trimmed, if there is exactly one and it is text.
fn single_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().map(str::trim),
        _ => None,
    }
}

/// Every line of a header joined with `, `, lossy, for messages.
fn joined(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comma-separated tokens of every line of a header, trimmed, empty ones dropped.
pub(crate) fn header_tokens<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The protocol tokens of a header, refusing lines that are not visible ASCII.
fn protocol_tokens(headers: &HeaderMap, name: &str) -> Result<Vec<String>, UpgradeRefusal> {
    if headers.get_all(name).iter().any(|v| {
        !v.as_bytes()
            .iter()
            .all(|b| *b == b' ' || b.is_ascii_graphic())
    }) {
        return Err(UpgradeRefusal::BadProtocolValue);
    }
    Ok(header_tokens(headers, name).map(str::to_owned).collect())
}
