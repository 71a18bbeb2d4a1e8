//! Reading and verifying a recording: the longest verified prefix of a file, what is wrong
//! after it, and sealing a file left open by a crash.
//!
//! Verification walks the file front to back. Each zstd frame must be followed by a checkpoint
//! whose signature verifies, that names the frame's index, offset, length and SHA-256 and the
//! chain value, and whose event times and count match the frame's decoded events. The first
//! frame that fails any check ends the verified prefix; nothing verified is returned after it.
//!
//! A file whose writer is still running, or was killed, ends in a frame that was never closed:
//! the blocks flushed into it so far and no checkpoint. The reader decodes that frame up to its
//! last complete block and returns its complete events separately, as an unverified [`Tail`],
//! with [`DamageKind::UnsealedTail`] naming where it starts. [`seal_interrupted`] turns it into a
//! verified frame.

mod seal;
mod tail;

use std::fmt;
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::error::{Error, Result};
use crate::file::{self, Blocks};
use crate::format::{self, Decoder, Record};
use crate::integrity::{self, Checkpoint, GENESIS, Hash, Manifest, SignedRecordProblem};
use crate::model::{Event, SessionMeta, SessionStatus};

pub use seal::seal_interrupted;
pub(crate) use seal::seal_with_status;
pub use tail::Tail;

/// A recording as far as it verifies, and the unverified tail of a frame left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// The header's session metadata.
    pub meta: SessionMeta,
    /// The events of the verified frames (and only those: see [`Recording::tail`]).
    pub events: Vec<Event>,
    /// The verified frames (frame 0 is the header frame).
    pub frames: Vec<FrameInfo>,
    /// The signed manifest, when the file is sealed and the manifest verifies.
    pub manifest: Option<Manifest>,
    /// How the session ended: the manifest's status, else the verified end line's, else
    /// [`SessionStatus::Open`] (still being written, or left open by a crash).
    pub status: SessionStatus,
    /// The first problem found, `None` when the whole file verifies.
    pub damage: Option<Damage>,
    /// Bytes from the file start through the last verified frame or manifest.
    pub verified_len: u64,
    /// When the file ends in a frame that was never closed (a live recording, or one whose
    /// writer was killed): the events of its complete blocks. They are **not verified**: no
    /// checkpoint covers them. `damage` is then [`DamageKind::UnsealedTail`] at the same offset.
    pub tail: Option<Tail>,
    /// The public key the file's signed records name (the first one read), when any was read.
    /// Read without a key, the signatures were checked against it: that proves integrity, not
    /// authorship.
    pub signer: Option<Hash>,
}

impl Recording {
    /// The verified events followed by the unverified tail's, for showing a live or crashed
    /// session; check [`Recording::tail`] to tell them apart.
    pub fn events_with_tail(&self) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .chain(self.tail.iter().flat_map(|t| t.events.iter()))
    }
}

/// Where a frame is and what it holds; the index stores these for seeking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's position in the file (0 is the header frame).
    pub index: u32,
    /// Byte offset of the zstd frame in the file.
    pub offset: u64,
    /// Compressed length in bytes (the checkpoint after it not included).
    pub compressed_len: u64,
    /// Session time of the first event, microseconds (0 when the frame has none).
    pub first_event_us: u64,
    /// Session time of the last event, microseconds.
    pub last_event_us: u64,
    /// Events in the frame.
    pub event_count: u32,
    /// The chain value after this frame.
    pub chain_hash: Hash,
}

/// The first bad spot in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The index of the first frame that did not verify (the manifest counts as the frame after
    /// the last one).
    pub frame: u32,
    /// Its byte offset.
    pub offset: u64,
    /// What is wrong.
    pub kind: DamageKind,
}

/// What is wrong at the damaged spot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The file ends inside the header frame, the manifest or a record's first bytes.
    Truncated,
    /// The file ends inside a frame that has no checkpoint yet: the frame a live writer is
    /// filling, or the one a killed writer left. [`Recording::tail`] holds the events of its
    /// complete blocks, unverified.
    UnsealedTail,
    /// The frame's bytes do not hash to what its checkpoint says.
    ChecksumMismatch,
    /// The checkpoint or manifest does not continue the chain (frames missing, reordered or
    /// spliced from elsewhere).
    ChainMismatch,
    /// A checkpoint or manifest signature does not verify, or another key signed it.
    BadSignature,
    /// The bytes are not a valid frame, checkpoint, manifest or asciicast content.
    Undecodable(String),
    /// Bytes follow the manifest.
    TrailingData,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {} at byte {}: ", self.frame, self.offset)?;
        match &self.kind {
            DamageKind::Truncated => f.write_str("truncated"),
            DamageKind::UnsealedTail => f.write_str("unsealed frame (no checkpoint yet)"),
            DamageKind::ChecksumMismatch => f.write_str("frame hash differs from its checkpoint"),
            DamageKind::ChainMismatch => f.write_str("hash chain broken"),
            DamageKind::BadSignature => f.write_str("signature does not verify"),
            DamageKind::Undecodable(why) => write!(f, "undecodable: {why}"),
            DamageKind::TrailingData => f.write_str("data after the manifest"),
        }
    }
}

