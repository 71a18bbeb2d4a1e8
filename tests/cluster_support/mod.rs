//! Cluster mode as operators run it: real PostgreSQL and S3 servers, kube-sim and the dev OIDC
//! issuer, N `custody serve` processes (the built binary) sharing them, and real HAProxy in
//! front with PROXY protocol v2. Tests reach a chosen replica through a small forwarder that
//! speaks PROXY v2 as HAProxy does (the replicas accept nothing else).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use custody_fixtures::haproxy::Haproxy;
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::oidc_issuer::{DevIssuerConfig, OidcIssuer};
use custody_fixtures::pki::Pki;
use custody_fixtures::postgres::{Postgres, PostgresOptions};
use custody_fixtures::s3::S3;
use tokio::io::AsyncWriteExt;

/// One replica process.
pub struct Replica {
    pub id: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    /// A loopback address that forwards to this replica with a PROXY v2 header.
    pub direct: SocketAddr,
}

/// Everything a cluster-mode test stands on.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub sim: Option<KubeSim>,
    pub issuer: OidcIssuer,
    pub postgres: Postgres,
    pub s3: S3,
    pub haproxy: Option<Haproxy>,
    pub replicas: Vec<Replica>,
    pub gateway_ca: PathBuf,
    pub key_pem: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// Options of a test cluster.
pub struct Options {
    pub replicas: usize,
    pub lease_seconds: u64,
    /// `[cluster] drain_seconds`.
    pub drain_seconds: u64,
    /// Extra lines for every replica's `[limits]`, `[streams]`... (appended at the top level).
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            replicas: 3,
            lease_seconds: 6,
            drain_seconds: 30,
            extra: String::new(),
        }
    }
}

impl Cluster {
    pub fn start(options: &Options) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sim = rt
            .block_on(KubeSim::start(KubeSimConfig::new(
                dir.path().join("cluster"),
            )))
            .unwrap();
        let issuer = rt
            .block_on(OidcIssuer::start(DevIssuerConfig::demo()))
            .unwrap();
        std::fs::write(dir.path().join("issuer-ca.crt"), issuer.ca_pem()).unwrap();
        let pki = Pki::generate_named(
            "custody-test-ca",
            "custody-test",
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
        )
        .unwrap();
        let gateway_ca = dir.path().join("gateway-ca.crt");
        std::fs::write(&gateway_ca, pki.ca_pem()).unwrap();
        // The replicas' own CA for calling each other (mutual TLS), and a certificate each.
        let peers =
            Pki::generate_named("custody-peers", "unused", &["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("peer-ca.crt"), peers.ca_pem()).unwrap();
        for i in 0..options.replicas {
            let cert = peers
                .issue_peer(&format!("replica-{i}"), &["127.0.0.1".to_owned()])
                .unwrap();
            std::fs::write(dir.path().join(format!("peer-{i}.crt")), &cert.cert).unwrap();
            std::fs::write(dir.path().join(format!("peer-{i}.key")), &cert.key).unwrap();
        }
        std::fs::write(dir.path().join("gateway.crt"), &pki.server().cert).unwrap();
        std::fs::write(dir.path().join("gateway.key"), &pki.server().key).unwrap();
        let postgres = Postgres::start(PostgresOptions::default()).unwrap();
        let s3 = S3::start().unwrap();
        // The shared key, made as an operator makes it; the public half verifies downloads.
        let key_path = dir.path().join("signing.key");
        let made = Command::new(env!("CARGO_BIN_EXE_custody"))
            .arg("key")
            .arg("--generate")
            .arg(&key_path)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&key_pem, &made.stdout).unwrap();
        let mut cluster = Cluster {
            rt,
            dir,
            sim: Some(sim),
            issuer,
            postgres,
            s3,
            haproxy: None,
            replicas: Vec::new(),
            gateway_ca,
            key_pem,
        };
        for i in 0..options.replicas {
            let replica = cluster.configure(i, options);
            cluster.replicas.push(replica);
        }
        for i in 0..options.replicas {
            cluster.start_replica(i);
        }
        let backends: Vec<SocketAddr> = cluster.replicas.iter().map(|r| r.addr).collect();
        let haproxy = Haproxy::start(&backends, true).unwrap();
        haproxy.wait_all_up(Duration::from_secs(30)).unwrap();
        cluster.haproxy = Some(haproxy);
        cluster
    }

