//! The test environment for the gateway tests: kube-sim and the gateway in-process on a
//! background runtime, a fake authenticator, and kubeconfigs for the pinned kubectl binaries.
//!
//! **Cluster mode.** The gateway is built as a `[cluster]` replica builds it (`custody serve`'s
//! `start`): its catalog, audit trail and approvals in PostgreSQL, its recordings spooled under
//! `<data_dir>/spool` and stored in S3, a lease under a replica id of its own, and the lease,
//! command and orphan loops running. Each [`Env`] gets a fresh database on the test binary's
//! shared PostgreSQL server and a fresh key prefix in its shared S3 bucket
//! (`custody_fixtures::{postgres, s3}`). It is on
//!
//! - for every `Env` of a test binary whose crate name starts with `cluster_` ([`cluster_mode`]):
//!   cargo names a test binary after its file, so `tests/cluster_policy_matrix.rs` holding
//!   `#[path = "policy_matrix.rs"] mod suite;` runs that whole suite in cluster mode, and the
//!   suite's own binary still runs it on one machine. The switch is decided when the binary
//!   is compiled (`CARGO_CRATE_NAME`), before any test runs, and nothing at run time changes it;
//! - for one `Env` with [`Options::cluster`].
//!
//! Whatever a test reads back goes through this harness, which reads it from where the mode
//! keeps it: [`Env::custody_audit`], [`Env::sessions`], [`Env::stored_recording`],
//! [`Env::recording`], [`Env::written`], [`Env::assert_data_dir_private`].

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
use custody::approval::ApprovalStore;
use custody::approval::postgres::PgStore;
use custody::audit::{AuditMode, AuditSink};
use custody::authn::{Authenticator, ServiceAccountConfig};
use custody::cluster::ClusterMode;
use custody::gateway::{Gateway, GatewayParts, ObjectStorage, RecordingConfig};
use custody::impersonation::{AllowRule, ImpersonationConfig};
use custody::metrics::Metrics;
use custody::principal::{AuthFailure, AuthFuture, AuthMethod, Authenticate, Principal};
use custody::upstream::{ClusterReviewer, Upstream};
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::pki::Pki;
use custody_recorder::index::SessionRow;
use http::HeaderMap;

#[path = "cluster.rs"]
mod cluster;

