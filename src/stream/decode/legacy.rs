//! The kubelet's legacy WebSocket port-forward (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`
//! or no subprotocol), as kube-rs speaks it: for the i-th requested port, channel `2i` carries
//! data both ways and `2i+1` the kubelet's errors. The server starts both channels with the port
//! as 2 little-endian bytes, checked and not recorded as payload.
//!
//! One connection per requested port, numbered by the port's index in the query (a port listed
//! twice is two connections): opened by the first message on one of its channels, closed by the
//! server's close frame or the end of the session. Error text is recorded as a `Marker` per
//! message. A message on a channel beyond the requested ports' pairs is an error: the session
//! ends rather than relay bytes the recording cannot place.

use custody_protocol::ChannelProtocol;
use custody_protocol::channel::ChannelMessage;
use custody_protocol::portforward::PortChannel;
use custody_protocol::websocket::{Message, MessageDecoder};
use custody_recorder::model::{Event, EventKind};

use super::channel::{message_decoder, next_message};
use super::connection::{Tally, error_marker};
use super::{Direction, Limits, codec, event};
use crate::{Error, Result};

/// Decodes a legacy WebSocket port-forward session.
#[derive(Debug)]
pub struct LegacyPortForwardDecoder {
    protocol: ChannelProtocol,
    client: MessageDecoder,
    server: MessageDecoder,
    capture: bool,
    ports: Vec<Forward>,
}

/// One requested port and its connection.
#[derive(Debug)]
struct Forward {
    port: u16,
    opened: bool,
    closed: bool,
    /// Bytes of the server's 2-byte prefix seen so far, on the data and error channels.
    prefix: [Vec<u8>; 2],
    tally: Tally,
}

impl LegacyPortForwardDecoder {
    /// A decoder for the negotiated subprotocol and the request's `ports`, in query order.
    pub fn new(protocol: ChannelProtocol, ports: &[u16], capture: bool, limits: &Limits) -> Self {
        Self {
            protocol,
            client: message_decoder(limits),
            server: message_decoder(limits),
            capture,
            ports: ports
                .iter()
                .map(|&port| Forward {
                    port,
                    opened: false,
                    closed: false,
                    prefix: [Vec::new(), Vec::new()],
                    tally: Tally::default(),
                })
                .collect(),
        }
    }

    /// Decodes a chunk of `direction`'s WebSocket bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        let mut kinds = Vec::new();
        self.decoder(direction).push(chunk);
        loop {
            let Some(message) = next_message(direction, self.decoder(direction))? else {
                break;
            };
            self.message(direction, message, &mut kinds)?;
        }
        Ok(kinds.into_iter().map(|kind| event(time_us, kind)).collect())
    }

    fn decoder(&mut self, direction: Direction) -> &mut MessageDecoder {
        match direction {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    /// Closes every connection still open.
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        let mut kinds = Vec::new();
        self.close_all(&mut kinds);
        kinds.into_iter().map(|kind| event(time_us, kind)).collect()
    }

    fn message(
        &mut self,
        direction: Direction,
        message: Message,
        out: &mut Vec<EventKind>,
    ) -> Result<()> {
        let payload = match message {
            Message::Binary(payload) | Message::Text(payload) => payload,
            Message::Close(_) if direction == Direction::ServerToClient => {
                self.close_all(out);
                return Ok(());
            }
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        let ChannelMessage::Data { channel, data } =
            self.protocol.decode(payload).map_err(codec(direction))?
        else {
            return Ok(());
        };
        let (index, is_error) = match PortChannel::from_channel(channel) {
            PortChannel::Data { port_index } => (port_index, false),
            PortChannel::Error { port_index } => (port_index, true),
        };
        // The kubelet drops a message on a channel beyond its pairs (`wsstream.Conn.handle`),
        // but custody cannot know which pairs the kubelet opened if its reading of `ports`
        // differed from custody's: such a message ends the session instead of passing
        // unrecorded.
        let ports = self.ports.len();
        let Some(port) = self.ports.get_mut(index) else {
            return Err(codec(direction)(
                custody_protocol::Error::UnknownPortChannel { channel, ports },
            ));
        };
        if port.closed {
            return Ok(());
        }
        // Index < 128, as it comes from a channel byte.
        let connection = u32::try_from(index).unwrap_or(u32::MAX);
        if !port.opened {
            port.opened = true;
            out.push(EventKind::ConnectionOpened {
                connection,
                port: port.port,
            });
        }
        let mut data = &data[..];
        if direction == Direction::ServerToClient {
            let prefix = &mut port.prefix[usize::from(is_error)];
            let missing = 2usize.saturating_sub(prefix.len()).min(data.len());
            prefix.extend_from_slice(&data[..missing]);
            data = &data[missing..];
            if missing > 0
                && let Ok(found) = <[u8; 2]>::try_from(prefix.as_slice())
            {
                let found = u16::from_le_bytes(found);
                if found != port.port {
                    return Err(Error::PortPrefixMismatch {
                        channel,
                        expected: port.port,
                        found,
                    });
                }
            }
        }
        if is_error {
            if direction == Direction::ServerToClient && !data.is_empty() {
                out.push(error_marker(Some(connection), port.port, data));
            }
        } else {
            let to_pod = direction == Direction::ClientToServer;
            out.extend(port.tally.add(connection, to_pod, data, self.capture));
        }
        Ok(())
    }

    fn close_all(&mut self, out: &mut Vec<EventKind>) {
        for (index, port) in self.ports.iter_mut().enumerate() {
            if port.opened && !port.closed {
                out.push(port.tally.closed(u32::try_from(index).unwrap_or(u32::MAX)));
            }
            port.closed = true;
        }
    }
}
