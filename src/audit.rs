//! The audit trail: one [`AuditEvent`] per request, who really asked (the initiator), who the
//! cluster was told it is (the effective identity), what was asked and what custody decided.
//!
//! The [`AuditSink`] writes each event to a JSON-lines file (`fdatasync`'d) and to the `SQLite`
//! index. In [`AuditMode::Strict`] the decision is durable in both before the request is
//! forwarded; if it cannot be written the request is refused with 503. A completion record
//! (status, latency, bytes, upstream `Audit-Id`) follows when the response ends.
//!
//! Requests refused before authentication carry only what an anonymous client sent: they are
//! written with their fields cut short and at a bounded rate ([`refusal`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use custody_recorder::catalog::{AuditChange, Catalog, SqliteCatalog};
use serde::{Deserialize, Serialize};

use crate::classify::RequestInfo;
use crate::error::{Error, Result};
use crate::principal::{EffectiveIdentity, Principal};

mod file;
mod query;
pub mod refusal;

pub use query::{AuditFilter, event, follow, query, record_to_json};
pub use refusal::truncate_unauthenticated;

/// Whether a request waits for its audit event to be durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditMode {
    /// The decision is durable before forwarding; a write failure refuses the request (503).
    #[default]
    Strict,
    /// A write failure is logged and counted; the request proceeds.
    BestEffort,
}

/// What custody decided about a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "reason", rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused, with the reason given to the client.
    Deny(String),
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The custody request id, also sent upstream as `Audit-ID`.
    pub id: uuid::Uuid,
    /// When the request arrived.
    pub time: DateTime<Utc>,
    /// Who really asked; `None` when authentication failed.
    pub initiator: Option<Principal>,
    /// Who the cluster was told is asking; `None` when no identity was decided.
    pub effective: Option<EffectiveIdentity>,
    /// The client's socket address (never a forwarded-for header).
    pub client_addr: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The cluster, as selected by the path prefix (empty if none was).
    pub cluster: String,
    /// The classified request (the path alone when it could not be classified).
    pub request: RequestInfo,
    /// The decision and its reason.
    #[serde(flatten)]
    pub decision: Decision,
    /// The HTTP status returned to the client, once known.
    pub status_code: Option<u16>,
    /// The `Audit-Id` the API server echoed.
    pub upstream_audit_id: Option<String>,
    /// Milliseconds from arrival to the end of the response, once known.
    pub latency_ms: Option<u64>,
    /// Request body bytes, once known.
    pub bytes_in: Option<u64>,
    /// Response body bytes, once known.
    pub bytes_out: Option<u64>,
    /// kubectl's `Kubectl-Session` header: the requests of one kubectl invocation.
    pub kubectl_session: Option<String>,
    /// kubectl's `Kubectl-Command` header, e.g. `kubectl get`.
    pub kubectl_command: Option<String>,
    /// Why the policy allowed the request (`allowed by role dev`), when a policy decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<String>,
    /// The access grant (request id) the request was allowed under, if it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// In cluster mode, the replica that handled the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
}

impl AuditEvent {
    /// A new event for a request arriving now from `peer`, not yet decided.
    pub fn new(id: uuid::Uuid, peer: SocketAddr) -> Self {
        Self {
            id,
            // Microseconds: the precision the index stores, so events read back compare equal.
            time: Utc::now().trunc_subsecs(6),
            initiator: None,
            effective: None,
            client_addr: peer.to_string(),
            user_agent: String::new(),
            cluster: String::new(),
            request: RequestInfo::default(),
            decision: Decision::Deny(String::new()),
            status_code: None,
            upstream_audit_id: None,
            latency_ms: None,
            bytes_in: None,
            bytes_out: None,
            kubectl_session: None,
            kubectl_command: None,
            allowed_by: None,
            approval_id: None,
            replica_id: None,
        }
    }
}

/// Where audit events go: the JSON-lines file and the `SQLite` index on one machine, or the
/// shared catalog (PostgreSQL) in cluster mode. Cheap to clone.
///
/// One writer owns the trail: it takes every event waiting at that moment (up to
/// [`MAX_BATCH`]), writes them together (on one machine: one append and one `fdatasync` of the
/// file, then one index transaction; in cluster mode: one database transaction), and only then
/// acknowledges each of them (group commit). A lone request waits for exactly what it waited
/// for before; concurrent requests share the syncs instead of queueing for the disk one by one.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<Inner>,
}

