//! SPDY exec/attach: one frame decoder and one header inflater per direction, streams mapped by
//! their `streamtype` header (never by id), DATA turned into events.
//!
//! Only the client opens streams (Kubernetes servers never do); ids strictly increase, so an id
//! at or below the highest one opened that is no longer tracked belongs to a stream already
//! reset, whose frames the receiver drops, and an id above it was never opened (an error).

use std::collections::HashMap;

use custody_protocol::TerminalSizeDecoder;
use custody_protocol::spdy::{
    Frame, FrameDecoder, HeaderBlock, HeaderDecompressor, RemoteCommandProtocol, StreamType,
};
use custody_recorder::model::{Event, EventKind};

use super::exit::ErrorStream;
use super::farewell::{Farewell, ServerProgress};
use super::{Direction, Limits, codec, event, resize_event};
use crate::{Error, Result};

/// Decodes a SPDY exec or attach session.
#[derive(Debug)]
pub struct SpdyExecDecoder {
    protocol: RemoteCommandProtocol,
    client: SpdyReader,
    server: SpdyReader,
    streams: HashMap<u32, StreamType>,
    highest_stream: u32,
    /// The error stream, once the server has answered its `SYN_STREAM`.
    error_reply: Option<u32>,
    resize: TerminalSizeDecoder,
    error: ErrorStream,
    /// The error stream a farewell may go on after the server's bytes fed, and before the
    /// last chunk.
    progress: ServerProgress<Option<u32>>,
}

impl SpdyExecDecoder {
    /// A decoder for the negotiated `X-Stream-Protocol-Version`.
    pub fn new(protocol: RemoteCommandProtocol, limits: &Limits) -> Self {
        Self {
            protocol,
            client: SpdyReader::new(limits),
            server: SpdyReader::new(limits),
            streams: HashMap::new(),
            highest_stream: 0,
            error_reply: None,
            resize: TerminalSizeDecoder::with_limit(limits.max_resize_len),
            error: ErrorStream::new(protocol.error_is_status_json(), limits.max_error_stream_len),
            progress: ServerProgress::default(),
        }
    }

    /// The negotiated protocol.
    pub fn protocol(&self) -> RemoteCommandProtocol {
        self.protocol
    }

