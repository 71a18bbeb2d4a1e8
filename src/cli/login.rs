//! `custody login`, `custody logout` and `custody status`: logging in to a gateway's identity
//! provider from the terminal, and the tokens kept for it (`custody::login`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use custody::login::LoginDocument;
use custody::login::flow::{DevicePrompt, Provider, stored_claims};
use custody::login::store::{Store, StoredLogin, normalize_server};
use custody::login::trust::{GatewayTrust, fetch_document};
use serde_json::Value;

/// How to reach and trust a gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The gateway URL, e.g. `https://custody.example.com:8443`.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The CA certificate (PEM) of the gateway's TLS certificate. Without it: the CA of an
    /// earlier login to this server, or the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "trust_ca_fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// On first contact: trust the CA the gateway publishes if the SHA-256 of its DER is this
    /// (hex; `openssl x509 -noout -fingerprint -sha256` prints it with colons, which is fine).
    #[arg(long, value_name = "SHA256")]
    pub trust_ca_fingerprint: Option<String>,
    /// A name for this login, to keep several identities for one gateway side by side (e.g.
    /// an everyday and an admin account); stored, refreshed and used separately.
    #[arg(long, value_name = "NAME", value_parser = profile_name)]
    pub profile: Option<String>,
}

/// A profile name: short, plain characters (it is shown, and passed on kubeconfig lines).
pub fn profile_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("a profile name is 1 to 64 letters, digits, '-', '_', '.' or '@'".into())
    }
}

impl ServerArgs {
    /// The trust to use, given what is stored for this server.
    pub fn trust(&self, stored: Option<&StoredLogin>) -> anyhow::Result<GatewayTrust> {
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(GatewayTrust::Ca(pem));
        }
        if let Some(fingerprint) = &self.trust_ca_fingerprint {
            return Ok(GatewayTrust::Fingerprint(fingerprint.clone()));
        }
        Ok(match stored {
            Some(stored) => GatewayTrust::Ca(stored.document.ca_pem.clone()),
            None => GatewayTrust::System,
        })
    }
}

/// `custody login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A file holding the client secret, for a provider that only has confidential clients.
    #[arg(long, value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// Print the URL to open instead of starting a browser.
    #[arg(long)]
    no_browser: bool,
    /// The account to log in as, sent to the provider as `login_hint` (it pre-fills the
    /// username; a development issuer logs that user in without a form).
    #[arg(long, value_name = "USER")]
    login_hint: Option<String>,
    /// Log in on another device (RFC 8628 device authorization grant): print a URL and a code
    /// to enter there, for machines without a browser. The provider must offer the device flow.
    #[arg(long, conflicts_with = "no_browser")]
    device: bool,
    /// How long to wait for the browser to come back (or the device login to be approved), in
    /// seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
}

/// `custody logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The gateway to log out of; every stored login when absent.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Only this profile of --server.
    #[arg(long, value_name = "NAME", requires = "server", value_parser = profile_name)]
    profile: Option<String>,
}

/// `custody status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this gateway.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Only this profile of --server.
    #[arg(long, value_name = "NAME", requires = "server", value_parser = profile_name)]
    profile: Option<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs in and stores the tokens.
pub fn login(args: &LoginArgs) -> anyhow::Result<ExitCode> {
    let server = normalize_server(&args.server.server);
    let store = Store::from_env()?;
    let profile = args.server.profile.clone();
    let stored = store.load(&server, profile.as_deref())?;
    let trust = args.server.trust(stored.as_ref())?;
    let secret = match &args.client_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let login = runtime()?.block_on(async {
        let document = fetch_document(&server, &trust).await?;
        if args.device {
            return device_login(
                &server,
                &document,
                secret,
                Duration::from_secs(args.timeout),
            )
            .await;
        }
        interactive_login(
            &server,
            &document,
            secret,
            !args.no_browser,
            args.login_hint.clone(),
            Duration::from_secs(args.timeout),
        )
        .await
    })?;
    let login = StoredLogin { profile, ..login };
    store.save(&login)?;
    eprintln!("Logged in to {server}.");
    print_status(&login);
    Ok(ExitCode::SUCCESS)
}

