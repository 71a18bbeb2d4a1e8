//! Writer → file → reader round trips, checked against stock tools: `zstd -d` semantics,
//! asciicast-rs as v3, and the real asciinema 3 CLI rendering the screen.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/recording_support.rs"]
mod support;

use std::time::Duration;

use asciicast_rs::{Asciicast, V3};
use custody_recorder::integrity::{MANIFEST_MAGIC, public_key_hex};
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::reader::read_recording;
use custody_recorder::redaction::Redactor;
use custody_recorder::writer::{SessionHandle, WriterConfig};
use support::{decompress, key, meta, out};

fn sample_events() -> Vec<Event> {
    let ev = |time_us, kind| Event { time_us, kind };
    vec![
        out(100_000, b"$ "),
        ev(600_000, EventKind::Input(b"echo h\xc3".to_vec())),
        ev(700_000, EventKind::Input(b"\xa9llo\r".to_vec())),
        out(700_100, b"echo h\xc3"),
        out(700_200, b"\xa9llo\r\nh\xc3\xa9llo\r\n"),
        ev(
            800_000,
            EventKind::Stderr(b"warn: \xff\xfe raw\r\n".to_vec()),
        ),
        ev(900_000, EventKind::Resize { cols: 40, rows: 6 }),
        ev(
            1_000_000,
            EventKind::Marker("approval apr-7 granted".into()),
        ),
        out(1_500_000, b"\x1b[1mdone\x1b[0m\r\n$ "),
        ev(
            2_000_000,
            EventKind::Exit {
                code: Some(3),
                message: "command terminated".into(),
            },
        ),
    ]
}

#[tokio::test]
async fn events_round_trip_and_stock_tools_read_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let rec_dir = dir.path().join("recordings");
    let config = WriterConfig {
        flush_interval: Duration::from_millis(50),
        frame_max_duration: Duration::from_millis(100),
        ..Default::default()
    };
    let handle = SessionHandle::open(&rec_dir, meta("rt-1"), key.clone(), config)
        .await
        .unwrap();
    let events = sample_events();
    for (i, event) in events.iter().enumerate() {
        handle.record(event.clone()).await.unwrap();
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    }
    assert_eq!(handle.lost_events(), 0);
    let path = handle.path().to_owned();
    assert_eq!(path, rec_dir.join("rt-1.cast.zst"));
    let manifest = handle.finish(SessionStatus::Complete).await.unwrap();

    let recording = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(recording.damage, None);
    assert_eq!(recording.events, events);
    assert_eq!(recording.meta, meta("rt-1"));
    assert_eq!(recording.status, SessionStatus::Complete);
    assert_eq!(recording.manifest.as_ref(), Some(&manifest));
    assert!(
        recording.frames.len() >= 3,
        "sleeps should have closed several frames"
    );
    assert_eq!(manifest.frame_count as usize, recording.frames.len());
    assert_eq!(manifest.event_count, events.len() as u64);
    assert_eq!(
        manifest.chain_head,
        recording.frames.last().unwrap().chain_hash
    );
    assert_eq!(
        public_key_hex(&key.verifying_key()),
        hex::encode(manifest.public_key)
    );
    let bytes = std::fs::read(&path).unwrap();
    let manifest_at = bytes.len() - recording.frames.len(); // at least one byte per frame
    assert!(
        bytes[..manifest_at]
            .windows(4)
            .any(|w| w == MANIFEST_MAGIC.to_le_bytes())
    );

    // Decompressed like `zstd -d`: a pure asciicast v3 file that asciicast-rs accepts.
    let plain = decompress(&path);
    let cast = Asciicast::<V3>::from_slice(&plain).unwrap();
    assert_eq!((cast.header.term.cols, cast.header.term.rows), (40, 6));
    let total: f64 = cast.events.iter().map(|e| e.interval).sum();
    assert!((total - 2.0).abs() < 1e-9, "intervals sum to {total}");
    // The real zstd CLI agrees with the library.
    let cli = std::process::Command::new("zstd")
        .args(["-dc"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(cli.stdout, plain);

    // asciinema 3 renders what the user saw, stderr included, UTF-8 split across events
    // completed, the invalid bytes shown as replacement characters.
    let cast_path = dir.path().join("rt-1.cast");
    std::fs::write(&cast_path, &plain).unwrap();
    let screen = support::asciinema_screen(&cast_path);
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"$ echo héllo"), "screen: {screen}");
    assert!(lines.contains(&"héllo"), "screen: {screen}");
    assert!(
        lines.contains(&"warn: \u{fffd}\u{fffd} raw"),
        "screen: {screen}"
    );
    assert!(lines.contains(&"done"), "screen: {screen}");
}

