//! What a person who sees masked values may send in a write to a Secret.
//!
//! Two things are refused. Writing custody's placeholder (what `kubectl edit` or
//! `get -o yaml | replace` of a masked Secret sends) would replace the real values with it.
//! And a JSON Patch can read stored values: `copy` and `move` put a value anywhere in the
//! object (an annotation, a label, `type`, the name), where the answer shows it unmasked or a
//! validation error echoes it (`field.Invalid` quotes the value), and `test` answers whether a
//! guess is right. So a masked person's JSON Patch on a Secret may hold only `add`, `remove`
//! and `replace`, whose values they send themselves; a JSON Patch custody cannot read is
//! refused. Merge patches (RFC 7386), strategic merge patches and apply configurations carry
//! only values the client sends and have no operation that reads one; they pass (with the
//! placeholder check).
//!
//! The patch type is read as kube-apiserver reads it (`PatchResource` in
//! `k8s.io/apiserver/pkg/endpoints/handlers/patch.go`): the first `Content-Type`, cut at the
//! first `;` when it is not the first byte, compared exactly. The patch is decoded as
//! `jsonpatch.DecodePatch` (`gopkg.in/evanphx/json-patch.v4`) does: a JSON array of objects,
//! the operation in the exact key `op`. An operation object with a repeated key is refused,
//! because which of the repeated values counts would be a guess.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{PLACEHOLDER, writes_placeholder};

/// The JSON Patch media type.
const JSON_PATCH: &str = "application/json-patch+json";

/// The other patch types kube-apiserver accepts (`patchTypes` of the API installer): none of
/// them can read a stored value.
const OTHER_PATCHES: [&str; 4] = [
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "application/apply-patch+cbor",
];

/// The JSON Patch operations that only write values the client sends.
const WRITING_OPS: [&str; 3] = ["add", "remove", "replace"];

/// Why a masked person's write to a Secret is refused. The message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefused {
    /// The body holds custody's placeholder.
    #[error(
        "this would write custody's placeholder {PLACEHOLDER:?} into the Secret, replacing its \
         values; you see masked values, so set new values explicitly (kubectl create secret ... \
         --dry-run=client -o yaml | kubectl apply -f -) or ask someone who may see them"
    )]
    Placeholder,
    /// A JSON Patch operation that reads stored values.
    #[error(
        "JSON Patch operation {op} (number {index}) is refused on Secrets for people who see \
         masked values: copy, move and test read stored values, which could come back \
         unmasked in another field, in an error message or as the test's answer; send the \
         values themselves with add, replace and remove, or use kubectl patch --type=merge"
    )]
    PatchOperation {
        /// The operation, as custody names it (`copy`, `move`, `test`, or a description).
        op: &'static str,
        /// Its position in the patch, from 0.
        index: usize,
    },
    /// A JSON Patch custody cannot read.
    #[error(
        "this JSON Patch cannot be read ({0}), and on Secrets what cannot be checked is \
         refused; send a JSON array of add, replace and remove operations"
    )]
    PatchUnreadable(String),
    /// A patch of a type custody does not know (kube-apiserver would refuse it too).
    #[error(
        "a patch of this Content-Type is not passed on Secrets; use one of \
         application/json-patch+json, application/merge-patch+json, \
         application/strategic-merge-patch+json or application/apply-patch+yaml"
    )]
    PatchType,
}

impl WriteRefused {
    /// The HTTP status of the refusal: 403 for what the person may not do, 400 or 415 for a
    /// request custody cannot read.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            WriteRefused::PatchOperation { .. } => StatusCode::FORBIDDEN,
            WriteRefused::Placeholder | WriteRefused::PatchUnreadable(_) => StatusCode::BAD_REQUEST,
            WriteRefused::PatchType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// One JSON Patch operation: serde's derive refuses a repeated `op`, `from` or `path`.
#[derive(Deserialize)]
struct Operation {
    op: String,
    #[serde(default, rename = "path")]
    _path: Option<Value>,
    #[serde(default, rename = "from")]
    _from: Option<Value>,
}

/// Checks a masked person's create, update or patch of a Secret. `content_type` is the
/// request's first `Content-Type` value, `body` the whole body.
///
/// # Errors
///
/// The reason the write is refused.
pub fn check_write(
    verb: &str,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<(), WriteRefused> {
    if verb == "patch" {
        match patch_type(content_type) {
            Some(JSON_PATCH) => check_json_patch(body)?,
            Some(_) => {}
            None => return Err(WriteRefused::PatchType),
        }
    }
    if writes_placeholder(body) {
        return Err(WriteRefused::Placeholder);
    }
    Ok(())
}

/// The patch type kube-apiserver reads from `Content-Type`, when it is one it accepts.
fn patch_type(content_type: Option<&[u8]>) -> Option<&'static str> {
    let value = std::str::from_utf8(content_type.unwrap_or_default()).ok()?;
    // `strings.Index(contentType, ";")`, cut only when > 0.
    let media = match value.find(';') {
        Some(i) if i > 0 => &value[..i],
        _ => value,
    };
    std::iter::once(JSON_PATCH)
        .chain(OTHER_PATCHES)
        .find(|known| *known == media)
}

/// Refuses a JSON Patch with an operation other than add, remove and replace, or one custody
/// cannot read: not a JSON array of objects, an operation without a string `op`, or with a
/// repeated `op`, `path` or `from` (Go's map keeps the last; custody does not guess).
fn check_json_patch(body: &[u8]) -> Result<(), WriteRefused> {
    // Go reads invalid UTF-8 as U+FFFD; serde does not check the strings it skips.
    if std::str::from_utf8(body).is_err() {
        return Err(WriteRefused::PatchUnreadable("not UTF-8".to_owned()));
    }
    let ops: Vec<Operation> = serde_json::from_slice(body).map_err(|e| {
        WriteRefused::PatchUnreadable(
            match e.classify() {
                serde_json::error::Category::Data => {
                    "not an array of operations, each with one string op"
                }
                serde_json::error::Category::Eof => "truncated JSON",
                serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                    "not valid JSON"
                }
            }
            .to_owned(),
        )
    })?;
    for (index, operation) in ops.iter().enumerate() {
        if !WRITING_OPS.contains(&operation.op.as_str()) {
            let op = match operation.op.as_str() {
                "copy" => "copy",
                "move" => "move",
                "test" => "test",
                _ => "(one that is not add, remove or replace)",
            };
            return Err(WriteRefused::PatchOperation { op, index });
        }
    }
    Ok(())
}
