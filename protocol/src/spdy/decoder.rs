//! Incremental SPDY frame decoding: bytes in at any boundary, whole frames out.

use bytes::{Buf, BytesMut};

use super::frame::{Frame, HEADER_LEN, MAX_FRAME_LEN, announced_len};
use crate::{Error, Result};

/// Cuts a byte stream into SPDY frames.
///
/// Feed it chunks as they arrive ([`push`](Self::push)), however they are split (TCP reads,
/// WebSocket messages of the port-forward tunnel, zero-length chunks), then take complete
/// frames with [`next_frame`](Self::next_frame) until it returns `None`. A frame announcing
/// more than the configured maximum is refused as soon as its header is seen, so the decoder
/// never buffers more than one maximal frame plus whatever the caller pushed at once.
///
/// After an error the byte stream is out of sync and the connection should be dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder accepting every length the 24-bit field can announce (16 MiB − 1).
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A decoder refusing frames whose payload exceeds `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_len,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The number of bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>().copied() else {
            return Ok(None);
        };
        let len = announced_len(header);
        if len > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve the rest of the frame once rather than growing chunk by chunk.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let body = self.buf.split_to(len).freeze();
        Frame::parse(header, body).map(Some)
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}
