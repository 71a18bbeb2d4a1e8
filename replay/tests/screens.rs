//! Snapshot tests of the player's screens, drawn on ratatui's `TestBackend`: the start, after a
//! seek, the end, the help overlay, the typed-input pane, a non-tty session with stderr, and a
//! recording larger than the screen.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};
use custody_replay::{Integrity, Key, KeyOrigin, PlayOptions, Player, Session, Timeline, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

fn meta(tty: bool, size: Option<(u16, u16)>) -> SessionMeta {
    SessionMeta {
        session_id: "s-1".into(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            username: "oidc:alice".into(),
            ..Initiator::default()
        },
        effective: EffectiveIdentity {
            user: "carol".into(),
            ..EffectiveIdentity::default()
        },
        cluster: "prod".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        command: vec!["sh".into()],
        tty,
        client_addr: "10.0.0.7:5000".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "gw".into(),
        replica_id: None,
        started_at_us: 1_700_000_000_000_000,
        term_size: size,
    }
}

fn ev(time_s: f64, kind: EventKind) -> Event {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "test times"
    )]
    Event {
        time_us: (time_s * 1e6) as u64,
        kind,
    }
}

fn out(time_s: f64, text: &str) -> Event {
    ev(time_s, EventKind::Output(text.as_bytes().to_vec()))
}

fn input(time_s: f64, text: &str) -> Event {
    ev(time_s, EventKind::Input(text.as_bytes().to_vec()))
}

/// A 40x8 shell session: two commands, a marker, exit 0.
fn shell_session() -> Session {
    let mut timeline = Timeline::new(meta(true, Some((40, 8))), Vec::new());
    for event in [
        out(0.5, "$ "),
        input(2.0, "ls\r"),
        out(2.1, "ls\r\nbin  etc  home\r\n$ "),
        ev(3.0, EventKind::Marker("approved".into())),
        input(8.0, "echo \x1b[1mhi\x1b[0m\r"),
        out(8.1, "echo hi\r\nhi\r\n$ "),
        input(12.0, "exit\r"),
        out(12.1, "exit\r\n"),
        ev(
            12.2,
            EventKind::Exit {
                code: Some(0),
                message: String::new(),
            },
        ),
    ] {
        timeline.push_verified(event);
    }
    session(timeline, SessionStatus::Complete, Integrity::Intact)
}

fn session(timeline: Timeline, status: SessionStatus, integrity: Integrity) -> Session {
    Session {
        timeline,
        status,
        integrity,
        key: KeyOrigin::DataDir,
        live: false,
    }
}

fn screen(player: &Player, width: u16, height: u16) -> (Vec<String>, ratatui::buffer::Buffer) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::draw(f, player)).unwrap();
    let buf = terminal.backend().buffer().clone();
    let lines = (0..height)
        .map(|y| {
            let mut line = String::new();
            for x in 0..width {
                line.push_str(buf[(x, y)].symbol());
            }
            line.trim_end().to_owned()
        })
        .collect();
    (lines, buf)
}

fn assert_screen(player: &Player, width: u16, height: u16, expected: &str) {
    let (lines, _) = screen(player, width, height);
    let got = lines.join("\n");
    if std::env::var_os("PRINT_SCREENS").is_some() {
        println!("----\n{got}\n----");
    }
    let expected = expected.strip_prefix('\n').unwrap_or(expected);
    let expected: Vec<&str> = expected.lines().map(str::trim_end).collect();
    assert_eq!(got, expected.join("\n"), "got:\n{got}");
}

fn paused(session: Session) -> Player {
    let mut player = Player::new(session, &PlayOptions::default()).unwrap();
    player.key(Key::Char(' ')).unwrap();
    player
}

