//! Message reassembly: fragmented data messages joined, control frames passed through between
//! fragments, close frames parsed.

use bytes::{Bytes, BytesMut};

use super::{DEFAULT_MAX_MESSAGE_LEN, Frame, FrameDecoder, Opcode};
use crate::{Error, Result};

/// One WebSocket message, or one control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message. Its bytes are not checked for UTF-8: the channel protocols decode
    /// text and binary messages alike.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping and its application data.
    Ping(Bytes),
    /// A pong and its application data.
    Pong(Bytes),
    /// A close frame, with its code and reason when it had a body.
    Close(Option<CloseFrame>),
}

/// The body of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (1000 is a normal closure).
    pub code: u16,
    /// The UTF-8 reason, possibly empty.
    pub reason: String,
}

impl CloseFrame {
    /// Parses a close frame's payload: empty (no status), or a 2-byte code and a UTF-8 reason.
    pub fn parse(payload: &[u8]) -> Result<Option<Self>> {
        match payload {
            [] => Ok(None),
            [_] => Err(Error::WebSocketCloseFrame("one-byte payload")),
            [high, low, reason @ ..] => {
                let reason = std::str::from_utf8(reason)
                    .map_err(|_| Error::WebSocketCloseFrame("reason is not UTF-8"))?;
                Ok(Some(Self {
                    code: u16::from_be_bytes([*high, *low]),
                    reason: reason.to_owned(),
                }))
            }
        }
    }
}

/// Decodes one direction's byte stream into messages.
///
/// Data frames are reassembled until their FIN frame; control frames, which may arrive between
/// fragments, are returned at once. A message growing beyond the maximum is an error as soon as
/// the fragment that crosses it arrives, so a direction holds at most one maximal message and
/// one maximal frame.
#[derive(Debug)]
pub struct MessageDecoder {
    frames: FrameDecoder,
    max_message_len: usize,
    partial: Option<(Opcode, BytesMut)>,
}

impl MessageDecoder {
    /// A decoder with the default frame and message limits.
    pub fn new() -> Self {
        Self::with_limits(FrameDecoder::new(), DEFAULT_MAX_MESSAGE_LEN)
    }

    /// A decoder over `frames` refusing messages longer than `max_message_len` bytes.
    pub fn with_limits(frames: FrameDecoder, max_message_len: usize) -> Self {
        Self {
            frames,
            max_message_len,
            partial: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.frames.push(chunk);
    }

    /// Whether a fragmented message is waiting for its final fragment.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// The number of bytes received but not yet returned as frames (a partial frame).
    pub fn buffered(&self) -> usize {
        self.frames.buffered()
    }

    /// The next complete message or control frame, or `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        while let Some(frame) = self.frames.next_frame()? {
            if let Some(message) = self.accept(frame)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Takes one decoded frame; returns a message when the frame completes one.
    pub fn accept(&mut self, frame: Frame) -> Result<Option<Message>> {
        let Frame {
            fin,
            opcode,
            payload,
            ..
        } = frame;
        match opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload))),
            Opcode::Pong => Ok(Some(Message::Pong(payload))),
            Opcode::Close => Ok(Some(Message::Close(CloseFrame::parse(&payload)?))),
            Opcode::Text | Opcode::Binary => {
                if self.partial.is_some() {
                    return Err(Error::WebSocketExpectedContinuation);
                }
                self.check_len(payload.len())?;
                if fin {
                    return Ok(Some(data_message(opcode, payload)));
                }
                self.partial = Some((opcode, BytesMut::from(payload)));
                Ok(None)
            }
            Opcode::Continuation => {
                let Some((first, mut buf)) = self.partial.take() else {
                    return Err(Error::WebSocketUnexpectedContinuation);
                };
                self.check_len(buf.len().saturating_add(payload.len()))?;
                buf.extend_from_slice(&payload);
                if fin {
                    return Ok(Some(data_message(first, buf.freeze())));
                }
                self.partial = Some((first, buf));
                Ok(None)
            }
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.max_message_len {
            return Err(Error::WebSocketMessageTooLarge {
                max: self.max_message_len,
            });
        }
        Ok(())
    }
}

impl Default for MessageDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The message of a data opcode (text or binary).
fn data_message(opcode: Opcode, payload: Bytes) -> Message {
    if opcode == Opcode::Text {
        Message::Text(payload)
    } else {
        Message::Binary(payload)
    }
}
