//! `custody credential`: the kubeconfig exec plugin that gives kubectl a token.
//!
//! With `--server` it reads the tokens `custody login` stored for that gateway, refreshes them
//! shortly before the ID token expires (storing the new ones atomically), and, when kubectl
//! says the session is interactive and nothing else works, runs the login. With `--issuer` and
//! `--user` it logs in non-interactively at a development issuer (what `custody demo` writes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use custody::credential::{ExecCredentialVersion, exec_credential, fetch_dev_token};
use custody::login::LoginError;
use custody::login::flow::{Provider, stored_claims};
use custody::login::store::{Store, StoredLogin};
use serde_json::Value;

/// Where to get the token.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway whose stored login (`custody login --server URL`) to use.
    #[arg(long, value_name = "URL", conflicts_with_all = ["issuer", "user"])]
    server: Option<String>,
    /// The profile of that login (`custody login --profile NAME`).
    #[arg(long, value_name = "NAME", requires = "server", value_parser = super::login::profile_name)]
    profile: Option<String>,
    /// Development issuer mode: the issuer URL.
    #[arg(long, requires = "user")]
    issuer: Option<String>,
    /// The OAuth client id (development issuer mode).
    #[arg(long, default_value = "custody")]
    client_id: String,
    /// Development issuer mode: the user to log in as (approved without a password).
    #[arg(long, requires = "issuer")]
    user: Option<String>,
    /// The CA certificate (PEM) of the development issuer's TLS certificate.
    #[arg(long, value_name = "FILE")]
    issuer_ca: Option<PathBuf>,
}

/// Prints an `ExecCredential` with a valid ID token, in the apiVersion kubectl asked for.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
    let version = ExecCredentialVersion::from_exec_info(exec_info.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(server) = &args.server {
        let interactive = exec_info
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|v| v.pointer("/spec/interactive").and_then(Value::as_bool))
            .unwrap_or(false);
        let login = runtime.block_on(stored_token(server, args.profile.as_deref(), interactive))?;
        println!(
            "{}",
            exec_credential(version, &login.id_token, Some(login.expires_at))
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(issuer), Some(user)) = (&args.issuer, &args.user) else {
        anyhow::bail!("give --server URL (after `custody login --server URL`)");
    };
    let ca = match &args.issuer_ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let token = runtime
        .block_on(fetch_dev_token(
            issuer,
            &args.client_id,
            user,
            ca.as_deref(),
        ))
        .with_context(|| format!("cannot get a token for {user} from {issuer}"))?;
    println!(
        "{}",
        exec_credential(version, &token.id_token, Some(token.expires_at))
    );
    Ok(ExitCode::SUCCESS)
}

/// How long before expiry a token is renewed: a fifth of its lifetime, at most a minute.
fn renew_margin(login: &StoredLogin) -> i64 {
    let issued_at = stored_claims(&login.id_token)
        .and_then(|c| c.get("iat").and_then(Value::as_i64))
        .unwrap_or(login.expires_at - 300);
    ((login.expires_at - issued_at) / 5).clamp(0, 60)
}

/// A stored login whose ID token is valid for a while yet: as stored, refreshed, or (when
/// interactive) from a new login.
async fn stored_token(
    server: &str,
    profile: Option<&str>,
    interactive: bool,
) -> anyhow::Result<StoredLogin> {
    let store = Store::from_env()?;
    let Some(login) = store.load(server, profile)? else {
        if interactive {
            anyhow::bail!(LoginError::NotLoggedIn {
                server: server.to_owned(),
                detail: " (no stored login, and the gateway's CA is not known here)".into(),
            });
        }
        anyhow::bail!(LoginError::NotLoggedIn {
            server: server.to_owned(),
            detail: String::new(),
        });
    };
    let fresh_enough = |login: &StoredLogin| {
        login.expires_at - renew_margin(login) > chrono::Utc::now().timestamp()
    };
    if fresh_enough(&login) {
        return Ok(login);
    }
    // One refresh at a time per login: another kubectl command may be refreshing right now, and
    // the tokens it stores are then the ones to use.
    let _held = {
        let store = store.clone();
        let server = server.to_owned();
        let profile = profile.map(str::to_owned);
        tokio::task::spawn_blocking(move || store.lock(&server, profile.as_deref()))
            .await
            .map_err(|e| anyhow::anyhow!("the login lock: {e}"))??
    };
    let login = match store.load(server, profile)? {
        Some(current) if fresh_enough(&current) => return Ok(current),
        Some(current) => current,
        None => login,
    };
    let refreshed = if login.refresh_token.is_some() {
        let provider = Provider::discover(&login.document, None).await?;
        match provider.refresh(&login).await {
            Ok(fresh) => {
                store.save(&fresh)?;
                return Ok(fresh);
            }
            Err(e) => e,
        }
    } else {
        LoginError::NotLoggedIn {
            server: server.to_owned(),
            detail: ": the token expired and there is no refresh token".into(),
        }
    };
    if !interactive {
        return Err(refreshed.into());
    }
    eprintln!("custody: {refreshed}; logging in again");
    let fresh = super::login::interactive_login(
        server,
        &login.document,
        None,
        true,
        None,
        Duration::from_secs(300),
    )
    .await?;
    let fresh = StoredLogin {
        profile: profile.map(str::to_owned),
        ..fresh
    };
    store.save(&fresh)?;
    Ok(fresh)
}
