//! The catalog: where the index of sessions and the audit trail's rows live, behind one trait.
//!
//! On one machine the catalog is the `SQLite` [`Index`] in the data directory
//! ([`SqliteCatalog`]); in cluster mode it is PostgreSQL, shared by every replica (the
//! `custody-cluster` crate). The gateway, the web API and recovery only see [`Catalog`], so the
//! same code answers from either. The recording files and their format do not depend on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::index::{
    AuditCompletion, AuditQuery, AuditRecord, AuditWrite, FrameRow, Index, IndexedSession,
    SearchHit, SessionQuery, SessionRow,
};
use crate::keyframe::Seekpoint;
use crate::model::SessionMeta;

/// One change to the audit rows, owned (see [`Catalog::audit_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditChange {
    /// A new event (its decision).
    Insert(Box<AuditRecord>),
    /// An event's completion.
    Complete(AuditCompletion),
}

impl AuditChange {
    /// The borrowed form the `SQLite` index applies.
    pub fn as_write(&self) -> AuditWrite<'_> {
        match self {
            Self::Insert(record) => AuditWrite::Insert(record),
            Self::Complete(done) => AuditWrite::Complete(done),
        }
    }
}

/// The index of sessions and audit events, wherever it is kept.
///
/// Every method is one unit: a write is committed (durable) when it returns `Ok`, and a batch
/// is applied whole or not at all.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Where the catalog is, for logs and errors (`sqlite /var/lib/custody/index.sqlite`).
    fn describe(&self) -> String;

    /// Registers a session that has just started (status `open`), so that recovery finds it if
    /// its gateway dies before it ends. Does nothing if the session is already known.
    async fn record_open(&self, meta: &SessionMeta, file_path: &Path) -> Result<()>;

    /// Inserts or replaces everything the catalog holds about one session.
    async fn upsert(&self, session: IndexedSession) -> Result<()>;

    /// One session's row.
    async fn session(&self, id: &str) -> Result<Option<SessionRow>>;

    /// One session's frames, in order.
    async fn frames(&self, id: &str) -> Result<Vec<FrameRow>>;

    /// One session's seekpoints (decoded keyframes).
    async fn seekpoints(&self, id: &str) -> Result<Vec<Seekpoint>>;

    /// The sessions matching `query`, newest first.
    async fn sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRow>>;

    /// Full-text search over output and typed lines, best match first, one hit per session.
    async fn search(&self, text: &str, limit_sessions: Option<usize>) -> Result<Vec<SearchHit>>;

    /// The sessions held as `open`, with their files.
    async fn open_sessions(&self) -> Result<Vec<(String, PathBuf)>>;

    /// Applies audit `changes` in one committed transaction: all of them or none.
    async fn audit_batch(&self, changes: &[AuditChange]) -> Result<()>;

    /// The audit event of one request, by its id.
    async fn audit_event(&self, id: &str) -> Result<Option<AuditRecord>>;

    /// The audit events matching `query` (newest first, or after a cursor oldest first).
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
}

/// The one-machine catalog: the `SQLite` index file, opened on first use, each call run on a
/// blocking thread (rusqlite is synchronous) under one mutex (one connection).
#[derive(Clone)]
pub struct SqliteCatalog {
    path: PathBuf,
    index: Arc<Mutex<Option<Index>>>,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteCatalog {
    /// A catalog over the index file at `path` (created and migrated on first use).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            index: Arc::new(Mutex::new(None)),
        }
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the open index on the calling thread (for callers that are already on a
    /// blocking thread, such as the audit writer).
    pub fn blocking<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let mut slot = self
            .index
            .lock()
            // A panic while holding the lock leaves a connection whose every statement was
            // its own transaction: still usable.
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(Index::open(&self.path)?);
        }
        match slot.as_mut() {
            Some(index) => f(index),
            // The slot was filled just above.
            None => Err(Error::Catalog {
                op: "open",
                message: "the index is not open".into(),
            }),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Index) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.blocking(f))
            .await
            .map_err(|e| Error::Catalog {
                op,
                message: format!("the index task failed: {e}"),
            })?
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    async fn record_open(&self, meta: &SessionMeta, file_path: &Path) -> Result<()> {
        let (meta, file_path) = (meta.clone(), file_path.to_owned());
        self.run("record open", move |index| {
            index.record_open(&meta, &file_path)
        })
        .await
    }

    async fn upsert(&self, session: IndexedSession) -> Result<()> {
        self.run("upsert", move |index| index.upsert(&session))
            .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        let id = id.to_owned();
        self.run("read session", move |index| index.session(&id))
            .await
    }

    async fn frames(&self, id: &str) -> Result<Vec<FrameRow>> {
        let id = id.to_owned();
        self.run("read frames", move |index| index.frames(&id))
            .await
    }

    async fn seekpoints(&self, id: &str) -> Result<Vec<Seekpoint>> {
        let id = id.to_owned();
        self.run("read seekpoints", move |index| index.seekpoints(&id))
            .await
    }

    async fn sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRow>> {
        let query = query.clone();
        self.run("query sessions", move |index| index.sessions(&query))
            .await
    }

    async fn search(&self, text: &str, limit_sessions: Option<usize>) -> Result<Vec<SearchHit>> {
        let text = text.to_owned();
        self.run("search", move |index| index.search(&text, limit_sessions))
            .await
    }

    async fn open_sessions(&self) -> Result<Vec<(String, PathBuf)>> {
        self.run("read open sessions", |index| index.open_sessions())
            .await
    }

    async fn audit_batch(&self, changes: &[AuditChange]) -> Result<()> {
        let changes = changes.to_vec();
        self.run("audit batch", move |index| {
            let writes: Vec<AuditWrite<'_>> = changes.iter().map(AuditChange::as_write).collect();
            index.audit_batch(&writes)
        })
        .await
    }

    async fn audit_event(&self, id: &str) -> Result<Option<AuditRecord>> {
        let id = id.to_owned();
        self.run("read audit event", move |index| index.audit_event(&id))
            .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let query = query.clone();
        self.run("query audit events", move |index| {
            index.audit_events(&query)
        })
        .await
    }
}
