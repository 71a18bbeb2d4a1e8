//! The WebSocket channel protocols of exec, attach and legacy port-forward (`*.channel.k8s.io`).
//!
//! Every WebSocket message carries one channel id and a payload. The binary protocols prefix the
//! payload with the id byte; the base64 protocols send text messages whose first character is the
//! ASCII digit `'0' + id` followed by the standard-base64 payload. `v5.channel.k8s.io` adds a
//! CLOSE message `[0xFF, id]` that half-closes one channel. See
//! `apimachinery:pkg/util/httpstream/wsstream/conn.go` and `doc.go`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes};

use crate::{Error, Result};

mod negotiation;

pub use negotiation::{negotiate, negotiate_websocket, split_protocols};

/// Standard input, client to server.
///
/// Upstream: [`remotecommand.StreamStdIn`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const STDIN: u8 = 0;
/// Standard output, server to client (also carries stderr with a TTY).
///
/// Upstream: [`remotecommand.StreamStdOut`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const STDOUT: u8 = 1;
/// Standard error, server to client.
///
/// Upstream: [`remotecommand.StreamStdErr`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const STDERR: u8 = 2;
/// The error channel: a `metav1.Status` (v4/v5) or plain text (older protocols), server to client.
///
/// Upstream: [`remotecommand.StreamErr`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const ERROR: u8 = 3;
/// Terminal resize events as a stream of JSON `TerminalSize` objects, client to server.
///
/// Upstream: [`remotecommand.StreamResize`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const RESIZE: u8 = 4;
/// The v5 CLOSE signal: a message `[CLOSE, channel]` half-closes `channel`.
///
/// Upstream: [`remotecommand.StreamClose`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const CLOSE: u8 = 255;

/// A WebSocket subprotocol of the channel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelProtocol {
    /// `v5.channel.k8s.io`: binary, Status JSON on the error channel, CLOSE messages.
    V5,
    /// `v4.channel.k8s.io`: binary, Status JSON on the error channel.
    V4,
    /// `v4.base64.channel.k8s.io`: base64 text, Status JSON on the error channel.
    V4Base64,
    /// `base64.channel.k8s.io`: base64 text, plain-text errors.
    Base64,
    /// `channel.k8s.io`: binary, plain-text errors.
    V1,
    /// No subprotocol negotiated; behaves like `channel.k8s.io`.
    Unnamed,
}

impl ChannelProtocol {
    /// Every protocol, newest first.
    pub const ALL: [Self; 6] = [
        Self::V5,
        Self::V4,
        Self::V4Base64,
        Self::Base64,
        Self::V1,
        Self::Unnamed,
    ];

