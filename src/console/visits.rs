//! Browser sessions ("visits", to keep them apart from recorded sessions): who a console cookie
//! stands for, its CSRF token and when it ends; and the logins in progress (state, nonce and
//! PKCE verifier of each authorization request).
//!
//! Security invariants:
//! - The cookie value is 256 random bits; the store keys visits by its SHA-256, so neither the
//!   map nor a memory dump of it holds a usable cookie, and a lookup compares digests.
//! - A visit ends at the earlier of its ID token's expiry and the configured maximum; an ended
//!   visit is removed when next looked up, and logout removes it at once, so a copied cookie
//!   is dead after logout.
//! - A login in progress is bound to the browser that started it (a second cookie holds its
//!   `state`), used at most once, and void after [`LOGIN_TTL`].
//! - Both maps are bounded: when full, expired entries are swept, and if that frees nothing the
//!   oldest entry goes (a flood of unfinished logins cannot grow memory without bound).
//!
//! Visits live in this replica's memory: in cluster mode a balancer must keep a browser on one
//! replica (cookie or source affinity), or people log in again when moved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::principal::Principal;

/// How long a login may take between the redirect to the issuer and the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The most visits kept at once.
const MAX_VISITS: usize = 100_000;
/// The most logins in progress kept at once.
const MAX_LOGINS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The person, mapped as their kubectl token would be.
    pub principal: Principal,
    /// The token every state-changing request must carry.
    pub csrf: String,
    /// When the visit ends.
    pub ends: Instant,
}

/// A login in progress.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The OIDC `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
    /// Where to go after logging in (a console path).
    pub next: String,
    started: Instant,
}

/// The visits and logins of this replica.
#[derive(Debug)]
pub struct Visits {
    max_session: Duration,
    live: Mutex<HashMap<[u8; 32], Visit>>,
    logins: Mutex<HashMap<[u8; 32], PendingLogin>>,
}

impl Visits {
    /// An empty store whose visits last at most `max_session`.
    pub fn new(max_session: Duration) -> Self {
        Self {
            max_session,
            live: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a visit for `principal` ending at its credential's expiry (Unix seconds) or the
    /// maximum, whichever is first; returns the cookie value.
    pub fn begin(&self, principal: Principal, now_unix: i64) -> String {
        let mut lifetime = self.max_session;
        if let Some(expires) = principal.expires_at {
            let left = u64::try_from(expires.saturating_sub(now_unix)).unwrap_or(0);
            lifetime = lifetime.min(Duration::from_secs(left));
        }
        let cookie = random_token();
        let visit = Visit {
            principal,
            csrf: random_token(),
            ends: Instant::now() + lifetime,
        };
        let mut visits = lock(&self.live);
        make_room(
            &mut visits,
            MAX_VISITS,
            |v| v.ends <= Instant::now(),
            |v| v.ends,
        );
        visits.insert(digest(&cookie), visit);
        cookie
    }

    /// The visit a cookie stands for, if it is live.
    pub fn get(&self, cookie: &str) -> Option<Visit> {
        let key = digest(cookie);
        let mut visits = lock(&self.live);
        let visit = visits.get(&key)?;
        if visit.ends <= Instant::now() {
            visits.remove(&key);
            return None;
        }
        Some(visit.clone())
    }

    /// Ends the visit a cookie stands for; whether there was one.
    pub fn end(&self, cookie: &str) -> bool {
        lock(&self.live).remove(&digest(cookie)).is_some()
    }

    /// Records a login in progress under its `state`.
    pub fn start_login(&self, state: &str, nonce: String, pkce_verifier: String, next: String) {
        let mut logins = lock(&self.logins);
        make_room(
            &mut logins,
            MAX_LOGINS,
            |l| l.started.elapsed() > LOGIN_TTL,
            |l| l.started,
        );
        logins.insert(
            digest(state),
            PendingLogin {
                nonce,
                pkce_verifier,
                next,
                started: Instant::now(),
            },
        );
    }

    /// Takes the login in progress under `state` (once); `None` if unknown or too old.
    pub fn finish_login(&self, state: &str) -> Option<PendingLogin> {
        let login = lock(&self.logins).remove(&digest(state))?;
        (login.started.elapsed() <= LOGIN_TTL).then_some(login)
    }

    /// How many visits are live (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    /// Whether no visit is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's generator failing leaves no safe way to mint a secret; the
    // process cannot serve logins without one.
    #[allow(
        clippy::expect_used,
        reason = "no secret can be made without the OS RNG"
    )]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps `map` under `max` entries: sweeps the expired, then drops the oldest if still full.
fn make_room<V, O: Ord>(
    map: &mut HashMap<[u8; 32], V>,
    max: usize,
    expired: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> O,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !expired(v));
    while map.len() >= max {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k) else {
            break;
        };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AuthMethod;

    fn alice(expires_at: Option<i64>) -> Principal {
        Principal {
            method: AuthMethod::Oidc,
            issuer: "https://issuer".into(),
            subject: "alice".into(),
            username: "alice".into(),
            groups: vec!["dev".into()],
            expires_at,
        }
    }

    #[test]
    fn a_visit_is_found_by_its_cookie_and_dies_at_logout() {
        let visits = Visits::new(Duration::from_secs(3600));
        let cookie = visits.begin(alice(None), 0);
        assert_eq!(cookie.len(), 43);
        let visit = visits.get(&cookie).unwrap();
        assert_eq!(visit.principal.username, "alice");
        assert_eq!(visit.csrf.len(), 43);
        assert_ne!(visit.csrf, cookie);
        assert!(visits.get("not-a-cookie").is_none());
        assert!(visits.end(&cookie));
        assert!(visits.get(&cookie).is_none());
        assert!(!visits.end(&cookie));
    }

    #[test]
    fn a_visit_ends_with_its_token() {
        let visits = Visits::new(Duration::from_secs(3600));
        // The token expired a second ago: the visit is born dead.
        let cookie = visits.begin(alice(Some(99)), 100);
        assert!(visits.get(&cookie).is_none());
        assert!(visits.is_empty());
    }

    #[test]
    fn a_login_is_used_once() {
        let visits = Visits::new(Duration::from_secs(3600));
        visits.start_login("state-1", "n".into(), "v".into(), "/custody/ui/".into());
        let login = visits.finish_login("state-1").unwrap();
        assert_eq!(
            (login.nonce.as_str(), login.pkce_verifier.as_str()),
            ("n", "v")
        );
        assert!(visits.finish_login("state-1").is_none());
        assert!(visits.finish_login("other").is_none());
    }

    #[test]
    fn the_maps_stay_bounded() {
        let mut map = HashMap::new();
        for i in 0..10u8 {
            map.insert([i; 32], i);
        }
        make_room(&mut map, 10, |_| false, |v| *v);
        assert_eq!(map.len(), 9);
        assert!(!map.contains_key(&[0; 32]), "the oldest went first");
        make_room(&mut map, 10, |v| *v < 5, |v| *v);
        assert_eq!(map.len(), 9, "under the cap nothing is swept");
    }
}
