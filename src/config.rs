//! The one typed configuration of `custody serve`: a TOML file, unknown keys rejected, with
//! `CUSTODY_*` environment overrides for the settings operators change per deployment.
//!
//! Loading is a pure function of the file's text and an environment lookup, so tests never
//! touch the process environment.

pub mod cluster;
pub mod console;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::AuditMode;
use crate::authn::config::{OidcIssuerConfig, ServiceAccountConfig};
use crate::impersonation::ImpersonationConfig;

/// The `[login]` section: the OAuth client people log in with (`custody login`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The issuer URL; must be one of the `[[oidc]]` issuers (whose `ca_file`, if any, is
    /// published so clients can reach the issuer).
    pub issuer: String,
    /// The OAuth client id (a public client with PKCE, loopback redirects allowed).
    pub client_id: String,
    /// The secret of a confidential client. Never published: people who need it pass it to
    /// `custody login --client-secret-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The scopes requested; must include `openid`. `offline_access` asks for a refresh token.
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
    /// The CA certificate (PEM) clients should trust for this gateway; by default the last
    /// certificate of `server.tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for LoginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn default_login_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(str::to_owned)
        .to_vec()
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where custody keeps its audit trail, index, recordings and signing key.
    pub data_dir: PathBuf,
    /// This gateway's name in audit events and recordings (default: `custody`).
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    /// The HTTPS front door kubectl talks to.
    pub server: ServerConfig,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Whether requests wait for their audit event to be durable.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The clusters behind the gateway, selected by the `/clusters/<name>` path prefix.
    pub clusters: Vec<ClusterConfig>,
    /// Trusted OIDC issuers.
    #[serde(default)]
    pub oidc: Vec<OidcIssuerConfig>,
    /// Kubernetes `ServiceAccount` tokens for automation.
    #[serde(default)]
    pub service_accounts: ServiceAccountConfig,
    /// Who may impersonate whom (`kubectl --as`).
    #[serde(default)]
    pub impersonation: ImpersonationConfig,
    /// Limits of streaming sessions (exec, attach, port-forward).
    #[serde(default)]
    pub streams: StreamsConfig,
    /// Who may see whose recordings through the sessions API.
    #[serde(default)]
    pub access: AccessConfig,
    /// What `custody login` needs, published unauthenticated at `/.well-known/custody`; no
    /// `[login]` section means nothing is published there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginConfig>,
    /// The web console (`[console]`), served when `[login]` is configured.
    #[serde(default)]
    pub console: console::ConsoleSection,
    /// Who may do what (`[policy]` with `[[policy.roles]]`, `docs/policy.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyConfig>,
    /// Where approvers hear of access requests (`[approvals]`).
    #[serde(default)]
    pub approvals: crate::approval::notify::ApprovalsConfig,
    /// What a connection or request may cost before anyone is authenticated (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Several replicas on shared PostgreSQL and S3 (`[cluster]`); `None` runs on one
    /// machine with `SQLite` and local files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<cluster::ClusterModeConfig>,
}

/// Access to recordings and the audit trail through the sessions API (`/custody/v1`). A
/// person sees the sessions they started; members of an auditor group see all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Groups (as mapped, with any prefix) whose members see and download every session and
    /// audit event (default: none).
    #[serde(default)]
    pub auditor_groups: Vec<String>,
}

/// Limits of streaming sessions. A session that hits one ends, and its recording says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// End a session when no byte flowed either way for this many seconds (default 14400,
    /// four hours, like the kubelet's streaming idle timeout; 0: never).
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// End a session this many seconds after it started, whatever happens (default 0: never).
    #[serde(default)]
    pub max_duration_seconds: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            idle_timeout_seconds: default_idle_timeout_seconds(),
            max_duration_seconds: 0,
        }
    }
}

