//! The one error type of the protocol codecs.

/// A protocol violation found while decoding bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A placeholder variant until the codecs land; each codec adds variants named after what
    /// failed.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
}

/// The codecs' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
