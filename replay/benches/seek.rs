//! Player seek benchmark: a one-hour synthetic tty session (shell lines and a full-screen
//! redraw every second, frames of 60 s with keyframes as the writer cuts them). Reports the time
//! the player takes to show the screen at 59:00, from the start and back from the end, against
//! replaying every event from the start in the same run, and their ratio.
//!
//! Run with `cargo bench -p custody-replay --bench seek`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use custody_recorder::keyframe::{TerminalState, build_seekpoints, replay};
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};
use custody_replay::{Integrity, KeyOrigin, PlayOptions, Player, Session, Timeline};

const COLS: u16 = 120;
const ROWS: u16 = 40;
const ROUNDS: usize = 5;
/// 59:00, and 59:59.9 (the end of the last frame: the most events replayed after a keyframe).
const TARGETS_US: [u64; 2] = [59 * 60 * 1_000_000, 3_599_900_000];

fn main() -> anyhow::Result<()> {
    let meta = meta();
    let events = one_hour_session();
    let counts = frame_counts(&events);
    let started = Instant::now();
    let seekpoints: Vec<_> = build_seekpoints(&meta, &events, &counts)?
        .into_iter()
        .flatten()
        .collect();
    let build = started.elapsed();
    println!(
        "session: {} events, {} frames, {} keyframes (built in {:.0} ms)",
        events.len(),
        counts.len(),
        seekpoints.len(),
        ms(build)
    );
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
    for target in TARGETS_US {
        seek_to(&mut player, &events, target)?;
    }
    Ok(())
}

fn seek_to(player: &mut Player, events: &[Event], target_us: u64) -> anyhow::Result<()> {
    let (mut forward, mut backward, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let mut equal = true;
    for _ in 0..ROUNDS {
        player.seek_to(0)?;
        let started = Instant::now();
        player.seek_to(target_us)?;
        forward.push(started.elapsed());
        let fast = player.screen().lines();

        player.seek_to(u64::MAX)?;
        let started = Instant::now();
        player.seek_to(target_us)?;
        backward.push(started.elapsed());
        equal &= player.screen().lines() == fast;

        let started = Instant::now();
        let reference = replay(TerminalState::new(COLS, ROWS)?, events, target_us);
        full.push(started.elapsed());
        equal &= reference.lines() == fast && reference.cursor() == player.screen().cursor();
    }
    let (forward, backward, full) = (
        median(&mut forward),
        median(&mut backward),
        median(&mut full),
    );
    println!(
        "seek to {}: from the start {:.2} ms, back from the end {:.2} ms; full replay {:.1} ms; \
         ratio {:.0}x; screens equal: {equal}",
        custody_replay::view::clock_text(target_us),
        ms(forward),
        ms(backward),
        ms(full),
        full.as_secs_f64() / forward.max(backward).as_secs_f64().max(1e-9)
    );
    println!(
        "target: any point within 100 ms -> {}",
        if forward.max(backward) < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
    anyhow::ensure!(equal, "seek and full replay disagree");
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
        started_at_us: 0,
        term_size: Some((COLS, ROWS)),
    }
}

/// Ten coloured shell lines and one full-screen redraw (like `top`) per second, for an hour,
/// with a typed command every ten seconds.
fn one_hour_session() -> Vec<Event> {
    let mut events = Vec::new();
    for second in 0..3600u64 {
        let base = second * 1_000_000;
        if second % 10 == 0 {
            events.push(Event {
                time_us: base,
                kind: EventKind::Input(format!("kubectl get pods -w {second}\r").into_bytes()),
            });
        }
        for i in 0..10u64 {
            let line = format!(
                "\x1b[3{}m{second:>5}.{i}\x1b[0m pod/web-{:x} \x1b[1mReady\x1b[0m {}\r\n",
                (second + i) % 8,
                (second * 31 + i) % 4096,
                "x".repeat(usize::try_from((second + i * 7) % 40).unwrap_or(0))
            );
            events.push(output(base + 1 + i * 90_000, line.into_bytes()));
        }
        let mut screen = String::from("\x1b[H\x1b[2J");
        for row in 1..=ROWS {
            let _ = write!(
                screen,
                "\x1b[{row};1H\x1b[7m{row:>3}\x1b[0m cpu {:>3}% mem {:>5} KiB \x1b[3{}m{}\x1b[0m",
                (second + u64::from(row)) % 100,
                (second * 7) % 99_999,
                row % 8,
                "#".repeat(usize::from(row) * 2)
            );
        }
        events.push(output(base + 950_000, screen.into_bytes()));
    }
    events
}

fn output(time_us: u64, bytes: Vec<u8>) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(bytes),
    }
}

/// Frames of 60 s or 1 MiB, as the writer cuts them (the header frame counts 0 events).
fn frame_counts(events: &[Event]) -> Vec<usize> {
    let mut counts = vec![0];
    let (mut start, mut size) = (0usize, 0usize);
    for (i, e) in events.iter().enumerate() {
        if let EventKind::Output(b) = &e.kind {
            size += b.len();
        }
        let last = i + 1 == events.len();
        if last || size >= 1 << 20 || events[i + 1].time_us - events[start].time_us >= 60_000_000 {
            counts.push(i + 1 - start);
            start = i + 1;
            size = 0;
        }
    }
    counts
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
