//! `custody sessions list|show` and `custody download` as an investigator uses them, over
//! sessions recorded through the gateway from real kubectl (an interactive `exec -it` with typed
//! commands, a non-interactive exec, another person's failing exec): on the data directory
//! (search, filters, JSON, integrity of an intact and of an altered copy, downloads) and
//! against the running gateway (`--server`: owners see their own sessions, auditors all; the
//! raw download is the file on disk; refusals are clear errors).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use custody_fixtures::harness::Collected;
use custody_recorder::index::{Index, SessionQuery};
use custody_recorder::model::SessionStatus;
use custody_web::model::{SessionDetail, SessionSummary};
use env::{Env, Options, ok};
use sha2::{Digest, Sha256};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The three recorded sessions' ids.
struct Recorded {
    /// alice's `exec -it demo -- sh`, where she typed `true wombat7` with echo off.
    interactive: String,
    /// alice's `exec demo -- sh -c 'echo pangolin$((6*7))'`.
    batch: String,
    /// bob's `exec demo -- sh -c 'exit 3'`.
    bobs: String,
}

fn custody() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
    command.env_remove("CUSTODY_TOKEN");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "custody failed ({:?}):\n{}\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// `custody sessions ARGS --data-dir DIR`.
fn on_dir(dir: &Path, args: &[&str]) -> Output {
    run(custody()
        .arg("sessions")
        .args(args)
        .arg("--data-dir")
        .arg(dir))
}

fn list_json(output: &Output) -> Vec<SessionSummary> {
    serde_json::from_str(&success(output)).unwrap()
}

fn ids(sessions: &[SessionSummary]) -> Vec<&str> {
    sessions.iter().map(|s| s.id.as_str()).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Records the three sessions and waits until the index has them sealed.
fn record(env: &Env) -> Recorded {
    let k = env.kubectl("1.32");
    interactive_exec(env);
    let out = ok(&k
        .command([
            "--context",
            "alice",
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "echo pangolin$((6*7))",
        ])
        .output()
        .unwrap());
    assert!(out.contains("pangolin42"), "{out}");
    let failed = k
        .command([
            "--context",
            "bob",
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");

    let index = Index::open(&env.data_dir.join("index.sqlite")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = index.sessions(&SessionQuery::default()).unwrap();
        if rows.len() == 3 && rows.iter().all(|r| r.status != SessionStatus::Open) {
            break rows;
        }
        assert!(Instant::now() < deadline, "sessions not sealed: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Newest first.
    Recorded {
        bobs: rows[0].meta.session_id.clone(),
        batch: rows[1].meta.session_id.clone(),
        interactive: rows[2].meta.session_id.clone(),
    }
}

/// alice's `kubectl exec -it demo -- sh` on a pseudo-terminal: echo off, then a command whose
/// words appear only in what she typed.
fn interactive_exec(env: &Env) {
    let k = env.kubectl("1.32");
    let (mut pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let cmd = k.command(["--context", "alice", "exec", "-it", "demo", "--", "sh"]);
    let mut pcmd = pty_process::blocking::Command::new(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            pcmd = pcmd.env(key, value);
        }
    }
    let mut child = pcmd.env("TERM", "xterm").spawn(pts).unwrap();
    let read_side =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&pty).try_clone_to_owned().unwrap());
    let screen = Collected::spawn(read_side);
    let mut shown = |needle: &str| {
        if let Err(e) = screen.wait_for(needle, TIMEOUT) {
            let _ = child.kill();
            panic!("{e}");
        }
    };
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    shown("ready-2");
    pty.write_all(b"stty -echo; echo quiet-$((2+3))\r").unwrap();
    shown("quiet-5");
    pty.write_all(b"true wombat7; echo done-$((3+4))\r")
        .unwrap();
    shown("done-7");
    pty.write_all(&[0x04]).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "screen:\n{}", screen.text());
            break;
        }
        assert!(Instant::now() < deadline, "kubectl exec -it did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !screen.text().contains("wombat7"),
        "the typed words must not be echoed: {}",
        screen.text()
    );
}

fn recording_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("recordings").join(format!("{id}.cast.zst"))
}

