//! Taking over a dead replica's session: its segments become a sealed, verified recording
//! object, exactly once however many replicas try at the same time.
//!
//! The recording object is written create-only ([`Objects::put_recording`]), so of two
//! replicas recovering the same session one stores its sealed file and the other finds that
//! object, verifies it and returns it; segments are deleted only once a verified object exists.
//! Every replica signs with the same key (cluster mode shares it): the dead replica's frames
//! verify against it and the seal is signed with it.

use std::path::{Path, PathBuf};

use custody_recorder::index::IndexedSession;
use custody_recorder::integrity::Manifest;
use custody_recorder::reader::{Recording, read_recording, seal_interrupted};
use custody_recorder::verdict::Verdict;
use ed25519_dalek::SigningKey;

use super::{Objects, unique_name};
use crate::error::{Error, Result};

/// A session taken over: what the catalog needs to index it.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The index rows, with [`Objects::location`] as the file path.
    pub index: IndexedSession,
    /// The recording's manifest (`interrupted` when this call sealed it; the writer's own when
    /// the replica died after sealing).
    pub manifest: Manifest,
    /// The recording object's length.
    pub len: u64,
    /// Whether this call stored the object (`false`: another replica had stored it already).
    pub stored_here: bool,
}

/// Recovers session `id` of a replica that died: joins its segments into a file in
/// `scratch_dir`, seals it `interrupted` with `key` unless it carries its writer's manifest
/// already, verifies it, stores it as the recording object (verified after upload), deletes
/// the segments and returns the catalog's rows. If the recording object exists already (another
/// replica finished or recovered the session), that object is verified and returned and the
/// leftover segments are deleted. Nothing is deleted unless a verified object exists; the
/// scratch file is removed in any case.
pub async fn recover_from_segments(
    objects: &Objects,
    id: &str,
    key: &SigningKey,
    scratch_dir: &Path,
) -> Result<Recovered> {
    let scratch = Scratch(scratch_dir.join(format!("{id}.{}.cast.zst", unique_name())));
    if let Some(done) = stored(objects, id, key, &scratch.0).await? {
        objects.delete_segments(id).await?;
        return Ok(done);
    }
    let joined = match objects.join_segments(id, &scratch.0).await {
        Ok(joined) => joined,
        // A segment listed but gone when read: another replica stored the object and is
        // deleting the segments.
        Err(e) => return stored(objects, id, key, &scratch.0).await?.ok_or(e),
    };
    if joined == 0 {
        // Another replica may have stored the object and deleted the segments meanwhile.
        return match stored(objects, id, key, &scratch.0).await? {
            Some(done) => Ok(done),
            None => Err(Error::NothingToRecover { id: id.to_owned() }),
        };
    }
    let recording = seal(id, &scratch.0, key).await?;
    match objects.put_recording(id, &scratch.0).await {
        Ok(len) => {
            objects.delete_segments(id).await?;
            recovered(id, &recording, len, true)
        }
        Err(Error::RecordingExists { .. }) => {
            // Lost a race: the other replica's object stands if it verifies.
            let done = stored(objects, id, key, &scratch.0).await?.ok_or_else(|| {
                Error::ObjectMismatch(format!(
                    "the recording object of session {id} was refused as existing but is not there"
                ))
            })?;
            objects.delete_segments(id).await?;
            Ok(done)
        }
        Err(e) => Err(e),
    }
}

/// The stored recording object of `id`, fetched into `scratch` and verified, if there is one.
async fn stored(
    objects: &Objects,
    id: &str,
    key: &SigningKey,
    scratch: &Path,
) -> Result<Option<Recovered>> {
    if objects.recording_len(id).await?.is_none() {
        return Ok(None);
    }
    let len = objects.fetch_recording(id, scratch).await?;
    let recording = read(id, scratch, key, "read the stored recording").await?;
    recovered(id, &recording, len, false).map(Some)
}

/// Seals the joined file at `path` unless its writer's manifest closes it, and reads it back.
async fn seal(id: &str, path: &Path, key: &SigningKey) -> Result<Recording> {
    let joined = read(id, path, key, "read the joined segments").await?;
    if joined.manifest.is_some() {
        // The replica sealed the file and its last segment carried the manifest, but it died
        // before storing the recording.
        return Ok(joined);
    }
    let (owned, owned_key) = (path.to_owned(), key.clone());
    tokio::task::spawn_blocking(move || seal_interrupted(&owned, &owned_key))
        .await
        .map_err(|e| Error::Recording {
            id: id.to_owned(),
            op: "seal the joined segments",
            source: custody_recorder::Error::RecordingFailed(e.to_string()),
        })?
        .map_err(|source| Error::Recording {
            id: id.to_owned(),
            op: "seal the joined segments",
            source,
        })?;
    read(id, path, key, "read the sealed recording").await
}

/// Reads and verifies the recording at `path` against `key`.
async fn read(id: &str, path: &Path, key: &SigningKey, op: &'static str) -> Result<Recording> {
    let (owned, public) = (path.to_owned(), key.verifying_key());
    let failed = |source| Error::Recording {
        id: id.to_owned(),
        op,
        source,
    };
    tokio::task::spawn_blocking(move || read_recording(&owned, Some(&public)))
        .await
        .map_err(|e| failed(custody_recorder::Error::RecordingFailed(e.to_string())))?
        .map_err(failed)
}

/// The catalog's rows of a recording that must verify whole and be sealed.
fn recovered(id: &str, recording: &Recording, len: u64, stored_here: bool) -> Result<Recovered> {
    let verdict = Verdict::of(recording);
    let manifest = match (&recording.manifest, &recording.damage) {
        (Some(manifest), None) => manifest.clone(),
        _ => {
            return Err(Error::RecordingUnverified {
                id: id.to_owned(),
                problem: verdict
                    .problem(recording)
                    .unwrap_or_else(|| "no manifest".to_owned()),
            });
        }
    };
    let index = IndexedSession::from_recording(recording, &Objects::location(id), len).map_err(
        |source| Error::Recording {
            id: id.to_owned(),
            op: "derive its index rows",
            source,
        },
    )?;
    Ok(Recovered {
        index,
        manifest,
        len,
        stored_here,
    })
}

/// A scratch file, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
