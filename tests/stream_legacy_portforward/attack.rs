//! The legacy WebSocket port-forward of issue 15, as an attacker runs it: a raw WebSocket client
//! (no kubectl, no kube-rs) asks custody for `v4.channel.k8s.io` with `ports` given several times
//! and as comma lists, then talks on every channel pair the kubelet opens.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helper: a failed step should fail the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use custody_recorder::model::EventKind;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What one forwarded port carried.
#[derive(Debug, Default, Clone)]
pub struct Forwarded {
    /// The port the server named in the first two bytes of the data channel.
    pub port: Option<u16>,
    /// What the client sent on the data channel.
    pub sent: Vec<u8>,
    /// What came back on the data channel, after the port prefix.
    pub received: Vec<u8>,
    /// What came back on the error channel, after the port prefix.
    pub errors: Vec<u8>,
}

/// How a session went.
#[derive(Debug)]
pub enum Outcome {
    /// The upgrade was refused with this status and body.
    Refused { status: u16, body: String },
    /// The session ran; one entry per channel pair the client used.
    Ran {
        forwards: Vec<Forwarded>,
        /// Whether the server closed the WebSocket before every echo came back.
        cut: bool,
    },
}

/// A TLS connection to `addr`, trusting `ca_pem`.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// The bytes sent on the data channel of the `index`-th pair.
pub fn payload(index: usize) -> Vec<u8> {
    let mut bytes = format!("connection {index} through channel {}: ", 2 * index).into_bytes();
    bytes.extend((0..4000usize).map(|i| u8::try_from((i * 7 + index * 13) % 256).unwrap()));
    bytes
}

/// Opens `path_and_query` (the pod's `portforward`, cluster prefix included) as alice over
/// `v4.channel.k8s.io`, sends [`payload`]`(i)` on the data channel of each of `pairs` channel
/// pairs (channel `2i`), plus `extra` raw channel messages, and reads until every data channel
/// has its echo back or the server closes (with `extra` messages: until the server closes, or
/// 20 s pass).
pub async fn run(
    addr: SocketAddr,
    ca_pem: &str,
    path_and_query: &str,
    token: &str,
    pairs: usize,
    extra: &[(u8, &[u8])],
) -> Outcome {
    let tls = connect(addr, ca_pem).await;
    let mut request = format!("wss://127.0.0.1:{}{path_and_query}", addr.port())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert(
        "sec-websocket-protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let mut ws = match tokio_tungstenite::client_async(request, tls).await {
        Ok((ws, response)) => {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                "v4.channel.k8s.io"
            );
            ws
        }
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            return Outcome::Refused { status, body };
        }
        Err(e) => panic!("the WebSocket handshake failed: {e}"),
    };
    let mut forwards = vec![Forwarded::default(); pairs];
    for (index, forward) in forwards.iter_mut().enumerate() {
        forward.sent = payload(index);
        let mut message = vec![u8::try_from(2 * index).unwrap()];
        message.extend_from_slice(&forward.sent);
        ws.send(Message::Binary(message.into())).await.unwrap();
    }
    for (channel, data) in extra {
        let mut message = vec![*channel];
        message.extend_from_slice(data);
        ws.send(Message::Binary(message.into())).await.unwrap();
    }
    let mut prefixes: Vec<[Vec<u8>; 2]> = vec![[Vec::new(), Vec::new()]; pairs];
    let done = |forwards: &[Forwarded]| forwards.iter().all(|f| f.received.len() >= f.sent.len());
    // With `extra` messages the session may end at any point: read until it does.
    let until_closed = !extra.is_empty();
    let mut cut = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while until_closed || !done(&forwards) {
        let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await else {
            assert!(until_closed, "no echo within 20 s: {forwards:?}");
            break;
        };
        let data = match next {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                cut = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Some((&channel, mut rest)) = data.split_first() else {
            continue;
        };
        let index = usize::from(channel / 2);
        let is_error = channel % 2 == 1;
        let Some(forward) = forwards.get_mut(index) else {
            panic!("a message on channel {channel}, beyond the pairs used");
        };
        let prefix = &mut prefixes[index][usize::from(is_error)];
        let missing = 2usize.saturating_sub(prefix.len()).min(rest.len());
        prefix.extend_from_slice(&rest[..missing]);
        rest = &rest[missing..];
        if !is_error && prefix.len() == 2 {
            forward.port = Some(u16::from_le_bytes([prefix[0], prefix[1]]));
        }
        if is_error {
            forward.errors.extend_from_slice(rest);
        } else {
            forward.received.extend_from_slice(rest);
        }
    }
    if !cut {
        let _ = ws.close(None).await;
        // Drain until the server's close answers ours.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    Outcome::Ran { forwards, cut }
}

/// Lowercase hex SHA-256, as the recording writes it.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Asserts that the recording holds one connection per forward, in order, to `port`, each
/// with exactly the bytes that went to the pod and every byte that came back.
pub fn assert_recorded(
    recording: &custody_recorder::reader::Recording,
    forwards: &[Forwarded],
    port: u16,
) {
    let opened: Vec<(u32, u16)> = recording
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ConnectionOpened { connection, port } => Some((connection, port)),
            _ => None,
        })
        .collect();
    let expected: Vec<(u32, u16)> = (0..forwards.len())
        .map(|i| (u32::try_from(i).unwrap(), port))
        .collect();
    assert_eq!(opened, expected, "{:#?}", recording.events);
    for (index, forward) in forwards.iter().enumerate() {
        let connection = u32::try_from(index).unwrap();
        let closed = recording.events.iter().find_map(|e| match &e.kind {
            EventKind::ConnectionClosed {
                connection: c,
                bytes_to_pod,
                bytes_from_pod,
                sha256_to_pod,
                sha256_from_pod,
            } if *c == connection => Some((
                *bytes_to_pod,
                *bytes_from_pod,
                sha256_to_pod.clone(),
                sha256_from_pod.clone(),
            )),
            _ => None,
        });
        assert_eq!(
            closed,
            Some((
                forward.sent.len() as u64,
                forward.received.len() as u64,
                sha256(&forward.sent),
                sha256(&forward.received),
            )),
            "connection {index}: {:#?}",
            recording.events
        );
    }
}
