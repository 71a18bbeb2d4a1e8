//! Tamper evidence: the SHA-256 chain over a recording's frames, and the Ed25519-signed
//! checkpoints and final manifest that travel inside the file as zstd skippable frames.
//!
//! `chain_n = sha256(chain_{n-1} || sha256(frame_n))` with `chain_{-1}` all zeros; frame 0 is the
//! header frame, so the chain is bound to the session's identity. Every frame is followed by a
//! signed [`Checkpoint`]; a sealed file ends with a signed [`Manifest`]. A signed record is a
//! skippable frame: magic (LE u32), payload length (LE u32), then the body (compact JSON) and a
//! 64-byte Ed25519 signature over a domain string followed by the body, so no JSON
//! canonicalization is needed to verify.

mod key;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::model::{SessionMeta, SessionStatus};

pub use key::{load_or_create_signing_key, parse_verifying_key, public_key_hex, public_key_pem};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Skippable-frame magic of a checkpoint (zstd reserves 0x184D2A50..=0x184D2A5F).
pub const CHECKPOINT_MAGIC: u32 = 0x184D_2A5C;
/// Skippable-frame magic of the final manifest.
pub const MANIFEST_MAGIC: u32 = 0x184D_2A5D;
/// The chain value before the first frame.
pub const GENESIS: Hash = [0; 32];

/// The signed statement written after every frame: "frame `frame` of this session is these
/// bytes at this offset, and the chain up to it is `chain`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The session id, as in the header.
    pub session_id: String,
    /// The frame's index (0 is the header frame).
    pub frame: u32,
    /// The frame's byte offset in the file.
    pub offset: u64,
    /// The frame's compressed length in bytes.
    pub compressed_len: u64,
    /// SHA-256 of the frame's compressed bytes.
    #[serde(with = "hex_hash")]
    pub frame_sha256: Hash,
    /// The chain value after this frame.
    #[serde(with = "hex_hash")]
    pub chain: Hash,
    /// Session time of the frame's first event, microseconds (0 for a frame without events).
    pub first_event_us: u64,
    /// Session time of the frame's last event, microseconds.
    pub last_event_us: u64,
    /// Events in this frame.
    pub event_count: u32,
    /// Events in the file up to and including this frame.
    pub total_events: u64,
    /// Wall-clock time the checkpoint was written, microseconds since the Unix epoch.
    pub written_at_us: i64,
    /// The public key that signed it.
    #[serde(with = "hex_hash")]
    pub public_key: Hash,
}

/// The signed final statement about a recording: who, what, when, how it ended and the chain
/// head over all its frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The session's identity and target (the same as the header).
    pub meta: SessionMeta,
    /// Wall-clock end, microseconds since the Unix epoch.
    pub ended_at_us: i64,
    /// Session time of the last event, microseconds.
    pub duration_us: u64,
    /// Frames in the file (the header frame included).
    pub frame_count: u32,
    /// Events in the file.
    pub event_count: u64,
    /// The chain value after the last frame.
    #[serde(with = "hex_hash")]
    pub chain_head: Hash,
    /// How the session ended.
    pub status: SessionStatus,
    /// Bytes of unverifiable torn tail that recovery cut off before sealing (0 when the writer
    /// sealed the file itself).
    pub discarded_tail_bytes: u64,
    /// The public key that signed it.
    #[serde(with = "hex_hash")]
    pub public_key: Hash,
}

/// Why a signed record could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedRecordProblem {
    /// The bytes end before the record does.
    Truncated,
    /// Not a record of the expected kind, or its body is not valid JSON.
    Malformed(String),
    /// The signature does not verify, or the record was signed by another key.
    BadSignature,
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// The chain value after a frame: `sha256(previous || sha256(frame))`.
pub fn chain_next(previous: &Hash, frame: &[u8]) -> Hash {
    chain_step(previous, &sha256(frame))
}

/// The chain value after a frame whose SHA-256 is `frame_sha256` (computed while the frame was
/// streamed to disk): `sha256(previous || frame_sha256)`.
pub fn chain_step(previous: &Hash, frame_sha256: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(frame_sha256);
    hasher.finalize().into()
}

/// Encodes a checkpoint as a signed skippable frame.
pub fn encode_checkpoint(checkpoint: &Checkpoint, key: &SigningKey) -> Result<Vec<u8>> {
    encode_signed(CHECKPOINT_MAGIC, CHECKPOINT_DOMAIN, checkpoint, key)
}

/// Encodes a manifest as a signed skippable frame.
pub fn encode_manifest(manifest: &Manifest, key: &SigningKey) -> Result<Vec<u8>> {
    encode_signed(MANIFEST_MAGIC, MANIFEST_DOMAIN, manifest, key)
}

