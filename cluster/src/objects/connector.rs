//! The HTTP client `object_store` talks to S3 with: hyper with rustls (`ring`), so cluster mode
//! brings no second TLS stack (`object_store`'s own client pulls in reqwest and aws-lc). It
//! trusts the system roots, or only a given CA, and bounds every request in time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    ClientOptions, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

use crate::error::{Error, Result};

/// Makes [`HttpClient`]s over hyper for `object_store`.
#[derive(Debug, Clone)]
pub(super) struct HyperConnector {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl HyperConnector {
    /// A connector trusting the CA in `ca_file`, or the system's roots without one; each
    /// request must have its answer's head within `timeout`.
    pub(super) fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let bad = |reason: String| {
                    Error::ObjectStoreConfig(format!("CA file {}: {reason}", path.display()))
                };
                let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots
                        .add(cert.map_err(|e| bad(e.to_string()))?)
                        .map_err(|e| bad(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("no PEM certificate in it".into()));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot parse is one root fewer, not a failure.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::ObjectStoreConfig(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            timeout,
        })
    }
}

impl object_store::client::HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpClient::new(HyperService {
            client,
            timeout: self.timeout,
        }))
    }
}

#[derive(Debug)]
struct HyperService {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, HttpRequestBody>,
    timeout: Duration,
}

#[async_trait]
impl HttpService for HyperService {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let response = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| HttpError::new(HttpErrorKind::Timeout, TimedOut(self.timeout)))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        Ok(response.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

/// A request that had no answer in time.
#[derive(Debug)]
struct TimedOut(Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}
