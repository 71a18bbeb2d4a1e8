//! Security-tests section D (JWT / OIDC), cases 25 to 32, each with hand-made tokens sent
//! through the authenticator against the real dev issuer over TLS. Every failure here is an
//! `AuthFailure`, which the gateway answers with 401. Case 33 (rotation, JWKS 500 and
//! timeouts, removed keys) is in `authn_oidc.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use custody::principal::AuthFailure;
use custody_fixtures::oidc_issuer::SigningKey;
use serde_json::{Value, json};

#[path = "support/authn.rs"]
mod support;

use support::{Setup, auth, authenticator, is_invalid};

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The issuer's normal header with some fields replaced.
fn header(s: &Setup, extra: &Value) -> Value {
    let mut h = s.issuer.signing_key().header();
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

#[tokio::test]
async fn case_25_alg_none_empty_signatures_and_segment_counts() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let claims = s.issuer.claims_for("alice").unwrap().to_string();
    let good = s.issuer.id_token_for("alice").unwrap();
    auth(&authn, &good).await.unwrap();
    let (h, c, sig) = {
        let mut p = good.split('.');
        (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
    };
    let mut bad = Vec::new();
    for alg in ["none", "NONE", "nOnE"] {
        let hdr = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        bad.push(format!("{hdr}.{}.", b64(&claims)));
        bad.push(format!("{hdr}.{}.{sig}", b64(&claims)));
    }
    bad.push(format!("{h}.{c}."));
    bad.push(format!("{h}.{c}"));
    bad.push(format!("{h}.{c}.{sig}.{sig}"));
    bad.push(format!("{h}.{c}.{sig}."));
    for token in bad {
        assert!(is_invalid(&auth(&authn, &token).await), "{token}");
    }
}

#[tokio::test]
async fn case_26_hs256_signed_with_the_public_key_is_refused() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let key = s.issuer.signing_key();
    auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();
    let jwk = key.public_jwk();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        key.public_key_pem().as_bytes().to_vec(),
        key.public_key_pem().trim_end().as_bytes().to_vec(),
        n,
        jwk.to_string().into_bytes(),
    ];
    let claims = s.issuer.claims_for("alice").unwrap().to_string();
    for alg in [
        jsonwebtoken::Algorithm::HS256,
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        for secret in &secrets {
            let hdr = header(&s, &json!({"alg": format!("{alg:?}")}));
            let input = format!("{}.{}", b64(hdr.to_string()), b64(&claims));
            let secret = jsonwebtoken::EncodingKey::from_secret(secret);
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &secret, alg).unwrap();
            let r = auth(&authn, &format!("{input}.{sig}")).await;
            assert!(is_invalid(&r), "{alg:?}: {r:?}");
        }
    }
}

#[tokio::test]
async fn case_27_kid_tricks_and_key_carrying_headers_are_ignored() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let key = s.issuer.signing_key();
    let claims = s.issuer.claims_for("alice").unwrap().to_string();
    auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();
    let fetches = s.issuer.jwks_fetches();

    // A listener that would see any attempt to fetch a key from a header URL.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("https://{}/jwks", trap.local_addr().unwrap());
    let trapped = tokio::spawn(async move { trap.accept().await.is_ok() });

    for kid in [
        "unknown",
        "../../dev/null",
        "' OR '1'='1' --",
        trap_url.as_str(),
        "",
        "\u{0}",
    ] {
        let hdr = header(&s, &json!({"kid": kid}));
        let token = key.sign_raw(hdr.to_string(), &claims).unwrap();
        assert!(is_invalid(&auth(&authn, &token).await), "kid {kid:?}");
    }

    // An attacker's key, offered in every header field that can carry or point to a key.
    let attacker = SigningKey::generate_rs256("attacker").unwrap();
    let cert = STANDARD.encode(b"not a certificate");
    for extra in [
        json!({"jwk": attacker.public_jwk()}),
        json!({"jku": trap_url}),
        json!({"x5u": trap_url}),
        json!({"x5c": [cert]}),
        json!({"jwk": attacker.public_jwk(), "jku": trap_url, "x5u": trap_url, "x5c": [cert]}),
    ] {
        for kid in [Value::from("attacker"), Value::from(key.kid()), Value::Null] {
            let mut hdr = attacker.header();
            for (k, v) in extra.as_object().unwrap() {
                hdr[k] = v.clone();
            }
            if kid.is_null() {
                hdr.as_object_mut().unwrap().remove("kid");
            } else {
                hdr["kid"] = kid.clone();
            }
            let token = attacker.sign_raw(hdr.to_string(), &claims).unwrap();
            assert!(is_invalid(&auth(&authn, &token).await), "{extra} kid {kid}");
        }
        // Signed by the real key, the same headers change nothing: they are never read.
        let mut hdr = key.header();
        for (k, v) in extra.as_object().unwrap() {
            hdr[k] = v.clone();
        }
        let token = key.sign_raw(hdr.to_string(), &claims).unwrap();
        assert_eq!(auth(&authn, &token).await.unwrap().username, "oidc:alice");
    }
    // At most one JWKS refresh (rate-limited), and nothing ever contacted the header URLs.
    assert!(s.issuer.jwks_fetches() - fetches <= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!trapped.is_finished(), "a header URL was fetched");
    trapped.abort();
}

