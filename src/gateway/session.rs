//! Streaming sessions (exec, attach, port-forward): the part of the pipeline that runs after an
//! upgrade request was authenticated, authorized and audited.
//!
//! Strict recording: the recording is opened (file created and synced, index row written)
//! before the API server is contacted; when that fails the request is refused with 503 and
//! nothing is sent upstream. After the API server's 101, a session whose negotiated protocol
//! cannot be decoded is refused (502), never relayed unrecorded. While relaying, every chunk
//! is decoded and its events are queued to the recorder before the chunk is forwarded; the
//! recorder's backpressure slows the relay down, and a recording failure ends the session at
//! once (the relay is cancelled as soon as the writer reports it).
//!
//! The session's end is written into its manifest: `complete`, or terminated with the reason
//! (`client_closed`, `upstream_closed` when the API server's connection dropped before the
//! process's exit status went through, `idle_timeout`, `max_duration`, `admin_kill` or
//! `admin_kill: <text>` (an operator, through the control socket), `recording_failure`,
//! `decode_failure`, `grant_revoked: <text>` and `grant_expired` (the access grant that allowed
//! it ended), `credential_expired` (the token it was started with expired), `port_not_allowed`
//! (a port-forward connection to a port the policy does not allow, which never reached the pod)).
//! When custody ends the session itself (a kill, a recording failure, the idle timeout, the
//! maximum duration, the end of its grant or credential), an exec or attach client is told why first, on its error channel
//! ([`Farewell`]), where its stream allows.
//!
//! A handshake the API server refused is still a recorded attempt: its recording is sealed as
//! terminated with reason `upstream_refused` and indexed, so every authorized upgrade leaves a
//! recording next to its audit event.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use custody_recorder::catalog::Catalog;
use custody_recorder::index::IndexedSession;
use custody_recorder::model::{EventKind, SessionKind, SessionMeta, SessionStatus};
use custody_recorder::reader::read_recording;
use custody_recorder::recovery::RECORDINGS_DIR;
use custody_recorder::writer::{EventSender, Sealed, SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Exchange;
use super::status::status_response;
use crate::audit::AuditSink;
use crate::control::registry::{LiveSession, LiveSessions};
use crate::metrics::Metrics;
use crate::principal::{EffectiveIdentity, Principal};
use crate::proxy::Body;
use crate::stream::decode::{DecoderConfig, Farewell, SessionDecoder, Transport};
use crate::stream::relay::{
    CancelHandle, Direction, Observer, ObserverError, RelayConfig, RelayEnd, Side, relay,
};
use crate::stream::upgrade::{
    HandshakeOutcome, StreamSubresource, UpgradeProtocol, UpgradeRequest, UpstreamHandshake,
};
use crate::upstream::Upstream;

/// The manifest reason of a port-forward ended because it opened a connection to a port the
/// policy does not allow.
pub const PORT_NOT_ALLOWED: &str = "port_not_allowed";

/// The manifest reason of a session ended because the credential it was started with expired.
pub const CREDENTIAL_EXPIRED: &str = "credential_expired";

/// How streaming sessions are recorded. Without one, the gateway refuses upgrades (501).
#[derive(Clone)]
pub struct RecordingConfig {
    /// The data directory: recordings go to `<data_dir>/recordings`.
    pub data_dir: PathBuf,
    /// Where the recordings' index rows go (`<data_dir>/index.sqlite` on one machine).
    pub catalog: Arc<dyn Catalog>,
    /// The key that signs every recording (loaded once at startup).
    pub key: Arc<SigningKey>,
    /// How recordings are written.
    pub writer: WriterConfig,
    /// Relay limits: buffer size, idle timeout, maximum duration.
    pub relay: RelayConfig,
    /// This gateway instance, written into every recording.
    pub gateway_id: String,
    /// In cluster mode, this replica, written into every recording.
    pub replica_id: Option<String>,
    /// In cluster mode, the object store recordings go to: the file is written under
    /// `spool_dir`, uploaded as it grows, and stored as one verified object at the end.
    pub objects: Option<ObjectStorage>,
}

/// Where a cluster replica's recordings go.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    /// The bucket.
    pub objects: custody_cluster::objects::Objects,
    /// Where recordings are written while their sessions run.
    pub spool_dir: PathBuf,
    /// How often new bytes are uploaded.
    pub spool: custody_cluster::spool::SpoolConfig,
}

