//! The query string as kube-apiserver reads it: pairs as Go's `net/url` splits and decodes
//! them (`ParseQuery`, which `URL.Query()` calls), and each parameter converted the way
//! apimachinery converts `url.Values` into options (`runtime.Convert_Slice_string_To_*`).
//!
//! Keys and values are kept as bytes, as Go keeps them: only the parameters custody acts on
//! must be UTF-8, and they are refused (never guessed) when they are not.

use super::ClassifyError;

/// Go's limit on the number of query parameters (`net/url` `defaultMaxParams`, Go 1.26): above
/// it `ParseQuery` returns an error and no parameter at all, so the API server would read the
/// request as if it had no query while custody forwards one. custody refuses such requests.
pub const MAX_PARAMS: usize = 10_000;

/// A query string's pairs, in order, decoded as Go decodes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Query {
    /// Reads a raw query (without the `?`) as Go 1.26's `net/url.parseQuery` does:
    ///
    /// - more than [`MAX_PARAMS`] parameters (`strings.Count(query, "&") + 1`): refused;
    /// - pairs are split on `&` only; a pair containing `;` anywhere is dropped ("invalid
    ///   semicolon separator", Go >= 1.17);
    /// - an empty pair is skipped; the key is what precedes the first `=`;
    /// - key and value are decoded by `QueryUnescape` (`+` is a space); a pair whose key or
    ///   value holds an invalid `%` escape is dropped, the rest of the query is kept;
    /// - repeated keys keep every value, in order.
    ///
    /// # Errors
    ///
    /// [`ClassifyError::TooManyParameters`] above Go's limit.
    pub fn parse(raw: Option<&str>) -> Result<Query, ClassifyError> {
        let raw = raw.unwrap_or("");
        let count = raw.bytes().filter(|b| *b == b'&').count() + 1;
        if count > MAX_PARAMS {
            return Err(ClassifyError::TooManyParameters(count));
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

    /// Every value of `key`, in order (`url.Values[key]`).
    pub fn values<'q>(&'q self, key: &str) -> Vec<&'q [u8]> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of `key`: what `Convert_Slice_string_To_string` (and every scalar
    /// conversion) takes from a repeated parameter.
    #[must_use]
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as text.
    ///
    /// # Errors
    ///
    /// [`ClassifyError::ParameterNotUtf8`] when it is not UTF-8.
    pub fn first_str(&self, key: &str) -> Result<Option<&str>, ClassifyError> {
        self.first(key).map(|v| utf8(key, v)).transpose()
    }

    /// Every value of `key` as text (a `[]string` field such as `command` or `dryRun`).
    ///
    /// # Errors
    ///
    /// [`ClassifyError::ParameterNotUtf8`] when one is not UTF-8.
    pub fn all_str(&self, key: &str) -> Result<Vec<&str>, ClassifyError> {
        self.values(key).into_iter().map(|v| utf8(key, v)).collect()
    }

    /// `key` as a bool, as `runtime.Convert_Slice_string_To_bool` reads it
    /// (k8s.io/apimachinery/pkg/runtime/conversion.go).
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

/// The `watch` value as `NewRequestInfo`'s fallback reads it when `DecodeParameters` failed:
/// `strings.ToLower(v)` compared with `false` and `0` (apiserver
/// pkg/endpoints/request/requestinfo.go). No non-ASCII rune lowercases to an ASCII letter of
/// `false`, so this is an ASCII case-insensitive comparison.
#[must_use]
pub fn go_bool_lowercased(value: &[u8]) -> bool {
    !(value == b"0" || value.eq_ignore_ascii_case(b"false"))
}

/// Go's `net/url.QueryUnescape`: `%XX` with two hex digits, `+` as a space; `None` for an
/// invalid escape.
fn query_unescape(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
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
pub(super) fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn utf8<'a>(key: &str, value: &'a [u8]) -> Result<&'a str, ClassifyError> {
    std::str::from_utf8(value).map_err(|_| ClassifyError::ParameterNotUtf8(key.to_owned()))
}

/// The options of an exec or attach request custody records, read as
/// `Convert_url_Values_To_v1_PodExecOptions` / `..._PodAttachOptions` read them
/// (`k8s.io/kubernetes` `pkg/apis/core/v1/zz_generated.conversion.go`): `container` and the bools
/// take the first value, `command` every value in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// The container, empty when not named (the API server then picks the default one).
    pub container: String,
    /// The command of an exec, one argument per `command` value.
    pub command: Vec<String>,
    /// Whether a terminal was asked for.
    pub tty: bool,
    /// Whether stdin is attached.
    pub stdin: bool,
}

impl StreamOptions {
    /// Reads the options from a raw query.
    ///
    /// # Errors
    ///
    /// The query is refused as [`Query::parse`] refuses it, or a `container` or `command`
    /// value is not UTF-8.
    pub fn read(raw: Option<&str>) -> Result<StreamOptions, ClassifyError> {
        let query = Query::parse(raw)?;
        Ok(StreamOptions {
            container: query.first_str("container")?.unwrap_or("").to_owned(),
            command: query
                .all_str("command")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            tty: query.bool("tty"),
            stdin: query.bool("stdin"),
        })
    }
}
