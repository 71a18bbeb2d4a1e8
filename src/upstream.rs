//! A cluster's upstream: its API server URL (with any path prefix), the gateway's own
//! credential for it, and a pooled HTTPS client that verifies the server against the cluster's
//! CA. Built from a kubeconfig or any `kube::Config`, or from the pod's `ServiceAccount` when the
//! gateway runs in the cluster ([`Upstream::in_cluster`]).
//!
//! TLS verification is never skipped: a kubeconfig with `insecure-skip-tls-verify` is refused.
//!
//! [`ClusterReviewer`] reviews `ServiceAccount` tokens with the clusters over their upstreams.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::proxy::Body;

pub mod credential;
pub mod token_review;

pub use token_review::ClusterReviewer;

/// One cluster's API server, as the gateway reaches it.
#[derive(Clone)]
pub struct Upstream {
    server: Uri,
    path_prefix: String,
    bearer: Option<Arc<credential::Credential>>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    raw: RawDialer,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.server)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Reads a kubeconfig file and builds the upstream of `context` (the current context when
    /// `None`).
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self> {
        let what = path.display().to_string();
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_err(&what, &e))?;
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| config_err(&what, &e))?;
        Self::from_config(&config)
    }

    /// The upstream of the cluster the gateway runs in (`in_cluster = true`): the API server
    /// from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, the pod's `ServiceAccount`
    /// token (read again as the kubelet rotates it) and the cluster CA from
    /// `/var/run/secrets/kubernetes.io/serviceaccount`. [`IN_CLUSTER_DIR_ENV`] names another
    /// directory holding the same files (`token`, `ca.crt`, `namespace`), so that the
    /// in-cluster path runs outside a pod, in tests and on a workstation; in a pod it is unset.
    /// `env` looks up environment variables.
    pub fn in_cluster(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_config(&in_cluster_config(env)?)
    }

    /// Builds the upstream from a loaded `kube::Config` (kubeconfig or in-cluster).
    pub fn from_config(config: &kube::Config) -> Result<Self> {
        let what = config.cluster_url.to_string();
        let fail = |message: String| Error::UpstreamConfig {
            cluster: what.clone(),
            message,
        };
        if config.accept_invalid_certs {
            return Err(fail(
                "insecure-skip-tls-verify is set; the gateway always verifies the API server"
                    .into(),
            ));
        }
        if config.cluster_url.scheme_str() != Some("https") {
            return Err(fail("the server URL must be https".into()));
        }
        let auth = &config.auth_info;
        if auth.exec.is_some() || auth.auth_provider.is_some() || auth.username.is_some() {
            return Err(fail(
                "only a bearer token or a client certificate can authenticate the gateway".into(),
            ));
        }
        let bearer = bearer_token(auth).map_err(fail)?;
        let identity = client_identity(auth).map_err(fail)?;
        if bearer.is_none() && identity.is_none() {
            return Err(fail(
                "the kubeconfig user has no token and no client certificate".into(),
            ));
        }
        let tls = tls_config(config.root_cert.as_deref(), identity).map_err(fail)?;
        let raw = RawDialer::new(&config.cluster_url, config.tls_server_name.as_deref(), &tls)
            .map_err(fail)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let builder = match &config.tls_server_name {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| fail(format!("tls-server-name {name:?}: {e}")))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().enable_http2().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let server = config.cluster_url.clone();
        let path_prefix = server.path().trim_end_matches('/').to_owned();
        Ok(Self {
            server,
            path_prefix,
            bearer,
            client,
            raw,
        })
    }

    /// The API server URL.
    pub fn server(&self) -> &Uri {
        &self.server
    }

    /// Sends a request to `path_and_query` (already stripped of the gateway's cluster prefix)
    /// with these headers (already cleaned) plus the gateway's credential; streams both bodies.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Body,
    ) -> std::result::Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if let Some(credential) = &self.bearer {
            headers.insert(http::header::AUTHORIZATION, credential.header());
        }
        let uri = format!(
            "{}://{}{}{}",
            self.server.scheme_str().unwrap_or("https"),
            self.server
                .authority()
                .map_or("", http::uri::Authority::as_str),
            self.path_prefix,
            path_and_query
        );
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        // The path was validated by the classifier, so it is a valid URI; an invalid one would
        // fail here and be reported as an upstream error.
        match uri.parse::<Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => *request.uri_mut() = Uri::from_static("/"),
        }
        self.client.request(request).await
    }
}

