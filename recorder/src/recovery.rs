//! Startup recovery: every recording a crash left open is sealed `interrupted` from what is on
//! disk and re-indexed, before the gateway accepts sessions (promise P8).
//!
//! Candidates are the sessions the index holds as `open` and every recording file the index does
//! not hold as sealed with the same size (a file written while the index was lost, or whose
//! index commit did not happen). Files the index already has sealed are not read, so a restart
//! costs one directory listing plus the open sessions. Each file is handled on its own: one
//! corrupt or unreadable file is reported and the others go on (P10).
//!
//! Recovery assumes no writer is running on the data dir (it runs before the gateway serves).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::reader::{read_recording, seal_interrupted};

/// What recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sessions found without a manifest and sealed (`interrupted`, or the status of an end line
    /// written just before the crash).
    pub sealed: Vec<String>,
    /// Sessions (re-)indexed from their files, sealed ones included.
    pub indexed: Vec<String>,
    /// Sessions the index has as open whose file is gone; their rows are left as they are.
    pub missing: Vec<(String, PathBuf)>,
    /// Files that could not be read, sealed or indexed, with the reason; the others went on.
    pub failed: Vec<(PathBuf, String)>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Seals and indexes every recording under `<data_dir>/recordings` that a crash left open.
///
/// Recordings are verified against `key`'s public key, the key that seals them.
pub fn recover(data_dir: &Path, index: &mut Index, key: &SigningKey) -> Result<RecoveryReport> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let files = recording_files(&data_dir.join(RECORDINGS_DIR))?;
    let mut candidates: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (id, path) in index.open_sessions()? {
        let path = if path.exists() {
            path
        } else {
            data_dir.join(RECORDINGS_DIR).join(file_name(&id))
        };
        if path.exists() {
            candidates.insert(id, path);
        } else {
            report.missing.push((id, path));
        }
    }
    for (id, path) in files {
        if candidates.contains_key(&id) {
            continue;
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        match index.indexed_state(&id)? {
            Some((status, indexed_size)) if status != "open" && Some(indexed_size) == size => {}
            _ => {
                candidates.insert(id, path);
            }
        }
    }
    for (id, path) in candidates {
        match recover_one(index, key, &path) {
            Ok(sealed) => {
                if sealed {
                    report.sealed.push(id.clone());
                }
                report.indexed.push(id);
            }
            Err(err) => report.failed.push((path, err.to_string())),
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Seals the file if it has no manifest, then indexes it; `true` when it was sealed.
fn recover_one(index: &mut Index, key: &SigningKey, path: &Path) -> Result<bool> {
    let verifying = key.verifying_key();
    let mut recording = read_recording(path, Some(&verifying))?;
    let sealed = if recording.manifest.is_none() {
        seal_interrupted(path, key)?;
        recording = read_recording(path, Some(&verifying))?;
        true
    } else {
        false
    };
    index.index_recording(&recording, path)?;
    Ok(sealed)
}

/// The recording files in `dir` by session id, in id order; a missing directory has none.
pub(crate) fn recording_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let io = |source| Error::RecordingIo {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io(e)),
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(RECORDING_SUFFIX)) else {
            continue;
        };
        if !id.is_empty() && entry.file_type().map_err(io)?.is_file() {
            files.insert(id.to_owned(), entry.path());
        }
    }
    Ok(files)
}

fn file_name(id: &str) -> String {
    format!("{id}{RECORDING_SUFFIX}")
}

/// Where recordings live under the data dir.
pub const RECORDINGS_DIR: &str = "recordings";
const RECORDING_SUFFIX: &str = ".cast.zst";
