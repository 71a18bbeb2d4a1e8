//! Authentication: turns a request's bearer token into a [`Principal`].
//!
//! OIDC ID tokens are routed by their (unverified) `iss` to the one configured issuer with
//! exactly that URL, then verified with that issuer's keys ([`oidc`]) and claims
//! ([`claims`]). When `ServiceAccount` tokens are enabled, a token from no configured issuer that
//! looks like a `ServiceAccount` token is reviewed by the cluster ([`serviceaccount`]).
//! Everything else is refused. Failures carry a short, safe reason; [`failure_message`] turns
//! one into the text of the 401 `Status`, and the detail goes to the log.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::principal::{AuthFailure, AuthFuture, AuthMethod, Authenticate, Principal};
use crate::{Error, Result};

pub mod cache;
pub mod claims;
pub mod config;
pub(crate) mod https;
pub mod jose;
pub mod jwks;
pub(crate) mod oidc;
pub mod serviceaccount;

pub use config::{OidcIssuerConfig, ServiceAccountConfig};
pub use serviceaccount::{ReviewedUser, TokenReviewer};

/// The authenticator over the configured OIDC issuers and `ServiceAccount` verification.
pub struct Authenticator {
    issuers: Vec<Arc<oidc::IssuerVerifier>>,
    service_accounts: Option<(ServiceAccountConfig, Arc<dyn TokenReviewer>)>,
    /// Tokens verified in the last seconds (`cache`).
    verified: cache::TokenCache,
}

impl Authenticator {
    /// Builds the authenticator: validates each issuer's configuration and reads its CA file.
    /// Nothing is fetched yet; discovery and keys are fetched on first use, so the gateway
    /// starts even when an identity provider is down. `reviewer` is required when
    /// `ServiceAccount` tokens are enabled.
    pub fn new(
        issuers: &[OidcIssuerConfig],
        service_accounts: &ServiceAccountConfig,
        reviewer: Option<Arc<dyn TokenReviewer>>,
    ) -> Result<Authenticator> {
        let mut verifiers: Vec<Arc<oidc::IssuerVerifier>> = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            issuer.validate().map_err(Error::AuthnConfig)?;
            if verifiers.iter().any(|v| v.issuer() == issuer.issuer) {
                return Err(Error::AuthnConfig(format!(
                    "issuer {:?} is configured twice",
                    issuer.issuer
                )));
            }
            let ca_pem = match &issuer.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|source| Error::Io {
                    context: format!(
                        "reading the CA file {} of {}",
                        path.display(),
                        issuer.issuer
                    ),
                    source,
                })?),
                None => None,
            };
            let verifier = oidc::IssuerVerifier::new(issuer.clone(), ca_pem.as_deref())
                .map_err(|e| Error::AuthnConfig(format!("issuer {:?}: {e}", issuer.issuer)))?;
            verifiers.push(Arc::new(verifier));
        }
        let service_accounts = match (service_accounts.enabled, reviewer) {
            (false, _) => None,
            (true, Some(reviewer)) => Some((service_accounts.clone(), reviewer)),
            (true, None) => {
                return Err(Error::AuthnConfig(
                    "ServiceAccount tokens are enabled but no TokenReview client is set".into(),
                ));
            }
        };
        Ok(Authenticator {
            issuers: verifiers,
            service_accounts,
            verified: cache::TokenCache::default(),
        })
    }

    /// The same authenticator, trusting a verified token for at most `ttl` without verifying
    /// it again (default [`cache::TTL`]; zero verifies every request in full).
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.verified = cache::TokenCache::with_ttl(ttl);
        self
    }

    /// Authenticates a bearer token for the named cluster: from the cache of tokens verified in
    /// the last seconds, else verified in full (and then cached).
    pub async fn authenticate_token(
        &self,
        token: &str,
        cluster: &str,
    ) -> std::result::Result<Principal, AuthFailure> {
        let now = std::time::Instant::now();
        if let Some(principal) = self.verified.get(cluster, token, now) {
            return Ok(principal);
        }
        let principal = self.verify_token(token, cluster).await?;
        self.verified
            .put(cluster, token, &principal, now, unix_now());
        Ok(principal)
    }

    /// Verifies a bearer token in full: signature, claims, or a `TokenReview`.
    async fn verify_token(
        &self,
        token: &str,
        cluster: &str,
    ) -> std::result::Result<Principal, AuthFailure> {
        let parsed = jose::parse(token)?;
        let issuer = parsed.issuer();
        if let Some(verifier) = self.issuers.iter().find(|v| Some(v.issuer()) == issuer) {
            let identity = verifier.verify(&parsed, unix_now()).await?;
            return Ok(Principal {
                method: AuthMethod::Oidc,
                issuer: verifier.issuer().to_owned(),
                subject: identity.subject,
                username: identity.username,
                groups: identity.groups,
                expires_at: Some(identity.expires_at),
            });
        }
        if let Some((config, reviewer)) = &self.service_accounts
            && serviceaccount::looks_like_service_account(&parsed)
        {
            return serviceaccount::authenticate(
                reviewer.as_ref(),
                config,
                cluster,
                token,
                &parsed,
            )
            .await;
        }
        Err(AuthFailure::Invalid(
            "the token's issuer is not trusted".into(),
        ))
    }
}

