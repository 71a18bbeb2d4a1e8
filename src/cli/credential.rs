//! `custody credential`: the kubeconfig exec plugin that gives kubectl a token.
//!
//! This version logs in non-interactively at a development issuer (the one `custody demo`
//! runs); the login issue makes it a real OIDC client with a token cache and refresh.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use custody::credential::{ExecCredentialVersion, exec_credential, fetch_dev_token};

/// Where to get the token.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The issuer URL.
    #[arg(long)]
    issuer: String,
    /// The OAuth client id.
    #[arg(long, default_value = "custody")]
    client_id: String,
    /// The user to log in as (the development issuer approves it without a password).
    #[arg(long)]
    user: String,
    /// The CA certificate (PEM) of the issuer's TLS certificate.
    #[arg(long, value_name = "FILE")]
    issuer_ca: Option<PathBuf>,
}

/// Prints an `ExecCredential` with a fresh ID token, in the apiVersion kubectl asked for.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let version = ExecCredentialVersion::from_exec_info(
        std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref(),
    );
    let ca = match &args.issuer_ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = runtime
        .block_on(fetch_dev_token(
            &args.issuer,
            &args.client_id,
            &args.user,
            ca.as_deref(),
        ))
        .with_context(|| format!("cannot get a token for {} from {}", args.user, args.issuer))?;
    println!(
        "{}",
        exec_credential(version, &token.id_token, Some(token.expires_at))
    );
    Ok(ExitCode::SUCCESS)
}
