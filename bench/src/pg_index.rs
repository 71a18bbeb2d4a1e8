//! Scenarios 8 and 9: the cluster catalog on PostgreSQL. `pg-index` fills a throwaway server
//! (the real schema, `custody_cluster::schema::migrate`, and its monthly partitions) with a
//! year of sessions, their searchable text and audit rows by `COPY`, then times the queries
//! the gateway makes through `PgCatalog` (`sessions`, `session`, `search`, `audit_events` and
//! the follow cursor); a query that misses its target is run once more under `auto_explain`
//! and its plan goes into the report. `pg-audit` times one `audit_batch` (a decision, and a
//! batch of 64) on PostgreSQL against the `SQLite` catalog in the same run.

use std::fmt::Write as _;
use std::path::Path;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody_cluster::catalog::PgCatalog;
use custody_cluster::partition::{Month, Partitioned, Partitions};
use custody_cluster::postgres::{Postgres, PostgresConfig};
use custody_fixtures::postgres::{Postgres as Server, PostgresOptions};
use custody_recorder::catalog::{AuditChange, Catalog, SqliteCatalog};
use custody_recorder::index::{AuditQuery, AuditRecord, SessionQuery};
use futures_util::SinkExt as _;
use serde_json::json;

use crate::Plan;
use crate::report::{Report, Section, Summary, percentile};

const USERS: u64 = 500;
const NAMESPACES: u64 = 40;
/// Searchable text rows per session: one typed line, one piece of output.
const TEXT_ROWS: u64 = 2;
/// Audit rows per writing transaction (`txid`): the gateway's writer batches what is queued.
const ROWS_PER_TX: u64 = 16;
/// 2025-01-01T00:00:00Z: the data covers the twelve months of 2025.
const START_US: i64 = 1_735_689_600_000_000;
const DAY_US: i64 = 86_400_000_000;
const SPAN_US: i64 = 365 * DAY_US;
/// "Now" for the queries: the end of the data.
const END_US: i64 = START_US + SPAN_US;
/// One text row in this many holds the common term; one session in `RARE` the rare one.
const COMMON: u64 = 10;
const RARE: u64 = 50_000;
const COMMON_TERM: &str = "timeout";
const RARE_TERM: &str = "kernelpanic";
/// Bytes on disk per session (its row, two text rows, their indexes) and per audit row, as
/// measured on this schema; used to fit the data in the free disk space.
const SESSION_BYTES: u64 = 2_000;
const AUDIT_BYTES: u64 = 1_000;
/// Neutral words of the generated output.
const WORDS: [&str; 16] = [
    "postgres",
    "nginx",
    "restart",
    "migrate",
    "backup",
    "deploy",
    "rollout",
    "worker",
    "queue",
    "cache",
    "ready",
    "pending",
    "scheduled",
    "pulled",
    "created",
    "started",
];

