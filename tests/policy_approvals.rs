//! Just-in-time approval end to end, with real kubectl through custody to kube-sim: alice is
//! refused an exec into `kube-system` with instructions, asks with `custody request create`,
//! cannot approve herself, bob approves, her exec then works for the granted pod only (another
//! pod, namespace or action is refused), the grant's group reaches the cluster and both audit
//! logs, the recording names the grant; revoking ends her open exec at once, and a grant's
//! expiry ends an open exec and refuses new ones.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use custody::policy::PolicyConfig;
use env::{Env, Options, ok};

/// The demo's policy in the test's names (cluster `sim`, users without a prefix).
const POLICY: &str = r#"
[[roles]]
name = "dev"
groups = ["dev"]

[[roles.rules]]
actions = ["get", "list", "watch"]
resources = ["*"]

[[roles.rules]]
namespaces = ["default"]
actions = ["exec", "attach", "portforward", "create", "update", "patch", "delete"]
resources = ["*"]

[[roles.rules]]
actions = ["create"]
resources = ["selfsubjectreviews.authentication.k8s.io"]

[[roles.rules]]
effect = "approval"
namespaces = ["kube-system"]
actions = ["exec", "attach"]
resources = ["pods"]
grant_groups = ["custody:jit-kube-system"]
max_grant = "2h"

[[roles]]
name = "sre"
groups = ["sre"]
show_secrets = true
approve = true

[[roles.rules]]
actions = ["*"]
resources = ["*"]
"#;

fn policy() -> PolicyConfig {
    toml::from_str(POLICY).unwrap()
}

