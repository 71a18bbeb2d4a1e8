//! Recordings in S3-compatible object storage: the client, its configuration, and the segments
//! of live sessions.
//!
//! While a session runs, the bytes its writer has flushed to the local spool file are uploaded
//! about once a second ([`crate::spool`]) as small immutable **segment** objects named by the
//! byte range they hold (`segments/<id>/<offset>-<end>`), so a replica that dies mid-session
//! loses at most the last second. At the end the whole file is uploaded as one **recording**
//! object (`recordings/<id>.cast.zst`, byte-identical to the file; [`Objects::put_recording`]
//! in `objects/recording.rs`), read back and compared, and only then are the segments and the
//! spool file removed. A replica that takes over a dead one's session joins its segments back
//! into a file ([`Objects::join_segments`]) and seals that ([`recover_from_segments`]).
//!
//! Every request is bounded in time: the connector bounds one request
//! ([`ObjectStoreConfig::request_timeout`]), `object_store` retries a failed one only within
//! [`ObjectStoreConfig::retry_timeout`], and reading a body that stops arriving fails after
//! `request_timeout` too. A store that is down is an error within about
//! `retry_timeout + request_timeout`, never a hang.

mod connector;
mod recording;
mod takeover;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

pub use takeover::{Recovered, recover_from_segments};

/// Where recordings are stored.
#[derive(Clone)]
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
    /// How long one request may take, from sending it (its body included) to the head of its
    /// answer, and how long a body being read may pause (default 30 s). A single `PUT` of a
    /// recording up to [`Self::multipart_threshold`] must go up within it.
    pub request_timeout: Duration,
    /// How long after a request first failed `object_store` may still retry it (default 10 s):
    /// with `request_timeout`, this bounds how long an operation takes when the store is down.
    pub retry_timeout: Duration,
    /// How often a failed request is retried at most (default 3).
    pub max_retries: usize,
    /// Recordings larger than this go up in parts of 5 MiB (default 64 MiB; S3 takes at most
    /// 5 GiB in one `PUT`).
    pub multipart_threshold: u64,
}

impl ObjectStoreConfig {
    /// A configuration with the defaults: no prefix, the system's roots, a 30 s request
    /// timeout, retries for 10 s at most (3 of them), multipart above 64 MiB.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            prefix: String::new(),
            ca_file: None,
            request_timeout: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(10),
            max_retries: 3,
            multipart_threshold: 64 << 20,
        }
    }
}

impl std::fmt::Debug for ObjectStoreConfig {
    // By hand: the secret must not reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("request_timeout", &self.request_timeout)
            .field("retry_timeout", &self.retry_timeout)
            .field("max_retries", &self.max_retries)
            .field("multipart_threshold", &self.multipart_threshold)
            .finish_non_exhaustive()
    }
}

/// The object store of recordings. Cheap to clone.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: Arc<str>,
    request_timeout: Duration,
    multipart_threshold: u64,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("at", &self.shown)
            .finish_non_exhaustive()
    }
}

/// One uploaded segment: where its bytes are in the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// Where its bytes start in the recording file.
    pub offset: u64,
    /// How many bytes it holds.
    pub len: u64,
}

