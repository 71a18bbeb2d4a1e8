//! The `SPDY/3.1+portforward.k8s.io` WebSocket tunnel: the SPDY byte stream of each direction is
//! the concatenation of that direction's binary message payloads, cut anywhere (spdystream
//! writes every frame field separately, so frames arrive as many tiny messages, some empty).
//! Text messages are an error, as in client-go's `tunneling_connection.go`.

use custody_protocol::websocket::{Message, MessageDecoder};
use custody_recorder::model::Event;

use super::channel::{message_decoder, next_message};
use super::{Direction, Limits, PortForwardDecoder};
use crate::{Error, Result};

/// Decodes a port-forward session tunnelled in WebSocket.
#[derive(Debug)]
pub struct TunnelDecoder {
    client: MessageDecoder,
    server: MessageDecoder,
    spdy: PortForwardDecoder,
}

impl TunnelDecoder {
    /// A decoder recording payload as `ConnectionData` events when `capture` is on.
    pub fn new(capture: bool, limits: &Limits) -> Self {
        Self {
            client: message_decoder(limits),
            server: message_decoder(limits),
            spdy: PortForwardDecoder::new(capture, limits),
        }
    }

    /// Decodes a chunk of `direction`'s WebSocket bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.decoder(direction).push(chunk);
        loop {
            let Some(message) = next_message(direction, self.decoder(direction))? else {
                return Ok(events);
            };
            events.extend(self.feed_message(direction, &message, time_us)?);
        }
    }

    /// Decodes one message a frame-aware relay has already reassembled; zero-length binary
    /// messages are fine.
    pub fn feed_message(
        &mut self,
        direction: Direction,
        message: &Message,
        time_us: u64,
    ) -> Result<Vec<Event>> {
        match message {
            Message::Binary(payload) => self.spdy.feed(direction, payload, time_us),
            Message::Text(_) => Err(Error::StreamMessageType {
                direction,
                message: "text",
            }),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(Vec::new()),
        }
    }

    fn decoder(&mut self, direction: Direction) -> &mut MessageDecoder {
        match direction {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    /// Closes every connection still open.
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        self.spdy.finish(time_us)
    }
}
