//! SPDY `portforward.k8s.io`: per forwarded connection an `error` and a `data` stream paired by
//! their `requestid` header, turned into connection events.
//!
//! The connection opens (`ConnectionOpened`) with its data stream and closes
//! (`ConnectionClosed`, with byte counts and SHA-256 of each direction) when both directions of
//! the data stream have sent FIN, when either side resets it, or at the end of the session.
//! Text the kubelet writes on the error stream is recorded as a `Marker` when that stream ends.
//! kubectl half-closes the error stream right after opening it; only the server's end counts.

use std::collections::HashMap;

use custody_protocol::portforward::PortForwardStream;
use custody_protocol::spdy::{Frame, HeaderBlock, StreamType};
use custody_recorder::model::{Event, EventKind};

use super::connection::{Tally, error_marker};
use super::spdy::{SpdyReader, check_closed, open_stream};
use super::{Direction, Limits, codec, event};
use crate::{Error, Result};

/// At most this many connections may be open at once (kubectl opens one per local TCP
/// connection); beyond it the session is refused rather than growing without bound.
const MAX_OPEN_CONNECTIONS: usize = 16 * 1024;

/// Decodes a native SPDY port-forward session (also the inside of the WebSocket tunnel).
#[derive(Debug)]
pub struct PortForwardDecoder {
    client: SpdyReader,
    server: SpdyReader,
    capture: bool,
    error_limit: usize,
    highest_stream: u32,
    streams: HashMap<u32, (StreamType, String)>,
    pairs: HashMap<String, Pair>,
    next_connection: u32,
}

/// The streams of one forwarded connection.
#[derive(Debug, Default)]
struct Pair {
    port: u16,
    connection: Option<u32>,
    data_stream: Option<u32>,
    error_stream: Option<u32>,
    /// FIN seen from the client (to the pod) and from the server (from the pod).
    fins: [bool; 2],
    data_ended: bool,
    error_text: Vec<u8>,
    error_ended: bool,
    tally: Tally,
}

impl PortForwardDecoder {
    /// A decoder recording payload as `ConnectionData` events when `capture` is on.
    pub fn new(capture: bool, limits: &Limits) -> Self {
        Self {
            client: SpdyReader::new(limits),
            server: SpdyReader::new(limits),
            capture,
            error_limit: limits.max_error_stream_len,
            highest_stream: 0,
            streams: HashMap::new(),
            pairs: HashMap::new(),
            next_connection: 0,
        }
    }

