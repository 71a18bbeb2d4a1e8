//! The byte-exact splice between the client's upgraded connection and the API server's.
//!
//! Each direction reads a chunk (at most [`RelayConfig::buffer_size`] bytes), hands it to the
//! [`Observer`] (the decoder and recorder), and only then writes it to the other side (up to
//! where the observer allows, [`Observer::forwardable`]: the end of the last whole frame), so
//! nothing reaches a peer unobserved and memory stays bounded: a slow reader stalls the writer
//! side's reads instead of filling a queue. The API server's bytes that arrived with its 101
//! head go first, to the client.
//!
//! When one side ends its sending (EOF), the other side's write half is shut down (half-close)
//! and the other direction keeps flowing; the relay ends when both directions have ended, or
//! at once when either side fails, the observer refuses a chunk, the [`CancelHandle`] is used
//! (an admin ending the session, a recording failure), the session is idle for too long or
//! reaches its maximum duration. Ending drops both connections.
//!
//! When custody itself ends the session (the [`CancelHandle`], the idle timeout, the maximum
//! duration, the observer refusing a chunk), the observer may first give a farewell for the
//! client ([`Observer::farewell`]: the reason, in the client's protocol). The API server's
//! connection is dropped first; the farewell is written to the client only if no write to the
//! client was cut off (that would leave the client inside a frame), within
//! [`FAREWELL_TIMEOUT`], and the client's connection is then shut down and dropped. The
//! observer is told how many of the API server's bytes the client received: every chunk it
//! saw, or all but the last one when that chunk was never written (the observer refused it,
//! or the session ended while the observer held it, the usual case when the recording fails
//! under heavy output), so it can speak from where the client stands.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

pub use crate::stream::decode::Direction;

#[cfg(test)]
mod tests;

/// How long writing a farewell to the client may take: a client that does not read it does not
/// keep the session alive.
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Sees every chunk before it is forwarded. Returning `Err` ends the session before the chunk
/// reaches the other side.
///
/// The relay awaits the returned future before forwarding the chunk, so an observer that waits
/// (a recorder whose queue is full) slows both directions down instead of buffering: that is
/// how the recorder's backpressure reaches the peers. The two directions share the observer
/// and call it one at a time.
pub trait Observer: Send {
    /// One chunk read from the side `direction` starts at, at time `at`.
    fn on_chunk(
        &mut self,
        direction: Direction,
        bytes: &[u8],
        at: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send;

    /// How many of the bytes seen from `direction` (counted from the start) may be written to
    /// the other side now; the rest are held back until a later chunk moves this on (or the
    /// sending side ends). An observer that decodes frames answers the end of the last whole
    /// frame, so the client always stands between frames and a farewell can follow. None by
    /// default: every byte seen may be written.
    fn forwardable(&self, direction: Direction) -> Option<u64> {
        let _ = direction;
        None
    }

    /// Bytes to write to the client when custody ends the session itself (`end` is
    /// [`RelayEnd::Cancelled`], [`RelayEnd::IdleTimeout`], [`RelayEnd::MaxDuration`] or
    /// [`RelayEnd::Observer`]), to tell it why. The client has received exactly the first
    /// `delivered` bytes from the API server, in whole chunks: every server-to-client chunk the
    /// observer saw, or all but the last one when that one was never written (refused, or held
    /// by the observer when the session ended; the observer may or may not have processed it).
    /// Never asked when a write to the client was cut off partway. The bytes must start where
    /// the client stands after `delivered`. None by default: the connections are just dropped.
    fn farewell(&mut self, end: &RelayEnd, delivered: u64) -> Option<Bytes> {
        let _ = (end, delivered);
        None
    }
}

/// An observer that sees nothing.
impl Observer for () {
    fn on_chunk(
        &mut self,
        _: Direction,
        _: &[u8],
        _: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// An observer lent to the relay, so the caller keeps it (e.g. to flush a decoder afterwards).
impl<T: Observer> Observer for &mut T {
    fn on_chunk(
        &mut self,
        direction: Direction,
        bytes: &[u8],
        at: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send {
        (**self).on_chunk(direction, bytes, at)
    }

    fn forwardable(&self, direction: Direction) -> Option<u64> {
        (**self).forwardable(direction)
    }

    fn farewell(&mut self, end: &RelayEnd, delivered: u64) -> Option<Bytes> {
        (**self).farewell(end, delivered)
    }
}

/// Why the observer ended the session (e.g. the recording cannot be written or decoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ObserverError(pub String);

/// Limits of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// The largest chunk read at once, per direction (the relay's whole buffer per direction).
    pub buffer_size: usize,
    /// End the session when no byte flowed either way for this long.
    pub idle_timeout: Option<Duration>,
    /// End the session after this long whatever happens.
    pub max_duration: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            buffer_size: 64 * 1024,
            idle_timeout: None,
            max_duration: None,
        }
    }
}

/// Ends a running relay from elsewhere (admin kill, recording failure). Clones end the same
/// relay; a handle may be cancelled before the relay starts.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    reason: Arc<watch::Sender<Option<String>>>,
}

