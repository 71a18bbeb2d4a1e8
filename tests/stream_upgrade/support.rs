//! The pieces the upgrade tests drive: a scripted raw API server (a rustls listener that
//! answers one request with fixed bytes and records everything it receives), a tiny gateway
//! (hyper, like custody's) that runs the upgrade handshake and the relay, and raw-socket helpers.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure should stop the test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use custody::classify::classify;
use custody::impersonation::headers::{GatewayExtras, upstream_request_headers};
use custody::principal::EffectiveIdentity;
use custody::proxy::{self, Body};
use custody::stream::relay::{CancelHandle, RelayConfig, RelayReport, relay};
use custody::stream::upgrade::{
    HandshakeOutcome, Refused, UpgradeProtocol, UpstreamHandshake, classify_upgrade,
};
use custody::upstream::Upstream;
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::pki::Pki;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The test's `Sec-WebSocket-Key` (RFC 6455's sample).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The gateway's bearer token in the scripted upstream's kubeconfig.
pub const GATEWAY_TOKEN: &str = "gateway-token";

/// What the scripted API server does after reading the request head.
#[derive(Debug, Clone)]
pub struct Script {
    /// The bytes to answer with, in one write.
    pub answer: Vec<u8>,
    /// After answering, echo every byte back until EOF (a stream), instead of only reading.
    pub echo: bool,
}

/// What the scripted API server received.
#[derive(Debug, Default)]
pub struct Received {
    /// The request head, up to and including the blank line.
    pub head: String,
    /// Bytes that arrived after the head and before the answer (must be none).
    pub before_answer: Vec<u8>,
    /// Bytes that arrived after the answer.
    pub after_answer: Vec<u8>,
    /// Whether the connection was closed by the gateway (EOF seen) within the time limit.
    pub closed: bool,
}

/// A scripted API server for one connection, and an `Upstream` pointing at it.
pub async fn scripted_upstream(
    dir: &Path,
    script: Script,
) -> (Upstream, tokio::task::JoinHandle<Received>) {
    let pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    let tls = pki
        .server_config_without_client_auth(&[b"http/1.1"])
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kubeconfig = dir.join(format!("upstream-{}.kubeconfig", addr.port()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: {GATEWAY_TOKEN}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            base64::engine::general_purpose::STANDARD.encode(pki.ca_pem())
        ),
    )
    .unwrap();
    let upstream = Upstream::from_kubeconfig(&kubeconfig, None).await.unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut received = Received::default();
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed inside the request head");
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        received.head = String::from_utf8(buf[..end].to_vec()).unwrap();
        received.before_answer = buf[end..].to_vec();
        // A quiet period: anything forwarded early would show up now.
        let (more, _) = read_for(&mut tls, Duration::from_millis(300)).await;
        received.before_answer.extend_from_slice(&more);
        tls.write_all(&script.answer).await.unwrap();
        tls.flush().await.unwrap();
        if script.echo {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = tls.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    received.closed = true;
                    break;
                }
                received.after_answer.extend_from_slice(&chunk[..n]);
                tls.write_all(&chunk[..n]).await.unwrap();
            }
            let _ = tls.shutdown().await;
        } else {
            let (after, closed) = read_for(&mut tls, Duration::from_secs(5)).await;
            received.after_answer = after;
            received.closed = closed;
        }
        received
    });
    (upstream, task)
}

