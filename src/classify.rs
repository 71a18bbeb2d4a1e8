//! Request classification: from method, path and query to the attributes kube-apiserver
//! authorizes (`RequestInfo`), following `apiserver:pkg/endpoints/request/requestinfo.go`.
//!
//! The classifier is pure and strict: every request it accepts is read exactly as
//! kube-apiserver v1.37 reads it (`RequestInfoFactory.NewRequestInfo` over Go's decoded
//! `URL.Path` and `URL.Query()`, see `docs/classification.md`), and a request whose meaning
//! could differ between custody and the API server (encoded slashes, dot segments, empty
//! segments, invalid escapes, non-UTF-8, control characters, more query parameters than Go
//! reads, a `watch` or name that depends on selectors custody cannot parse) is refused rather
//! than guessed, because the gateway's decision and the cluster's decision must be about the
//! same object.

use serde::{Deserialize, Serialize};

mod query;
mod selector;

pub use query::{MAX_PARAMS, Query, StreamOptions, go_bool};

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
    /// The request path as classified (the cluster prefix already removed), without the query,
    /// percent-decoded as Go's `URL.Path` (kube-apiserver's `RequestInfo.Path`): the path the
    /// policy's non-resource globs match.
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
    #[error("the request path contains an invalid percent escape")]
    BadEscape,
    /// A segment that does not decode to UTF-8.
    #[error("the request path is not valid UTF-8")]
    NotUtf8,
    /// A control character (NUL, CR, LF, ...) in a decoded segment.
    #[error("the request path contains a control character")]
    ControlCharacter,
    /// A `watch` value whose reading depends on whether the API server can parse the other
    /// list parameters (`falſe`: `strings.EqualFold` says false, the fallback says true).
    #[error(
        "the watch parameter {0:?} reads as a watch or a list depending on the label selector, \
         which custody cannot parse with certainty"
    )]
    AmbiguousWatch(String),
    /// A `fieldSelector` naming an object, next to a `labelSelector` custody cannot be sure the
    /// API server parses (if it does not, the API server drops the name).
    #[error(
        "the fieldSelector names an object, but custody cannot tell whether the API server \
         parses the labelSelector {0:?} (use key=value terms)"
    )]
    UncertainLabelSelector(String),
    /// More query parameters than Go's `net/url` reads (it would drop them all).
    #[error("the query has {0} parameters, more than the API server reads ({max})", max = MAX_PARAMS)]
    TooManyParameters(usize),
    /// A query parameter custody acts on is not UTF-8 once decoded.
    #[error("the query parameter {0:?} is not valid UTF-8")]
    ParameterNotUtf8(String),
    /// An HTTP method kube-apiserver does not map to a verb, on a resource path.
    #[error("the method {0} is not supported on resource paths")]
    Method(String),
    /// `/api/v1/proxy` or `/api/v1/watch` with nothing after it.
    #[error("the request path names a verb but no resource")]
    MissingResource,
}

