//! Damaged files: cut at every byte, bytes flipped in the header, a middle frame, the tail and
//! the manifest. The reader must return exactly the longest verified prefix and name the first
//! bad frame.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "support/recording_support.rs"]
mod support;

use custody_recorder::Error;
use custody_recorder::model::{Event, SessionStatus};
use custody_recorder::reader::{DamageKind, read_recording_bytes};
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

#[tokio::test]
async fn every_truncation_yields_the_longest_complete_prefix() {
    let (bytes, events, key) = small_recording().await;
    let vk = key.verifying_key();
    let full = read_recording_bytes(&bytes, Some(&vk)).unwrap();
    assert_eq!(full.damage, None);
    assert_eq!(full.events, events);
    assert_eq!(full.frames.len(), 6, "header, 4 event frames, end frame");
    // Where each frame (with its checkpoint) ends: the next frame's offset, and for the last
    // one the start of the manifest, found as the shortest cut that still verifies all frames.
    let mut ends: Vec<usize> = full
        .frames
        .iter()
        .skip(1)
        .map(|f| f.offset as usize)
        .collect();
    let manifest_at = (0..bytes.len())
        .find(|cut| {
            read_recording_bytes(&bytes[..*cut], Some(&vk)).is_ok_and(|r| r.frames.len() == 6)
        })
        .unwrap();
    ends.push(manifest_at);
    for cut in 0..bytes.len() {
        let result = read_recording_bytes(&bytes[..cut], Some(&vk));
        let complete = ends.iter().filter(|end| **end <= cut).count();
        if complete == 0 {
            assert!(
                matches!(result, Err(Error::HeaderDamaged(_))),
                "cut {cut}: {result:?}"
            );
            continue;
        }
        let r = result.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(r.frames.len(), complete, "cut {cut}");
        assert_eq!(r.frames[..], full.frames[..complete], "cut {cut}");
        let event_frames = complete.saturating_sub(1).min(4);
        assert_eq!(r.events[..], events[..event_frames], "cut {cut}");
        assert_eq!(r.manifest, None, "cut {cut}");
        if ends.contains(&cut) {
            // A cut exactly at a frame end is indistinguishable from a file still being written.
            assert_eq!(r.damage, None, "cut {cut}");
            let expected = if complete == 6 {
                SessionStatus::Complete
            } else {
                SessionStatus::Open
            };
            assert_eq!(r.status, expected, "cut {cut}");
        } else {
            let damage = r.damage.unwrap_or_else(|| panic!("cut {cut}: no damage"));
            assert_eq!(damage.kind, DamageKind::Truncated, "cut {cut}");
            assert_eq!(damage.frame as usize, complete, "cut {cut}");
            assert_eq!(damage.offset as usize, ends[complete - 1], "cut {cut}");
            assert_eq!(r.verified_len as usize, ends[complete - 1], "cut {cut}");
        }
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
