//! A request's query as kube-apiserver and the kubelet read it: pairs as Go's `net/url` splits
//! and decodes them (`ParseQuery`, which `URL.Query()` calls), and boolean parameters as
//! apimachinery converts them (`runtime.Convert_Slice_string_To_bool`).
//!
//! One reading for everyone who must agree with the API server: the gateway's classifier and
//! its port-forward `ports`, and kube-sim. Were each to read a query its own way, custody could
//! decide on one request while the cluster executes another.
//!
//! Keys and values are bytes, as Go keeps them; a caller that needs text decides what a
//! non-UTF-8 value means for it.

use crate::error::{Error, Result};

/// Go's limit on the parameters of one query (`net/url` `defaultMaxParams`, the
/// `urlmaxqueryparams` default since Go 1.24, counted as `strings.Count(query, "&") + 1`):
/// above it `ParseQuery` returns an error and no parameter at all, so the API server reads the
/// request as if it had no query.
pub const MAX_PARAMS: usize = 10_000;

/// A query string's pairs, in order, decoded as Go decodes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Query {
    /// Reads a raw query (without the `?`) as Go 1.26's `net/url.parseQuery` does:
    ///
    /// - more than [`MAX_PARAMS`] parameters: [`Error::TooManyQueryParameters`] (Go reads none;
    ///   callers that must mirror the API server treat it as an empty query, the gateway
    ///   refuses);
    /// - pairs are split on `&` only; a pair containing `;` anywhere is dropped ("invalid
    ///   semicolon separator", Go >= 1.17);
    /// - an empty pair is skipped; the key is what precedes the first `=`;
    /// - key and value are decoded by `QueryUnescape` (`+` is a space); a pair whose key or
    ///   value holds an invalid `%` escape is dropped, the rest of the query is kept;
    /// - repeated keys keep every value, in order.
    pub fn parse(raw: Option<&str>) -> Result<Query> {
        let raw = raw.unwrap_or("");
        let count = raw.bytes().filter(|b| *b == b'&').count() + 1;
        if count > MAX_PARAMS {
            return Err(Error::TooManyQueryParameters {
                count,
                max: MAX_PARAMS,
            });
        }
        let pairs = raw
            .split('&')
            .filter(|pair| !pair.contains(';') && !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                Some((query_unescape(key)?, query_unescape(value)?))
            })
            .collect();
        Ok(Query { pairs })
    }

    /// Whether no pair survived (Go's `len(url.Values) == 0`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Every value of `key`, in order (`url.Values[key]`).
    pub fn values<'q>(&'q self, key: &str) -> Vec<&'q [u8]> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of `key`: what `url.Values.Get` and every scalar
    /// `Convert_Slice_string_To_*` take from a repeated parameter.
    #[must_use]
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// `key` as a bool, as `runtime.Convert_Slice_string_To_bool` reads it
    /// (`k8s.io/apimachinery/pkg/runtime/conversion.go`): see [`go_bool`].
    #[must_use]
    pub fn bool(&self, key: &str) -> bool {
        self.first(key).is_some_and(go_bool)
    }
}

/// `runtime.Convert_Slice_string_To_bool` on a present value: only `0` and `false` (compared
/// with Go's `strings.EqualFold`) are false; everything else, the empty string included, is
/// true. So `watch=`, a bare `watch`, `watch=f` and `watch=no` all ask for a watch.
#[must_use]
pub fn go_bool(value: &[u8]) -> bool {
    !(value == b"0" || equal_fold_false(value))
}

/// Go's `strings.EqualFold(value, "false")`: Unicode simple case folding, under which the
/// only non-ASCII letter equivalent to one of `false`'s is `ſ` (U+017F LATIN SMALL LETTER
/// LONG S, folding to `s`). Invalid UTF-8 decodes to U+FFFD, which matches nothing here.
fn equal_fold_false(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut chars = text.chars();
    let matches = b"false".iter().all(|want| {
        chars.next().is_some_and(|c| {
            c.eq_ignore_ascii_case(&char::from(*want)) || (*want == b's' && c == '\u{17f}')
        })
    });
    matches && chars.next().is_none()
}

/// Go's `net/url.QueryUnescape`: `%XX` with two hex digits (either case), `+` as a space;
/// `None` for an invalid escape.
#[must_use]
pub fn query_unescape(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value)?;
                let lo = bytes.get(i + 2).copied().and_then(hex_value)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The value of one hex digit.
#[must_use]
pub fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_as_go_net_url_reads_them() {
        let q = Query::parse(Some("a=1&b=x%20y+z&a=2&bad=%zz&semi=1;x&;&&c&d=%41")).unwrap();
        assert_eq!(q.values("a"), [b"1".as_slice(), b"2"]);
        assert_eq!(q.first("b"), Some(b"x y z".as_slice()));
        assert_eq!(q.first("bad"), None);
        assert_eq!(q.first("semi"), None);
        assert_eq!(q.first("c"), Some(b"".as_slice()));
        assert_eq!(q.first("d"), Some(b"A".as_slice()));
        assert_eq!(q.pairs().count(), 5);
        let many = "a=1&".repeat(MAX_PARAMS);
        assert!(matches!(
            Query::parse(Some(&many)),
            Err(Error::TooManyQueryParameters { .. })
        ));
        assert!(Query::parse(Some(&many[..many.len() - 1])).is_ok());
    }

    #[test]
    fn bools_as_apimachinery_converts_them() {
        for t in ["", "1", "t", "f", "true", "no", "0x1", "False "] {
            assert!(go_bool(t.as_bytes()), "{t:?}");
        }
        for f in ["0", "false", "FALSE", "fAlSe", "fal\u{17f}e"] {
            assert!(!go_bool(f.as_bytes()), "{f:?}");
        }
        assert!(!Query::parse(Some("x=1")).unwrap().bool("watch"));
        assert!(Query::parse(Some("watch")).unwrap().bool("watch"));
        assert!(Query::parse(Some("watch=f&watch=0")).unwrap().bool("watch"));
        assert!(!Query::parse(Some("watch=0&watch=1")).unwrap().bool("watch"));
    }
}
