//! The recording file on disk: appends compressed frames, each followed by its signed
//! checkpoint, and the final manifest; `fdatasync` after every frame. Blocking I/O: the async
//! writer runs it on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use zstd::zstd_safe;

use crate::error::{Error, Result};
use crate::integrity::{self, Checkpoint, GENESIS, Hash, Manifest};
use crate::model::{SessionMeta, SessionStatus};
use crate::reader::FrameInfo;

/// What the writer knows about a frame's events, for its checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameEvents {
    /// Session time of the first event, microseconds.
    pub first_event_us: u64,
    /// Session time of the last event, microseconds.
    pub last_event_us: u64,
    /// How many events.
    pub event_count: u32,
}

/// An open recording file being appended to.
#[derive(Debug)]
pub struct RecordingFile {
    file: File,
    path: PathBuf,
    key: Arc<SigningKey>,
    meta: SessionMeta,
    level: i32,
    /// The end of the last complete frame + checkpoint: everything before it is durable.
    offset: u64,
    chain: Hash,
    frames: u32,
    events: u64,
    last_event_us: u64,
}

impl RecordingFile {
    /// Creates `<dir>/<session id>.cast.zst` (never overwriting an existing file), writes the
    /// header frame and its checkpoint and syncs file and directory, so that a session whose
    /// recording cannot be started is refused before it begins.
    pub fn create(
        dir: &Path,
        meta: &SessionMeta,
        header: &[u8],
        key: Arc<SigningKey>,
        level: i32,
    ) -> Result<Self> {
        let path = recording_path(dir, &meta.session_id)?;
        let io = |source| Error::RecordingIo {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
            .map_err(io)?;
        let mut this = Self {
            file,
            path: path.clone(),
            key,
            meta: meta.clone(),
            level,
            offset: 0,
            chain: GENESIS,
            frames: 0,
            events: 0,
            last_event_us: 0,
        };
        this.append_frame(header, FrameEvents::default())?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(this)
    }

    /// Reopens a file for sealing after recovery: the caller has verified everything before
    /// `offset` and passes the state reached there.
    pub(crate) fn reopen(
        path: &Path,
        key: Arc<SigningKey>,
        meta: SessionMeta,
        at: Resume,
    ) -> Result<Self> {
        let io = |source| Error::RecordingIo {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            file,
            path: path.to_owned(),
            key,
            meta,
            level: zstd::DEFAULT_COMPRESSION_LEVEL,
            offset: at.offset,
            chain: at.chain,
            frames: at.frames,
            events: at.events,
            last_event_us: at.last_event_us,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compresses `plain` into one independent zstd frame (with content size and checksum),
    /// appends it and its signed checkpoint in one write, and `fdatasync`s. On failure the file
    /// is cut back to the last complete frame (best effort) and the error returned.
    pub fn append_frame(&mut self, plain: &[u8], events: FrameEvents) -> Result<FrameInfo> {
        let compressed = compress(plain, self.level)?;
        let chain = integrity::chain_next(&self.chain, &compressed);
        let index = self.frames;
        let total_events = self.events + u64::from(events.event_count);
        let checkpoint = Checkpoint {
            session_id: self.meta.session_id.clone(),
            frame: index,
            offset: self.offset,
            compressed_len: compressed.len() as u64,
            frame_sha256: integrity::sha256(&compressed),
            chain,
            first_event_us: events.first_event_us,
            last_event_us: events.last_event_us,
            event_count: events.event_count,
            total_events,
            written_at_us: now_us(),
            public_key: self.key.verifying_key().to_bytes(),
        };
        let mut bytes = compressed;
        bytes.extend_from_slice(&integrity::encode_checkpoint(&checkpoint, &self.key)?);
        self.write_durably(&bytes)?;
        self.frames += 1;
        self.chain = chain;
        self.events = total_events;
        if events.event_count > 0 {
            self.last_event_us = events.last_event_us;
        }
        Ok(FrameInfo {
            index,
            offset: checkpoint.offset,
            compressed_len: checkpoint.compressed_len,
            first_event_us: events.first_event_us,
            last_event_us: events.last_event_us,
            event_count: events.event_count,
            chain_hash: chain,
        })
    }

    /// Appends the signed manifest with `status` and syncs; the file is then sealed.
    pub fn append_manifest(&mut self, status: SessionStatus, discarded: u64) -> Result<Manifest> {
        let manifest = Manifest {
            meta: self.meta.clone(),
            ended_at_us: now_us(),
            duration_us: self.last_event_us,
            frame_count: self.frames,
            event_count: self.events,
            chain_head: self.chain,
            status,
            discarded_tail_bytes: discarded,
            public_key: self.key.verifying_key().to_bytes(),
        };
        let bytes = integrity::encode_manifest(&manifest, &self.key)?;
        self.write_durably(&bytes)?;
        Ok(manifest)
    }

    /// Cuts the file back to the end of the last complete frame (after a failed write).
    pub fn truncate_to_durable(&mut self) -> Result<()> {
        self.file
            .set_len(self.offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io(e))
    }

    fn write_durably(&mut self, bytes: &[u8]) -> Result<()> {
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no torn tail behind if we can; the original error is the one that matters.
            let _ = self.file.set_len(self.offset);
            return Err(self.io(e));
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::RecordingIo {
            path: self.path.clone(),
            source,
        }
    }
}

/// Where sealing resumes: the state after the last verified frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    pub offset: u64,
    pub chain: Hash,
    pub frames: u32,
    pub events: u64,
    pub last_event_us: u64,
}

/// `<dir>/<session id>.cast.zst`; the id must be a plain file name stem (letters, digits,
/// `-`, `_`, `.`, not starting with `.`), so it can never escape the directory.
pub fn recording_path(dir: &Path, session_id: &str) -> Result<PathBuf> {
    let ok = !session_id.is_empty()
        && session_id.len() <= 128
        && !session_id.starts_with('.')
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::InvalidSessionId(session_id.to_owned()));
    }
    Ok(dir.join(format!("{session_id}.cast.zst")))
}

/// One independent zstd frame with the content size and a content checksum.
pub(crate) fn compress(plain: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(Error::Compression)?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .map_err(Error::Compression)?;
    compressor.compress(plain).map_err(Error::Compression)
}

/// The length of the zstd frame at the start of `bytes`, `None` when it is incomplete or not a
/// zstd frame.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<usize> {
    zstd_safe::find_frame_compressed_size(bytes)
        .ok()
        .filter(|len| *len <= bytes.len())
}

/// Decompresses exactly one frame, refusing frames that claim more than [`MAX_FRAME_PLAIN`].
pub(crate) fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    let size = zstd_safe::get_frame_content_size(frame)
        .map_err(|_| "bad frame header".to_owned())?
        .ok_or("frame has no content size")?;
    let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FRAME_PLAIN);
    let size = size.ok_or("frame larger than the reader's limit")?;
    let mut decompressor = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
    let plain = decompressor
        .decompress(frame, size)
        .map_err(|e| e.to_string())?;
    if plain.len() == size {
        Ok(plain)
    } else {
        Err("frame shorter than its content size".into())
    }
}

/// The largest decompressed frame a reader accepts (a frame closes at 1 MiB by default, plus
/// the event that crossed it).
pub const MAX_FRAME_PLAIN: usize = 256 << 20;

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
