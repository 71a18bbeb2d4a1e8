//! The decision matrix: people with different roles make real kubectl requests through custody
//! to kube-sim, and each is allowed, denied or held for approval with the reason the person
//! sees; `custody policy test` gives the same decision and the same reason for every case
//! without sending anything. The WebSocket and SPDY attempts of one kubectl invocation are
//! decided alike, and port-forward is held to the role's ports connection by connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use custody::policy::PolicyConfig;
use custody_fixtures::harness::Collected;
use env::{Env, Options};

const POLICY: &str = r#"
[[policy.roles]]
name = "dev"
groups = ["dev"]

[[policy.roles.rules]]
actions = ["get", "list", "watch"]
resources = ["*"]

[[policy.roles.rules]]
namespaces = ["default"]
actions = ["exec", "attach", "portforward", "create", "update", "patch", "delete"]
resources = ["*"]

[[policy.roles.redact]]
name = "ticket"
pattern = "TICKET-[0-9]{4}"

[[policy.roles.rules]]
effect = "deny"
actions = ["delete"]
resources = ["secrets"]
reason = "secrets are rotated through the vault pipeline"

[[policy.roles.rules]]
effect = "approval"
namespaces = ["kube-system"]
actions = ["exec", "attach"]
resources = ["pods"]
grant_groups = ["custody:jit-kube-system"]

[[policy.roles]]
name = "carol-forwards"
users = ["carol"]

[[policy.roles.rules]]
namespaces = ["default"]
actions = ["get", "list"]
resources = ["pods"]

[[policy.roles.rules]]
namespaces = ["default"]
actions = ["portforward"]
resources = ["pods"]
names = ["demo"]
ports = [8080]

[[policy.roles]]
name = "sre"
groups = ["sre"]
show_secrets = true
approve = true

[[policy.roles.rules]]
actions = ["*"]
resources = ["*"]

[[policy.roles.impersonate]]
users = ["*"]
groups = ["dev"]
"#;

/// One case: who runs which kubectl command, what `custody policy test` is asked, and what
/// both must decide.
struct Case {
    who: &'static str,
    kubectl: &'static [&'static str],
    policy_test: &'static [&'static str],
    decision: &'static str,
    reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        who: "alice",
        kubectl: &["get", "pods"],
        policy_test: &["--namespace", "default", "--", "list", "pods"],
        decision: "allow",
        reason: "dev",
    },
    Case {
        who: "alice",
        kubectl: &["exec", "demo", "--", "true"],
        policy_test: &["--namespace", "default", "--", "exec", "pod/demo"],
        decision: "allow",
        reason: "dev",
    },
    Case {
        who: "alice",
        kubectl: &["exec", "-n", "kube-system", "coredns-sim", "--", "true"],
        policy_test: &[
            "--namespace",
            "kube-system",
            "--",
            "exec",
            "pod/coredns-sim",
        ],
        decision: "needs-approval",
        reason: "custody request create --cluster sim --namespace kube-system --pod coredns-sim",
    },
    Case {
        who: "alice",
        kubectl: &[
            "debug",
            "-n",
            "kube-system",
            "coredns-sim",
            "--image=busybox",
        ],
        policy_test: &[
            "--namespace",
            "kube-system",
            "--",
            "debug",
            "pod/coredns-sim",
        ],
        decision: "needs-approval",
        reason: "needs approval",
    },
    Case {
        who: "alice",
        kubectl: &["delete", "secret", "db-credentials"],
        policy_test: &[
            "--namespace",
            "default",
            "--",
            "delete",
            "secret/db-credentials",
        ],
        decision: "deny",
        reason: "secrets are rotated through the vault pipeline",
    },
    Case {
        who: "alice",
        kubectl: &[
            "get",
            "--raw",
            "/clusters/sim/api/v1/nodes/kube-sim/proxy/pods",
        ],
        policy_test: &["--", "get", "nodes/kube-sim/proxy"],
        decision: "deny",
        reason: "no role lets alice",
    },
    Case {
        who: "alice",
        kubectl: &["--as=carol", "get", "pods"],
        policy_test: &[
            "--namespace",
            "default",
            "--as",
            "carol",
            "--",
            "list",
            "pods",
        ],
        decision: "deny",
        reason: "carol",
    },
    Case {
        who: "carol",
        kubectl: &["exec", "demo", "--", "true"],
        policy_test: &["--namespace", "default", "--", "exec", "pod/demo"],
        decision: "deny",
        reason: "no role lets carol",
    },
    Case {
        who: "carol",
        kubectl: &["get", "pods"],
        policy_test: &["--namespace", "default", "--", "list", "pods"],
        decision: "allow",
        reason: "carol-forwards",
    },
    Case {
        who: "carol",
        kubectl: &["get", "secrets"],
        policy_test: &["--namespace", "default", "--", "list", "secrets"],
        decision: "deny",
        reason: "no role lets carol",
    },
    Case {
        who: "bob",
        kubectl: &["--as=alice", "--as-group=dev", "get", "pods"],
        policy_test: &[
            "--namespace",
            "default",
            "--as",
            "alice",
            "--as-group",
            "dev",
            "--",
            "list",
            "pods",
        ],
        decision: "allow",
        reason: "sre",
    },
    Case {
        who: "bob",
        kubectl: &["--as=admin", "--as-group=system:masters", "get", "pods"],
        policy_test: &[
            "--namespace",
            "default",
            "--as",
            "admin",
            "--as-group",
            "system:masters",
            "--",
            "list",
            "pods",
        ],
        decision: "deny",
        reason: "system:masters",
    },
];

