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
    /// What the object store holds is not what was written.
    #[error("object store: {0}")]
    ObjectMismatch(String),
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
        move |source| Self::ObjectStore { op, source }
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