/// The browser login, shared with `custody credential` when kubectl says it is interactive.
/// The URL goes to stderr (stdout may be kubectl's).
pub async fn interactive_login(
    server: &str,
    document: &LoginDocument,
    client_secret: Option<String>,
    browser: bool,
    login_hint: Option<String>,
    wait: Duration,
) -> anyhow::Result<StoredLogin> {
    let provider = Provider::discover(document, client_secret)
        .await?
        .with_login_hint(login_hint);
    let show = |url: &str| {
        eprintln!("Open this URL in a browser to log in to {server}:\n\n  {url}\n");
        if browser && open_browser(url) {
            eprintln!("(a browser was started)");
        }
    };
    Ok(provider.login(server, document, &show, wait).await?)
}

/// The device login: the verification URL and the code go to stderr.
pub async fn device_login(
    server: &str,
    document: &LoginDocument,
    client_secret: Option<String>,
    wait: Duration,
) -> anyhow::Result<StoredLogin> {
    let provider = Provider::discover(document, client_secret).await?;
    let show = |prompt: &DevicePrompt| {
        eprintln!(
            "To log in to {server}, open this URL on any device with a browser:\n\n  {}\n\n\
             and enter the code:\n\n  {}\n",
            prompt.verification_uri, prompt.user_code
        );
        if let Some(complete) = &prompt.verification_uri_complete {
            eprintln!("Or open this URL, which carries the code:\n\n  {complete}\n");
        }
        eprintln!(
            "The code is valid for {} minutes. Waiting for the login to be approved...",
            prompt.expires_in.as_secs().div_ceil(60)
        );
    };
    Ok(provider.device_login(server, document, &show, wait).await?)
}

/// Starts the desktop's browser when there is a display; `false` when none could be started.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty())
    {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Revokes and removes stored logins.
pub fn logout(args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    let store = Store::from_env()?;
    let logins = match &args.server {
        Some(server) => store
            .load(server, args.profile.as_deref())?
            .into_iter()
            .collect(),
        None => store.all()?,
    };
    if logins.is_empty() {
        eprintln!(
            "Not logged in{}.",
            args.server
                .as_ref()
                .map(|s| format!(" to {s}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    for login in logins {
        let revoked = rt.block_on(async {
            let provider = Provider::discover(&login.document, None).await?;
            provider.revoke(&login).await
        });
        match revoked {
            Ok(true) => eprintln!("Revoked the refresh token at {}.", login.document.issuer),
            Ok(false) => {}
            Err(e) => eprintln!("custody: could not revoke the refresh token: {e}"),
        }
        store.remove(&login.server, login.profile.as_deref())?;
        eprintln!("Logged out of {}.", login.server);
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows who the stored tokens name.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let store = Store::from_env()?;
    let logins: Vec<StoredLogin> = match &args.server {
        Some(server) => store
            .load(server, args.profile.as_deref())?
            .into_iter()
            .collect(),
        None => store.all()?,
    };
    if logins.is_empty() {
        println!("Not logged in. Run `custody login --server URL`.");
        return Ok(ExitCode::FAILURE);
    }
    for login in &logins {
        print_status(login);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(login: &StoredLogin) {
    let claims = stored_claims(&login.id_token).unwrap_or_default();
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut who = text("sub").unwrap_or_else(|| "?".into());
    for extra in ["email", "preferred_username", "name"] {
        if let Some(value) = text(extra) {
            who = format!("{who} ({extra} {value})");
            break;
        }
    }
    let groups: Vec<String> = match claims.get("groups") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let now = Utc::now().timestamp();
    let until = DateTime::<Utc>::from_timestamp(login.expires_at, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default();
    let left = login.expires_at - now;
    println!("server:   {}", login.server);
    if let Some(profile) = &login.profile {
        println!("profile:  {profile}");
    }
    println!("issuer:   {}", login.document.issuer);
    println!("user:     {who}");
    if !groups.is_empty() {
        println!("groups:   {}", groups.join(", "));
    }
    if left > 0 {
        println!(
            "token:    valid until {until} ({}m{}s left)",
            left / 60,
            left % 60
        );
    } else {
        println!("token:    expired at {until}");
    }
    println!(
        "refresh:  {}",
        if login.refresh_token.is_some() {
            "yes (custody credential renews the token)"
        } else {
            "no (log in again when the token expires)"
        }
    );
    let clusters: Vec<&str> = login
        .document
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    println!("clusters: {}", clusters.join(", "));
}
