//! Recordings in S3-compatible object storage.
//!
//! While a session runs, the bytes its writer has flushed to the local spool file are uploaded
//! about once a second as small immutable **segment** objects named by their offset
//! (`segments/<id>/<offset>`), so a replica that dies mid-session loses at most the last
//! second. At the end the whole file is uploaded as one **recording** object
//! (`recordings/<id>.cast.zst`, byte-identical to the file), read back and compared, and only
//! then are the segments and the spool file removed. A replica that takes over a dead one's
//! session joins its segments back into a file ([`Objects::join_segments`]) and seals that.

mod connector;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Where recordings are stored.
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    /// The S3 endpoint, `https://s3.example.com` (or `http://127.0.0.1:9000` on loopback).
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A prefix for every key (`custody/`), so one bucket can hold several deployments.
    pub prefix: String,
    /// The CA that signs the endpoint's certificate; the system's roots without one.
    pub ca_file: Option<PathBuf>,
    /// How long one request may take to answer.
    pub request_timeout: Duration,
}

/// Uploads larger than this go up in parts (S3 takes at most 5 GiB in one `PUT`).
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Read buffer for uploads and comparisons.
const CHUNK: usize = 1 << 20;

/// The object store of recordings. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: Arc<str>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("at", &self.shown)
            .finish_non_exhaustive()
    }
}

/// One uploaded segment: its offset in the recording and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where its bytes start in the recording file.
    pub offset: u64,
    /// How many bytes it holds.
    pub len: u64,
}

impl Objects {
    /// A client for the bucket in `config`. Nothing is contacted until used; see
    /// [`Objects::check`].
    pub fn new(config: &ObjectStoreConfig) -> Result<Self> {
        let connector =
            connector::HyperConnector::new(config.ca_file.as_deref(), config.request_timeout)?;
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(config.endpoint.starts_with("http://"))
            // Path-style URLs: S3-compatible servers rarely have a DNS name per bucket.
            .with_virtual_hosted_style_request(false)
            .with_http_connector(connector)
            .build()
            .map_err(|e| Error::ObjectStoreConfig(e.to_string()))?;
        let mut prefix = config.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Ok(Self {
            store: Arc::new(store),
            shown: format!("{}/{}/{prefix}", config.endpoint, config.bucket).into(),
            prefix,
        })
    }

