use super::*;

fn extras() -> GatewayExtras {
    GatewayExtras {
        domain: "custody.dev".into(),
        initiator: "alice".into(),
        request_id: "3f2a".into(),
        client_address: "127.0.0.1:5000".into(),
    }
}

fn alice() -> EffectiveIdentity {
    EffectiveIdentity {
        user: "alice".into(),
        groups: vec!["dev".into(), "ops".into()],
        uid: String::new(),
    }
}

fn client(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn strips_every_credential_identity_and_hop_by_hop_class_in_any_case() {
    let hostile = [
        ("Authorization", "Bearer stolen"),
        ("AUTHORIZATION", "Basic x"),
        ("Proxy-Authorization", "Basic y"),
        ("cookie", "session=1"),
        ("Impersonate-User", "admin"),
        ("impersonate-user", "admin2"),
        ("IMPERSONATE-GROUP", "system:masters"),
        ("Impersonate-Group", "sre"),
        ("Impersonate-Uid", "0"),
        ("Impersonate-Extra-Scopes", "all"),
        ("impersonate-extra-custody.dev%2Finitiator", "mallory"),
        ("Impersonate_User", "admin"),
        ("impersonate_group", "system:masters"),
        ("IMPERSONATE_EXTRA_x", "y"),
        ("X-Remote-User", "admin"),
        ("x-remote-group", "system:masters"),
        ("X-Remote-Extra-Scopes", "all"),
        ("X_Remote_User", "admin"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Host", "evil"),
        ("X-Forwarded-Uri", "/api/v1/secrets"),
        ("x_forwarded_for", "10.0.0.2"),
        ("Forwarded", "for=10.0.0.3"),
        ("X-Real-Ip", "10.0.0.4"),
        ("Audit-ID", "forged"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "x"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Host", "gateway:8443"),
    ];
    let mut pairs = hostile.to_vec();
    pairs.extend([
        ("Accept", "application/json"),
        ("User-Agent", "kubectl/v1.32"),
        ("Kubectl-Session", "s1"),
        ("Content-Encoding", "gzip"),
    ]);
    let out = upstream_request_headers(&client(&pairs), &alice(), &extras()).unwrap();
    for (name, value) in hostile {
        let lower = name.to_ascii_lowercase();
        let sent: Vec<_> = out.get_all(lower.as_str()).iter().collect();
        assert!(
            !sent.iter().any(|v| *v == value),
            "{name}: {value} was forwarded"
        );
    }
    for gone in [
        "authorization",
        "cookie",
        "impersonate-uid",
        "impersonate-extra-scopes",
        "impersonate_user",
        "x-remote-user",
        "x-forwarded-for",
        "x_forwarded_for",
        "forwarded",
        "x-real-ip",
        "connection",
        "upgrade",
        "host",
        "transfer-encoding",
    ] {
        assert!(out.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(out.get("impersonate-user").unwrap(), "alice");
    assert_eq!(out.get_all("impersonate-user").iter().count(), 1);
    let groups: Vec<_> = out.get_all("impersonate-group").iter().collect();
    assert_eq!(groups, ["dev", "ops"]);
    assert_eq!(out.get_all("audit-id").iter().collect::<Vec<_>>(), ["3f2a"]);
    assert_eq!(
        out.get_all("impersonate-extra-custody.dev%2Finitiator")
            .iter()
            .collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(
        out.get("impersonate-extra-custody.dev%2Frequest-id")
            .unwrap(),
        "3f2a"
    );
    assert_eq!(
        out.get("impersonate-extra-custody.dev%2Fclient-address")
            .unwrap(),
        "127.0.0.1:5000"
    );
    assert_eq!(out.get("accept").unwrap(), "application/json");
    assert_eq!(out.get("kubectl-session").unwrap(), "s1");
    assert_eq!(out.get("content-encoding").unwrap(), "gzip");
    let imp: Vec<_> = out
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate"))
        .map(HeaderName::as_str)
        .collect();
    assert_eq!(imp.len(), 5, "{imp:?}");
}

#[test]
fn connection_cannot_name_the_gateways_headers_away() {
    let h = client(&[
        ("Connection", "Impersonate-User, Audit-ID"),
        ("connection", "X-Custom"),
        ("X-Custom", "1"),
        ("X-Other", "2"),
    ]);
    let out = upstream_request_headers(&h, &alice(), &extras()).unwrap();
    assert_eq!(out.get("impersonate-user").unwrap(), "alice");
    assert_eq!(out.get("audit-id").unwrap(), "3f2a");
    assert!(out.get("connection").is_none());
    assert!(out.get("x-custom").is_none());
    assert_eq!(out.get("x-other").unwrap(), "2");
}

#[test]
fn sends_the_uid_when_set() {
    let mut id = alice();
    id.uid = "uid-1".into();
    let out = upstream_request_headers(&HeaderMap::new(), &id, &extras()).unwrap();
    assert_eq!(out.get("impersonate-uid").unwrap(), "uid-1");
}

#[test]
fn refuses_unsafe_identity_values() {
    for bad in ["ali\rce", "ali\nce", "ali\0ce", "alicé", "a\tb", "x\u{7f}"] {
        let mut id = alice();
        id.user = bad.into();
        assert_eq!(
            upstream_request_headers(&HeaderMap::new(), &id, &extras()),
            Err(HeaderError::UnsafeValue("impersonated user")),
            "{bad:?}"
        );
        let mut id = alice();
        id.groups.push(bad.into());
        assert!(upstream_request_headers(&HeaderMap::new(), &id, &extras()).is_err());
        let mut ex = extras();
        ex.initiator = bad.into();
        assert_eq!(
            upstream_request_headers(&HeaderMap::new(), &alice(), &ex),
            Err(HeaderError::UnsafeValue("initiator"))
        );
    }
}

#[test]
fn encodes_extra_keys_like_client_go() {
    let name = |d, k| extra_header_name(d, k).unwrap();
    assert_eq!(
        name("custody.dev", "initiator").as_str(),
        "impersonate-extra-custody.dev%2finitiator"
    );
    assert_eq!(
        name("Example.COM", "Scopes").as_str(),
        "impersonate-extra-example.com%2fscopes"
    );
    assert_eq!(
        name("custody.dev", "a b%c").as_str(),
        "impersonate-extra-custody.dev%2fa%20b%25c"
    );
    assert_eq!(
        name("custody.dev", "ключ").as_str(),
        "impersonate-extra-custody.dev%2f%d0%ba%d0%bb%d1%8e%d1%87"
    );
}

#[test]
fn cleans_hop_by_hop_response_headers() {
    let mut h = client(&[
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Audit-Id", "3f2a"),
    ]);
    clean_response_headers(&mut h);
    let mut names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["audit-id", "content-encoding", "content-type"]);
}

#[test]
fn stripped_classes() {
    for name in [
        "impersonate-anything",
        "x-remote-x",
        "x-forwarded-proto",
        "x_real_ip",
    ] {
        assert!(
            is_stripped(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
    for name in [
        "accept",
        "content-type",
        "kubectl-command",
        "user-agent",
        "x-impersonate",
    ] {
        assert!(
            !is_stripped(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
}
