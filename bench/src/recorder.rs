//! Scenario 6: the recorder on its own. Write throughput, CPU and compression ratio of the
//! session writer (`custody_recorder::writer::SessionHandle`, as the gateway uses it) on a
//! shell session, a full-screen redrawing program and a log stream; and the player's seek
//! time an hour into a session.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_recorder::file::{FrameEvents, RecordingFile};
use custody_recorder::format::{self, Encoder, TimePrecision};
use custody_recorder::keyframe::{TerminalState, build_seekpoints, replay};
use custody_recorder::model::{Event, EventKind, SessionMeta, SessionStatus};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use custody_replay::{Integrity, KeyOrigin, PlayOptions, Player, Session, Timeline};
use ed25519_dalek::SigningKey;
use serde_json::json;

use crate::Plan;
use crate::procs::usage;
use crate::report::{Report, Section, Summary};

/// Runs the scenario.
pub fn run(
    plan: &Plan,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let key = Arc::new(SigningKey::from_bytes(&[42; 32]));
    let scale = if plan.mode == "quick" { 4 } else { 1 };
    let mut section = Section::new(
        "6a. Recorder write throughput and compression",
        &format!(
            "Synthetic terminal output fed as fast as possible into the session writer the gateway uses (zstd, SHA-256 \
             chain, Ed25519 signature and fdatasync per closed frame); MB/s of output recorded, CPU ms per MB of this \
             process, and ratio = output bytes / recording file bytes. {} runs{}; median (min–max).",
            plan.runs,
            if scale > 1 {
                ", each input a quarter of the full size in this mode"
            } else {
                ""
            }
        ),
        &["output", "MB", "MB/s", "CPU ms/MB", "compression ratio"],
    );
    let mut rows = Vec::new();
    for (name, events) in [
        ("shell session", shell(12_000_000 / scale)),
        ("full-screen redraw (top)", top(4000 / scale as u64)),
        ("log stream", logs(180_000 / scale as u64)),
    ] {
        let raw: usize = events.iter().map(payload).sum();
        #[allow(clippy::cast_precision_loss, reason = "byte counts")]
        let mb = raw as f64 / 1e6;
        let (mut speeds, mut cpus, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..plan.runs {
            let out = dir.join(format!("rec-{}-{run}", name.replace(' ', "-")));
            let cpu = usage(std::process::id()).cpu_s;
            let started = Instant::now();
            runtime.block_on(async {
                let handle = SessionHandle::open(
                    &out,
                    meta(name, (160, 50)),
                    key.clone(),
                    WriterConfig::default(),
                )
                .await?;
                for event in events.clone() {
                    handle.record(event).await?;
                }
                handle.finish(SessionStatus::Complete).await?;
                anyhow::Ok(())
            })?;
            let elapsed = started.elapsed().as_secs_f64();
            speeds.push(mb / elapsed);
            cpus.push((usage(std::process::id()).cpu_s - cpu) * 1e3 / mb);
            #[allow(clippy::cast_precision_loss, reason = "byte counts")]
            ratios.push(raw as f64 / dir_size(&out) as f64);
            let _ = std::fs::remove_dir_all(&out);
        }
        let (s, c, r) = (
            Summary::of(&speeds),
            Summary::of(&cpus),
            Summary::of(&ratios),
        );
        section.row(vec![
            name.to_owned(),
            format!("{mb:.1}"),
            s.show(0),
            c.show(2),
            r.show(1),
        ]);
        rows.push(
            json!({"output": name, "mb": mb, "mb_per_s": s.json(), "cpu_ms_per_mb": c.json(),
            "compression_ratio": r.json()}),
        );
    }
    let compressor = compressor_kib(dir, key)?;
    let _ = write!(
        section.note,
        " The zstd compressor a session keeps for its whole life (1 MiB frames, level 3) has {compressor:.0} KiB \
         allocated after its first frame (`ZSTD_sizeof_CCtx`; only the pages it has touched are resident)."
    );
    report.json.insert("recorder".into(), json!(rows));
    report
        .json
        .insert("compressor_kib_per_session".into(), json!(compressor));
    report.add(section);
    seek(plan, report)
}

/// The memory of one session's zstd compressor after its first frame, sized as the writer
/// sizes it.
fn compressor_kib(dir: &Path, key: Arc<SigningKey>) -> anyhow::Result<f64> {
    let meta = meta("compressor", (120, 40));
    let header = format::encode_header(&meta)?;
    let path = dir.join("compressor");
    let mut file = RecordingFile::create(&path, &meta, &header, key, 3)?;
    file.set_frame_size_hint(WriterConfig::default().frame_max_bytes)?;
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    let mut plain = Vec::new();
    encoder.anchor(&mut plain);
    encoder.event(&out(1000, b"$ ls\r\n".to_vec()), &mut plain)?;
    file.push(&plain, FrameEvents::default())?;
    file.flush()?;
    let kib = file.compressor_memory() as f64 / 1024.0;
    drop(file);
    let _ = std::fs::remove_dir_all(&path);
    Ok(kib)
}

/// The player's seek an hour into a session.
fn seek(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    const COLS: u16 = 120;
    const ROWS: u16 = 40;
    let meta = meta("seek", (COLS, ROWS));
    let events = custody_recorder::sample::one_hour_session(ROWS);
    let counts = frame_counts(&events);
    let built = Instant::now();
    let seekpoints: Vec<_> = build_seekpoints(&meta, &events, &counts)?
        .into_iter()
        .flatten()
        .collect();
    let build_ms = built.elapsed().as_secs_f64() * 1e3;
    let mut timeline = Timeline::new(meta.clone(), seekpoints);
    for event in &events {
        timeline.push_verified(event.clone());
    }
    let session = Session {
        timeline,
        status: SessionStatus::Complete,
        integrity: Integrity::Intact,
        key: KeyOrigin::NamedInFile,
        live: false,
    };
    let mut player = Player::new(session, &PlayOptions::default())?;
    let mut section = Section::new(
        "6b. Seek in an hour-long session",
        &format!(
            "A one-hour tty session at {COLS}x{ROWS} ({} events: ten coloured shell lines and one full-screen redraw per \
             second, a typed command every ten seconds), cut into frames of at most 60 s or 1 MiB with a keyframe each, as \
             the writer cuts them; the player (`custody_replay::Player::seek_to`) reaches each point from the start and back \
             from the end; compared with replaying every event from a blank terminal (the screens must be equal). Keyframes \
             built in {build_ms:.0} ms. {} runs; median (min–max).",
            events.len(),
            plan.runs
        ),
        &[
            "target",
            "from the start ms",
            "back from the end ms",
            "full replay ms",
        ],
    );
    let mut worst: f64 = 0.0;
    let mut rows = Vec::new();
    for target in [30 * 60 * 1_000_000u64, 59 * 60 * 1_000_000, 3_599_900_000] {
        let (mut fwd, mut back, mut full) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            player.seek_to(0)?;
            let t = Instant::now();
            player.seek_to(target)?;
            fwd.push(ms(t.elapsed()));
            let fast = player.screen().lines();
            player.seek_to(u64::MAX)?;
            let t = Instant::now();
            player.seek_to(target)?;
            back.push(ms(t.elapsed()));
            anyhow::ensure!(player.screen().lines() == fast, "seek results differ");
            let t = Instant::now();
            let reference = replay(TerminalState::new(COLS, ROWS)?, &events, target);
            full.push(ms(t.elapsed()));
            anyhow::ensure!(reference.lines() == fast, "seek and full replay disagree");
        }
        let (f, b, r) = (Summary::of(&fwd), Summary::of(&back), Summary::of(&full));
        worst = worst.max(f.max).max(b.max);
        let label = custody_replay::view::clock_text(target);
        section.row(vec![label.clone(), f.show(2), b.show(2), r.show(0)]);
        rows.push(
            json!({"target": label, "from_start_ms": f.json(), "from_end_ms": b.json(),
            "full_replay_ms": r.json()}),
        );
    }
    report.check(
        "seek anywhere in an hour-long session: under 100 ms",
        format!("worst {worst:.1} ms"),
        Some(worst < 100.0),
    );
    report.json.insert("seek".into(), json!(rows));
    report.add(section);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
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

fn out(time_us: u64, bytes: Vec<u8>) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(bytes),
    }
}