fn start() -> Env {
    Env::start(Options {
        recording: true,
        policy: Some(policy()),
        ..Options::default()
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `custody request ARGS` against the gateway as `who`.
fn request(env: &Env, who: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("request")
        .args(args)
        .args(["--server", &env.url(), "--ca-file"])
        .arg(env.ca_file())
        .env("CUSTODY_TOKEN", format!("{who}-token"))
        .env_remove("CUSTODY_SERVER")
        .output()
        .unwrap()
}

/// alice asks for `kube-system/coredns-sim` for `duration`; returns the request id.
fn ask(env: &Env, duration: &str) -> String {
    let out = request(
        env,
        "alice",
        &[
            "create",
            "--cluster",
            "sim",
            "-n",
            "kube-system",
            "--pod",
            "coredns-sim",
            "--for",
            duration,
            "--reason",
            "INC-7: DNS answers are slow",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?}");
    assert!(
        text(&out.stderr).contains("custody request approve"),
        "{}",
        text(&out.stderr)
    );
    id
}

fn exec(env: &Env, minor: &str, who: &str, ns: &str, pod: &str, script: &str) -> Output {
    env.kubectl(minor)
        .run([
            "--context",
            who,
            "exec",
            "-n",
            ns,
            pod,
            "--",
            "sh",
            "-c",
            script,
        ])
        .unwrap()
}

/// The custody audit events of the exec requests to `pod`.
fn exec_events(env: &Env, pod: &str) -> Vec<serde_json::Value> {
    env.custody_audit()
        .into_iter()
        .filter(|e| e["request"]["subresource"] == "exec" && e["request"]["name"] == pod)
        .collect()
}

#[test]
fn alice_asks_bob_approves_and_the_grant_is_exactly_its_scope() {
    let env = start();

    // Refused, with how to ask, by both kubectl transports alike.
    for minor in ["1.32", "1.28"] {
        let refused = exec(
            &env,
            minor,
            "alice",
            "kube-system",
            "coredns-sim",
            "echo no",
        );
        assert!(!refused.status.success());
        let err = text(&refused.stderr);
        assert!(err.contains("needs approval"), "{minor}: {err}");
        assert!(
            err.contains(
                "custody request create --cluster sim --namespace kube-system --pod coredns-sim"
            ),
            "{minor}: {err}"
        );
    }
    // One kubectl invocation may try WebSocket, then SPDY: every attempt is refused alike.
    let refusals = exec_events(&env, "coredns-sim");
    assert!(!refusals.is_empty());
    let reasons: std::collections::BTreeSet<String> = refusals
        .iter()
        .map(|e| {
            assert_eq!(e["decision"], "deny", "{e}");
            e["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(refusals.iter().all(|e| e["status_code"] == 403));

    let id = ask(&env, "10m");

    // Nobody approves their own request; carol (no approval rights) cannot even see it.
    let own = request(&env, "alice", &["approve", &id]);
    assert!(!own.status.success());
    assert!(
        text(&own.stderr).contains("cannot approve your own request"),
        "{}",
        text(&own.stderr)
    );
    let carol = request(&env, "carol", &["approve", &id]);
    assert!(!carol.status.success());
    assert!(
        text(&carol.stderr).contains("404"),
        "{}",
        text(&carol.stderr)
    );
    let listed = request(&env, "bob", &["list", "--state", "pending", "--json"]);
    let pending: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(pending.len(), 1, "{}", text(&listed.stdout));
    assert_eq!(pending[0]["requester"], "alice");

    let approved = request(&env, "bob", &["approve", &id]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert!(text(&approved.stdout).contains("approved: alice: exec in kube-system/coredns-sim"));
    let twice = request(&env, "bob", &["approve", &id]);
    assert!(
        text(&twice.stderr).contains("already approved by bob"),
        "{}",
        text(&twice.stderr)
    );

    // Now it works, for the granted pod, by both transports.
    for minor in ["1.32", "1.28"] {
        let out = exec(
            &env,
            minor,
            "alice",
            "kube-system",
            "coredns-sim",
            "echo granted",
        );
        assert_eq!(ok(&out).trim(), "granted", "{minor}");
    }
    // Not for another pod, another namespace, or another action.
    for (ns, pod) in [
        ("kube-system", "kube-proxy-abc"),
        ("kube-public", "coredns-sim"),
    ] {
        let created = env
            .kubectl("1.32")
            .run([
                "--context",
                "bob",
                "run",
                "-n",
                ns,
                pod,
                "--image=kube-sim/x",
                "--command",
                "--",
                "/bin/sh",
                "-c",
                "sleep 3600",
            ])
            .unwrap();
        ok(&created);
    }
    let other_pod = exec(
        &env,
        "1.32",
        "alice",
        "kube-system",
        "kube-proxy-abc",
        "true",
    );
    assert!(
        text(&other_pod.stderr).contains("needs approval"),
        "{}",
        text(&other_pod.stderr)
    );
    let other_ns = exec(&env, "1.32", "alice", "kube-public", "coredns-sim", "true");
    assert!(!other_ns.status.success());
    let err = text(&other_ns.stderr);
    assert!(err.contains("custody: no role lets alice"), "{err}");
    assert!(!err.contains("needs approval"), "{err}");
    let attach = env
        .kubectl("1.32")
        .run([
            "--context",
            "alice",
            "attach",
            "-n",
            "kube-system",
            "coredns-sim",
        ])
        .unwrap();
    assert!(
        text(&attach.stderr).contains("needs approval"),
        "{}",
        text(&attach.stderr)
    );
    // bob's rights are his own: the grant is alice's.
    let bobs = exec(
        &env,
        "1.32",
        "bob",
        "kube-system",
        "coredns-sim",
        "echo bob",
    );
    assert_eq!(ok(&bobs).trim(), "bob");

    // The audit trail says which grant allowed it; the cluster saw the grant's group.
    let allowed: Vec<serde_json::Value> = exec_events(&env, "coredns-sim")
        .into_iter()
        .filter(|e| e["decision"] == "allow" && e["initiator"]["username"] == "alice")
        .collect();
    assert!(!allowed.is_empty());
    for e in &allowed {
        assert_eq!(e["approval_id"], id.as_str(), "{e}");
        assert!(e["allowed_by"].as_str().unwrap().contains(&id), "{e}");
        let groups = e["effective"]["groups"].as_array().unwrap();
        assert!(groups.iter().any(|g| g == "custody:jit-kube-system"), "{e}");
    }
    let sim_saw = env.sim_audit().into_iter().any(|e| {
        e["objectRef"]["subresource"] == "exec"
            && e["objectRef"]["namespace"] == "kube-system"
            && e["impersonatedUser"]["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "custody:jit-kube-system"))
    });
    assert!(sim_saw, "kube-sim's audit log shows the grant's group");

    // Every recording of those sessions names the grant in its header (the index row's
    // metadata is the header's).
    let sessions = env.sessions();
    let granted: Vec<_> = sessions
        .iter()
        .filter(|s| s.meta.initiator.username == "alice" && s.meta.namespace == "kube-system")
        .collect();
    assert_eq!(granted.len(), 2, "{sessions:?}");
    for s in granted {
        assert_eq!(s.meta.approval_id.as_deref(), Some(id.as_str()));
    }
}

#[test]
fn revoking_a_grant_ends_the_open_exec_and_refuses_new_ones() {
    let env = start();
    let id = ask(&env, "10m");
    let approved = request(&env, "bob", &["approve", &id]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));

    let (mut open, stderr) = open_exec(&env, "1.32", None, "kube-system", "coredns-sim");

    let revoked = request(&env, "bob", &["revoke", &id, "--reason", "INC-7 closed"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let t0 = Instant::now();
    let status = wait(&mut open, Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(!status.success());
    assert!(
        took < Duration::from_secs(5),
        "ended {took:?} after the revocation"
    );
    let err = stderr.text();
    assert!(
        err.contains("the access grant for this session was revoked: INC-7 closed"),
        "{err}"
    );

    let again = exec(&env, "1.32", "alice", "kube-system", "coredns-sim", "true");
    assert!(
        text(&again.stderr).contains("needs approval"),
        "{}",
        text(&again.stderr)
    );
    let listed = request(&env, "alice", &["list", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(all[0]["state"], "revoked");
    assert_eq!(all[0]["decision_reason"], "INC-7 closed");
}

#[test]
fn an_expired_grant_ends_the_open_exec_and_refuses_new_ones() {
    let env = start();
    let id = ask(&env, "4s");
    let approved = request(&env, "bob", &["approve", &id]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let granted_at = Instant::now();

    let (mut open, stderr) = open_exec(&env, "1.28", None, "kube-system", "coredns-sim");
    let status = wait(&mut open, Duration::from_secs(20));
    assert!(!status.success());
    // Grants end on whole seconds: at most ~1 s after the 4 s, plus the relay's reaction.
    let lived = granted_at.elapsed();
    assert!(lived < Duration::from_secs(7), "the exec lived {lived:?}");
    let err = stderr.text();
    assert!(
        err.contains("the access grant for this session expired"),
        "{err}"
    );

    let again = exec(&env, "1.32", "alice", "kube-system", "coredns-sim", "true");
    assert!(
        text(&again.stderr).contains("needs approval"),
        "{}",
        text(&again.stderr)
    );
    let listed = request(&env, "alice", &["list", "--state", "expired", "--json"]);
    let expired: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(expired.len(), 1, "{}", text(&listed.stdout));
    assert_eq!(expired[0]["id"], id.as_str());
}

/// Security case 24: access that ends while a stream is open ends the stream. A session
/// started with a credential that expires 3 s later is ended then, with the reason.
#[test]
fn a_session_ends_when_its_credential_expires() {
    let env = start();
    let presented = Instant::now();
    let (mut open, stderr) = open_exec(&env, "1.32", Some("alice-brief-token"), "default", "demo");
    let status = wait(&mut open, Duration::from_secs(20));
    assert!(!status.success());
    let lived = presented.elapsed();
    assert!(lived < Duration::from_secs(7), "the exec lived {lived:?}");
    let err = stderr.text();
    assert!(
        err.contains("the credential this session was started with expired"),
        "{err}"
    );
}

/// The same for a watch: it ends at the credential's expiry instead of running on.
#[test]
fn a_watch_ends_when_its_credential_expires() {
    let env = start();
    let presented = Instant::now();
    let mut watch = env
        .kubectl("1.32")
        .command([
            "--context",
            "alice",
            "--token",
            "alice-brief-token",
            "get",
            "pods",
            "-w",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = custody_fixtures::harness::Collected::spawn(watch.stdout.take().unwrap());
    let _stderr = custody_fixtures::harness::Collected::spawn(watch.stderr.take().unwrap());
    stdout.wait_for("demo", Duration::from_secs(20)).unwrap();
    wait(&mut watch, Duration::from_secs(20));
    let lived = presented.elapsed();
    assert!(
        lived > Duration::from_secs(2) && lived < Duration::from_secs(7),
        "the watch lived {lived:?}"
    );
}

/// And for `kubectl logs -f`: the stream of a running container's log ends at the
/// credential's expiry instead of running on.
#[test]
fn logs_follow_ends_when_its_credential_expires() {
    let env = start();
    let presented = Instant::now();
    let mut logs = env
        .kubectl("1.32")
        .command([
            "--context",
            "alice",
            "--token",
            "alice-brief-token",
            "logs",
            "-f",
            "demo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdout = custody_fixtures::harness::Collected::spawn(logs.stdout.take().unwrap());
    let _stderr = custody_fixtures::harness::Collected::spawn(logs.stderr.take().unwrap());
    wait(&mut logs, Duration::from_secs(20));
    let lived = presented.elapsed();
    assert!(
        lived > Duration::from_secs(2) && lived < Duration::from_secs(7),
        "logs -f lived {lived:?}"
    );
}

#[test]
fn a_request_beyond_what_the_policy_offers_is_refused_with_reasons() {
    let env = start();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "alice",
            &[
                "create",
                "--cluster",
                "sim",
                "-n",
                "kube-system",
                "--pod",
                "x",
                "--for",
                "3h",
                "--reason",
                "r",
            ],
            "at most 2h",
        ),
        (
            "alice",
            &[
                "create",
                "--cluster",
                "sim",
                "-n",
                "kube-public",
                "--pod",
                "x",
                "--reason",
                "r",
            ],
            "kube-public",
        ),
        (
            "alice",
            &[
                "create",
                "--cluster",
                "nowhere",
                "-n",
                "kube-system",
                "--reason",
                "r",
            ],
            "not served by this gateway",
        ),
        (
            "alice",
            &[
                "create",
                "--cluster",
                "sim",
                "-n",
                "kube-system",
                "--pod",
                "../etc",
                "--reason",
                "r",
            ],
            "not a valid name",
        ),
    ];
    for (who, args, expected) in cases {
        let out = request(&env, who, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let listed = request(&env, "bob", &["list", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(all.is_empty(), "nothing was stored: {all:?}");
    // Every call was audited, refusals included.
    let calls = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["request"]["resource"] == "accessrequests")
        .count();
    assert!(calls >= 5, "{calls}");
}

/// Approvers hear of every request and decision through the webhook: a JSON `POST` with a
/// one-line `text` and the request.
#[test]
fn approvers_are_notified_through_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca, received) = webhook(dir.path());
    let env = Env::start(Options {
        recording: true,
        policy: Some(policy()),
        approvals: custody::approval::notify::ApprovalsConfig {
            webhook_url: Some(url),
            webhook_ca_file: Some(ca),
        },
        ..Options::default()
    });
    let id = ask(&env, "10m");
    let first = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first["event"], "access_requested");
    assert_eq!(first["request"]["id"], id.as_str());
    let line = first["text"].as_str().unwrap();
    assert!(
        line.contains("alice asks for access: exec in kube-system/coredns-sim on sim"),
        "{line}"
    );
    assert!(
        line.contains(&format!("custody request approve {id}")),
        "{line}"
    );

    let denied = request(&env, "bob", &["deny", &id, "--reason", "use the runbook"]);
    assert!(denied.status.success(), "{}", text(&denied.stderr));
    let second = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(second["event"], "access_denied");
    assert_eq!(second["request"]["decision_reason"], "use the runbook");
    assert_eq!(second["request"]["state"], "denied");
}

/// An HTTPS endpoint on loopback that answers 200 and hands each JSON body it receives to the
/// returned channel. Returns its URL, its CA file and the channel.
fn webhook(
    dir: &std::path::Path,
) -> (
    String,
    std::path::PathBuf,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = custody_fixtures::pki::Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    let ca = dir.join("webhook-ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let tls = std::sync::Arc::new(
        pki.server_config_without_client_auth(&[b"http/1.1"])
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = Vec::new();
                let mut chunk = [0_u8; 4096];
                let body = loop {
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buf.len() >= end + 4 + length {
                        break Some(buf[end + 4..end + 4 + length].to_vec());
                    }
                };
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = stream.shutdown().await;
                if let Some(body) = body {
                    let _ = tx.send(serde_json::from_slice(&body).unwrap());
                }
            }
        });
    });
    (url, ca, rx)
}

/// alice's `exec -i` of `echo started; sleep 60` in `ns`/`pod` with kubectl `minor` (and a
/// `--token`), once it has started; returns it and its stderr.
fn open_exec(
    env: &Env,
    minor: &str,
    token: Option<&str>,
    ns: &str,
    pod: &str,
) -> (std::process::Child, custody_fixtures::harness::Collected) {
    let mut args = vec!["--context", "alice"];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    args.extend([
        "exec",
        "-i",
        "-n",
        ns,
        pod,
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    let mut open = env
        .kubectl(minor)
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = custody_fixtures::harness::Collected::spawn(open.stdout.take().unwrap());
    let stderr = custody_fixtures::harness::Collected::spawn(open.stderr.take().unwrap());
    stdout.wait_for("started", Duration::from_secs(20)).unwrap();
    (open, stderr)
}

fn wait(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("kubectl did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
