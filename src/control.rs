//! The operators' control endpoint: HTTP/1.1 on a Unix domain socket at
//! `<data_dir>/control.sock`, over the gateway's [`registry::LiveSessions`].
//!
//! - `GET /sessions`: the live sessions, a JSON array of [`registry::LiveSession`].
//! - `GET /sessions/{id}`: one live session.
//! - `POST /sessions/{id}/kill`, optional body `{"reason": "..."}`: ends the session at once;
//!   its recording is sealed as terminated with reason `admin_kill` or `admin_kill: <reason>`.
//!   Answers the [`registry::Killed`] summary, or 404.
//! - `GET /sessions/{id}/events`: the session's events as they are recorded, as NDJSON
//!   ([`events::FollowLine`]), until the session ends.
//!
//! Errors are JSON `{"error": "..."}`. There is no authentication: the socket is created
//! `0600` in the data directory, so only the gateway's user (and root) can connect, the same
//! people who can read the recordings and the signing key there anyway.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::proxy::{self, Body, BoxError};

pub mod client;
pub mod events;
pub mod registry;

use events::FollowLine;
use registry::{Follow, FollowError, LiveSession, LiveSessions};

/// The control socket's file name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The longest path a Unix socket address holds (`sun_path` without its terminating NUL).
#[cfg(target_os = "linux")]
pub const MAX_SOCKET_PATH: usize = 107;
/// The longest path a Unix socket address holds (`sun_path` without its terminating NUL).
#[cfg(not(target_os = "linux"))]
pub const MAX_SOCKET_PATH: usize = 103;

/// The largest kill request body read.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// How long open control connections (followers) may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The control socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// What can go wrong with the control socket, serving or as a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket's path does not fit in a Unix socket address.
    #[error(
        "the control socket path {path} is {len} bytes, longer than the {max} a Unix socket \
         allows; use a shorter data_dir"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another gateway answers on the socket: it serves the same data directory.
    #[error("another gateway is running with this data_dir (its control socket {0} answers)")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    /// The socket could not be created or set up.
    #[error("cannot create the control socket {path}: {source}")]
    Socket {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No gateway serves this data directory.
    #[error("no gateway is running with data dir {data_dir} ({why})")]
    NotRunning {
        /// The data directory.
        data_dir: PathBuf,
        /// What was found instead.
        why: &'static str,
    },
    /// The socket exists but cannot be connected to.
    #[error("cannot connect to the control socket {path}: {source}")]
    Connect {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gateway has no live session with this id.
    #[error("{0}")]
    NoSuchSession(String),
    /// The gateway refused the request.
    #[error("the gateway refused the request ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The gateway's message.
        message: String,
    },
    /// The conversation with the gateway failed.
    #[error("control socket: {0}")]
    Protocol(String),
}

/// The control socket, bound and ready to serve; its file is removed when this (or the
/// server using it) is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
}

/// The socket file this gateway created, removed on drop unless another one replaced it.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ControlSocket {
    /// Creates `<data_dir>/control.sock`, mode `0600`. A stale socket (nobody answers) is
    /// replaced; a live one means another gateway uses this data directory, and is an error.
    pub async fn bind(data_dir: &Path) -> Result<Self, Error> {
        let path = socket_path(data_dir);
        check_length(&path)?;
        let socket_error = |source| Error::Socket {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(Error::NotASocket(path));
            }
            Ok(_) => {
                if tokio::net::UnixStream::connect(&path).await.is_ok() {
                    return Err(Error::InUse(path));
                }
                tracing::info!(path = %path.display(), "replacing a stale control socket");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_error(e)),
        }
        // Bound under a private name, restricted, then renamed into place: the socket is
        // never reachable at its well-known path with looser permissions, and a stale one is
        // replaced atomically. The name is no longer than `control.sock`.
        let staging = data_dir.join(format!(".ctl-{}", std::process::id() % 10_000_000));
        check_length(&staging)?;
        let _ = std::fs::remove_file(&staging);
        let listener = std::os::unix::net::UnixListener::bind(&staging).map_err(socket_error)?;
        let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&staging, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&staging);
            return Err(socket_error(e));
        }
        let meta = std::fs::symlink_metadata(&path).map_err(socket_error)?;
        let file = SocketFile {
            path: path.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        listener.set_nonblocking(true).map_err(socket_error)?;
        let listener = UnixListener::from_std(listener).map_err(socket_error)?;
        Ok(Self { listener, file })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

fn check_length(path: &Path) -> Result<(), Error> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// Serves the control endpoint on `socket` until `shutdown` completes, then removes the
/// socket file.
pub async fn serve(
    socket: ControlSocket,
    sessions: Arc<LiveSessions>,
    cluster: Option<crate::cluster::ClusterMode>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let ControlSocket { listener, file } = socket;
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let sessions = sessions.clone();
        let cluster = cluster.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let sessions = sessions.clone();
                let cluster = cluster.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(request, &sessions, cluster.as_ref()).await,
                    )
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(file);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The body of a kill request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KillRequest {
    /// Why the operator ends the session; written into the manifest's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

async fn handle(
    request: Request<Incoming>,
    sessions: &LiveSessions,
    cluster: Option<&crate::cluster::ClusterMode>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    match (segments.as_slice(), &method) {
        (["sessions"], &Method::GET) => match cluster {
            Some(cluster) => match cluster_sessions(cluster).await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
            },
            None => json(StatusCode::OK, &sessions.list()),
        },
        (["sessions", id], &Method::GET) => match sessions.get(id) {
            Some(session) => json(StatusCode::OK, &session),
            None => match elsewhere(cluster, id).await {
                Ok(Some(session)) => json(StatusCode::OK, &session),
                Ok(None) => not_found(id),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
            },
        },
        (["sessions", id, "kill"], &Method::POST) => {
            let id = (*id).to_owned();
            kill(request, sessions, cluster, &id).await
        }
        (["sessions", id, "events"], &Method::GET) => match sessions.follow(id).await {
            Ok(follow) => stream_events(follow),
            Err(FollowError::NotFound(id)) => follow_elsewhere(cluster, &id).await,
            Err(e @ FollowError::Ended(_)) => error(StatusCode::GONE, &e.to_string()),
        },
        (["sessions"] | ["sessions", _] | ["sessions", _, "kill" | "events"], _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no such endpoint {path}; try GET /sessions, POST /sessions/ID/kill, \
                 GET /sessions/ID/events"
            ),
        ),
    }
}

