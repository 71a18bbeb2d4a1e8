//! A recording that fails mid-session, through a gateway running as its own process
//! (`custody serve` from the demo's configuration) under a file-size limit (`RLIMIT_FSIZE`, set
//! with `prlimit`; SIGXFSZ ignored so that the write fails with EFBIG instead of killing the
//! gateway). A session printing incompressible output pushes its recording past the limit;
//! the audit log and the index stay far below it. For kubectl 1.32 (WebSocket) and 1.28
//! (SPDY): kubectl exits non-zero within a few seconds of the failure and prints custody's
//! reason, the recording verifies up to the failure and holds a prefix of what kubectl
//! received, and the gateway keeps serving new sessions (a new recording is a new file).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "support/served.rs"]
mod served;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Collected, Kubectl};
use custody_recorder::model::{EventKind, SessionStatus};
use custody_recorder::reader::{DamageKind, Recording, read_recording};
use ed25519_dalek::VerifyingKey;

/// The gateway's file-size limit: what its recordings can grow to.
const LIMIT: u64 = 16 * 1024 * 1024;
/// What the failing sessions print: far more than fits under the limit.
const OUTPUT: &str = "head -c 200000000 /dev/urandom";
/// What kubectl prints when custody ends the session because its recording failed.
const REASON: &str = "custody: the session's recording failed";
/// The gateway's log line when a recording fails.
const LOGGED: &str = "recording failed; ending the session";

/// `custody serve` for the demo, with its files limited to `LIMIT` bytes and SIGXFSZ ignored
/// (an ignored disposition survives `exec`); its stderr (the log) is collected.
fn serve_limited(demo_dir: &Path, data: &Path) -> (served::Running, String, Collected) {
    let inner = served::serve_command(demo_dir, data);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={LIMIT} -- \"$0\" \"$@\""
        ))
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stderr(Stdio::piped());
    let (mut serve, ready) = served::spawn_ready(cmd);
    let log = Collected::spawn(serve.0.stderr.take().unwrap());
    (serve, ready, log)
}

/// How a failing session went, as kubectl and the gateway's log saw it.
struct Failed {
    code: Option<i32>,
    stderr: String,
    /// When the gateway logged the failure, after the start.
    logged: Duration,
    /// When kubectl exited, after the start.
    exited: Duration,
}

