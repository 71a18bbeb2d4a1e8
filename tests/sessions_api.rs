//! The sessions API (`/custody/v1`) through a running gateway, over sessions recorded from
//! real kubectl: every download format checked with the real asciinema 3 and 2 players and
//! `custody verify`, `Range` requests, the access rule (owners and auditors), hostile session
//! ids, and every API request in the audit trail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;
#[path = "../recorder/tests/support/recording_support.rs"]
mod recording_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody_web::model::{API_PREFIX, SessionDetail, SessionSummary};
use env::{Env, Options};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// One answer: status, headers, body bytes.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        assert_eq!(self.status, 200, "{}", self.text());
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends one GET over HTTP/1.1 with the path exactly as given (no normalization), as `token`'s
/// owner (`None`: no credentials), with extra headers.
fn get(env: &Env, token: Option<&str>, path: &str, headers: &[(&str, &str)]) -> Answer {
    env.rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut env.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(env.gateway_addr)
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
}

fn api(path: &str) -> String {
    format!("{API_PREFIX}{path}")
}

/// Runs `kubectl exec` as `user` and waits until the API lists the session as sealed; returns
/// its id.
fn recorded_exec(env: &Env, user: &str, script: &str, expect_exit: i32) -> String {
    let before: Vec<SessionSummary> =
        get(env, Some(&format!("{user}-token")), &api("/sessions"), &[]).json();
    let out = env
        .kubectl("1.32")
        .run(["--context", user, "exec", "demo", "--", "sh", "-c", script])
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(expect_exit),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now: Vec<SessionSummary> =
            get(env, Some(&format!("{user}-token")), &api("/sessions"), &[]).json();
        if let Some(new) = now
            .iter()
            .find(|s| s.status != "open" && !before.iter().any(|b| b.id == s.id))
        {
            return new.id.clone();
        }
        assert!(Instant::now() < deadline, "no sealed session for {user}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn custody_verify(file: &Path, key: Option<&Path>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
    cmd.arg("verify").arg(file);
    if let Some(key) = key {
        cmd.arg("--key").arg(key);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The custody audit events of API requests, each as its last line says (the completion of
/// an allowed request, which carries its status, or the refusal's decision).
fn api_audit(env: &Env) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut events: Vec<serde_json::Value> = Vec::new();
        for line in env.custody_audit() {
            if line["request"]["api_group"] != "custody.dev" {
                continue;
            }
            match events.iter_mut().find(|e| e["id"] == line["id"]) {
                Some(seen) => *seen = line,
                None => events.push(line),
            }
        }
        // Completions are written when a body ends, just after the client read it.
        if events.iter().all(|e| !e["status_code"].is_null()) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[allow(clippy::too_many_lines, reason = "one end-to-end story, step by step")]
fn every_download_format_plays_in_real_players_and_raw_verifies_offline() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let id = recorded_exec(
        &env,
        "alice",
        // stdout and stderr are separate streams, read in whatever order they arrive: the pause
        // makes the order in the transcript certain.
        "echo hello-from-alice; sleep 0.3; echo oops-on-stderr >&2; exit 3",
        3,
    );
    let dir = env.dir().join("downloads");
    std::fs::create_dir_all(&dir).unwrap();

    // The detail: intact, with the session's own audit event.
    let detail: SessionDetail = get(
        &env,
        Some("alice-token"),
        &api(&format!("/sessions/{id}")),
        &[],
    )
    .json();
    assert_eq!(detail.session.exit_code, Some(3));
    assert_eq!(detail.integrity.verdict, "intact", "{:?}", detail.integrity);
    assert!(detail.integrity.verified_frames >= 2);
    assert!(
        detail.audit.iter().any(|e| e["id"] == id.as_str()),
        "{:#?}",
        detail.audit
    );
    let key_pem = get(&env, Some("alice-token"), &api("/key"), &[]);
    assert_eq!(key_pem.status, 200);
    assert!(key_pem.text().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        detail.integrity.public_key,
        custody_recorder::integrity::public_key_hex(
            &env.signing_key.as_ref().unwrap().verifying_key()
        )
    );
    let key_file = dir.join("gateway.pub.pem");
    std::fs::write(&key_file, &key_pem.body).unwrap();

    // raw: the file itself, streamed, verifiable offline.
    let download = api(&format!("/sessions/{id}/download"));
    let raw = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=raw"),
        &[],
    );
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.headers["content-type"], "application/octet-stream");
    assert_eq!(
        raw.headers["content-disposition"],
        format!("attachment; filename=\"{id}.cast.zst\"")
    );
    assert_eq!(raw.headers["accept-ranges"], "bytes");
    let stored = env.stored_recording(&id);
    assert_eq!(raw.body, stored);
    let raw_file = dir.join(format!("{id}.cast.zst"));
    std::fs::write(&raw_file, &raw.body).unwrap();
    let (code, out) = custody_verify(&raw_file, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("intact\n"), "{out}");
    assert!(out.contains("not who signed it"), "{out}");
    let (code, out) = custody_verify(&raw_file, Some(&key_file));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by the given key"), "{out}");

    // One flipped byte in the middle: altered, naming the frame.
    let mut tampered = raw.body.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let tampered_file = dir.join("tampered.cast.zst");
    std::fs::write(&tampered_file, &tampered).unwrap();
    let (code, out) = custody_verify(&tampered_file, Some(&key_file));
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("altered: frame "), "{out}");
    assert!(out.contains(" at byte "), "{out}");

    // Another key: refused, even though the file is intact.
    let other =
        custody_recorder::integrity::load_or_create_signing_key(&dir.join("other.key")).unwrap();
    let other_pub = dir.join("other.pub.pem");
    std::fs::write(
        &other_pub,
        custody_recorder::integrity::public_key_pem(&other.verifying_key()).unwrap(),
    )
    .unwrap();
    let (code, out) = custody_verify(&raw_file, Some(&other_pub));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("altered: not signed by the given key"),
        "{out}"
    );
    let (code, out) = custody_verify(&key_file, None);
    assert_eq!(code, 3, "{out}");

    // Range requests.
    let len = raw.body.len();
    let part = get(
        &env,
        Some("alice-token"),
        &download,
        &[("range", "bytes=10-19")],
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.headers["content-range"], format!("bytes 10-19/{len}"));
    assert_eq!(part.body, raw.body[10..20]);
    let tail = get(
        &env,
        Some("alice-token"),
        &download,
        &[("range", "bytes=-7")],
    );
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, raw.body[len - 7..]);
    let from = get(
        &env,
        Some("alice-token"),
        &download,
        &[("range", &format!("bytes={}-", len - 3))],
    );
    assert_eq!(from.body, raw.body[len - 3..]);
    let beyond = get(
        &env,
        Some("alice-token"),
        &download,
        &[("range", &format!("bytes={len}-"))],
    );
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.headers["content-range"], format!("bytes */{len}"));

    // cast: the real asciinema 3 renders what kubectl printed, stderr included.
    let cast = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=cast"),
        &[],
    );
    assert_eq!(cast.status, 200, "{}", cast.text());
    assert_eq!(cast.headers["x-custody-integrity"], "intact");
    let cast_file = dir.join(format!("{id}.cast"));
    std::fs::write(&cast_file, &cast.body).unwrap();
    let screen = recording_support::asciinema_screen(&cast_file);
    assert!(screen.contains("hello-from-alice"), "{screen}");
    assert!(screen.contains("oops-on-stderr"), "{screen}");
    let rendered = Command::new(recording_support::asciinema())
        .env("RUST_BACKTRACE", "0")
        .args(["convert", "--overwrite", "-f", "txt"])
        .arg(&cast_file)
        .arg("-")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("hello-from-alice"));

    // cast-v2: PyPI asciinema 2 prints its output.
    let v2 = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=cast-v2"),
        &[],
    );
    assert_eq!(v2.status, 200, "{}", v2.text());
    let v2_file = dir.join(format!("{id}.v2.cast"));
    std::fs::write(&v2_file, &v2.body).unwrap();
    let v2_cat = Command::new(recording_support::asciinema2())
        .arg("cat")
        .arg(&v2_file)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&v2_cat.stdout);
    assert!(
        v2_cat.status.success(),
        "{}",
        String::from_utf8_lossy(&v2_cat.stderr)
    );
    assert!(printed.contains("hello-from-alice"), "{printed}");
    assert!(printed.contains("oops-on-stderr"), "{printed}");

    // txt: the output with stderr marked.
    let txt = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=txt"),
        &[],
    );
    assert_eq!(txt.status, 200);
    assert_eq!(txt.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(txt.text(), "hello-from-alice\n[stderr] oops-on-stderr\n");

    // Every download is in the audit trail with its format.
    let audited = api_audit(&env);
    for format in ["raw", "cast", "cast-v2", "txt"] {
        assert!(
            audited.iter().any(|e| e["request"]["name"] == id.as_str()
                && e["request"]["subresource"] == "download"
                && e["request"]["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("format={format}"))
                && e["initiator"]["username"] == "alice"
                && e["decision"] == "allow"
                && e["status_code"] == 200),
            "no audited {format} download: {audited:#?}"
        );
    }
    assert!(audited.iter().any(|e| e["status_code"] == 416));
}

#[test]
#[allow(clippy::too_many_lines, reason = "one end-to-end story, step by step")]
fn people_see_their_own_sessions_auditors_see_all_and_every_attempt_is_audited() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let alice_id = recorded_exec(&env, "alice", "echo alice-was-here", 0);
    let bob_id = recorded_exec(&env, "bob", "echo bob-was-here", 0);

    // A person lists their own sessions; an auditor (bob, group sre) lists everyone's.
    let mine: Vec<SessionSummary> = get(&env, Some("alice-token"), &api("/sessions"), &[]).json();
    assert_eq!(
        mine.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [alice_id.as_str()]
    );
    let all: Vec<SessionSummary> = get(&env, Some("bob-token"), &api("/sessions"), &[]).json();
    assert_eq!(all.len(), 2);
    let filtered: Vec<SessionSummary> = get(
        &env,
        Some("bob-token"),
        &api("/sessions?initiator=alice&kind=exec"),
        &[],
    )
    .json();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].initiator, "alice");

    // alice may not see bob's: 403 for the list, the detail and the download.
    let refused = get(
        &env,
        Some("alice-token"),
        &api("/sessions?initiator=bob"),
        &[],
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    let status: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("auditor group")
    );
    for path in [
        format!("/sessions/{bob_id}"),
        format!("/sessions/{bob_id}/download"),
        format!("/sessions/{bob_id}/download?format=txt"),
    ] {
        let answer = get(&env, Some("alice-token"), &api(&path), &[]);
        assert_eq!(answer.status, 403, "{path}: {}", answer.text());
        assert!(answer.headers.contains_key("audit-id"));
    }
    // bob audits: he downloads alice's.
    let bobs_view = get(
        &env,
        Some("bob-token"),
        &api(&format!("/sessions/{alice_id}/download?format=txt")),
        &[],
    );
    assert_eq!(bobs_view.status, 200);
    assert_eq!(bobs_view.text(), "alice-was-here\n");

    // Guessed and malformed ids.
    let guessed = "6f1d2c3b-4a59-4e7d-8c6b-5a4f3e2d1c0b";
    assert_eq!(
        get(
            &env,
            Some("alice-token"),
            &api(&format!("/sessions/{guessed}")),
            &[]
        )
        .status,
        404
    );
    assert_eq!(
        get(
            &env,
            Some("bob-token"),
            &api(&format!("/sessions/{guessed}/download")),
            &[]
        )
        .status,
        404
    );
    let overlong = "a".repeat(600);
    for hostile in [
        "/sessions/../../etc/passwd",
        "/sessions/..%2f..%2fetc%2fpasswd/download",
        "/sessions/%2e%2e%2f",
        "/sessions/%2e%2e%2f/download?format=raw",
        "/sessions/..",
        &format!("/sessions/{overlong}/download"),
        "/sessions/00000000-0000-0000-0000-00000000000g",
        "/sessions/{6f1d2c3b-4a59-4e7d-8c6b-5a4f3e2d1c0b}",
    ] {
        let answer = get(&env, Some("alice-token"), &api(hostile), &[]);
        assert!(
            answer.status == 400 || answer.status == 404,
            "{hostile}: {} {}",
            answer.status,
            answer.text()
        );
        assert!(!answer.text().contains("root:"), "{hostile}");
    }
    let bad_format = get(
        &env,
        Some("alice-token"),
        &api(&format!("/sessions/{alice_id}/download?format=../x")),
        &[],
    );
    assert_eq!(bad_format.status, 400);

    // Without credentials: a 401 Status, audited like kubectl's.
    let anonymous = get(&env, None, &api("/sessions"), &[]);
    assert_eq!(anonymous.status, 401);
    let status: serde_json::Value = serde_json::from_slice(&anonymous.body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 401);

    // The audit trail: the principal, the id asked for and the outcome of every attempt.
    let audited = api_audit(&env);
    let find = |status: u16, name: &str| {
        audited.iter().any(|e| {
            e["status_code"] == status
                && e["request"]["name"].as_str().unwrap().starts_with(name)
                && e["initiator"]["username"] == "alice"
                && (status < 400) == (e["decision"] == "allow")
        })
    };
    assert!(find(403, &bob_id), "{audited:#?}");
    assert!(find(404, guessed), "{audited:#?}");
    assert!(find(400, "%2e%2e%2f"), "{audited:#?}");
    assert!(find(400, &"a".repeat(100)), "{audited:#?}");
    assert!(find(400, ".."), "{audited:#?}");
    let refusal = audited
        .iter()
        .find(|e| e["status_code"] == 403 && e["request"]["name"] == bob_id.as_str())
        .unwrap();
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("alice may see only"),
        "{refusal}"
    );
    assert!(
        audited.iter().any(|e| e["status_code"] == 200
            && e["initiator"]["username"] == "bob"
            && e["request"]["name"] == alice_id.as_str()),
        "{audited:#?}"
    );
    let all_lines = env.custody_audit();
    assert!(
        all_lines
            .iter()
            .any(|e| e["status_code"] == 401 && e["request"]["path"] == api("/sessions").as_str()),
        "the 401 is audited"
    );

    // The audit endpoint follows the same rule.
    assert_eq!(
        get(&env, Some("alice-token"), &api("/audit?initiator=bob"), &[]).status,
        403
    );
    let own: Vec<serde_json::Value> =
        get(&env, Some("alice-token"), &api("/audit?limit=1000"), &[]).json();
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["initiator"]["username"] == "alice"));
    let denied: Vec<serde_json::Value> = get(
        &env,
        Some("bob-token"),
        &api("/audit?decision=deny&initiator=alice&resource=sessions"),
        &[],
    )
    .json();
    assert!(
        denied.iter().any(|e| e["status_code"] == 403),
        "{denied:#?}"
    );
}