/// Follows a live session of this replica: the NDJSON stream of its events (what another
/// replica's peer call gets too).
pub(crate) async fn follow(sessions: &LiveSessions, id: &str) -> Response<Body> {
    match sessions.follow(id).await {
        Ok(follow) => stream_events(follow),
        Err(FollowError::NotFound(id)) => not_found(&id),
        Err(e @ FollowError::Ended(_)) => error(StatusCode::GONE, &e.to_string()),
    }
}

/// Follows a session another replica holds, through that replica's peer listener.
async fn follow_elsewhere(
    cluster: Option<&crate::cluster::ClusterMode>,
    id: &str,
) -> Response<Body> {
    let session = match elsewhere(cluster, id).await {
        Ok(Some(session)) => session,
        Ok(None) => return not_found(id),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    let (Some(cluster), Some(replica)) = (cluster, session.replica.as_deref()) else {
        return not_found(id);
    };
    match cluster.follow_on(replica, id).await {
        Ok(response) => response,
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!(
                "session {id} runs on replica {replica}, which cannot be followed from here: {e}"
            ),
        ),
    }
}

/// Every live session of the cluster, each with the replica it runs on.
async fn cluster_sessions(
    cluster: &crate::cluster::ClusterMode,
) -> Result<Vec<LiveSession>, String> {
    let rows = custody_cluster::live::list(&cluster.db)
        .await
        .map_err(|e| format!("the cluster's live sessions cannot be read: {e}"))?;
    Ok(rows.iter().filter_map(from_live_row).collect())
}

/// Session `id` when it runs on another replica.
async fn elsewhere(
    cluster: Option<&crate::cluster::ClusterMode>,
    id: &str,
) -> Result<Option<LiveSession>, String> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    let row = custody_cluster::live::get(&cluster.db, id)
        .await
        .map_err(|e| format!("the cluster's live sessions cannot be read: {e}"))?;
    Ok(row.as_ref().and_then(from_live_row))
}

fn from_live_row(row: &custody_cluster::live::LiveRow) -> Option<LiveSession> {
    let meta: custody_recorder::model::SessionMeta =
        serde_json::from_value(row.summary.clone()).ok()?;
    let mut session = LiveSession::from_meta(&meta);
    session.replica = Some(row.replica_id.clone());
    Some(session)
}

async fn kill(
    request: Request<Incoming>,
    sessions: &LiveSessions,
    cluster: Option<&crate::cluster::ClusterMode>,
    id: &str,
) -> Response<Body> {
    let body = match http_body_util::Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request: {e}"),
            );
        }
    };
    let kill: KillRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KillRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(kill) => kill,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body must be JSON {{\"reason\": \"...\"}}: {e}"),
                );
            }
        }
    };
    match sessions.kill(id, kill.reason.as_deref()) {
        Some(killed) => {
            tracing::warn!(
                session_id = %id,
                initiator = %killed.session.initiator,
                reason = %killed.reason,
                "session ended by an operator"
            );
            json(StatusCode::OK, &killed)
        }
        None => kill_elsewhere(cluster, id, kill.reason.as_deref()).await,
    }
}

/// Ends a session another replica holds, through a command to it.
async fn kill_elsewhere(
    cluster: Option<&crate::cluster::ClusterMode>,
    id: &str,
    reason: Option<&str>,
) -> Response<Body> {
    let session = match elsewhere(cluster, id).await {
        Ok(Some(session)) => session,
        Ok(None) => return not_found(id),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e),
    };
    let Some(cluster) = cluster else {
        return not_found(id);
    };
    let reason = registry::admin_reason(reason);
    match cluster
        .end_session(&LiveSessions::default(), id, &reason, "operator")
        .await
    {
        Ok(Some(replica)) => {
            tracing::warn!(session_id = %id, %replica, initiator = %session.initiator, %reason, "session on another replica ended by an operator");
            json(StatusCode::OK, &registry::Killed { session, reason })
        }
        Ok(None) => not_found(id),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the command to end session {id} could not be issued: {e}"),
        ),
    }
}

fn stream_events(mut follow: Follow) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                () = tx.closed() => return,
                received = follow.events.recv() => match received {
                    Ok(event) => FollowLine::from_event(&event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => FollowLine::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if tx.send(line.to_line().into()).await.is_err() {
                return;
            }
        }
        let end = FollowLine::End {
            status: follow.end(),
        };
        let _ = tx.send(end.to_line().into()).await;
    });
    let mut response = Response::new(proxy::boxed(LineBody { lines: rx }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A response body fed line by line from a channel; it ends when the sender is dropped.
struct LineBody {
    lines: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for LineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.lines
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

fn json<T: Serialize>(code: StatusCode, value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(proxy::full(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn error(code: StatusCode, message: &str) -> Response<Body> {
    json(
        code,
        &ErrorBody {
            error: message.to_owned(),
        },
    )
}

fn not_found(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("no live session {id} on this gateway (it may have ended)"),
    )
}