/// Classifies a request from its method, raw (percent-encoded) path and raw query, as
/// kube-apiserver's `RequestInfoFactory.NewRequestInfo` (k8s.io/apiserver
/// pkg/endpoints/request/requestinfo.go) with `APIPrefixes` `{api, apis}` and the groupless
/// prefix `api` (`server.NewRequestInfoResolver`).
///
/// # Errors
///
/// A [`ClassifyError`] naming what custody cannot read with certainty.
pub fn classify(
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Result<RequestInfo, ClassifyError> {
    let (decoded, segments) = decode_path(path)?;
    // Go's `URL.Query()` is read for every request (exec options, list options): a query Go
    // would read as empty is refused whatever the path.
    let params = Query::parse(query)?;
    let mut info = RequestInfo {
        path: decoded,
        ..RequestInfo::default()
    };
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    // `/api/v1` and `/apis/g/v` are discovery (non-resource) paths; a resource needs one
    // more segment. Anything outside `/api` and `/apis` is non-resource.
    let resource_prefix = match parts.first() {
        Some(&"api") if parts.len() >= 3 => Some(1),
        Some(&"apis") if parts.len() >= 4 => Some(2),
        _ => None,
    };
    let Some(skip) = resource_prefix else {
        // Go's `strings.ToLower(req.Method)`; methods are ASCII tokens.
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
    // `/{proxy|watch}/...`: the verb comes from the path, whatever the method.
    if let Some(&special) = rest.first()
        && SPECIAL_VERBS.contains(&special)
    {
        if rest.len() < 2 {
            // The API server answers 500 ("unable to determine kind and namespace").
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
    // `proxy` as a path verb takes no subresource: the rest is the proxied path.
    if rest.len() >= 3 && info.verb != "proxy" {
        rest[2].clone_into(&mut info.subresource);
    }
    if rest.len() >= 2 {
        rest[1].clone_into(&mut info.name);
    }
    if let Some(resource) = rest.first() {
        (*resource).clone_into(&mut info.resource);
    }
    if info.name.is_empty() && info.verb == "get" {
        let list = ListReading::of(&params)?;
        (if list.watch { "watch" } else { "list" }).clone_into(&mut info.verb);
        if let Some(name) = list.name {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        "deletecollection".clone_into(&mut info.verb);
    }
    if info.resource == "pods"
        && info.api_group.is_empty()
        && matches!(info.subresource.as_str(), "exec" | "attach")
    {
        // The options custody records must be readable; refuse now rather than record a guess.
        StreamOptions::read(query)?;
    }
    Ok(info)
}

/// How `NewRequestInfo` turns a `get` without a name into `list` or `watch`, and which name a
/// `fieldSelector` gives it.
///
/// It decodes the query into `metainternalversion.ListOptions`
/// (`ParameterCodec.DecodeParameters`: `Convert_url_Values_To_v1_ListOptions`, then
/// `Convert_v1_ListOptions_To_internalversion_ListOptions`). That decoding fails when the
/// first `labelSelector` does not parse (`labels.Parse`), the first `fieldSelector` does not
/// parse (`fields.ParseSelector`), or the first `limit` or `timeoutSeconds` is not an int64
/// (`strconv.ParseInt`). On success `watch` is `Convert_Slice_string_To_bool` of the first
/// value and the name is `RequiresExactMatch("metadata.name")` when it is a valid path
/// segment name; on failure the name is dropped and `watch` is read again as
/// `strings.ToLower(first) not in {false, 0}`.
struct ListReading {
    watch: bool,
    name: Option<String>,
}

/// Whether `DecodeParameters` succeeds, as far as custody can tell.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decoding {
    Succeeds,
    Fails,
    /// Only an unusual `labelSelector` is left to decide it.
    Unknown,
}

impl ListReading {
    fn of(params: &Query) -> Result<ListReading, ClassifyError> {
        let int_fails = |key: &str| {
            params
                .first(key)
                .is_some_and(|v| std::str::from_utf8(v).map_or(true, |v| v.parse::<i64>().is_err()))
        };
        let field_name = match params.first("fieldSelector") {
            None => Ok(None),
            Some(raw) => std::str::from_utf8(raw)
                .map_err(|_| ClassifyError::ParameterNotUtf8("fieldSelector".into()))
                .map(selector::field_selector_name)?,
        };
        let label_known = params.first("labelSelector").is_none_or(|raw| {
            std::str::from_utf8(raw).is_ok_and(selector::label_selector_certainly_valid)
        });
        let decoding = if params.is_empty() {
            Decoding::Succeeds
        } else if field_name.is_err() || int_fails("limit") || int_fails("timeoutSeconds") {
            Decoding::Fails
        } else if label_known {
            Decoding::Succeeds
        } else {
            Decoding::Unknown
        };

        let watch = match params.first("watch") {
            None => false,
            Some(v) => {
                let decoded = query::go_bool(v);
                let fallback = query::go_bool_lowercased(v);
                match decoding {
                    _ if decoded == fallback => decoded,
                    Decoding::Succeeds => decoded,
                    Decoding::Fails => fallback,
                    Decoding::Unknown => {
                        return Err(ClassifyError::AmbiguousWatch(
                            String::from_utf8_lossy(v).into_owned(),
                        ));
                    }
                }
            }
        };
        let name = match field_name {
            Ok(Some(name)) if !name.is_empty() && selector::is_path_segment_name(&name) => {
                match decoding {
                    Decoding::Succeeds => Some(name),
                    Decoding::Fails => None,
                    Decoding::Unknown => {
                        let label = params.first("labelSelector").unwrap_or_default();
                        return Err(ClassifyError::UncertainLabelSelector(
                            String::from_utf8_lossy(label).into_owned(),
                        ));
                    }
                }
            }
            _ => None,
        };
        Ok(ListReading { watch, name })
    }
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

/// Decodes the path into its decoded form (Go's `URL.Path`) and its segments (the
/// apiserver's `splitPath`: `strings.Split(strings.Trim(path, "/"), "/")`), refusing
/// anything ambiguous. A single trailing `/` is allowed (the API server trims it); any other
/// empty segment is not.
fn decode_path(path: &str) -> Result<(String, Vec<String>), ClassifyError> {
    let body = path.strip_prefix('/').ok_or(ClassifyError::NotAbsolute)?;
    let trailing = body.ends_with('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return Ok(("/".to_owned(), Vec::new()));
    }
    let segments = body
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    // No segment holds a `/` once decoded, so joining the decoded segments is exactly Go's
    // decoding of the whole path.
    let mut decoded = format!("/{}", segments.join("/"));
    if trailing {
        decoded.push('/');
    }
    Ok((decoded, segments))
}

fn decode_segment(raw: &str) -> Result<String, ClassifyError> {
    if raw.is_empty() {
        return Err(ClassifyError::EmptySegment);
    }
    let bytes = percent_decode_path(raw)?;
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

/// Decodes `%XX` escapes in a path segment (Go's `unescape(s, encodePath)`: `+` stays `+`).
fn percent_decode_path(raw: &str) -> Result<Vec<u8>, ClassifyError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(query::hex_value);
            let lo = bytes.next().and_then(query::hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(ClassifyError::BadEscape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// The verb of a method on a resource path. Go's method names are case-sensitive; the API
/// server gives other methods the empty verb, which custody refuses.
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
