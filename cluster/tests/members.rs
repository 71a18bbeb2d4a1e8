//! Replica membership, live sessions and commands on a real PostgreSQL: leases and epochs
//! fence a replica whose lease was taken, a replica with another signing key cannot join,
//! orphaned sessions are claimed by one replica only, and a command wakes its replica through
//! `LISTEN/NOTIFY` and is taken once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::time::{Duration, Instant};

use custody_cluster::catalog::PgCatalog;
use custody_cluster::commands::{self, CommandKind};
use custody_cluster::live;
use custody_cluster::members::{Membership, ReplicaInfo};
use custody_cluster::postgres::{Postgres, PostgresConfig};
use custody_recorder::catalog::Catalog;
use custody_recorder::index::IndexedSession;
use custody_recorder::model::SessionStatus;

async fn database() -> Postgres {
    let server = custody_fixtures::postgres::Postgres::shared().unwrap();
    let database = server.fresh_database().unwrap();
    let db = Postgres::new(&PostgresConfig::new(&database.url)).unwrap();
    custody_cluster::schema::migrate(&db).await.unwrap();
    db
}

fn info(id: &str, key: &str) -> ReplicaInfo {
    ReplicaInfo {
        id: id.into(),
        url: format!("https://{id}.example:8443"),
        key_fingerprint: key.into(),
        version: "test".into(),
    }
}

#[tokio::test]
async fn a_replica_with_another_key_cannot_join() {
    let db = database().await;
    Membership::join(&db, &info("a", "k1"), Duration::from_secs(10))
        .await
        .unwrap();
    let err = Membership::join(&db, &info("b", "k2"), Duration::from_secs(10))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("k2") && text.contains("k1") && text.contains("replica a"),
        "{text}"
    );
    Membership::join(&db, &info("b", "k1"), Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_taken_lease_fences_its_old_holder() {
    let db = database().await;
    let a = Membership::join(&db, &info("a", "k"), Duration::from_millis(300))
        .await
        .unwrap();
    let b = Membership::join(&db, &info("b", "k"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(a.renew().await.unwrap());
    // Not expired yet: nothing is taken.
    assert!(b.expire_others(Duration::ZERO).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.expire_others(Duration::ZERO).await.unwrap(), ["a"]);
    // `a` wakes up (a paused VM) and tries to carry on: its lease is gone.
    assert!(!a.renew().await.unwrap());
    // Rejoining gives a new epoch.
    let again = Membership::join(&db, &info("a", "k"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(again.epoch() > a.epoch());
    let members = b.members().await.unwrap();
    assert!(members.iter().all(|m| m.live), "{members:?}");
}

fn sealed(meta: &custody_recorder::model::SessionMeta) -> IndexedSession {
    IndexedSession::derive(
        meta,
        &[],
        &[],
        custody_recorder::index::SessionEnd {
            status: SessionStatus::Interrupted,
            ended_at_us: Some(meta.started_at_us + 1),
            chain_head: None,
            damage: None,
        },
        std::path::Path::new("recordings/x.cast.zst"),
        0,
    )
    .unwrap()
}

#[tokio::test]
async fn an_orphan_is_recovered_by_one_replica_and_its_zombie_cannot_write() {
    let db = database().await;
    let a = Membership::join(&db, &info("a", "k"), Duration::from_millis(300))
        .await
        .unwrap();
    let b = Membership::join(&db, &info("b", "k"), Duration::from_secs(30))
        .await
        .unwrap();
    let c = Membership::join(&db, &info("c", "k"), Duration::from_secs(30))
        .await
        .unwrap();
    let on_a = PgCatalog::for_replica(db.clone(), a.clone());
    let on_b = PgCatalog::for_replica(db.clone(), b.clone());
    let id = "6f1d2c3b-0000-4000-8000-000000000001";
    let mut meta = custody_recorder::sample::session_meta(id, (80, 24));
    meta.approval_id = Some("grant-1".into());
    on_a.record_open(&meta, std::path::Path::new("recordings/x.cast.zst"))
        .await
        .unwrap();
    let row = live::get(&db, id).await.unwrap().unwrap();
    assert_eq!((row.replica_id.as_str(), row.epoch), ("a", a.epoch()));
    assert_eq!(row.summary["session_id"], id);
    assert_eq!(
        live::replicas_of_grant(&db, "grant-1").await.unwrap(),
        ["a"]
    );
    assert!(live::orphans(&db).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let orphans = live::orphans(&db).await.unwrap();
    assert_eq!(orphans.len(), 1);
    // Two replicas race for it: one wins.
    let (by_b, by_c) = tokio::join!(
        live::claim(&db, &b, &orphans[0]),
        live::claim(&db, &c, &orphans[0])
    );
    assert!(by_b.unwrap() ^ by_c.unwrap());
    let holder = live::get(&db, id).await.unwrap().unwrap().replica_id;
    let on_holder = if holder == "b" {
        on_b.clone()
    } else {
        PgCatalog::for_replica(db.clone(), c.clone())
    };
    // The zombie (`a`) tries to seal its session: refused, nothing written.
    let err = on_a.upsert(sealed(&meta)).await.unwrap_err();
    assert!(err.to_string().contains("no longer held"), "{err}");
    assert_eq!(
        on_b.session(id).await.unwrap().unwrap().status,
        SessionStatus::Open
    );
    on_holder.upsert(sealed(&meta)).await.unwrap();
    assert!(live::get(&db, id).await.unwrap().is_none());
    assert_eq!(
        on_b.session(id).await.unwrap().unwrap().status,
        SessionStatus::Interrupted
    );
}

#[tokio::test]
async fn a_command_wakes_its_replica_and_is_taken_once() {
    let db = database().await;
    let mut listener = db.listen(commands::CHANNEL).await.unwrap();
    let started = Instant::now();
    let id = commands::issue(
        &db,
        "b",
        CommandKind::EndSession,
        "s-1",
        "admin_kill",
        "alice",
    )
    .await
    .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(1), listener.recv())
        .await
        .expect("woken within a second")
        .unwrap();
    assert_eq!(woken, "b");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(commands::take(&db, "a").await.unwrap().is_empty());
    let taken = commands::take(&db, "b").await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, id);
    assert_eq!(taken[0].kind, CommandKind::EndSession);
    assert_eq!(taken[0].target, "s-1");
    assert!(commands::take(&db, "b").await.unwrap().is_empty());
    commands::record_outcome(&db, id, "ended").await.unwrap();
    // Applied commands are kept a while, then pruned; pending ones never are.
    commands::issue(&db, "c", CommandKind::EndGrant, "g", "r", "bob")
        .await
        .unwrap();
    assert_eq!(
        commands::prune(&db, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(commands::prune(&db, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(commands::take(&db, "c").await.unwrap().len(), 1);
}