#[tokio::test]
async fn secrets_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let config = WriterConfig {
        flush_interval: Duration::from_millis(200),
        redactor: Redactor::with_defaults().unwrap(),
        ..Default::default()
    };
    let handle = SessionHandle::open(dir.path(), meta("rd-1"), key.clone(), config)
        .await
        .unwrap();
    handle
        .record(out(1, b"$ cat creds\r\naws_access_key_id=AKIAIOSF"))
        .await
        .unwrap();
    // The rest of the key arrives within one flush interval, often across a flush tick (the
    // deterministic split is unit-tested in `redaction::window`).
    tokio::time::sleep(Duration::from_millis(120)).await;
    handle
        .record(out(
            2,
            b"ODNN7EXAMPLE\r\nAuthorization: Bearer s3cr3t-t0ken-value\r\n",
        ))
        .await
        .unwrap();
    handle
        .record(Event {
            time_us: 3,
            kind: EventKind::Input(b"export PW=x --from-literal=pw=hunter2\r".to_vec()),
        })
        .await
        .unwrap();
    let path = handle.path().to_owned();
    handle.finish(SessionStatus::Complete).await.unwrap();
    let plain = String::from_utf8(decompress(&path)).unwrap();
    for secret in [
        "AKIAIOSF",
        "ODNN7EXAMPLE",
        "s3cr3t-t0ken-value",
        "hunter2",
        "aHVudGVyMg",
    ] {
        assert!(!plain.contains(secret), "{secret} in {plain}");
    }
    assert!(plain.contains("[REDACTED:aws_access_key_id]"));
    assert!(plain.contains("[REDACTED:bearer_token]"));
    let recording = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(recording.events.len(), 3);
}

#[tokio::test]
async fn port_forward_sessions_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let mut m = meta("pf-1");
    m.kind = custody_recorder::model::SessionKind::PortForward;
    m.term_size = None;
    let handle = SessionHandle::open(dir.path(), m, key.clone(), WriterConfig::default())
        .await
        .unwrap();
    let events = vec![
        Event {
            time_us: 10,
            kind: EventKind::ConnectionOpened {
                connection: 1,
                port: 5432,
            },
        },
        Event {
            time_us: 20,
            kind: EventKind::ConnectionData {
                connection: 1,
                to_pod: true,
                data: vec![0, 1, 2, 255],
            },
        },
        Event {
            time_us: 30,
            kind: EventKind::ConnectionClosed {
                connection: 1,
                bytes_to_pod: 4,
                bytes_from_pod: 0,
                sha256_to_pod: "00".repeat(32),
                sha256_from_pod: "11".repeat(32),
            },
        },
    ];
    for e in &events {
        handle.record(e.clone()).await.unwrap();
    }
    let path = handle.path().to_owned();
    handle
        .finish(SessionStatus::Terminated {
            reason: "client_timeout".into(),
        })
        .await
        .unwrap();
    let recording = read_recording(&path, None).unwrap();
    assert_eq!(recording.events, events);
    assert_eq!(
        recording.status,
        SessionStatus::Terminated {
            reason: "client_timeout".into()
        }
    );
    Asciicast::<V3>::from_slice(&decompress(&path)).unwrap();
}

#[tokio::test]
async fn unwritable_directory_refuses_the_session_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    // A regular file where the recordings directory should be: fails even for root.
    let blocked = dir.path().join("recordings");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let err = SessionHandle::open(&blocked, meta("p1"), key.clone(), WriterConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recordings"), "{err}");
    // An existing recording is never overwritten.
    let ok = dir.path().join("ok");
    let first = SessionHandle::open(&ok, meta("p1"), key.clone(), WriterConfig::default())
        .await
        .unwrap();
    assert!(
        SessionHandle::open(&ok, meta("p1"), key.clone(), WriterConfig::default())
            .await
            .is_err()
    );
    // A session id that would escape the directory is refused.
    assert!(
        SessionHandle::open(&ok, meta("../x"), key.clone(), WriterConfig::default())
            .await
            .is_err()
    );
    first.finish(SessionStatus::Complete).await.unwrap();
}

