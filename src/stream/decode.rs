//! Passive decoders: a copy of a stream's bytes in, recorder events out. Pure, no I/O.
//!
//! One decoder per protocol, chosen by [`SessionDecoder::new`] from the negotiated protocol:
//!
//! - [`ChannelDecoder`]: WebSocket exec/attach (`v5`, `v4`, `v4.base64`, `base64` and plain
//!   `channel.k8s.io`).
//! - [`SpdyExecDecoder`]: SPDY/3.1 exec/attach (`v4` to `channel.k8s.io`).
//! - [`PortForwardDecoder`]: SPDY `portforward.k8s.io`, and [`TunnelDecoder`] for the same SPDY
//!   byte stream carried in the binary messages of the `SPDY/3.1+portforward.k8s.io` WebSocket.
//! - [`LegacyPortForwardDecoder`]: the kubelet's WebSocket channel form of port-forward.
//!
//! Every decoder is fed per [`Direction`] with chunks split anywhere and the time of each chunk
//! (µs since the session start), which stamps the events the chunk completes. An `Err` means
//! the stream can no longer be decoded: the relay must end the session, never keep relaying
//! unrecorded. After an error the decoder is out of sync and must be dropped.
//!
//! Feed each chunk **before** forwarding it: a peer can then only answer bytes that were already
//! decoded (a server cannot send on a SPDY stream whose `SYN_STREAM` is still undecoded), and
//! nothing reaches a peer unrecorded. The two directions may be fed from one task or under one
//! lock; [`finish`](SessionDecoder::finish) flushes what is still open at the end.
//!
//! When custody ends a session itself, [`farewell`](SessionDecoder::farewell) gives the bytes
//! that tell an exec or attach client why ([`Farewell`]), if the client can read them where its
//! stream stands: after every server byte fed, or before the last server chunk fed when that
//! chunk never reached the client.

use custody_protocol::ChannelProtocol;
use custody_protocol::portforward::{self, LEGACY_WEBSOCKET_PROTOCOLS, TUNNELING_PREFIX};
use custody_protocol::spdy::{MAX_FRAME_LEN, RemoteCommandProtocol};
use custody_protocol::websocket::{DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_MESSAGE_LEN};
use custody_recorder::model::{Event, EventKind, SessionKind};

use crate::{Error, Result};

mod channel;
mod connection;
mod exit;
mod farewell;
mod legacy;
mod portforward_spdy;
mod spdy;
mod tunnel;

pub use channel::ChannelDecoder;
pub use farewell::Farewell;
pub use legacy::LegacyPortForwardDecoder;
pub use portforward_spdy::PortForwardDecoder;
pub use spdy::SpdyExecDecoder;
pub use tunnel::TunnelDecoder;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (kubectl) to the server (the cluster).
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientToServer => "client-to-server",
            Self::ServerToClient => "server-to-client",
        })
    }
}

/// The transport a stream was upgraded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: websocket`; the protocol is the `Sec-WebSocket-Protocol` of the 101.
    WebSocket,
    /// `Upgrade: SPDY/3.1`; the protocol is the `X-Stream-Protocol-Version` of the 101.
    Spdy,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "WebSocket",
            Self::Spdy => "SPDY",
        }
    }
}

/// Memory bounds of the decoders. Anything beyond them is an error, never a growing buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest WebSocket frame payload.
    pub max_ws_frame_len: usize,
    /// The largest reassembled WebSocket message.
    pub max_ws_message_len: usize,
    /// The largest SPDY frame payload.
    pub max_spdy_frame_len: usize,
    /// The largest inflated SPDY header block (against compression bombs).
    pub max_header_block_len: usize,
    /// The largest error stream (a Status is a few hundred bytes).
    pub max_error_stream_len: usize,
    /// The largest incomplete resize object.
    pub max_resize_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ws_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_ws_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_spdy_frame_len: MAX_FRAME_LEN,
            max_header_block_len: custody_protocol::spdy::DEFAULT_HEADER_BLOCK_LIMIT,
            max_error_stream_len: 64 * 1024,
            max_resize_len: custody_protocol::TerminalSizeDecoder::DEFAULT_LIMIT,
        }
    }
}

