//! The player without a terminal: seeking matches a full replay, search, typed commands, skip
//! idle, live updates and the unverified tail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

use std::time::Duration;

use custody_recorder::keyframe::{TerminalState, build_seekpoints, replay};
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};
use custody_replay::{
    Integrity, Key, KeyOrigin, LiveUpdate, PlayOptions, Player, Session, Timeline,
};

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
        client_addr: "a".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "g".into(),
        replica_id: None,
        started_at_us: 0,
        term_size: Some((30, 6)),
    }
}

fn out(time_us: u64, text: &str) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(text.as_bytes().to_vec()),
    }
}

fn input(time_us: u64, text: &str) -> Event {
    Event {
        time_us,
        kind: EventKind::Input(text.as_bytes().to_vec()),
    }
}

/// Ten minutes of a line a second with a screen clear every 45 s, a command every 30 s.
fn long_events() -> Vec<Event> {
    let mut events = Vec::new();
    for s in 0..600u64 {
        let t = s * 1_000_000;
        if s % 30 == 0 {
            events.push(input(t, &format!("cmd-{s}\r")));
        }
        if s % 45 == 0 {
            events.push(out(t + 1, "\x1b[H\x1b[2J"));
        }
        events.push(out(t + 2, &format!("line {s} \x1b[1mbold\x1b[0m\r\n")));
    }
    events
}

fn session(events: &[Event], seekpoints: bool) -> Session {
    let meta = meta(true);
    let sps = if seekpoints {
        // Frames of 20 events.
        let mut counts = vec![0];
        counts.extend(events.chunks(20).map(<[Event]>::len));
        build_seekpoints(&meta, events, &counts)
            .unwrap()
            .into_iter()
            .flatten()
            .collect()
    } else {
        Vec::new()
    };
    let mut timeline = Timeline::new(meta, sps);
    for e in events {
        timeline.push_verified(e.clone());
    }
    Session {
        timeline,
        status: SessionStatus::Complete,
        integrity: Integrity::Intact,
        key: KeyOrigin::NamedInFile,
        live: false,
    }
}

#[test]
fn every_seek_shows_what_a_full_replay_shows() {
    let events = long_events();
    for with_keyframes in [true, false] {
        let mut player =
            Player::new(session(&events, with_keyframes), &PlayOptions::default()).unwrap();
        for target_s in [599, 3, 300, 299, 0, 45, 44, 450, 600, 12, 13] {
            let target = target_s * 1_000_000 + 5;
            player.seek_to(target).unwrap();
            let reference = replay(TerminalState::new(30, 6).unwrap(), &events, target);
            assert_eq!(
                player.screen().lines(),
                reference.lines(),
                "at {target_s} s"
            );
            assert_eq!(
                player.screen().cursor(),
                reference.cursor(),
                "at {target_s} s"
            );
        }
    }
}

#[test]
fn playing_forward_applies_events_as_time_passes() {
    let events = long_events();
    let mut player = Player::new(
        session(&events, true),
        &PlayOptions {
            speed: 16,
            ..PlayOptions::default()
        },
    )
    .unwrap();
    for _ in 0..40 {
        player.tick(Duration::from_millis(250)).unwrap();
    }
    assert_eq!(player.position_us(), 160_000_000);
    let reference = replay(TerminalState::new(30, 6).unwrap(), &events, 160_000_000);
    assert_eq!(player.screen().lines(), reference.lines());
    player.key(Key::Char('G')).unwrap();
    player.tick(Duration::from_secs(1)).unwrap();
    assert!(!player.clock().is_playing(), "stops at the end");
}

