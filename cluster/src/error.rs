//! The crate's one error type.

use std::path::PathBuf;

/// What failed in cluster mode's shared state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PostgreSQL URL could not be read.
    #[error("postgresql url: {0}")]
    PostgresUrl(String),
    /// The CA file for PostgreSQL's TLS could not be read.
    #[error("postgresql CA file {path}: {reason}")]
    PostgresCa {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// No connection could be had from the pool (PostgreSQL down, unreachable, refusing).
    #[error("postgresql connection: {0}")]
    PostgresConnect(String),
    /// A statement failed (`op` names what was being done).
    #[error("postgresql, {op}: {source}")]
    Postgres {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database holds a schema newer than this build.
    #[error(
        "the postgresql schema is at version {found}, newer than this build supports \
         ({supported}); upgrade custody on this replica"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// The newest this build knows.
        supported: i32,
    },
    /// The object store's configuration is unusable.
    #[error("object store: {0}")]
    ObjectStoreConfig(String),
    /// A request to the object store failed.
    #[error("object store, {op}: {source}")]
    ObjectStore {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// The object store answered a request with an S3 error (wrong credentials, no such
    /// bucket, no permission): its code and message, without the rest of its XML.
    #[error("object store, {op}: refused{}: {code}: {message}", in_parens(.status))]
    ObjectStoreRefused {
        /// What was being done.
        op: &'static str,
        /// The HTTP status (`403 Forbidden`), empty when it was not found.
        status: String,
        /// The S3 error code (`SignatureDoesNotMatch`, `NoSuchBucket`).
        code: String,
        /// The store's message.
        message: String,
    },
    /// What the object store holds is not what was written.
    #[error("object store: {0}")]
    ObjectMismatch(String),
    /// An object's body stopped arriving.
    #[error("object store, {op}: no data for {after:?}")]
    ObjectStoreStalled {
        /// What was being done.
        op: &'static str,
        /// How long nothing came.
        after: std::time::Duration,
    },
    /// The session's recording object exists already with other bytes: another replica
    /// stored it (it took the session over). It is left as it is.
    #[error(
        "the recording object of session {id} exists already with other content (another \
         replica stored it); it was not replaced"
    )]
    RecordingExists {
        /// The session.
        id: String,
    },
    /// The session's recording could not be stored; the local file and the uploaded segments
    /// are kept, so nothing is lost and storing can be retried.
    #[error(
        "session {id}: the recording was not stored, {path} and its segments are kept: {source}"
    )]
    RecordingNotStored {
        /// The session.
        id: String,
        /// The local recording file, kept.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// The session has neither segments nor a recording object: nothing to take over.
    #[error("session {id} has neither segments nor a recording object in the object store")]
    NothingToRecover {
        /// The session.
        id: String,
    },
    /// Reading, verifying or sealing a recording failed (`op` names what was being done).
    #[error("recording of session {id}, {op}: {source}")]
    Recording {
        /// The session.
        id: String,
        /// What was being done.
        op: &'static str,
        /// The recorder's error.
        #[source]
        source: custody_recorder::Error,
    },
    /// A recording does not verify: it is not taken as the session's record.
    #[error("recording of session {id} does not verify: {problem}")]
    RecordingUnverified {
        /// The session.
        id: String,
        /// The verdict's first problem.
        problem: String,
    },
    /// A local file (spool, cache) could not be read or written.
    #[error("{path}: {source}")]
    LocalFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// This replica's signing key is not the cluster's.
    #[error(
        "this replica's signing key (fingerprint {ours}) is not the cluster's ({cluster}, set by \
         replica {set_by}); every replica must sign with the same key ([cluster] \
         signing_key_file)"
    )]
    KeyMismatch {
        /// This replica's fingerprint.
        ours: String,
        /// The cluster's.
        cluster: String,
        /// The replica that set it.
        set_by: String,
    },
    /// A session's row belongs to another replica now (this one's lease was taken).
    #[error("session {session} is no longer held by this replica ({replica}, epoch {epoch})")]
    LostOwnership {
        /// The session.
        session: String,
        /// This replica.
        replica: String,
        /// The epoch it held.
        epoch: i64,
    },
    /// A row held something this build cannot read.
    #[error("postgresql row, {0}")]
    BadRow(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The statement error of `op`.
    pub(crate) fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Postgres { op, source }
    }
}

impl Error {
    /// The object store error of `op`.
    pub(crate) fn object(op: &'static str) -> impl FnOnce(object_store::Error) -> Self {
        move |source| {
            // `object_store` puts the whole XML body of an S3 error into its message (with the
            // canonical request and string to sign on a signature error); its code and message
            // are what an operator needs.
            let text = source.to_string();
            match between(&text, "<Code>", "</Code>") {
                Some(code) => Self::ObjectStoreRefused {
                    op,
                    status: between(&text, "status code: ", ": <")
                        .unwrap_or_default()
                        .to_owned(),
                    code: code.to_owned(),
                    message: between(&text, "<Message>", "</Message>")
                        .unwrap_or_default()
                        .to_owned(),
                },
                None => Self::ObjectStore { op, source },
            }
        }
    }

    /// A local file error.
    pub(crate) fn local(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::LocalFile {
            path: path.to_owned(),
            source,
        }
    }
}

impl From<Error> for custody_recorder::Error {
    fn from(e: Error) -> Self {
        let op = match &e {
            Error::Postgres { op, .. } => op,
            Error::PostgresConnect(_) => "connect",
            _ => "catalog",
        };
        custody_recorder::Error::Catalog {
            op,
            message: error_chain(&e),
        }
    }
}

/// An error and its sources on one line: the driver's `db error` alone says nothing.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

/// ` (text)`, or nothing for no text.
fn in_parens(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}
