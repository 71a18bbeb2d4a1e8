use super::*;

fn record(id: &str, time_us: i64, user: &str, decision: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        time_us,
        initiator_method: "oidc".into(),
        initiator_username: user.into(),
        initiator_groups: vec!["dev".into()],
        effective_user: user.into(),
        effective_groups: vec!["dev".into()],
        cluster: "sim".into(),
        verb: "list".into(),
        api_version: "v1".into(),
        resource: "pods".into(),
        namespace: "default".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        decision: decision.into(),
        kubectl_session: Some("s1".into()),
        ..AuditRecord::default()
    }
}

#[test]
fn inserts_completes_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(&dir.path().join("index.db")).unwrap();
    let s1 = index
        .insert_audit(&record("a", 10, "alice", "allow"))
        .unwrap();
    let s2 = index.insert_audit(&record("b", 20, "bob", "deny")).unwrap();
    assert!(s2 > s1);
    assert!(
        index
            .complete_audit(&AuditCompletion {
                id: "a".into(),
                time_us: 10,
                status_code: 200,
                upstream_audit_id: Some("a".into()),
                latency_us: 1500,
                bytes_in: 0,
                bytes_out: 42,
            })
            .unwrap()
    );
    assert!(!index.complete_audit(&AuditCompletion::default()).unwrap());
    let a = index.audit_event("a").unwrap().unwrap();
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.bytes_out, Some(42));
    assert_eq!(a.initiator_groups, ["dev"]);
    assert_eq!(a.seq, s1);

    let all = index.audit_events(&AuditQuery::default()).unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    let denied = index
        .audit_events(&AuditQuery {
            decision: Some("deny".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].initiator_username, "bob");
    let by_time = index
        .audit_events(&AuditQuery {
            since_us: Some(15),
            initiator: Some("bob".into()),
            kubectl_session: Some("s1".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(by_time.len(), 1);
    let after = index
        .audit_events(&AuditQuery {
            after_seq: Some(s1),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(
        after.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
}

#[test]
fn duplicate_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(&dir.path().join("index.db")).unwrap();
    index
        .insert_audit(&record("a", 10, "alice", "allow"))
        .unwrap();
    assert!(
        index
            .insert_audit(&record("a", 11, "alice", "allow"))
            .is_err()
    );
}
