//! Live session control through the gateway's control socket, with real kubectl and the real
//! `custody sessions` binary: an operator lists the running sessions, follows one as it
//! happens, and ends one; the client's kubectl fails within a second, and the recording is
//! sealed as terminated with the operator's reason, for WebSocket and SPDY clients alike.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use custody::control::registry::LiveSession;
use custody_fixtures::harness::Collected;
use custody_recorder::index::Index;
use custody_recorder::model::{SessionKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options};

fn recording_env() -> Env {
    Env::start(Options {
        recording: true,
        ..Options::default()
    })
}

/// `custody sessions ARGS... --data-dir DIR`.
fn sessions(data_dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
    command
        .arg("sessions")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir);
    command
}

fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The live sessions, as `custody sessions live --json` prints them.
fn live(env: &Env) -> Vec<LiveSession> {
    let output = run(sessions(&env.data_dir, &["live", "--json"]));
    assert!(
        output.status.success(),
        "sessions live failed: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Waits until exactly one session is live and returns it.
fn the_live_session(env: &Env) -> LiveSession {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut sessions = live(env);
        if sessions.len() == 1 {
            return sessions.remove(0);
        }
        assert!(Instant::now() < deadline, "live sessions: {sessions:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kubectl exec -i demo -- cat` with kubectl `minor`, once it echoed a first line.
struct Cat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Collected,
}

impl Cat {
    fn start(env: &Env, minor: &str) -> Cat {
        let mut child = env
            .kubectl(minor)
            .command(["--context", "alice", "exec", "-i", "demo", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = Collected::spawn(child.stdout.take().unwrap());
        let mut cat = Cat {
            child,
            stdin,
            stdout,
        };
        cat.say("before\n");
        cat.stdout
            .wait_for("before\n", Duration::from_secs(20))
            .unwrap();
        cat
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for kubectl to exit within `limit`, killing it and failing otherwise.
    fn exit_within(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                return (status, stderr);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("kubectl still runs after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the one recording is sealed; returns it (verified) and when it was seen sealed.
fn the_sealed_recording(env: &Env) -> (Recording, Instant) {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let dir = env.data_dir.join("recordings");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recordings: Vec<Recording> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| read_recording(&e.unwrap().path(), Some(&key)).ok())
                    .collect()
            })
            .unwrap_or_default();
        if let [recording] = recordings.as_slice()
            && recording.manifest.is_some()
        {
            let seen = Instant::now();
            assert!(recording.damage.is_none(), "{:?}", recording.damage);
            return (recordings.into_iter().next().unwrap(), seen);
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings, wanted one sealed",
            recordings.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The index row's status, once the session is indexed as ended.
fn indexed_status(env: &Env, id: &str) -> SessionStatus {
    let index = Index::open(&env.data_dir.join("index.sqlite")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = index.session(id).unwrap()
            && row.status != SessionStatus::Open
        {
            return row.status;
        }
        assert!(Instant::now() < deadline, "the session is not indexed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An operator kills a running `exec -i cat` with `custody sessions kill`: kubectl fails
/// within a second, the recording is sealed as terminated with the operator's reason within
/// 1.5 s, and the index row agrees; the session is no longer listed.
fn kill_ends_the_session(minor: &str) {
    let env = recording_env();
    let mut cat = Cat::start(&env, minor);
    let session = the_live_session(&env);

    let killed_at = Instant::now();
    let output = run(sessions(
        &env.data_dir,
        &["kill", &session.id, "--reason", "INC-42: shell on prod"],
    ));
    let answered = killed_at.elapsed();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.contains(&session.id)
            && said.contains("alice")
            && said.contains("admin_kill: INC-42: shell on prod"),
        "{said}"
    );

    let (status, stderr) = cat.exit_within(Duration::from_secs(3));
    let client_ended = killed_at.elapsed();
    assert!(
        !status.success(),
        "kubectl succeeded after a kill: {stderr}"
    );
    let (recording, sealed) = the_sealed_recording(&env);
    let sealed_after = sealed.duration_since(killed_at);
    eprintln!(
        "kubectl {minor}: kill answered after {answered:?}, kubectl exited after \
         {client_ended:?}, recording sealed after {sealed_after:?}"
    );
    assert!(
        client_ended < Duration::from_secs(3),
        "kubectl ended {client_ended:?} after the kill"
    );
    assert!(
        sealed_after < Duration::from_millis(1500),
        "the recording was sealed {sealed_after:?} after the kill"
    );

    let want = SessionStatus::Terminated {
        reason: "admin_kill: INC-42: shell on prod".into(),
    };
    assert_eq!(recording.status, want);
    assert_eq!(recording.meta.session_id, session.id);
    assert_eq!(recording.meta.kind, SessionKind::Exec);
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(indexed_status(&env, &session.id), want);
    assert!(live(&env).is_empty());
}

#[test]
fn an_admin_kill_ends_a_websocket_exec_within_a_second() {
    kill_ends_the_session("1.32");
}

#[test]
fn an_admin_kill_ends_a_spdy_exec_within_a_second() {
    kill_ends_the_session("1.28");
}

/// `custody sessions live` shows the running session with who started it and what it runs,
/// and nothing once it ended.
#[test]
fn live_lists_the_running_session_with_its_initiator_and_not_after_it_ends() {
    let env = recording_env();
    let mut cat = Cat::start(&env, "1.32");
    let session = the_live_session(&env);
    assert_eq!(session.kind, SessionKind::Exec);
    assert_eq!(session.initiator, "alice");
    assert_eq!(session.effective_user, "alice");
    assert_eq!(session.cluster, "sim");
    assert_eq!(session.namespace, "default");
    assert_eq!(session.pod, "demo");
    assert_eq!(session.command, ["cat"]);

    let table = run(sessions(&env.data_dir, &["live"]));
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["ID", "KIND", "WHO", "TARGET", "STARTED"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&session.id), "{table}");
    assert!(
        row.contains("exec") && row.contains("alice") && row.contains("sim/default/demo"),
        "{table}"
    );

    // Closing stdin ends `cat`, and the session with it.
    drop(cat.stdin.take());
    let (status, stderr) = cat.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let (recording, _) = the_sealed_recording(&env);
    assert_eq!(recording.status, SessionStatus::Complete);
    // The registry lets go of a session just after its recording is sealed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !live(&env).is_empty() {
        assert!(std::time::Instant::now() < deadline, "still listed live");
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = run(sessions(&env.data_dir, &["live"]));
    assert_eq!(text(&table.stdout), "no live sessions\n");
}

/// `custody sessions follow` prints what the session outputs after it started following,
/// `--json` gives every event as a line, and both end with the session.
#[test]
fn follow_sees_output_produced_after_it_started_following() {
    let env = recording_env();
    let mut cat = Cat::start(&env, "1.32");
    let session = the_live_session(&env);

    let start_follower = |json: bool| {
        let mut command = sessions(&env.data_dir, &["follow", &session.id]);
        if json {
            command.arg("--json");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Collected::spawn(child.stdout.take().unwrap());
        let stderr = Collected::spawn(child.stderr.take().unwrap());
        stderr
            .wait_for("following session", Duration::from_secs(10))
            .unwrap();
        (child, stdout, stderr)
    };
    let (mut plain, plain_out, plain_err) = start_follower(false);
    let (mut json, json_out, _json_err) = start_follower(true);

    cat.say("after-following\n");
    cat.stdout
        .wait_for("after-following\n", Duration::from_secs(10))
        .unwrap();
    plain_out
        .wait_for("after-following\n", Duration::from_secs(10))
        .unwrap();
    json_out
        .wait_for("\"text\":\"after-following\\n\"", Duration::from_secs(10))
        .unwrap();

    drop(cat.stdin.take());
    let (status, stderr) = cat.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for follower in [&mut plain, &mut json] {
        loop {
            if let Some(status) = follower.try_wait().unwrap() {
                assert!(status.success());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "follow still runs after the session"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    plain_err
        .wait_for("ended: complete", Duration::from_secs(5))
        .unwrap();
    let lines: Vec<serde_json::Value> = json_out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "input" && l["text"] == "after-following\n"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &serde_json::json!({"event": "end", "status": {"status": "complete"}})
    );
}

/// Killing an id no session has fails clearly and leaves the running session alone; without
/// a gateway on the data directory, the commands say so.
#[test]
fn killing_an_unknown_session_is_a_clear_error_and_changes_nothing() {
    let env = recording_env();
    let mut cat = Cat::start(&env, "1.32");
    let session = the_live_session(&env);

    let unknown = "00000000-0000-4000-8000-000000000000";
    let output = run(sessions(&env.data_dir, &["kill", unknown]));
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("no live session {unknown}")),
        "{stderr}"
    );
    let output = run(sessions(&env.data_dir, &["kill", "../../etc"]));
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("no live session"),
        "{}",
        text(&output.stderr)
    );
    let output = run(sessions(&env.data_dir, &["follow", unknown]));
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(&format!("no live session {unknown}")),
        "{}",
        text(&output.stderr)
    );

    assert_eq!(live(&env), [session]);
    cat.say("still-here\n");
    cat.stdout
        .wait_for("still-here\n", Duration::from_secs(10))
        .unwrap();

    let nowhere = env.dir().join("no-gateway");
    std::fs::create_dir_all(&nowhere).unwrap();
    for args in [&["live"][..], &["kill", unknown], &["follow", unknown]] {
        let output = run(sessions(&nowhere, args));
        assert!(!output.status.success());
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "no gateway is running with data dir {} (no control.sock)",
                nowhere.display()
            )),
            "{stderr}"
        );
    }
}

/// The socket is the gateway user's alone, and a second gateway on the same data directory is
/// refused while the first one runs.
#[test]
fn the_control_socket_is_private_and_not_shared() {
    use std::os::unix::fs::PermissionsExt;

    let env = recording_env();
    let path = env.control_socket.clone().unwrap();
    assert_eq!(path, env.data_dir.join("control.sock"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let second = env
        .rt
        .block_on(custody::control::ControlSocket::bind(&env.data_dir))
        .unwrap_err();
    assert!(
        matches!(second, custody::control::Error::InUse(_)),
        "{second}"
    );

    // A socket nobody answers on (a gateway that crashed) is replaced, and removed at the end.
    let crashed = env.dir().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    drop(std::os::unix::net::UnixListener::bind(crashed.join("control.sock")).unwrap());
    let socket = env
        .rt
        .block_on(custody::control::ControlSocket::bind(&crashed))
        .unwrap();
    let mode = std::fs::metadata(socket.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    drop(socket);
    assert!(!crashed.join("control.sock").exists());

    let long = env.dir().join("d".repeat(120));
    let err = env
        .rt
        .block_on(custody::control::ControlSocket::bind(&long))
        .unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}
