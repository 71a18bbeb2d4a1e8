//! Forwarding plain (non-upgrade) requests: the request body streams to the API server and the
//! response streams back frame by frame, with no buffering and no total timeout, so watches and
//! `logs -f` reach the client as the server flushes them. Dropping either side drops the other:
//! a client that goes away drops the upstream response (closing its stream or connection), and
//! an upstream that ends or fails ends the client's response.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::impersonation::headers::clean_response_headers;
use crate::upstream::Upstream;

mod body;

pub use body::{Counted, OnEnd, Until};

/// A boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the gateway sends and returns.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An upstream response, ready to stream to the client.
pub struct Forwarded {
    /// The response, hop-by-hop headers removed; its body counts bytes into `bytes_out`.
    pub response: Response<Body>,
    /// The `Audit-Id` the API server echoed.
    pub upstream_audit_id: Option<String>,
}

/// Sends the request upstream and returns the streaming response. `bytes_in` and `bytes_out`
/// count the body bytes as they pass.
pub async fn forward(
    upstream: &Upstream,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Body,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
) -> Result<Forwarded, hyper_util::client::legacy::Error> {
    let body = boxed(Counted::new(body, bytes_in));
    let response = upstream.send(method, path_and_query, headers, body).await?;
    let (mut parts, incoming) = response.into_parts();
    clean_response_headers(&mut parts.headers);
    let upstream_audit_id = parts
        .headers
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = boxed(Counted::new(incoming, bytes_out));
    Ok(Forwarded {
        response: Response::from_parts(parts, body),
        upstream_audit_id,
    })
}

/// Reads a counter.
pub(crate) fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
