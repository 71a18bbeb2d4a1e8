//! `custody demo --replicas N`: cluster mode on one machine. Everything the demo starts, plus a
//! throwaway PostgreSQL, an S3 server (versitygw) and HAProxy (PROXY protocol v2) in front of N
//! `custody serve` processes sharing them. Writes `DIR/replicas.json` and a kubeconfig that
//! points at the balancer, so a replica can be killed and a session watched going on elsewhere.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use custody_fixtures::haproxy::Haproxy;
use custody_fixtures::postgres::{Postgres, PostgresOptions};
use custody_fixtures::s3::S3;
use serde::Serialize;

use super::{demo_config, toml_string, write};

/// The shared servers and the replica processes.
pub(super) struct Replicas {
    pub(super) balancer: SocketAddr,
    members: Vec<Replica>,
    // Dropped (stopped) after the replicas, in this order.
    _haproxy: Haproxy,
    s3: S3,
    _postgres: Postgres,
}

struct Replica {
    id: String,
    addr: SocketAddr,
    admin: String,
    data_dir: PathBuf,
    child: Child,
}

/// What `replicas.json` holds.
#[derive(Serialize)]
struct Manifest<'a> {
    balancer: String,
    postgres: String,
    object_store: String,
    replicas: Vec<ReplicaEntry<'a>>,
}

#[derive(Serialize)]
struct ReplicaEntry<'a> {
    id: &'a str,
    pid: u32,
    url: String,
    admin_url: &'a str,
    data_dir: &'a Path,
    control_socket: PathBuf,
}

impl Replicas {
    /// Starts the shared servers and `n` replicas configured like the one-machine demo plus
    /// `[cluster]`, waits until each prints `ready` and the balancer sees them all up.
    pub(super) fn start(dir: &Path, n: usize, issuer: &str) -> anyhow::Result<Self> {
        eprintln!("custody demo: starting PostgreSQL, the S3 server and {n} replicas");
        let postgres = Postgres::start(PostgresOptions::default())
            .context("cannot start the demo's PostgreSQL (Debian's postgresql package)")?;
        let s3 = S3::start().context("cannot start the demo's S3 server (versitygw)")?;
        let key_path = dir.join("signing.key");
        custody_recorder::integrity::load_or_create_signing_key(&key_path)
            .with_context(|| format!("cannot create the shared key {}", key_path.display()))?;
        // The replicas call each other over mutual TLS (following a session held elsewhere):
        // a CA of their own and a certificate each.
        let peers = custody_fixtures::pki::Pki::generate_named(
            "custody-demo-peers",
            "unused",
            &["127.0.0.1".to_owned()],
        )
        .context("cannot generate the replicas' peer certificates")?;
        write(&dir.join("peer-ca.crt"), &peers.ca_pem())?;
        let mut replicas = Vec::new();
        for i in 0..n {
            let id = format!("replica-{i}");
            let addr = free_addr()?;
            let data_dir = dir.join("replicas").join(&id);
            std::fs::create_dir_all(&data_dir)?;
            let config_path = dir.join(format!("{id}.toml"));
            let cert = peers
                .issue_peer(&id, &["127.0.0.1".to_owned()])
                .context("cannot issue a peer certificate")?;
            let (peer_cert, peer_key) = (
                dir.join(format!("{id}-peer.crt")),
                dir.join(format!("{id}-peer.key")),
            );
            write(&peer_cert, &cert.cert)?;
            write(&peer_key, &cert.key)?;
            let mut config = demo_config(dir, addr, issuer).replace(
                &format!("data_dir = {}", toml_string(&dir.join("data"))),
                &format!("data_dir = {}", toml_string(&data_dir.join("data"))),
            );
            config = config.replace(
                "[server]\n",
                "[server]\n# Behind HAProxy, which names the real client in a PROXY v2 header.\nproxy_protocol = true\n",
            );
            let _ = write!(
                config,
                "\n# Cluster mode: this replica shares PostgreSQL, the bucket and the key.\n[cluster]\nreplica_id = \"{id}\"\nsigning_key_file = {key}\nlease_seconds = 6\n\n[cluster.peer]\nlisten = \"{peer}\"\ncert_file = {peer_cert}\nkey_file = {peer_key}\nca_file = {peer_ca}\n\n[cluster.postgres]\nurl = \"{pg}\"\n\n[cluster.object_store]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nregion = \"{region}\"\naccess_key_id = \"{access}\"\nsecret_access_key = \"{secret}\"\n",
                key = toml_string(&key_path),
                peer = free_addr()?,
                peer_cert = toml_string(&peer_cert),
                peer_key = toml_string(&peer_key),
                peer_ca = toml_string(&dir.join("peer-ca.crt")),
                pg = postgres.url(),
                endpoint = s3.endpoint(),
                bucket = s3.bucket(),
                region = s3.region(),
                access = s3.access_key(),
                secret = s3.secret_key(),
            );
            write(&config_path, &config)?;
            let (child, admin) = spawn_replica(&config_path, &id)?;
            replicas.push(Replica {
                id,
                addr,
                admin,
                data_dir: data_dir.join("data"),
                child,
            });
        }
        let backends: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let haproxy = Haproxy::start(&backends, true).context("cannot start HAProxy")?;
        haproxy
            .wait_all_up(Duration::from_secs(30))
            .context("HAProxy does not see every replica up")?;
        let balancer = haproxy.addr();
        let this = Self {
            balancer,
            members: replicas,
            _haproxy: haproxy,
            s3,
            _postgres: postgres,
        };
        this.write_manifest(dir)?;
        Ok(this)
    }

