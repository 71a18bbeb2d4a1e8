//! Recovery and reindex on real recording files written by the writer: a crash-cut session is
//! sealed `interrupted` and the index agrees; a corrupt file alongside blocks nothing; deleting
//! the index and rebuilding it gives the same sessions, frames and search results; seeking from
//! the index's keyframes shows the same screen as replaying the whole file.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/recording_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custody_recorder::index::{Index, IndexDump, SessionQuery};
use custody_recorder::keyframe::{TerminalState, replay, seek};
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::reader::read_recording;
use custody_recorder::recovery::recover;
use custody_recorder::reindex::{open_or_rebuild, reindex};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;
use support::{key, meta, out};

/// A shell session of `n` commands, one every 5 s of session time.
fn shell_events(n: u64, word: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..n {
        let t = i * 5_000_000;
        let cmd = format!("echo {word}-{i}");
        events.push(Event {
            time_us: t + 1,
            kind: EventKind::Input(format!("{cmd}\r").into()),
        });
        events.push(out(
            t + 2,
            format!("{cmd}\r\n\x1b[3{}m{word}-{i}\x1b[0m\r\n$ ", i % 8).as_bytes(),
        ));
        if i % 7 == 3 {
            events.push(out(
                t + 3,
                b"\x1b[2J\x1b[H\x1b[1;4r\x1b[4;1Hscrolling\n\n\x1b[r",
            ));
        }
        if i % 11 == 5 {
            events.push(Event {
                time_us: t + 4,
                kind: EventKind::Resize { cols: 50, rows: 8 },
            });
        }
    }
    events
}

async fn write(
    dir: &Path,
    id: &str,
    key: &Arc<SigningKey>,
    events: &[Event],
    status: Option<SessionStatus>,
) -> PathBuf {
    // Tiny frames: every event closes one, so a session has many frames.
    let config = WriterConfig {
        frame_max_bytes: 1,
        ..Default::default()
    };
    let handle = SessionHandle::open(dir, meta(id), key.clone(), config)
        .await
        .unwrap();
    for e in events {
        handle.record(e.clone()).await.unwrap();
    }
    let path = handle.path().to_owned();
    if let Some(status) = status {
        handle.finish(status).await.unwrap();
    } else {
        // A crash: the writer ends, then the manifest and half of the last frame vanish.
        handle.finish(SessionStatus::Complete).await.unwrap();
        let rec = read_recording(&path, None).unwrap();
        let last = rec.frames.last().unwrap();
        let cut = last.offset + last.compressed_len / 2;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
    }
    path
}

struct World {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    key: Arc<SigningKey>,
}

/// A data dir with a complete session, a crash-cut one the index has as open, a corrupt file,
/// and a stray non-recording file.
async fn world() -> (World, Index) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_owned();
    let recordings = data.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let key = key(&data);
    let mut index = Index::open(&data.join("index.sqlite")).unwrap();

    let done = write(
        &recordings,
        "done",
        &key,
        &shell_events(40, "alpha"),
        Some(SessionStatus::Complete),
    )
    .await;
    let rec = read_recording(&done, Some(&key.verifying_key())).unwrap();
    index.index_recording(&rec, &done).unwrap();

    let crashed_meta = meta("crashed");
    let crashed_path = recordings.join("crashed.cast.zst");
    index.record_open(&crashed_meta, &crashed_path).unwrap();
    write(
        &recordings,
        "crashed",
        &key,
        &shell_events(30, "bravo"),
        None,
    )
    .await;

    // Never indexed (the index commit was lost) and cut as well.
    write(
        &recordings,
        "unindexed",
        &key,
        &shell_events(5, "charlie"),
        None,
    )
    .await;

    std::fs::write(
        recordings.join("corrupt.cast.zst"),
        b"\x28\xb5\x2f\xfdgarbage",
    )
    .unwrap();
    std::fs::write(recordings.join("notes.txt"), b"not a recording").unwrap();
    (
        World {
            _tmp: tmp,
            data,
            key,
        },
        index,
    )
}

