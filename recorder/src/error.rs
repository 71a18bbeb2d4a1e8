//! The crate's one error type: every fallible function in custody-recorder returns [`Error`].

use std::path::PathBuf;

/// What failed while writing, reading, verifying or indexing a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating, writing, syncing or reading a recording file failed.
    #[error("recording file {path}: {source}")]
    RecordingIo {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the signing key failed, or the key file is malformed.
    #[error("signing key {path}: {reason}")]
    SigningKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A public key could not be parsed.
    #[error("verifying key: {0}")]
    VerifyingKey(String),
    /// A zstd compression or decompression step failed.
    #[error("zstd: {0}")]
    Compression(#[source] std::io::Error),
    /// A line of the asciicast stream could not be parsed as an event or header.
    #[error("asciicast line {line}: {reason}")]
    CastLine {
        /// The 1-based line number in the decompressed stream.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },
    /// A header, checkpoint or manifest could not be serialized or parsed as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A redaction pattern is not a valid regular expression.
    #[error("redaction pattern {name}: {source}")]
    RedactionPattern {
        /// The pattern's name.
        name: String,
        /// The regex compile error.
        #[source]
        source: regex::Error,
    },
    /// The recording's writer stopped after a fatal error; the session must end.
    #[error("recording failed: {0}")]
    RecordingFailed(String),
    /// The session handle was already finished or its writer task is gone.
    #[error("recording session is closed")]
    SessionClosed,
    /// The file's header frame is missing or damaged, so nothing in it can be trusted.
    #[error("recording header is damaged: {0}")]
    HeaderDamaged(crate::reader::Damage),
    /// A signed record (checkpoint or manifest) is too large for a skippable frame.
    #[error("signed record of {bytes} bytes is too large")]
    RecordTooLarge {
        /// Its size.
        bytes: u64,
    },
    /// The session id cannot be used as a file name.
    #[error("invalid session id {0:?}")]
    InvalidSessionId(String),
    /// A recording already has a final manifest, so it cannot be sealed again.
    #[error("recording is already sealed")]
    AlreadySealed,
    /// The index file could not be created or made owner-only.
    #[error("index file {path}: {source}")]
    IndexFile {
        /// The index database's path.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A statement against the `SQLite` index failed (`op` names what was being done).
    #[error("index database, {op}: {source}")]
    IndexDb {
        /// What the index was doing, e.g. "open", "migrate", "upsert session".
        op: &'static str,
        /// The `SQLite` error.
        #[source]
        source: rusqlite::Error,
    },
    /// The index database was written by a newer custody; this build cannot read it safely.
    #[error(
        "index schema version {found} is newer than this build supports ({supported}); \
         upgrade custody or rebuild the index with `custody reindex`"
    )]
    IndexTooNew {
        /// The database's `user_version`.
        found: u32,
        /// The newest schema this build knows.
        supported: u32,
    },
    /// The catalog (the index in another database, or the task that runs it) failed.
    #[error("catalog, {op}: {message}")]
    Catalog {
        /// What was being done, e.g. "read session", "audit batch".
        op: &'static str,
        /// What failed.
        message: String,
    },
    /// A terminal keyframe blob could not be decoded, or a terminal could not be created.
    #[error("keyframe: {0}")]
    Keyframe(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