/// kube-sim's default RBAC, plus what carol needs in the cluster to port-forward: the policy
/// is custody's layer, the cluster's RBAC still applies under it.
fn start() -> Env {
    use custody_fixtures::kube_sim::rbac::{Grant, Policy, Rule, Subjects};
    let mut rbac = Policy::defaults(custody_fixtures::kube_sim::server::GATEWAY_USER);
    rbac.grants.push(Grant {
        name: "carol-forwards".into(),
        subjects: Subjects {
            users: vec!["carol".into()],
            ..Subjects::default()
        },
        namespace: Some("default".into()),
        rules: vec![Rule {
            verbs: vec!["get".into(), "list".into(), "create".into()],
            api_groups: vec![String::new()],
            resources: vec!["pods".into(), "pods/portforward".into(), "pods/exec".into()],
            ..Rule::default()
        }],
    });
    let dir = tempfile::tempdir().unwrap().keep();
    let rules = dir.join("rbac.yaml");
    std::fs::write(&rules, serde_yaml::to_string(&rbac).unwrap()).unwrap();
    Env::start(Options {
        recording: true,
        policy: Some(PolicyConfig::from_section(POLICY).unwrap()),
        sim_rules: Some(rules),
        ..Options::default()
    })
}

fn groups(who: &str) -> &'static [&'static str] {
    match who {
        "alice" => &["dev"],
        "bob" => &["sre"],
        _ => &[],
    }
}

