//! The authenticator against the real dev issuer over TLS: discovery, the JWKS cache, key
//! rotation, the unknown-`kid` flood bound, JWKS failures and timeouts (security-tests D 27 and
//! 33), and the code + PKCE flow of `custody credential`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::time::Duration;

use custody::authn::{Authenticator, OidcIssuerConfig, ServiceAccountConfig};
use custody::credential::fetch_dev_token;
use custody::principal::{AuthFailure, AuthMethod, Authenticate};
use custody_fixtures::oidc_issuer::{JwksBehavior, SigningKey};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

#[path = "support/authn.rs"]
mod support;

use support::{Setup, auth, authenticator, is_invalid};

#[tokio::test]
async fn discovery_jwks_and_a_valid_token_through_the_authenticate_seam() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {}", s.issuer.id_token_for("alice").unwrap());
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&bearer).unwrap(),
    );
    let p = authn.authenticate(&headers, "dev").await.unwrap();
    assert_eq!(p.method, AuthMethod::Oidc);
    assert_eq!(p.issuer, s.issuer.url());
    assert_eq!(p.subject, "alice");
    assert_eq!(p.username, "oidc:alice");
    assert_eq!(p.groups, ["oidc:dev"]);
    assert!(p.expires_at.unwrap() > 0);
    // Cached: more tokens cause no more fetches.
    let bob = auth(&authn, &s.issuer.id_token_for("bob").unwrap())
        .await
        .unwrap();
    assert_eq!(bob.groups, ["oidc:sre"]);
    let carol = auth(&authn, &s.issuer.id_token_for("carol").unwrap())
        .await
        .unwrap();
    assert!(carol.groups.is_empty());
    assert_eq!(
        (s.issuer.discovery_fetches(), s.issuer.jwks_fetches()),
        (1, 1)
    );
    // No credentials at all.
    let missing = authn.authenticate(&HeaderMap::new(), "dev").await;
    assert_eq!(missing, Err(AuthFailure::Missing));
}

#[tokio::test]
async fn email_usernames_and_prefixes_from_the_issuer() {
    let s = Setup::start().await;
    let mut cfg = s.config();
    cfg.username_claim = "email".into();
    cfg.username_prefix = String::new();
    let authn = authenticator(cfg);
    let p = auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();
    assert_eq!(p.username, "alice@example.com");
}

