//! The listeners: the HTTPS front door kubectl talks to (HTTP/1.1 and HTTP/2 chosen by ALPN),
//! and the plain-HTTP admin listener for `/healthz`, `/readyz` and Prometheus `/metrics`.
//!
//! Shutdown stops accepting at once, lets open requests finish for a grace period, then closes
//! what is left (watches and `logs -f` would otherwise hold the process forever).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::error::Result;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
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

/// Serves the gateway over HTTPS on `listener` until `shutdown` completes. ALPN offers `h2` and
/// `http/1.1` unless `tls` already lists protocols.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut tls: rustls::ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    if tls.alpn_protocols.is_empty() {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let gateway = gateway.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let gateway = gateway.clone();
                async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, peer).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            // Upgrades (exec, attach, port-forward) hand the HTTP/1.1 connection to the
            // gateway's relay once it answered 101; the gateway decides whether to.
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    finish(graceful, connections).await;
    Ok(())
}

/// Serves `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1 on `listener` until
/// `shutdown` completes. Bind it to loopback or a private network.
pub async fn serve_admin(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let health = health.clone();
        let metrics = metrics.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = admin_response(&request, &health, &metrics);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    drop(listener);
    finish(graceful, connections).await;
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
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), plain),
    }
}

/// Waits for open connections to finish for [`SHUTDOWN_GRACE`], then aborts the rest.
async fn finish(graceful: GracefulShutdown, mut connections: JoinSet<()>) {
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            open = connections.len(),
            "closing connections still open after the grace period"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (e.g. no file descriptors left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