impl Segment {
    /// Where its bytes end (exclusive).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

impl Objects {
    /// A client for the bucket in `config`. Nothing is contacted until used; see
    /// [`Objects::check`].
    pub fn new(config: &ObjectStoreConfig) -> Result<Self> {
        let connector =
            connector::HyperConnector::new(config.ca_file.as_deref(), config.request_timeout)?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                // A short ceiling: a backoff may start just before `retry_timeout` runs out.
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
        };
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
            .with_retry(retry)
            // `If-None-Match: *`: a recording object is written once; a second writer (two
            // replicas recovering the same session) is refused instead of replacing it.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // The same for recordings uploaded in parts: a server-side copy of the uploaded
            // parts whose completion carries `If-None-Match: *`.
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
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
            request_timeout: config.request_timeout,
            multipart_threshold: config.multipart_threshold,
        })
    }

    /// Where the recordings are, for logs (`http://127.0.0.1:9000/bucket/custody/`).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Where session `id`'s recording object is, relative to the store and its prefix:
    /// `recordings/<id>.cast.zst`. The catalog records this as the session's `file_path`; it is
    /// relative, so it never names a local file (those paths are absolute).
    pub fn location(id: &str) -> PathBuf {
        PathBuf::from(format!("recordings/{id}.cast.zst"))
    }

    fn recording_key(&self, id: &str) -> Key {
        Key::from(format!("{}{}", self.prefix, Self::location(id).display()))
    }

    fn segments_dir(&self, id: &str) -> Key {
        Key::from(format!("{}segments/{id}", self.prefix))
    }

    fn segment_key(&self, id: &str, segment: Segment) -> Key {
        // Zero-padded: listing order is offset order. The end is in the name so that a retried
        // upload holding more bytes never replaces one holding fewer (or the reverse, if an
        // abandoned request lands last): each range is its own object.
        Key::from(format!(
            "{}segments/{id}/{:020}-{:020}",
            self.prefix,
            segment.offset,
            segment.end()
        ))
    }

    /// Writes, reads back and deletes a probe object: the bucket exists and the credentials
    /// may write, read and delete (a replica checks this before it accepts sessions).
    pub async fn check(&self) -> Result<()> {
        let key = Key::from(format!("{}probe/{}", self.prefix, unique_name()));
        let body = Bytes::from_static(b"custody object store probe");
        self.store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(Error::object("write a probe object"))?;
        let read = self.get_bytes(&key, "read a probe object").await?;
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

    /// Uploads bytes `offset..offset + bytes.len()` of session `id`'s recording. Uploading the
    /// same range again, or a longer one from the same offset, is harmless.
    pub async fn put_segment(&self, id: &str, offset: u64, bytes: Bytes) -> Result<()> {
        let segment = Segment {
            offset,
            len: bytes.len() as u64,
        };
        self.store
            .put(
                &self.segment_key(id, segment),
                PutPayload::from_bytes(bytes),
            )
            .await
            .map_err(Error::object("upload a segment"))?;
        Ok(())
    }

    /// The segments of session `id`, in offset order (the longest last among equal offsets).
    /// An object whose size differs from the range its name gives is left out.
    pub async fn segments(&self, id: &str) -> Result<Vec<Segment>> {
        let dir = self.segments_dir(id);
        let mut listing = self.store.list(Some(&dir));
        let mut segments = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(Error::object("list segments"))?;
            let Some((offset, end)) = meta.location.filename().and_then(parse_range) else {
                continue;
            };
            if end.checked_sub(offset) != Some(meta.size) {
                tracing::warn!(
                    session = id,
                    key = %meta.location,
                    size = meta.size,
                    "a segment object does not hold the range its name gives; ignored"
                );
                continue;
            }
            segments.push(Segment {
                offset,
                len: meta.size,
            });
        }
        segments.sort();
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

    /// Joins session `id`'s segments into the file `to` (created or truncated) from byte 0 up
    /// to the first gap; returns the bytes written. Overlapping segments (retried uploads) are
    /// read once: at each point the segment reaching furthest is taken. What was joined is a
    /// prefix of the recording as its replica wrote it, which the reader verifies frame by
    /// frame.
    pub async fn join_segments(&self, id: &str, to: &Path) -> Result<u64> {
        let segments = self.segments(id).await?;
        let mut file = crate::objects::private_file(to)
            .await
            .map_err(|e| Error::local(to, e))?;
        let mut at = 0u64;
        let mut next = 0usize;
        loop {
            // Of the segments starting at or before `at`, the one reaching furthest; those seen
            // in earlier rounds end at or before `at` already.
            let mut best: Option<Segment> = None;
            while let Some(segment) = segments.get(next).filter(|s| s.offset <= at) {
                if segment.end() > best.map_or(at, |b| b.end()) {
                    best = Some(*segment);
                }
                next += 1;
            }
            let Some(segment) = best else {
                if let Some(after) = segments.get(next) {
                    tracing::warn!(
                        session = id,
                        gap_at = at,
                        next = after.offset,
                        "a segment is missing; joined up to the gap"
                    );
                }
                break;
            };
            let bytes = self
                .get_bytes(&self.segment_key(id, segment), "read a segment")
                .await?;
            if bytes.len() as u64 != segment.len {
                return Err(Error::ObjectMismatch(format!(
                    "segment {}..{} of session {id} read back as {} bytes",
                    segment.offset,
                    segment.end(),
                    bytes.len()
                )));
            }
            // `segment.offset <= at < segment.end()`, so the skip is within the segment.
            let skip = usize::try_from(at - segment.offset).unwrap_or(usize::MAX);
            let new = bytes.get(skip..).unwrap_or_default();
            file.write_all(new).await.map_err(|e| Error::local(to, e))?;
            at = segment.end();
        }
        file.sync_all().await.map_err(|e| Error::local(to, e))?;
        Ok(at)
    }

    /// Deletes session `id`'s segments (after its recording object verified), with bulk
    /// deletes of up to 1000 keys a request.
    pub async fn delete_segments(&self, id: &str) -> Result<()> {
        let keys = self
            .store
            .list(Some(&self.segments_dir(id)))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(keys);
        while let Some(result) = deleted.next().await {
            match result {
                // Gone already (another replica cleaning up too): what was wanted.
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::object("delete segments")(e)),
            }
        }
        Ok(())
    }

    /// An object's bytes; a body that pauses longer than the request timeout fails.
    async fn get_bytes(&self, key: &Key, op: &'static str) -> Result<Bytes> {
        let mut stream = self
            .store
            .get(key)
            .await
            .map_err(Error::object(op))?
            .into_stream();
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut stream, op).await? {
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            1 => chunks.swap_remove(0),
            _ => chunks.concat().into(),
        })
    }

    /// The next chunk of a body being read, within the request timeout: the connector bounds a
    /// request until its answer's head, this bounds the body.
    async fn next_chunk(
        &self,
        stream: &mut (impl futures_util::Stream<Item = object_store::Result<Bytes>> + Unpin),
        op: &'static str,
    ) -> Result<Option<Bytes>> {
        match tokio::time::timeout(self.request_timeout, stream.next()).await {
            Ok(None) => Ok(None),
            Ok(Some(chunk)) => chunk.map(Some).map_err(Error::object(op)),
            Err(_) => Err(Error::ObjectStoreStalled {
                op,
                after: self.request_timeout,
            }),
        }
    }
}

/// `<offset>-<end>` of a segment's name.
fn parse_range(name: &str) -> Option<(u64, u64)> {
    let (offset, end) = name.split_once('-')?;
    Some((offset.parse().ok()?, end.parse().ok()?))
}

/// A name no other writer uses at the same moment (probe objects, staging keys, scratch files).
fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{now:x}-{}-{n}", std::process::id())
}

/// Creates (or truncates) `path` for writing, owner-only (0600) whatever the umask: the
/// files under a replica's data directory are the gateway user's alone.
pub(crate) async fn private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path).await?;
    // An existing file keeps its mode through `open`: make it owner-only too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await?;
    }
    Ok(file)
}
