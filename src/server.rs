//! The listeners: the HTTPS front door kubectl talks to (HTTP/1.1 and HTTP/2 chosen by ALPN),
//! and the plain-HTTP admin listener for `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! Both bound what a client can cost before it is authenticated ([`ListenerLimits`], from
//! `[limits]`): the TLS handshake and each request head must arrive within the header read
//! timeout; a connection with no request in flight is closed after the idle timeout (before
//! its first request, after the header read timeout); HTTP/2 connections are pinged; a
//! request head larger than the limit is answered 431 by hyper, a declared body larger than
//! the limit 413, and a chunked body is cut off there; a listener keeps at most its maximum of
//! connections open, and closes one more at once, right after accepting it.
//!
//! Behind an L4 balancer the HTTPS listener can require the PROXY protocol v2 header
//! (`server.proxy_protocol`): it is read before the TLS handshake, within the same header read
//! timeout, and its source address is the client's address from then on (audit trail,
//! recordings, impersonation extras, logs). Without the header the connection is closed before
//! TLS starts; a `LOCAL` header (the balancer's health check) is closed quietly. With the
//! option off no header is looked for, so a client cannot forge its address with one: the
//! header's bytes simply fail the TLS handshake.
//!
//! Shutdown stops accepting at once, lets open requests finish for a grace period, then closes
//! what is left (watches and `logs -f` would otherwise hold the process forever).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use custody_protocol::proxy_header::{self, Command, ProxyHeader};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;
use tracing::Instrument;

use crate::config::LimitsConfig;
use crate::error::Result;
use crate::gateway::{Gateway, RequestId};
use crate::metrics::{Listener, Metrics, OpenConnection};
use crate::proxy::{self, Body};

/// Whether the gateway is ready to serve (`/readyz`); alive (`/healthz`) whenever it answers.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// A new health state, not ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Marks the gateway ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// What one listener allows a connection (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The time for the TLS handshake, for the first request head after it, and for each
    /// HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// HTTP/2 ping interval and answer timeout; `None`: no pings.
    pub http2_keepalive: Option<(Duration, Duration)>,
    /// Connections open at most.
    pub max_connections: usize,
    /// Bytes of a request head at most (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Bytes of a request body at most.
    pub max_body_bytes: u64,
    /// Whether each connection must start with a PROXY protocol v2 header, read within the
    /// header read timeout, whose source address then stands for the client's (the HTTPS
    /// listener only; see the module documentation).
    pub proxy_protocol: bool,
}

impl ListenerLimits {
    /// The HTTPS listener's limits.
    pub fn gateway(limits: &LimitsConfig) -> Self {
        Self::with_cap(limits, limits.max_connections)
    }

    /// The admin listener's limits.
    pub fn admin(limits: &LimitsConfig) -> Self {
        Self::with_cap(limits, limits.admin_max_connections)
    }

    fn with_cap(limits: &LimitsConfig, cap: u64) -> Self {
        Self {
            header_read_timeout: limits.header_read_timeout(),
            idle_timeout: limits.idle_timeout(),
            http2_keepalive: limits.http2_keepalive(),
            max_connections: usize::try_from(cap).unwrap_or(usize::MAX),
            max_header_bytes: usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX),
            max_body_bytes: limits.max_body_bytes,
            proxy_protocol: false,
        }
    }

    /// These limits, with connections required to start with a PROXY protocol v2 header or
    /// not (`server.proxy_protocol`).
    #[must_use]
    pub fn with_proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// A connection builder with these limits.
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper applies its header read timeout only with a timer; without one a client that
        // never finishes its request head holds the connection forever. The HTTP/1.1 read
        // buffer bounds the head (hyper answers 431 beyond it), at least hyper's minimum.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(
                self.max_header_bytes
                    .max(usize::try_from(crate::config::MIN_HEADER_BYTES).unwrap_or(8192)),
            );
        let mut http2 = builder.http2();
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        if let Some((interval, timeout)) = self.http2_keepalive {
            http2
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        builder
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::gateway(&LimitsConfig::default())
    }
}

/// Serves the gateway over HTTPS on `listener` with the default [`ListenerLimits`] until
/// `shutdown` completes; see [`serve_with`].
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_with(gateway, listener, tls, ListenerLimits::default(), shutdown).await
}

