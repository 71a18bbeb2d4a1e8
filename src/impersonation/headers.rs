//! Header hygiene: what a client's request may carry upstream, and the impersonation headers
//! the gateway adds in place of whatever the client sent.
//!
//! Security rule, enforced here: nothing the client sends may speak for an identity. Every
//! credential (`Authorization`, `Proxy-Authorization`, `Cookie`), every `Impersonate-*` header
//! and every header that upstream components trust as identity or origin (`X-Remote-*`,
//! `X-Forwarded-*`, `Forwarded`, `X-Real-Ip`) is removed in any letter case, also when spelled
//! with underscores (`Impersonate_User`), before the gateway adds its own. Hop-by-hop headers and
//! every header the client lists in `Connection` are dropped too, and `Connection` itself never
//! goes upstream, so a client cannot name the gateway's `Impersonate-User` as hop-by-hop.

use std::fmt::Write;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::principal::EffectiveIdentity;

/// The gateway's own attributes sent as `Impersonate-Extra-<domain>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayExtras {
    /// The extra domain, e.g. `custody.dev`.
    pub domain: String,
    /// The authenticated username of the person who really asked.
    pub initiator: String,
    /// The custody request id (also sent as `Audit-ID`).
    pub request_id: String,
    /// The client's socket address.
    pub client_address: String,
}

/// Why the upstream headers could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A value the gateway would send contains CR, LF, NUL, another control character or
    /// non-ASCII bytes; refused rather than sent.
    #[error("the {0} value cannot be sent in a header")]
    UnsafeValue(&'static str),
}

/// Whether a client request header must never be forwarded upstream.
pub fn is_stripped(name: &HeaderName) -> bool {
    let lower = name.as_str().replace('_', "-");
    STRIPPED.contains(&lower.as_str())
        || HOP_BY_HOP.contains(&lower.as_str())
        || STRIPPED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The request headers to send upstream: the client's headers after hygiene, then the
/// impersonation headers of `identity`, the gateway extras and `Audit-ID`. The gateway's
/// credential is added by the upstream connection, not here.
pub fn upstream_request_headers(
    client: &HeaderMap,
    identity: &EffectiveIdentity,
    extras: &GatewayExtras,
) -> Result<HeaderMap, HeaderError> {
    let mut out = HeaderMap::with_capacity(client.len() + identity.groups.len() + 6);
    let connection_named = connection_tokens(client);
    for (name, value) in client {
        if is_stripped(name) || connection_named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        // `Host` is set from the upstream URL by the client connection.
        if name == http::header::HOST {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(
        IMPERSONATE_USER,
        safe_value(&identity.user, "impersonated user")?,
    );
    for group in &identity.groups {
        out.append(IMPERSONATE_GROUP, safe_value(group, "impersonated group")?);
    }
    if !identity.uid.is_empty() {
        out.insert(
            IMPERSONATE_UID,
            safe_value(&identity.uid, "impersonated uid")?,
        );
    }
    for (key, value, what) in [
        ("initiator", &extras.initiator, "initiator"),
        ("request-id", &extras.request_id, "request id"),
        ("client-address", &extras.client_address, "client address"),
    ] {
        let name =
            extra_header_name(&extras.domain, key).ok_or(HeaderError::UnsafeValue("extra key"))?;
        out.append(name, safe_value(value, what)?);
    }
    out.insert(AUDIT_ID, safe_value(&extras.request_id, "request id")?);
    Ok(out)
}

/// Removes hop-by-hop headers (and those named in `Connection`) from an upstream response.
pub fn clean_response_headers(headers: &mut HeaderMap) {
    for name in connection_tokens(headers) {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The header name for the extra `<domain>/<key>`: `Impersonate-Extra-` followed by the key
/// escaped as client-go's `headerKeyEscape` does (every byte that is not an RFC 7230 token
/// character, and `%` itself, becomes `%XX`). The key is lowercased, as kube-apiserver does;
/// the whole name is lowercase (HTTP/2 requires it), which the server's `PathUnescape` accepts.
pub fn extra_header_name(domain: &str, key: &str) -> Option<HeaderName> {
    let full = format!("{domain}/{key}").to_ascii_lowercase();
    let mut name = String::from("impersonate-extra-");
    for b in full.bytes() {
        if is_token_byte(b) && b != b'%' {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// Whether a value may be sent in an identity header: printable ASCII (and spaces) only.
pub fn is_safe_value(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn safe_value(value: &str, what: &'static str) -> Result<HeaderValue, HeaderError> {
    if !is_safe_value(value) {
        return Err(HeaderError::UnsafeValue(what));
    }
    HeaderValue::from_str(value).map_err(|_| HeaderError::UnsafeValue(what))
}

/// The lowercase header names listed in every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `Impersonate-User`.
pub const IMPERSONATE_USER: HeaderName = HeaderName::from_static("impersonate-user");
/// `Impersonate-Group`, one line per group.
pub const IMPERSONATE_GROUP: HeaderName = HeaderName::from_static("impersonate-group");
/// `Impersonate-Uid`.
pub const IMPERSONATE_UID: HeaderName = HeaderName::from_static("impersonate-uid");
/// `Audit-ID`: the API server uses it as the event's `auditID` and echoes it as `Audit-Id`.
pub const AUDIT_ID: HeaderName = HeaderName::from_static("audit-id");

/// Client headers that are credentials or identity/origin claims (compared after `_` → `-`).
const STRIPPED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "forwarded",
    "x-real-ip",
    "audit-id",
];

/// Prefixes of client headers that are never forwarded (compared after `_` → `-`).
const STRIPPED_PREFIXES: &[&str] = &["impersonate-", "x-remote-", "x-forwarded-"];

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy ones proxies still see).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[cfg(test)]
mod tests;