/// The 4-byte little-endian magic at the start of `bytes`, if there are 4 bytes.
pub fn magic_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Decodes a signed record of kind `magic` at the start of `bytes`, returning it and its total
/// length. The signature is checked against `key`, or when `key` is `None`, against the public
/// key the record names (which proves integrity, not authorship).
pub fn decode_signed<T: for<'de> Deserialize<'de> + SignedRecord>(
    bytes: &[u8],
    magic: u32,
    key: Option<&VerifyingKey>,
) -> Result<(T, usize), SignedRecordProblem> {
    if bytes.len() < 8 {
        return Err(SignedRecordProblem::Truncated);
    }
    if magic_of(bytes) != Some(magic) {
        return Err(SignedRecordProblem::Malformed(format!(
            "expected magic {magic:#x}"
        )));
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let payload = bytes
        .get(8..8 + len)
        .ok_or(SignedRecordProblem::Truncated)?;
    let Some((body, signature)) = payload.split_at_checked(len.saturating_sub(64)) else {
        return Err(SignedRecordProblem::Malformed(
            "payload shorter than a signature".into(),
        ));
    };
    let signature = Signature::from_slice(signature)
        .map_err(|_| SignedRecordProblem::Malformed("payload shorter than a signature".into()))?;
    let record: T =
        serde_json::from_slice(body).map_err(|e| SignedRecordProblem::Malformed(e.to_string()))?;
    let named = VerifyingKey::from_bytes(record.public_key())
        .map_err(|_| SignedRecordProblem::BadSignature)?;
    if key.is_some_and(|key| key.as_bytes() != named.as_bytes()) {
        return Err(SignedRecordProblem::BadSignature);
    }
    let mut message = T::DOMAIN.to_vec();
    message.extend_from_slice(body);
    named
        .verify(&message, &signature)
        .map_err(|_| SignedRecordProblem::BadSignature)?;
    Ok((record, 8 + len))
}

/// A record that is signed into a skippable frame.
pub trait SignedRecord {
    /// The domain string prefixed to the body before signing.
    const DOMAIN: &'static [u8];
    /// The public key the record says signed it.
    fn public_key(&self) -> &Hash;
}

impl SignedRecord for Checkpoint {
    const DOMAIN: &'static [u8] = CHECKPOINT_DOMAIN;
    fn public_key(&self) -> &Hash {
        &self.public_key
    }
}

impl SignedRecord for Manifest {
    const DOMAIN: &'static [u8] = MANIFEST_DOMAIN;
    fn public_key(&self) -> &Hash {
        &self.public_key
    }
}

fn encode_signed<T: Serialize>(
    magic: u32,
    domain: &[u8],
    record: &T,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(record)?;
    let mut message = domain.to_vec();
    message.extend_from_slice(&body);
    let signature = key.sign(&message);
    let len = u32::try_from(body.len() + 64).map_err(|_| Error::RecordTooLarge {
        bytes: body.len() as u64,
    })?;
    let mut out = Vec::with_capacity(8 + body.len() + 64);
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&signature.to_bytes());
    Ok(out)
}

const CHECKPOINT_DOMAIN: &[u8] = b"custody.recording.checkpoint.v1\0";
const MANIFEST_DOMAIN: &[u8] = b"custody.recording.manifest.v1\0";

/// Serde for a 32-byte hash as lowercase hex.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0; 32];
        hex::decode_to_slice(text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(key: &SigningKey) -> Checkpoint {
        Checkpoint {
            session_id: "s".into(),
            frame: 2,
            offset: 100,
            compressed_len: 50,
            frame_sha256: sha256(b"frame"),
            chain: chain_next(&GENESIS, b"frame"),
            first_event_us: 1,
            last_event_us: 2,
            event_count: 2,
            total_events: 5,
            written_at_us: 7,
            public_key: key.verifying_key().to_bytes(),
        }
    }

    #[test]
    fn chain_is_sha256_of_previous_and_frame_hash() {
        let mut input = vec![0u8; 32];
        input.extend_from_slice(&sha256(b"abc"));
        assert_eq!(chain_next(&GENESIS, b"abc"), sha256(&input));
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn signed_checkpoint_round_trips_and_detects_every_flipped_byte() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let cp = checkpoint(&key);
        let bytes = encode_checkpoint(&cp, &key).unwrap();
        assert_eq!(&bytes[..4], &[0x5c, 0x2a, 0x4d, 0x18]);
        let (back, len) =
            decode_signed::<Checkpoint>(&bytes, CHECKPOINT_MAGIC, Some(&key.verifying_key()))
                .unwrap();
        assert_eq!((back, len), (cp, bytes.len()));
        assert_eq!(
            decode_signed::<Checkpoint>(&bytes, CHECKPOINT_MAGIC, Some(&other)).unwrap_err(),
            SignedRecordProblem::BadSignature
        );
        assert_eq!(
            decode_signed::<Checkpoint>(&bytes[..bytes.len() - 1], CHECKPOINT_MAGIC, None)
                .unwrap_err(),
            SignedRecordProblem::Truncated
        );
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(
                decode_signed::<Checkpoint>(&flipped, CHECKPOINT_MAGIC, None).is_err(),
                "flip at {i} accepted"
            );
        }
    }
}