/// A terminal session typed through real kubectl on a pseudo-terminal: its `txt` download is
/// the rendered screen (what scrolled off, then the final screen), and asciinema 3 renders the
/// same lines from the `cast` download.
#[test]
fn a_terminal_session_downloads_as_its_rendered_screen() {
    use std::io::Write;

    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
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
    let screen = custody_fixtures::harness::Collected::spawn(read_side);
    let timeout = Duration::from_secs(20);
    // Type only once the shell's prompt shows: kubectl has put the terminal in raw mode by then,
    // so nothing typed is echoed locally or read before the shell prompts.
    let deadline = Instant::now() + timeout;
    while !(screen.text().contains("# ") || screen.text().contains("$ ")) {
        assert!(Instant::now() < deadline, "no prompt: {}", screen.text());
        std::thread::sleep(Duration::from_millis(25));
    }
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    screen.wait_for("ready-2", timeout).unwrap();
    pty.write_all(b"printf 'tty-%s\\n' $((6*7)) $((7*7))\r")
        .unwrap();
    screen.wait_for("tty-49", timeout).unwrap();
    pty.write_all(&[0x04]).unwrap();
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kubectl exec -it did not end");
        std::thread::sleep(Duration::from_millis(50));
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let list: Vec<SessionSummary> =
            get(&env, Some("alice-token"), &api("/sessions"), &[]).json();
        if let Some(s) = list.iter().find(|s| s.tty && s.status != "open") {
            break s.id.clone();
        }
        assert!(Instant::now() < deadline, "no sealed tty session");
        std::thread::sleep(Duration::from_millis(100));
    };
    let download = api(&format!("/sessions/{id}/download"));
    let txt = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=txt"),
        &[],
    );
    assert_eq!(txt.status, 200);
    let txt = txt.text();
    for line in ["tty-42", "tty-49", "ready-2"] {
        assert!(
            txt.lines().any(|l| l == line),
            "{line} not a line of:\n{txt}"
        );
    }
    assert!(txt.contains("echo ready-$((1+1))"), "{txt}");

    let cast = get(
        &env,
        Some("alice-token"),
        &format!("{download}?format=cast"),
        &[],
    );
    let cast_file = env.dir().join("tty.cast");
    std::fs::write(&cast_file, &cast.body).unwrap();
    let rendered = recording_support::asciinema_screen(&cast_file);
    for line in ["tty-42", "tty-49"] {
        assert!(
            rendered.lines().any(|l| l.trim_end() == line),
            "asciinema 3 did not render {line}:\n{rendered}"
        );
    }
}

