//! The audit trail: one [`AuditEvent`] per request, who really asked (the initiator), who the
//! cluster was told it is (the effective identity), what was asked and what custody decided.
//!
//! The [`AuditSink`] writes each event to a JSON-lines file (`fdatasync`'d) and to the `SQLite`
//! index. In [`AuditMode::Strict`] the decision is durable in both before the request is
//! forwarded; if it cannot be written the request is refused with 503. A completion record
//! (status, latency, bytes, upstream `Audit-Id`) follows when the response ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use custody_recorder::index::Index;
use serde::{Deserialize, Serialize};

use crate::classify::RequestInfo;
use crate::error::{Error, Result};
use crate::principal::{EffectiveIdentity, Principal};

mod file;
mod query;

pub use query::{AuditFilter, event, follow, query, record_to_json};

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
        }
    }
}

/// Where audit events go: the JSON-lines file and the index. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuditMode,
    file: Mutex<file::JsonLines>,
    index: Mutex<Index>,
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

    /// Opens the trail with explicit file and index paths.
    pub fn with_paths(jsonl: &Path, index: &Path, mode: AuditMode) -> Result<Self> {
        let file = file::JsonLines::open(jsonl)?;
        if let Some(dir) = index.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::AuditFile {
                path: dir.to_owned(),
                source,
            })?;
        }
        let index = Index::open(index).map_err(Error::AuditIndex)?;
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                file: Mutex::new(file),
                index: Mutex::new(index),
            }),
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> AuditMode {
        self.inner.mode
    }

    /// The JSON-lines file.
    pub fn jsonl_path(&self) -> PathBuf {
        lock(&self.inner.file).path().to_owned()
    }

    /// Writes the decision (stage `decision`): a line in the file, synced, and a row in the
    /// index. Returns when both are durable, or the first error.
    pub async fn record_decision(&self, event: &AuditEvent) -> Result<()> {
        let inner = self.inner.clone();
        let event = event.clone();
        run_blocking(move || {
            lock(&inner.file).append("decision", &event)?;
            let record = query::to_record(&event);
            lock(&inner.index)
                .insert_audit(&record)
                .map_err(Error::AuditIndex)?;
            Ok(())
        })
        .await
    }

    /// Writes the completion (stage `complete`): the whole event again in the file, and the
    /// status, latency, bytes and upstream audit id on the index row.
    pub async fn record_completion(&self, event: &AuditEvent) -> Result<()> {
        let inner = self.inner.clone();
        let event = event.clone();
        run_blocking(move || {
            lock(&inner.file).append("complete", &event)?;
            lock(&inner.index)
                .complete_audit(&query::to_completion(&event))
                .map_err(Error::AuditIndex)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` with the index (for queries in-process).
    pub async fn with_index<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        run_blocking(move || f(&lock(&inner.index))).await
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::AuditEvent(format!("the audit writer task failed: {e}")))?
}

/// Locks a mutex, recovering the data if a writer panicked: the file and index stay usable,
/// and every write is a complete line or transaction on its own.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
