//! `kubectl cp` (1.32 over WebSocket, 1.32 over SPDY, 1.28) of a 100 MiB file into a pod and back out through a gateway
//! running as its own process (`custody serve`, recording on) in front of the demo's kube-sim:
//! both copies are byte-exact, the gateway's resident memory stays far below the file size,
//! and both sessions are recorded in full and verify.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::too_many_lines,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_recorder::model::{EventKind, SessionStatus};
use custody_recorder::reader::read_recording;
use sha2::{Digest, Sha256};

const FILE_SIZE: u64 = 100 * 1024 * 1024;
/// How much the gateway's resident memory may grow over its idle level during a copy.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

/// A child process interrupted (SIGINT, then waited) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Starts `custody ARGS`, waits for its `ready ` line and returns it.
fn start(args: &[&str], dir: &Path, envs: &[(&str, &Path)]) -> (Running, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
    cmd.args(args).arg(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let running = Running(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no ready line");
        if line.starts_with("ready ") {
            return (running, line);
        }
    }
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Samples the process's `VmRSS` every 20 ms until dropped; keeps the highest.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(proc_kib(pid, "VmRSS")));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(proc_kib(pid, "VmRSS"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Writes `FILE_SIZE` pseudo-random bytes (xorshift) to `path`; returns their SHA-256.
fn write_random(path: &Path) -> Vec<u8> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1024 * 1024];
    for _ in 0..FILE_SIZE / chunk.len() as u64 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hash.update(&chunk);
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    hash.finalize().to_vec()
}

fn sha256_of(path: &Path) -> (u64, Vec<u8>) {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut len = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return (len, hash.finalize().to_vec());
        }
        len += n as u64;
        hash.update(&buf[..n]);
    }
}

