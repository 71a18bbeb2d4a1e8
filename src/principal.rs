//! Who is asking: the authenticated person ([`Principal`]), the identity the cluster is told
//! about ([`EffectiveIdentity`]), and the [`Authenticate`] seam between authentication and the
//! request pipeline.

use std::future::Future;
use std::pin::Pin;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

pub use custody_recorder::model::EffectiveIdentity;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// An OIDC ID token from a configured issuer.
    Oidc,
    /// A Kubernetes `ServiceAccount` token, verified with the cluster.
    ServiceAccount,
    /// A client certificate signed by a configured CA.
    ClientCertificate,
}

/// The authenticated person or machine behind a request: who really asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// How it authenticated.
    pub method: AuthMethod,
    /// The token issuer (`iss`), or the cluster name for `ServiceAccount` tokens.
    pub issuer: String,
    /// The subject (`sub`).
    pub subject: String,
    /// The username after the configured claim mapping and prefix, e.g. `oidc:alice`.
    pub username: String,
    /// The groups after mapping and prefix.
    pub groups: Vec<String>,
    /// When the credential expires (Unix seconds), if it says.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The recorder's view of the initiator.
    pub fn initiator(&self) -> custody_recorder::model::Initiator {
        custody_recorder::model::Initiator {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            username: self.username.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// Why authentication failed. Every variant becomes a 401 `Status` whose message tells a person
/// what to do next; the detail is logged, never returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No credential at all.
    #[error("no credentials were presented")]
    Missing,
    /// A credential that is malformed, unsigned, wrongly signed or from an unknown issuer.
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// A credential that was valid but has expired.
    #[error("the credential has expired")]
    Expired,
    /// A valid credential whose identity custody refuses (for example a `system:` name).
    #[error("identity refused: {0}")]
    Refused(String),
    /// The identity provider or cluster needed to check the credential could not be reached.
    #[error("cannot verify the credential now: {0}")]
    Unavailable(String),
}

/// A boxed future, so [`Authenticate`] stays object-safe.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send + 'a>>;

/// Turns a request's credentials into a [`Principal`]. Implemented by the authenticator over
/// the configured OIDC issuers and `ServiceAccount` verification; tests use fakes.
pub trait Authenticate: Send + Sync {
    /// Authenticates the request with these headers, for the named cluster.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap, cluster: &'a str) -> AuthFuture<'a>;
}
