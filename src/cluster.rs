//! The gateway's side of cluster mode (`[cluster]`): joining the cluster at start-up, and the
//! three loops a replica runs while it serves.
//!
//! - **Lease**: renewed every third of `lease_seconds`. A renewal that finds the lease taken
//!   (this replica was presumed dead) ends every session here with [`LEASE_LOST`] and stops
//!   the gateway: another replica has sealed or is sealing them, and this one must not write.
//!   A renewal that cannot reach PostgreSQL is retried; when the lease runs out meanwhile, the
//!   same happens, since the others may take it.
//! - **Commands**: kills and grant revocations issued on other replicas, woken by
//!   `LISTEN/NOTIFY` and also polled, applied to this replica's live sessions.
//! - **Orphans**: sessions whose replica's lease ended are claimed, sealed `interrupted` from
//!   their uploaded segments, stored as one verified object and indexed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use custody_cluster::catalog::PgCatalog;
use custody_cluster::commands::{self, Command, CommandKind};
use custody_cluster::live;
use custody_cluster::members::{Membership, ReplicaInfo};
use custody_cluster::objects::{ObjectStoreConfig, Objects};
use custody_cluster::postgres::{Postgres, PostgresConfig};
use custody_recorder::catalog::Catalog;
use ed25519_dalek::SigningKey;
use tokio::sync::watch;

use crate::config::cluster::ClusterModeConfig;

pub mod peer;
use crate::control::registry::LiveSessions;

/// The manifest reason of sessions ended because their replica lost its lease.
pub const LEASE_LOST: &str = "replica_lease_lost";

/// The manifest reason of sessions ended because their replica shut down before they ended.
pub const REPLICA_SHUTDOWN: &str = "replica_shutdown";

/// How often commands are polled when no notification arrives (notifications wake the loop
/// at once; the poll covers a lost notification or a reconnecting listener).
const COMMAND_POLL: Duration = Duration::from_secs(2);

/// What a replica shares with the others.
#[derive(Clone)]
pub struct ClusterMode {
    /// The shared database.
    pub db: Postgres,
    /// This replica's lease and epoch.
    pub membership: Membership,
    /// The catalog, holding this replica's sessions under its epoch.
    pub catalog: Arc<PgCatalog>,
    /// Where recordings go.
    pub objects: Objects,
    /// The signing key every replica shares.
    pub key: Arc<SigningKey>,
    /// Where this replica spools recordings and joins recovered ones.
    pub spool_dir: PathBuf,
    /// Replica-to-replica TLS (`[cluster.peer]`), for following sessions held elsewhere.
    pub peer: Option<peer::PeerTls>,
}

