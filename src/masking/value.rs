//! Masking of parsed API documents, by the shapes kube-apiserver really answers a request on
//! `secrets` with, and a refusal of every other shape.
//!
//! Known shapes (kube-apiserver v1.37, `k8s.io/apiserver/pkg/endpoints/handlers`): a `Secret`
//! (get, create, update, patch, and delete when the registry returns the object), a
//! `SecretList` (list, and deletecollection's answer), a `Table` (`as=Table`, its rows'
//! `object` a `Secret`, a `PartialObjectMetadata` or nothing), a `PartialObjectMetadata` and
//! its list (`as=PartialObjectMetadata[List]`), and a `Status` (every failure, and delete).
//! Anything else (a watch event where a single answer was expected, a JSON array, a kind
//! custody does not know) is refused: masking that guesses a shape is masking that can be
//! bypassed by a shape it did not guess.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::{LAST_APPLIED, MASKED_ANNOTATION, MaskError, PLACEHOLDER};

/// The columns of kube-apiserver's Table for Secrets (`secretColumnDefinitions` in
/// `k8s.io/kubernetes/pkg/printers/internalversion/printers.go`): the cells are the name, the
/// type, the number of keys and the age, never a value. A Table with other columns is not one
/// custody knows holds no value.
const SECRET_COLUMNS: [&str; 4] = ["Name", "Type", "Data", "Age"];

/// The kinds a top-level answer may have, for the streaming check of [`super::shape`].
pub(super) const KNOWN_KINDS: [&str; 6] = [
    "Secret",
    "SecretList",
    "Table",
    "PartialObjectMetadata",
    "PartialObjectMetadataList",
    "Status",
];

fn kind(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("kind").and_then(Value::as_str)
}

/// Masks one document in place, or refuses a shape custody does not know.
pub(super) fn mask_document(doc: &mut Value) -> Result<(), MaskError> {
    let obj = doc
        .as_object_mut()
        .ok_or(MaskError::Shape("the answer is not a JSON object"))?;
    match kind(obj) {
        // A Status names an outcome (delete answers one, failures are Statuses); a failure's
        // message may repeat the object, values included.
        Some("Status") => {
            withhold_status_message(obj);
            Ok(())
        }
        Some("Secret" | "PartialObjectMetadata") => {
            mask_secret(obj, true);
            Ok(())
        }
        Some("SecretList") => mask_items(obj, "Secret"),
        Some("PartialObjectMetadataList") => mask_items(obj, "PartialObjectMetadata"),
        Some("Table") => mask_table(obj),
        Some(_) => Err(MaskError::Shape(
            "an object of a kind custody does not know",
        )),
        None if obj.contains_key("object") => Err(MaskError::Shape(
            "a watch event where a single answer was expected (the API server read the request \
             as a watch)",
        )),
        None => Err(MaskError::Shape("an object without a kind")),
    }
}

/// Failure reasons whose messages the API server builds from names alone (the resource, the
/// object's name, the user, field paths of a conflict), never from an object's content
/// (`k8s.io/apimachinery/pkg/api/errors`: `NewNotFound`, `NewAlreadyExists`, `NewConflict`,
/// `NewGone`, `NewUnauthorized`, `NewMethodNotSupported`, ...). Every other failure message is
/// withheld from a masked person.
const NAME_ONLY_REASONS: [&str; 11] = [
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Unauthorized",
    "MethodNotAllowed",
    "NotAcceptable",
    "UnsupportedMediaType",
    "TooManyRequests",
    "RequestEntityTooLarge",
    "Expired",
];