/// What a [`SessionDecoder`] needs besides the negotiated protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Memory bounds.
    pub limits: Limits,
    /// Record port-forward payload as `ConnectionData` events (hashes are always recorded).
    pub capture_port_forward: bool,
    /// The `ports` of a legacy WebSocket port-forward request, in query order.
    pub ports: Vec<u16>,
}

/// The decoder of one session, picked from the negotiated protocol.
#[derive(Debug)]
pub enum SessionDecoder {
    /// WebSocket exec/attach.
    Channel(ChannelDecoder),
    /// SPDY exec/attach.
    SpdyExec(SpdyExecDecoder),
    /// Native SPDY port-forward.
    PortForward(PortForwardDecoder),
    /// SPDY port-forward tunnelled in WebSocket.
    Tunnel(TunnelDecoder),
    /// Legacy WebSocket port-forward.
    LegacyPortForward(LegacyPortForwardDecoder),
}

impl SessionDecoder {
    /// The decoder for a `kind` session upgraded to `transport` with the negotiated `protocol`
    /// (the server's 101 answer), or [`Error::StreamProtocolUnsupported`] for anything the
    /// recorder cannot decode: the upgrade must then be refused.
    pub fn new(
        kind: SessionKind,
        transport: Transport,
        protocol: &str,
        config: &DecoderConfig,
    ) -> Result<Self> {
        let limits = &config.limits;
        let decoder = match (kind, transport) {
            (SessionKind::Exec | SessionKind::Attach, Transport::WebSocket) => {
                ChannelProtocol::from_name(protocol)
                    .map(|p| Self::Channel(ChannelDecoder::new(p, limits)))
            }
            (SessionKind::Exec | SessionKind::Attach, Transport::Spdy) => {
                // An empty or absent header makes client-go fall back to `channel.k8s.io`.
                let protocol = if protocol.is_empty() {
                    Some(RemoteCommandProtocol::V1)
                } else {
                    RemoteCommandProtocol::from_name(protocol)
                };
                protocol.map(|p| Self::SpdyExec(SpdyExecDecoder::new(p, limits)))
            }
            (SessionKind::PortForward, Transport::Spdy) => (protocol == portforward::PROTOCOL_V1)
                .then(|| {
                    Self::PortForward(PortForwardDecoder::new(config.capture_port_forward, limits))
                }),
            (SessionKind::PortForward, Transport::WebSocket) => {
                if protocol.strip_prefix(TUNNELING_PREFIX) == Some(portforward::PROTOCOL_V1) {
                    Some(Self::Tunnel(TunnelDecoder::new(
                        config.capture_port_forward,
                        limits,
                    )))
                } else {
                    ChannelProtocol::from_name(protocol)
                        .filter(|p| LEGACY_WEBSOCKET_PROTOCOLS.contains(p))
                        .filter(|_| !config.ports.is_empty())
                        .map(|p| {
                            Self::LegacyPortForward(LegacyPortForwardDecoder::new(
                                p,
                                &config.ports,
                                config.capture_port_forward,
                                limits,
                            ))
                        })
                }
            }
            (SessionKind::Api, _) => None,
        };
        decoder.ok_or_else(|| Error::StreamProtocolUnsupported {
            kind: kind_name(kind),
            transport: transport.name(),
            protocol: protocol.to_owned(),
        })
    }