/// Whether this test binary runs its suites in cluster mode: its crate name (its file's name)
/// starts with `cluster_`. See the module's docs.
pub fn cluster_mode() -> bool {
    env!("CARGO_CRATE_NAME").starts_with("cluster_")
}

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
    /// Run this environment in cluster mode even in a binary that is not `cluster_*` (see the
    /// module's docs).
    pub cluster: bool,
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
    /// In cluster mode, the shared stores and the replica's loops.
    pub cluster: Option<cluster::Shared>,
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
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let gateway_addr = listener.local_addr().unwrap();
        let mut shared = (cluster_mode() || options.cluster).then(|| {
            assert!(
                options.jsonl.is_none(),
                "Options::jsonl is a one-machine option: cluster mode writes no audit file"
            );
            // The key every replica shares (`[cluster] signing_key_file`): the operator's file,
            // outside the data directory.
            let key = custody_recorder::integrity::load_or_create_signing_key(
                &dir.path().join("cluster-signing.key"),
            )
            .unwrap();
            cluster::join(
                &rt,
                Arc::new(key),
                &format!("https://{gateway_addr}"),
                &data_dir.join("spool"),
            )
        });
        let audit = match (&shared, &options.jsonl) {
            (Some(shared), _) => {
                let _entered = rt.enter();
                AuditSink::with_catalog(shared.mode.catalog.clone(), mode, shared.mode.replica_id())
            }
            (None, Some(path)) => {
                AuditSink::with_paths(path, &data_dir.join("index.sqlite"), mode).unwrap()
            }
            (None, None) => AuditSink::open(&data_dir, mode).unwrap(),
        };
        std::fs::create_dir_all(&data_dir).unwrap();
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
        let (signing_key, recording) = recording_config(
            options.recording,
            options.relay,
            &data_dir,
            shared.as_ref().map(|s| &s.mode),
        );
        let approval_store = shared.as_ref().map(|shared| {
            Arc::new(PgStore::new(shared.mode.db.clone(), rt.handle().clone()))
                as Arc<dyn ApprovalStore>
        });
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
            approval_store,
            cluster: shared.as_ref().map(|s| s.mode.clone()),
        })
        .unwrap();
        let pki = Pki::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gateway = Arc::new(gateway);
        if let Some(shared) = &mut shared {
            shared.spawn_loops(&rt, gateway.live_sessions().unwrap_or_default());
        }
        let control_socket =
            start_control(&rt, &gateway, &data_dir, shared.as_ref().map(|s| &s.mode));
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
            cluster: shared,
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

    /// custody's audit trail, oldest first: on one machine the lines of its file (a
    /// request's decision, then its completion as a second line); in cluster mode the
    /// catalog's rows as the same JSON objects (one per request, completed in place).
    pub fn custody_audit(&self) -> Vec<serde_json::Value> {
        match &self.cluster {
            Some(shared) => shared.audit(&self.rt),
            None => read_json_lines(&self.data_dir.join("audit").join("audit.jsonl")),
        }
    }

    /// Every session row of the index (the data directory's, or the cluster's catalog),
    /// newest first.
    pub fn sessions(&self) -> Vec<SessionRow> {
        match &self.cluster {
            Some(shared) => shared.sessions(&self.rt),
            None => custody_recorder::index::Index::open(&self.data_dir.join("index.sqlite"))
                .unwrap()
                .sessions(&custody_recorder::index::SessionQuery {
                    limit: Some(1_000_000),
                    ..custody_recorder::index::SessionQuery::default()
                })
                .unwrap(),
        }
    }

    /// Session `id`'s recording as stored: the file under `<data_dir>/recordings`, or the
    /// recording object in the bucket.
    pub fn stored_recording(&self, id: &str) -> Vec<u8> {
        match &self.cluster {
            Some(shared) => shared.recording(&self.rt, id, &self.dir.path().join("fetched")),
            None => std::fs::read(
                self.data_dir
                    .join("recordings")
                    .join(format!("{id}.cast.zst")),
            )
            .unwrap(),
        }
    }

    /// Session `id`'s stored recording, read (not checked against a key).
    pub fn recording(&self, id: &str) -> custody_recorder::reader::Recording {
        custody_recorder::reader::read_recording_bytes(&self.stored_recording(id), None).unwrap()
    }

    /// Everything custody wrote, for leak checks, each with where it is: every file under
    /// the data directory, and in cluster mode every table of the database and every object
    /// under the environment's prefix (see `cluster::Shared::written`). Recordings (zstd) are
    /// decompressed.
    pub fn written(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = files_under(&self.data_dir)
            .into_iter()
            .map(|(path, bytes)| (path.display().to_string(), bytes))
            .collect();
        if let Some(shared) = &self.cluster {
            out.extend(shared.written(&self.rt, &self.dir.path().join("fetched")));
        }
        for (name, bytes) in &mut out {
            if Path::new(name.as_str())
                .extension()
                .is_some_and(|e| e == "zst")
            {
                // Joined segments, and the spool file of a session still running, end where
                // the last flush did.
                let partial = name.contains("segments")
                    || (name.contains("/spool/") && !name.contains("/spool/cache/"));
                *bytes = unzstd(bytes, partial);
            }
        }
        out
    }

    /// Asserts that everything under the data directory is its user's alone (directories
    /// 0700, files 0600), and that the walk saw what this mode writes there at least: on one
    /// machine `index.sqlite` (and its WAL), the audit trail, a recording and the control
    /// socket; in cluster mode the control socket, the spool directory and the sessions API's
    /// local copy of a stored recording in its cache directory. Returns how many it checked.
    pub fn assert_data_dir_private(&self) -> usize {
        let mut checked = 0;
        let mut stack = vec![self.data_dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                let path = entry.path();
                if meta.is_dir() {
                    assert_eq!(mode, 0o700, "{}", path.display());
                    stack.push(path);
                } else {
                    assert_eq!(mode, 0o600, "{}", path.display());
                }
                checked += 1;
            }
        }
        let least = if self.cluster.is_some() { 4 } else { 5 };
        assert!(checked >= least, "{checked} entries");
        checked
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
/// `custody serve` does (in cluster mode, ending sessions other replicas hold too); it lives
/// as long as `rt`.
fn start_control(
    rt: &tokio::runtime::Runtime,
    gateway: &Gateway,
    data_dir: &Path,
    cluster: Option<&ClusterMode>,
) -> Option<PathBuf> {
    let live = gateway.live_sessions()?;
    let socket = rt
        .block_on(custody::control::ControlSocket::bind(data_dir))
        .unwrap();
    let path = socket.path().to_owned();
    rt.spawn(custody::control::serve(
        socket,
        live,
        cluster.cloned(),
        std::future::pending(),
    ));
    Some(path)
}

