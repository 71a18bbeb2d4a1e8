//! Real kubectl (1.32 and 1.28) through the gateway to kube-sim: whoami, get, create/delete,
//! watch, logs -f and `--as`, with both audit trails checked against each other.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use custody_fixtures::harness::Collected;
use env::{Env, Options, ok};

const KUBECTLS: [&str; 2] = ["1.32", "1.28"];

#[test]
fn kubectl_works_through_the_gateway_and_both_audit_logs_name_alice() {
    let env = Env::start(Options::default());
    for minor in KUBECTLS {
        let k = env.kubectl(minor);
        let whoami = ok(&k.run(["--context", "alice", "auth", "whoami"]).unwrap());
        assert!(whoami.contains("alice"), "{whoami}");
        assert!(whoami.contains("dev"), "{whoami}");
        let pods = ok(&k.run(["--context", "alice", "get", "pods"]).unwrap());
        assert!(pods.contains("demo"), "{pods}");
        let name = format!("made-{}", minor.replace('.', "-"));
        ok(&k
            .run([
                "--context",
                "alice",
                "run",
                &name,
                "--image=kube-sim/shell",
                "--restart=Never",
                "--",
                "sleep",
                "30",
            ])
            .unwrap());
        ok(&k
            .run(["--context", "alice", "delete", "pod", &name, "--wait=false"])
            .unwrap());
    }
    // Completion records are written when responses end; give the last ones a moment.
    std::thread::sleep(Duration::from_millis(300));

    let custody = env.custody_audit();
    let allowed: HashSet<String> = custody
        .iter()
        .filter(|e| e["stage"] == "decision" && e["decision"] == "allow")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(allowed.len() >= 8, "{custody:#?}");
    for e in custody.iter().filter(|e| e["decision"] == "allow") {
        assert_eq!(e["initiator"]["username"], "alice");
        assert_eq!(e["effective"]["user"], "alice");
        assert_eq!(e["cluster"], "sim");
        assert!(e["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let sim = env.sim_audit();
    let mut seen = HashSet::new();
    for e in &sim {
        assert_eq!(
            e["user"]["username"], "system:serviceaccount:custody:gateway",
            "{e}"
        );
        let imp = &e["impersonatedUser"];
        assert_eq!(imp["username"], "alice", "{e}");
        assert_eq!(
            imp["extra"]["custody.dev/initiator"],
            serde_json::json!(["alice"]),
            "{e}"
        );
        let id = e["auditID"].as_str().unwrap();
        assert_eq!(
            imp["extra"]["custody.dev/request-id"],
            serde_json::json!([id]),
            "{e}"
        );
        assert!(
            allowed.contains(id),
            "kube-sim saw {id} which custody did not audit"
        );
        seen.insert(id.to_owned());
    }
    assert_eq!(
        seen, allowed,
        "every allowed request reached kube-sim under its custody id"
    );
    // The completion rows carry the echoed Audit-Id and the status.
    let completions: Vec<_> = custody
        .iter()
        .filter(|e| e["stage"] == "complete")
        .collect();
    assert!(!completions.is_empty());
    for c in completions {
        assert_eq!(c["upstream_audit_id"], c["id"], "{c}");
        assert!(c["status_code"].as_u64().unwrap() < 300, "{c}");
    }
    // Requests of one kubectl invocation share a Kubectl-Session.
    let sessions: HashSet<_> = custody
        .iter()
        .filter_map(|e| e["kubectl_session"].as_str())
        .collect();
    assert!(
        sessions.len() >= 2 && sessions.len() < allowed.len(),
        "{sessions:?}"
    );
}

#[test]
fn watch_and_logs_follow_stream_through_the_gateway() {
    let env = Env::start(Options::default());
    for minor in KUBECTLS {
        let k = env.kubectl(minor);
        let mut watch = k
            .command([
                "--context",
                "alice",
                "get",
                "pods",
                "-w",
                "--request-timeout=30s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Collected::spawn(watch.stdout.take().unwrap());
        // The initial listing first, so the new pod can only arrive by the watch.
        out.wait_for("demo", Duration::from_secs(30)).unwrap();
        let pod = format!("ticker-{}", minor.replace('.', "-"));
        ok(&k
            .run([
                "--context",
                "alice",
                "run",
                &pod,
                "--image=kube-sim/shell",
                "--restart=Never",
                "--",
                "sh",
                "-c",
                "i=0; while [ $i -lt 60 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
            ])
            .unwrap());
        out.wait_for(&pod, Duration::from_secs(30)).unwrap();
        let _ = watch.kill();
        let _ = watch.wait();

        let mut follow = k
            .command(["--context", "alice", "logs", "-f", &pod])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Collected::spawn(follow.stdout.take().unwrap());
        // tick-20 comes about 4 s after the start: it can only arrive by following.
        let text = logs.wait_for("tick-20", Duration::from_secs(30)).unwrap();
        let _ = follow.kill();
        let _ = follow.wait();
        assert!(text.starts_with("tick-0"), "{text}");
    }
    let custody = env.custody_audit();
    assert!(
        custody
            .iter()
            .any(|e| e["request"]["verb"] == "watch" && e["request"]["resource"] == "pods"),
        "the watch was classified as a watch"
    );
}

#[test]
fn as_is_honoured_for_bob_and_refused_for_alice() {
    let env = Env::start(Options::default());
    for minor in KUBECTLS {
        let k = env.kubectl(minor);
        let who = ok(&k
            .run(["--context", "bob", "--as=carol", "auth", "whoami"])
            .unwrap());
        assert!(who.contains("carol"), "{who}");
        // client-go's discovery client shows a 403 Status as "unknown" (as with kube-apiserver):
        // warm the discovery cache so the refusal arrives on the pods request.
        ok(&k.run(["--context", "alice", "get", "pods"]).unwrap());
        let refused = k
            .run(["--context", "alice", "--as=carol", "get", "pods"])
            .unwrap();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("alice may not impersonate user \"carol\""),
            "{stderr}"
        );
        let masters = k
            .run([
                "--context",
                "bob",
                "--as=admin",
                "--as-group=system:masters",
                "get",
                "pods",
            ])
            .unwrap();
        assert!(
            !masters.status.success(),
            "system:masters needs an explicit rule"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let custody = env.custody_audit();
    let carol: Vec<_> = custody
        .iter()
        .filter(|e| e["stage"] == "decision" && e["effective"]["user"] == "carol")
        .collect();
    assert!(!carol.is_empty());
    for e in &carol {
        assert_eq!(e["initiator"]["username"], "bob");
        assert_eq!(e["decision"], "allow");
    }
    let denied: Vec<_> = custody
        .iter()
        .filter(|e| e["decision"] == "deny" && e["initiator"]["username"] == "alice")
        .collect();
    assert!(denied.len() >= KUBECTLS.len(), "{custody:#?}");
    for e in &denied {
        assert_eq!(e["status_code"], 403);
        assert_eq!(
            e["reason"],
            "custody: alice may not impersonate user \"carol\""
        );
    }
    let sim = env.sim_audit();
    let sim_carol: Vec<_> = sim
        .iter()
        .filter(|e| e["impersonatedUser"]["username"] == "carol")
        .collect();
    assert_eq!(sim_carol.len(), carol.len());
    for e in sim_carol {
        assert_eq!(
            e["impersonatedUser"]["extra"]["custody.dev/initiator"],
            serde_json::json!(["bob"])
        );
    }
    assert!(
        sim.iter()
            .all(|e| e["impersonatedUser"]["username"] != "admin")
    );
}
