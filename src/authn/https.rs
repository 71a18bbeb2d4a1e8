//! A small HTTPS client for talking to identity providers (discovery, JWKS, the dev issuer's
//! token endpoint): TLS verified against the system roots or a configured CA, `ring` only,
//! a timeout on every request, a cap on response bodies, and redirects never followed.
//!
//! It is hyper-util's client (the one kube-rs and `object_store` use here too) with
//! hyper-rustls, configured once: what is custody's own is only the policy above, which every
//! caller must get and none may forget (the console's OIDC client goes through
//! [`HttpsClient::exchange`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest response body read, in bytes.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A response, fully read.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// An HTTPS-only client with a per-request timeout.
#[derive(Clone)]
pub(crate) struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpsClient {
    /// A client trusting the CA certificates in `ca_pem`, or the system's roots when `None`.
    pub(crate) fn new(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<HttpsClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(mut pem) = ca_pem {
            for cert in rustls_pemfile::certs(&mut pem) {
                let cert = cert.map_err(|e| format!("cannot read the CA file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("cannot use a CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file has no certificate".into());
            }
        } else {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "skipping a system CA certificate");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, "loaded the system CA certificates");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsClient::with_tls(tls, timeout))
    }

    /// A client with this TLS configuration.
    pub(crate) fn with_tls(tls: rustls::ClientConfig, timeout: Duration) -> HttpsClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        HttpsClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// `GET url`.
    pub(crate) async fn get(&self, url: &str) -> Result<HttpResponse, String> {
        self.send(Method::GET, url, None).await
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body.
    pub(crate) async fn post_form(&self, url: &str, form: String) -> Result<HttpResponse, String> {
        self.send(Method::POST, url, Some(form)).await
    }

    /// `POST url` with an `application/json` body (webhooks).
    pub(crate) async fn post_json(&self, url: &str, json: String) -> Result<HttpResponse, String> {
        self.send_body(Method::POST, url, Some((json, "application/json")))
            .await
    }

    /// Sends `request` as it is (the console's OIDC client builds its own), answering with the
    /// whole body; the same TLS, timeout, size cap and https-only rule as every other request.
    pub(crate) async fn exchange(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, String> {
        if request.uri().scheme_str() != Some("https") {
            return Err(format!("refusing a non-https URL {:?}", request.uri()));
        }
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            header::USER_AGENT,
            http::HeaderValue::from_static(concat!("custody/", env!("CARGO_PKG_VERSION"))),
        );
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = self.round_trip(request).await?;
        let mut answer = http::Response::new(response.body.to_vec());
        *answer.status_mut() = response.status;
        *answer.headers_mut() = response.headers;
        Ok(answer)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
    ) -> Result<HttpResponse, String> {
        let body = form.map(|form| (form, "application/x-www-form-urlencoded"));
        self.send_body(method, url, body).await
    }

    async fn send_body(
        &self,
        method: Method,
        url: &str,
        body: Option<(String, &'static str)>,
    ) -> Result<HttpResponse, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("refusing a non-https URL {url:?}"));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("custody/", env!("CARGO_PKG_VERSION")),
            );
        let mut payload = String::new();
        if let Some((text, content_type)) = body {
            req = req.header(header::CONTENT_TYPE, content_type);
            payload = text;
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        self.round_trip(req).await
    }

    async fn round_trip(&self, req: Request<Full<Bytes>>) -> Result<HttpResponse, String> {
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The hyper error's source chain holds the TLS or connect failure.
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                msg
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}
