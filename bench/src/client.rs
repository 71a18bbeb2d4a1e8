//! The clients every scenario drives: TLS to one of the three paths, HTTP/1.1 API requests,
//! and exec sessions over WebSocket (`v5.channel.k8s.io`) and SPDY/3.1 (`v4.channel.k8s.io`)
//! built from custody's protocol codecs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use custody_protocol::spdy::{Frame as SpdyFrame, FrameDecoder, HeaderBlock, HeaderCompressor};
use custody_protocol::websocket::{Frame as WsFrame, Message, MessageDecoder};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One way to the cluster: where to connect, the path prefix and the bearer token.
#[derive(Clone)]
pub struct Target {
    /// `direct`, `custody` or `nginx`.
    pub name: &'static str,
    /// The TLS address.
    pub addr: SocketAddr,
    /// Prepended to every API path (`/clusters/bench` for custody).
    pub prefix: String,
    /// The bearer token.
    pub token: String,
    /// Trusts the CAs of all three paths.
    pub tls: TlsConnector,
}

/// A TLS connector trusting these PEM CAs, offering HTTP/1.1 only (the upgrade protocols and
/// nginx's proxying are HTTP/1.1).
pub fn connector(ca_pems: &[String]) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(cert.context("a CA certificate")?)?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Target {
    /// A new TLS connection.
    pub async fn connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("{}: cannot connect to {}", self.name, self.addr))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        Ok(self.tls.connect(name, tcp).await?)
    }

    /// A keep-alive HTTP/1.1 connection for API requests.
    pub async fn http(&self) -> anyhow::Result<Http> {
        let io = TokioIo::new(self.connect().await?);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Http {
            sender,
            target: self.clone(),
        })
    }

    fn upgrade_head(&self, method: &str, path: &str, extra: &str) -> String {
        format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nUser-Agent: custody-bench\r\nConnection: Upgrade\r\n{extra}\r\n",
            self.prefix, self.addr, self.token
        )
    }
}

/// One HTTP/1.1 connection.
pub struct Http {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    target: Target,
}

impl Http {
    /// GETs `path` (under the target's prefix); returns the body length, failing on non-200.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<usize> {
        self.request(http::Method::GET, path, Bytes::new()).await
    }

    /// Sends a request with a JSON body; returns the response body length, failing on
    /// anything but 200 or 201.
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<usize> {
        self.sender.ready().await?;
        let request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.target.prefix))
            .header("host", self.target.addr.to_string())
            .header("authorization", format!("Bearer {}", self.target.token))
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK && status != http::StatusCode::CREATED {
            bail!(
                "{}: {method} {path}: {status}: {}",
                self.target.name,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body.len())
    }
}

/// The exec transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `v5.channel.k8s.io` (kubectl 1.30+).
    WebSocket,
    /// SPDY/3.1 `v4.channel.k8s.io` (kubectl before 1.30, and its fallback).
    Spdy,
}

impl Transport {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Spdy => "spdy",
        }
    }
}

/// The exec query of `command` in pod `default/demo`.
pub fn exec_path(command: &[&str], stdin: bool) -> String {
    let mut path = String::from("/api/v1/namespaces/default/pods/demo/exec?container=main");
    for c in command {
        path.push_str("&command=");
        for b in c.bytes() {
            if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
                path.push(char::from(b));
            } else {
                let _ = write!(path, "%{b:02X}");
            }
        }
    }
    path.push_str("&stdout=true&stderr=true");
    if stdin {
        path.push_str("&stdin=true");
    }
    path
}

type Tls = TlsStream<TcpStream>;

/// An exec session's reading half: stdout bytes as they come.
pub enum ExecReader {
    /// WebSocket.
    Ws {
        /// The connection.
        rd: ReadHalf<Tls>,
        /// Incoming messages.
        decoder: MessageDecoder,
    },
    /// SPDY.
    Spdy {
        /// The connection.
        rd: ReadHalf<Tls>,
        /// Incoming frames.
        decoder: FrameDecoder,
        /// Ping ids to answer (the writer half sends them).
        pings: tokio::sync::mpsc::UnboundedSender<u32>,
    },
}

