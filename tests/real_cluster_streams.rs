//! Streaming through custody to a real kube-apiserver (see `docs/real-cluster.md`), with
//! kube-sim as the cluster's kubelet: kubectl exec (1.32 over WebSocket, which the API server
//! translates to SPDY for the kubelet; 1.33; 1.32 forced to SPDY; 1.28 over SPDY) with output,
//! exit codes and piped stdin, logs, port-forward and attach; every session recorded, the
//! recording verified against what kubectl printed, and the API server's audit log showing the
//! exec as custody's identity impersonating alice with custody's extras. Also issue 15's legacy
//! WebSocket port-forward attack (`ports` repeated and as comma lists), which the API server
//! proxies to the kubelet: every channel pair it opens is recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "stream_legacy_portforward/attack.rs"]
mod attack;
#[path = "gateway_support/env.rs"]
mod env;
#[path = "support/real_cluster.rs"]
mod real_cluster;
#[path = "gateway_support/recorded.rs"]
mod recorded;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Collected, Kubectl};
use custody_fixtures::real_cluster::CUSTODY_USER;
use custody_recorder::model::{EventKind, SessionKind, SessionStatus};
use env::ok;
use real_cluster::{Stack, check_identity};
use recorded::{assert_one_forward, exits_of, input_of, output_of};
use serde_json::json;

/// A few MiB of bytes that are not all printable.
fn payload() -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..3 * 1024 * 1024 + 17)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// exec with output, an exit code and a few MiB of piped stdin; the three sessions recorded
/// after the `before` earlier ones, each matching what kubectl printed.
fn exec(stack: &Stack, k: &Kubectl, before: usize) {
    let hi = k
        .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
        .unwrap();
    assert!(
        hi.status.success(),
        "{}\n--- kube-apiserver ---\n{}",
        String::from_utf8_lossy(&hi.stderr),
        stack.cluster.apiserver_log_tail()
    );
    assert_eq!(String::from_utf8_lossy(&hi.stdout), "hi\n");

    let exit = k
        .run([
            "--context",
            "alice",
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .unwrap();
    assert_eq!(
        exit.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&exit.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&exit.stdout), "out\n");
    assert!(String::from_utf8_lossy(&exit.stderr).starts_with("err\n"));

    let data = payload();
    let mut child = k
        .command(["--context", "alice", "exec", "-i", "demo", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == data,
        "cat returned {} bytes",
        out.stdout.len()
    );

    let recordings = stack.sealed_recordings(before + 3);
    let recordings = &recordings[before..];
    assert_eq!(recordings.len(), 3, "one recording per exec");
    for r in recordings {
        check_identity(r, SessionKind::Exec, "demo");
        assert_eq!(r.status, SessionStatus::Complete);
    }
    assert_eq!(recordings[0].meta.command, ["echo", "hi"]);
    assert_eq!(output_of(&recordings[0]), b"hi\n");
    assert_eq!(exits_of(&recordings[0]), [Some(0)]);
    assert_eq!(exits_of(&recordings[1]), [Some(3)]);
    assert_eq!(recordings[2].meta.command, ["cat"]);
    assert!(output_of(&recordings[2]) == data, "recorded output differs");
    assert!(input_of(&recordings[2]) == data, "recorded input differs");
}

/// The API server's audit log holds alice's execs as custody's identity impersonating her,
/// with custody's extras, each under the request id custody recorded.
fn assert_execs_audited(stack: &Stack, count: usize) {
    let custody_ids: Vec<String> = stack
        .env
        .custody_audit()
        .iter()
        .filter(|e| e["stage"] == "decision" && e["decision"] == "allow")
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let execs = loop {
        let execs: Vec<serde_json::Value> = stack
            .cluster
            .audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| e["objectRef"]["subresource"] == "exec" && e["stage"] == "ResponseComplete")
            .collect();
        if execs.len() >= count || Instant::now() >= deadline {
            break execs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(execs.len(), count, "{execs:#?}");
    for e in &execs {
        assert_eq!(e["user"]["username"], CUSTODY_USER, "{e}");
        assert_eq!(e["impersonatedUser"]["username"], "alice", "{e}");
        let extra = &e["impersonatedUser"]["extra"];
        assert_eq!(extra["custody.dev/initiator"], json!(["alice"]), "{e}");
        let id = extra["custody.dev/request-id"][0].as_str().unwrap();
        assert_eq!(e["auditID"], id, "{e}");
        assert_eq!(e["objectRef"]["name"], "demo", "{e}");
        assert_eq!(e["objectRef"]["namespace"], "default", "{e}");
        if !custody_ids.is_empty() {
            assert!(
                custody_ids.iter().any(|c| c == id),
                "{id} not in custody's audit"
            );
        }
    }
}

#[test]
fn kubectl_exec_through_a_real_kube_apiserver_to_kube_sim_as_kubelet_is_recorded() {
    let stack = Stack::start();
    let variants: [(&str, Kubectl); 4] = [
        ("1.32 WebSocket", stack.env.kubectl("1.32")),
        ("1.33 WebSocket", stack.env.kubectl("1.33")),
        (
            "1.32 SPDY",
            stack
                .env
                .kubectl("1.32")
                .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
        ),
        ("1.28 SPDY", stack.env.kubectl("1.28")),
    ];
    for (i, (name, k)) in variants.iter().enumerate() {
        let started = Instant::now();
        exec(&stack, k, 3 * i);
        eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    }
    assert_execs_audited(&stack, 12);
    exec_needs_create(&stack);
}

/// Kubernetes 1.35 and later (`AuthorizePodWebsocketUpgradeCreatePermission`) also require
/// `create` on `pods/exec` for the WebSocket `GET`; `get` alone was enough up to 1.34, and
/// is in kube-sim, which answers as 1.32.
fn exec_needs_create(stack: &Stack) {
    stack
        .cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "exec-get-only"},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get"]}
                ]
            }),
        )
        .unwrap();
    stack
        .cluster
        .bind_cluster_role("bob-exec-get", "exec-get-only", "bob", ("get", "pods/exec"))
        .unwrap();
    let refused = stack
        .env
        .kubectl("1.32")
        .run(["--context", "bob", "exec", "demo", "--", "echo", "hi"])
        .unwrap();
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("forbidden"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = stack.cluster.audit_events().unwrap();
        let bob_get = events.iter().find(|e| {
            e["objectRef"]["subresource"] == "exec"
                && e["impersonatedUser"]["username"] == "bob"
                && e["verb"] == "get"
                && e["stage"] == "ResponseComplete"
        });
        if let Some(e) = bob_get {
            // RBAC allowed the `get`; the exec handler's own `create` check refused it.
            assert_eq!(
                e["annotations"]["authorization.k8s.io/decision"], "allow",
                "{e}"
            );
            assert_eq!(e["responseStatus"]["code"], 403, "{e}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audited WebSocket exec by bob"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PF_BYTES: usize = 100_000;

/// `port-forward pod/demo :8080` to kube-sim's echo server: bytes go there and come back.
fn port_forward(k: &Kubectl) {
    custody_fixtures::harness::port_forward_echo(k, Some("alice"), PF_BYTES).unwrap();
}

/// `kubectl logs` of a pod that prints, pauses and prints more: the backlog, `--tail`,
/// `--timestamps`, and `-f` following until the process ends.
fn logs(stack: &Stack, k: &Kubectl) {
    let kubelet = stack.kubelet.as_ref().unwrap();
    stack
        .env
        .rt
        .block_on(kubelet.create_pod(json!({
            "metadata": {"name": "logger", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "logger", "image": "kube-sim/shell",
                "command": ["sh", "-c", "echo first; sleep 2; for i in 1 2 3; do echo line-$i; sleep 0.3; done"],
            }]},
        })))
        .unwrap();
    let followed = ok(&k
        .run(["--context", "alice", "logs", "-f", "logger"])
        .unwrap());
    assert_eq!(followed, "first\nline-1\nline-2\nline-3\n");
    let tail = ok(&k
        .run(["--context", "alice", "logs", "--tail=1", "logger"])
        .unwrap());
    assert_eq!(tail, "line-3\n");
    let stamped = ok(&k
        .run(["--context", "alice", "logs", "--timestamps", "logger"])
        .unwrap());
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 4, "{stamped}");
    for (line, text) in lines.iter().zip(["first", "line-1", "line-2", "line-3"]) {
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{line}"
        );
        assert_eq!(rest, text);
    }
}

