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

#[path = "support/served.rs"]
mod served;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custody_fixtures::harness::Kubectl;
use custody_recorder::model::{EventKind, SessionStatus};
use custody_recorder::reader::read_recording;
use sha2::{Digest, Sha256};

const FILE_SIZE: u64 = 100 * 1024 * 1024;
/// How much the gateway's resident memory may grow over its idle level during a copy.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

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
    // The demo runs kube-sim and the development OIDC issuer (and a gateway this test does not
    // use); the gateway under test is `custody serve` from the demo's configuration, alone in
    // its process so its memory can be measured.
    let (_demo, demo_dir) = served::demo(dir.path());
    let data = dir.path().join("serve-data");
    let mut serve = served::serve_command(&demo_dir, &data);
    serve.stderr(std::process::Stdio::inherit());
    let (serve, ready) = served::spawn_ready(serve);
    let pid = serve.id();
    let https = served::ready_url(&ready);
    let (kubeconfig, home) = served::served_kubeconfig(&demo_dir, &https, dir.path());
    let k = served::kubectl("1.32", &kubeconfig, &home);
    // kubectl 1.32 over WebSocket, 1.32 forced to SPDY, and 1.28 (SPDY only).
    let clients = [
        ("1.32 WebSocket", k.clone()),
        (
            "1.32 SPDY",
            k.clone().env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
        ),
        ("1.28 SPDY", served::kubectl("1.28", &kubeconfig, &home)),
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
