//! Secret values are masked for people whose roles do not show them, in every form kubectl
//! reads them (`-o yaml`, `-o json`, the default table, `get -w`, the answers to `apply`),
//! shown to people whose roles do, never written back as the placeholder, and never found in
//! anything custody wrote (recordings, the audit trail and index, its log lines).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use custody::policy::PolicyConfig;
use custody_fixtures::harness::Collected;
use env::{Env, Options, ok};

const POLICY: &str = r#"
[[roles]]
name = "dev"
groups = ["dev"]

[[roles.rules]]
actions = ["*"]
resources = ["*"]
namespaces = ["default"]

[[roles]]
name = "sre"
groups = ["sre"]
show_secrets = true

[[roles.rules]]
actions = ["*"]
resources = ["*"]
"#;

/// The seeded Secret's password, and what alice and bob write in the test.
const SEEDED: &str = "s3cr3t-kube-sim";
const APPLIED: &str = "tr0ub4dor-applied";
const CHANGED: &str = "c0rrect-h0rse-changed";
const CREATED: &str = "hunter2-created";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn masked_b64() -> String {
    b64(custody::masking::PLACEHOLDER)
}

/// Every log line of the gateway, at debug level, for the leak check.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn start() -> (Env, Log) {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();
    let env = Env::start(Options {
        recording: true,
        policy: Some(toml::from_str::<PolicyConfig>(POLICY).unwrap()),
        ..Options::default()
    });
    (env, log)
}

fn get(env: &Env, who: &str, args: &[&str]) -> String {
    let mut all = vec!["--context", who, "get"];
    all.extend_from_slice(args);
    ok(&env.kubectl("1.32").run(all).unwrap())
}

