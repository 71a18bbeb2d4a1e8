//! Tests of masking, on the bytes kube-sim (and kube-apiserver) serve for Secrets.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::Utc;
use custody_fixtures::kube_sim::store::{Store, resource_kind};
use custody_fixtures::kube_sim::table::{IncludeObject, table};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Value, json};

use super::*;

const SECRET_TEXT: &str = "s3cr3t-kube-sim";
const MASKED_B64: &str = "KG1hc2tlZCBieSBjdXN0b2R5KQ==";

fn info(verb: &str) -> RequestInfo {
    RequestInfo {
        verb: verb.into(),
        version: "v1".into(),
        resource: "secrets".into(),
        namespace: "default".into(),
        is_resource: true,
        ..RequestInfo::default()
    }
}

fn masked_plan(verb: &str) -> MaskPlan {
    plan(&info(verb), false, &mut HeaderMap::new()).unwrap()
}

/// What kubectl's client-side apply sends: the annotation holds the object as applied.
fn applied(string_data: &Value) -> String {
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials", "namespace": "default"}, "stringData": string_data, "type": "Opaque"});
    format!("{body}\n")
}

/// A Secret as kube-sim's store holds and serves it (the seeded `default/db-credentials`,
/// created by `kubectl apply`), the same one in every call.
fn secret() -> Value {
    static SECRET: LazyLock<Value> = LazyLock::new(stored_secret);
    SECRET.clone()
}

fn stored_secret() -> Value {
    let store = Store::new();
    let namespaces = resource_kind("namespaces").unwrap();
    store
        .create(namespaces, "", json!({"metadata": {"name": "default"}}))
        .unwrap();
    let string_data = json!({"username": "app", "password": SECRET_TEXT});
    store
        .create(
            resource_kind("secrets").unwrap(),
            "default",
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db-credentials", "annotations": {LAST_APPLIED: applied(&string_data), "team": "payments"}},
                "type": "Opaque",
                "stringData": string_data,
            }),
        )
        .unwrap()
}

fn secret_bytes() -> Vec<u8> {
    serde_json::to_vec(&secret()).unwrap()
}

/// No form of the secret's value is in these bytes.
fn assert_no_value(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(SECRET_TEXT), "value leaked: {text}");
    let b64 = STANDARD.encode(SECRET_TEXT);
    assert!(!text.contains(&b64), "base64 value leaked: {text}");
    // The username ("app") is a value too.
    assert!(
        !text.contains(&STANDARD.encode("app")),
        "value leaked: {text}"
    );
}

fn response(
    status: StatusCode,
    content_type: Option<&str>,
    chunks: Vec<Vec<u8>>,
) -> Response<Body> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
    let body = proxy::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(ct).unwrap(),
        );
    }
    resp.headers_mut()
        .insert("audit-id", HeaderValue::from_static("req-1"));
    resp
}

fn ok_json(body: Vec<u8>) -> Response<Body> {
    response(StatusCode::OK, Some("application/json"), vec![body])
}

async fn read(resp: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

async fn masked_json(verb: &str, resp: Response<Body>) -> Value {
    let (status, _, bytes) = read(mask_complete(masked_plan(verb), resp).await).await;
    assert!(status.is_success(), "{status}: {bytes:?}");
    assert_no_value(&bytes);
    serde_json::from_slice(&bytes).unwrap()
}

/// A masked Secret: values replaced, keys and everything else kept.
fn assert_masked_secret(obj: &Value, original: &Value) {
    let data = obj["data"].as_object().unwrap();
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(keys, ["password", "username"]);
    assert!(data.values().all(|v| v == MASKED_B64));
    assert_eq!(STANDARD.decode(MASKED_B64).unwrap(), PLACEHOLDER.as_bytes());
    let annotations = &obj["metadata"]["annotations"];
    assert_eq!(annotations[MASKED_ANNOTATION], "true");
    assert_eq!(annotations["team"], "payments");
    let last: Value = serde_json::from_str(annotations[LAST_APPLIED].as_str().unwrap()).unwrap();
    assert_eq!(
        last["stringData"],
        json!({"username": PLACEHOLDER, "password": PLACEHOLDER})
    );
    assert_eq!(last["metadata"]["name"], "db-credentials");
    assert!(last["metadata"].get("annotations").is_none());
    assert!(annotations[LAST_APPLIED].as_str().unwrap().ends_with('\n'));
    // Everything that is not a value is what the API server sent.
    let mut unmasked = obj.clone();
    unmasked["data"] = original["data"].clone();
    unmasked["metadata"]["annotations"] = original["metadata"]["annotations"].clone();
    assert_eq!(&unmasked, original);
}

#[test]
fn plans_only_core_secrets_for_people_who_may_not_see_them() {
    let mut headers = HeaderMap::new();
    for verb in [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ] {
        let p = plan(&info(verb), false, &mut headers).unwrap();
        assert_eq!(p.is_watch(), verb == "watch");
    }
    assert!(plan(&info("get"), true, &mut headers).is_none());
    let cluster_wide = RequestInfo {
        namespace: String::new(),
        ..info("list")
    };
    assert!(plan(&cluster_wide, false, &mut headers).is_some());
    for other in [
        RequestInfo {
            resource: "configmaps".into(),
            ..info("get")
        },
        RequestInfo {
            api_group: "example.com".into(),
            ..info("get")
        },
        RequestInfo {
            subresource: "status".into(),
            ..info("get")
        },
        RequestInfo {
            is_resource: false,
            ..info("get")
        },
    ] {
        let mut untouched = HeaderMap::new();
        untouched.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert!(plan(&other, false, &mut untouched).is_none());
        assert_eq!(untouched[ACCEPT], "application/vnd.kubernetes.protobuf");
    }
}

#[test]
fn plan_asks_for_json_without_encoding() {
    let cases = [
        // kubectl get: Tables, JSON fallback.
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ),
        // client-go with protobuf preferred.
        (
            "application/vnd.kubernetes.protobuf, application/json",
            "application/json",
        ),
        (
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ),
        ("application/vnd.kubernetes.protobuf", "application/json"),
        (
            "application/cbor, application/yaml, */*",
            "application/json",
        ),
        (
            "APPLICATION/JSON;stream=watch",
            "APPLICATION/JSON;stream=watch",
        ),
    ];
    for (accept, want) in cases {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        plan(&info("list"), false, &mut headers).unwrap();
        assert_eq!(headers.get_all(ACCEPT).iter().count(), 1);
        assert_eq!(headers[ACCEPT], want, "for {accept}");
        assert_eq!(headers[ACCEPT_ENCODING], "identity");
    }
    let mut none = HeaderMap::new();
    plan(&info("get"), false, &mut none).unwrap();
    assert_eq!(none[ACCEPT], "application/json");
    assert_eq!(none[ACCEPT_ENCODING], "identity");
}

