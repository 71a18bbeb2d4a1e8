//! Starting `custody demo` as a newcomer does, for the demo tests: a fresh directory, the built
//! binary, everything it prints up to `Press Ctrl-C`; stopped with SIGINT when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running demo.
pub struct Demo {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// Every line printed up to and including `Press Ctrl-C to stop.`
    pub printed: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Runs `custody demo --dir <tmp>/demo` with `extra` arguments and waits (up to `limit`) for
/// it to print its hints; the first line must be `ready https://127.0.0.1:PORT`.
#[allow(dead_code, reason = "not every test starts it this way")]
pub fn start_demo(extra: &[&str], limit: Duration) -> Demo {
    start_demo_with(extra, &[], limit).0
}

/// [`start_demo`] with environment variables, its standard error collected (the log).
#[allow(dead_code, reason = "not every test reads the log")]
pub fn start_demo_logged(
    extra: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> (Demo, custody_fixtures::harness::Collected) {
    let (demo, log) = start_demo_with(extra, envs, limit);
    (demo, log.unwrap())
}

fn start_demo_with(
    extra: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> (Demo, Option<custody_fixtures::harness::Collected>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
    command
        .arg("demo")
        .args(extra)
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(if envs.is_empty() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let log = child
        .stderr
        .take()
        .map(custody_fixtures::harness::Collected::spawn);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(limit)
            .expect("custody demo printed nothing");
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(
        printed[0].starts_with("ready https://127.0.0.1:"),
        "{printed:?}"
    );
    (
        Demo {
            child,
            dir,
            printed,
        },
        log,
    )
}