    fn configure(&self, i: usize, options: &Options) -> Replica {
        let id = format!("replica-{i}");
        let addr = free_addr();
        let data_dir = self.dir.path().join(&id);
        let d = |p: &str| toml(&self.dir.path().join(p));
        let config = format!(
            r#"data_dir = {data}
gateway_id = "custody-test"
{extra}

[server]
listen = "{addr}"
tls_cert = {cert}
tls_key = {key}
proxy_protocol = true

[admin]
listen = "127.0.0.1:0"

[audit]
mode = "strict"

[[clusters]]
name = "demo"
kubeconfig = {kubeconfig}

[[oidc]]
issuer = "{issuer}"
client_id = "custody"
ca_file = {issuer_ca}
groups_prefix = ""

[access]
auditor_groups = ["sre"]

{policy}

[cluster]
replica_id = "{id}"
signing_key_file = {signing_key}
lease_seconds = {lease}
drain_seconds = {drain}

[cluster.peer]
listen = "{peer}"
cert_file = {peer_cert}
key_file = {peer_key}
ca_file = {peer_ca}

[cluster.postgres]
url = "{pg}"

[cluster.object_store]
endpoint = "{endpoint}"
bucket = "{bucket}"
region = "{region}"
access_key_id = "{access}"
secret_access_key = "{secret}"
"#,
            data = toml(&data_dir),
            extra = options.extra,
            cert = d("gateway.crt"),
            key = d("gateway.key"),
            kubeconfig = d("cluster/gateway.kubeconfig"),
            issuer = self.issuer.url(),
            issuer_ca = d("issuer-ca.crt"),
            policy = custody::policy::EXAMPLE_POLICY,
            signing_key = d("signing.key"),
            lease = options.lease_seconds,
            drain = options.drain_seconds,
            peer = free_addr(),
            peer_cert = d(&format!("peer-{i}.crt")),
            peer_key = d(&format!("peer-{i}.key")),
            peer_ca = d("peer-ca.crt"),
            pg = self.postgres.url(),
            endpoint = self.s3.endpoint(),
            bucket = self.s3.bucket(),
            region = self.s3.region(),
            access = self.s3.access_key(),
            secret = self.s3.secret_key(),
        );
        let config_path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let direct = self.rt.block_on(proxy_forwarder(addr));
        Replica {
            id,
            addr,
            data_dir,
            config: config_path,
            child: None,
            direct,
        }
    }

    /// Starts (or restarts) replica `i` and waits for its `ready` line.
    pub fn start_replica(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(r.config.with_extension("log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_custody"))
            .arg("serve")
            .arg("--config")
            .arg(&r.config)
            .env("CUSTODY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("ready ") => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "{} did not start ({e}): {}",
                    r.id,
                    std::fs::read_to_string(r.config.with_extension("log")).unwrap_or_default()
                ),
            }
        }
        r.child = Some(child);
    }

    /// Replica `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.replicas[i].config.with_extension("log")).unwrap_or_default()
    }

    /// SIGTERM to replica `i`, then waits (up to `limit`) for it to exit; its exit status.
    pub fn terminate(&mut self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.replicas[i].child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{} did not stop",
                self.replicas[i].id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of replica `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The balancer's address.
    pub fn balancer(&self) -> SocketAddr {
        self.haproxy.as_ref().unwrap().addr()
    }

    /// A kubeconfig for `user` (a dev-issuer token) at `addr`.
    pub fn kubeconfig(&self, user: &str, addr: SocketAddr) -> PathBuf {
        let token = self.issuer.id_token_for(user).unwrap();
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{user}-{}", addr.port()));
        let ca = std::fs::read_to_string(&self.gateway_ca).unwrap();
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{addr}/clusters/demo\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        path
    }

    /// kubectl `minor` as `user` through the balancer.
    pub fn kubectl(&self, minor: &str, user: &str) -> Kubectl {
        self.kubectl_at(minor, user, self.balancer())
    }

    /// kubectl `minor` as `user` straight to replica `i` (through its PROXY v2 forwarder).
    pub fn kubectl_to(&self, minor: &str, user: &str, i: usize) -> Kubectl {
        self.kubectl_at(minor, user, self.replicas[i].direct)
    }

    fn kubectl_at(&self, minor: &str, user: &str, addr: SocketAddr) -> Kubectl {
        let home = self.dir.path().join(format!("home-{user}-{minor}"));
        std::fs::create_dir_all(&home).unwrap();
        Kubectl::new(
            kubectl_binary(minor).unwrap(),
            self.kubeconfig(user, addr),
            home,
        )
    }

    /// The `custody` CLI as `user` against replica `i` (`--server`, `--ca-file`, token).
    pub fn custody(&self, user: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
        command.env("CUSTODY_TOKEN", self.issuer.id_token_for(user).unwrap());
        command
    }

    /// `https://<replica i, direct>`.
    pub fn url(&self, i: usize) -> String {
        format!("https://{}", self.replicas[i].direct)
    }
}

fn toml(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A loopback listener that forwards each connection to `to`, first writing the PROXY v2
/// header HAProxy would write (the client's real address as the source).
async fn proxy_forwarder(to: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                if upstream.write_all(&proxy_v2(peer, to)).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

/// A PROXY protocol v2 header for a TCP/IPv4 connection from `src` to `dst`.
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(0x11);
    h.extend_from_slice(&12u16.to_be_bytes());
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => [127, 0, 0, 1],
    };
    h.extend_from_slice(&ip(src));
    h.extend_from_slice(&ip(dst));
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}