#[tokio::test]
async fn masks_a_single_secret() {
    let original = secret();
    assert_eq!(
        original["data"]["password"],
        STANDARD.encode(SECRET_TEXT),
        "kube-sim serves the value"
    );
    let masked = masked_json("get", ok_json(secret_bytes())).await;
    assert_masked_secret(&masked, &original);
}

#[tokio::test]
async fn masks_string_data_and_odd_shapes() {
    let body = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"},
        "data": {"a": STANDARD.encode(SECRET_TEXT)}, "stringData": {"b": SECRET_TEXT}});
    let masked = masked_json("create", ok_json(body.to_string().into_bytes())).await;
    assert_eq!(masked["stringData"]["b"], PLACEHOLDER);
    assert_eq!(masked["data"]["a"], MASKED_B64);
    assert_eq!(masked["metadata"]["annotations"][MASKED_ANNOTATION], "true");

    let odd = json!({"kind": "Secret", "metadata": {"name": "s", "annotations": {LAST_APPLIED: format!("{{not json {SECRET_TEXT}")}}, "data": SECRET_TEXT});
    let masked = masked_json("get", ok_json(odd.to_string().into_bytes())).await;
    assert_eq!(masked["data"], PLACEHOLDER);
    assert_eq!(masked["metadata"]["annotations"][LAST_APPLIED], PLACEHOLDER);
}

#[tokio::test]
async fn masks_every_item_of_paged_lists() {
    let original = secret();
    // kube-apiserver's items carry no kind; a continue token and the list's metadata stay.
    let mut item = original.clone();
    item.as_object_mut().unwrap().remove("kind");
    item.as_object_mut().unwrap().remove("apiVersion");
    let list = json!({"kind": "SecretList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "12", "continue": "eyJucyI6ImRlZmF1bHQifQ", "remainingItemCount": 3},
        "items": [original, item]});
    let masked = masked_json("list", ok_json(list.to_string().into_bytes())).await;
    assert_eq!(masked["metadata"], list["metadata"]);
    assert_masked_secret(&masked["items"][0], &list["items"][0]);
    assert_masked_secret(&masked["items"][1], &list["items"][1]);

    // The answer to deletecollection is a list of what was deleted.
    let masked = masked_json("deletecollection", ok_json(list.to_string().into_bytes())).await;
    assert_eq!(masked["items"].as_array().unwrap().len(), 2);

    let partial = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": list["items"][0]["metadata"]}]});
    let masked = masked_json("list", ok_json(partial.to_string().into_bytes())).await;
    assert_eq!(
        masked["items"][0]["metadata"]["annotations"][MASKED_ANNOTATION],
        "true"
    );
}

