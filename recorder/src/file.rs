//! The recording file on disk. Events are streamed into an open zstd frame; a zstd block flush
//! ([`RecordingFile::flush`]) writes what is buffered so far as complete blocks with a plain
//! `write`, and closing the frame ([`RecordingFile::close_frame`]) writes its last block and
//! checksum with the signed checkpoint and `fdatasync`s. The final manifest follows the last
//! frame. Blocking I/O: the async writer runs it on tokio's blocking pool.
//!
//! A process crash keeps everything written (the page cache survives it), so what a kill loses is
//! what was not yet block-flushed. Power loss can lose what was written since the last
//! `fdatasync`, i.e. the open frame. Either way the file ends in complete frames followed by at
//! most one unterminated frame, which the reader decodes up to its last complete block.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, InBuffer, OutBuffer};

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

impl FrameEvents {
    /// These events followed by `later` (the events of a later part of the same frame).
    fn then(self, later: Self) -> Self {
        match (self.event_count, later.event_count) {
            (_, 0) => self,
            (0, _) => later,
            (n, m) => Self {
                first_event_us: self.first_event_us,
                last_event_us: later.last_event_us,
                event_count: n.saturating_add(m),
            },
        }
    }
}

/// Counters of what a recording file did to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// `fdatasync`/`fsync` calls (frame ends, the manifest, and the directory at creation).
    pub syncs: u64,
    /// `write` calls (block flushes and frame ends).
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Frames closed.
    pub frames: u32,
}

/// An open recording file being appended to.
pub struct RecordingFile {
    file: File,
    path: PathBuf,
    key: Arc<SigningKey>,
    meta: SessionMeta,
    /// One compression context for every frame: a frame ends with `ZSTD_e_end`, after which the
    /// next input starts a new, independent frame.
    cctx: CCtx<'static>,
    /// The end of the last complete frame + checkpoint: everything before it is durable.
    offset: u64,
    /// The end of the bytes written: `offset` plus the flushed blocks of the open frame.
    written: u64,
    chain: Hash,
    frames: u32,
    events: u64,
    last_event_us: u64,
    open: Option<OpenFrame>,
    /// The header frame, for a file this process created.
    header: Option<FrameInfo>,
    /// Set when a write failed: the compressor's state no longer matches the file.
    broken: bool,
    stats: FileStats,
}

/// The frame being written.
struct OpenFrame {
    started: Instant,
    /// Uncompressed bytes given to the frame.
    plain_len: usize,
    /// Compressed bytes of the frame already written to the file.
    written_len: u64,
    /// SHA-256 over the compressed bytes written so far.
    hasher: Sha256,
    /// Compressed bytes produced and not yet written.
    out: Vec<u8>,
    /// Whether input was given since the last block flush.
    unflushed: bool,
    events: FrameEvents,
}

