//! Damaged files: cut at every byte, bytes flipped in the header, a middle frame, the tail and
//! the manifest. The reader must return exactly the longest verified prefix and name the first
//! bad frame; a cut inside a frame must also give back, as the unverified tail, every event of
//! the blocks flushed before the cut, and sealing must turn those into verified events.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/recording_support.rs"]
mod support;

use custody_recorder::Error;
use custody_recorder::file::{FrameEvents, RecordingFile};
use custody_recorder::format::{self, Encoder, TimePrecision};
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::reader::{
    DamageKind, read_recording, read_recording_bytes, seal_interrupted,
};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;
use support::{key, meta, out};

/// A small sealed recording where every event is its own frame.
async fn small_recording() -> (Vec<u8>, Vec<Event>, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let config = WriterConfig {
        frame_max_bytes: 1,
        ..Default::default()
    };
    let handle = SessionHandle::open(dir.path(), meta("dmg"), key.clone(), config)
        .await
        .unwrap();
    let events: Vec<Event> = (0..4u64)
        .map(|i| out(i * 250_000, format!("line {i} \u{e9}\r\n").as_bytes()))
        .collect();
    for e in &events {
        handle.record(e.clone()).await.unwrap();
    }
    let path = handle.path().to_owned();
    handle.finish(SessionStatus::Complete).await.unwrap();
    (std::fs::read(path).unwrap(), events, (*key).clone())
}

/// A recording written through the file layer the way a live writer does: two event frames,
/// each block-flushed three times and then closed with one more, unflushed event (the second
/// with the end line), then the manifest. Every flush ends one zstd block (each holds far less
/// than a 128 KiB block), so the file's block boundaries are known.
struct Flushed {
    bytes: Vec<u8>,
    events: Vec<Event>,
    key: SigningKey,
    /// Per event frame: (file length after each flush, events in the file through it).
    flushes: Vec<Vec<(usize, usize)>>,
    /// Per event frame: its first event's index, and where its zstd frame ends.
    frame_events: Vec<(usize, usize)>,
}

fn flushed_recording() -> Flushed {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let meta = meta("cut");
    let header = format::encode_header(&meta).unwrap();
    let mut file = RecordingFile::create(dir.path(), &meta, &header, key.clone(), 3).unwrap();
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    let mut events = Vec::new();
    let mut flushes = Vec::new();
    let mut frame_events = Vec::new();
    let push = |file: &mut RecordingFile, encoder: &mut Encoder, events: &mut Vec<Event>| {
        let mut plain = Vec::new();
        if !file.frame_is_open() {
            encoder.anchor(&mut plain);
        }
        let i = events.len() as u64;
        // Stderr with a byte that is not UTF-8: a three-line event (`e`, `b`, `o`).
        let mut stderr = format!("warn {i} ").into_bytes();
        stderr.extend_from_slice(b"\xff\r\n");
        let batch = [
            out(i * 100_000, format!("line {i} \u{e9}\r\n").as_bytes()),
            Event {
                time_us: i * 100_000 + 50_000,
                kind: EventKind::Stderr(stderr),
            },
        ];
        let mut stats = FrameEvents::default();
        for event in &batch {
            encoder.event(event, &mut plain).unwrap();
            if stats.event_count == 0 {
                stats.first_event_us = encoder.written_us();
            }
            stats.last_event_us = encoder.written_us();
            stats.event_count += 1;
        }
        events.extend(batch);
        (plain, stats)
    };
    for frame in 0..2 {
        let first = events.len();
        let mut ends = Vec::new();
        for _ in 0..3 {
            let (plain, stats) = push(&mut file, &mut encoder, &mut events);
            file.push(&plain, stats).unwrap();
            file.flush().unwrap();
            ends.push((file_len(file.path()), events.len()));
        }
        let (mut plain, stats) = push(&mut file, &mut encoder, &mut events);
        if frame == 1 {
            let at = encoder.written_us();
            encoder
                .end(at, &SessionStatus::Complete, &mut plain)
                .unwrap();
        }
        file.push(&plain, stats).unwrap();
        let info = file.close_frame().unwrap().unwrap();
        flushes.push(ends);
        frame_events.push((first, (info.offset + info.compressed_len) as usize));
    }
    file.append_manifest(SessionStatus::Complete, 0).unwrap();
    let stats = file.stats();
    assert_eq!(stats.frames, 3);
    assert_eq!(stats.syncs, 5, "header, 2 frames, manifest, directory");
    assert_eq!(
        stats.writes,
        1 + 2 * 4 + 1,
        "a write per flush and per frame end"
    );
    Flushed {
        bytes: std::fs::read(file.path()).unwrap(),
        events,
        key: (*key).clone(),
        flushes,
        frame_events,
    }
}

