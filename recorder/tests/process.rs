//! Real processes, real files: a writer killed with SIGKILL mid-session, and a writer whose
//! file-size limit (`RLIMIT_FSIZE` via `prlimit`, which binds root too) makes a write fail.
//! The child is this test binary re-run with `--ignored --exact child_writer`.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/recording_support.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use custody_recorder::Error;
use custody_recorder::model::{Event, SessionStatus};
use custody_recorder::reader::{DamageKind, read_recording, seal_interrupted};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use support::{key, meta, out};

const MODE: &str = "CUSTODY_TEST_CHILD";
const DIR: &str = "CUSTODY_TEST_DIR";

/// The crash child's i-th event: a line every 10 ms.
fn crash_event(i: u64) -> Event {
    out(i * 10_000, format!("line {i}\r\n").as_bytes())
}

/// The file-size child's i-th event: 4 KiB of poorly compressible text.
fn bulk_event(i: u64) -> Event {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let text: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"[(x % 64) as usize]
        })
        .collect();
    out(i * 1000, &text)
}

#[tokio::test]
#[ignore = "child process of the tests below"]
async fn child_writer() {
    let (Ok(mode), Ok(dir)) = (std::env::var(MODE), std::env::var(DIR)) else {
        return;
    };
    let dir = Path::new(&dir);
    let key = key(dir);
    match mode.as_str() {
        "crash" => {
            let handle = SessionHandle::open(
                &dir.join("recordings"),
                meta("crash"),
                key,
                WriterConfig::default(),
            )
            .await
            .unwrap();
            for i in 0.. {
                handle.record(crash_event(i)).await.unwrap();
                println!("sent {i}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        "fsize" => {
            let config = WriterConfig {
                flush_interval: Duration::from_millis(200),
                ..Default::default()
            };
            let handle = SessionHandle::open(&dir.join("recordings"), meta("fsize"), key, config)
                .await
                .unwrap();
            let path = handle.path().to_owned();
            // Watch the file grow: the last growth is when the disk stopped taking data.
            let watcher = tokio::spawn(async move {
                let (mut size, mut grew) = (0, Instant::now());
                loop {
                    let now = std::fs::metadata(&path).map_or(0, |m| m.len());
                    if now > size {
                        (size, grew) = (now, Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if size > 0 && grew.elapsed() > Duration::from_millis(1500) {
                        return grew;
                    }
                }
            });
            let sender = handle.sender();
            let producer = tokio::spawn(async move {
                let mut accepted = 0u64;
                while sender.record(bulk_event(accepted)).await.is_ok() {
                    accepted += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                accepted
            });
            let failure = tokio::time::timeout(Duration::from_secs(30), handle.fatal())
                .await
                .unwrap();
            let fatal_at = Instant::now();
            let accepted = producer.await.unwrap();
            let refused = handle.record(bulk_event(accepted)).await.is_err();
            let last_growth = watcher.await.unwrap();
            let finish = handle.finish(SessionStatus::Complete).await;
            println!(
                "{}",
                serde_json::json!({
                    "fatal_after_growth_ms": signed_ms(fatal_at, last_growth),
                    "accepted": accepted,
                    "refused": refused,
                    "finish_failed": finish.is_err(),
                    "failure": failure,
                })
            );
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// `later - earlier` in milliseconds, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap();
    ms(later.saturating_duration_since(earlier)) - ms(earlier.saturating_duration_since(later))
}

fn child(mode: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "child_writer",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE, mode)
    .env(DIR, dir)
    .stdout(Stdio::piped());
    cmd
}

#[test]
fn kill_9_mid_session_loses_at_most_the_last_second_then_seals_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let mut process = child("crash", dir.path()).spawn().unwrap();
    let stdout = BufReader::new(process.stdout.take().unwrap());
    let mut last_sent = None;
    let started = Instant::now();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("sent ") {
            last_sent = Some(i.parse::<u64>().unwrap());
        }
        if started.elapsed() > Duration::from_millis(2600) {
            break;
        }
    }
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    let last_sent = last_sent.expect("child sent nothing");
    assert!(last_sent > 150, "child too slow: {last_sent}");
    let path = dir.path().join("recordings/crash.cast.zst");

    let before = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(before.status, SessionStatus::Open);
    // Frames are 60 s long, so nothing but the header frame was ever closed: every event on
    // disk is in the unterminated frame's block-flushed data.
    assert_eq!(before.frames.len(), 1);
    assert!(before.events.is_empty());
    let damage = before.damage.clone().unwrap();
    assert_eq!(damage.kind, DamageKind::UnsealedTail);
    assert_eq!(damage.offset, before.verified_len);
    let tail = before.tail.clone().unwrap();
    let kept = tail.events.len() as u64;
    let expected: Vec<Event> = (0..kept).map(crash_event).collect();
    assert_eq!(tail.events, expected);
    // One event per 10 ms, flushed every second: at most ~100 events (plus scheduling) were
    // queued but not yet flushed when the kill came.
    assert!(kept > 100, "only {kept} events flushed");
    assert!(kept + 130 > last_sent, "kept {kept} of {}", last_sent + 1);

    let manifest = seal_interrupted(&path, &key).unwrap();
    assert_eq!(manifest.status, SessionStatus::Interrupted);
    assert_eq!(manifest.event_count, kept);
    assert_eq!(manifest.frame_count, 2, "the header and the re-sealed tail");
    assert_eq!(
        manifest.discarded_tail_bytes,
        tail.len - tail.complete_len,
        "only a torn block is lost"
    );
    let file_len_before = std::fs::metadata(&path).unwrap().len();
    let after = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(after.damage, None);
    assert_eq!(after.tail, None);
    assert_eq!(after.status, SessionStatus::Interrupted);
    assert_eq!(after.events, expected);
    assert_eq!(after.manifest, Some(manifest));
    assert!(matches!(
        seal_interrupted(&path, &key),
        Err(Error::AlreadySealed)
    ));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), file_len_before);
    asciicast_rs::Asciicast::<asciicast_rs::V3>::from_slice(&support::decompress(&path)).unwrap();
}

#[test]
fn file_size_limit_fails_the_session_within_a_second_and_loses_nothing_silently() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let limit = 256 * 1024;
    let inner = child("fsize", dir.path());
    // Ignore SIGXFSZ (inherited through exec) so the write fails with EFBIG instead of killing
    // the process; prlimit sets RLIMIT_FSIZE, which applies to root as well.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={limit} -- \"$0\" \"$@\""
        ))
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdout(Stdio::piped());
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(&l[l.find('{')?..]).ok())
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    // The last growth is the partial write that hit the limit, i.e. the failure itself.
    let fatal_after = report["fatal_after_growth_ms"].as_i64().unwrap();
    assert!(
        fatal_after < 1000,
        "fatal {fatal_after} ms after the file stopped growing"
    );
    assert_eq!(report["refused"], true, "{report}");
    assert_eq!(report["finish_failed"], true, "{report}");
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("File too large"),
        "{report}"
    );

    let path = dir.path().join("recordings/fsize.cast.zst");
    assert!(std::fs::metadata(&path).unwrap().len() <= limit);
    let r = read_recording(&path, Some(&key.verifying_key())).unwrap();
    let failed = SessionStatus::Terminated {
        reason: "recording_failure".into(),
    };
    // The writer cut off the failed write and re-sealed the flushed part of the open frame
    // as terminated; if even that had not fitted, the file would end in that unsealed frame,
    // for recovery to seal.
    match &r.damage {
        None => assert_eq!(r.status, failed),
        Some(damage) => {
            assert_eq!(damage.kind, DamageKind::UnsealedTail, "{damage}");
            assert_eq!(r.status, SessionStatus::Open);
        }
    }
    let written: Vec<Event> = r.events_with_tail().cloned().collect();
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(written.len() as u64 <= accepted);
    assert!(written.len() > 20, "only {} events written", written.len());
    let expected: Vec<Event> = (0..written.len() as u64).map(bulk_event).collect();
    assert_eq!(written, expected, "what was written is an exact prefix");
}