impl std::fmt::Debug for RecordingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingFile")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("written", &self.written)
            .field("frames", &self.frames)
            .field("events", &self.events)
            .field("open_frame_bytes", &self.open.as_ref().map(|o| o.plain_len))
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
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
        crate::permissions::create_dir(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(crate::permissions::FILE_MODE)
            .open(&path)
            .map_err(io)?;
        let resume = Resume {
            offset: 0,
            chain: GENESIS,
            frames: 0,
            events: 0,
            last_event_us: 0,
        };
        let mut this = Self::new(file, path.clone(), key, meta.clone(), level, resume)?;
        this.header = Some(this.append_frame(header, FrameEvents::default())?);
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        this.stats.syncs += 1;
        Ok(this)
    }

    /// Reopens a file for sealing after recovery: the caller has verified everything before
    /// `at.offset`, cut the file there, and passes the state reached.
    pub(crate) fn reopen(
        path: &Path,
        key: Arc<SigningKey>,
        meta: SessionMeta,
        at: Resume,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::RecordingIo {
                path: path.to_owned(),
                source,
            })?;
        let level = zstd::DEFAULT_COMPRESSION_LEVEL;
        Self::new(file, path.to_owned(), key, meta, level, at)
    }

    fn new(
        file: File,
        path: PathBuf,
        key: Arc<SigningKey>,
        meta: SessionMeta,
        level: i32,
        at: Resume,
    ) -> Result<Self> {
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .and_then(|_| cctx.set_parameter(CParameter::ChecksumFlag(true)))
            .and_then(|_| cctx.set_parameter(CParameter::WindowLog(DEFAULT_WINDOW_LOG)))
            .map_err(zstd_error)?;
        Ok(Self {
            file,
            path,
            key,
            meta,
            cctx,
            offset: at.offset,
            written: at.offset,
            chain: at.chain,
            frames: at.frames,
            events: at.events,
            last_event_us: at.last_event_us,
            open: None,
            header: None,
            broken: false,
            stats: FileStats::default(),
        })
    }

    /// Sizes the compression window for frames of about `frame_max_bytes` (2^17 to 2^23 bytes):
    /// a frame never refers back further than its own start, so a larger window only costs
    /// memory. Applies from the next frame on.
    pub fn set_frame_size_hint(&mut self, frame_max_bytes: usize) -> Result<()> {
        let log = frame_max_bytes
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(17, 23);
        if self.open.is_some() {
            return Ok(());
        }
        self.cctx
            .set_parameter(CParameter::WindowLog(log))
            .map(drop)
            .map_err(zstd_error)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header frame (frame 0), for a file created by [`create`](Self::create).
    pub fn header_frame(&self) -> Option<FrameInfo> {
        self.header
    }

    /// The key that signs the file's checkpoints and manifest.
    pub(crate) fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// What the file did to the disk so far.
    pub fn stats(&self) -> FileStats {
        self.stats
    }

    /// Memory held by the compressor (it is kept for the life of the session).
    pub fn compressor_memory(&self) -> usize {
        self.cctx.sizeof()
    }

    /// Whether a frame is open (has been given input and not closed yet).
    pub fn frame_is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Uncompressed bytes in the open frame (0 when none is open).
    pub fn open_frame_len(&self) -> usize {
        self.open.as_ref().map_or(0, |o| o.plain_len)
    }

    /// How long ago the open frame got its first input.
    pub fn open_frame_age(&self) -> Option<Duration> {
        self.open.as_ref().map(|o| o.started.elapsed())
    }

    /// Adds `plain` (complete asciicast lines holding `events`) to the open frame, opening one if
    /// none is. Nothing reaches the file before the next [`flush`](Self::flush) or
    /// [`close_frame`](Self::close_frame), except full zstd blocks of a large input, which are
    /// buffered too. A new frame's `plain` must start with its anchor line.
    pub fn push(&mut self, plain: &[u8], events: FrameEvents) -> Result<()> {
        self.usable()?;
        let open = self.open.get_or_insert_with(|| OpenFrame {
            started: Instant::now(),
            plain_len: 0,
            written_len: 0,
            hasher: Sha256::new(),
            out: Vec::new(),
            unflushed: false,
            events: FrameEvents::default(),
        });
        let mut input = InBuffer::around(plain);
        while input.pos() < plain.len() {
            open.out.reserve(CCtx::out_size());
            let at = open.out.len();
            let mut output = OutBuffer::around_pos(&mut open.out, at);
            self.cctx
                .compress_stream2(
                    &mut output,
                    &mut input,
                    zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                )
                .map_err(zstd_error)?;
        }
        open.plain_len += plain.len();
        open.unflushed |= !plain.is_empty();
        open.events = open.events.then(events);
        Ok(())
    }

    /// A zstd block flush: ends the current block of the open frame and writes everything
    /// compressed so far with one plain `write` (no sync: a process crash keeps it, and the
    /// reader decodes an unterminated frame up to its last complete block). Does nothing when
    /// there is no new input. On failure the partial write is cut off (best effort), the file
    /// can no longer be appended to, and the error is returned.
    pub fn flush(&mut self) -> Result<()> {
        self.usable()?;
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if !open.unflushed {
            return Ok(());
        }
        drain(&mut open.out, |output| self.cctx.flush_stream(output)).inspect_err(|_| {
            self.broken = true;
        })?;
        open.unflushed = false;
        let bytes = std::mem::take(&mut open.out);
        self.write(&bytes, false)?;
        if let Some(open) = self.open.as_mut() {
            open.hasher.update(&bytes);
            open.written_len += bytes.len() as u64;
        }
        Ok(())
    }

    /// Ends the open frame: writes its last block and checksum and its signed checkpoint in one
    /// write, and `fdatasync`s. Returns the frame, or `None` when no frame was open. On failure
    /// the partial write is cut off (best effort) and the error returned; the file can then no
    /// longer be appended to.
    pub fn close_frame(&mut self) -> Result<Option<FrameInfo>> {
        self.usable()?;
        let Some(mut open) = self.open.take() else {
            return Ok(None);
        };
        drain(&mut open.out, |output| self.cctx.end_stream(output)).inspect_err(|_| {
            self.broken = true;
        })?;
        open.hasher.update(&open.out);
        let compressed_len = open.written_len + open.out.len() as u64;
        let frame_sha256: Hash = open.hasher.finalize().into();
        let chain = integrity::chain_step(&self.chain, &frame_sha256);
        let index = self.frames;
        let events = open.events;
        let total_events = self.events + u64::from(events.event_count);
        let checkpoint = Checkpoint {
            session_id: self.meta.session_id.clone(),
            frame: index,
            offset: self.offset,
            compressed_len,
            frame_sha256,
            chain,
            first_event_us: events.first_event_us,
            last_event_us: events.last_event_us,
            event_count: events.event_count,
            total_events,
            written_at_us: now_us(),
            public_key: self.key.verifying_key().to_bytes(),
        };
        let mut bytes = open.out;
        bytes.extend_from_slice(&integrity::encode_checkpoint(&checkpoint, &self.key)?);
        self.write(&bytes, true)?;
        self.offset = self.written;
        self.frames += 1;
        self.stats.frames += 1;
        self.chain = chain;
        self.events = total_events;
        if events.event_count > 0 {
            self.last_event_us = events.last_event_us;
        }
        Ok(Some(FrameInfo {
            index,
            offset: checkpoint.offset,
            compressed_len,
            first_event_us: events.first_event_us,
            last_event_us: events.last_event_us,
            event_count: events.event_count,
            chain_hash: chain,
        }))
    }

    /// Writes `plain` as one complete frame with its checkpoint, synced: [`push`](Self::push)
    /// then [`close_frame`](Self::close_frame). No frame may be open.
    pub fn append_frame(&mut self, plain: &[u8], events: FrameEvents) -> Result<FrameInfo> {
        if self.open.is_some() {
            return Err(Error::RecordingFailed(
                "a frame is already open in this recording".into(),
            ));
        }
        self.push(plain, events)?;
        self.close_frame()?
            .ok_or_else(|| Error::RecordingFailed("the frame was not written".into()))
    }

    /// Closes the open frame, if any, then appends the signed manifest with `status` and syncs;
    /// the file is then sealed.
    pub fn append_manifest(&mut self, status: SessionStatus, discarded: u64) -> Result<Manifest> {
        self.close_frame()?;
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
        self.write(&bytes, true)?;
        self.offset = self.written;
        Ok(manifest)
    }

    /// After a failed write: cuts off whatever part of that write reached the file, keeping the
    /// complete frames and the blocks of the open frame flushed before it, and syncs.
    pub fn cut_failed_write(&mut self) -> Result<()> {
        self.file
            .set_len(self.written)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io(e))
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            Err(Error::RecordingFailed(
                "an earlier write to this recording failed".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Appends `bytes`, then `fdatasync`s when `sync`. A failure leaves the file unusable.
    fn write(&mut self, bytes: &[u8], sync: bool) -> Result<()> {
        self.stats.writes += 1;
        let mut written = self.file.write_all(bytes);
        if sync && written.is_ok() {
            self.stats.syncs += 1;
            written = self.file.sync_data();
        }
        if let Err(e) = written {
            self.broken = true;
            // Leave no torn write behind if we can; the original error is the one that matters.
            let _ = self.file.set_len(self.written);
            return Err(self.io(e));
        }
        self.written += bytes.len() as u64;
        self.stats.bytes += bytes.len() as u64;
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

/// Runs a flushing or ending step of the compressor until it reports nothing left, appending its
/// output to `out`.
fn drain(
    out: &mut Vec<u8>,
    mut step: impl FnMut(&mut OutBuffer<'_, Vec<u8>>) -> zstd_safe::SafeResult,
) -> Result<()> {
    loop {
        out.reserve(CCtx::out_size());
        let at = out.len();
        let left = step(&mut OutBuffer::around_pos(out, at)).map_err(zstd_error)?;
        if left == 0 {
            return Ok(());
        }
    }
}

fn zstd_error(code: zstd_safe::ErrorCode) -> Error {
    Error::Compression(std::io::Error::other(zstd_safe::get_error_name(code)))
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

/// The length of the zstd frame at the start of `bytes`, `None` when it is incomplete or not a
/// zstd frame.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<usize> {
    zstd_safe::find_frame_compressed_size(bytes)
        .ok()
        .filter(|len| *len <= bytes.len())
}

/// How far a zstd frame that may be cut anywhere can be decoded: see [`complete_blocks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocks {
    /// The bytes end inside the frame header.
    NoHeader,
    /// The frame header and complete blocks take the first `len` bytes; the rest is a torn
    /// block, or the frame's checksum is incomplete.
    Cut {
        /// Bytes of the frame header and the complete blocks.
        len: usize,
    },
    /// The whole frame is there.
    Complete,
    /// A frame or block header no zstd encoder writes: damage, not a cut.
    Invalid(&'static str),
}

/// Walks the frame header and block headers of the zstd frame at the start of `bytes` to find
/// where its last complete block ends (RFC 8878 §3.1.1). A block flush always ends a block, so
/// this is where the last flush that reached the file ended, or a later complete block.
pub(crate) fn complete_blocks(bytes: &[u8]) -> Blocks {
    const MAX_BLOCK: usize = 128 << 10;
    if bytes.len() < 5 {
        return Blocks::NoHeader;
    }
    if bytes[..4] != ZSTD_MAGIC_BYTES {
        return Blocks::Invalid("not a zstd frame");
    }
    let descriptor = bytes[4];
    if descriptor & 0x08 != 0 {
        return Blocks::Invalid("reserved bit set in the frame header");
    }
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let window = usize::from(!single_segment);
    let dict_id = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut pos = 5 + window + dict_id + content_size;
    if bytes.len() < pos {
        return Blocks::NoHeader;
    }
    loop {
        let Some(&[b0, b1, b2]) = bytes.get(pos..pos + 3) else {
            return Blocks::Cut { len: pos };
        };
        let header = u32::from_le_bytes([b0, b1, b2, 0]);
        let last = header & 1 == 1;
        let size = (header >> 3) as usize;
        let content = match (header >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return Blocks::Invalid("reserved block type"),
        };
        if size > MAX_BLOCK {
            return Blocks::Invalid("block larger than 128 KiB");
        }
        if bytes.len() < pos + 3 + content {
            return Blocks::Cut { len: pos };
        }
        pos += 3 + content;
        if last {
            let end = pos + if checksum { 4 } else { 0 };
            return if bytes.len() >= end {
                Blocks::Complete
            } else {
                Blocks::Cut { len: pos }
            };
        }
    }
}

/// The result of decoding a zstd frame in streaming mode.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The output produced (every complete block's content, up to the limit).
    pub plain: Vec<u8>,
    /// Input bytes consumed.
    pub consumed: usize,
    /// Whether the frame ended (last block and checksum checked).
    pub finished: bool,
    /// Why decoding stopped early, if it did.
    pub error: Option<String>,
}

/// Decodes the zstd frame at the start of `bytes` in streaming mode, producing at most about
/// `limit` bytes. Stops at the frame's end, at the end of the input, or at the first error, and
/// returns what was decoded before.
pub(crate) fn decode_stream(bytes: &[u8], limit: usize) -> Decoded {
    let mut dctx = DCtx::create();
    let mut input = InBuffer::around(bytes);
    let mut plain = Vec::new();
    let mut finished = false;
    let mut error = None;
    loop {
        if plain.len() > limit {
            error = Some("frame larger than the reader's limit".to_owned());
            break;
        }
        plain.reserve(DCtx::out_size());
        let (before_in, before_out) = (input.pos(), plain.len());
        let space = plain.capacity() - before_out;
        let step = dctx.decompress_stream(
            &mut OutBuffer::around_pos(&mut plain, before_out),
            &mut input,
        );
        match step {
            Ok(0) => {
                finished = true;
                break;
            }
            Ok(_) => {}
            Err(code) => {
                error = Some(zstd_safe::get_error_name(code).to_owned());
                break;
            }
        }
        let produced = plain.len() - before_out;
        let drained = produced < space;
        if (input.pos() == bytes.len() && drained) || (produced == 0 && input.pos() == before_in) {
            break;
        }
    }
    Decoded {
        plain,
        consumed: input.pos(),
        finished,
        error,
    }
}

/// Decompresses exactly one complete frame, refusing frames larger than [`MAX_FRAME_PLAIN`].
pub(crate) fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    let decoded = decode_stream(frame, MAX_FRAME_PLAIN);
    match decoded.error {
        Some(error) => Err(error),
        None if !decoded.finished || decoded.consumed != frame.len() => {
            Err("frame ends early".into())
        }
        None => Ok(decoded.plain),
    }
}

/// The largest decompressed frame a reader accepts (a frame closes at 1 MiB by default, plus
/// the event that crossed it).
pub const MAX_FRAME_PLAIN: usize = 256 << 20;

/// The compression window until [`RecordingFile::set_frame_size_hint`] says otherwise: 1 MiB,
/// the default frame size.
const DEFAULT_WINDOW_LOG: u32 = 20;

/// The zstd frame magic number as it appears in the file.
const ZSTD_MAGIC_BYTES: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
