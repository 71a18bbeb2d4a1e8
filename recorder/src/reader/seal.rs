//! Sealing a recording that its writer left open (a crash): the events of the unterminated
//! frame's complete blocks are re-written as a fresh, signed frame with the `interrupted` end
//! line, followed by the signed manifest.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use super::{Tail, read_recording_bytes};
use crate::error::{Error, Result};
use crate::file::{FrameEvents, RecordingFile, Resume};
use crate::format::{Encoder, TimePrecision};
use crate::integrity::{GENESIS, Manifest};
use crate::model::SessionStatus;

/// Seals the recording at `path` as [`SessionStatus::Interrupted`] and returns the manifest.
///
/// Everything verified is kept. When the file ends in an unterminated frame (the writer was
/// killed between two frame ends), the events of its complete blocks ([`super::Tail`]) are
/// re-written after the verified frames as a new frame, checkpointed and signed with `key`,
/// together with the end line; only the bytes after the frame's last complete block are lost,
/// and their number is recorded in the manifest (`discarded_tail_bytes`). Any other damage is
/// cut off the same way (everything after the verified prefix is discarded).
///
/// If the verified frames or the tail already hold an end line (the writer crashed while
/// finishing), the manifest carries that status instead. The file must have been signed with
/// `key`. A sealed file is refused with [`Error::AlreadySealed`]. If sealing fails after the
/// file was cut, the cut bytes are put back (best effort), so sealing can be retried.
pub fn seal_interrupted(path: &Path, key: &SigningKey) -> Result<Manifest> {
    seal_with_status(path, key, SessionStatus::Interrupted)
}

/// [`seal_interrupted`] with another status for a file without an end line (the writer seals
/// its own file this way after a write failure).
pub(crate) fn seal_with_status(
    path: &Path,
    key: &SigningKey,
    status: SessionStatus,
) -> Result<Manifest> {
    let io = |source| Error::RecordingIo {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let recording = read_recording_bytes(&bytes, Some(&key.verifying_key()))?;
    if recording.manifest.is_some() {
        return Err(Error::AlreadySealed);
    }
    let verified = recording.verified_len;
    // `verified_len` counts bytes of `bytes`, so it is within it.
    let cut_off = bytes.get(usize::try_from(verified).unwrap_or(usize::MAX)..);
    let cut_off = cut_off.unwrap_or_default();
    let ended = recording.status != SessionStatus::Open;
    let tail = recording
        .tail
        .as_ref()
        .filter(|t| !ended && !t.plain.is_empty());
    let discarded = tail.map_or(cut_off.len() as u64, |t| t.len - t.complete_len);

    // Cut first, so that the new frame directly follows the verified bytes.
    truncate(path, verified)?;
    let last_event_us = recording.events.last().map_or(0, |e| e.time_us);
    let resume = Resume {
        offset: verified,
        chain: recording.frames.last().map_or(GENESIS, |f| f.chain_hash),
        frames: u32::try_from(recording.frames.len()).unwrap_or(u32::MAX),
        events: recording.events.len() as u64,
        last_event_us,
    };
    let sealed = (|| {
        let mut file = RecordingFile::reopen(path, Arc::new(key.clone()), recording.meta, resume)?;
        let status = if ended {
            recording.status
        } else {
            let (plain, events, status) = sealing_frame(tail, last_event_us, status)?;
            file.append_frame(&plain, events)?;
            status
        };
        file.append_manifest(status, discarded)
    })();
    if sealed.is_err() {
        // Put the cut bytes back so that nothing readable is lost and a later run can retry.
        let _ = restore(path, verified, cut_off);
    }
    sealed
}

/// The lines of the frame that seals a file: the tail's complete lines (its anchor first) or a
/// fresh anchor at `last_event_us`, then, unless the tail already ends with one, the end line
/// with `fallback`. Returns them, their events' times and count, and the status sealed.
fn sealing_frame(
    tail: Option<&Tail>,
    last_event_us: u64,
    fallback: SessionStatus,
) -> Result<(Vec<u8>, FrameEvents, SessionStatus)> {
    let mut plain = Vec::new();
    let mut events = FrameEvents::default();
    let mut written_us = last_event_us;
    let Some(tail) = tail else {
        let mut encoder = Encoder::resume(TimePrecision::MICROS, written_us);
        encoder.anchor(&mut plain);
        encoder.end(written_us, &fallback, &mut plain)?;
        return Ok((plain, events, fallback));
    };
    plain.extend_from_slice(&tail.plain);
    if let (Some(first), Some(last)) = (tail.events.first(), tail.events.last()) {
        events = FrameEvents {
            first_event_us: first.time_us,
            last_event_us: last.time_us,
            event_count: u32::try_from(tail.events.len()).unwrap_or(u32::MAX),
        };
        written_us = last.time_us;
    }
    if let Some(end) = &tail.end {
        return Ok((plain, events, end.clone()));
    }
    Encoder::resume(TimePrecision::MICROS, written_us).end(written_us, &fallback, &mut plain)?;
    Ok((plain, events, fallback))
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path);
    file.and_then(|f| f.set_len(len).and_then(|()| f.sync_data()))
        .map_err(|source| Error::RecordingIo {
            path: path.to_owned(),
            source,
        })
}

fn restore(path: &Path, len: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.set_len(len)?;
    file.write_all(bytes)?;
    file.sync_data()
}
