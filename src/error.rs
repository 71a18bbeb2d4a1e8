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
    /// The audit trail's JSON-lines file could not be opened, written or synced.
    #[error("audit file {path}: {source}")]
    AuditFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The audit trail's index could not be opened, written or queried.
    #[error("audit index: {0}")]
    AuditIndex(#[source] custody_recorder::Error),
    /// An audit event could not be encoded, or its writer task failed.
    #[error("audit event: {0}")]
    AuditEvent(String),
    /// A cluster's upstream connection could not be set up from its kubeconfig or config.
    #[error("cluster {cluster}: {message}")]
    UpstreamConfig {
        /// The cluster name (or the kubeconfig path when it has none yet).
        cluster: String,
        /// What is wrong, for a person to fix.
        message: String,
    },
    /// The gateway's configuration is inconsistent (e.g. the impersonation allow-list).
    #[error("gateway configuration: {0}")]
    GatewayConfig(String),
    /// The authentication configuration is wrong (an issuer, a CA file, `ServiceAccounts`).
    #[error("authentication configuration: {0}")]
    AuthnConfig(String),
    /// A cluster could not review a token (unreachable, refused the gateway, timed out, or
    /// answered something that is not a `TokenReview`).
    #[error("cluster {cluster} cannot review tokens: {reason}")]
    TokenReview {
        /// The cluster name.
        cluster: String,
        /// What went wrong, for the gateway's log.
        reason: String,
    },
    /// A token could not be obtained from an identity provider.
    #[error("cannot get a token from {issuer}: {reason}")]
    TokenFetch {
        /// The issuer URL.
        issuer: String,
        /// What went wrong, for a person to act on.
        reason: String,
    },
}

/// The gateway's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
