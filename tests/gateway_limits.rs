//! What a client without a token can cost the gateway, through the real TLS front door: metrics
//! series, open connections, request head and body sizes, and audit trail volume. Each test
//! configures short `[limits]` to stay fast; time bounds are generous.

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody::config::LimitsConfig;
use env::{Env, Options, ok};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn tls_config(env: &Env) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut env.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A TLS connection to the gateway (HTTP/1.1: no ALPN).
async fn connect(env: &Env) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(env.gateway_addr).await?;
    tokio_rustls::TlsConnector::from(tls_config(env))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
}

/// An HTTP/1.1 client on a new connection.
async fn client(env: &Env) -> SendRequest<Full<Bytes>> {
    let tls = connect(env).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request on `sender`; returns its status and body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> hyper::Result<(StatusCode, String)> {
    sender.ready().await?;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `n` bytes of random letters and digits: a valid cluster name no one configured.
fn random_name(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

fn limits(f: impl FnOnce(&mut LimitsConfig)) -> LimitsConfig {
    let mut limits = LimitsConfig::default();
    f(&mut limits);
    limits
}

/// The value of the series `name` in a Prometheus text exposition.
fn series(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn unknown_cluster_names_add_no_metrics_series() {
    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    // A recorded session that succeeds: no event lost.
    let k = env.kubectl("1.32");
    let hi = ok(&k
        .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
        .unwrap());
    assert_eq!(hi, "hi\n");
    let before = env.metrics.render();
    env.rt.block_on(async {
        let mut sender = client(&env).await;
        for _ in 0..200 {
            let path = format!("/clusters/{}/api", random_name(4096));
            let (status, _) = send(&mut sender, "GET", &path, &[], b"").await.unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        // Unknown methods and verbs, authenticated or not, make no series either.
        for method in ["FOOBAR", "BAZQUUX", "PROPFIND"] {
            for token in ["Bearer alice-token", "Bearer nobody"] {
                let path = format!("/clusters/{}/api", random_name(64));
                let _ = send(&mut sender, method, &path, &[("authorization", token)], b"")
                    .await
                    .unwrap();
                let _ = send(
                    &mut sender,
                    method,
                    "/clusters/sim/api",
                    &[("authorization", token)],
                    b"",
                )
                .await
                .unwrap();
            }
        }
    });
    let after = env.metrics.render();
    eprintln!("/metrics: {} -> {} bytes", before.len(), after.len());
    assert!(
        after.len() < before.len() + 2048,
        "/metrics grew from {} to {} bytes:\n{after}",
        before.len(),
        after.len()
    );
    let unknown = series(
        &after,
        "custody_requests_total{cluster=\"unknown\",verb=\"\",code=\"401\"}",
    );
    assert!(unknown.is_some_and(|n| n >= 200), "{after}");
    for line in after
        .lines()
        .filter(|l| l.starts_with("custody_requests_total"))
    {
        let labels = line.split('}').next().unwrap();
        assert!(labels.len() < 100, "a label took a client's value: {line}");
        assert!(!line.to_lowercase().contains("foobar") && !line.contains("propfind"));
    }
    assert_eq!(
        series(&after, "custody_recording_events_lost_total"),
        Some(0),
        "{after}"
    );
}

/// Reads until the server closes the connection or `within` passes; `true` if it closed.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[test]
fn a_half_sent_request_head_is_closed_at_the_header_timeout() {
    let env = Env::start(Options {
        limits: Some(limits(|l| {
            l.header_read_timeout_seconds = 1;
            l.idle_timeout_seconds = 60;
        })),
        ..Options::default()
    });
    env.rt.block_on(async {
        // Half a head, then nothing.
        let mut tls = connect(&env).await.unwrap();
        tls.write_all(b"GET /clusters/sim/api HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let start = Instant::now();
        assert!(
            closed_within(&mut tls, Duration::from_secs(20)).await,
            "a connection with half a request head was still open after 20 s"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // A head sent a byte every 300 ms never completes within the timeout either.
        let mut tls = connect(&env).await.unwrap();
        let start = Instant::now();
        let slow = async {
            for byte in b"GET /clusters/sim/api HTTP/1.1\r\nHost: 127.0.0.1\r\n" {
                if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), slow)
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // A connection that completes TLS and sends nothing is closed too.
        let mut tls = connect(&env).await.unwrap();
        let start = Instant::now();
        assert!(closed_within(&mut tls, Duration::from_secs(20)).await);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // So is a TCP connection that never starts TLS.
        let mut tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        let start = Instant::now();
        assert!(closed_within(&mut tcp, Duration::from_secs(20)).await);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // A complete request on the same settings is answered.
        let mut sender = client(&env).await;
        let (status, _) = send(
            &mut sender,
            "GET",
            "/clusters/sim/api",
            &[("authorization", "Bearer alice-token")],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK);
    });
}

#[test]
fn refused_unauthenticated_requests_are_audited_truncated_and_rate_limited() {
    let env = Env::start(Options {
        limits: Some(limits(|l| {
            l.unauthenticated_audit_per_second = 1;
            l.unauthenticated_audit_burst = 5;
        })),
        ..Options::default()
    });
    let long_path = format!("/clusters/sim/api/v1/namespaces/{}", "n".repeat(4096));
    let agent = "a".repeat(1024);
    let session = "s".repeat(1024);
    let command = "c".repeat(1024);
    let flood = 60;
    let start = Instant::now();
    env.rt.block_on(async {
        let mut sender = client(&env).await;
        for _ in 0..flood {
            let (status, _) = send(
                &mut sender,
                "GET",
                &long_path,
                &[
                    ("user-agent", &agent),
                    ("kubectl-session", &session),
                    ("kubectl-command", &command),
                ],
                b"",
            )
            .await
            .unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    });
    let elapsed = start.elapsed().as_secs();
    let anonymous: Vec<serde_json::Value> = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["initiator"].is_null())
        .collect();
    let written = anonymous.len() as u64;
    let bytes: usize = anonymous.iter().map(|e| e.to_string().len()).sum();
    eprintln!(
        "{flood} refusals in {elapsed} s: {written} audit lines, {} bytes each on average",
        bytes / anonymous.len().max(1)
    );
    assert!(
        (5..=5 + elapsed + 1).contains(&written),
        "{written} audit lines for {flood} refusals in {elapsed} s at 1/s, burst 5"
    );
    assert_eq!(env.metrics.audit_dropped(), flood - written);
    assert!(env.metrics.render().contains(&format!(
        "custody_audit_dropped_total{{reason=\"rate_limited\"}} {}",
        flood - written
    )));
    for event in &anonymous {
        let path = event["request"]["path"].as_str().unwrap();
        assert!(
            path.len() <= 1024 + 32 && path.ends_with("bytes]"),
            "{path}"
        );
        for field in ["user_agent", "kubectl_session", "kubectl_command"] {
            let value = event[field].as_str().unwrap();
            assert!(
                value.len() <= 256 + 32 && value.ends_with("bytes]"),
                "{field}: {value}"
            );
        }
    }

    // Authenticated requests are all audited, whole, whatever the rate of refusals.
    env.rt.block_on(async {
        let mut sender = client(&env).await;
        for _ in 0..10 {
            let (status, _) = send(
                &mut sender,
                "GET",
                &long_path,
                &[
                    ("authorization", "Bearer alice-token"),
                    ("user-agent", &agent),
                ],
                b"",
            )
            .await
            .unwrap();
            assert!(status.is_client_error(), "{status}");
        }
    });
    let alice: Vec<serde_json::Value> = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["initiator"]["username"] == "alice" && e["stage"] == "decision")
        .collect();
    assert_eq!(alice.len(), 10);
    assert!(alice.iter().all(|e| e["user_agent"] == agent.as_str()));
}

#[test]
fn a_listener_closes_connections_beyond_its_cap() {
    let env = Env::start(Options {
        limits: Some(limits(|l| l.max_connections = 2)),
        ..Options::default()
    });
    env.rt.block_on(async {
        let auth = [("authorization", "Bearer alice-token")];
        let mut first = client(&env).await;
        let mut second = client(&env).await;
        for sender in [&mut first, &mut second] {
            let (status, _) = send(sender, "GET", "/clusters/sim/api", &auth, b"")
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
        }
        // The third is accepted and closed at once: its TLS handshake fails.
        let third = tokio::time::timeout(Duration::from_secs(10), connect(&env))
            .await
            .expect("the third connection neither failed nor succeeded within 10 s");
        assert!(
            third.is_err(),
            "a third connection was served with a cap of 2"
        );
        let text = env.metrics.render();
        assert!(
            series(
                &text,
                "custody_connections_refused_total{listener=\"gateway\"}"
            )
            .is_some_and(|n| n >= 1),
            "{text}"
        );
        assert_eq!(
            series(&text, "custody_connections_open{listener=\"gateway\"}"),
            Some(2),
            "{text}"
        );
        // The open ones are still served.
        let (status, _) = send(&mut first, "GET", "/clusters/sim/api", &auth, b"")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        // Once one closes, a new connection is served.
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(tls) = connect(&env).await {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                if let Ok((status, _)) =
                    send(&mut sender, "GET", "/clusters/sim/api", &auth, b"").await
                {
                    assert_eq!(status, StatusCode::OK);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no slot came free after a connection closed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn oversized_heads_get_431_and_oversized_bodies_413() {
    let env = Env::start(Options {
        limits: Some(limits(|l| {
            l.max_header_bytes = 16 * 1024;
            l.max_body_bytes = 4096;
        })),
        ..Options::default()
    });
    env.rt.block_on(async {
        let big = "x".repeat(32 * 1024);
        let mut sender = client(&env).await;
        let (status, _) = send(
            &mut sender,
            "GET",
            "/clusters/sim/api",
            &[("x-big", &big)],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // HTTP/2: the header list is refused (431 from the server, or the client's own refusal
        // to send more than the server's SETTINGS_MAX_HEADER_LIST_SIZE).
        let (mut h2, _conn) = h2_client(&env).await;
        let request = Request::get("/clusters/sim/api")
            .header("x-big", &big)
            .body(Full::new(Bytes::new()))
            .unwrap();
        match h2.send_request(request).await {
            Ok(response) => assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ),
            Err(e) => eprintln!("HTTP/2 client refused the header list: {e}"),
        }

        let path = "/clusters/sim/api/v1/namespaces/default/configmaps";
        let headers = [
            ("authorization", "Bearer alice-token"),
            ("content-type", "application/json"),
        ];
        let configmap = |name: &str, pad: usize| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"pad": "p".repeat(pad)},
            })
            .to_string()
        };
        let mut sender = client(&env).await;
        let (status, body) = send(
            &mut sender,
            "POST",
            path,
            &headers,
            configmap("big", 8192).as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        let status_object: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status_object["kind"], "Status");
        assert_eq!(status_object["code"], 413);

        // Under the limit, the same request goes through.
        let mut sender = client(&env).await;
        let (status, body) = send(
            &mut sender,
            "POST",
            path,
            &headers,
            configmap("small", 100).as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
    assert!(
        series(
            &env.metrics.render(),
            "custody_requests_body_too_large_total"
        )
        .is_some_and(|n| n >= 1)
    );
    // The cluster never saw the large one.
    assert!(
        !env.sim_audit()
            .iter()
            .any(|e| e["objectRef"]["name"] == "big"),
    );
}

#[test]
fn the_admin_listener_is_bounded_too() {
    let env = Env::start(Options::default());
    let limits = limits(|l| {
        l.header_read_timeout_seconds = 5;
        l.admin_max_connections = 1;
    });
    let listener = env
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    env.rt.spawn(custody::server::serve_admin(
        listener,
        custody::server::Health::new(),
        env.metrics.clone(),
        custody::server::ListenerLimits::admin(&limits),
        std::future::pending(),
    ));
    env.rt.block_on(async {
        // Half a head holds the only slot...
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let start = Instant::now();
        // ...so a second connection is closed at once, long before the header timeout.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut second, Duration::from_secs(3)).await);
        // The first is closed at the header timeout.
        assert!(closed_within(&mut first, Duration::from_secs(20)).await);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
        // Then the slot is free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text).await;
            if text.starts_with("HTTP/1.1 200") {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "the admin listener never served again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            series(
                &text,
                "custody_connections_refused_total{listener=\"admin\"}"
            )
            .is_some_and(|n| n >= 1),
            "{text}"
        );
    });
}

/// An HTTP/2 client on a new connection (ALPN `h2`), and the connection's task.
async fn h2_client(
    env: &Env,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let mut config = (*tls_config(env)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

#[test]
fn long_responses_outlive_the_timeouts_and_idle_connections_close() {
    let env = Env::start(Options {
        limits: Some(limits(|l| {
            l.header_read_timeout_seconds = 1;
            l.idle_timeout_seconds = 2;
        })),
        ..Options::default()
    });
    let watch = "/clusters/sim/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=30";
    env.rt.block_on(async {
        let auth = ("authorization", "Bearer alice-token");
        // HTTP/1.1: a watch is in flight for longer than both timeouts.
        let mut sender = client(&env).await;
        let request = Request::get(watch)
            .header("host", "127.0.0.1")
            .header(auth.0, auth.1)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let held = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        assert!(held.is_err(), "the HTTP/1.1 watch ended early: {held:?}");

        // HTTP/2: the same, then the connection, idle, is closed.
        let (mut sender, conn) = h2_client(&env).await;
        let request = Request::get(watch)
            .header(auth.0, auth.1)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let held = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        assert!(held.is_err(), "the HTTP/2 watch ended early: {held:?}");
        drop(body);
        let start = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
        assert!(
            ended.is_ok(),
            "an idle HTTP/2 connection was open after 20 s"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // An HTTP/2 connection that never sends a request is closed at the header timeout.
        let (_sender, conn) = h2_client(&env).await;
        let start = Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_secs(20), conn)
                .await
                .is_ok()
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    });
}