impl Authenticate for Authenticator {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap, cluster: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let result = match bearer_token(headers) {
                Ok(token) => self.authenticate_token(token, cluster).await,
                Err(failure) => Err(failure),
            };
            match &result {
                Ok(p) => tracing::debug!(%cluster, username = %p.username, "authenticated"),
                Err(failure) => tracing::info!(%cluster, %failure, "authentication failed"),
            }
            result
        })
    }
}

/// The bearer token of a request: exactly one `Authorization` header of the form
/// `Bearer <token>` (scheme in any case, one space, a token without whitespace).
pub fn bearer_token(headers: &HeaderMap) -> std::result::Result<&str, AuthFailure> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(http::header::AUTHORIZATION) {
            AuthFailure::Invalid("more than one Authorization header".into())
        } else {
            AuthFailure::Missing
        });
    };
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Invalid("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer")
                && !token.is_empty()
                && !token.contains(|c: char| c.is_ascii_whitespace()) =>
        {
            Ok(token)
        }
        _ => Err(AuthFailure::Invalid(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

/// The message of the 401 `Status` for a failure: what happened in a few words and what the
/// person can do next. It reveals no internals (those are logged).
pub fn failure_message(failure: &AuthFailure) -> String {
    const NEXT: &str = "run `custody login` (or check the exec plugin in your kubeconfig)";
    match failure {
        AuthFailure::Missing => format!("custody needs a bearer token: {NEXT}"),
        AuthFailure::Invalid(reason) => {
            format!("custody could not verify your token: {reason}; {NEXT}")
        }
        AuthFailure::Expired => format!("your token has expired: {NEXT}"),
        AuthFailure::Refused(reason) => format!(
            "custody refuses this identity: {reason}; ask your administrator to check the \
             identity provider's claims"
        ),
        AuthFailure::Unavailable(reason) => format!(
            "custody cannot verify your token right now ({reason}); try again in a minute, and \
             tell your administrator if it persists"
        ),
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_token_is_strict() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bEaReR abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthFailure::Missing));
        for bad in [
            "Basic YTpi",
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer a b",
            "Bearerabc",
        ] {
            assert!(
                matches!(bearer_token(&headers(&[bad])), Err(AuthFailure::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthFailure::Invalid(_))
        ));
    }

    #[test]
    fn failure_messages_say_what_to_do() {
        let msg = failure_message(&AuthFailure::Invalid("bad".into()));
        assert!(msg.contains("custody login") && msg.contains("bad"));
        assert!(failure_message(&AuthFailure::Missing).contains("custody login"));
        assert!(failure_message(&AuthFailure::Expired).contains("expired"));
        assert!(failure_message(&AuthFailure::Unavailable("x".into())).contains("try again"));
    }

    #[test]
    fn config_errors_are_explained() {
        let sa = ServiceAccountConfig::default();
        let twice = [
            OidcIssuerConfig::new("https://a.example", "c"),
            OidcIssuerConfig::new("https://a.example", "d"),
        ];
        let err = Authenticator::new(&twice, &sa, None).err().unwrap();
        assert!(err.to_string().contains("twice"));
        let enabled = ServiceAccountConfig {
            enabled: true,
            audiences: vec![],
        };
        assert!(Authenticator::new(&[], &enabled, None).is_err());
        let mut bad_ca = OidcIssuerConfig::new("https://a.example", "c");
        bad_ca.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(Authenticator::new(&[bad_ca], &sa, None).is_err());
    }
}
