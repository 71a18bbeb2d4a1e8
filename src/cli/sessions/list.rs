//! `custody sessions list`: recorded sessions as a table (or JSON), filtered and searched; and
//! the filter flags and row texts that `browse` shares.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use custody_recorder::model::SessionKind;
use custody_web::model::{SessionFilter, SessionSummary};

use crate::cli::audit::parse_time;
use crate::cli::source::{Listed, Source, SourceArgs};

/// `custody sessions list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print a JSON array of sessions instead of a table.
    #[arg(long)]
    json: bool,
}

/// The session filters, as flags (the API's query string uses the same names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only sessions started by this person (the initiator's username, or subject).
    #[arg(long, value_name = "NAME")]
    initiator: Option<String>,
    /// Only sessions the cluster saw as this user (the effective user, e.g. under --as).
    #[arg(long = "user", value_name = "USER")]
    effective_user: Option<String>,
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Only this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Only this kind of session.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Only sessions still running at or after this time: this long ago (`90s`, `15m`, `2h`,
    /// `7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_time, value_name = "WHEN")]
    since: Option<DateTime<Utc>>,
    /// Only sessions started at or before this time: this long ago or an RFC 3339 time.
    #[arg(long, value_parser = parse_time, value_name = "WHEN")]
    until: Option<DateTime<Utc>>,
    /// Only sessions whose process exited with this code.
    #[arg(long, value_name = "CODE", allow_negative_numbers = true)]
    exit_code: Option<i32>,
    /// Only sessions whose output or typed commands hold all these words.
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// At most this many sessions (newest first; the default is 100).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

/// The kinds of session, as `--kind` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    Exec,
    Attach,
    PortForward,
    Api,
}

impl FilterArgs {
    /// The filter of the contract; relative times are made absolute (RFC 3339) here.
    pub fn to_filter(&self) -> SessionFilter {
        let time =
            |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        SessionFilter {
            initiator: self.initiator.clone(),
            effective_user: self.effective_user.clone(),
            cluster: self.cluster.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            kind: self.kind.map(|k| match k {
                KindArg::Exec => SessionKind::Exec,
                KindArg::Attach => SessionKind::Attach,
                KindArg::PortForward => SessionKind::PortForward,
                KindArg::Api => SessionKind::Api,
            }),
            since: time(&self.since),
            until: time(&self.until),
            exit_code: self.exit_code,
            grep: self.grep.clone(),
            limit: self.limit,
        }
    }
}

/// Runs `custody sessions list`.
pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = Source::open(&args.source)?;
    let sessions = source.list(&args.filter.to_filter()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let summaries: Vec<&SessionSummary> = sessions.iter().map(|s| &s.summary).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&summaries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        writeln!(out, "no sessions")?;
        return Ok(ExitCode::SUCCESS);
    }
    write!(out, "{}", render(&sessions))?;
    Ok(ExitCode::SUCCESS)
}

/// The table: one line per session, its best match (if any) indented under it.
fn render(sessions: &[Listed]) -> String {
    let header = [
        "ID",
        "STARTED (UTC)",
        "KIND",
        "WHO",
        "TARGET",
        "COMMAND",
        "STATUS",
    ];
    let rows: Vec<[String; 7]> = sessions.iter().map(|s| row(&s.summary)).collect();
    let table = super::table(header, &rows);
    let mut text = String::new();
    let mut lines = table.lines();
    if let Some(head) = lines.next() {
        text.push_str(head);
        text.push('\n');
    }
    for (line, session) in lines.zip(sessions) {
        text.push_str(line);
        text.push('\n');
        if let Some(snippet) = &session.snippet {
            text.push_str("    ↳ ");
            text.push_str(&printable(snippet, 160));
            text.push('\n');
        }
    }
    text
}

fn row(s: &SessionSummary) -> [String; 7] {
    [
        s.id.clone(),
        started(&s.started_at),
        kind_name(s.kind).to_owned(),
        who(s),
        target(s),
        command(s),
        status(s),
    ]
}

/// The kind as the flags and the API name it.
pub fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Exec => "exec",
        SessionKind::Attach => "attach",
        SessionKind::PortForward => "port-forward",
        SessionKind::Api => "api",
    }
}