fn file_len(path: &std::path::Path) -> usize {
    std::fs::metadata(path).unwrap().len() as usize
}

#[test]
fn every_truncation_yields_the_verified_prefix_and_the_flushed_tail() {
    let f = flushed_recording();
    let vk = f.key.verifying_key();
    let full = read_recording_bytes(&f.bytes, Some(&vk)).unwrap();
    assert_eq!(full.damage, None);
    assert_eq!(full.tail, None);
    assert_eq!(full.events, f.events);
    assert_eq!(full.frames.len(), 3, "header and two event frames");
    // Where each frame and its checkpoint end: the next frame's offset, or the manifest's.
    let manifest_at = (0..f.bytes.len())
        .find(|cut| {
            read_recording_bytes(&f.bytes[..*cut], Some(&vk)).is_ok_and(|r| r.frames.len() == 3)
        })
        .unwrap();
    let ends = [
        full.frames[1].offset as usize,
        full.frames[2].offset as usize,
        manifest_at,
    ];
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cut.cast.zst");
    for cut in 0..=f.bytes.len() {
        let bytes = &f.bytes[..cut];
        let result = read_recording_bytes(bytes, Some(&vk));
        let complete = ends.iter().filter(|end| **end <= cut).count();
        if complete == 0 {
            assert!(
                matches!(result, Err(Error::HeaderDamaged(_))),
                "cut {cut}: {result:?}"
            );
            continue;
        }
        let r = result.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(r.frames[..], full.frames[..complete], "cut {cut}");
        let verified_events = f
            .frame_events
            .get(complete - 1)
            .map_or(f.events.len(), |e| e.0);
        assert_eq!(r.events[..], f.events[..verified_events], "cut {cut}");
        if cut == f.bytes.len() {
            assert!(r.manifest.is_some());
            continue;
        }
        assert_eq!(r.verified_len as usize, ends[complete - 1], "cut {cut}");
        assert_eq!(r.manifest, None, "cut {cut}");
        let mut expected_status = SessionStatus::Open;
        if ends.contains(&cut) {
            // A cut exactly at a frame end is indistinguishable from a live file between frames.
            assert_eq!(r.damage, None, "cut {cut}");
            assert_eq!(r.tail, None, "cut {cut}");
            if complete == 3 {
                expected_status = SessionStatus::Complete;
            }
        } else if complete == 3 {
            // Inside the manifest.
            let damage = r.damage.clone().unwrap();
            assert_eq!(damage.kind, DamageKind::Truncated, "cut {cut}");
            assert_eq!((damage.frame, damage.offset as usize), (3, manifest_at));
            assert_eq!(r.tail, None, "cut {cut}");
            expected_status = SessionStatus::Complete;
        } else {
            // Inside an event frame or its checkpoint: the unsealed tail holds every event of
            // the blocks complete before the cut.
            let damage = r.damage.clone().unwrap();
            assert_eq!(damage.kind, DamageKind::UnsealedTail, "cut {cut}");
            assert_eq!(damage.frame as usize, complete, "cut {cut}");
            assert_eq!(damage.offset as usize, ends[complete - 1], "cut {cut}");
            let tail = r.tail.as_ref().unwrap();
            assert_eq!((tail.frame, tail.offset), (damage.frame, damage.offset));
            assert_eq!(tail.len as usize, cut - ends[complete - 1], "cut {cut}");
            let (first, frame_end) = f.frame_events[complete - 1];
            // The last block ends where the 4-byte content checksum starts.
            let last = if cut >= frame_end - 4 {
                f.frame_events.get(complete).map_or(f.events.len(), |e| e.0)
            } else {
                f.flushes[complete - 1]
                    .iter()
                    .filter(|(end, _)| *end <= cut)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(first)
            };
            assert_eq!(tail.events[..], f.events[first..last], "cut {cut}");
            let ended = complete == 2 && cut >= frame_end - 4;
            assert_eq!(tail.end.is_some(), ended, "cut {cut}");
            assert_eq!(
                r.status,
                SessionStatus::Open,
                "tail end lines are not verified"
            );
            expected_status = if ended {
                SessionStatus::Complete
            } else {
                SessionStatus::Interrupted
            };
        }
        if r.damage.is_none() && complete < 3 {
            expected_status = SessionStatus::Interrupted;
        }
        assert_eq!(r.status == SessionStatus::Complete, complete == 3);

        seals_with_every_readable_event(&copy, bytes, &r, &f.key, &expected_status);
    }
}

