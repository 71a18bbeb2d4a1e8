//! The PostgreSQL pool every replica's catalog, membership and commands use: deadpool over
//! tokio-postgres, TLS with rustls (`ring`) when a CA file is given, and short timeouts so that
//! a database that is down is an error a request can report (strict audit answers 503), not a
//! request that hangs.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};

use crate::error::{Error, Result};

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq-style URL: `postgres://user:password@host:port/database?sslmode=require`.
    pub url: String,
    /// The CA that signs the server's certificate: with it, connections use TLS and verify the
    /// server; without it, they are plain (loopback or a trusted network only).
    pub ca_file: Option<PathBuf>,
    /// The most connections this replica holds.
    pub max_connections: usize,
    /// How long to wait for a connection (to open one, or for one to be free).
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// A configuration for `url` with the defaults: plain connections, 16 of them, 3 s.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ca_file: None,
            max_connections: 16,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A pool of connections to the shared database. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// How to open a connection of its own (for `LISTEN`, which a pooled one cannot hold).
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL without its password, for logs.
    shown: Arc<str>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Builds the pool; no connection is opened until one is needed.
    pub fn new(config: &PostgresConfig) -> Result<Self> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| Error::PostgresUrl(e.to_string()))?;
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("custody");
        }
        let shown = shown_url(&pg);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = match &config.ca_file {
            Some(path) => Some(tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(
                path,
            )?)),
            None => None,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(pg.clone(), tls.clone(), manager_config),
            None => Manager::from_config(pg.clone(), tokio_postgres::NoTls, manager_config),
        };
        let timeouts = Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        };
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .timeouts(timeouts)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::PostgresConnect(e.to_string()))?;
        Ok(Self {
            pool,
            config: pg,
            tls,
            shown: shown.into(),
        })
    }

    /// A connection from the pool.
    pub async fn get(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::PostgresConnect(format!("{}: {}", self.shown, describe_pool(&e))))
    }

    /// Opens a connection of its own that `LISTEN`s on `channel`; each notification's
    /// payload arrives through [`Listener::recv`], which returns `None` when the connection is
    /// lost (the caller reconnects).
    pub async fn listen(&self, channel: &str) -> Result<Listener> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let refused = |e: tokio_postgres::Error| {
            Error::PostgresConnect(format!("{}: {}", self.shown, crate::error::error_chain(&e)))
        };
        let client = if let Some(tls) = &self.tls {
            let (client, connection) = self.config.connect(tls.clone()).await.map_err(refused)?;
            tokio::spawn(forward(connection, tx));
            client
        } else {
            let (client, connection) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(refused)?;
            tokio::spawn(forward(connection, tx));
            client
        };
        // The channel is an identifier made by custody, never input; quoted all the same.
        client
            .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "")))
            .await
            .map_err(Error::pg("listen"))?;
        Ok(Listener {
            _client: client,
            notifications: rx,
        })
    }

    /// Where the database is (the URL without a password).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// A pool error with the database's reason, which deadpool's own message leaves out.
fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => crate::error::error_chain(pg),
        other => other.to_string(),
    }
}

/// `postgresql://user@host:port/db`, for messages: never the password.
fn shown_url(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{}@{host}:{port}/{}",
        pg.get_user().unwrap_or_default(),
        pg.get_dbname().unwrap_or_default()
    )
}

/// A rustls client configuration (`ring`) that trusts only the CA in `path`.
fn client_tls(path: &Path) -> Result<rustls::ClientConfig> {
    let bad = |reason: String| Error::PostgresCa {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        found += 1;
    }
    if found == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A dedicated connection listening on a channel.
pub struct Listener {
    /// The connection closes when its client is dropped: held for as long as the listener.
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::Receiver<String>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// The next notification's payload; `None` once the connection is lost.
    pub async fn recv(&mut self) -> Option<String> {
        self.notifications.recv().await
    }
}

/// Drives a dedicated connection, passing each notification's payload on, until the
/// connection ends or nobody listens.
async fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::Sender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                if tx.send(n.payload().to_owned()).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "postgresql listen connection lost");
                return;
            }
        }
    }
}
