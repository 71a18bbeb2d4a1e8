//! `server.proxy_protocol`: the gateway behind a real `HAProxy` (TCP mode, `send-proxy-v2`, health
//! checks with `check-send-proxy`) names the real client in its audit trail, its recordings and
//! the impersonation extras; health checks leave no trace; with the option on a connection
//! without the header never reaches TLS, and with it off a header is not trusted.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody_fixtures::haproxy::Haproxy;
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_recorder::reader::read_recording;
use env::{Env, Options, ok};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The gateway's log lines, at debug level, shared by the tests of this file (one process,
/// one subscriber). The tests run one at a time ([`serial`]), so the lines a test finds after
/// its start are its own.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The lines written since the log had `start` bytes.
    fn since(&self, start: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[start..]).into_owned()
    }
}

/// Held by each test for its whole run, so that the log lines it reads are its own.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    })
}

/// What the gateway logs for a health check, and for a connection refused without a header.
const HEALTH_CHECK: &str = "PROXY LOCAL header (a balancer's health check)";
const REFUSED: &str = "refused: no valid PROXY protocol v2 header";

/// A PROXY v2 header with the PROXY command for TCP from `source` to `destination`.
fn proxy_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    raw_header(0x21, family, &block)
}

fn raw_header(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    bytes.extend_from_slice(&[version_command, family]);
    bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A TCP stream that sends `prefix` in the same `write` as the first bytes written through
/// it: a PROXY header and the TLS `ClientHello` in one segment, as a balancer may send them.
struct Prefixed {
    inner: TcpStream,
    prefix: Option<Vec<u8>>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let Some(prefix) = self.prefix.take() else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        let mut both = prefix.clone();
        both.extend_from_slice(buf);
        match Pin::new(&mut self.inner).poll_write(cx, &both) {
            Poll::Ready(Ok(n)) if n == both.len() => Poll::Ready(Ok(buf.len())),
            Poll::Ready(Ok(n)) => Poll::Ready(Err(std::io::Error::other(format!(
                "short first write: {n} of {} bytes",
                both.len()
            )))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.prefix = Some(prefix);
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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

/// TLS over `stream`, then alice lists pods over HTTP/1.1; returns the status and the
/// `Audit-ID`.
async fn list_pods<S>(env: &Env, stream: S) -> std::io::Result<(StatusCode, String)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = tokio_rustls::TlsConnector::from(tls_config(env))
        .connect("127.0.0.1".try_into().unwrap(), stream)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let request = Request::get("/clusters/sim/api/v1/namespaces/default/pods")
        .header("host", "127.0.0.1")
        .header("authorization", "Bearer alice-token")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status();
    let id = response.headers()["audit-id"].to_str().unwrap().to_owned();
    response.into_body().collect().await.unwrap();
    Ok((status, id))
}

/// custody's audit event `id`.
fn custody_event(env: &Env, id: &str) -> serde_json::Value {
    let events = env.custody_audit();
    events
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no audit event {id} in {events:#?}"))
}

/// The ids of custody's audit events (each request has two lines, its decision and its
/// completion, the second written once the response ended).
fn event_ids(env: &Env) -> BTreeSet<String> {
    env.custody_audit()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `custody.dev/client-address` kube-sim saw impersonated for request `id`.
fn sim_client_addresses(env: &Env, id: &str) -> Vec<serde_json::Value> {
    let sim = env.sim_audit();
    let addresses: Vec<_> = sim
        .iter()
        .filter(|e| e["auditID"] == id)
        .map(|e| e["impersonatedUser"]["extra"]["custody.dev/client-address"].clone())
        .collect();
    assert!(!addresses.is_empty(), "no kube-sim event {id}");
    addresses
}

/// The client addresses in `HAProxy`'s connection log (`option tcplog`: `<pri>IP:PORT [date]
/// frontend backend/server …`, one line per finished connection).
fn haproxy_clients(haproxy: &Haproxy) -> Vec<String> {
    haproxy
        .log_tail()
        .lines()
        .filter(|l| l.contains(" custody gateways/"))
        .filter_map(|l| {
            let before = &l[..l.find(" [")?];
            Some(before.rsplit(['>', ' ']).next()?.to_owned())
        })
        .collect()
}

/// Waits until `check` holds, for up to `secs` seconds.
fn wait_until(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kubeconfig like the environment's, pointed at `addr`.
fn kubectl_via(env: &Env, addr: SocketAddr) -> Kubectl {
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap();
    let path = env.dir().join("haproxy.kubeconfig");
    std::fs::write(
        &path,
        text.replace(&env.gateway_addr.to_string(), &addr.to_string()),
    )
    .unwrap();
    let home = env.dir().join("home-haproxy");
    std::fs::create_dir_all(&home).unwrap();
    Kubectl::new(kubectl_binary("1.32").unwrap(), path, home)
}

/// The recordings under `dir`, once `count` are sealed.
fn sealed_client_addrs(env: &Env, dir: &Path, count: usize) -> Vec<String> {
    let key = env.signing_key.as_ref().unwrap().verifying_key();
    let mut addrs = Vec::new();
    wait_until(10, "recordings sealed", || {
        let recordings: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| read_recording(&e.unwrap().path(), Some(&key)).ok())
            .collect();
        addrs = recordings
            .iter()
            .map(|r| r.meta.client_addr.clone())
            .collect();
        recordings.len() == count && recordings.iter().all(|r| r.manifest.is_some())
    });
    addrs
}

#[test]
fn behind_haproxy_the_real_client_is_named_and_health_checks_leave_no_trace() {
    let _serial = serial();
    let log = log();
    let start = log.len();
    let count = |needle: &str| {
        log.since(start)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    let env = Env::start(Options {
        proxy_protocol: true,
        recording: true,
        ..Options::default()
    });
    let haproxy = Haproxy::start(&[env.gateway_addr], true).unwrap();
    haproxy.wait_all_up(Duration::from_secs(10)).unwrap();

    // Health checks: a LOCAL header every 500 ms, then HAProxy closes.
    wait_until(10, "three health checks", || count(HEALTH_CHECK) >= 3);
    assert!(env.custody_audit().is_empty(), "{:#?}", env.custody_audit());
    assert!(env.sim_audit().is_empty(), "{:#?}", env.sim_audit());
    let text = log.since(start);
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                " WARN ",
                " ERROR ",
                "PROXY header",
                REFUSED,
                "TLS handshake",
                "timed out",
                "ended with an error",
            ]
            .iter()
            .any(|needle| l.contains(needle))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(
        haproxy.server_states().unwrap(),
        ["UP"],
        "{}",
        haproxy.log_tail()
    );

    // An HTTPS client through HAProxy: the audit trail and the impersonation extras name its
    // own socket address, not HAProxy's connection to the gateway.
    let (client, status, id) = env.rt.block_on(async {
        let tcp = TcpStream::connect(haproxy.addr()).await.unwrap();
        let client = tcp.local_addr().unwrap();
        let (status, id) = list_pods(&env, tcp).await.unwrap();
        (client, status, id)
    });
    assert_eq!(status, StatusCode::OK);
    assert_eq!(custody_event(&env, &id)["client_addr"], client.to_string());
    for address in sim_client_addresses(&env, &id) {
        assert_eq!(address, serde_json::json!([client.to_string()]));
    }

    // kubectl (HTTP/2) through HAProxy, a list and a recorded exec: its audit events and its
    // recording name a client HAProxy logged.
    let kubectl = kubectl_via(&env, haproxy.addr());
    let before = env.custody_audit().len();
    ok(&kubectl.run(["--context", "alice", "get", "pods"]).unwrap());
    let hi = ok(&kubectl
        .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
        .unwrap());
    assert_eq!(hi, "hi\n");
    let events = env.custody_audit();
    let ids = event_ids(&env);
    let addrs: Vec<String> = events[before..]
        .iter()
        .map(|e| e["client_addr"].as_str().unwrap().to_owned())
        .collect();
    assert!(!addrs.is_empty());
    let recorded = sealed_client_addrs(&env, &env.data_dir.join("recordings"), 1);
    wait_until(10, "HAProxy logs kubectl's connections", || {
        let clients = haproxy_clients(&haproxy);
        addrs.iter().chain(&recorded).all(|a| clients.contains(a))
    });

    // Straight to the gateway without a header: closed before TLS. The server never answers
    // a byte of the ClientHello, and a TLS client fails.
    let direct = env.rt.block_on(async {
        let mut tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        let direct = tcp.local_addr().unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
            .await
            .unwrap();
        let mut answer = Vec::new();
        // EOF or a reset: either way, nothing.
        let _ = tcp.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{answer:?}");
        let tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        assert!(list_pods(&env, tcp).await.is_err());
        direct
    });
    let refused: Vec<String> = log
        .since(start)
        .lines()
        .filter(|l| l.contains(REFUSED) && l.contains(&format!("peer={direct}")))
        .map(str::to_owned)
        .collect();
    assert_eq!(refused.len(), 1, "{}", log.since(start));
    assert!(refused[0].contains("signature"), "{refused:?}");
    assert_eq!(event_ids(&env), ids);
}

#[test]
fn a_header_in_the_same_segment_as_the_client_hello_is_not_lost() {
    let _serial = serial();
    let log = log();
    let start = log.len();
    let env = Env::start(Options {
        proxy_protocol: true,
        ..Options::default()
    });
    let gateway = env.gateway_addr;
    // The test is the balancer: it names clients of both families.
    for source in ["203.0.113.9:4444", "[2001:db8::7]:4444"] {
        let source: SocketAddr = source.parse().unwrap();
        let destination: SocketAddr = if source.is_ipv4() {
            "198.51.100.1:443".parse().unwrap()
        } else {
            "[2001:db8::1]:443".parse().unwrap()
        };
        let (status, id) = env.rt.block_on(async {
            let tcp = TcpStream::connect(gateway).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let stream = Prefixed {
                inner: tcp,
                prefix: Some(proxy_header(source, destination)),
            };
            list_pods(&env, stream).await.unwrap()
        });
        assert_eq!(status, StatusCode::OK);
        assert_eq!(custody_event(&env, &id)["client_addr"], source.to_string());
        for address in sim_client_addresses(&env, &id) {
            assert_eq!(address, serde_json::json!([source.to_string()]));
        }
    }
    // UNSPEC (and a TLV): no client named, so the balancer's own address stands.
    let (balancer, status, id) = env.rt.block_on(async {
        let tcp = TcpStream::connect(gateway).await.unwrap();
        let balancer = tcp.local_addr().unwrap();
        let stream = Prefixed {
            inner: tcp,
            prefix: Some(raw_header(0x21, 0x00, &[0x04, 0x00, 0x01, 0x00])),
        };
        let (status, id) = list_pods(&env, stream).await.unwrap();
        (balancer, status, id)
    });
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        custody_event(&env, &id)["client_addr"],
        balancer.to_string()
    );
    // A v1 header: refused, with the reason.
    let v1 = env.rt.block_on(async {
        let mut tcp = TcpStream::connect(gateway).await.unwrap();
        let v1 = tcp.local_addr().unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 4444 443\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{answer:?}");
        v1
    });
    let text = log.since(start);
    assert!(
        text.lines().any(|l| l.contains(REFUSED)
            && l.contains(&format!("peer={v1}"))
            && l.contains("only v2 is supported")),
        "{text}"
    );
    assert_eq!(event_ids(&env).len(), 3);
}

#[test]
fn off_by_default_a_header_is_not_trusted() {
    let _serial = serial();
    log();
    let env = Env::start(Options::default());
    let forged: SocketAddr = "203.0.113.9:4444".parse().unwrap();
    let header = proxy_header(forged, env.gateway_addr);
    env.rt.block_on(async {
        // The header before the TLS handshake, in its own segment or with the ClientHello:
        // the handshake fails.
        let mut tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        assert!(list_pods(&env, tcp).await.is_err());
        let tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        let stream = Prefixed {
            inner: tcp,
            prefix: Some(header.clone()),
        };
        assert!(list_pods(&env, stream).await.is_err());
        // Without one, the client's own address.
        let tcp = TcpStream::connect(env.gateway_addr).await.unwrap();
        let client = tcp.local_addr().unwrap();
        let (status, id) = list_pods(&env, tcp).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(custody_event(&env, &id)["client_addr"], client.to_string());
    });
    let events = env.custody_audit();
    assert_eq!(event_ids(&env).len(), 1, "{events:#?}");
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("203.0.113.9")
    );
}
