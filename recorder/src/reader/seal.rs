//! Sealing a recording that its writer left open (a crash): cut the unverifiable tail, append a
//! final frame with the `interrupted` end line, and the signed manifest.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use super::read_recording;
use crate::error::{Error, Result};
use crate::file::{FrameEvents, RecordingFile, Resume};
use crate::format::{Encoder, TimePrecision};
use crate::integrity::{GENESIS, Manifest};
use crate::model::SessionStatus;

/// Seals the recording at `path` as [`SessionStatus::Interrupted`] after its last verified
/// frame, cutting off any torn tail (its length is recorded in the manifest), and returns the
/// manifest. If the last verified frame already holds an end line (the writer crashed between
/// that frame and its manifest), the manifest carries that status instead. The file must have
/// been signed with `key`. A sealed file is refused with [`Error::AlreadySealed`].
pub fn seal_interrupted(path: &Path, key: &SigningKey) -> Result<Manifest> {
    let recording = read_recording(path, Some(&key.verifying_key()))?;
    if recording.manifest.is_some() {
        return Err(Error::AlreadySealed);
    }
    let io = |source| Error::RecordingIo {
        path: path.to_owned(),
        source,
    };
    let file_len = std::fs::metadata(path).map_err(io)?.len();
    let discarded = file_len - recording.verified_len;
    // Cut the torn tail first so the appended frame directly follows verified bytes.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    file.set_len(recording.verified_len)
        .and_then(|()| file.sync_data())
        .map_err(io)?;
    drop(file);
    let last_event_us = recording.events.last().map_or(0, |e| e.time_us);
    let resume = Resume {
        offset: recording.verified_len,
        chain: recording.frames.last().map_or(GENESIS, |f| f.chain_hash),
        frames: u32::try_from(recording.frames.len()).unwrap_or(u32::MAX),
        events: recording.events.len() as u64,
        last_event_us,
    };
    let mut file = RecordingFile::reopen(path, Arc::new(key.clone()), recording.meta, resume)?;
    let status = if recording.status == SessionStatus::Open {
        let mut encoder = Encoder::resume(TimePrecision::MICROS, last_event_us);
        let mut plain = Vec::new();
        encoder.anchor(&mut plain);
        encoder.end(last_event_us, &SessionStatus::Interrupted, &mut plain)?;
        file.append_frame(&plain, FrameEvents::default())?;
        SessionStatus::Interrupted
    } else {
        recording.status
    };
    file.append_manifest(status, discarded)
}
