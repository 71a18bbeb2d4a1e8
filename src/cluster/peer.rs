//! Replica to replica, over mutual TLS (`[cluster.peer]`): following a live session another
//! replica holds.
//!
//! A replica's peer listener accepts only clients with a certificate signed by the cluster's
//! peer CA, and answers only `GET /v1/sessions/<id>/events` (the control socket's follow
//! stream, NDJSON). A replica asked to follow a session it does not hold looks up the holder in
//! `live_sessions` and its URL in `replicas`, and relays that stream to its own caller.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::cluster::PeerSection;
use crate::control::registry::LiveSessions;
use crate::proxy::Body;

/// How long a peer has to complete its TLS handshake and request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS of replica-to-replica calls: a server that requires a client certificate from the
/// peer CA, and a client that presents this replica's certificate and trusts only that CA.
#[derive(Clone)]
pub struct PeerTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

/// Why the peer TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cluster.peer: {0}")]
pub struct PeerError(String);

impl PeerTls {
    /// Reads the certificate, key and CA of `[cluster.peer]`.
    pub fn load(section: &PeerSection) -> Result<Self, PeerError> {
        let chain = certs(&section.cert_file)?;
        let key = key(&section.key_file)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs(&section.ca_file)? {
            roots
                .add(ca)
                .map_err(|e| PeerError(format!("ca_file: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| PeerError(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PeerError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| PeerError(format!("cert_file and key_file: {e}")))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PeerError(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| PeerError(format!("cert_file and key_file: {e}")))?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PeerError> {
    let pem = std::fs::read(path).map_err(|e| PeerError(format!("{}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PeerError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(PeerError(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, PeerError> {
    let pem = std::fs::read(path).map_err(|e| PeerError(format!("{}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| PeerError(format!("{}: {e}", path.display())))?
        .ok_or_else(|| PeerError(format!("{}: no private key", path.display())))
}

/// Serves other replicas until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: PeerTls,
    live: Arc<LiveSessions>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let live = live.clone();
        tokio::spawn(async move {
            // A peer without a certificate from the peer CA never gets past the handshake.
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "peer TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let live = live.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &live).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(request: &Request<Incoming>, live: &LiveSessions) -> Response<Body> {
    let path = request.uri().path();
    let id = path
        .strip_prefix("/v1/sessions/")
        .and_then(|rest| rest.strip_suffix("/events"));
    match (request.method(), id) {
        (&Method::GET, Some(id)) if !id.contains('/') => crate::control::follow(live, id).await,
        _ => crate::control::error(
            StatusCode::NOT_FOUND,
            "replicas answer only GET /v1/sessions/ID/events",
        ),
    }
}

/// Follows session `id` on the replica at `url` (its peer listener), relaying its stream.
pub async fn follow(tls: &PeerTls, url: &str, id: &str) -> Result<Response<Body>, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.client).clone())
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let uri: http::Uri = format!("{}/v1/sessions/{id}/events", url.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("the replica's URL {url:?}: {e}"))?;
    let response = tokio::time::timeout(HANDSHAKE_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| format!("the replica at {url} did not answer"))?
        .map_err(|e| format!("the replica at {url}: {e}"))?;
    Ok(response.map(|body| {
        body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed_unsync()
    }))
}
