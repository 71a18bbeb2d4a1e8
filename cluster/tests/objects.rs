//! `Objects` against a real S3 server (versitygw, started by the fixture): the probe, segments
//! with gaps and retried overlaps, recordings in one `PUT` and in parts, written once and
//! verified, and failures that are errors in bounded time (wrong credentials, a server that is
//! down, a server that never answers).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use custody_cluster::Error;
use custody_cluster::objects::{ObjectStoreConfig, Objects, Segment};
use custody_fixtures::s3::S3;

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
    let s3 = S3::shared().expect("the S3 fixture");
    Objects::new(&config(s3, prefix)).unwrap()
}

/// `len` bytes that do not compress and differ with `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn offset(at: usize) -> u64 {
    u64::try_from(at).unwrap()
}

/// The keys under `prefix` in the bucket, as the server lists them.
fn keys(prefix: &str) -> Vec<String> {
    let s3 = S3::shared().expect("the S3 fixture");
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

#[tokio::test]
async fn the_probe_writes_reads_and_deletes() {
    let objects = shared("probe-test");
    objects.check().await.unwrap();
    objects.check().await.unwrap();
    assert!(
        keys("probe-test/").is_empty(),
        "the probe leaves nothing: {:?}",
        keys("probe-test/")
    );
}

#[tokio::test]
async fn segments_join_across_retried_overlaps_and_stop_at_a_gap() {
    let objects = shared("segments-test");
    let bytes = noise(1000, 1);
    let id = "11111111-0000-4000-8000-000000000001";
    // 0..100, then 100..250 whose upload was retried with more bytes (100..300), then 300..400
    // and 400..1000.
    for (from, to) in [(0, 100), (100, 250), (100, 300), (300, 400), (400, 1000)] {
        objects
            .put_segment(id, offset(from), bytes[from..to].to_vec().into())
            .await
            .unwrap();
    }
    // The same range again (a retry whose first try landed) changes nothing.
    objects
        .put_segment(id, 300, bytes[300..400].to_vec().into())
        .await
        .unwrap();
    let segments = objects.segments(id).await.unwrap();
    assert_eq!(
        segments,
        [(0, 100), (100, 150), (100, 200), (300, 100), (400, 600)]
            .map(|(offset, len)| Segment { offset, len })
    );
    let dir = tempfile::tempdir().unwrap();
    let joined = dir.path().join("joined");
    assert_eq!(objects.join_segments(id, &joined).await.unwrap(), 1000);
    assert_eq!(std::fs::read(&joined).unwrap(), bytes);

    // A gap: 0..100 and 200..300. The join stops at 100 and keeps what precedes it.
    let gappy = "11111111-0000-4000-8000-000000000002";
    objects
        .put_segment(gappy, 0, bytes[..100].to_vec().into())
        .await
        .unwrap();
    objects
        .put_segment(gappy, 200, bytes[200..300].to_vec().into())
        .await
        .unwrap();
    assert_eq!(objects.join_segments(gappy, &joined).await.unwrap(), 100);
    assert_eq!(std::fs::read(&joined).unwrap(), &bytes[..100]);

    let mut with_segments = objects.sessions_with_segments().await.unwrap();
    with_segments.sort();
    assert_eq!(with_segments, [id, gappy]);

    objects.delete_segments(id).await.unwrap();
    assert!(objects.segments(id).await.unwrap().is_empty());
    assert_eq!(objects.sessions_with_segments().await.unwrap(), [gappy]);
    // Deleting what is gone already is no error.
    objects.delete_segments(id).await.unwrap();
    // No segments: an empty file.
    assert_eq!(objects.join_segments(id, &joined).await.unwrap(), 0);
    assert_eq!(std::fs::metadata(&joined).unwrap().len(), 0);
}

#[tokio::test]
async fn a_session_with_a_thousand_segments_lists_and_deletes_them_all() {
    // More than one listing page and one bulk delete (1000 keys each).
    let objects = shared("many-segments-test");
    let id = "11111111-0000-4000-8000-000000000003";
    let bytes = noise(1100 * 7, 3);
    let puts = (0..1100usize).map(|i| {
        let objects = objects.clone();
        let chunk = bytes[i * 7..i * 7 + 7].to_vec();
        async move { objects.put_segment(id, offset(i * 7), chunk.into()).await }
    });
    let results = futures_util::future::join_all(puts).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(objects.segments(id).await.unwrap().len(), 1100);
    let dir = tempfile::tempdir().unwrap();
    let joined = dir.path().join("joined");
    assert_eq!(objects.join_segments(id, &joined).await.unwrap(), 1100 * 7);
    assert_eq!(std::fs::read(&joined).unwrap(), bytes);
    objects.delete_segments(id).await.unwrap();
    assert!(objects.segments(id).await.unwrap().is_empty());
}

/// Puts `file` as `id`'s recording and checks what can be read back.
async fn round_trip(objects: &Objects, id: &str, file: &Path) {
    let started = Instant::now();
    let len = objects.put_recording(id, file).await.unwrap();
    let took = started.elapsed();
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(len, bytes.len() as u64);
    eprintln!(
        "put_recording of {} bytes (upload, read back, compare): {took:?}",
        bytes.len()
    );
    assert_eq!(objects.recording_len(id).await.unwrap(), Some(len));
    let dir = tempfile::tempdir().unwrap();
    let fetched = dir.path().join("fetched.cast.zst");
    assert_eq!(objects.fetch_recording(id, &fetched).await.unwrap(), len);
    assert!(std::fs::read(&fetched).unwrap() == bytes, "byte-identical");
    // Only the fetched file is left: the partial one was renamed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Storing the same file again (a retry whose first try landed) succeeds; another file is
    // refused and the object stays as it was.
    assert_eq!(objects.put_recording(id, file).await.unwrap(), len);
    let other = dir.path().join("other.cast.zst");
    let mut changed = bytes.clone();
    changed[bytes.len() / 2] ^= 1;
    std::fs::write(&other, &changed).unwrap();
    match objects.put_recording(id, &other).await {
        Err(Error::RecordingExists { id: refused }) => assert_eq!(refused, id),
        other => panic!("a second recording must be refused: {other:?}"),
    }
    objects.fetch_recording(id, &fetched).await.unwrap();
    assert!(std::fs::read(&fetched).unwrap() == bytes, "not replaced");
}

#[tokio::test]
async fn a_recording_goes_up_in_one_put_verified_and_only_once() {
    let objects = shared("recording-test");
    let id = "22222222-0000-4000-8000-000000000001";
    assert_eq!(objects.recording_len(id).await.unwrap(), None);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.cast.zst");
    std::fs::write(&file, noise(300_000, 11)).unwrap();
    round_trip(&objects, id, &file).await;

    // An empty file is a recording too (nothing is special about zero bytes).
    let empty = dir.path().join("empty.cast.zst");
    std::fs::write(&empty, b"").unwrap();
    let empty_id = "22222222-0000-4000-8000-000000000002";
    assert_eq!(objects.put_recording(empty_id, &empty).await.unwrap(), 0);
    assert_eq!(objects.recording_len(empty_id).await.unwrap(), Some(0));

    // 10 MiB, for the time it takes on loopback.
    let large = dir.path().join("large.cast.zst");
    std::fs::write(&large, noise(10 << 20, 12)).unwrap();
    round_trip(&objects, "22222222-0000-4000-8000-000000000003", &large).await;
}

#[tokio::test]
async fn a_recording_above_the_threshold_goes_up_in_parts_and_only_once() {
    let s3 = S3::shared().expect("the S3 fixture");
    let mut config = config(s3, "multipart-test");
    config.multipart_threshold = 1 << 20;
    let objects = Objects::new(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parts.cast.zst");
    // Parts of 5 MiB, 5 MiB and 2 MiB.
    std::fs::write(&file, noise(12 << 20, 21)).unwrap();
    let id = "33333333-0000-4000-8000-000000000001";
    round_trip(&objects, id, &file).await;
    assert_eq!(
        keys("multipart-test/"),
        [format!("multipart-test/recordings/{id}.cast.zst")],
        "the staging object is gone"
    );
}

#[tokio::test]
async fn wrong_credentials_are_a_clear_error() {
    let s3 = S3::shared().expect("the S3 fixture");
    let mut config = config(s3, "credentials-test");
    config.secret_access_key = "not-the-secret".into();
    let objects = Objects::new(&config).unwrap();
    let err = objects.check().await.unwrap_err();
    let text = custody_cluster::error::error_chain(&err);
    eprintln!("{text}");
    assert!(text.contains("write a probe object"), "{text}");
    assert!(
        text.contains("refused (403 Forbidden): SignatureDoesNotMatch"),
        "{text}"
    );
    assert!(!text.contains('<'), "the code and message, no XML: {text}");

    config.access_key_id = "CUSTODYNOSUCHKEY".into();
    let objects = Objects::new(&config).unwrap();
    let text = custody_cluster::error::error_chain(&objects.check().await.unwrap_err());
    eprintln!("{text}");
    // S3 says `403 InvalidAccessKeyId`; versitygw `404 XAdminUserNotFound`, which must not
    // read as a missing object.
    assert!(
        text.contains("InvalidAccessKeyId")
            || text.contains("XAdminUserNotFound: No user exists with the provided access key ID"),
        "{text}"
    );
    assert!(!text.contains("not found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_an_error_within_the_retry_bound() {
    let mut s3 = tokio::task::spawn_blocking(|| S3::start().expect("the S3 fixture"))
        .await
        .unwrap();
    let mut config = config(&s3, "stopped-test");
    config.retry_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    let objects = Objects::new(&config).unwrap();
    objects.check().await.unwrap();
    // Killed rather than stopped: versitygw's graceful stop waits for the client's idle
    // keep-alive connections and at times takes the fixture's whole 10 s grace.
    s3.kill();

    // The bound: retries start within `retry_timeout`, each request takes at most
    // `request_timeout`, a backoff at most 1 s.
    let bound = config.retry_timeout + config.request_timeout + Duration::from_secs(1);
    let started = Instant::now();
    let err = objects.check().await.unwrap_err();
    let took = started.elapsed();
    eprintln!(
        "a server that is down: {took:?}: {}",
        custody_cluster::error::error_chain(&err)
    );
    assert!(took < bound, "{took:?}");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.cast.zst");
    std::fs::write(&file, b"recording").unwrap();
    let id = "44444444-0000-4000-8000-000000000001";
    assert!(objects.put_recording(id, &file).await.is_err());
    assert!(objects.recording_len(id).await.is_err());
    assert!(objects.segments(id).await.is_err());
    let took = started.elapsed();
    assert!(took < bound * 4, "{took:?}");

    // Back again: the same client works (no connection of the old server is reused).
    tokio::task::block_in_place(|| s3.start_again()).unwrap();
    objects.check().await.unwrap();
    assert_eq!(objects.put_recording(id, &file).await.unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_an_error_within_the_retry_bound() {
    // A listener nobody serves: the kernel completes the connection, nothing ever answers
    // (a hung store, or a network path that drops everything after the handshake).
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s3 = S3::shared().expect("the S3 fixture");
    let mut config = config(s3, "hung-test");
    config.endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    config.request_timeout = Duration::from_secs(1);
    config.retry_timeout = Duration::from_secs(2);
    let objects = Objects::new(&config).unwrap();
    let bound = config.retry_timeout + config.request_timeout + Duration::from_secs(1);
    let started = Instant::now();
    let err = objects.check().await.unwrap_err();
    let took = started.elapsed();
    let text = custody_cluster::error::error_chain(&err);
    eprintln!("a server that never answers: {took:?}: {text}");
    assert!(took < bound, "{took:?}");
    assert!(text.contains("no answer within 1s"), "{text}");
}
