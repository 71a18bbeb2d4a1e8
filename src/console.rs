//! The web console under `/custody/ui/`: server-rendered pages over the sessions API, the audit
//! trail and access requests, for people in a browser.
//!
//! The gateway is the browser's backend ([`login`]): it runs the OIDC authorization code flow
//! with PKCE, state and nonce, maps the ID token exactly as it maps a kubectl token (through
//! the same authenticator), and keeps the person in a server-side session ([`visits`]); the
//! browser holds one opaque `__Host-` cookie and never a token. Every page reads through the
//! same code and access rules as the JSON API, as the person, and is audited like a kubectl
//! request ([`pages`]). [`guard`] holds the browser-facing defences: CSRF tokens, `Origin` and
//! `Sec-Fetch-Site` checks, and the security headers (a strict CSP among them).

pub mod calls;
pub mod guard;
pub mod live;
pub mod login;
pub mod pages;
pub mod views;
pub mod visits;

use std::time::Duration;

/// Where the console lives on the gateway's listener.
pub const UI_PREFIX: &str = "/custody/ui";

/// What the console needs from the configuration.
#[derive(Clone)]
pub struct ConsoleConfig {
    /// The origin browsers reach the gateway at (`https://host[:port]`, no path): the login
    /// callback is built from it and every state-changing request's `Origin` must equal it.
    pub public_origin: String,
    /// The OIDC issuer (one of the `[[oidc]]` issuers, so its tokens map as kubectl's do).
    pub issuer: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The secret of a confidential client; `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// The scopes asked for (`openid` always among them).
    pub scopes: Vec<String>,
    /// The issuer's CA (PEM) when it is not in the system's roots.
    pub issuer_ca_pem: Option<Vec<u8>>,
    /// Timeout of one request to the issuer.
    pub http_timeout: Duration,
    /// The longest a browser session lasts (it also ends when the ID token expires).
    pub max_session: Duration,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("public_origin", &self.public_origin)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The console's state: its configuration, the OIDC client and the browser sessions.
pub struct Console {
    config: ConsoleConfig,
    login: login::Login,
    visits: visits::Visits,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// The console for this configuration; fails when the issuer's CA cannot be used.
    pub fn new(config: ConsoleConfig) -> crate::error::Result<Self> {
        let login = login::Login::new(&config)?;
        Ok(Self {
            visits: visits::Visits::new(config.max_session),
            login,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConsoleConfig {
        &self.config
    }

    /// The URL of the login callback, as the issuer must have it registered.
    pub fn redirect_uri(&self) -> String {
        format!("{}{UI_PREFIX}/login/callback", self.config.public_origin)
    }
}