/// A session's recording: the writer, and in cluster mode the spool that uploads it.
struct Recording {
    handle: SessionHandle,
    spool: Option<custody_cluster::spool::Spool>,
}

impl std::fmt::Debug for RecordingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingConfig")
            .field("data_dir", &self.data_dir)
            .field("catalog", &self.catalog.describe())
            .field("relay", &self.relay)
            .field("gateway_id", &self.gateway_id)
            .finish_non_exhaustive()
    }
}

/// The recorder side of the gateway: the configuration and the live sessions.
pub(super) struct Recordings {
    config: RecordingConfig,
    /// The live sessions, for the control endpoint.
    live: Arc<LiveSessions>,
}

/// Termination reasons written into manifests.
const RECORDING_FAILURE: &str = "recording_failure";
const DECODE_FAILURE: &str = "decode_failure";
const UPSTREAM_REFUSED: &str = "upstream_refused";
const UPSTREAM_CLOSED: &str = "upstream_closed";
const CLIENT_CLOSED: &str = "client_closed";
const UNDECODABLE: &str = "undecodable_protocol";

/// Everything the pipeline decided before the upgrade: the request and who makes it.
pub(super) struct StreamRequest<'a> {
    pub method: Method,
    pub path_and_query: String,
    pub query: Option<&'a str>,
    pub headers: HeaderMap,
    pub upgrade: UpgradeRequest,
    pub on_upgrade: OnUpgrade,
    pub principal: &'a Principal,
    pub effective: &'a EffectiveIdentity,
    pub upstream: &'a Upstream,
    /// The access grant that allowed the session: its id and when it ends (Unix seconds).
    pub grant: Option<(String, i64)>,
    /// The recorder's redaction for this person's role (`None`: the gateway's default).
    pub redactor: Option<custody_recorder::redaction::Redactor>,
    /// Port-forward: the pod ports the policy allows (`None`: any). kubectl names the port of
    /// each connection in its stream headers, so this is enforced per connection.
    pub ports: Option<Vec<crate::policy::PortRange>>,
    /// The person's role records best-effort: a recording that fails during the session no
    /// longer ends it (one that cannot start still refuses the session).
    pub best_effort: bool,
}

impl Recordings {
    pub(super) fn new(config: RecordingConfig) -> Self {
        Self {
            config,
            live: LiveSessions::new(),
        }
    }

    /// The live sessions (the control endpoint lists, kills and follows them).
    pub(super) fn live(&self) -> &Arc<LiveSessions> {
        &self.live
    }

    fn dir(&self) -> PathBuf {
        match &self.config.objects {
            Some(storage) => storage.spool_dir.clone(),
            None => self.config.data_dir.join(RECORDINGS_DIR),
        }
    }

    /// Opens the recording of a session: the file (and in cluster mode its spool), then its
    /// index row.
    async fn open(&self, meta: SessionMeta, writer: WriterConfig) -> Result<Recording, String> {
        let dir = self.dir();
        let create = dir.clone();
        tokio::task::spawn_blocking(move || custody_recorder::permissions::create_dir(&create))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let handle = SessionHandle::open(&dir, meta.clone(), self.config.key.clone(), writer)
            .await
            .map_err(|e| e.to_string())?;
        let (path, spool) = match &self.config.objects {
            Some(storage) => {
                let spool = custody_cluster::spool::Spool::start(
                    storage.objects.clone(),
                    meta.session_id.clone(),
                    handle.path().to_owned(),
                    storage.spool.clone(),
                );
                match spool {
                    Ok(spool) => (
                        custody_cluster::objects::Objects::location(&meta.session_id),
                        Some(spool),
                    ),
                    Err(e) => {
                        let _ = handle.finish(terminated(RECORDING_FAILURE)).await;
                        return Err(format!("the recording cannot be uploaded: {e}"));
                    }
                }
            }
            None => (handle.path().to_owned(), None),
        };
        if let Err(e) = self.config.catalog.record_open(&meta, &path).await {
            let _ = handle.finish(terminated(RECORDING_FAILURE)).await;
            return Err(format!("the recording index cannot be written: {e}"));
        }
        Ok(Recording { handle, spool })
    }

