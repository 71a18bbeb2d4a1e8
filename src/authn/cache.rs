//! Recently verified tokens: a request whose bearer token was verified moments ago is not
//! verified again (an RSA signature check per request was a quarter of the gateway's CPU per
//! API call; kubectl sends the same token for an hour).
//!
//! Security invariants, enforced here:
//! - only successes are cached, keyed by the SHA-256 of the cluster and the whole token, so a
//!   token differing in any byte (a forged signature) is verified in full;
//! - an entry lives at most [`TTL`] and never past the token's own expiry, so an expired token
//!   is never accepted from the cache, and a key removed from the issuer's JWKS or a
//!   `ServiceAccount` token revoked in the cluster stops working within [`TTL`] (kube-apiserver
//!   caches token authentication results the same way, for 10 s);
//! - the cache is bounded ([`CAPACITY`] entries): when full, expired entries go, and if none
//!   had expired, everything goes (the cost is one more verification per token).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::principal::Principal;

/// The longest an entry is trusted.
pub const TTL: Duration = Duration::from_secs(10);

/// The most entries kept.
pub const CAPACITY: usize = 4096;

/// Verified tokens and their principals.
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    ttl: Duration,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl TokenCache {
    /// A cache whose entries live at most `ttl` (at most [`TTL`]; zero caches nothing).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl: ttl.min(TTL),
        }
    }

    fn key(cluster: &str, token: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(cluster.as_bytes());
        hash.update([0]);
        hash.update(token.as_bytes());
        hash.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        // Entries are whole values: a panic elsewhere cannot leave one half-written.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The principal of `token`, if it was verified for `cluster` less than [`TTL`] ago and has
    /// not expired since.
    pub fn get(&self, cluster: &str, token: &str, now: Instant) -> Option<Principal> {
        let key = Self::key(cluster, token);
        let mut entries = self.lock();
        match entries.get(&key) {
            Some((principal, until)) if now < *until => Some(principal.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified `token`. `unix_now` is the wall clock (seconds) matching `now`, to
    /// bound the entry by the token's own expiry.
    pub fn put(
        &self,
        cluster: &str,
        token: &str,
        principal: &Principal,
        now: Instant,
        unix_now: i64,
    ) {
        let mut ttl = self.ttl;
        if let Some(expires_at) = principal.expires_at {
            let left = u64::try_from(expires_at.saturating_sub(unix_now)).unwrap_or(0);
            ttl = ttl.min(Duration::from_secs(left));
        }
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(Self::key(cluster, token), (principal.clone(), now + ttl));
    }

    /// How many entries are kept (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AuthMethod;

    fn alice(expires_at: Option<i64>) -> Principal {
        Principal {
            method: AuthMethod::Oidc,
            issuer: "https://idp".into(),
            subject: "a".into(),
            username: "oidc:alice".into(),
            groups: vec!["dev".into()],
            expires_at,
        }
    }

    #[test]
    fn an_entry_lives_ten_seconds_at_most_and_never_past_the_tokens_expiry() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        cache.put("demo", "tok", &alice(Some(1_000_100)), t0, 1_000_000);
        assert!(cache.get("demo", "tok", t0).is_some());
        assert!(
            cache
                .get("demo", "tok", t0 + Duration::from_secs(9))
                .is_some()
        );
        assert!(
            cache.get("demo", "tok", t0 + TTL).is_none(),
            "ten seconds at most"
        );

        cache.put("demo", "short", &alice(Some(1_000_003)), t0, 1_000_000);
        assert!(
            cache
                .get("demo", "short", t0 + Duration::from_secs(2))
                .is_some()
        );
        assert!(
            cache
                .get("demo", "short", t0 + Duration::from_secs(3))
                .is_none(),
            "never past exp"
        );
        cache.put("demo", "expired", &alice(Some(999_999)), t0, 1_000_000);
        assert!(cache.get("demo", "expired", t0).is_none());
    }

    #[test]
    fn the_key_is_the_whole_token_and_the_cluster() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        cache.put("demo", "header.claims.sig", &alice(None), t0, 0);
        assert!(cache.get("demo", "header.claims.siG", t0).is_none());
        assert!(cache.get("prod", "header.claims.sig", t0).is_none());
        assert!(cache.get("demo", "header.claims.sig", t0).is_some());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..CAPACITY + 10 {
            cache.put("demo", &format!("t{i}"), &alice(None), t0, 0);
        }
        assert!(cache.len() <= CAPACITY);
        assert!(!cache.is_empty());
    }
}
