//! Other clients than kubectl's streams through custody to a real kube-apiserver (see
//! `docs/real-cluster.md`), with kube-sim as the cluster's kubelet: `kubectl get pods -w`
//! (1.32 and 1.33) printing each change as it happens, and kube-rs listing, watching, and
//! streaming (exec, attach, port-forward), each session recorded under the kube-rs user.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;
#[path = "support/real_cluster.rs"]
mod real_cluster;
#[path = "gateway_support/recorded.rs"]
mod recorded;

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Collected, Kubectl};
use custody_fixtures::real_cluster::{CUSTODY_USER, RealCluster};
use custody_recorder::model::{SessionKind, SessionStatus};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use real_cluster::{Stack, check_identity};
use recorded::{assert_one_forward, exits_of, input_of, output_of};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A pod for the admin to create, change and delete. It names no node, so nothing runs it and
/// the API server deletes it at once.
fn unscheduled_pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "kube-sim/shell"}]},
    })
}

/// The admin's three changes to `name`: created, labelled `step=two`, deleted.
fn create_pod(cluster: &RealCluster, name: &str) {
    cluster
        .create("/api/v1/namespaces/default/pods", &unscheduled_pod(name))
        .unwrap();
}

fn label_pod(cluster: &RealCluster, name: &str) {
    let response = cluster
        .admin_client()
        .request_typed(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            "application/merge-patch+json",
            Some(&json!({"metadata": {"labels": {"step": "two"}}})),
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

fn delete_pod(cluster: &RealCluster, name: &str) {
    let response = cluster
        .admin_request(
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Waits until kubectl's watch printed a row for `event` on `pod` with a column `column`;
/// returns how long that took.
fn wait_for_row(
    out: &Collected,
    err: &Collected,
    event: &str,
    pod: &str,
    column: &str,
) -> Duration {
    let started = Instant::now();
    loop {
        let text = out.text();
        let shown = text.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first() == Some(&event)
                && fields.get(1) == Some(&pod)
                && fields.contains(&column)
        });
        if shown {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no {event} row for {pod} with {column}:\n{text}\nstderr: {}",
            err.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kubectl get pods -w` as alice: each of the admin's changes shows as a row before the next
/// change is made.
fn kubectl_watch(stack: &Stack, k: &Kubectl, pod: &str) {
    let mut child = k
        .command([
            "--context",
            "alice",
            "get",
            "pods",
            "-w",
            "--output-watch-events",
            "-L",
            "step",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Collected::spawn(child.stdout.take().unwrap());
    let err = Collected::spawn(child.stderr.take().unwrap());
    // The list comes first (the seeded pod), then the watch.
    out.wait_for("demo", TIMEOUT)
        .map_err(|e| format!("{e}\nstderr: {}", err.text()))
        .unwrap();
    // kubectl starts its watch right after printing the list; give the request a moment to
    // reach the API server so the creation is a watch event, not part of the list.
    std::thread::sleep(Duration::from_millis(500));

    create_pod(&stack.cluster, pod);
    let added = wait_for_row(&out, &err, "ADDED", pod, "Pending");
    label_pod(&stack.cluster, pod);
    let modified = wait_for_row(&out, &err, "MODIFIED", pod, "two");
    delete_pod(&stack.cluster, pod);
    let deleted = wait_for_row(&out, &err, "DELETED", pod, "two");
    eprintln!(
        "  rows shown after {} / {} / {} ms",
        added.as_millis(),
        modified.as_millis(),
        deleted.as_millis()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the watch ended early: {}",
        err.text()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits until the API server logged `count` watches of pods by custody impersonating alice,
/// and checks each against custody's audit.
fn assert_watches_audited(stack: &Stack, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    let watches = loop {
        let mut watches: Vec<serde_json::Value> = stack
            .cluster
            .audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| {
                e["verb"] == "watch"
                    && e["objectRef"]["resource"] == "pods"
                    && e["user"]["username"] == CUSTODY_USER
            })
            .collect();
        // A watch is logged when it starts and again when it ends: one per audit id.
        watches.sort_by_key(|e| e["auditID"].as_str().unwrap_or_default().to_owned());
        watches.dedup_by(|a, b| a["auditID"] == b["auditID"]);
        if watches.len() >= count || Instant::now() >= deadline {
            break watches;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(watches.len(), count, "{watches:#?}");
    let custody = stack.env.custody_audit();
    for e in &watches {
        assert_eq!(e["impersonatedUser"]["username"], "alice", "{e}");
        let extra = &e["impersonatedUser"]["extra"];
        assert_eq!(extra["custody.dev/initiator"], json!(["alice"]), "{e}");
        let id = e["auditID"].as_str().unwrap();
        assert_eq!(extra["custody.dev/request-id"], json!([id]), "{e}");
        let ours = custody
            .iter()
            .find(|c| c["id"] == id && c["stage"] == "decision")
            .unwrap_or_else(|| panic!("the watch {id} is not in custody's audit: {custody:#?}"));
        assert_eq!(ours["decision"], "allow", "{ours}");
        assert_eq!(ours["request"]["verb"], "watch", "{ours}");
        assert_eq!(ours["request"]["resource"], "pods", "{ours}");
        assert_eq!(ours["initiator"]["username"], "alice", "{ours}");
    }
}

#[test]
fn kubectl_get_pods_watch_through_a_real_kube_apiserver_prints_each_change_as_it_happens() {
    let stack = Stack::start();
    let variants: [(&str, Kubectl); 2] = [
        ("1.32", stack.env.kubectl("1.32")),
        ("1.33", stack.env.kubectl("1.33")),
    ];
    for (minor, k) in &variants {
        let started = Instant::now();
        kubectl_watch(&stack, k, &format!("watched-{}", minor.replace('.', "-")));
        eprintln!(
            "get pods -w {minor}: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    assert_watches_audited(&stack, variants.len());
}

/// A kube-rs client through custody as alice: custody's URL and CA, alice's bearer token.
async fn kube_client(stack: &Stack) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&stack.env.kubeconfig).unwrap();
    let options = KubeConfigOptions {
        context: Some("alice".into()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Lists the default namespace, then watches it while the admin creates, labels and deletes
/// a pod: each event arrives before the next change is made.
fn kube_rs_list_and_watch(stack: &Stack, pods: &Api<Pod>) {
    let (names, version) = stack.env.rt.block_on(async {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let names: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (names, list.metadata.resource_version.unwrap())
    });
    assert_eq!(names, ["demo"]);

    let (tx, rx) = mpsc::channel();
    let watching = {
        let pods = pods.clone();
        stack.env.rt.spawn(async move {
            let mut events = pods
                .watch(&WatchParams::default().timeout(60), &version)
                .await
                .unwrap()
                .boxed();
            while let Some(event) = events.next().await {
                if tx.send(event.unwrap()).is_err() {
                    break;
                }
            }
        })
    };
    // The next event; when waiting for the deletion, the API server's update setting the
    // deletion timestamp may come first.
    let next = |what: &str| -> (String, Pod) {
        loop {
            let event = rx
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("no {what} event: {e}"));
            let (kind, pod) = match event {
                WatchEvent::Added(p) => ("added", p),
                WatchEvent::Modified(p) => ("modified", p),
                WatchEvent::Deleted(p) => ("deleted", p),
                other => panic!("unexpected watch event {other:?}"),
            };
            if what == "deleted" && kind == "modified" {
                continue;
            }
            return (kind.to_owned(), pod);
        }
    };
    let name = "kube-rs-watched";
    create_pod(&stack.cluster, name);
    let (kind, pod) = next("added");
    assert_eq!(
        (kind.as_str(), pod.metadata.name.as_deref()),
        ("added", Some(name))
    );
    label_pod(&stack.cluster, name);
    let (kind, pod) = next("modified");
    assert_eq!(kind, "modified");
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("step")
            .map(String::as_str),
        Some("two")
    );
    delete_pod(&stack.cluster, name);
    let (kind, pod) = next("deleted");
    assert_eq!(
        (kind.as_str(), pod.metadata.name.as_deref()),
        ("deleted", Some(name))
    );
    watching.abort();
}

/// exec with stdout and an exit status, as kube-rs reports them.
fn kube_rs_exec(stack: &Stack, pods: &Api<Pod>) {
    let (out, status) = stack.env.rt.block_on(async {
        let mut process = pods
            .exec(
                "demo",
                vec!["sh", "-c", "echo from-kube-rs; exit 3"],
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
    assert_eq!(out, "from-kube-rs\n");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.unwrap().causes.unwrap()[0];
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("3"))
    );
}

/// attach to a pod whose main process echoes its stdin.
fn kube_rs_attach(stack: &Stack, pods: &Api<Pod>) {
    let kubelet = stack.kubelet.as_ref().unwrap();
    stack
        .env
        .rt
        .block_on(kubelet.create_pod(json!({
            "metadata": {"name": "kube-rs-attachee", "namespace": "default"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "kube-sim/shell", "stdin": true,
                "command": ["sh", "-c", "while read l; do echo got:$l; done"],
            }]},
        })))
        .unwrap();
    let got = stack.env.rt.block_on(async {
        let mut attached = pods
            .attach(
                "kube-rs-attachee",
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
        // Let the reply's frame be recorded before the client goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stdin);
        drop(stdout);
        attached.abort();
        buf
    });
    assert_eq!(got, b"got:ping\n");
}

const PF_BYTES: usize = 200_000;

/// port-forward to kube-sim's echo server on the seeded pod: bytes go there and come back.
fn kube_rs_port_forward(stack: &Stack, pods: &Api<Pod>) {
    let data: Vec<u8> = (0..PF_BYTES)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let back = stack.env.rt.block_on(async {
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
}

#[test]
fn kube_rs_lists_watches_and_streams_through_a_real_kube_apiserver_to_kube_sim_as_kubelet() {
    let stack = Stack::start();
    let pods: Api<Pod> = Api::namespaced(stack.env.rt.block_on(kube_client(&stack)), "default");

    let started = Instant::now();
    kube_rs_list_and_watch(&stack, &pods);
    eprintln!("list and watch: {:.1} s", started.elapsed().as_secs_f64());
    assert_watches_audited(&stack, 1);

    let started = Instant::now();
    kube_rs_exec(&stack, &pods);
    let recordings = stack.sealed_recordings(1);
    check_identity(&recordings[0], SessionKind::Exec, "demo");
    assert_eq!(recordings[0].status, SessionStatus::Complete);
    assert_eq!(
        recordings[0].meta.command,
        ["sh", "-c", "echo from-kube-rs; exit 3"]
    );
    assert_eq!(output_of(&recordings[0]), b"from-kube-rs\n");
    assert_eq!(exits_of(&recordings[0]), [Some(3)]);
    eprintln!("exec: {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    kube_rs_attach(&stack, &pods);
    let recordings = stack.sealed_recordings(2);
    check_identity(&recordings[1], SessionKind::Attach, "kube-rs-attachee");
    assert_eq!(input_of(&recordings[1]), b"ping\n");
    assert_eq!(output_of(&recordings[1]), b"got:ping\n");
    eprintln!("attach: {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    kube_rs_port_forward(&stack, &pods);
    let recordings = stack.sealed_recordings(3);
    check_identity(&recordings[2], SessionKind::PortForward, "demo");
    assert_one_forward(&recordings[2], 8080, PF_BYTES as u64);
    eprintln!("port-forward: {:.1} s", started.elapsed().as_secs_f64());
}
