//! Masking of Secret values in the API server's answers, for people who may not see them.
//!
//! A request on the core `secrets` resource (any verb: get, list, watch, create, update, patch,
//! delete, deletecollection; cluster-wide lists included) by someone without the right to see
//! secret values is planned before forwarding ([`plan`]): the upstream request asks for JSON
//! only (protobuf, CBOR and YAML are dropped from `Accept`, `Table` and `PartialObjectMetadata`
//! forms are kept) and no content encoding. The answer is then rewritten ([`mask_response`],
//! [`mask_complete`]): every value of `data` becomes the base64 of `(masked by custody)`, every
//! value of `stringData` becomes `(masked by custody)`, the same inside the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, and the object is marked with
//! `custody.dev/masked: "true"`. Keys stay: people need to see which keys exist. Single
//! objects, lists, Tables (the row objects, both `Object` and `Metadata`) and the answers to
//! writes and deletes are buffered (bounded) and masked; watches are masked event by event.
//!
//! The security invariant: no byte of an answer reaches the client unless it was parsed, found
//! to be a shape custody knows, and masked (or found to be a `Status`). The shapes are the ones
//! kube-apiserver answers for Secrets: `Secret`, `SecretList`, `Table` with the Secret
//! printer's columns, `PartialObjectMetadata(List)`, `Status`, and watch events of these
//! (`value`). Anything else is refused with a 502 `Status` (or, inside a watch already
//! started, ends the stream with an `ERROR` event), never forwarded: protobuf, CBOR, a content
//! encoding such as gzip, malformed or oversized JSON, an unknown kind, and a watch stream
//! where one answer was expected (a request the API server reads as a watch but custody did
//! not, refused as soon as its first event starts, `shape`).
//!
//! Writes ([`check_write`]) are guarded in the other direction. A write that would store the
//! placeholder into a Secret (what `kubectl edit` or `get -o yaml | replace` by a masked person
//! would send) is refused, so masking can never destroy the real values. A JSON Patch may hold
//! only `add`, `remove` and `replace`: `copy` and `move` would put a stored value into another
//! field (an annotation, a label, `type`, the name), shown unmasked in the answer or quoted by
//! a validation error, and `test` answers whether a guessed value is right. Merge, strategic
//! merge and apply patches only carry values the client sends, so what they change comes back
//! masked, and their errors quote only the client's own values. `managedFields` names fields,
//! never their values.
//!
//! Not covered, because these values do not travel as Secret objects through the `secrets`
//! resource: a pod that prints or serves its mounted Secret or its environment (`exec`,
//! `attach`, `logs`, `port-forward`; the recorder's redaction is best effort), events or
//! `ConfigMaps` (or any other resource, custom resources included) that hold a copy, a
//! `ServiceAccount` token obtained with `TokenRequest` (`serviceaccounts/token`), aggregated
//! API servers serving copies, messages an admission webhook or a `ValidatingAdmissionPolicy`
//! writes from a Secret's values, and what the person already knows (the values they write).
//! Masking hides values from people whose role says so; anyone with RBAC on workloads in the
//! namespace can still mount the Secret in a pod of their own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::Value;

use crate::classify::RequestInfo;
use crate::gateway::status::status_response;
use crate::proxy::{self, Body, BoxError};

mod shape;
mod value;
mod watch;
mod write;

pub use write::{WriteRefused, check_write};

#[cfg(test)]
mod tests;

/// What every masked value says, in plain text (`stringData`) and, base64-encoded, in `data`.
pub const PLACEHOLDER: &str = "(masked by custody)";

/// The base64 form of [`PLACEHOLDER`] without its padding, as it appears in `data`.
const PLACEHOLDER_BASE64: &str = "KG1hc2tlZCBieSBjdXN0b2R5KQ";

/// The annotation custody adds to every object it masked.
pub const MASKED_ANNOTATION: &str = "custody.dev/masked";