/// The largest limit accepted: ten years, far beyond any session and any timer's range.
const MAX_STREAM_LIMIT_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl StreamsConfig {
    /// The idle timeout, `None` when disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        seconds(self.idle_timeout_seconds)
    }

    /// The maximum duration, `None` when disabled.
    pub fn max_duration(&self) -> Option<Duration> {
        seconds(self.max_duration_seconds)
    }

    fn problems(&self) -> Vec<String> {
        [
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("max_duration_seconds", self.max_duration_seconds),
        ]
        .into_iter()
        .filter(|&(_, value)| value > MAX_STREAM_LIMIT_SECONDS)
        .map(|(key, value)| {
            format!(
                "streams.{key}: {value} is more than {MAX_STREAM_LIMIT_SECONDS} (ten years); use 0 for no limit"
            )
        })
        .collect()
    }

    fn explain(&self) -> String {
        let limit = |d: Option<Duration>| {
            d.map_or_else(|| "none".to_owned(), |d| format!("{}s", d.as_secs()))
        };
        format!(
            "streams: idle timeout {}, maximum duration {}",
            limit(self.idle_timeout()),
            limit(self.max_duration())
        )
    }
}

fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

fn default_idle_timeout_seconds() -> u64 {
    4 * 3600
}

/// What a connection or a request may cost the gateway, most of it before authentication:
/// the time to send a request head, idle connections, the number of connections, the size of
/// a request head and body, and how many refused unauthenticated requests reach the audit
/// trail. Every key has a default; all apply to the HTTPS listener, and all but the body limit
/// and the audit rate to the admin listener (with its own connection cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds a client has for the TLS handshake, and for each request head once it starts
    /// sending one or after the previous response (HTTP/1.1); a connection that does not make
    /// it is closed (default 10; at most 300).
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in flight before it is closed
    /// (default 90, the kube-apiserver's; at most 86400).
    pub idle_timeout_seconds: u64,
    /// Seconds between HTTP/2 pings the gateway sends to find dead clients (default 30; 0: no
    /// pings).
    pub http2_keepalive_interval_seconds: u64,
    /// Seconds a ping's answer may take before the connection is closed (default 20).
    pub http2_keepalive_timeout_seconds: u64,
    /// Open connections the HTTPS listener keeps at most, exec/attach/port-forward sessions
    /// included; one more is accepted and closed at once (default 4096).
    pub max_connections: u64,
    /// The same for the admin listener (default 64).
    pub admin_max_connections: u64,
    /// Bytes of a request head (request line and headers; HTTP/2: the header list) at most;
    /// a larger head is answered 431 (default 65536; at least 8192).
    pub max_header_bytes: u64,
    /// Bytes of a request body at most; a larger `Content-Length` is answered 413, a chunked
    /// body is cut off there (default 3 MiB, the kube-apiserver's limit).
    pub max_body_bytes: u64,
    /// Audit events per second, on average, for requests refused before authentication (a
    /// token bucket; the rest are counted in `custody_audit_dropped_total`). Default 10; 0:
    /// none are written, all are counted.
    pub unauthenticated_audit_per_second: u64,
    /// How many such events may be written in a burst (default 100).
    pub unauthenticated_audit_burst: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 90,
            http2_keepalive_interval_seconds: 30,
            http2_keepalive_timeout_seconds: 20,
            max_connections: 4096,
            admin_max_connections: 64,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 3 * 1024 * 1024,
            unauthenticated_audit_per_second: 10,
            unauthenticated_audit_burst: 100,
        }
    }
}

/// The smallest request head limit: hyper's smallest HTTP/1.1 read buffer.
pub const MIN_HEADER_BYTES: u64 = 8192;