fn search_all(index: &Index) -> Vec<Vec<(String, u64, String)>> {
    ["alpha", "bravo-7", "charlie", "scrolling", "echo"]
        .iter()
        .map(|q| {
            index
                .search(q, None)
                .unwrap()
                .into_iter()
                .map(|h| (h.session_id, h.time_us, h.snippet))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn recovery_seals_open_sessions_and_skips_a_corrupt_file() {
    let (w, mut index) = world().await;
    assert_eq!(index.open_sessions().unwrap().len(), 1);

    let report = recover(&w.data, &mut index, &w.key).unwrap();
    assert_eq!(report.sealed, ["crashed", "unindexed"]);
    assert_eq!(
        report.indexed,
        ["crashed", "unindexed"],
        "the sealed, indexed file is not re-read"
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].0.ends_with("corrupt.cast.zst"));
    assert!(report.missing.is_empty());
    assert!(report.elapsed.as_secs() < 5);

    // The index agrees with the files, which now verify with an `interrupted` manifest.
    assert!(index.open_sessions().unwrap().is_empty());
    for id in ["crashed", "unindexed"] {
        let path = w.data.join("recordings").join(format!("{id}.cast.zst"));
        let rec = read_recording(&path, Some(&w.key.verifying_key())).unwrap();
        assert_eq!(rec.status, SessionStatus::Interrupted);
        assert!(rec.manifest.is_some());
        assert_eq!(rec.damage, None);
        let row = index.session(id).unwrap().unwrap();
        assert_eq!(row.status, SessionStatus::Interrupted);
        assert_eq!(row.event_count, rec.events.len() as u64);
        assert_eq!(row.frame_count as usize, rec.frames.len());
        assert_eq!(row.file_size, std::fs::metadata(&path).unwrap().len());
        assert!(row.ended_at_us.is_some());
    }
    let interrupted = SessionQuery {
        status: Some(SessionStatus::Interrupted),
        ..Default::default()
    };
    assert_eq!(index.sessions(&interrupted).unwrap().len(), 2);

    // A second run has nothing left to do but report the corrupt file again.
    let again = recover(&w.data, &mut index, &w.key).unwrap();
    assert!(
        again.sealed.is_empty() && again.indexed.is_empty(),
        "{again:?}"
    );
    assert_eq!(again.failed.len(), 1);
}

#[tokio::test]
async fn a_deleted_index_is_rebuilt_with_identical_rows() {
    let (w, mut index) = world().await;
    recover(&w.data, &mut index, &w.key).unwrap();
    let incremental: IndexDump = index.dump().unwrap();
    let searches = search_all(&index);
    assert_eq!(incremental.sessions.len(), 3);
    assert!(searches.iter().all(|hits| !hits.is_empty()), "{searches:?}");
    drop(index);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(w.data.join(format!("index.sqlite{suffix}")));
    }
    let mut seen = Vec::new();
    let (rebuilt, report) = open_or_rebuild(
        &w.data,
        &w.data.join("index.sqlite"),
        Some(&w.key.verifying_key()),
        |p| seen.push((p.done, p.total, p.error.is_some())),
    )
    .unwrap();
    let report = report.expect("a missing index is rebuilt");
    assert_eq!(report.indexed, 3);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.last().unwrap().0, 4);
    assert_eq!(rebuilt.dump().unwrap(), incremental);
    assert_eq!(search_all(&rebuilt), searches);

    // Rebuilding in place over a populated index gives the same rows again.
    let mut rebuilt = rebuilt;
    reindex(&w.data, &mut rebuilt, Some(&w.key.verifying_key()), |_| {}).unwrap();
    assert_eq!(rebuilt.dump().unwrap(), incremental);
    assert_eq!(search_all(&rebuilt), searches);
}

