//! The test environment for the gateway tests: kube-sim and the gateway in-process on a
//! background runtime, a fake authenticator, and kubeconfigs for the pinned kubectl binaries.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    clippy::struct_excessive_bools,
    clippy::too_many_lines,
    reason = "test harness: a failure should stop the test"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use custody::audit::{AuditMode, AuditSink};
use custody::authn::{Authenticator, ServiceAccountConfig};
use custody::gateway::{Gateway, GatewayParts, RecordingConfig};
use custody::impersonation::{AllowRule, ImpersonationConfig};
use custody::metrics::Metrics;
use custody::principal::{AuthFailure, AuthFuture, AuthMethod, Authenticate, Principal};
use custody::upstream::{ClusterReviewer, Upstream};
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::pki::Pki;
use http::HeaderMap;

/// Bearer tokens → principals: alice (dev), bob (sre, allowed to impersonate) and carol (no
/// groups).
pub struct FakeAuth;

impl Authenticate for FakeAuth {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap, _cluster: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(AuthFailure::Missing)?;
            let (user, groups) = match token {
                // alice-brief-token: alice with a credential that expires 3 s after it is
                // presented.
                "alice-token" | "alice-brief-token" => ("alice", vec!["dev".to_owned()]),
                "bob-token" => ("bob", vec!["sre".to_owned()]),
                "carol-token" => ("carol", Vec::new()),
                _ => return Err(AuthFailure::Invalid("unknown token".into())),
            };
            let expires_at = (token == "alice-brief-token").then(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                i64::try_from(now).unwrap() + 3
            });
            Ok(Principal {
                method: AuthMethod::Oidc,
                issuer: "https://issuer.test".into(),
                subject: format!("sub-{user}"),
                username: user.into(),
                groups,
                expires_at,
            })
        })
    }
}

/// How to start the environment.
#[derive(Default)]
pub struct Options {
    /// Audit in best-effort mode instead of strict.
    pub best_effort: bool,
    /// Write the audit JSON lines here instead of the data directory (e.g. `/dev/full`).
    pub jsonl: Option<PathBuf>,
    /// Give the gateway a kubeconfig whose CA is not kube-sim's.
    pub wrong_ca: bool,
    /// Authenticate with custody's real authenticator, `ServiceAccount` tokens enabled and
    /// reviewed by kube-sim (no OIDC issuer), instead of the fake one.
    pub service_accounts: bool,
    /// Send the `TokenReview`s to this server URL instead of kube-sim's (same CA and
    /// credential), e.g. a closed port.
    pub review_server: Option<String>,
    /// The time limit of one `TokenReview`.
    pub review_timeout: Option<Duration>,
    /// The audiences the `TokenReview`s ask for (empty: the API server's).
    pub review_audiences: Vec<String>,
    /// kube-sim's rule file instead of its defaults.
    pub sim_rules: Option<PathBuf>,
    /// Relay and record exec, attach and port-forward (recordings under the data directory).
    pub recording: bool,
    /// The relay limits of recorded sessions (default: none).
    pub relay: Option<custody::stream::relay::RelayConfig>,
    /// Serve the cluster `sim` from this API server instead of kube-sim's (kube-sim still runs).
    pub upstream: Option<Upstream>,
    /// Run kube-sim on a runtime of its own, so [`Env::kill_sim`] can stop it mid-session.
    pub killable_sim: bool,
    /// The gateway's policy (`[policy]`); `None` leaves decisions to kube-sim's RBAC.
    pub policy: Option<custody::policy::PolicyConfig>,
    /// `[approvals]`: the approvers' webhook.
    pub approvals: custody::approval::notify::ApprovalsConfig,
    /// `[limits]` for the HTTPS listener and the audit of unauthenticated refusals (default:
    /// the configuration's defaults).
    pub limits: Option<custody::config::LimitsConfig>,
    /// `server.proxy_protocol`: every connection must start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
}

