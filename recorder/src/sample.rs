//! Synthetic sessions for benchmarks (the recorder's, the player's and `custody-bench`): a
//! session header and an hour of shell output with full-screen redraws, the same everywhere so
//! their numbers describe the same session.

use std::fmt::Write as _;

use crate::model::{EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta};

/// The header of a synthetic exec session `id` with a terminal of `size` (columns, rows).
pub fn session_meta(id: &str, size: (u16, u16)) -> SessionMeta {
    SessionMeta {
        session_id: id.to_owned(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            username: "bench".into(),
            ..Initiator::default()
        },
        effective: EffectiveIdentity::default(),
        cluster: "bench".into(),
        namespace: "default".into(),
        pod: "pod".into(),
        container: "c".into(),
        command: vec!["sh".into()],
        tty: true,
        client_addr: "127.0.0.1:1".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "bench".into(),
        replica_id: None,
        started_at_us: 0,
        term_size: Some(size),
    }
}

/// Ten coloured shell lines and one full-screen redraw (like `top`, `rows` rows) per second,
/// for an hour, with a typed command every ten seconds.
pub fn one_hour_session(rows: u16) -> Vec<Event> {
    let output = |time_us, bytes| Event {
        time_us,
        kind: EventKind::Output(bytes),
    };
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
        for row in 1..=rows {
            // Writing to a String cannot fail.
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
