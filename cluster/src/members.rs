//! Replica membership: each replica holds a lease in `replicas` that it renews, under an
//! **epoch** that grows every time it joins or its lease is taken from it.
//!
//! The epoch fences a replica that stopped renewing without stopping (a zombie: a paused VM, a
//! partition): once another replica has taken its lease, its renewals fail (it then ends its own
//! sessions), and every write it makes about a session names the (replica, epoch) that owns the
//! session's `live_sessions` row, which no longer matches. The signing key's fingerprint is a
//! cluster setting the first replica writes; a replica with another key refuses to join, so
//! every recording verifies with the one public key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::postgres::Postgres;

/// What a replica says of itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// Its id (`[cluster] replica_id`), unique in the cluster.
    pub id: String,
    /// Where other replicas reach it (for following its sessions).
    pub url: String,
    /// The SHA-256 fingerprint of its signing key's public key, hex.
    pub key_fingerprint: String,
    /// Its version.
    pub version: String,
}

/// A replica as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Its current epoch.
    pub epoch: i64,
    /// `active`, `draining` or `gone`.
    pub state: String,
    /// Where it is reached.
    pub url: String,
    /// Whether its lease is current.
    pub live: bool,
}

/// This replica's membership: its id and the epoch it holds.
#[derive(Debug, Clone)]
pub struct Membership {
    db: Postgres,
    id: String,
    epoch: i64,
    lease: Duration,
}

/// The setting that holds the signing key's fingerprint.
const KEY_SETTING: &str = "signing_key_fingerprint";

impl Membership {
    /// Joins the cluster: checks the signing key against the cluster's (setting it when this
    /// is the first replica), then takes a lease under a new epoch. A replica that rejoins
    /// with the id of an earlier run gets a new epoch; the earlier run's sessions are then
    /// orphans that recovery seals.
    pub async fn join(db: &Postgres, info: &ReplicaInfo, lease: Duration) -> Result<Self> {
        let client = db.get().await?;
        client
            .execute(
                "INSERT INTO cluster_settings (name, value, set_by) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&KEY_SETTING, &info.key_fingerprint, &info.id],
            )
            .await
            .map_err(Error::pg("record the signing key"))?;
        let row = client
            .query_one(
                "SELECT value, set_by FROM cluster_settings WHERE name = $1",
                &[&KEY_SETTING],
            )
            .await
            .map_err(Error::pg("read the signing key"))?;
        let (expected, set_by): (String, String) = (row.get(0), row.get(1));
        if expected != info.key_fingerprint {
            return Err(Error::KeyMismatch {
                ours: info.key_fingerprint.clone(),
                cluster: expected,
                set_by,
            });
        }
        let lease_ms = millis(lease);
        let row = client
            .query_one(
                "INSERT INTO replicas (id, epoch, state, url, key_fingerprint, version, started_at,
                    heartbeat_at, lease_until)
                 VALUES ($1, 1, 'active', $2, $3, $4, now(), now(),
                    now() + $5::bigint * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET epoch = replicas.epoch + 1, state = 'active',
                    url = excluded.url, key_fingerprint = excluded.key_fingerprint,
                    version = excluded.version, started_at = now(), heartbeat_at = now(),
                    lease_until = excluded.lease_until
                 RETURNING epoch",
                &[
                    &info.id,
                    &info.url,
                    &info.key_fingerprint,
                    &info.version,
                    &lease_ms,
                ],
            )
            .await
            .map_err(Error::pg("join the cluster"))?;
        let epoch: i64 = row.get(0);
        tracing::info!(replica = %info.id, epoch, "joined the cluster");
        Ok(Self {
            db: db.clone(),
            id: info.id.clone(),
            epoch,
            lease,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The epoch it holds.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Renews the lease. `Ok(false)` when it is no longer ours (taken by another replica, or
    /// the row is gone): the replica must end its sessions and stop.
    pub async fn renew(&self) -> Result<bool> {
        let client = self.db.get().await?;
        let renewed = client
            .execute(
                "UPDATE replicas SET heartbeat_at = now(),
                    lease_until = now() + $3::bigint * interval '1 millisecond'
                 WHERE id = $1 AND epoch = $2 AND state <> 'gone'",
                &[&self.id, &self.epoch, &millis(self.lease)],
            )
            .await
            .map_err(Error::pg("renew the lease"))?;
        Ok(renewed == 1)
    }

    /// Marks this replica as draining (it accepts no new sessions; others see it).
    pub async fn drain(&self) -> Result<()> {
        self.set_state("draining").await
    }

    /// Leaves the cluster: the lease ends now.
    pub async fn leave(&self) -> Result<()> {
        self.set_state("gone").await
    }

    async fn set_state(&self, state: &str) -> Result<()> {
        let client = self.db.get().await?;
        client
            .execute(
                "UPDATE replicas SET state = $3 WHERE id = $1 AND epoch = $2",
                &[&self.id, &self.epoch, &state],
            )
            .await
            .map_err(Error::pg("change the replica's state"))?;
        Ok(())
    }

    /// Ends the leases that expired more than `grace` ago: each such replica's epoch grows
    /// and it becomes `gone`, so its renewals fail from now on. Returns their ids.
    pub async fn expire_others(&self, grace: Duration) -> Result<Vec<String>> {
        let client = self.db.get().await?;
        let rows = client
            .query(
                "UPDATE replicas SET state = 'gone', epoch = epoch + 1
                 WHERE state <> 'gone' AND id <> $1
                   AND lease_until < now() - $2::bigint * interval '1 millisecond'
                 RETURNING id",
                &[&self.id, &millis(grace)],
            )
            .await
            .map_err(Error::pg("expire leases"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every replica, with whether its lease is current.
    pub async fn members(&self) -> Result<Vec<Member>> {
        members(&self.db).await
    }

    /// The database.
    pub fn db(&self) -> &Postgres {
        &self.db
    }
}

/// Every replica the table knows, with whether its lease is current.
pub async fn members(db: &Postgres) -> Result<Vec<Member>> {
    let client = db.get().await?;
    let rows = client
        .query(
            "SELECT id, epoch, state, url, lease_until > now() FROM replicas ORDER BY id",
            &[],
        )
        .await
        .map_err(Error::pg("list replicas"))?;
    Ok(rows
        .iter()
        .map(|r| Member {
            id: r.get(0),
            epoch: r.get(1),
            state: r.get(2),
            url: r.get(3),
            live: r.get(4),
        })
        .collect())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
