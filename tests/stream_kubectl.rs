//! Real kubectl (1.32 over WebSocket, 1.32 forced to SPDY, 1.28 over SPDY) running exec and
//! port-forward through the gateway to kube-sim, each session recorded: the recording exists,
//! verifies, names alice and the pod, and its output is what kubectl printed.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;
#[path = "gateway_support/recorded.rs"]
mod recorded;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use custody_fixtures::harness::Kubectl;
use custody_recorder::index::{Index, SessionRow};
use custody_recorder::model::{SessionKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options, ok};
use recorded::{assert_one_forward, exits_of, input_of, output_of};

fn recording_env() -> Env {
    Env::start(Options {
        recording: true,
        ..Options::default()
    })
}

fn recordings_dir(env: &Env) -> PathBuf {
    env.data_dir.join("recordings")
}

/// Waits until `count` recordings exist and are all sealed, and returns them, verified.
fn sealed_recordings(env: &Env, count: usize) -> Vec<Recording> {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut recordings = Vec::new();
        if let Ok(dir) = std::fs::read_dir(recordings_dir(env)) {
            for entry in dir {
                let path = entry.unwrap().path();
                if let Ok(recording) = read_recording(&path, Some(&key)) {
                    recordings.push(recording);
                }
            }
        }
        let sealed = recordings.iter().filter(|r| r.manifest.is_some()).count();
        if sealed >= count && recordings.len() == sealed {
            recordings.sort_by_key(|r| r.meta.started_at_us);
            return recordings;
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings, {sealed} sealed, wanted {count}",
            recordings.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The index row of a sealed session (indexed right after sealing).
fn wait_for_row(index: &Index, id: &str) -> SessionRow {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = index.session(id).unwrap()
            && row.status != SessionStatus::Open
        {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} not indexed as sealed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_identity(recording: &Recording, kind: SessionKind) {
    assert!(recording.damage.is_none(), "{:?}", recording.damage);
    assert_eq!(recording.meta.kind, kind);
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(recording.meta.effective.user, "alice");
    assert_eq!(recording.meta.cluster, "sim");
    assert_eq!(recording.meta.namespace, "default");
    assert_eq!(recording.meta.pod, "demo");
    assert!(recording.meta.client_addr.starts_with("127.0.0.1:"));
}

/// A few MiB of bytes that are not all printable.
fn payload() -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..3 * 1024 * 1024 + 17)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// exec with output, an exit code and piped stdin, then port-forward, all recorded.
fn exec_and_port_forward(k: &Kubectl, env: &Env) {
    let hi = ok(&k
        .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
        .unwrap());
    assert_eq!(hi, "hi\n");

    let exit = k
        .run([
            "--context",
            "alice",
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
    assert_eq!(
        exit.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&exit.stderr)
    );

    let data = payload();
    let mut child = k
        .command(["--context", "alice", "exec", "-i", "demo", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "cat returned {} bytes",
        out.stdout.len()
    );

    let recordings = sealed_recordings(env, 3);
    assert_eq!(recordings.len(), 3, "one recording per exec");
    let index = Index::open(&env.data_dir.join("index.sqlite")).unwrap();
    for r in &recordings {
        check_identity(r, SessionKind::Exec);
        assert_eq!(r.status, SessionStatus::Complete);
        let row = wait_for_row(&index, &r.meta.session_id);
        assert_eq!(row.meta.initiator.username, "alice");
    }
    assert_eq!(
        wait_for_row(&index, &recordings[1].meta.session_id).exit_code,
        Some(3)
    );
    assert_eq!(recordings[0].meta.command, ["echo", "hi"]);
    assert_eq!(output_of(&recordings[0]), b"hi\n");
    assert_eq!(exits_of(&recordings[0]), [Some(0)]);
    assert_eq!(recordings[1].meta.command, ["sh", "-c", "exit 3"]);
    assert_eq!(exits_of(&recordings[1]), [Some(3)]);
    assert_eq!(recordings[2].meta.command, ["cat"]);
    assert!(output_of(&recordings[2]) == data, "recorded output differs");
    assert!(input_of(&recordings[2]) == data, "recorded input differs");

    port_forward(k);
    let recordings = sealed_recordings(env, 4);
    let pf = &recordings[3];
    check_identity(pf, SessionKind::PortForward);
    assert_one_forward(pf, 8080, PF_BYTES as u64);
}

const PF_BYTES: usize = 100_000;

/// `port-forward pod/demo :8080` to kube-sim's echo server: bytes go there and come back.
fn port_forward(k: &Kubectl) {
    custody_fixtures::harness::port_forward_echo(k, Some("alice"), PF_BYTES).unwrap();
}

#[test]
fn kubectl_1_32_websocket_exec_and_port_forward_are_recorded() {
    let env = recording_env();
    exec_and_port_forward(&env.kubectl("1.32"), &env);
}

#[test]
fn kubectl_1_32_spdy_exec_and_port_forward_are_recorded() {
    let env = recording_env();
    let k = env
        .kubectl("1.32")
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    exec_and_port_forward(&k, &env);
}

#[test]
fn kubectl_1_28_spdy_exec_and_port_forward_are_recorded() {
    let env = recording_env();
    exec_and_port_forward(&env.kubectl("1.28"), &env);
}

#[test]
fn an_unwritable_recordings_dir_refuses_exec_before_the_upgrade() {
    let env = recording_env();
    std::fs::create_dir_all(&env.data_dir).unwrap();
    std::fs::write(recordings_dir(&env), b"not a directory").unwrap();
    for k in [
        env.kubectl("1.32"),
        env.kubectl("1.32")
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
        env.kubectl("1.28"),
    ] {
        let out = k
            .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("recording unavailable"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("hi"));
    }
    let execs: Vec<_> = env
        .sim_audit()
        .into_iter()
        .filter(|e| e["objectRef"]["subresource"] == "exec")
        .collect();
    assert!(execs.is_empty(), "exec reached kube-sim: {execs:#?}");
    // Every attempt is audited as allowed and completed with 503.
    std::thread::sleep(Duration::from_millis(300));
    let completions: Vec<_> = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["stage"] == "complete" && e["request"]["subresource"] == "exec")
        .collect();
    assert!(completions.len() >= 3, "{completions:#?}");
    for c in &completions {
        assert_eq!(c["status_code"], 503, "{c}");
    }
    // kubectl 1.32 retries a refused WebSocket upgrade over SPDY; neither attempt became a
    // session: no recording, no index row.
    assert!(recordings_dir(&env).is_file());
    let index = env.data_dir.join("index.sqlite");
    if index.exists() {
        let rows = Index::open(&index)
            .unwrap()
            .sessions(&custody_recorder::index::SessionQuery::default())
            .unwrap();
        assert!(rows.is_empty(), "{rows:#?}");
    }
}