/// Serves the gateway over HTTPS on `listener` until `shutdown` completes. ALPN offers `h2`
/// and `http/1.1` unless `tls` already lists protocols.
pub async fn serve_with(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut tls: rustls::ServerConfig,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    if tls.alpn_protocols.is_empty() {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let metrics = gateway.metrics().clone();
    let router = crate::gateway::router::router(gateway);
    let builder = Arc::new(limits.builder());
    let mut accept = Acceptor::new(Listener::Gateway, &limits, metrics.clone());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, admitted) = tokio::select! {
            () = &mut shutdown => break,
            next = accept.next(&listener) => next,
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let router = router.clone();
        let metrics = metrics.clone();
        let builder = builder.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let stream = Counted {
                inner: stream,
                _admitted: admitted,
            };
            // One deadline for the PROXY header and the TLS handshake: a balancer sends its
            // header at once, so it takes nothing from the client's time.
            let accepted = tokio::time::timeout(
                limits.header_read_timeout,
                handshake(stream, peer, &acceptor, limits.proxy_protocol),
            )
            .await;
            let (tls, peer, via) = match accepted {
                Ok(Some(accepted)) => accepted,
                Ok(None) => return,
                Err(_) if limits.proxy_protocol => {
                    tracing::debug!(%peer, "PROXY header or TLS handshake timed out");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let activity = Activity::new();
            let service = {
                let activity = activity.clone();
                service_fn(move |request: Request<Incoming>| {
                    let router = router.clone();
                    let metrics = metrics.clone();
                    let request_in_flight = activity.begin();
                    async move {
                        let response = match bounded(request, peer, &limits, &metrics) {
                            Ok(mut request) => {
                                // The request's id, also its audit event's: every line logged
                                // while it is handled carries it (the span is disabled, and
                                // costs next to nothing, below `info`).
                                let id = RequestId::new();
                                let span = tracing::info_span!("request", request_id = %id.0);
                                request.extensions_mut().insert(ConnectInfo(peer));
                                request.extensions_mut().insert(id);
                                let Ok(response) = router.oneshot(request).instrument(span).await;
                                response
                            }
                            Err(refused) => refused.map(axum::body::Body::new),
                        };
                        Ok::<_, std::convert::Infallible>(request_in_flight.hold(response))
                    }
                })
            };
            // Upgrades (exec, attach, port-forward) hand the HTTP/1.1 connection to the
            // gateway's relay once it answered 101; the gateway decides whether to. The
            // upgraded stream keeps its slot under the connection cap until it closes.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let graceful = |c: Pin<&mut _>| {
                auto::UpgradeableConnection::graceful_shutdown(c);
            };
            // Behind a balancer, the balancer's own address is on the connection's log lines.
            let span = match via {
                Some(via) => tracing::info_span!("proxied", %via),
                None => tracing::Span::none(),
            };
            drive(connection, graceful, &activity, &limits, stopping, peer)
                .instrument(span)
                .await;
        });
    }
    drop(listener);
    finish(&stop, connections).await;
    Ok(())
}

/// Reads the PROXY header when required, then does the TLS handshake. Returns the TLS stream,
/// the client's address and, behind a balancer that named the client, the balancer's
/// address; `None` when the connection is to be closed (the reason logged at debug: these are
/// a client's failures, or health checks).
async fn handshake(
    mut stream: Counted,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    proxy_protocol: bool,
) -> Option<(TlsStream<Counted>, SocketAddr, Option<SocketAddr>)> {
    // Security: the header is trusted exactly when it is required. With the option on, a
    // client that reaches the gateway directly has no header and is closed here, before TLS;
    // with it off, nothing is read, so a header a client sends is garbage to TLS and cannot
    // forge an address.
    let (client, via) = if proxy_protocol {
        match read_proxy_header(&mut stream).await {
            Ok(Some(ProxyHeader {
                command: Command::Proxy,
                source: Some(source),
                ..
            })) => (source, Some(peer)),
            Ok(Some(ProxyHeader {
                command: Command::Proxy,
                source: None,
                ..
            })) => {
                // UNSPEC or a UNIX socket: the balancer has no IP client to name.
                tracing::debug!(
                    %peer,
                    "PROXY header without a client address; using the balancer's"
                );
                (peer, None)
            }
            Ok(Some(ProxyHeader {
                command: Command::Local,
                ..
            })) => {
                // The balancer's health check: it closes without sending anything else.
                tracing::debug!(
                    %peer,
                    "PROXY LOCAL header (a balancer's health check); closing"
                );
                return None;
            }
            Ok(None) => {
                tracing::debug!(%peer, "connection closed before a whole PROXY header");
                return None;
            }
            Err(e) => {
                tracing::debug!(
                    %peer,
                    error = %e,
                    "refused: no valid PROXY protocol v2 header"
                );
                return None;
            }
        }
    } else {
        (peer, None)
    };
    match acceptor.accept(stream).await {
        Ok(tls) => Some((tls, client, via)),
        Err(e) => {
            tracing::debug!(peer = %client, ?via, error = %e, "TLS handshake failed");
            None
        }
    }
}