/// An interactive shell: typed commands echoed, then listings.
fn shell(bytes: usize) -> Vec<Event> {
    let mut rng = Rng(7);
    let mut events = Vec::new();
    let mut total = 0;
    let mut t = 0u64;
    let commands = [
        "ls -la /var/log",
        "kubectl get pods -A",
        "grep -r timeout /etc",
        "ps aux",
    ];
    let words = [
        "config", "nginx", "postgres", "systemd", "timeout", "worker", "coredns",
    ];
    while total < bytes {
        let command = commands[usize::try_from(rng.next(4)).unwrap_or(0)];
        for byte in command.bytes().chain(*b"\r") {
            t += 80_000 + rng.next(120_000);
            events.push(Event {
                time_us: t,
                kind: EventKind::Input(vec![byte]),
            });
            events.push(out(t + 300, vec![byte]));
            total += 2;
        }
        for _ in 0..(20 + rng.next(200)) {
            t += rng.next(3000);
            let line = format!(
                "-rw-r--r-- 1 root root {:>8} Nov {:>2} {:02}:{:02} {}-{}.log\r\n",
                rng.next(10_000_000),
                1 + rng.next(28),
                rng.next(24),
                rng.next(60),
                words[usize::try_from(rng.next(7)).unwrap_or(0)],
                rng.next(1000)
            );
            total += line.len();
            events.push(out(t, line.into_bytes()));
        }
        events.push(out(t + 500, b"\x1b[32mroot@web-1\x1b[0m:~# ".to_vec()));
    }
    events
}