    /// Decodes a chunk of `direction`'s bytes received at `time_us`.
    pub fn feed(&mut self, direction: Direction, chunk: &[u8], time_us: u64) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        if direction == Direction::ServerToClient {
            let before = self.at_boundary();
            self.progress.feeding(chunk.len(), before);
        }
        self.reader(direction).push(chunk);
        while let Some((frame, headers)) = self.reader(direction).next(direction)? {
            self.frame(direction, frame, headers, time_us, &mut events)?;
        }
        if direction == Direction::ServerToClient {
            self.progress.fed_whole();
        }
        Ok(events)
    }

    /// The DATA frame (with FIN) that tells the client why custody ended the session, for a
    /// client that received exactly the first `delivered` bytes the server sent: when that is
    /// the end of a whole frame after the last server chunk fed, or before it
    /// ([`server_boundary`](Self::server_boundary)), on the error stream the server had
    /// answered by then, unused by then and still open; `None` otherwise.
    ///
    /// The server's header compression context may be ahead of the client's (a `SYN_REPLY` in
    /// a chunk the client never got); the farewell carries no header block, so that is fine.
    pub fn farewell(&self, farewell: &Farewell, delivered: u64) -> Option<Vec<u8>> {
        let stream_id = self.progress.at(delivered, || self.at_boundary())??;
        // Still open now: neither side has reset it since (a reset in the chunk the client did
        // not get also withholds the farewell, which is only ever the safe side).
        if self.streams.get(&stream_id) != Some(&StreamType::Error) {
            return None;
        }
        farewell.spdy(self.protocol, stream_id)
    }

    /// The server-to-client bytes fed up to the end of the last whole frame: what may reach the
    /// client now.
    pub fn server_boundary(&self) -> u64 {
        self.at_boundary().0
    }

    /// The end of the last whole server frame, and the error stream a farewell may go on after
    /// it: answered by the server, open and unused.
    fn at_boundary(&self) -> (u64, Option<u32>) {
        let partial = self.server.frames.buffered() as u64;
        let boundary = self.progress.fed().saturating_sub(partial);
        let stream = self.error_reply.filter(|id| {
            self.streams.get(id) == Some(&StreamType::Error) && self.error.is_untouched()
        });
        (boundary, stream)
    }

    /// Server-to-client bytes fed.
    #[cfg(test)]
    pub(super) fn server_fed(&self) -> u64 {
        self.progress.fed()
    }

    /// Flushes a Status buffered when the session ends without the error stream ending.
    pub fn finish(&mut self, time_us: u64) -> Vec<Event> {
        self.error
            .finish()
            .map(|kind| event(time_us, kind))
            .into_iter()
            .collect()
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
        time_us: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let fin = frame.is_fin();
        match frame {
            Frame::SynStream { stream_id, .. } => {
                let headers = headers.unwrap_or_default();
                let stream_type = StreamType::from_headers(&headers).map_err(codec(direction))?;
                if stream_type == StreamType::Data {
                    return Err(Error::SpdyStream {
                        direction,
                        stream_id,
                        reason: "a data stream in an exec session",
                    });
                }
                open_stream(direction, stream_id, &mut self.highest_stream)?;
                self.streams.insert(stream_id, stream_type);
                if fin {
                    self.half_close(direction, stream_id, events, time_us);
                }
            }
            Frame::SynReply { stream_id, .. } | Frame::Headers { stream_id, .. } => {
                if direction == Direction::ServerToClient
                    && self.streams.get(&stream_id) == Some(&StreamType::Error)
                {
                    self.error_reply = Some(stream_id);
                }
                if fin {
                    self.half_close(direction, stream_id, events, time_us);
                }
            }
            Frame::Data {
                stream_id, data, ..
            } => {
                let Some(&stream_type) = self.streams.get(&stream_id) else {
                    return check_closed(direction, stream_id, self.highest_stream);
                };
                self.data(direction, stream_type, &data, time_us, events)?;
                if fin {
                    self.half_close(direction, stream_id, events, time_us);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if self.streams.remove(&stream_id) == Some(StreamType::Error) {
                    events.extend(self.error.end().map(|kind| event(time_us, kind)));
                }
            }
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

    fn data(
        &mut self,
        direction: Direction,
        stream_type: StreamType,
        data: &[u8],
        time_us: u64,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let kind = match (direction, stream_type) {
            (_, _) if data.is_empty() => None,
            (Direction::ClientToServer, StreamType::Stdin) => Some(EventKind::Input(data.to_vec())),
            (Direction::ClientToServer, StreamType::Resize) => {
                let sizes = self.resize.decode(data).map_err(codec(direction))?;
                events.extend(
                    sizes
                        .into_iter()
                        .map(|size| event(time_us, resize_event(size))),
                );
                None
            }
            (Direction::ServerToClient, StreamType::Stdout) => {
                Some(EventKind::Output(data.to_vec()))
            }
            (Direction::ServerToClient, StreamType::Stderr) => {
                Some(EventKind::Stderr(data.to_vec()))
            }
            (Direction::ServerToClient, StreamType::Error) => {
                self.error.push(data)?;
                None
            }
            // The other side never reads these (stdin written by the server, ...).
            _ => None,
        };
        events.extend(kind.map(|kind| event(time_us, kind)));
        Ok(())
    }

    /// `direction` will send nothing more on the stream; the server's end of the error stream
    /// is when the client reads the Status.
    fn half_close(
        &mut self,
        direction: Direction,
        stream_id: u32,
        events: &mut Vec<Event>,
        time_us: u64,
    ) {
        if direction == Direction::ServerToClient
            && self.streams.get(&stream_id) == Some(&StreamType::Error)
        {
            events.extend(self.error.end().map(|kind| event(time_us, kind)));
        }
    }
}

/// One direction of a SPDY connection: its frames and its header compression context.
#[derive(Debug)]
pub(super) struct SpdyReader {
    frames: FrameDecoder,
    headers: HeaderDecompressor,
}

impl SpdyReader {
    pub(super) fn new(limits: &Limits) -> Self {
        Self {
            frames: FrameDecoder::with_max_frame_len(limits.max_spdy_frame_len),
            headers: HeaderDecompressor::with_limit(limits.max_header_block_len),
        }
    }

    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.frames.push(chunk);
    }

    /// The next frame, with its header block inflated: every `SYN_STREAM`, `SYN_REPLY` and
    /// HEADERS block is inflated in order, since the direction's zlib stream spans them all.
    pub(super) fn next(
        &mut self,
        direction: Direction,
    ) -> Result<Option<(Frame, Option<HeaderBlock>)>> {
        let Some(frame) = self.frames.next_frame().map_err(codec(direction))? else {
            return Ok(None);
        };
        let headers = match &frame {
            Frame::SynStream { header_block, .. }
            | Frame::SynReply { header_block, .. }
            | Frame::Headers { header_block, .. } => Some(
                self.headers
                    .decode(header_block)
                    .map_err(codec(direction))?,
            ),
            _ => None,
        };
        Ok(Some((frame, headers)))
    }
}

/// Checks a new stream: opened by the client, with an id above every earlier one.
pub(super) fn open_stream(direction: Direction, stream_id: u32, highest: &mut u32) -> Result<()> {
    if direction == Direction::ServerToClient {
        return Err(Error::SpdyStream {
            direction,
            stream_id,
            reason: "servers never open streams",
        });
    }
    if stream_id <= *highest {
        return Err(Error::SpdyStream {
            direction,
            stream_id,
            reason: "stream ids must increase",
        });
    }
    *highest = stream_id;
    Ok(())
}

/// A frame for an untracked stream: dropped when the stream was reset, an error when it was
/// never opened.
pub(super) fn check_closed(direction: Direction, stream_id: u32, highest: u32) -> Result<()> {
    if stream_id <= highest {
        return Ok(());
    }
    Err(Error::SpdyStream {
        direction,
        stream_id,
        reason: "data on a stream never opened",
    })
}
