//! `custody sessions show ID`: one recorded session's header, how its file verifies, and the
//! audit events of the kubectl invocation that started it.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use custody_web::model::SessionDetail;
use serde_json::Value;

use super::list::{kind_name, printable, status};
use crate::cli::source::{Source, SourceArgs};

/// `custody sessions show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    /// The session id (from `custody sessions list`).
    id: String,
    /// Print the session's detail as one JSON object instead.
    #[arg(long)]
    json: bool,
}

/// Runs `custody sessions show`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = Source::open(&args.source)?;
    let detail = source.detail(&args.id).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&detail)?)?;
    } else {
        write!(out, "{}", render(&detail))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The detail as text: one `name  value` line per fact, then the audit events as a table.
fn render(detail: &SessionDetail) -> String {
    let s = &detail.session;
    let m = &detail.meta;
    let mut facts: Vec<(&str, String)> = Vec::new();
    facts.push(("session", printable(&s.id, 80)));
    let mut kind = kind_name(s.kind).to_owned();
    if m.tty {
        kind.push_str(", tty");
        if let Some((cols, rows)) = m.term_size {
            let _ = write!(kind, " {cols}x{rows}");
        }
    }
    facts.push(("kind", kind));
    let mut initiator = printable(&m.initiator.username, 80);
    let _ = write!(
        initiator,
        " (issuer {}, subject {}",
        printable(&m.initiator.issuer, 100),
        printable(&m.initiator.subject, 80)
    );
    if !m.initiator.groups.is_empty() {
        let _ = write!(
            initiator,
            ", groups {}",
            printable(&m.initiator.groups.join(", "), 200)
        );
    }
    initiator.push(')');
    facts.push(("initiator", initiator));
    let mut effective = printable(&m.effective.user, 80);
    if !m.effective.groups.is_empty() {
        let _ = write!(
            effective,
            " (groups {})",
            printable(&m.effective.groups.join(", "), 200)
        );
    }
    if !m.effective.uid.is_empty() {
        let _ = write!(effective, " uid {}", printable(&m.effective.uid, 80));
    }
    facts.push(("cluster saw", effective));
    let mut target = format!("{}/{}/{}", m.cluster, m.namespace, m.pod);
    if !m.container.is_empty() {
        let _ = write!(target, " container {}", m.container);
    }
    facts.push(("target", printable(&target, 200)));
    if !m.command.is_empty() {
        facts.push(("command", printable(&m.command.join(" "), 400)));
    }
    let mut client = printable(&m.client_addr, 80);
    if !m.user_agent.is_empty() {
        let _ = write!(client, ", {}", printable(&m.user_agent, 200));
    }
    facts.push(("client", client));
    facts.push((
        "gateway",
        match &m.replica_id {
            Some(replica) => format!(
                "{} (replica {})",
                printable(&m.gateway_id, 80),
                printable(replica, 63)
            ),
            None => printable(&m.gateway_id, 80),
        },
    ));
    if let Some(approval) = &m.approval_id {
        facts.push(("approval", printable(approval, 80)));
    }
    facts.push(("started", time(&s.started_at)));
    if let Some(ended) = &s.ended_at {
        let mut text = time(ended);
        if let (Ok(start), Ok(end)) = (
            DateTime::parse_from_rfc3339(&s.started_at),
            DateTime::parse_from_rfc3339(ended),
        ) {
            let _ = write!(
                text,
                " (after {})",
                duration((end - start).num_milliseconds())
            );
        }
        facts.push(("ended", text));
    }
    let mut ending = status(s);
    if s.status == "complete" && s.exit_code.is_none() {
        ending = "complete".into();
    }
    facts.push(("status", ending));
    facts.push(("recording", bytes(s.file_size)));
    facts.push(("integrity", integrity(detail)));
    if let Some(damage) = &s.damage {
        facts.push(("when indexed", printable(damage, 200)));
    }
    let width = facts.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, value) in &facts {
        let _ = writeln!(text, "{name:<width$}  {value}");
    }
    text.push('\n');
    text.push_str(&audit_table(detail));
    text
}

/// `intact: 12 frames verified (0:42.1), key 3b6a…` or what is wrong and where.
fn integrity(detail: &SessionDetail) -> String {
    let i = &detail.integrity;
    let key: String = i.public_key.chars().take(16).collect();
    let verified = format!(
        "{} frames verified (up to {})",
        i.verified_frames,
        duration(i64::try_from(i.verified_until_us / 1000).unwrap_or(i64::MAX))
    );
    match &i.problem {
        None => format!("{}: {verified}, signed by key {key}…", i.verdict),
        Some(problem) => format!(
            "{}: {}; {verified}, key {key}…",
            i.verdict,
            printable(problem, 200)
        ),
    }
}