/// Reads a PROXY protocol v2 header off `stream`, and not one byte more: `Ok(None)` when the
/// stream ends first; an `InvalidData` error when the bytes are not a header
/// [`proxy_header::decode`] accepts (a direct client is refused at its first byte).
///
/// Each read asks for at most the bytes the header still needs (its length is in its first
/// 16), so the TLS `ClientHello` that may follow in the same segment stays in the socket for
/// the TLS layer: no read-ahead buffer has to be replayed in front of it.
async fn read_proxy_header(
    stream: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<ProxyHeader>> {
    let mut buf = [0u8; proxy_header::FIXED_LEN + proxy_header::MAX_PAYLOAD];
    let mut have = 0;
    loop {
        match proxy_header::decode(&buf[..have]) {
            Ok(Some((header, _))) => return Ok(Some(header)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        // `decode` wants more: the fixed part, or (its length checked against the maximum,
        // so within `buf`) the rest of the header.
        let want = if have < proxy_header::FIXED_LEN {
            proxy_header::FIXED_LEN
        } else {
            proxy_header::FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]]))
        };
        let read = stream.read(&mut buf[have..want]).await?;
        if read == 0 {
            return Ok(None);
        }
        have += read;
    }
}

/// Checks the declared body size and bounds the body; a declared size beyond the limit is
/// answered here, before the router.
#[allow(
    clippy::result_large_err,
    reason = "the error is the answer to send, at once"
)]
fn bounded(
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: &ListenerLimits,
    metrics: &Metrics,
) -> std::result::Result<Request<http_body_util::Limited<Incoming>>, Response<Body>> {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        metrics.body_too_large();
        tracing::debug!(%peer, declared, "request body too large");
        // Before authentication, like a head too large: answered without reading the body
        // and without an audit event, counted in custody_requests_body_too_large_total. The
        // message is the kube-apiserver's (apiserver/pkg/endpoints/handlers/rest.go,
        // limitedReadBody).
        let message = format!(
            "the request is too large: limit is {} bytes",
            limits.max_body_bytes
        );
        let mut response = crate::gateway::status::status_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &message,
            &uuid::Uuid::new_v4().to_string(),
        );
        // The body was not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return Err(response);
    }
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    Ok(request.map(|body| http_body_util::Limited::new(body, limit)))
}

/// Serves `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1 on `listener` until
/// `shutdown` completes. Bind it to loopback or a private network.
pub async fn serve_admin(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let builder = Arc::new(limits.builder());
    let mut accept = Acceptor::new(Listener::Admin, &limits, metrics.clone());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, admitted) = tokio::select! {
            () = &mut shutdown => break,
            next = accept.next(&listener) => next,
        };
        while connections.try_join_next().is_some() {}
        let health = health.clone();
        let metrics = metrics.clone();
        let builder = builder.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let stream = Counted {
                inner: stream,
                _admitted: admitted,
            };
            let activity = Activity::new();
            let service = {
                let activity = activity.clone();
                service_fn(move |request: Request<Incoming>| {
                    let response = admin_response(&request, &health, &metrics);
                    let request_in_flight = activity.begin();
                    async move { Ok::<_, std::convert::Infallible>(request_in_flight.hold(response)) }
                })
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let graceful = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
            drive(connection, graceful, &activity, &limits, stopping, peer).await;
        });
    }
    drop(listener);
    finish(&stop, connections).await;
    Ok(())
}

