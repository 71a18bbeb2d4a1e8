//! The crate's one error type.

/// What can go wrong while answering an API request; each becomes an HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed: a bad session id, filter or format (400).
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not see this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such session or endpoint (404).
    #[error("{0}")]
    NotFound(String),
    /// Only GET is served (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The requested range lies outside the file (416).
    #[error("the requested range is outside the file's {len} bytes")]
    RangeNotSatisfiable {
        /// The file's length.
        len: u64,
    },
    /// The recording cannot be converted (its header does not verify) (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The caller has too many downloads in flight, or the gateway does (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// The index, a file or a task failed (500); the detail is logged, not returned.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status for this error.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
