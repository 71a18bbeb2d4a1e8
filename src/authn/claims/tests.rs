//! Claim validation cases: the happy paths and section D cases 28, 29 and 31 of the security
//! test list, on hand-made claim sets.

use serde_json::{Value, json};

use super::*;

const ISS: &str = "https://idp.example";
const NOW: i64 = 1_800_000_000;

fn config() -> OidcIssuerConfig {
    OidcIssuerConfig::new(ISS, "custody")
}

fn claims(extra: &Value) -> Map<String, Value> {
    let mut base = json!({
        "iss": ISS, "sub": "alice", "aud": "custody", "exp": NOW + 600, "iat": NOW,
        "email": "alice@example.com", "email_verified": true, "groups": ["dev", "ops"],
    });
    for (k, v) in extra.as_object().unwrap() {
        if v == &json!("<remove>") {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base.as_object().unwrap().clone()
}

fn check(extra: &Value) -> Result<Identity, AuthFailure> {
    validate(&claims(extra), &config(), NOW)
}

fn is_invalid(r: &Result<Identity, AuthFailure>) -> bool {
    matches!(r, Err(AuthFailure::Invalid(_)))
}

fn is_refused(r: &Result<Identity, AuthFailure>) -> bool {
    matches!(r, Err(AuthFailure::Refused(_)))
}

#[test]
fn happy_path_maps_username_and_groups_with_prefixes() {
    let id = check(&json!({})).unwrap();
    assert_eq!(
        id,
        Identity {
            subject: "alice".into(),
            username: "oidc:alice".into(),
            groups: vec!["oidc:dev".into(), "oidc:ops".into()],
            expires_at: NOW + 600,
        }
    );
}

#[test]
fn audience_may_be_a_string_or_an_array_containing_ours() {
    assert!(check(&json!({"aud": "custody"})).is_ok());
    assert!(check(&json!({"aud": ["other", "custody"]})).is_ok());
    let mut cfg = config();
    cfg.audiences = vec!["gateway".into()];
    let ok = validate(&claims(&json!({"aud": ["gateway"]})), &cfg, NOW);
    assert!(ok.is_ok());
    // With explicit audiences, the client id alone is no longer accepted.
    assert!(is_invalid(&validate(&claims(&json!({})), &cfg, NOW)));
}

#[test]
fn groups_as_a_string_or_an_array_map_identically() {
    let single = check(&json!({"groups": "dev"})).unwrap();
    let array = check(&json!({"groups": ["dev"]})).unwrap();
    assert_eq!(single.groups, array.groups);
    assert_eq!(single.groups, ["oidc:dev"]);
    assert!(
        check(&json!({"groups": "<remove>"}))
            .unwrap()
            .groups
            .is_empty()
    );
    assert!(check(&json!({"groups": null})).unwrap().groups.is_empty());
    assert_eq!(
        check(&json!({"groups": ["a", "a", ""]})).unwrap().groups,
        ["oidc:a"]
    );
    assert!(is_invalid(&check(&json!({"groups": [1]}))));
    assert!(is_invalid(&check(&json!({"groups": {"a": 1}}))));
}

#[test]
fn prefixes_and_claims_are_configurable() {
    let mut cfg = config();
    cfg.username_claim = "email".into();
    cfg.username_prefix = String::new();
    cfg.groups_claim = "roles".into();
    cfg.groups_prefix = "idp:".into();
    let id = validate(&claims(&json!({"roles": ["admin"]})), &cfg, NOW).unwrap();
    assert_eq!(id.username, "alice@example.com");
    assert_eq!(id.groups, ["idp:admin"]);
}

// Case 28: iss variants and aud problems.
#[test]
fn case_28_issuer_must_match_exactly_and_audience_must_be_ours() {
    for iss in [
        "https://idp.example/",
        "http://idp.example",
        "https://IDP.example",
        "https://other.example",
        "",
    ] {
        assert!(is_invalid(&check(&json!({"iss": iss}))), "{iss}");
    }
    assert!(is_invalid(&check(&json!({"iss": "<remove>"}))));
    assert!(is_invalid(&check(&json!({"iss": ["https://idp.example"]}))));
    assert!(is_invalid(&check(&json!({"aud": "<remove>"}))));
    assert!(is_invalid(&check(&json!({"aud": "another-client"}))));
    assert!(is_invalid(&check(&json!({"aud": ["a", "b"]}))));
    assert!(is_invalid(&check(&json!({"aud": []}))));
    assert!(is_invalid(&check(&json!({"aud": ["custody", 5]}))));
    assert!(is_invalid(&check(&json!({"aud": null}))));
}

// Case 29: exp/nbf types and values; leeway.
#[test]
fn case_29_time_claims_must_be_integers_and_in_range() {
    assert!(is_invalid(&check(&json!({"exp": "<remove>"}))));
    assert!(is_invalid(&check(&json!({"exp": "99999999999"}))));
    assert!(is_invalid(&check(&json!({"exp": 99_999_999_999.5}))));
    assert!(is_invalid(&check(&json!({"exp": 1.0e11}))));
    assert!(is_invalid(&check(&json!({"exp": null}))));
    assert!(is_invalid(&check(&json!({"exp": -1}))));
    assert!(is_invalid(&check(&json!({"exp": true}))));
    assert!(is_invalid(&check(&json!({"exp": u64::MAX}))));
    assert!(is_invalid(&check(&json!({"nbf": "0"}))));
    assert!(is_invalid(&check(&json!({"nbf": NOW + 31}))));
    assert!(check(&json!({"nbf": NOW + 30})).is_ok());
    assert!(is_invalid(&check(&json!({"iat": "now"}))));
    assert!(is_invalid(&check(&json!({"iat": 1.5}))));
}

#[test]
fn case_29_expired_30s_ago_is_accepted_only_within_leeway() {
    assert!(check(&json!({"exp": NOW - 30})).is_ok());
    assert_eq!(check(&json!({"exp": NOW - 31})), Err(AuthFailure::Expired));
    let mut cfg = config();
    cfg.leeway_seconds = 0;
    let r = validate(&claims(&json!({"exp": NOW - 30})), &cfg, NOW);
    assert_eq!(r, Err(AuthFailure::Expired));
    let r = validate(&claims(&json!({"exp": NOW})), &cfg, NOW);
    assert!(r.is_ok());
}

// Case 31: email_verified, system: names, empty username.
#[test]
fn case_31_email_usernames_need_a_verified_boolean() {
    let mut cfg = config();
    cfg.username_claim = "email".into();
    let run = |extra: Value, cfg: &OidcIssuerConfig| validate(&claims(&extra), cfg, NOW);
    assert!(run(json!({}), &cfg).is_ok());
    for bad in [
        json!(false),
        json!("false"),
        json!("true"),
        json!(1),
        json!(null),
    ] {
        assert!(
            is_refused(&run(json!({"email_verified": bad}), &cfg)),
            "{bad}"
        );
    }
    assert!(is_refused(&run(
        json!({"email_verified": "<remove>"}),
        &cfg
    )));
    cfg.allow_missing_email_verified = true;
    assert!(run(json!({"email_verified": "<remove>"}), &cfg).is_ok());
    assert!(is_refused(&run(json!({"email_verified": false}), &cfg)));
    // With a non-email username claim, email_verified does not matter.
    assert!(check(&json!({"email_verified": false})).is_ok());
}

#[test]
fn case_31_system_names_and_empty_usernames_are_refused() {
    assert!(is_refused(&check(&json!({"sub": "system:admin"}))));
    assert!(is_refused(&check(
        &json!({"groups": ["dev", "system:masters"]})
    )));
    assert!(is_refused(&check(&json!({"groups": "system:masters"}))));
    let mut cfg = config();
    cfg.username_prefix = String::new();
    cfg.groups_prefix = "sys".into();
    // `sys` + `tem:masters` only becomes reserved after the prefix is added.
    let r = validate(&claims(&json!({"groups": ["tem:masters"]})), &cfg, NOW);
    assert!(is_refused(&r));
    cfg.username_prefix = "sys".into();
    let r = validate(&claims(&json!({"sub": "tem:kube-proxy"})), &cfg, NOW);
    assert!(is_refused(&r));
    // Empty username: `sub` is required, and an empty username claim is refused.
    assert!(is_invalid(&check(&json!({"sub": ""}))));
    let mut cfg = config();
    cfg.username_claim = "preferred_username".into();
    let r = validate(&claims(&json!({"preferred_username": ""})), &cfg, NOW);
    assert!(is_refused(&r));
    let r = validate(&claims(&json!({})), &cfg, NOW);
    assert!(is_refused(&r));
    let r = validate(&claims(&json!({"preferred_username": 7})), &cfg, NOW);
    assert!(is_invalid(&r));
    assert!(is_refused(&check(
        &json!({"sub": "alice\r\nImpersonate-User: admin"})
    )));
}
