//! The handshake with the API server: one fresh TLS connection, one request head, one
//! response head, one decision.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::head::{ResponseHead, read_body, read_head};
use super::{
    SPDY_DEFAULT_PROTOCOL, STREAM_PROTOCOL_VERSION, UpgradeProtocol, UpgradeRequest, header_tokens,
};
use crate::error::{Error, Result};
use crate::gateway::status::status_response;
use crate::impersonation::headers::clean_response_headers;
use crate::proxy::{self, Body};
use crate::upstream::Upstream;

/// How long the whole handshake may take by default: dial, request, response head.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a refusal's body may take (as the API server's upgrade proxy allows).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a refusal's body kept and returned to the client.
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// The upgrade handshake with one API server for one classified request.
#[derive(Debug)]
pub struct UpstreamHandshake<'a> {
    upstream: &'a Upstream,
    request: &'a UpgradeRequest,
    timeout: Duration,
}

/// What the API server answered.
#[derive(Debug)]
pub enum HandshakeOutcome {
    /// A valid 101: relay the stream.
    Upgraded(Box<Upgraded>),
    /// Anything else: answer the client and close both connections.
    Refused(Refused),
}

/// A completed upgrade: the API server switched to the requested protocol.
pub struct Upgraded {
    /// WebSocket or SPDY/3.1.
    pub protocol: UpgradeProtocol,
    /// The negotiated subprotocol: the WebSocket subprotocol (empty when the client offered
    /// none), or the SPDY stream protocol version (`channel.k8s.io` when the 101 named none).
    pub subprotocol: String,
    /// The 101's headers to send to the client: the API server's own, hop-by-hop headers
    /// removed, `Connection: Upgrade` and the API server's `Upgrade` kept.
    pub headers: HeaderMap,
    /// The connection to the API server, now carrying the stream.
    pub stream: TlsStream<TcpStream>,
    /// Bytes the API server sent right after its 101 head: they belong to the stream (§2.6)
    /// and go to the client first.
    pub leftover: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("protocol", &self.protocol)
            .field("subprotocol", &self.subprotocol)
            .field("headers", &self.headers)
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

impl Upgraded {
    /// The 101 response to give the client (then relay once hyper hands over the connection).
    pub fn client_response(&self) -> Response<Body> {
        let mut response = Response::new(proxy::full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().clone_from(&self.headers);
        response
    }
}

/// A refused upgrade: the API server's answer, its connection already dropped.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why the answer does not complete the upgrade.
    pub reason: RefusalReason,
    /// The API server's status.
    pub status: StatusCode,
    /// The API server's headers, hop-by-hop and framing headers removed.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_REFUSAL_BODY`] bytes (empty for a refused 101).
    pub body: Bytes,
    /// Whether the body was cut short (too long, too slow, or the connection failed).
    pub truncated: bool,
}

/// Why an API server's answer does not complete an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// The status is not 101 (an error, a success, a redirect, which is never followed).
    Status,
    /// A 101 whose `Upgrade` is not exactly the requested protocol.
    UpgradeHeader,
    /// A 101 whose `Connection` does not name `upgrade`.
    ConnectionHeader,
    /// A WebSocket 101 whose `Sec-WebSocket-Accept` does not match the key.
    WebSocketAccept,
    /// A WebSocket 101 with extensions nobody asked for.
    WebSocketExtensions,
    /// A 101 naming a subprotocol the client did not offer (or none when one is needed).
    Subprotocol(String),
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status => f.write_str("the upgrade was not accepted"),
            Self::UpgradeHeader => f.write_str("the 101 names another protocol"),
            Self::ConnectionHeader => f.write_str("the 101 lacks Connection: upgrade"),
            Self::WebSocketAccept => f.write_str("the 101 has a wrong Sec-WebSocket-Accept"),
            Self::WebSocketExtensions => f.write_str("the 101 adds WebSocket extensions"),
            Self::Subprotocol(p) => write!(f, "the 101 chose a protocol not offered: {p:?}"),
        }
    }
}