/// The most events written together.
pub const MAX_BATCH: usize = 256;

struct Inner {
    mode: AuditMode,
    /// The JSON-lines file, on one machine.
    jsonl: Option<PathBuf>,
    /// Where the rows are queried (and, in cluster mode, written).
    catalog: Arc<dyn Catalog>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// In cluster mode, this replica's id, written into every event.
    replica_id: Option<String>,
    /// How many requests refused before authentication are written.
    refusals: refusal::RefusalLimit,
    /// Where the writer reports each batch (set once the gateway's metrics are known).
    report: Report,
}

/// The writer's metrics, shared with it: set at most once, read after each batch.
type Report = Arc<std::sync::OnceLock<crate::metrics::AuditWrites>>;

/// Observes one batch that took since `started`.
fn report(report: &Report, events: usize, started: std::time::Instant) {
    if let Some(writes) = report.get() {
        writes.batch_written(events, started.elapsed());
    }
}

/// One event for the writer: its stage, and who waits for it to be durable.
struct Job {
    stage: &'static str,
    event: AuditEvent,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

impl AuditSink {
    /// Opens the trail under `data_dir`: `audit/audit.jsonl` and the index `index.sqlite`.
    pub fn open(data_dir: &Path, mode: AuditMode) -> Result<Self> {
        Self::with_paths(
            &data_dir.join("audit").join("audit.jsonl"),
            &data_dir.join("index.sqlite"),
            mode,
        )
    }

    /// Opens the trail with explicit file and index paths, and starts its writer thread (which
    /// ends when the last clone of the sink is dropped).
    pub fn with_paths(jsonl: &Path, index: &Path, mode: AuditMode) -> Result<Self> {
        let file = file::JsonLines::open(jsonl)?;
        if let Some(dir) = index.parent()
            && !dir.as_os_str().is_empty()
        {
            custody_recorder::permissions::create_dir(dir).map_err(|source| Error::AuditFile {
                path: dir.to_owned(),
                source,
            })?;
        }
        let catalog = SqliteCatalog::new(index);
        // Opened now, so that a damaged or too new index stops the start, not a request.
        catalog.blocking(|_| Ok(())).map_err(Error::AuditIndex)?;
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        let writer = catalog.clone();
        let report = Report::default();
        let reported = report.clone();
        std::thread::Builder::new()
            .name("custody-audit".into())
            .spawn(move || write_local(queue, file, &writer, &reported))
            .map_err(|e| Error::AuditEvent(format!("cannot start the audit writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                jsonl: Some(jsonl.to_owned()),
                catalog: Arc::new(catalog),
                jobs,
                replica_id: None,
                refusals: refusal::RefusalLimit::default(),
                report,
            }),
        })
    }

    /// The trail in a shared catalog (cluster mode): each batch is one transaction of the
    /// catalog, nothing is written to local files, and every event names `replica_id`. Starts
    /// the writer task on the current tokio runtime; it ends when the last clone of the sink
    /// is dropped.
    pub fn with_catalog(catalog: Arc<dyn Catalog>, mode: AuditMode, replica_id: &str) -> Self {
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        let report = Report::default();
        tokio::spawn(write_shared(queue, catalog.clone(), report.clone()));
        Self {
            inner: Arc::new(Inner {
                mode,
                jsonl: None,
                catalog,
                jobs,
                replica_id: Some(replica_id.to_owned()),
                refusals: refusal::RefusalLimit::default(),
                report,
            }),
        }
    }

    /// Sets the rate (events per second, and burst) at which requests refused before
    /// authentication are written (`[limits] unauthenticated_audit_per_second` and
    /// `unauthenticated_audit_burst`); the default is the configuration's default.
    pub fn limit_unauthenticated(&self, per_second: u64, burst: u64) {
        self.inner.refusals.set(per_second, burst);
    }

    /// Whether the audit event of one more request refused before authentication may be
    /// written now. Such events carry only what an anonymous client sent, so they are written
    /// at a bounded rate and with [`truncate_unauthenticated`] fields; a `false` is a dropped
    /// event the caller counts. Authenticated requests never ask: all of theirs are written.
    pub fn admit_unauthenticated(&self) -> bool {
        self.inner.refusals.admit()
    }