/// The signing key and the recording configuration, when recording is on: on one machine the
/// data directory's key, index and recordings; in cluster mode the shared key and catalog, and
/// the bucket through the spool, as `custody serve` configures a replica.
fn recording_config(
    on: bool,
    relay: Option<custody::stream::relay::RelayConfig>,
    data_dir: &Path,
    cluster: Option<&ClusterMode>,
) -> (
    Option<Arc<ed25519_dalek::SigningKey>>,
    Option<RecordingConfig>,
) {
    if !on {
        return (None, None);
    }
    let config = match cluster {
        None => {
            let key = Arc::new(
                custody_recorder::integrity::load_or_create_signing_key(
                    &data_dir.join("signing.key"),
                )
                .unwrap(),
            );
            RecordingConfig {
                data_dir: data_dir.to_owned(),
                catalog: Arc::new(custody_recorder::catalog::SqliteCatalog::new(
                    &data_dir.join("index.sqlite"),
                )),
                key,
                writer: custody_recorder::writer::WriterConfig::default(),
                relay: relay.unwrap_or_default(),
                gateway_id: "test-gateway".into(),
                replica_id: None,
                objects: None,
            }
        }
        Some(cluster) => RecordingConfig {
            data_dir: data_dir.to_owned(),
            catalog: cluster.catalog.clone(),
            key: cluster.key.clone(),
            // As `custody serve` in cluster mode: flushed four times a second for the spool.
            writer: custody_recorder::writer::WriterConfig {
                flush_interval: Duration::from_millis(250),
                ..custody_recorder::writer::WriterConfig::default()
            },
            relay: relay.unwrap_or_default(),
            gateway_id: "test-gateway".into(),
            replica_id: Some(cluster.replica_id().to_owned()),
            objects: Some(ObjectStorage {
                objects: cluster.objects.clone(),
                spool_dir: cluster.spool_dir.clone(),
                spool: custody_cluster::spool::SpoolConfig::default(),
            }),
        },
    };
    (Some(config.key.clone()), Some(config))
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

/// Every file under `dir` with its bytes (what cannot be read as a file, the control socket,
/// is left out).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// A zstd stream decompressed; with `partial` (segments joined up to the last one uploaded),
/// what decompresses before the stream is cut.
fn unzstd(bytes: &[u8], partial: bool) -> Vec<u8> {
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::new(bytes).unwrap();
    let mut plain = Vec::new();
    if !partial {
        decoder.read_to_end(&mut plain).unwrap();
        return plain;
    }
    let mut chunk = [0_u8; 4096];
    while let Ok(n) = decoder.read(&mut chunk) {
        if n == 0 {
            break;
        }
        plain.extend_from_slice(&chunk[..n]);
    }
    plain
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
