//! Seek benchmark: a one-hour synthetic tty session (a shell printing lines and a full-screen
//! program redrawing every second), cut into frames of at most 60 s or 1 MiB like the writer
//! does, indexed with keyframes into a real `SQLite` file. Reports the time to show the screen an
//! hour in from the nearest keyframe versus replaying from the start, and their ratio.
//!
//! Run with `cargo bench -p custody-recorder --bench seek`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use custody_recorder::index::{FrameFacts, Index, IndexedSession, SessionEnd};
use custody_recorder::keyframe::{TerminalState, replay, seek};
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};

fn main() -> anyhow::Result<()> {
    for redraws in [1, 10] {
        println!("== one hour, {redraws} full-screen redraw(s) per second ==");
        run(&one_hour_session(redraws))?;
    }
    Ok(())
}

fn run(events: &[Event]) -> anyhow::Result<()> {
    let meta = meta();
    let events = events.to_vec();
    let frames = frames(&events);
    let bytes: usize = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Output(b) => b.len(),
            _ => 0,
        })
        .sum();
    println!(
        "session: {} events, {:.1} MiB output, {} frames, {:.0} s",
        events.len(),
        mib(bytes),
        frames.len(),
        Duration::from_micros(events.last().map_or(0, |e| e.time_us)).as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let mut index = Index::open(&dir.path().join("index.sqlite"))?;
    let started = Instant::now();
    let end = SessionEnd {
        status: SessionStatus::Complete,
        ended_at_us: Some(3_600_000_000),
        chain_head: Some([1; 32]),
        damage: None,
    };
    let indexed = IndexedSession::derive(
        &meta,
        &events,
        &frames,
        end,
        &dir.path().join("bench.cast.zst"),
        0,
    )?;
    let derive = started.elapsed();
    let started = Instant::now();
    index.upsert(&indexed)?;
    let upsert = started.elapsed();
    let keyframe_bytes: usize = indexed
        .frames
        .iter()
        .filter_map(|f| f.keyframe.as_ref())
        .map(Vec::len)
        .sum();
    println!(
        "index: derive (keyframes + text) {:.0} ms, upsert {:.0} ms, keyframes {:.1} KiB total",
        ms(derive),
        ms(upsert),
        kib(keyframe_bytes)
    );

    // Half a second before the end, and the end of the frame with the most output (the most a
    // seek from a frame-start keyframe replays, with 60 s / 1 MiB frames).
    let worst = frames
        .iter()
        .skip(1)
        .scan(0usize, |next, f| {
            let range = *next..*next + f.event_count as usize;
            *next = range.end;
            Some((output_bytes(&events[range]), f.last_event_us))
        })
        .max()
        // Just before its last event: at the event itself the next frame's keyframe applies.
        .map_or(0, |(_, end)| end.saturating_sub(1));
    for target in [3_599_500_000, worst] {
        seek_to(&meta, &index, &events, target)?;
    }
    Ok(())
}

fn output_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Output(b) => b.len(),
            _ => 0,
        })
        .sum()
}

fn seek_to(meta: &SessionMeta, index: &Index, events: &[Event], target: u64) -> anyhow::Result<()> {
    let initial = || TerminalState::for_session(meta);
    let mut from_keyframes = Vec::new();
    let mut from_start = Vec::new();
    let mut screens_equal = true;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let seekpoints = index.seekpoints(&meta.session_id)?;
        let fast = seek(initial()?, &seekpoints, events, target)?;
        from_keyframes.push(started.elapsed());

        let started = Instant::now();
        let full = replay(initial()?, events, target);
        from_start.push(started.elapsed());
        screens_equal &= fast.lines() == full.lines() && fast.cursor() == full.cursor();
    }
    let fast = median(&mut from_keyframes);
    let slow = median(&mut from_start);
    println!(
        "seek to {:.1} s: from keyframes {:.2} ms (reading them from the index included), \
         replay from start {:.1} ms, ratio {:.0}x, screens equal: {screens_equal}",
        Duration::from_micros(target).as_secs_f64(),
        ms(fast),
        ms(slow),
        slow.as_secs_f64() / fast.as_secs_f64().max(1e-9)
    );
    println!(
        "target: seek well under 100 ms (50 ms budget) -> {}",
        if fast < Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
    anyhow::ensure!(screens_equal, "seek and full replay disagree");
    Ok(())
}