    /// The protocol of a `Sec-WebSocket-Protocol` value (`""` is [`Self::Unnamed`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The `Sec-WebSocket-Protocol` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::V5 => "v5.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V4Base64 => "v4.base64.channel.k8s.io",
            Self::Base64 => "base64.channel.k8s.io",
            Self::V1 => "channel.k8s.io",
            Self::Unnamed => "",
        }
    }

    /// Whether messages are base64 text rather than binary.
    pub fn is_base64(self) -> bool {
        matches!(self, Self::V4Base64 | Self::Base64)
    }

    /// Whether the protocol has the CLOSE message (v5 only).
    pub fn supports_close(self) -> bool {
        self == Self::V5
    }

    /// Whether the error channel carries a JSON `metav1.Status`, also on success (v4 and v5);
    /// otherwise it carries plain text and only on failure.
    pub fn error_is_status_json(self) -> bool {
        matches!(self, Self::V5 | Self::V4 | Self::V4Base64)
    }

    /// Decodes the payload of one WebSocket data message (binary or text alike, as the
    /// kubelet's `wsstream` does).
    pub fn decode(self, mut payload: Bytes) -> Result<ChannelMessage> {
        let Some(&first) = payload.first() else {
            return Ok(ChannelMessage::Empty);
        };
        if self.is_base64() {
            // wsstream subtracts '0' from the first byte with byte arithmetic; do the same so
            // out-of-range digits land on ids the caller drops.
            let channel = first.wrapping_sub(b'0');
            let data = STANDARD
                .decode(&payload[1..])
                .map_err(Error::ChannelBase64)?;
            return Ok(ChannelMessage::Data {
                channel,
                data: Bytes::from(data),
            });
        }
        if first == CLOSE && self.supports_close() {
            if payload.len() != 2 {
                return Err(Error::CloseMessageLength { len: payload.len() });
            }
            return Ok(ChannelMessage::Close {
                channel: payload[1],
            });
        }
        payload.advance(1);
        Ok(ChannelMessage::Data {
            channel: first,
            data: payload,
        })
    }

    /// Encodes data on a channel as one WebSocket message payload.
    pub fn encode_data(self, channel: u8, data: &[u8]) -> MessagePayload {
        if self.is_base64() {
            let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            text.push(char::from(b'0'.wrapping_add(channel)));
            STANDARD.encode_string(data, &mut text);
            MessagePayload::Text(text)
        } else {
            let mut bytes = Vec::with_capacity(1 + data.len());
            bytes.push(channel);
            bytes.extend_from_slice(data);
            MessagePayload::Binary(bytes)
        }
    }

    /// Encodes a v5 CLOSE of `channel`.
    pub fn encode_close(self, channel: u8) -> Result<MessagePayload> {
        if !self.supports_close() {
            return Err(Error::CloseUnsupported {
                protocol: self.name(),
            });
        }
        Ok(MessagePayload::Binary(vec![CLOSE, channel]))
    }

    /// Encodes a decoded message again (the inverse of [`Self::decode`]).
    pub fn encode(self, message: &ChannelMessage) -> Result<MessagePayload> {
        match message {
            ChannelMessage::Data { channel, data } => Ok(self.encode_data(*channel, data)),
            ChannelMessage::Close { channel } => self.encode_close(*channel),
            ChannelMessage::Empty if self.is_base64() => Ok(MessagePayload::Text(String::new())),
            ChannelMessage::Empty => Ok(MessagePayload::Binary(Vec::new())),
        }
    }
}

/// One decoded channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// Data on a channel; `data` may be empty (the server's initial message is `[1]`).
    Data {
        /// The channel id.
        channel: u8,
        /// The payload, base64-decoded for the base64 protocols.
        data: Bytes,
    },
    /// A v5 half-close of one channel.
    Close {
        /// The channel being closed.
        channel: u8,
    },
    /// A zero-length message, which receivers ignore.
    Empty,
}

/// An encoded message payload and the WebSocket message type it must travel in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagePayload {
    /// A binary message.
    Binary(Vec<u8>),
    /// A text message (the base64 protocols).
    Text(String),
}

impl MessagePayload {
    /// The payload bytes, whatever the message type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Binary(bytes) => bytes,
            Self::Text(text) => text.as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(protocol: ChannelProtocol, bytes: &'static [u8]) -> ChannelMessage {
        protocol.decode(Bytes::from_static(bytes)).unwrap()
    }