#[tokio::test]
async fn case_28_issuer_variants_and_audiences() {
    let s = Setup::start().await;
    let other = Setup::start().await;
    let authn = custody::authn::Authenticator::new(
        &[s.config(), other.config()],
        &custody::authn::ServiceAccountConfig::default(),
        None,
    )
    .unwrap();
    let url = s.issuer.url().to_owned();
    let variants = [
        format!("{url}/"),
        url.replacen("https://", "http://", 1),
        url.replacen("https://", "HTTPS://", 1),
        url.replace("127.0.0.1", "localhost"),
        other.issuer.url().to_owned(),
    ];
    for iss in variants {
        let mut claims = s.issuer.claims_for("alice").unwrap();
        claims["iss"] = json!(iss);
        let r = auth(&authn, &s.issuer.mint(&claims).unwrap()).await;
        assert!(is_invalid(&r), "iss {iss}: {r:?}");
    }
    for aud in [
        Value::Null,
        json!("another-client"),
        json!(["a", "b"]),
        json!([]),
        json!(""),
    ] {
        let mut claims = s.issuer.claims_for("alice").unwrap();
        if aud.is_null() {
            claims.as_object_mut().unwrap().remove("aud");
        } else {
            claims["aud"] = aud.clone();
        }
        let r = auth(&authn, &s.issuer.mint(&claims).unwrap()).await;
        assert!(is_invalid(&r), "aud {aud}: {r:?}");
    }
    let mut claims = s.issuer.claims_for("alice").unwrap();
    claims["aud"] = json!(["another-client", "custody"]);
    auth(&authn, &s.issuer.mint(&claims).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn case_29_time_claim_types_and_leeway() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let now = chrono::Utc::now().timestamp();
    let hdr = s.issuer.signing_key().header().to_string();
    let base = s.issuer.claims_for("alice").unwrap();
    let with = |field: &str, raw: &str| {
        let mut claims = base.clone();
        claims.as_object_mut().unwrap().remove(field);
        let text = claims.to_string();
        let text = if raw.is_empty() {
            text
        } else {
            format!("{},\"{field}\":{raw}}}", &text[..text.len() - 1])
        };
        s.issuer.sign_raw(&hdr, text).unwrap()
    };
    let future = (now + 3600).to_string();
    for (field, raw) in [
        ("exp", ""),
        ("exp", "\"99999999999\""),
        ("exp", "99999999999.0"),
        ("exp", "1e11"),
        ("exp", "null"),
        ("exp", "-1"),
        ("exp", "true"),
        ("exp", "[99999999999]"),
        ("nbf", "\"0\""),
        ("nbf", future.as_str()),
        ("iat", "\"now\""),
    ] {
        let r = auth(&authn, &with(field, raw)).await;
        assert!(is_invalid(&r), "{field}={raw}: {r:?}");
    }
    // Expired 20 s ago: inside the default 30 s leeway (with room for a slow test machine),
    // outside a 0 s one.
    let expired = with("exp", &(now - 20).to_string());
    auth(&authn, &expired).await.unwrap();
    let mut strict = s.config();
    strict.leeway_seconds = 0;
    let strict = authenticator(strict);
    assert_eq!(auth(&strict, &expired).await, Err(AuthFailure::Expired));
    let long_expired = with("exp", &(now - 120).to_string());
    assert_eq!(auth(&authn, &long_expired).await, Err(AuthFailure::Expired));
}

#[tokio::test]
async fn case_30_malformed_encodings_are_refused_quickly() {
    let s = Setup::start().await;
    let authn = authenticator(s.config());
    let key = s.issuer.signing_key();
    let hdr = key.header().to_string();
    let claims = s.issuer.claims_for("alice").unwrap();
    let text = claims.to_string();
    auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();

    let good = key.sign_raw(&hdr, &text).unwrap();
    let mut parts = good.split('.');
    let (h, c, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut big = claims.clone();
    big["padding"] = json!("x".repeat(16 * 1024));
    let duplicate_sub = format!("{},\"sub\":\"bob\"}}", &text[..text.len() - 1]);
    let mut non_utf8 = text.clone().into_bytes();
    let at = non_utf8.len() - 1;
    non_utf8.splice(at..at, b",\"name\":\"\xff\xfe\"".iter().copied());
    let padded_h = URL_SAFE.encode(&hdr);
    let padded_c = URL_SAFE.encode(&text);
    let std_c = STANDARD.encode(format!("{},\"x\":\"???>>>\"}}", &text[..text.len() - 1]));
    assert!(std_c.contains('/') || std_c.contains('+'));

    let tokens = vec![
        // JWS JSON serialization, flattened and general (two signatures).
        json!({"protected": h, "payload": c, "signature": sig}).to_string(),
        json!({"payload": c, "signatures": [{"protected": h, "signature": sig}, {"protected": h, "signature": sig}]}).to_string(),
        // Over 16 KiB, correctly signed.
        key.sign_raw(&hdr, big.to_string()).unwrap(),
        // Duplicate `sub` keys, correctly signed.
        key.sign_raw(&hdr, &duplicate_sub).unwrap(),
        // Non-UTF-8 claims, correctly signed.
        key.sign_raw(&hdr, &non_utf8).unwrap(),
        // Padding, and the standard alphabet, correctly signed over those very bytes.
        key.sign_segments(&padded_h, c).unwrap(),
        key.sign_segments(h, &padded_c).unwrap(),
        key.sign_segments(h, std_c.trim_end_matches('=')).unwrap(),
        format!("{h}.{c}.{}", URL_SAFE.encode(URL_SAFE_NO_PAD.decode(sig).unwrap())),
        format!("{h}.{c}.{}", STANDARD.encode(URL_SAFE_NO_PAD.decode(sig).unwrap())),
        // Garbage of every kind.
        "\u{1F600}.\u{1F600}.\u{1F600}".to_owned(),
        ".".repeat(20_000),
        "a".repeat(1_000_000),
    ];
    for token in tokens {
        let started = Instant::now();
        let r = auth(&authn, &token).await;
        assert!(is_invalid(&r), "{}: {r:?}", &token[..token.len().min(80)]);
        assert!(started.elapsed() < Duration::from_secs(1), "bounded CPU");
    }
    assert_eq!(auth(&authn, &good).await.unwrap().username, "oidc:alice");
}

#[tokio::test]
async fn case_31_email_verification_system_names_empty_usernames_and_group_shapes() {
    let s = Setup::start().await;
    let mut cfg = s.config();
    cfg.username_claim = "email".into();
    let by_email = authenticator(cfg);
    let by_sub = authenticator(s.config());
    let mint = |changes: Value| {
        let mut claims = s.issuer.claims_for("alice").unwrap();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        s.issuer.mint(&claims).unwrap()
    };
    for verified in [json!(false), json!("false"), json!("true"), json!(null)] {
        let r = auth(&by_email, &mint(json!({"email_verified": verified}))).await;
        assert!(
            matches!(r, Err(AuthFailure::Refused(_))),
            "{verified}: {r:?}"
        );
    }
    let mut claims = s.issuer.claims_for("alice").unwrap();
    claims.as_object_mut().unwrap().remove("email_verified");
    let r = auth(&by_email, &s.issuer.mint(&claims).unwrap()).await;
    assert!(matches!(r, Err(AuthFailure::Refused(_))));

    for changes in [
        json!({"sub": "system:admin"}),
        json!({"groups": ["dev", "system:masters"]}),
        json!({"groups": "system:masters"}),
    ] {
        let r = auth(&by_sub, &mint(changes.clone())).await;
        assert!(
            matches!(r, Err(AuthFailure::Refused(_))),
            "{changes}: {r:?}"
        );
    }
    let r = auth(&by_email, &mint(json!({"email": "system:admin"}))).await;
    assert!(matches!(r, Err(AuthFailure::Refused(_))));
    let r = auth(&by_email, &mint(json!({"email": ""}))).await;
    assert!(matches!(r, Err(AuthFailure::Refused(_))));
    assert!(auth(&by_sub, &mint(json!({"sub": ""}))).await.is_err());

    let as_string = auth(&by_sub, &mint(json!({"groups": "dev"})))
        .await
        .unwrap();
    let as_array = auth(&by_sub, &mint(json!({"groups": ["dev"]})))
        .await
        .unwrap();
    assert_eq!(as_string.groups, as_array.groups);
    assert_eq!(as_string.groups, ["oidc:dev"]);
}

#[tokio::test]
async fn case_32_es256_with_r_and_s_zero_is_refused() {
    let s = Setup::start().await;
    let ec = SigningKey::generate_es256("ec-1").unwrap();
    s.issuer.add_key(ec.clone(), false);
    let authn = authenticator(s.config());
    let valid = ec.sign(&s.issuer.claims_for("carol").unwrap()).unwrap();
    assert_eq!(auth(&authn, &valid).await.unwrap().username, "oidc:carol");
    let input = valid.rsplit_once('.').unwrap().0;
    let real = URL_SAFE_NO_PAD
        .decode(valid.rsplit_once('.').unwrap().1)
        .unwrap();
    let mut r_zero = real.clone();
    r_zero[..32].fill(0);
    let mut s_zero = real.clone();
    s_zero[32..].fill(0);
    for sig in [
        vec![0u8; 64],
        r_zero,
        s_zero,
        vec![0u8; 1],
        vec![0u8; 72],
        vec![0xff; 64],
    ] {
        let token = format!("{input}.{}", b64(&sig));
        let r = auth(&authn, &token).await;
        assert!(is_invalid(&r), "{sig:?}: {r:?}");
    }
}