#[tokio::test]
async fn masks_table_rows_with_object_and_metadata() {
    let original = secret();
    let meta = json!({"resourceVersion": "7"});
    for include in [
        IncludeObject::Object,
        IncludeObject::Metadata,
        IncludeObject::None,
    ] {
        let t = table(
            "secrets",
            std::slice::from_ref(&original),
            include,
            true,
            &meta,
            Utc::now(),
        );
        // The secrets Table's cells hold no values: name, type, number of keys, age.
        let columns: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Name", "Type", "Data", "Age"]);
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap()[..3],
            [json!("db-credentials"), json!("Opaque"), json!(2)]
        );
        let masked = masked_json("get", ok_json(t.to_string().into_bytes())).await;
        assert_eq!(masked["columnDefinitions"], t["columnDefinitions"]);
        assert_eq!(masked["rows"][0]["cells"], t["rows"][0]["cells"]);
        match include {
            IncludeObject::Object => assert_masked_secret(&masked["rows"][0]["object"], &original),
            IncludeObject::Metadata => {
                let annotations = &masked["rows"][0]["object"]["metadata"]["annotations"];
                assert_eq!(annotations[MASKED_ANNOTATION], "true");
                assert!(
                    annotations[LAST_APPLIED]
                        .as_str()
                        .unwrap()
                        .contains(PLACEHOLDER)
                );
            }
            IncludeObject::None => assert!(masked["rows"][0].get("object").is_none()),
        }
    }
}

#[tokio::test]
async fn masks_answers_to_writes_and_deletes() {
    let original = secret();
    for (verb, status) in [
        ("create", StatusCode::CREATED),
        ("update", StatusCode::OK),
        ("patch", StatusCode::OK),
        ("delete", StatusCode::OK),
        ("delete", StatusCode::ACCEPTED),
    ] {
        let resp = response(status, Some("application/json"), vec![secret_bytes()]);
        let (got, headers, bytes) = read(mask_complete(masked_plan(verb), resp).await).await;
        assert_eq!(got, status);
        assert_eq!(headers[CONTENT_LENGTH], bytes.len().to_string().as_str());
        assert_no_value(&bytes);
        assert_masked_secret(&serde_json::from_slice(&bytes).unwrap(), &original);
    }
    // A delete of something already going answers a Status: unchanged.
    let status = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"db-credentials","kind":"secrets"}}"#;
    let resp = ok_json(status.to_vec());
    let (_, _, bytes) = read(mask_complete(masked_plan("delete"), resp).await).await;
    assert_eq!(&bytes[..], status);
}

#[tokio::test]
async fn failures_pass_through_unchanged() {
    let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"secrets"},"code":404}"#;
    for sync in [true, false] {
        let resp = response(
            StatusCode::NOT_FOUND,
            Some("application/json"),
            vec![body.to_vec()],
        );
        let masked = if sync {
            mask_response(masked_plan("watch"), resp)
        } else {
            mask_complete(masked_plan("get"), resp).await
        };
        let (status, _, bytes) = read(masked).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(&bytes[..], body);
    }
}

/// The 502 Status custody answers, with the reason in its message.
async fn assert_refused(resp: Response<Body>, says: &str) {
    let (status, headers, bytes) = read(resp).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["audit-id"], "req-1");
    assert_no_value(&bytes);
    let s: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["code"].as_u64()),
        (Some("Status"), Some(502))
    );
    let message = s["message"].as_str().unwrap();
    assert!(
        message.contains("custody cannot mask") && message.contains(says),
        "{message}"
    );
}

fn protobuf_body() -> Vec<u8> {
    // kube-apiserver's protobuf envelope: magic, then a runtime.Unknown with the raw object.
    let mut body = b"k8s\0\n\x0c\n\x02v1\x12\x06Secret\x12".to_vec();
    body.extend_from_slice(SECRET_TEXT.as_bytes());
    body
}

#[tokio::test]
async fn refuses_protobuf() {
    for verb in ["get", "list", "watch"] {
        for ct in [
            "application/vnd.kubernetes.protobuf",
            "application/vnd.kubernetes.protobuf;stream=watch",
            "application/cbor",
        ] {
            let resp = response(StatusCode::OK, Some(ct), vec![protobuf_body()]);
            assert_refused(mask_response(masked_plan(verb), resp), "application/").await;
            let resp = response(StatusCode::OK, Some(ct), vec![protobuf_body()]);
            assert_refused(mask_complete(masked_plan(verb), resp).await, "application/").await;
        }
    }
    // Protobuf that does not say so: refused by its bytes.
    let resp = response(StatusCode::OK, None, vec![protobuf_body()]);
    assert_refused(mask_complete(masked_plan("get"), resp).await, "protobuf").await;
    // On the streaming path the head is gone already: the body fails, with no bytes.
    let resp = response(StatusCode::OK, None, vec![protobuf_body()]);
    let body = mask_response(masked_plan("get"), resp).into_body();
    assert!(body.collect().await.is_err());
}

/// A gzip member with one stored (uncompressed) deflate block: the secret's bytes appear as
/// they are inside it, so a leak would show. custody never inflates it, so the trailer's CRC
/// is left zero.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&u32::from(len).to_le_bytes());
    out
}

#[tokio::test]
async fn refuses_gzip() {
    let gzipped = gzip_stored(&secret_bytes());
    for verb in ["get", "list", "watch"] {
        for sync in [true, false] {
            let mut resp = ok_json(gzipped.clone());
            resp.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let resp = if sync {
                mask_response(masked_plan(verb), resp)
            } else {
                mask_complete(masked_plan(verb), resp).await
            };
            assert_refused(resp, "gzip").await;
        }
    }
    // Gzip that does not say so is not JSON: refused at its first byte.
    let resp = ok_json(gzipped);
    assert_refused(
        mask_complete(masked_plan("get"), resp).await,
        "not a JSON object",
    )
    .await;
}