/// The annotation where client-side `kubectl apply` keeps the whole object it applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The most a buffered answer (object, list, Table, Status) may hold: a list of secrets larger
/// than this is refused rather than held in memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The most one watch event may hold (etcd keeps objects under 1.5 MiB; a Table event adds
/// little).
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// Why an answer could not be masked. Every message says what custody could not mask; the
/// client sees it in a 502 `Status`.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The answer is in a media type custody cannot parse (protobuf, CBOR, YAML).
    #[error("custody cannot mask secrets in a {0:?} response; ask for application/json")]
    MediaType(String),
    /// The answer is content-encoded.
    #[error("custody cannot mask secrets in a response with content encoding {0:?}")]
    Encoded(String),
    /// The body is protobuf (kube-apiserver's `k8s\0` envelope).
    #[error("custody cannot mask secrets in a protobuf response; ask for application/json")]
    Protobuf,
    /// The answer, or one watch event, is larger than custody buffers.
    #[error("custody cannot mask secrets in a response larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("custody cannot mask secrets in a response that is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A watch stream that is not a sequence of watch events as JSON objects.
    #[error("custody cannot mask secrets in a watch stream that is not a sequence of JSON events")]
    Framing,
    /// JSON of a shape custody does not know holds no unmasked value (a watch event where one
    /// answer was expected, an unknown kind, a Table with unknown columns).
    #[error("custody cannot mask secrets in an answer it does not recognise: {0}")]
    Shape(&'static str),
    /// Reading the upstream body failed.
    #[error("the API server's response failed before custody could mask it: {0}")]
    Upstream(String),
}

/// What [`mask_response`] needs to know about the request whose answer it masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskPlan {
    watch: bool,
    max_body: usize,
    max_event: usize,
}

impl MaskPlan {
    /// Whether the answer is a watch stream.
    pub fn is_watch(&self) -> bool {
        self.watch
    }

    /// The same plan with other bounds (for tests and tuning).
    #[must_use]
    pub fn with_limits(mut self, max_body: usize, max_event: usize) -> Self {
        self.max_body = max_body;
        self.max_event = max_event;
        self
    }
}

/// Whether answers to this request carry Secret values: the core group's `secrets`, any verb,
/// no subresource (Secrets have none; kube-apiserver answers 404 to any).
pub fn applies(info: &RequestInfo) -> bool {
    info.is_resource
        && info.api_group.is_empty()
        && info.resource == "secrets"
        && info.subresource.is_empty()
}

/// Before forwarding: whether this request's response must be masked. When it must, rewrites
/// the upstream request `headers` so the API server answers in a form custody can mask: JSON
/// (with its parameters, so `as=Table` and `as=PartialObjectMetadata` survive) and no content
/// encoding.
pub fn plan(info: &RequestInfo, show_secrets: bool, headers: &mut HeaderMap) -> Option<MaskPlan> {
    if show_secrets || !applies(info) {
        return None;
    }
    let accept = json_accept(headers);
    headers.remove(ACCEPT);
    headers.insert(ACCEPT, accept);
    // Without this, a client asking for gzip would get an answer custody cannot read.
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    Some(MaskPlan {
        watch: info.verb == "watch",
        max_body: MAX_BODY,
        max_event: MAX_EVENT,
    })
}

/// The JSON media ranges of the request's `Accept` headers, in their order; `application/json`
/// when none is left. Protobuf answers to clients that preferred it are fine: client-go decodes
/// by the answer's `Content-Type`, and offers JSON as its fallback.
fn json_accept(headers: &HeaderMap) -> HeaderValue {
    let kept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|range| media_type(range) == "application/json")
        .collect();
    if kept.is_empty() {
        return HeaderValue::from_static("application/json");
    }
    HeaderValue::from_str(&kept.join(","))
        .unwrap_or_else(|_| HeaderValue::from_static("application/json"))
}

/// The media type of a media range or `Content-Type`, lowercase, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Refuses answers custody cannot parse, from their headers alone.
fn check_head(headers: &HeaderMap) -> Result<(), MaskError> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes())
            .trim()
            .to_owned();
        if !encoding.eq_ignore_ascii_case("identity") && !encoding.is_empty() {
            return Err(MaskError::Encoded(encoding));
        }
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type.as_bytes());
        let media = media_type(&content_type);
        if media != "application/json" {
            return Err(MaskError::MediaType(media));
        }
    }
    Ok(())
}

/// Masks a whole buffered answer. `None`: pass the bytes unchanged (a `Status`, or nothing: a
/// `HEAD`, or an empty answer holds no value). Every other answer must be a shape
/// [`value::mask_document`] knows, or it is refused.
fn mask_bytes(body: &[u8]) -> Result<Option<Vec<u8>>, MaskError> {
    if body.starts_with(b"k8s\0") {
        return Err(MaskError::Protobuf);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut doc: Value = serde_json::from_slice(body)?;
    if let Some(status) = doc
        .as_object_mut()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Status"))
    {
        // A Status passes as it came unless a message had to be withheld.
        return Ok(value::withhold_status_message(status)
            .then(|| serde_json::to_vec(&doc))
            .transpose()?);
    }
    value::mask_document(&mut doc)?;
    Ok(Some(serde_json::to_vec(&doc)?))
}

/// Reads a whole body, at most `limit` bytes, refusing it as soon as its first bytes show a
/// shape custody will not pass (a watch stream, say, which would otherwise be held until the
/// API server ends it).
async fn collect(mut body: Body, limit: usize) -> Result<Bytes, MaskError> {
    let mut buf = Vec::new();
    let mut shape = shape::Shape::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| MaskError::Upstream(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(MaskError::TooLarge { limit });
            }
            let early = shape.push(&data);
            buf.extend_from_slice(&data);
            if let Err(err) = early {
                return Err(if buf.starts_with(b"k8s") {
                    MaskError::Protobuf
                } else {
                    err
                });
            }
        }
    }
    Ok(Bytes::from(buf))
}