/// Reads for up to `limit`; returns the bytes and whether EOF (or a reset) was seen.
pub async fn read_for<R: AsyncRead + Unpin>(io: &mut R, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// What the test gateway did with one request.
#[derive(Debug)]
pub enum Outcome {
    /// The upgrade request itself was refused before any upstream contact.
    NotAnUpgrade(String),
    /// The upstream refused; this answer was turned into the client's response.
    Refused(Refused),
    /// The handshake failed (I/O, timeout, malformed answer).
    Failed(String),
    /// A stream was relayed to its end.
    Relayed(RelayReport),
}

/// A gateway for upgrades only: classify, rewrite headers (as alice, group dev), handshake,
/// then answer the client (101 and relay, or the refusal and close).
pub async fn spawn_gateway(upstream: Upstream) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let upstream = upstream.clone();
                    let tx = tx.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(&upstream, request, peer, tx).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn handle(
    upstream: &Upstream,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    tx: mpsc::UnboundedSender<Outcome>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let info = classify(request.method().as_str(), &path, query.as_deref()).unwrap_or_default();
    let upgrade = match classify_upgrade(
        request.method(),
        request.version(),
        request.headers(),
        &info,
    ) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let _ = tx.send(Outcome::NotAnUpgrade(e.to_string()));
            return closing(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let identity = EffectiveIdentity {
        user: "alice".into(),
        groups: vec!["dev".into()],
        uid: String::new(),
    };
    let extras = GatewayExtras {
        domain: "custody.dev".into(),
        initiator: "alice".into(),
        request_id: "test-request".into(),
        client_address: peer.to_string(),
    };
    let headers = upstream_request_headers(request.headers(), &identity, &extras).unwrap();
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let handshake = UpstreamHandshake::new(upstream, &upgrade);
    match handshake
        .run(request.method(), &path_and_query, &headers)
        .await
    {
        Ok(HandshakeOutcome::Upgraded(upgraded)) => {
            let upgraded = *upgraded;
            let response = upgraded.client_response();
            let on_upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let client = on_upgrade.await.unwrap();
                let report = relay(
                    TokioIo::new(client),
                    upgraded.stream,
                    upgraded.leftover,
                    (),
                    RelayConfig::default(),
                    &CancelHandle::new(),
                )
                .await;
                let _ = tx.send(Outcome::Relayed(report));
            });
            response
        }
        Ok(HandshakeOutcome::Refused(refused)) => {
            let response = refused.client_response("test-request");
            let _ = tx.send(Outcome::Refused(refused));
            response
        }
        Err(e) => {
            let _ = tx.send(Outcome::Failed(e.to_string()));
            closing(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

fn closing(code: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(proxy::full(message));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Connects to the test gateway, sends `bytes` in one write, and returns the socket.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

/// Splits a response at its blank line: (head, bytes after it).
pub fn split_head(bytes: &[u8]) -> (String, Vec<u8>) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head")
        + 4;
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        bytes[end..].to_vec(),
    )
}

/// Reads a response head (and whatever follows it in the same reads).
pub async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    split_head(&buf)
}

/// Whether a head has this header line (name case-insensitive, value exact).
pub fn has_header(head: &str, name: &str, value: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':')
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// Runs the handshake of the test's WebSocket (or SPDY) request against `answer`.
pub async fn handshake_against(protocol: UpgradeProtocol, answer: &str) -> HandshakeOutcome {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        answer: answer.as_bytes().to_vec(),
        echo: false,
    };
    let (upstream, _received) = scripted_upstream(dir.path(), script).await;
    let mut headers = HeaderMap::new();
    headers.insert("connection", "Upgrade".parse().unwrap());
    let method = match protocol {
        UpgradeProtocol::WebSocket => {
            headers.insert("upgrade", "websocket".parse().unwrap());
            headers.insert("sec-websocket-key", KEY.parse().unwrap());
            headers.insert("sec-websocket-version", "13".parse().unwrap());
            headers.insert(
                "sec-websocket-protocol",
                "v5.channel.k8s.io".parse().unwrap(),
            );
            Method::GET
        }
        UpgradeProtocol::Spdy => {
            headers.insert("upgrade", "SPDY/3.1".parse().unwrap());
            headers.insert(
                "x-stream-protocol-version",
                "v4.channel.k8s.io".parse().unwrap(),
            );
            Method::POST
        }
    };
    let path = "/api/v1/namespaces/default/pods/p/exec";
    let info = custody::classify::classify(method.as_str(), path, None).unwrap();
    let request = classify_upgrade(&method, Version::HTTP_11, &headers, &info).unwrap();
    UpstreamHandshake::new(&upstream, &request)
        .with_timeout(Duration::from_secs(10))
        .run(&method, path, &headers)
        .await
        .unwrap()
}

/// kube-sim in-process, and the upstream of its gateway kubeconfig.
pub async fn start_sim() -> (KubeSim, tempfile::TempDir, Upstream) {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubeSim::start(KubeSimConfig::new(dir.path().join("cluster")))
        .await
        .unwrap();
    let kubeconfig = dir.path().join("cluster").join("gateway.kubeconfig");
    let upstream = Upstream::from_kubeconfig(&kubeconfig, None).await.unwrap();
    (sim, dir, upstream)
}
