//! The kubelet's legacy WebSocket port-forward (`v4.channel.k8s.io`) through custody to
//! kube-sim, driven by a raw WebSocket client as an attacker would: `ports` repeated and given
//! as comma lists (duplicates included) open one channel pair per listed port, and custody
//! records every one of them; a channel beyond those pairs ends the session; a `ports` value
//! custody cannot read, or more ports than channels, is refused before the cluster is asked;
//! the policy's port rules see every listed port.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "stream_legacy_portforward/attack.rs"]
mod attack;
#[path = "gateway_support/env.rs"]
mod env;

use std::time::{Duration, Instant};

use attack::Outcome;
use custody::policy::PolicyConfig;
use custody_recorder::model::{SessionKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options};

const FORWARD: &str = "/clusters/sim/api/v1/namespaces/default/pods/demo/portforward";

fn recording_env(policy: Option<&str>) -> Env {
    Env::start(Options {
        recording: true,
        policy: policy.map(|p| PolicyConfig::from_section(p).unwrap()),
        ..Options::default()
    })
}

/// Waits until `count` recordings exist and are all sealed; returns them verified, oldest
/// first.
fn sealed_recordings(env: &Env, count: usize) -> Vec<Recording> {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut recordings = Vec::new();
        if let Ok(dir) = std::fs::read_dir(env.data_dir.join("recordings")) {
            for entry in dir {
                if let Ok(recording) = read_recording(&entry.unwrap().path(), Some(&key)) {
                    recordings.push(recording);
                }
            }
        }
        let sealed = recordings.iter().filter(|r| r.manifest.is_some()).count();
        if sealed >= count && recordings.len() == sealed {
            recordings.sort_by_key(|r| r.meta.started_at_us);
            return recordings;
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings, {sealed} sealed, wanted {count}",
            recordings.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kube-sim's port-forward requests (its audit log), to show what reached the cluster.
fn sim_port_forwards(env: &Env) -> usize {
    env.sim_audit()
        .iter()
        .filter(|e| e["objectRef"]["subresource"] == "portforward")
        .count()
}

/// Waits until kube-sim has audited `count` port-forwards.
fn wait_sim_port_forwards(env: &Env, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim_port_forwards(env) < count {
        assert!(
            Instant::now() < deadline,
            "kube-sim audited no port-forward"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 15's attack: `?ports=8080&ports=8080,8080` opens three pairs to the pod's echo
/// server; the bytes sent on channels 2 and 4 come back, and the recording holds all three
/// connections with exactly those bytes (today's main records connection 0 only).
#[test]
fn repeated_and_listed_ports_are_each_a_recorded_connection() {
    let env = recording_env(None);
    let outcome = env.rt.block_on(attack::run(
        env.gateway_addr,
        &env.ca_pem,
        &format!("{FORWARD}?ports=8080&ports=8080,8080"),
        "alice-token",
        3,
        &[],
    ));
    let Outcome::Ran { forwards, cut } = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert!(!cut, "the session was cut: {forwards:?}");
    for (index, forward) in forwards.iter().enumerate() {
        assert_eq!(forward.port, Some(8080), "pair {index}");
        assert!(
            forward.received == forward.sent,
            "pair {index}: the echo differs"
        );
    }
    let recordings = sealed_recordings(&env, 1);
    let recording = &recordings[0];
    assert_eq!(recording.meta.kind, SessionKind::PortForward);
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(recording.meta.pod, "demo");
    attack::assert_recorded(recording, &forwards, 8080);
}

/// A message on a channel beyond the pairs `ports` implies (the kubelet drops it; custody cannot
/// place it in the recording) ends the session, recorded as a decode failure.
#[test]
fn a_channel_beyond_the_listed_ports_ends_the_session() {
    let env = recording_env(None);
    let outcome = env.rt.block_on(attack::run(
        env.gateway_addr,
        &env.ca_pem,
        &format!("{FORWARD}?ports=8080"),
        "alice-token",
        1,
        &[(2, b"unplaceable")],
    ));
    let Outcome::Ran { cut, .. } = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert!(cut, "the session went on after a message on channel 2");
    let recordings = sealed_recordings(&env, 1);
    assert_eq!(
        recordings[0].status,
        SessionStatus::Terminated {
            reason: "decode_failure".into()
        }
    );
}

/// `ports` custody cannot read as the API server and the kubelet do, or more ports than a
/// channel byte can address: refused with 400 before anything reaches the cluster.
#[test]
fn unreadable_ports_are_refused_before_the_cluster() {
    let env = recording_env(None);
    let many = vec!["8080"; 129].join(",");
    for query in [
        "ports=8080,x".to_owned(),
        "ports=8080,".to_owned(),
        "ports=0".to_owned(),
        "ports=%2B8080".to_owned(),
        format!("ports={many}"),
    ] {
        let outcome = env.rt.block_on(attack::run(
            env.gateway_addr,
            &env.ca_pem,
            &format!("{FORWARD}?{query}"),
            "alice-token",
            1,
            &[],
        ));
        let Outcome::Refused { status, body } = outcome else {
            panic!("{query}: not refused: {outcome:?}");
        };
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("port"), "{query}: {body}");
    }
    assert_eq!(
        sim_port_forwards(&env),
        0,
        "a refused request reached kube-sim"
    );
}

const ALICE_FORWARDS_8080: &str = r#"
[[policy.roles]]
name = "alice-forwards"
users = ["alice"]

[[policy.roles.rules]]
namespaces = ["default"]
actions = ["portforward"]
resources = ["pods"]
ports = [8080]
"#;

/// The policy's port rule sees every listed port: a role allowing 8080 is refused a port-forward
/// that lists 9090 in a comma list after a repeated 8080, and allowed one listing 8080 only.
#[test]
fn the_policy_sees_every_listed_port() {
    let env = recording_env(Some(ALICE_FORWARDS_8080));
    let outcome = env.rt.block_on(attack::run(
        env.gateway_addr,
        &env.ca_pem,
        &format!("{FORWARD}?ports=8080&ports=8080,9090"),
        "alice-token",
        1,
        &[],
    ));
    let Outcome::Refused { status, body } = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        sim_port_forwards(&env),
        0,
        "a refused request reached kube-sim"
    );
    let outcome = env.rt.block_on(attack::run(
        env.gateway_addr,
        &env.ca_pem,
        &format!("{FORWARD}?ports=8080,8080"),
        "alice-token",
        2,
        &[],
    ));
    let Outcome::Ran { forwards, cut } = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert!(!cut);
    attack::assert_recorded(&sealed_recordings(&env, 1)[0], &forwards, 8080);
    // The allowed one reached kube-sim, so the count above is no accident of the audit.
    wait_sim_port_forwards(&env, 1);
}