    /// Runs an upgrade request: recording, handshake, 101, relay in the background.
    pub(super) async fn stream(
        &self,
        mut ex: Exchange,
        request: StreamRequest<'_>,
        audit: AuditSink,
        metrics: Arc<Metrics>,
    ) -> Response<Body> {
        let id = ex.event.id.to_string();
        let kind = match request.upgrade.subresource {
            StreamSubresource::Exec => SessionKind::Exec,
            StreamSubresource::Attach => SessionKind::Attach,
            StreamSubresource::PortForward => SessionKind::PortForward,
        };
        // The channel pairs a legacy WebSocket port-forward will carry: one per listed port, as
        // the kubelet opens them. Read before any upstream contact; a query the API server would
        // refuse, or custody cannot read with certainty, never reaches it.
        let ports = if kind == SessionKind::PortForward {
            match custody_protocol::portforward::query_ports(request.query.unwrap_or_default()) {
                Ok(ports) => ports,
                Err(e) => {
                    let msg = format!("custody: the port-forward cannot be read: {e}");
                    return refuse(ex, StatusCode::BAD_REQUEST, &msg, metrics, audit);
                }
            }
        } else {
            Vec::new()
        };
        let meta = self.meta(&ex, &request, kind);
        let summary = LiveSession::from_meta(&meta);
        let mut writer = self.config.writer.clone();
        if let Some(redactor) = request.redactor.clone() {
            writer.redactor = redactor;
        }
        let handle = match self.open(meta, writer).await {
            Ok(recording) => recording,
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "recording unavailable");
                let msg =
                    format!("custody: recording unavailable: {e}; the session was not started");
                return refuse(ex, StatusCode::SERVICE_UNAVAILABLE, &msg, metrics, audit);
            }
        };
        let handshake = UpstreamHandshake::new(request.upstream, &request.upgrade);
        let answer = handshake.run(&request.method, &request.path_and_query, &request.headers);
        let outcome = metrics.time_upstream(&ex.event.cluster, answer).await;
        let up = match outcome {
            Ok(HandshakeOutcome::Upgraded(up)) => up,
            Ok(HandshakeOutcome::Refused(refused)) => {
                let response = refused.client_response(&id);
                self.seal(handle, terminated(UPSTREAM_REFUSED)).await;
                ex.complete(response.status(), metrics, audit);
                return response;
            }
            Err(e) => {
                metrics.upstream_failure();
                tracing::warn!(request_id = %id, error = %super::error_chain(&e), "upgrade handshake failed");
                self.seal(handle, terminated(UPSTREAM_REFUSED)).await;
                let msg = "custody: the gateway could not reach the cluster for the upgrade";
                let mut response = status_response(StatusCode::BAD_GATEWAY, msg, &id);
                close(&mut response);
                ex.complete(StatusCode::BAD_GATEWAY, metrics, audit);
                return response;
            }
        };
        let transport = match up.protocol {
            UpgradeProtocol::WebSocket => Transport::WebSocket,
            UpgradeProtocol::Spdy => Transport::Spdy,
        };
        let decoder_config = DecoderConfig {
            ports,
            ..DecoderConfig::default()
        };
        let decoder = match SessionDecoder::new(kind, transport, &up.subprotocol, &decoder_config) {
            Ok(decoder) => decoder,
            Err(e) => {
                // The upstream connection is dropped here: nothing is relayed undecoded.
                drop(up);
                self.seal(handle, terminated(UNDECODABLE)).await;
                let msg =
                    format!("custody: {e}; the session cannot be recorded, so it was refused");
                let mut response = status_response(StatusCode::BAD_GATEWAY, &msg, &id);
                close(&mut response);
                ex.complete(StatusCode::BAD_GATEWAY, metrics, audit);
                return response;
            }
        };
        let response = up.client_response();
        let deadlines = deadlines(&request);
        let session = Session {
            recordings: self.clone_parts(),
            relay_config: self.config.relay,
            handle,
            decoder,
            on_upgrade: request.on_upgrade,
            id,
            summary,
            ports: request.ports.clone(),
            best_effort: request.best_effort,
            deadlines,
        };
        tokio::spawn(async move {
            // A counter, not a sender: a sender held here would keep the recording's queue
            // open, and the writer could not finish sealing while the session waits for it.
            let _losses = metrics.recording_losses(session.handle.handle.lost_counter());
            let _live = metrics.session_started(kind);
            let (bytes_in, bytes_out) = session.run(*up).await;
            ex.event.bytes_in = Some(bytes_in);
            ex.event.bytes_out = Some(bytes_out);
            ex.complete(StatusCode::SWITCHING_PROTOCOLS, metrics, audit);
        });
        response
    }

    fn clone_parts(&self) -> Self {
        Self {
            config: self.config.clone(),
            live: self.live.clone(),
        }
    }

    fn meta(&self, ex: &Exchange, request: &StreamRequest<'_>, kind: SessionKind) -> SessionMeta {
        let info = &ex.event.request;
        let exec = kind == SessionKind::Exec;
        // Read as the API server reads `PodExecOptions`/`PodAttachOptions` (`tty=yes` is a
        // terminal, the first `container` wins). `classify` already refused a query these
        // cannot be read from, so the default is never used for a forwarded session.
        let options = crate::classify::StreamOptions::read(request.query).unwrap_or_default();
        let tty = options.tty;
        let started_at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        SessionMeta {
            session_id: ex.event.id.to_string(),
            kind,
            initiator: request.principal.initiator(),
            effective: request.effective.clone(),
            cluster: ex.event.cluster.clone(),
            namespace: info.namespace.clone(),
            pod: info.name.clone(),
            container: if kind == SessionKind::PortForward {
                String::new()
            } else {
                options.container
            },
            command: if exec { options.command } else { Vec::new() },
            tty,
            client_addr: ex.event.client_addr.clone(),
            user_agent: ex.event.user_agent.clone(),
            approval_id: request.grant.as_ref().map(|(id, _)| id.clone()),
            gateway_id: self.config.gateway_id.clone(),
            replica_id: self.config.replica_id.clone(),
            started_at_us,
            term_size: None,
        }
    }

    /// Seals a recording with `status` and indexes the sealed file; failures are logged (the
    /// startup recovery indexes what is left).
    ///
    /// The writer derives the session's index rows while writing, so a long session (a
    /// `kubectl cp` of gigabytes) is not read back into memory at its end; the file is read
    /// only when the writer could not derive them (after a recording failure).
    async fn seal(&self, recording: Recording, status: SessionStatus) {
        let Recording { handle, spool } = recording;
        let path = handle.path().to_owned();
        let sealed = handle.seal(status).await;
        if let Err(e) = &sealed {
            tracing::error!(path = %path.display(), error = %e, "recording could not be sealed cleanly");
        }
        if let Some(spool) = spool {
            self.store(spool, sealed.ok().and_then(|s| s.index), path)
                .await;
            return;
        }
        match sealed {
            Ok(Sealed {
                index: Some(rows), ..
            }) => {
                if let Err(e) = self.config.catalog.upsert(rows).await {
                    // Startup recovery indexes it from the file.
                    tracing::error!(path = %path.display(), error = %e, "recording could not be indexed");
                }
            }
            _ => self.index_file(path).await,
        }
    }

    /// Cluster mode: stores the sealed file as its object (verified), then indexes it under
    /// the object's location. A store that is down is retried in the background; until it
    /// succeeds the spool file and the uploaded segments stay, and the session's live row keeps
    /// it this replica's, so nothing is deleted or taken over meanwhile.
    async fn store(
        &self,
        spool: custody_cluster::spool::Spool,
        rows: Option<IndexedSession>,
        path: PathBuf,
    ) {
        let Some(storage) = self.config.objects.clone() else {
            return;
        };
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cast.zst"))
            .unwrap_or_default()
            .to_owned();
        let location = custody_cluster::objects::Objects::location(&id);
        let rows = match rows {
            Some(rows) => Some(rows),
            None => read_rows(&path, &self.config.key.verifying_key())
                .await
                .ok(),
        };
        if let Err(e) = spool.finish().await {
            tracing::error!(session = %id, error = %e, "the recording could not be stored; retrying in the background");
            let catalog = self.config.catalog.clone();
            let key = self.config.key.verifying_key();
            tokio::spawn(async move {
                let mut wait = std::time::Duration::from_secs(1);
                loop {
                    tokio::time::sleep(wait).await;
                    let rows = match &rows {
                        Some(rows) => Some(rows.clone()),
                        None => read_rows(&path, &key).await.ok(),
                    };
                    match custody_cluster::spool::store_recording(&storage.objects, &id, &path)
                        .await
                    {
                        Ok(_) => {
                            let _ = tokio::fs::remove_file(&path).await;
                            index_stored(&catalog, rows, &location).await;
                            tracing::info!(session = %id, "the recording was stored after all");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(session = %id, error = %e, "the recording could still not be stored");
                            wait = (wait * 2).min(std::time::Duration::from_secs(60));
                        }
                    }
                }
            });
            return;
        }
        index_stored(&self.config.catalog, rows, &location).await;
    }

    async fn index_file(&self, path: PathBuf) {
        let key = self.config.key.verifying_key();
        let shown = path.display().to_string();
        let read = tokio::task::spawn_blocking(move || {
            let recording = read_recording(&path, Some(&key))?;
            let size = std::fs::metadata(&path)
                .map_err(|source| custody_recorder::Error::RecordingIo {
                    path: path.clone(),
                    source,
                })?
                .len();
            IndexedSession::from_recording(&recording, &path, size)
        })
        .await;
        let result = match read {
            Ok(Ok(rows)) => self.config.catalog.upsert(rows).await,
            Ok(Err(e)) => Err(e),
            Err(e) => Err(custody_recorder::Error::Catalog {
                op: "index a recording",
                message: format!("the reading task failed: {e}"),
            }),
        };
        if let Err(e) = result {
            tracing::error!(path = %shown, error = %e, "recording could not be indexed");
        }
    }
}