#[test]
fn a_session_detail_shows_only_its_initiators_requests_whatever_kubectl_session_others_send() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let alice_id = recorded_exec(&env, "alice", "echo mine", 0);
    let detail: serde_json::Value = get(
        &env,
        Some("alice-token"),
        &api(&format!("/sessions/{alice_id}")),
        &[],
    )
    .json();
    let invocation = detail["audit"][0]["kubectl_session"]
        .as_str()
        .expect("kubectl sends Kubectl-Session")
        .to_owned();
    let before = detail["audit"].as_array().unwrap().len();

    // bob, and someone without a token, send requests claiming alice's kubectl invocation.
    let path = "/clusters/sim/api/v1/namespaces/default/pods";
    let forged = [("kubectl-session", invocation.as_str())];
    assert_eq!(get(&env, Some("bob-token"), path, &forged).status, 200);
    assert_eq!(get(&env, None, path, &forged).status, 401);
    // The forged rows exist in the trail (so the filter below is what hides them).
    let trail = env.custody_audit();
    let claiming: std::collections::BTreeSet<&str> = trail
        .iter()
        .filter(|e| e["kubectl_session"] == invocation.as_str())
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(claiming.len() >= before + 2, "{trail:?}");

    for viewer in ["alice-token", "bob-token"] {
        let detail: serde_json::Value = get(
            &env,
            Some(viewer),
            &api(&format!("/sessions/{alice_id}")),
            &[],
        )
        .json();
        let audit = detail["audit"].as_array().unwrap();
        assert_eq!(audit.len(), before, "{viewer}: {audit:?}");
        for e in audit {
            assert_eq!(e["initiator"]["subject"], "sub-alice", "{e}");
        }
    }

    // Everything custody wrote under its data directory is its user's alone.
    env.assert_data_dir_private();
}