#[tokio::test]
async fn live_viewers_follow_redacted_events_until_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let config = WriterConfig {
        flush_interval: Duration::from_millis(50),
        redactor: Redactor::with_defaults().unwrap(),
        ..Default::default()
    };
    let handle = SessionHandle::open(dir.path(), meta("live-1"), key, config)
        .await
        .unwrap();
    let mut viewer = handle.subscribe();
    handle.record(out(1, b"hello\r\n")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(2), viewer.recv())
        .await
        .expect("the viewer sees an event within a flush interval or two")
        .unwrap();
    assert_eq!(first.kind, EventKind::Output(b"hello\r\n".to_vec()));
    handle
        .record(out(2, b"Authorization: Bearer s3cr3t-t0ken-value\r\n"))
        .await
        .unwrap();
    handle.finish(SessionStatus::Complete).await.unwrap();
    let mut seen = Vec::new();
    loop {
        match viewer.recv().await {
            Ok(event) => seen.push(event),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let text: Vec<u8> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Output(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("[REDACTED:bearer_token]"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

/// The rows the writer derives while writing are exactly those derived by reading the file back
/// (so a session is indexed at its end without being read again), for a tty session spread
/// over several frames with keyframes.
#[tokio::test]
async fn the_writer_indexes_what_reading_the_file_would() {
    use custody_recorder::index::IndexedSession;
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let config = WriterConfig {
        flush_interval: Duration::from_millis(20),
        frame_max_duration: Duration::from_millis(40),
        frame_max_bytes: 4096,
        ..Default::default()
    };
    let handle = SessionHandle::open(dir.path(), meta("ix-1"), key.clone(), config)
        .await
        .unwrap();
    let mut time = 0;
    for round in 0..6u64 {
        for event in sample_events() {
            time += 1 + event.time_us / 1000;
            handle
                .record(Event {
                    time_us: time,
                    ..event
                })
                .await
                .unwrap();
        }
        // Half a minute of session time between rounds (a keyframe each), and pauses for
        // frames closed by time.
        let screen = format!("\x1b[2J\x1b[Hround {round}\r\n").repeat(300);
        time += 31_000_000;
        handle.record(out(time, screen.as_bytes())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let path = handle.path().to_owned();
    let sealed = handle.seal(SessionStatus::Complete).await.unwrap();
    let written = sealed.index.expect("the writer derived the index rows");
    let recording = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert!(
        recording.frames.len() > 6,
        "{} frames",
        recording.frames.len()
    );
    let size = std::fs::metadata(&path).unwrap().len();
    let read = IndexedSession::from_recording(&recording, &path, size).unwrap();
    assert!(read.frames.iter().filter(|f| f.keyframe.is_some()).count() > 2);
    assert_eq!(written, read);
}

#[tokio::test]
async fn writer_stats_add_up_the_sessions_of_one_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let rec_dir = dir.path().join("recordings");
    let config = WriterConfig {
        flush_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let stats = config.stats.clone();
    let events = sample_events();
    let mut size = 0;
    for id in ["st-1", "st-2"] {
        let handle = SessionHandle::open(&rec_dir, meta(id), key.clone(), config.clone())
            .await
            .unwrap();
        for event in &events {
            handle.record(event.clone()).await.unwrap();
        }
        let path = handle.path().to_owned();
        handle.finish(SessionStatus::Complete).await.unwrap();
        size += std::fs::metadata(path).unwrap().len();
    }
    assert_eq!(stats.events_written(), 2 * events.len() as u64);
    assert_eq!(stats.queued_events(), 0);
    // Everything after each file's header frame, which is written before the session starts.
    assert!(
        stats.bytes_written() > 0 && stats.bytes_written() < size,
        "{} of {size}",
        stats.bytes_written()
    );
}
