//! `custody serve --config FILE`: run the gateway, and the assembly `custody demo` reuses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use custody::approval::ApprovalStore;
use custody::approval::postgres::PgStore;
use custody::audit::AuditSink;
use custody::authn::{Authenticator, TokenReviewer};
use custody::cluster::ClusterMode;
use custody::config::Config;
use custody::control::{self, ControlSocket};
use custody::gateway::{Gateway, GatewayParts, ObjectStorage, RecordingConfig};
use custody::login::LoginDocument;
use custody::metrics::Metrics;
use custody::server::{self, Health, ListenerLimits};
use custody::stream::relay::RelayConfig;
use custody::upstream::{ClusterReviewer, Upstream};
use custody_cluster::spool::SpoolConfig;
use custody_recorder::catalog::{Catalog, SqliteCatalog};
use custody_recorder::index::Index;
use custody_recorder::integrity::load_or_create_signing_key;
use custody_recorder::recovery;
use custody_recorder::writer::WriterConfig;
use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway: its addresses and its tasks.
pub struct Running {
    /// The HTTPS address kubectl talks to.
    pub addr: SocketAddr,
    /// The admin address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// The operators' control socket (`custody sessions live|kill|follow`).
    pub control_socket: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<custody::Result<()>>>,
    /// Cluster mode: what draining needs.
    drain: Option<Drain>,
}

/// How a replica drains: its membership, its live sessions, how long they may run on.
struct Drain {
    cluster: ClusterMode,
    /// Stops the lease, command and orphan loops, which run on while the replica drains.
    stop_loops: watch::Sender<bool>,
    live: Arc<custody::control::registry::LiveSessions>,
    grace: std::time::Duration,
}

