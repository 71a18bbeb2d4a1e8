use http::{HeaderMap, HeaderValue, Method, Version};

use super::*;
use crate::classify::classify;

const KEY: &str = "hTCjFkcxy4DGzFnpyfZh3A==";
const EXEC: &str = "/api/v1/namespaces/default/pods/p/exec";

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn websocket(extra: &[(&str, &str)]) -> HeaderMap {
    let mut lines = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", KEY),
        ("sec-websocket-version", "13"),
    ];
    lines.extend_from_slice(extra);
    headers(&lines)
}

fn spdy(extra: &[(&str, &str)]) -> HeaderMap {
    let mut lines = vec![
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("content-length", "0"),
    ];
    lines.extend_from_slice(extra);
    headers(&lines)
}

fn run(method: &Method, path: &str, h: &HeaderMap) -> Result<UpgradeRequest, UpgradeRefusal> {
    let info = classify(method.as_str(), path, None).unwrap();
    classify_upgrade(method, Version::HTTP_11, h, &info)
}

#[test]
fn websocket_exec_records_the_offered_subprotocols() {
    let h = websocket(&[(
        "sec-websocket-protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )]);
    let request = run(&Method::GET, EXEC, &h).unwrap();
    assert_eq!(request.protocol, UpgradeProtocol::WebSocket);
    assert_eq!(request.subresource, StreamSubresource::Exec);
    assert_eq!(request.offered, ["v5.channel.k8s.io", "v4.channel.k8s.io"]);
    assert_eq!(request.websocket_key.as_deref(), Some(KEY));
}

#[test]
fn spdy_records_each_stream_protocol_line_in_order() {
    let h = spdy(&[
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ("x-stream-protocol-version", "channel.k8s.io"),
    ]);
    let path = "/api/v1/namespaces/default/pods/p/attach";
    let request = run(&Method::POST, path, &h).unwrap();
    assert_eq!(request.protocol, UpgradeProtocol::Spdy);
    assert_eq!(request.subresource, StreamSubresource::Attach);
    assert_eq!(request.offered, ["v4.channel.k8s.io", "channel.k8s.io"]);
    let path = "/api/v1/namespaces/default/pods/p/portforward";
    let h = spdy(&[("x-stream-protocol-version", "portforward.k8s.io")]);
    let request = run(&Method::POST, path, &h).unwrap();
    assert_eq!(request.subresource, StreamSubresource::PortForward);
}

#[test]
fn other_upgrades_are_refused_on_any_path() {
    for token in ["h2c", "websocket, h2c", "TLS/1.0", "SPDY/3"] {
        let h = headers(&[("connection", "Upgrade"), ("upgrade", token)]);
        assert!(
            matches!(
                run(&Method::GET, EXEC, &h),
                Err(UpgradeRefusal::Protocol(_))
            ),
            "{token}"
        );
    }
    let h = headers(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("upgrade", "websocket"),
    ]);
    assert!(matches!(
        run(&Method::GET, EXEC, &h),
        Err(UpgradeRefusal::Protocol(_))
    ));
    let info = classify("CONNECT", EXEC, None).unwrap_or_default();
    assert_eq!(
        classify_upgrade(&Method::CONNECT, Version::HTTP_11, &websocket(&[]), &info),
        Err(UpgradeRefusal::Connect)
    );
}

#[test]
fn upgrades_on_paths_that_do_not_stream_are_refused() {
    for path in [
        "/api/v1/secrets",
        "/api/v1/namespaces/default/secrets/s",
        "/api/v1/namespaces/default/pods/p/log",
        "/api/v1/namespaces/default/pods/p/proxy",
        "/api/v1/namespaces/default/services/s/exec",
        "/apis/apps/v1/namespaces/default/deployments/d/exec",
        "/version",
    ] {
        assert_eq!(
            run(&Method::GET, path, &websocket(&[])),
            Err(UpgradeRefusal::NotAStream),
            "{path}"
        );
    }
}

#[test]
fn malformed_upgrades_are_refused() {
    let no_connection = headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-key", KEY),
        ("sec-websocket-version", "13"),
    ]);
    let cases: Vec<(Method, HeaderMap, UpgradeRefusal)> = vec![
        (Method::GET, no_connection, UpgradeRefusal::ConnectionHeader),
        (
            Method::POST,
            websocket(&[]),
            UpgradeRefusal::Method("POST".into(), "WebSocket"),
        ),
        (
            Method::GET,
            websocket(&[("content-length", "5")]),
            UpgradeRefusal::Body,
        ),
        (
            Method::GET,
            websocket(&[("transfer-encoding", "chunked")]),
            UpgradeRefusal::Body,
        ),
        (
            Method::GET,
            headers(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "short"),
                ("sec-websocket-version", "13"),
            ]),
            UpgradeRefusal::WebSocketKey,
        ),
        (
            Method::GET,
            headers(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", KEY),
                ("sec-websocket-version", "8"),
            ]),
            UpgradeRefusal::WebSocketVersion,
        ),
        (Method::POST, spdy(&[]), UpgradeRefusal::NoStreamProtocol),
        (
            Method::PUT,
            spdy(&[("x-stream-protocol-version", "v4.channel.k8s.io")]),
            UpgradeRefusal::Method("PUT".into(), "SPDY"),
        ),
    ];
    for (method, h, expected) in cases {
        assert_eq!(run(&method, EXEC, &h), Err(expected.clone()), "{expected}");
    }
    let info = classify("GET", EXEC, None).unwrap();
    assert!(matches!(
        classify_upgrade(&Method::GET, Version::HTTP_2, &websocket(&[]), &info),
        Err(UpgradeRefusal::HttpVersion(_))
    ));
}
