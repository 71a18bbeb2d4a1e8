//! RFC 6455 WebSocket framing for a relay that forwards bytes untouched and decodes a copy.
//!
//! [`FrameDecoder`] cuts one direction's byte stream into [`Frame`]s, fed in chunks split
//! anywhere, and validates what a peer without extensions must send: no reserved bits or
//! opcodes, control frames of at most 125 bytes and never fragmented, 64-bit lengths with the
//! top bit clear, and a configurable maximum frame size checked as soon as the header is seen.
//! [`MessageDecoder`] reassembles fragmented data messages (control frames may come between
//! fragments) under a maximum message size, so memory per direction stays bounded.
//! Frames also encode ([`Frame::encode`]), masked or not, for tests and for frames custody
//! writes itself (close, status).
//!
//! No extension (such as permessage-deflate) is supported: Kubernetes clients never offer one
//! (k8s-protocols §1.3).

use bytes::{BufMut, Bytes};

use crate::{Error, Result};

mod decoder;
mod message;

pub use decoder::{FrameDecoder, MaskRule};
pub use message::{CloseFrame, Message, MessageDecoder};

/// The default maximum payload of one frame: x/net/websocket's 32 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 32 << 20;
/// The default maximum size of one reassembled message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 32 << 20;
/// The largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close code 1000, normal closure (what x/net and client-go send at the end of an exec).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1001, going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1002, protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code 1008, policy violation.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code 1009, message too big.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// Close code 1011, internal error.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: continues a fragmented text or binary message.
    Continuation,
    /// 0x1: a UTF-8 text message (the base64 channel protocols).
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: the closing handshake.
    Close,
    /// 0x9: a ping.
    Ping,
    /// 0xA: a pong.
    Pong,
}

impl Opcode {
    /// The opcode of the low four bits of a frame's first byte; reserved values are an error.
    pub fn from_u8(value: u8) -> Result<Self> {
        match value {
            0x0 => Ok(Self::Continuation),
            0x1 => Ok(Self::Text),
            0x2 => Ok(Self::Binary),
            0x8 => Ok(Self::Close),
            0x9 => Ok(Self::Ping),
            0xA => Ok(Self::Pong),
            other => Err(Error::WebSocketReservedOpcode(other)),
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// One WebSocket frame, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN: the last frame of its message (always set on control frames).
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key the frame travelled with (client-to-server frames are masked).
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// An unmasked final frame.
    pub fn new(opcode: Opcode, payload: impl Into<Bytes>) -> Self {
        Self {
            fin: true,
            opcode,
            mask: None,
            payload: payload.into(),
        }
    }

    /// A final binary frame.
    pub fn binary(payload: impl Into<Bytes>) -> Self {
        Self::new(Opcode::Binary, payload)
    }

    /// A final text frame.
    pub fn text(payload: impl Into<Bytes>) -> Self {
        Self::new(Opcode::Text, payload)
    }

    /// A ping.
    pub fn ping(payload: impl Into<Bytes>) -> Self {
        Self::new(Opcode::Ping, payload)
    }

    /// A pong.
    pub fn pong(payload: impl Into<Bytes>) -> Self {
        Self::new(Opcode::Pong, payload)
    }

    /// A close frame with a status code and a reason (truncated to fit 125 bytes at a
    /// character boundary).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Self::new(Opcode::Close, payload)
    }

    /// The same frame with FIN set or cleared.
    #[must_use]
    pub fn with_fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    /// The same frame, masked with `key` when encoded (as clients must send).
    #[must_use]
    pub fn masked(mut self, key: [u8; 4]) -> Self {
        self.mask = Some(key);
        self
    }

    /// A data message cut into frames of at most `fragment_len` payload bytes (at least one
    /// frame, even for an empty payload), each masked with `mask` if given.
    pub fn fragments(
        opcode: Opcode,
        payload: &[u8],
        fragment_len: usize,
        mask: Option<[u8; 4]>,
    ) -> Vec<Self> {
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![payload]
        } else {
            payload.chunks(fragment_len.max(1)).collect()
        };
        let last = chunks.len() - 1;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| Self {
                fin: i == last,
                opcode: if i == 0 { opcode } else { Opcode::Continuation },
                mask,
                payload: Bytes::copy_from_slice(chunk),
            })
            .collect()
    }

    /// Appends the encoded frame (header, masking key, masked payload) to `dst`, with the
    /// shortest length encoding. No validation: invalid frames encode as given, for tests.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_u8(u8::from(self.fin) << 7 | self.opcode.as_u8());
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        match (u8::try_from(len), u16::try_from(len)) {
            (Ok(short), _) if short < 126 => dst.put_u8(mask_bit | short),
            (_, Ok(medium)) => {
                dst.put_u8(mask_bit | 0x7E);
                dst.put_u16(medium);
            }
            _ => {
                dst.put_u8(mask_bit | 0x7F);
                dst.put_u64(u64::try_from(len).unwrap_or(u64::MAX));
            }
        }
        match self.mask {
            Some(key) => {
                dst.put_slice(&key);
                let mut masked = self.payload.to_vec();
                apply_mask(&mut masked, key, 0);
                dst.put_slice(&masked);
            }
            None => dst.put_slice(&self.payload),
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.payload.len());
        self.encode(&mut out);
        out
    }
}

/// XORs `data` with `key`, starting at byte `offset` of the masked payload.
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}
