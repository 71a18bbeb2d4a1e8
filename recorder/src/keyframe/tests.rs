//! Tests of keyframes and seeking.

use super::*;
use crate::model::{EffectiveIdentity, Initiator, SessionKind};

fn meta(tty: bool) -> SessionMeta {
    SessionMeta {
        session_id: "s".into(),
        kind: SessionKind::Exec,
        initiator: Initiator::default(),
        effective: EffectiveIdentity::default(),
        cluster: "c".into(),
        namespace: "n".into(),
        pod: "p".into(),
        container: String::new(),
        command: vec!["sh".into()],
        tty,
        client_addr: "127.0.0.1:1".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "g".into(),
        replica_id: None,
        started_at_us: 0,
        term_size: Some((40, 10)),
    }
}

fn out(time_us: u64, s: &[u8]) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(s.to_vec()),
    }
}

/// A session that exercises what a naive keyframe loses: scroll regions, the alternate screen,
/// saved cursors, colours, resizes, and UTF-8 characters split across events.
fn tricky_events() -> Vec<Event> {
    let mut events = Vec::new();
    let mut t = 0;
    let mut push = |kind: EventKind| {
        t += 2_000_000;
        events.push(Event { time_us: t, kind });
    };
    for i in 0..30 {
        push(EventKind::Output(
            format!("\x1b[3{}mline {i} \x1b[0m\r\n", i % 8).into_bytes(),
        ));
        if i == 10 {
            push(EventKind::Output(b"\x1b[2;8r\x1b7\x1b[5;5Hsaved".to_vec()));
        }
        if i == 12 {
            push(EventKind::Output(
                b"\x1b8restored\x1b[?1049h\x1b[2J\x1b[Halt".to_vec(),
            ));
        }
        if i == 14 {
            push(EventKind::Resize { cols: 50, rows: 12 });
        }
        if i == 18 {
            push(EventKind::Output(b"\x1b[?1049l\x1b[r caf\xc3".to_vec()));
            push(EventKind::Output(b"\xa9 \xe2\x82".to_vec()));
            push(EventKind::Output(b"\xac".to_vec()));
        }
        if i % 3 == 0 {
            push(EventKind::Input(b"x".to_vec()));
        }
    }
    events
}

fn frames_of(events: &[Event], per_frame: usize) -> Vec<usize> {
    let mut counts = vec![0]; // the header frame
    let mut left = events.len();
    while left > 0 {
        let n = left.min(per_frame);
        counts.push(n);
        left -= n;
    }
    counts
}

fn assert_same(a: &TerminalState, b: &TerminalState) {
    assert_eq!(a.lines(), b.lines());
    assert_eq!(a.cursor(), b.cursor());
    assert_eq!(a.size(), b.size());
    assert_eq!(a.terminal().dump(), b.terminal().dump());
}

#[test]
fn seek_equals_full_replay_at_every_event() {
    let meta = meta(true);
    let events = tricky_events();
    for per_frame in [1, 2, 3, 7, 1000] {
        let seekpoints: Vec<Seekpoint> =
            build_seekpoints(&meta, &events, &frames_of(&events, per_frame))
                .unwrap()
                .into_iter()
                .flatten()
                .collect();
        assert!(seekpoints.len() > 1 || per_frame == 1000);
        let targets = events.iter().flat_map(|e| [e.time_us - 1, e.time_us]);
        for target in targets.chain([0, u64::MAX]) {
            let full = replay(TerminalState::for_session(&meta).unwrap(), &events, target);
            let fast = seek(
                TerminalState::for_session(&meta).unwrap(),
                &seekpoints,
                &events,
                target,
            )
            .unwrap();
            assert_same(&full, &fast);
        }
    }
}

#[test]
fn keyframe_blob_round_trips() {
    let mut state = TerminalState::new(20, 5).unwrap();
    state.feed(b"\x1b[1;31mred\x1b[0m \xe2\x82");
    let keyframe = state.keyframe();
    assert_eq!(keyframe.pending_utf8, b"\xe2\x82");
    let decoded = Keyframe::decode(&keyframe.encode().unwrap()).unwrap();
    assert_eq!(decoded, keyframe);
    let mut restored = TerminalState::from_keyframe(&decoded).unwrap();
    restored.feed(b"\xac");
    state.feed(b"\xac");
    assert_same(&state, &restored);
    assert!(restored.lines()[0].starts_with("red €"));
}

#[test]
fn corrupt_blobs_are_errors_not_panics() {
    let blob = TerminalState::new(10, 3)
        .unwrap()
        .keyframe()
        .encode()
        .unwrap();
    for cut in 0..blob.len() {
        let _ = Keyframe::decode(&blob[..cut]);
    }
    assert!(Keyframe::decode(&[9, 0, 0]).is_err());
    let mut flipped = blob.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let _ = Keyframe::decode(&flipped);
}

#[test]
fn non_tty_sessions_have_no_seekpoints() {
    let events = vec![out(1, b"log line\n")];
    assert_eq!(
        build_seekpoints(&meta(false), &events, &[0, 1]).unwrap(),
        [None, None]
    );
}

#[test]
fn invalid_utf8_shows_replacement_characters() {
    let mut state = TerminalState::new(10, 2).unwrap();
    state.feed(b"a\xffb");
    assert_eq!(state.lines()[0].trim_end(), "a\u{fffd}b");
}

/// A 0-column or 0-row resize (older recordings of a 0x0 pseudo-terminal) leaves the size
/// alone instead of shrinking the screen to one cell.
#[test]
fn a_resize_of_0_columns_or_rows_keeps_the_size() {
    let mut state = TerminalState::new(40, 10).unwrap();
    for (cols, rows) in [(0, 0), (0, 5), (5, 0)] {
        state.apply(&Event {
            time_us: 0,
            kind: EventKind::Resize { cols, rows },
        });
        assert_eq!(state.size(), (40, 10));
    }
    state.apply(&Event {
        time_us: 0,
        kind: EventKind::Resize { cols: 50, rows: 12 },
    });
    assert_eq!(state.size(), (50, 12));
}
