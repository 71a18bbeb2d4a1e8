//! Recording benchmark: write throughput, CPU per MB and compression ratio on three kinds of
//! terminal output (an interactive shell, a full-screen `top`-like redraw, a log stream),
//! against a plain buffered file write of the same bytes measured in the same run.
//!
//! Run with `cargo bench -p custody-recorder --bench recording`. Writer paths measured: the async
//! `SessionHandle` fed as fast as possible (frames close at 1 MiB); the live path, the file layer
//! driven by session time the way the writer task is driven by the clock (frames of at most 60 s
//! or 1 MiB, a zstd block flush every second, each frame checkpointed, signed and
//! `fdatasync`ed); and, for comparison, the previous layout of one closed frame per second.
//! Ratios are compared with one zstd frame over the whole cast.

#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "benchmark code: fail loudly, report floats"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_recorder::file::{FileStats, FrameEvents, RecordingFile};
use custody_recorder::format::{self, Encoder, TimePrecision};
use custody_recorder::model::{Event, EventKind, SessionMeta, SessionStatus};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SigningKey::from_bytes(&[42; 32]));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{:<6} {:>5} | {:>6} {:>6} {:>5} | {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6}",
        "output",
        "MB",
        "plain",
        "rec",
        "x",
        "cpu",
        "base",
        "async",
        "live",
        "1s-fr",
        "whole",
        "l/w",
        "frames",
        "writes",
        "syncs",
        "1s-syn"
    );
    for (name, events) in [("shell", shell()), ("top", top()), ("logs", logs())] {
        let raw: usize = events.iter().map(payload).sum();
        let mb = raw as f64 / 1e6;
        let minutes = events.last().map_or(0, |e| e.time_us) as f64 / 60e6;

        let (plain_s, plain_cpu) =
            measure(|| baseline(&dir.path().join(format!("{name}.raw")), &events));
        let rec_dir = dir.path().join(format!("async-{name}"));
        let (rec_s, rec_cpu) = measure(|| {
            runtime.block_on(write_async(&rec_dir, name, key.clone(), events.clone()));
        });
        let async_size = dir_size(&rec_dir);
        let live_dir = dir.path().join(format!("live-{name}"));
        let mut live = None;
        let (live_s, live_cpu) =
            measure(|| live = Some(write_live(&live_dir, name, key.clone(), &events)));
        let (live_stats, memory) = live.unwrap();
        let live_size = dir_size(&live_dir);
        let framed_dir = dir.path().join(format!("framed-{name}"));
        let framed_stats = write_framed(&framed_dir, name, key.clone(), &events);
        let framed_size = dir_size(&framed_dir);
        let whole = whole_file_size(&events);
        let ratio = |size: u64| raw as f64 / size as f64;
        println!(
            "{name:<6} {mb:>5.1} | {:>6.0} {:>6.0} {:>5.2} | {:>6.2} {:>6.2} | {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>5.0}% | {:>6} {:>6} {:>6} {:>6}",
            mb / plain_s,
            mb / rec_s,
            rec_s / plain_s,
            rec_cpu.as_secs_f64() * 1e3 / mb,
            plain_cpu.as_secs_f64() * 1e3 / mb,
            ratio(async_size),
            ratio(live_size),
            ratio(framed_size),
            ratio(whole as u64),
            100.0 * ratio(live_size) / ratio(whole as u64),
            live_stats.frames,
            live_stats.writes,
            live_stats.syncs,
            framed_stats.syncs,
        );
        println!(
            "       {minutes:.0} min of session time; live path {:.0} MB/s, {:.2} cpu ms/MB, {:.1} fdatasync/hour \
             (1 s frames: {:.0}/hour); compressor {:.1} MiB per session",
            mb / live_s,
            live_cpu.as_secs_f64() * 1e3 / mb,
            live_stats.syncs as f64 / minutes * 60.0,
            framed_stats.syncs as f64 / minutes * 60.0,
            memory as f64 / f64::from(1u32 << 20),
        );
    }
    println!(
        "columns: plain = MB/s of a buffered write of the raw bytes; rec = MB/s of the async SessionHandle fed as fast as\n\
         possible; x = rec time / plain time; cpu = process CPU ms per MB of output (rec, then base); ratios = raw / file:\n\
         async = SessionHandle, live = the live path (frames of at most 60 s or 1 MiB of session time, a zstd block flush\n\
         every second of session time), 1s-fr = the old layout (a closed frame per second), whole = one zstd frame of the\n\
         whole cast; l/w = live ratio / whole ratio; frames, writes, syncs = the live path's frames, write calls and\n\
         fdatasync/fsync calls; 1s-syn = syncs with a closed frame per second"
    );
}

