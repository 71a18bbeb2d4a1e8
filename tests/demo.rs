//! `custody demo` as a newcomer runs it: a fresh directory, the printed commands, with the real
//! pinned kubectl binaries (1.32 and 1.28); then the chain of custody in both audit logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::process::Command;
use std::time::Duration;

use custody_fixtures::harness::{Kubectl, kubectl_binary};

#[path = "support/demo.rs"]
mod support;

use support::Demo;

fn start_demo() -> Demo {
    support::start_demo(&[], Duration::from_secs(60))
}

fn kubectl(demo: &Demo, minor: &str) -> Kubectl {
    let home = demo.dir.path().join(format!("home-{minor}"));
    std::fs::create_dir_all(&home).unwrap();
    Kubectl::new(
        kubectl_binary(minor).unwrap(),
        demo.dir.path().join("demo/kubeconfig"),
        home,
    )
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_demo_works_as_printed_and_both_audit_logs_name_the_real_person() {
    let demo = start_demo();
    // The printed commands point at the files the demo wrote.
    let export = demo
        .printed
        .iter()
        .find(|l| l.contains("export KUBECONFIG="))
        .unwrap();
    assert!(export.ends_with("/demo/kubeconfig"), "{export}");

    for minor in ["1.32", "1.28"] {
        let k = kubectl(&demo, minor);
        let whoami = stdout_of(&k.run(["--context", "alice", "auth", "whoami"]).unwrap());
        assert!(whoami.contains("oidc:alice"), "{whoami}");
        assert!(whoami.contains("[dev system:authenticated]"), "{whoami}");
        let pods = stdout_of(&k.run(["--context", "alice", "get", "pods"]).unwrap());
        assert!(pods.lines().any(|l| l.starts_with("demo ")), "{pods}");
        let carol = stdout_of(
            &k.run(["--context", "bob", "--as=carol", "auth", "whoami"])
                .unwrap(),
        );
        assert!(
            carol
                .lines()
                .any(|l| l.starts_with("Username") && l.trim_end().ends_with("carol")),
            "{carol}"
        );
        let refused = k
            .run(["--context", "alice", "--as=carol", "get", "pods"])
            .unwrap();
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr)
                .contains("no role lets oidc:alice impersonate user carol"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }

    forged_tokens_are_refused(&demo);
    approval_as_printed(&demo);

    // The cluster's own audit log: the gateway identity impersonating alice, with the
    // initiator extra, and every auditID is a custody request id.
    let cluster = audit_lines(&demo.dir.path().join("demo/cluster/audit.log"));
    assert!(
        !cluster.iter().any(|e| e.to_string().contains("mallory")),
        "a forged token reached the cluster"
    );
    let gateway_events: Vec<_> = cluster
        .iter()
        .filter(|e| e["user"]["username"] == "system:serviceaccount:custody:gateway")
        .collect();
    assert!(!gateway_events.is_empty());
    let as_alice = gateway_events
        .iter()
        .find(|e| e["impersonatedUser"]["username"] == "oidc:alice")
        .expect("a request impersonating alice");
    assert_eq!(
        as_alice["impersonatedUser"]["extra"]["custody.dev/initiator"][0],
        "oidc:alice"
    );
    let as_carol = gateway_events
        .iter()
        .find(|e| e["impersonatedUser"]["username"] == "carol")
        .expect("bob's request as carol");
    assert_eq!(
        as_carol["impersonatedUser"]["extra"]["custody.dev/initiator"][0],
        "oidc:bob"
    );

    // custody's trail has the same request ids, and the denied request.
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["audit", "--json", "--limit", "1000", "--data-dir"])
        .arg(demo.dir.path().join("demo/data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trail: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for event in &gateway_events {
        let id = event["auditID"].as_str().unwrap();
        assert!(
            trail.iter().any(|t| t["id"] == id),
            "cluster auditID {id} is not a custody request id"
        );
    }
    assert!(trail.iter().any(|t| t["decision"] == "deny"
        && t["initiator"]["username"] == "oidc:alice"
        && t["reason"].as_str().is_some_and(|r| r.contains("carol"))));
    let bob_as_carol = trail
        .iter()
        .find(|t| t["initiator"]["username"] == "oidc:bob" && t["effective"]["user"] == "carol")
        .expect("bob as carol in custody's trail");
    assert_eq!(bob_as_carol["decision"], "allow");
}

/// Hand-made tokens that must never authenticate: kubectl's --token overrides the exec plugin,
/// and custody answers 401 before anything reaches the cluster.
fn forged_tokens_are_refused(demo: &Demo) {
    let b64 =
        |v: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v);
    let claims = r#"{"iss":"https://127.0.0.1","sub":"mallory","aud":"custody","exp":9999999999}"#;
    for token in [
        format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(claims)),
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims)
        ),
        "not-a-jwt".to_owned(),
    ] {
        let out = kubectl(demo, "1.32")
            .run(["--context", "alice", "--token", &token, "get", "pods"])
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Unauthorized") || stderr.contains("logged in"),
            "{stderr}"
        );
    }
}

/// The printed policy walk-through: alice's secret values are masked and bob's are not; her exec
/// into kube-system is refused with how to ask; she asks with `custody request` (the gateway and
/// her token from the kubeconfig context), bob approves, and her exec works.
fn approval_as_printed(demo: &Demo) {
    let k = kubectl(demo, "1.32");
    let masked = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        custody::masking::PLACEHOLDER,
    );
    let alices = stdout_of(
        &k.run([
            "--context",
            "alice",
            "get",
            "secret",
            "db-credentials",
            "-o",
            "yaml",
        ])
        .unwrap(),
    );
    assert!(alices.contains(&masked), "{alices}");
    let bobs = stdout_of(
        &k.run([
            "--context",
            "bob",
            "get",
            "secret",
            "db-credentials",
            "-o",
            "yaml",
        ])
        .unwrap(),
    );
    assert!(!bobs.contains(&masked), "{bobs}");

    let exec = ["exec", "-n", "kube-system", "coredns-sim", "--", "hostname"];
    let refused = k
        .run([&["--context", "alice"][..], &exec].concat())
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("needs approval") && err.contains("ask with: custody request create"),
        "{err}"
    );

    let printed = |needle: &str| {
        let line = demo
            .printed
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("the demo printed no {needle:?}"));
        shell_words(line.split('#').next().unwrap())
    };
    let request = |args: Vec<String>| {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .env("KUBECONFIG", demo.dir.path().join("demo/kubeconfig"))
            .env_remove("CUSTODY_SERVER")
            .env_remove("CUSTODY_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = request(printed("request create --context alice"));
    let id = id.trim();
    let pending = request(printed("request list --context bob"));
    assert!(pending.contains(id), "{pending}");
    let approve: Vec<String> = printed("request approve --context bob")
        .into_iter()
        .map(|a| if a == "ID" { id.to_owned() } else { a })
        .collect();
    request(approve);
    let host = stdout_of(
        &k.run([&["--context", "alice"][..], &exec].concat())
            .unwrap(),
    );
    assert!(!host.trim().is_empty());
}

/// Splits a printed command line as a shell would (double quotes only).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            _ => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}
