//! One trusted OIDC issuer: discovery, the JWKS cache with its refresh rules, signature
//! verification and claim validation.
//!
//! Cache rules (security-tests D 27 and 33):
//! - Keys come only from the JWKS named by the discovery document, whose `issuer` must equal
//!   the configured one exactly. A token's `kid` is only ever matched against cached keys.
//! - Any fetch (first use, expiry, unknown `kid`) happens at most once per
//!   `jwks_refresh_min_interval`, and only one fetch runs at a time, so a flood of tokens with
//!   random `kid`s causes at most one request to the issuer per interval.
//! - Keys older than `jwks_max_age` are re-fetched in the background while still in use; a
//!   refresh replaces the whole set, so a key the issuer removed stops verifying.
//! - When no fetch has succeeded for `jwks_cache_ttl`, the issuer fails closed
//!   ([`AuthFailure::Unavailable`]) until one does.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use crate::authn::claims::{self, Identity};
use crate::authn::config::{OidcIssuerConfig, Timings};
use crate::authn::https::HttpsClient;
use crate::authn::jose::{UnverifiedToken, parse_strict_json};
use crate::authn::jwks::KeySet;
use crate::principal::AuthFailure;

/// The verifier for one configured issuer.
pub(crate) struct IssuerVerifier {
    config: OidcIssuerConfig,
    timings: Timings,
    client: HttpsClient,
    cache: Mutex<KeyCache>,
    /// Held while a fetch runs, so fetches never overlap.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: Option<Arc<KeySet>>,
    jwks_uri: Option<String>,
    /// When the last successful fetch finished.
    fetched_at: Option<Instant>,
    /// When the last fetch (successful or not) started.
    attempted_at: Option<Instant>,
}

/// Why a refresh did not happen or failed.
enum RefreshError {
    /// A fetch ran less than the minimum interval ago.
    RateLimited,
    /// The issuer could not be reached or answered nonsense (the detail is logged).
    Failed,
}

