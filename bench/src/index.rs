//! Scenario 7: session search and audit queries on a large index. Sessions, their searchable
//! text and audit rows are generated straight into a fresh index (the real schema, created by
//! `custody_recorder::index::Index::open`), then queried through the same `Index` methods the
//! gateway, `custody sessions list` and `custody audit` use (`sessions`, `search`,
//! `audit_events`, which `custody::audit::query` wraps).

use std::path::Path;
use std::time::Instant;

use custody_recorder::index::{AuditQuery, Index, SessionQuery};
use rusqlite::params;
use serde_json::json;

use crate::Plan;
use crate::report::{Report, Section, Summary};

const USERS: u64 = 500;
const NAMESPACES: u64 = 40;
/// The sessions span this many days, the audit rows too.
const DAYS: i64 = 90;
const START_US: i64 = 1_780_000_000_000_000;
const SPAN_US: i64 = DAYS * 86_400_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Fills the index: `sessions` sessions with one searchable text row each, `audit` audit rows.
fn generate(index: &Index, sessions: u64, audit: u64) -> anyhow::Result<()> {
    let conn = index.connection();
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -524288;")?;
    // Batches of rows, each committed and checkpointed, so the WAL stays small.
    conn.execute_batch("BEGIN")?;
    let mut pending = 0u32;
    let mut batch = || -> anyhow::Result<()> {
        pending += 1;
        if pending == 200_000 {
            pending = 0;
            conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE); BEGIN;")?;
        }
        Ok(())
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
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
    let words = [
        "postgres", "nginx", "timeout", "restart", "migrate", "backup", "deploy", "rollout",
    ];
    {
        let mut s = conn.prepare(
            "INSERT INTO sessions (id, kind, initiator_issuer, initiator_subject, initiator_username,
               initiator_groups, effective_user, effective_groups, effective_uid, cluster, namespace, pod,
               container, command, tty, term_cols, term_rows, client_addr, user_agent, gateway_id,
               started_at_us, ended_at_us, status, exit_code, event_count, frame_count, file_path, file_size)
             VALUES (?1, 'exec', 'https://issuer', ?2, ?2, '[\"dev\"]', ?2, '[\"dev\"]', '', ?3, ?4, ?5,
               'main', '[\"sh\"]', 1, 120, 40, '10.0.0.1:5000', 'kubectl/v1.32.5', 'g', ?6, ?7,
               'complete', 0, 100, 2, ?8, 4096)",
        )?;
        let mut t = conn.prepare(
            "INSERT INTO session_text (session_id, seq, source, time_us, body) VALUES (?1, 0, 'output', 0, ?2)",
        )?;
        for i in 0..sessions {
            let id = format!("s{i:08}");
            let user = format!("user-{}", rng.next(USERS));
            let started = START_US + to_i64(rng.next(u64::try_from(SPAN_US).unwrap_or(1)));
            let ns = format!("ns-{}", rng.next(NAMESPACES));
            let pod = format!("app-{}-{:05x}", rng.next(200), rng.next(1 << 20));
            s.execute(params![
                id,
                user,
                format!("cluster-{}", i % 4),
                ns,
                pod,
                started,
                started + to_i64(rng.next(3_600_000_000)),
                format!("/data/recordings/{id}.cast.zst"),
            ])?;
            let rare = if i % 997 == 0 { " kernelpanic" } else { "" };
            let body = format!(
                "$ kubectl logs {pod} | grep {} {}\nerror {} token-{} done{rare}",
                words[usize::try_from(rng.next(8)).unwrap_or(0)],
                words[usize::try_from(rng.next(8)).unwrap_or(0)],
                words[usize::try_from(rng.next(8)).unwrap_or(0)],
                rng.next(100_000)
            );
            t.execute(params![id, body])?;
            batch()?;
        }
        let mut a = conn.prepare(
            "INSERT INTO audit_events (id, request_id, time_us, initiator_method, initiator_issuer,
               initiator_subject, initiator_username, initiator_groups, effective_user, effective_groups,
               effective_uid, client_addr, user_agent, cluster, verb, api_group, api_version, resource,
               subresource, namespace, name, path, decision, reason, status_code, latency_us, bytes_in,
               bytes_out, kubectl_session, kubectl_command)
             VALUES (?1, ?1, ?2, 'oidc', 'https://issuer', ?3, ?3, '[\"dev\"]', ?3, '[\"dev\"]', '',
               '10.0.0.1:5000', 'kubectl/v1.32.5', ?4, ?5, '', 'v1', ?6, '', ?7, ?8, ?9, ?10, ?11,
               ?12, 900, 0, 2048, ?13, 'kubectl get')",
        )?;
        for i in 0..audit {
            // Time grows with i (an append-only trail), with jitter.
            let time =
                START_US + to_i64(i) * (SPAN_US / to_i64(audit.max(1))) + to_i64(rng.next(1000));
            let user = format!("user-{}", rng.next(USERS));
            let verb = verbs[usize::try_from(rng.next(7)).unwrap_or(0)];
            let resource = resources[usize::try_from(rng.next(6)).unwrap_or(0)];
            let ns = format!("ns-{}", rng.next(NAMESPACES));
            let name = format!("obj-{}", rng.next(5000));
            let deny = rng.next(50) == 0;
            a.execute(params![
                format!("r{i:09}"),
                time,
                user,
                format!("cluster-{}", i % 4),
                verb,
                resource,
                ns,
                name,
                format!("/api/v1/namespaces/{ns}/{resource}/{name}"),
                if deny { "deny" } else { "allow" },
                if deny {
                    "impersonation not allowed"
                } else {
                    ""
                },
                if deny { 403 } else { 200 },
                format!("ks-{}", i / 8),
            ])?;
            batch()?;
        }
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")?;
    conn.execute_batch("ANALYZE; PRAGMA synchronous = FULL;")?;
    Ok(())
}

