//! The index on real `SQLite` files: migrations, upserts, queries by every filter, and full-text
//! search over ANSI-stripped output and typed lines.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::path::Path;

use custody_recorder::Error;
use custody_recorder::index::{
    FrameFacts, Index, IndexedSession, SessionEnd, SessionQuery, TextSource, latest_version,
};
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta, SessionStatus,
};

fn meta(id: &str, user: &str, pod: &str, kind: SessionKind, started_at_us: i64) -> SessionMeta {
    SessionMeta {
        session_id: id.into(),
        kind,
        initiator: Initiator {
            issuer: "https://issuer.example".into(),
            subject: format!("sub-{user}"),
            username: format!("oidc:{user}"),
            groups: vec!["devs".into()],
        },
        effective: EffectiveIdentity {
            user: if user == "alice" {
                "admin".into()
            } else {
                format!("oidc:{user}")
            },
            groups: vec!["system:authenticated".into()],
            uid: String::new(),
        },
        cluster: if pod.starts_with("db") {
            "prod".into()
        } else {
            "dev".into()
        },
        namespace: "default".into(),
        pod: pod.into(),
        container: "main".into(),
        command: vec!["bash".into()],
        tty: kind != SessionKind::PortForward,
        client_addr: "10.0.0.1:5555".into(),
        user_agent: "kubectl/v1.33".into(),
        approval_id: None,
        gateway_id: "gw-1".into(),
        replica_id: None,
        started_at_us,
        term_size: Some((80, 24)),
    }
}

fn ev(time_us: u64, kind: EventKind) -> Event {
    Event { time_us, kind }
}

/// Splits events into frames of `per_frame` after an empty header frame.
fn frames(events: &[Event], per_frame: usize) -> Vec<FrameFacts> {
    let mut out = vec![FrameFacts {
        index: 0,
        offset: 0,
        compressed_len: 100,
        first_event_us: 0,
        last_event_us: 0,
        event_count: 0,
        chain_hash: [0; 32],
    }];
    for (i, chunk) in events.chunks(per_frame).enumerate() {
        let index = u32::try_from(i + 1).unwrap();
        out.push(FrameFacts {
            index,
            offset: u64::from(index) * 100,
            compressed_len: 100,
            first_event_us: chunk[0].time_us,
            last_event_us: chunk[chunk.len() - 1].time_us,
            event_count: u32::try_from(chunk.len()).unwrap(),
            chain_hash: [u8::try_from(index).unwrap(); 32],
        });
    }
    out
}

fn session(
    meta: &SessionMeta,
    events: &[Event],
    status: SessionStatus,
    exit: Option<i32>,
) -> IndexedSession {
    let mut events = events.to_vec();
    if let Some(code) = exit {
        let t = events.last().map_or(1, |e| e.time_us + 1);
        events.push(ev(
            t,
            EventKind::Exit {
                code: Some(code),
                message: String::new(),
            },
        ));
    }
    let end = SessionEnd {
        status,
        ended_at_us: Some(meta.started_at_us + 60_000_000),
        chain_head: Some([7; 32]),
        damage: None,
    };
    let path = Path::new("/data/recordings").join(format!("{}.cast.zst", meta.session_id));
    IndexedSession::derive(meta, &events, &frames(&events, 2), end, &path, 1234).unwrap()
}

fn populated(dir: &Path) -> Index {
    let mut index = Index::open(&dir.join("index.sqlite")).unwrap();
    let alice = [
        ev(
            1_000,
            EventKind::Input(b"kubectl get secrets -A\r".to_vec()),
        ),
        ev(
            2_000,
            EventKind::Output(b"\x1b[1mNAME\x1b[0m   \x1b[32mTYPE\x1b[0m\r\n".to_vec()),
        ),
        ev(
            3_000,
            EventKind::Output(b"db-password   Opaque\r\n".to_vec()),
        ),
        ev(
            4_000,
            EventKind::Input(b"cat /etc/shadwo\x7f\x7fow\r".to_vec()),
        ),
    ];
    let bob = [
        ev(1_000, EventKind::Input(b"ls\r".to_vec())),
        ev(
            2_000,
            EventKind::Output(b"\x1b[01;34mbin\x1b[0m  README\r\n".to_vec()),
        ),
    ];
    let s1 = meta("s1", "alice", "db-0", SessionKind::Exec, 1_000_000_000);
    let s2 = meta("s2", "bob", "web-0", SessionKind::Exec, 2_000_000_000);
    let s3 = meta(
        "s3",
        "bob",
        "web-1",
        SessionKind::PortForward,
        3_000_000_000,
    );
    index
        .upsert(&session(&s1, &alice, SessionStatus::Complete, Some(0)))
        .unwrap();
    index
        .upsert(&session(&s2, &bob, SessionStatus::Interrupted, None))
        .unwrap();
    let killed = SessionStatus::Terminated {
        reason: "approval_revoked".into(),
    };
    index.upsert(&session(&s3, &[], killed, Some(137))).unwrap();
    index
}

