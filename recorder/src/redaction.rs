//! Redaction: secret-shaped byte patterns replaced by `[REDACTED:<name>]` in output, stderr and
//! input before anything is written.
//!
//! Patterns are byte regexes (crate `regex`). A pattern with a capture group named `s` redacts
//! only that group (the value after `Authorization: Bearer `, say); otherwise the whole match.
//! Secrets split across events are handled by [`RedactionWindow`], which holds back the tail of
//! each stream for one flush; its bound is documented there.

mod window;

use std::ops::Range;
use std::sync::Arc;

use regex::bytes::Regex;

use crate::error::{Error, Result};

pub use window::RedactionWindow;

/// A compiled, shareable set of redaction patterns.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Arc<Vec<Pattern>>,
    window: usize,
}

#[derive(Debug)]
struct Pattern {
    replacement: Vec<u8>,
    regex: Regex,
}

/// One match to redact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The bytes replaced.
    pub span: Range<usize>,
    /// The whole match (the span plus any context the pattern needed).
    pub whole: Range<usize>,
    /// Which pattern.
    pub pattern: usize,
}

impl Redactor {
    /// A redactor for `(name, regex)` patterns; `window` is how many trailing bytes of each
    /// stream are held back for one flush so that a secret split across events is still seen
    /// whole (secrets longer than `window` may escape when split).
    pub fn new<N: AsRef<str>, P: AsRef<str>>(patterns: &[(N, P)], window: usize) -> Result<Self> {
        let patterns = patterns
            .iter()
            .map(|(name, pattern)| {
                let name = name.as_ref();
                let regex =
                    Regex::new(pattern.as_ref()).map_err(|source| Error::RedactionPattern {
                        name: name.to_owned(),
                        source,
                    })?;
                Ok(Pattern {
                    replacement: format!("[REDACTED:{name}]").into_bytes(),
                    regex,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patterns: Arc::new(patterns),
            window,
        })
    }

    /// The default pattern set ([`DEFAULT_PATTERNS`]) with an 8 KiB window.
    pub fn with_defaults() -> Result<Self> {
        Self::new(DEFAULT_PATTERNS, DEFAULT_WINDOW)
    }

    /// A redactor that changes nothing.
    pub fn disabled() -> Self {
        Self {
            patterns: Arc::new(Vec::new()),
            window: 0,
        }
    }

    /// Whether there is any pattern.
    pub fn is_enabled(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// The hold-back window in bytes.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Redacts one buffer on its own (no cross-event handling).
    pub fn redact(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0;
        for hit in self.hits(data) {
            out.extend_from_slice(&data[at..hit.span.start]);
            out.extend_from_slice(self.replacement(hit.pattern));
            at = hit.span.end;
        }
        out.extend_from_slice(&data[at..]);
        out
    }

    /// Non-overlapping hits, leftmost first (the longer one on a tie).
    pub(crate) fn hits(&self, data: &[u8]) -> Vec<Hit> {
        let mut all = Vec::new();
        for (pattern, p) in self.patterns.iter().enumerate() {
            for captures in p.regex.captures_iter(data) {
                let (Some(whole), span) = (captures.get(0), captures.name("s")) else {
                    continue;
                };
                let span = span.unwrap_or(whole).range();
                if !span.is_empty() {
                    all.push(Hit {
                        span,
                        whole: whole.range(),
                        pattern,
                    });
                }
            }
        }
        all.sort_by(|a, b| {
            a.span
                .start
                .cmp(&b.span.start)
                .then(b.span.end.cmp(&a.span.end))
        });
        let mut hits: Vec<Hit> = Vec::with_capacity(all.len());
        for hit in all {
            if hits
                .last()
                .is_none_or(|last| hit.span.start >= last.span.end)
            {
                hits.push(hit);
            }
        }
        hits
    }

    pub(crate) fn replacement(&self, pattern: usize) -> &[u8] {
        self.patterns
            .get(pattern)
            .map_or(b"[REDACTED]", |p| &p.replacement)
    }
}

/// The default hold-back window: larger than a 4096-bit RSA private key in PEM.
pub const DEFAULT_WINDOW: usize = 8 << 10;

/// The default patterns: private keys, cloud access keys, bearer tokens, JWTs and a few
/// command-line secret shapes.
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    (
        "private_key",
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----",
    ),
    (
        "aws_access_key_id",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    ),
    (
        "aws_secret_access_key",
        r#"(?i)aws_?secret_?(?:access_?)?key["'\s]*[:=]\s*["']?(?P<s>[A-Za-z0-9/+=]{40})"#,
    ),
    ("gcp_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    (
        "azure_account_key",
        r"(?i)AccountKey=(?P<s>[A-Za-z0-9+/=]{40,})",
    ),
    (
        "azure_sas_signature",
        r"(?i)[?&]sig=(?P<s>[A-Za-z0-9%+/=]{20,})",
    ),
    (
        "bearer_token",
        r"(?i)\bbearer\s+(?P<s>[A-Za-z0-9\-._~+/]{8,}=*)",
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("from_literal", r"--from-literal=[^=\s]+=(?P<s>\S+)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_redact_common_secret_shapes() {
        let r = Redactor::with_defaults().unwrap();
        let cases: &[(&[u8], &[u8])] = &[
            (b"id=AKIAIOSFODNN7EXAMPLE ok", b"id=[REDACTED:aws_access_key_id] ok"),
            (
                b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
                b"aws_secret_access_key = [REDACTED:aws_secret_access_key]\n",
            ),
            (b"Authorization: Bearer abc.def-123456\r\n", b"Authorization: Bearer [REDACTED:bearer_token]\r\n"),
            (
                b"t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl;",
                b"t=[REDACTED:jwt];",
            ),
            (
                b"a\r\n-----BEGIN RSA PRIVATE KEY-----\r\nMIIBOgIBAAJBAK\r\n-----END RSA PRIVATE KEY-----\r\nb",
                b"a\r\n[REDACTED:private_key]\r\nb",
            ),
            (b"key=AIzaSyA-1234567890abcdefghijklmnopqrstu", b"key=[REDACTED:gcp_api_key]"),
            (b"create secret generic x --from-literal=pw=hunter2 -n a", b"create secret generic x --from-literal=pw=[REDACTED:from_literal] -n a"),
            (b"plain text stays", b"plain text stays"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                String::from_utf8_lossy(&r.redact(input)),
                String::from_utf8_lossy(expected)
            );
        }
    }

    #[test]
    fn bad_pattern_names_itself() {
        let err = Redactor::new(&[("broken", "(")], 16).unwrap_err();
        assert!(err.to_string().contains("broken"));
    }
}