fn run_ok(k: &Kubectl, args: &[String]) {
    let out = k.run(args.iter().cloned()).unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a `kubectl cp` while sampling the gateway's memory; returns the peak `VmRSS`.
fn copy_sampled(k: &Kubectl, pid: u32, from: String, to: String) -> u64 {
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    run_ok(k, &["cp".into(), from.clone(), to.clone()]);
    let peak = sampler.finish();
    eprintln!(
        "kubectl cp {from} {to}: {:.1} s, gateway peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak / (1024 * 1024)
    );
    peak
}

#[test]
fn kubectl_cp_of_100_mib_both_ways_is_byte_exact_with_bounded_gateway_memory() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    // The demo runs kube-sim and the development OIDC issuer (and a gateway this test does not
    // use); the gateway under test is `custody serve` from the demo's configuration, alone in
    // its process so its memory can be measured.
    let (_demo, _) = start(&["demo", "--dir"], &demo_dir, &[]);
    let data = dir.path().join("serve-data");
    let config = demo_dir.join("custody.toml");
    let (serve, ready) = start(
        &["serve", "--config"],
        &config,
        &[
            ("CUSTODY_DATA_DIR", &data),
            ("CUSTODY_LISTEN", Path::new("127.0.0.1:0")),
        ],
    );
    let pid = serve.0.id();
    let https = ready.split_whitespace().nth(1).unwrap().to_owned();
    let kubeconfig = std::fs::read_to_string(demo_dir.join("kubeconfig")).unwrap();
    let old = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        .trim()
        .to_owned();
    let served = dir.path().join("served.kubeconfig");
    std::fs::write(
        &served,
        kubeconfig.replace(&old, &format!("server: {https}/clusters/demo")),
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let k = Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        served.clone(),
        home.clone(),
    );
    // kubectl 1.32 over WebSocket, 1.32 forced to SPDY, and 1.28 (SPDY only).
    let clients = [
        ("1.32 WebSocket", k.clone()),
        (
            "1.32 SPDY",
            k.clone().env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
        ),
        (
            "1.28 SPDY",
            Kubectl::new(kubectl_binary("1.28").unwrap(), served, home),
        ),
    ];

    let local = dir.path().join("local.bin");
    let want = write_random(&local);
    let remote_dir = demo_dir.join("cluster/in-pod");
    std::fs::create_dir_all(&remote_dir).unwrap();

    // The idle level: after one small recorded exec, so the streaming path is warm.
    run_ok(
        &k,
        &[
            "exec".into(),
            "demo".into(),
            "--".into(),
            "echo".into(),
            "warm".into(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let idle = proc_kib(pid, "VmRSS");

    let mut peaks = Vec::new();
    for (i, (label, client)) in clients.iter().enumerate() {
        let remote = remote_dir.join(format!("copied-{i}.bin"));
        let back = dir.path().join(format!("back-{i}.bin"));
        let peak_in = copy_sampled(
            client,
            pid,
            local.display().to_string(),
            format!("demo:{}", remote.display()),
        );
        assert_eq!(
            sha256_of(&remote),
            (FILE_SIZE, want.clone()),
            "{label}: cp into the pod changed the bytes"
        );
        let peak_out = copy_sampled(
            client,
            pid,
            format!("demo:{}", remote.display()),
            back.display().to_string(),
        );
        assert_eq!(
            sha256_of(&back),
            (FILE_SIZE, want.clone()),
            "{label}: cp out of the pod changed the bytes"
        );
        std::fs::remove_file(&remote).unwrap();
        std::fs::remove_file(&back).unwrap();
        peaks.push((format!("{label} in"), peak_in));
        peaks.push((format!("{label} out"), peak_out));
    }
    let hwm = proc_kib(pid, "VmHWM");
    let mib = |b: u64| b / (1024 * 1024);
    eprintln!(
        "gateway RSS: idle {} MiB, VmHWM {} MiB",
        mib(idle),
        mib(hwm)
    );
    for (what, peak) in &peaks {
        eprintln!("  peak during cp {what}: {} MiB", mib(*peak));
        assert!(
            peak.saturating_sub(idle) < RSS_GROWTH_LIMIT,
            "gateway RSS grew by {} MiB during cp {what} (idle {} MiB)",
            mib(peak.saturating_sub(idle)),
            mib(idle)
        );
    }
    assert!(
        hwm.saturating_sub(idle) < RSS_GROWTH_LIMIT,
        "gateway VmHWM {} MiB over idle {} MiB",
        mib(hwm),
        mib(idle)
    );

    // Every session recorded (the warm-up, each copy's `tar`, and the checks kubectl runs
    // before copying into a pod), sealed and verifying; the copies carry the whole tar stream
    // (input into the pod, output out of it).
    let key = custody_recorder::integrity::load_or_create_signing_key(&data.join("signing.key"))
        .unwrap()
        .verifying_key();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recordings = loop {
        let mut recordings = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(data.join("recordings")).unwrap() {
            let path = entry.unwrap().path();
            files += 1;
            let size = std::fs::metadata(&path).unwrap().len();
            let r = read_recording(&path, Some(&key)).unwrap();
            if r.manifest.is_some() {
                recordings.push((size, r));
            }
        }
        if files >= 3 && recordings.len() == files {
            break recordings;
        }
        assert!(Instant::now() < deadline, "recordings not sealed");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut recordings = recordings;
    recordings.sort_by_key(|(_, r)| r.meta.started_at_us);
    let stream_len = |r: &custody_recorder::reader::Recording, input: bool| -> u64 {
        r.events
            .iter()
            .map(|e| match (&e.kind, input) {
                (EventKind::Input(b), true) | (EventKind::Output(b), false) => b.len() as u64,
                _ => 0,
            })
            .sum()
    };
    for (i, (size, r)) in recordings.iter().enumerate() {
        assert!(r.damage.is_none(), "{:?}", r.damage);
        assert_eq!(r.status, SessionStatus::Complete, "{i}");
        assert_eq!(r.meta.pod, "demo");
        assert_eq!(r.meta.initiator.username, "oidc:alice");
        eprintln!(
            "recording {i}: {:?}, {} MiB on disk, input {} bytes, output {} bytes",
            r.meta.command,
            mib(*size),
            stream_len(r, true),
            stream_len(r, false)
        );
    }
    let tar = |input: bool| {
        recordings
            .iter()
            .filter(|(_, r)| r.meta.command.contains(&"tar".to_owned()))
            .filter(|(_, r)| stream_len(r, input) > FILE_SIZE)
            .count()
    };
    assert_eq!(
        tar(true),
        3,
        "a recording per client holds the tar stream into the pod"
    );
    assert_eq!(
        tar(false),
        3,
        "a recording per client holds the tar stream out of the pod"
    );
}