/// Reads a sealed file's index rows (when the writer could not derive them).
async fn read_rows(
    path: &std::path::Path,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<IndexedSession, custody_recorder::Error> {
    let path = path.to_owned();
    let key = *key;
    tokio::task::spawn_blocking(move || {
        let recording = read_recording(&path, Some(&key))?;
        let size = std::fs::metadata(&path)
            .map_err(|source| custody_recorder::Error::RecordingIo {
                path: path.clone(),
                source,
            })?
            .len();
        IndexedSession::from_recording(&recording, &path, size)
    })
    .await
    .map_err(|e| custody_recorder::Error::Catalog {
        op: "read a recording",
        message: e.to_string(),
    })?
}

/// Indexes a stored recording under its object's location.
async fn index_stored(
    catalog: &Arc<dyn Catalog>,
    rows: Option<IndexedSession>,
    location: &std::path::Path,
) {
    let Some(mut rows) = rows else {
        tracing::error!(location = %location.display(), "a stored recording has no index rows");
        return;
    };
    rows.row.file_path = location.to_owned();
    let Err(e) = catalog.upsert(rows.clone()).await else {
        return;
    };
    // The database is down or unreachable: the recording is stored, and its session stays
    // this replica's (its live row) until the index has it, so nobody else seals it again.
    // Retried until it succeeds; if this replica dies first, the replica that takes its
    // sessions over finds the stored object and indexes it.
    tracing::error!(location = %location.display(), error = %e, "a stored recording could not be indexed; retrying");
    let catalog = catalog.clone();
    let location = location.to_owned();
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            match catalog.upsert(rows.clone()).await {
                Ok(()) => {
                    tracing::info!(location = %location.display(), "the stored recording was indexed after all");
                    return;
                }
                Err(e) => {
                    tracing::warn!(location = %location.display(), error = %e, "a stored recording could still not be indexed");
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    });
}

/// A session after the 101: the relay and its recording.
struct Session {
    recordings: Recordings,
    relay_config: RelayConfig,
    handle: Recording,
    decoder: SessionDecoder,
    on_upgrade: OnUpgrade,
    id: String,
    /// What the control endpoint shows of the session while it runs.
    summary: LiveSession,
    /// When the session must end (Unix seconds) and why: the end of the access grant that
    /// allowed it, and the expiry of the credential it was started with. Access that is over
    /// does not live on in a stream opened while it lasted.
    deadlines: Vec<(i64, &'static str)>,
    /// Port-forward: the ports allowed (`None`: any).
    ports: Option<Vec<crate::policy::PortRange>>,
    /// Keep relaying when the recording fails.
    best_effort: bool,
}

impl Session {
    /// Relays until the session ends, seals and indexes the recording; returns the bytes
    /// forwarded (client to upstream, upstream to client).
    #[allow(
        clippy::too_many_lines,
        reason = "a session's life reads top to bottom: hand-over, watchdog, relay, ending, sealing"
    )]
    async fn run(self, up: crate::stream::upgrade::Upgraded) -> (u64, u64) {
        let Session {
            recordings,
            relay_config,
            handle,
            decoder,
            on_upgrade,
            id,
            summary,
            deadlines,
            ports,
            best_effort,
        } = self;
        let client = match on_upgrade.await {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "the client connection was not handed over");
                recordings.seal(handle, terminated(CLIENT_CLOSED)).await;
                return (0, 0);
            }
        };
        let cancel = CancelHandle::new();
        // Listed (and killable) from here on; the guard unlists it on every way out.
        let mut registration = recordings.live.register(summary, cancel.clone());
        let sender = handle.handle.sender();
        let watchdog = {
            let cancel = cancel.clone();
            let sender = sender.clone();
            let id = id.clone();
            let mut stored = handle
                .spool
                .as_ref()
                .map(custody_cluster::spool::Spool::failure_watch);
            tokio::spawn(async move {
                // In cluster mode a recording that cannot reach the object store fails the
                // same way as one that cannot be written.
                let store_failed = async {
                    let Some(watch) = stored.as_mut() else {
                        return std::future::pending().await;
                    };
                    let reason = watch
                        .wait_for(Option::is_some)
                        .await
                        .map(|reason| reason.clone().unwrap_or_default());
                    match reason {
                        Ok(reason) => format!("object store: {reason}"),
                        // The spool ended without failing: nothing more to watch.
                        Err(_) => std::future::pending().await,
                    }
                };
                let failure = tokio::select! {
                    failure = sender.fatal() => failure,
                    failure = store_failed => failure,
                };
                if best_effort {
                    tracing::error!(request_id = %id, %failure, "recording failed; the session goes on unrecorded (best-effort recording)");
                    return;
                }
                tracing::error!(request_id = %id, %failure, "recording failed; ending the session");
                cancel.cancel(RECORDING_FAILURE);
            })
        };
        let expiry = end_at(&deadlines, &cancel);
        let start = std::time::Instant::now();
        let truncated = Arc::new(AtomicBool::new(false));
        let upstream = TruncationWatch {
            inner: up.stream,
            truncated: truncated.clone(),
        };
        let mut observer = Recorder {
            decoder,
            sender,
            start,
            failure: None,
            exited: false,
            limits: relay_config,
            record_error: None,
            ports,
            best_effort,
            unrecorded: false,
            store_failure: handle
                .spool
                .as_ref()
                .map(custody_cluster::spool::Spool::failure_watch),
        };
        let report = tokio::select! {
            report = relay(
                TokioIo::new(client),
                upstream,
                up.leftover,
                &mut observer,
                relay_config,
                &cancel,
            ) => report,
            never = registration.serve_viewers(&handle.handle) => match never {},
        };
        watchdog.abort();
        if let Some(expiry) = expiry {
            expiry.abort();
        }
        let status = match &report.end {
            // An API server whose connection dropped (no TLS close_notify) before the process's
            // exit status went through did not end the session: it went away.
            RelayEnd::UpstreamClosed if truncated.load(Ordering::Relaxed) && !observer.exited => {
                terminated(UPSTREAM_CLOSED)
            }
            RelayEnd::ClientClosed | RelayEnd::UpstreamClosed => SessionStatus::Complete,
            RelayEnd::Cancelled(reason) => terminated(reason),
            RelayEnd::IdleTimeout => terminated("idle_timeout"),
            RelayEnd::MaxDuration => terminated("max_duration"),
            RelayEnd::Observer(_, _) => terminated(observer.failure.unwrap_or(RECORDING_FAILURE)),
            // Once the process's exit status went through, a connection torn down instead of
            // closed cleanly (a reset, a missing close_notify) ends a complete session.
            RelayEnd::Io(_, _) if observer.exited => SessionStatus::Complete,
            RelayEnd::Io(Side::Upstream, _) => terminated(UPSTREAM_CLOSED),
            RelayEnd::Io(Side::Client, _) => terminated(CLIENT_CLOSED),
        };
        tracing::info!(request_id = %id, end = ?report.end, "session ended");
        if observer.failure.is_none() {
            let time_us = micros(start.elapsed());
            for event in observer.decoder.finish(time_us) {
                if observer.sender.record(event).await.is_err() {
                    break;
                }
            }
        }
        registration.ended(&status);
        recordings.seal(handle, status).await;
        (report.client_to_upstream, report.upstream_to_client)
    }
}