/// A deterministic hash of `(stream, i, field)`: each generated value depends only on its row,
/// so the three `COPY` streams agree on a session's id and start without sharing state.
fn hash(stream: u64, i: u64, field: u64) -> u64 {
    let mut z = stream
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(field.wrapping_mul(0x94d0_49bb_1331_11eb));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A random (v4-shaped) UUID, as the gateway's ids are.
fn uuid(stream: u64, i: u64) -> String {
    let (a, b) = (hash(stream, i, 100), hash(stream, i, 101));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48 & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Session `i` of `n`: its id and start (in time order, with jitter).
fn session_at(i: u64, n: u64) -> (String, i64) {
    let step = SPAN_US / to_i64(n.max(1));
    let started = START_US + to_i64(i) * step + to_i64(hash(1, i, 0) % step.max(1).unsigned_abs());
    (uuid(1, i), started)
}

/// Audit row `i` of `m`: its time (in order, with jitter).
fn audit_time(i: u64, m: u64) -> i64 {
    let step = SPAN_US / to_i64(m.max(1));
    START_US + to_i64(i) * step + to_i64(hash(3, i, 0) % step.max(1).unsigned_abs())
}

/// Sends `buf` to a `COPY` sink once it holds about a MiB.
async fn flush(
    sink: &mut std::pin::Pin<&mut tokio_postgres::CopyInSink<Bytes>>,
    buf: &mut String,
    force: bool,
) -> anyhow::Result<()> {
    if force || buf.len() >= 1 << 20 {
        sink.send(Bytes::from(std::mem::take(buf))).await?;
    }
    Ok(())
}

/// `COPY`s `n` sessions into `sessions`.
async fn copy_sessions(db: &Postgres, n: u64) -> anyhow::Result<()> {
    let client = db.get().await?;
    let sink = client
        .copy_in(
            "COPY sessions (id, kind, initiator_issuer, initiator_subject, initiator_username,
               initiator_groups, effective_user, effective_groups, effective_uid, cluster, namespace,
               pod, container, command, tty, term_cols, term_rows, client_addr, user_agent,
               gateway_id, started_at_us, ended_at_us, status, exit_code, event_count,
               frame_count, chain_head, file_path, file_size, replica_id) FROM STDIN",
        )
        .await?;
    let mut sink = pin!(sink);
    let mut buf = String::with_capacity(2 << 20);
    for i in 0..n {
        let (id, started) = session_at(i, n);
        let user = hash(1, i, 1) % USERS;
        let ended = started + to_i64(hash(1, i, 2) % 3_600_000_000);
        let _ = writeln!(
            buf,
            "{id}\texec\thttps://issuer.example\tsub-{user}\tuser-{user}\t{{dev}}\tuser-{user}\t{{dev}}\t\t\
             cluster-{}\tns-{}\tapp-{}-{:05x}\tmain\t{{sh}}\tt\t120\t40\t10.0.{}.{}:5000\tkubectl/v1.32.5\t\
             gw\t{started}\t{ended}\tcomplete\t0\t{}\t{}\t{:064x}\trecordings/{id}.cast.zst\t{}\treplica-{}",
            i % 4,
            hash(1, i, 3) % NAMESPACES,
            hash(1, i, 4) % 200,
            hash(1, i, 5) % (1 << 20),
            hash(1, i, 6) % 256,
            hash(1, i, 7) % 256,
            100 + hash(1, i, 8) % 5000,
            1 + hash(1, i, 9) % 8,
            u128::from(hash(1, i, 10)),
            4096 + hash(1, i, 11) % 1_000_000,
            i % 3,
        );
        flush(&mut sink, &mut buf, false).await?;
    }
    flush(&mut sink, &mut buf, true).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// The body of text row `seq` of session `i`: a typed command, or a piece of output. The
/// common term is in one row in [`COMMON`], the rare one in the output of one session in
/// [`RARE`].
fn text_body(i: u64, seq: u64) -> String {
    let word = |f: u64| WORDS[usize::try_from(hash(2, i * TEXT_ROWS + seq, f) % 16).unwrap_or(0)];
    let common = if hash(2, i * TEXT_ROWS + seq, 0).is_multiple_of(COMMON) {
        format!(" {COMMON_TERM}")
    } else {
        String::new()
    };
    if seq == 0 {
        format!(
            "kubectl logs app-{}-{:05x} -n ns-{} | grep {}{common}",
            hash(1, i, 4) % 200,
            hash(1, i, 5) % (1 << 20),
            hash(1, i, 3) % NAMESPACES,
            word(1)
        )
    } else {
        let rare = if hash(2, i, 9).is_multiple_of(RARE) {
            format!(" {RARE_TERM}")
        } else {
            String::new()
        };
        format!(
            "{} {} {}: request {:08x} {} in {} ms{common}\nstatus {} {}{rare}",
            word(2),
            word(3),
            word(4),
            hash(2, i, 5) & 0xffff_ffff,
            word(6),
            hash(2, i, 7) % 5000,
            word(8),
            hash(2, i, 8) % 1000
        )
    }
}

/// `COPY`s the text rows of `n` sessions into `session_text` (routed to their months).
async fn copy_text(db: &Postgres, n: u64) -> anyhow::Result<()> {
    let client = db.get().await?;
    let sink = client
        .copy_in(
            "COPY session_text (session_id, started_at_us, seq, source, time_us, body, tokens) FROM STDIN",
        )
        .await?;
    let mut sink = pin!(sink);
    let mut buf = String::with_capacity(2 << 20);
    for i in 0..n {
        let (id, started) = session_at(i, n);
        for seq in 0..TEXT_ROWS {
            let body = text_body(i, seq);
            let tokens = custody_cluster::search::tokens(&body);
            let escaped = body.replace('\\', "\\\\").replace('\n', "\\n");
            let source = if seq == 0 { "input" } else { "output" };
            let _ = writeln!(
                buf,
                "{id}\t{started}\t{seq}\t{source}\t{}\t{escaped}\t{{\"{}\"}}",
                seq * 2_000_000,
                tokens.join("\",\"")
            );
        }
        flush(&mut sink, &mut buf, false).await?;
    }
    flush(&mut sink, &mut buf, true).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// `COPY`s `m` audit rows into `audit_events` (routed to their months), [`ROWS_PER_TX`] rows
/// per writing transaction id from `first_txid` on, in time order.
async fn copy_audit(db: &Postgres, m: u64, first_txid: u64) -> anyhow::Result<()> {
    let client = db.get().await?;
    let sink = client
        .copy_in(
            "COPY audit_events (txid, id, time_us, initiator_method, initiator_issuer,
               initiator_subject, initiator_username, initiator_groups, effective_user,
               effective_groups, effective_uid, client_addr, user_agent, cluster, verb, api_group,
               api_version, resource, subresource, namespace, name, path, decision, reason,
               status_code, upstream_audit_id, latency_us, bytes_in, bytes_out, kubectl_session,
               kubectl_command, replica_id) FROM STDIN",
        )
        .await?;
    let mut sink = pin!(sink);
    let mut buf = String::with_capacity(2 << 20);
    let verbs = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let resources = [
        "pods",
        "deployments",
        "secrets",
        "configmaps",
        "services",
        "events",
    ];
    for i in 0..m {
        let user = hash(3, i, 1) % USERS;
        let resource = resources[usize::try_from(hash(3, i, 2) % 6).unwrap_or(0)];
        let ns = hash(3, i, 3) % NAMESPACES;
        let name = hash(3, i, 4) % 5000;
        let deny = hash(3, i, 5).is_multiple_of(50);
        let _ = writeln!(
            buf,
            "{}\t{}\t{}\toidc\thttps://issuer.example\tsub-{user}\tuser-{user}\t{{dev}}\tuser-{user}\t{{dev}}\t\t\
             10.0.{}.{}:5000\tkubectl/v1.32.5\tcluster-{}\t{}\t\tv1\t{resource}\t\tns-{ns}\tobj-{name}\t\
             /api/v1/namespaces/ns-{ns}/{resource}/obj-{name}\t{}\t{}\t{}\t{}\t{}\t0\t{}\t{}\tkubectl get\treplica-{}",
            first_txid + i / ROWS_PER_TX,
            uuid(3, i),
            audit_time(i, m),
            hash(3, i, 6) % 256,
            hash(3, i, 7) % 256,
            i % 4,
            verbs[usize::try_from(hash(3, i, 8) % 7).unwrap_or(0)],
            if deny { "deny" } else { "allow" },
            if deny {
                "impersonation not allowed"
            } else {
                ""
            },
            if deny { 403 } else { 200 },
            uuid(4, i),
            500 + hash(3, i, 9) % 50_000,
            hash(3, i, 10) % 100_000,
            uuid(5, i / 8),
            i % 3,
        );
        flush(&mut sink, &mut buf, false).await?;
    }
    flush(&mut sink, &mut buf, true).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// The current transaction id (as the cursor reads it).
async fn current_txid(db: &Postgres) -> anyhow::Result<u64> {
    let client = db.get().await?;
    let row = client
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Commits empty transactions until the next transaction id is past `txid`: the generated
/// rows carry transaction ids of a trail written batch by batch, and the follow cursor reads
/// only rows whose transaction is older than every one still running.
async fn burn_txids_past(db: &Postgres, txid: u64) -> anyhow::Result<()> {
    let client = db.get().await?;
    let now = current_txid(db).await?;
    if now > txid {
        return Ok(());
    }
    // Numbers made here, never input.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 1..{} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
            txid - now + 2
        ))
        .await?;
    Ok(())
}

/// Sizes of the pg-index data, fitted to the disk.
struct Sizes {
    sessions: u64,
    audit: u64,
    note: String,
}

fn fit(plan: &Plan, dir: &Path) -> Sizes {
    let (mut sessions, mut audit) = (plan.pg_sessions, plan.pg_audit_rows);
    let need = |s: u64, a: u64| s * SESSION_BYTES + a * AUDIT_BYTES;
    let mut note = String::new();
    if let Some(free) = free_bytes(dir) {
        // What is free less 4 GiB (for the server's WAL and everyone else).
        let budget = free.saturating_sub(4 << 30);
        while need(sessions, audit) > budget && sessions > 1000 {
            sessions /= 2;
            audit /= 2;
        }
        if sessions < plan.pg_sessions {
            note = format!(
                " **Reduced** from {} sessions and {} audit rows for lack of disk space ({} MiB free; the data needs about {} MiB).",
                plan.pg_sessions,
                plan.pg_audit_rows,
                free >> 20,
                need(plan.pg_sessions, plan.pg_audit_rows) >> 20
            );
            println!("pg-index:{note}");
        }
    }
    Sizes {
        sessions,
        audit,
        note,
    }
}

/// A query the gateway makes, by name, with its target (median ms) if the issue states one.
struct Query {
    name: &'static str,
    target_ms: Option<f64>,
    run: Box<dyn Fn(PgCatalog) -> futures_util::future::BoxFuture<'static, anyhow::Result<usize>>>,
}

fn query<F, Fut>(name: &'static str, target_ms: Option<f64>, f: F) -> Query
where
    F: Fn(PgCatalog) -> Fut + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    Query {
        name,
        target_ms,
        run: Box::new(move |c| Box::pin(f(c))),
    }
}

fn queries(sessions: u64, audit: u64, first_txid: u64) -> Vec<Query> {
    let (known_id, _) = session_at(sessions / 2, sessions);
    let month_ago_txid = to_i64(first_txid + (audit - audit / 12) / ROWS_PER_TX);
    let last_txid = to_i64(first_txid + audit / ROWS_PER_TX);
    let list = Some(20.0);
    vec![
        query("sessions: newest 100", list, |c| async move {
            Ok(c.sessions(&SessionQuery::default()).await?.len())
        }),
        query("sessions: one user, newest 100", list, |c| async move {
            let q = SessionQuery {
                initiator: Some("user-17".into()),
                ..SessionQuery::default()
            };
            Ok(c.sessions(&q).await?.len())
        }),
        query("sessions: a user who has none", list, |c| async move {
            let q = SessionQuery {
                initiator: Some("nobody".into()),
                ..SessionQuery::default()
            };
            Ok(c.sessions(&q).await?.len())
        }),
        query(
            "sessions: running in the last day, newest 100",
            list,
            |c| async move {
                let q = SessionQuery {
                    since: Some(END_US - DAY_US),
                    ..SessionQuery::default()
                };
                Ok(c.sessions(&q).await?.len())
            },
        ),
        query("session by id", list, move |c| {
            let id = known_id.clone();
            async move { Ok(usize::from(c.session(&id).await?.is_some())) }
        }),
        query(
            "search: common term (1 text row in 10), 100 sessions",
            Some(1000.0),
            |c| async move { Ok(c.search(COMMON_TERM, None).await?.len()) },
        ),
        query(
            "search: rare term (1 session in 50,000), 100 sessions",
            None,
            |c| async move { Ok(c.search(RARE_TERM, None).await?.len()) },
        ),
        query(
            "sessions with the common term, last 30 days, newest 100",
            Some(1000.0),
            |c| async move {
                let q = SessionQuery {
                    text: Some(COMMON_TERM.into()),
                    since: Some(END_US - 30 * DAY_US),
                    ..SessionQuery::default()
                };
                Ok(c.sessions(&q).await?.len())
            },
        ),
        query(
            "sessions with the rare term, last 30 days",
            None,
            |c| async move {
                let q = SessionQuery {
                    text: Some(RARE_TERM.into()),
                    since: Some(END_US - 30 * DAY_US),
                    ..SessionQuery::default()
                };
                Ok(c.sessions(&q).await?.len())
            },
        ),
        query("audit: newest 100", list, |c| async move {
            Ok(c.audit_events(&AuditQuery::default()).await?.len())
        }),
        query("audit: one user, newest 100", list, |c| async move {
            let q = AuditQuery {
                initiator: Some("user-99".into()),
                ..AuditQuery::default()
            };
            Ok(c.audit_events(&q).await?.len())
        }),
        query("audit: a user who has none", list, |c| async move {
            let q = AuditQuery {
                initiator: Some("nobody".into()),
                ..AuditQuery::default()
            };
            Ok(c.audit_events(&q).await?.len())
        }),
        query(
            "audit: follow, a page from a cursor a month back",
            list,
            move |c| async move {
                let q = AuditQuery {
                    after_seq: Some(month_ago_txid),
                    ..AuditQuery::default()
                };
                Ok(c.audit_events(&q).await?.len())
            },
        ),
        query(
            "audit: follow at the tail (nothing new)",
            list,
            move |c| async move {
                let q = AuditQuery {
                    after_seq: Some(last_txid),
                    ..AuditQuery::default()
                };
                Ok(c.audit_events(&q).await?.len())
            },
        ),
    ]
}

fn pool(url: &str, connections: usize) -> anyhow::Result<Postgres> {
    let mut config = PostgresConfig::new(url);
    config.max_connections = connections;
    config.connect_timeout = Duration::from_secs(30);
    Ok(Postgres::new(&config)?)
}

/// Runs pg-index.
pub fn run(
    plan: &Plan,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let sizes = fit(plan, dir);
    let (n, m) = (sizes.sessions, sizes.audit);
    let mut server = Server::start(PostgresOptions::default())?;
    // A server sized for the data, as a deployment would configure it (the fixture's
    // defaults suit tests); fsync stays off (the fixture's command line sets it).
    let settings = [
        ("shared_buffers", "1GB"),
        ("maintenance_work_mem", "512MB"),
        ("work_mem", "16MB"),
    ];
    for (name, value) in settings {
        server.psql("postgres", &format!("ALTER SYSTEM SET {name} = '{value}'"))?;
    }
    server.stop()?;
    server.start_again()?;
    let database = server.fresh_database()?;
    let db = pool(&database.url, 4)?;
    println!(
        "pg-index: generating {n} sessions ({} text rows) and {m} audit rows",
        n * TEXT_ROWS
    );
    let started = Instant::now();
    let first_txid = runtime.block_on(async {
        custody_cluster::schema::migrate(&db).await?;
        let partitions = Partitions::default();
        let mut month = Month::of(START_US);
        while month.start_us() < END_US {
            for table in [Partitioned::SessionText, Partitioned::AuditEvents] {
                partitions.ensure(&db, table, month.start_us()).await?;
            }
            month = month.next();
        }
        let first_txid = current_txid(&db).await? + 1000;
        // Three tasks, so that generating rows uses both worker threads.
        let (d1, d2, d3) = (db.clone(), db.clone(), db.clone());
        let sessions = tokio::spawn(async move { copy_sessions(&d1, n).await });
        let text = tokio::spawn(async move { copy_text(&d2, n).await });
        let audit = tokio::spawn(async move { copy_audit(&d3, m, first_txid).await });
        sessions.await??;
        text.await??;
        audit.await??;
        anyhow::Ok(first_txid)
    })?;
    let copy_s = started.elapsed().as_secs_f64();
    println!("pg-index: COPY took {copy_s:.0} s; burning transaction ids and analysing");
    let t = Instant::now();
    runtime.block_on(async {
        burn_txids_past(&db, first_txid + m / ROWS_PER_TX + 1).await?;
        db.get().await?.batch_execute("VACUUM (ANALYZE)").await?;
        anyhow::Ok(())
    })?;
    let vacuum_s = t.elapsed().as_secs_f64();
    let size: i64 = runtime.block_on(async {
        let row = db
            .get()
            .await?
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?;
        anyhow::Ok(row.get(0))
    })?;
    let catalog = PgCatalog::new(pool(&database.url, 1)?);
    let reps = if plan.mode == "quick" { 20 } else { 50 };
    let mut section = Section::new(
        "8. Cluster catalog on PostgreSQL",
        &format!(
            "{n} sessions ({} searchable text rows) and {m} audit rows over the 12 months of a year, written by `COPY` \
             into a fresh database with custody's schema and its monthly partitions ({copy_s:.0} s, then {vacuum_s:.0} s \
             of `VACUUM (ANALYZE)`; {:.1} GiB), on PostgreSQL {} from the test fixture (`fsync=off`, \
             `full_page_writes=off`) with `shared_buffers=1GB`, `work_mem=16MB`. The common term is in one text row in \
             {COMMON}; the rare one in one session in {RARE}; each of {USERS} users has about {} sessions and {} audit \
             rows. Each query through `PgCatalog` (the gateway's code, one pooled connection), one warm-up then up to \
             {reps} runs (at most 20 s each query); median and p95 ms. \"Now\" is the end of the data.{}",
            n * TEXT_ROWS,
            size as f64 / f64::from(1u32 << 30),
            server.major_version(),
            n / USERS,
            m / USERS,
            sizes.note
        ),
        &["query", "rows", "median ms", "p95 ms", "runs", "target"],
    );
    let mut rows = Vec::new();
    let mut missed = Vec::new();
    for q in queries(n, m, first_txid) {
        let (found, times) = runtime.block_on(async {
            let found = (q.run)(catalog.clone()).await?;
            let mut times = Vec::new();
            let budget = Instant::now();
            while times.len() < reps && (times.len() < 5 || budget.elapsed().as_secs() < 20) {
                let t = Instant::now();
                (q.run)(catalog.clone()).await?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok((found, times))
        })?;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = Summary::of(&times).median;
        let p95 = percentile(&sorted, 95.0);
        let target = q.target_ms.map_or("—".to_owned(), |t| {
            format!("{t:.0} ms: {}", if median < t { "pass" } else { "short" })
        });
        println!(
            "  {}: {found} rows, median {median:.2} ms, p95 {p95:.2} ms",
            q.name
        );
        section.row(vec![
            q.name.to_owned(),
            found.to_string(),
            format!("{median:.2}"),
            format!("{p95:.2}"),
            times.len().to_string(),
            target,
        ]);
        rows.push(
            json!({"query": q.name, "rows": found, "median_ms": median, "p95_ms": p95,
            "runs": times.len(), "target_ms": q.target_ms}),
        );
        if q.target_ms.is_some_and(|t| median >= t) {
            missed.push(q);
        }
    }
    let plans = explain(&server, &database.url, runtime, &missed)?;
    let list_worst = rows
        .iter()
        .filter(|r| r["target_ms"] == json!(20.0))
        .filter_map(|r| r["median_ms"].as_f64())
        .fold(0.0, f64::max);
    let search_30d = rows
        .iter()
        .find(|r| r["query"] == json!("sessions with the common term, last 30 days, newest 100"))
        .and_then(|r| r["median_ms"].as_f64())
        .unwrap_or(f64::NAN);
    let scale = format!("{n} sessions / {m} audit rows");
    report.check(
        &format!("PostgreSQL catalog lists and cursors at {scale} (target at 10,000,000 / 100,000,000): median under 20 ms"),
        format!("slowest median {list_worst:.1} ms"),
        Some(list_worst < 20.0),
    );
    report.check(
        &format!("PostgreSQL common-term search over 30 days at {scale}: under 1 s"),
        format!("median {search_30d:.0} ms"),
        Some(search_30d < 1000.0),
    );
    report.add(section);
    if !plans.is_empty() {
        let mut note = String::from(
            "Each query of section 8 that missed its target, run once more through `PgCatalog` with `auto_explain` \
             (`log_analyze`, `log_buffers`); the plans PostgreSQL logged (scans of partitions that were never executed \
             are counted, not shown):\n",
        );
        let mut explained = Section::new(
            "8b. Plans of the PostgreSQL queries that missed a target",
            "",
            &["query", "median ms", "plan: first line"],
        );
        for (name, plan) in &plans {
            let _ = write!(note, "\n*{name}*\n\n```\n{plan}\n```\n");
            let median = rows
                .iter()
                .find(|r| r["query"] == json!(name))
                .and_then(|r| r["median_ms"].as_f64())
                .unwrap_or(f64::NAN);
            let first = plan.lines().nth(1).unwrap_or_default().trim().to_owned();
            explained.row(vec![
                name.clone(),
                format!("{median:.2}"),
                format!("`{first}`"),
            ]);
        }
        explained.note = note;
        report.add(explained);
    }
    report.json.insert(
        "pg_index".into(),
        json!({"sessions": n, "text_rows": n * TEXT_ROWS, "audit_rows": m, "copy_s": copy_s,
            "vacuum_analyze_s": vacuum_s, "bytes": size, "queries": rows,
            "plans": plans.iter().map(|(q, p)| json!({"query": q, "plan": p})).collect::<Vec<_>>()}),
    );
    Ok(())
}

/// Runs each of `missed` once with `auto_explain` on (one connection, loaded and configured
/// before the catalog uses it) and returns the plans the server logged.
fn explain(
    server: &Server,
    url: &str,
    runtime: &tokio::runtime::Runtime,
    missed: &[Query],
) -> anyhow::Result<Vec<(String, String)>> {
    let log = server.dir().join("postgres.log");
    let db = pool(url, 1)?;
    let catalog = PgCatalog::new(db.clone());
    let mut plans = Vec::new();
    runtime.block_on(async {
        db.get()
            .await?
            .batch_execute(
                "LOAD 'auto_explain';
                 SET auto_explain.log_min_duration = 0;
                 SET auto_explain.log_analyze = on;
                 SET auto_explain.log_buffers = on;",
            )
            .await?;
        for q in missed {
            let before = std::fs::metadata(&log).map_or(0, |m| m.len());
            (q.run)(catalog.clone()).await?;
            // The server writes the plan to its log as the statement ends.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let text = std::fs::read(&log).unwrap_or_default();
            let start = usize::try_from(before).unwrap_or(0).min(text.len());
            let logged = String::from_utf8_lossy(&text[start..]).into_owned();
            plans.push((q.name.to_owned(), abridge(&logged)));
        }
        anyhow::Ok(())
    })?;
    Ok(plans)
}

/// The plan nodes of what `auto_explain` logged (the query text and statement lines cut; the
/// partition listing of `search`, one short query, left out; scans never executed counted).
fn abridge(logged: &str) -> String {
    let mut out = Vec::new();
    for entry in logged.split("LOG:  duration:").skip(1) {
        if entry.contains("FROM pg_inherits") {
            continue;
        }
        let mut lines = entry.lines();
        let head = lines.next().unwrap_or_default().trim();
        out.push(format!("duration: {head}"));
        let mut skipped = 0;
        let mut skipping: Option<usize> = None;
        let plan = lines
            .skip_while(|l| !l.contains("(cost="))
            .take_while(|l| !l.contains("LOG:") && !l.contains("STATEMENT:"))
            // The next entry's line prefix (`2025-… UTC [pid] `).
            .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()));
        for line in plan {
            let indent = line.len() - line.trim_start().len();
            if let Some(depth) = skipping {
                if indent > depth && !line.contains("->") {
                    continue;
                }
                skipping = None;
            }
            if line.contains("(never executed)") {
                skipped += 1;
                skipping = Some(indent);
                continue;
            }
            out.push(line.replace('\t', "    "));
        }
        if skipped > 0 {
            out.push(format!("    ({skipped} more scans, never executed)"));
        }
    }
    out.join("\n")
}

/// Free bytes on the file system of `dir` (`df -Pk`).
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Runs pg-audit: one decision, and a batch of 64, through `PgCatalog::audit_batch` and
/// `SqliteCatalog::audit_batch`.
pub fn audit(
    plan: &Plan,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let server = Server::start(PostgresOptions::default())?;
    let database = server.fresh_database()?;
    let db = pool(&database.url, 2)?;
    runtime.block_on(custody_cluster::schema::migrate(&db))?;
    let pg = PgCatalog::new(db);
    // The same server as production runs it: fsync and full-page writes on.
    let durable_server = Server::start(PostgresOptions {
        durable: true,
        ..PostgresOptions::default()
    })?;
    let durable_database = durable_server.fresh_database()?;
    let durable_db = pool(&durable_database.url, 2)?;
    runtime.block_on(custody_cluster::schema::migrate(&durable_db))?;
    let durable = PgCatalog::new(durable_db);
    let sqlite_path = dir.join("pg-audit-baseline.sqlite");
    let sqlite = SqliteCatalog::new(&sqlite_path);
    let (singles, batches) = if plan.mode == "quick" {
        (100, 20)
    } else {
        (1000, 200)
    };
    let mut section = Section::new(
        "9. Audit write latency: PostgreSQL vs SQLite",
        &format!(
            "What strict audit waits for per decision: one `audit_batch` of 1 insert ({singles} times) and of 64 inserts \
             ({batches} times), one after another after 20 warm-up batches, through `PgCatalog::audit_batch` (one \
             transaction, over loopback TCP) and `SqliteCatalog::audit_batch` (WAL, `synchronous=FULL`, on this machine's \
             disk); median and p95 ms; ratio = PostgreSQL / SQLite medians. The PostgreSQL server is the test fixture's: \
             `fsync=off` and `full_page_writes=off` (a throwaway server's settings), and a second server with both \
             **on**, as production runs (`synchronous_commit=on`; a server with a synchronous standby also waits for it)."
        ),
        &["batch", "catalog", "median ms", "p95 ms", "ratio"],
    );
    let mut results = Vec::new();
    let mut counter = 0u64;
    let mut record = |_| {
        counter += 1;
        AuditChange::Insert(Box::new(AuditRecord {
            id: uuid(9, counter),
            time_us: chrono_now_us() + to_i64(counter),
            initiator_method: "oidc".into(),
            initiator_issuer: "https://issuer.example".into(),
            initiator_subject: "sub-1".into(),
            initiator_username: "user-1".into(),
            initiator_groups: vec!["dev".into()],
            effective_user: "user-1".into(),
            effective_groups: vec!["dev".into()],
            client_addr: "10.0.0.1:5000".into(),
            user_agent: "kubectl/v1.32.5".into(),
            cluster: "cluster-1".into(),
            verb: "get".into(),
            api_version: "v1".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web-0".into(),
            path: "/api/v1/namespaces/default/pods/web-0".into(),
            decision: "allow".into(),
            kubectl_session: Some(uuid(10, counter / 8)),
            kubectl_command: Some("kubectl get".into()),
            ..AuditRecord::default()
        }))
    };
    for (size, runs) in [(1usize, singles), (64, batches)] {
        let mut medians = Vec::new();
        for (name, catalog) in [
            ("SQLite", &sqlite as &dyn Catalog),
            ("PostgreSQL", &pg as &dyn Catalog),
            ("PostgreSQL, fsync on", &durable as &dyn Catalog),
        ] {
            let mut times = Vec::new();
            runtime.block_on(async {
                for i in 0..runs + 20 {
                    let changes: Vec<AuditChange> = (0..size).map(&mut record).collect();
                    let t = Instant::now();
                    catalog.audit_batch(&changes).await?;
                    if i >= 20 {
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                anyhow::Ok(())
            })?;
            times.sort_by(f64::total_cmp);
            let median = Summary::of(&times).median;
            let p95 = percentile(&times, 95.0);
            medians.push(median);
            let ratio = if name.starts_with("PostgreSQL") {
                crate::report::ratio(median, medians[0])
            } else {
                "1.00".to_owned()
            };
            println!("  audit batch of {size}, {name}: median {median:.3} ms, p95 {p95:.3} ms");
            section.row(vec![
                size.to_string(),
                name.to_owned(),
                format!("{median:.3}"),
                format!("{p95:.3}"),
                ratio,
            ]);
            results
                .push(json!({"batch": size, "catalog": name, "median_ms": median, "p95_ms": p95}));
        }
    }
    // What a commit with fsync on adds: one WAL flush, here an 8 KiB append and fdatasync on
    // the disk the SQLite index uses.
    let mut syncs = Vec::new();
    {
        use std::io::Write as _;
        let path = dir.join("pg-audit-fdatasync");
        let mut file = std::fs::File::create(&path)?;
        let block = vec![7u8; 8192];
        for i in 0..singles.min(300) + 20 {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            if i >= 20 {
                syncs.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
    syncs.sort_by(f64::total_cmp);
    let sync_median = Summary::of(&syncs).median;
    let sync_p95 = percentile(&syncs, 95.0);
    println!("  fdatasync of 8 KiB: median {sync_median:.3} ms, p95 {sync_p95:.3} ms");
    section.row(vec![
        "—".into(),
        "an 8 KiB append + `fdatasync` on this disk (what fsync on would add to each PostgreSQL commit)".into(),
        format!("{sync_median:.3}"),
        format!("{sync_p95:.3}"),
        "—".into(),
    ]);
    results.push(json!({"fdatasync_8k_median_ms": sync_median, "fdatasync_8k_p95_ms": sync_p95}));
    report.add(section);
    report.json.insert("pg_audit".into(), json!(results));
    let _ = std::fs::remove_file(&sqlite_path);
    Ok(())
}

/// Now, in µs since the Unix epoch (the audit rows' times; their month's partition is created
/// by the catalog as the gateway's would be).
fn chrono_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
