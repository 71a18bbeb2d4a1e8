//! The PostgreSQL catalog against a real PostgreSQL (Debian's, started by the fixture): the
//! same recording indexed in `SQLite` and in PostgreSQL reads back the same; search finds what
//! the `SQLite` index finds; the audit cursor never skips a transaction that commits late.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::sync::Arc;

use custody_cluster::catalog::PgCatalog;
use custody_cluster::postgres::{Postgres, PostgresConfig};
use custody_cluster::schema;
use custody_fixtures::postgres::Postgres as Server;
use custody_recorder::catalog::{AuditChange, Catalog, SqliteCatalog};
use custody_recorder::index::{AuditCompletion, AuditQuery, AuditRecord, SessionQuery};
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::writer::{SessionHandle, WriterConfig};

async fn catalog() -> PgCatalog {
    let server = Server::shared().expect("postgresql fixture");
    let database = server.fresh_database().expect("a fresh database");
    let db = Postgres::new(&PostgresConfig::new(&database.url)).unwrap();
    assert_eq!(
        schema::migrate(&db).await.unwrap(),
        schema::latest_version()
    );
    // A second replica starting later finds the schema current and changes nothing.
    assert_eq!(
        schema::migrate(&db).await.unwrap(),
        schema::latest_version()
    );
    PgCatalog::new(db)
}

fn output(time_us: u64, text: &str) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(text.as_bytes().to_vec()),
    }
}

/// Records a small tty session and returns its index rows as the writer derived them.
async fn recorded(dir: &std::path::Path, id: &str) -> custody_recorder::index::IndexedSession {
    let key = Arc::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let meta = custody_recorder::sample::session_meta(id, (80, 24));
    let config = WriterConfig {
        frame_max_bytes: 64,
        ..WriterConfig::default()
    };
    let handle = SessionHandle::open(dir, meta, key, config).await.unwrap();
    handle
        .record(output(1_000, "$ cat /etc/passwd\r\n"))
        .await
        .unwrap();
    handle
        .record(output(2_000, "root:x:0:0:root:/root:/bin/bash\r\n"))
        .await
        .unwrap();
    for i in 0..20u64 {
        handle
            .record(output(
                3_000 + i * 100,
                &format!("line {i} of the Ümlaut report\r\n"),
            ))
            .await
            .unwrap();
    }
    handle
        .record(Event {
            time_us: 9_000,
            kind: EventKind::Exit {
                code: Some(0),
                message: String::new(),
            },
        })
        .await
        .unwrap();
    handle
        .seal(SessionStatus::Complete)
        .await
        .unwrap()
        .index
        .expect("the writer derives the rows")
}