fn apply(env: &Env, who: &str, manifest: &str) -> std::process::Output {
    let mut child = env
        .kubectl("1.32")
        .command(["--context", who, "apply", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn secret_manifest(name: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: Opaque\nstringData:\n  password: {password}\n"
    )
}

/// One test for the whole story, because the leak check at its end must see everything the
/// gateway wrote while the values passed through it.
#[test]
fn secret_values_are_masked_everywhere_for_alice_and_leak_nowhere() {
    let (env, log) = start();
    let masked = masked_b64();

    // Single object: YAML and JSON.
    let yaml = get(&env, "alice", &["secret", "db-credentials", "-o", "yaml"]);
    assert!(yaml.contains(&format!("password: {masked}")), "{yaml}");
    assert!(yaml.contains("custody.dev/masked"), "{yaml}");
    let json: serde_json::Value = serde_json::from_str(&get(
        &env,
        "alice",
        &["secret", "db-credentials", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(json["data"]["password"], masked.as_str());
    assert_eq!(
        json["data"]["username"],
        masked.as_str(),
        "every value, keys kept"
    );
    let real = get(&env, "bob", &["secret", "db-credentials", "-o", "yaml"]);
    assert!(
        real.contains(&format!("password: {}", b64(SEEDED))),
        "{real}"
    );

    // Lists and the default table.
    let list: serde_json::Value =
        serde_json::from_str(&get(&env, "alice", &["secrets", "-o", "json"])).unwrap();
    for item in list["items"].as_array().unwrap() {
        for value in item["data"].as_object().unwrap().values() {
            assert_eq!(value, masked.as_str(), "{item}");
        }
    }
    let table = get(&env, "alice", &["secrets"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("db-credentials") && l.contains("Opaque")),
        "{table}"
    );

    // A watch: alice sees bob's new Secret arrive, masked.
    let mut watch = env
        .kubectl("1.32")
        .command(["--context", "alice", "get", "secrets", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watched = Collected::spawn(watch.stdout.take().unwrap());
    let watch_err = Collected::spawn(watch.stderr.take().unwrap());
    watched
        .wait_for("db-credentials", Duration::from_secs(20))
        .map_err(|e| format!("{e}\n{}", watch_err.text()))
        .unwrap();
    // (`kubectl apply`: `kubectl create secret` sends protobuf, which kube-sim does not read.)
    let created = apply(&env, "bob", &secret_manifest("api-key", CREATED));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    watched
        .wait_for("api-key", Duration::from_secs(20))
        .map_err(|e| format!("{e}\n{}", watch_err.text()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = watched.text();
    assert!(seen.contains(&masked), "{seen}");
    for leaked in [SEEDED, CREATED] {
        assert!(
            !seen.contains(&b64(leaked)) && !seen.contains(leaked),
            "{seen}"
        );
    }

    // apply: create, then change; the answers are masked, the writes land.
    let created = apply(&env, "alice", &secret_manifest("app-token", APPLIED));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let changed = apply(&env, "alice", &secret_manifest("app-token", CHANGED));
    assert!(
        changed.status.success(),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(String::from_utf8_lossy(&changed.stdout).contains("configured"));
    let bobs = get(&env, "bob", &["secret", "app-token", "-o", "json"]);
    let bobs: serde_json::Value = serde_json::from_str(&bobs).unwrap();
    assert_eq!(bobs["data"]["password"], b64(CHANGED).as_str());
    let alices = get(&env, "alice", &["secret", "app-token", "-o", "json"]);
    assert!(
        !alices.contains(CHANGED) && !alices.contains(&b64(CHANGED)),
        "{alices}"
    );
    let annotation = serde_json::from_str::<serde_json::Value>(&alices).unwrap()["metadata"]
        ["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        annotation.contains(custody::masking::PLACEHOLDER),
        "{annotation}"
    );

    // Writing the masked values back is refused; the real values stay.
    let mut replace = env
        .kubectl("1.32")
        .command([
            "--context",
            "alice",
            "replace",
            "--validate=false",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    replace
        .stdin
        .take()
        .unwrap()
        .write_all(alices.as_bytes())
        .unwrap();
    let replaced = replace.wait_with_output().unwrap();
    assert!(!replaced.status.success());
    assert!(
        String::from_utf8_lossy(&replaced.stderr).contains("placeholder"),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let still: serde_json::Value =
        serde_json::from_str(&get(&env, "bob", &["secret", "app-token", "-o", "json"])).unwrap();
    assert_eq!(still["data"]["password"], b64(CHANGED).as_str());

    // A JSON Patch that reads stored values (copy, move, test) is refused before it reaches
    // the cluster, with what to do instead; add, replace and remove with alice's own values pass.
    for patch in [
        r#"[{"op":"add","path":"/metadata/annotations/a","value":"b"},{"op":"copy","from":"/data/password","path":"/metadata/annotations/leak"}]"#,
        r#"[{"op":"move","from":"/data/password","path":"/metadata/labels/leak"}]"#,
        r#"[{"op":"test","path":"/data/password","value":"eA=="}]"#,
    ] {
        let out = env
            .kubectl("1.32")
            .run([
                "--context",
                "alice",
                "patch",
                "secret",
                "db-credentials",
                "--type=json",
                "--dry-run=server",
                "-p",
                patch,
            ])
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{patch}");
        assert!(
            stderr.contains("Error from server (Forbidden)") && stderr.contains("--type=merge"),
            "{stderr}"
        );
    }
    let replaced_type = env
        .kubectl("1.32")
        .run([
            "--context",
            "alice",
            "patch",
            "secret",
            "db-credentials",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/type","value":"Opaque"}]"#,
            "-o",
            "json",
        ])
        .unwrap();
    let replaced_type: serde_json::Value = serde_json::from_str(&ok(&replaced_type)).unwrap();
    assert_eq!(replaced_type["type"], "Opaque");
    assert_eq!(replaced_type["data"]["password"], masked.as_str());

    // Nothing custody wrote holds a value, plain or base64: recordings, audit, index, logs.
    let mut needles: Vec<String> = Vec::new();
    for value in [SEEDED, APPLIED, CHANGED, CREATED] {
        needles.push(value.to_owned());
        needles.push(b64(value));
    }
    let mut scanned = 0;
    for (path, bytes) in env.written() {
        scanned += 1;
        for needle in &needles {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{path} holds {needle:?}"
            );
        }
    }
    assert!(
        scanned >= 3,
        "the audit file, the index and the key at least"
    );
    let lines = log.0.lock().unwrap().clone();
    assert!(!lines.is_empty(), "the gateway logged at debug level");
    for needle in &needles {
        assert!(
            !contains(&lines, needle.as_bytes()),
            "a log line holds {needle:?}"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
