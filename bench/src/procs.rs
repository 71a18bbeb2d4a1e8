//! The processes under test: kube-sim and the development OIDC issuer in this process, custody
//! (the real `custody` binary) and nginx as child processes, and their CPU time and resident
//! memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::oidc_issuer::{DevIssuerConfig, OidcIssuer};
use custody_fixtures::pki::Pki;

/// CPU time (user + system) and resident memory of a process and its children.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU seconds.
    pub cpu_s: f64,
    /// Resident set size in bytes.
    pub rss: u64,
}

/// Reads `/proc/<pid>/stat` and `status` for `pid` and its direct children (nginx's workers).
pub fn usage(pid: u32) -> Usage {
    let mut total = Usage::default();
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    for p in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some(close) = stat.rfind(')')
        {
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // Clock ticks are 1/100 s on Linux.
            total.cpu_s += (ticks(11) + ticks(12)) as f64 / 100.0;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            for line in status.lines() {
                if let Some(kb) = line.strip_prefix("VmRSS:") {
                    let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    total.rss += kb * 1024;
                }
            }
        }
    }
    total
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its current CPU time and memory (with its children).
    pub fn usage(&self) -> Usage {
        usage(self.pid())
    }
}

impl Drop for Proc {
    /// SIGTERM first (nginx's master then stops its worker; custody shuts down), SIGKILL after
    /// 5 s.
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything running: the three paths' servers.
pub struct Stack {
    /// kube-sim, in this process.
    pub sim: KubeSim,
    /// The OIDC issuer custody trusts, in this process.
    pub issuer: OidcIssuer,
    /// The custody process.
    pub custody: Proc,
    /// custody's HTTPS address.
    pub custody_addr: SocketAddr,
    /// The nginx process (master; its worker is a child), if nginx is installed.
    pub nginx: Option<(Proc, SocketAddr)>,
    /// Why nginx is not running, if it is not.
    pub nginx_missing: Option<String>,
    /// The CA of custody's and nginx's serving certificates.
    pub front_ca: String,
    /// alice's token at kube-sim (group `dev`).
    pub sim_token: String,
    /// custody's data directory.
    pub data_dir: PathBuf,
}

/// Starts kube-sim, the issuer, custody and nginx under `dir`.
pub async fn start(dir: &Path, custody_bin: &Path) -> anyhow::Result<Stack> {
    let sim = KubeSim::start(KubeSimConfig::new(dir.join("cluster")))
        .await
        .context("cannot start kube-sim")?;
    let issuer = OidcIssuer::start(DevIssuerConfig::demo())
        .await
        .context("cannot start the development OIDC issuer")?;
    let pki = Pki::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    write(&dir.join("front.crt"), &pki.server().cert)?;
    write(&dir.join("front.key"), &pki.server().key)?;
    write(&dir.join("issuer-ca.crt"), issuer.ca_pem())?;
    let data_dir = dir.join("data");
    let config = dir.join("custody.toml");
    write(&config, &custody_config(dir, issuer.url()))?;
    let (custody, custody_addr) = start_custody(custody_bin, &config)?;
    let sim_kubeconfig = std::fs::read_to_string(sim.dir().join("alice.kubeconfig"))?;
    let sim_token = sim_kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .context("no token in kube-sim's alice.kubeconfig")?;
    let (nginx, nginx_missing) = match start_nginx(dir, sim.addr()) {
        Ok((p, a)) => (Some((p, a)), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(Stack {
        sim,
        issuer,
        custody,
        custody_addr,
        nginx,
        nginx_missing,
        front_ca: pki.ca_pem(),
        sim_token,
        data_dir,
    })
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn toml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

/// The gateway's configuration, like `custody demo`'s: one cluster `bench` (kube-sim), the dev
/// issuer with groups unprefixed (kube-sim grants group `dev` everything in `default`).
fn custody_config(dir: &Path, issuer: &str) -> String {
    format!(
        r#"data_dir = {data}
gateway_id = "custody-bench"

[server]
listen = "127.0.0.1:0"
tls_cert = {cert}
tls_key = {key}

[admin]
listen = "127.0.0.1:0"

[audit]
mode = "strict"

[[clusters]]
name = "bench"
kubeconfig = {cluster}

[[oidc]]
issuer = "{issuer}"
client_id = "custody"
ca_file = {issuer_ca}
groups_prefix = ""
"#,
        data = toml_path(&dir.join("data")),
        cert = toml_path(&dir.join("front.crt")),
        key = toml_path(&dir.join("front.key")),
        cluster = toml_path(&dir.join("cluster/gateway.kubeconfig")),
        issuer_ca = toml_path(&dir.join("issuer-ca.crt")),
    )
}

/// Runs `custody serve --config FILE` and waits for its `ready https://ADDR` line.
fn start_custody(bin: &Path, config: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = child.stdout.take().context("custody's stdout")?;
    let proc = Proc { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("custody did not print `ready` within 60 s")?;
    let addr = line
        .strip_prefix("ready https://")
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("unexpected first line from custody: {line}"))?
        .parse()?;
    Ok((proc, addr))
}

/// The nginx command, if installed.
pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// How to get nginx when it is missing.
pub const NGINX_HINT: &str = "nginx is not installed: `apt-get install -y nginx-light` (Debian's package; the harness configures it itself)";

/// Starts nginx as a TLS reverse proxy to kube-sim, with upgrade support and buffering off,
/// its pid, logs and temp files in `dir/nginx`.
fn start_nginx(dir: &Path, sim: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let bin = nginx_binary().context(NGINX_HINT)?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let p = |s: &str| prefix.join(s).display().to_string();
    let config = format!(
        r"worker_processes 1;
pid {pid};
error_log {error} warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream kube_sim {{
        server {sim};
        keepalive 128;
    }}
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {{
            proxy_pass https://kube_sim;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_ssl_server_name off;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
",
        pid = p("nginx.pid"),
        error = p("logs/error.log"),
        t = prefix.display(),
        cert = dir.join("front.crt").display(),
        key = dir.join("front.key").display(),
    );
    let conf = prefix.join("nginx.conf");
    write(&conf, &config)?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&prefix)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            bail!("nginx did not listen on {addr} within 10 s: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, addr))
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}