/// `alice`, or `bob → carol` when the cluster saw someone else.
pub fn who(s: &SessionSummary) -> String {
    if s.effective_user.is_empty() || s.effective_user == s.initiator {
        printable(&s.initiator, 40)
    } else {
        format!(
            "{} → {}",
            printable(&s.initiator, 30),
            printable(&s.effective_user, 30)
        )
    }
}

/// `cluster/namespace/pod[/container]`.
pub fn target(s: &SessionSummary) -> String {
    let mut text = format!("{}/{}/{}", s.cluster, s.namespace, s.pod);
    if !s.container.is_empty() {
        text.push('/');
        text.push_str(&s.container);
    }
    printable(&text, 80)
}

/// The command of an exec, `-` when there is none.
pub fn command(s: &SessionSummary) -> String {
    if s.command.is_empty() {
        "-".to_owned()
    } else {
        printable(&s.command.join(" "), 40)
    }
}

/// `exit 0`, `terminated (admin_kill)`, `interrupted`, `open`; `, damaged` when the file was.
pub fn status(s: &SessionSummary) -> String {
    let mut text = match (s.status.as_str(), s.exit_code) {
        ("complete", Some(code)) => format!("exit {code}"),
        ("terminated", code) => {
            let mut text = format!(
                "terminated ({})",
                printable(s.reason.as_deref().unwrap_or("?"), 60)
            );
            if let Some(code) = code {
                let _ = write!(text, ", exit {code}");
            }
            text
        }
        (other, _) => printable(other, 20),
    };
    if s.damage.is_some() {
        text.push_str(", damaged");
    }
    text
}

/// `2026-11-27 15:00:00` from the API's RFC 3339 time.
pub fn started(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| printable(rfc3339, 32),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// Text from a recording made safe for a terminal: control characters (escape sequences
/// included) become spaces, runs of whitespace one space, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if count == max {
            out.push('…');
            return out.trim_end().to_owned();
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> SessionSummary {
        SessionSummary {
            id: "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70".into(),
            kind: SessionKind::Exec,
            initiator: "bob".into(),
            effective_user: "carol".into(),
            cluster: "prod".into(),
            namespace: "default".into(),
            pod: "web-1".into(),
            container: "app".into(),
            command: vec!["sh".into(), "-c".into(), "echo \x1b[31mred".into()],
            tty: true,
            started_at: "2026-11-27T15:00:00.000001Z".into(),
            ended_at: Some("2026-11-27T15:01:00Z".into()),
            exit_code: Some(0),
            status: "complete".into(),
            reason: None,
            damage: None,
            file_size: 1234,
            replica_id: None,
        }
    }

    #[test]
    fn rows_say_who_where_what_and_how_it_ended() {
        let mut killed = summary();
        killed.status = "terminated".into();
        killed.reason = Some("admin_kill: INC-1".into());
        killed.exit_code = None;
        killed.damage = Some("frame 2 at byte 100: hash chain broken".into());
        let text = render(&[
            Listed {
                summary: summary(),
                snippet: Some("$ «rm» -rf\r\n/tmp/x".into()),
            },
            Listed {
                summary: killed,
                snippet: None,
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ID  "), "{text}");
        assert!(lines[1].contains("2026-11-27 15:00:00"), "{text}");
        assert!(lines[1].contains("bob → carol"), "{text}");
        assert!(lines[1].contains("prod/default/web-1/app"), "{text}");
        assert!(lines[1].contains("sh -c echo [31mred"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "escape sequences must not reach the terminal"
        );
        assert!(lines[1].ends_with("exit 0"), "{text}");
        assert_eq!(lines[2], "    ↳ $ «rm» -rf /tmp/x");
        assert!(
            lines[3].ends_with("terminated (admin_kill: INC-1), damaged"),
            "{text}"
        );
    }

    #[test]
    fn printable_text_is_bounded_and_has_no_controls() {
        assert_eq!(printable("a\x1b]0;title\x07b", 100), "a ]0;title b");
        assert_eq!(printable("  a   b  ", 100), "a b");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
