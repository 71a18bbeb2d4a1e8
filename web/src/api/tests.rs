//! The handlers against a data directory with real recordings: routing, ids, access.

use std::sync::Arc;

use custody_recorder::index::Index;
use custody_recorder::integrity::load_or_create_signing_key;
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use http_body_util::BodyExt;

use super::*;

const ALICE_SESSION: &str = "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70";

fn meta(id: &str, user: &str) -> SessionMeta {
    SessionMeta {
        session_id: id.into(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            issuer: "https://idp.example".into(),
            subject: format!("sub-{user}"),
            username: user.into(),
            groups: vec![],
        },
        effective: EffectiveIdentity {
            user: user.into(),
            ..EffectiveIdentity::default()
        },
        cluster: "prod".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        command: vec!["echo".into(), "hi".into()],
        tty: false,
        client_addr: "127.0.0.1:1".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "gw".into(),
        replica_id: None,
        started_at_us: 1_700_000_000_000_000,
        term_size: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    api: Api,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(load_or_create_signing_key(&dir.path().join("signing.key")).unwrap());
    let recordings = dir.path().join(RECORDINGS_DIR);
    std::fs::create_dir_all(&recordings).unwrap();
    let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
    let handle = SessionHandle::open(
        &recordings,
        meta(ALICE_SESSION, "alice"),
        key.clone(),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    handle
        .record(Event {
            time_us: 1000,
            kind: EventKind::Output(b"hi\n".to_vec()),
        })
        .await
        .unwrap();
    let path = handle.path().to_owned();
    handle.finish(SessionStatus::Complete).await.unwrap();
    let recording = read_recording(&path, None).unwrap();
    index.index_recording(&recording, &path).unwrap();
    let api = Api::new(ApiConfig {
        data_dir: dir.path().to_owned(),
        catalog: Arc::new(custody_recorder::catalog::SqliteCatalog::new(
            &dir.path().join("index.sqlite"),
        )),
        files: None,
        key: key.verifying_key(),
        auditor_groups: vec!["sre".into()],
        audit_json: Arc::new(|r: &AuditRecord| serde_json::json!({ "id": r.id })),
    });
    Fixture { _dir: dir, api }
}

fn caller(user: &str, groups: &[&str]) -> Caller {
    Caller {
        username: user.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

async fn get(api: &Api, who: &Caller, path_and_query: &str) -> (u16, Vec<u8>, Outcome) {
    let uri: Uri = format!("{API_PREFIX}{path_and_query}").parse().unwrap();
    let (response, outcome) = api.handle(who, &Method::GET, &uri, &HeaderMap::new()).await;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body, outcome)
}

#[tokio::test]
async fn owners_and_auditors_see_a_session_and_others_get_403() {
    let f = fixture().await;
    let alice = caller("alice", &["dev"]);
    let bob = caller("bob", &["sre"]);
    let mallory = caller("mallory", &["dev"]);
    let path = format!("/sessions/{ALICE_SESSION}");
    let (status, body, outcome) = get(&f.api, &alice, &path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let detail: SessionDetail = serde_json::from_slice(&body).unwrap();
    assert_eq!(detail.integrity.verdict, "intact");
    assert_eq!(outcome.name, ALICE_SESSION);
    assert_eq!(outcome.resource, "sessions");
    assert_eq!(get(&f.api, &bob, &path).await.0, 200);
    let (status, body, outcome) = get(&f.api, &mallory, &path).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("auditor group"));
    assert!(outcome.refusal.unwrap().contains("mallory"));

    let (status, body, _) = get(&f.api, &mallory, "/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "[]");
    let (status, body, _) = get(&f.api, &bob, "/sessions").await;
    assert_eq!(status, 200);
    let list: Vec<SessionSummary> = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        get(&f.api, &mallory, "/sessions?initiator=alice").await.0,
        403
    );
    assert_eq!(
        get(&f.api, &alice, "/sessions?initiator=alice").await.0,
        200
    );
}

#[tokio::test]
async fn ids_are_validated_before_any_lookup() {
    let f = fixture().await;
    let alice = caller("alice", &[]);
    for (path, want) in [
        ("/sessions/..%2f..%2fetc%2fpasswd", 400),
        ("/sessions/%2e%2e%2f", 400),
        ("/sessions/../../etc/passwd", 400),
        ("/sessions/not-a-uuid/download", 400),
        (&format!("/sessions/{}", "a".repeat(5000)), 400),
        ("/sessions/0b6f3c1e5d2a4c8e9f1a2b3c4d5e6f70", 400),
        ("/sessions/11111111-2222-4333-8444-555555555555", 404),
        (
            "/sessions/11111111-2222-4333-8444-555555555555/download",
            404,
        ),
        ("/sessions//download", 400),
        ("/nothing", 404),
    ] {
        let (status, body, outcome) = get(&f.api, &alice, path).await;
        assert_eq!(status, want, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(outcome.refusal.is_some(), "{path}");
        assert!(outcome.name.len() <= MAX_RECORDED_NAME);
    }
    let (status, _, outcome) = get(
        &f.api,
        &alice,
        &format!("/sessions/{ALICE_SESSION}/download?format=exe"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(outcome.format.as_deref(), Some("exe"));
}

#[tokio::test]
async fn downloads_come_in_every_format() {
    let f = fixture().await;
    let alice = caller("alice", &[]);
    let base = format!("/sessions/{ALICE_SESSION}/download");
    let (status, raw, outcome) = get(&f.api, &alice, &base).await;
    assert_eq!(status, 200);
    assert_eq!(outcome.format.as_deref(), Some("raw"));
    assert!(read_recording_bytes_ok(&raw));
    let (status, cast, _) = get(&f.api, &alice, &format!("{base}?format=cast")).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&cast).contains(r#""o", "hi\n""#));
    let (_, txt, _) = get(&f.api, &alice, &format!("{base}?format=txt")).await;
    assert_eq!(txt, b"hi\n");
    let (status, _, _) = get(&f.api, &alice, "/key").await;
    assert_eq!(status, 200);
    let uri: Uri = format!("{API_PREFIX}{base}").parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(header::RANGE, HeaderValue::from_static("bytes=4-9"));
    let (response, outcome) = f.api.handle(&alice, &Method::GET, &uri, &headers).await;
    assert_eq!(response.status(), 206);
    assert_eq!(outcome.status, 206);
    assert_eq!(
        response.headers()[header::CONTENT_RANGE],
        format!("bytes 4-9/{}", raw.len())
    );
    let part = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&part[..], &raw[4..10]);
    headers.insert(header::RANGE, HeaderValue::from_static("bytes=999999-"));
    let (response, _) = f.api.handle(&alice, &Method::GET, &uri, &headers).await;
    assert_eq!(response.status(), 416);
    let (response, _) = f
        .api
        .handle(&alice, &Method::POST, &uri, &HeaderMap::new())
        .await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn search_finds_words_only_in_sessions_the_caller_may_see() {
    let f = fixture().await;
    let alice = caller("alice", &["dev"]);
    let bob = caller("bob", &["sre"]);
    let mallory = caller("mallory", &["dev"]);
    let (status, body, outcome) = get(&f.api, &alice, "/search?q=hi").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        (outcome.verb.as_str(), outcome.resource.as_str()),
        ("list", "search")
    );
    let hits: Vec<crate::model::SearchResult> = serde_json::from_slice(&body).unwrap();
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.session_id == ALICE_SESSION));
    assert!(
        hits.iter()
            .any(|h| h.source == "output" && h.snippet.contains("«hi»"))
    );
    let (_, body, _) = get(&f.api, &bob, "/search?q=hi").await;
    assert_eq!(
        serde_json::from_slice::<Vec<crate::model::SearchResult>>(&body)
            .unwrap()
            .len(),
        hits.len()
    );
    // Someone else's words are not found for mallory: the same answer as no match.
    let (status, body, _) = get(&f.api, &mallory, "/search?q=hi").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "[]");
    assert_eq!(get(&f.api, &alice, "/search").await.0, 400);
    assert_eq!(get(&f.api, &alice, "/search?q=hi&limit=many").await.0, 400);
}

fn read_recording_bytes_ok(bytes: &[u8]) -> bool {
    custody_recorder::reader::read_recording_bytes(bytes, None).is_ok_and(|r| r.damage.is_none())
}

#[test]
fn api_paths_and_filters() {
    assert!(is_api_path("/custody/v1"));
    assert!(is_api_path("/custody/v1/sessions"));
    assert!(!is_api_path("/custody/v10"));
    assert!(!is_api_path("/clusters/x/api"));
    let f = parse_session_filter("initiator=alice&kind=port-forward&limit=5&exit_code=-1").unwrap();
    assert_eq!(f.initiator.as_deref(), Some("alice"));
    assert_eq!(f.kind, Some(SessionKind::PortForward));
    assert_eq!(f.limit, Some(5));
    assert!(parse_session_filter("kind=shell").is_err());
    assert!(parse_session_filter("bogus=1").is_err());
    let q = parse_audit_query("decision=deny&since=2026-11-27T15:00:00Z&limit=99999").unwrap();
    assert_eq!(q.decision.as_deref(), Some("deny"));
    assert_eq!(q.limit, Some(MAX_LIMIT));
    assert!(parse_audit_query("decision=maybe").is_err());
    assert_eq!(
        parse_session_id("0B6F3C1E-5D2A-4C8E-9F1A-2B3C4D5E6F70").unwrap(),
        ALICE_SESSION
    );
}
