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
pub fn start_demo(extra: &[&str], limit: Duration) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("demo")
        .args(extra)
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
    Demo {
        child,
        dir,
        printed,
    }
}