    /// Decodes a chunk of `direction`'s SPDY bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.reader(direction).push(chunk);
        while let Some((frame, headers)) = self.reader(direction).next(direction)? {
            let mut kinds = Vec::new();
            self.frame(direction, frame, headers, &mut kinds)?;
            events.extend(kinds.into_iter().map(|kind| event(time_us, kind)));
        }
        Ok(events)
    }

    /// Closes every connection still open, in connection order, and records pending errors.
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        let mut pairs: Vec<Pair> = self.pairs.drain().map(|(_, pair)| pair).collect();
        pairs.sort_by_key(|pair| (pair.connection.is_none(), pair.connection));
        self.streams.clear();
        let mut kinds = Vec::new();
        for mut pair in pairs {
            pair.end_data(&mut kinds);
            pair.end_error(&mut kinds);
        }
        kinds.into_iter().map(|kind| event(time_us, kind)).collect()
    }

    fn reader(&mut self, direction: Direction) -> &mut SpdyReader {
        match direction {
            Direction::ClientToServer => &mut self.client,
            Direction::ServerToClient => &mut self.server,
        }
    }

    fn frame(
        &mut self,
        direction: Direction,
        frame: Frame,
        headers: Option<HeaderBlock>,
        out: &mut Vec<EventKind>,
    ) -> Result<()> {
        let fin = frame.is_fin();
        match frame {
            Frame::SynStream { stream_id, .. } => {
                self.open(direction, stream_id, &headers.unwrap_or_default(), out)?;
                if fin {
                    self.half_close(direction, stream_id, out);
                }
            }
            Frame::SynReply { stream_id, .. } | Frame::Headers { stream_id, .. } => {
                if fin {
                    self.half_close(direction, stream_id, out);
                }
            }
            Frame::Data {
                stream_id, data, ..
            } => {
                let Some((stream_type, key)) = self.streams.get(&stream_id) else {
                    return check_closed(direction, stream_id, self.highest_stream);
                };
                let stream_type = *stream_type;
                if let Some(pair) = self.pairs.get_mut(key) {
                    match stream_type {
                        StreamType::Data => {
                            let to_pod = direction == Direction::ClientToServer;
                            if let (Some(connection), false) = (pair.connection, pair.data_ended) {
                                out.extend(pair.tally.add(connection, to_pod, &data, self.capture));
                            }
                        }
                        _ if direction == Direction::ServerToClient => {
                            if pair.error_text.len() + data.len() > self.error_limit {
                                return Err(Error::ErrorStreamTooLarge {
                                    limit: self.error_limit,
                                });
                            }
                            pair.error_text.extend_from_slice(&data);
                        }
                        _ => {}
                    }
                }
                if fin {
                    self.half_close(direction, stream_id, out);
                }
            }
            Frame::RstStream { stream_id, .. } => self.reset(stream_id, out),
            Frame::Ping { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::GoAway { .. } => {}
            Frame::Unknown { .. } => {
                return Err(Error::SpdyUnexpectedFrame {
                    direction,
                    frame: frame.kind(),
                });
            }
        }
        Ok(())
    }

    fn open(
        &mut self,
        direction: Direction,
        stream_id: u32,
        headers: &HeaderBlock,
        out: &mut Vec<EventKind>,
    ) -> Result<()> {
        let stream = PortForwardStream::from_headers(headers).map_err(codec(direction))?;
        open_stream(direction, stream_id, &mut self.highest_stream)?;
        let key = stream.pairing_key(stream_id);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_OPEN_CONNECTIONS {
            return Err(Error::SpdyStream {
                direction,
                stream_id,
                reason: "too many port-forward connections open at once",
            });
        }
        let pair = self.pairs.entry(key.clone()).or_insert_with(|| Pair {
            port: stream.port,
            ..Pair::default()
        });
        let slot = match stream.stream_type {
            StreamType::Data => &mut pair.data_stream,
            _ => &mut pair.error_stream,
        };
        if slot.replace(stream_id).is_some() {
            return Err(Error::SpdyStream {
                direction,
                stream_id,
                reason: "a second stream of the same type for one request id",
            });
        }
        if stream.stream_type == StreamType::Data {
            let connection = self.next_connection;
            self.next_connection = self.next_connection.wrapping_add(1);
            pair.port = stream.port;
            pair.connection = Some(connection);
            out.push(EventKind::ConnectionOpened {
                connection,
                port: stream.port,
            });
        }
        self.streams.insert(stream_id, (stream.stream_type, key));
        Ok(())
    }

    /// `direction` sends nothing more on the stream.
    fn half_close(&mut self, direction: Direction, stream_id: u32, out: &mut Vec<EventKind>) {
        let Some((stream_type, key)) = self.streams.get(&stream_id) else {
            return;
        };
        let stream_type = *stream_type;
        let key = key.clone();
        let Some(pair) = self.pairs.get_mut(&key) else {
            return;
        };
        match (stream_type, direction) {
            (StreamType::Data, Direction::ClientToServer) => pair.fins[0] = true,
            (StreamType::Data, Direction::ServerToClient) => pair.fins[1] = true,
            (_, Direction::ServerToClient) => pair.end_error(out),
            (_, Direction::ClientToServer) => return,
        }
        if pair.fins == [true, true] {
            pair.end_data(out);
        }
        self.forget(stream_id, &key);
    }

    /// Either side reset the stream.
    fn reset(&mut self, stream_id: u32, out: &mut Vec<EventKind>) {
        let Some((stream_type, key)) = self.streams.get(&stream_id) else {
            return;
        };
        let stream_type = *stream_type;
        let key = key.clone();
        if let Some(pair) = self.pairs.get_mut(&key) {
            if stream_type == StreamType::Data {
                pair.end_data(out);
            } else {
                pair.end_error(out);
            }
        }
        self.forget(stream_id, &key);
    }

    /// Drops the bookkeeping of streams and connections that have ended.
    fn forget(&mut self, stream_id: u32, key: &str) {
        let Some(pair) = self.pairs.get(key) else {
            return;
        };
        let data_done = pair.data_ended && pair.data_stream == Some(stream_id);
        let error_done = pair.error_ended && pair.error_stream == Some(stream_id);
        if data_done || error_done {
            self.streams.remove(&stream_id);
        }
        if pair.data_ended && pair.error_ended {
            self.pairs.remove(key);
        }
    }
}

impl Pair {
    /// Records the end of the data stream once.
    fn end_data(&mut self, out: &mut Vec<EventKind>) {
        if self.data_ended {
            return;
        }
        self.data_ended = true;
        if let Some(connection) = self.connection {
            out.push(self.tally.closed(connection));
        }
    }

    /// Records the end of the error stream once, with the kubelet's text if it wrote any.
    fn end_error(&mut self, out: &mut Vec<EventKind>) {
        if self.error_ended {
            return;
        }
        self.error_ended = true;
        if !self.error_text.is_empty() {
            out.push(error_marker(self.connection, self.port, &self.error_text));
            self.error_text = Vec::new();
        }
    }
}