#[tokio::test]
async fn refuses_oversized_and_broken_bodies() {
    let small = masked_plan("list").with_limits(100, 100);
    let resp = response(
        StatusCode::OK,
        Some("application/json"),
        vec![secret_bytes()],
    );
    assert_refused(mask_complete(small, resp).await, "larger than 100 bytes").await;
    let resp = response(
        StatusCode::OK,
        Some("application/json"),
        vec![secret_bytes()],
    );
    assert!(
        mask_response(small, resp)
            .into_body()
            .collect()
            .await
            .is_err()
    );

    let mut truncated = secret_bytes();
    truncated.truncate(truncated.len() / 2);
    let resp = ok_json(truncated);
    assert_refused(
        mask_complete(masked_plan("get"), resp).await,
        "not valid JSON",
    )
    .await;
}

fn event(kind: &str, object: &Value) -> Vec<u8> {
    format!("{}\n", json!({"type": kind, "object": object})).into_bytes()
}

/// A watch stream as kube-sim writes it: Secrets, Table events (column definitions only in
/// the first), a Status in an ERROR event, and strings full of braces and escapes.
fn watch_stream() -> (Vec<u8>, Vec<Value>) {
    let original = secret();
    let mut tricky = original.clone();
    tricky["metadata"]["annotations"]["note"] = json!("} { \" \\\" ]] [[ {\"data\": 1}");
    tricky["metadata"]["name"] = json!("tricky");
    let meta = json!({"resourceVersion": "9"});
    let first = table(
        "secrets",
        std::slice::from_ref(&original),
        IncludeObject::Object,
        true,
        &meta,
        Utc::now(),
    );
    let second = table(
        "secrets",
        &[tricky.clone()],
        IncludeObject::Metadata,
        false,
        &meta,
        Utc::now(),
    );
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
    let events = [
        ("ADDED", original.clone()),
        ("MODIFIED", tricky),
        ("ADDED", first),
        ("MODIFIED", second),
        ("DELETED", original),
        ("ERROR", status),
    ];
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for (kind, object) in events {
        bytes.extend(event(kind, &object));
        values.push(json!({"type": kind, "object": object}));
    }
    (bytes, values)
}

async fn masked_watch(chunks: Vec<Vec<u8>>) -> Bytes {
    let resp = response(StatusCode::OK, Some("application/json"), chunks);
    let (status, headers, bytes) = read(mask_response(masked_plan("watch"), resp)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(CONTENT_LENGTH).is_none());
    bytes
}

fn assert_masked_events(bytes: &[u8], originals: &[Value]) {
    assert_no_value(bytes);
    let events: Vec<Value> = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), originals.len());
    for (got, want) in events.iter().zip(originals) {
        assert_eq!(got["type"], want["type"]);
        let object = &got["object"];
        match object["kind"].as_str() {
            Some("Secret") => assert_masked_secret(object, &want["object"]),
            Some("Table") => {
                assert_eq!(
                    object["rows"][0]["cells"],
                    want["object"]["rows"][0]["cells"]
                );
                assert_eq!(
                    object["columnDefinitions"],
                    want["object"]["columnDefinitions"]
                );
                let row = &object["rows"][0]["object"];
                assert_eq!(row["metadata"]["annotations"][MASKED_ANNOTATION], "true");
            }
            _ => assert_eq!(object, &want["object"]),
        }
    }
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["note"],
        originals[1]["object"]["metadata"]["annotations"]["note"]
    );
}

#[tokio::test]
async fn masks_watch_events_across_any_chunk_boundary() {
    let (stream, originals) = watch_stream();
    // Everything in one chunk.
    assert_masked_events(&masked_watch(vec![stream.clone()]).await, &originals);
    // Every cut into two chunks (mid-event, mid-string, mid-escape, between events).
    for cut in (0..=stream.len()).step_by(7).chain([1, stream.len() - 1]) {
        let chunks = vec![stream[..cut].to_vec(), stream[cut..].to_vec()];
        assert_masked_events(&masked_watch(chunks).await, &originals);
    }
    // One byte at a time.
    let bytes: Vec<Vec<u8>> = stream.iter().map(|b| vec![*b]).collect();
    assert_masked_events(&masked_watch(bytes).await, &originals);
    // Without newlines between events.
    let packed: Vec<u8> = stream.iter().copied().filter(|b| *b != b'\n').collect();
    assert_masked_events(&masked_watch(vec![packed]).await, &originals);
}

