//! Hostile and failing cases through the real TLS front door: forged identity headers, refused
//! requests, an upstream with the wrong CA, and an audit trail that cannot be written.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use env::{Env, Options};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Sends one HTTP/1.1 request with exactly these headers and returns status, headers and body.
fn raw(
    env: &Env,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    env.rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut env.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(env.gateway_addr)
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .header("host", "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

const PODS: &str = "/clusters/sim/api/v1/namespaces/default/pods";

#[test]
fn forged_identity_headers_never_reach_the_cluster() {
    let env = Env::start(Options::default());
    let (status, headers, body) = raw(
        &env,
        "GET",
        PODS,
        &[
            ("Authorization", "Bearer alice-token"),
            ("Connection", "Impersonate-User, Audit-ID"),
            ("Impersonate_User", "admin"),
            ("impersonate_group", "system:masters"),
            ("X-Remote-User", "admin"),
            ("X-Remote-Group", "system:masters"),
            ("X-Remote-Extra-Scopes", "all"),
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Real-Ip", "10.8.8.8"),
            ("Forwarded", "for=10.7.7.7"),
            ("Audit-ID", "forged-id"),
            ("Cookie", "session=1"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let id = headers["audit-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "forged-id");
    let sim = env.sim_audit();
    let events: Vec<_> = sim.iter().filter(|e| e["auditID"] == id.as_str()).collect();
    assert!(!events.is_empty(), "{sim:#?}");
    for e in events {
        assert_eq!(
            e["user"]["username"],
            "system:serviceaccount:custody:gateway"
        );
        assert_eq!(e["impersonatedUser"]["username"], "alice");
        assert_eq!(
            e["impersonatedUser"]["groups"],
            serde_json::json!(["dev", "system:authenticated"])
        );
        assert!(
            e["impersonatedUser"].get("uid").is_none_or(|u| u == ""),
            "{e}"
        );
        let extra = e["impersonatedUser"]["extra"].as_object().unwrap();
        let mut keys: Vec<_> = extra.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "custody.dev/client-address",
                "custody.dev/initiator",
                "custody.dev/request-id"
            ]
        );
        assert_eq!(e["sourceIPs"], serde_json::json!(["127.0.0.1"]), "{e}");
    }
    assert!(!sim.iter().any(|e| e["auditID"] == "forged-id"));
    let custody = env.custody_audit();
    let ours = custody.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert!(
        ours["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[test]
fn client_impersonation_headers_are_refused_unless_allowed() {
    let env = Env::start(Options::default());
    for (token, extra, want) in [
        ("alice-token", ("Impersonate-User", "carol"), 403),
        ("alice-token", ("impersonate-user", "system:admin"), 403),
        ("alice-token", ("Impersonate-Uid", "0"), 403),
        ("alice-token", ("IMPERSONATE-GROUP", "system:masters"), 403),
        ("alice-token", ("Impersonate-Extra-Scopes", "all"), 403),
        (
            "bob-token",
            ("Impersonate-Extra-custody.dev%2Finitiator", "mallory"),
            403,
        ),
        ("bob-token", ("Impersonate-Group", "system:masters"), 403),
        // bob may impersonate carol, but only with the uid his rule lists.
        ("bob-token", ("Impersonate-Uid", "0"), 403),
    ] {
        let auth = format!("Bearer {token}");
        let as_carol = ("Impersonate-User", "carol");
        let mut sent = vec![("Authorization", auth.as_str()), extra];
        if token == "bob-token" && extra.0 == "Impersonate-Uid" {
            sent.push(as_carol);
        }
        let (status, headers, body) = raw(&env, "GET", PODS, &sent);
        assert_eq!(status, want, "{extra:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Forbidden");
        let id = headers["audit-id"].to_str().unwrap();
        assert!(
            !env.sim_audit().iter().any(|e| e["auditID"] == id),
            "{extra:?} reached kube-sim"
        );
    }
    // Allowed: bob as carol with a uid; kube-sim sees carol, and bob as the initiator.
    let (status, headers, body) = raw(
        &env,
        "GET",
        PODS,
        &[
            ("Authorization", "Bearer bob-token"),
            ("Impersonate-User", "carol"),
            ("Impersonate-Uid", "uid-c"),
        ],
    );
    assert_eq!(
        status, 403,
        "carol has no RBAC in kube-sim, but the request reached it: {body}"
    );
    let id = headers["audit-id"].to_str().unwrap();
    let sim = env.sim_audit();
    let e = sim.iter().find(|e| e["auditID"] == id).unwrap();
    assert_eq!(e["impersonatedUser"]["username"], "carol");
    assert_eq!(e["impersonatedUser"]["uid"], "uid-c");
    assert_eq!(
        e["impersonatedUser"]["extra"]["custody.dev/initiator"],
        serde_json::json!(["bob"])
    );
    let denied = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["decision"] == "deny")
        .count();
    assert_eq!(denied, 8);
}

#[test]
fn refusals_are_kubernetes_statuses_and_audited() {
    let env = Env::start(Options::default());
    for (path, headers, want) in [
        (PODS, vec![], 401),
        (PODS, vec![("Authorization", "Bearer nope")], 401),
        (
            "/clusters/other/api/v1/pods",
            vec![("Authorization", "Bearer alice-token")],
            404,
        ),
        (
            "/api/v1/pods",
            vec![("Authorization", "Bearer alice-token")],
            404,
        ),
        (
            "/clusters/sim/api/v1/namespaces/a%2Fb/pods",
            vec![("Authorization", "Bearer alice-token")],
            400,
        ),
        (
            "/clusters/sim/api/v1/namespaces/default/../kube-system/secrets",
            vec![("Authorization", "Bearer alice-token")],
            400,
        ),
        (
            "/clusters/sim/api//v1/pods",
            vec![("Authorization", "Bearer alice-token")],
            400,
        ),
        (
            "/clusters/sim/api/v1/namespaces/default/pods/demo/exec?command=sh",
            vec![
                ("Authorization", "Bearer alice-token"),
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
            ],
            501,
        ),
    ] {
        let (status, _, body) = raw(&env, "GET", path, &headers);
        assert_eq!(status, want, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Status", "{body}");
        assert_eq!(v["code"], want);
    }
    let (_, _, body) = raw(&env, "GET", PODS, &[]);
    assert!(body.contains("custody login"), "{body}");
    let custody = env.custody_audit();
    assert_eq!(custody.len(), 9);
    assert!(custody.iter().all(|e| e["decision"] == "deny"));
    assert!(env.sim_audit().is_empty(), "nothing was forwarded");
    let metrics = env.metrics.render();
    assert!(
        metrics.contains("custody_authn_failures_total 3"),
        "{metrics}"
    );
}

#[test]
fn an_upstream_with_the_wrong_ca_is_refused_and_audited() {
    let env = Env::start(Options {
        wrong_ca: true,
        ..Options::default()
    });
    let (status, headers, body) = raw(
        &env,
        "GET",
        PODS,
        &[("Authorization", "Bearer alice-token")],
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("could not reach cluster"), "{body}");
    let id = headers["audit-id"].to_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(200));
    let custody = env.custody_audit();
    let done = custody
        .iter()
        .find(|e| e["id"] == id.as_str() && e["stage"] == "complete")
        .unwrap();
    assert_eq!(done["status_code"], 502);
    assert!(env.sim_audit().is_empty());
    assert!(
        env.metrics
            .render()
            .contains("custody_upstream_failures_total 1")
    );
}

#[test]
fn strict_audit_that_cannot_be_written_refuses_with_503_and_forwards_nothing() {
    let env = Env::start(Options {
        jsonl: Some("/dev/full".into()),
        ..Options::default()
    });
    let (status, _, body) = raw(
        &env,
        "GET",
        PODS,
        &[("Authorization", "Bearer alice-token")],
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit trail cannot be written"), "{body}");
    assert!(
        env.sim_audit().is_empty(),
        "kube-sim saw a request that was not audited"
    );
    assert!(env.metrics.audit_write_failures() >= 1);
}

#[test]
fn best_effort_audit_forwards_despite_a_failing_trail() {
    let env = Env::start(Options {
        jsonl: Some("/dev/full".into()),
        best_effort: true,
        ..Options::default()
    });
    let (status, _, body) = raw(
        &env,
        "GET",
        PODS,
        &[("Authorization", "Bearer alice-token")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.sim_audit().len(), 1);
    assert!(env.metrics.audit_write_failures() >= 1);
}