#[test]
fn start_screen() {
    let player = paused(shell_session());
    assert_screen(
        &player,
        72,
        14,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  exit 0  verified: intact (data dir key)
                                        │
                                        │
                                        │
                                        │
                                        │
                                        │
                                        │
                                        │
────────────────────────────────────────┘

 ⏸ 1x 00:00 ●───────────◆──────────────────────────────────────── 00:12
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
}

#[test]
fn after_a_seek() {
    let mut player = paused(shell_session());
    player.key(Key::Right).unwrap();
    assert_screen(
        &player,
        72,
        14,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  exit 0  verified: intact (data dir key)
$ ls                                    │
bin  etc  home                          │
$                                       │
                                        │
                                        │
                                        │
                                        │
                                        │
────────────────────────────────────────┘

 ⏸ 1x 00:05 ━━━━━━━━━━━━◆━━━━━━━━●─────────────────────────────── 00:12
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
}

#[test]
fn at_the_end() {
    let mut player = paused(shell_session());
    player.key(Key::Char('G')).unwrap();
    assert_screen(
        &player,
        72,
        14,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  exit 0  verified: intact (data dir key)
$ ls                                    │
bin  etc  home                          │
$ echo hi                               │
hi                                      │
$ exit                                  │
                                        │
                                        │
                                        │
────────────────────────────────────────┘

 ⏸ 1x 00:12 ━━━━━━━━━━━━◆━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━● 00:12
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
}

#[test]
fn help_overlay() {
    let mut player = paused(shell_session());
    player.key(Key::Char('?')).unwrap();
    assert_screen(
        &player,
        72,
        22,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  exit 0  verified: intact (data dir key)
          ┌ keys (any key closes) ───────────────────────────┐
          │     space  pause / resume                        │
          │       ← →  back / forward 5 s                    │
          │ shift+← →  back / forward 60 s                   │
          │       + -  speed 1x 2x 4x 8x 16x                 │
          │         s  skip idle time (pauses ≤ 1 s)         │
          │       g G  start / end (live: back to live)      │
          │       n N  next / previous typed command         │
──────────│       ] [  next / previous marker                │
          │         /  search the output                     │
          │     Enter  next match of the search              │
          │         i  typed input pane                      │
          │         ?  this help                             │
          │         q  quit                                  │
          │                                                  │
          │    stderr  non-tty sessions mark it with ! in red│
          │    yellow  events no checkpoint verifies yet     │
          └──────────────────────────────────────────────────┘
 ⏸ 1x 00:00 ●───────────◆──────────────────────────────────────── 00:12
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
    player.key(Key::Char('x')).unwrap();
    assert_eq!(*player.mode(), custody_replay::Mode::Normal);
}

#[test]
fn typed_input_pane() {
    let mut player = paused(shell_session());
    player.key(Key::Char('n')).unwrap();
    player.key(Key::Char('n')).unwrap();
    player.key(Key::Char('i')).unwrap();
    assert_screen(
        &player,
        72,
        14,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  exit 0  verified: intact (data dir key)
$ ls                                    │┌ typed (i) ──────────────────┐
bin  etc  home                          ││00:02 ls                     │
$                                       ││00:08 echo hi                │
                                        ││00:12 exit                   │
                                        ││                             │
                                        ││                             │
                                        ││                             │
                                        ││                             │
────────────────────────────────────────┘│                             │
                                         └─────────────────────────────┘
 ⏸ 1x 00:08 ━━━━━━━━━━━━◆━━━━━━━━━━━━━━━━━━━━━●────────────────── 00:12
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
}

fn log_session() -> Session {
    let mut timeline = Timeline::new(meta(false, None), Vec::new());
    for event in [
        out(0.2, "starting job\n"),
        ev(0.4, EventKind::Stderr(b"warning: disk 91% full\n".to_vec())),
        out(1.0, "copied 12 files\n"),
        ev(
            1.5,
            EventKind::Stderr(b"error: permission denied: /data/x\n".to_vec()),
        ),
        out(2.0, "done\n"),
        ev(
            2.1,
            EventKind::Exit {
                code: Some(3),
                message: String::new(),
            },
        ),
    ] {
        timeline.push_verified(event);
    }
    session(
        timeline,
        SessionStatus::Terminated {
            reason: "admin_kill".into(),
        },
        Integrity::Intact,
    )
}

#[test]
fn non_tty_session_with_stderr() {
    let mut player = paused(log_session());
    player.key(Key::Char('G')).unwrap();
    assert_screen(
        &player,
        72,
        12,
        r"
oidc:alice → carol  prod/shop/web-1/app  $ sh
2023-11-14 22:13:20 UTC  terminated: admin_kill (exit 3)  verified: inta
  starting job
! warning: disk 91% full
  copied 12 files
! error: permission denied: /data/x
  done



 ⏸ 1x 00:02 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━● 00:02
space pause  ←/→ 5s  +/- speed  n/N command  / search  i input  ? help
",
    );
    let (lines, buf) = screen(&player, 72, 12);
    let row = lines
        .iter()
        .position(|l| l.starts_with("! warning"))
        .unwrap();
    let row = u16::try_from(row).unwrap();
    assert_eq!(buf[(0, row)].fg, Color::Red);
    assert_eq!(buf[(4, row)].fg, Color::Red);
    let out_row = u16::try_from(lines.iter().position(|l| l.contains("copied")).unwrap()).unwrap();
    assert_ne!(buf[(4, out_row)].fg, Color::Red);
}

#[test]
fn a_recording_larger_than_the_screen_shows_its_top_left_and_says_so() {
    let mut timeline = Timeline::new(meta(true, Some((100, 30))), Vec::new());
    timeline.push_verified(out(0.1, &format!("{}|\r\n", "w".repeat(99))));
    let mut player = paused(session(
        timeline,
        SessionStatus::Complete,
        Integrity::Intact,
    ));
    player.key(Key::Char('G')).unwrap();
    let (lines, _) = screen(&player, 80, 24);
    assert_eq!(lines[2], "w".repeat(80));
    assert!(
        lines[23].starts_with("cropped: 80x20 of 100x30 (top-left)"),
        "{}",
        lines[23]
    );
}

#[test]
fn an_altered_file_says_where() {
    let mut timeline = Timeline::new(meta(true, Some((40, 8))), Vec::new());
    timeline.push_verified(out(0.1, "ok"));
    timeline.push(out(0.2, "tail"));
    let altered = Integrity::Altered {
        first_bad: "frame 3 at byte 812: hash chain broken".into(),
    };
    let mut player = paused(session(timeline, SessionStatus::Open, altered));
    player.key(Key::Char('G')).unwrap();
    let (lines, _) = screen(&player, 120, 14);
    assert!(
        lines[1].contains("verified: ALTERED at frame 3 at byte 812: hash chain broken"),
        "{}",
        lines[1]
    );
    assert!(lines[13].starts_with("UNVERIFIED"), "{}", lines[13]);
}