/// The audit events as a table, the session's own request marked `*`.
fn audit_table(detail: &SessionDetail) -> String {
    let mut text = String::new();
    if detail.audit.is_empty() {
        text.push_str("no audit events name this session\n");
        return text;
    }
    let field = |e: &Value, path: &[&str]| -> String {
        let mut v = e;
        for name in path {
            match v.get(name) {
                Some(next) => v = next,
                None => return String::new(),
            }
        }
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let invocation = detail.audit.iter().find_map(|e| {
        let session = field(e, &["kubectl_session"]);
        (!session.is_empty()).then(|| (session, field(e, &["kubectl_command"])))
    });
    match invocation {
        Some((session, command)) if !command.is_empty() => {
            let _ = writeln!(
                text,
                "audit events of this kubectl invocation ({}, Kubectl-Session {}):",
                printable(&command, 60),
                printable(&session, 60)
            );
        }
        Some((session, _)) => {
            let _ = writeln!(
                text,
                "audit events of this kubectl invocation (Kubectl-Session {}):",
                printable(&session, 60)
            );
        }
        None => text.push_str("audit events:\n"),
    }
    let rows: Vec<[String; 6]> = detail
        .audit
        .iter()
        .map(|e| {
            let own = if field(e, &["id"]) == detail.session.id {
                "*"
            } else {
                ""
            };
            let request = request_of(e, &field);
            let decision = match field(e, &["reason"]) {
                reason if reason.is_empty() => field(e, &["decision"]),
                reason => format!("{}: {}", field(e, &["decision"]), reason),
            };
            [
                own.to_owned(),
                time(&field(e, &["time"])),
                printable(&field(e, &["request", "verb"]), 20),
                printable(&request, 100),
                printable(&field(e, &["status_code"]), 5),
                printable(&decision, 100),
            ]
        })
        .collect();
    text.push_str(&super::table(
        ["", "TIME (UTC)", "VERB", "REQUEST", "CODE", "DECISION"],
        &rows,
    ));
    text
}

/// `namespace/resource/name/subresource`, or the path of a non-resource request.
fn request_of(e: &Value, field: &dyn Fn(&Value, &[&str]) -> String) -> String {
    let resource = field(e, &["request", "resource"]);
    if resource.is_empty() {
        return field(e, &["request", "path"]);
    }
    [
        field(e, &["request", "namespace"]),
        resource,
        field(e, &["request", "name"]),
        field(e, &["request", "subresource"]),
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join("/")
}

/// An RFC 3339 time as `2026-11-27 15:00:00.123` (UTC).
fn time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| printable(rfc3339, 40),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        },
    )
}

/// Milliseconds as `0:03.250`, `1:02:03.000`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{frac:03}")
    } else {
        format!("{m}:{s:02}.{frac:03}")
    }
}

/// `1234 bytes (1.2 KiB)`.
pub fn bytes(n: u64) -> String {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a human-readable size needs no more than three digits"
    )]
    let f = n as f64;
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{n} bytes ({:.1} KiB)", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{n} bytes ({:.1} MiB)", f / 1_048_576.0),
        _ => format!("{n} bytes ({:.1} GiB)", f / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use custody_recorder::model::{EffectiveIdentity, Initiator, SessionKind, SessionMeta};
    use custody_web::model::{Integrity, SessionSummary};

    use super::*;

    #[test]
    fn show_names_everything_and_marks_the_sessions_own_request() {
        let id = "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70";
        let detail = SessionDetail {
            session: SessionSummary {
                id: id.into(),
                kind: SessionKind::Exec,
                initiator: "bob".into(),
                effective_user: "carol".into(),
                cluster: "prod".into(),
                namespace: "default".into(),
                pod: "web-1".into(),
                container: "app".into(),
                command: vec!["sh".into()],
                tty: true,
                started_at: "2026-11-27T15:00:00Z".into(),
                ended_at: Some("2026-11-27T15:00:03.25Z".into()),
                exit_code: Some(0),
                status: "complete".into(),
                reason: None,
                damage: None,
                file_size: 2048,
                replica_id: None,
            },
            meta: SessionMeta {
                session_id: id.into(),
                kind: SessionKind::Exec,
                initiator: Initiator {
                    issuer: "https://login.example".into(),
                    subject: "sub-bob".into(),
                    username: "bob".into(),
                    groups: vec!["sre".into()],
                },
                effective: EffectiveIdentity {
                    user: "carol".into(),
                    groups: vec![],
                    uid: String::new(),
                },
                cluster: "prod".into(),
                namespace: "default".into(),
                pod: "web-1".into(),
                container: "app".into(),
                command: vec!["sh".into()],
                tty: true,
                client_addr: "10.0.0.9:5555".into(),
                user_agent: "kubectl/v1.32.0".into(),
                approval_id: None,
                gateway_id: "custody-eu-1".into(),
                replica_id: None,
                started_at_us: 0,
                term_size: Some((80, 24)),
            },
            integrity: Integrity {
                verdict: "altered".into(),
                verified_frames: 2,
                verified_until_us: 1_500_000,
                problem: Some("frame 2 at byte 900: frame hash differs from its checkpoint".into()),
                public_key: "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
                    .into(),
            },
            audit: vec![
                serde_json::json!({"id": "x", "time": "2026-11-27T14:59:59.5Z",
                    "request": {"verb": "get", "resource": "pods", "namespace": "default",
                                "name": "web-1", "path": "/api/v1/namespaces/default/pods/web-1"},
                    "decision": "allow", "status_code": 200,
                    "kubectl_session": "k-1", "kubectl_command": "kubectl exec"}),
                serde_json::json!({"id": id, "time": "2026-11-27T15:00:00Z",
                    "request": {"verb": "create", "resource": "pods", "namespace": "default",
                                "name": "web-1", "subresource": "exec"},
                    "decision": "allow", "status_code": 101, "kubectl_session": "k-1"}),
            ],
        };
        let text = render(&detail);
        for needle in [
            "initiator    bob (issuer https://login.example, subject sub-bob, groups sre)",
            "cluster saw  carol",
            "kind         exec, tty 80x24",
            "target       prod/default/web-1 container app",
            "client       10.0.0.9:5555, kubectl/v1.32.0",
            "ended        2026-11-27 15:00:03.250 (after 0:03.250)",
            "status       exit 0",
            "recording    2048 bytes (2.0 KiB)",
            "integrity    altered: frame 2 at byte 900: frame hash differs from its checkpoint; \
             2 frames verified (up to 0:01.500), key 3b6a27bcceb6a42d…",
            "(kubectl exec, Kubectl-Session k-1)",
            "default/pods/web-1       200",
            "*  2026-11-27 15:00:00.000  create  default/pods/web-1/exec  101",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