/// `custody policy test` for `case`: its decision and reason (JSON).
fn policy_test(file: &std::path::Path, case: &Case) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
    command
        .args(["policy", "test", "--config"])
        .arg(file)
        .args(["--user", case.who, "--cluster", "sim", "--json"]);
    for group in groups(case.who) {
        command.args(["--group", group]);
    }
    let out = command.args(case.policy_test).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        json["decision"].as_str().unwrap().to_owned(),
        json["reason"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_gateway_and_custody_policy_test_decide_every_case_alike() {
    let env = start();
    let file = env.dir().join("policy.toml");
    std::fs::write(&file, POLICY).unwrap();

    for (i, case) in CASES.iter().enumerate() {
        let (decision, reason) = policy_test(&file, case);
        assert_eq!(
            decision, case.decision,
            "case {i}: policy test said {reason}"
        );
        assert!(reason.contains(case.reason), "case {i}: {reason}");

        let before = env.custody_audit().len();
        let mut args = vec!["--context", case.who];
        args.extend_from_slice(case.kubectl);
        let out = env.kubectl("1.32").run(&args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // The requests this invocation made that the policy decided (discovery aside).
        let events: Vec<serde_json::Value> = env.custody_audit()[before..]
            .iter()
            .filter(|e| e["request"]["is_resource"] == true)
            .filter(|e| e["allowed_by"].is_string() || e["decision"] == "deny")
            .cloned()
            .collect();
        if case.decision == "allow" {
            assert!(!stderr.contains("custody: "), "case {i}: {stderr}");
            let allowed = events
                .iter()
                .rev()
                .find(|e| e["decision"] == "allow")
                .unwrap_or_else(|| panic!("case {i}: no allowed request in {events:?}"));
            assert_eq!(allowed["allowed_by"].as_str().unwrap(), reason, "case {i}");
        } else {
            assert!(!out.status.success(), "case {i}");
            assert!(
                stderr.contains(&format!("custody: {reason}")),
                "case {i}: kubectl shows {stderr}, policy test said {reason}"
            );
            let denied: Vec<&serde_json::Value> =
                events.iter().filter(|e| e["decision"] == "deny").collect();
            assert!(!denied.is_empty(), "case {i}");
            // Every attempt of the invocation (WebSocket, then SPDY) has the same reason.
            for e in denied {
                assert_eq!(
                    e["reason"].as_str().unwrap(),
                    format!("custody: {reason}"),
                    "case {i}"
                );
                assert_eq!(e["status_code"], 403, "case {i}");
            }
        }
    }
}

/// SPDY-only kubectl (1.28) and forced SPDY are decided as kubectl 1.32's WebSocket attempt.
#[test]
fn websocket_and_spdy_attempts_are_decided_alike() {
    let env = start();
    let mut reasons = Vec::new();
    for (minor, spdy) in [("1.32", false), ("1.32", true), ("1.28", false)] {
        let mut k = env.kubectl(minor);
        if spdy {
            k = k.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        }
        let before = env.custody_audit().len();
        let out = k
            .run(["--context", "carol", "exec", "demo", "--", "true"])
            .unwrap();
        assert!(!out.status.success());
        let attempts: Vec<serde_json::Value> = env.custody_audit()[before..]
            .iter()
            .filter(|e| e["request"]["subresource"] == "exec")
            .cloned()
            .collect();
        assert!(!attempts.is_empty(), "{minor} spdy={spdy}");
        for e in attempts {
            assert_eq!(e["decision"], "deny");
            reasons.push((
                minor,
                spdy,
                e["request"]["verb"].clone(),
                e["reason"].clone(),
            ));
        }
    }
    let first = &reasons[0].3;
    assert!(
        reasons.iter().all(|r| &r.3 == first),
        "every attempt, GET (WebSocket) or POST (SPDY), has one reason: {reasons:?}"
    );
}

/// carol may forward to port 8080 of pod demo only: a connection to 8080 reaches the pod, one
/// to another port is recorded as attempted, never reaches it, and ends the forward.
#[test]
fn port_forward_is_held_to_the_roles_ports() {
    let env = start();
    // Allowed: bytes go to kube-sim's echo server on 8080 and come back.
    let (mut child, port, stderr) = forward(&env, "8080");
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    socket.write_all(b"ping through custody\n").unwrap();
    let mut got = vec![0_u8; 21];
    socket.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping through custody\n");
    drop(socket);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stderr);

    // Not allowed: port 9090 of the same pod.
    let (mut child, port, stderr) = forward(&env, "9090");
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = socket.write_all(b"hello?\n");
    let mut buf = [0_u8; 16];
    let read = socket.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing comes back from a refused port: {read:?}"
    );
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = stderr.text();
    // The recording says why it ended.
    let t0 = std::time::Instant::now();
    loop {
        let sessions = env.sessions();
        let ended = sessions.iter().any(|s| {
            format!("{:?}", s.status).contains(custody::gateway::session::PORT_NOT_ALLOWED)
        });
        if ended {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no session ended with port_not_allowed: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kubectl port-forward pod/demo :<remote>` as carol; returns it, the local port and its
/// stderr.
fn forward(env: &Env, remote: &str) -> (std::process::Child, u16, Collected) {
    let mut child = env
        .kubectl("1.32")
        .command([
            "--context",
            "carol",
            "port-forward",
            "pod/demo",
            &format!(":{remote}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Collected::spawn(child.stdout.take().unwrap());
    let stderr = Collected::spawn(child.stderr.take().unwrap());
    let text = stdout
        .wait_for(&format!(" -> {remote}"), Duration::from_secs(20))
        .map_err(|e| format!("{e}\nstderr: {}", stderr.text()))
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Forwarding from 127.0.0.1:"))
        .unwrap();
    let port = line["Forwarding from 127.0.0.1:".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, port, stderr)
}

/// A role's redaction patterns apply to its members' recordings, on top of the defaults; other
/// people's recordings keep the text.
#[test]
fn a_roles_redaction_patterns_apply_to_its_members_recordings() {
    let env = start();
    for who in ["alice", "bob"] {
        let out = env
            .kubectl("1.32")
            .run([
                "--context",
                who,
                "exec",
                "demo",
                "--",
                "sh",
                "-c",
                &format!("echo {who} TICKET-1234"),
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{who} TICKET-1234"),
            "the person sees the output as it is"
        );
    }
    let t0 = std::time::Instant::now();
    let recorded = loop {
        let sessions = env.sessions();
        let sealed: Vec<_> = sessions
            .into_iter()
            .filter(|s| s.meta.kind == custody_recorder::model::SessionKind::Exec)
            .filter(|s| s.ended_at_us.is_some())
            .collect();
        if sealed.len() == 2 || t0.elapsed() > Duration::from_secs(10) {
            break sealed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recorded.len(), 2);
    for row in recorded {
        let recording = env.recording(&row.meta.session_id);
        let output: Vec<u8> = recording
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                custody_recorder::model::EventKind::Output(b)
                | custody_recorder::model::EventKind::Stderr(b) => Some(b.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let text = String::from_utf8_lossy(&output);
        match row.meta.initiator.username.as_str() {
            "alice" => {
                assert!(text.contains("alice [REDACTED:ticket]"), "{text}");
                assert!(!text.contains("TICKET-1234"), "{text}");
            }
            _ => assert!(text.contains("bob TICKET-1234"), "{text}"),
        }
    }
}