/// A full-screen program redrawing 160x50 every second with small changes.
fn top(seconds: u64) -> Vec<Event> {
    let mut rng = Rng(11);
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
    let mut events = Vec::new();
    for second in 0..seconds {
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
                "\x1b[{};1H {:>6} root      20   0 {:>7} {:>6} {:>6} S {:>3}.{} {:>3}.{} {:>3}:{:02}.{:02} {}\x1b[K",
                row + 3,
                1000 + row * 37,
                100_000 + row * 1111,
                20_000 + rng.next(500),
                8_000 + row * 3,
                rng.next(40),
                rng.next(10),
                row % 3,
                row % 10,
                row,
                second % 60,
                rng.next(100),
                names[usize::try_from(row % 8).unwrap_or(0)]
            );
        }
        events.push(out(second * 1_000_000 + 3000, screen.into_bytes()));
    }
    events
}

/// A log stream: structured lines, hundreds per second.
fn logs(lines: u64) -> Vec<Event> {
    let mut rng = Rng(5);
    let paths = [
        "/v1/orders",
        "/v1/users",
        "/healthz",
        "/v1/cart/items",
        "/metrics",
    ];
    let mut events = Vec::new();
    let mut t = 0u64;
    for _ in 0..lines {
        t += rng.next(4000);
        let line = format!(
            "2026-11-27T13:{:02}:{:02}.{:03}Z INFO  http request_id={:016x} method=GET path={} status={} latency_ms={} bytes={}\n",
            t / 60_000_000 % 60,
            t / 1_000_000 % 60,
            t / 1000 % 1000,
            rng.next(u64::MAX),
            paths[usize::try_from(rng.next(5)).unwrap_or(0)],
            [200, 200, 200, 404, 500][usize::try_from(rng.next(5)).unwrap_or(0)],
            rng.next(900),
            rng.next(100_000)
        );
        events.push(out(t, line.into_bytes()));
    }
    events
}

/// Frames of 60 s or 1 MiB, as the writer cuts them (the header frame counts 0 events).
fn frame_counts(events: &[Event]) -> Vec<usize> {
    let mut counts = vec![0];
    let (mut start, mut size) = (0usize, 0usize);
    for (i, e) in events.iter().enumerate() {
        size += payload(e);
        let last = i + 1 == events.len();
        if last || size >= 1 << 20 || events[i + 1].time_us - events[start].time_us >= 60_000_000 {
            counts.push(i + 1 - start);
            start = i + 1;
            size = 0;
        }
    }
    counts
}

fn meta(name: &str, size: (u16, u16)) -> SessionMeta {
    let id = format!(
        "bench-{}",
        name.split_whitespace().next().unwrap_or("session")
    );
    custody_recorder::sample::session_meta(&id, size)
}