fn meta() -> SessionMeta {
    SessionMeta {
        session_id: "bench".into(),
        kind: SessionKind::Exec,
        initiator: Initiator::default(),
        effective: EffectiveIdentity::default(),
        cluster: "c".into(),
        namespace: "n".into(),
        pod: "p".into(),
        container: "main".into(),
        command: vec!["bash".into()],
        tty: true,
        client_addr: "127.0.0.1:1".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "g".into(),
        replica_id: None,
        started_at_us: 0,
        term_size: Some((COLS, ROWS)),
    }
}

/// Ten coloured shell lines and `redraws` full-screen redraws (like `top`) per second, for an
/// hour; every ten minutes the program switches between the main and the alternate screen.
fn one_hour_session(redraws: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for second in 0..3600u64 {
        let base = second * 1_000_000;
        for i in 0..10u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let line = format!(
                "\x1b[3{}m{second:>5}.{i}\x1b[0m pod/web-{:x} \x1b[1mReady\x1b[0m {}\r\n",
                seed % 8,
                seed % 4096,
                "x".repeat(usize::try_from(seed % 40).unwrap_or(0))
            );
            events.push(Event {
                time_us: base + i * 90_000,
                kind: EventKind::Output(line.into()),
            });
        }
        if second % 600 == 300 {
            events.push(output(base + 905_000, b"\x1b[?1049h".to_vec()));
        }
        if second % 600 == 0 && second > 0 {
            events.push(output(base + 905_000, b"\x1b[?1049l".to_vec()));
        }
        for k in 0..redraws {
            let mut screen = String::from("\x1b[H\x1b[2J");
            for row in 1..=ROWS {
                let _ = write!(
                    screen,
                    "\x1b[{row};1H\x1b[7m{row:>3}\x1b[0m cpu {:>3}% mem {:>5} KiB \x1b[3{}m{}\x1b[0m",
                    (second + k + u64::from(row)) % 100,
                    (second * 7 + k) % 99_999,
                    row % 8,
                    "#".repeat(usize::from(row) * 2)
                );
            }
            let at = base + 950_000 - (redraws - 1 - k) * 4_000;
            events.push(output(at, screen.into_bytes()));
        }
    }
    events
}

fn output(time_us: u64, bytes: Vec<u8>) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(bytes),
    }
}

/// Cuts frames as the writer does: a new frame after `FRAME_US` (60 s, the writer's
/// `frame_max_duration`) or 1 MiB of events, whichever comes first. Set
/// `CUSTODY_BENCH_FRAME_S` to measure other frame lengths (1 is the old one-frame-per-second
/// layout).
fn frames(events: &[Event]) -> Vec<FrameFacts> {
    let mut out = vec![frame(0, 0, 0, 0)];
    let (mut start, mut size) = (0usize, 0usize);
    for (i, e) in events.iter().enumerate() {
        if let EventKind::Output(b) = &e.kind {
            size += b.len();
        }
        let last = i + 1 == events.len();
        if last || size >= 1 << 20 || events[i + 1].time_us - events[start].time_us >= *FRAME_US {
            let index = u32::try_from(out.len()).unwrap_or(u32::MAX);
            let mut f = frame(index, events[start].time_us, e.time_us, i + 1 - start);
            f.offset = u64::from(index);
            out.push(f);
            start = i + 1;
            size = 0;
        }
    }
    out
}

fn frame(index: u32, first: u64, last: u64, count: usize) -> FrameFacts {
    FrameFacts {
        index,
        offset: 0,
        compressed_len: 0,
        first_event_us: first,
        last_event_us: last,
        event_count: u32::try_from(count).unwrap_or(u32::MAX),
        chain_hash: [0; 32],
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::cast_precision_loss, reason = "display only")]
fn mib(n: usize) -> f64 {
    n as f64 / f64::from(1u32 << 20)
}

#[allow(clippy::cast_precision_loss, reason = "display only")]
fn kib(n: usize) -> f64 {
    n as f64 / 1024.0
}

const COLS: u16 = 120;
const ROWS: u16 = 40;
const ROUNDS: usize = 5;
/// Frame length: the writer's default 60 s, or `CUSTODY_BENCH_FRAME_S` seconds.
static FRAME_US: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    std::env::var("CUSTODY_BENCH_FRAME_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        * 1_000_000
});