impl Default for CancelHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelHandle {
    /// A handle not yet cancelled.
    pub fn new() -> Self {
        Self {
            reason: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Ends the relay with `reason`; the first reason given wins.
    pub fn cancel(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.reason.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        });
    }

    /// The reason, once cancelled.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    async fn cancelled(&self) -> String {
        let mut rx = self.reason.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // Unreachable while `self` holds the sender; treat it as never cancelled.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Which connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's upgraded connection.
    Client,
    /// The API server's connection.
    Upstream,
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions ended normally; the client ended its sending first.
    ClientClosed,
    /// Both directions ended normally; the API server ended its sending first.
    UpstreamClosed,
    /// The [`CancelHandle`] was used, with this reason.
    Cancelled(String),
    /// No byte flowed for the idle timeout.
    IdleTimeout,
    /// The maximum duration was reached.
    MaxDuration,
    /// The observer refused a chunk from this direction.
    Observer(Direction, ObserverError),
    /// Reading from or writing to a side failed.
    Io(Side, std::io::Error),
}

impl RelayEnd {
    /// Whether custody ended the session itself rather than a peer or the network.
    pub fn by_custody(&self) -> bool {
        matches!(
            self,
            Self::Cancelled(_) | Self::IdleTimeout | Self::MaxDuration | Self::Observer(..)
        )
    }
}

/// What a relay did.
#[derive(Debug)]
pub struct RelayReport {
    /// Why it ended.
    pub end: RelayEnd,
    /// Bytes forwarded from the client to the API server.
    pub client_to_upstream: u64,
    /// Bytes forwarded from the API server to the client (the 101 leftover included).
    pub upstream_to_client: u64,
    /// How long it ran.
    pub duration: Duration,
    /// How many farewell bytes ([`Observer::farewell`]) were written to the client.
    pub farewell: usize,
}

/// Relays between `client` and `upstream` until the session ends, after writing `leftover`
/// (the API server's bytes that followed its 101 head) to the client.
pub async fn relay<C, U, O>(
    client: C,
    upstream: U,
    leftover: Bytes,
    observer: O,
    config: RelayConfig,
    cancel: &CancelHandle,
) -> RelayReport
where
    C: AsyncRead + AsyncWrite + Send,
    U: AsyncRead + AsyncWrite + Send,
    O: Observer,
{
    let start = Instant::now();
    let shared = Shared {
        observer: Mutex::new(observer),
        start,
        last_activity_ms: AtomicU64::new(0),
    };
    let (client_read, mut client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let size = config.buffer_size.max(1);
    let up = Pump::new(Direction::ClientToServer, Side::Client, Side::Upstream);
    let down = Pump::new(Direction::ServerToClient, Side::Upstream, Side::Client);
    let (mut up_done, mut down_done) = (false, false);
    // The pumps and the API server's connection live in this block: when it ends, they are
    // dropped (a write cut off mid-chunk leaves `down` unclean), and only the client's write
    // half is left.
    let end = {
        let up_run = up.run(client_read, upstream_write, Bytes::new(), size, &shared);
        let down_run = down.run(upstream_read, &mut client_write, leftover, size, &shared);
        tokio::pin!(up_run, down_run);
        let idle = shared.idle(config.idle_timeout);
        let max = optional_sleep(config.max_duration);
        let cancelled = cancel.cancelled();
        tokio::pin!(idle, max, cancelled);
        let mut first_closed = None;
        loop {
            tokio::select! {
                result = &mut up_run, if !up_done => match result {
                    Ok(()) => { up_done = true; first_closed.get_or_insert(Side::Client); }
                    Err(end) => break end,
                },
                result = &mut down_run, if !down_done => match result {
                    Ok(()) => { down_done = true; first_closed.get_or_insert(Side::Upstream); }
                    Err(end) => break end,
                },
                reason = &mut cancelled => break RelayEnd::Cancelled(reason),
                () = &mut idle => break RelayEnd::IdleTimeout,
                () = &mut max => break RelayEnd::MaxDuration,
            }
            if up_done && down_done {
                break match first_closed {
                    Some(Side::Upstream) => RelayEnd::UpstreamClosed,
                    _ => RelayEnd::ClientClosed,
                };
            }
        }
    };
    // A shut-down write half (the API server ended first) takes nothing more, and a client
    // whose last write was cut off may stand anywhere inside a frame.
    let farewell = if end.by_custody() && !down_done && !down.torn.load(Ordering::Relaxed) {
        let delivered = down.bytes.load(Ordering::Relaxed);
        let bytes = shared.observer.lock().await.farewell(&end, delivered);
        match bytes {
            Some(bytes) => say_farewell(&mut client_write, &bytes).await,
            None => 0,
        }
    } else {
        0
    };
    RelayReport {
        end,
        client_to_upstream: up.bytes.load(Ordering::Relaxed),
        upstream_to_client: down.bytes.load(Ordering::Relaxed),
        duration: start.elapsed(),
        farewell,
    }
}

/// Writes `bytes` and shuts the client's side down within [`FAREWELL_TIMEOUT`]; returns how
/// many bytes were written (0 when the client did not take them all).
async fn say_farewell<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8]) -> usize {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await?;
        client.shutdown().await
    };
    match tokio::time::timeout(FAREWELL_TIMEOUT, write).await {
        Ok(Ok(())) => bytes.len(),
        Ok(Err(_)) | Err(_) => 0,
    }
}