/// Wall time and process CPU time (user + system, all threads) of `f`.
fn measure(f: impl FnOnce()) -> (f64, Duration) {
    let cpu = cpu_time();
    let start = Instant::now();
    f();
    (
        start.elapsed().as_secs_f64(),
        cpu_time().saturating_sub(cpu),
    )
}

/// utime + stime from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn baseline(path: &Path, events: &[Event]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for event in events {
        if let EventKind::Output(d) | EventKind::Input(d) = &event.kind {
            file.write_all(d).unwrap();
        }
    }
    file.into_inner().unwrap().sync_data().unwrap();
}

async fn write_async(dir: &Path, name: &str, key: Arc<SigningKey>, events: Vec<Event>) {
    let handle = SessionHandle::open(dir, meta(name), key, WriterConfig::default())
        .await
        .unwrap();
    for event in events {
        handle.record(event).await.unwrap();
    }
    handle.finish(SessionStatus::Complete).await.unwrap();
}

/// The old layout: one closed, checkpointed and synced frame per second of session time.
fn write_framed(dir: &Path, name: &str, key: Arc<SigningKey>, events: &[Event]) -> FileStats {
    let meta = meta(name);
    let header = format::encode_header(&meta).unwrap();
    let mut file = RecordingFile::create(dir, &meta, &header, key, 3).unwrap();
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    for chunk in events.chunk_by(|a, b| a.time_us / 1_000_000 == b.time_us / 1_000_000) {
        let mut plain = Vec::new();
        encoder.anchor(&mut plain);
        let mut stats = FrameEvents::default();
        for event in chunk {
            encode(&mut encoder, event, &mut plain, &mut stats);
        }
        file.append_frame(&plain, stats).unwrap();
    }
    file.append_manifest(SessionStatus::Complete, 0).unwrap();
    file.stats()
}

/// The live path, driven by session time the way the writer task is driven by the clock:
/// events collect between flush ticks (every second); at each tick they go into the open frame,
/// which is then closed if it holds 1 MiB or would span more than 60 s at the next tick, and
/// block-flushed otherwise; 1 MiB arriving between ticks closes the frame at once.
fn write_live(
    dir: &Path,
    name: &str,
    key: Arc<SigningKey>,
    events: &[Event],
) -> (FileStats, usize) {
    const FLUSH_US: u64 = 1_000_000;
    const FRAME_US: u64 = 60_000_000;
    const FRAME_BYTES: usize = 1 << 20;
    let meta = meta(name);
    let header = format::encode_header(&meta).unwrap();
    let mut file = RecordingFile::create(dir, &meta, &header, key, 3).unwrap();
    file.set_frame_size_hint(FRAME_BYTES).unwrap();
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    let mut opened_us = 0;
    let mut next_tick = FLUSH_US;
    let mut waiting: Vec<&Event> = Vec::new();
    let mut waiting_bytes = 0;
    let mut write = |file: &mut RecordingFile, waiting: &mut Vec<&Event>, now: u64, force: bool| {
        let mut plain = Vec::new();
        let mut stats = FrameEvents::default();
        if !file.frame_is_open() && !waiting.is_empty() {
            encoder.anchor(&mut plain);
            opened_us = now;
        }
        for event in waiting.drain(..) {
            encode(&mut encoder, event, &mut plain, &mut stats);
        }
        file.push(&plain, stats).unwrap();
        let due = file.open_frame_len() >= FRAME_BYTES || now + FLUSH_US - opened_us > FRAME_US;
        if force || (file.frame_is_open() && due) {
            file.close_frame().unwrap();
        } else {
            file.flush().unwrap();
        }
    };
    for event in events {
        while event.time_us >= next_tick {
            if !waiting.is_empty() || file.frame_is_open() {
                write(&mut file, &mut waiting, next_tick, false);
            }
            next_tick += FLUSH_US;
        }
        waiting_bytes += payload(event) + 32;
        waiting.push(event);
        if file.open_frame_len() + waiting_bytes >= FRAME_BYTES {
            write(&mut file, &mut waiting, event.time_us, true);
            waiting_bytes = 0;
        }
        if waiting.is_empty() {
            waiting_bytes = 0;
        }
    }
    write(&mut file, &mut waiting, next_tick, true);
    let memory = file.compressor_memory();
    file.append_manifest(SessionStatus::Complete, 0).unwrap();
    (file.stats(), memory)
}

fn encode(encoder: &mut Encoder, event: &Event, plain: &mut Vec<u8>, stats: &mut FrameEvents) {
    encoder.event(event, plain).unwrap();
    if stats.event_count == 0 {
        stats.first_event_us = encoder.written_us();
    }
    stats.last_event_us = encoder.written_us();
    stats.event_count += 1;
}