fn admin_response(
    request: &Request<Incoming>,
    health: &Health,
    metrics: &Metrics,
) -> Response<Body> {
    let text = |code: StatusCode, body: String, content_type: &'static str| {
        let mut response = Response::new(proxy::full(body));
        *response.status_mut() = code;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        response
    };
    let plain = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            plain,
        );
    }
    match request.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into(), plain),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ok\n".into(), plain),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), plain),
        "/metrics" => text(
            StatusCode::OK,
            metrics.render(),
            crate::metrics::CONTENT_TYPE,
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), plain),
    }
}

/// Accepts connections up to the listener's cap.
struct Acceptor {
    listener: Listener,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Refusals since the last warning, and when that was (one line a minute at most).
    refused: u64,
    warned: Option<Instant>,
}

/// A connection's claim on its listener: its slot under the cap, and the open gauge.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl Acceptor {
    fn new(listener: Listener, limits: &ListenerLimits, metrics: Arc<Metrics>) -> Self {
        metrics.connection_limit(listener, limits.max_connections);
        Self {
            listener,
            slots: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            metrics,
            refused: 0,
            warned: None,
        }
    }

    /// The next connection with a free slot. One beyond the cap is closed at once (the
    /// client sees its connection closed, not a wait in the backlog): a flood of connections
    /// costs an `accept` and a `close` each, and the ones already open keep being served.
    async fn next(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = ?self.listener, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                let admitted = Admitted {
                    _slot: slot,
                    _open: self.metrics.connection_opened(self.listener),
                };
                return (stream, peer, admitted);
            }
            drop(stream);
            self.metrics.connection_refused(self.listener);
            self.refused += 1;
            let now = Instant::now();
            if self
                .warned
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
            {
                tracing::warn!(
                    listener = ?self.listener,
                    refused = self.refused,
                    %peer,
                    "connections closed at once: the listener has its maximum open \
                     ([limits] max_connections / admin_max_connections)"
                );
                self.refused = 0;
                self.warned = Some(now);
            }
        }
    }
}

/// A connection's socket, holding its slot under the cap for as long as it is open, upgraded
/// streams (exec, attach, port-forward) included.
struct Counted {
    inner: TcpStream,
    _admitted: Admitted,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Drives `connection` until it ends, it sits idle too long (then it is dropped: no request is
/// in flight by definition), or the listener stops (then it shuts down gracefully).
async fn drive<C, E>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: &ListenerLimits,
    mut stopping: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future<Output = std::result::Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.idle(limits) => {
                tracing::debug!(%peer, "closing an idle connection");
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !shutting_down => {
                shutting_down = true;
                graceful(connection.as_mut());
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (the connection's start before any); `None` while the
    /// first request has not come.
    idle_since: Mutex<(Instant, bool)>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new((Instant::now(), false)),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.lock().1 = true;
        InFlight(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, bool)> {
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once the connection has had no request in flight for the idle timeout (the
    /// header read timeout before its first request).
    async fn idle(&self, limits: &ListenerLimits) {
        loop {
            let (since, served) = *self.lock();
            let limit = if served {
                limits.idle_timeout
            } else {
                limits.header_read_timeout
            };
            let deadline = since + limit;
            let busy = self.in_flight.load(Ordering::SeqCst) > 0;
            if !busy && Instant::now() >= deadline {
                return;
            }
            let wake = if busy {
                Instant::now() + limit
            } else {
                deadline
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in flight, until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    /// The response, holding this request in flight until its body ends or is dropped.
    fn hold<B>(self, response: Response<B>) -> Response<Held<B>> {
        response.map(|inner| Held {
            inner,
            _in_flight: self,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.lock().0 = Instant::now();
        }
    }
}

/// A response body that keeps its request in flight.
struct Held<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> hyper::body::Body for Held<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Tells every connection to shut down gracefully, waits for them for [`SHUTDOWN_GRACE`],
/// then aborts the rest.
async fn finish(stop: &watch::Sender<bool>, mut connections: JoinSet<()>) {
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing connections still open after the grace period"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// How long open requests may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (e.g. no file descriptors left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often at most the listener warns that it closes connections for its cap.
const WARN_EVERY: Duration = Duration::from_secs(60);
