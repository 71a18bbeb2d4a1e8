//! The async session writer: a [`SessionHandle`] per session with a bounded queue in front of a
//! task that redacts, encodes, compresses, writes and syncs.
//!
//! Durability: events go into an open zstd frame that is block-flushed to the file every
//! [`WriterConfig::flush_interval`] (a plain `write`, so a killed process loses at most about
//! that much), and closed with its signed checkpoint and an `fdatasync` at
//! [`WriterConfig::frame_max_bytes`] or [`WriterConfig::frame_max_duration`], whichever comes
//! first (what power loss can lose).
//!
//! Nothing is dropped. When the disk is slow the queue fills and [`EventSender::record`] waits
//! (backpressure), up to [`WriterConfig::max_stall`], after which it fails. When a write fails
//! the task publishes the failure at once: [`EventSender::fatal`] resolves, `record` returns an
//! error, and the caller must end the session (strict mode). The task then cuts the file back
//! to the end of its last successful write and seals it as terminated with reason
//! `recording_failure`, keeping the open frame's flushed events.

mod task;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::file::RecordingFile;
use crate::format::{self, TimePrecision};
use crate::index::IndexedSession;
use crate::integrity::Manifest;
use crate::model::{Event, SessionMeta, SessionStatus};
use crate::redaction::Redactor;

/// How a session is written.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Close a frame once it holds this many uncompressed bytes (default 1 MiB). Every closed
    /// frame gets its signed checkpoint and is `fdatasync`ed.
    pub frame_max_bytes: usize,
    /// Close a frame before it spans more than this (default 60 s): the most that power loss
    /// can take from an idle or slow session, and the most a frame's events cover.
    pub frame_max_duration: Duration,
    /// Block-flush the open frame to the file this often while events arrive (default 1 s):
    /// about the most a killed process loses (twice that when redaction holds an event back).
    pub flush_interval: Duration,
    /// Events the queue holds before producers wait (default 1024).
    pub queue_capacity: usize,
    /// Payload bytes the queue holds before producers wait (default 4 MiB): with the open
    /// frame's batch (`frame_max_bytes`), the most a session's recording buffers in memory.
    pub queue_bytes: usize,
    /// How long a producer may wait for queue space before `record` fails (default 10 s).
    pub max_stall: Duration,
    /// zstd level (default 3).
    pub compression_level: i32,
    /// Decimal digits of event intervals (default 6: exact).
    pub time_precision: TimePrecision,
    /// Patterns applied to output, stderr and input before writing.
    pub redactor: Redactor,
    /// What the sessions written with this configuration (and its clones) did, added up: for
    /// a process to export as metrics.
    pub stats: WriterStats,
}

/// Counters shared by every session written with one [`WriterConfig`] and its clones: events
/// and bytes written, events waiting in the queues. Cheap to clone (the clones share them).
#[derive(Debug, Clone, Default)]
pub struct WriterStats(Arc<Stats>);

#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
}

