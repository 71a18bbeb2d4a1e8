//! A gateway in its own process (`custody serve`) in front of the demo's kube-sim and OIDC
//! issuer (`custody demo`), and kubectl pointed at it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "each test file uses a different part; setup failures should fail the test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use custody_fixtures::harness::{Kubectl, kubectl_binary};

/// A child process interrupted (SIGINT, then waited) when dropped.
pub struct Running(pub Child);

impl Running {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// `custody ARGS DIR` with `envs`.
pub fn custody(args: &[&str], dir: &Path, envs: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
    cmd.args(args).arg(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns `cmd` (its stdout piped here), waits for its `ready ` line and returns it.
pub fn spawn_ready(mut cmd: Command) -> (Running, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Keep reading after the ready line: a process whose stdout is closed may fail to
            // write its later lines.
            let _ = tx.send(line);
        }
    });
    let running = Running(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no ready line");
        if line.starts_with("ready ") {
            return (running, line);
        }
    }
}

/// Starts `custody ARGS DIR` (stderr inherited), waits for its `ready ` line and returns it.
pub fn start(args: &[&str], dir: &Path, envs: &[(&str, &Path)]) -> (Running, String) {
    let mut cmd = custody(args, dir, envs);
    cmd.stderr(Stdio::inherit());
    spawn_ready(cmd)
}

/// `custody demo --dir <dir>/demo`: kube-sim and the development OIDC issuer (and a gateway
/// the tests do not use). Returns it and the demo directory.
pub fn demo(dir: &Path) -> (Running, PathBuf) {
    let demo_dir = dir.join("demo");
    let (demo, _) = start(&["demo", "--dir"], &demo_dir, &[]);
    (demo, demo_dir)
}

/// `custody serve --config <demo>/custody.toml` with its data in `data` and a free port.
pub fn serve_command(demo_dir: &Path, data: &Path) -> Command {
    custody(
        &["serve", "--config"],
        &demo_dir.join("custody.toml"),
        &[
            ("CUSTODY_DATA_DIR", data),
            ("CUSTODY_LISTEN", Path::new("127.0.0.1:0")),
        ],
    )
}

/// The `https://…` address of a `ready ` line.
pub fn ready_url(ready: &str) -> String {
    ready.split_whitespace().nth(1).unwrap().to_owned()
}

/// The demo's kubeconfig pointed at the gateway at `https` (written to `dir`), and a home
/// directory for kubectl's cache.
pub fn served_kubeconfig(demo_dir: &Path, https: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let kubeconfig = std::fs::read_to_string(demo_dir.join("kubeconfig")).unwrap();
    let old = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        .trim()
        .to_owned();
    let served = dir.join("served.kubeconfig");
    std::fs::write(
        &served,
        kubeconfig.replace(&old, &format!("server: {https}/clusters/demo")),
    )
    .unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    (served, home)
}

/// kubectl `minor` (`"1.32"`, `"1.28"`) with the served kubeconfig.
pub fn kubectl(minor: &str, kubeconfig: &Path, home: &Path) -> Kubectl {
    Kubectl::new(
        kubectl_binary(minor).unwrap(),
        kubeconfig.to_owned(),
        home.to_owned(),
    )
}