/// Runs the session that outgrows the limit with kubectl's stdout in `stdout`; `failures` is
/// how many recording failures the gateway logged before.
fn failing_session(k: &Kubectl, stdout: &Path, log: &Collected, failures: usize) -> Failed {
    let started = Instant::now();
    let mut child = k
        .command(["exec", "demo", "--", "sh", "-c", OUTPUT])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Collected::spawn(child.stderr.take().unwrap());
    let mut logged = None;
    let status = loop {
        if logged.is_none() && log.text().matches(LOGGED).count() > failures {
            logged = Some(started.elapsed());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("kubectl still running: {}", stderr.text());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let exited = started.elapsed();
    // The log line may come a moment after kubectl saw the end.
    let logged = logged.unwrap_or_else(|| {
        while log.text().matches(LOGGED).count() <= failures {
            assert!(
                started.elapsed() < exited + Duration::from_secs(5),
                "the gateway logged no failure:\n{}",
                log.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    Failed {
        code: status.code(),
        stderr: stderr.text(),
        logged,
        exited,
    }
}

/// The recording of the session running `command`, once the gateway is done with it: sealed,
/// or no longer growing.
fn recording_of(data: &Path, key: &VerifyingKey, command: &str) -> (PathBuf, Recording) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<(PathBuf, u64, Instant)> = None;
    loop {
        for entry in std::fs::read_dir(data.join("recordings")).unwrap() {
            let path = entry.unwrap().path();
            let Ok(r) = read_recording(&path, Some(key)) else {
                continue;
            };
            if !r.meta.command.iter().any(|c| c == command) {
                continue;
            }
            let size = std::fs::metadata(&path).unwrap().len();
            if r.manifest.is_some() {
                return (path, r);
            }
            match &last {
                Some((p, s, since)) if *p == path && *s == size => {
                    if since.elapsed() > Duration::from_secs(2) {
                        return (path, r);
                    }
                }
                _ => last = Some((path, size, Instant::now())),
            }
        }
        assert!(Instant::now() < deadline, "no recording of {command:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_recording_failure_mid_session_ends_it_with_a_message_kubectl_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, demo_dir) = served::demo(dir.path());
    let data = dir.path().join("serve-data");
    let (_serve, ready, log) = serve_limited(&demo_dir, &data);
    let https = served::ready_url(&ready);
    let (kubeconfig, home) = served::served_kubeconfig(&demo_dir, &https, dir.path());
    let key = custody_recorder::integrity::load_or_create_signing_key(&data.join("signing.key"))
        .unwrap()
        .verifying_key();
    let clients = [
        (
            "1.32 WebSocket",
            served::kubectl("1.32", &kubeconfig, &home),
        ),
        ("1.28 SPDY", served::kubectl("1.28", &kubeconfig, &home)),
    ];

    for (i, (label, k)) in clients.iter().enumerate() {
        // Each session's command names it, so its recording can be found.
        let stdout = dir.path().join(format!("stdout-{i}.bin"));
        let failed = failing_session(k, &stdout, &log, i);
        let received = std::fs::read(&stdout).unwrap();
        eprintln!(
            "{label}: exit {:?} after {:.2} s, failure logged after {:.2} s, {} MiB received; \
             kubectl stderr:\n{}",
            failed.code,
            failed.exited.as_secs_f64(),
            failed.logged.as_secs_f64(),
            received.len() / (1024 * 1024),
            failed.stderr
        );
        assert!(
            failed.code.is_some_and(|c| c != 0),
            "{label}: kubectl exited {:?}",
            failed.code
        );
        assert!(
            failed.stderr.contains(REASON),
            "{label}: kubectl did not print custody's reason:\n{}",
            failed.stderr
        );
        assert!(
            failed.exited.saturating_sub(failed.logged) < Duration::from_secs(3),
            "{label}: kubectl exited {:?} after the failure",
            failed.exited.saturating_sub(failed.logged)
        );
        assert!(
            received.len() < 200_000_000,
            "{label}: the session ran to its end"
        );

        // The recording: cut at the limit, verified up to the failure. The writer cuts off the
        // failed write and re-seals the open frame's flushed events with a manifest (status
        // terminated, `recording_failure`); that takes room, and when the failed write left
        // too little under the limit the file ends instead in complete frames and the open
        // frame's flushed blocks (an unsealed tail, for the startup recovery to seal). Either
        // way nothing before the cut is damaged.
        let (path, r) = recording_of(&data, &key, OUTPUT);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= LIMIT, "{label}: {size} bytes");
        match &r.damage {
            None => assert_eq!(
                r.status,
                SessionStatus::Terminated {
                    reason: "recording_failure".into()
                },
                "{label}"
            ),
            Some(damage) => {
                assert_eq!(damage.kind, DamageKind::UnsealedTail, "{label}: {damage}");
                assert_eq!(r.status, SessionStatus::Open, "{label}");
            }
        }
        // The index row is written from the file once the writer has sealed it, so it agrees.
        if r.manifest.is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let row = custody_recorder::index::Index::open(&data.join("index.sqlite"))
                    .unwrap()
                    .session(&r.meta.session_id)
                    .unwrap();
                if let Some(row) = row.filter(|row| row.status != SessionStatus::Open) {
                    assert_eq!(row.status, r.status, "{label}: the index row");
                    assert!(row.damage.is_none(), "{label}: {:?}", row.damage);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{label}: the index row stayed open; the gateway's log:\n{}",
                    log.text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let recorded: Vec<u8> = r
            .events_with_tail()
            .filter_map(|e| match &e.kind {
                EventKind::Output(b) => Some(b.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        eprintln!(
            "{label}: recording {} KiB on disk, sealed: {}, {} KiB of output recorded",
            size / 1024,
            r.manifest.is_some(),
            recorded.len() / 1024
        );
        assert!(
            recorded.len() as u64 > LIMIT / 2,
            "{label}: only {} bytes recorded",
            recorded.len()
        );
        // Strict recording: every chunk was recorded before it was forwarded, so the recording
        // holds what kubectl received, in order, up to the failure (the events still queued
        // when the write failed are lost, and said so in the log).
        assert!(
            received.starts_with(&recorded),
            "{label}: the recording is not a prefix of what kubectl received"
        );
        // The recording is out of the way for the next session.
        std::fs::remove_file(&path).unwrap();
    }

    // The gateway says why, and keeps serving: a new session writes a new file.
    let text = log.text();
    assert_eq!(text.matches(LOGGED).count(), 2, "{text}");
    assert!(text.contains("File too large"), "{text}");
    for (label, k) in &clients {
        let out = k.run(["exec", "demo", "--", "echo", "ok"]).unwrap();
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"ok\n", "{label}");
    }
    let (_, r) = recording_of(&data, &key, "ok");
    assert_eq!(r.status, SessionStatus::Complete);
    assert!(r.damage.is_none());

    // The premise: only recordings came near the limit.
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let size = entry.metadata().unwrap().len();
            assert!(size < LIMIT / 4, "{}: {size} bytes", entry.path().display());
        }
    }
}

/// A role with `recording = "best-effort"`: the same failure is logged and the session runs to
/// its end, every byte delivered.
#[test]
fn a_best_effort_role_keeps_its_session_when_the_recording_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, demo_dir) = served::demo(dir.path());
    // The demo's policy, with alice's role (dev) recorded best-effort.
    let config = demo_dir.join("custody.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let dev = "name = \"dev\"\n";
    assert!(text.contains(dev));
    // The demo's configuration names its files by absolute paths, so a copy works anywhere.
    let best_effort = dir.path().join("best-effort");
    std::fs::create_dir_all(&best_effort).unwrap();
    std::fs::write(
        best_effort.join("custody.toml"),
        text.replacen(dev, &format!("{dev}recording = \"best-effort\"\n"), 1),
    )
    .unwrap();

    let data = dir.path().join("serve-data");
    let (_serve, ready, log) = serve_limited(&best_effort, &data);
    let https = served::ready_url(&ready);
    let (kubeconfig, home) = served::served_kubeconfig(&demo_dir, &https, dir.path());
    let k = served::kubectl("1.32", &kubeconfig, &home);
    let bytes = 3 * LIMIT;
    let out = k
        .run([
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            &format!("head -c {bytes} /dev/urandom"),
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, bytes, "every byte was delivered");
    let t0 = Instant::now();
    while !log.text().contains("the session goes on unrecorded") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the gateway did not log the failure:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!log.text().contains(LOGGED), "{}", log.text());
}