impl LimitsConfig {
    /// Each key with its `CUSTODY_LIMITS_*` override name and a mutable reference to its value.
    fn keys_mut(&mut self) -> [(&'static str, &mut u64); 10] {
        [
            (
                "header_read_timeout_seconds",
                &mut self.header_read_timeout_seconds,
            ),
            ("idle_timeout_seconds", &mut self.idle_timeout_seconds),
            (
                "http2_keepalive_interval_seconds",
                &mut self.http2_keepalive_interval_seconds,
            ),
            (
                "http2_keepalive_timeout_seconds",
                &mut self.http2_keepalive_timeout_seconds,
            ),
            ("max_connections", &mut self.max_connections),
            ("admin_max_connections", &mut self.admin_max_connections),
            ("max_header_bytes", &mut self.max_header_bytes),
            ("max_body_bytes", &mut self.max_body_bytes),
            (
                "unauthenticated_audit_per_second",
                &mut self.unauthenticated_audit_per_second,
            ),
            (
                "unauthenticated_audit_burst",
                &mut self.unauthenticated_audit_burst,
            ),
        ]
    }

    /// Applies `CUSTODY_LIMITS_<KEY>` overrides (e.g. `CUSTODY_LIMITS_MAX_CONNECTIONS`).
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) {
        for (key, value) in self.keys_mut() {
            let var = format!("CUSTODY_LIMITS_{}", key.to_ascii_uppercase());
            if let Some(v) = env(&var) {
                match v.trim().parse() {
                    Ok(n) => *value = n,
                    Err(_) => problems.push(format!("{var}: {v:?} is not a whole number")),
                }
            }
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                problems.push(format!(
                    "limits.{key}: {value} must be between {min} and {max}"
                ));
            }
        };
        range(
            "header_read_timeout_seconds",
            self.header_read_timeout_seconds,
            1,
            300,
        );
        range("idle_timeout_seconds", self.idle_timeout_seconds, 1, 86_400);
        range(
            "http2_keepalive_interval_seconds",
            self.http2_keepalive_interval_seconds,
            0,
            86_400,
        );
        range(
            "http2_keepalive_timeout_seconds",
            self.http2_keepalive_timeout_seconds,
            1,
            3600,
        );
        range("max_connections", self.max_connections, 1, 1_000_000);
        range(
            "admin_max_connections",
            self.admin_max_connections,
            1,
            1_000_000,
        );
        range(
            "max_header_bytes",
            self.max_header_bytes,
            MIN_HEADER_BYTES,
            16 * 1024 * 1024,
        );
        range("max_body_bytes", self.max_body_bytes, 1024, 1 << 40);
        range(
            "unauthenticated_audit_per_second",
            self.unauthenticated_audit_per_second,
            0,
            100_000,
        );
        range(
            "unauthenticated_audit_burst",
            self.unauthenticated_audit_burst,
            u64::from(self.unauthenticated_audit_per_second > 0),
            1_000_000,
        );
        problems
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// The idle connection timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// The HTTP/2 ping interval and answer timeout, `None` without pings.
    pub fn http2_keepalive(&self) -> Option<(Duration, Duration)> {
        seconds(self.http2_keepalive_interval_seconds).map(|interval| {
            (
                interval,
                Duration::from_secs(self.http2_keepalive_timeout_seconds),
            )
        })
    }

    fn explain(&self) -> String {
        format!(
            "limits: request head {} B within {}s, body {} B, idle connections closed after {}s, \
             HTTP/2 pings {}, at most {} connections (admin {}), refused unauthenticated \
             requests audited at {}/s (burst {})",
            self.max_header_bytes,
            self.header_read_timeout_seconds,
            self.max_body_bytes,
            self.idle_timeout_seconds,
            match self.http2_keepalive() {
                Some((every, timeout)) => format!(
                    "every {}s (answer within {}s)",
                    every.as_secs(),
                    timeout.as_secs()
                ),
                None => "off".to_owned(),
            },
            self.max_connections,
            self.admin_max_connections,
            self.unauthenticated_audit_per_second,
            self.unauthenticated_audit_burst,
        )
    }
}

/// The HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// The serving certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// The serving key (PEM, PKCS#8 or RSA or EC).
    pub tls_key: PathBuf,
    /// Require a PROXY protocol v2 header in front of every connection and take the client's
    /// address from it (default false). Turn it on only behind an L4 balancer that sends the
    /// header (e.g. `send-proxy-v2`): with it on, a connection without the header is
    /// closed; with it off, a header is not looked for, so clients cannot forge an address.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on (default `127.0.0.1:9090`); plain HTTP, keep it private.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `strict` (default): a request is forwarded only once its audit event is durable;
    /// `best-effort`: write failures are logged and counted, requests proceed.
    #[serde(default)]
    pub mode: AuditMode,
}

/// One cluster behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The name in the path prefix `/clusters/<name>`: lowercase letters, digits and `-`.
    pub name: String,
    /// A kubeconfig holding the gateway's own credential for this cluster (a token or client
    /// certificate whose only power should be `impersonate`). Mutually exclusive with
    /// `in_cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Use the in-cluster service account of the pod custody runs in.
    #[serde(default)]
    pub in_cluster: bool,
}