impl IssuerVerifier {
    /// A verifier for `config`, with an HTTPS client trusting `ca_pem` or the system roots.
    pub(crate) fn new(config: OidcIssuerConfig, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let timings = config.timings();
        let client = HttpsClient::new(ca_pem, timings.http_timeout)?;
        Ok(IssuerVerifier {
            config,
            timings,
            client,
            cache: Mutex::new(KeyCache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured issuer URL.
    pub(crate) fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Verifies the token's signature with this issuer's keys, then its claims. `now` is Unix
    /// seconds.
    pub(crate) async fn verify(
        self: &Arc<Self>,
        token: &UnverifiedToken,
        now: i64,
    ) -> Result<Identity, AuthFailure> {
        let keys = self.usable_keys().await?;
        let keys = match &token.header.kid {
            Some(kid) if !keys.has_kid(kid) => {
                // Unknown kid: the issuer may have rotated. One rate-limited refresh.
                match self.refresh().await {
                    Ok(fresh) => fresh,
                    Err(RefreshError::RateLimited | RefreshError::Failed) => keys,
                }
            }
            _ => keys,
        };
        let verified = keys
            .candidates(&token.header)
            .any(|key| token.verify_with(key.decoding_key()));
        if !verified {
            let known = token
                .header
                .kid
                .as_ref()
                .is_none_or(|kid| keys.has_kid(kid));
            return Err(AuthFailure::Invalid(
                if known {
                    "the token's signature does not verify"
                } else {
                    "the token was signed with a key the issuer does not publish"
                }
                .to_owned(),
            ));
        }
        claims::validate(&token.claims, &self.config, now)
    }

    /// The cached keys if they are within their TTL (fetching them first when there are
    /// none or they expired), and a background refresh when they are older than max age.
    async fn usable_keys(self: &Arc<Self>) -> Result<Arc<KeySet>, AuthFailure> {
        let (keys, fetched_at) = {
            let cache = self.lock();
            (cache.keys.clone(), cache.fetched_at)
        };
        match (keys, fetched_at) {
            (Some(keys), Some(at)) if at.elapsed() <= self.timings.ttl => {
                if at.elapsed() > self.timings.max_age && self.may_fetch() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.refresh().await;
                    });
                }
                Ok(keys)
            }
            _ => self.refresh().await.map_err(|_| {
                AuthFailure::Unavailable("the identity provider's keys cannot be fetched".into())
            }),
        }
    }

    /// Fetches the JWKS (and the discovery document the first time) and returns the new keys.
    /// When a fetch started less than the minimum interval ago, or ran while this caller
    /// waited for it, nothing is fetched and the current keys are returned if still usable.
    async fn refresh(&self) -> Result<Arc<KeySet>, RefreshError> {
        let attempted_before = self.lock().attempted_at;
        let _fetching = self.fetching.lock().await;
        {
            let mut cache = self.lock();
            // Another caller fetched while this one waited, or a fetch started less than the
            // minimum interval ago: no fetch now; the current keys, if still usable, serve.
            let recent = cache.attempted_at != attempted_before
                || cache
                    .attempted_at
                    .is_some_and(|at| at.elapsed() < self.timings.refresh_min_interval);
            if recent {
                return match (&cache.keys, cache.fetched_at) {
                    (Some(keys), Some(at)) if at.elapsed() <= self.timings.ttl => Ok(keys.clone()),
                    _ => Err(RefreshError::RateLimited),
                };
            }
            cache.attempted_at = Some(Instant::now());
        }
        match self.fetch().await {
            Ok((jwks_uri, keys)) => {
                let keys = Arc::new(keys);
                let mut cache = self.lock();
                cache.keys = Some(keys.clone());
                cache.jwks_uri = Some(jwks_uri);
                cache.fetched_at = Some(Instant::now());
                tracing::debug!(issuer = %self.config.issuer, keys = keys.len(), "fetched the JWKS");
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(issuer = %self.config.issuer, %error, "cannot refresh the issuer's keys");
                Err(RefreshError::Failed)
            }
        }
    }

    /// Whether a background refresh is worth starting: none is running and the last one
    /// started at least the minimum interval ago (so requests do not pile up tasks).
    fn may_fetch(&self) -> bool {
        let idle = self.fetching.try_lock().is_ok();
        idle && self
            .lock()
            .attempted_at
            .is_none_or(|at| at.elapsed() >= self.timings.refresh_min_interval)
    }

    /// Discovery (once) and the JWKS.
    async fn fetch(&self) -> Result<(String, KeySet), String> {
        let cached_uri = self.lock().jwks_uri.clone();
        let jwks_uri = match cached_uri {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let resp = self.client.get(&jwks_uri).await?;
        if !resp.status.is_success() {
            return Err(format!("the JWKS endpoint answered {}", resp.status));
        }
        let doc = json_body(&resp.body)?;
        let keys = KeySet::parse(&doc)?;
        if keys.is_empty() {
            return Err("the JWKS has no usable signature key".into());
        }
        Ok((jwks_uri, keys))
    }

    /// Reads the discovery document and returns its `jwks_uri`. Its `issuer` must be the
    /// configured issuer, byte for byte (`OpenID` Connect Discovery §4.3).
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let resp = self.client.get(&url).await?;
        if !resp.status.is_success() {
            return Err(format!("discovery answered {}", resp.status));
        }
        let doc = json_body(&resp.body)?;
        let issuer = doc.get("issuer").and_then(serde_json::Value::as_str);
        if issuer != Some(self.config.issuer.as_str()) {
            return Err(format!(
                "discovery names issuer {issuer:?}, not the configured {:?}",
                self.config.issuer
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or("discovery has no jwks_uri")?;
        if !jwks_uri.starts_with("https://") {
            return Err(format!("jwks_uri {jwks_uri:?} is not https"));
        }
        Ok(jwks_uri.to_owned())
    }

    /// Locks the cache. Every update is a set of plain assignments, so a panicking holder
    /// cannot leave it half-written; poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn json_body(body: &[u8]) -> Result<serde_json::Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the response is not UTF-8".to_owned())?;
    parse_strict_json(text).map_err(|e| format!("the response is not valid JSON: {e}"))
}