/// What both directions share.
struct Shared<O> {
    observer: Mutex<O>,
    start: Instant,
    last_activity_ms: AtomicU64,
}

impl<O: Observer> Shared<O> {
    /// Shows the chunk to the observer; returns what it says may be forwarded.
    async fn observe(&self, direction: Direction, bytes: &[u8]) -> Result<Option<u64>, RelayEnd> {
        let now = Instant::now();
        let ms = u64::try_from(now.duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
        // Held while the observer waits (backpressure): the other direction waits its turn,
        // so events reach the observer in the order their chunks were read.
        let mut observer = self.observer.lock().await;
        observer
            .on_chunk(direction, bytes, now.into_std())
            .await
            .map_err(|e| RelayEnd::Observer(direction, e))?;
        Ok(observer.forwardable(direction))
    }

    /// Completes once nothing was observed for `timeout` (never without one).
    async fn idle(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

async fn optional_sleep(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// One direction.
struct Pump {
    direction: Direction,
    from: Side,
    to: Side,
    /// Bytes written whole to `to`.
    bytes: AtomicU64,
    /// Whether a write to `to` started and did not finish (while a chunk is being written, and
    /// for good when the write was cut off or failed): `to` may then hold part of a chunk. A
    /// chunk the observer refused or still held when the relay ended was not written at all.
    torn: AtomicBool,
}

impl Pump {
    fn new(direction: Direction, from: Side, to: Side) -> Self {
        Self {
            direction,
            from,
            to,
            bytes: AtomicU64::new(0),
            torn: AtomicBool::new(false),
        }
    }

    /// Copies until `from` ends (then shuts down `to`'s write half); `first` goes first.
    async fn run<R, W, O>(
        &self,
        mut reader: R,
        mut writer: W,
        first: Bytes,
        size: usize,
        shared: &Shared<O>,
    ) -> Result<(), RelayEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        O: Observer,
    {
        // Bytes seen but held back (the start of a frame whose end has not arrived yet).
        let mut held = Vec::new();
        if !first.is_empty() {
            self.forward(&mut writer, &first, &mut held, shared).await?;
        }
        let mut buf = vec![0u8; size];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                // A peer that closes TCP without a TLS close_notify has still ended its stream.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(RelayEnd::Io(self.from, e)),
            };
            if n == 0 {
                // What was held back was seen: it goes through as the sender sent it.
                if !held.is_empty() {
                    self.write(&mut writer, &held).await?;
                }
                // Half-close: the other side learns that no more bytes come this way. It may
                // already be gone; that shows on the other direction.
                let _ = writer.shutdown().await;
                return Ok(());
            }
            self.forward(&mut writer, &buf[..n], &mut held, shared)
                .await?;
        }
    }

    /// Shows `chunk` to the observer, then writes what it allows of `held` and `chunk`; keeps
    /// the rest in `held`.
    async fn forward<W, O>(
        &self,
        writer: &mut W,
        chunk: &[u8],
        held: &mut Vec<u8>,
        shared: &Shared<O>,
    ) -> Result<(), RelayEnd>
    where
        W: AsyncWrite + Unpin,
        O: Observer,
    {
        let allowed = shared.observe(self.direction, chunk).await?;
        let pending = held.len() + chunk.len();
        let n = allowed.map_or(pending, |end| {
            let written = self.bytes.load(Ordering::Relaxed);
            usize::try_from(end.saturating_sub(written)).map_or(pending, |n| n.min(pending))
        });
        if held.is_empty() {
            self.write(writer, &chunk[..n]).await?;
            held.extend_from_slice(&chunk[n..]);
        } else {
            held.extend_from_slice(chunk);
            self.write(writer, &held[..n]).await?;
            held.drain(..n);
        }
        Ok(())
    }

    /// Writes `bytes` whole to `to` (nothing when empty).
    async fn write<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        bytes: &[u8],
    ) -> Result<(), RelayEnd> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.torn.store(true, Ordering::Relaxed);
        writer
            .write_all(bytes)
            .await
            .map_err(|e| RelayEnd::Io(self.to, e))?;
        writer.flush().await.map_err(|e| RelayEnd::Io(self.to, e))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.torn.store(false, Ordering::Relaxed);
        Ok(())
    }
}
