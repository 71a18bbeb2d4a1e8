//! `custody audit`: query and follow the audit trail.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use custody::audit::{AuditEvent, Decision};
use custody::audit::{AuditFilter, follow, query};
use custody_recorder::index::Index;

/// Filters and output of `custody audit`.
#[allow(
    clippy::struct_excessive_bools,
    reason = "each bool is an independent command-line flag"
)]
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the audit trail is: `--data-dir DIR` (read directly) or `--server URL` (a running
    /// gateway's sessions API, as the token's owner; what cluster mode's trail is read through).
    #[command(flatten)]
    source: super::source::SourceArgs,
    /// Only requests by this person (initiator username).
    #[arg(long)]
    initiator: Option<String>,
    /// Only requests the cluster saw as this user.
    #[arg(long = "as", value_name = "USER")]
    effective_user: Option<String>,
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only this verb (get, list, watch, create, ...).
    #[arg(long)]
    verb: Option<String>,
    /// Only this resource (pods, secrets, ...).
    #[arg(long)]
    resource: Option<String>,
    /// Only this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Only denied requests.
    #[arg(long, conflicts_with = "allowed")]
    denied: bool,
    /// Only allowed requests.
    #[arg(long)]
    allowed: bool,
    /// Only the requests of one kubectl invocation (its Kubectl-Session).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Only events since this long ago (`90s`, `15m`, `2h`, `7d`) or this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events until this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// At most this many events (newest first).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep printing new events as they arrive.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// Runs the query (and the follow loop).
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let data_dir = match (&args.source.data_dir, &args.source.server) {
        (Some(dir), None) => dir.clone(),
        (None, Some(_)) => return remote(args),
        _ => {
            // The same explanation the sessions commands give.
            super::source::Source::open(&args.source)?;
            anyhow::bail!("give either --data-dir or --server")
        }
    };
    let path = data_dir.join("index.sqlite");
    if !path.exists() {
        return Err(super::source::no_index(&data_dir));
    }
    let index = Index::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let filter = AuditFilter {
        initiator: args.initiator.clone(),
        effective_user: args.effective_user.clone(),
        cluster: args.cluster.clone(),
        verb: args.verb.clone(),
        resource: args.resource.clone(),
        namespace: args.namespace.clone(),
        allowed: match (args.allowed, args.denied) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        kubectl_session: args.session.clone(),
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
    };
    if !args.json {
        println!(
            "{:<24} {:<10} {:<22} {:<22} {:<7} {:<30} {:>4}  DECISION",
            "TIME", "CLUSTER", "INITIATOR", "AS", "VERB", "RESOURCE", "CODE"
        );
    }
    if args.follow {
        let mut cursor = 0;
        loop {
            let (events, next) = follow(&index, &filter, cursor)?;
            for event in &events {
                print_event(event, args.json)?;
            }
            cursor = next;
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut events = query(&index, &filter)?;
    events.reverse();
    for event in &events {
        print_event(event, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--server`: the same filters through the sessions API (`GET /custody/v1/audit`).
fn remote(args: &Args) -> anyhow::Result<ExitCode> {
    if args.follow {
        anyhow::bail!(
            "--follow reads a data directory (--data-dir); through --server, run the query again"
        );
    }
    let mut filter: Vec<(&str, String)> = Vec::new();
    let mut add = |key, value: &Option<String>| {
        if let Some(v) = value {
            filter.push((key, v.clone()));
        }
    };
    add("initiator", &args.initiator);
    add("effective_user", &args.effective_user);
    add("cluster", &args.cluster);
    add("verb", &args.verb);
    add("resource", &args.resource);
    add("namespace", &args.namespace);
    add("kubectl_session", &args.session);
    if args.allowed || args.denied {
        filter.push((
            "decision",
            if args.allowed { "allow" } else { "deny" }.into(),
        ));
    }
    if let Some(since) = args.since {
        filter.push(("since", since.to_rfc3339()));
    }
    if let Some(until) = args.until {
        filter.push(("until", until.to_rfc3339()));
    }
    filter.push(("limit", args.limit.to_string()));
    let super::source::Source::Remote(client) = super::source::Source::open(&args.source)? else {
        anyhow::bail!("--server is needed here");
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let rows = runtime.block_on(client.audit(&filter))?;
    let mut events = rows
        .into_iter()
        .map(serde_json::from_value::<AuditEvent>)
        .collect::<Result<Vec<_>, _>>()
        .context("the gateway answered audit events this build cannot read")?;
    events.reverse();
    if !args.json {
        println!(
            "{:<24} {:<10} {:<22} {:<22} {:<7} {:<30} {:>4}  DECISION",
            "TIME", "CLUSTER", "INITIATOR", "AS", "VERB", "RESOURCE", "CODE"
        );
    }
    for event in &events {
        print_event(event, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &AuditEvent, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(event)?);
        return Ok(());
    }
    let initiator = event
        .initiator
        .as_ref()
        .map_or("-", |p| p.username.as_str());
    let effective = event.effective.as_ref().map_or("-", |e| e.user.as_str());
    let r = &event.request;
    let resource = if r.is_resource {
        let mut s = format!(
            "{}{}",
            if r.namespace.is_empty() {
                String::new()
            } else {
                format!("{}/", r.namespace)
            },
            r.resource
        );
        if !r.name.is_empty() {
            s = format!("{s}/{}", r.name);
        }
        if !r.subresource.is_empty() {
            s = format!("{s}/{}", r.subresource);
        }
        s
    } else {
        r.path.clone()
    };
    let decision = match &event.decision {
        Decision::Allow => "allow".to_owned(),
        Decision::Deny(reason) => format!("deny: {reason}"),
    };
    println!(
        "{:<24} {:<10} {:<22} {:<22} {:<7} {:<30} {:>4}  {decision}",
        event.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.cluster,
        initiator,
        effective,
        r.verb,
        resource,
        event.status_code.map_or("-".to_owned(), |c| c.to_string()),
    );
    Ok(())
}

pub(super) fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{value:?} is neither a duration like 15m nor an RFC 3339 time"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{value:?}: use s, m, h or d, e.g. 15m")),
    };
    Ok(Utc::now() - chrono::TimeDelta::seconds(seconds))
}