#[tokio::test]
async fn issuer_tls_is_verified_and_discovery_must_name_the_exact_issuer() {
    let s = Setup::start().await;
    let other = Setup::start().await;
    // Trusting another CA: the issuer's certificate is refused, so keys cannot be fetched.
    let mut cfg = s.config();
    cfg.ca_file = Some(other.dir.path().join("ca.pem"));
    let authn = authenticator(cfg);
    let r = auth(&authn, &s.issuer.id_token_for("alice").unwrap()).await;
    assert!(matches!(r, Err(AuthFailure::Unavailable(_))), "{r:?}");
    assert_eq!(s.issuer.discovery_fetches(), 0);

    // Configured with a trailing slash: tokens saying so route here, but discovery names
    // the issuer without it, so nothing is trusted.
    let mut cfg = s.config();
    cfg.issuer = format!("{}/", s.issuer.url());
    let authn = authenticator(cfg);
    let mut claims = s.issuer.claims_for("alice").unwrap();
    claims["iss"] = json!(format!("{}/", s.issuer.url()));
    let r = auth(&authn, &s.issuer.mint(&claims).unwrap()).await;
    assert!(matches!(r, Err(AuthFailure::Unavailable(_))), "{r:?}");
    assert_eq!(s.issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn rotation_refreshes_once_and_removed_keys_stop_verifying() {
    let s = Setup::start().await;
    let mut cfg = s.config();
    cfg.jwks_refresh_min_interval_seconds = 1;
    let authn = authenticator(cfg);
    let old = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &old).await.unwrap();
    assert_eq!(s.issuer.jwks_fetches(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_kid = s.issuer.rotate_key().unwrap();
    assert_eq!(s.issuer.published_kids(), [new_kid]);
    let new = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &new).await.unwrap();
    assert_eq!(
        s.issuer.jwks_fetches(),
        2,
        "a new kid causes exactly one refresh"
    );
    auth(&authn, &new).await.unwrap();
    assert_eq!(s.issuer.jwks_fetches(), 2);

    // The old key is gone from the refreshed set; its tokens fail (and, within the minimum
    // interval, cause no fetch).
    let r = auth(&authn, &old).await;
    assert!(is_invalid(&r), "{r:?}");
    assert_eq!(s.issuer.jwks_fetches(), 2);

    // A second key added beside the first: both verify after one refresh.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = SigningKey::generate_rs256("second").unwrap();
    s.issuer.add_key(second.clone(), false);
    let via_second = second.sign(&s.issuer.claims_for("bob").unwrap()).unwrap();
    assert_eq!(
        auth(&authn, &via_second).await.unwrap().username,
        "oidc:bob"
    );
    auth(&authn, &new).await.unwrap();
    assert_eq!(s.issuer.jwks_fetches(), 3);
}

/// The cache of verified tokens in front of verification: a token verified once is not
/// verified again (no JWKS fetch, no signature check) while it is cached, and a token whose key
/// was removed stops working once its entry lives out its time (10 s by default; 1 s here).
#[tokio::test]
async fn a_cached_token_outlives_its_removed_key_by_the_cache_ttl_at_most() {
    let s = Setup::start().await;
    let mut cfg = s.config();
    cfg.jwks_refresh_min_interval_seconds = 1;
    let authn = support::cached_authenticator(cfg, Duration::from_secs(1));
    let old = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &old).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Cached again now; the key goes away.
    auth(&authn, &old).await.unwrap();
    s.issuer.rotate_key().unwrap();
    let new = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &new).await.unwrap();
    let fetches = s.issuer.jwks_fetches();
    assert!(
        auth(&authn, &old).await.is_ok(),
        "within the cache's time the entry still answers"
    );
    assert_eq!(s.issuer.jwks_fetches(), fetches, "and nothing was fetched");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = auth(&authn, &old).await;
    assert!(is_invalid(&r), "after it, the removed key fails: {r:?}");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch() {
    let s = Setup::start().await;
    let key = s.issuer.signing_key();
    let claims = s.issuer.claims_for("alice").unwrap().to_string();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let header = json!({"alg": "RS256", "kid": format!("random-{i}-{}", uuid_like(i))});
            key.sign_raw(header.to_string(), &claims).unwrap()
        })
        .collect();

    // Cold cache: the flood itself may cause the first fetch, and nothing more.
    let authn = authenticator(s.config());
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens.clone() {
        let authn = authn.clone();
        tasks.spawn(async move { auth(&authn, &token).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(is_invalid(&r.unwrap()));
    }
    assert!(
        s.issuer.jwks_fetches() <= 1,
        "{} fetches",
        s.issuer.jwks_fetches()
    );

    // Warm cache: still at most one more.
    auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();
    let before = s.issuer.jwks_fetches();
    for token in &tokens {
        assert!(is_invalid(&auth(&authn, token).await));
    }
    assert!(s.issuer.jwks_fetches() - before <= 1);
    assert_eq!(s.issuer.discovery_fetches(), 1);
}

async fn cached_keys_then_fail_closed(behavior: JwksBehavior) {
    let s = Setup::start().await;
    let mut cfg = s.config();
    cfg.jwks_refresh_min_interval_seconds = 1;
    cfg.jwks_max_age_seconds = 1;
    cfg.jwks_cache_ttl_seconds = 3;
    cfg.http_timeout_seconds = 1;
    let authn = authenticator(cfg);
    let token = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &token).await.unwrap();
    let warmed = tokio::time::Instant::now();

    s.issuer.set_jwks_behavior(behavior);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Older than max age: a background refresh starts (and fails); cached keys still work.
    auth(&authn, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    auth(&authn, &token).await.unwrap();
    assert!(s.issuer.jwks_fetches() >= 2, "the refresh was attempted");

    // Past the TTL with no successful fetch: fail closed.
    tokio::time::sleep_until(warmed + Duration::from_millis(3500)).await;
    let r = auth(&authn, &token).await;
    assert!(matches!(r, Err(AuthFailure::Unavailable(_))), "{r:?}");

    // The issuer recovers: after the minimum interval, tokens verify again.
    s.issuer.set_jwks_behavior(JwksBehavior::Serve);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    auth(&authn, &token).await.unwrap();
}

#[tokio::test]
async fn jwks_500_keeps_cached_keys_until_the_ttl_then_fails_closed() {
    cached_keys_then_fail_closed(JwksBehavior::Fail(500)).await;
}

#[tokio::test]
async fn jwks_timeout_keeps_cached_keys_until_the_ttl_then_fails_closed() {
    cached_keys_then_fail_closed(JwksBehavior::Hang).await;
}

#[tokio::test]
async fn code_and_pkce_flow_yields_a_token_the_gateway_accepts() {
    let s = Setup::start().await;
    let ca = s.issuer.ca_pem().as_bytes().to_vec();
    let token = fetch_dev_token(s.issuer.url(), "custody", "bob", Some(&ca))
        .await
        .unwrap();
    assert!(token.refresh_token.is_some());
    assert!(token.expires_at > chrono::Utc::now().timestamp());
    let authn = authenticator(s.config());
    let p = auth(&authn, &token.id_token).await.unwrap();
    assert_eq!(
        (p.username.as_str(), p.groups.as_slice()),
        ("oidc:bob", &["oidc:sre".to_owned()][..])
    );
    assert_eq!(p.expires_at, Some(token.expires_at));

    // Unknown users, unknown clients and an untrusted CA all fail with a reason.
    let err = fetch_dev_token(s.issuer.url(), "custody", "mallory", Some(&ca))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("access_denied"), "{err}");
    let err = fetch_dev_token(s.issuer.url(), "other", "alice", Some(&ca))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let other = Setup::start().await;
    let other_ca = other.issuer.ca_pem().as_bytes().to_vec();
    assert!(
        fetch_dev_token(s.issuer.url(), "custody", "alice", Some(&other_ca))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn two_issuers_route_by_exact_iss() {
    let a = Setup::start().await;
    let b = Setup::start().await;
    let authn = Authenticator::new(
        &[a.config(), b.config()],
        &ServiceAccountConfig::default(),
        None,
    )
    .unwrap();
    assert_eq!(
        auth(&authn, &a.issuer.id_token_for("alice").unwrap())
            .await
            .unwrap()
            .issuer,
        a.issuer.url()
    );
    assert_eq!(
        auth(&authn, &b.issuer.id_token_for("bob").unwrap())
            .await
            .unwrap()
            .issuer,
        b.issuer.url()
    );
    // Case 28, "another configured issuer": signed by A but claiming to be B.
    let mut claims = a.issuer.claims_for("alice").unwrap();
    claims["iss"] = json!(b.issuer.url());
    let r = auth(&authn, &a.issuer.mint(&claims).unwrap()).await;
    assert!(is_invalid(&r), "{r:?}");
    let _ = OidcIssuerConfig::new("https://unused.example", "x");
}

fn uuid_like(i: usize) -> String {
    format!("{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