impl std::fmt::Debug for ClusterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMode")
            .field("replica", &self.membership.id())
            .field("epoch", &self.membership.epoch())
            .field("db", &self.db)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The shared signing key could not be read.
    #[error("cluster.signing_key_file {path}: {reason}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// PostgreSQL or the object store refused or failed.
    #[error(transparent)]
    Shared(#[from] custody_cluster::Error),
    /// The peer certificates could not be loaded.
    #[error(transparent)]
    Peer(#[from] peer::PeerError),
}

impl ClusterMode {
    /// Joins the cluster: loads the shared key, connects to PostgreSQL and migrates its schema,
    /// checks that the bucket can be written, read and deleted, and takes a lease. Nothing is
    /// served before this succeeds.
    pub async fn start(
        config: &ClusterModeConfig,
        data_dir: &Path,
        listen: std::net::SocketAddr,
    ) -> Result<Self, ClusterError> {
        let key = load_shared_key(&config.signing_key_file)?;
        let db = Postgres::new(&PostgresConfig {
            url: config.postgres.url.clone(),
            ca_file: config.postgres.ca_file.clone(),
            max_connections: config.postgres.max_connections,
            connect_timeout: Duration::from_secs(3),
        })?;
        custody_cluster::schema::migrate(&db).await?;
        let store = &config.object_store;
        let mut object_config = ObjectStoreConfig::new(
            &store.endpoint,
            &store.bucket,
            &store.region,
            &store.access_key_id,
            &store.secret_access_key,
        );
        object_config.prefix.clone_from(&store.prefix);
        object_config.ca_file.clone_from(&store.ca_file);
        let objects = Objects::new(&object_config)?;
        objects.check().await?;
        let peer = config.peer.as_ref().map(peer::PeerTls::load).transpose()?;
        let url = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| match &config.peer {
                Some(section) => format!("https://{}", section.listen),
                None => format!("https://{listen}"),
            });
        let info = ReplicaInfo {
            id: config.replica_id.clone(),
            url,
            key_fingerprint: key_fingerprint(&key),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let membership = Membership::join(&db, &info, config.lease()).await?;
        let spool_dir = data_dir.join("spool");
        custody_recorder::permissions::create_dir(&spool_dir).map_err(|e| {
            ClusterError::Shared(custody_cluster::Error::LocalFile {
                path: spool_dir.clone(),
                source: e,
            })
        })?;
        tidy_spool(&PgCatalog::new(db.clone()), &objects, &spool_dir).await;
        Ok(Self {
            catalog: Arc::new(PgCatalog::for_replica(db.clone(), membership.clone())),
            db,
            membership,
            objects,
            key: Arc::new(key),
            spool_dir,
            peer,
        })
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        self.membership.id()
    }

    /// Runs the lease, command and orphan loops until `stop` turns true; sets `lost` when the
    /// lease is lost (the caller stops serving).
    pub fn spawn(
        &self,
        live: Arc<LiveSessions>,
        stop: watch::Receiver<bool>,
        lost: watch::Sender<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(lease_loop(
                self.membership.clone(),
                live.clone(),
                stop.clone(),
                lost,
            )),
            tokio::spawn(command_loop(self.clone(), live, stop.clone())),
            tokio::spawn(orphan_loop(self.clone(), stop)),
        ]
    }

    /// Ends session `id` wherever it runs: here, or through a command to its replica.
    /// Returns the replica that holds it, or `None` when no session has that id.
    pub async fn end_session(
        &self,
        live_here: &LiveSessions,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<Option<String>, custody_cluster::Error> {
        if live_here.end_session(id, reason) {
            return Ok(Some(self.replica_id().to_owned()));
        }
        let Some(row) = live::get(&self.db, id).await? else {
            return Ok(None);
        };
        commands::issue(
            &self.db,
            &row.replica_id,
            CommandKind::EndSession,
            id,
            reason,
            by,
        )
        .await?;
        Ok(Some(row.replica_id))
    }

    /// Follows session `id` on `replica` through its peer listener.
    pub async fn follow_on(
        &self,
        replica: &str,
        id: &str,
    ) -> Result<http::Response<crate::proxy::Body>, String> {
        let Some(tls) = &self.peer else {
            return Err("no [cluster.peer] is configured on this replica".into());
        };
        let members = custody_cluster::members::members(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        let member = members
            .iter()
            .find(|m| m.id == replica && m.live)
            .ok_or_else(|| format!("replica {replica} holds no current lease"))?;
        peer::follow(tls, &member.url, id).await
    }

    /// Ends the sessions of grant `grant` on every other replica that holds one (this
    /// replica's are ended by the caller); returns those replicas.
    pub async fn end_grant_elsewhere(
        &self,
        grant: &str,
        reason: &str,
        by: &str,
    ) -> Result<Vec<String>, custody_cluster::Error> {
        let mut told = Vec::new();
        for replica in live::replicas_of_grant(&self.db, grant).await? {
            if replica == self.replica_id() {
                continue;
            }
            commands::issue(&self.db, &replica, CommandKind::EndGrant, grant, reason, by).await?;
            told.push(replica);
        }
        Ok(told)
    }
}

/// The file in a replica's data directory that says it is one (`custody` commands that read a
/// data directory point to `--server` instead of reading an empty one).
pub const MARKER: &str = "CLUSTER-REPLICA";

/// Writes [`MARKER`] into `data_dir`.
pub fn mark_data_dir(data_dir: &Path, replica: &str) -> std::io::Result<()> {
    std::fs::write(
        data_dir.join(MARKER),
        format!(
            "This is the data directory of replica {replica} of a custody cluster: its sessions,\n\
             recordings and audit trail are in the cluster's PostgreSQL and object store. Ask a\n\
             running replica with --server https://HOST:PORT instead of --data-dir.\n"
        ),
    )
}

/// `Some(replica)` when `data_dir` belongs to a cluster replica.
pub fn replica_of(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(MARKER)).ok()?;
    let rest = text.split_once("replica ")?.1;
    Some(rest.split_whitespace().next()?.to_owned())
}

/// What a previous run of this replica left in its spool directory (it crashed, or was
/// killed): the recording of a session still open is uploaded whole as segments, so that the
/// replica that seals it (maybe this one) has every byte that reached the disk, not only what
/// the last upload took; the file of a session sealed and stored meanwhile is removed.
/// Anything else stays, and is logged.
async fn tidy_spool(catalog: &PgCatalog, objects: &Objects, spool_dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(spool_dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cast.zst"))
            .map(str::to_owned)
        else {
            continue;
        };
        let row = match catalog.session(&id).await {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "a spool file left by an earlier run is kept: its session cannot be looked up");
                continue;
            }
        };
        let open = row
            .as_ref()
            .is_some_and(|r| r.status == custody_recorder::model::SessionStatus::Open);
        if open {
            match upload_whole(objects, &id, &path).await {
                Ok(len) => {
                    tracing::warn!(session = %id, bytes = len, "an earlier run's recording was uploaded whole for its takeover");
                }
                Err(e) => {
                    tracing::error!(session = %id, error = %e, "an earlier run's recording could not be uploaded; its takeover has what was uploaded before");
                }
            }
            continue;
        }
        let stored = objects.recording_len(&id).await.ok().flatten();
        if row.is_some() && stored.is_some() {
            let _ = tokio::fs::remove_file(&path).await;
        } else {
            tracing::warn!(session = %id, path = %path.display(), "a spool file left by an earlier run is kept: its recording is not stored");
        }
    }
}

