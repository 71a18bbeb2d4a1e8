//! A loaded session: its [`Timeline`] and the facts the player's header shows (who, where, what,
//! when, how it ended, whether the file verified and with which key).

use std::path::Path;

use custody_recorder::index::Index;
use custody_recorder::model::SessionStatus;
use custody_recorder::reader::{Recording, read_recording};
use custody_recorder::verdict::Verdict;
use ed25519_dalek::VerifyingKey;

use crate::error::Error;
use crate::timeline::Timeline;

/// Which key the file's signatures were checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The key given on the command line (`--key`).
    Given,
    /// The public half of the data directory's signing key.
    DataDir,
    /// The key the gateway the file was downloaded from publishes (`GET /custody/v1/key`).
    Gateway,
    /// No key was given: the key the file itself names (proves integrity, not authorship).
    NamedInFile,
}

impl KeyOrigin {
    /// A short phrase for the header.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Given => "with the given key",
            Self::DataDir => "with the data dir's key",
            Self::Gateway => "with the gateway's key",
            Self::NamedInFile => "with the key named in the file",
        }
    }
}

/// What verification said about the file, in the player's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Every frame verifies and the writer's manifest seals the file.
    Intact,
    /// Verified up to `verified_until_us`, then cut (a live session, a crash); events after it,
    /// if any, are shown unverified.
    Interrupted {
        /// Session time of the last verified event.
        verified_until_us: u64,
    },
    /// Something does not verify; `first_bad` names the first bad frame.
    Altered {
        /// The reader's description of the first damage (`frame 3 at byte 812: ...`).
        first_bad: String,
    },
}

/// A session ready to play: its events and everything the header says about it.
pub struct Session {
    /// The events, seekpoints, commands and markers.
    pub timeline: Timeline,
    /// How the session ended, as the file says (the manifest, else its end line).
    pub status: SessionStatus,
    /// The verification verdict.
    pub integrity: Integrity,
    /// Which key verified it.
    pub key: KeyOrigin,
    /// Whether the session is being followed live.
    pub live: bool,
}

impl Session {
    /// A session from a recording already read (and verified with the key `key` says).
    /// `seekpoints` are the index's keyframes for it, when known (see
    /// [`Timeline::from_recording`]).
    pub fn from_recording(
        recording: &Recording,
        key: KeyOrigin,
        seekpoints: Option<Vec<custody_recorder::keyframe::Seekpoint>>,
    ) -> Result<Self, Error> {
        let integrity = match Verdict::of(recording) {
            Verdict::Intact => Integrity::Intact,
            Verdict::Interrupted { verified_until_us } => {
                Integrity::Interrupted { verified_until_us }
            }
            Verdict::Altered { damage } => Integrity::Altered {
                first_bad: damage.to_string(),
            },
        };
        Ok(Self {
            timeline: Timeline::from_recording(recording, seekpoints)?,
            status: recording.status.clone(),
            integrity,
            key,
            live: false,
        })
    }

    /// Reads and verifies the recording at `path` (with `key`, or the key named in the file
    /// when `None`).
    pub fn open_file(
        path: &Path,
        key: Option<&VerifyingKey>,
        origin: KeyOrigin,
    ) -> Result<Self, Error> {
        let recording = read_recording(path, key)?;
        Self::from_recording(&recording, origin, None)
    }

    /// Looks `id` up in the index, reads its file and uses the index's keyframes for seeking.
    pub fn open_indexed(
        index: &Index,
        id: &str,
        key: Option<&VerifyingKey>,
        origin: KeyOrigin,
    ) -> Result<Self, Error> {
        let row = index
            .session(id)?
            .ok_or_else(|| Error::NoSuchSession(id.to_owned()))?;
        let recording = read_recording(&row.file_path, key)?;
        // The index's keyframes fit this file only if it indexed the same verified events.
        let seekpoints = (row.event_count == recording.events.len() as u64)
            .then(|| index.seekpoints(id))
            .transpose()?;
        Self::from_recording(&recording, origin, seekpoints)
    }
}
