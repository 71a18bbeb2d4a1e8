//! Logging people in from the command line: the login document a gateway publishes at
//! [`WELL_KNOWN_PATH`] (`document`), the OAuth client (`flow`: authorization code with PKCE on
//! a loopback redirect, the device authorization grant, the code exchange, ID token validation, refresh and revocation), the
//! TLS trust of a first contact (`trust`) and the per-server token store (`store`).
//!
//! The HTTP parts run over the project's own hyper client (`authn::https`) rather than the
//! `openidconnect`/`oauth2` crates: custody already has discovery, JWKS verification and claim
//! checks for the gateway side, the client side needs only three small requests (token, refresh,
//! revocation), and this keeps one TLS stack (rustls with `ring`) and no second HTTP client.

pub mod document;
pub mod flow;
pub mod store;
pub mod trust;

pub use document::{LoginDocument, WELL_KNOWN_PATH};

/// What can go wrong while logging in, refreshing or reading the stored tokens.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The gateway's login document could not be fetched or read.
    #[error("cannot read the login configuration of {server}: {reason}")]
    Document {
        /// The gateway URL.
        server: String,
        /// Why.
        reason: String,
    },
    /// The identity provider refused or answered something unusable.
    #[error("the identity provider {issuer}: {reason}")]
    Provider {
        /// The issuer URL.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// The refresh token was refused (expired or revoked): a new login is needed.
    #[error(
        "the login session at {issuer} has ended ({reason}); run `custody login --server {server}`"
    )]
    RefreshRefused {
        /// The issuer URL.
        issuer: String,
        /// The gateway URL.
        server: String,
        /// The provider's error code.
        reason: String,
    },
    /// Nothing usable is stored for this server and no login can run here.
    #[error("not logged in to {server}{detail}; run `custody login --server {server}`")]
    NotLoggedIn {
        /// The gateway URL.
        server: String,
        /// More about why, starting with `: ` (or empty).
        detail: String,
    },
    /// The token store could not be read or written.
    #[error("the token store {path}: {reason}")]
    Store {
        /// The file or directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The loopback redirect, or the approval of a device login, failed or timed out.
    #[error("the login did not complete: {0}")]
    Redirect(String),
}
