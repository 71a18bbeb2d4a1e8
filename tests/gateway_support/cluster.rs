//! Cluster mode for the in-process gateway: the shared stores one [`super::Env`] stands on
//! (a fresh PostgreSQL database on the test binary's shared server, a fresh key prefix in its
//! shared S3 bucket, a lease under a unique replica id), and reading back what the gateway
//! wrote there: the audit trail, the index, recordings, and every byte it stored.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use custody::cluster::ClusterMode;
use custody_cluster::catalog::PgCatalog;
use custody_cluster::members::{Membership, ReplicaInfo};
use custody_cluster::objects::{ObjectStoreConfig, Objects};
use custody_cluster::postgres::{Postgres, PostgresConfig};
use custody_recorder::catalog::Catalog;
use custody_recorder::index::{AuditQuery, SessionQuery, SessionRow};
use ed25519_dalek::SigningKey;

/// The lease a test replica holds (`[cluster] lease_seconds`' default): renewed every third
/// of it by the lease loop, as `custody serve` does.
const LEASE: Duration = Duration::from_secs(10);

/// More rows than any test writes: the helpers read everything.
const ALL: usize = 1_000_000;

/// What one environment shares in cluster mode, and the loops its replica runs.
pub struct Shared {
    /// The replica's view: database, membership, catalog, objects, key, spool.
    pub mode: ClusterMode,
    /// The database's name on the shared server (for `psql`).
    pub database: String,
    /// The key prefix of this environment's objects (`env-N-RANDOM/`).
    pub prefix: String,
    /// Dropped with the environment: the lease, command and orphan loops stop.
    stop: tokio::sync::watch::Sender<bool>,
    /// Set by the lease loop if this replica loses its lease.
    pub lease_lost: tokio::sync::watch::Receiver<bool>,
    lost: Option<tokio::sync::watch::Sender<bool>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Joins a fresh cluster as a replica does in `ClusterMode::start`: migrates a fresh database,
/// checks a fresh prefix of the bucket, writes the key's fingerprint and takes a lease.
/// `advertise` is the replica's URL; `spool_dir` is created (mode 0700).
pub fn join(
    rt: &tokio::runtime::Runtime,
    key: Arc<SigningKey>,
    advertise: &str,
    spool_dir: &Path,
) -> Shared {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let server = custody_fixtures::postgres::Postgres::shared().unwrap();
    let database = server.fresh_database().unwrap();
    let s3 = custody_fixtures::s3::S3::shared().unwrap();
    let prefix = format!("env-{n}-{}/", &unique[..12]);
    let mut config = ObjectStoreConfig::new(
        &s3.endpoint(),
        s3.bucket(),
        s3.region(),
        s3.access_key(),
        s3.secret_key(),
    );
    config.prefix.clone_from(&prefix);
    let info = ReplicaInfo {
        id: format!("test-replica-{n}-{}", &unique[..8]),
        url: advertise.to_owned(),
        key_fingerprint: custody::cluster::key_fingerprint(&key),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    custody_recorder::permissions::create_dir(spool_dir).unwrap();
    let (db, objects, membership) = rt.block_on(async {
        let db = Postgres::new(&PostgresConfig::new(&database.url)).unwrap();
        custody_cluster::schema::migrate(&db).await.unwrap();
        let objects = Objects::new(&config).unwrap();
        objects.check().await.unwrap();
        let membership = Membership::join(&db, &info, LEASE).await.unwrap();
        (db, objects, membership)
    });
    let (stop, _) = tokio::sync::watch::channel(false);
    let (lost, lease_lost) = tokio::sync::watch::channel(false);
    Shared {
        mode: ClusterMode {
            catalog: Arc::new(PgCatalog::for_replica(db.clone(), membership.clone())),
            db,
            membership,
            objects,
            key,
            spool_dir: spool_dir.to_owned(),
            peer: None,
        },
        database: database.name,
        prefix,
        stop,
        lease_lost,
        lost: Some(lost),
    }
}

impl Shared {
    /// Starts the lease, command and orphan loops over the gateway's live sessions, as
    /// `custody serve` does after it joined.
    pub fn spawn_loops(
        &mut self,
        rt: &tokio::runtime::Runtime,
        live: Arc<custody::control::registry::LiveSessions>,
    ) {
        let Some(lost) = self.lost.take() else {
            return;
        };
        let _entered = rt.enter();
        drop(self.mode.spawn(live, self.stop.subscribe(), lost));
    }

    /// The audit trail in the order it was written, each event as the JSON object the
    /// one-machine trail's file holds for it (one object per request: the catalog keeps the
    /// decision and its completion on one row).
    pub fn audit(&self, rt: &tokio::runtime::Runtime) -> Vec<serde_json::Value> {
        let query = AuditQuery {
            limit: Some(ALL),
            ..AuditQuery::default()
        };
        let mut rows = rt.block_on(self.mode.catalog.audit_events(&query)).unwrap();
        // Newest first; the file is oldest first.
        rows.reverse();
        rows.iter().map(custody::audit::record_to_json).collect()
    }

    /// Every session row of the catalog, newest first.
    pub fn sessions(&self, rt: &tokio::runtime::Runtime) -> Vec<SessionRow> {
        let query = SessionQuery {
            limit: Some(ALL),
            ..SessionQuery::default()
        };
        rt.block_on(self.mode.catalog.sessions(&query)).unwrap()
    }

    /// Session `id`'s stored recording object, fetched into `scratch`.
    pub fn recording(&self, rt: &tokio::runtime::Runtime, id: &str, scratch: &Path) -> Vec<u8> {
        std::fs::create_dir_all(scratch).unwrap();
        let file = scratch.join(format!("{id}.cast.zst"));
        rt.block_on(self.mode.objects.fetch_recording(id, &file))
            .map_err(|e| format!("no stored recording of session {id}: {e}"))
            .unwrap();
        let bytes = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        bytes
    }

    /// Everything this environment stored outside its data directory: each table of its
    /// database (every row as text, `bytea` as escaped text), each object under its prefix as
    /// stored, and the recordings of sessions still in segments joined (joined segments are a
    /// zstd stream, which `super::written` decompresses; a segment alone is not).
    pub fn written(&self, rt: &tokio::runtime::Runtime, scratch: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = self.tables();
        let s3 = custody_fixtures::s3::S3::shared().unwrap();
        for key in self.object_keys() {
            let answer = s3
                .request("GET", &format!("/{}/{key}", s3.bucket()), &[], b"")
                .unwrap();
            assert_eq!(answer.status, 200, "GET {key}: {}", answer.text());
            out.push((format!("s3://{}/{key}", s3.bucket()), answer.body));
        }
        std::fs::create_dir_all(scratch).unwrap();
        for id in rt
            .block_on(self.mode.objects.sessions_with_segments())
            .unwrap()
        {
            let file = scratch.join(format!("{id}.joined.cast.zst"));
            rt.block_on(self.mode.objects.join_segments(&id, &file))
                .unwrap();
            out.push((
                format!("joined segments/{id}.cast.zst"),
                std::fs::read(&file).unwrap(),
            ));
            std::fs::remove_file(&file).unwrap();
        }
        out
    }

    /// Every row of every table in the database, one text per table.
    fn tables(&self) -> Vec<(String, Vec<u8>)> {
        let server = custody_fixtures::postgres::Postgres::shared().unwrap();
        let names = server
            .psql(
                &self.database,
                "SELECT quote_ident(table_name) FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY 1",
            )
            .unwrap();
        names
            .lines()
            .filter(|name| !name.is_empty())
            .map(|name| {
                let rows = server
                    .psql(
                        &self.database,
                        &format!("SET bytea_output = 'escape'; SELECT t::text FROM {name} t"),
                    )
                    .unwrap();
                (format!("postgres table {name}"), rows.into_bytes())
            })
            .collect()
    }

    /// The keys of every object under this environment's prefix (S3 `ListObjectsV2`).
    fn object_keys(&self) -> Vec<String> {
        let s3 = custody_fixtures::s3::S3::shared().unwrap();
        let answer = s3
            .request(
                "GET",
                &format!("/{}", s3.bucket()),
                &[("list-type", "2"), ("prefix", &self.prefix)],
                b"",
            )
            .unwrap();
        let xml = answer.text();
        assert_eq!(answer.status, 200, "{xml}");
        assert!(
            !xml.contains("<IsTruncated>true</IsTruncated>"),
            "one page lists them all: {xml}"
        );
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }
}
