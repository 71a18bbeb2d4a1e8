//! Incremental frame decoding: bytes in at any boundary, validated and unmasked frames out.

use bytes::{Buf, Bytes, BytesMut};

use super::{DEFAULT_MAX_FRAME_LEN, Frame, MAX_CONTROL_PAYLOAD, Opcode, apply_mask};
use crate::{Error, Result};

/// Which masking a direction's frames must have (RFC 6455 §5.1: clients mask, servers do not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaskRule {
    /// Accept masked and unmasked frames alike (what x/net's server and a lenient relay do).
    #[default]
    Any,
    /// Every frame must be masked (client-to-server, strict).
    Required,
    /// No frame may be masked (server-to-client, strict).
    Forbidden,
}

/// Cuts one direction's byte stream into WebSocket frames.
///
/// [`push`](Self::push) chunks as they arrive, then call [`next_frame`](Self::next_frame) until
/// it returns `None`. Header fields are validated as soon as their bytes are in, so a frame
/// announcing more than the maximum is refused before its payload is buffered: the decoder
/// holds at most one maximal frame plus what the caller pushed at once. After an error the
/// stream is out of sync and the connection must be dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: usize,
    mask_rule: MaskRule,
}

impl FrameDecoder {
    /// A decoder with [`DEFAULT_MAX_FRAME_LEN`] accepting masked and unmasked frames.
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder refusing frames whose payload exceeds `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_len,
            mask_rule: MaskRule::Any,
        }
    }

    /// The same decoder enforcing `rule` on every frame's mask bit.
    #[must_use]
    pub fn with_mask_rule(mut self, rule: MaskRule) -> Self {
        self.mask_rule = rule;
        self
    }

    /// The configured maximum payload of one frame.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
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
        let Some(header) = self.parse_header()? else {
            return Ok(None);
        };
        let total = header.len + header.payload_len;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(header.len);
        let mut payload = self.buf.split_to(header.payload_len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            mask: header.mask,
            payload: Bytes::from(payload),
        }))
    }

    /// Validates the header as far as its bytes are buffered; `None` until it is complete.
    fn parse_header(&self) -> Result<Option<Header>> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let reserved = first & 0x70;
        if reserved != 0 {
            return Err(Error::WebSocketReservedBits(reserved));
        }
        let fin = first & 0x80 != 0;
        let opcode = Opcode::from_u8(first & 0x0F)?;
        if opcode.is_control() && !fin {
            return Err(Error::WebSocketControlFragmented(opcode.as_u8()));
        }
        let Some(&second) = self.buf.get(1) else {
            return Ok(None);
        };
        let masked = second & 0x80 != 0;
        match (self.mask_rule, masked) {
            (MaskRule::Required, false) | (MaskRule::Forbidden, true) => {
                return Err(Error::WebSocketMasking { masked });
            }
            _ => {}
        }
        let short = second & 0x7F;
        if opcode.is_control() && usize::from(short) > MAX_CONTROL_PAYLOAD {
            return Err(Error::WebSocketControlTooLong(u64::from(short)));
        }
        let (len_bytes, len) = match short {
            126 => match self.buf.get(2..4) {
                Some(&[a, b]) => (2, u64::from(u16::from_be_bytes([a, b]))),
                _ => return Ok(None),
            },
            127 => match self
                .buf
                .get(2..10)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
            {
                Some(bytes) => (8, u64::from_be_bytes(bytes)),
                None => return Ok(None),
            },
            n => (0, u64::from(n)),
        };
        if len & (1 << 63) != 0 {
            return Err(Error::WebSocketLengthOverflow(len));
        }
        let payload_len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.max_frame_len)
            .ok_or(Error::WebSocketFrameTooLarge {
                len,
                max: self.max_frame_len,
            })?;
        let key_at = 2 + len_bytes;
        let mask = if masked {
            match self
                .buf
                .get(key_at..key_at + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
            {
                Some(key) => Some(key),
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len: key_at + if masked { 4 } else { 0 },
            payload_len,
        }))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// A validated frame header.
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    /// Header bytes, masking key included.
    len: usize,
    payload_len: usize,
}
