//! WebSocket exec/attach: messages of the negotiated `*.channel.k8s.io` protocol turned into
//! events.
//!
//! stdin (0) → `Input`, stdout (1) → `Output`, stderr (2) → `Stderr`, resize (4, a stream of
//! JSON objects split anywhere) → `Resize` (a `Marker` for a size of 0 columns or rows, see
//! `resize_event`), and the error channel (3) concatenated until it
//! ends (a v5 CLOSE of channel 3, the server's close frame, or the end of the session) →
//! `Exit`. Pings and pongs are ignored. Channels a side never reads (the server writing on
//! stdin, unknown ids) are dropped by the receiver and recorded as nothing.
//!
//! A v5 CLOSE of stdin is recorded as nothing: it is an end-of-file, not content, and the
//! recording format has no event for it (a `Marker` would show up as an annotation in every
//! piped exec's replay).

use bytes::Bytes;
use custody_protocol::channel::{self, ChannelMessage};
use custody_protocol::websocket::{FrameDecoder, Message, MessageDecoder};
use custody_protocol::{ChannelProtocol, TerminalSizeDecoder};
use custody_recorder::model::{Event, EventKind};

use super::exit::ErrorStream;
use super::farewell::{Farewell, ServerProgress};
use super::{Direction, Limits, codec, event, resize_event};
use crate::Result;

/// Decodes a WebSocket exec or attach session.
#[derive(Debug)]
pub struct ChannelDecoder {
    protocol: ChannelProtocol,
    client: MessageDecoder,
    server: MessageDecoder,
    resize: TerminalSizeDecoder,
    error: ErrorStream,
    /// Whether a farewell may follow the server's bytes fed, and before the last chunk.
    progress: ServerProgress<bool>,
}

impl ChannelDecoder {
    /// A decoder for the negotiated subprotocol.
    pub fn new(protocol: ChannelProtocol, limits: &Limits) -> Self {
        Self {
            protocol,
            client: message_decoder(limits),
            server: message_decoder(limits),
            resize: TerminalSizeDecoder::with_limit(limits.max_resize_len),
            error: ErrorStream::new(protocol.error_is_status_json(), limits.max_error_stream_len),
            progress: ServerProgress::default(),
        }
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> ChannelProtocol {
        self.protocol
    }

    /// Decodes a chunk of `direction`'s WebSocket bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        if direction == Direction::ServerToClient {
            let before = self.at_boundary();
            self.progress.feeding(chunk.len(), before);
        }
        self.decoder(direction).push(chunk);
        while let Some(message) = next_message(direction, self.decoder(direction))? {
            self.message(direction, &message, time_us, &mut events)?;
        }
        if direction == Direction::ServerToClient {
            self.progress.fed_whole();
        }
        Ok(events)
    }

    /// Decodes one message a frame-aware relay has already reassembled.
    pub fn feed_message(
        &mut self,
        direction: Direction,
        message: &Message,
        time_us: u64,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.message(direction, message, time_us, &mut events)?;
        Ok(events)
    }

    /// The bytes that tell the client why custody ended the session (the farewell on the error
    /// channel, then a close 1000), for a client that received exactly the first `delivered`
    /// bytes the server sent: when that is the end of a whole frame after the last server
    /// chunk fed, or before it ([`server_boundary`](Self::server_boundary)), outside a
    /// fragmented message, and nothing was written on the error channel by then; `None`
    /// otherwise.
    pub fn farewell(&self, farewell: &Farewell, delivered: u64) -> Option<Vec<u8>> {
        if !self.progress.at(delivered, || self.at_boundary())? {
            return None;
        }
        farewell.websocket(self.protocol)
    }

    /// The server-to-client bytes fed up to the end of the last whole frame: what may reach the
    /// client now.
    pub fn server_boundary(&self) -> u64 {
        self.at_boundary().0
    }

    /// The end of the last whole server frame, and whether a farewell may follow it (outside a
    /// fragmented message, the error channel unused).
    fn at_boundary(&self) -> (u64, bool) {
        let partial = self.server.buffered() as u64;
        let possible = !self.server.in_message() && self.error.is_untouched();
        (self.progress.fed().saturating_sub(partial), possible)
    }

    /// Server-to-client bytes fed.
    #[cfg(test)]
    pub(super) fn server_fed(&self) -> u64 {
        self.progress.fed()
    }

    /// Flushes a Status buffered when the session ends without the error channel ending.
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        self.error
            .finish()
            .map(|kind| event(time_us, kind))
            .into_iter()
            .collect()
    }

    fn decoder(&mut self, direction: Direction) -> &mut MessageDecoder {
        match direction {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    fn message(
        &mut self,
        direction: Direction,
        message: &Message,
        time_us: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let payload = match message {
            // wsstream decodes text and binary messages alike.
            Message::Binary(payload) | Message::Text(payload) => payload.clone(),
            Message::Close(_) => {
                if direction == Direction::ServerToClient {
                    events.extend(self.error.end().map(|kind| event(time_us, kind)));
                }
                return Ok(());
            }
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        match self.protocol.decode(payload).map_err(codec(direction))? {
            ChannelMessage::Empty => {}
            ChannelMessage::Close { channel } => {
                if direction == Direction::ServerToClient && channel == channel::ERROR {
                    events.extend(self.error.end().map(|kind| event(time_us, kind)));
                }
            }
            ChannelMessage::Data { channel, data } => {
                self.data(direction, channel, &data, time_us, events)?;
            }
        }
        Ok(())
    }

    fn data(
        &mut self,
        direction: Direction,
        channel: u8,
        data: &Bytes,
        time_us: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if data.is_empty() {
            // The server's initial `[1]` message and other empty writes.
            return Ok(());
        }
        let kind = match (direction, channel) {
            (Direction::ClientToServer, channel::STDIN) => EventKind::Input(data.to_vec()),
            (Direction::ClientToServer, channel::RESIZE) => {
                let sizes = self.resize.decode(data).map_err(codec(direction))?;
                events.extend(
                    sizes
                        .into_iter()
                        .map(|size| event(time_us, resize_event(size))),
                );
                return Ok(());
            }
            (Direction::ServerToClient, channel::STDOUT) => EventKind::Output(data.to_vec()),
            (Direction::ServerToClient, channel::STDERR) => EventKind::Stderr(data.to_vec()),
            (Direction::ServerToClient, channel::ERROR) => return self.error.push(data),
            _ => return Ok(()),
        };
        events.push(event(time_us, kind));
        Ok(())
    }
}

/// A direction's message decoder under `limits`.
pub(super) fn message_decoder(limits: &Limits) -> MessageDecoder {
    MessageDecoder::with_limits(
        FrameDecoder::with_max_frame_len(limits.max_ws_frame_len),
        limits.max_ws_message_len,
    )
}

/// The next message of `decoder`, codec errors tagged with `direction`.
pub(super) fn next_message(
    direction: Direction,
    decoder: &mut MessageDecoder,
) -> Result<Option<Message>> {
    decoder.next_message().map_err(codec(direction))
}
