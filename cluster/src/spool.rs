//! The segment spooler of one live session: uploads what the recorder has written to the
//! session's local file, as segments, every interval, and stores the sealed file as the
//! recording object at the end.
//!
//! The recorder's file only grows while the session runs (the writer appends; it block-flushes
//! its open frame every `flush_interval`), so each tick uploads the byte range
//! `[uploaded, file length)` as one segment, read with positioned reads, and an idle tick costs
//! nothing. A replica that dies loses what it flushed since its last uploaded segment: about one
//! interval plus one flush interval. A failed upload is retried at the next tick from the same
//! offset (the range then holds as many bytes or more; each range is its own object, see
//! [`Objects::join_segments`]). When uploads keep failing for [`SpoolConfig::fail_after`],
//! [`Spool::failed`] resolves: a recording that cannot be stored stops the session.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::error::{Error, Result, error_chain};
use crate::objects::Objects;

/// How a session's file is spooled to the object store.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// How often new bytes are uploaded (default 1 s): with the writer's flush interval, about
    /// the most a replica that dies loses. Each tick with new bytes costs one `PUT`.
    pub interval: Duration,
    /// How long uploads may keep failing before [`Spool::failed`] resolves (default 5 s). One
    /// upload attempt is cut off when it would run past it.
    pub fail_after: Duration,
    /// The most bytes one segment holds (default 8 MiB); more new bytes go up as several.
    pub max_segment_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            fail_after: Duration::from_secs(5),
            max_segment_bytes: 8 << 20,
        }
    }
}

/// What a spool has done so far (for metrics and the cost benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of the file uploaded as segments (the offset uploads continue from).
    pub bytes: u64,
    /// Segments uploaded (one `PUT` each).
    pub segments: u64,
    /// Segment uploads that failed (each one `PUT` attempt or more).
    pub failed_uploads: u64,
}

/// Counters shared by the upload task and the handle.
#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    segments: AtomicU64,
    failed_uploads: AtomicU64,
}

/// The spooler of one session; see the module documentation. Dropping it stops the uploads
/// (the segments stay, for a takeover); [`Spool::finish`] ends it properly.
#[derive(Debug)]
pub struct Spool {
    uploader: Arc<Uploader>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    failed: watch::Receiver<Option<String>>,
}

impl Spool {
    /// Starts uploading new bytes of `file` (the recorder's local file of session `id`) every
    /// interval, the first time at once (so the header is stored as the session starts).
    /// Fails when the file cannot be opened. Must be called within a tokio runtime.
    pub fn start(objects: Objects, id: String, file: PathBuf, config: SpoolConfig) -> Result<Self> {
        let handle = File::open(&file).map_err(|e| Error::local(&file, e))?;
        let (failed_tx, failed) = watch::channel(None);
        let (stop, stopped) = watch::channel(false);
        let uploader = Arc::new(Uploader {
            objects,
            id,
            path: file,
            file: Arc::new(handle),
            config,
            counters: Counters::default(),
        });
        let task = tokio::spawn(run(uploader.clone(), stopped, failed_tx));
        Ok(Self {
            uploader,
            stop,
            task: Some(task),
            failed,
        })
    }

    /// Resolves with the reason once uploads have failed for longer than
    /// [`SpoolConfig::fail_after`]; never resolves while they succeed. The gateway ends the
    /// session then. Uploads go on being tried, so nothing is lost if the store comes back
    /// before [`Spool::finish`].
    pub async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        loop {
            if let Some(reason) = failed.borrow_and_update().clone() {
                return reason;
            }
            if failed.changed().await.is_err() {
                // The task has ended (finish or drop) without a failure: never resolve.
                std::future::pending::<()>().await;
            }
        }
    }

    /// A receiver that holds the failure once uploads have failed for longer than
    /// [`SpoolConfig::fail_after`] (for a watchdog that outlives a borrow of the spool).
    pub fn failure_watch(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    /// The failure, if uploads have failed for longer than [`SpoolConfig::fail_after`].
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// What has been uploaded so far.
    pub fn stats(&self) -> SpoolStats {
        self.uploader.stats()
    }

    /// After the recorder sealed the file: uploads what is left as a last segment, then the
    /// whole file as the recording object ([`Objects::put_recording`] reads it back and
    /// compares), then deletes the segments and the local file. Returns the object's length.
    ///
    /// Nothing is deleted before the object verified. On failure the local file and the
    /// segments stay ([`Error::RecordingNotStored`]): the recording can be stored later
    /// ([`store_recording`]), or taken over from its segments.
    pub async fn finish(mut self) -> Result<u64> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            // The offset lives in the counters, so the uploads go on from where it stopped.
            tracing::warn!(session = %self.uploader.id, error = %e, "the segment upload task failed");
        }
        let uploader = &self.uploader;
        let not_stored = |source| Error::RecordingNotStored {
            id: uploader.id.clone(),
            path: uploader.path.clone(),
            source: Box::new(source),
        };
        while !matches!(
            uploader.upload_next().await.map_err(not_stored)?,
            Upload::Nothing
        ) {}
        store_recording(&uploader.objects, &uploader.id, &uploader.path).await
    }
}