fn ids(index: &Index, query: &SessionQuery) -> Vec<String> {
    index
        .sessions(query)
        .unwrap()
        .into_iter()
        .map(|r| r.meta.session_id)
        .collect()
}

#[test]
fn migrates_from_empty_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    let index = Index::open(&path).unwrap();
    assert_eq!(index.schema_version().unwrap(), latest_version());
    let mode: String = index
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = index
        .connection()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fks: i64 = index
        .connection()
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fks, 1);
    drop(index);
    drop(populated(dir.path()));
    let reopened = Index::open(&path).unwrap();
    assert_eq!(reopened.schema_version().unwrap(), latest_version());
    assert_eq!(reopened.dump().unwrap().sessions.len(), 3);
}

#[test]
fn refuses_a_database_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    drop(Index::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", latest_version() + 1)
        .unwrap();
    drop(conn);
    match Index::open(&path) {
        Err(Error::IndexTooNew { found, supported }) => {
            assert_eq!((found, supported), (latest_version() + 1, latest_version()));
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a database newer than the code"),
    }
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(Index::open(&path), Err(Error::IndexDb { .. })));
}

#[test]
fn upsert_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = populated(dir.path());
    let before = index.dump().unwrap();
    let events = [ev(1_000, EventKind::Input(b"ls\r".to_vec()))];
    let s2 = meta("s2", "bob", "web-0", SessionKind::Exec, 2_000_000_000);
    index
        .upsert(&session(&s2, &events, SessionStatus::Complete, None))
        .unwrap();
    index
        .upsert(&session(&s2, &events, SessionStatus::Complete, None))
        .unwrap();
    let after = index.dump().unwrap();
    assert_eq!(after.sessions.len(), before.sessions.len());
    let row = index.session("s2").unwrap().unwrap();
    assert_eq!(row.status, SessionStatus::Complete);
    assert_eq!(index.frames("s2").unwrap().len(), 2);
    // The old text of s2 ("README") is gone, the new is searchable.
    assert!(index.search("README", None).unwrap().is_empty());
    assert_eq!(index.search("ls", None).unwrap()[0].session_id, "s2");
    // Re-running the whole population changes nothing.
    drop(index);
    let index = populated(dir.path());
    let mut expected = before;
    expected.text.retain(|(id, _)| id != "s2");
    let again = index.dump().unwrap();
    assert_eq!(again.sessions.len(), expected.sessions.len());
}

#[test]
fn record_open_is_found_by_recovery_and_kept_by_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
    let m = meta("live", "carol", "web-0", SessionKind::Attach, 5);
    let path = dir.path().join("recordings/live.cast.zst");
    index.record_open(&m, &path).unwrap();
    index.record_open(&m, &path).unwrap();
    assert_eq!(index.open_sessions().unwrap(), [("live".to_owned(), path)]);
    index
        .upsert(&session(&m, &[], SessionStatus::Interrupted, None))
        .unwrap();
    assert!(index.open_sessions().unwrap().is_empty());
}

