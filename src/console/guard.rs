//! The console's defences in the browser: the session cookie's attributes, the checks every
//! state-changing request and every WebSocket upgrade passes, and the security headers on every
//! console answer.
//!
//! Security invariants:
//! - The cookie is `__Host-` prefixed (so only this origin, `Path=/`, `Secure`, no `Domain`
//!   can set it), `HttpOnly` (no script reads it) and `SameSite=Lax` (not sent on cross-site
//!   subrequests or POSTs).
//! - A state-changing request must come from the console's own origin: its `Origin` equals
//!   the public origin, or, without `Origin`, `Sec-Fetch-Site` is `same-origin`; a request
//!   with neither is refused (every browser that can run the console sends one of them). It
//!   must also carry the visit's CSRF token, compared in constant time.
//! - A WebSocket upgrade must carry an `Origin` equal to the public origin (browsers always
//!   send one, and `SameSite` does not protect WebSocket handshakes).
//! - Pages are never cached, never framed, and may run scripts only from the gateway itself;
//!   `'wasm-unsafe-eval'` lets the player compile its terminal emulator (WebAssembly), and
//!   nothing allows `eval` of text or inline scripts.

use http::{HeaderMap, HeaderValue, header};

/// The console's session cookie.
pub const COOKIE: &str = "__Host-custody";
/// The cookie that binds a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "__Host-custody-login";

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A `Set-Cookie` value for the session cookie, alive for `max_age_secs`.
pub fn session_cookie(value: &str, max_age_secs: u64) -> String {
    format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}")
}

/// A `Set-Cookie` value binding a login's `state` to this browser for ten minutes.
pub fn login_cookie(state: &str) -> String {
    format!("{LOGIN_COOKIE}={state}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600")
}

/// A `Set-Cookie` value that removes `name`.
pub fn removal(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The value of cookie `name` in the request, if it was sent exactly once.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    // Two cookies of the same name: one may have been planted (a sibling
                    // subdomain cannot set a `__Host-` cookie, but refuse to guess).
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

/// Why a request was refused by [`check_same_origin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The `Origin` header names another origin.
    #[error("the request came from another origin ({0})")]
    CrossOrigin(String),
    /// `Sec-Fetch-Site` says another site sent it.
    #[error("the request came from another site (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    /// Neither `Origin` nor `Sec-Fetch-Site`.
    #[error("the request carries neither Origin nor Sec-Fetch-Site")]
    NoOrigin,
    /// The CSRF token is missing or wrong.
    #[error("the form's CSRF token is missing or wrong; reload the page and try again")]
    Csrf,
}

/// Checks that a state-changing request comes from `origin` (see the module documentation).
pub fn check_same_origin(headers: &HeaderMap, origin: &str) -> Result<(), Refusal> {
    if let Some(sent) = headers.get(header::ORIGIN) {
        let sent = sent.to_str().unwrap_or("(not text)");
        return if sent == origin {
            Ok(())
        } else {
            Err(Refusal::CrossOrigin(sent.to_owned()))
        };
    }
    match headers.get("sec-fetch-site").map(HeaderValue::to_str) {
        Some(Ok("same-origin")) => Ok(()),
        Some(other) => Err(Refusal::CrossSite(other.unwrap_or("(not text)").to_owned())),
        None => Err(Refusal::NoOrigin),
    }
}

/// Checks a WebSocket upgrade's `Origin`: it must be present and equal `origin`.
pub fn check_upgrade_origin(headers: &HeaderMap, origin: &str) -> Result<(), Refusal> {
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        Some(Ok(sent)) if sent == origin => Ok(()),
        Some(sent) => Err(Refusal::CrossOrigin(
            sent.unwrap_or("(not text)").to_owned(),
        )),
        None => Err(Refusal::NoOrigin),
    }
}

/// Compares a submitted CSRF token with the visit's, in time independent of where they differ.
pub fn check_csrf(submitted: Option<&str>, expected: &str) -> Result<(), Refusal> {
    let Some(submitted) = submitted else {
        return Err(Refusal::Csrf);
    };
    let (a, b) = (submitted.as_bytes(), expected.as_bytes());
    let differ = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if differ || expected.is_empty() {
        Err(Refusal::Csrf)
    } else {
        Ok(())
    }
}

/// Adds the console's security headers to an answer; pages (`cacheable` false) are never
/// stored by the browser or a proxy.
pub fn secure_headers(headers: &mut HeaderMap, cacheable: bool) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !cacheable && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn same_origin_is_decided_by_origin_then_fetch_metadata() {
        let origin = "https://custody.example:8443";
        assert_eq!(
            check_same_origin(&headers(&[("origin", origin)]), origin),
            Ok(())
        );
        assert_eq!(
            check_same_origin(&headers(&[("origin", "https://evil.example")]), origin),
            Err(Refusal::CrossOrigin("https://evil.example".into()))
        );
        // A matching Sec-Fetch-Site does not rescue a foreign Origin.
        assert!(
            check_same_origin(
                &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
                origin
            )
            .is_err()
        );
        assert_eq!(
            check_same_origin(&headers(&[("sec-fetch-site", "same-origin")]), origin),
            Ok(())
        );
        assert!(check_same_origin(&headers(&[("sec-fetch-site", "cross-site")]), origin).is_err());
        assert!(check_same_origin(&headers(&[("sec-fetch-site", "same-site")]), origin).is_err());
        assert_eq!(
            check_same_origin(&HeaderMap::new(), origin),
            Err(Refusal::NoOrigin)
        );
    }

    #[test]
    fn upgrades_need_the_origin() {
        let origin = "https://127.0.0.1:9443";
        assert_eq!(
            check_upgrade_origin(&headers(&[("origin", origin)]), origin),
            Ok(())
        );
        assert!(
            check_upgrade_origin(&headers(&[("origin", "https://127.0.0.1:9444")]), origin)
                .is_err()
        );
        assert!(
            check_upgrade_origin(&headers(&[("sec-fetch-site", "same-origin")]), origin).is_err()
        );
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        assert_eq!(check_csrf(Some("abc"), "abc"), Ok(()));
        assert!(check_csrf(Some("abd"), "abc").is_err());
        assert!(check_csrf(Some("ab"), "abc").is_err());
        assert!(check_csrf(None, "abc").is_err());
        assert!(check_csrf(Some(""), "").is_err());
    }

    #[test]
    fn cookies_are_read_once_and_written_with_every_attribute() {
        let h = headers(&[("cookie", "a=1; __Host-custody=tok; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        let twice = headers(&[
            ("cookie", "__Host-custody=one"),
            ("cookie", "__Host-custody=two"),
        ]);
        assert_eq!(cookie(&twice, COOKIE), None);
        let set = session_cookie("tok", 3600);
        for attribute in [
            "__Host-custody=tok",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Max-Age=3600",
        ] {
            assert!(
                set.split("; ").any(|a| a == attribute),
                "{attribute} in {set}"
            );
        }
        assert!(!set.contains("Domain"));
    }
}