#[tokio::test]
async fn flipped_bytes_stop_verification_at_the_flipped_frame() {
    let (bytes, events, key) = small_recording().await;
    let vk = key.verifying_key();
    let full = read_recording_bytes(&bytes, Some(&vk)).unwrap();
    let frame = |i: usize| {
        full.frames[i].offset as usize
            ..(full.frames[i].offset + full.frames[i].compressed_len) as usize
    };
    // Header frame: nothing can be trusted.
    for at in frame(0) {
        let mut copy = bytes.clone();
        copy[at] ^= 0x20;
        let result = read_recording_bytes(&copy, Some(&vk));
        assert!(
            matches!(result, Err(Error::HeaderDamaged(_))),
            "header byte {at}: {result:?}"
        );
    }
    // A middle frame (2) and the tail frame (5): the prefix before it survives.
    for index in [2usize, 5] {
        let mut checksum_hits = 0;
        for at in frame(index).chain(frame(index).end..frame(index).end + 16) {
            let mut copy = bytes.clone();
            copy[at] ^= 0x20;
            let r = read_recording_bytes(&copy, Some(&vk)).unwrap();
            let damage = r
                .damage
                .clone()
                .unwrap_or_else(|| panic!("byte {at} flip undetected"));
            assert_eq!(damage.frame as usize, index, "byte {at}: {damage}");
            assert_eq!(damage.offset, full.frames[index].offset, "byte {at}");
            assert_eq!(r.frames[..], full.frames[..index]);
            assert_eq!(r.events[..], events[..index - 1]);
            assert_eq!(r.manifest, None);
            if frame(index).contains(&at) {
                // Flips in zstd frame or block headers can change lengths (truncated or
                // undecodable); anywhere else the frame hash no longer matches.
                checksum_hits += usize::from(damage.kind == DamageKind::ChecksumMismatch);
            }
        }
        assert!(
            checksum_hits * 2 > frame(index).len(),
            "frame {index}: {checksum_hits} hash mismatches"
        );
    }
    // The manifest: every frame verifies, the manifest does not.
    let manifest_at = bytes.len() - 300;
    for at in manifest_at..bytes.len() {
        let mut copy = bytes.clone();
        copy[at] ^= 0x20;
        let r = read_recording_bytes(&copy, Some(&vk)).unwrap();
        let damage = r
            .damage
            .unwrap_or_else(|| panic!("byte {at} flip undetected"));
        assert!(damage.frame as usize >= 5, "byte {at}: {damage}");
        assert_eq!(r.manifest, None);
    }
    // Another gateway's key: the signature check fails at the header.
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert!(
        matches!(read_recording_bytes(&bytes, Some(&other)), Err(Error::HeaderDamaged(d)) if d.kind == DamageKind::BadSignature)
    );
    // Extra bytes after the manifest are reported, and everything before them kept.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    let r = read_recording_bytes(&longer, Some(&vk)).unwrap();
    assert_eq!(r.damage.map(|d| d.kind), Some(DamageKind::TrailingData));
    assert_eq!(r.events, events);
}