/// A named query.
type Query<'a> = (&'a str, Box<dyn Fn(&Index) -> anyhow::Result<usize> + 'a>);

/// Runs the scenario.
pub fn run(plan: &Plan, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let (mut n, mut audit) = (plan.index_sessions, plan.audit_rows);
    // About 600 bytes per audit row and 1.2 KiB per session with their indexes and text; keep
    // a quarter of the free space for everyone else.
    let need = |n: u64, audit: u64| audit * 600 + n * 1200;
    let mut reduced = String::new();
    if let Some(free) = free_bytes(dir) {
        let budget = free / 4 * 3;
        while need(n, audit) > budget && n > 1000 {
            n /= 2;
            audit /= 2;
        }
        if n < plan.index_sessions {
            reduced = format!(
                " Reduced from {} sessions for lack of disk space ({} MiB free).",
                plan.index_sessions,
                free >> 20
            );
            println!("index:{reduced}");
        }
    }
    let path = dir.join("index-bench.sqlite");
    let index = Index::open(&path)?;
    println!("index: generating {n} sessions and {audit} audit rows");
    let started = Instant::now();
    generate(&index, n, audit)?;
    let gen_s = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len())
        + std::fs::metadata(dir.join("index-bench.sqlite-wal")).map_or(0, |m| m.len());
    // A fresh connection, as a query from the CLI or the web API opens it.
    drop(index);
    let index = Index::open(&path)?;
    let day = 86_400_000_000i64;
    let mid = START_US + SPAN_US / 2;
    let last_seq = to_i64(audit).saturating_sub(50);
    let queries: Vec<Query> = vec![
        (
            "sessions of one user, newest 100",
            Box::new(|i: &Index| {
                Ok(i.sessions(&SessionQuery {
                    initiator: Some("user-17".into()),
                    ..SessionQuery::default()
                })?
                .len())
            }),
        ),
        (
            "sessions in one namespace during one day",
            Box::new(move |i: &Index| {
                Ok(i.sessions(&SessionQuery {
                    cluster: Some("cluster-1".into()),
                    namespace: Some("ns-7".into()),
                    since: Some(mid),
                    until: Some(mid + day),
                    ..SessionQuery::default()
                })?
                .len())
            }),
        ),
        (
            "sessions of one user whose output has a word",
            Box::new(|i: &Index| {
                Ok(i.sessions(&SessionQuery {
                    initiator: Some("user-42".into()),
                    text: Some("postgres".into()),
                    ..SessionQuery::default()
                })?
                .len())
            }),
        ),
        (
            "sessions whose output has a rare word (1 in 997)",
            Box::new(|i: &Index| {
                Ok(i.sessions(&SessionQuery {
                    text: Some("kernelpanic".into()),
                    ..SessionQuery::default()
                })?
                .len())
            }),
        ),
        (
            "full-text search with snippets, 20 sessions",
            Box::new(|i: &Index| Ok(i.search("timeout restart", Some(20))?.len())),
        ),
        (
            "audit: newest 100",
            Box::new(|i: &Index| Ok(i.audit_events(&AuditQuery::default())?.len())),
        ),
        (
            "audit: one user, newest 100",
            Box::new(|i: &Index| {
                Ok(i.audit_events(&AuditQuery {
                    initiator: Some("user-99".into()),
                    ..AuditQuery::default()
                })?
                .len())
            }),
        ),
        (
            "audit: denials, newest 100",
            Box::new(|i: &Index| {
                Ok(i.audit_events(&AuditQuery {
                    decision: Some("deny".into()),
                    ..AuditQuery::default()
                })?
                .len())
            }),
        ),
        (
            "audit: one user's secrets reads during one day",
            Box::new(move |i: &Index| {
                Ok(i.audit_events(&AuditQuery {
                    initiator: Some("user-3".into()),
                    resource: Some("secrets".into()),
                    since_us: Some(mid),
                    until_us: Some(mid + day),
                    ..AuditQuery::default()
                })?
                .len())
            }),
        ),
        (
            "audit: one kubectl invocation",
            Box::new(|i: &Index| {
                Ok(i.audit_events(&AuditQuery {
                    kubectl_session: Some("ks-1234".into()),
                    ..AuditQuery::default()
                })?
                .len())
            }),
        ),
        (
            "audit: follow after a cursor",
            Box::new(move |i: &Index| {
                Ok(i.audit_events(&AuditQuery {
                    after_seq: Some(last_seq),
                    ..AuditQuery::default()
                })?
                .len())
            }),
        ),
    ];
    let mut section = Section::new(
        "7. Index queries",
        &format!(
            "{n} sessions (each with a row of searchable text) and {audit} audit rows over {DAYS} days, generated straight \
             into a fresh index with custody's schema ({:.0} s, {:.0} MiB), then queried through `Index::sessions`, \
             `Index::search` and `Index::audit_events` on a new connection; each query {} times after one warm-up, \
             median (min–max) ms.{}{}",
            gen_s,
            size as f64 / 1_048_576.0,
            plan.runs.max(5),
            reduced,
            if n < 1_000_000 {
                " **Reduced scale**: the target is stated for 1,000,000 sessions; these numbers are not extrapolated."
            } else {
                ""
            }
        ),
        &["query", "rows", "ms"],
    );
    let mut worst: f64 = 0.0;
    let mut rows = Vec::new();
    for (name, q) in &queries {
        let found = q(&index)?;
        let mut times = Vec::new();
        for _ in 0..plan.runs.max(5) {
            let t = Instant::now();
            q(&index)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let s = Summary::of(&times);
        worst = worst.max(s.median);
        section.row(vec![(*name).to_owned(), found.to_string(), s.show(2)]);
        rows.push(json!({"query": name, "rows": found, "ms": s.json()}));
    }
    report.json.insert(
        "index".into(),
        json!({"sessions": n, "audit_rows": audit, "generate_s": gen_s, "bytes": size, "queries": rows}),
    );
    report.check(
        &format!("index queries at {n} sessions / {audit} audit rows (target: at 1,000,000 sessions): under 50 ms"),
        format!("slowest median {worst:.1} ms"),
        Some(worst < 50.0),
    );
    report.add(section);
    let _ = std::fs::remove_file(&path);
    Ok(())
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