/// Withholds a failure `Status`'s messages that could repeat Secret values, keeping its reason,
/// code and the field paths of its causes; `true` when it changed anything.
///
/// The API server repeats what it failed on: a JSON Patch whose result does not decode as a
/// Secret is answered 422 with the whole patched object, every value included, in `message`
/// and `details.causes[].message` (seen on kube-apiserver v1.37 for an unknown field under
/// `fieldValidation=Strict`, a value of the wrong type, a key moved into the labels), and
/// validation errors quote the invalid value. custody cannot tell a value from other text, so
/// only messages built from names alone pass: `NAME_ONLY_REASONS`, and `Forbidden` when it is
/// the authorizer's (`... is forbidden: User "..." cannot ...`), not an admission plugin's.
pub(super) fn withhold_status_message(obj: &mut Map<String, Value>) -> bool {
    if obj.get("status").and_then(Value::as_str) == Some("Success") {
        return false;
    }
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let authorizer = reason == "Forbidden"
        && message.contains(" is forbidden: User \"")
        && !message.contains("admission")
        && !message.contains('{');
    let has_cause_messages = obj
        .get("details")
        .and_then(|d| d.get("causes"))
        .and_then(Value::as_array)
        .is_some_and(|causes| causes.iter().any(|c| c.get("message").is_some()));
    if (NAME_ONLY_REASONS.contains(&reason.as_str()) || authorizer) && !has_cause_messages {
        return false;
    }
    let mut fields: Vec<String> = Vec::new();
    if let Some(causes) = obj
        .get_mut("details")
        .and_then(|d| d.get_mut("causes"))
        .and_then(Value::as_array_mut)
    {
        for cause in causes.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(field) = cause.get("field").and_then(Value::as_str)
                && !field.is_empty()
                && !fields.iter().any(|f| f == field)
            {
                fields.push(field.to_owned());
            }
            if cause.contains_key("message") {
                cause.insert("message".into(), Value::String(WITHHELD.to_owned()));
            }
        }
    }
    let code = obj.get("code").and_then(Value::as_u64).unwrap_or_default();
    let mut text = format!(
        "custody: the API server's message was withheld, because messages about a Secret can \
         repeat its values and your role does not show them (reason {}, code {code}",
        if reason.is_empty() { "none" } else { &reason }
    );
    if !fields.is_empty() {
        text.push_str("; fields: ");
        text.push_str(&fields.join(", "));
    }
    text.push(')');
    obj.insert("message".into(), Value::String(text));
    true
}

/// What a withheld cause message says.
const WITHHELD: &str = "(withheld by custody: it could repeat the Secret's values)";

/// Masks one watch event's object: a `Secret`, its `PartialObjectMetadata` or a `Table` for
/// `ADDED`, `MODIFIED`, `DELETED` and `BOOKMARK`, a `Status` for `ERROR`
/// (`k8s.io/apimachinery/pkg/watch.EventType`). Anything else is refused.
pub(super) fn mask_event(event: &mut Value) -> Result<(), MaskError> {
    let obj = event
        .as_object_mut()
        .ok_or(MaskError::Shape("a watch event that is not a JSON object"))?;
    if obj.len() != 2 {
        return Err(MaskError::Shape(
            "a watch event with other fields than type and object",
        ));
    }
    let event_type = obj.get("type").and_then(Value::as_str).map(str::to_owned);
    let object = obj
        .get_mut("object")
        .and_then(Value::as_object_mut)
        .ok_or(MaskError::Shape("a watch event without an object"))?;
    let allowed: &[&str] = match event_type.as_deref() {
        Some("ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK") => {
            &["Secret", "PartialObjectMetadata", "Table"]
        }
        Some("ERROR") => &["Status"],
        _ => {
            return Err(MaskError::Shape(
                "a watch event of a type custody does not know",
            ));
        }
    };
    if !kind(object).is_some_and(|k| allowed.contains(&k)) {
        return Err(MaskError::Shape(
            "a watch event whose object is of a kind custody does not expect",
        ));
    }
    match obj.get_mut("object") {
        Some(object) => mask_document(object),
        None => Err(MaskError::Shape("a watch event without an object")),
    }
}

/// Masks the items of a list whose items are `item_kind` (kube-apiserver's items carry no
/// kind; one that does must say `item_kind`).
fn mask_items(obj: &mut Map<String, Value>, item_kind: &str) -> Result<(), MaskError> {
    let items = match obj.get_mut("items") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(MaskError::Shape("a list whose items are not an array")),
    };
    for item in items {
        let item = item
            .as_object_mut()
            .ok_or(MaskError::Shape("a list item that is not an object"))?;
        if kind(item).is_some_and(|k| k != item_kind)
            || item.get("kind").is_some_and(|k| !k.is_string())
        {
            return Err(MaskError::Shape("a list item of another kind"));
        }
        mask_secret(item, true);
    }
    Ok(())
}

