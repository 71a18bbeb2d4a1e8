//! `custody play` end to end: a real `kubectl exec -it` session is recorded through the
//! gateway, then the real `custody play` binary plays it in tmux; after `G` (the end), the
//! pane's terminal area shows what the live session's terminal showed at its end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use custody_fixtures::harness::Collected;
use custody_recorder::keyframe::TerminalState;
use custody_recorder::reader::{Recording, read_recording};
use env::{Env, Options};

const TIMEOUT: Duration = Duration::from_secs(20);
const COLS: u16 = 80;
const ROWS: u16 = 24;
/// Rows above the session's terminal in the player (the header).
const HEADER_ROWS: usize = 2;

/// A private tmux server, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("custody-play-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("/usr/bin/tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pane(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", "play"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `check` accepts the pane; returns it.
    fn wait_for(&self, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let pane = self.pane();
            if check(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; the pane:\n{}",
                pane.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("/usr/bin/tmux")
            .args(["-L", &self.socket, "has-session", "-t", "play"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A `kubectl exec -it demo -- sh` session on an 80x24 pseudo-terminal; returns everything the
/// terminal received.
fn record_interactive_session(env: &Env) -> Vec<u8> {
    let k = env.kubectl("1.32");
    let (mut pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(ROWS, COLS)).unwrap();
    let cmd = k.command(["--context", "alice", "exec", "-it", "demo", "--", "sh"]);
    let mut pcmd = pty_process::blocking::Command::new(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            pcmd = pcmd.env(key, value);
        }
    }
    let mut child = pcmd.env("TERM", "xterm").spawn(pts).unwrap();
    let read_side =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&pty).try_clone_to_owned().unwrap());
    let screen = Collected::spawn(read_side);
    let shown = |needle: &str| {
        screen
            .wait_for(needle, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    // Type only once the shell's prompt shows: kubectl has put the terminal in raw mode by
    // then, so the local terminal echoes nothing the recording lacks.
    shown("# ");
    pty.write_all(b"echo ready-$((1+1))\r").unwrap();
    shown("ready-2");
    pty.write_all(b"printf '\\033[1mbold\\033[0m %s\\n' typed-$((6*7))\r")
        .unwrap();
    shown("typed-42");
    pty.write_all(b"for i in 1 2 3; do echo line-$i; done\r")
        .unwrap();
    shown("line-3");
    pty.write_all(&[0x04]).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kubectl exec did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the reader drain what kubectl wrote last.
    std::thread::sleep(Duration::from_millis(200));
    screen.text().into_bytes()
}

/// The session's sealed recording and its path.
fn sealed_recording(env: &Env) -> (PathBuf, Recording) {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let dir = env.data_dir.join("recordings");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let path = e.path();
                let recording = read_recording(&path, Some(&key)).ok()?;
                recording.manifest.is_some().then_some((path, recording))
            })
        });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no sealed recording");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screen_lines(state: &TerminalState) -> Vec<String> {
    state
        .lines()
        .iter()
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// The session's terminal as the player shows it: the pane rows under the header, the
/// session's columns.
fn terminal_area(pane: &[String]) -> Vec<String> {
    (0..usize::from(ROWS))
        .map(|row| {
            let line = pane.get(HEADER_ROWS + row).map_or("", String::as_str);
            line.chars()
                .take(usize::from(COLS))
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect()
}

fn play_command(bin: &Path, args: &[&str]) -> String {
    let mut command = format!("{}", bin.display());
    for arg in args {
        command.push_str(" '");
        command.push_str(arg);
        command.push('\'');
    }
    command
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: the live session, then played by id, by file and from the gateway"
)]
fn custody_play_shows_the_live_sessions_last_screen() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let pty_bytes = record_interactive_session(&env);
    let (path, recording) = sealed_recording(&env);
    assert!(recording.damage.is_none() && recording.meta.tty);

    // What the session's terminal showed at its end: the recording replayed, and the bytes
    // the pseudo-terminal received, rendered alike.
    let mut recorded = TerminalState::for_session(&recording.meta).unwrap();
    for event in &recording.events {
        recorded.apply(event);
    }
    let mut live = TerminalState::new(COLS, ROWS).unwrap();
    live.feed(&pty_bytes);
    let expected = screen_lines(&recorded);
    assert_eq!(
        expected,
        screen_lines(&live),
        "recording and terminal differ"
    );
    assert!(
        expected.iter().any(|l| l == "bold typed-42"),
        "{expected:#?}"
    );
    assert!(expected.iter().any(|l| l == "line-3"), "{expected:#?}");

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_custody"));
    let data_dir = env.data_dir.to_str().unwrap().to_owned();
    let id = recording.meta.session_id.clone();
    let tmux = Tmux::new();
    let command = play_command(&bin, &["play", "--data-dir", &data_dir, &id]);
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "play",
        &command,
    ]);
    let pane = tmux.wait_for("the player did not start", |pane| {
        pane.first().is_some_and(|l| l.starts_with("alice → alice"))
    });
    assert!(
        pane[1].contains("exit 0") && pane[1].contains("verified: intact (data dir key)"),
        "{}",
        pane[1]
    );
    tmux.run(&["send-keys", "-t", "play", "G"]);
    let pane = tmux.wait_for("G did not show the last screen", |pane| {
        terminal_area(pane) == expected
    });
    assert!(
        pane.iter().any(|l| l.contains('⏸')),
        "not paused at the end: {}",
        pane.join("\n")
    );

    // Back to the start: the screen is blank again; then quit.
    tmux.run(&["send-keys", "-t", "play", "g"]);
    tmux.wait_for("g did not go back to the start", |pane| {
        terminal_area(pane).iter().all(String::is_empty)
    });
    tmux.run(&["send-keys", "-t", "play", "q"]);
    let deadline = Instant::now() + TIMEOUT;
    while tmux.alive() {
        assert!(Instant::now() < deadline, "q did not quit the player");
        std::thread::sleep(Duration::from_millis(50));
    }

    // By file, without a key: verified with the key the file names, and said so.
    let command = play_command(&bin, &["play", path.to_str().unwrap(), "--at", "0:00"]);
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "play",
        &command,
    ]);
    tmux.wait_for("the file's key is not named", |pane| {
        pane.get(1)
            .is_some_and(|l| l.contains("verified: intact (key named in the file)"))
    });
    tmux.run(&["send-keys", "-t", "play", "G"]);
    tmux.wait_for("G did not show the last screen (file)", |pane| {
        terminal_area(pane) == expected
    });
    tmux.run(&["send-keys", "-t", "play", "q"]);
    let deadline = Instant::now() + TIMEOUT;
    while tmux.alive() {
        assert!(Instant::now() < deadline, "q did not quit the player");
        std::thread::sleep(Duration::from_millis(50));
    }

    // From the running gateway, as the session's owner: downloaded, and verified with the key
    // the gateway publishes.
    let ca = env.dir().join("ca.pem");
    std::fs::write(&ca, &env.ca_pem).unwrap();
    let token = env.dir().join("alice.token");
    std::fs::write(&token, "alice-token\n").unwrap();
    let server = format!("https://{}", env.gateway_addr);
    let command = play_command(
        &bin,
        &[
            "play",
            "--server",
            &server,
            "--ca-file",
            ca.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
            &id,
        ],
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        "-s",
        "play",
        &command,
    ]);
    tmux.wait_for("the gateway's key is not named", |pane| {
        pane.get(1)
            .is_some_and(|l| l.contains("verified: intact (gateway key)"))
    });
    tmux.run(&["send-keys", "-t", "play", "G"]);
    tmux.wait_for("G did not show the last screen (server)", |pane| {
        terminal_area(pane) == expected
    });
    tmux.run(&["send-keys", "-t", "play", "q"]);
}