#[tokio::test]
async fn a_corrupt_index_is_moved_aside_and_rebuilt() {
    let (w, mut index) = world().await;
    recover(&w.data, &mut index, &w.key).unwrap();
    let incremental = index.dump().unwrap();
    drop(index);
    let path = w.data.join("index.sqlite");
    let _ = std::fs::remove_file(w.data.join("index.sqlite-wal"));
    let _ = std::fs::remove_file(w.data.join("index.sqlite-shm"));
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[..100] {
        *b = 0x42;
    }
    std::fs::write(&path, bytes).unwrap();
    let (rebuilt, report) =
        open_or_rebuild(&w.data, &path, Some(&w.key.verifying_key()), |_| {}).unwrap();
    assert!(report.is_some());
    assert!(w.data.join("index.sqlite.corrupt").exists());
    assert_eq!(rebuilt.dump().unwrap(), incremental);

    // A healthy index is opened as it is.
    drop(rebuilt);
    let (_, report) = open_or_rebuild(&w.data, &path, None, |_| {}).unwrap();
    assert!(report.is_none());
}

#[tokio::test]
async fn keyframe_seek_from_the_index_equals_full_replay() {
    let (w, mut index) = world().await;
    recover(&w.data, &mut index, &w.key).unwrap();
    let path = w.data.join("recordings/done.cast.zst");
    let rec = read_recording(&path, None).unwrap();
    let seekpoints = index.seekpoints("done").unwrap();
    let frames = index.frames("done").unwrap();
    assert!(frames.len() > 40, "one frame per event: {}", frames.len());
    assert!(
        seekpoints.len() >= 5,
        "a keyframe every 30 s of a 200 s session"
    );
    let initial = || TerminalState::for_session(&rec.meta).unwrap();
    for target in rec.events.iter().map(|e| e.time_us).chain([0, u64::MAX]) {
        let full = replay(initial(), &rec.events, target);
        let fast = seek(initial(), &seekpoints, &rec.events, target).unwrap();
        assert_eq!(fast.lines(), full.lines(), "at {target}");
        assert_eq!(fast.cursor(), full.cursor(), "at {target}");
        assert_eq!(
            fast.terminal().dump(),
            full.terminal().dump(),
            "at {target}"
        );
    }
}

#[tokio::test]
async fn recovery_reseals_the_flushed_tail_of_a_killed_writer_and_the_index_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let recordings = data.join("recordings");
    let key = key(data);
    let mut index = Index::open(&data.join("index.sqlite")).unwrap();
    // A live writer with the default 60 s frames and fast block flushes; the file as it is on
    // disk once the flushes happened is what a SIGKILL would leave.
    let live = data.join("live");
    let config = WriterConfig {
        flush_interval: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    let handle = SessionHandle::open(&live, meta("killed"), key.clone(), config)
        .await
        .unwrap();
    let events = shell_events(12, "delta");
    for e in &events {
        handle.record(e.clone()).await.unwrap();
    }
    // Wait for the block flushes to have written every event.
    let flushed = |p: &Path| {
        read_recording(p, None)
            .ok()
            .and_then(|r| r.tail)
            .is_some_and(|t| t.events.len() == events.len())
    };
    for _ in 0..500 {
        if flushed(handle.path()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    std::fs::create_dir_all(&recordings).unwrap();
    let path = recordings.join("killed.cast.zst");
    std::fs::copy(handle.path(), &path).unwrap();
    handle.finish(SessionStatus::Complete).await.unwrap();
    index.record_open(&meta("killed"), &path).unwrap();

    let before = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(before.frames.len(), 1, "only the header frame was closed");
    assert_eq!(before.tail.as_ref().unwrap().events, events);

    let report = recover(data, &mut index, &key).unwrap();
    assert_eq!(report.sealed, ["killed"]);
    let rec = read_recording(&path, Some(&key.verifying_key())).unwrap();
    assert_eq!(rec.damage, None);
    assert_eq!(rec.status, SessionStatus::Interrupted);
    assert_eq!(rec.events, events);
    let row = index.session("killed").unwrap().unwrap();
    assert_eq!(row.status, SessionStatus::Interrupted);
    assert_eq!(row.event_count, events.len() as u64);
    assert_eq!(row.frame_count, 2);
    assert_eq!(row.damage, None);
    let hits = index.search("delta-11", None).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let seekpoints = index.seekpoints("killed").unwrap();
    let initial = || TerminalState::for_session(&rec.meta).unwrap();
    let target = rec.events.last().unwrap().time_us;
    let fast = seek(initial(), &seekpoints, &rec.events, target).unwrap();
    assert_eq!(fast.lines(), replay(initial(), &rec.events, target).lines());
}