#[tokio::test]
async fn a_session_reads_back_as_sqlite_holds_it() {
    let pg = catalog().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteCatalog::new(&dir.path().join("index.sqlite"));
    let id = "0b5f6a2e-1c6b-4d7e-9f00-000000000001";
    let rows = recorded(dir.path(), id).await;
    assert!(
        rows.frames.len() > 2,
        "several frames: {}",
        rows.frames.len()
    );

    // Open first (as a session starts), then the sealed rows replace it.
    pg.record_open(&rows.row.meta, &rows.row.file_path)
        .await
        .unwrap();
    assert_eq!(
        pg.session(id).await.unwrap().unwrap().status,
        SessionStatus::Open
    );
    assert_eq!(pg.open_sessions().await.unwrap().len(), 1);
    for catalog in [&pg as &dyn Catalog, &sqlite] {
        catalog.upsert(rows.clone()).await.unwrap();
        // Idempotent: indexing the same recording again changes nothing.
        catalog.upsert(rows.clone()).await.unwrap();
    }
    assert!(pg.open_sessions().await.unwrap().is_empty());
    assert_eq!(
        pg.session(id).await.unwrap(),
        sqlite.session(id).await.unwrap()
    );
    assert_eq!(
        pg.frames(id).await.unwrap(),
        sqlite.frames(id).await.unwrap()
    );
    assert_eq!(
        pg.seekpoints(id).await.unwrap().len(),
        sqlite.seekpoints(id).await.unwrap().len()
    );
    assert!(!pg.seekpoints(id).await.unwrap().is_empty());

    let everyone = SessionQuery::default();
    assert_eq!(
        pg.sessions(&everyone).await.unwrap(),
        sqlite.sessions(&everyone).await.unwrap()
    );
    let nobody = SessionQuery {
        initiator: Some("mallory".into()),
        ..SessionQuery::default()
    };
    assert!(pg.sessions(&nobody).await.unwrap().is_empty());

    // Search: a path is found by its parts, as in SQLite; case and accents fold.
    for words in ["/etc/passwd", "passwd", "ÜMLAUT report"] {
        let found = pg.search(words, None).await.unwrap();
        let expected = sqlite.search(words, None).await.unwrap();
        assert_eq!(found.len(), 1, "{words}: {found:?}");
        assert_eq!(found[0].session_id, expected[0].session_id, "{words}");
        assert!(found[0].snippet.contains('«'), "{words}: {found:?}");
        let by_text = SessionQuery {
            text: Some(words.into()),
            ..SessionQuery::default()
        };
        assert_eq!(pg.sessions(&by_text).await.unwrap().len(), 1, "{words}");
    }
    assert!(pg.search("shadow", None).await.unwrap().is_empty());
    assert!(pg.search("***", None).await.unwrap().is_empty());
}

fn audit(id: &str, time_us: i64, who: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        time_us,
        initiator_username: who.into(),
        initiator_subject: format!("sub-{who}"),
        initiator_groups: vec!["dev".into()],
        cluster: "prod".into(),
        verb: "get".into(),
        resource: "pods".into(),
        decision: "allow".into(),
        kubectl_session: Some("k-1".into()),
        ..AuditRecord::default()
    }
}

fn insert(record: AuditRecord) -> AuditChange {
    AuditChange::Insert(Box::new(record))
}

