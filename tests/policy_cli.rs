//! `custody policy test` as operators use it: the example policy of `docs/policy.md` explained
//! request by request, with the documented output and exit codes, from a policy-only file and
//! from a whole gateway configuration; a bad policy is refused with every problem.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use custody::policy::EXAMPLE_POLICY;

/// A gateway configuration without its policy; the files it names are never opened.
const GATEWAY: &str = r#"
data_dir = "/var/lib/custody"
[server]
listen = "127.0.0.1:8443"
tls_cert = "/etc/custody/tls.crt"
tls_key = "/etc/custody/tls.key"
[[clusters]]
name = "demo"
kubeconfig = "/etc/custody/demo.kubeconfig"
[[oidc]]
issuer = "https://idp.example.com"
client_id = "custody"
"#;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(args)
        .env_remove("CUSTODY_DATA_DIR")
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `custody policy test --config FILE` plus `args`.
fn test(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["policy", "test", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

const ALICE: &[&str] = &["--user", "oidc:alice", "--group", "dev"];
const BOB: &[&str] = &["--user", "oidc:bob", "--group", "sre"];

fn as_person(who: &[&str], rest: &[&str]) -> Vec<String> {
    who.iter().chain(rest).map(|s| (*s).to_owned()).collect()
}

fn decide(config: &Path, who: &[&str], rest: &[&str]) -> Output {
    let args = as_person(who, rest);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    test(config, &refs)
}

/// Decides on cluster `demo`.
fn on_demo(policy: &Path, who: &[&str], rest: &[&str]) -> Output {
    let mut args = vec!["--cluster", "demo"];
    args.extend_from_slice(rest);
    decide(policy, who, &args)
}

#[test]
fn the_example_policy_explained() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", EXAMPLE_POLICY);
    let on_demo = |who: &[&str], rest: &[&str]| on_demo(&policy, who, rest);

    let out = on_demo(ALICE, &["--", "get", "secrets"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "allow\nreason: role dev allows list secrets in namespace default of cluster demo\n\
         roles: dev\nallowed by: dev\nsecret values: masked\nrecording: strict\n"
    );
    let out = on_demo(BOB, &["--", "get", "secret/db-credentials"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("secret values: shown"),
        "{}",
        out.stdout
    );

    let out = on_demo(
        ALICE,
        &[
            "--namespace",
            "kube-system",
            "--",
            "exec",
            "pod/coredns-sim",
        ],
    );
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "needs-approval\nreason: exec pods/coredns-sim in namespace kube-system of cluster demo \
         needs approval (role dev); ask with: custody request create --cluster demo --namespace \
         kube-system --pod coredns-sim --reason \"...\"\nroles: dev\n"
    );
    assert_eq!(on_demo(ALICE, &["--", "exec", "pod/web"]).code, 0);
    assert_eq!(on_demo(ALICE, &["--", "debug", "pod/web"]).code, 0);
    assert_eq!(
        on_demo(ALICE, &["-n", "kube-system", "--", "debug", "po/web"]).code,
        4
    );
    let out = on_demo(ALICE, &["--", "portforward", "pod/web", "8080"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        on_demo(
            ALICE,
            &["-n", "kube-system", "--", "portforward", "pod/web", "8080"]
        )
        .code,
        3
    );
    assert_eq!(on_demo(ALICE, &["--", "delete", "pod/web"]).code, 3);
    assert_eq!(on_demo(BOB, &["--", "delete", "pod/web"]).code, 0);
    assert_eq!(
        on_demo(
            ALICE,
            &["--", "create", "selfsubjectreviews.authentication.k8s.io"]
        )
        .code,
        0
    );
    assert_eq!(on_demo(ALICE, &["--", "patch", "secret/db"]).code, 0);
    assert_eq!(
        on_demo(ALICE, &["-n", "prod", "--", "patch", "secret/db"]).code,
        3
    );

    // The kubelet behind nodes/NAME/proxy is `proxy`, not a read of nodes.
    let out = on_demo(ALICE, &["--json", "--", "get", "nodes/node-1/proxy"]);
    assert_eq!(out.code, 3);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(
        json["reason"],
        "no role lets oidc:alice proxy nodes/node-1 in cluster demo"
    );
    assert_eq!(json["roles"], serde_json::json!(["dev"]));
    assert_eq!(on_demo(ALICE, &["--", "get", "nodes/node-1"]).code, 0);
}

#[test]
fn impersonation_and_people_without_roles() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", EXAMPLE_POLICY);
    let on_demo = |who: &[&str], rest: &[&str]| on_demo(&policy, who, rest);

    // Impersonation: bob may act as carol, never with system:masters; alice may not at all.
    assert_eq!(
        on_demo(BOB, &["--as", "carol", "--", "get", "pods"]).code,
        0
    );
    assert_eq!(
        on_demo(
            BOB,
            &["--as", "carol", "--as-group", "dev", "--", "get", "pods"]
        )
        .code,
        0
    );
    let out = on_demo(
        BOB,
        &[
            "--as",
            "carol",
            "--as-group",
            "system:masters",
            "--",
            "get",
            "pods",
        ],
    );
    assert_eq!(out.code, 3);
    assert!(out.stdout.contains("impersonate"), "{}", out.stdout);
    assert_eq!(
        on_demo(ALICE, &["--as", "carol", "--", "get", "pods"]).code,
        3
    );

    // Nobody's roles: denied, and the output says no role was consulted.
    let out = decide(&policy, &["--user", "oidc:mallory"], &["--", "get", "pods"]);
    assert_eq!(out.code, 3);
    assert!(out.stdout.contains("roles: none"), "{}", out.stdout);
}

#[test]
fn a_gateway_configuration_works_too_and_names_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "custody.toml",
        &format!("{GATEWAY}\n{EXAMPLE_POLICY}"),
    );
    let out = decide(&config, ALICE, &["--", "exec", "pod/web"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("of cluster demo"), "{}", out.stdout);

    let check = run(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("policy: 2 roles"), "{}", check.stdout);
    assert!(
        check.stdout.contains("role sre: group sre"),
        "{}",
        check.stdout
    );

    let without = write(dir.path(), "no-policy.toml", GATEWAY);
    let out = decide(&without, ALICE, &["--", "get", "pods"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no [policy] section"), "{}", out.stderr);
}

#[test]
fn a_bad_policy_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        r#"[policy]
[[policy.roles]]
name = "ops"
groups = ["ops"]
[[policy.roles.rules]]
actions = ["port-forward"]
resources = ["pods"]
[[policy.roles.impersonate]]
users = ["*"]
groups = ["system:masters"]
"#,
    );
    let out = decide(&bad, ALICE, &["--", "get", "pods"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("\"port-forward\""), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("\"system:masters\" hands out a system: identity"),
        "{}",
        out.stderr
    );

    // In a gateway configuration, impersonation rules live in the policy.
    let both = write(
        dir.path(),
        "both.toml",
        &format!(
            "{GATEWAY}\n[[impersonation.allow]]\nusers = [\"oidc:bob\"]\ntargets_users = [\"*\"]\n\n{EXAMPLE_POLICY}"
        ),
    );
    for out in [
        decide(&both, ALICE, &["--", "get", "pods"]),
        run(&["config", "check", both.to_str().unwrap()]),
    ] {
        assert_eq!(out.code, 1);
        assert!(
            out.stderr
                .contains("impersonation rules move into policy roles"),
            "{}",
            out.stderr
        );
    }

    let policy = write(dir.path(), "policy.toml", EXAMPLE_POLICY);
    for request in [
        &["--", "frobnicate", "pods"][..],
        &["--", "exec", "pods"][..],
        &["-n", "a/b", "--", "get", "pods"][..],
    ] {
        let out = decide(&policy, ALICE, request);
        assert_eq!(out.code, 1, "{request:?}: {}", out.stdout);
        assert!(out.stderr.starts_with("custody: "), "{}", out.stderr);
    }
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let out = run(&["policy", "test", "--help"]);
    assert_eq!(out.code, 0);
    for needle in [
        "0 allow, 3 deny, 4 needs approval, 1 error",
        "-- exec pod/coredns-sim",
        "--json",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {}", out.stdout);
    }
}
