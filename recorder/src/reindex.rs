//! Rebuilding the index from the recording files (`custody reindex`, promise P7).
//!
//! The rows are derived only from the files with the same code as incremental indexing
//! ([`Index::index_recording`]), so a rebuilt index holds the same sessions, frames and search
//! results. A file that cannot be read is reported and skipped, never fatal (P10). Files are only
//! read, never sealed: sealing is [`crate::recovery::recover`]'s job.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::reader::read_recording;
use crate::recovery::{RECORDINGS_DIR, recording_files};

/// Progress of a rebuild, reported after each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexProgress<'a> {
    /// Files handled so far, this one included.
    pub done: usize,
    /// Files in all.
    pub total: usize,
    /// The file just handled.
    pub path: &'a Path,
    /// Why it was skipped, if it was.
    pub error: Option<&'a str>,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReindexReport {
    /// Sessions indexed.
    pub indexed: usize,
    /// Files skipped, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Replaces every session row of `index` with rows derived from the files under
/// `<data_dir>/recordings`. API requests and audit events, which do not come from recordings,
/// are kept. With `key`, recordings must be signed by it (else they index as damaged).
pub fn reindex(
    data_dir: &Path,
    index: &mut Index,
    key: Option<&VerifyingKey>,
    mut progress: impl FnMut(&ReindexProgress<'_>),
) -> Result<ReindexReport> {
    let started = Instant::now();
    let files = recording_files(&data_dir.join(RECORDINGS_DIR))?;
    index.clear_sessions()?;
    let mut report = ReindexReport::default();
    let total = files.len();
    for (done, path) in files.into_values().enumerate() {
        let outcome = read_recording(&path, key).and_then(|rec| index.index_recording(&rec, &path));
        let error = outcome.err().map(|e| e.to_string());
        progress(&ReindexProgress {
            done: done + 1,
            total,
            path: &path,
            error: error.as_deref(),
        });
        match error {
            None => report.indexed += 1,
            Some(why) => report.failed.push((path, why)),
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Opens the index at `index_path`, rebuilding it from the files when it is missing its schema,
/// unreadable or fails `SQLite`'s integrity check. A broken file is moved aside to
/// `<index_path>.corrupt` (not deleted) first. A database from a newer build is refused, never
/// rebuilt over. Returns the report when a rebuild happened.
pub fn open_or_rebuild(
    data_dir: &Path,
    index_path: &Path,
    key: Option<&VerifyingKey>,
    progress: impl FnMut(&ReindexProgress<'_>),
) -> Result<(Index, Option<ReindexReport>)> {
    let existed = index_path.exists();
    match Index::open(index_path) {
        Ok(index) if !existed => {
            let mut index = index;
            let report = reindex(data_dir, &mut index, key, progress)?;
            return Ok((index, Some(report)));
        }
        Ok(index) if index.quick_check()? => return Ok((index, None)),
        Ok(index) => drop(index),
        Err(err @ Error::IndexTooNew { .. }) => return Err(err),
        Err(_) => {}
    }
    let aside = with_suffix(index_path, ".corrupt");
    let io = |source| Error::RecordingIo {
        path: index_path.to_owned(),
        source,
    };
    std::fs::rename(index_path, &aside).map_err(io)?;
    for suffix in ["-wal", "-shm"] {
        let side = with_suffix(index_path, suffix);
        if side.exists() {
            std::fs::rename(&side, with_suffix(&aside, suffix)).map_err(io)?;
        }
    }
    let mut index = Index::open(index_path)?;
    let report = reindex(data_dir, &mut index, key, progress)?;
    Ok((index, Some(report)))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
