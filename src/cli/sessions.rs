//! `custody sessions`: the recorded sessions (`list`, `show`, `browse`), from a data directory
//! or a running gateway's API; and the sessions a running gateway relays right now
//! (`live`, `kill`, `follow`), through its control socket (`<data_dir>/control.sock`).

mod browse;
mod list;
pub(super) mod show;

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use custody::control::client::ControlClient;
use custody::control::events::FollowLine;
use custody::control::registry::LiveSession;
use custody_recorder::model::{SessionKind, SessionStatus};

/// The `sessions` subcommands.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[allow(
    clippy::doc_markdown,
    reason = "the help shows example command lines verbatim; URLs in them stay bare"
)]
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List and search recorded sessions: who, when, where, what, how it ended.
    ///
    /// Newest first. Filters combine (all must match). --grep finds sessions whose output or
    /// typed commands hold all the given words, and shows the best match under each (with
    /// --data-dir). Reads a data directory directly, or asks a running gateway (--server, as
    /// the token's owner: people see their own sessions, auditors everyone's).
    ///
    /// Examples:
    ///   custody sessions list --data-dir /var/lib/custody --since 2d
    ///   custody sessions list --data-dir /var/lib/custody --initiator oidc:alice --kind exec
    ///   custody sessions list --data-dir /var/lib/custody --grep "rm -rf" --namespace prod
    ///   custody sessions list --server https://custody.example:8443 --token-file ~/.custody-token
    ///   custody sessions list --data-dir /var/lib/custody --exit-code 137 --json | jq -r '.[].id'
    #[command(verbatim_doc_comment)]
    List(list::Args),
    /// Everything about one recorded session: header, integrity, its audit events.
    ///
    /// Shows who started it (issuer, subject, groups) and who the cluster saw, the target, the
    /// client, how it ended; verifies the recording against the gateway's key (intact,
    /// interrupted by a crash, or altered, with the first bad frame); and lists the API
    /// requests of the same kubectl invocation (its Kubectl-Session) from the audit trail.
    ///
    /// Examples:
    ///   custody sessions show --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
    ///   custody sessions show --server https://custody.example:8443 ID --json
    #[command(verbatim_doc_comment)]
    Show(show::Args),
    /// Browse recorded sessions in the terminal and open one in the player.
    ///
    /// Up/Down (or j/k) move, Enter plays the selected session, / filters the list (by id,
    /// person, target, command), Esc clears the filter, q quits. Takes the same filters as
    /// `list`.
    ///
    /// Examples:
    ///   custody sessions browse --data-dir /var/lib/custody --since 1d
    ///   custody sessions browse --server https://custody.example:8443 --grep passwd
    #[command(verbatim_doc_comment)]
    Browse(browse::Args),
    /// List the sessions running now: id, kind, who, target, when it started.
    ///
    /// Examples:
    ///   custody sessions live --data-dir /var/lib/custody
    ///   custody sessions live --data-dir /var/lib/custody --json | jq -r '.[].id'
    #[command(verbatim_doc_comment)]
    Live {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End a running session now; its recording says `admin_kill` (`admin_kill: TEXT`).
    ///
    /// The relay stops at once: the client's kubectl fails, and the recording is sealed as
    /// terminated with reason `admin_kill`, or `admin_kill: TEXT` with --reason. Exits
    /// non-zero if no such session is running.
    ///
    /// Examples:
    ///   custody sessions kill --data-dir /var/lib/custody 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
    ///   custody sessions kill --data-dir /var/lib/custody ID --reason "INC-1234: shell on prod"
    #[command(verbatim_doc_comment)]
    Kill {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The session id (from `custody sessions live`).
        id: String,
        /// Why; written into the recording's manifest after `admin_kill: `.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Print the gateway's JSON answer instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Print a running session's output as it happens, until the session ends.
    ///
    /// Shows what the recording holds (after redaction), from now on. Ctrl-C stops following;
    /// the session goes on.
    ///
    /// Examples:
    ///   custody sessions follow --data-dir /var/lib/custody ID
    ///   custody sessions follow --data-dir /var/lib/custody ID --json | jq -c 'select(.event == "exit")'
    #[command(verbatim_doc_comment)]
    Follow {
        /// The data directory (as in the configuration's `data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The session id (from `custody sessions live`).
        id: String,
        /// Print every event as a JSON line (input, resizes, exit, ...), not just the output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `sessions` subcommand.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if let Command::Browse(browse) = &args.command {
        return browse::run(browse);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match &args.command {
            Command::Live { data_dir, json } => live(&ControlClient::new(data_dir), *json).await,
            Command::Kill {
                data_dir,
                id,
                reason,
                json,
            } => kill(&ControlClient::new(data_dir), id, reason.as_deref(), *json).await,
            Command::Follow { data_dir, id, json } => {
                follow(&ControlClient::new(data_dir), id, *json).await
            }
            Command::List(list) => list::run(list).await,
            Command::Show(show) => show::run(show).await,
            Command::Browse(browse) => browse::run(browse),
        }
    })
}