    /// Decodes a chunk of `direction`'s bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        match self {
            Self::Channel(d) => d.feed(direction, chunk, time_us),
            Self::SpdyExec(d) => d.feed(direction, chunk, time_us),
            Self::PortForward(d) => d.feed(direction, chunk, time_us),
            Self::Tunnel(d) => d.feed(direction, chunk, time_us),
            Self::LegacyPortForward(d) => d.feed(direction, chunk, time_us),
        }
    }

    /// The bytes that tell the client why custody ended the session (see [`Farewell`]), for a
    /// client that received exactly the first `delivered` bytes of the server-to-client
    /// direction (all of them fed here, in whole chunks), when it can read them: exec and
    /// attach only, with the client's copy of the stream at a frame boundary and its error
    /// channel still unused. The client may lag one chunk behind what was fed (a chunk the
    /// recording refused, or that the session ended on before it was forwarded): `delivered`
    /// then leaves that chunk out and the farewell is built for where the client stands before
    /// it. `None` means the connection is just closed, and is also the answer for any other
    /// `delivered`.
    pub fn farewell(&self, farewell: &Farewell, delivered: u64) -> Option<Vec<u8>> {
        match self {
            Self::Channel(d) => d.farewell(farewell, delivered),
            Self::SpdyExec(d) => d.farewell(farewell, delivered),
            Self::PortForward(_) | Self::Tunnel(_) | Self::LegacyPortForward(_) => None,
        }
    }

    /// How many of the server-to-client bytes fed may reach the client now: up to the end of
    /// the last whole frame, so that the client always stands between frames and a farewell
    /// can follow what it has (exec and attach). `None` for port-forward: everything may.
    pub fn server_boundary(&self) -> Option<u64> {
        match self {
            Self::Channel(d) => Some(d.server_boundary()),
            Self::SpdyExec(d) => Some(d.server_boundary()),
            Self::PortForward(_) | Self::Tunnel(_) | Self::LegacyPortForward(_) => None,
        }
    }

    /// Server-to-client bytes fed (exec and attach; 0 for port-forward).
    #[cfg(test)]
    pub(crate) fn server_fed(&self) -> u64 {
        match self {
            Self::Channel(d) => d.server_fed(),
            Self::SpdyExec(d) => d.server_fed(),
            Self::PortForward(_) | Self::Tunnel(_) | Self::LegacyPortForward(_) => 0,
        }
    }

    /// Flushes what the end of the session completes (a buffered Status, open connections).
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        match self {
            Self::Channel(d) => d.finish(time_us),
            Self::SpdyExec(d) => d.finish(time_us),
            Self::PortForward(d) => d.finish(time_us),
            Self::Tunnel(d) => d.finish(time_us),
            Self::LegacyPortForward(d) => d.finish(time_us),
        }
    }
}

/// The name of a session kind in errors.
fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Exec => "exec",
        SessionKind::Attach => "attach",
        SessionKind::PortForward => "port-forward",
        SessionKind::Api => "api",
    }
}

/// An event at `time_us`.
fn event(time_us: u64, kind: EventKind) -> Event {
    Event { time_us, kind }
}

/// The event of one resize request. A size of 0 columns or 0 rows is not a size (kubectl sends
/// one from a 0x0 pseudo-terminal, as in CI jobs or under `script`): recorded as a `Resize`, it
/// would give players an empty screen and make asciinema 3 panic converting the file. It is
/// recorded as a `Marker` naming the request instead, so the recording keeps its last size (the
/// header's when there was none) and every reader, old ones included, reads the file.
fn resize_event(size: custody_protocol::TerminalSize) -> EventKind {
    if size.width == 0 || size.height == 0 {
        let request = String::from_utf8_lossy(&size.to_json_line())
            .trim_end()
            .to_owned();
        EventKind::Marker(format!(
            "{RESIZE_IGNORED_PREFIX}{}x{} is not a size; the terminal keeps its last size \
             (request {request})",
            size.width, size.height
        ))
    } else {
        EventKind::Resize {
            cols: size.width,
            rows: size.height,
        }
    }
}

/// How the marker of an ignored resize request starts.
pub const RESIZE_IGNORED_PREFIX: &str = "resize ignored: ";

/// Wraps a codec error with the direction it came from.
fn codec(direction: Direction) -> impl Fn(custody_protocol::Error) -> Error {
    move |source| Error::StreamDecode { direction, source }
}

#[cfg(test)]
mod tests;
