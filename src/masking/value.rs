//! Masking of parsed API documents: a Secret, a list of them, a `Table` whose rows carry them
//! (or their `PartialObjectMetadata`), left as they are when they are a `Status`.
//!
//! The request already named the `secrets` resource, so anything that is not a list, a Table
//! or a Status is treated as a Secret (items of a list carry no `kind` in kube-apiserver's
//! JSON): failing towards masking is the safe direction.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::{LAST_APPLIED, MASKED_ANNOTATION, PLACEHOLDER};

/// Masks one document in place, whatever its shape.
pub(super) fn mask_document(doc: &mut Value) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    match obj.get("kind").and_then(Value::as_str) {
        // A Status names an outcome, never a value (delete answers one when the object is
        // already gone; failures are Statuses).
        Some("Status") => {}
        Some("Table") => {
            // Cells of the secrets Table are name, type, number of keys and age: no values. The
            // row's `object` is the Secret (includeObject=Object) or its PartialObjectMetadata
            // (the default), whose annotations still carry last-applied-configuration.
            if let Some(rows) = obj.get_mut("rows").and_then(Value::as_array_mut) {
                for row in rows {
                    if let Some(object) = row.get_mut("object") {
                        mask_document(object);
                    }
                }
            }
        }
        _ if obj.get("items").is_some_and(Value::is_array) => {
            // SecretList, List, PartialObjectMetadataList, and deletecollection's answer.
            if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    mask_document(item);
                }
            }
        }
        _ => mask_secret(obj, true),
    }
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