/// Reads and verifies the recording at `path`. With `key`, every signature must be by that
/// key; without it, signatures are checked against the key the file names (integrity, not
/// authorship). A damaged header is an error; damage later is reported in
/// [`Recording::damage`] with everything before it returned.
pub fn read_recording(path: &Path, key: Option<&VerifyingKey>) -> Result<Recording> {
    let bytes = std::fs::read(path).map_err(|source| Error::RecordingIo {
        path: path.to_owned(),
        source,
    })?;
    read_recording_bytes(&bytes, key)
}

/// [`read_recording`] over bytes already in memory.
pub fn read_recording_bytes(bytes: &[u8], key: Option<&VerifyingKey>) -> Result<Recording> {
    let mut walk = Walk::new(bytes, key);
    let damage = walk.run().err();
    let Some(meta) = walk.meta else {
        let damage = damage.unwrap_or(Damage {
            frame: 0,
            offset: 0,
            kind: DamageKind::Truncated,
        });
        return Err(Error::HeaderDamaged(damage));
    };
    let status = walk
        .manifest
        .as_ref()
        .map(|m| m.status.clone())
        .or(walk.end)
        .unwrap_or(SessionStatus::Open);
    let tail = damage
        .as_ref()
        .filter(|d| d.kind == DamageKind::UnsealedTail)
        .map(|d| Tail::decode(&bytes[walk.pos..], walk.decoder.clone(), d.frame, d.offset));
    Ok(Recording {
        meta,
        events: walk.events,
        frames: walk.frames,
        manifest: walk.manifest,
        status,
        damage,
        verified_len: walk.pos as u64,
        tail,
        signer: walk.signer,
    })
}

/// The state of a front-to-back verification.
struct Walk<'a> {
    bytes: &'a [u8],
    key: Option<&'a VerifyingKey>,
    /// The key the first checkpoint named; all later records must name the same.
    signer: Option<Hash>,
    pos: usize,
    chain: Hash,
    decoder: Decoder,
    meta: Option<SessionMeta>,
    events: Vec<Event>,
    frames: Vec<FrameInfo>,
    manifest: Option<Manifest>,
    end: Option<SessionStatus>,
}

impl<'a> Walk<'a> {
    fn new(bytes: &'a [u8], key: Option<&'a VerifyingKey>) -> Self {
        Self {
            bytes,
            key,
            signer: None,
            pos: 0,
            chain: GENESIS,
            decoder: Decoder::new(),
            meta: None,
            events: Vec::new(),
            frames: Vec::new(),
            manifest: None,
            end: None,
        }
    }