impl Upstream {
    /// Opens a fresh, unpooled HTTP/1.1 TLS connection to the API server for one upgrade
    /// request (exec, attach, port-forward). The server is verified with the cluster's CA and
    /// the gateway's client certificate is presented, as for pooled requests; ALPN offers only
    /// `http/1.1`. The connection is never returned to a pool: its owner drops it when the
    /// upgrade is refused or the stream ends.
    pub async fn connect_raw(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.raw.connect().await
    }

    /// The gateway's `Authorization` header for this API server, if it authenticates with a
    /// bearer token (a client certificate is presented by [`Self::connect_raw`] instead).
    pub fn authorization(&self) -> Option<HeaderValue> {
        self.bearer.as_ref().map(|credential| credential.header())
    }

    /// The server URL's path prefix, without a trailing slash (often empty); request paths
    /// are appended to it.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The `Host` header value for requests to the API server: the server URL's authority.
    pub fn host_header(&self) -> &str {
        &self.raw.authority
    }
}

/// Dials the API server for raw HTTP/1.1 connections.
#[derive(Clone)]
struct RawDialer {
    /// Host name or IP address, without IPv6 brackets, to connect to.
    host: String,
    port: u16,
    /// `host[:port]` as in the server URL, for the `Host` header.
    authority: String,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl RawDialer {
    fn new(
        url: &Uri,
        tls_server_name: Option<&str>,
        tls: &rustls::ClientConfig,
    ) -> std::result::Result<Self, String> {
        let authority = url
            .authority()
            .ok_or("the server URL has no host")?
            .as_str()
            .to_owned();
        let host = url
            .host()
            .ok_or("the server URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_u16().unwrap_or(443);
        let name = tls_server_name.unwrap_or(&host).to_owned();
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
        let mut raw = tls.clone();
        raw.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            host,
            port,
            authority,
            server_name,
            connector: tokio_rustls::TlsConnector::from(Arc::new(raw)),
        })
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let fail = |reason: String| Error::UpstreamDial {
            server: self.authority.clone(),
            reason,
        };
        let dial = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| fail(format!("TCP connect: {e}")))?;
            // Interactive streams: every keystroke goes out at once.
            let _ = tcp.set_nodelay(true);
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake: {e}")))?;
            if let Some(alpn) = tls.get_ref().1.alpn_protocol()
                && alpn != b"http/1.1"
            {
                return Err(fail(format!(
                    "the server chose ALPN {:?} instead of http/1.1",
                    String::from_utf8_lossy(alpn)
                )));
            }
            Ok(tls)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| fail(format!("timed out after {CONNECT_TIMEOUT:?}")))?
    }
}

/// The environment variable naming a directory that stands in for the pod's
/// `/var/run/secrets/kubernetes.io/serviceaccount` (see [`Upstream::in_cluster`]).
pub const IN_CLUSTER_DIR_ENV: &str = "CUSTODY_IN_CLUSTER_DIR";

/// The in-cluster configuration: kube's own reading of the pod's mounted `ServiceAccount`, or
/// the same files from the directory [`IN_CLUSTER_DIR_ENV`] names.
fn in_cluster_config(env: &dyn Fn(&str) -> Option<String>) -> Result<kube::Config> {
    let what = "in-cluster";
    let Some(dir) = env(IN_CLUSTER_DIR_ENV).filter(|d| !d.is_empty()) else {
        return kube::Config::incluster().map_err(|e| config_err(what, &e));
    };
    let dir = std::path::PathBuf::from(dir);
    let var = |name: &str| {
        env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            config_err(
                what,
                &format!("{name} is not set (the API server's address, as in a pod)"),
            )
        })
    };
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port: u16 = var("KUBERNETES_SERVICE_PORT")?
        .parse()
        .map_err(|e| config_err(what, &format!("KUBERNETES_SERVICE_PORT is not a port: {e}")))?;
    // An IPv6 address needs brackets in a URL; a socket address writes them.
    let url = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => format!("https://{}", std::net::SocketAddr::new(ip, port)),
        Err(_) => format!("https://{host}:{port}"),
    };
    let cluster_url = url
        .parse::<Uri>()
        .map_err(|e| config_err(what, &format!("the API server URL {url}: {e}")))?;
    let ca_file = dir.join("ca.crt");
    let ca_pem = std::fs::read(&ca_file)
        .map_err(|e| config_err(what, &format!("reading {}: {e}", ca_file.display())))?;
    let ca = rustls_pemfile::certs(&mut ca_pem.as_slice())
        .map(|c| c.map(|der| der.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_err(what, &format!("parsing {}: {e}", ca_file.display())))?;
    let token_file = dir.join("token");
    let mut config = kube::Config::new(cluster_url);
    config.root_cert = Some(ca);
    config.root_cert_file = Some(ca_file);
    config.default_namespace = std::fs::read_to_string(dir.join("namespace"))
        .map_or_else(|_| "default".to_owned(), |ns| ns.trim().to_owned());
    config.auth_info.token_file = Some(token_file.display().to_string());
    Ok(config)
}