/// `kubectl attach -i` to a pod whose main process echoes its stdin; the session recorded.
fn attach(stack: &Stack, k: &Kubectl, before: usize) {
    let kubelet = stack.kubelet.as_ref().unwrap();
    stack
        .env
        .rt
        .block_on(kubelet.create_pod(json!({
            "metadata": {"name": "attachee", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "attachee", "image": "kube-sim/shell", "stdin": true,
                "command": ["sh", "-c", "echo started; while read l; do echo got:$l; done"],
            }]},
        })))
        .unwrap();
    let mut child = k
        .command(["--context", "alice", "attach", "-i", "attachee"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = Collected::spawn(child.stdout.take().unwrap());
    let stderr = Collected::spawn(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    // Attach only sees output from the moment it joins: keep typing until a reply shows.
    while !stdout.text().contains("got:hello-") {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "attach never relayed: {}\nstderr: {}",
                stdout.text(),
                stderr.text()
            );
        }
        writeln!(stdin, "hello-{round}").unwrap();
        round += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Let the reply's frame be recorded before kubectl goes.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let recordings = stack.sealed_recordings(before + 1);
    let recording = &recordings[before];
    check_identity(recording, SessionKind::Attach, "attachee");
    assert!(recording.meta.command.is_empty());
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&input_of(recording), b"hello-"));
    let output = output_of(recording);
    assert!(
        contains(&output, b"got:hello-"),
        "recorded output: {:?}",
        String::from_utf8_lossy(&output)
    );
}

