//! Upgrade handling against a scripted raw API server and against kube-sim, over real sockets
//! and real TLS: refusals reach the client with nothing pipelined ever reaching the API server
//! (CVE-2018-1002105), invalid 101s are refused, and valid ones are relayed byte-exactly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "stream_upgrade/support.rs"]
mod support;

use std::time::Duration;

use custody::stream::relay::RelayEnd;
use custody::stream::upgrade::{HandshakeOutcome, RefusalReason, UpgradeProtocol};
use futures_util::StreamExt;
use http::StatusCode;
use support::{
    GATEWAY_TOKEN, KEY, Outcome, Script, handshake_against, has_header, read_for, read_head,
    scripted_upstream, send_raw, spawn_gateway, start_sim,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const EXEC: &str = "/api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true&stdout=true";
const SMUGGLED: &str = "GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n";

fn websocket_request(extra: &str) -> String {
    format!(
        "GET {EXEC} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer client-token\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n{extra}"
    )
}

fn spdy_request(extra: &str) -> String {
    format!(
        "POST {EXEC} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: Upgrade\r\n\
         Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: channel.k8s.io\r\n\r\n{extra}"
    )
}

/// 403 with a Status, 500, 200 and 302: the client gets the error (or a 502 for the non-error
/// answers, never the redirect), both sockets close, and the API server received the request
/// head and not one byte more, though the client pipelined a request after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_close_both_sides_and_forward_nothing_after_the_head() {
    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p\" is forbidden","reason":"Forbidden","code":403}"#;
    let answers: [(u16, String); 4] = [
        (
            403,
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{status}",
                status.len()
            ),
        ),
        (
            500,
            "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nboom!\r\n0\r\n\r\n".into(),
        ),
        (
            200,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
        ),
        (
            302,
            "HTTP/1.1 302 Found\r\nLocation: https://evil.example/api/v1/secrets\r\nContent-Length: 0\r\n\r\n".into(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (code, answer) in answers {
        for protocol in [UpgradeProtocol::WebSocket, UpgradeProtocol::Spdy] {
            refusal_case(dir.path(), code, &answer, protocol, status).await;
        }
    }
}

/// One refusal: the client's view, the handshake's view, and the API server's view.
async fn refusal_case(
    dir: &std::path::Path,
    code: u16,
    answer: &str,
    protocol: UpgradeProtocol,
    status: &str,
) {
    let script = Script {
        answer: answer.as_bytes().to_vec(),
        echo: false,
    };
    let (upstream, received) = scripted_upstream(dir, script).await;
    let (addr, mut outcomes) = spawn_gateway(upstream).await;
    let request = match protocol {
        UpgradeProtocol::WebSocket => websocket_request(SMUGGLED),
        UpgradeProtocol::Spdy => spdy_request(SMUGGLED),
    };
    let mut client = send_raw(addr, request.as_bytes()).await;
    let (response, closed) = read_for(&mut client, Duration::from_secs(10)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(
        closed,
        "{code} {protocol:?}: the client connection is closed"
    );
    let Some(Outcome::Refused(refused)) = outcomes.recv().await else {
        panic!("{code} {protocol:?}: the handshake refused");
    };
    assert_eq!(refused.status.as_u16(), code);
    assert_eq!(refused.reason, RefusalReason::Status);
    match code {
        403 => {
            assert!(response.starts_with("HTTP/1.1 403 "), "{response}");
            assert!(response.ends_with(status), "{response}");
            assert_eq!(&refused.body[..], status.as_bytes());
        }
        500 => {
            assert!(response.starts_with("HTTP/1.1 500 "), "{response}");
            assert!(response.ends_with("boom!"), "{response}");
        }
        _ => {
            assert!(response.starts_with("HTTP/1.1 502 "), "{response}");
            assert!(!response.to_ascii_lowercase().contains("location"));
            assert!(!response.contains("evil.example"));
        }
    }
    assert!(has_header(&response, "connection", "close"), "{response}");
    let received = received.await.unwrap();
    assert!(received.closed, "{code}: the upstream connection is closed");
    assert!(
        received.before_answer.is_empty() && received.after_answer.is_empty(),
        "{code} {protocol:?}: bytes after the head reached the API server: {:?} {:?}",
        String::from_utf8_lossy(&received.before_answer),
        String::from_utf8_lossy(&received.after_answer),
    );
    check_request_head(&received.head, protocol);
}

/// The head the API server got: the gateway's credential and identity, the upgrade headers
/// rebuilt, nothing of the smuggled request.
fn check_request_head(head: &str, protocol: UpgradeProtocol) {
    let method = match protocol {
        UpgradeProtocol::WebSocket => "GET",
        UpgradeProtocol::Spdy => "POST",
    };
    assert!(
        head.starts_with(&format!("{method} {EXEC} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(!head.contains("secrets"), "{head}");
    assert!(has_header(
        head,
        "authorization",
        &format!("Bearer {GATEWAY_TOKEN}")
    ));
    assert!(!head.contains("client-token"), "{head}");
    assert!(has_header(head, "impersonate-user", "alice"), "{head}");
    assert!(has_header(head, "impersonate-group", "dev"), "{head}");
    assert!(has_header(head, "connection", "Upgrade"), "{head}");
    match protocol {
        UpgradeProtocol::WebSocket => {
            assert!(has_header(head, "upgrade", "websocket"), "{head}");
            assert!(has_header(head, "sec-websocket-key", KEY), "{head}");
            assert!(has_header(
                head,
                "sec-websocket-protocol",
                "v5.channel.k8s.io"
            ));
        }
        UpgradeProtocol::Spdy => {
            assert!(has_header(head, "upgrade", "SPDY/3.1"), "{head}");
            assert!(has_header(head, "content-length", "0"), "{head}");
            let versions: Vec<&str> = head
                .lines()
                .filter_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
                .collect();
            assert_eq!(versions, ["v4.channel.k8s.io", "channel.k8s.io"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_101_answers_are_refused() {
    let accept = derive_accept_key(KEY.as_bytes());
    let ws = |accept: &str, protocol: &str| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
        )
    };
    let v5 = "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n";
    let cases = [
        (
            UpgradeProtocol::WebSocket,
            ws("d3Jvbmc=", v5),
            RefusalReason::WebSocketAccept,
        ),
        (
            UpgradeProtocol::WebSocket,
            ws(&accept, "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"),
            RefusalReason::Subprotocol("v4.channel.k8s.io".into()),
        ),
        (
            UpgradeProtocol::WebSocket,
            ws(&accept, ""),
            RefusalReason::Subprotocol(String::new()),
        ),
        (
            UpgradeProtocol::WebSocket,
            ws(
                &accept,
                &format!("{v5}Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            ),
            RefusalReason::WebSocketExtensions,
        ),
        (
            UpgradeProtocol::WebSocket,
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n{v5}\r\n"
            ),
            RefusalReason::UpgradeHeader,
        ),
        (
            UpgradeProtocol::Spdy,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n".into(),
            RefusalReason::ConnectionHeader,
        ),
        (
            UpgradeProtocol::Spdy,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v5.channel.k8s.io\r\n\r\n"
                .into(),
            RefusalReason::Subprotocol("v5.channel.k8s.io".into()),
        ),
        (
            UpgradeProtocol::Spdy,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
                .into(),
            RefusalReason::Subprotocol("channel.k8s.io".into()),
        ),
    ];
    for (protocol, answer, reason) in cases {
        match handshake_against(protocol, &answer).await {
            HandshakeOutcome::Refused(refused) => {
                assert_eq!(refused.reason, reason, "{answer}");
                assert!(!refused.passes_through());
                let response = refused.client_response("id");
                assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            }
            HandshakeOutcome::Upgraded(_) => panic!("accepted {answer}"),
        }
    }
    let spdy_ok = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: spdy/3.1\r\n\
                   X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
    let HandshakeOutcome::Upgraded(up) = handshake_against(UpgradeProtocol::Spdy, spdy_ok).await
    else {
        panic!("a valid SPDY 101 is accepted");
    };
    assert_eq!(up.subprotocol, "v4.channel.k8s.io");
}

/// A valid 101 is relayed: the client gets the 101 and the bytes the API server sent with it,
/// the client's early bytes reach the API server only after its 101, and a megabyte goes both
/// ways byte-exactly, then half-closes end the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_101_is_relayed_byte_exactly() {
    let accept = derive_accept_key(KEY.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n\
         SERVER-FIRST"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        answer: answer.into_bytes(),
        echo: true,
    };
    let (upstream, received) = scripted_upstream(dir.path(), script).await;
    let (addr, mut outcomes) = spawn_gateway(upstream).await;
    let mut client = send_raw(addr, websocket_request("EARLY").as_bytes()).await;
    let (head, mut rest) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(has_header(&head, "sec-websocket-accept", &accept), "{head}");
    assert!(has_header(
        &head,
        "sec-websocket-protocol",
        "v5.channel.k8s.io"
    ));
    assert!(has_header(&head, "upgrade", "websocket"), "{head}");
    // The API server's first bytes, then the echo of the client's early bytes.
    while rest.len() < "SERVER-FIRSTEARLY".len() {
        let mut chunk = [0u8; 64];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(rest, b"SERVER-FIRSTEARLY");

    let payload: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (mut rd, mut wr) = client.into_split();
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move {
            wr.write_all(&payload).await.unwrap();
            wr.shutdown().await.unwrap();
        })
    };
    let mut echoed = Vec::new();
    rd.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert!(echoed == payload, "the echo is byte-exact");

    let received = received.await.unwrap();
    assert!(received.before_answer.is_empty(), "nothing before the 101");
    assert_eq!(&received.after_answer[..5], b"EARLY");
    assert!(received.after_answer[5..] == payload[..]);
    let Some(Outcome::Relayed(report)) = outcomes.recv().await else {
        panic!("the stream was relayed");
    };
    assert!(matches!(report.end, RelayEnd::ClientClosed), "{report:?}");
    assert_eq!(report.client_to_upstream, 5 + payload.len() as u64);
    assert_eq!(report.upstream_to_client, 12 + 5 + payload.len() as u64);
}

/// A WebSocket v5 exec through the handshake and the relay to kube-sim, impersonating alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_exec_against_kube_sim() {
    let (sim, _dir, upstream) = start_sim().await;
    let (addr, mut outcomes) = spawn_gateway(upstream).await;
    let url = format!(
        "ws://{addr}/api/v1/namespaces/default/pods/demo/exec?command=echo&command=hi&container=main&stderr=true&stdout=true"
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    let mut stdout = Vec::new();
    let mut status = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
    {
        let Ok(message) = message else { break };
        if !message.is_binary() {
            continue;
        }
        let data = message.into_data();
        match data.first() {
            Some(1) => stdout.extend_from_slice(&data[1..]),
            Some(3) => status.extend_from_slice(&data[1..]),
            _ => {}
        }
    }
    assert_eq!(stdout, b"hi\n");
    assert!(
        String::from_utf8_lossy(&status).contains("Success"),
        "{status:?}"
    );
    drop(ws);
    let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
        .await
        .unwrap();
    assert!(matches!(outcome, Some(Outcome::Relayed(_))), "{outcome:?}");
    sim.shutdown().await;
}

/// A SPDY exec handshake to kube-sim negotiates v4, as a 1.32 kubelet does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_exec_handshake_against_kube_sim() {
    let (sim, _dir, upstream) = start_sim().await;
    let (addr, _outcomes) = spawn_gateway(upstream).await;
    let request = "POST /api/v1/namespaces/default/pods/demo/exec?command=cat&container=main&stdin=true&stdout=true HTTP/1.1\r\n\
         Host: gateway\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: v3.channel.k8s.io\r\nX-Stream-Protocol-Version: v2.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: channel.k8s.io\r\n\r\n";
    let mut client = send_raw(addr, request.as_bytes()).await;
    let (head, _) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        has_header(&head, "x-stream-protocol-version", "v4.channel.k8s.io"),
        "{head}"
    );
    assert!(has_header(&head, "upgrade", "SPDY/3.1"), "{head}");
    drop(client);
    sim.shutdown().await;
}