/// kube-sim and the gateway, running.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    sim: Option<KubeSim>,
    /// kube-sim's own runtime, with `killable_sim`.
    sim_rt: Option<tokio::runtime::Runtime>,
    pub sim_dir: PathBuf,
    pub gateway_addr: SocketAddr,
    pub ca_pem: String,
    pub data_dir: PathBuf,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub kubeconfig: PathBuf,
    /// The key recordings are signed with, when recording is on.
    pub signing_key: Option<Arc<ed25519_dalek::SigningKey>>,
    /// The control socket (`<data_dir>/control.sock`), when recording is on.
    pub control_socket: Option<PathBuf>,
    dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Env {
    pub fn start(options: Options) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sim_dir = dir.path().join("cluster");
        let data_dir = dir.path().join("data");
        let mut sim_config = KubeSimConfig::new(&sim_dir);
        sim_config.rules.clone_from(&options.sim_rules);
        let (sim, sim_rt) = start_sim(&rt, sim_config, options.killable_sim);
        let mut gw_kubeconfig = sim_dir.join("gateway.kubeconfig");
        if options.wrong_ca {
            let other = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
            let text = std::fs::read_to_string(&gw_kubeconfig).unwrap();
            let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            yaml["clusters"][0]["cluster"]["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD
                    .encode(other.ca_pem())
                    .into();
            gw_kubeconfig = dir.path().join("wrong-ca.kubeconfig");
            std::fs::write(&gw_kubeconfig, serde_yaml::to_string(&yaml).unwrap()).unwrap();
        }
        let upstream = rt
            .block_on(Upstream::from_kubeconfig(&gw_kubeconfig, None))
            .unwrap();
        let mode = if options.best_effort {
            AuditMode::BestEffort
        } else {
            AuditMode::Strict
        };
        let audit = match &options.jsonl {
            Some(path) => AuditSink::with_paths(path, &data_dir.join("index.sqlite"), mode),
            None => AuditSink::open(&data_dir, mode),
        };
        std::fs::create_dir_all(&data_dir).unwrap();
        let audit = audit.unwrap();
        let limits = options.limits.unwrap_or_default();
        audit.limit_unauthenticated(
            limits.unauthenticated_audit_per_second,
            limits.unauthenticated_audit_burst,
        );
        let metrics = Metrics::new();
        let authenticator: Arc<dyn Authenticate> = if options.service_accounts {
            service_account_authenticator(&rt, &options, &upstream, &gw_kubeconfig, dir.path())
        } else {
            Arc::new(FakeAuth)
        };
        let (signing_key, recording) =
            recording_config(options.recording, options.relay, &data_dir);
        let gateway = Gateway::new(GatewayParts {
            authenticator,
            clusters: vec![(
                "sim".to_owned(),
                options.upstream.clone().unwrap_or(upstream),
            )],
            impersonation: ImpersonationConfig {
                allow: vec![AllowRule {
                    users: vec!["bob".into()],
                    targets_users: vec!["*".into()],
                    targets_groups: vec!["*".into()],
                    targets_uids: vec!["uid-c".into()],
                    ..AllowRule::default()
                }],
                ..ImpersonationConfig::default()
            },
            audit: audit.clone(),
            metrics: metrics.clone(),
            recording,
            // bob (group sre) audits: the sessions API shows him every session.
            auditor_groups: vec!["sre".to_owned()],
            policy: options.policy.clone(),
            approvals: options.approvals.clone(),
            approval_store: None,
            cluster: None,
        })
        .unwrap();
        let pki = Pki::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let gateway_addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gateway = Arc::new(gateway);
        let control_socket = start_control(&rt, &gateway, &data_dir);
        rt.spawn(custody::server::serve_with(
            gateway,
            listener,
            pki.server_config().unwrap(),
            custody::server::ListenerLimits::gateway(&limits)
                .with_proxy_protocol(options.proxy_protocol),
            async move {
                let _ = rx.await;
            },
        ));
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, client_kubeconfig(gateway_addr, &pki.ca_pem())).unwrap();
        Env {
            rt,
            sim: Some(sim),
            sim_rt,
            sim_dir,
            gateway_addr,
            ca_pem: pki.ca_pem(),
            data_dir,
            audit,
            metrics,
            kubeconfig,
            signing_key,
            control_socket,
            dir,
            _shutdown: tx,
        }
    }

    /// The gateway's URL, `https://ADDR`.
    pub fn url(&self) -> String {
        format!("https://{}", self.gateway_addr)
    }

    /// The gateway's CA certificate in a PEM file (for `--ca-file`).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("gateway-ca.pem");
        if !path.exists() {
            std::fs::write(&path, &self.ca_pem).unwrap();
        }
        path
    }

    /// kubectl `minor` using the gateway kubeconfig; pass `--context alice|bob|carol`.
    pub fn kubectl(&self, minor: &str) -> Kubectl {
        let home = self.dir.path().join(format!("home-{minor}"));
        std::fs::create_dir_all(&home).unwrap();
        Kubectl::new(
            kubectl_binary(minor).unwrap(),
            self.kubeconfig.clone(),
            home,
        )
    }

    /// kube-sim's native audit events.
    pub fn sim_audit(&self) -> Vec<serde_json::Value> {
        read_json_lines(&self.sim_dir.join("audit.log"))
    }

    /// custody's audit JSON lines.
    pub fn custody_audit(&self) -> Vec<serde_json::Value> {
        read_json_lines(&self.data_dir.join("audit").join("audit.jsonl"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills kube-sim as a crash would: every task of its runtime (listener, connections,
    /// upgraded streams) is dropped at once, its sockets closed without a TLS `close_notify`,
    /// and its processes killed (they are killed on drop). Needs `killable_sim`.
    pub fn kill_sim(&mut self) {
        let sim_rt = self
            .sim_rt
            .take()
            .expect("kill_sim needs Options::killable_sim");
        sim_rt.shutdown_timeout(Duration::from_secs(5));
        drop(self.sim.take());
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.sim_rt
                .as_ref()
                .unwrap_or(&self.rt)
                .block_on(sim.shutdown());
        }
    }
}

/// Starts kube-sim on `rt`, or on a runtime of its own (returned) when `killable`.
fn start_sim(
    rt: &tokio::runtime::Runtime,
    config: KubeSimConfig,
    killable: bool,
) -> (KubeSim, Option<tokio::runtime::Runtime>) {
    let sim_rt = killable.then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    let sim = sim_rt
        .as_ref()
        .unwrap_or(rt)
        .block_on(KubeSim::start(config))
        .unwrap();
    (sim, sim_rt)
}

/// Serves the control socket in `data_dir` when the gateway records sessions, as
/// `custody serve` does; it lives as long as `rt`.
fn start_control(
    rt: &tokio::runtime::Runtime,
    gateway: &Gateway,
    data_dir: &Path,
) -> Option<PathBuf> {
    let live = gateway.live_sessions()?;
    let socket = rt
        .block_on(custody::control::ControlSocket::bind(data_dir))
        .unwrap();
    let path = socket.path().to_owned();
    rt.spawn(custody::control::serve(
        socket,
        live,
        None,
        std::future::pending(),
    ));
    Some(path)
}

/// The signing key and the recording configuration, when recording is on.
fn recording_config(
    on: bool,
    relay: Option<custody::stream::relay::RelayConfig>,
    data_dir: &Path,
) -> (
    Option<Arc<ed25519_dalek::SigningKey>>,
    Option<RecordingConfig>,
) {
    if !on {
        return (None, None);
    }
    let key = Arc::new(
        custody_recorder::integrity::load_or_create_signing_key(&data_dir.join("signing.key"))
            .unwrap(),
    );
    let config = RecordingConfig {
        data_dir: data_dir.to_owned(),
        catalog: Arc::new(custody_recorder::catalog::SqliteCatalog::new(
            &data_dir.join("index.sqlite"),
        )),
        key: key.clone(),
        writer: custody_recorder::writer::WriterConfig::default(),
        relay: relay.unwrap_or_default(),
        gateway_id: "test-gateway".into(),
        replica_id: None,
        objects: None,
    };
    (Some(key), Some(config))
}

/// custody's authenticator with `ServiceAccount` tokens enabled and no OIDC issuer, reviewing
/// with kube-sim over `upstream`, or over a copy of the gateway kubeconfig pointed at
/// `options.review_server`.
fn service_account_authenticator(
    rt: &tokio::runtime::Runtime,
    options: &Options,
    upstream: &Upstream,
    gw_kubeconfig: &Path,
    dir: &Path,
) -> Arc<dyn Authenticate> {
    let review_upstream = match &options.review_server {
        Some(server) => {
            let text = std::fs::read_to_string(gw_kubeconfig).unwrap();
            let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            yaml["clusters"][0]["cluster"]["server"] = server.as_str().into();
            let path = dir.join("review.kubeconfig");
            std::fs::write(&path, serde_yaml::to_string(&yaml).unwrap()).unwrap();
            rt.block_on(Upstream::from_kubeconfig(&path, None)).unwrap()
        }
        None => upstream.clone(),
    };
    let mut reviewer = ClusterReviewer::new([("sim".to_owned(), review_upstream)]);
    if let Some(timeout) = options.review_timeout {
        reviewer = reviewer.with_timeout(timeout);
    }
    let config = ServiceAccountConfig {
        enabled: true,
        audiences: options.review_audiences.clone(),
    };
    Arc::new(Authenticator::new(&[], &config, Some(Arc::new(reviewer))).unwrap())
}

pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts kubectl succeeded and returns its stdout.
pub fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn client_kubeconfig(addr: SocketAddr, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let user = |name: &str| format!("- name: {name}\n  user:\n    token: {name}-token\n");
    let context = |name: &str| {
        format!(
            "- name: {name}\n  context:\n    cluster: custody\n    user: {name}\n    namespace: default\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: custody\n  cluster:\n    server: https://{addr}/clusters/sim\n    certificate-authority-data: {ca}\nusers:\n{}{}contexts:\n{}{}current-context: alice\n",
        user("alice"),
        user("bob") + &user("carol"),
        context("alice"),
        context("bob") + &context("carol"),
    )
}