async fn live(client: &ControlClient, json: bool) -> anyhow::Result<ExitCode> {
    let sessions = client.live().await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&sessions)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        writeln!(out, "no live sessions")?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = sessions
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                kind(s.kind).to_owned(),
                who(s),
                target(s),
                started(s),
            ]
        })
        .collect();
    // In cluster mode every replica's sessions are listed: say which replica holds each.
    if sessions.iter().any(|s| s.replica.is_some()) {
        let rows: Vec<[String; 6]> = rows
            .into_iter()
            .zip(&sessions)
            .map(|([id, kind, who, target, started], s)| {
                [
                    id,
                    s.replica.clone().unwrap_or_default(),
                    kind,
                    who,
                    target,
                    started,
                ]
            })
            .collect();
        let header = ["ID", "REPLICA", "KIND", "WHO", "TARGET", "STARTED"];
        write!(out, "{}", table(header, &rows))?;
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["ID", "KIND", "WHO", "TARGET", "STARTED"];
    write!(out, "{}", table(header, &rows))?;
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns two spaces apart, the last one unpadded; one line per row.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: [&str; N]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    text
}

async fn kill(
    client: &ControlClient,
    id: &str,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let killed = client.kill(id, reason).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&killed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &killed.session;
    println!(
        "ended {} session {} of {} on {}; its recording is sealed as terminated: {}",
        kind(s.kind),
        s.id,
        who(s),
        target(s),
        killed.reason
    );
    Ok(ExitCode::SUCCESS)
}

async fn follow(client: &ControlClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut lines = client.follow(id).await?;
    eprintln!("following session {id} until it ends (Ctrl-C stops following, not the session)");
    let mut out = std::io::stdout().lock();
    while let Some(line) = lines.next_line().await? {
        if json
            && out
                .write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
                .is_err()
        {
            return Ok(ExitCode::SUCCESS);
        }
        let Ok(parsed) = serde_json::from_slice::<FollowLine>(&line) else {
            continue;
        };
        match parsed {
            FollowLine::Lagged { missed } => {
                eprintln!("custody: missed {missed} events (the recording has them all)");
            }
            FollowLine::End { status } => {
                let _ = out.flush();
                eprintln!("session {id} ended: {}", ending(status.as_ref()));
            }
            line if !json => {
                if let Some(bytes) = line.terminal_bytes()
                    && out.write_all(&bytes).and_then(|()| out.flush()).is_err()
                {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn kind(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Exec => "exec",
        SessionKind::Attach => "attach",
        SessionKind::PortForward => "port-forward",
        SessionKind::Api => "api",
    }
}

/// `alice`, or `bob as carol` when impersonating.
fn who(s: &LiveSession) -> String {
    if s.effective_user.is_empty() || s.effective_user == s.initiator {
        s.initiator.clone()
    } else {
        format!("{} as {}", s.initiator, s.effective_user)
    }
}

/// `cluster/namespace/pod[/container]`, and the command of an exec.
fn target(s: &LiveSession) -> String {
    let mut text = format!("{}/{}/{}", s.cluster, s.namespace, s.pod);
    if !s.container.is_empty() {
        text.push('/');
        text.push_str(&s.container);
    }
    if !s.command.is_empty() {
        text.push_str(": ");
        text.push_str(&s.command.join(" "));
    }
    text
}

fn started(s: &LiveSession) -> String {
    let age = (Utc::now() - s.started_at).num_seconds().max(0);
    let age = match age {
        0..60 => format!("{age}s"),
        60..3600 => format!("{}m{}s", age / 60, age % 60),
        _ => format!("{}h{}m", age / 3600, age % 3600 / 60),
    };
    format!(
        "{} ({age} ago)",
        s.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

fn ending(status: Option<&SessionStatus>) -> String {
    match status {
        Some(SessionStatus::Complete) => "complete".into(),
        Some(SessionStatus::Terminated { reason }) => format!("terminated ({reason})"),
        Some(SessionStatus::Interrupted) => "interrupted".into(),
        Some(SessionStatus::Open) | None => "the recording is sealed".into(),
    }
}
