//! The `[console]` section: the web console under `/custody/ui/`, which logs people in with the
//! `[login]` issuer and client.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[console]` section. The console is served when `[login]` is configured and `enabled`
/// is true (the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Serve the console (`true` by default; it needs `[login]`).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// The URL browsers reach the gateway at, `https://host[:port]` (no path): the login
    /// callback `<public_url>/custody/ui/login/callback` must be registered with the issuer,
    /// and every form must come from this origin. By default `https://<server.listen>`,
    /// which suits a gateway reached by its address; behind a name, set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The OAuth client the console logs in with; by default `[login] client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A file holding the client's secret, for a confidential client; by default `[login]
    /// client_secret` when the client is the same, else none (a public client with PKCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The longest a browser stays logged in, in hours (it also ends when the ID token does).
    #[serde(default = "session_hours")]
    pub session_hours: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            enabled: true,
            public_url: None,
            client_id: None,
            client_secret_file: None,
            session_hours: session_hours(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn session_hours() -> u64 {
    8
}

impl ConsoleSection {
    /// The console's origin for a gateway listening on `listen` (the bound address, when the
    /// configured port is 0).
    pub fn public_origin(&self, listen: SocketAddr) -> Result<String, String> {
        match &self.public_url {
            Some(url) => origin_of(url),
            None if listen.ip().is_unspecified() => Err(
                "console.public_url: the gateway listens on every address, so set the URL \
                 browsers use (https://host[:port])"
                    .into(),
            ),
            None => Ok(format!("https://{listen}")),
        }
    }

    /// The checks serde cannot express.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.public_url
            && let Err(e) = origin_of(url)
        {
            problems.push(e);
        }
        if self.session_hours == 0 || self.session_hours > 24 * 30 {
            problems.push("console.session_hours: must be from 1 to 720".into());
        }
        problems
    }
}

/// `https://host[:port]` from a URL that must be exactly that (a trailing `/` allowed).
fn origin_of(url: &str) -> Result<String, String> {
    let bad = || format!("console.public_url: {url:?} must be https://host[:port] with no path");
    let trimmed = url.strip_suffix('/').unwrap_or(url);
    let uri: http::Uri = trimmed.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https")
        || uri.authority().is_none()
        || uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        || trimmed.contains('@')
    {
        return Err(bad());
    }
    Ok(trimmed.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_public_url_or_the_listen_address() {
        let section = ConsoleSection::default();
        let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            section.public_origin(listen).unwrap(),
            "https://127.0.0.1:8443"
        );
        assert!(
            section
                .public_origin("0.0.0.0:8443".parse().unwrap())
                .is_err()
        );
        let named = ConsoleSection {
            public_url: Some("https://Custody.example.com/".into()),
            ..ConsoleSection::default()
        };
        assert_eq!(
            named.public_origin(listen).unwrap(),
            "https://custody.example.com"
        );
        for bad in [
            "http://custody.example.com",
            "https://custody.example.com/ui",
            "custody.example.com",
            "https://u@custody.example.com",
        ] {
            let section = ConsoleSection {
                public_url: Some(bad.into()),
                ..ConsoleSection::default()
            };
            assert_eq!(section.problems().len(), 1, "{bad}");
        }
    }
}