/// Masks a Table's rows. Its cells are the Secret printer's (no values); each row's `object`
/// is the Secret (`includeObject=Object`), its `PartialObjectMetadata` (the default, whose
/// annotations still carry last-applied-configuration) or nothing (`None`). After the first
/// event of a watch, kube-apiserver leaves the column definitions out (`NoHeaders`,
/// `watchEmbeddedEncoder.doEncode` in `k8s.io/apiserver/pkg/endpoints/handlers/response.go`).
fn mask_table(obj: &mut Map<String, Value>) -> Result<(), MaskError> {
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some("meta.k8s.io/v1" | "meta.k8s.io/v1beta1") => {}
        _ => {
            return Err(MaskError::Shape(
                "a Table of an API version custody does not know",
            ));
        }
    }
    match obj.get("columnDefinitions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(columns)) => {
            let known = columns.iter().all(|c| {
                c.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| SECRET_COLUMNS.contains(&n))
            });
            if !known || columns.len() > SECRET_COLUMNS.len() {
                return Err(MaskError::Shape(
                    "a Table with columns other than the Secret printer's",
                ));
            }
        }
        Some(_) => return Err(MaskError::Shape("a Table whose columns are not an array")),
    }
    let rows = match obj.get_mut("rows") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err(MaskError::Shape("a Table whose rows are not an array")),
    };
    for row in rows {
        let row = row
            .as_object_mut()
            .ok_or(MaskError::Shape("a Table row that is not an object"))?;
        let cells_known = match row.get("cells") {
            None | Some(Value::Null) => true,
            Some(Value::Array(cells)) => {
                cells.len() <= SECRET_COLUMNS.len()
                    && cells
                        .iter()
                        .all(|c| c.is_string() || c.is_number() || c.is_null())
            }
            Some(_) => false,
        };
        if !cells_known {
            return Err(MaskError::Shape(
                "a Table row with cells other than the Secret printer's",
            ));
        }
        match row.get_mut("object") {
            None | Some(Value::Null) => {}
            Some(object) => {
                let Some(inner) = object.as_object() else {
                    return Err(MaskError::Shape(
                        "a Table row whose object is not an object",
                    ));
                };
                if !matches!(kind(inner), Some("Secret" | "PartialObjectMetadata")) {
                    return Err(MaskError::Shape(
                        "a Table row holding an object of another kind",
                    ));
                }
                mask_document(object)?;
            }
        }
    }
    Ok(())
}

/// Masks a Secret's (or its metadata's) values; `mark` adds the `custody.dev/masked`
/// annotation (not inside last-applied-configuration, which must stay what kubectl wrote).
fn mask_secret(obj: &mut Map<String, Value>, mark: bool) {
    let encoded = Value::String(STANDARD.encode(PLACEHOLDER));
    if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            value.clone_from(&encoded);
        }
    }
    if let Some(data) = obj.get_mut("stringData").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            *value = Value::String(PLACEHOLDER.to_owned());
        }
    }
    // `data`/`stringData` that are not objects would be rejected by the API server; a value
    // in any other shape is still a value, so it goes too.
    for field in ["data", "stringData"] {
        if let Some(value) = obj.get_mut(field)
            && !value.is_object()
            && !value.is_null()
        {
            *value = Value::String(PLACEHOLDER.to_owned());
        }
    }
    if mark {
        obj.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Some(metadata) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
        && let Some(applied) = annotations.get_mut(LAST_APPLIED)
    {
        *applied = Value::String(mask_last_applied(applied.as_str().unwrap_or_default()));
    }
    if mark {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                MASKED_ANNOTATION.to_owned(),
                Value::String("true".to_owned()),
            );
        }
    }
}

/// The last-applied annotation is the whole Secret as kubectl sent it, values included: it is
/// masked like the object. If it is not JSON, nothing in it can be trusted to be harmless.
fn mask_last_applied(text: &str) -> String {
    let Ok(mut applied) = serde_json::from_str::<Value>(text) else {
        return PLACEHOLDER.to_owned();
    };
    let Some(obj) = applied.as_object_mut() else {
        return PLACEHOLDER.to_owned();
    };
    mask_secret(obj, false);
    // kubectl writes the annotation as compact JSON and a newline; keep that form.
    let newline = if text.ends_with('\n') { "\n" } else { "" };
    format!("{applied}{newline}")
}