#[test]
fn keys_move_by_seconds_commands_and_search_hits() {
    let events = long_events();
    let mut player = Player::new(
        session(&events, true),
        &PlayOptions {
            start_at_us: Some(100_000_000),
            ..PlayOptions::default()
        },
    )
    .unwrap();
    player.key(Key::Right).unwrap();
    assert_eq!(player.position_us(), 105_000_000);
    player.key(Key::ShiftLeft).unwrap();
    assert_eq!(player.position_us(), 45_000_000);
    player.key(Key::Char('n')).unwrap();
    assert_eq!(player.position_us(), 60_000_000);
    assert_eq!(player.message(), Some("$ cmd-60"));
    player.key(Key::Char('N')).unwrap();
    player.key(Key::Char('N')).unwrap();
    assert_eq!(player.position_us(), 0);
    assert_eq!(player.message(), Some("$ cmd-0"));

    player.key(Key::Char('g')).unwrap();
    player.key(Key::Char('/')).unwrap();
    for c in "LINE 12".chars() {
        player.key(Key::Char(c)).unwrap();
    }
    player.key(Key::Enter).unwrap();
    assert_eq!(player.position_us(), 12_000_002, "the first match");
    assert!(
        player
            .screen()
            .lines()
            .iter()
            .any(|l| l.starts_with("line 12 bold"))
    );
    player.key(Key::Enter).unwrap();
    assert_eq!(player.position_us(), 120_000_002, "Enter: the next match");
    player.key(Key::Char('/')).unwrap();
    player.key(Key::Enter).unwrap();
    assert_eq!(
        player.position_us(),
        121_000_002,
        "/ then Enter repeats too"
    );
    player.key(Key::Char('G')).unwrap();
    player.key(Key::Enter).unwrap();
    assert_eq!(player.position_us(), 12_000_002, "wraps to the first match");
    player.key(Key::Char('/')).unwrap();
    for c in "no such text".chars() {
        player.key(Key::Char(c)).unwrap();
    }
    player.key(Key::Enter).unwrap();
    assert_eq!(player.position_us(), 12_000_002);
    assert_eq!(
        player.message(),
        Some("\"no such text\" is not in the output")
    );
}

#[test]
fn skip_idle_caps_pauses() {
    let events = vec![out(0, "a"), out(600_000_000, "b")];
    let mut player = Player::new(
        session(&events, false),
        &PlayOptions {
            skip_idle: true,
            ..PlayOptions::default()
        },
    )
    .unwrap();
    player.tick(Duration::from_millis(1500)).unwrap();
    assert_eq!(player.position_us(), 600_000_000);
    assert_eq!(player.screen().lines()[0].trim_end(), "ab");
}

#[test]
fn a_live_session_follows_its_new_events_unverified() {
    let mut s = session(&[out(0, "hello\r\n")], true);
    s.live = true;
    s.status = SessionStatus::Open;
    let mut player = Player::new(s, &PlayOptions::default()).unwrap();
    assert!(player.is_following());
    player
        .push_live(LiveUpdate::Event(out(0, "dup\r\n")))
        .unwrap();
    player
        .push_live(LiveUpdate::Event(out(2_000_000, "world\r\n")))
        .unwrap();
    assert_eq!(player.position_us(), 2_000_000);
    let lines = player.screen().lines();
    assert_eq!(
        (lines[0].trim_end(), lines[1].trim_end()),
        ("hello", "world"),
        "{lines:?}"
    );
    let timeline = &player.session().timeline;
    assert_eq!(timeline.verified_count(), 1);
    assert_eq!(timeline.unverified_from_us(), Some(0));
    assert!(timeline.is_unverified_at(2_000_000));
    player.key(Key::Left).unwrap();
    assert!(!player.is_following());
    player
        .push_live(LiveUpdate::Event(out(3_000_000, "more\r\n")))
        .unwrap();
    assert_eq!(
        player.position_us(),
        0,
        "a viewer who looks back is not pulled along"
    );
    player.key(Key::Char('G')).unwrap();
    assert!(player.is_following());
    player
        .push_live(LiveUpdate::End(Some(SessionStatus::Terminated {
            reason: "admin_kill".into(),
        })))
        .unwrap();
    assert!(!player.session().live);
    assert_eq!(player.message(), Some("the session ended"));
}

/// A recording made before the gateway turned 0x0 resizes into markers, with no size in its
/// header and a 0x0 resize as its first event (kubectl `exec -it` from a 0x0 pseudo-terminal):
/// the player keeps 80x24 and shows the output, instead of an empty screen.
#[test]
fn a_first_resize_of_0x0_does_not_empty_the_screen() {
    let mut meta = meta(true);
    meta.term_size = None;
    let mut timeline = Timeline::new(meta, Vec::new());
    timeline.push_verified(Event {
        time_us: 0,
        kind: EventKind::Resize { cols: 0, rows: 0 },
    });
    timeline.push_verified(out(1_000, "hello\r\n"));
    timeline.push_verified(Event {
        time_us: 2_000,
        kind: EventKind::Resize { cols: 0, rows: 9 },
    });
    timeline.push_verified(out(3_000, "world"));
    assert_eq!(timeline.size(), (80, 24));
    let session = Session {
        timeline,
        status: SessionStatus::Complete,
        integrity: Integrity::Intact,
        key: KeyOrigin::NamedInFile,
        live: false,
    };
    let mut player = Player::new(session, &PlayOptions::default()).unwrap();
    player.seek_to(3_000).unwrap();
    assert_eq!(player.screen().size(), (80, 24));
    let lines = player.screen().lines();
    assert_eq!(
        (lines[0].trim_end(), lines[1].trim_end()),
        ("hello", "world"),
        "{lines:?}"
    );
}
