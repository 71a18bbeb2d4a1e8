//! The recording object of a finished session: written once, verified after writing, fetched
//! whole.
//!
//! A recording object is never replaced. Up to the multipart threshold it is one `PUT` with
//! `If-None-Match: *`; above, the file goes up in parts to a staging key
//! (`uploads/<id>.cast.zst.<unique>`) and is copied server-side to its final key by a
//! multipart copy whose completion carries `If-None-Match: *` (the staging object is deleted
//! after; a crash in between leaves it behind, which a lifecycle rule on `uploads/` removes).
//! Either way, when the object exists already the upload is refused by the store, and it
//! counts as done only if the object holds exactly the file's bytes (a retry of our own upload);
//! otherwise another writer's recording stands and [`Error::RecordingExists`] says so.
//!
//! This needs a store that honours `If-None-Match: *` on `PutObject` and
//! `CompleteMultipartUpload` (AWS S3 since 2024, versitygw, recent `MinIO`, R2). One that ignores
//! it overwrites instead: each upload still verifies, but of two replicas recovering the same
//! session at the same moment the last one's object stands.

use std::path::Path;

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Objects, unique_name};
use crate::error::{Error, Result};

/// Read buffer for uploads.
const CHUNK: usize = 1 << 20;
/// The largest object one `UploadPartCopy` copies (S3's limit). Larger recordings go up in
/// parts straight to their final key after a look that it does not exist yet: the same outcome
/// unless two writers race within that moment.
const COPY_MAX: u64 = 5 << 30;

impl Objects {
    /// Uploads the file `from` as session `id`'s recording, reads the object back and compares
    /// it with the file (length and SHA-256). Returns its length.
    ///
    /// If the object exists already with the same bytes (this upload was retried), that is
    /// success; with other bytes it is [`Error::RecordingExists`] and the object is left as it
    /// is.
    pub async fn put_recording(&self, id: &str, from: &Path) -> Result<u64> {
        let key = self.recording_key(id);
        let mut file = tokio::fs::File::open(from)
            .await
            .map_err(|e| Error::local(from, e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::local(from, e))?
            .len();
        let mut hash = Sha256::new();
        let created = if len <= self.multipart_threshold {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .await
                .map_err(|e| Error::local(from, e))?;
            hash.update(&bytes);
            let put = self
                .store
                .put_opts(&key, PutPayload::from(bytes), PutMode::Create.into())
                .await;
            match created(put.map(drop), "upload a recording") {
                Ok(created) => created,
                // A server refusing a second copy (412) may close the connection before it has
                // read the body, and the client then sees a reset, not the refusal. Whether an
                // object is there now decides: the read-back below compares it either way.
                Err(e) if self.recording_len(id).await?.is_some() => {
                    tracing::debug!(%id, error = %e, "the upload failed, yet the object exists");
                    false
                }
                Err(e) => return Err(e),
            }
        } else if len <= COPY_MAX {
            let staging = Key::from(format!(
                "{}uploads/{id}.cast.zst.{}",
                self.prefix,
                unique_name()
            ));
            let uploaded = self.put_parts(&staging, &mut file, from, &mut hash).await;
            let copied = match uploaded {
                Ok(()) => created(
                    self.store.copy_if_not_exists(&staging, &key).await,
                    "copy a recording to its key",
                ),
                Err(e) => Err(e),
            };
            // Best effort: a staging object left behind is garbage, not a recording.
            if let Err(e) = self.store.delete(&staging).await {
                tracing::warn!(key = %staging, error = %e, "a staging object was not deleted");
            }
            copied?
        } else if self.recording_len(id).await?.is_none() {
            self.put_parts(&key, &mut file, from, &mut hash).await?;
            true
        } else {
            false
        };
        let expected: [u8; 32] = hash.finalize().into();
        let (found_len, found) = self.digest(&key).await?;
        if found_len == len && found == expected {
            return Ok(len);
        }
        if created {
            Err(Error::ObjectMismatch(format!(
                "the recording object of session {id} read back as {found_len} bytes that do \
                 not match the {len}-byte file; the local file is kept"
            )))
        } else {
            Err(Error::RecordingExists { id: id.to_owned() })
        }
    }

    /// Uploads the rest of `file` to `key` in parts of 5 MiB, hashing what it sends.
    async fn put_parts(
        &self,
        key: &Key,
        file: &mut tokio::fs::File,
        path: &Path,
        hash: &mut Sha256,
    ) -> Result<()> {
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(Error::object("start a multipart upload"))?;
        let mut writer = WriteMultipart::new(upload);
        let mut buf = vec![0u8; CHUNK];
        let sent = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::local(path, e))?;
                if n == 0 {
                    return Ok(());
                }
                hash.update(&buf[..n]);
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(Error::object("upload a recording part"))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => writer
                .finish()
                .await
                .map(drop)
                .map_err(Error::object("finish a multipart upload")),
            Err(e) => {
                // Best effort: the parts uploaded so far are billed until aborted.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Whether session `id` has a recording object, and its length.
    pub async fn recording_len(&self, id: &str) -> Result<Option<u64>> {
        match self.store.head(&self.recording_key(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::object("look up a recording")(e)),
        }
    }

    /// Downloads session `id`'s recording into the file `to` (written beside it and renamed,
    /// so a reader never sees half a file). Returns its length.
    pub async fn fetch_recording(&self, id: &str, to: &Path) -> Result<u64> {
        const OP: &str = "download a recording";
        let partial = to.with_extension(format!("partial-{}", unique_name()));
        let mut stream = self
            .store
            .get(&self.recording_key(id))
            .await
            .map_err(Error::object(OP))?
            .into_stream();
        let written = async {
            let mut file = crate::objects::private_file(&partial)
                .await
                .map_err(|e| Error::local(&partial, e))?;
            let mut len = 0u64;
            while let Some(chunk) = self.next_chunk(&mut stream, OP).await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::local(&partial, e))?;
                len += chunk.len() as u64;
            }
            file.sync_all()
                .await
                .map_err(|e| Error::local(&partial, e))?;
            tokio::fs::rename(&partial, to)
                .await
                .map_err(|e| Error::local(to, e))?;
            Ok(len)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written
    }

    /// The length and SHA-256 of an object, streamed.
    async fn digest(&self, key: &Key) -> Result<(u64, [u8; 32])> {
        const OP: &str = "read a recording back";
        let mut stream = self
            .store
            .get(key)
            .await
            .map_err(Error::object(OP))?
            .into_stream();
        let mut hash = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = self.next_chunk(&mut stream, OP).await? {
            hash.update(&chunk);
            len += chunk.len() as u64;
        }
        Ok((len, hash.finalize().into()))
    }
}

/// Whether a create-only write created the object (`false`: it existed already).
fn created(result: object_store::Result<()>, op: &'static str) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(source) => Err(Error::object(op)(source)),
    }
}