/// Uploads the whole file as segments of at most 8 MiB; returns its length.
async fn upload_whole(objects: &Objects, id: &str, path: &Path) -> Result<u64, String> {
    use tokio::io::AsyncReadExt;
    const CHUNK: usize = 8 << 20;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        let n = (&mut file)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(offset);
        }
        objects
            .put_segment(id, offset, bytes::Bytes::from(buf))
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
    }
}

/// The shared signing key: it must exist (a replica never makes its own, which would sign
/// recordings no other replica's key verifies).
fn load_shared_key(path: &Path) -> Result<SigningKey, ClusterError> {
    if !path.exists() {
        return Err(ClusterError::SigningKey {
            path: path.to_owned(),
            reason: "no such file; every replica needs the same key: create one with \
                     `custody key --generate FILE` and give it to each replica (a secret)"
                .into(),
        });
    }
    custody_recorder::integrity::load_or_create_signing_key(path).map_err(|e| {
        ClusterError::SigningKey {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// The SHA-256 of the public key, hex: what replicas compare.
pub fn key_fingerprint(key: &SigningKey) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.verifying_key().as_bytes()))
}

async fn lease_loop(
    membership: Membership,
    live: Arc<LiveSessions>,
    mut stop: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
) {
    let every = membership.lease() / 3;
    let mut held_until = tokio::time::Instant::now() + membership.lease();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        match membership.renew().await {
            Ok(true) => held_until = tokio::time::Instant::now() + membership.lease(),
            Ok(false) => {
                tracing::error!(
                    replica = membership.id(),
                    "the lease was taken by another replica; ending every session here and stopping"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(replica = membership.id(), error = %e, "the lease could not be renewed; retrying");
                if tokio::time::Instant::now() >= held_until {
                    tracing::error!(
                        replica = membership.id(),
                        "the lease ran out while PostgreSQL was unreachable; ending every session here and stopping"
                    );
                    break;
                }
            }
        }
    }
    let ended = live.end_all(LEASE_LOST);
    tracing::error!(ended, "sessions ended: {LEASE_LOST}");
    let _ = lost.send(true);
}

async fn command_loop(
    cluster: ClusterMode,
    live: Arc<LiveSessions>,
    mut stop: watch::Receiver<bool>,
) {
    let me = cluster.replica_id().to_owned();
    let mut listener = None;
    loop {
        if listener.is_none() {
            match cluster.db.listen(commands::CHANNEL).await {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::warn!(error = %e, "cannot listen for commands; polling"),
            }
        }
        apply_commands(&cluster, &live).await;
        let woken = async {
            match listener.as_mut() {
                Some(l) => loop {
                    match l.recv().await {
                        Some(replica) if replica == me => return true,
                        Some(_) => {}
                        None => return false,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(COMMAND_POLL) => {}
            alive = woken => {
                if !alive {
                    tracing::warn!("the command listener's connection was lost; reconnecting");
                    listener = None;
                }
            }
        }
    }
}

async fn apply_commands(cluster: &ClusterMode, live: &LiveSessions) {
    let commands = match commands::take(&cluster.db, cluster.replica_id()).await {
        Ok(commands) => commands,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read commands");
            return;
        }
    };
    for command in commands {
        let outcome = apply(live, &command);
        tracing::info!(command = command.id, kind = ?command.kind, target = %command.target, by = %command.issued_by, %outcome, "command applied");
        if let Err(e) = commands::record_outcome(&cluster.db, command.id, &outcome).await {
            tracing::warn!(error = %e, "cannot record a command's outcome");
        }
    }
}

fn apply(live: &LiveSessions, command: &Command) -> String {
    match command.kind {
        CommandKind::EndSession => {
            if live.end_session(&command.target, &command.reason) {
                "ended".into()
            } else {
                "no such live session here".into()
            }
        }
        CommandKind::EndGrant => {
            let n = live.end_grant(&command.target, &command.reason);
            format!("ended {n} session(s)")
        }
    }
}

async fn orphan_loop(cluster: ClusterMode, mut stop: watch::Receiver<bool>) {
    let every = (cluster.membership.lease() / 2).max(Duration::from_secs(1));
    loop {
        recover_orphans(&cluster).await;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How long applied commands are kept (for an operator reading the table).
const COMMANDS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Expires the leases that ran out, then claims and seals their sessions; also drops
/// commands applied long ago.
pub async fn recover_orphans(cluster: &ClusterMode) {
    if let Err(e) = commands::prune(&cluster.db, COMMANDS_KEPT).await {
        tracing::debug!(error = %e, "cannot prune old commands");
    }
    match cluster.membership.expire_others(Duration::ZERO).await {
        Ok(gone) if !gone.is_empty() => {
            tracing::warn!(replicas = ?gone, "replica leases expired; recovering their sessions");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot check replica leases");
            return;
        }
    }
    let orphans = match live::orphans(&cluster.db).await {
        Ok(orphans) => orphans,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list orphaned sessions");
            return;
        }
    };
    for orphan in orphans {
        match live::claim(&cluster.db, &cluster.membership, &orphan).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(session = %orphan.id, error = %e, "cannot claim an orphaned session");
                continue;
            }
        }
        match seal_orphan(cluster, &orphan.id).await {
            Ok(()) => {
                tracing::info!(session = %orphan.id, from = %orphan.replica_id, "orphaned session sealed interrupted from its segments");
            }
            Err(e) => {
                tracing::error!(session = %orphan.id, from = %orphan.replica_id, error = %e, "an orphaned session could not be sealed; it stays claimed by this replica and is retried when this replica restarts");
            }
        }
    }
}

async fn seal_orphan(cluster: &ClusterMode, id: &str) -> Result<(), String> {
    let recovered = custody_cluster::objects::recover_from_segments(
        &cluster.objects,
        id,
        &cluster.key,
        &cluster.spool_dir,
    )
    .await;
    let rows = match recovered {
        Ok(recovered) => recovered.index,
        // The replica died before the first second of the session was uploaded: there is no
        // recording to seal, and the index says so instead of showing the session open.
        Err(custody_cluster::Error::NothingToRecover { .. }) => {
            let Some(mut row) = cluster
                .catalog
                .session(id)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err("the session has no index row".into());
            };
            row.status = custody_recorder::model::SessionStatus::Interrupted;
            row.damage = Some(
                "its replica stopped before any of its recording reached the object store".into(),
            );
            custody_recorder::index::IndexedSession {
                row,
                frames: Vec::new(),
                text: Vec::new(),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    cluster
        .catalog
        .upsert(rows)
        .await
        .map_err(|e| e.to_string())
}

/// Local copies of stored recordings for the sessions API (`<spool_dir>/cache`): a copy is
/// made when first asked for and kept while its object's length matches; copies not used for
/// an hour are removed.
#[derive(Debug)]
pub struct ObjectFiles {
    objects: Objects,
    cache: PathBuf,
}

/// How long an unused local copy is kept.
const CACHE_TTL: Duration = Duration::from_secs(3600);

impl ObjectFiles {
    /// Copies into `<spool_dir>/cache`.
    pub fn new(storage: &crate::gateway::ObjectStorage) -> Self {
        Self {
            objects: storage.objects.clone(),
            cache: storage.spool_dir.join("cache"),
        }
    }

    async fn prune(&self) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.cache).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let stale = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > CACHE_TTL);
            if stale {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl custody_web::api::RecordingFiles for ObjectFiles {
    async fn local_copy(&self, id: &str) -> Result<PathBuf, custody_web::api::RecordingFileError> {
        use custody_web::api::RecordingFileError;
        let failed = |e: String| RecordingFileError::Store(e);
        custody_recorder::permissions::create_dir(&self.cache)
            .map_err(|e| failed(e.to_string()))?;
        self.prune().await;
        let path = self.cache.join(format!("{id}.cast.zst"));
        let stored = self
            .objects
            .recording_len(id)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or(RecordingFileError::NotStoredYet)?;
        let cached = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
        if cached != Some(stored) {
            // Each request downloads to a name of its own and renames it into place, so two
            // requests for the same recording never write one file.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let fetched = self.cache.join(format!("{id}.{n}.fetch"));
            self.objects
                .fetch_recording(id, &fetched)
                .await
                .map_err(|e| failed(e.to_string()))?;
            tokio::fs::rename(&fetched, &path)
                .await
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        }
        Ok(path)
    }
}