    /// Verifies frame after frame until the end of the file or the first damage.
    fn run(&mut self) -> Result<(), Damage> {
        while self.pos < self.bytes.len() {
            let rest = &self.bytes[self.pos..];
            match integrity::magic_of(rest) {
                // The file ends in the first bytes of a frame's magic number.
                None if self.meta.is_some() && ZSTD_MAGIC.to_le_bytes().starts_with(rest) => {
                    return Err(self.damage(DamageKind::UnsealedTail));
                }
                None => return Err(self.damage(DamageKind::Truncated)),
                Some(integrity::MANIFEST_MAGIC) if self.meta.is_some() => return self.manifest(),
                Some(ZSTD_MAGIC) => self.frame()?,
                Some(_) => return Err(self.damage(DamageKind::Undecodable("no frame here".into()))),
            }
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<(), Damage> {
        let rest = &self.bytes[self.pos..];
        let Some(len) = file::frame_len(rest) else {
            return Err(self.damage(match file::complete_blocks(rest) {
                Blocks::Invalid(why) => DamageKind::Undecodable(why.into()),
                Blocks::Complete => DamageKind::Undecodable("frame".into()),
                // The header frame is written and synced before a session starts: a cut in it
                // leaves nothing attributable.
                Blocks::NoHeader | Blocks::Cut { .. } if self.meta.is_none() => {
                    DamageKind::Truncated
                }
                Blocks::NoHeader | Blocks::Cut { .. } => DamageKind::UnsealedTail,
            }));
        };
        let (frame, after) = rest.split_at(len);
        let (checkpoint, checkpoint_len) =
            integrity::decode_signed::<Checkpoint>(after, integrity::CHECKPOINT_MAGIC, self.key)
                .map_err(|p| match p {
                    // A complete frame whose checkpoint the file ends in: still a tail.
                    SignedRecordProblem::Truncated if self.meta.is_some() => {
                        self.damage(DamageKind::UnsealedTail)
                    }
                    p => self.signed_problem(p),
                })?;
        self.check_signer(&checkpoint.public_key)?;
        let index = self.frame_index();
        if checkpoint.frame != index
            || checkpoint.offset != self.pos as u64
            || checkpoint.compressed_len != len as u64
            || self
                .meta
                .as_ref()
                .is_some_and(|m| m.session_id != checkpoint.session_id)
        {
            return Err(self.damage(DamageKind::ChainMismatch));
        }
        if checkpoint.frame_sha256 != integrity::sha256(frame) {
            return Err(self.damage(DamageKind::ChecksumMismatch));
        }
        let chain = integrity::chain_next(&self.chain, frame);
        if checkpoint.chain != chain {
            return Err(self.damage(DamageKind::ChainMismatch));
        }
        let plain =
            file::decompress(frame).map_err(|why| self.damage(DamageKind::Undecodable(why)))?;
        let mut decoder = self.decoder.clone();
        let mut events = Vec::new();
        let mut end = None;
        if self.meta.is_none() {
            let meta = format::decode_header(&plain).map_err(|e| self.undecodable(&e))?;
            let one_line = plain.iter().position(|b| *b == b'\n') == Some(plain.len() - 1);
            if !one_line || meta.session_id != checkpoint.session_id {
                return Err(self.damage(DamageKind::Undecodable("header frame".into())));
            }
            self.meta = Some(meta);
        } else {
            for (n, line) in plain.split_inclusive(|b| *b == b'\n').enumerate() {
                match decoder.line(line).map_err(|e| self.undecodable(&e))? {
                    Some(Record::Anchor(_)) if n == 0 => {}
                    _ if n == 0 => {
                        return Err(self.damage(DamageKind::Undecodable("no anchor".into())));
                    }
                    Some(Record::Event(event)) => events.push(event),
                    Some(Record::End(status)) => end = Some(status),
                    Some(Record::Anchor(_)) | None => {}
                }
            }
            decoder.finish().map_err(|e| self.undecodable(&e))?;
        }
        let info = FrameInfo {
            index,
            offset: self.pos as u64,
            compressed_len: len as u64,
            first_event_us: events.first().map_or(0, |e| e.time_us),
            last_event_us: events.last().map_or(0, |e| e.time_us),
            event_count: u32::try_from(events.len()).unwrap_or(u32::MAX),
            chain_hash: chain,
        };
        if (info.first_event_us, info.last_event_us, info.event_count)
            != (
                checkpoint.first_event_us,
                checkpoint.last_event_us,
                checkpoint.event_count,
            )
            || checkpoint.total_events != (self.events.len() + events.len()) as u64
        {
            return Err(self.damage(DamageKind::Undecodable(
                "checkpoint disagrees with the frame".into(),
            )));
        }
        self.decoder = decoder;
        self.events.append(&mut events);
        self.end = end.or(self.end.take());
        self.frames.push(info);
        self.chain = chain;
        self.pos += len + checkpoint_len;
        Ok(())
    }

    fn manifest(&mut self) -> Result<(), Damage> {
        let rest = &self.bytes[self.pos..];
        let (manifest, len) =
            integrity::decode_signed::<Manifest>(rest, integrity::MANIFEST_MAGIC, self.key)
                .map_err(|p| self.signed_problem(p))?;
        self.check_signer(&manifest.public_key)?;
        if manifest.chain_head != self.chain
            || manifest.frame_count != self.frame_index()
            || manifest.event_count != self.events.len() as u64
            || Some(&manifest.meta) != self.meta.as_ref()
        {
            return Err(self.damage(DamageKind::ChainMismatch));
        }
        self.pos += len;
        self.manifest = Some(manifest);
        if self.pos != self.bytes.len() {
            return Err(self.damage(DamageKind::TrailingData));
        }
        Ok(())
    }

    fn check_signer(&mut self, named: &Hash) -> Result<(), Damage> {
        match self.signer {
            Some(signer) if signer != *named => Err(self.damage(DamageKind::BadSignature)),
            _ => {
                self.signer = Some(*named);
                Ok(())
            }
        }
    }

    fn frame_index(&self) -> u32 {
        u32::try_from(self.frames.len()).unwrap_or(u32::MAX)
    }

    fn damage(&self, kind: DamageKind) -> Damage {
        Damage {
            frame: self.frame_index(),
            offset: self.pos as u64,
            kind,
        }
    }

    fn undecodable(&self, error: &Error) -> Damage {
        self.damage(DamageKind::Undecodable(error.to_string()))
    }

    fn signed_problem(&self, problem: SignedRecordProblem) -> Damage {
        self.damage(match problem {
            SignedRecordProblem::Truncated => DamageKind::Truncated,
            SignedRecordProblem::Malformed(why) => DamageKind::Undecodable(why),
            SignedRecordProblem::BadSignature => DamageKind::BadSignature,
        })
    }
}

/// The zstd frame magic number, little-endian `28 B5 2F FD`.
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
