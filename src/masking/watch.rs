//! Masking a JSON watch stream event by event, as it arrives.
//!
//! kube-apiserver writes one JSON object per event (`{"type":..,"object":..}`), followed by a
//! newline in practice; the chunks that reach us are cut anywhere. The splitter finds where each
//! top-level object ends by counting braces outside strings, so neither newlines nor chunk
//! boundaries matter. Bytes are only ever forwarded after the event they belong to was parsed
//! and masked: a partial event is never forwarded, and an event that cannot be masked ends the
//! stream with an `ERROR` event naming the reason. So does an event custody does not know:
//! another event type, another kind of object, other fields than `type` and `object`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};

use super::{MaskError, value};
use crate::proxy::{self, Body, BoxError};

/// Splits a byte stream into top-level JSON objects.
pub(super) struct Splitter {
    /// Bytes not yet returned: the start of an unfinished object (and nothing before it).
    buf: Vec<u8>,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Whether an object has started (at `buf[0]`).
    open: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_event: usize,
}

impl Splitter {
    pub(super) fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            open: false,
            depth: 0,
            in_string: false,
            escaped: false,
            max_event,
        }
    }

    /// Adds a chunk; returns the objects it completed, in order, and the error that stopped it
    /// (after which the splitter must not be used again).
    pub(super) fn push(&mut self, chunk: &[u8]) -> (Vec<Vec<u8>>, Option<MaskError>) {
        self.buf.extend_from_slice(chunk);
        let mut done = Vec::new();
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if !self.open {
                if b.is_ascii_whitespace() {
                    start = i + 1;
                } else if b == b'{' {
                    self.open = true;
                    self.depth = 1;
                    start = i;
                } else {
                    // Not a JSON object: some other framing (protobuf's length prefixes, say).
                    return (done, Some(MaskError::Framing));
                }
            } else if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            done.push(self.buf[start..=i].to_vec());
                            self.open = false;
                            start = i + 1;
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.buf.drain(..start.min(self.buf.len()));
        self.scanned = self.buf.len();
        // Bounded per event: an unfinished event is held in memory until it completes.
        if self.buf.len() > self.max_event {
            let limit = self.max_event;
            return (done, Some(MaskError::TooLarge { limit }));
        }
        (done, None)
    }

    /// Whether an event was cut off by the end of the stream.
    pub(super) fn unfinished(&self) -> bool {
        self.open
    }
}

/// Masks one watch event: its `object` is a Secret, its metadata or a Table of them, or a
/// Status (`ERROR`); an event of any other shape is refused ([`value::mask_event`]).
pub(super) fn mask_event(event: &[u8]) -> Result<Vec<u8>, MaskError> {
    let mut value: Value = serde_json::from_slice(event)?;
    value::mask_event(&mut value)?;
    let mut out = serde_json::to_vec(&value)?;
    out.push(b'\n');
    Ok(out)
}

/// Masks every event `chunk` completes; on a failure, the events masked before it and the
/// error.
fn mask_chunk(splitter: &mut Splitter, chunk: &[u8]) -> (Vec<u8>, Option<MaskError>) {
    let (events, mut failure) = splitter.push(chunk);
    let mut out = Vec::new();
    for event in events {
        match mask_event(&event) {
            Ok(masked) => out.extend_from_slice(&masked),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    (out, failure)
}

/// The `ERROR` event that ends a watch custody could not mask, so the client sees why.
fn error_event(err: &MaskError) -> Vec<u8> {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": err.to_string(),
        "reason": "ServiceUnavailable",
        "code": 502,
    });
    format!("{}\n", json!({"type": "ERROR", "object": status})).into_bytes()
}

/// The masked watch body: frames of whole, masked events.
struct MaskedWatch {
    upstream: Body,
    splitter: Splitter,
    done: bool,
}

impl hyper::body::Body for MaskedWatch {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // An event cut off by the end of the stream is dropped, never forwarded.
                    if this.splitter.unfinished() {
                        tracing::debug!("watch stream on secrets ended inside an event");
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry no objects
            };
            let (mut out, failure) = mask_chunk(&mut this.splitter, &data);
            if let Some(err) = failure {
                tracing::warn!(error = %err, "ending a watch on secrets that cannot be masked");
                this.done = true;
                out.extend_from_slice(&error_event(&err));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }
}

/// The masked watch body.
pub(super) fn masked_stream(upstream: Body, max_event: usize) -> Body {
    proxy::boxed(MaskedWatch {
        upstream,
        splitter: Splitter::new(max_event),
        done: false,
    })
}
