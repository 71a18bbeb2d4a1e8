//! Sessions read directly from a data directory: the index for lists and search, the recording
//! files verified against the gateway's key, and the audit trail in the same index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use custody::audit::{AuditEvent, AuditFilter};
use custody_recorder::index::{Index, SessionRow};
use custody_recorder::integrity::load_or_create_signing_key;
use custody_recorder::keyframe::Seekpoint;
use custody_recorder::recovery::RECORDINGS_DIR;
use custody_web::model::{SessionDetail, SessionFilter, SessionSummary};
use ed25519_dalek::VerifyingKey;

use super::Listed;
use crate::cli::serve::SIGNING_KEY_FILE;

/// How many audit events of one kubectl invocation `show` includes at most.
const MAX_AUDIT_EVENTS: usize = 1000;
/// How many sessions a search ranks for snippets at most.
const MAX_SEARCH_HITS: usize = 10_000;

/// A data directory's index and recordings.
pub struct Local {
    data_dir: PathBuf,
    index: Index,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Opens `<data_dir>/index.sqlite`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("index.sqlite");
        if !path.exists() {
            return Err(super::no_index(data_dir));
        }
        let index = Index::open(&path)
            .with_context(|| format!("cannot open the index {}", path.display()))?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            index,
        })
    }

    /// The sessions matching `filter`, newest first, with their best match for `grep`.
    pub fn list(&self, filter: &SessionFilter) -> anyhow::Result<Vec<Listed>> {
        let rows = self.index.sessions(&filter.to_query()?)?;
        let mut snippets: HashMap<String, String> = HashMap::new();
        if let Some(text) = &filter.grep
            && !rows.is_empty()
        {
            for hit in self.index.search(text, Some(MAX_SEARCH_HITS))? {
                snippets.insert(hit.session_id, hit.snippet);
            }
        }
        Ok(rows
            .iter()
            .map(|row| Listed {
                summary: SessionSummary::from(row),
                snippet: snippets.remove(&row.meta.session_id),
            })
            .collect())
    }

    /// One session's index row and recording file.
    pub fn session(&self, id: &str) -> anyhow::Result<(SessionRow, PathBuf)> {
        let row = self
            .index
            .session(id)?
            .ok_or_else(|| anyhow::anyhow!("no session {id} in {}", self.data_dir.display()))?;
        let path = self.file_of(&row);
        Ok((row, path))
    }

    /// The recording file of a row: `<data_dir>/recordings/<name>`, which also holds for a copy
    /// of the data directory, else the path the index names.
    fn file_of(&self, row: &SessionRow) -> PathBuf {
        if let Some(name) = row.file_path.file_name() {
            let here = self.data_dir.join(RECORDINGS_DIR).join(name);
            if here.exists() {
                return here;
            }
        }
        row.file_path.clone()
    }

    /// A session's seekpoints (the keyframes the index holds), for the player.
    pub fn seekpoints(&self, id: &str) -> anyhow::Result<Vec<Seekpoint>> {
        Ok(self.index.seekpoints(id)?)
    }

    /// The key that verifies this gateway's recordings.
    pub fn verifying_key(&self) -> anyhow::Result<VerifyingKey> {
        let path = self.data_dir.join(SIGNING_KEY_FILE);
        if !path.exists() {
            anyhow::bail!(
                "no signing key at {} to verify recordings with",
                path.display()
            );
        }
        let key = load_or_create_signing_key(&path)
            .with_context(|| format!("signing key {}", path.display()))?;
        Ok(key.verifying_key())
    }

    /// Everything about one session: its summary, header, integrity and audit events.
    pub fn detail(&self, id: &str) -> anyhow::Result<SessionDetail> {
        let (row, path) = self.session(id)?;
        let key = self.verifying_key()?;
        Ok(SessionDetail {
            session: SessionSummary::from(&row),
            meta: row.meta.clone(),
            integrity: custody_web::api::integrity(&path, &key),
            audit: self.audit_events(id)?,
        })
    }

    /// The audit events of the kubectl invocation that started the session (same
    /// `Kubectl-Session`) and of the session's own request, oldest first.
    fn audit_events(&self, id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let own = custody::audit::event(&self.index, id)?;
        let mut events: Vec<AuditEvent> = match own.as_ref().and_then(|e| e.kubectl_session.clone())
        {
            Some(kubectl_session) => custody::audit::query(
                &self.index,
                &AuditFilter {
                    kubectl_session: Some(kubectl_session),
                    limit: Some(MAX_AUDIT_EVENTS),
                    ..AuditFilter::default()
                },
            )?,
            None => Vec::new(),
        };
        // `Kubectl-Session` is chosen by the client: only the same person's requests (issuer,
        // subject, username) to the same cluster belong to the session's kubectl invocation.
        if let Some(own) = &own {
            let person = |e: &AuditEvent| {
                e.initiator
                    .as_ref()
                    .map(|p| (p.issuer.clone(), p.subject.clone(), p.username.clone()))
            };
            let mine = person(own);
            events.retain(|e| mine.is_some() && person(e) == mine && e.cluster == own.cluster);
        }
        if let Some(own) = own
            && !events.iter().any(|e| e.id == own.id)
        {
            events.push(own);
        }
        events.sort_by_key(|e| e.time);
        events
            .iter()
            .map(|e| serde_json::to_value(e).context("audit event"))
            .collect()
    }
}