#[tokio::test]
async fn watch_sends_each_event_as_soon_as_it_is_complete() {
    let (stream, _) = watch_stream();
    let first_end = stream.iter().position(|b| *b == b'\n').unwrap() + 1;
    let resp = response(
        StatusCode::OK,
        Some("application/json"),
        vec![
            stream[..first_end - 5].to_vec(),
            stream[first_end - 5..first_end + 3].to_vec(),
        ],
    );
    let mut body = mask_response(masked_plan("watch"), resp).into_body();
    // The first chunk completes nothing: nothing is sent for it, not even a part.
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let event: Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert!(frame.ends_with(b"\n"));
    // The stream ends inside the second event: its start is dropped.
    assert!(body.frame().await.is_none());
}

async fn watch_error(chunks: Vec<Vec<u8>>, plan: MaskPlan) -> (Vec<Value>, Bytes) {
    let resp = response(StatusCode::OK, Some("application/json"), chunks);
    let (_, _, bytes) = read(mask_response(plan, resp)).await;
    assert_no_value(&bytes);
    let events = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    (events, bytes)
}

#[tokio::test]
async fn watch_ends_on_events_it_cannot_mask() {
    let secret = secret();
    // An event larger than the bound, even when it arrives in small pieces.
    let big = event("ADDED", &secret);
    assert!(big.len() > 100);
    let pieces: Vec<Vec<u8>> = big.chunks(10).map(<[u8]>::to_vec).collect();
    let plan = masked_plan("watch").with_limits(MAX_BODY, 100);
    let (events, _) = watch_error(pieces, plan).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 502);
    assert!(
        events[0]["object"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 100 bytes")
    );

    // Events before the bad one were masked and sent; nothing after it.
    let mut stream = event("ADDED", &secret);
    stream.extend(event("ADDED", &secret));
    stream.extend_from_slice(&protobuf_body());
    stream.extend(event("MODIFIED", &secret));
    let (events, _) = watch_error(vec![stream], masked_plan("watch")).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["object"]["data"]["password"], MASKED_B64);
    let events = [events[0].clone(), events[2].clone()];
    assert_eq!(events[0]["object"]["data"]["password"], MASKED_B64);
    assert!(
        events[1]["object"]["message"]
            .as_str()
            .unwrap()
            .contains("not a sequence of JSON events")
    );

    // Braces that balance but are not JSON.
    let (events, _) = watch_error(vec![b"{\"type\": ADDED}".to_vec()], masked_plan("watch")).await;
    assert!(
        events[0]["object"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    // JSON that is not an event.
    let (events, _) = watch_error(vec![secret_bytes()], masked_plan("watch")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
}

#[test]
fn refuses_writes_of_the_placeholder() {
    let masked =
        json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": MASKED_B64}});
    assert!(writes_placeholder(masked.to_string().as_bytes()));
    let masked = json!({"stringData": {"password": PLACEHOLDER}});
    assert!(writes_placeholder(masked.to_string().as_bytes()));
    // Only inside the last-applied annotation (a kubectl edit that kept it).
    let annotation = json!({"metadata": {"annotations": {LAST_APPLIED: applied(&json!({"password": PLACEHOLDER}))}}});
    assert!(writes_placeholder(annotation.to_string().as_bytes()));
    // A JSON patch, YAML, and the same text spelled with escapes.
    assert!(writes_placeholder(
        format!(r#"[{{"op":"replace","path":"/data/password","value":"{MASKED_B64}"}}]"#)
            .as_bytes()
    ));
    assert!(writes_placeholder(
        format!("stringData:\n  password: {PLACEHOLDER}\n").as_bytes()
    ));
    assert!(writes_placeholder(
        br#"{"stringData":{"p":"\u0028masked by custody\u0029"}}"#
    ));
    // Ordinary writes pass, including an edit of a masked object's labels.
    assert!(!writes_placeholder(secret_bytes().as_slice()));
    assert!(!writes_placeholder(br#"{"metadata":{"labels":{"a":"b"}}}"#));
    assert!(!writes_placeholder(b""));
}

/// A Secret as kube-apiserver writes it in a watch event.
fn apiserver_event(kind: &str) -> Vec<u8> {
    format!("{{\"type\":\"{kind}\",\"object\":{}}}\n", secret()).into_bytes()
}

#[tokio::test]
async fn refuses_a_watch_where_one_answer_was_expected() {
    // `?watch=f` (and `?watch=`, a bare `?watch`) is a watch to the API server; classified as a
    // list, its answer used to pass unmasked when it held one event.
    let one = apiserver_event("ADDED");
    let mut two = one.clone();
    two.extend(apiserver_event("MODIFIED"));
    // kube-sim's order of keys: the object first.
    let sorted = format!("{{\"object\":{},\"type\":\"ADDED\"}}", secret()).into_bytes();
    let bookmark = br#"{"type":"BOOKMARK","object":{"kind":"Secret","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}"#.to_vec();
    for verb in [
        "get",
        "list",
        "create",
        "patch",
        "delete",
        "deletecollection",
    ] {
        for body in [&one, &two, &sorted, &bookmark] {
            let resp = ok_json(body.clone());
            assert_refused(
                mask_complete(masked_plan(verb), resp).await,
                "does not recognise",
            )
            .await;
            let resp = ok_json(body.clone());
            let streamed = mask_response(masked_plan(verb), resp).into_body();
            assert!(streamed.collect().await.is_err(), "{verb}");
        }
    }
}

#[tokio::test]
async fn refuses_a_watch_at_its_first_event_without_waiting_for_its_end() {
    // The API server keeps a watch open for minutes: the refusal must not wait for its end.
    let first = apiserver_event("ADDED");
    // `{"type":"ADDED","object"`: decided once the key `object` is complete (byte 24).
    for cut in [1, 10, 14, 23, 24, first.len()] {
        let frames = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from(
            first[..cut].to_vec(),
        )))])
        .chain(futures_util::stream::pending());
        let mut resp = Response::new(proxy::boxed(http_body_util::StreamBody::new(frames)));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut()
            .insert("audit-id", HeaderValue::from_static("req-1"));
        let wait = if cut >= 24 { 5000 } else { 300 };
        let answered = tokio::time::timeout(
            std::time::Duration::from_millis(wait),
            mask_complete(masked_plan("list"), resp),
        )
        .await;
        if cut >= 24 {
            assert_refused(answered.unwrap(), "watch event").await;
        } else {
            assert!(answered.is_err(), "nothing decides it after {cut} bytes");
        }
    }
    // A second document after the first, however the first looked.
    let status = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}"#;
    let frames = futures_util::stream::iter([
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(status))),
        Ok(Frame::data(Bytes::from_static(b"\n{"))),
    ])
    .chain(futures_util::stream::pending());
    let mut resp = Response::new(proxy::boxed(http_body_util::StreamBody::new(frames)));
    resp.headers_mut()
        .insert("audit-id", HeaderValue::from_static("req-1"));
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        mask_complete(masked_plan("get"), resp),
    )
    .await
    .unwrap();
    assert_refused(answered, "more than one JSON document").await;
}

