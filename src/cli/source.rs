//! Where the commands that read recorded sessions (`custody sessions list|show|browse`,
//! `custody download`) find them: a data directory read directly (`--data-dir`), or a running
//! gateway's sessions API (`--server`, with a token).

mod local;

use std::path::PathBuf;

use anyhow::Context;
use custody::client::{ApiClient, TokenSource};
use custody_recorder::reader::{read_recording, read_recording_bytes};
use custody_replay::{KeyOrigin, Session};
use custody_web::model::{SessionDetail, SessionFilter, SessionSummary};
use ed25519_dalek::VerifyingKey;
use secrecy::SecretString;

pub use local::Local;

/// The error for a data directory without an index: a cluster replica's says where to look.
pub fn no_index(data_dir: &std::path::Path) -> anyhow::Error {
    match custody::cluster::replica_of(data_dir) {
        Some(replica) => anyhow::anyhow!(
            "{} is the data directory of cluster replica {replica}: its sessions, recordings \
             and audit trail are in the cluster's PostgreSQL and object store; ask a running \
             replica with --server https://HOST:PORT (and a token) instead",
            data_dir.display()
        ),
        None => anyhow::anyhow!(
            "no index at {} (is --data-dir the gateway's data_dir?)",
            data_dir.join("index.sqlite").display()
        ),
    }
}

/// The flags that choose where sessions are read: exactly one of `--data-dir` and `--server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// Read this data directory directly (the configuration's `data_dir`; run as the gateway's
    /// user on its host).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// Ask the running gateway at this URL instead (https://HOST:PORT), as the token's owner.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token for --server (prefer `CUSTODY_TOKEN` or --token-file: a command line is
    /// visible to other users of the host).
    #[arg(
        long,
        env = "CUSTODY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the bearer token for --server (used instead of --token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificates to trust for --server instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Sessions read from a data directory or from a gateway.
#[derive(Debug)]
pub enum Source {
    /// The data directory, read directly.
    Local(Local),
    /// A running gateway's API.
    Remote(Box<ApiClient>),
}

/// A session in a list, with its best-matching text when the list was searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The session.
    pub summary: SessionSummary,
    /// The best match of `--grep` (matched words in `«` `»`), where known.
    pub snippet: Option<String>,
}

impl SourceArgs {
    /// Where the token comes from, if anywhere. Later token sources (a login cache) go here.
    fn token_source(&self) -> Option<TokenSource> {
        if let Some(file) = &self.token_file {
            return Some(TokenSource::File(file.clone()));
        }
        self.token
            .as_ref()
            .map(|token| TokenSource::Value(SecretString::from(token.clone())))
    }
}

impl Source {
    /// Opens the source the flags name; exactly one of `--data-dir` and `--server` is needed.
    pub fn open(args: &SourceArgs) -> anyhow::Result<Self> {
        match (&args.data_dir, &args.server) {
            (Some(dir), None) => Ok(Source::Local(Local::open(dir)?)),
            (None, Some(server)) => {
                let token = args.token_source().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--server needs a token: set CUSTODY_TOKEN, or pass --token-file FILE \
                         (or --token TOKEN)"
                    )
                })?;
                let client = ApiClient::new(server, &token, args.ca_file.as_deref())?;
                Ok(Source::Remote(Box::new(client)))
            }
            (Some(_), Some(_)) => {
                anyhow::bail!("give either --data-dir or --server, not both")
            }
            (None, None) => anyhow::bail!(
                "say where the sessions are: --data-dir DIR (the gateway's data directory, read \
                 directly) or --server https://HOST:PORT (a running gateway, with a token)"
            ),
        }
    }

    /// The sessions matching `filter`, newest first; with `grep`, each with its best match
    /// when the source can tell (a data directory can; the API's list has no snippets).
    pub async fn list(&self, filter: &SessionFilter) -> anyhow::Result<Vec<Listed>> {
        match self {
            Source::Local(local) => local.list(filter),
            Source::Remote(client) => Ok(client
                .sessions(filter)
                .await?
                .into_iter()
                .map(|summary| Listed {
                    summary,
                    snippet: None,
                })
                .collect()),
        }
    }

    /// One session, loaded for the player and verified: with the data directory's key, or the
    /// gateway's (`GET /key`) for a file downloaded from it; `key` overrides either.
    pub async fn player_session(
        &self,
        id: &str,
        key: Option<(VerifyingKey, KeyOrigin)>,
    ) -> anyhow::Result<Session> {
        match self {
            Source::Local(local) => {
                let (_row, path) = local.session(id)?;
                let (key, origin) = match key {
                    Some(given) => given,
                    None => (local.verifying_key()?, KeyOrigin::DataDir),
                };
                let recording = read_recording(&path, Some(&key))
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let seekpoints = local.seekpoints(id).ok();
                Ok(Session::from_recording(&recording, origin, seekpoints)?)
            }
            Source::Remote(client) => {
                let (key, origin) = match key {
                    Some(given) => given,
                    None => (
                        client.key().await.context("the gateway's public key")?,
                        KeyOrigin::Gateway,
                    ),
                };
                let mut download = client
                    .download(id, "raw")
                    .await
                    .with_context(|| format!("session {id}"))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = download.chunk().await? {
                    bytes.extend_from_slice(&chunk);
                }
                let recording = read_recording_bytes(&bytes, Some(&key))
                    .with_context(|| format!("the recording of session {id}"))?;
                Ok(Session::from_recording(&recording, origin, None)?)
            }
        }
    }

    /// Everything about one session.
    pub async fn detail(&self, id: &str) -> anyhow::Result<SessionDetail> {
        match self {
            Source::Local(local) => local.detail(id),
            Source::Remote(client) => client
                .session(id)
                .await
                .with_context(|| format!("session {id}")),
        }
    }
}