    /// Where the recordings are, for logs (`http://127.0.0.1:9000/bucket/custody/`).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn recording_key(&self, id: &str) -> Key {
        Key::from(format!("{}recordings/{id}.cast.zst", self.prefix))
    }

    fn segments_dir(&self, id: &str) -> Key {
        Key::from(format!("{}segments/{id}", self.prefix))
    }

    fn segment_key(&self, id: &str, offset: u64) -> Key {
        // Zero-padded: listing order is offset order.
        Key::from(format!("{}segments/{id}/{offset:020}", self.prefix))
    }

    /// Writes, reads back and deletes a probe object: the bucket exists and the credentials
    /// may write, read and delete (a replica checks this before it accepts sessions).
    pub async fn check(&self) -> Result<()> {
        let key = Key::from(format!("{}probe/{}", self.prefix, probe_name()));
        let body = Bytes::from_static(b"custody object store probe");
        self.store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(Error::object("write a probe object"))?;
        let read = self
            .store
            .get(&key)
            .await
            .map_err(Error::object("read a probe object"))?
            .bytes()
            .await
            .map_err(Error::object("read a probe object"))?;
        self.store
            .delete(&key)
            .await
            .map_err(Error::object("delete a probe object"))?;
        if read != body {
            return Err(Error::ObjectMismatch(
                "the probe object read back differs from what was written".into(),
            ));
        }
        Ok(())
    }

    /// Uploads bytes `offset..offset + bytes.len()` of session `id`'s recording.
    pub async fn put_segment(&self, id: &str, offset: u64, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.segment_key(id, offset), PutPayload::from_bytes(bytes))
            .await
            .map_err(Error::object("upload a segment"))?;
        Ok(())
    }

    /// The segments of session `id`, in offset order.
    pub async fn segments(&self, id: &str) -> Result<Vec<Segment>> {
        let dir = self.segments_dir(id);
        let mut listing = self.store.list(Some(&dir));
        let mut segments = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(Error::object("list segments"))?;
            let Some(offset) = meta
                .location
                .filename()
                .and_then(|name| name.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push(Segment {
                offset,
                len: meta.size,
            });
        }
        segments.sort_by_key(|s| s.offset);
        Ok(segments)
    }

    /// The sessions that have segments (recordings not yet joined), for recovery.
    pub async fn sessions_with_segments(&self) -> Result<Vec<String>> {
        let dir = Key::from(format!("{}segments", self.prefix));
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(Error::object("list sessions with segments"))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Joins session `id`'s segments into the file `to` (created or truncated), in offset
    /// order, up to the first gap; returns the bytes written. What was joined is a prefix of
    /// the recording as its replica wrote it, which the reader verifies frame by frame.
    pub async fn join_segments(&self, id: &str, to: &Path) -> Result<u64> {
        let segments = self.segments(id).await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| Error::local(to, e))?;
        let mut at = 0u64;
        for segment in segments {
            if segment.offset > at {
                tracing::warn!(
                    session = id,
                    gap_at = at,
                    next = segment.offset,
                    "a segment is missing; joined up to the gap"
                );
                break;
            }
            let bytes = self
                .store
                .get(&self.segment_key(id, segment.offset))
                .await
                .map_err(Error::object("read a segment"))?
                .bytes()
                .await
                .map_err(Error::object("read a segment"))?;
            // Segments never overlap as one replica writes them; a retried upload may repeat
            // bytes already joined, which are skipped.
            let skip = usize::try_from(at - segment.offset).unwrap_or(usize::MAX);
            if let Some(new) = bytes.get(skip..) {
                file.write_all(new).await.map_err(|e| Error::local(to, e))?;
                at += new.len() as u64;
            }
        }
        file.sync_all().await.map_err(|e| Error::local(to, e))?;
        Ok(at)
    }

    /// Deletes session `id`'s segments (after its recording object verified).
    pub async fn delete_segments(&self, id: &str) -> Result<()> {
        for segment in self.segments(id).await? {
            self.store
                .delete(&self.segment_key(id, segment.offset))
                .await
                .map_err(Error::object("delete a segment"))?;
        }
        Ok(())
    }

    /// Uploads the file `from` as session `id`'s recording, reads the object back and
    /// compares it with the file (length and SHA-256). Returns its length.
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
        if len <= MULTIPART_THRESHOLD {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .await
                .map_err(|e| Error::local(from, e))?;
            hash.update(&bytes);
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(Error::object("upload a recording"))?;
        } else {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(Error::object("start a multipart upload"))?;
            let mut writer = WriteMultipart::new(upload);
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::local(from, e))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(Error::object("upload a recording part"))?;
                writer.write(&buf[..n]);
            }
            writer
                .finish()
                .await
                .map_err(Error::object("finish a multipart upload"))?;
        }
        let expected: [u8; 32] = hash.finalize().into();
        let (found_len, found) = self.digest(&key).await?;
        if found_len != len || found != expected {
            return Err(Error::ObjectMismatch(format!(
                "the recording object of session {id} read back as {found_len} bytes that do \
                 not match the {len}-byte file; the local file is kept"
            )));
        }
        Ok(len)
    }

    /// Whether session `id` has a recording object, and its length.
    pub async fn recording_len(&self, id: &str) -> Result<Option<u64>> {
        match self.store.head(&self.recording_key(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::ObjectStore {
                op: "look up a recording",
                source: e,
            }),
        }
    }

    /// Downloads session `id`'s recording into the file `to` (written beside it and renamed,
    /// so a reader never sees half a file). Returns its length.
    pub async fn fetch_recording(&self, id: &str, to: &Path) -> Result<u64> {
        let partial = to.with_extension("partial");
        let mut stream = self
            .store
            .get(&self.recording_key(id))
            .await
            .map_err(Error::object("download a recording"))?
            .into_stream();
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| Error::local(&partial, e))?;
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::object("download a recording"))?;
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

    /// The length and SHA-256 of an object, streamed.
    async fn digest(&self, key: &Key) -> Result<(u64, [u8; 32])> {
        let mut stream = self
            .store
            .get(key)
            .await
            .map_err(Error::object("read a recording back"))?
            .into_stream();
        let mut hash = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::object("read a recording back"))?;
            hash.update(&chunk);
            len += chunk.len() as u64;
        }
        Ok((len, hash.finalize().into()))
    }
}

/// A name no other probe uses at the same moment.
fn probe_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{now:x}-{}", std::process::id())
}
