//! Interactive streams through the gateway to kube-sim, recorded: `kubectl exec -it` driven
//! through a pseudo-terminal (typing, a resize, Ctrl-D) over WebSocket and SPDY, its recording
//! rendered by the real asciinema CLI, also from a 0x0 pseudo-terminal; `kubectl attach`;
//! kube-rs exec and port-forward.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "gateway_support/env.rs"]
mod env;
#[path = "gateway_support/recorded.rs"]
mod recorded;
#[path = "../recorder/tests/support/recording_support.rs"]
mod recording_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Collected, Kubectl};
use custody_recorder::model::{EventKind, SessionKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options, ok};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use recorded::{assert_one_forward, input_of, output_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(20);

fn recording_env() -> Env {
    Env::start(Options {
        recording: true,
        ..Options::default()
    })
}

fn recordings_dir(env: &Env) -> PathBuf {
    env.data_dir.join("recordings")
}

/// Waits until `count` recordings exist and are all sealed; returns them verified, oldest
/// first, with their paths.
fn sealed_recordings(env: &Env, count: usize) -> Vec<(PathBuf, Recording)> {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut recordings = Vec::new();
        if let Ok(dir) = std::fs::read_dir(recordings_dir(env)) {
            for entry in dir {
                let path = entry.unwrap().path();
                if let Ok(recording) = read_recording(&path, Some(&key)) {
                    recordings.push((path, recording));
                }
            }
        }
        let sealed = recordings
            .iter()
            .filter(|(_, r)| r.manifest.is_some())
            .count();
        if sealed >= count && recordings.len() == sealed {
            recordings.sort_by_key(|(_, r)| r.meta.started_at_us);
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

/// The only recording of `kind`, verified and undamaged, with its path.
fn recording_of(env: &Env, count: usize, kind: SessionKind) -> (PathBuf, Recording) {
    let mut found: Vec<_> = sealed_recordings(env, count)
        .into_iter()
        .filter(|(_, r)| r.meta.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} recording");
    let (path, recording) = found.remove(0);
    assert!(recording.damage.is_none(), "{:?}", recording.damage);
    assert!(recording.manifest.is_some());
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(recording.meta.effective.user, "alice");
    assert_eq!(recording.meta.cluster, "sim");
    assert_eq!(recording.meta.namespace, "default");
    (path, recording)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits for a child to exit on its own and returns its exit code.
fn wait_exit(child: &mut std::process::Child, what: &str) -> Option<i32> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kubectl exec -it demo -- sh` on a pseudo-terminal: type, resize, Ctrl-D; then the
/// recording holds the typing and the resize, and asciinema renders the session.
fn interactive_exec(k: &Kubectl, env: &Env) {
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
        if let Err(e) = screen.wait_for(needle, TIMEOUT) {
            let _ = child.kill();
            panic!("{e}");
        }
    };

    // The shell is up once a command's output comes back.
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    shown("ready-2");
    pty.write_all(b"echo typed-$((6*7))\r").unwrap();
    shown("typed-42");
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    pty.write_all(b"stty size\r").unwrap();
    shown("30 100");
    pty.write_all(&[0x04]).unwrap();
    let code = wait_exit(&mut child, "kubectl exec -it after Ctrl-D");
    assert_eq!(code, Some(0), "screen:\n{}", screen.text());

    let (path, recording) = recording_of(env, 1, SessionKind::Exec);
    assert!(recording.meta.tty, "the session was recorded without a tty");
    assert_eq!(recording.meta.pod, "demo");
    assert_eq!(recording.meta.command, ["sh"]);
    assert_eq!(recording.status, SessionStatus::Complete);
    let input = input_of(&recording);
    assert!(
        contains(&input, b"echo typed-$((6*7))\r"),
        "input: {:?}",
        String::from_utf8_lossy(&input)
    );
    assert!(contains(&input, &[0x04]), "Ctrl-D was not recorded");
    assert!(
        recording.events.iter().any(|e| e.kind
            == EventKind::Resize {
                cols: 100,
                rows: 30
            }),
        "no resize to 100x30: {:?}",
        recording
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Resize { .. }))
            .collect::<Vec<_>>()
    );
    let output = output_of(&recording);
    assert!(contains(&output, b"typed-42"));
    assert!(contains(&output, b"30 100"));

    // The decompressed recording is an asciicast the real asciinema renders.
    let cast = env.dir().join("interactive.cast");
    std::fs::write(&cast, recording_support::decompress(&path)).unwrap();
    let text = recording_support::asciinema_screen(&cast);
    assert!(
        text.contains("echo typed-$((6*7))"),
        "asciinema text:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_end() == "typed-42"),
        "asciinema text:\n{text}"
    );
}

#[test]
fn kubectl_1_32_websocket_interactive_exec_is_recorded() {
    let env = recording_env();
    interactive_exec(&env.kubectl("1.32"), &env);
}

#[test]
fn kubectl_1_32_spdy_interactive_exec_is_recorded() {
    let env = recording_env();
    let k = env
        .kubectl("1.32")
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    interactive_exec(&k, &env);
}

#[test]
fn kubectl_1_28_spdy_interactive_exec_is_recorded() {
    let env = recording_env();
    interactive_exec(&env.kubectl("1.28"), &env);
}

/// `kubectl exec -it demo -- sh` from a pseudo-terminal of 0x0 (CI jobs, `script`): kubectl
/// sends a resize to 0x0, which is not a size. The recording holds no size of 0 columns or rows
/// anywhere (header, `r` lines), names the request in a marker, plays in custody's player at the
/// header's 80x24 with the output on screen, and converts with the real asciinema 3, both the
/// file itself and its `cast` export.
fn exec_from_a_0x0_terminal(k: &Kubectl, env: &Env) {
    let (mut pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(0, 0)).unwrap();
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
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    if let Err(e) = screen.wait_for("ready-2", TIMEOUT) {
        let _ = child.kill();
        panic!("{e}");
    }
    pty.write_all(&[0x04]).unwrap();
    let code = wait_exit(
        &mut child,
        "kubectl exec -it from a 0x0 terminal after Ctrl-D",
    );
    assert_eq!(code, Some(0), "screen:\n{}", screen.text());

    // The output line (the prompt may come before it, depending on timing), not the typed one.
    let output_line = |l: &str| l.trim_end().ends_with("ready-2") && !l.contains("echo");

    let (path, recording) = recording_of(env, 1, SessionKind::Exec);
    assert!(recording.meta.tty, "the session was recorded without a tty");
    let resizes: Vec<&EventKind> = recording
        .events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::Resize { .. }))
        .collect();
    assert!(
        resizes
            .iter()
            .all(|k| matches!(k, EventKind::Resize { cols, rows } if *cols > 0 && *rows > 0)),
        "a size of 0 was recorded: {resizes:?}"
    );
    assert!(
        recording.events.iter().any(|e| matches!(
            &e.kind,
            EventKind::Marker(text)
                if text.starts_with(custody::stream::decode::RESIZE_IGNORED_PREFIX)
                    && text.contains(r#"{"Width":0,"Height":0}"#)
        )),
        "the 0x0 request is not in the recording: {:?}",
        recording.events
    );

    // The file itself, decompressed: asciicast v3 whose sizes are all real.
    let raw = recording_support::decompress(&path);
    let text = String::from_utf8(raw.clone()).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert!(header["term"]["cols"].as_u64().unwrap() > 0, "{header}");
    assert!(header["term"]["rows"].as_u64().unwrap() > 0, "{header}");
    for line in lines {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        if line[1] == "r" {
            let size = line[2].as_str().unwrap();
            let (cols, rows) = size.split_once('x').unwrap();
            let (cols, rows): (u16, u16) = (cols.parse().unwrap(), rows.parse().unwrap());
            assert!(cols > 0 && rows > 0, "resize line {line}");
        }
    }

    // custody's player: the header's size, the output on screen.
    let session = custody_replay::Session::from_recording(
        &recording,
        custody_replay::KeyOrigin::NamedInFile,
        None,
    )
    .unwrap();
    let mut player =
        custody_replay::Player::new(session, &custody_replay::PlayOptions::default()).unwrap();
    let end = player.end_us();
    player.seek_to(end).unwrap();
    let (cols, rows) = player.screen().size();
    assert!(cols > 0 && rows > 0, "the player's screen is {cols}x{rows}");
    assert!(
        player.screen().lines().iter().any(|l| output_line(l)),
        "the player shows: {:?}",
        player.screen().lines()
    );

    // The real asciinema 3 converts the file and its `cast` export.
    let cast = env.dir().join("zero.cast");
    std::fs::write(&cast, &raw).unwrap();
    let shown = recording_support::asciinema_screen(&cast);
    assert!(shown.lines().any(output_line), "asciinema text:\n{shown}");
    let export = env.dir().join("zero-export.cast");
    std::fs::write(&export, custody_recorder::export::cast(&recording).unwrap()).unwrap();
    let shown = recording_support::asciinema_screen(&export);
    assert!(
        shown.lines().any(output_line),
        "asciinema text of the export:\n{shown}"
    );
}

#[test]
fn kubectl_1_32_websocket_exec_from_a_0x0_terminal_records_no_0x0_size() {
    let env = recording_env();
    exec_from_a_0x0_terminal(&env.kubectl("1.32"), &env);
}

#[test]
fn kubectl_1_28_spdy_exec_from_a_0x0_terminal_records_no_0x0_size() {
    let env = recording_env();
    exec_from_a_0x0_terminal(&env.kubectl("1.28"), &env);
}

/// `kubectl attach -i` to a pod made through the gateway whose main process echoes its stdin.
fn attach(k: &Kubectl, env: &Env) {
    ok(&k
        .run([
            "--context", "alice", "run", "attachee", "--image=kube-sim/shell", "--restart=Never",
            "-i=false", "--overrides",
            r#"{"spec":{"containers":[{"name":"attachee","image":"kube-sim/shell","stdin":true,"command":["sh","-c","echo started; while read l; do echo got:$l; done"]}]}}"#,
        ])
        .unwrap());
    ok(&k
        .run([
            "--context",
            "alice",
            "wait",
            "--for=condition=Ready",
            "pod/attachee",
            "--timeout=20s",
        ])
        .unwrap());
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
    let deadline = Instant::now() + TIMEOUT;
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

    let (_, recording) = recording_of(env, 1, SessionKind::Attach);
    assert_eq!(recording.meta.pod, "attachee");
    assert!(recording.meta.command.is_empty());
    assert!(contains(&input_of(&recording), b"hello-"));
    let output = output_of(&recording);
    assert!(
        contains(&output, b"got:hello-"),
        "recorded output: {:?}",
        String::from_utf8_lossy(&output)
    );
}

#[test]
fn kubectl_1_32_websocket_attach_is_recorded() {
    let env = recording_env();
    attach(&env.kubectl("1.32"), &env);
}

#[test]
fn kubectl_1_32_spdy_attach_is_recorded() {
    let env = recording_env();
    let k = env
        .kubectl("1.32")
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    attach(&k, &env);
}

#[test]
fn kubectl_1_28_spdy_attach_is_recorded() {
    let env = recording_env();
    attach(&env.kubectl("1.28"), &env);
}

/// A kube-rs client through the gateway, as alice.
async fn kube_client(env: &Env) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let options = KubeConfigOptions {
        context: Some("alice".into()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[test]
fn kube_rs_exec_is_recorded() {
    let env = recording_env();
    let (out, status) = env.rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(kube_client(&env).await, "default");
        let mut process = pods
            .exec(
                "demo",
                vec!["sh", "-c", "echo hello; exit 4"],
                &AttachParams::default().stderr(true),
            )
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(TIMEOUT, process.stdout().unwrap().read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        let status = process.take_status().unwrap().await.unwrap();
        process.join().await.unwrap();
        (out, status)
    });
    assert_eq!(out, "hello\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("4"))
    );

    let (_, recording) = recording_of(&env, 1, SessionKind::Exec);
    assert_eq!(recording.meta.pod, "demo");
    assert_eq!(recording.meta.command, ["sh", "-c", "echo hello; exit 4"]);
    assert_eq!(output_of(&recording), b"hello\n");
    let exits: Vec<_> = recording
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Exit { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(exits, [Some(4)]);
}

#[test]
fn kube_rs_attach_is_recorded() {
    let env = recording_env();
    let got = env.rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(kube_client(&env).await, "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "attachee"},
            "spec": {"containers": [{"name": "main", "image": "kube-sim/shell", "stdin": true,
                     "command": ["sh", "-c", "while read l; do echo got:$l; done"]}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let phase = pods
                .get("attachee")
                .await
                .unwrap()
                .status
                .and_then(|s| s.phase);
            if phase.as_deref() == Some("Running") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "pod never ran");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut attached = pods
            .attach(
                "attachee",
                &AttachParams::default().stdin(true).stderr(false),
            )
            .await
            .unwrap();
        let mut stdin = attached.stdin().unwrap();
        let mut stdout = attached.stdout().unwrap();
        stdin.write_all(b"ping\n").await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(TIMEOUT, stdout.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.truncate(n);
        drop(stdin);
        drop(stdout);
        attached.abort();
        buf
    });
    assert_eq!(got, b"got:ping\n");

    let (_, recording) = recording_of(&env, 1, SessionKind::Attach);
    assert_eq!(recording.meta.pod, "attachee");
    assert_eq!(input_of(&recording), b"ping\n");
    assert_eq!(output_of(&recording), b"got:ping\n");
}

#[test]
fn kube_rs_port_forward_is_recorded() {
    let env = recording_env();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let back = env.rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(kube_client(&env).await, "default");
        let mut forwarder = pods.portforward("demo", &[8080]).await.unwrap();
        let mut stream = forwarder.take_stream(8080).unwrap();
        let (mut reader, mut writer) = tokio::io::split(&mut stream);
        let send = async {
            writer.write_all(&data).await.unwrap();
        };
        let mut back = vec![0u8; data.len()];
        let receive = async {
            tokio::time::timeout(TIMEOUT, reader.read_exact(&mut back))
                .await
                .unwrap()
                .unwrap();
        };
        tokio::join!(send, receive);
        drop(stream);
        // Let the connection's close reach the pod side before the forwarder goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        forwarder.abort();
        back
    });
    assert!(back == data, "echoed bytes differ");

    let (_, recording) = recording_of(&env, 1, SessionKind::PortForward);
    assert_eq!(recording.meta.pod, "demo");
    assert_one_forward(&recording, 8080, u64::try_from(data.len()).unwrap());
}