/// Everything wrong with a configuration, each problem with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Config {
    /// Parses and validates a configuration. `env` looks up environment variables; the
    /// overrides are `CUSTODY_DATA_DIR`, `CUSTODY_GATEWAY_ID`, `CUSTODY_LISTEN`,
    /// `CUSTODY_PROXY_PROTOCOL` (`true` or `false`), `CUSTODY_ADMIN_LISTEN`, `CUSTODY_AUDIT_MODE`, `CUSTODY_AUDITOR_GROUPS` (comma-separated)
    /// and `CUSTODY_LIMITS_<KEY>` for each `[limits]` key (e.g. `CUSTODY_LIMITS_MAX_CONNECTIONS`).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![e.to_string().trim_end().to_owned()],
        })?;
        let mut problems = Vec::new();
        if let Some(v) = env("CUSTODY_DATA_DIR") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("CUSTODY_GATEWAY_ID") {
            config.gateway_id = v;
        }
        if let Some(v) = env("CUSTODY_LISTEN") {
            match v.parse() {
                Ok(addr) => config.server.listen = addr,
                Err(_) => problems.push(format!(
                    "CUSTODY_LISTEN: {v:?} is not an address like 0.0.0.0:8443"
                )),
            }
        }
        if let Some(v) = env("CUSTODY_PROXY_PROTOCOL") {
            match v.trim() {
                "true" => config.server.proxy_protocol = true,
                "false" => config.server.proxy_protocol = false,
                _ => problems.push(format!(
                    "CUSTODY_PROXY_PROTOCOL: {v:?} must be true or false"
                )),
            }
        }
        if let Some(v) = env("CUSTODY_ADMIN_LISTEN") {
            match v.parse() {
                Ok(addr) => config.admin.listen = addr,
                Err(_) => problems.push(format!(
                    "CUSTODY_ADMIN_LISTEN: {v:?} is not an address like 127.0.0.1:9090"
                )),
            }
        }
        if let Some(v) = env("CUSTODY_AUDIT_MODE") {
            match v.as_str() {
                "strict" => config.audit.mode = AuditMode::Strict,
                "best-effort" => config.audit.mode = AuditMode::BestEffort,
                _ => problems.push(format!(
                    "CUSTODY_AUDIT_MODE: {v:?} must be strict or best-effort"
                )),
            }
        }
        if let Some(v) = env("CUSTODY_AUDITOR_GROUPS") {
            config.access.auditor_groups = v
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect();
        }
        config.limits.apply_env(env, &mut problems);
        if let Some(cluster) = &mut config.cluster {
            cluster.apply_env(env);
        }
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The web console's checks: a URL browsers can reach it at, and a client whose ID tokens
    /// the authenticator accepts.
    fn console_problems(&self) -> Vec<String> {
        let mut problems = self.console.problems();
        if let (Some(login), true) = (&self.login, self.console.enabled) {
            if let Err(e) = self.console.public_origin(self.server.listen) {
                problems.push(format!(
                    "{e} (or turn the web console off: [console] enabled = false)"
                ));
            }
            // The console's ID tokens are checked by the same authenticator as kubectl's, so
            // their audience must be one it accepts.
            let client = self
                .console
                .client_id
                .as_deref()
                .unwrap_or(&login.client_id);
            if let Some(issuer) = self.oidc.iter().find(|o| o.issuer == login.issuer)
                && !issuer.effective_audiences().iter().any(|a| a == client)
            {
                problems.push(format!(
                    "console.client_id {client:?} must be one of the [[oidc]] audiences of {:?}, \
                 or people's console logins are refused",
                    login.issuer
                ));
            }
        }
        problems
    }

    /// The checks serde cannot express.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".into());
        }
        if self.gateway_id.is_empty() || self.gateway_id.chars().any(char::is_control) {
            problems.push("gateway_id: must be a non-empty printable name".into());
        }
        if self.clusters.is_empty() {
            problems.push("clusters: at least one [[clusters]] entry is needed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            let at = format!("clusters[{i}] ({:?})", cluster.name);
            let valid_name = !cluster.name.is_empty()
                && cluster.name.len() <= 63
                && cluster
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                problems.push(format!(
                    "{at}: name must be 1-63 lowercase letters, digits or '-'"
                ));
            }
            if !seen.insert(cluster.name.clone()) {
                problems.push(format!("{at}: the name is used twice"));
            }
            match (&cluster.kubeconfig, cluster.in_cluster) {
                (Some(_), true) => {
                    problems.push(format!("{at}: set kubeconfig or in_cluster, not both"));
                }
                (None, false) => problems.push(format!(
                    "{at}: set kubeconfig = \"...\" or in_cluster = true"
                )),
                _ => {}
            }
        }
        if self.oidc.is_empty() && !self.service_accounts.enabled {
            problems.push(
                "oidc: no [[oidc]] issuer and service_accounts disabled: nobody could log in"
                    .into(),
            );
        }
        for (i, issuer) in self.oidc.iter().enumerate() {
            if let Err(problem) = issuer.validate() {
                problems.push(format!("oidc[{i}] ({:?}): {problem}", issuer.issuer));
            }
        }
        if let Err(problem) = self.impersonation.validate() {
            problems.push(format!("impersonation: {problem}"));
        }
        if let Some(policy) = &self.policy {
            problems.extend(policy.problems());
            // Two places deciding who may impersonate whom would disagree sooner or later.
            if !self.impersonation.allow.is_empty() {
                problems.push(
                    "impersonation.allow: with [policy], impersonation rules move into policy roles ([[policy.roles.impersonate]])"
                        .into(),
                );
            }
        }
        problems.extend(self.approvals.problems());
        problems.extend(self.streams.problems());
        problems.extend(self.limits.problems());
        if let Some(cluster) = &self.cluster {
            problems.extend(cluster.problems());
        }
        problems.extend(self.console_problems());
        if let Some(login) = &self.login {
            if !self.oidc.iter().any(|o| o.issuer == login.issuer) {
                problems.push(format!(
                    "login.issuer {:?} must be one of the [[oidc]] issuers",
                    login.issuer
                ));
            }
            if login.client_id.is_empty() {
                problems.push("login.client_id: must not be empty".into());
            }
            if !login.scopes.iter().any(|s| s == "openid") {
                problems.push("login.scopes: must include \"openid\"".into());
            }
            if login
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                problems.push("login.scopes: a scope is empty or has spaces".into());
            }
        }
        for (i, group) in self.access.auditor_groups.iter().enumerate() {
            if group.trim().is_empty() || group.chars().any(char::is_control) {
                problems.push(format!(
                    "access.auditor_groups[{i}]: {group:?} must be a non-empty printable group name"
                ));
            }
        }
        problems
    }

    /// A few lines saying what this configuration does, for `custody config check`.
    pub fn explain(&self) -> String {
        let clusters: Vec<String> = self
            .clusters
            .iter()
            .map(|c| match (&c.kubeconfig, &c.context) {
                (Some(path), Some(ctx)) => {
                    format!("{} (kubeconfig {}, context {ctx})", c.name, path.display())
                }
                (Some(path), None) => format!("{} (kubeconfig {})", c.name, path.display()),
                _ => format!("{} (in-cluster)", c.name),
            })
            .collect();
        let issuers: Vec<&str> = self.oidc.iter().map(|o| o.issuer.as_str()).collect();
        format!(
            "listens on https://{}{} (admin http://{})\nclusters: {}\nOIDC issuers: {}\nServiceAccount tokens: {}\nimpersonation rules: {}\naudit: {} in {}\n{}\n{}\nauditor groups (see every session): {}\n",
            self.server.listen,
            if self.server.proxy_protocol {
                ", behind a balancer: PROXY protocol v2 header required"
            } else {
                ""
            },
            self.admin.listen,
            clusters.join(", "),
            if issuers.is_empty() {
                "none".to_owned()
            } else {
                issuers.join(", ")
            },
            if self.service_accounts.enabled {
                "accepted (TokenReview)"
            } else {
                "refused"
            },
            self.impersonation.allow.len(),
            match self.audit.mode {
                AuditMode::Strict => "strict",
                AuditMode::BestEffort => "best-effort",
            },
            match &self.cluster {
                Some(_) => "PostgreSQL (cluster mode)".to_owned(),
                None => self.data_dir.display().to_string(),
            },
            self.streams.explain(),
            self.limits.explain(),
            if self.access.auditor_groups.is_empty() {
                "none".to_owned()
            } else {
                self.access.auditor_groups.join(", ")
            },
        ) + &self.explain_policy()
            + &self.cluster.as_ref().map_or_else(
                || "cluster mode: off (one machine: SQLite and local files)\n".to_owned(),
                cluster::ClusterModeConfig::explain,
            )
    }

    /// The `policy:` lines of [`Config::explain`].
    fn explain_policy(&self) -> String {
        let Some(policy) = &self.policy else {
            return "policy: none ([policy] not set)\n".to_owned();
        };
        let count = policy.roles.len();
        let roles = if count == 1 { "role" } else { "roles" };
        let mut out = format!("policy: {count} {roles}, deny unless a rule allows\n");
        for role in &policy.roles {
            let mut who: Vec<String> = role.users.clone();
            who.extend(role.groups.iter().map(|g| format!("group {g}")));
            let mut traits = Vec::new();
            if role.show_secrets {
                traits.push("sees secret values");
            }
            if role.approve {
                traits.push("approves requests");
            }
            if role.break_glass {
                traits.push("BREAK-GLASS");
            }
            if role.recording == crate::policy::RecordingMode::BestEffort {
                traits.push("best-effort recording");
            }
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "  role {}: {}; {} rules, {} impersonation rules{}{}",
                role.name,
                who.join(", "),
                role.rules.len(),
                role.impersonate.len(),
                if traits.is_empty() { "" } else { "; " },
                traits.join(", "),
            );
        }
        out
    }
}

