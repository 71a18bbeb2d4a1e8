//! `custody demo --replicas 3` as a newcomer runs it: the printed `ready` line, the
//! kubeconfig at the balancer, `replicas.json`, a session through the balancer, and the
//! session of a replica killed as the hints say, sealed by another.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "test code: a failed step should fail the test loudly; the newcomer's steps in order"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Collected, Kubectl, kubectl_binary};

#[path = "support/demo.rs"]
mod support;

use support::Demo;

fn start_demo() -> Demo {
    support::start_demo(&["--replicas", "3"], Duration::from_secs(180))
}

#[test]
fn the_replicas_demo_serves_through_the_balancer_and_survives_a_killed_replica() {
    let demo = start_demo();
    let text = demo.printed.join("\n");
    assert!(text.contains("3 replicas behind HAProxy"), "{text}");
    assert!(
        text.contains("kill -9"),
        "the hints say how to kill a replica: {text}"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.dir.path().join("demo/replicas.json")).unwrap(),
    )
    .unwrap();
    let replicas = manifest["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3);
    assert_eq!(
        manifest["balancer"].as_str().unwrap(),
        demo.printed[0].trim_start_matches("ready ")
    );
    let home = demo.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        demo.dir.path().join("demo/kubeconfig"),
        home,
    );
    let out = k.run(["--context", "alice", "get", "pods"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A session through the balancer; the replica holding it is killed as the hints say.
    let mut session = k
        .command([
            "--context",
            "bob",
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "while true; do date; sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Collected::spawn(session.stdout.take().unwrap());
    let _stderr = Collected::spawn(session.stderr.take().unwrap());
    stdout.wait_for("UTC", Duration::from_secs(30)).unwrap();
    let data_dir = replicas[0]["data_dir"].as_str().unwrap();
    let live = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["sessions", "live", "--json", "--data-dir", data_dir])
        .output()
        .unwrap();
    let live: Vec<serde_json::Value> = serde_json::from_slice(&live.stdout).unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    let (id, holder) = (
        live[0]["id"].as_str().unwrap().to_owned(),
        live[0]["replica"].as_str().unwrap().to_owned(),
    );
    let pid = replicas
        .iter()
        .find(|r| r["id"] == holder.as_str())
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    while session.try_wait().unwrap().is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the client noticed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Any replica lists it sealed `interrupted` soon after, as bob (an auditor) sees it.
    let balancer = manifest["balancer"].as_str().unwrap();
    let credential = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["credential", "--server", balancer, "--profile", "bob"])
        .env("XDG_CONFIG_HOME", demo.dir.path().join("demo/config"))
        .output()
        .unwrap();
    assert!(credential.status.success(), "{credential:?}");
    let credential: serde_json::Value = serde_json::from_slice(&credential.stdout).unwrap();
    let token = credential["status"]["token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "sealed within 30 s of the kill");
        let listed = Command::new(env!("CARGO_BIN_EXE_custody"))
            .args([
                "sessions",
                "list",
                "--json",
                "--server",
                balancer,
                "--ca-file",
            ])
            .arg(demo.dir.path().join("demo/gateway-ca.crt"))
            .env("CUSTODY_TOKEN", &token)
            .output()
            .unwrap();
        let listed: Vec<serde_json::Value> =
            serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if listed
            .iter()
            .any(|s| s["id"] == id.as_str() && s["status"] == "interrupted")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
