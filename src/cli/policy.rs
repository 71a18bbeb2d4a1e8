//! `custody policy`: explain the gateway's policy decisions offline, with the gateway's own
//! classifier and decision code and nothing sent anywhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use custody::config::Config;
use custody::policy::{Decision, Policy, PolicyConfig, RequestAttributes, kubectl};
use custody::principal::{AuthMethod, EffectiveIdentity, Principal};

/// The `custody policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Explain the decision for one request, without sending anything.
    ///
    /// Builds the request kubectl would send, classifies it as the gateway does and decides it
    /// with the policy of FILE (the gateway's configuration, or a file with only a [policy]
    /// section), with no approved access requests. Prints allow, deny or needs-approval, the
    /// reason and the roles consulted.
    ///
    /// Exit codes: 0 allow, 3 deny, 4 needs approval, 1 error (a configuration with problems
    /// prints every problem).
    ///
    /// Examples:
    ///   custody policy test --config custody.toml --user oidc:alice --group dev \
    ///       -- get secrets
    ///   custody policy test --config custody.toml --user oidc:alice --group dev \
    ///       --namespace kube-system -- exec pod/coredns-sim
    ///   custody policy test --config custody.toml --user oidc:alice --group dev \
    ///       -- portforward pod/web 8080
    ///   custody policy test --config custody.toml --user oidc:bob --group sre \
    ///       --as carol -- get pods
    ///   custody policy test --config custody.toml --user oidc:alice --group dev \
    ///       --json -- get nodes/node-1/proxy
    #[command(verbatim_doc_comment)]
    Test(TestArgs),
}

/// The request to explain.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The gateway's configuration, or a file with only a [policy] section.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The username, as authentication maps it (e.g. oidc:alice).
    #[arg(long, value_name = "USER")]
    user: String,
    /// A group of the person (repeat for several).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The cluster (default: the configuration's first, or "default").
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// The namespace, for namespaced resources.
    #[arg(long, short = 'n', value_name = "NAMESPACE", default_value = "default")]
    namespace: String,
    /// Impersonate this user (kubectl --as).
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// Impersonate this group with --as (repeat for several).
    #[arg(long = "as-group", value_name = "GROUP", requires = "as_user")]
    as_groups: Vec<String>,
    /// Print one JSON object: {"decision", "reason", "roles"}.
    #[arg(long)]
    json: bool,
    /// VERB RESOURCE[/NAME[/SUBRESOURCE]] [PORT...], e.g. `exec pod/web` or `get secrets`.
    #[arg(
        last = true,
        required = true,
        num_args = 2..,
        value_names = ["VERB", "RESOURCE"]
    )]
    request: Vec<String>,
}

/// Runs a `custody policy` subcommand.
pub fn run(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Test(args) => test(args),
    }
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let Some((policy, first_cluster)) = load(&args.config)? else {
        return Ok(ExitCode::FAILURE);
    };
    let [verb, target, ports @ ..] = args.request.as_slice() else {
        anyhow::bail!("give the request as: -- VERB RESOURCE[/NAME] [PORT...]");
    };
    let namespace = &args.namespace;
    let valid_namespace = !namespace.is_empty()
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    anyhow::ensure!(
        valid_namespace,
        "--namespace {namespace:?} is not a namespace name"
    );
    let request = kubectl::request(verb, target, ports, namespace).map_err(anyhow::Error::msg)?;
    let principal = Principal {
        method: AuthMethod::Oidc,
        issuer: String::new(),
        subject: args.user.clone(),
        username: args.user.clone(),
        groups: args.groups.clone(),
        expires_at: None,
    };
    let target_identity = args.as_user.as_ref().map(|user| EffectiveIdentity {
        user: user.clone(),
        groups: args.as_groups.clone(),
        uid: String::new(),
    });
    let cluster = args
        .cluster
        .clone()
        .or(first_cluster)
        .unwrap_or_else(|| "default".to_owned());
    let attributes = RequestAttributes {
        cluster: &cluster,
        info: &request.info,
        method: &request.method,
        upgrade: request.upgrade,
        ports: request.ports.clone(),
        impersonate: target_identity.as_ref(),
    };
    let decision = policy.decide(&principal, &attributes, &[], chrono::Utc::now().timestamp());
    let roles = policy.roles_for(&principal);
    if args.json {
        let out = serde_json::json!({
            "decision": decision.kind(),
            "reason": decision.reason(),
            "roles": roles,
        });
        println!("{out}");
    } else {
        print!("{}", explain(&decision, &roles));
    }
    Ok(ExitCode::from(match decision {
        Decision::Allow(_) => 0,
        Decision::Deny { .. } => 3,
        Decision::NeedsApproval { .. } => 4,
    }))
}

/// The text output: the decision, the reason, the roles and, when allowed, the terms.
fn explain(decision: &Decision, roles: &[String]) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut lines = vec![
        decision.kind().to_owned(),
        format!("reason: {}", decision.reason()),
        format!("roles: {}", list(roles)),
    ];
    if let Decision::Allow(allowed) = decision {
        lines.push(format!("allowed by: {}", list(&allowed.roles)));
        let secrets = if allowed.show_secrets {
            "shown"
        } else {
            "masked"
        };
        lines.push(format!("secret values: {secrets}"));
        let recording = match allowed.recording {
            custody::policy::RecordingMode::Strict => "strict",
            custody::policy::RecordingMode::BestEffort => "best-effort",
        };
        lines.push(format!("recording: {recording}"));
        if let Some(ports) = &allowed.ports {
            let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
            lines.push(format!("ports: {}", ports.join(", ")));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// Loads the policy from a gateway configuration or a policy-only file; `None` after
/// printing every problem.
fn load(path: &Path) -> anyhow::Result<Option<(Policy, Option<String>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not a TOML file", path.display()))?;
    let policy_only = value.keys().all(|k| k == "policy");
    let (config, first_cluster) = if policy_only {
        match PolicyConfig::from_section(&text) {
            Ok(policy) => (policy, None),
            Err(problem) => return Ok(report(path, &[problem])),
        }
    } else {
        match Config::parse(&text, &|k| std::env::var(k).ok()) {
            Ok(config) => {
                let first = config.clusters.first().map(|c| c.name.clone());
                let Some(policy) = config.policy else {
                    anyhow::bail!(
                        "{} has no [policy] section (docs/policy.md)",
                        path.display()
                    );
                };
                (policy, first)
            }
            Err(err) => return Ok(report(path, &err.problems)),
        }
    };
    match Policy::new(&config) {
        Ok(policy) => Ok(Some((policy, first_cluster))),
        Err(err) => Ok(report(path, &err.problems)),
    }
}

fn report<T>(path: &Path, problems: &[String]) -> Option<T> {
    eprintln!("{}: invalid policy:", path.display());
    for problem in problems {
        eprintln!("  - {problem}");
    }
    None
}