/// Stores the sealed local file `path` as session `id`'s recording object (verified after
/// upload), then deletes the session's segments and the file; returns the object's length.
/// [`Spool::finish`] ends with this; a gateway calls it again for a file whose storing failed.
///
/// On failure nothing is deleted ([`Error::RecordingNotStored`]). Segments that cannot be
/// deleted after the object verified are only logged: a takeover finds the verified object and
/// deletes them.
pub async fn store_recording(objects: &Objects, id: &str, path: &Path) -> Result<u64> {
    let len =
        objects
            .put_recording(id, path)
            .await
            .map_err(|source| Error::RecordingNotStored {
                id: id.to_owned(),
                path: path.to_owned(),
                source: Box::new(source),
            })?;
    if let Err(e) = objects.delete_segments(id).await {
        tracing::warn!(
            session = id,
            error = %error_chain(&e),
            "the recording is stored but its segments were not deleted"
        );
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|e| Error::local(path, e))?;
    Ok(len)
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Uploads one session's file.
#[derive(Debug)]
struct Uploader {
    objects: Objects,
    id: String,
    path: PathBuf,
    file: Arc<File>,
    config: SpoolConfig,
    counters: Counters,
}

/// The upload task: a tick, then every new byte up, until told to stop.
async fn run(
    uploader: Arc<Uploader>,
    mut stop: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval(uploader.config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When uploads started failing (the start of the first failed attempt).
    let mut failing_since: Option<Instant> = None;
    // The last failure's reason, for when the bound cuts an attempt off.
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let fail_after = uploader.config.fail_after;
        let caught_up = async {
            loop {
                let started = Instant::now();
                let budget = failing_since.map_or(fail_after, |since| {
                    fail_after.saturating_sub(since.elapsed())
                });
                let error = match tokio::time::timeout(budget, uploader.upload_next()).await {
                    // One upload per tick: bytes flushed during it wait for the next tick
                    // (each PUT costs the same whatever its size), unless a whole segment's
                    // worth was waiting and more may be behind it.
                    Ok(Ok(Upload::Backlog)) => {
                        failing_since = None;
                        last_error = None;
                        continue;
                    }
                    Ok(Ok(Upload::Sent)) => {
                        failing_since = None;
                        last_error = None;
                        return Ok(());
                    }
                    Ok(Ok(Upload::Nothing)) => return Ok(()),
                    Ok(Err(e)) => error_chain(&e),
                    // Cut off at the bound: the error before it says more than the cut.
                    Err(_) => last_error
                        .clone()
                        .unwrap_or_else(|| format!("an upload had no answer within {budget:?}")),
                };
                return Err((*failing_since.get_or_insert(started), error));
            }
        };
        // Stopping cuts an attempt short: `finish` uploads from the same offset.
        let outcome = tokio::select! {
            biased;
            _ = stop.changed() => return,
            outcome = caught_up => outcome,
        };
        if let Err((since, reason)) = outcome {
            uploader
                .counters
                .failed_uploads
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %uploader.id, error = %reason, "a segment upload failed");
            if since.elapsed() >= fail_after && failed.borrow().is_none() {
                let _ = failed.send(Some(format!(
                    "the recording could not be stored for {:.1} s: {reason}",
                    since.elapsed().as_secs_f64()
                )));
            }
            last_error = Some(reason);
        }
    }
}

impl Uploader {
    fn stats(&self) -> SpoolStats {
        SpoolStats {
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            segments: self.counters.segments.load(Ordering::Relaxed),
            failed_uploads: self.counters.failed_uploads.load(Ordering::Relaxed),
        }
    }

    /// Uploads the next new bytes of the file as one segment.
    async fn upload_next(&self) -> Result<Upload> {
        let offset = self.counters.bytes.load(Ordering::Relaxed);
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::local(&self.path, e))?
            .len();
        if len < offset {
            // The writer cut a failed write off (it ends the session then). The uploaded bytes
            // past the cut are no longer the file's; upload again from the cut.
            tracing::warn!(session = %self.id, offset, len, "the recording file shrank");
            self.counters.bytes.store(len, Ordering::Relaxed);
            return Ok(Upload::Backlog);
        }
        if len == offset {
            return Ok(Upload::Nothing);
        }
        let end = len.min(offset.saturating_add(self.config.max_segment_bytes));
        let bytes = read_range(self.file.clone(), &self.path, offset, end).await?;
        self.objects.put_segment(&self.id, offset, bytes).await?;
        self.counters.bytes.store(end, Ordering::Relaxed);
        self.counters.segments.fetch_add(1, Ordering::Relaxed);
        Ok(if end < len {
            Upload::Backlog
        } else {
            Upload::Sent
        })
    }
}

/// What one upload did.
enum Upload {
    /// Nothing new.
    Nothing,
    /// Everything new went up.
    Sent,
    /// A segment went up and more is waiting (a segment's maximum), or the offset moved back.
    Backlog,
}

/// Bytes `offset..end` of the file (positioned reads: the writer appends meanwhile).
async fn read_range(file: Arc<File>, path: &Path, offset: u64, end: u64) -> Result<Bytes> {
    let len = usize::try_from(end - offset).map_err(|_| {
        Error::local(
            path,
            std::io::Error::other("a segment larger than memory can address"),
        )
    })?;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map(|()| Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|read| read)
    .map_err(|e| Error::local(path, e))
}
