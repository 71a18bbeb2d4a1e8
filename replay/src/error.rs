//! The crate's one error type: every fallible function in custody-replay returns [`Error`].

/// What failed while loading or playing a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, verifying or seeking in the recording failed.
    #[error(transparent)]
    Recorder(#[from] custody_recorder::Error),
    /// The terminal could not be set up, drawn on or read from.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// The session is not in the index.
    #[error("no session {0:?} in the index")]
    NoSuchSession(String),
}
