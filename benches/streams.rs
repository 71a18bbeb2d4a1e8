//! Streaming through custody against straight to kube-sim, recording on: exec throughput
//! (`kubectl exec -i demo -- cat` of 64 MiB) and the per-keystroke round trip (one byte into
//! an exec of `cat` and its echo back, 500 times). Run with `cargo bench --bench streams`;
//! both paths are measured in the same run and reported side by side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark: a failed step should stop it loudly"
)]

#[path = "../tests/gateway_support/env.rs"]
mod env;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use custody_fixtures::harness::{Kubectl, kubectl_binary};
use env::{Env, Options};

const THROUGHPUT_BYTES: usize = 64 * 1024 * 1024;
const KEYSTROKES: usize = 500;

/// Pipes `THROUGHPUT_BYTES` through `kubectl exec -i demo -- cat`; returns MB/s.
fn throughput(k: &Kubectl, context: &[&str]) -> f64 {
    let mut args: Vec<&str> = context.to_vec();
    args.extend(["exec", "-i", "demo", "--", "cat"]);
    let mut child = k
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..THROUGHPUT_BYTES / chunk.len() {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            stdin.write_all(&chunk).unwrap();
        }
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let elapsed = started.elapsed();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(got, THROUGHPUT_BYTES, "cat returned a different length");
    THROUGHPUT_BYTES as f64 / 1e6 / elapsed.as_secs_f64()
}

/// One byte into `kubectl exec -i demo -- cat` and its echo back, `KEYSTROKES` times; returns
/// the sorted round trips.
fn keystrokes(k: &Kubectl, context: &[&str]) -> Vec<Duration> {
    let mut args: Vec<&str> = context.to_vec();
    args.extend(["exec", "-i", "demo", "--", "cat"]);
    let mut child = k
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    // The first echo also waits for the session to start: not counted.
    stdin.write_all(b"w").unwrap();
    stdout.read_exact(&mut byte).unwrap();
    let mut times = Vec::with_capacity(KEYSTROKES);
    for i in 0..KEYSTROKES {
        let key = b'a' + u8::try_from(i % 26).unwrap();
        let started = Instant::now();
        stdin.write_all(&[key]).unwrap();
        stdout.read_exact(&mut byte).unwrap();
        times.push(started.elapsed());
        assert_eq!(byte[0], key);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let home = env.dir().join("home-direct");
    std::fs::create_dir_all(&home).unwrap();
    let direct = Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        env.sim_dir.join("admin.kubeconfig"),
        home,
    );
    let custody = env.kubectl("1.32");
    let through: &[&str] = &["--context", "alice"];

    // Warm both paths once (connections, TLS, the first recording).
    keystrokes(&direct, &[]);
    keystrokes(&custody, through);

    let direct_mbps = throughput(&direct, &[]);
    let custody_mbps = throughput(&custody, through);
    let direct_keys = keystrokes(&direct, &[]);
    let custody_keys = keystrokes(&custody, through);

    println!("exec through custody (recording on) vs straight to kube-sim, kubectl 1.32 WebSocket");
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "", "direct", "custody", "custody/direct"
    );
    println!(
        "{:<34} {:>12.1} {:>12.1} {:>12.2}",
        format!("throughput, {} MiB cat (MB/s)", THROUGHPUT_BYTES >> 20),
        direct_mbps,
        custody_mbps,
        custody_mbps / direct_mbps
    );
    for (label, p) in [("median", 50), ("p99", 99)] {
        let d = percentile(&direct_keys, p);
        let c = percentile(&custody_keys, p);
        println!(
            "{:<34} {:>12.3} {:>12.3} {:>12.2}",
            format!("keystroke round trip {label} (ms)"),
            ms(d),
            ms(c),
            ms(c) / ms(d)
        );
    }
    println!();
    println!(
        "added per keystroke by custody: median {:+.3} ms, p99 {:+.3} ms (n = {KEYSTROKES})",
        ms(percentile(&custody_keys, 50)) - ms(percentile(&direct_keys, 50)),
        ms(percentile(&custody_keys, 99)) - ms(percentile(&direct_keys, 99)),
    );
}