fn config_err(what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::UpstreamConfig {
        cluster: what.to_owned(),
        message: e.to_string(),
    }
}

fn bearer_token(
    auth: &kube::config::AuthInfo,
) -> std::result::Result<Option<Arc<credential::Credential>>, String> {
    let credential = match (&auth.token, &auth.token_file) {
        (Some(token), _) => {
            credential::Credential::Fixed(credential::bearer(token.expose_secret().trim())?)
        }
        // A token file (an in-cluster ServiceAccount token) rotates: it is read again as it
        // changes, not once at start.
        (None, Some(file)) => credential::Credential::File(credential::TokenFile::open(
            file.into(),
            credential::REREAD_AFTER,
        )?),
        (None, None) => return Ok(None),
    };
    Ok(Some(Arc::new(credential)))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(auth: &kube::config::AuthInfo) -> std::result::Result<Option<Identity>, String> {
    let cert = pem_source(
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_deref(),
        "client certificate",
    )?;
    let key = pem_source(
        auth.client_key_data
            .as_ref()
            .map(ExposeSecret::expose_secret),
        auth.client_key.as_deref(),
        "client key",
    )?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => return Err("a client certificate needs both the certificate and its key".into()),
    };
    let certs = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing the client certificate: {e}"))?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(|e| format!("parsing the client key: {e}"))?
        .ok_or("the client key holds no private key")?;
    Ok(Some((certs, key)))
}

/// PEM bytes from inline base64 data or a file.
fn pem_source(
    data: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> std::result::Result<Option<Vec<u8>>, String> {
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map(Some)
            .map_err(|e| format!("decoding the {what} data: {e}")),
        (None, Some(file)) => std::fs::read(file)
            .map(Some)
            .map_err(|e| format!("reading the {what} file {file}: {e}")),
        (None, None) => Ok(None),
    }
}

fn tls_config(
    ca: Option<&[Vec<u8>]>,
    identity: Option<Identity>,
) -> std::result::Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ders) = ca {
        for der in ders {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("the cluster CA certificate is invalid: {e}"))?;
        }
    } else {
        for cert in rustls_native_certs::load_native_certs().certs {
            // Unparseable system certificates are skipped, as every TLS client does.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to verify the API server with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("the client certificate cannot be used: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// How long connecting to an API server may take; requests themselves have no total timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out as the kubelet mounts a pod's `ServiceAccount`.
    fn service_account_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pki = custody_fixtures::pki::Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.crt"), pki.ca_pem()).unwrap();
        std::fs::write(dir.path().join("token"), "a.b.c\n").unwrap();
        std::fs::write(dir.path().join("namespace"), "custody").unwrap();
        dir
    }

    fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_in_cluster_directory_stands_in_for_the_pods_service_account_mount() {
        let dir = service_account_dir();
        let env = lookup(&[
            (IN_CLUSTER_DIR_ENV, dir.path().display().to_string()),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT", "6443".into()),
        ]);
        let config = in_cluster_config(&env).unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "custody");
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            config.auth_info.token_file.as_deref(),
            Some(dir.path().join("token").to_str().unwrap())
        );
        let upstream = Upstream::in_cluster(&env).unwrap();
        assert_eq!(
            upstream.authorization().unwrap().to_str().unwrap(),
            "Bearer a.b.c"
        );

        let v6 = lookup(&[
            (IN_CLUSTER_DIR_ENV, dir.path().display().to_string()),
            ("KUBERNETES_SERVICE_HOST", "fd00::1".into()),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
        ]);
        assert_eq!(
            in_cluster_config(&v6).unwrap().cluster_url.to_string(),
            "https://[fd00::1]:443/"
        );
    }

    #[test]
    fn the_in_cluster_directory_needs_the_api_servers_address_and_the_ca() {
        let dir = service_account_dir();
        let at = dir.path().display().to_string();
        let err = in_cluster_config(&lookup(&[(IN_CLUSTER_DIR_ENV, at.clone())]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUBERNETES_SERVICE_HOST is not set"), "{err}");
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let err = in_cluster_config(&lookup(&[
            (IN_CLUSTER_DIR_ENV, at),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }
}
