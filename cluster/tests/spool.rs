//! The spool of live sessions against a real S3 server (versitygw) and the real recorder: a
//! replica killed mid-session is taken over from its segments losing at most the last
//! 1.5 s, by exactly one of two replicas racing; a session that ends leaves one verified object
//! and nothing else; a store that goes down fails the session in bounded time and loses
//! nothing once it is back. Also the upload cost of a session printing 10 lines a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody_cluster::objects::{ObjectStoreConfig, Objects, recover_from_segments};
use custody_cluster::spool::{Spool, SpoolConfig};
use custody_fixtures::s3::S3;
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::reader::{Recording, read_recording};
use custody_recorder::verdict::Verdict;
use custody_recorder::writer::{SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn config(s3: &S3, prefix: &str) -> ObjectStoreConfig {
    let mut config = ObjectStoreConfig::new(
        &s3.endpoint(),
        s3.bucket(),
        s3.region(),
        s3.access_key(),
        s3.secret_key(),
    );
    prefix.clone_into(&mut config.prefix);
    config
}

fn shared(prefix: &str) -> Objects {
    Objects::new(&config(S3::shared().expect("the S3 fixture"), prefix)).unwrap()
}

fn writer_config() -> WriterConfig {
    WriterConfig {
        flush_interval: Duration::from_millis(250),
        ..WriterConfig::default()
    }
}

/// A log line of about 90 bytes, like a service printing its requests.
fn line(i: usize) -> String {
    format!(
        "2026-03-01T12:00:{:02}.{:03}Z INFO request handled path=/api/v1/items/{i} status=200 \
         duration_ms={}\r\n",
        (i / 10) % 60,
        (i % 10) * 100,
        i % 37
    )
}

/// The output lines a recording holds, verified events only.
fn lines(recording: &Recording) -> Vec<String> {
    recording
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Output(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

/// The keys under `prefix` in the shared server's bucket.
fn keys(s3: &S3, prefix: &str) -> Vec<String> {
    let listed = s3
        .request(
            "GET",
            &format!("/{}", s3.bucket()),
            &[("list-type", "2"), ("prefix", prefix)],
            b"",
        )
        .unwrap();
    assert_eq!(listed.status, 200, "{}", listed.text());
    listed
        .text()
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next().map(str::to_owned))
        .collect()
}

/// Opens a session in `dir` and starts its spool.
async fn open(
    dir: &Path,
    id: &str,
    objects: &Objects,
    spool: SpoolConfig,
) -> (SessionHandle, Spool) {
    let meta = custody_recorder::sample::session_meta(id, (120, 40));
    let handle = SessionHandle::open(dir, meta, Arc::new(key()), writer_config())
        .await
        .unwrap();
    let spool = Spool::start(
        objects.clone(),
        id.to_owned(),
        handle.path().to_owned(),
        spool,
    )
    .unwrap();
    (handle, spool)
}

/// Records the next lines every 100 ms until `until`, pushing when each was recorded.
async fn print(handle: &SessionHandle, start: Instant, printed: &mut Vec<Instant>, until: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < until {
        tick.tick().await;
        let time_us = u64::try_from(start.elapsed().as_micros()).unwrap();
        handle
            .record(Event {
                time_us,
                kind: EventKind::Output(line(printed.len()).into_bytes()),
            })
            .await
            .unwrap();
        printed.push(Instant::now());
    }
}

/// Replica A: records session `id` with its spool on a runtime of its own, printing a line
/// every 100 ms, and is killed after 3 s. Returns when each line was recorded and the kill.
fn record_and_kill(objects: &Objects, id: &'static str, dir: &Path) -> (Vec<Instant>, Instant) {
    let replica = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let printed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (objects, shared, dir) = (objects.clone(), printed.clone(), dir.to_owned());
    replica.spawn(async move {
        let start = Instant::now();
        let (handle, _spool) = open(&dir, id, &objects, SpoolConfig::default()).await;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0.. {
            tick.tick().await;
            let time_us = u64::try_from(start.elapsed().as_micros()).unwrap();
            let event = Event {
                time_us,
                kind: EventKind::Output(line(i).into_bytes()),
            };
            handle.record(event).await.unwrap();
            shared.lock().unwrap().push(Instant::now());
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    // The kill: every task of the replica stops at its next await; nothing is sealed, nothing
    // more is uploaded.
    let killed = Instant::now();
    replica.shutdown_background();
    let printed = printed.lock().unwrap().clone();
    (printed, killed)
}

#[test]
fn a_killed_replica_is_taken_over_from_its_segments_by_exactly_one_of_two() {
    let s3 = S3::shared().expect("the S3 fixture");
    let objects = shared("takeover-test");
    let id = "55555555-0000-4000-8000-000000000001";
    let dir_a = tempfile::tempdir().unwrap();
    let (printed, killed) = record_and_kill(&objects, id, dir_a.path());
    let must_hold = printed
        .iter()
        .filter(|at| **at + Duration::from_millis(1500) <= killed)
        .count();

    // Replicas B and C take the session over at the same time.
    let replica_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (scratch_b, scratch_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = key();
    let (b, c) = replica_b.block_on(async {
        tokio::join!(
            recover_from_segments(&objects, id, &key, scratch_b.path()),
            recover_from_segments(&objects, id, &key, scratch_c.path()),
        )
    });
    let (b, c) = (b.unwrap(), c.unwrap());
    assert!(
        b.stored_here != c.stored_here,
        "exactly one stored the recording: {} {}",
        b.stored_here,
        c.stored_here
    );
    assert_eq!(b.manifest, c.manifest);
    assert_eq!(b.index, c.index);
    assert_eq!(b.len, c.len);
    assert_eq!(b.manifest.status, SessionStatus::Interrupted);
    assert_eq!(b.index.row.file_path, Objects::location(id));
    assert!(
        std::fs::read_dir(scratch_b.path())
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        std::fs::read_dir(scratch_c.path())
            .unwrap()
            .next()
            .is_none()
    );

    // The stored object verifies (interrupted) and holds every line printed up to 1.5 s before
    // the kill, in order.
    let fetched = scratch_b.path().join("fetched.cast.zst");
    let recording = replica_b.block_on(async {
        assert_eq!(objects.fetch_recording(id, &fetched).await.unwrap(), b.len);
        assert!(objects.segments(id).await.unwrap().is_empty());
        read_recording(&fetched, Some(&key.verifying_key())).unwrap()
    });
    assert!(
        matches!(Verdict::of(&recording), Verdict::Interrupted { .. }),
        "{}",
        Verdict::of(&recording)
    );
    assert_eq!(recording.damage, None);
    let held = lines(&recording);
    let expected: Vec<String> = (0..held.len()).map(line).collect();
    assert_eq!(held, expected, "the lines in order, none missing");
    eprintln!(
        "printed {} lines, {} up to 1.5 s before the kill, the recording holds {}; lost the last \
         {:?}",
        printed.len(),
        must_hold,
        held.len(),
        printed
            .get(held.len().saturating_sub(1))
            .map(|last| killed.duration_since(*last))
    );
    assert!(held.len() >= must_hold, "{} < {must_hold}", held.len());
    assert!(held.len() <= printed.len());
    assert_eq!(
        keys(s3, "takeover-test/"),
        [format!("takeover-test/recordings/{id}.cast.zst")]
    );

    // Once more, later (a third replica): the stored object is returned as it is.
    let again = replica_b
        .block_on(recover_from_segments(&objects, id, &key, scratch_c.path()))
        .unwrap();
    assert!(!again.stored_here);
    assert_eq!(again.manifest, b.manifest);
    // A session nobody recorded has nothing to take over.
    let none = replica_b.block_on(recover_from_segments(
        &objects,
        "55555555-0000-4000-8000-000000000009",
        &key,
        scratch_c.path(),
    ));
    assert!(
        matches!(none, Err(custody_cluster::Error::NothingToRecover { .. })),
        "{none:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_session_leaves_one_verified_object_and_nothing_else() {
    let s3 = S3::shared().expect("the S3 fixture");
    let objects = shared("finish-test");
    let id = "66666666-0000-4000-8000-000000000001";
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (handle, spool) = open(dir.path(), id, &objects, SpoolConfig::default()).await;
    let path = handle.path().to_owned();
    let mut printed = Vec::new();
    print(&handle, start, &mut printed, start + Duration::from_secs(2)).await;
    handle.seal(SessionStatus::Complete).await.unwrap();
    let sealed = std::fs::read(&path).unwrap();
    let stats = spool.stats();
    assert!(stats.segments >= 1, "{stats:?}");
    assert_eq!(objects.sessions_with_segments().await.unwrap(), [id]);

    let len = spool.finish().await.unwrap();
    assert_eq!(len, sealed.len() as u64);
    assert!(!path.exists(), "the local file is removed");
    assert_eq!(
        keys(s3, "finish-test/"),
        [format!("finish-test/recordings/{id}.cast.zst")],
        "one object, no segments"
    );
    let fetched = dir.path().join("fetched.cast.zst");
    objects.fetch_recording(id, &fetched).await.unwrap();
    assert!(std::fs::read(&fetched).unwrap() == sealed, "byte-identical");
    let recording = read_recording(&fetched, Some(&key().verifying_key())).unwrap();
    assert_eq!(Verdict::of(&recording), Verdict::Intact);
    assert_eq!(lines(&recording).len(), printed.len());

    // A takeover after the end finds the object and leaves it as it is.
    let scratch = tempfile::tempdir().unwrap();
    let taken = recover_from_segments(&objects, id, &key(), scratch.path())
        .await
        .unwrap();
    assert!(!taken.stored_here);
    assert_eq!(taken.manifest.status, SessionStatus::Complete);
    assert_eq!(taken.len, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_down_fails_the_session_and_nothing_is_lost_once_it_is_back() {
    let mut s3 = tokio::task::spawn_blocking(|| S3::start().expect("the S3 fixture"))
        .await
        .unwrap();
    let mut config = config(&s3, "down-test");
    config.request_timeout = Duration::from_secs(1);
    config.retry_timeout = Duration::from_secs(1);
    let objects = Objects::new(&config).unwrap();
    let spool_config = SpoolConfig {
        fail_after: Duration::from_secs(3),
        ..SpoolConfig::default()
    };
    // Two sessions: the first is finished once the store is back, the second while it is down.
    let (first, second) = (
        "77777777-0000-4000-8000-000000000001",
        "77777777-0000-4000-8000-000000000002",
    );
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (handle, spool) = open(dir.path(), first, &objects, spool_config.clone()).await;
    let (handle_2, spool_2) = open(dir.path(), second, &objects, spool_config.clone()).await;
    let path = handle.path().to_owned();
    let path_2 = handle_2.path().to_owned();
    let (mut printed, mut printed_2) = (Vec::new(), Vec::new());
    tokio::join!(
        print(
            &handle,
            start,
            &mut printed,
            start + Duration::from_millis(1500)
        ),
        print(
            &handle_2,
            start,
            &mut printed_2,
            start + Duration::from_millis(1500)
        ),
    );
    assert!(spool.failure().is_none());
    assert!(spool.stats().segments >= 1);

    // Killed rather than stopped: versitygw's graceful stop waits for the client's idle
    // keep-alive connections and at times takes the fixture's whole 10 s grace.
    s3.kill();
    let stopped = Instant::now();
    // The session goes on printing until the spool gives up: `fail_after` from the first
    // failed upload, which starts within an interval of the stop.
    let bound = spool_config.fail_after + spool_config.interval + Duration::from_secs(2);
    let reason = tokio::select! {
        reason = spool.failed() => reason,
        () = print(&handle, start, &mut printed, stopped + bound) => {
            panic!("no failure within {bound:?}")
        }
    };
    let took = stopped.elapsed();
    eprintln!("the spool failed {took:?} after the store went down: {reason}");
    assert!(took >= spool_config.fail_after, "{took:?}");
    assert!(reason.contains("could not be stored"), "{reason}");
    // The gateway ends the session: the seal.
    handle
        .seal(SessionStatus::Terminated {
            reason: "recording_failure".into(),
        })
        .await
        .unwrap();
    handle_2.seal(SessionStatus::Complete).await.unwrap();

    // Finishing while the store is down fails in bounded time and keeps everything.
    let started = Instant::now();
    let err = spool_2.finish().await.unwrap_err();
    eprintln!("finish while down ({:?}): {err}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(20));
    match &err {
        custody_cluster::Error::RecordingNotStored { id, path, .. } => {
            assert_eq!(id, second);
            assert_eq!(path, &path_2);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("its segments are kept"), "{err}");
    assert!(path_2.exists());

    // Back again: `finish` of the first and a retry of the second store everything.
    tokio::task::block_in_place(|| s3.start_again()).unwrap();
    let len = spool.finish().await.unwrap();
    let len_2 = custody_cluster::spool::store_recording(&objects, second, &path_2)
        .await
        .unwrap();
    assert!(!path.exists() && !path_2.exists());
    for (id, len, count) in [
        (first, len, printed.len()),
        (second, len_2, printed_2.len()),
    ] {
        let fetched = dir.path().join(format!("{id}.fetched"));
        assert_eq!(objects.fetch_recording(id, &fetched).await.unwrap(), len);
        let recording = read_recording(&fetched, Some(&key().verifying_key())).unwrap();
        assert_eq!(Verdict::of(&recording), Verdict::Intact);
        let held = lines(&recording);
        let expected: Vec<String> = (0..held.len()).map(line).collect();
        assert_eq!(held, expected, "every line, in order");
        // The first session's printing was cut short by the failure: the line being recorded
        // then may have gone in without being counted.
        assert!(
            (count..=count + 1).contains(&held.len()),
            "{} lines of {count}",
            held.len()
        );
        assert!(objects.segments(id).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_cost_of_a_session_printing_ten_lines_a_second() {
    // The writer's and the spool's defaults: flush every second, upload every second.
    let objects = shared("cost-test");
    let id = "88888888-0000-4000-8000-000000000001";
    let dir = tempfile::tempdir().unwrap();
    let meta = custody_recorder::sample::session_meta(id, (120, 40));
    let handle = SessionHandle::open(dir.path(), meta, Arc::new(key()), WriterConfig::default())
        .await
        .unwrap();
    let spool = Spool::start(
        objects.clone(),
        id.to_owned(),
        handle.path().to_owned(),
        SpoolConfig::default(),
    )
    .unwrap();
    let start = Instant::now();
    let busy = Duration::from_secs(15);
    let mut printed = Vec::new();
    print(&handle, start, &mut printed, start + busy).await;
    // Let the last flush go up, then idle: idle ticks upload nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stats = spool.stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(spool.stats(), stats, "an idle session costs no PUT");
    assert_eq!(
        stats.bytes,
        std::fs::metadata(handle.path()).unwrap().len(),
        "everything flushed is uploaded"
    );
    // At most one segment a tick (plus the first, at once).
    let ticks = (busy + Duration::from_millis(2500)).as_secs() + 1;
    assert!(stats.segments <= ticks, "{stats:?}");
    let per_hour = 3600.0 / busy.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "a report")]
    let (segments, bytes) = (stats.segments as f64, stats.bytes as f64);
    eprintln!(
        "10 lines/s for {busy:?}: {} lines, {} segments, {} bytes uploaded; per session-hour: \
         {:.0} segment PUTs, {:.0} KiB ({:.1} segments/minute, {:.0} bytes each)",
        printed.len(),
        stats.segments,
        stats.bytes,
        segments * per_hour,
        bytes * per_hour / 1024.0,
        segments * 60.0 / busy.as_secs_f64(),
        bytes / segments,
    );
    handle.seal(SessionStatus::Complete).await.unwrap();
    let len = spool.finish().await.unwrap();
    eprintln!("the recording object: {len} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_died_after_sealing_is_taken_over_with_its_own_manifest() {
    let objects = shared("sealed-takeover-test");
    let id = "99999999-0000-4000-8000-000000000001";
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (handle, spool) = open(dir.path(), id, &objects, SpoolConfig::default()).await;
    let path = handle.path().to_owned();
    let mut printed = Vec::new();
    print(&handle, start, &mut printed, start + Duration::from_secs(1)).await;
    handle.seal(SessionStatus::Complete).await.unwrap();
    let sealed = std::fs::read(&path).unwrap();
    // The spool's next tick uploads the manifest; then the replica dies before `finish`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool.stats().bytes < sealed.len() as u64 {
        assert!(Instant::now() < deadline, "{:?}", spool.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(spool);

    let scratch = tempfile::tempdir().unwrap();
    let taken = recover_from_segments(&objects, id, &key(), scratch.path())
        .await
        .unwrap();
    assert!(taken.stored_here);
    assert_eq!(taken.manifest.status, SessionStatus::Complete);
    let fetched = scratch.path().join("fetched.cast.zst");
    objects.fetch_recording(id, &fetched).await.unwrap();
    assert!(
        std::fs::read(&fetched).unwrap() == sealed,
        "the writer's own file"
    );
    assert!(objects.segments(id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_spool_of_a_missing_file_is_an_error() {
    let objects = shared("missing-test");
    let dir = tempfile::tempdir().unwrap();
    let err = Spool::start(
        objects,
        "id".into(),
        dir.path().join("nothing.cast.zst"),
        SpoolConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nothing.cast.zst"), "{err}");
}
