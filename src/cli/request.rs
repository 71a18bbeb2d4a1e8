//! `custody request`: ask for access the policy holds for approval, and decide on other
//! people's requests, through a running gateway's access-requests API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use custody::approval::{AccessRequest, NewRequest, describe_scope, human, parse_duration};
use custody::client::{ApiClient, TokenSource};
use secrecy::SecretString;

mod context;

/// Access requests: create, list, show, approve, deny, revoke.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --server, the gateway, its CA, the cluster and your token come from \
the kubeconfig context kubectl uses (--context to choose another), as `custody kubeconfig` \
writes it.

Examples:
  custody request create -n kube-system --pod coredns-7d --for 30m \\
      --reason \"INC-1234: DNS failures\"
  custody request list --state pending
  custody request approve --context bob 0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70
  custody request deny ID --reason \"use the runbook instead\"
  custody request revoke ID --reason \"incident closed\"
  custody request list --server https://custody.example:8443 --token-file token"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    gateway: GatewayArgs,
}

/// Which gateway, as whom.
#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// The gateway (https://HOST:PORT), with --token-file or `CUSTODY_TOKEN`. Without it, the
    /// kubeconfig context says.
    #[arg(long, global = true, env = "CUSTODY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The kubeconfig context to take the gateway and your token from (default: the current
    /// one).
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "server")]
    context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG's first file, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
    /// The bearer token (prefer `CUSTODY_TOKEN` or --token-file: a command line is visible to
    /// other users of the host).
    #[arg(
        long,
        global = true,
        env = "CUSTODY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificates to trust for the gateway instead of the system's roots.
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask for access; prints the request id for approvers.
    Create {
        /// The cluster, as the gateway names it (default: the kubeconfig context's).
        #[arg(long)]
        cluster: Option<String>,
        /// The namespace.
        #[arg(long, short = 'n', default_value = "")]
        namespace: String,
        /// One pod only (recommended: the narrower the scope, the easier the approval).
        #[arg(long)]
        pod: Option<String>,
        /// What to do there: exec, attach, portforward, debug, or a verb such as delete.
        #[arg(long, default_value = "exec")]
        action: String,
        /// Act as this user under the grant (kubectl --as).
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        /// With this group (kubectl --as-group); repeatable.
        #[arg(long = "as-group", value_name = "GROUP")]
        as_groups: Vec<String>,
        /// How long the grant lasts once approved (30m, 2h, 1h30m).
        #[arg(long = "for", default_value = "30m", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Why: approvers decide on it, auditors read it.
        #[arg(long)]
        reason: String,
    },
    /// List the requests you may see (your own, and those you may approve).
    List {
        /// Only these: pending, approved, denied, revoked, expired, all.
        #[arg(long, default_value = "all")]
        state: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one request.
    Show {
        /// The request id.
        id: String,
    },
    /// Approve someone else's request: it becomes a grant for its duration.
    Approve {
        /// The request id.
        id: String,
    },
    /// Deny someone else's request.
    Deny {
        /// The request id.
        id: String,
        /// Why (the requester sees it).
        #[arg(long)]
        reason: String,
    },
    /// End a grant now; sessions it allowed end at once.
    Revoke {
        /// The request id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `custody request`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (client, cluster) = client(&args.gateway)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(execute(&client, cluster.as_deref(), &args.command))
}

/// The API client, and the cluster the kubeconfig context points at (if one was read).
fn client(gateway: &GatewayArgs) -> anyhow::Result<(ApiClient, Option<String>)> {
    let token = if let Some(file) = &gateway.token_file {
        Some(TokenSource::File(file.clone()))
    } else {
        gateway
            .token
            .as_ref()
            .map(|token| TokenSource::Value(SecretString::from(token.clone())))
    };
    if let Some(server) = &gateway.server {
        let token =
            token.context("no token for --server: pass --token-file FILE or set CUSTODY_TOKEN")?;
        return Ok((
            ApiClient::new(server, &token, gateway.ca_file.as_deref())?,
            None,
        ));
    }
    let file = context::kubeconfig_path(gateway.kubeconfig.as_deref())?;
    let found = context::gateway(&file, gateway.context.as_deref())?;
    let token = token.unwrap_or(TokenSource::Value(found.token));
    let client = match (&gateway.ca_file, &found.ca_pem) {
        (Some(ca), _) => ApiClient::new(&found.server, &token, Some(ca))?,
        (None, Some(pem)) => ApiClient::with_ca_pem(&found.server, &token, &found.file, pem)?,
        (None, None) => ApiClient::new(&found.server, &token, None)?,
    };
    Ok((client, found.cluster))
}

async fn execute(
    client: &ApiClient,
    context_cluster: Option<&str>,
    command: &Command,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create {
            cluster,
            namespace,
            pod,
            action,
            as_user,
            as_groups,
            duration,
            reason,
        } => {
            let cluster = cluster
                .as_deref()
                .or(context_cluster)
                .context("which cluster? pass --cluster NAME")?;
            let new = NewRequest {
                cluster: cluster.to_owned(),
                namespace: namespace.clone(),
                pod: pod.clone(),
                action: Some(action.clone()),
                as_user: as_user.clone(),
                as_groups: as_groups.clone(),
                duration_seconds: Some(duration.as_secs()),
                reason: reason.clone(),
            };
            let created = client.create_access_request(&new).await?;
            println!("{}", created.id);
            eprintln!(
                "requested {} for {}; it needs someone else's approval:\n  custody request approve {}",
                describe_scope(&created.scope),
                human(created.duration_seconds),
                created.id
            );
        }
        Command::List { state, json } => {
            let state = (state != "all").then_some(state.as_str());
            let requests = client.access_requests(state).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&requests)?);
            } else {
                print_table(&requests);
            }
        }
        Command::Show { id } => {
            let all = client.access_requests(None).await?;
            let request = all
                .iter()
                .find(|r| r.id == *id)
                .with_context(|| format!("no access request {id} that you may see"))?;
            print_one(request);
        }
        Command::Approve { id } => {
            let done = client.rule_on_access_request(id, "approve", None).await?;
            println!(
                "approved: {} until {}",
                done.describe(),
                done.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
        }
        Command::Deny { id, reason } => {
            let done = client
                .rule_on_access_request(id, "deny", Some(reason))
                .await?;
            println!("denied: {}", done.describe());
        }
        Command::Revoke { id, reason } => {
            let done = client
                .rule_on_access_request(id, "revoke", reason.as_deref())
                .await?;
            println!("revoked: {}", done.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(requests: &[AccessRequest]) {
    if requests.is_empty() {
        eprintln!("no access requests");
        return;
    }
    println!(
        "{:<36}  {:<8}  {:<16}  {:<6}  {:<44}  REASON",
        "ID", "STATE", "REQUESTER", "FOR", "SCOPE"
    );
    for r in requests {
        println!(
            "{:<36}  {:<8}  {:<16}  {:<6}  {:<44}  {}",
            r.id,
            r.state.as_str(),
            r.requester,
            human(r.duration_seconds),
            describe_scope(&r.scope),
            r.reason
        );
    }
}

fn print_one(r: &AccessRequest) {
    println!("id:         {}", r.id);
    println!("state:      {}", r.state.as_str());
    println!("requester:  {}", r.requester);
    println!("scope:      {}", describe_scope(&r.scope));
    println!("duration:   {}", human(r.duration_seconds));
    println!("reason:     {}", r.reason);
    println!("asked:      {}", r.created_at.to_rfc3339());
    if let Some(by) = &r.decided_by {
        println!("decided by: {by}");
    }
    if let Some(at) = r.decided_at {
        println!("decided:    {}", at.to_rfc3339());
    }
    if let Some(why) = &r.decision_reason {
        println!("because:    {why}");
    }
    if let Some(at) = r.expires_at {
        println!("expires:    {}", at.to_rfc3339());
    }
    if !r.groups.is_empty() {
        println!("adds groups: {}", r.groups.join(", "));
    }
}