    fn data(channel: u8, bytes: &'static [u8]) -> ChannelMessage {
        ChannelMessage::Data {
            channel,
            data: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn names_round_trip() {
        for protocol in ChannelProtocol::ALL {
            assert_eq!(ChannelProtocol::from_name(protocol.name()), Some(protocol));
        }
        assert_eq!(ChannelProtocol::from_name("v3.channel.k8s.io"), None);
        assert_eq!(
            ChannelProtocol::from_name(""),
            Some(ChannelProtocol::Unnamed)
        );
    }

    #[test]
    fn properties_follow_the_protocol_table() {
        use ChannelProtocol::{Base64, Unnamed, V1, V4, V4Base64, V5};
        let base64: Vec<_> = ChannelProtocol::ALL
            .into_iter()
            .filter(|p| p.is_base64())
            .collect();
        assert_eq!(base64, [V4Base64, Base64]);
        let close: Vec<_> = ChannelProtocol::ALL
            .into_iter()
            .filter(|p| p.supports_close())
            .collect();
        assert_eq!(close, [V5]);
        let json: Vec<_> = ChannelProtocol::ALL
            .into_iter()
            .filter(|p| p.error_is_status_json())
            .collect();
        assert_eq!(json, [V5, V4, V4Base64]);
        assert!(!V1.error_is_status_json() && !Unnamed.error_is_status_json());
    }

    #[test]
    fn decodes_wire_stdin_and_close() {
        // `printf 'line1\nline2\n' | kubectl exec -i p -- cat` (wire_ws.log).
        assert_eq!(
            decode(ChannelProtocol::V5, b"\x00line1\nline2\n"),
            data(STDIN, b"line1\nline2\n")
        );
        assert_eq!(
            decode(ChannelProtocol::V5, b"\xff\x00"),
            ChannelMessage::Close { channel: STDIN }
        );
    }

    #[test]
    fn close_must_be_two_bytes() {
        for bad in [&b"\xff"[..], b"\xff\x00\x00"] {
            let err = ChannelProtocol::V5
                .decode(Bytes::copy_from_slice(bad))
                .unwrap_err();
            assert!(matches!(err, Error::CloseMessageLength { len } if len == bad.len()));
        }
    }

    #[test]
    fn byte_255_is_plain_data_before_v5() {
        assert_eq!(decode(ChannelProtocol::V4, b"\xff\x00"), data(255, b"\x00"));
    }

    #[test]
    fn initial_empty_stdout_and_empty_messages() {
        assert_eq!(decode(ChannelProtocol::V5, b"\x01"), data(STDOUT, b""));
        assert_eq!(decode(ChannelProtocol::V5, b""), ChannelMessage::Empty);
        assert_eq!(decode(ChannelProtocol::Base64, b""), ChannelMessage::Empty);
    }

    #[test]
    fn decodes_wire_resize() {
        assert_eq!(
            decode(ChannelProtocol::V5, b"\x04{\"Width\":100,\"Height\":30}\n"),
            data(RESIZE, b"{\"Width\":100,\"Height\":30}\n")
        );
    }

    #[test]
    fn base64_matches_the_wsstream_doc_example() {
        // doc.go: "send foo\n (base64 Zm9vCg==) on channel '0'", "receive \n (Cg==) on '1'".
        assert_eq!(
            decode(ChannelProtocol::Base64, b"0Zm9vCg=="),
            data(STDIN, b"foo\n")
        );
        assert_eq!(
            ChannelProtocol::V4Base64.encode_data(STDOUT, b"\n"),
            MessagePayload::Text("1Cg==".to_owned())
        );
        assert_eq!(decode(ChannelProtocol::V4Base64, b"3"), data(ERROR, b""));
    }

    #[test]
    fn base64_rejects_garbage() {
        let err = ChannelProtocol::Base64
            .decode(Bytes::from_static(b"0***"))
            .unwrap_err();
        assert!(matches!(err, Error::ChannelBase64(_)));
    }

    #[test]
    fn encode_decode_round_trip() {
        let messages = [
            data(STDIN, b""),
            data(STDOUT, b"hello from ws v5\n"),
            data(ERROR, br#"{"metadata":{},"status":"Success"}"#),
            data(9, &[0, 1, 2, 255, 254]),
        ];
        for protocol in ChannelProtocol::ALL {
            for message in &messages {
                let payload = protocol.encode(message).unwrap();
                assert_eq!(
                    matches!(payload, MessagePayload::Text(_)),
                    protocol.is_base64()
                );
                let decoded = protocol
                    .decode(Bytes::copy_from_slice(payload.as_bytes()))
                    .unwrap();
                assert_eq!(&decoded, message, "{protocol:?}");
            }
        }
        let close = ChannelMessage::Close { channel: STDIN };
        let payload = ChannelProtocol::V5.encode(&close).unwrap();
        assert_eq!(payload, MessagePayload::Binary(vec![0xff, 0x00]));
        assert!(matches!(
            ChannelProtocol::V4.encode(&close),
            Err(Error::CloseUnsupported { .. })
        ));
    }
}
