//! Request classification: from method, path and query to the attributes kube-apiserver
//! authorizes (`RequestInfo`), following `apiserver:pkg/endpoints/request/requestinfo.go`.
//!
//! The classifier is pure and strict: a path whose meaning could differ between custody and
//! the API server (encoded slashes, dot segments, empty segments, invalid escapes, non-UTF-8,
//! control characters) is refused rather than guessed, because the gateway's decision and the
//! cluster's decision must be about the same object.

use serde::{Deserialize, Serialize};

/// What a request is about, in kube-apiserver's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The authorization verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`; for non-resource URLs the lowercase HTTP method.
    pub verb: String,
    /// The API group, empty for the core group and for non-resource URLs.
    pub api_group: String,
    /// The API version, e.g. `v1`.
    pub version: String,
    /// The resource, e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `log` or `exec`.
    pub subresource: String,
    /// The namespace, empty for cluster-scoped requests.
    pub namespace: String,
    /// The object name, empty for collections.
    pub name: String,
    /// `false` for non-resource URLs (`/version`, `/api`, `/healthz`, ...).
    pub is_resource: bool,
    /// The request path as classified (the cluster prefix already removed), without the query.
    pub path: String,
}

/// Why a request could not be classified unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// The path does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%2F` inside a segment: the API server and a proxy may split it differently.
    #[error("the request path contains an encoded slash")]
    EncodedSlash,
    /// A `.` or `..` segment (also when percent-encoded).
    #[error("the request path contains a dot segment")]
    DotSegment,
    /// `//` somewhere in the path.
    #[error("the request path contains an empty segment")]
    EmptySegment,
    /// A `%` not followed by two hex digits.
    #[error("the request path or query contains an invalid percent escape")]
    BadEscape,
    /// A segment that does not decode to UTF-8.
    #[error("the request path is not valid UTF-8")]
    NotUtf8,
    /// A control character (NUL, CR, LF, ...) in a decoded segment.
    #[error("the request path contains a control character")]
    ControlCharacter,
    /// A `watch` query parameter that is repeated or not a boolean.
    #[error("the watch parameter is ambiguous: {0:?}")]
    AmbiguousWatch(String),
    /// An HTTP method kube-apiserver does not map to a verb, on a resource path.
    #[error("the method {0} is not supported on resource paths")]
    Method(String),
    /// `/api/v1/proxy` or `/api/v1/watch` with nothing after it.
    #[error("the request path names a verb but no resource")]
    MissingResource,
}

