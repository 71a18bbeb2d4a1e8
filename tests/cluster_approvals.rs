//! The cluster's approvals store on a real PostgreSQL: the same rules as the one-machine store
//! (decided once, never by the requester, grants end on time), and two replicas deciding the
//! same request at once: exactly one decision wins.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use custody::approval::postgres::PgStore;
use custody::approval::{ApprovalError, ApprovalStore, State};
use custody::policy::Scope;
use custody_cluster::postgres::{Postgres, PostgresConfig};

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn scope(pod: &str) -> Scope {
    Scope {
        cluster: "demo".into(),
        namespace: "kube-system".into(),
        pod: Some(pod.into()),
        action: "exec".into(),
        as_user: None,
        as_groups: Vec::new(),
    }
}

/// A store on a fresh, migrated database; each replica gets its own pool, as in production.
fn replicas(runtime: &tokio::runtime::Runtime, n: usize) -> Vec<Arc<dyn ApprovalStore>> {
    let server = custody_fixtures::postgres::Postgres::shared().unwrap();
    let database = server.fresh_database().unwrap();
    (0..n)
        .map(|_| {
            let db = Postgres::new(&PostgresConfig::new(&database.url)).unwrap();
            runtime
                .block_on(custody_cluster::schema::migrate(&db))
                .unwrap();
            Arc::new(PgStore::new(db, runtime.handle().clone())) as Arc<dyn ApprovalStore>
        })
        .collect()
}

#[test]
fn a_request_made_on_one_replica_is_decided_on_another_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stores = replicas(&runtime, 2);
    let (one, two) = (&stores[0], &stores[1]);
    let groups = vec!["custody:jit".to_owned()];
    let r = one
        .create("alice", &scope("coredns"), "INC-1", 600, &groups, at(0))
        .unwrap();
    assert_eq!(two.get(&r.id, at(1)).unwrap().state, State::Pending);
    let own = two.approve(&r.id, "alice", at(5)).unwrap_err();
    assert!(matches!(own, ApprovalError::Forbidden(_)), "{own}");
    let approved = two.approve(&r.id, "bob", at(10)).unwrap();
    assert_eq!(approved.expires_at, Some(at(610)));
    let twice = one.approve(&r.id, "carol", at(11)).unwrap_err();
    assert!(
        twice.to_string().contains("already approved by bob"),
        "{twice}"
    );
    let grants = one.active_grants("alice", at(20)).unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].groups, groups);
    assert!(one.active_grants("alice", at(610)).unwrap().is_empty());
    assert_eq!(two.get(&r.id, at(611)).unwrap().state, State::Expired);

    let b = one
        .create("alice", &scope("b"), "y", 600, &[], at(0))
        .unwrap();
    one.approve(&b.id, "bob", at(1)).unwrap();
    let revoked = two.revoke(&b.id, "bob", "done", at(2)).unwrap();
    assert_eq!(revoked.state, State::Revoked);
    let left = one.active_grants("alice", at(3)).unwrap();
    assert!(left.iter().all(|g| g.id != b.id), "{left:?}");
    let listed = one
        .list(
            &custody::approval::store::ListFilter {
                requester: Some("alice".into()),
                state: Some(State::Revoked),
            },
            at(3),
        )
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(matches!(
        two.get("nope", at(0)),
        Err(ApprovalError::NotFound(_))
    ));
}

#[test]
fn racing_approvers_on_different_replicas_decide_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stores = replicas(&runtime, 4);
    for round in 0..10 {
        let r = stores[0]
            .create("alice", &scope("race"), "x", 600, &[], at(round))
            .unwrap();
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let id = r.id.clone();
                    s.spawn(move || {
                        if i % 2 == 0 {
                            store
                                .approve(&id, &format!("approver{i}"), at(round + 1))
                                .is_ok()
                        } else {
                            store
                                .deny(&id, &format!("approver{i}"), "no", at(round + 1))
                                .is_ok()
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {outcomes:?}"
        );
    }
}
