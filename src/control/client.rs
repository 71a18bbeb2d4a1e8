//! The client side of the control socket, as `custody sessions live|kill|follow` use it.

use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::registry::{Killed, LiveSession};
use super::{Error, ErrorBody, KillRequest, socket_path};

/// The largest JSON answer read (the session list).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// A client of one gateway's control socket, found from its data directory.
#[derive(Debug, Clone)]
pub struct ControlClient {
    data_dir: PathBuf,
    socket: PathBuf,
}

impl ControlClient {
    /// The client of the gateway serving `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            socket: socket_path(data_dir),
        }
    }

    /// The live sessions, oldest first.
    pub async fn live(&self) -> Result<Vec<LiveSession>, Error> {
        let response = self.send(Method::GET, "/sessions", None).await?;
        read_json(response).await
    }

    /// Ends a live session with an optional reason.
    pub async fn kill(&self, id: &str, reason: Option<&str>) -> Result<Killed, Error> {
        let id = checked_id(id)?;
        let body = serde_json::to_vec(&KillRequest {
            reason: reason.map(str::to_owned),
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let response = self
            .send(Method::POST, &format!("/sessions/{id}/kill"), Some(body))
            .await?;
        read_json(response).await
    }

    /// Follows a live session's events: one NDJSON line at a time.
    pub async fn follow(&self, id: &str) -> Result<FollowStream, Error> {
        let id = checked_id(id)?;
        let response = self
            .send(Method::GET, &format!("/sessions/{id}/events"), None)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(answer_error(response).await);
        }
        Ok(FollowStream {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, Error> {
        let stream = match UnixStream::connect(&self.socket).await {
            Ok(stream) => stream,
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no control.sock",
                    std::io::ErrorKind::ConnectionRefused => {
                        "its control.sock is stale: nothing answers"
                    }
                    _ => {
                        return Err(Error::Connect {
                            path: self.socket.clone(),
                            source: e,
                        });
                    }
                };
                return Err(Error::NotRunning {
                    data_dir: self.data_dir.clone(),
                    why,
                });
            }
        };
        let protocol = |e: hyper::Error| Error::Protocol(e.to_string());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "custody");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        sender.send_request(request).await.map_err(protocol)
    }
}

/// A followed session's lines, as the gateway sends them.
#[derive(Debug)]
pub struct FollowStream {
    body: Incoming,
    buffer: Vec<u8>,
}

impl FollowStream {
    /// The next line without its newline; `None` once the session ended and every line was
    /// read.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=at).collect();
                line.pop();
                return Ok(Some(line));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buffer.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => return Err(Error::Protocol(e.to_string())),
                None if self.buffer.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buffer))),
            }
        }
    }
}

/// Session ids are UUIDs; anything else cannot name a live session (and would not fit in a
/// request path as is).
fn checked_id(id: &str) -> Result<&str, Error> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(id)
    } else {
        Err(Error::NoSuchSession(format!(
            "no live session {id:?}: session ids look like 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70"
        )))
    }
}

async fn read_json<T: DeserializeOwned>(response: Response<Incoming>) -> Result<T, Error> {
    if response.status() != StatusCode::OK {
        return Err(answer_error(response).await);
    }
    let body = read_body(response).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("unexpected answer from the gateway: {e}")))
}

async fn read_body(response: Response<Incoming>) -> Result<Bytes, Error> {
    http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| Error::Protocol(e.to_string()))
}

async fn answer_error(response: Response<Incoming>) -> Error {
    let status = response.status();
    let message = match read_body(response).await {
        Ok(body) => serde_json::from_slice::<ErrorBody>(&body).map_or_else(
            |_| String::from_utf8_lossy(&body).trim().to_owned(),
            |e| e.error,
        ),
        Err(e) => return e,
    };
    if status == StatusCode::NOT_FOUND {
        Error::NoSuchSession(message)
    } else {
        Error::Refused { status, message }
    }
}