/// An exec session's writing half: stdin.
pub enum ExecWriter {
    /// WebSocket.
    Ws(WriteHalf<Tls>),
    /// SPDY.
    Spdy {
        /// The connection.
        wr: WriteHalf<Tls>,
        /// Ping ids the reader saw.
        pings: tokio::sync::mpsc::UnboundedReceiver<u32>,
    },
}

/// SPDY stream ids, in the order kubectl opens them.
const SPDY_ERROR: u32 = 1;
const SPDY_STDIN: u32 = 3;
const SPDY_STDOUT: u32 = 5;
const SPDY_STDERR: u32 = 7;

/// Starts an exec session; returns once the upgrade (and, for SPDY, the stream setup) is done.
pub async fn exec(
    target: &Target,
    transport: Transport,
    command: &[&str],
    stdin: bool,
) -> anyhow::Result<(ExecReader, ExecWriter)> {
    let mut tls = target.connect().await?;
    let path = exec_path(command, stdin);
    let head = match transport {
        Transport::WebSocket => target.upgrade_head(
            "GET",
            &path,
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n",
        ),
        Transport::Spdy => target.upgrade_head(
            "POST",
            &path,
            "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n",
        ),
    };
    tls.write_all(head.as_bytes()).await?;
    let leftover = read_head(&mut tls, target.name).await?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    match transport {
        Transport::WebSocket => {
            let mut decoder = MessageDecoder::new();
            decoder.push(&leftover);
            Ok((ExecReader::Ws { rd, decoder }, ExecWriter::Ws(wr)))
        }
        Transport::Spdy => {
            let mut headers = HeaderCompressor::new()?;
            let mut streams = vec![(SPDY_ERROR, "error")];
            if stdin {
                streams.push((SPDY_STDIN, "stdin"));
            }
            streams.extend([(SPDY_STDOUT, "stdout"), (SPDY_STDERR, "stderr")]);
            let mut out = Vec::new();
            for (id, kind) in &streams {
                let block = headers.encode(&HeaderBlock::from_pairs([("streamtype", *kind)]))?;
                out.extend_from_slice(
                    &SpdyFrame::SynStream {
                        stream_id: *id,
                        associated_stream_id: 0,
                        priority: 0,
                        slot: 0,
                        fin: false,
                        unidirectional: false,
                        header_block: block.into(),
                    }
                    .to_bytes()?,
                );
            }
            wr.write_all(&out).await?;
            let mut decoder = FrameDecoder::new();
            decoder.push(&leftover);
            // Wait for every SYN_REPLY; data may not come before them.
            let mut replies = 0;
            let mut buf = vec![0u8; 16 * 1024];
            while replies < streams.len() {
                match decoder.next_frame()? {
                    Some(SpdyFrame::SynReply { .. }) => replies += 1,
                    Some(SpdyFrame::RstStream { stream_id, status }) => {
                        bail!("{}: SPDY stream {stream_id} reset ({status})", target.name)
                    }
                    Some(_) => {}
                    None => {
                        let n = rd.read(&mut buf).await?;
                        if n == 0 {
                            bail!("{}: SPDY connection closed during setup", target.name);
                        }
                        decoder.push(&buf[..n]);
                    }
                }
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            Ok((
                ExecReader::Spdy {
                    rd,
                    decoder,
                    pings: tx,
                },
                ExecWriter::Spdy { wr, pings: rx },
            ))
        }
    }
}

/// Reads an HTTP response head, requires 101, returns the bytes after it.
async fn read_head(tls: &mut Tls, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 101") {
                bail!(
                    "{name}: upgrade refused: {}",
                    String::from_utf8_lossy(&buf[..buf.len().min(600)])
                );
            }
            return Ok(buf[end + 4..].to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk))
            .await
            .with_context(|| format!("{name}: no upgrade answer in 30 s"))??;
        if n == 0 {
            bail!("{name}: closed before the upgrade answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What the reader returns next.
pub enum Chunk {
    /// Stdout bytes.
    Stdout(Bytes),
    /// The session ended (the error stream's status, if any, was read).
    End,
}

impl ExecReader {
    /// The next stdout bytes, or the end of the session. Stderr and status are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Chunk> {
        let mut buf = vec![0u8; 64 * 1024];
        match self {
            Self::Ws { rd, decoder } => loop {
                match decoder.next_message()? {
                    Some(Message::Binary(b) | Message::Text(b)) => {
                        if b.first() == Some(&1) {
                            return Ok(Chunk::Stdout(b.slice(1..)));
                        }
                    }
                    Some(Message::Close(_)) => return Ok(Chunk::End),
                    Some(_) => {}
                    None => {
                        let n = rd.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return Ok(Chunk::End);
                        }
                        decoder.push(&buf[..n]);
                    }
                }
            },
            Self::Spdy { rd, decoder, pings } => loop {
                match decoder.next_frame()? {
                    Some(SpdyFrame::Data {
                        stream_id, data, ..
                    }) if stream_id == SPDY_STDOUT => {
                        if !data.is_empty() {
                            return Ok(Chunk::Stdout(data));
                        }
                    }
                    Some(SpdyFrame::Ping { id }) => {
                        let _ = pings.send(id);
                    }
                    Some(SpdyFrame::GoAway { .. }) => return Ok(Chunk::End),
                    Some(_) => {}
                    None => {
                        let n = rd.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return Ok(Chunk::End);
                        }
                        decoder.push(&buf[..n]);
                    }
                }
            },
        }
    }

    /// Reads everything to the end; returns the stdout byte count.
    pub async fn drain(&mut self) -> anyhow::Result<u64> {
        let mut total = 0u64;
        loop {
            match self.next().await? {
                Chunk::Stdout(b) => total += b.len() as u64,
                Chunk::End => return Ok(total),
            }
        }
    }

    /// Reads exactly `n` stdout bytes into `out`.
    pub async fn read_exact(&mut self, n: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
        out.clear();
        while out.len() < n {
            match self.next().await? {
                Chunk::Stdout(b) => out.extend_from_slice(&b),
                Chunk::End => bail!("the session ended after {} of {n} bytes", out.len()),
            }
        }
        Ok(())
    }
}

