use std::net::SocketAddr;

use super::super::{AuditMode, AuditSink};
use super::*;

fn event(user: &str, allowed: bool) -> AuditEvent {
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut e = AuditEvent::new(uuid::Uuid::new_v4(), peer);
    e.initiator = Some(Principal {
        method: AuthMethod::Oidc,
        issuer: "https://issuer".into(),
        subject: format!("sub-{user}"),
        username: user.into(),
        groups: vec!["dev".into()],
        expires_at: None,
    });
    e.effective = Some(EffectiveIdentity {
        user: user.into(),
        groups: vec!["dev".into()],
        uid: String::new(),
    });
    e.cluster = "sim".into();
    e.request = crate::classify::classify("GET", "/api/v1/namespaces/default/pods", None).unwrap();
    e.decision = if allowed {
        Decision::Allow
    } else {
        Decision::Deny("no".into())
    };
    e.kubectl_session = Some("sess".into());
    e
}

#[tokio::test]
async fn sink_writes_file_and_index_and_queries_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sink = AuditSink::open(dir.path(), AuditMode::Strict).unwrap();
    let a = event("alice", true);
    sink.record_decision(&a).await.unwrap();
    let mut done = a.clone();
    done.status_code = Some(200);
    done.latency_ms = Some(12);
    done.bytes_out = Some(99);
    done.bytes_in = Some(0);
    done.upstream_audit_id = Some(a.id.to_string());
    sink.record_completion(&done).await.unwrap();
    let b = event("bob", false);
    sink.record_decision(&b).await.unwrap();

    let text = std::fs::read_to_string(dir.path().join("audit/audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["stage"], "decision");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["stage"], "complete");
    assert_eq!(lines[1]["status_code"], 200);
    assert_eq!(lines[2]["decision"], "deny");
    assert_eq!(lines[2]["reason"], "no");
    assert_eq!(lines[2]["initiator"]["username"], "bob");

    let index = custody_recorder::index::Index::open(&dir.path().join("index.sqlite")).unwrap();
    let found = query(&index, &AuditFilter::default()).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[1], done);
    let denied = query(
        &index,
        &AuditFilter {
            allowed: Some(false),
            ..AuditFilter::default()
        },
    )
    .unwrap();
    assert_eq!(denied, std::slice::from_ref(&b));
    let (first, cursor) = follow(&index, &AuditFilter::default(), 0).unwrap();
    assert_eq!(first.len(), 2);
    let (again, same) = follow(&index, &AuditFilter::default(), cursor).unwrap();
    assert!(again.is_empty());
    assert_eq!(same, cursor);
}

#[tokio::test]
async fn a_full_disk_fails_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let sink = AuditSink::with_paths(
        std::path::Path::new("/dev/full"),
        &dir.path().join("index.sqlite"),
        AuditMode::Strict,
    )
    .unwrap();
    let err = sink
        .record_decision(&event("alice", true))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuditFile { .. }), "{err}");
}

#[test]
fn decision_serializes_flat() {
    let e = event("alice", true);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["decision"], "allow");
    assert!(v.get("reason").is_none());
    let back: AuditEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
    let d = event("alice", false);
    let back: AuditEvent = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
    assert_eq!(back, d);
}

#[test]
fn the_grant_is_kept_and_read_back_from_older_rows_too() {
    let mut e = event("alice", true);
    let grant = uuid::Uuid::new_v4().to_string();
    e.approval_id = Some(grant.clone());
    e.allowed_by = Some(format!(
        "approved access request {grant} allows exec pods/x in kube-system until 2030-01-01T00:00:00+00:00"
    ));
    let mut record = to_record(&e);
    assert_eq!(record.approval_id.as_deref(), Some(grant.as_str()));
    assert_eq!(from_record(&record).approval_id, Some(grant.clone()));
    // A row written before the column was filled: the reason names the grant.
    record.approval_id = None;
    assert_eq!(from_record(&record).approval_id, Some(grant));
    assert_eq!(grant_in("allowed by role dev"), None);
}