impl Running {
    /// Stops accepting, lets in-flight requests end, and waits for the listeners. In cluster
    /// mode the replica drains first: it tells the others it is draining, stops accepting
    /// (the balancer's health checks then fail over), lets its sessions end by themselves for
    /// `drain_seconds`, ends the rest with a message to their users, waits for their
    /// recordings to be sealed and stored, and leaves the cluster.
    pub async fn shutdown(self) {
        if let Some(drain) = &self.drain
            && let Err(e) = drain.cluster.membership.drain().await
        {
            tracing::warn!(error = %e, "cannot mark this replica as draining");
        }
        let _ = self.stop.send(true);
        if let Some(drain) = &self.drain {
            let live = &drain.live;
            let waiting = live.list().len();
            if waiting > 0 {
                eprintln!(
                    "custody: draining: {waiting} session(s) may run for up to {} s",
                    drain.grace.as_secs()
                );
            }
            let deadline = tokio::time::Instant::now() + drain.grace;
            while !live.list().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let ended = live.end_all(custody::cluster::REPLICA_SHUTDOWN);
            if ended > 0 {
                eprintln!("custody: draining: ended {ended} session(s) still running");
            }
            // Their recordings are sealed and stored before the registry lets them go.
            let stored_by = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while !live.list().is_empty() && tokio::time::Instant::now() < stored_by {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Err(e) = drain.cluster.membership.leave().await {
                tracing::warn!(error = %e, "cannot leave the cluster cleanly; the lease runs out instead");
            }
            let _ = drain.stop_loops.send(true);
        }
        for task in self.tasks {
            match task.await {
                Ok(Err(err)) => tracing::warn!(%err, "listener ended with an error"),
                Err(err) => tracing::warn!(%err, "listener task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Reads and checks the configuration, then serves until SIGINT or SIGTERM.
pub fn run(file: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the configuration {}", file.display()))?;
    let config = match Config::parse(&text, &|k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("custody: {} is not a valid configuration:", file.display());
            for problem in &err.problems {
                eprintln!("  - {problem}");
            }
            eprintln!(
                "(`custody config check {}` explains a configuration)",
                file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let running = start(&config).await?;
        println!(
            "ready https://{} (admin http://{})",
            running.addr, running.admin_addr
        );
        wait_for_signal().await?;
        eprintln!("custody: stopping");
        running.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Builds every part from the configuration and starts both listeners.
#[allow(
    clippy::too_many_lines,
    reason = "start-up reads top to bottom in the order the parts depend on each other"
)]
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    custody_recorder::permissions::create_dir(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    // First: a data directory another gateway is serving must not be recovered under it.
    let control_socket = ControlSocket::bind(&config.data_dir)
        .await
        .context("control socket")?;
    let tls = server_tls(&config.server.tls_cert, &config.server.tls_key)?;
    let mut clusters = Vec::new();
    for cluster in &config.clusters {
        let upstream = if let Some(path) = &cluster.kubeconfig {
            Upstream::from_kubeconfig(path, cluster.context.as_deref()).await
        } else {
            Upstream::in_cluster(&|k| std::env::var(k).ok())
        }
        .with_context(|| format!("cluster {}", cluster.name))?;
        clusters.push((cluster.name.clone(), upstream));
    }
    // ServiceAccount tokens are reviewed by the cluster each request is for, over the
    // gateway's own connection to it.
    let reviewer = config.service_accounts.enabled.then(|| {
        Arc::new(ClusterReviewer::new(clusters.iter().cloned())) as Arc<dyn TokenReviewer>
    });
    let authenticator = Authenticator::new(&config.oidc, &config.service_accounts, reviewer)
        .context("authentication configuration")?;
    // Cluster mode: join the cluster (shared key, PostgreSQL, the bucket) before anything is
    // served; on one machine, recover what a crash left open in the data directory.
    let cluster = match &config.cluster {
        Some(section) => Some(
            ClusterMode::start(section, &config.data_dir, config.server.listen)
                .await
                .context("cluster mode")?,
        ),
        None => None,
    };
    if let Some(cluster) = &cluster {
        custody::cluster::mark_data_dir(&config.data_dir, cluster.replica_id())
            .with_context(|| format!("cannot write to data_dir {}", config.data_dir.display()))?;
    }
    let signing_key = match &cluster {
        Some(cluster) => cluster.key.clone(),
        None => Arc::new(recover_recordings(&config.data_dir)?),
    };
    let audit = match &cluster {
        Some(cluster) => AuditSink::with_catalog(
            cluster.catalog.clone(),
            config.audit.mode,
            cluster.replica_id(),
        ),
        None => AuditSink::open(&config.data_dir, config.audit.mode).with_context(|| {
            format!(
                "cannot open the audit trail under {}",
                config.data_dir.display()
            )
        })?,
    };
    let catalog: Arc<dyn Catalog> = match &cluster {
        Some(cluster) => cluster.catalog.clone(),
        None => Arc::new(SqliteCatalog::new(&config.data_dir.join("index.sqlite"))),
    };
    let objects = cluster.as_ref().map(|cluster| ObjectStorage {
        objects: cluster.objects.clone(),
        spool_dir: cluster.spool_dir.clone(),
        spool: SpoolConfig::default(),
    });
    let approval_store = cluster.as_ref().map(|cluster| {
        Arc::new(PgStore::new(
            cluster.db.clone(),
            tokio::runtime::Handle::current(),
        )) as Arc<dyn ApprovalStore>
    });
    audit.limit_unauthenticated(
        config.limits.unauthenticated_audit_per_second,
        config.limits.unauthenticated_audit_burst,
    );
    let metrics = Metrics::new();
    let mut gateway = Gateway::new(GatewayParts {
        authenticator: Arc::new(authenticator),
        clusters,
        impersonation: config.impersonation.clone(),
        audit,
        metrics: metrics.clone(),
        recording: Some(RecordingConfig {
            data_dir: config.data_dir.clone(),
            catalog,
            key: signing_key,
            // In cluster mode what reaches the file is uploaded about once a second; flushing it
            // four times a second keeps what a dead replica loses near one second, not two.
            writer: if cluster.is_some() {
                WriterConfig {
                    flush_interval: std::time::Duration::from_millis(250),
                    ..WriterConfig::default()
                }
            } else {
                WriterConfig::default()
            },
            relay: RelayConfig {
                idle_timeout: config.streams.idle_timeout(),
                max_duration: config.streams.max_duration(),
                ..RelayConfig::default()
            },
            gateway_id: config.gateway_id.clone(),
            replica_id: cluster.as_ref().map(|c| c.replica_id().to_owned()),
            objects,
        }),
        auditor_groups: config.access.auditor_groups.clone(),
        policy: config.policy.clone(),
        approvals: config.approvals.clone(),
        approval_store,
        cluster: cluster.clone(),
    })
    .context("gateway configuration")?;
    if let Some(document) = login_document(config)? {
        gateway = gateway.with_login_document(&document);
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    if let Some(console) = console_config(config, listener.local_addr()?)? {
        gateway = gateway
            .with_console(custody::console::Console::new(console).context("the web console")?);
    }
    let gateway = Arc::new(gateway);
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin.listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let health = Health::new();
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let control_path = control_socket.path().to_owned();
    let live = gateway.live_sessions().unwrap_or_default();
    let drain_live = live.clone();
    let control_stopped = until_stopped(stopped.clone());
    let mut tasks = Vec::new();
    let (stop_loops, loops_stopped) = watch::channel(false);
    if let (Some(cluster), Some(section)) = (&cluster, config.cluster.as_ref()) {
        if let (Some(tls), Some(peer)) = (&cluster.peer, &section.peer) {
            let listener = TcpListener::bind(peer.listen)
                .await
                .with_context(|| format!("cannot listen on {} (cluster.peer)", peer.listen))?;
            let (tls, live, stopped) = (tls.clone(), live.clone(), until_stopped(stopped.clone()));
            tasks.push(tokio::spawn(async move {
                custody::cluster::peer::serve(listener, tls, live, stopped).await;
                Ok(())
            }));
        }
        // A replica that loses its lease has ended its sessions; it stops serving too, so the
        // balancer sends new connections to the others.
        let (lost, mut lease_lost) = watch::channel(false);
        for task in cluster.spawn(live.clone(), loops_stopped.clone(), lost) {
            tasks.push(tokio::spawn(async move {
                let _ = task.await;
                Ok(())
            }));
        }
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if lease_lost.wait_for(|l| *l).await.is_ok() {
                eprintln!("custody: this replica lost its lease; stopping");
                let _ = stop.send(true);
                // Its sessions were ended with a farewell; give them a moment to say it, then
                // exit so that a supervisor starts it again (it rejoins under a new epoch).
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                std::process::exit(LEASE_LOST_EXIT);
            }
            Ok(())
        }));
    }
    let control_cluster = cluster.clone();
    tasks.extend([
        tokio::spawn(async move {
            if let Err(err) =
                control::serve(control_socket, live, control_cluster, control_stopped).await
            {
                tracing::warn!(%err, "the control socket ended with an error");
            }
            Ok(())
        }),
        tokio::spawn(server::serve_with(
            gateway,
            listener,
            tls,
            ListenerLimits::gateway(&config.limits)
                .with_proxy_protocol(config.server.proxy_protocol),
            until_stopped(stopped.clone()),
        )),
        tokio::spawn(server::serve_admin(
            admin,
            health.clone(),
            metrics,
            ListenerLimits::admin(&config.limits),
            until_stopped(stopped),
        )),
    ]);
    health.set_ready(true);
    let drain = match (&cluster, &config.cluster) {
        (Some(cluster), Some(section)) => Some(Drain {
            cluster: cluster.clone(),
            stop_loops,
            live: drain_live,
            grace: std::time::Duration::from_secs(section.drain_seconds),
        }),
        _ => None,
    };
    Ok(Running {
        addr,
        admin_addr,
        control_socket: control_path,
        stop,
        tasks,
        drain,
    })
}

/// The web console's configuration, when `[login]` is configured and `[console]` is enabled.
fn console_config(
    config: &Config,
    listen: std::net::SocketAddr,
) -> anyhow::Result<Option<custody::console::ConsoleConfig>> {
    let (Some(login), true) = (&config.login, config.console.enabled) else {
        return Ok(None);
    };
    let section = &config.console;
    let public_origin = section
        .public_origin(listen)
        .map_err(|e| anyhow::anyhow!(e))?;
    let issuer = config.oidc.iter().find(|o| o.issuer == login.issuer);
    let issuer_ca_pem = issuer
        .and_then(|o| o.ca_file.as_deref())
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .transpose()?;
    let client_id = section
        .client_id
        .clone()
        .unwrap_or_else(|| login.client_id.clone());
    let client_secret = match &section.client_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None if client_id == login.client_id => login.client_secret.clone(),
        None => None,
    };
    Ok(Some(custody::console::ConsoleConfig {
        public_origin,
        issuer: login.issuer.clone(),
        client_id,
        client_secret,
        // A browser session needs no refresh token: it ends with its ID token.
        scopes: login
            .scopes
            .iter()
            .filter(|s| *s != "offline_access")
            .cloned()
            .collect(),
        issuer_ca_pem,
        http_timeout: std::time::Duration::from_secs(issuer.map_or(10, |o| o.http_timeout_seconds)),
        max_session: std::time::Duration::from_secs(section.session_hours * 3600),
    }))
}

/// The login document to publish, when the configuration has a `[login]` section.
fn login_document(config: &Config) -> anyhow::Result<Option<LoginDocument>> {
    let Some(login) = &config.login else {
        return Ok(None);
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca_pem = match &login.ca_file {
        Some(path) => read(path)?,
        None => custody::login::document::last_certificate_pem(&read(&config.server.tls_cert)?)
            .context("server.tls_cert has no certificate to publish as the gateway's CA")?,
    };
    let issuer_ca_pem = config
        .oidc
        .iter()
        .find(|o| o.issuer == login.issuer)
        .and_then(|o| o.ca_file.as_deref())
        .map(read)
        .transpose()?;
    let document = LoginDocument::new(
        login,
        issuer_ca_pem,
        ca_pem,
        config.clusters.iter().map(|c| c.name.clone()),
    );
    Ok(Some(document))
}

/// Creates the signing key on first start, then seals the recordings a crash left open (as
/// `interrupted`) and indexes them, before anything new is accepted. Returns the key, which
/// signs every new recording.
fn recover_recordings(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let key_path = data_dir.join(SIGNING_KEY_FILE);
    let key = load_or_create_signing_key(&key_path)
        .with_context(|| format!("signing key {}", key_path.display()))?;
    let index_path = data_dir.join("index.sqlite");
    let mut index = Index::open(&index_path)
        .with_context(|| format!("cannot open the index {}", index_path.display()))?;
    let report =
        recovery::recover(data_dir, &mut index, &key).context("recovery of open recordings")?;
    if !report.sealed.is_empty() {
        eprintln!(
            "custody: sealed {} recording(s) left open by a crash as interrupted ({:.1} s)",
            report.sealed.len(),
            report.elapsed.as_secs_f64()
        );
    }
    for (path, reason) in &report.failed {
        eprintln!(
            "custody: WARNING: recording {} could not be recovered: {reason}",
            path.display()
        );
    }
    Ok(key)
}

/// The exit status of a replica that lost its lease (`EX_TEMPFAIL`: start it again).
const LEASE_LOST_EXIT: i32 = 75;

/// The signing key's file name under `data_dir`.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// The serving TLS configuration from PEM files.
pub fn server_tls(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read tls_cert {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read tls_key {}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls_cert {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("tls_cert {} holds no certificate", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("tls_key {} is not PEM", key.display()))?
        .with_context(|| format!("tls_key {} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