fn default_gateway_id() -> String {
    "custody".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
data_dir = "/var/lib/custody"
[server]
listen = "127.0.0.1:8443"
tls_cert = "/etc/custody/tls.crt"
tls_key = "/etc/custody/tls.key"
[[clusters]]
name = "prod"
kubeconfig = "/etc/custody/prod.kubeconfig"
[[oidc]]
issuer = "https://idp.example.com"
client_id = "custody"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL, &no_env).unwrap();
        assert_eq!(config.gateway_id, "custody");
        assert_eq!(config.audit.mode, AuditMode::Strict);
        assert_eq!(config.admin.listen.port(), 9090);
        assert!(
            config
                .explain()
                .contains("clusters: prod (kubeconfig /etc/custody/prod.kubeconfig)")
        );
        assert_eq!(
            config.streams.idle_timeout(),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(config.streams.max_duration(), None);
        assert!(
            config
                .explain()
                .contains("streams: idle timeout 14400s, maximum duration none"),
            "{}",
            config.explain()
        );
    }

    #[test]
    fn stream_limits_are_read_and_zero_means_none() {
        let text = format!(
            "{MINIMAL}\n[streams]\nidle_timeout_seconds = 0\nmax_duration_seconds = 3600\n"
        );
        let config = Config::parse(&text, &no_env).unwrap();
        assert_eq!(config.streams.idle_timeout(), None);
        assert_eq!(
            config.streams.max_duration(),
            Some(Duration::from_secs(3600))
        );
        assert!(
            config
                .explain()
                .contains("streams: idle timeout none, maximum duration 3600s")
        );
    }

    #[test]
    fn stream_limits_are_checked() {
        let text = format!(
            "{MINIMAL}\n[streams]\nidle_timeout_seconds = 999999999999\nmax_duration_seconds = -1\n"
        );
        let err = Config::parse(&text, &no_env).unwrap_err();
        assert!(err.to_string().contains("max_duration_seconds"), "{err}");
        let text = format!("{MINIMAL}\n[streams]\nidle_timeout_seconds = 999999999999\n");
        let err = Config::parse(&text, &no_env).unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.starts_with("streams.idle_timeout_seconds")),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[streams]\nidle_timeout = 5\n");
        let err = Config::parse(&text, &no_env).unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn limits_have_defaults_overrides_and_checks() {
        let config = Config::parse(MINIMAL, &no_env).unwrap();
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(config.limits.header_read_timeout(), Duration::from_secs(10));
        assert_eq!(
            config.limits.http2_keepalive(),
            Some((Duration::from_secs(30), Duration::from_secs(20)))
        );
        assert!(
            config.explain().contains(
                "limits: request head 65536 B within 10s, body 3145728 B, idle connections \
                 closed after 90s"
            ),
            "{}",
            config.explain()
        );

        let text = format!(
            "{MINIMAL}\n[limits]\nmax_connections = 10\nhttp2_keepalive_interval_seconds = 0\n"
        );
        let config = Config::parse(&text, &no_env).unwrap();
        assert_eq!(config.limits.max_connections, 10);
        assert_eq!(config.limits.http2_keepalive(), None);
        assert_eq!(config.limits.idle_timeout_seconds, 90);
        let env = |k: &str| (k == "CUSTODY_LIMITS_MAX_BODY_BYTES").then(|| "1048576".to_owned());
        assert_eq!(
            Config::parse(&text, &env).unwrap().limits.max_body_bytes,
            1024 * 1024
        );

        let text = format!(
            "{MINIMAL}\n[limits]\nheader_read_timeout_seconds = 0\nmax_header_bytes = 100\n\
             max_connections = 0\nunauthenticated_audit_per_second = 5\n\
             unauthenticated_audit_burst = 0\n"
        );
        let err = Config::parse(&text, &no_env).unwrap_err();
        for key in [
            "limits.header_read_timeout_seconds",
            "limits.max_header_bytes",
            "limits.max_connections",
            "limits.unauthenticated_audit_burst",
        ] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(key)),
                "{key}: {err}"
            );
        }
        let bad = |k: &str| (k == "CUSTODY_LIMITS_IDLE_TIMEOUT_SECONDS").then(|| "soon".to_owned());
        let err = Config::parse(MINIMAL, &bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("CUSTODY_LIMITS_IDLE_TIMEOUT_SECONDS: \"soon\" is not a whole number"),
            "{err}"
        );
        let err =
            Config::parse(&format!("{MINIMAL}\n[limits]\nmax_conns = 1\n"), &no_env).unwrap_err();
        assert!(err.to_string().contains("max_conns"), "{err}");
    }

    #[test]
    fn the_proxy_protocol_is_off_unless_asked_for() {
        let config = Config::parse(MINIMAL, &no_env).unwrap();
        assert!(!config.server.proxy_protocol);
        assert!(!config.explain().contains("PROXY"), "{}", config.explain());
        let text = MINIMAL.replace(
            "tls_key = \"/etc/custody/tls.key\"",
            "tls_key = \"/etc/custody/tls.key\"\nproxy_protocol = true",
        );
        let config = Config::parse(&text, &no_env).unwrap();
        assert!(config.server.proxy_protocol);
        let explained = config.explain();
        assert!(
            explained.contains(
                "listens on https://127.0.0.1:8443, behind a balancer: PROXY protocol v2 \
                 header required (admin"
            ),
            "{explained}"
        );
        let off = |k: &str| (k == "CUSTODY_PROXY_PROTOCOL").then(|| "false".to_owned());
        assert!(!Config::parse(&text, &off).unwrap().server.proxy_protocol);
        let on = |k: &str| (k == "CUSTODY_PROXY_PROTOCOL").then(|| "true".to_owned());
        assert!(Config::parse(MINIMAL, &on).unwrap().server.proxy_protocol);
        let bad = |k: &str| (k == "CUSTODY_PROXY_PROTOCOL").then(|| "yes".to_owned());
        let err = Config::parse(MINIMAL, &bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("CUSTODY_PROXY_PROTOCOL: \"yes\" must be true or false"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::parse(&format!("{MINIMAL}\nlisten_port = 1\n"), &no_env).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = Config::parse(&MINIMAL.replace("tls_key", "tls_keyy"), &no_env).unwrap_err();
        assert!(err.to_string().contains("tls_keyy"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace("name = \"prod\"", "name = \"Prod_1\"")
            .replace("kubeconfig = \"/etc/custody/prod.kubeconfig\"", "")
            .replace(
                "issuer = \"https://idp.example.com\"",
                "issuer = \"http://idp.example.com\"",
            );
        let err = Config::parse(&text, &no_env).unwrap_err();
        assert!(err.problems.len() >= 3, "{err}");
        assert!(err.problems.iter().any(|p| p.contains("lowercase letters")));
        assert!(err.problems.iter().any(|p| p.contains("in_cluster = true")));
        assert!(err.problems.iter().any(|p| p.starts_with("oidc[0]")));
    }

    #[test]
    fn environment_overrides_apply_and_are_checked() {
        let env = |k: &str| match k {
            "CUSTODY_LISTEN" => Some("0.0.0.0:9443".to_owned()),
            "CUSTODY_AUDIT_MODE" => Some("best-effort".to_owned()),
            _ => None,
        };
        let config = Config::parse(MINIMAL, &env).unwrap();
        assert_eq!(config.server.listen.port(), 9443);
        assert!(config.access.auditor_groups.is_empty());
        let auditors =
            |k: &str| (k == "CUSTODY_AUDITOR_GROUPS").then(|| "sre, security".to_owned());
        let with_auditors = Config::parse(MINIMAL, &auditors).unwrap();
        assert_eq!(with_auditors.access.auditor_groups, ["sre", "security"]);
        assert!(
            with_auditors
                .explain()
                .contains("auditor groups (see every session): sre, security")
        );
        let text = format!("{MINIMAL}\n[access]\nauditor_groups = [\"\"]\n");
        assert!(
            Config::parse(&text, &no_env)
                .unwrap_err()
                .to_string()
                .contains("access.auditor_groups[0]")
        );
        assert_eq!(config.audit.mode, AuditMode::BestEffort);
        let bad = |k: &str| (k == "CUSTODY_AUDIT_MODE").then(|| "lax".to_owned());
        assert!(
            Config::parse(MINIMAL, &bad)
                .unwrap_err()
                .to_string()
                .contains("strict or best-effort")
        );
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;

    const BASE: &str = r#"
data_dir = "/var/lib/custody"
[server]
listen = "127.0.0.1:8443"
tls_cert = "/etc/custody/tls.crt"
tls_key = "/etc/custody/tls.key"
[[clusters]]
name = "prod"
kubeconfig = "/etc/custody/prod.kubeconfig"
[[oidc]]
issuer = "https://idp.example.com"
client_id = "custody"
"#;

    #[test]
    fn login_defaults_and_checks() {
        let text = format!(
            "{BASE}[login]\nissuer = \"https://idp.example.com\"\nclient_id = \"custody\"\nclient_secret = \"s3cret\"\n"
        );
        let config = Config::parse(&text, &|_| None).unwrap();
        let login = config.login.unwrap();
        assert_eq!(
            login.scopes,
            ["openid", "profile", "email", "offline_access"]
        );
        assert!(!format!("{login:?}").contains("s3cret"));

        let text = format!(
            "{BASE}[login]\nissuer = \"https://other.example.com\"\nclient_id = \"\"\nscopes = [\"email\"]\n"
        );
        let err = Config::parse(&text, &|_| None).unwrap_err().to_string();
        assert!(err.contains("login.issuer"), "{err}");
        assert!(err.contains("login.client_id"), "{err}");
        assert!(err.contains("openid"), "{err}");
    }

    #[test]
    fn the_console_needs_a_public_url_and_an_accepted_client() {
        let login = "[login]\nissuer = \"https://idp.example.com\"\nclient_id = \"custody\"\n";
        // On a loopback address the console's origin is the gateway's own.
        let config = Config::parse(&format!("{BASE}{login}"), &|_| None).unwrap();
        assert!(config.console.enabled);
        let everywhere = BASE.replace("127.0.0.1:8443", "0.0.0.0:8443");
        let err = Config::parse(&format!("{everywhere}{login}"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("console.public_url"), "{err}");
        let named =
            format!("{everywhere}{login}[console]\npublic_url = \"https://custody.example.com\"\n");
        Config::parse(&named, &|_| None).unwrap();
        let off = format!("{everywhere}{login}[console]\nenabled = false\n");
        Config::parse(&off, &|_| None).unwrap();
        let other_client = format!("{BASE}{login}[console]\nclient_id = \"custody-web\"\n");
        let err = Config::parse(&other_client, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("console.client_id"), "{err}");
    }
}