impl ExecWriter {
    /// Sends stdin bytes.
    pub async fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Ws(wr) => {
                let mut payload = Vec::with_capacity(data.len() + 1);
                payload.push(0);
                payload.extend_from_slice(data);
                wr.write_all(&WsFrame::binary(payload).masked([1, 2, 3, 4]).to_bytes())
                    .await?;
            }
            Self::Spdy { wr, pings } => {
                let mut out = Vec::with_capacity(data.len() + 16);
                while let Ok(id) = pings.try_recv() {
                    out.extend_from_slice(&SpdyFrame::Ping { id }.to_bytes()?);
                }
                out.extend_from_slice(
                    &SpdyFrame::data(SPDY_STDIN, Bytes::copy_from_slice(data), false).to_bytes()?,
                );
                wr.write_all(&out).await?;
            }
        }
        Ok(())
    }

    /// Closes stdin (v5 CLOSE message, SPDY FIN), so `cat` ends.
    pub async fn close_stdin(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Ws(wr) => {
                wr.write_all(
                    &WsFrame::binary(vec![255, 0])
                        .masked([1, 2, 3, 4])
                        .to_bytes(),
                )
                .await?;
            }
            Self::Spdy { wr, .. } => {
                wr.write_all(&SpdyFrame::fin(SPDY_STDIN).to_bytes()?)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exec_paths_escape_arguments() {
        assert_eq!(
            super::exec_path(&["head", "-c", "1 2"], true),
            "/api/v1/namespaces/default/pods/demo/exec?container=main&command=head&command=-c&command=1%202&stdout=true&stderr=true&stdin=true"
        );
    }
}