impl Refused {
    /// Whether the API server's answer goes to the client as is: an error status (4xx, 5xx)
    /// that refused the upgrade. Anything else (a 2xx, a 3xx, a 101 that is not valid) is
    /// replaced by a 502 `Status`, so a client never follows a redirect or takes a success for
    /// an upgrade.
    pub fn passes_through(&self) -> bool {
        self.reason == RefusalReason::Status
            && (self.status.is_client_error() || self.status.is_server_error())
    }

    /// The response for the client, always with `Connection: close` so that the client's
    /// connection ends after it and nothing the client sent after its request head is ever
    /// read as another request.
    pub fn client_response(&self, request_id: &str) -> Response<Body> {
        let mut response = if self.passes_through() {
            let mut response = Response::new(proxy::full(self.body.clone()));
            *response.status_mut() = self.status;
            response.headers_mut().clone_from(&self.headers);
            response
        } else {
            let message = format!(
                "custody: the cluster answered the upgrade with {}: {}; nothing was relayed",
                self.status, self.reason
            );
            status_response(StatusCode::BAD_GATEWAY, &message, request_id)
        };
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl<'a> UpstreamHandshake<'a> {
    /// The handshake of `request` with `upstream`, with the default time limit.
    pub fn new(upstream: &'a Upstream, request: &'a UpgradeRequest) -> Self {
        Self {
            upstream,
            request,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the time limit of dialling, writing the request and reading the response head.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request head (`method`, `path_and_query` below the upstream's path prefix,
    /// `headers` as built by `upstream_request_headers`) on a fresh connection and decides on
    /// the answer. Only the head is written: no client byte after the head is sent here, and
    /// the caller sends none before it answered the client 101 (module invariant).
    pub async fn run(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<HandshakeOutcome> {
        let head = self.request_head(method, path_and_query, headers)?;
        let exchange = async {
            let mut tls = self.upstream.connect_raw().await?;
            tls.write_all(&head).await.map_err(|e| self.fail(&e))?;
            tls.flush().await.map_err(|e| self.fail(&e))?;
            let response = read_head(&mut tls).await.map_err(|e| self.fail(&e))?;
            Ok::<_, Error>((tls, response))
        };
        let (mut tls, response) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| self.fail(&format!("no answer within {:?}", self.timeout)))??;
        if response.status != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status;
            let mut headers = response.headers.clone();
            let deadline = Instant::now() + BODY_TIMEOUT;
            let (body, truncated) = read_body(&mut tls, response, MAX_REFUSAL_BODY, deadline).await;
            // The connection is dropped here, never pooled or reused.
            drop(tls);
            clean_headers(&mut headers);
            return Ok(HandshakeOutcome::Refused(Refused {
                reason: RefusalReason::Status,
                status,
                headers,
                body,
                truncated,
            }));
        }
        match self.check_switch(&response) {
            Ok(subprotocol) => {
                let ResponseHead { headers, rest, .. } = response;
                Ok(HandshakeOutcome::Upgraded(Box::new(Upgraded {
                    protocol: self.request.protocol,
                    subprotocol,
                    headers: switch_headers(headers),
                    stream: tls,
                    leftover: rest.freeze(),
                })))
            }
            Err(reason) => {
                drop(tls);
                let mut headers = response.headers;
                clean_headers(&mut headers);
                Ok(HandshakeOutcome::Refused(Refused {
                    reason,
                    status: response.status,
                    headers,
                    body: Bytes::new(),
                    truncated: false,
                }))
            }
        }
    }

    /// The request head to send: the request line, `Host`, the cleaned client headers, the
    /// gateway's credential, and the upgrade headers rebuilt from the classified request.
    pub fn request_head(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<Vec<u8>> {
        let target = format!("{}{path_and_query}", self.upstream.path_prefix());
        if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.fail(&"the request path cannot be sent"));
        }
        let mut out = Vec::with_capacity(1024);
        let mut line = |name: &str, value: &[u8]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        line("Host", self.upstream.host_header().as_bytes());
        for (name, value) in headers {
            if !is_rebuilt(name.as_str()) {
                line(name.as_str(), value.as_bytes());
            }
        }
        if let Some(token) = self.upstream.authorization() {
            line("Authorization", token.as_bytes());
        }
        line("Connection", b"Upgrade");
        line("Upgrade", self.request.protocol.token().as_bytes());
        match self.request.protocol {
            UpgradeProtocol::WebSocket => {
                let key = self.request.websocket_key.as_deref().unwrap_or_default();
                line("Sec-WebSocket-Key", key.as_bytes());
                line("Sec-WebSocket-Version", b"13");
                if !self.request.offered.is_empty() {
                    line(
                        "Sec-WebSocket-Protocol",
                        self.request.offered.join(", ").as_bytes(),
                    );
                }
            }
            UpgradeProtocol::Spdy => {
                for protocol in &self.request.offered {
                    line("X-Stream-Protocol-Version", protocol.as_bytes());
                }
                line("Content-Length", b"0");
            }
        }
        let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        head.extend_from_slice(&out);
        head.extend_from_slice(b"\r\n");
        Ok(head)
    }

    /// Checks a 101 against the request; returns the negotiated subprotocol.
    fn check_switch(&self, response: &ResponseHead) -> Result<String, RefusalReason> {
        let headers = &response.headers;
        let mut upgrades = headers.get_all(UPGRADE).iter();
        let upgrade_ok = match (upgrades.next(), upgrades.next()) {
            (Some(v), None) => v
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case(self.request.protocol.token())),
            _ => false,
        };
        if !upgrade_ok {
            return Err(RefusalReason::UpgradeHeader);
        }
        if !header_tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
            return Err(RefusalReason::ConnectionHeader);
        }
        let offered = |p: &str| self.request.offered.iter().any(|o| o == p);
        match self.request.protocol {
            UpgradeProtocol::WebSocket => {
                let key = self.request.websocket_key.as_deref().unwrap_or_default();
                let expected = derive_accept_key(key.as_bytes());
                let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
                match (accepts.next(), accepts.next()) {
                    (Some(v), None) if v.as_bytes().trim_ascii() == expected.as_bytes() => {}
                    _ => return Err(RefusalReason::WebSocketAccept),
                }
                if headers.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
                    return Err(RefusalReason::WebSocketExtensions);
                }
                let chosen: Vec<&str> = header_tokens(headers, "sec-websocket-protocol").collect();
                match chosen.as_slice() {
                    [] if self.request.offered.is_empty() => Ok(String::new()),
                    [one] if offered(one) => Ok((*one).to_owned()),
                    other => Err(RefusalReason::Subprotocol(other.join(", "))),
                }
            }
            UpgradeProtocol::Spdy => {
                let chosen: Vec<&str> = header_tokens(headers, STREAM_PROTOCOL_VERSION).collect();
                let chosen = match chosen.as_slice() {
                    [] => SPDY_DEFAULT_PROTOCOL,
                    [one] => one,
                    other => return Err(RefusalReason::Subprotocol(other.join(", "))),
                };
                if offered(chosen) {
                    Ok(chosen.to_owned())
                } else {
                    Err(RefusalReason::Subprotocol(chosen.to_owned()))
                }
            }
        }
    }

