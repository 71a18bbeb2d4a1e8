//! The `custody` command line as operators use it: a broken configuration is explained and
//! refused; `custody serve` runs from a configuration file with its admin endpoints; the signing
//! key is created on first start and exported; `custody reindex` rebuilds the index.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_recorder::index::Index;
use custody_recorder::model::{Event, EventKind, SessionKind, SessionMeta, SessionStatus};
use custody_recorder::writer::{SessionHandle, WriterConfig};

fn custody() -> Command {
    Command::new(env!("CARGO_BIN_EXE_custody"))
}

/// A child process killed (SIGINT, then waited) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Starts a command and returns it with its stdout lines.
fn spawn_lines(mut cmd: Command) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if line.starts_with(prefix) {
            return line;
        }
    }
}

#[test]
fn a_broken_configuration_is_explained_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custody.toml");
    std::fs::write(
        &file,
        "data_dir = \"/tmp/x\"\n[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\nport = 8443\n[[clusters]]\nname = \"prod\"\n",
    )
    .unwrap();
    for args in [vec!["serve", "--config"], vec!["config", "check"]] {
        let out = custody().args(&args).arg(&file).output().unwrap();
        assert!(
            !out.status.success(),
            "{args:?} accepted a broken configuration"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("port"),
            "{args:?}: the unknown key is named: {stderr}"
        );
    }
    std::fs::write(
        &file,
        "data_dir = \"/tmp/x\"\n[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\n[[clusters]]\nname = \"Prod\"\n",
    )
    .unwrap();
    let out = custody()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "lowercase letters",
        "in_cluster = true",
        "nobody could log in",
    ] {
        assert!(
            stderr.contains(problem),
            "missing {problem:?} in:\n{stderr}"
        );
    }
    let missing = custody()
        .args(["serve", "--config", "/nonexistent/custody.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the configuration"));
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, response)
}

#[test]
fn serve_runs_from_a_configuration_file_with_admin_endpoints_and_a_signing_key() {
    // The demo writes a complete configuration for its cluster and issuer; serve a second
    // gateway from that file, with environment overrides, as an operator would.
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut demo_cmd = custody();
    demo_cmd.args(["demo", "--dir"]).arg(&demo_dir);
    let (_demo, demo_out) = spawn_lines(demo_cmd);
    wait_line(&demo_out, "ready ");
    let data = dir.path().join("serve-data");
    let mut serve_cmd = custody();
    serve_cmd
        .args(["serve", "--config"])
        .arg(demo_dir.join("custody.toml"))
        .env("CUSTODY_DATA_DIR", &data)
        .env("CUSTODY_LISTEN", "127.0.0.1:0");
    let (_serve, serve_out) = spawn_lines(serve_cmd);
    let ready = wait_line(&serve_out, "ready ");
    // "ready https://127.0.0.1:PORT (admin http://127.0.0.1:PORT)"
    let https = ready.split_whitespace().nth(1).unwrap().to_owned();
    let admin = ready
        .split("admin http://")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_owned();

    let (code, _) = http_get(&admin, "/healthz");
    assert_eq!(code, 200);
    let (code, _) = http_get(&admin, "/readyz");
    assert_eq!(code, 200);

    // kubectl through the served gateway, with the demo's kubeconfig pointed at it.
    let kubeconfig = std::fs::read_to_string(demo_dir.join("kubeconfig")).unwrap();
    let old = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        .trim()
        .to_owned();
    let served = kubeconfig.replace(&old, &format!("server: {https}/clusters/demo"));
    let served_path = dir.path().join("served.kubeconfig");
    std::fs::write(&served_path, served).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl::new(kubectl_binary("1.32").unwrap(), served_path, home);
    let out = k.run(["--context", "alice", "get", "pods"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, metrics) = http_get(&admin, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("demo"),
        "metrics count requests by cluster:\n{metrics}"
    );

    // The signing key was created on first start, private, and its public half exports.
    let key = data.join("signing.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = custody()
        .args(["key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    // The audit trail of the served gateway has alice's requests.
    let out = custody()
        .args(["audit", "--json", "--initiator", "oidc:alice", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 2);
}

fn meta(id: &str, pod: &str) -> SessionMeta {
    SessionMeta {
        session_id: id.into(),
        kind: SessionKind::Exec,
        initiator: custody_recorder::model::Initiator {
            issuer: "https://idp.example.com".into(),
            subject: "alice".into(),
            username: "oidc:alice".into(),
            groups: vec!["dev".into()],
        },
        effective: custody_recorder::model::EffectiveIdentity {
            user: "oidc:alice".into(),
            groups: vec!["dev".into()],
            uid: String::new(),
        },
        cluster: "demo".into(),
        namespace: "default".into(),
        pod: pod.into(),
        container: "main".into(),
        command: vec!["sh".into()],
        tty: true,
        client_addr: "127.0.0.1:5000".into(),
        user_agent: "kubectl/v1.32.5".into(),
        approval_id: None,
        gateway_id: "custody".into(),
        replica_id: None,
        started_at_us: 1_700_000_000_000_000,
        term_size: Some((80, 24)),
    }
}

#[test]
fn reindex_rebuilds_the_index_from_recording_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key = Arc::new(
        custody_recorder::integrity::load_or_create_signing_key(&data.join("signing.key")).unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for (id, pod, word) in [
            (
                "6b1f4a3c-0000-4000-8000-000000000001",
                "web-1",
                "deploy-banana",
            ),
            (
                "6b1f4a3c-0000-4000-8000-000000000002",
                "db-1",
                "vacuum-cherry",
            ),
        ] {
            let handle = SessionHandle::open(
                &data.join("recordings"),
                meta(id, pod),
                key.clone(),
                WriterConfig::default(),
            )
            .await
            .unwrap();
            handle
                .record(Event {
                    time_us: 1000,
                    kind: EventKind::Input(format!("echo {word}\r").into_bytes()),
                })
                .await
                .unwrap();
            handle
                .record(Event {
                    time_us: 2000,
                    kind: EventKind::Output(format!("{word}\r\n").into_bytes()),
                })
                .await
                .unwrap();
            handle.finish(SessionStatus::Complete).await.unwrap();
        }
    });
    let out = custody()
        .args(["reindex", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("indexed 2 sessions"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let index = Index::open(&data.join("index.sqlite")).unwrap();
    let hits = index.search("vacuum-cherry", Some(10)).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].session_id, "6b1f4a3c-0000-4000-8000-000000000002");
    // A second rebuild gives the same rows.
    let before = index.dump().unwrap();
    drop(index);
    let out = custody()
        .args(["reindex", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        Index::open(&data.join("index.sqlite"))
            .unwrap()
            .dump()
            .unwrap(),
        before
    );
    // A directory that is not a data dir is refused clearly.
    let out = custody()
        .args(["reindex", "--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}
