//! Streaming sessions that end badly, through the whole gateway with recording on: kube-sim
//! dying mid-session, a session reaching the idle timeout or its maximum duration (kubectl
//! prints custody's reason), and an API server that answers the upgrade with something other
//! than 101. Each case ends the client's session and leaves a verified recording, sealed as
//! terminated with the reason, and an index row that agrees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;
#[path = "stream_upgrade/support.rs"]
mod support;

use std::io::{Read, Write};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody::stream::relay::RelayConfig;
use custody_recorder::index::Index;
use custody_recorder::model::{SessionKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options};
use support::{KEY, Script, has_header, read_for, scripted_upstream};
use tokio::io::AsyncWriteExt;

/// Waits until exactly one recording exists and is sealed, and returns it, verified.
fn the_sealed_recording(env: &Env) -> Recording {
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
            assert!(recording.damage.is_none(), "{:?}", recording.damage);
            return recordings.into_iter().next().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings, wanted one sealed",
            recordings.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks the recording is sealed as terminated with `reason`, and its index row agrees.
fn check_terminated(env: &Env, recording: &Recording, reason: &str) {
    let want = SessionStatus::Terminated {
        reason: reason.to_owned(),
    };
    assert_eq!(recording.status, want);
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(recording.meta.cluster, "sim");
    let index = Index::open(&env.data_dir.join("index.sqlite")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = index.session(&recording.meta.session_id).unwrap()
            && row.status != SessionStatus::Open
        {
            assert_eq!(row.status, want);
            return;
        }
        assert!(Instant::now() < deadline, "the session is not indexed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit within `limit`, killing it and failing otherwise.
fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("kubectl still runs after {limit:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// kube-sim dies while `exec -i cat` is open: kubectl fails within seconds, and the recording
/// is sealed with the upstream-closed reason, after the output that went through.
#[test]
fn killing_kube_sim_mid_session_ends_the_client_and_seals_upstream_closed() {
    let mut env = Env::start(Options {
        recording: true,
        killable_sim: true,
        ..Options::default()
    });
    let k = env.kubectl("1.32");
    let mut child = k
        .command(["--context", "alice", "exec", "-i", "demo", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut echoed = [0u8; 7];
        let result = stdout.read_exact(&mut echoed).map(|()| echoed);
        let _ = tx.send(result);
        // Keep reading so kubectl never blocks on its stdout.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let echoed = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("cat echoed within 20 s")
        .unwrap();
    assert_eq!(&echoed, b"before\n");

    env.kill_sim();
    let killed = Instant::now();
    let status = exit_within(&mut child, Duration::from_secs(10));
    let took = killed.elapsed();
    let stderr = stderr_of(&mut child);
    drop(stdin);
    assert!(!status.success(), "kubectl failed: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "kubectl ended after {took:?}"
    );

    let recording = the_sealed_recording(&env);
    assert_eq!(recording.meta.kind, SessionKind::Exec);
    check_terminated(&env, &recording, "upstream_closed");
}

/// Runs `kubectl <minor> exec -i demo -- cat` through a gateway with `relay`: types a line,
/// waits for its echo, then types nothing until custody ends the session. Checks kubectl
/// failed within `limit` of its start, and the recording is sealed as terminated with
/// `reason`; returns kubectl's stderr.
fn exec_ended_by_custody(minor: &str, relay: RelayConfig, reason: &str, limit: Duration) -> String {
    let env = Env::start(Options {
        recording: true,
        relay: Some(relay),
        ..Options::default()
    });
    let k = env.kubectl(minor);
    let started = Instant::now();
    let mut child = k
        .command(["--context", "alice", "exec", "-i", "demo", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut echoed = [0u8; 7];
        let result = stdout.read_exact(&mut echoed).map(|()| echoed);
        let _ = tx.send(result);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let status = exit_within(&mut child, limit + Duration::from_secs(5));
    let took = started.elapsed();
    let stderr = stderr_of(&mut child);
    drop(stdin);
    eprintln!("kubectl {minor} exited {status} after {took:?}; stderr:\n{stderr}");
    let echoed = rx.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(&echoed, b"before\n", "{stderr}");
    assert!(!status.success(), "kubectl failed: {stderr}");
    assert!(took < limit, "kubectl ended after {took:?}");

    let recording = the_sealed_recording(&env);
    check_terminated(&env, &recording, reason);
    stderr
}

/// A gateway with a 1 s idle timeout ends an `exec -i cat` that nobody types into, and kubectl
/// (1.32 over WebSocket, 1.28 over SPDY) prints why.
#[test]
fn an_idle_session_is_ended_by_the_idle_timeout() {
    let relay = RelayConfig {
        idle_timeout: Some(Duration::from_secs(1)),
        ..RelayConfig::default()
    };
    let told = "error: custody: the session was idle for 1s and was ended (idle timeout)";
    for minor in ["1.32", "1.28"] {
        let stderr = exec_ended_by_custody(minor, relay, "idle_timeout", Duration::from_secs(6));
        assert!(stderr.contains(told), "kubectl {minor}: {stderr}");
    }
}

/// A gateway with a 3 s maximum duration ends an `exec -i cat` at 3 s, and kubectl (1.32 over
/// WebSocket, 1.28 over SPDY) prints why.
#[test]
fn a_session_is_ended_at_its_maximum_duration_and_told_why() {
    let relay = RelayConfig {
        max_duration: Some(Duration::from_secs(3)),
        ..RelayConfig::default()
    };
    let told = "error: custody: the session reached its maximum duration of 3s and was ended";
    for minor in ["1.32", "1.28"] {
        let stderr = exec_ended_by_custody(minor, relay, "max_duration", Duration::from_secs(8));
        assert!(stderr.contains(told), "kubectl {minor}: {stderr}");
    }
}

const EXEC: &str =
    "/clusters/sim/api/v1/namespaces/default/pods/demo/exec?command=sh&stdin=true&stdout=true";
const SMUGGLED: &str = "GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n";

/// 403, 500, 200 and 302 to the upgrade, through the whole gateway: the client gets the
/// error (a 502 for the others, never the redirect), the API server received the request head
/// and nothing the client pipelined after it, and the attempt is recorded as refused and
/// audited.
#[test]
fn refused_upgrades_through_the_gateway_are_recorded_and_audited() {
    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"demo\" is forbidden","reason":"Forbidden","code":403}"#;
    let answers: [(u16, u16, String); 4] = [
        (
            403,
            403,
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{status}",
                status.len()
            ),
        ),
        (
            500,
            500,
            "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nboom!\r\n0\r\n\r\n".into(),
        ),
        (200, 502, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into()),
        (
            302,
            502,
            "HTTP/1.1 302 Found\r\nLocation: https://evil.example/api/v1/secrets\r\nContent-Length: 0\r\n\r\n".into(),
        ),
    ];
    for (code, want, answer) in answers {
        for upgrade in [WEBSOCKET_UPGRADE, SPDY_UPGRADE] {
            refused_case(code, want, &answer, status, upgrade);
        }
    }
}

/// The upgrade headers of kubectl 1.32 (WebSocket) and kubectl 1.28 (SPDY).
const WEBSOCKET_UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: KEY\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n";
const SPDY_UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
    X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
    X-Stream-Protocol-Version: v3.channel.k8s.io\r\n";

fn refused_case(code: u16, want: u16, answer: &str, status: &str, upgrade: &str) {
    // The scripted API server runs on a runtime of its own, kept for the whole case.
    let scripted_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        answer: answer.as_bytes().to_vec(),
        echo: false,
    };
    let (upstream, received) = scripted_rt.block_on(scripted_upstream(dir.path(), script));
    let env = Env::start(Options {
        recording: true,
        upstream: Some(upstream),
        ..Options::default()
    });
    let upgrade = upgrade.replace("KEY", KEY);
    let request = format!(
        "GET {EXEC} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer alice-token\r\n\
         {upgrade}\r\n{SMUGGLED}"
    );
    let (response, closed) = env.rt.block_on(async {
        let mut tls = connect(&env).await;
        tls.write_all(request.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        read_for(&mut tls, Duration::from_secs(10)).await
    });
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(
        closed,
        "{code}: the client connection is closed: {response}"
    );
    assert!(
        response.starts_with(&format!("HTTP/1.1 {want} ")),
        "{code}: {response}"
    );
    match code {
        403 => assert!(response.ends_with(status), "{response}"),
        500 => assert!(response.contains("boom!"), "{response}"),
        _ => {
            assert!(!response.to_ascii_lowercase().contains("location"));
            assert!(!response.contains("evil.example"), "{response}");
        }
    }
    assert!(has_header(&response, "connection", "close"), "{response}");

    let received = scripted_rt.block_on(received).unwrap();
    assert!(
        received
            .head
            .starts_with("GET /api/v1/namespaces/default/pods/demo/exec?")
    );
    assert!(
        received.before_answer.is_empty() && received.after_answer.is_empty(),
        "{code}: bytes after the head reached the API server: {:?} {:?}",
        String::from_utf8_lossy(&received.before_answer),
        String::from_utf8_lossy(&received.after_answer),
    );
    assert!(received.closed, "{code}: the upstream connection is closed");

    let recording = the_sealed_recording(&env);
    assert_eq!(recording.meta.kind, SessionKind::Exec);
    check_terminated(&env, &recording, "upstream_refused");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = env.custody_audit();
        let done = audit
            .iter()
            .find(|e| e["id"] == recording.meta.session_id.as_str() && e["stage"] == "complete");
        if let Some(done) = done {
            assert_eq!(done["status_code"], want, "{done}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{code}: no audit completion: {audit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS connection to the gateway, trusting its CA.
async fn connect(env: &Env) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
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
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}
