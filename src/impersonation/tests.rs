use http::{HeaderName, HeaderValue};

use super::*;
use crate::principal::AuthMethod;

fn principal(name: &str, groups: &[&str]) -> Principal {
    Principal {
        method: AuthMethod::Oidc,
        issuer: "https://issuer".into(),
        subject: name.into(),
        username: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        expires_at: None,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn config() -> ImpersonationConfig {
    ImpersonationConfig {
        allow: vec![
            AllowRule {
                groups: vec!["sre".into()],
                targets_users: vec!["*".into()],
                targets_groups: vec!["*".into()],
                targets_uids: vec!["uid-carol".into()],
                ..AllowRule::default()
            },
            AllowRule {
                users: vec!["root-admin".into()],
                targets_users: vec!["admin".into()],
                targets_groups: vec!["system:masters".into()],
                ..AllowRule::default()
            },
        ],
        ..ImpersonationConfig::default()
    }
}

#[test]
fn defaults_to_the_principal() {
    let id = decide(&config(), &principal("alice", &["dev"]), &HeaderMap::new()).unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.groups, ["dev"]);
    assert_eq!(id.uid, "");
}

#[test]
fn honours_an_allowed_as() {
    let h = headers(&[
        ("Impersonate-User", "carol"),
        ("Impersonate-Group", "qa"),
        ("impersonate-group", "dev"),
        ("Impersonate-Uid", "uid-carol"),
    ]);
    let id = decide(&config(), &principal("bob", &["sre"]), &h).unwrap();
    assert_eq!(id.user, "carol");
    assert_eq!(id.groups, ["qa", "dev"]);
    assert_eq!(id.uid, "uid-carol");
}

#[test]
fn refuses_a_not_allowed_as_with_the_reason() {
    let h = headers(&[("Impersonate-User", "carol")]);
    let err = decide(&config(), &principal("alice", &["dev"]), &h).unwrap_err();
    assert_eq!(err.to_string(), "alice may not impersonate user \"carol\"");
}

#[test]
fn wildcards_never_match_system_names() {
    let bob = principal("bob", &["sre"]);
    for h in [
        headers(&[
            ("Impersonate-User", "admin"),
            ("Impersonate-Group", "system:masters"),
        ]),
        headers(&[("Impersonate-User", "system:admin")]),
        headers(&[(
            "Impersonate-User",
            "system:serviceaccount:kube-system:default",
        )]),
    ] {
        assert!(
            matches!(
                decide(&config(), &bob, &h),
                Err(ImpersonationError::NotAllowed { .. })
            ),
            "{h:?}"
        );
    }
    // An explicit listing allows it.
    let h = headers(&[
        ("Impersonate-User", "admin"),
        ("Impersonate-Group", "system:masters"),
    ]);
    let id = decide(&config(), &principal("root-admin", &[]), &h).unwrap();
    assert_eq!(id.groups, ["system:masters"]);
}

#[test]
fn refuses_groups_without_a_user_and_client_extras() {
    let bob = principal("bob", &["sre"]);
    for (h, want) in [
        (
            headers(&[("Impersonate-Group", "qa")]),
            ImpersonationError::MissingUser,
        ),
        (
            headers(&[("Impersonate-User", ""), ("Impersonate-Group", "qa")]),
            ImpersonationError::MissingUser,
        ),
        (
            headers(&[("Impersonate-Uid", "1")]),
            ImpersonationError::MissingUser,
        ),
        (
            headers(&[
                ("Impersonate-User", "carol"),
                ("Impersonate-Extra-Scopes", "x"),
            ]),
            ImpersonationError::ExtraNotSupported,
        ),
        (
            headers(&[("Impersonate-User", "carol"), ("Impersonate-User", "dave")]),
            ImpersonationError::InvalidValue("Impersonate-User".into()),
        ),
    ] {
        assert_eq!(decide(&config(), &bob, &h), Err(want), "{h:?}");
    }
}

#[test]
fn refuses_non_ascii_targets() {
    let mut h = HeaderMap::new();
    h.insert(
        "impersonate-user",
        HeaderValue::from_bytes(b"car\xc3\xb6l").unwrap(),
    );
    assert!(matches!(
        decide(&config(), &principal("bob", &["sre"]), &h),
        Err(ImpersonationError::InvalidValue(_))
    ));
}

#[test]
fn config_rejects_unknown_keys_and_bad_domains() {
    let yaml = "allow:\n- users: [bob]\n  targets_users: ['*']\n  extra: 1\n";
    assert!(
        serde_json::from_value::<ImpersonationConfig>(
            serde_json::json!({"allow": [{"users": ["bob"], "targets": ["x"]}]})
        )
        .is_err(),
        "{yaml}"
    );
    let parsed: ImpersonationConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(parsed.extra_domain, "custody.dev");
    let bad = ImpersonationConfig {
        extra_domain: "Custody/Dev".into(),
        ..ImpersonationConfig::default()
    };
    assert!(bad.validate().is_err());
    let nobody = ImpersonationConfig {
        allow: vec![AllowRule::default()],
        ..ImpersonationConfig::default()
    };
    assert!(nobody.validate().is_err());
    assert!(config().validate().is_ok());
}

#[test]
fn a_uid_is_checked_like_the_user_and_groups() {
    let bob = principal("bob", &["sre"]);
    let as_carol = |uid: &str| headers(&[("Impersonate-User", "carol"), ("Impersonate-Uid", uid)]);
    assert_eq!(
        decide(&config(), &bob, &as_carol("uid-carol")).unwrap().uid,
        "uid-carol"
    );
    let err = decide(&config(), &bob, &as_carol("0")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bob may not impersonate user \"carol\" and uid \"0\""
    );
    // root-admin's rule lists no uids: any uid is refused, none is fine.
    let root = principal("root-admin", &[]);
    let admin = headers(&[("Impersonate-User", "admin"), ("Impersonate-Uid", "1")]);
    assert!(decide(&config(), &root, &admin).is_err());
    let admin = headers(&[("Impersonate-User", "admin")]);
    assert_eq!(decide(&config(), &root, &admin).unwrap().user, "admin");
}
