//! `[cluster]`: several replicas sharing PostgreSQL (index, audit trail, approvals, membership,
//! live sessions, commands) and S3-compatible storage (recordings). Without the section,
//! custody runs on one machine with `SQLite` and local files, as it always has.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Cluster mode (`[cluster]`, `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterModeConfig {
    /// This replica's id: unique in the cluster, stable across restarts (a pod name from a
    /// `StatefulSet`, a host name). Written into audit events and recordings.
    pub replica_id: String,
    /// Where the other replicas reach this one's `[cluster.peer]` listener (following its
    /// sessions), e.g. `https://10.0.0.5:8444`; default `https://<cluster.peer.listen>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// The signing key every replica shares (a file, or a mounted secret). Replicas with
    /// another key refuse to join.
    pub signing_key_file: PathBuf,
    /// How long a replica's lease lasts without renewal (renewed every third of it).
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// On shutdown: how long sessions get to end by themselves before they are ended with a
    /// message.
    #[serde(default = "default_drain_seconds")]
    pub drain_seconds: u64,
    /// The shared database.
    pub postgres: PostgresSection,
    /// Where recordings are stored.
    pub object_store: ObjectStoreSection,
    /// The listener other replicas reach this one on (following its sessions), over mutual
    /// TLS; without it, a session is followed through the replica that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerSection>,
}

/// `[cluster.peer]`: replica-to-replica calls, over mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Where to listen, e.g. `0.0.0.0:8444`; `advertise_url` names it to the others.
    pub listen: std::net::SocketAddr,
    /// This replica's certificate, valid for serving and for client authentication.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// The CA that signs every replica's peer certificate: the only one trusted either way.
    pub ca_file: PathBuf,
}

/// `[cluster.postgres]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// `postgres://user:password@host:port/database` (`CUSTODY_CLUSTER_POSTGRES_URL` overrides
    /// it, so the password need not be in the file).
    pub url: String,
    /// The CA of the server's certificate: connections use TLS and verify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Connections this replica holds at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `[cluster.object_store]`: an S3-compatible bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSection {
    /// The endpoint, `https://s3.eu-west-1.amazonaws.com` or a compatible server's.
    pub endpoint: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// The region (`us-east-1` for most compatible servers).
    #[serde(default = "default_region")]
    pub region: String,
    /// A prefix for every key, so one bucket can serve several deployments.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The access key id (`CUSTODY_CLUSTER_S3_ACCESS_KEY_ID` overrides it).
    #[serde(default)]
    pub access_key_id: String,
    /// The secret access key (`CUSTODY_CLUSTER_S3_SECRET_ACCESS_KEY` overrides it; better
    /// than the file).
    #[serde(default)]
    pub secret_access_key: String,
    /// The CA of the endpoint's certificate; the system's roots without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

// Debug output never holds a secret: the URL's password and the secret key are left out.
impl std::fmt::Debug for PostgresSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSection")
            .field("url", &without_password(&self.url))
            .field("ca_file", &self.ca_file)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl std::fmt::Debug for ObjectStoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreSection")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

fn default_lease_seconds() -> u64 {
    10
}

fn default_drain_seconds() -> u64 {
    30
}

fn default_max_connections() -> usize {
    16
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_prefix() -> String {
    "custody/".into()
}

impl ClusterModeConfig {
    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    /// Applies the `CUSTODY_CLUSTER_*` overrides.
    pub(super) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        if let Some(v) = env("CUSTODY_CLUSTER_REPLICA_ID") {
            self.replica_id = v;
        }
        if let Some(v) = env("CUSTODY_CLUSTER_POSTGRES_URL") {
            self.postgres.url = v;
        }
        if let Some(v) = env("CUSTODY_CLUSTER_S3_ACCESS_KEY_ID") {
            self.object_store.access_key_id = v;
        }
        if let Some(v) = env("CUSTODY_CLUSTER_S3_SECRET_ACCESS_KEY") {
            self.object_store.secret_access_key = v;
        }
    }

    /// The `cluster mode:` lines of `custody config check`; never a password.
    pub(super) fn explain(&self) -> String {
        format!(
            "cluster mode: replica {}, lease {} s, drain {} s\n  PostgreSQL {}\n  recordings in {} bucket {} (prefix {:?})\n  peers: {}\n",
            self.replica_id,
            self.lease_seconds,
            self.drain_seconds,
            without_password(&self.postgres.url),
            self.object_store.endpoint,
            self.object_store.bucket,
            self.object_store.prefix,
            match &self.peer {
                Some(peer) => format!("mutual TLS on {}", peer.listen),
                None => "none (sessions are followed on the replica holding them)".to_owned(),
            },
        )
    }

    /// The checks serde cannot express.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let id = &self.replica_id;
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            problems.push(format!(
                "cluster.replica_id {id:?}: must be 1-63 letters, digits, '-', '_' or '.'"
            ));
        }
        if let Some(url) = &self.advertise_url
            && !url.starts_with("https://")
        {
            problems.push(format!(
                "cluster.advertise_url {url:?}: must be an https:// URL"
            ));
        }
        if !(3..=300).contains(&self.lease_seconds) {
            problems.push("cluster.lease_seconds: must be between 3 and 300".into());
        }
        if !self.postgres.url.starts_with("postgres://")
            && !self.postgres.url.starts_with("postgresql://")
        {
            problems.push(
                "cluster.postgres.url: must be a postgres:// URL (or set CUSTODY_CLUSTER_POSTGRES_URL)"
                    .into(),
            );
        }
        if self.postgres.max_connections == 0 {
            problems.push("cluster.postgres.max_connections: must be at least 1".into());
        }
        let store = &self.object_store;
        if !store.endpoint.starts_with("https://") && !store.endpoint.starts_with("http://") {
            problems.push(format!(
                "cluster.object_store.endpoint {:?}: must be an http(s):// URL",
                store.endpoint
            ));
        }
        if store.bucket.is_empty() {
            problems.push("cluster.object_store.bucket: must not be empty".into());
        }
        if store.access_key_id.is_empty() || store.secret_access_key.is_empty() {
            problems.push(
                "cluster.object_store: access_key_id and secret_access_key are needed (or \
                 CUSTODY_CLUSTER_S3_ACCESS_KEY_ID and CUSTODY_CLUSTER_S3_SECRET_ACCESS_KEY)"
                    .into(),
            );
        }
        problems
    }
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explaining_never_shows_the_password() {
        assert_eq!(
            without_password("postgres://custody:s3cret@db:5432/custody?sslmode=require"),
            "postgres://custody@db:5432/custody?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://db/custody"),
            "postgres://db/custody"
        );
    }
}