    /// Reports each batch the writer writes (how long it took, how many events) to `writes`;
    /// the first call wins.
    pub fn report_writes(&self, writes: crate::metrics::AuditWrites) {
        let _ = self.inner.report.set(writes);
    }

    /// The configured mode.
    pub fn mode(&self) -> AuditMode {
        self.inner.mode
    }

    /// The JSON-lines file (on one machine; `None` in cluster mode).
    pub fn jsonl_path(&self) -> Option<PathBuf> {
        self.inner.jsonl.clone()
    }

    /// The catalog the rows are in.
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        self.inner.catalog.clone()
    }

    /// Writes the decision (stage `decision`): a line in the file, synced, and a row in the
    /// index. Returns when both are durable, or the first error.
    pub async fn record_decision(&self, event: &AuditEvent) -> Result<()> {
        self.write("decision", event).await
    }

    /// Writes the completion (stage `complete`): the whole event again in the file, and the
    /// status, latency, bytes and upstream audit id on the index row.
    pub async fn record_completion(&self, event: &AuditEvent) -> Result<()> {
        self.write("complete", event).await
    }

    async fn write(&self, stage: &'static str, event: &AuditEvent) -> Result<()> {
        let stopped = || Error::AuditEvent("the audit writer has stopped".into());
        let (done, durable) = tokio::sync::oneshot::channel();
        let mut event = event.clone();
        if event.replica_id.is_none() {
            event.replica_id.clone_from(&self.inner.replica_id);
        }
        self.inner
            .jobs
            .send(Job { stage, event, done })
            .map_err(|_| stopped())?;
        durable.await.map_err(|_| stopped())?
    }
}

/// The one-machine writer thread: waits for an event, takes every other one already waiting,
/// writes them together, acknowledges each with the batch's outcome.
fn write_local(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>,
    mut file: file::JsonLines,
    index: &SqliteCatalog,
    reported: &Report,
) {
    while let Some(first) = queue.blocking_recv() {
        let batch = take_batch(first, &mut queue);
        let started = std::time::Instant::now();
        let outcome = write_batch(&batch, &mut file, index);
        report(reported, batch.len(), started);
        acknowledge(batch, &outcome);
    }
}

/// The cluster-mode writer task: the same batches, each one transaction of the catalog.
async fn write_shared(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>,
    catalog: Arc<dyn Catalog>,
    reported: Report,
) {
    while let Some(first) = queue.recv().await {
        let batch = take_batch(first, &mut queue);
        let started = std::time::Instant::now();
        let changes = changes(&batch);
        let outcome = catalog
            .audit_batch(&changes)
            .await
            .map_err(Error::AuditIndex);
        report(&reported, batch.len(), started);
        acknowledge(batch, &outcome);
    }
}

/// `first` and every job already waiting behind it, up to [`MAX_BATCH`].
fn take_batch(first: Job, queue: &mut tokio::sync::mpsc::UnboundedReceiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

/// Answers each waiter of a batch with its outcome.
fn acknowledge(batch: Vec<Job>, outcome: &Result<()>) {
    for job in batch {
        let result = match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(replicate(e)),
        };
        // A waiter that went away (its request was dropped) needs no answer.
        let _ = job.done.send(result);
    }
}

/// The catalog's changes for a batch: a row for each decision, an update for each completion.
fn changes(batch: &[Job]) -> Vec<AuditChange> {
    batch
        .iter()
        .map(|j| {
            if j.stage == "decision" {
                AuditChange::Insert(Box::new(query::to_record(&j.event)))
            } else {
                AuditChange::Complete(query::to_completion(&j.event))
            }
        })
        .collect()
}

fn write_batch(batch: &[Job], file: &mut file::JsonLines, index: &SqliteCatalog) -> Result<()> {
    let lines: Vec<(&str, &AuditEvent)> = batch.iter().map(|j| (j.stage, &j.event)).collect();
    file.append_all(&lines)?;
    let changes = changes(batch);
    let writes: Vec<_> = changes.iter().map(AuditChange::as_write).collect();
    index
        .blocking(|index| index.audit_batch(&writes))
        .map_err(Error::AuditIndex)
}

/// The batch's error, once for each waiter: a file error keeps its path and kind, anything
/// else its message.
fn replicate(e: &Error) -> Error {
    match e {
        Error::AuditFile { path, source } => Error::AuditFile {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::AuditEvent(other.to_string()),
    }
}
