//! Shared setup for the authentication tests: a dev issuer over TLS and an authenticator that
//! trusts it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test file uses a different part; setup failures should fail the test"
)]

use std::sync::Arc;

use custody::authn::{Authenticator, OidcIssuerConfig, ServiceAccountConfig};
use custody::principal::{AuthFailure, Principal};
use custody_fixtures::oidc_issuer::{DevIssuerConfig, OidcIssuer};

/// A running issuer, its CA file, and the directory that holds it.
pub struct Setup {
    pub issuer: OidcIssuer,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub async fn start() -> Setup {
        let issuer = OidcIssuer::start(DevIssuerConfig::demo()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.ca_pem()).unwrap();
        Setup { issuer, dir }
    }

    /// The issuer's configuration with defaults, trusting its CA.
    pub fn config(&self) -> OidcIssuerConfig {
        let mut cfg = OidcIssuerConfig::new(self.issuer.url(), self.issuer.client_id());
        cfg.ca_file = Some(self.dir.path().join("ca.pem"));
        cfg
    }
}

/// An authenticator over one issuer that verifies every token in full: these tests are about
/// verification (keys, rotation, failures), not about the cache of verified tokens in front of
/// it, which `cached_authenticator` and `tests/authn_oidc.rs` test on their own.
pub fn authenticator(cfg: OidcIssuerConfig) -> Arc<Authenticator> {
    cached_authenticator(cfg, std::time::Duration::ZERO)
}

/// An authenticator over one issuer that trusts a verified token for `ttl`.
pub fn cached_authenticator(cfg: OidcIssuerConfig, ttl: std::time::Duration) -> Arc<Authenticator> {
    Arc::new(
        Authenticator::new(&[cfg], &ServiceAccountConfig::default(), None)
            .unwrap()
            .with_cache_ttl(ttl),
    )
}

pub async fn auth(authn: &Authenticator, token: &str) -> Result<Principal, AuthFailure> {
    authn.authenticate_token(token, "test").await
}

pub fn is_invalid(r: &Result<Principal, AuthFailure>) -> bool {
    matches!(r, Err(AuthFailure::Invalid(_)))
}