/// Buffers and masks; the bytes to send.
async fn mask_buffered(body: Body, limit: usize) -> Result<Bytes, MaskError> {
    let bytes = collect(body, limit).await?;
    Ok(match mask_bytes(&bytes)? {
        None => bytes,
        Some(masked) => Bytes::from(masked),
    })
}

/// The 502 `Status` for an answer custody refused, with the API server's `Audit-Id` (which is
/// custody's request id) so the refusal can be found in both audit trails.
fn refuse(headers: &HeaderMap, err: &MaskError) -> Response<Body> {
    tracing::warn!(error = %err, "refusing an answer about secrets that cannot be masked");
    let id = headers
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    status_response(StatusCode::BAD_GATEWAY, &err.to_string(), id)
}

/// Masks the upstream response as it streams. The head is answered at once; a buffered answer
/// that turns out unmaskable (too large, not JSON) then fails its body, so the client sees a
/// broken response rather than the values. Use [`mask_complete`] where the head can wait, to
/// answer such failures with a 502 `Status` instead.
pub fn mask_response(plan: MaskPlan, response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if let Err(err) = check_head(&parts.headers) {
        return refuse(&parts.headers, &err);
    }
    // The masked body has another length.
    parts.headers.remove(CONTENT_LENGTH);
    let body = if plan.watch && parts.status.is_success() {
        watch::masked_stream(body, plan.max_event)
    } else {
        proxy::boxed(Buffered {
            masking: Box::pin(mask_buffered(body, plan.max_body)),
            done: false,
        })
    };
    Response::from_parts(parts, body)
}

/// A buffered answer, masked when it is complete: one frame, or an error (never the unmasked
/// bytes).
struct Buffered {
    masking: Pin<Box<dyn Future<Output = Result<Bytes, MaskError>> + Send>>,
    done: bool,
}

impl hyper::body::Body for Buffered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let result = std::task::ready!(self.masking.as_mut().poll(cx));
        self.done = true;
        Poll::Ready(Some(match result {
            Ok(bytes) => Ok(Frame::data(bytes)),
            Err(err) => {
                tracing::warn!(error = %err, "failing an answer about secrets that cannot be masked");
                Err(Box::new(err))
            }
        }))
    }
}

/// Like [`mask_response`], but buffers a non-watch answer before answering, so that any answer
/// custody cannot mask becomes a 502 `Status`. Watches are masked as they stream.
pub async fn mask_complete(plan: MaskPlan, response: Response<Body>) -> Response<Body> {
    if plan.watch && response.status().is_success() {
        return mask_response(plan, response);
    }
    let (mut parts, body) = response.into_parts();
    if let Err(err) = check_head(&parts.headers) {
        return refuse(&parts.headers, &err);
    }
    match mask_buffered(body, plan.max_body).await {
        Ok(bytes) => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            Response::from_parts(parts, proxy::full(bytes))
        }
        Err(err) => refuse(&parts.headers, &err),
    }
}

/// Whether a create, update or patch body for a Secret contains the masked placeholder, plain
/// or base64 (anywhere: `data`, `stringData`, the last-applied annotation, a JSON patch's
/// values, a YAML apply body). Writing it would replace the real values with custody's
/// placeholder, which is what a masked person's `kubectl edit` or `replace` would do.
pub fn writes_placeholder(body: &[u8]) -> bool {
    if contains(body, PLACEHOLDER.as_bytes()) || contains(body, PLACEHOLDER_BASE64.as_bytes()) {
        return true;
    }
    // JSON may spell the same string with `\u` escapes; compare the decoded strings.
    serde_json::from_slice::<Value>(body).is_ok_and(|doc| has_placeholder_string(&doc))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn has_placeholder_string(doc: &Value) -> bool {
    match doc {
        Value::String(s) => s.contains(PLACEHOLDER) || s.contains(PLACEHOLDER_BASE64),
        Value::Array(items) => items.iter().any(has_placeholder_string),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(PLACEHOLDER) || has_placeholder_string(v)),
        _ => false,
    }
}