#[tokio::test]
async fn audit_rows_complete_and_query() {
    let pg = catalog().await;
    let now = chrono::Utc::now().timestamp_micros();
    pg.audit_batch(&[
        insert(audit("a", now - 10, "alice")),
        insert(audit("b", now, "bob")),
    ])
    .await
    .unwrap();
    pg.audit_batch(&[AuditChange::Complete(AuditCompletion {
        id: "a".into(),
        time_us: now - 10,
        status_code: 200,
        upstream_audit_id: Some("up-a".into()),
        latency_us: 1_500,
        bytes_in: 3,
        bytes_out: 42,
    })])
    .await
    .unwrap();
    let a = pg.audit_event("a").await.unwrap().unwrap();
    assert_eq!(a.status_code, Some(200));
    assert_eq!(a.bytes_out, Some(42));
    assert_eq!(a.initiator_groups, ["dev"]);
    assert!(pg.audit_event("nope").await.unwrap().is_none());
    let newest_first = pg.audit_events(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        newest_first
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"]
    );
    let alice = pg
        .audit_events(&AuditQuery {
            initiator: Some("alice".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(alice, vec![a]);
    // By subject as well as by username (two index-ordered queries joined), each row once.
    let by_subject = pg
        .audit_events(&AuditQuery {
            initiator: Some("sub-bob".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_subject.len(), 1);
    assert_eq!(by_subject[0].id, "b");
    let following_bob = pg
        .audit_events(&AuditQuery {
            initiator: Some("bob".into()),
            after_seq: Some(0),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(following_bob.iter().all(|r| r.initiator_username == "bob"));

    // A batch is all or nothing: a duplicate id at the same time fails the whole batch.
    let err = pg
        .audit_batch(&[
            insert(audit("c", now, "carol")),
            insert(audit("b", now, "bob")),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("insert an audit event"), "{err}");
    assert!(pg.audit_event("c").await.unwrap().is_none());

    // Rows in another month go to another partition, created on demand.
    let last_year = now - 400 * 24 * 3600 * 1_000_000;
    pg.audit_batch(&[insert(audit("old", last_year, "alice"))])
        .await
        .unwrap();
    assert_eq!(
        pg.audit_event("old").await.unwrap().unwrap().time_us,
        last_year
    );
}

#[tokio::test]
async fn the_follow_cursor_waits_for_a_transaction_that_commits_late() {
    let pg = catalog().await;
    let now = chrono::Utc::now().timestamp_micros();
    pg.audit_batch(&[insert(audit("first", now, "alice"))])
        .await
        .unwrap();
    let follow = |after: i64| AuditQuery {
        after_seq: Some(after),
        ..AuditQuery::default()
    };
    let page = settled(&pg, 0, 100).await;
    assert_eq!(page.len(), 1);
    let cursor = page[0].seq;

    // Another replica's batch takes its transaction id now and commits only later.
    let mut slow = pg.db().get().await.unwrap();
    let tx = slow.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO audit_events (id, time_us, initiator_method, initiator_issuer,
            initiator_subject, initiator_username, initiator_groups, effective_user,
            effective_groups, effective_uid, client_addr, user_agent, cluster, verb, api_group,
            api_version, resource, subresource, namespace, name, path, decision, reason)
         VALUES ('late', $1, '', '', '', 'bob', '{}', '', '{}', '', '', '', 'prod', 'get', '',
            'v1', 'pods', '', '', '', '', 'allow', '')",
        &[&now],
    )
    .await
    .unwrap();
    // A batch that starts after it and commits first.
    pg.audit_batch(&[insert(audit("early", now, "carol"))])
        .await
        .unwrap();
    // Committed, yet not returned: it would move the cursor past the late one.
    assert!(pg.audit_events(&follow(cursor)).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    let page = settled(&pg, cursor, 100).await;
    let ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["late", "early"], "in transaction order, none skipped");
    let next = page.last().unwrap().seq;
    assert!(pg.audit_events(&follow(next)).await.unwrap().is_empty());
}

/// A follow page after `after`, polled as a follower polls: the server is shared with the other
/// tests, and a transaction still running anywhere on it (one of theirs) holds the page back.
async fn settled(pg: &PgCatalog, after: i64, limit: usize) -> Vec<AuditRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = pg
            .audit_events(&AuditQuery {
                after_seq: Some(after),
                limit: Some(limit),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        if !page.is_empty() || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_page_ends_with_whole_batches() {
    let pg = catalog().await;
    let now = chrono::Utc::now().timestamp_micros();
    let batch: Vec<AuditChange> = (0..5)
        .map(|i| insert(audit(&format!("e{i}"), now + i, "alice")))
        .collect();
    pg.audit_batch(&batch).await.unwrap();
    pg.audit_batch(&[insert(audit("f", now + 10, "alice"))])
        .await
        .unwrap();
    // Polled: a transaction of another test on the shared server holds the page back.
    let page = settled(&pg, 0, 2).await;
    assert_eq!(
        page.len(),
        5,
        "the first batch whole, though the limit is 2"
    );
    let rest = settled(&pg, page[4].seq, 2).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, "f");
}

#[tokio::test]
async fn a_database_that_is_down_is_an_error_not_a_hang() {
    // Nothing listens on this port: connecting fails within the configured timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = PostgresConfig::new(&format!("postgres://custody:x@127.0.0.1:{port}/custody"));
    config.connect_timeout = std::time::Duration::from_millis(500);
    let pg = PgCatalog::new(Postgres::new(&config).unwrap());
    let started = std::time::Instant::now();
    let err = pg.session("x").await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(err.to_string().contains("connect"), "{err}");
    assert!(
        !err.to_string().contains(":x@"),
        "no password in errors: {err}"
    );
}