impl WriterStats {
    /// Events queued by `record` that no writer has taken off its queue yet.
    pub fn queued_events(&self) -> u64 {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// Events written into recording files (after redaction released them).
    pub fn events_written(&self) -> u64 {
        self.0.events.load(Ordering::Relaxed)
    }

    /// Bytes written to recording files (compressed frames, checkpoints, manifests).
    pub fn bytes_written(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn written(&self, events: u64, bytes: u64) {
        self.0.events.fetch_add(events, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// An event's place in the queue: its share of the byte budget, and one in
/// [`WriterStats::queued_events`], both given back when it is taken off the queue (or dropped
/// with it).
#[derive(Debug)]
struct Queued {
    _permit: OwnedSemaphorePermit,
    stats: WriterStats,
}

impl Queued {
    fn new(permit: OwnedSemaphorePermit, stats: &WriterStats) -> Self {
        stats.0.queued.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            stats: stats.clone(),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.stats.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            frame_max_bytes: 1 << 20,
            frame_max_duration: Duration::from_secs(60),
            flush_interval: Duration::from_secs(1),
            queue_capacity: 1024,
            queue_bytes: 4 << 20,
            max_stall: Duration::from_secs(10),
            compression_level: zstd::DEFAULT_COMPRESSION_LEVEL,
            time_precision: TimePrecision::MICROS,
            redactor: Redactor::disabled(),
            stats: WriterStats::default(),
        }
    }
}

/// The owner's handle on a session being recorded.
#[derive(Debug)]
pub struct SessionHandle {
    sender: EventSender,
    finish: mpsc::Sender<Command>,
    path: PathBuf,
    live: broadcast::Sender<Arc<Event>>,
    /// The writer task: after a failure it still seals what it has, and `seal` waits for that.
    task: tokio::task::JoinHandle<()>,
}

/// Events a live viewer may fall behind by before it misses some (it is told how many:
/// [`broadcast::error::RecvError::Lagged`]). Viewers never slow the session down, and a slow
/// one holds at most this many events in memory (an event is at most one relay chunk, 64 KiB).
pub const LIVE_CAPACITY: usize = 256;

/// The count of a session's lost events ([`SessionHandle::lost_counter`]).
#[derive(Debug, Clone)]
pub struct LostCounter(Arc<AtomicU64>);

impl LostCounter {
    /// Events lost so far; see [`EventSender::lost_events`].
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A cloneable producer side of a session (one per stream task).
#[derive(Debug, Clone)]
pub struct EventSender {
    queue: mpsc::Sender<Command>,
    fatal: watch::Receiver<Option<String>>,
    lost: Arc<AtomicU64>,
    max_stall: Duration,
    /// Payload bytes the queue may still take (see [`WriterConfig::queue_bytes`]).
    budget: Arc<Semaphore>,
    budget_max: usize,
    stats: WriterStats,
}

/// What the queue carries to the writer task. An event holds its share of the byte budget
/// ([`Queued`]) until the task has taken it off the queue.
#[derive(Debug)]
enum Command {
    Event(Event, Queued),
    Finish(SessionStatus, oneshot::Sender<Result<Sealed>>),
}

/// A sealed recording: its manifest and, when the writer could derive them while writing, its
/// index rows (so the session need not be read back to be indexed).
#[derive(Debug)]
pub struct Sealed {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The index rows of the session as written; `None` when they could not be derived (the
    /// file is then indexed by reading it).
    pub index: Option<IndexedSession>,
}

impl SessionHandle {
    /// Creates `<dir>/<session id>.cast.zst`, writes and syncs its header frame, and starts the
    /// writer task. Fails, before the session may start, when the file cannot be created or
    /// synced (P1: no recording, no session) or already exists.
    pub async fn open(
        dir: &Path,
        meta: SessionMeta,
        key: Arc<SigningKey>,
        config: WriterConfig,
    ) -> Result<Self> {
        let header = format::encode_header(&meta)?;
        let dir = dir.to_owned();
        let level = config.compression_level;
        let task_meta = meta.clone();
        let frame_max_bytes = config.frame_max_bytes;
        let file = tokio::task::spawn_blocking(move || {
            let mut file = RecordingFile::create(&dir, &meta, &header, key, level)?;
            file.set_frame_size_hint(frame_max_bytes)?;
            Ok::<_, Error>(file)
        })
        .await
        .map_err(|e| Error::RecordingFailed(format!("writer task: {e}")))??;
        let path = file.path().to_owned();
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (fatal_tx, fatal) = watch::channel(None);
        let lost = Arc::new(AtomicU64::new(0));
        let max_stall = config.max_stall;
        let budget_max = config.queue_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let budget = Arc::new(Semaphore::new(budget_max));
        let stats = config.stats.clone();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let task_live = live.clone();
        let task = tokio::spawn(async move {
            task::run(file, &task_meta, config, receiver, fatal_tx, task_live).await;
        });
        let sender = EventSender {
            queue: queue.clone(),
            fatal,
            lost,
            max_stall,
            budget,
            budget_max,
            stats,
        };
        Ok(Self {
            sender,
            finish: queue,
            path,
            live,
            task,
        })
    }

    /// The recording file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Follows the session as it is written: every event after redaction, as it goes into the
    /// file (at most one flush interval after it was recorded), from now on. The channel closes
    /// when the recording ends. A viewer that falls more than [`LIVE_CAPACITY`] events behind
    /// misses events and is told how many; it never slows the session down.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// A producer handle for another task.
    pub fn sender(&self) -> EventSender {
        self.sender.clone()
    }

    /// Queues an event; see [`EventSender::record`].
    pub async fn record(&self, event: Event) -> Result<()> {
        self.sender.record(event).await
    }

    /// Resolves with the failure once the recording has failed; see [`EventSender::fatal`].
    pub async fn fatal(&self) -> String {
        self.sender.fatal().await
    }

    /// Events lost without the session being told; see [`EventSender::lost_events`].
    pub fn lost_events(&self) -> u64 {
        self.sender.lost_events()
    }

    /// A handle that reads [`Self::lost_events`] after the session is gone. Unlike a sender it
    /// does not keep the queue open, so holding it never delays the writer's end.
    pub fn lost_counter(&self) -> LostCounter {
        LostCounter(self.sender.lost.clone())
    }

    /// Writes every queued event, the end line and the signed manifest with `status`, syncs,
    /// and returns the manifest. Fails if the recording failed earlier.
    pub async fn finish(self, status: SessionStatus) -> Result<Manifest> {
        self.seal(status).await.map(|sealed| sealed.manifest)
    }

    /// [`finish`](Self::finish), also returning the session's index rows as written.
    ///
    /// When the recording failed, this returns only once the writer has sealed what it could
    /// (terminated with `recording_failure`), so the file is final when the caller reads it.
    pub async fn seal(self, status: SessionStatus) -> Result<Sealed> {
        let Self {
            sender,
            finish,
            task,
            ..
        } = self;
        let closed = || Error::RecordingFailed(sender.failure().unwrap_or_else(closed_text));
        let (reply, answer) = oneshot::channel();
        let result = match finish.send(Command::Finish(status, reply)).await {
            Ok(()) => answer.await.map_err(|_| closed()).and_then(|sealed| sealed),
            Err(_) => Err(closed()),
        };
        if result.is_err() {
            // The task ends by itself after a failure (or has ended): a panic was reported
            // through `fatal` already.
            let _ = task.await;
        }
        result
    }
}

impl EventSender {
    /// Queues an event. Waits while the queue is full (backpressure, never a drop); fails when
    /// the recording has failed, the session is finished, or the wait exceeds `max_stall`.
    pub async fn record(&self, event: Event) -> Result<()> {
        if let Some(failure) = self.failure() {
            return Err(Error::RecordingFailed(failure));
        }
        let cost =
            u32::try_from(task::payload_len(&event).min(self.budget_max)).unwrap_or(u32::MAX);
        let send = async {
            let permit = self.budget.clone().acquire_many_owned(cost).await.ok()?;
            let queued = Queued::new(permit, &self.stats);
            self.queue.send(Command::Event(event, queued)).await.ok()
        };
        match tokio::time::timeout(self.max_stall, send).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(self
                .failure()
                .map_or(Error::SessionClosed, Error::RecordingFailed)),
            Err(_) => Err(Error::RecordingFailed(format!(
                "the recording stalled for more than {:?}",
                self.max_stall
            ))),
        }
    }

    /// Resolves with the failure's description once the recording has failed; never resolves
    /// while it is healthy. Select on it next to the session's streams.
    pub async fn fatal(&self) -> String {
        let mut fatal = self.fatal.clone();
        loop {
            if let Some(failure) = fatal.borrow_and_update().clone() {
                return failure;
            }
            if fatal.changed().await.is_err() {
                // The task ended without a failure (finished): never resolve.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The failure, if the recording has failed.
    pub fn failure(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// Events accepted by `record` and then dropped without the session being told. The writer
    /// never drops an event, so this stays 0; it exists to be exported as a metric
    /// (`recording_events_lost_total`) and asserted in tests.
    pub fn lost_events(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

fn closed_text() -> String {
    "the recording session is closed".into()
}
