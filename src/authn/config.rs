//! Configuration of authentication: the trusted OIDC issuers and `ServiceAccount` tokens.
//!
//! The lead's top-level configuration embeds these types; each validates itself so
//! `custody config check` can explain what is wrong.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest leeway accepted for `exp`/`nbf` checks, in seconds.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// One trusted `OpenID` Connect issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer URL, compared byte for byte with the token's `iss` and the discovery
    /// document's `issuer` (no trailing-slash, case or scheme normalization). Must be `https`.
    pub issuer: String,
    /// The OAuth client id custody's users log in with.
    pub client_id: String,
    /// Accepted `aud` values; the token's `aud` must contain one. Empty means `[client_id]`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The claim that holds the username (`sub` by default, or e.g. `email`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Prefix added to every username, so OIDC names cannot collide with cluster names.
    #[serde(default = "default_prefix")]
    pub username_prefix: String,
    /// The claim that holds the groups, as an array of strings or a single string.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Prefix added to every group.
    #[serde(default = "default_prefix")]
    pub groups_prefix: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// When the username claim is `email`, accept tokens without an `email_verified` claim.
    /// A present `email_verified` must always be the boolean `true`.
    #[serde(default)]
    pub allow_missing_email_verified: bool,
    /// A PEM file of CA certificates to trust for the issuer's TLS instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The least time between two JWKS fetches caused by tokens with an unknown `kid`.
    #[serde(default = "default_refresh_min_interval")]
    pub jwks_refresh_min_interval_seconds: u64,
    /// The JWKS is re-fetched in the background once it is this old.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_seconds: u64,
    /// How long keys stay usable after the last successful JWKS fetch when the issuer cannot
    /// be reached; after that, tokens from this issuer fail closed.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_cache_ttl_seconds: u64,
    /// Timeout for one discovery or JWKS request, in seconds.
    #[serde(default = "default_http_timeout")]
    pub http_timeout_seconds: u64,
}

impl OidcIssuerConfig {
    /// A configuration with every default, for this issuer and client.
    pub fn new(issuer: &str, client_id: &str) -> OidcIssuerConfig {
        OidcIssuerConfig {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            audiences: Vec::new(),
            username_claim: default_username_claim(),
            username_prefix: default_prefix(),
            groups_claim: default_groups_claim(),
            groups_prefix: default_prefix(),
            leeway_seconds: default_leeway(),
            allow_missing_email_verified: false,
            ca_file: None,
            jwks_refresh_min_interval_seconds: default_refresh_min_interval(),
            jwks_max_age_seconds: default_jwks_max_age(),
            jwks_cache_ttl_seconds: default_jwks_ttl(),
            http_timeout_seconds: default_http_timeout(),
        }
    }

    /// The accepted audiences: `audiences`, or `[client_id]` when that is empty.
    pub fn effective_audiences(&self) -> Vec<String> {
        if self.audiences.is_empty() {
            vec![self.client_id.clone()]
        } else {
            self.audiences.clone()
        }
    }

    /// Checks the values; the message says which field is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self
            .issuer
            .parse()
            .map_err(|e| format!("issuer {:?} is not a URL: {e}", self.issuer))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(format!("issuer {:?} must be an https URL", self.issuer));
        }
        if uri.query().is_some() {
            return Err(format!("issuer {:?} must not have a query", self.issuer));
        }
        if self.client_id.is_empty() {
            return Err(format!("issuer {:?}: client_id is empty", self.issuer));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(format!("issuer {:?}: an audience is empty", self.issuer));
        }
        if self.username_claim.is_empty() || self.groups_claim.is_empty() {
            return Err(format!(
                "issuer {:?}: claim names must not be empty",
                self.issuer
            ));
        }
        if self.username_prefix.starts_with("system:") || self.groups_prefix.starts_with("system:")
        {
            return Err(format!(
                "issuer {:?}: prefixes must not start with system:",
                self.issuer
            ));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(format!(
                "issuer {:?}: leeway_seconds {} is over the maximum of {MAX_LEEWAY_SECONDS}",
                self.issuer, self.leeway_seconds
            ));
        }
        if self.http_timeout_seconds == 0 {
            return Err(format!(
                "issuer {:?}: http_timeout_seconds must be > 0",
                self.issuer
            ));
        }
        if self.jwks_cache_ttl_seconds < self.jwks_max_age_seconds {
            return Err(format!(
                "issuer {:?}: jwks_cache_ttl_seconds must be at least jwks_max_age_seconds",
                self.issuer
            ));
        }
        Ok(())
    }

    /// The JWKS cache timings as durations.
    pub(crate) fn timings(&self) -> Timings {
        Timings {
            refresh_min_interval: Duration::from_secs(self.jwks_refresh_min_interval_seconds),
            max_age: Duration::from_secs(self.jwks_max_age_seconds),
            ttl: Duration::from_secs(self.jwks_cache_ttl_seconds),
            http_timeout: Duration::from_secs(self.http_timeout_seconds),
        }
    }
}

/// The JWKS cache's timings, from [`OidcIssuerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timings {
    pub(crate) refresh_min_interval: Duration,
    pub(crate) max_age: Duration,
    pub(crate) ttl: Duration,
    pub(crate) http_timeout: Duration,
}

/// Kubernetes `ServiceAccount` tokens, verified by the cluster through `TokenReview`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountConfig {
    /// Accept `ServiceAccount` tokens (off by default).
    #[serde(default)]
    pub enabled: bool,
    /// The audiences sent in the `TokenReview`; empty means the API server's own audience.
    #[serde(default)]
    pub audiences: Vec<String>,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_prefix() -> String {
    "oidc:".to_owned()
}

fn default_leeway() -> u64 {
    30
}

fn default_refresh_min_interval() -> u64 {
    30
}

fn default_jwks_max_age() -> u64 {
    300
}

fn default_jwks_ttl() -> u64 {
    3600
}

fn default_http_timeout() -> u64 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_unknown_keys_fail() {
        let cfg: OidcIssuerConfig =
            serde_json::from_str(r#"{"issuer":"https://idp.example","client_id":"custody"}"#)
                .unwrap();
        assert_eq!(cfg, OidcIssuerConfig::new("https://idp.example", "custody"));
        assert_eq!(cfg.effective_audiences(), ["custody"]);
        assert!(cfg.validate().is_ok());
        let err = serde_json::from_str::<OidcIssuerConfig>(
            r#"{"issuer":"https://idp.example","client_id":"c","extra":1}"#,
        );
        assert!(err.is_err());
        assert!(serde_json::from_str::<ServiceAccountConfig>(r#"{"enable":true}"#).is_err());
    }

    #[test]
    fn validation_explains() {
        let mut cfg = OidcIssuerConfig::new("http://idp.example", "custody");
        assert!(cfg.validate().unwrap_err().contains("https"));
        cfg.issuer = "https://idp.example".into();
        cfg.leeway_seconds = 301;
        assert!(cfg.validate().unwrap_err().contains("leeway"));
        cfg.leeway_seconds = 0;
        cfg.username_prefix = "system:".into();
        assert!(cfg.validate().unwrap_err().contains("system:"));
    }
}