#[test]
fn queries_by_each_filter() {
    let dir = tempfile::tempdir().unwrap();
    let index = populated(dir.path());
    let q = SessionQuery::default;
    assert_eq!(ids(&index, &q()), ["s3", "s2", "s1"]);
    let by = |f: fn(&mut SessionQuery)| {
        let mut query = q();
        f(&mut query);
        ids(&index, &query)
    };
    assert_eq!(by(|q| q.initiator = Some("oidc:alice".into())), ["s1"]);
    assert_eq!(by(|q| q.initiator = Some("sub-bob".into())), ["s3", "s2"]);
    assert_eq!(by(|q| q.effective_user = Some("admin".into())), ["s1"]);
    assert_eq!(by(|q| q.cluster = Some("prod".into())), ["s1"]);
    assert_eq!(
        by(|q| q.namespace = Some("default".into())),
        ["s3", "s2", "s1"]
    );
    assert_eq!(by(|q| q.pod = Some("web-1".into())), ["s3"]);
    assert_eq!(by(|q| q.kind = Some(SessionKind::PortForward)), ["s3"]);
    assert_eq!(
        by(|q| q.kind = Some(SessionKind::Attach)),
        Vec::<String>::new()
    );
    // s1 runs 1000 s..1060 s, s2 2000..2060, s3 3000..3060 (in seconds since the epoch).
    assert_eq!(by(|q| q.since = Some(2_030_000_000)), ["s3", "s2"]);
    assert_eq!(by(|q| q.until = Some(2_030_000_000)), ["s2", "s1"]);
    assert_eq!(
        by(|q| {
            q.since = Some(1_500_000_000);
            q.until = Some(2_500_000_000);
        }),
        ["s2"]
    );
    assert_eq!(by(|q| q.exit_code = Some(0)), ["s1"]);
    assert_eq!(by(|q| q.exit_code = Some(137)), ["s3"]);
    assert_eq!(by(|q| q.status = Some(SessionStatus::Interrupted)), ["s2"]);
    assert_eq!(
        by(|q| q.status = Some(SessionStatus::Terminated {
            reason: String::new()
        })),
        ["s3"]
    );
    assert_eq!(
        by(|q| q.status = Some(SessionStatus::Terminated {
            reason: "client_timeout".into()
        })),
        Vec::<String>::new()
    );
    assert_eq!(by(|q| q.text = Some("shadow".into())), ["s1"]);
    assert_eq!(by(|q| q.text = Some("bin readme".into())), ["s2"]);
    assert_eq!(
        by(|q| {
            q.text = Some("secrets".into());
            q.initiator = Some("oidc:bob".into());
        }),
        Vec::<String>::new()
    );
    assert_eq!(by(|q| q.limit = Some(1)), ["s3"]);
    let row = index.session("s1").unwrap().unwrap();
    assert_eq!(
        row.meta,
        meta("s1", "alice", "db-0", SessionKind::Exec, 1_000_000_000)
    );
    assert_eq!(row.exit_code, Some(0));
    assert_eq!(row.chain_head.as_deref(), Some(hex_of(7).as_str()));
}

fn hex_of(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[test]
fn full_text_search_sees_stripped_output_and_typed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let index = populated(dir.path());
    // Typed with a typo and two backspaces: the corrected command is what is indexed.
    let hits = index.search("/etc/shadow", None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].session_id, "s1");
    assert_eq!(hits[0].source, TextSource::Input);
    assert_eq!(hits[0].time_us, 4_000);
    assert!(
        hits[0].snippet.contains("/«etc/shadow»"),
        "{}",
        hits[0].snippet
    );
    assert!(index.search("shadwo", None).unwrap().is_empty());
    // Output with colour escapes around the words: found as plain words.
    let hits = index.search("NAME TYPE", None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].source, TextSource::Output);
    assert!(
        hits[0].snippet.contains("«NAME»   «TYPE»"),
        "{}",
        hits[0].snippet
    );
    assert!(
        index.search("32m", None).unwrap().is_empty(),
        "escape codes are not text"
    );
    // FTS syntax in user input is taken literally, never as a query.
    assert!(index.search("NEAR( \"x OR *", None).unwrap().is_empty());
    assert!(index.search("   ", None).unwrap().is_empty());
    let both = index.search("kubectl", None).unwrap();
    assert_eq!(both.len(), 1);
    let hits = index.search("bin", Some(5)).unwrap();
    assert_eq!(
        hits.iter()
            .map(|h| h.session_id.as_str())
            .collect::<Vec<_>>(),
        ["s2"]
    );
}

#[test]
fn fts5_is_compiled_in() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let yes: i64 = conn
        .query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(yes, 1);
}
