//! The one error type of the gateway library, with a variant per thing that can fail.

/// What went wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error with the path or address it concerned.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The gateway's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