/// A copy of the data directory's index, key and recordings.
fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("recordings")).unwrap();
    for name in ["index.sqlite", "index.sqlite-wal", "signing.key"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join("recordings")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("recordings").join(entry.file_name())).unwrap();
    }
}

#[test]
#[allow(clippy::too_many_lines, reason = "one end-to-end story, step by step")]
fn an_investigator_lists_searches_shows_and_downloads_from_the_data_dir() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let rec = record(&env);
    let dir = env.data_dir.as_path();

    // The table: newest first, who, target, command, how it ended.
    let table = success(&on_dir(dir, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(lines[1].starts_with(&rec.bobs), "{table}");
    assert!(
        lines[1].contains(" bob ") && lines[1].ends_with("exit 3"),
        "{table}"
    );
    assert!(lines[2].starts_with(&rec.batch), "{table}");
    assert!(
        lines[2].contains("sim/default/demo") && lines[2].contains("sh -c echo pangolin$((6*7))"),
        "{table}"
    );
    assert!(lines[3].starts_with(&rec.interactive) && lines[3].ends_with("exit 0"));

    // --json is exactly an array of SessionSummary objects.
    let json: serde_json::Value =
        serde_json::from_str(&success(&on_dir(dir, &["list", "--json"]))).unwrap();
    let array = json.as_array().unwrap();
    assert_eq!(array.len(), 3);
    let mut keys: Vec<&str> = array[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "cluster",
            "command",
            "container",
            "damage",
            "effective_user",
            "ended_at",
            "exit_code",
            "file_size",
            "id",
            "initiator",
            "kind",
            "namespace",
            "pod",
            "reason",
            "started_at",
            "status",
            "tty",
        ]
    );
    let all: Vec<SessionSummary> = serde_json::from_value(json).unwrap();
    assert_eq!(
        ids(&all),
        [
            rec.bobs.as_str(),
            rec.batch.as_str(),
            rec.interactive.as_str()
        ]
    );
    assert!(all[2].tty && all[2].command == ["sh"] && all[2].initiator == "alice");
    assert_eq!(all[0].exit_code, Some(3));

    // --grep finds what alice typed (never echoed) and what a command printed.
    let typed = success(&on_dir(dir, &["list", "--grep", "wombat7"]));
    let lines: Vec<&str> = typed.lines().collect();
    assert_eq!(lines.len(), 3, "{typed}");
    assert!(lines[1].starts_with(&rec.interactive), "{typed}");
    assert!(
        lines[2].starts_with("    ↳ ") && lines[2].contains("«wombat7»"),
        "{typed}"
    );
    let printed = list_json(&on_dir(dir, &["list", "--grep", "pangolin42", "--json"]));
    assert_eq!(ids(&printed), [rec.batch.as_str()]);
    let printed = success(&on_dir(dir, &["list", "--grep", "pangolin42"]));
    assert!(printed.contains("«pangolin42»"), "{printed}");
    assert_eq!(
        success(&on_dir(dir, &["list", "--grep", "nothing-like-this"])),
        "no sessions\n"
    );

    // Filters.
    let filtered = |args: &[&str]| {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        list_json(&on_dir(dir, &all))
    };
    assert_eq!(ids(&filtered(&["--initiator", "bob"])), [rec.bobs.as_str()]);
    assert_eq!(
        ids(&filtered(&["--user", "alice"])),
        [rec.batch.as_str(), rec.interactive.as_str()]
    );
    assert_eq!(ids(&filtered(&["--exit-code", "3"])), [rec.bobs.as_str()]);
    assert_eq!(
        ids(&filtered(&["--exit-code", "0", "--limit", "1"])),
        [rec.batch.as_str()]
    );
    assert_eq!(
        filtered(&[
            "--cluster",
            "sim",
            "-n",
            "default",
            "--pod",
            "demo",
            "--kind",
            "exec"
        ])
        .len(),
        3
    );
    assert!(filtered(&["--kind", "port-forward"]).is_empty());
    assert!(filtered(&["--pod", "other"]).is_empty());
    assert_eq!(filtered(&["--since", "1h"]).len(), 3);
    assert!(filtered(&["--until", "1h"]).is_empty());
    assert!(filtered(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(filtered(&["--until", "2099-01-01T00:00:00+02:00"]).len(), 3);
    let bad = on_dir(dir, &["list", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));

    // show: the header, an intact verdict, and the kubectl invocation's requests.
    let shown = success(&on_dir(dir, &["show", &rec.batch]));
    for needle in [
        format!("session      {}", rec.batch).as_str(),
        "initiator    alice (issuer https://issuer.test, subject sub-alice, groups dev)",
        "target       sim/default/demo",
        "command      sh -c echo pangolin$((6*7))",
        "gateway      test-gateway",
        "status       exit 0",
        "integrity    intact: ",
        "audit events of this kubectl invocation (kubectl exec, Kubectl-Session ",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("*  ") && l.contains("default/pods/demo/exec  101")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains(" get ") && l.contains("default/pods/demo ")),
        "{shown}"
    );
    let detail: SessionDetail =
        serde_json::from_str(&success(&on_dir(dir, &["show", &rec.batch, "--json"]))).unwrap();
    assert_eq!(detail.session.id, rec.batch);
    assert_eq!(detail.meta.initiator.subject, "sub-alice");
    assert_eq!(detail.integrity.verdict, "intact");
    assert!(detail.integrity.verified_frames >= 2);
    assert_eq!(detail.integrity.problem, None);
    assert!(detail.audit.len() >= 2, "{:?}", detail.audit);
    assert!(detail.audit.iter().any(|e| e["id"] == rec.batch.as_str()));
    let invocation = detail.audit[0]["kubectl_session"].clone();
    assert!(invocation.is_string());
    assert!(
        detail
            .audit
            .iter()
            .all(|e| e["kubectl_session"] == invocation)
    );
    let missing = on_dir(dir, &["show", "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no session 0b6f3c1e"),
        "{}",
        stderr(&missing)
    );

    // A flipped byte in a copy of the data directory: altered, with the first bad frame.
    let copy = env.dir().join("copy");
    copy_data_dir(dir, &copy);
    let path = recording_path(&copy, &rec.interactive);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let altered = success(&on_dir(&copy, &["show", &rec.interactive]));
    assert!(
        altered.contains("integrity    altered: frame "),
        "{altered}"
    );
    let detail: SessionDetail = serde_json::from_str(&success(&on_dir(
        &copy,
        &["show", &rec.interactive, "--json"],
    )))
    .unwrap();
    assert_eq!(detail.integrity.verdict, "altered");
    assert!(
        detail
            .integrity
            .problem
            .as_deref()
            .unwrap()
            .starts_with("frame "),
        "{:?}",
        detail.integrity
    );
    // The original still verifies.
    let original: SessionDetail = serde_json::from_str(&success(&on_dir(
        dir,
        &["show", &rec.interactive, "--json"],
    )))
    .unwrap();
    assert_eq!(original.integrity.verdict, "intact");

    // download: the file as stored, its size and hash; never over an existing file.
    let out = env.dir().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let raw = out.join("s.cast.zst");
    let download = |args: &[&str]| {
        run(custody()
            .arg("download")
            .args(args)
            .arg("--data-dir")
            .arg(dir))
    };
    let said = success(&download(&[
        rec.batch.as_str(),
        "-o",
        raw.to_str().unwrap(),
    ]));
    let on_disk = std::fs::read(recording_path(dir, &rec.batch)).unwrap();
    assert_eq!(std::fs::read(&raw).unwrap(), on_disk);
    assert!(
        said.contains(&format!("{} bytes", on_disk.len()))
            && said.contains(&format!("sha256 {}", sha256_hex(&on_disk))),
        "{said}"
    );
    std::fs::write(&raw, b"evidence kept").unwrap();
    let refused = download(&[&rec.batch, "-o", raw.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("exists; pass --force"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&raw).unwrap(), b"evidence kept");
    success(&download(&[
        &rec.batch,
        "-o",
        raw.to_str().unwrap(),
        "--force",
    ]));
    assert_eq!(std::fs::read(&raw).unwrap(), on_disk);
    // Exports go through the recorder's export module.
    let txt = out.join("s.txt");
    success(&download(&[
        &rec.batch,
        "--format",
        "txt",
        "-o",
        txt.to_str().unwrap(),
    ]));
    assert!(
        std::fs::read_to_string(&txt)
            .unwrap()
            .contains("pangolin42")
    );
    let cast = out.join("s.cast");
    success(&download(&[
        &rec.interactive,
        "--format",
        "cast",
        "-o",
        cast.to_str().unwrap(),
    ]));
    let header = std::fs::read_to_string(&cast).unwrap();
    assert!(header.starts_with("{\"version\":3"), "{header}");
    let unknown = download(&["0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70", "-o", "x"]);
    assert!(!unknown.status.success());
    // Nothing but the three files was left behind.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["s.cast", "s.cast.zst", "s.txt"]);
}

#[test]
#[allow(clippy::too_many_lines, reason = "one end-to-end story, step by step")]
fn against_a_running_gateway_people_see_their_own_sessions_and_auditors_all() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let rec = record(&env);
    let server = format!("https://{}", env.gateway_addr);
    let ca = env.dir().join("ca.pem");
    std::fs::write(&ca, &env.ca_pem).unwrap();
    let as_user = |token: &str, args: &[&str]| {
        let mut command = custody();
        command
            .args(args)
            .args(["--server", &server, "--ca-file"])
            .arg(&ca)
            .env("CUSTODY_TOKEN", token);
        run(&mut command)
    };

    // alice sees her two sessions; bob, an auditor (group sre), sees all three.
    let alices = list_json(&as_user("alice-token", &["sessions", "list", "--json"]));
    assert_eq!(ids(&alices), [rec.batch.as_str(), rec.interactive.as_str()]);
    let token_file = env.dir().join("bob.token");
    std::fs::write(&token_file, "bob-token\n").unwrap();
    let all = list_json(&run(custody()
        .args([
            "sessions",
            "list",
            "--json",
            "--server",
            &server,
            "--ca-file",
        ])
        .arg(&ca)
        .arg("--token-file")
        .arg(&token_file)));
    assert_eq!(
        ids(&all),
        [
            rec.bobs.as_str(),
            rec.batch.as_str(),
            rec.interactive.as_str()
        ]
    );
    // The same filters, through the query string.
    let found = list_json(&as_user(
        "bob-token",
        &[
            "sessions", "list", "--json", "--grep", "wombat7", "--since", "1h",
        ],
    ));
    assert_eq!(ids(&found), [rec.interactive.as_str()]);
    let table = success(&as_user(
        "bob-token",
        &["sessions", "list", "--exit-code", "3"],
    ));
    assert!(
        table.lines().nth(1).unwrap().starts_with(&rec.bobs),
        "{table}"
    );

    // show over the API matches show on the data directory.
    let remote: SessionDetail = serde_json::from_str(&success(&as_user(
        "alice-token",
        &["sessions", "show", &rec.batch, "--json"],
    )))
    .unwrap();
    let local: SessionDetail = serde_json::from_str(&success(&on_dir(
        &env.data_dir,
        &["show", &rec.batch, "--json"],
    )))
    .unwrap();
    assert_eq!(remote.session, local.session);
    assert_eq!(remote.meta, local.meta);
    assert_eq!(remote.integrity, local.integrity);
    assert_eq!(remote.audit.len(), local.audit.len());
    let shown = success(&as_user("alice-token", &["sessions", "show", &rec.batch]));
    assert!(shown.contains("integrity    intact: "), "{shown}");

    // A 403 is a clear error with a non-zero exit.
    let refused = as_user("alice-token", &["sessions", "show", &rec.bobs]);
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(
        why.contains("403 Forbidden") && why.contains("may see only the sessions they started"),
        "{why}"
    );
    let refused = as_user("alice-token", &["sessions", "list", "--initiator", "bob"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("403 Forbidden"),
        "{}",
        stderr(&refused)
    );
    // 401, 404, an untrusted certificate, a closed port: each says what happened.
    let bad = as_user("mallory-token", &["sessions", "list"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("401 Unauthorized"),
        "{}",
        stderr(&bad)
    );
    let none = as_user(
        "alice-token",
        &["sessions", "show", "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70"],
    );
    assert!(stderr(&none).contains("404 Not Found"), "{}", stderr(&none));
    let untrusted = run(custody()
        .args(["sessions", "list", "--server", &server])
        .env("CUSTODY_TOKEN", "alice-token"));
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("TLS failed") && stderr(&untrusted).contains("--ca-file"),
        "{}",
        stderr(&untrusted)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = run(custody()
        .args(["sessions", "list", "--server", &closed_url])
        .env("CUSTODY_TOKEN", "alice-token"));
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );

    // The raw download over the API is the file on disk, byte for byte.
    let raw = env.dir().join("remote.cast.zst");
    let said = success(&as_user(
        "alice-token",
        &["download", &rec.interactive, "-o", raw.to_str().unwrap()],
    ));
    let on_disk = std::fs::read(recording_path(&env.data_dir, &rec.interactive)).unwrap();
    assert_eq!(std::fs::read(&raw).unwrap(), on_disk);
    assert!(said.contains(&sha256_hex(&on_disk)), "{said}");
    let txt = env.dir().join("remote.txt");
    success(&as_user(
        "bob-token",
        &[
            "download",
            &rec.batch,
            "--format",
            "txt",
            "-o",
            txt.to_str().unwrap(),
        ],
    ));
    assert!(
        std::fs::read_to_string(&txt)
            .unwrap()
            .contains("pangolin42")
    );
    let forbidden = env.dir().join("forbidden.cast.zst");
    let refused = as_user(
        "alice-token",
        &["download", &rec.bobs, "-o", forbidden.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("403 Forbidden"),
        "{}",
        stderr(&refused)
    );
    assert!(!forbidden.exists());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("part"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn where_to_read_must_be_said_once() {
    let neither = run(custody().args(["sessions", "list"]));
    assert!(!neither.status.success());
    assert!(
        stderr(&neither).contains("--data-dir DIR") && stderr(&neither).contains("--server"),
        "{}",
        stderr(&neither)
    );
    let both = run(custody().args([
        "sessions",
        "list",
        "--data-dir",
        "/nonexistent",
        "--server",
        "https://127.0.0.1:1",
    ]));
    assert!(!both.status.success());
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
    let tokenless = run(custody().args(["download", "ID", "--server", "https://127.0.0.1:1"]));
    assert!(!tokenless.status.success());
    assert!(
        stderr(&tokenless).contains("needs a token"),
        "{}",
        stderr(&tokenless)
    );
    let plain_http = run(custody()
        .args(["sessions", "show", "ID", "--server", "http://127.0.0.1:1"])
        .env("CUSTODY_TOKEN", "t"));
    assert!(
        stderr(&plain_http).contains("only https"),
        "{}",
        stderr(&plain_http)
    );
    let dir = tempfile::tempdir().unwrap();
    let no_index = run(custody()
        .args(["sessions", "list", "--data-dir"])
        .arg(dir.path()));
    assert!(
        stderr(&no_index).contains("no index at"),
        "{}",
        stderr(&no_index)
    );
}