    fn write_manifest(&self, dir: &Path) -> anyhow::Result<()> {
        let manifest = Manifest {
            balancer: format!("https://{}", self.balancer),
            postgres: "a throwaway PostgreSQL on loopback (stopped with the demo)".into(),
            object_store: format!("{} bucket {}", self.s3.endpoint(), self.s3.bucket()),
            replicas: self
                .members
                .iter()
                .map(|r| ReplicaEntry {
                    id: &r.id,
                    pid: r.child.id(),
                    url: format!("https://{}", r.addr),
                    admin_url: &r.admin,
                    data_dir: &r.data_dir,
                    control_socket: custody::control::socket_path(&r.data_dir),
                })
                .collect(),
        };
        write(
            &dir.join("replicas.json"),
            &serde_json::to_string_pretty(&manifest)?,
        )
    }

    /// What the demo prints about the replicas: each one's id, pid and URL.
    pub(super) fn summary(&self, dir: &Path) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{} replicas behind HAProxy at https://{} share PostgreSQL and the S3 bucket ({}):",
            self.members.len(),
            self.balancer,
            dir.join("replicas.json").display()
        );
        for r in &self.members {
            let _ = writeln!(text, "  {}  pid {}  https://{}", r.id, r.child.id(), r.addr);
        }
        text
    }

    /// How to watch a replica die and its session be sealed elsewhere.
    pub(super) fn walkthrough(&self, exe: &Path, dir: &Path) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Start a session, find which replica holds it, kill that replica, and watch the session\nend with an error while its recording is sealed by another replica within seconds:"
        );
        let _ = writeln!(
            text,
            "  kubectl --context bob exec -it demo -- sh -c 'while true; do date; sleep 0.1; done'"
        );
        let first = &self.members[0];
        let _ = writeln!(
            text,
            "  {} sessions live --data-dir {}   # every replica's sessions, with the one holding each",
            exe.display(),
            first.data_dir.display()
        );
        let _ = writeln!(
            text,
            "  kill -9 PID   # the pid of that replica, from the list above"
        );
        let _ = writeln!(
            text,
            "Then, as bob (an auditor), through any replica:\n  export CUSTODY_TOKEN=$(XDG_CONFIG_HOME={config} {exe} credential --server https://{b} --profile bob | sed -n 's/.*\"token\": *\"\\([^\"]*\\)\".*/\\1/p')\n  {exe} sessions list --server https://{b} --ca-file {ca}   # sealed interrupted\n  {exe} audit --server https://{b} --ca-file {ca} --limit 5   # each event names its replica (--json)",
            config = dir.join("config").display(),
            exe = exe.display(),
            b = self.balancer,
            ca = dir.join("gateway-ca.crt").display(),
        );
        text
    }

    /// Stops the replicas (SIGTERM, then SIGKILL after a grace).
    pub(super) fn stop(mut self) {
        for r in &self.members {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(r.child.id().to_string())
                .status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for r in &mut self.members {
            while std::time::Instant::now() < deadline {
                if matches!(r.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

/// A free loopback address (bound and released; the replica binds it a moment later).
fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Starts `custody serve --config FILE` and waits for its `ready` line; returns the child and
/// its admin URL.
fn spawn_replica(config: &Path, id: &str) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("cannot find the custody executable")?;
    let log = std::fs::File::create(config.with_extension("log"))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {id}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("ready ") => {
                let admin = line
                    .split("(admin ")
                    .nth(1)
                    .map(|s| s.trim_end_matches(')').to_owned())
                    .unwrap_or_default();
                return Ok((child, admin));
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "{id} did not start; its log is {}",
                    config.with_extension("log").display()
                );
            }
        }
    }
}
