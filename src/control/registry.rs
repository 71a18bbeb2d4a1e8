//! The gateway's live streaming sessions: who runs what right now, a way to end each one, and a
//! way to follow its events as they are recorded.
//!
//! A session registers once its client connection is handed over and its relay can be
//! cancelled, and leaves the registry when the [`Registration`] guard drops, on every path out
//! of the session. Viewers never touch the recording: they ask the session for a subscription
//! to its recorder's live feed (the redacted events, as they are written), and a viewer that
//! falls behind misses events instead of slowing the session down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use custody_recorder::model::{Event, SessionKind, SessionMeta, SessionStatus};
use custody_recorder::writer::SessionHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::stream::relay::CancelHandle;

/// The manifest reason of a session an operator ended: `admin_kill`, or `admin_kill: <text>`
/// with the operator's reason.
pub const ADMIN_KILL: &str = "admin_kill";

/// The longest operator reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// What an operator sees of a live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    /// The session id: the recording's id and the request id of its audit event.
    pub id: String,
    /// Exec, attach or port-forward.
    pub kind: SessionKind,
    /// Who really asked (the initiator's username).
    pub initiator: String,
    /// Who the cluster was told it is.
    pub effective_user: String,
    /// The cluster name as configured in the gateway.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container; empty for port-forward.
    #[serde(default)]
    pub container: String,
    /// The command argv (exec only).
    #[serde(default)]
    pub command: Vec<String>,
    /// Whether the session has a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The client's address.
    pub client_addr: String,
    /// When the session started.
    pub started_at: DateTime<Utc>,
    /// The access grant (request id) that allowed the session, if it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// In cluster mode: the replica the session runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl LiveSession {
    /// The summary of a session from its recording's header.
    pub fn from_meta(meta: &SessionMeta) -> Self {
        Self {
            id: meta.session_id.clone(),
            kind: meta.kind,
            initiator: meta.initiator.username.clone(),
            effective_user: meta.effective.user.clone(),
            cluster: meta.cluster.clone(),
            namespace: meta.namespace.clone(),
            pod: meta.pod.clone(),
            container: meta.container.clone(),
            command: meta.command.clone(),
            tty: meta.tty,
            client_addr: meta.client_addr.clone(),
            started_at: DateTime::from_timestamp_micros(meta.started_at_us).unwrap_or_default(),
            approval_id: meta.approval_id.clone(),
            replica: None,
        }
    }
}

/// What an admin kill did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    /// The session ended.
    pub session: LiveSession,
    /// The reason its recording is sealed with (when the session was already ending for
    /// another reason, that reason: the first one wins).
    pub reason: String,
}

/// A viewer's request: the session answers with a subscription to its recorder's live feed.
type ViewerRequest = oneshot::Sender<broadcast::Receiver<Arc<Event>>>;

struct Entry {
    summary: LiveSession,
    cancel: CancelHandle,
    viewers: mpsc::Sender<ViewerRequest>,
    end: Arc<OnceLock<SessionStatus>>,
}

/// The live sessions of one gateway, by id.
#[derive(Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSessions")
            .field("live", &self.lock().len())
            .finish()
    }
}

/// Why a session cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// No live session has this id.
    #[error("no live session {0} on this gateway")]
    NotFound(String),
    /// The session ended before the viewer was attached.
    #[error("session {0} has ended")]
    Ended(String),
}

/// A viewer attached to a live session.
#[derive(Debug)]
pub struct Follow {
    /// The redacted events as they are written; closes when the recording is sealed, and
    /// reports [`broadcast::error::RecvError::Lagged`] when the viewer fell behind.
    pub events: broadcast::Receiver<Arc<Event>>,
    end: Arc<OnceLock<SessionStatus>>,
}

impl Follow {
    /// How the session ended, once it has (after `events` closed).
    pub fn end(&self) -> Option<SessionStatus> {
        self.end.get().cloned()
    }
}