/// Classifies a request from its method, raw (percent-encoded) path and raw query.
pub fn classify(
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Result<RequestInfo, ClassifyError> {
    let segments = decode_path(path)?;
    let mut info = RequestInfo {
        path: path.to_owned(),
        ..RequestInfo::default()
    };
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let resource_prefix = match parts.first() {
        // kube-apiserver's RequestInfoFactory: `/api/v1` and `/apis/g/v` are discovery
        // (non-resource) paths; a resource needs one more segment.
        Some(&"api") if parts.len() >= 3 => Some(1),
        Some(&"apis") if parts.len() >= 4 => Some(2),
        _ => None,
    };
    let Some(skip) = resource_prefix else {
        info.verb = method.to_ascii_lowercase();
        return Ok(info);
    };
    info.is_resource = true;
    if skip == 2 {
        parts[1].clone_into(&mut info.api_group);
        parts[2].clone_into(&mut info.version);
    } else {
        parts[1].clone_into(&mut info.version);
    }
    let mut rest = &parts[skip + 1..];
    if let Some(&special) = rest.first()
        && SPECIAL_VERBS.contains(&special)
    {
        if rest.len() < 2 {
            return Err(ClassifyError::MissingResource);
        }
        special.clone_into(&mut info.verb);
        rest = &rest[1..];
    } else {
        method_verb(method)?.clone_into(&mut info.verb);
    }
    if rest.first() == Some(&"namespaces")
        && let Some(ns) = rest.get(1)
    {
        (*ns).clone_into(&mut info.namespace);
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    if rest.len() >= 3 && info.verb != "proxy" {
        rest[2].clone_into(&mut info.subresource);
    }
    if rest.len() >= 2 {
        rest[1].clone_into(&mut info.name);
    }
    if let Some(resource) = rest.first() {
        (*resource).clone_into(&mut info.resource);
    }
    let params = decode_query(query.unwrap_or(""))?;
    if info.name.is_empty() && info.verb == "get" {
        let verb = if watch_requested(&params)? {
            "watch"
        } else {
            "list"
        };
        verb.clone_into(&mut info.verb);
        if let Some(name) = field_selector_name(&params) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        "deletecollection".clone_into(&mut info.verb);
    }
    Ok(info)
}

/// Splits `/clusters/<name>/rest...` into the cluster name and the rest of the path (`/` when
/// nothing follows the name). `None` when the path does not start with a valid cluster prefix.
pub fn split_cluster(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/clusters/")?;
    let (name, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then_some((name, rest))
}

/// Decodes the path into segments, refusing anything ambiguous. A single trailing `/` is
/// allowed (kube-apiserver trims it); any other empty segment is not.
fn decode_path(path: &str) -> Result<Vec<String>, ClassifyError> {
    let body = path.strip_prefix('/').ok_or(ClassifyError::NotAbsolute)?;
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String, ClassifyError> {
    if raw.is_empty() {
        return Err(ClassifyError::EmptySegment);
    }
    let bytes = percent_decode(raw, false)?;
    if bytes.contains(&b'/') {
        return Err(ClassifyError::EncodedSlash);
    }
    let text = String::from_utf8(bytes).map_err(|_| ClassifyError::NotUtf8)?;
    if text == "." || text == ".." {
        return Err(ClassifyError::DotSegment);
    }
    if text.chars().any(char::is_control) {
        return Err(ClassifyError::ControlCharacter);
    }
    Ok(text)
}

/// Decodes `%XX` escapes (and `+` as space in query components).
fn percent_decode(raw: &str, plus_is_space: bool) -> Result<Vec<u8>, ClassifyError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(ClassifyError::BadEscape),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn decode_query(query: &str) -> Result<Vec<(String, String)>, ClassifyError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let text = |s: &str| {
                String::from_utf8(percent_decode(s, true)?).map_err(|_| ClassifyError::NotUtf8)
            };
            Ok((text(k)?, text(v)?))
        })
        .collect()
}

/// `watch` as Go's `strconv.ParseBool` reads it; repeated or unparseable values are refused,
/// since the gateway and the API server might not pick the same one.
fn watch_requested(params: &[(String, String)]) -> Result<bool, ClassifyError> {
    let mut values = params.iter().filter(|(k, _)| k == "watch").map(|(_, v)| v);
    let Some(value) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err(ClassifyError::AmbiguousWatch("repeated".into()));
    }
    match value.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        other => Err(ClassifyError::AmbiguousWatch(other.to_owned())),
    }
}

/// The name a list or watch is restricted to by `fieldSelector=metadata.name=NAME`.
fn field_selector_name(params: &[(String, String)]) -> Option<String> {
    let (_, selector) = params.iter().find(|(k, _)| k == "fieldSelector")?;
    selector.split(',').find_map(|term| {
        let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        let valid = key.trim() == "metadata.name"
            && !value.starts_with('=')
            && !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains(['/', '%']);
        valid.then(|| value.to_owned())
    })
}

fn method_verb(method: &str) -> Result<&'static str, ClassifyError> {
    Ok(match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => return Err(ClassifyError::Method(other.to_owned())),
    })
}

/// Path segments right after the version that are verbs (`/api/v1/watch/...`).
const SPECIAL_VERBS: &[&str] = &["proxy", "watch"];

/// Subresources of a namespace object itself, not resources inside the namespace.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

#[cfg(test)]
mod tests;
