//! The query string as kube-apiserver reads it: pairs as Go's `net/url` splits and decodes
//! them (`ParseQuery`, which `URL.Query()` calls), and each parameter converted the way
//! apimachinery converts `url.Values` into options (`runtime.Convert_Slice_string_To_*`).
//!
//! Keys and values are kept as bytes, as Go keeps them: only the parameters custody acts on
//! must be UTF-8, and they are refused (never guessed) when they are not.

use super::ClassifyError;

pub use custody_protocol::query::{MAX_PARAMS, go_bool};

/// A query string's pairs, in order, decoded as Go decodes them
/// ([`custody_protocol::query::Query`]), with the refusals the classifier needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(custody_protocol::query::Query);

impl Query {
    /// Reads a raw query (without the `?`) as Go's `net/url.parseQuery` does
    /// ([`custody_protocol::query::Query::parse`]).
    ///
    /// # Errors
    ///
    /// [`ClassifyError::TooManyParameters`] above Go's limit: the API server would read the
    /// request as if it had no query while custody forwards one.
    pub fn parse(raw: Option<&str>) -> Result<Query, ClassifyError> {
        match custody_protocol::query::Query::parse(raw) {
            Ok(query) => Ok(Query(query)),
            Err(custody_protocol::Error::TooManyQueryParameters { count, .. }) => {
                Err(ClassifyError::TooManyParameters(count))
            }
            // `parse` fails for nothing else; should it one day, the query is still refused.
            Err(_) => Err(ClassifyError::TooManyParameters(MAX_PARAMS + 1)),
        }
    }

    /// Whether no pair survived (Go's `len(url.Values) == 0`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value of `key`, in order (`url.Values[key]`).
    pub fn values<'q>(&'q self, key: &str) -> Vec<&'q [u8]> {
        self.0.values(key)
    }

    /// The first value of `key`: what `Convert_Slice_string_To_string` (and every scalar
    /// conversion) takes from a repeated parameter.
    #[must_use]
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.0.first(key)
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
        self.0.bool(key)
    }
}

/// The `watch` value as `NewRequestInfo`'s fallback reads it when `DecodeParameters` failed:
/// `strings.ToLower(v)` compared with `false` and `0` (apiserver
/// pkg/endpoints/request/requestinfo.go). No non-ASCII rune lowercases to an ASCII letter of
/// `false`, so this is an ASCII case-insensitive comparison.
#[must_use]
pub fn go_bool_lowercased(value: &[u8]) -> bool {
    !(value == b"0" || value.eq_ignore_ascii_case(b"false"))
}

/// The value of one hex digit.
pub(super) fn hex_value(b: u8) -> Option<u8> {
    custody_protocol::query::hex_value(b)
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