/// Sealing `bytes` (read as `r`) keeps every verified and every tail event and verifies, and
/// only the torn block after the tail's complete blocks is reported as discarded.
fn seals_with_every_readable_event(
    copy: &std::path::Path,
    bytes: &[u8],
    r: &custody_recorder::reader::Recording,
    key: &SigningKey,
    expected_status: &SessionStatus,
) {
    let cut = bytes.len();
    std::fs::write(copy, bytes).unwrap();
    let manifest = seal_interrupted(copy, key).unwrap();
    let sealed = read_recording(copy, Some(&key.verifying_key())).unwrap();
    assert_eq!(sealed.damage, None, "cut {cut}");
    assert_eq!(sealed.manifest.as_ref(), Some(&manifest));
    assert_eq!(&sealed.status, expected_status, "cut {cut}");
    let kept: Vec<Event> = r.events_with_tail().cloned().collect();
    assert_eq!(sealed.events, kept, "cut {cut}");
    assert_eq!(manifest.event_count, kept.len() as u64);
    // Only the bytes after the last complete block are lost (all of them when no complete
    // line was in the tail).
    let torn = match &r.tail {
        Some(t) if t.decoded_bytes > 0 => t.len - t.complete_len,
        _ => cut as u64 - r.verified_len,
    };
    assert_eq!(manifest.discarded_tail_bytes, torn, "cut {cut}");
}

#[test]
fn flipped_bytes_in_an_unsealed_tail_never_reach_the_verified_events() {
    let f = flushed_recording();
    let vk = f.key.verifying_key();
    let full = read_recording_bytes(&f.bytes, Some(&vk)).unwrap();
    // The second event frame as a killed writer leaves it: flushed blocks, no checkpoint.
    let (first, frame_end) = f.frame_events[1];
    let cut = &f.bytes[..frame_end - 8];
    let start = full.frames[2].offset as usize;
    for at in start..cut.len() {
        let mut copy = cut.to_vec();
        copy[at] ^= 0x20;
        let r = read_recording_bytes(&copy, Some(&vk)).unwrap();
        assert_eq!(r.events[..], f.events[..first], "byte {at}");
        assert_eq!(r.frames[..], full.frames[..2], "byte {at}");
        let damage = r.damage.unwrap_or_else(|| panic!("byte {at}: no damage"));
        assert_eq!(
            (damage.frame, damage.offset as usize),
            (2, start),
            "byte {at}"
        );
        let tail_events = r.tail.map_or(0, |t| t.events.len());
        assert!(tail_events <= f.events.len() - first, "byte {at}");
    }
}

#[tokio::test]
async fn dropping_or_swapping_frames_breaks_the_chain() {
    let (bytes, _events, key) = small_recording().await;
    let vk = key.verifying_key();
    let full = read_recording_bytes(&bytes, Some(&vk)).unwrap();
    let start = |i: usize| full.frames[i].offset as usize;
    // Remove frame 2 with its checkpoint.
    let mut cut = bytes[..start(2)].to_vec();
    cut.extend_from_slice(&bytes[start(3)..]);
    let r = read_recording_bytes(&cut, Some(&vk)).unwrap();
    let damage = r.damage.unwrap();
    assert_eq!((damage.frame, damage.kind), (2, DamageKind::ChainMismatch));
    assert_eq!(r.frames.len(), 2);
}
