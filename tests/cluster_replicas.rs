//! Cluster mode end to end: three `custody serve` replicas behind real HAProxy (PROXY v2),
//! sharing a real PostgreSQL and a real S3 server (versitygw). Sessions through the balancer
//! are recorded to the bucket and read through any replica; a replica killed with `kill -9`
//! has its sessions sealed `interrupted` by another from their segments; a kill and a grant
//! revocation issued on one replica end a session held by another within a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    clippy::similar_names,
    reason = "test code: a failed step should fail the test loudly; each test reads as a story"
)]

mod cluster_support;

use std::io::Write;
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_support::{Cluster, Options};
use custody_fixtures::harness::{Collected, Kubectl};

/// The clusters of these tests are heavy (three gateways, PostgreSQL, S3, HAProxy, kube-sim):
/// one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The sessions replica `i` lists, as JSON.
fn sessions(cluster: &Cluster, i: usize, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = cluster
        .custody("bob")
        .args(["sessions", "list", "--json", "--server"])
        .arg(cluster.url(i))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .args(extra)
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

/// Downloads session `id` through replica `i` and verifies it with the cluster's key; returns
/// the verify exit code and the file.
fn download_and_verify(cluster: &Cluster, i: usize, id: &str) -> (i32, std::path::PathBuf) {
    let dir = cluster.dir.path().join(format!("download-{i}-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = cluster
        .custody("bob")
        .current_dir(&dir)
        .args(["download", id, "--server"])
        .arg(cluster.url(i))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .output()
        .unwrap();
    ok(&out);
    let file = dir.join(format!("{id}.cast.zst"));
    assert!(file.exists(), "downloaded to {}", dir.display());
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("verify")
        .arg(&file)
        .arg("--key")
        .arg(&cluster.key_pem)
        .output()
        .unwrap();
    (verify.status.code().unwrap_or(-1), file)
}

/// The plain-text transcript of a recording.
fn transcript(file: &std::path::Path) -> String {
    let bytes = std::fs::read(file).unwrap();
    let recording = custody_recorder::reader::read_recording_bytes(&bytes, None).unwrap();
    let mut text = String::new();
    for event in &recording.events {
        if let custody_recorder::model::EventKind::Output(b) = &event.kind {
            text.push_str(&String::from_utf8_lossy(b));
        }
    }
    text
}

fn port_forward(k: &Kubectl) {
    custody_fixtures::harness::port_forward_echo(k, None, 30_000).unwrap();
}

/// `kubectl attach -i` to a pod reading lines: typed lines come back through the balancer.
fn attach(k: &Kubectl) {
    ok(&k
        .run([
            "run", "attachee", "--image=kube-sim/shell", "--restart=Never", "-i=false",
            "--overrides",
            r#"{"spec":{"containers":[{"name":"attachee","image":"kube-sim/shell","stdin":true,"command":["sh","-c","while read l; do echo got:$l; done"]}]}}"#,
        ])
        .unwrap());
    ok(&k
        .run([
            "wait",
            "--for=condition=Ready",
            "pod/attachee",
            "--timeout=30s",
        ])
        .unwrap());
    let mut child = k
        .command(["attach", "-i", "attachee"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = Collected::spawn(child.stdout.take().unwrap());
    let stderr = Collected::spawn(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    // Attach sees output only from the moment it joins: type until a reply shows.
    while !stdout.text().contains("got:attached-") {
        assert!(
            Instant::now() < deadline,
            "attach never relayed: {}\nstderr: {}",
            stdout.text(),
            stderr.text()
        );
        writeln!(stdin, "attached-{round}").unwrap();
        round += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Let the reply's frame be recorded before kubectl goes.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs `kubectl args` (a session that keeps printing) and waits for `first` in its output.
fn running(k: &Kubectl, args: &[&str], first: &str) -> (Child, Collected, Collected) {
    let mut child = k
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Collected::spawn(child.stdout.take().unwrap());
    let stderr = Collected::spawn(child.stderr.take().unwrap());
    stdout
        .wait_for(first, Duration::from_secs(30))
        .map_err(|e| format!("{e}\nstderr: {}", stderr.text()))
        .unwrap();
    (child, stdout, stderr)
}

/// A session that prints a numbered line every 100 ms until it is ended.
fn ticker(k: &Kubectl) -> (Child, Collected, Collected) {
    running(
        k,
        &[
            "exec",
            "demo",
            "--",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
        ],
        "tick-3\n",
    )
}

/// The highest `tick-N` in `text`.
fn last_tick(text: &str) -> u64 {
    text.split("tick-")
        .skip(1)
        .filter_map(|t| t.split('\n').next()?.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Waits for `child` to exit, up to `limit`; returns how long it took.
fn exits_within(child: &mut Child, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The live session ids replica `i`'s control socket lists for the whole cluster, with their
/// replicas.
fn live(cluster: &Cluster, i: usize) -> Vec<(String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["sessions", "live", "--json", "--data-dir"])
        .arg(cluster.replicas[i].data_dir.as_path())
        .output()
        .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&ok(&out)).unwrap();
    list.iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["replica"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn sessions_through_the_balancer_are_stored_and_read_through_every_replica() {
    let _one = lock();
    let cluster = Cluster::start(&Options::default());
    for minor in ["1.32", "1.28"] {
        let k = cluster.kubectl(minor, "bob");
        let out = k
            .run([
                "exec",
                "demo",
                "--",
                "sh",
                "-c",
                &format!("echo marker-{minor}-done"),
            ])
            .unwrap();
        assert!(ok(&out).contains(&format!("marker-{minor}-done")));
    }
    port_forward(&cluster.kubectl("1.32", "bob"));
    port_forward(&cluster.kubectl("1.28", "bob"));
    attach(&cluster.kubectl("1.28", "bob"));
    // Stored recordings are listed once their objects are in: give the last one a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listed = Vec::new();
    while Instant::now() < deadline {
        listed = sessions(&cluster, 0, &[]);
        if listed.len() >= 5 && listed.iter().all(|s| s["status"] != "open") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed.len(), 5, "{listed:#?}");
    let kinds: std::collections::BTreeSet<&str> =
        listed.iter().filter_map(|s| s["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["attach", "exec", "port-forward"].into_iter().collect(),
        "{listed:#?}"
    );
    for i in 0..3 {
        let here = sessions(&cluster, i, &[]);
        assert_eq!(
            here.iter().map(|s| &s["id"]).collect::<Vec<_>>(),
            listed.iter().map(|s| &s["id"]).collect::<Vec<_>>(),
            "replica {i} lists the same sessions"
        );
        let found = sessions(&cluster, i, &["--grep", "marker-1.28-done"]);
        assert_eq!(found.len(), 1, "replica {i}: {found:#?}");
        for s in &here {
            let id = s["id"].as_str().unwrap();
            let (verdict, file) = download_and_verify(&cluster, i, id);
            assert_eq!(
                verdict, 0,
                "session {id} through replica {i} verifies intact"
            );
            match s["kind"].as_str() {
                Some("exec") => assert!(transcript(&file).contains("marker-"), "{id}"),
                Some("attach") => assert!(transcript(&file).contains("got:attached-"), "{id}"),
                _ => {}
            }
        }
    }
    // The audit trail, read through any replica with `custody audit --server`, names the
    // replica that handled each request.
    let out = cluster
        .custody("bob")
        .args([
            "audit",
            "--json",
            "--initiator",
            "bob",
            "--verb",
            "get",
            "--server",
        ])
        .arg(cluster.url(2))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .output()
        .unwrap();
    let events: Vec<serde_json::Value> = ok(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 5, "{events:#?}");
    assert!(
        events.iter().all(|e| e["replica_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("replica-"))),
        "{events:#?}"
    );
    // The recordings name the replica that recorded them, and the audit trail those that
    // handled each request.
    let replicas: std::collections::BTreeSet<String> = listed
        .iter()
        .filter_map(|s| s["replica_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!replicas.is_empty(), "{listed:#?}");
}

#[test]
fn a_replica_killed_with_nine_has_its_sessions_sealed_by_another() {
    let _one = lock();
    let mut cluster = Cluster::start(&Options::default());
    let victim = 1;
    let k = cluster.kubectl_to("1.32", "bob", victim);
    let mut running: Vec<(Child, Collected, Collected)> = (0..10).map(|_| ticker(&k)).collect();
    // In the order they started, as `running` is (each waited for its first lines).
    let ids: Vec<String> = live(&cluster, 0)
        .into_iter()
        .filter(|(_, replica)| replica == &cluster.replicas[victim].id)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids.len(),
        10,
        "all ten run on {}",
        cluster.replicas[victim].id
    );
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill9(victim);
    let killed_at = Instant::now();
    // What each client had received when the replica died (a little later at most).
    let seen: Vec<u64> = running
        .iter()
        .map(|(_, out, _)| last_tick(&out.text()))
        .collect();
    for (child, _, stderr) in &mut running {
        assert!(
            exits_within(child, Duration::from_secs(30)).is_some(),
            "the client noticed"
        );
        assert!(!child.wait().unwrap().success(), "{}", stderr.text());
    }
    // Every recording is sealed interrupted by another replica within 30 s.
    let mut sealed = Vec::new();
    while killed_at.elapsed() < Duration::from_secs(30) {
        let listed = sessions(&cluster, 0, &[]);
        sealed = listed
            .iter()
            .filter(|s| ids.iter().any(|id| s["id"] == id.as_str()) && s["status"] == "interrupted")
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        if sealed.len() == ids.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        sealed.len(),
        ids.len(),
        "sealed within 30 s: {sealed:?}\n{}",
        cluster.log(0)
    );
    let elapsed = killed_at.elapsed();
    for (id, printed) in ids.iter().zip(&seen) {
        let (verdict, file) = download_and_verify(&cluster, 2, id);
        assert_eq!(verdict, 2, "session {id}: intact but interrupted");
        let recorded = last_tick(&transcript(&file));
        // Lines come every 100 ms: what was printed up to 1.5 s before the kill is recorded.
        assert!(
            recorded + 15 >= *printed,
            "session {id}: recorded up to tick {recorded}, its client had seen {printed}"
        );
    }
    eprintln!("ten sessions of a killed replica sealed by the others in {elapsed:?}");
}

#[test]
fn a_kill_and_a_revocation_on_one_replica_end_a_session_on_another_within_a_second() {
    let _one = lock();
    let cluster = Cluster::start(&Options::default());
    let holder = 1;
    // An operator's kill through replica 0's control socket.
    let (mut child, _out, _err) = ticker(&cluster.kubectl_to("1.32", "bob", holder));
    let (id, replica) = live(&cluster, 0).into_iter().next().unwrap();
    assert_eq!(replica, cluster.replicas[holder].id);
    let issued = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["sessions", "kill", &id, "--reason", "INC-9", "--data-dir"])
        .arg(cluster.replicas[0].data_dir.as_path())
        .output()
        .unwrap();
    ok(&out);
    let took = exits_within(&mut child, Duration::from_secs(10)).expect("the session ended");
    assert!(
        issued.elapsed() <= Duration::from_secs(1),
        "ended {took:?} after the kill was issued on another replica"
    );

    // A follow through replica 2 of a session on replica 1: relayed over mutual TLS.
    let (mut child, _out, _err) = ticker(&cluster.kubectl_to("1.32", "bob", holder));
    let (id, _) = live(&cluster, 0).into_iter().next().unwrap();
    let asked = Instant::now();
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["sessions", "follow", &id, "--data-dir"])
        .arg(cluster.replicas[2].data_dir.as_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = Collected::spawn(follower.stdout.take().unwrap());
    let follow_err = Collected::spawn(follower.stderr.take().unwrap());
    followed
        .wait_for("tick-", Duration::from_secs(10))
        .map_err(|e| format!("{e}\nstderr: {}", follow_err.text()))
        .unwrap();
    let first_line = asked.elapsed();
    assert!(
        first_line <= Duration::from_secs(1),
        "the first followed line came {first_line:?} after asking another replica"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = follower.kill();
    let _ = follower.wait();

    // A grant revoked through replica 0 ends alice's session on replica 1.
    let request = cluster
        .custody("alice")
        .args([
            "request",
            "create",
            "--cluster",
            "demo",
            "-n",
            "kube-system",
        ])
        .args(["--pod", "coredns-sim"])
        .args(["--for", "15m", "--reason", "INC-10", "--server"])
        .arg(cluster.url(2))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .output()
        .unwrap();
    let text = ok(&request);
    let grant = text
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .unwrap_or_else(|| panic!("no request id in {text:?}"))
        .to_owned();
    ok(&cluster
        .custody("bob")
        .args(["request", "approve", &grant, "--server"])
        .arg(cluster.url(0))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .output()
        .unwrap());
    let k = cluster.kubectl_to("1.32", "alice", holder);
    let (mut child, _stdout, stderr) = running(
        &k,
        &[
            "exec",
            "-n",
            "kube-system",
            "coredns-sim",
            "--",
            "sh",
            "-c",
            "while true; do echo up; sleep 0.1; done",
        ],
        "up\n",
    );
    let issued = Instant::now();
    ok(&cluster
        .custody("bob")
        .args(["request", "revoke", &grant, "--reason", "done", "--server"])
        .arg(cluster.url(0))
        .arg("--ca-file")
        .arg(&cluster.gateway_ca)
        .output()
        .unwrap());
    exits_within(&mut child, Duration::from_secs(10)).expect("the session ended");
    assert!(
        issued.elapsed() <= Duration::from_secs(1),
        "ended {:?} after the revocation was issued on another replica",
        issued.elapsed()
    );
    assert!(
        stderr.text().contains("grant for this session was revoked"),
        "{}",
        stderr.text()
    );
    eprintln!(
        "kill reached the other replica's session in {took:?}; revocation in {:?}",
        issued.elapsed()
    );
}

/// The names of the audit events of `verb` requests, read straight from PostgreSQL.
fn audited_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .postgres
        .psql(
            "custody",
            "SELECT name FROM audit_events WHERE name LIKE 'marker-%' ORDER BY name",
        )
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn postgresql_restarted_mid_run_refuses_while_down_loses_nothing_and_recovers() {
    let _one = lock();
    let mut cluster = Cluster::start(&Options::default());
    let k = cluster.kubectl("1.32", "bob");
    // Answered requests: each one's decision was durable before it was forwarded.
    for i in 0..6 {
        let out = k
            .run([
                "get",
                "pod",
                &format!("marker-before-{i}"),
                "--request-timeout=20s",
            ])
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A session running while the database goes away, ended during the outage.
    let (mut running, _out, _err) = ticker(&cluster.kubectl_to("1.32", "bob", 0));
    let (session, _) = live(&cluster, 0).into_iter().next().unwrap();
    cluster.postgres.stop().unwrap();
    let started = Instant::now();
    let out = k
        .run(["get", "pod", "marker-during-0", "--request-timeout=30s"])
        .unwrap();
    let refused = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("audit trail cannot be written") || stderr.contains("503"),
        "strict audit refuses while PostgreSQL is down: {stderr}"
    );
    assert!(
        refused < Duration::from_secs(15),
        "answered in {refused:?}, not hung"
    );
    // Not forwarded: the cluster never saw it.
    let cluster_audit =
        std::fs::read_to_string(cluster.dir.path().join("cluster/audit.log")).unwrap();
    assert!(!cluster_audit.contains("marker-during-0"));

    running.kill().unwrap();
    running.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cluster.postgres.start_again().unwrap();
    // Service resumes by itself: the pools reconnect.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = 0;
    while after < 6 && Instant::now() < deadline {
        let out = k
            .run([
                "get",
                "pod",
                &format!("marker-after-{after}"),
                "--request-timeout=20s",
            ])
            .unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            after += 1;
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert_eq!(after, 6, "service resumed after PostgreSQL came back");
    // The session that ended while the database was down is indexed once it is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = String::new();
    while Instant::now() < deadline {
        if let Some(s) = sessions(&cluster, 1, &[])
            .iter()
            .find(|s| s["id"] == session.as_str())
        {
            status = s["status"].as_str().unwrap_or_default().to_owned();
            if status != "open" {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status, "complete", "{}", cluster.log(0));
    let names = audited_names(&cluster);
    for i in 0..6 {
        for stage in ["before", "after"] {
            let name = format!("marker-{stage}-{i}");
            assert!(
                names.contains(&name),
                "{name} was answered, so it is audited: {names:?}"
            );
        }
    }
}

#[test]
fn an_object_store_outage_ends_the_session_with_a_reason_and_loses_nothing() {
    let _one = lock();
    let mut cluster = Cluster::start(&Options::default());
    let (mut child, stdout, stderr) = ticker(&cluster.kubectl_to("1.32", "bob", 0));
    let (id, _) = live(&cluster, 1).into_iter().next().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cluster.s3.kill();
    let stopped = Instant::now();
    let took = exits_within(&mut child, Duration::from_secs(30)).expect("the session ended");
    assert!(!child.wait().unwrap().success());
    let said = stderr.text();
    assert!(
        said.contains("recording failed") && said.contains("object store"),
        "the user is told why the session ended: {said}"
    );
    let printed = last_tick(&stdout.text());
    eprintln!("the session ended {took:?} after the object store went away: {said}");
    assert!(stopped.elapsed() < Duration::from_secs(30));

    cluster.s3.start_again().unwrap();
    // The replica keeps the spool file and stores it once the bucket is back.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut status = serde_json::Value::Null;
    while Instant::now() < deadline {
        let listed = sessions(&cluster, 2, &[]);
        if let Some(s) = listed.iter().find(|s| s["id"] == id.as_str())
            && s["status"] != "open"
        {
            status = s.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        status["status"],
        "terminated",
        "{status:#}\n{}",
        cluster.log(0)
    );
    let (verdict, file) = download_and_verify(&cluster, 2, &id);
    assert_eq!(verdict, 0, "complete and intact once stored");
    let recorded = last_tick(&transcript(&file));
    assert!(
        recorded >= printed,
        "every line the client saw is in the recording: {recorded} < {printed}"
    );
}

#[test]
fn a_replica_that_shuts_down_drains_its_sessions_and_stores_their_recordings() {
    let _one = lock();
    let mut cluster = Cluster::start(&Options {
        drain_seconds: 2,
        ..Options::default()
    });
    let (mut child, stdout, stderr) = ticker(&cluster.kubectl_to("1.32", "bob", 1));
    let (id, _) = live(&cluster, 0).into_iter().next().unwrap();
    let asked = Instant::now();
    let status = cluster.terminate(1, Duration::from_secs(60));
    assert!(
        status.success(),
        "a drained replica exits cleanly: {status:?}"
    );
    // The session ran on through the drain time, then was ended with a message.
    let ended = exits_within(&mut child, Duration::from_secs(1)).is_some();
    assert!(ended, "the session ended with its replica");
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "it had its drain time"
    );
    let said = stderr.text();
    assert!(said.contains("shutting down"), "{said}");
    let printed = last_tick(&stdout.text());
    // Sealed and stored by the replica itself before it left: terminated, intact.
    let listed = sessions(&cluster, 0, &[]);
    let s = listed.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(s["status"], "terminated", "{s:#}");
    assert_eq!(s["reason"], "replica_shutdown", "{s:#}");
    let (verdict, file) = download_and_verify(&cluster, 0, &id);
    assert_eq!(verdict, 0);
    assert!(last_tick(&transcript(&file)) >= printed);
    let gone = cluster
        .postgres
        .psql(
            "custody",
            "SELECT state FROM replicas WHERE id = 'replica-1'",
        )
        .unwrap();
    assert_eq!(gone.trim(), "gone");
}

#[test]
fn a_replica_restarted_after_a_crash_hands_over_every_byte_it_had_written() {
    let _one = lock();
    let mut cluster = Cluster::start(&Options::default());
    let (mut child, stdout, _stderr) = ticker(&cluster.kubectl_to("1.32", "bob", 1));
    let (id, _) = live(&cluster, 0).into_iter().next().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill9(1);
    exits_within(&mut child, Duration::from_secs(30)).expect("the client noticed");
    let printed = last_tick(&stdout.text());
    // Back at once, before its old lease ran out: its spool still holds the last flushes.
    cluster.start_replica(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "sealed: {}", cluster.log(1));
        let listed = sessions(&cluster, 0, &[]);
        if listed
            .iter()
            .any(|s| s["id"] == id.as_str() && s["status"] == "interrupted")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (verdict, file) = download_and_verify(&cluster, 0, &id);
    assert_eq!(verdict, 2);
    let recorded = last_tick(&transcript(&file));
    // The writer flushes four times a second: at most a few lines were only in memory.
    assert!(
        recorded + 3 >= printed,
        "recorded up to tick {recorded}, the client saw {printed}"
    );
    assert!(
        cluster.log(1).contains("uploaded whole for its takeover"),
        "the restarted replica handed its spool over: {}",
        cluster.log(1)
    );
    // Once sealed and stored elsewhere, a later start removes the leftover spool file.
    cluster.kill9(1);
    cluster.start_replica(1);
    let spool = cluster.replicas[1].data_dir.join("spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cast.zst"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