fn whole_file_size(events: &[Event]) -> usize {
    let mut plain = format::encode_header(&meta("whole")).unwrap();
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    for event in events {
        encoder.event(event, &mut plain).unwrap();
    }
    zstd::bulk::compress(&plain, 3).unwrap().len()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn payload(event: &Event) -> usize {
    match &event.kind {
        EventKind::Output(d) | EventKind::Input(d) => d.len(),
        _ => 0,
    }
}

/// A deterministic pseudo-random sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An interactive shell: typed commands echoed, then their output (listings, greps, diffs).
fn shell() -> Vec<Event> {
    let mut rng = Rng(7);
    let mut events = Vec::new();
    let mut t = 0u64;
    let commands = [
        "ls -la /var/log",
        "kubectl get pods -A",
        "grep -r timeout /etc",
        "cat /etc/os-release",
        "ps aux",
    ];
    let words = [
        "config",
        "nginx",
        "postgres",
        "systemd",
        "timeout",
        "worker",
        "kube-proxy",
        "coredns",
    ];
    while events.iter().map(payload).sum::<usize>() < 12_000_000 {
        let command = commands[rng.next(commands.len() as u64) as usize];
        for byte in command.bytes().chain(*b"\r") {
            t += 80_000 + rng.next(120_000);
            events.push(Event {
                time_us: t,
                kind: EventKind::Input(vec![byte]),
            });
            events.push(Event {
                time_us: t + 300,
                kind: EventKind::Output(vec![byte]),
            });
        }
        for _ in 0..(20 + rng.next(200)) {
            t += rng.next(3000);
            let line = format!(
                "-rw-r--r-- 1 root root {:>8} Nov {:>2} {:02}:{:02} {}-{}.log\r\n",
                rng.next(10_000_000),
                1 + rng.next(28),
                rng.next(24),
                rng.next(60),
                words[rng.next(8) as usize],
                rng.next(1000)
            );
            events.push(Event {
                time_us: t,
                kind: EventKind::Output(line.into_bytes()),
            });
        }
        events.push(Event {
            time_us: t + 500,
            kind: EventKind::Output(b"\x1b[32mroot@web-1\x1b[0m:~# ".to_vec()),
        });
    }
    events
}

/// A full-screen program redrawing 160x50 every second with small changes.
fn top() -> Vec<Event> {
    let mut rng = Rng(11);
    let mut events = Vec::new();
    let names = [
        "postgres",
        "nginx",
        "java",
        "python3",
        "node",
        "containerd",
        "kubelet",
        "etcd",
    ];
    for second in 0..4000u64 {
        let mut screen = String::from("\x1b[H\x1b[2J");
        let _ = write!(
            screen,
            "top - 12:{:02}:{:02} up 3 days, load average: 0.{:02}, 0.{:02}\x1b[K\r\n",
            second / 60 % 60,
            second % 60,
            rng.next(100),
            rng.next(100)
        );
        screen.push_str("\x1b[7m    PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND\x1b[m\x1b[K\r\n");
        for row in 0..45u64 {
            let _ = write!(
                screen,
                "\x1b[{};1H {:>6} root      20   0 {:>7} {:>6} {:>6} S {:>5.1} {:>5.1} {:>3}:{:02}.{:02} {}\x1b[K",
                row + 3,
                1000 + row * 37,
                100_000 + row * 1111,
                20_000 + rng.next(500),
                8_000 + row * 3,
                rng.next(400) as f64 / 10.0,
                (row % 30) as f64 / 10.0,
                row,
                second % 60,
                rng.next(100),
                names[(row % 8) as usize]
            );
        }
        events.push(Event {
            time_us: second * 1_000_000 + 3000,
            kind: EventKind::Output(screen.into_bytes()),
        });
    }
    events
}

/// A log stream (`kubectl logs -f`): structured lines, hundreds per second.
fn logs() -> Vec<Event> {
    let mut rng = Rng(5);
    let mut events = Vec::new();
    let paths = [
        "/v1/orders",
        "/v1/users",
        "/healthz",
        "/v1/cart/items",
        "/metrics",
    ];
    let mut t = 0u64;
    for i in 0..180_000u64 {
        t += rng.next(4000);
        let line = format!(
            "2026-11-27T13:{:02}:{:02}.{:03}Z INFO  http request_id={:016x} method=GET path={} status={} latency_ms={} bytes={}\n",
            t / 60_000_000 % 60,
            t / 1_000_000 % 60,
            t / 1000 % 1000,
            rng.next(u64::MAX),
            paths[rng.next(5) as usize],
            [200, 200, 200, 404, 500][rng.next(5) as usize],
            rng.next(900),
            rng.next(100_000)
        );
        let _ = i;
        events.push(Event {
            time_us: t,
            kind: EventKind::Output(line.into_bytes()),
        });
    }
    events
}

fn meta(name: &str) -> SessionMeta {
    custody_recorder::sample::session_meta(&format!("bench-{name}"), (160, 50))
}