    fn fail(&self, reason: &dyn std::fmt::Display) -> Error {
        Error::UpgradeHandshake {
            server: self.upstream.host_header().to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Client headers the handshake never copies: framing, hop-by-hop, the credential (the
/// gateway's own is added) and the upgrade headers (rebuilt from the classified request).
fn is_rebuilt(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "content-length"
            | "transfer-encoding"
            | "expect"
            | "connection"
            | "upgrade"
            | "keep-alive"
            | "te"
            | "trailer"
            | "proxy-connection"
            | STREAM_PROTOCOL_VERSION
    ) || name.starts_with("sec-websocket-")
}

/// A refusal's headers for the client: hop-by-hop and framing headers removed (the gateway
/// frames the body itself).
fn clean_headers(headers: &mut HeaderMap) {
    clean_response_headers(headers);
    headers.remove(http::header::CONTENT_LENGTH);
}

/// The 101's headers for the client: hop-by-hop headers (and those the API server named in
/// `Connection`) removed except `Upgrade`, then `Connection: Upgrade`.
fn switch_headers(mut headers: HeaderMap) -> HeaderMap {
    let upgrade: Vec<HeaderValue> = headers.get_all(UPGRADE).iter().cloned().collect();
    clean_response_headers(&mut headers);
    headers.remove(http::header::CONTENT_LENGTH);
    for value in upgrade {
        headers.append(UPGRADE, value);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers
}