/// The API server's connection, noting whether it ended without a TLS `close_notify` (the
/// relay reads that as an end of stream; a server that died mid-session shows that way).
struct TruncationWatch<S> {
    inner: S,
    truncated: Arc<AtomicBool>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for TruncationWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &result
            && e.kind() == std::io::ErrorKind::UnexpectedEof
        {
            self.truncated.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for TruncationWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Decodes each chunk and queues its events to the recorder before the relay forwards it.
struct Recorder {
    decoder: SessionDecoder,
    sender: EventSender,
    start: std::time::Instant,
    failure: Option<&'static str>,
    /// Whether the process's exit status was decoded.
    exited: bool,
    /// The relay's limits, quoted in farewells.
    limits: RelayConfig,
    /// Why queueing an event failed, quoted in the farewell.
    record_error: Option<String>,
    /// Port-forward: the ports allowed (`None`: any).
    ports: Option<Vec<crate::policy::PortRange>>,
    /// Keep relaying when the recording fails.
    best_effort: bool,
    /// The recording failed and the session goes on without it (best-effort only).
    unrecorded: bool,
    /// In cluster mode, why uploading the recording failed, once it has.
    store_failure: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

impl Recorder {
    /// Why the recording failed: the writer's words, else the object store's.
    fn failure_detail(&self) -> Option<String> {
        self.sender.failure().or_else(|| {
            self.store_failure
                .as_ref()
                .and_then(|w| w.borrow().clone())
                // `cause` keeps the last part after ": ", so the store is named after it.
                .map(|reason| format!("{} (the object store)", cause(&reason)))
        })
    }
}

impl Observer for Recorder {
    fn on_chunk(
        &mut self,
        direction: Direction,
        bytes: &[u8],
        at: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send {
        let time_us = micros(at.saturating_duration_since(self.start));
        async move {
            let events = self.decoder.feed(direction, bytes, time_us).map_err(|e| {
                self.failure = Some(DECODE_FAILURE);
                ObserverError(format!("the stream cannot be decoded: {e}"))
            })?;
            for event in events {
                self.exited |= matches!(event.kind, EventKind::Exit { .. });
                let refused = match (&event.kind, &self.ports) {
                    (EventKind::ConnectionOpened { port, .. }, Some(allowed))
                        if !allowed.iter().any(|r| r.contains(*port)) =>
                    {
                        Some(*port)
                    }
                    _ => None,
                };
                if !self.unrecorded
                    && let Err(e) = self.sender.record(event).await
                {
                    if self.best_effort {
                        // The person's role accepts sessions that outlive their recording;
                        // the gateway's log and the manifest (recording_failure) say so.
                        self.unrecorded = true;
                    } else {
                        self.failure = Some(RECORDING_FAILURE);
                        self.record_error = Some(match &e {
                            custody_recorder::Error::RecordingFailed(failure) => failure.clone(),
                            other => other.to_string(),
                        });
                        return Err(ObserverError(format!("the recording failed: {e}")));
                    }
                }
                // The connection to a port the policy does not allow is recorded as attempted
                // and never reaches the pod: the chunk that opens it is not forwarded.
                if let Some(port) = refused {
                    self.failure = Some(PORT_NOT_ALLOWED);
                    return Err(ObserverError(format!(
                        "port {port} is not allowed by the policy"
                    )));
                }
            }
            Ok(())
        }
    }

    /// The server's bytes reach the client in whole frames (exec and attach), so that a
    /// farewell can always follow what the client has.
    fn forwardable(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::ServerToClient => self.decoder.server_boundary(),
            Direction::ClientToServer => None,
        }
    }

    /// Tells the client why custody ended its session, in its protocol (exec and attach).
    fn farewell(&mut self, end: &RelayEnd, delivered: u64) -> Option<Bytes> {
        let farewell = match end {
            RelayEnd::Cancelled(reason) if reason == RECORDING_FAILURE => {
                Farewell::recording_failure(cause(&self.failure_detail().unwrap_or_default()))
            }
            RelayEnd::Cancelled(reason)
                if reason.starts_with(super::requests::GRANT_REVOKED)
                    || reason == super::requests::GRANT_EXPIRED =>
            {
                Farewell::grant_ended(reason)
            }
            RelayEnd::Cancelled(reason) if reason == CREDENTIAL_EXPIRED => {
                Farewell::credential_expired()
            }
            RelayEnd::Cancelled(reason) if reason == crate::cluster::REPLICA_SHUTDOWN => {
                Farewell::replica_leaving("is shutting down")
            }
            RelayEnd::Cancelled(reason) if reason == crate::cluster::LEASE_LOST => {
                Farewell::replica_leaving("lost its place in the cluster")
            }
            // `admin_kill` or `admin_kill: <text>`; any other canceller's reason as it is.
            RelayEnd::Cancelled(reason) => Farewell::ended_by_admin(Some(
                reason
                    .strip_prefix(crate::control::registry::ADMIN_KILL)
                    .map_or(reason.as_str(), |rest| rest.trim_start_matches(':')),
            )),
            RelayEnd::IdleTimeout => Farewell::idle_timeout(self.limits.idle_timeout?),
            RelayEnd::MaxDuration => Farewell::max_duration(self.limits.max_duration?),
            RelayEnd::Observer(..) if self.failure == Some(RECORDING_FAILURE) => {
                // The writer's own words when it failed; else what `record` said (a stall).
                let detail = self.failure_detail().or_else(|| self.record_error.clone());
                Farewell::recording_failure(cause(&detail.unwrap_or_default()))
            }
            _ => return None,
        };
        self.decoder.farewell(&farewell, delivered).map(Bytes::from)
    }
}

/// When a session must end and why: its grant's end and its credential's expiry.
fn deadlines(request: &StreamRequest<'_>) -> Vec<(i64, &'static str)> {
    let grant = request
        .grant
        .as_ref()
        .map(|(_, at)| (*at, super::requests::GRANT_EXPIRED));
    let credential = request
        .principal
        .expires_at
        .map(|at| (at, CREDENTIAL_EXPIRED));
    grant.into_iter().chain(credential).collect()
}

/// Cancels the session at the earliest deadline (Unix seconds), with its reason.
fn end_at(
    deadlines: &[(i64, &'static str)],
    cancel: &CancelHandle,
) -> Option<tokio::task::JoinHandle<()>> {
    let &(at, why) = deadlines.iter().min()?;
    let cancel = cancel.clone();
    let left = at.saturating_sub(chrono::Utc::now().timestamp());
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
    Some(tokio::spawn(async move {
        tokio::time::sleep(left).await;
        cancel.cancel(why);
    }))
}

/// What the client is told of a recording failure: its cause (`File too large (os error 27)`),
/// never the gateway's paths or internals, which go to the gateway's log.
fn cause(failure: &str) -> &str {
    let first = failure.split(';').next().unwrap_or_default();
    first.rsplit(": ").next().unwrap_or(first).trim()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn terminated(reason: &str) -> SessionStatus {
    SessionStatus::Terminated {
        reason: reason.to_owned(),
    }
}

fn close(response: &mut Response<Body>) {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}

/// Refuses an already-allowed upgrade before any upstream contact (its decision is audited
/// already: the completion carries the status).
fn refuse(
    ex: Exchange,
    code: StatusCode,
    message: &str,
    metrics: Arc<Metrics>,
    audit: AuditSink,
) -> Response<Body> {
    let mut response = status_response(code, message, &ex.event.id.to_string());
    close(&mut response);
    ex.complete(code, metrics, audit);
    response
}

#[cfg(test)]
mod tests {
    use super::cause;

    #[test]
    fn the_client_hears_the_cause_of_a_recording_failure_without_paths() {
        let failure = "recording file /var/lib/custody/recordings/af60.cast.zst: File too large \
                       (os error 27); the session must end (524 queued events not recorded)";
        assert_eq!(cause(failure), "File too large (os error 27)");
        assert_eq!(
            cause("the recording stalled for more than 10s"),
            "the recording stalled for more than 10s"
        );
        assert_eq!(cause(""), "");
    }
}