#[tokio::test]
async fn refuses_shapes_it_does_not_know() {
    let secret = secret();
    let t = table(
        "secrets",
        std::slice::from_ref(&secret),
        IncludeObject::Object,
        true,
        &json!({}),
        Utc::now(),
    );
    let mut extra_column = t.clone();
    extra_column["columnDefinitions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "Password", "type": "string"}));
    let mut other_row_kind = t.clone();
    other_row_kind["rows"][0]["object"]["kind"] = json!("ConfigMap");
    let mut object_cell = t.clone();
    object_cell["rows"][0]["cells"][1] = json!({"password": SECRET_TEXT});
    let mut more_cells = t.clone();
    more_cells["rows"][0]["cells"]
        .as_array_mut()
        .unwrap()
        .push(json!(SECRET_TEXT));
    let mut other_version = t.clone();
    other_version["apiVersion"] = json!("example.com/v1");
    let mut no_kind = secret.clone();
    no_kind.as_object_mut().unwrap().remove("kind");
    let mut other_item =
        json!({"kind": "SecretList", "apiVersion": "v1", "items": [secret.clone()]});
    other_item["items"][0]["kind"] = json!("ConfigMap");
    let cases = [
        (json!([secret.clone()]), "not a JSON object"),
        (json!(null), "not a JSON object"),
        (json!(SECRET_TEXT), "not a JSON object"),
        (
            json!({"kind": "List", "apiVersion": "v1", "items": [secret.clone()]}),
            "kind custody does not know",
        ),
        (
            json!({"kind": "ConfigMap", "data": {"password": SECRET_TEXT}}),
            "kind custody does not know",
        ),
        (no_kind, "without a kind"),
        (
            json!({"kind": "SecretList", "items": {"a": secret.clone()}}),
            "not an array",
        ),
        (
            json!({"kind": "SecretList", "items": [SECRET_TEXT]}),
            "not an object",
        ),
        (other_item, "another kind"),
        (extra_column, "columns other than"),
        (other_row_kind, "another kind"),
        (object_cell, "cells other than"),
        (more_cells, "cells other than"),
        (other_version, "API version"),
    ];
    for (body, says) in cases {
        let resp = ok_json(body.to_string().into_bytes());
        assert_refused(mask_complete(masked_plan("get"), resp).await, says).await;
    }
    // Escapes spell the same names: decoded before they are compared.
    let escaped =
        secret
            .to_string()
            .replacen("\"kind\":\"Secret\"", r#""\u006bind":"Secr\u0065t""#, 1);
    assert!(escaped.contains("u006bind"));
    let masked = masked_json("get", ok_json(escaped.into_bytes())).await;
    assert_eq!(masked["data"]["password"], MASKED_B64);
    let escaped = String::from_utf8(apiserver_event("ADDED"))
        .unwrap()
        .replacen("\"object\"", r#""\u006fbject""#, 1);
    let resp = ok_json(escaped.into_bytes());
    assert_refused(mask_complete(masked_plan("get"), resp).await, "watch event").await;
    // An empty answer (a HEAD) holds nothing.
    let (status, _, bytes) =
        read(mask_complete(masked_plan("get"), ok_json(Vec::new())).await).await;
    assert_eq!((status, bytes.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn watch_refuses_events_it_does_not_know() {
    let secret = secret();
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410});
    let bad = [
        json!({"type": "SOMETHING", "object": secret}),
        json!({"type": "ADDED", "object": secret, "extra": secret}),
        json!({"type": "ADDED", "object": status}),
        json!({"type": "ERROR", "object": secret}),
        json!({"type": "ADDED", "object": {"kind": "SecretList", "items": [secret]}}),
        json!({"type": "ADDED", "object": {"kind": "ConfigMap", "data": {"p": SECRET_TEXT}}}),
        json!({"type": "ADDED", "object": [secret]}),
        json!({"type": "ADDED"}),
        json!({"object": secret}),
    ];
    for event in bad {
        let mut stream = apiserver_event("ADDED");
        stream.extend(format!("{event}\n").into_bytes());
        stream.extend(apiserver_event("MODIFIED"));
        let (events, _) = watch_error(vec![stream], masked_plan("watch")).await;
        assert_eq!(events.len(), 2, "{event}");
        assert_eq!(events[0]["object"]["data"]["password"], MASKED_B64);
        assert_eq!(events[1]["type"], "ERROR", "{event}");
        assert!(
            events[1]["object"]["message"]
                .as_str()
                .unwrap()
                .contains("does not recognise"),
            "{event}: {}",
            events[1]
        );
    }
    // Known events of every type pass, masked: a bookmark, PartialObjectMetadata, a Table.
    let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": secret["metadata"]});
    let bookmark = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": "9", "annotations": {"k8s.io/initial-events-end": "true"}}});
    let mut stream = event("BOOKMARK", &bookmark);
    stream.extend(event("ADDED", &partial));
    stream.extend(event("DELETED", &secret));
    let bytes = masked_watch(vec![stream]).await;
    assert_no_value(&bytes);
    let events: Vec<Value> = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert!(
        events[1]["object"]["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap()
            .contains(PLACEHOLDER)
    );
}

fn json_patch(ops: &Value) -> Vec<u8> {
    ops.to_string().into_bytes()
}

#[test]
fn json_patch_may_only_write_values_the_client_sends() {
    const JSON_PATCH: &[u8] = b"application/json-patch+json";
    let check = |ops: &Value| check_write("patch", Some(JSON_PATCH), &json_patch(ops));
    // add, remove, replace: the client's values.
    check(&json!([
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
        {"op": "replace", "path": "/data/password", "value": "bmV3"},
        {"op": "remove", "path": "/data/old"}
    ]))
    .unwrap();
    check(&json!([])).unwrap();
    // copy, move and test read stored values: refused, whatever the paths.
    for (op, extra) in [
        (
            "copy",
            json!({"from": "/data/password", "path": "/metadata/annotations/leak"}),
        ),
        ("copy", json!({"from": "/data/password", "path": "/type"})),
        (
            "move",
            json!({"from": "/data/password", "path": "/metadata/labels/leak"}),
        ),
        (
            "move",
            json!({"from": "/metadata/labels/a", "path": "/metadata/labels/b"}),
        ),
        (
            "test",
            json!({"path": "/data/password", "value": "Z3Vlc3M="}),
        ),
    ] {
        let mut operation = extra;
        operation["op"] = json!(op);
        let refused =
            check(&json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}, operation]))
                .unwrap_err();
        assert_eq!(refused, WriteRefused::PatchOperation { op, index: 1 });
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.to_string().contains("--type=merge"), "{refused}");
    }
    // Operations apimachinery does not know, or spells differently, are not guessed at.
    for op in ["Copy", "COPY", "_get", ""] {
        let refused = check(&json!([{"op": op, "path": "/x"}])).unwrap_err();
        assert!(
            matches!(refused, WriteRefused::PatchOperation { index: 0, .. }),
            "{op}"
        );
    }
    // A patch custody cannot read is refused: not JSON, not an array, no op, a repeated op
    // (Go's map keeps the last one; custody does not guess).
    for body in [
        &b"[{\"op\":\"add\""[..],
        b"{\"op\":\"copy\",\"from\":\"/data/password\",\"path\":\"/type\"}",
        b"[{\"path\":\"/type\"}]",
        b"[{\"op\":5}]",
        b"[\"copy\"]",
        b"[{\"op\":\"add\",\"op\":\"copy\",\"from\":\"/data/password\",\"path\":\"/type\"}]",
        b"[{\"op\":\"add\",\"path\":\"/a\",\"path\":\"/b\",\"value\":1}]",
        b"[{\"op\":\"add\",\"path\":\"/a\",\"value\":\"\xff\"}]",
        b"",
    ] {
        let refused = check_write("patch", Some(JSON_PATCH), body).unwrap_err();
        assert!(
            matches!(refused, WriteRefused::PatchUnreadable(_)),
            "{}: {refused:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
    // `\u` escapes spell the same op.
    let refused = check_write(
        "patch",
        Some(JSON_PATCH),
        br#"[{"\u006fp":"c\u006fpy","from":"/data/password","path":"/type"}]"#,
    )
    .unwrap_err();
    assert_eq!(
        refused,
        WriteRefused::PatchOperation {
            op: "copy",
            index: 0
        }
    );
}

#[test]
fn patch_types_are_read_as_the_api_server_reads_them() {
    let copy = json_patch(&json!([{"op": "copy", "from": "/data/password", "path": "/type"}]));
    // The media type is cut at a `;` that is not the first byte, and compared exactly.
    for ct in [
        &b"application/json-patch+json"[..],
        b"application/json-patch+json; charset=utf-8",
        b"application/json-patch+json;",
    ] {
        assert!(matches!(
            check_write("patch", Some(ct), &copy),
            Err(WriteRefused::PatchOperation { .. })
        ));
    }
    // The other patch types have no operation that reads a value.
    let merge = br#"{"metadata":{"annotations":{"a":"b"}},"stringData":{"password":"new"}}"#;
    for ct in [
        &b"application/merge-patch+json"[..],
        b"application/strategic-merge-patch+json",
        b"application/apply-patch+yaml",
        b"application/apply-patch+yaml; charset=utf-8",
    ] {
        check_write("patch", Some(ct), merge).unwrap();
        check_write("patch", Some(ct), b"stringData:\n  password: new\n").unwrap();
    }
    // What kube-apiserver would refuse as an unsupported media type, custody refuses first.
    for ct in [
        None,
        Some(&b"Application/JSON-Patch+JSON"[..]),
        Some(b" application/json-patch+json"),
        Some(b";application/json-patch+json"),
        Some(b"application/json"),
        Some(b"application/json-patch+json\xff"),
    ] {
        let refused = check_write("patch", ct, &copy).unwrap_err();
        assert_eq!(refused, WriteRefused::PatchType);
        assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // create and update bodies carry the client's values; only the placeholder is refused.
    check_write("create", Some(b"application/json"), &secret_bytes()).unwrap();
    check_write("update", None, &secret_bytes()).unwrap();
    let masked = json!({"kind": "Secret", "data": {"password": MASKED_B64}}).to_string();
    for verb in ["create", "update"] {
        assert_eq!(
            check_write(verb, None, masked.as_bytes()),
            Err(WriteRefused::Placeholder)
        );
    }
    assert_eq!(
        check_write(
            "patch",
            Some(b"application/merge-patch+json"),
            masked.as_bytes()
        ),
        Err(WriteRefused::Placeholder)
    );
}

/// kube-apiserver v1.37 answers a JSON Patch whose result does not decode as a Secret with the
/// whole patched object in the message; validation errors quote values. For a masked person
/// only the reason, code and field paths remain; name-only failures pass unchanged.
#[tokio::test]
async fn failure_messages_that_could_repeat_values_are_withheld() {
    let value_b64 = STANDARD.encode(SECRET_TEXT);
    let echo = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"Secret \"db\" is invalid: [bogus: Invalid value: \"{{\\\"data\\\":{{\\\"password\\\":\\\"{value_b64}\\\"}}}}\": unknown field]","reason":"Invalid","details":{{"name":"db","kind":"Secret","causes":[{{"reason":"FieldValueInvalid","message":"Invalid value: \"{value_b64}\"","field":"data[password]"}}]}},"code":422}}"#
    );
    for watch in [false, true] {
        let resp = response(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("application/json"),
            vec![echo.clone().into_bytes()],
        );
        let masked = if watch {
            mask_response(masked_plan("watch"), resp)
        } else {
            mask_complete(masked_plan("patch"), resp).await
        };
        let (status, _, bytes) = read(masked).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_no_value(&bytes);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["reason"], "Invalid");
        assert_eq!(doc["code"], 422);
        let message = doc["message"].as_str().unwrap();
        assert!(message.contains("withheld"), "{message}");
        assert!(message.contains("fields: data[password]"), "{message}");
        assert_eq!(doc["details"]["causes"][0]["field"], "data[password]");
    }
    // The authorizer's refusal and name-only failures keep their words.
    for body in [
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"db\" is forbidden: User \"alice\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"name":"db","kind":"secrets"},"code":403}"#,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on secrets \"db\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{"name":"db","kind":"secrets"},"code":409}"#,
    ] {
        let resp = response(
            StatusCode::FORBIDDEN,
            Some("application/json"),
            vec![body.as_bytes().to_vec()],
        );
        let (_, _, bytes) = read(mask_complete(masked_plan("patch"), resp).await).await;
        assert_eq!(&bytes[..], body.as_bytes());
    }
    // An admission plugin's Forbidden may say anything: withheld.
    let admission = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"admission webhook \"v.example\" denied the request: value s3cr3t is weak","reason":"Forbidden","code":403}"#;
    let resp = response(
        StatusCode::FORBIDDEN,
        Some("application/json"),
        vec![admission.as_bytes().to_vec()],
    );
    let (_, _, bytes) = read(mask_complete(masked_plan("create"), resp).await).await;
    assert!(!String::from_utf8_lossy(&bytes).contains("s3cr3t"));
}
