//! Player seek benchmark: a one-hour synthetic tty session (shell lines and a full-screen
//! redraw every second, frames of 60 s with keyframes as the writer cuts them). Reports the time
//! the player takes to show the screen at 59:00, from the start and back from the end, against
//! replaying every event from the start in the same run, and their ratio.
//!
//! Run with `cargo bench -p custody-replay --bench seek`.

use std::time::{Duration, Instant};

use custody_recorder::keyframe::{TerminalState, build_seekpoints, replay};
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_replay::{Integrity, KeyOrigin, PlayOptions, Player, Session, Timeline};

const COLS: u16 = 120;
const ROWS: u16 = 40;
const ROUNDS: usize = 5;
/// 59:00, and 59:59.9 (the end of the last frame: the most events replayed after a keyframe).
const TARGETS_US: [u64; 2] = [59 * 60 * 1_000_000, 3_599_900_000];

fn main() -> anyhow::Result<()> {
    let meta = custody_recorder::sample::session_meta("seek-bench", (COLS, ROWS));
    let events = custody_recorder::sample::one_hour_session(ROWS);
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