impl LiveSessions {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session that can now be ended with `cancel`. It stays listed until the
    /// returned guard drops.
    pub fn register(self: &Arc<Self>, summary: LiveSession, cancel: CancelHandle) -> Registration {
        let (viewers, requests) = mpsc::channel(16);
        let end = Arc::new(OnceLock::new());
        let id = summary.id.clone();
        self.lock().insert(
            id.clone(),
            Entry {
                summary,
                cancel,
                viewers,
                end: end.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            id,
            requests,
            end,
        }
    }

    /// The live sessions, oldest first.
    pub fn list(&self) -> Vec<LiveSession> {
        let mut sessions: Vec<LiveSession> =
            self.lock().values().map(|e| e.summary.clone()).collect();
        sessions.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        sessions
    }

    /// One live session.
    pub fn get(&self, id: &str) -> Option<LiveSession> {
        self.lock().get(id).map(|e| e.summary.clone())
    }

    /// Ends a live session now (its relay stops at once) with [`admin_reason`] of `reason`;
    /// `None` when no live session has this id.
    pub fn kill(&self, id: &str, reason: Option<&str>) -> Option<Killed> {
        let sessions = self.lock();
        let entry = sessions.get(id)?;
        let wanted = admin_reason(reason);
        entry.cancel.cancel(wanted.clone());
        Some(Killed {
            session: entry.summary.clone(),
            reason: entry.cancel.reason().unwrap_or(wanted),
        })
    }

    /// Ends every live session that the access grant `grant` allowed, with `reason` as the
    /// manifest's reason; returns how many were ended.
    pub fn end_grant(&self, grant: &str, reason: &str) -> usize {
        let sessions = self.lock();
        let mut ended = 0;
        for entry in sessions.values() {
            if entry.summary.approval_id.as_deref() == Some(grant) {
                entry.cancel.cancel(reason.to_owned());
                ended += 1;
            }
        }
        ended
    }

    /// Ends live session `id` with `reason` as the manifest's reason (already formatted, as
    /// another replica's command carries it); whether there was such a session.
    pub fn end_session(&self, id: &str, reason: &str) -> bool {
        let sessions = self.lock();
        let Some(entry) = sessions.get(id) else {
            return false;
        };
        entry.cancel.cancel(reason.to_owned());
        true
    }

    /// Ends every live session with `reason` (this replica lost its lease, or its drain
    /// deadline passed); returns how many were ended.
    pub fn end_all(&self, reason: &str) -> usize {
        let sessions = self.lock();
        for entry in sessions.values() {
            entry.cancel.cancel(reason.to_owned());
        }
        sessions.len()
    }

    /// Attaches a viewer to a live session, from now on.
    pub async fn follow(&self, id: &str) -> Result<Follow, FollowError> {
        let (viewers, end) = {
            let sessions = self.lock();
            let entry = sessions
                .get(id)
                .ok_or_else(|| FollowError::NotFound(id.to_owned()))?;
            (entry.viewers.clone(), entry.end.clone())
        };
        let (reply, answer) = oneshot::channel();
        let ended = || FollowError::Ended(id.to_owned());
        viewers.send(reply).await.map_err(|_| ended())?;
        let events = answer.await.map_err(|_| ended())?;
        Ok(Follow { events, end })
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The manifest reason of an admin kill: [`ADMIN_KILL`], followed by `: ` and the operator's
/// text when there is one. The text is kept on one line (control characters become spaces)
/// and cut at [`MAX_REASON_CHARS`] characters, so the reason stays one parseable token
/// followed by free text.
pub fn admin_reason(text: Option<&str>) -> String {
    let text: String = text
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return ADMIN_KILL.to_owned();
    }
    let cut: String = text.chars().take(MAX_REASON_CHARS).collect();
    format!("{ADMIN_KILL}: {}", cut.trim_end())
}

/// A session's place in the registry; dropping it removes the session.
pub struct Registration {
    registry: Arc<LiveSessions>,
    id: String,
    requests: mpsc::Receiver<ViewerRequest>,
    end: Arc<OnceLock<SessionStatus>>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Answers viewers with subscriptions to `handle`'s live feed; never returns (select it
    /// next to the relay). Viewers who ask after that are told the session ended.
    pub async fn serve_viewers(&mut self, handle: &SessionHandle) -> std::convert::Infallible {
        while let Some(reply) = self.requests.recv().await {
            let _ = reply.send(handle.subscribe());
        }
        // Unreachable while the registry holds the sender; wait like the open channel would.
        std::future::pending().await
    }

    /// Notes how the session ended, for the viewers' last line.
    pub fn ended(&self, status: &SessionStatus) {
        let _ = self.end.set(status.clone());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, started_s: i64) -> LiveSession {
        LiveSession {
            replica: None,
            id: id.into(),
            kind: SessionKind::Exec,
            initiator: "alice".into(),
            effective_user: "alice".into(),
            cluster: "sim".into(),
            namespace: "default".into(),
            pod: "demo".into(),
            container: String::new(),
            command: vec!["sh".into()],
            tty: true,
            client_addr: "127.0.0.1:1".into(),
            started_at: DateTime::from_timestamp(started_s, 0).unwrap(),
            approval_id: None,
        }
    }

    #[tokio::test]
    async fn sessions_are_listed_while_registered_and_killed_once() {
        let live = LiveSessions::new();
        let cancel = CancelHandle::new();
        let later = live.register(summary("b", 20), CancelHandle::new());
        let first = live.register(summary("a", 10), cancel.clone());
        let ids: Vec<String> = live.list().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["a", "b"]);

        let killed = live.kill("a", Some("INC-1")).unwrap();
        assert_eq!(killed.reason, "admin_kill: INC-1");
        assert_eq!(cancel.reason().as_deref(), Some("admin_kill: INC-1"));
        // The first reason wins, and a second kill says so.
        assert_eq!(live.kill("a", None).unwrap().reason, "admin_kill: INC-1");
        assert!(live.kill("nope", None).is_none());
        assert_eq!(
            live.follow("nope").await.unwrap_err(),
            FollowError::NotFound("nope".into())
        );

        drop(first);
        assert!(live.get("a").is_none());
        // A viewer asking a session that no longer serves viewers is told it ended.
        let asking = {
            let live = live.clone();
            tokio::spawn(async move { live.follow("b").await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(later);
        assert_eq!(
            asking.await.unwrap().unwrap_err(),
            FollowError::Ended("b".into())
        );
        assert!(live.list().is_empty());
    }

    #[test]
    fn admin_reasons_are_one_token_then_one_line_of_text() {
        assert_eq!(admin_reason(None), "admin_kill");
        assert_eq!(admin_reason(Some("  ")), "admin_kill");
        assert_eq!(
            admin_reason(Some("incident 42\nrm -rf")),
            "admin_kill: incident 42 rm -rf"
        );
        let long = "x".repeat(500);
        assert_eq!(
            admin_reason(Some(&long)).len(),
            ADMIN_KILL.len() + 2 + MAX_REASON_CHARS
        );
    }
}