/// `kubectl exec -it demo -- sh` on a pseudo-terminal: type, resize, Ctrl-D; the recording
/// (after `before` earlier ones) holds the typing, the resize and the output.
fn interactive_exec(stack: &Stack, k: &Kubectl, before: usize) {
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
    let screen = Collected::spawn(read_side);
    let mut shown = |needle: &str| {
        if let Err(e) = screen.wait_for(needle, Duration::from_secs(20)) {
            let _ = child.kill();
            panic!("{e}");
        }
    };
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    shown("ready-2");
    pty.write_all(b"echo typed-$((6*7))\r").unwrap();
    shown("typed-42");
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    pty.write_all(b"stty size\r").unwrap();
    shown("30 100");
    pty.write_all(&[0x04]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kubectl exec -it did not end after Ctrl-D:\n{}",
                screen.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "screen:\n{}", screen.text());

    let recordings = stack.sealed_recordings(before + 1);
    let recording = &recordings[before];
    check_identity(recording, SessionKind::Exec, "demo");
    assert!(recording.meta.tty, "the session was recorded without a tty");
    assert_eq!(recording.meta.command, ["sh"]);
    assert_eq!(recording.status, SessionStatus::Complete);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let input = input_of(recording);
    assert!(contains(&input, b"echo typed-$((6*7))\r"), "{input:?}");
    assert!(contains(&input, &[0x04]), "Ctrl-D was not recorded");
    assert!(
        recording.events.iter().any(|e| e.kind
            == EventKind::Resize {
                cols: 100,
                rows: 30
            }),
        "no resize to 100x30"
    );
    let output = output_of(recording);
    assert!(contains(&output, b"typed-42"));
    assert!(contains(&output, b"30 100"));
}

#[test]
fn kubectl_logs_port_forward_attach_and_a_terminal_through_a_real_kube_apiserver_to_kube_sim_as_kubelet()
 {
    let stack = Stack::start();
    let started = Instant::now();
    logs(&stack, &stack.env.kubectl("1.32"));
    eprintln!("logs: {:.1} s", started.elapsed().as_secs_f64());

    let variants: [(&str, Kubectl); 3] = [
        ("1.32 WebSocket tunnel", stack.env.kubectl("1.32")),
        (
            "1.32 SPDY",
            stack
                .env
                .kubectl("1.32")
                .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
        ),
        ("1.28 SPDY", stack.env.kubectl("1.28")),
    ];
    for (i, (name, k)) in variants.iter().enumerate() {
        let started = Instant::now();
        port_forward(k);
        let recordings = stack.sealed_recordings(i + 1);
        check_identity(&recordings[i], SessionKind::PortForward, "demo");
        assert_one_forward(&recordings[i], 8080, PF_BYTES as u64);
        eprintln!(
            "port-forward {name}: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let started = Instant::now();
    attach(&stack, &stack.env.kubectl("1.32"), variants.len());
    eprintln!("attach: {:.1} s", started.elapsed().as_secs_f64());

    let terminals: [(&str, Kubectl); 2] = [
        ("1.32 WebSocket", stack.env.kubectl("1.32")),
        ("1.28 SPDY", stack.env.kubectl("1.28")),
    ];
    for (i, (name, k)) in terminals.iter().enumerate() {
        let started = Instant::now();
        interactive_exec(&stack, k, variants.len() + 1 + i);
        eprintln!("exec -it {name}: {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// Issue 15's legacy WebSocket port-forward through custody to the real kube-apiserver, which
/// reads `ports=8080&ports=8080,8080` as three ports (apimachinery
/// `Convert_Slice_string_To_Slice_int32`) and proxies the `v4.channel.k8s.io` upgrade to its
/// kubelet (kube-sim) with `port=8080,8080,8080`: three channel pairs to the pod's echo server.
/// The bytes sent on channels 2 and 4 come back, and the recording holds all three connections
/// with exactly those bytes (today's main records connection 0 only).
#[test]
fn legacy_websocket_port_forward_with_repeated_and_listed_ports_through_a_real_kube_apiserver_records_every_connection()
 {
    let stack = Stack::start();
    let outcome = stack.env.rt.block_on(attack::run(
        stack.env.gateway_addr,
        &stack.env.ca_pem,
        "/clusters/sim/api/v1/namespaces/default/pods/demo/portforward?ports=8080&ports=8080,8080",
        "alice-token",
        3,
        &[],
    ));
    let attack::Outcome::Ran { forwards, cut } = outcome else {
        panic!(
            "refused: {outcome:?}\n--- kube-apiserver ---\n{}",
            stack.cluster.apiserver_log_tail()
        );
    };
    assert!(!cut, "the session was cut: {forwards:?}");
    for (index, forward) in forwards.iter().enumerate() {
        assert_eq!(forward.port, Some(8080), "pair {index}");
        assert!(
            forward.received == forward.sent,
            "pair {index}: the echo differs"
        );
    }
    let recordings = stack.sealed_recordings(1);
    check_identity(&recordings[0], SessionKind::PortForward, "demo");
    attack::assert_recorded(&recordings[0], &forwards, 8080);
}
