//! SPDY/3 as Kubernetes uses it (`moby/spdystream`): frames, header blocks and their
//! compression, and the stream vocabulary of exec, attach and port-forward.
//!
//! Despite the `SPDY/3.1` upgrade token, frames carry version 3 and no flow control is used
//! (k8s-protocols §2). Decode a byte stream with [`FrameDecoder`], then inflate the header block
//! of every `SYN_STREAM`, `SYN_REPLY` and HEADERS frame, in order, with the direction's
//! [`HeaderDecompressor`].

mod compression;
mod decoder;
mod dictionary;
mod frame;
mod header_block;

pub use compression::{DEFAULT_HEADER_BLOCK_LIMIT, HeaderCompressor, HeaderDecompressor};
pub use decoder::FrameDecoder;
pub use dictionary::{DICTIONARY, DICTIONARY_ID};
pub use frame::{
    FLAG_CLEAR_SETTINGS, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, GOAWAY_INTERNAL_ERROR, GOAWAY_OK,
    GOAWAY_PROTOCOL_ERROR, HEADER_LEN, MAX_FRAME_LEN, MAX_STREAM_ID, RST_CANCEL,
    RST_FLOW_CONTROL_ERROR, RST_FRAME_TOO_LARGE, RST_INTERNAL_ERROR, RST_INVALID_CREDENTIALS,
    RST_INVALID_STREAM, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_STREAM_ALREADY_CLOSED,
    RST_STREAM_IN_USE, RST_UNSUPPORTED_VERSION, Setting, VERSION,
};
pub use header_block::{HeaderBlock, MAX_HEADERS};

use crate::{Error, Result};

/// The `Upgrade` token of SPDY upgrades.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
/// The request header listing the client's stream protocols, one line each.
pub const PROTOCOL_VERSION_HEADER: &str = "X-Stream-Protocol-Version";
/// The header of a 403 negotiation failure listing the server's protocols, one line each.
pub const ACCEPTED_PROTOCOL_VERSIONS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// The stream header naming what a stream carries (`corev1.StreamType`, lowercased on the wire).
pub const STREAM_TYPE_HEADER: &str = "streamtype";
/// The port-forward stream header naming the container port.
pub const PORT_HEADER: &str = "port";
/// The port-forward stream header pairing a connection's error and data streams.
pub const REQUEST_ID_HEADER: &str = "requestid";

/// What a stream carries, from its `streamtype` header (`api:core/v1/types.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamType {
    /// The error stream, server to client.
    Error,
    /// Standard input, client to server.
    Stdin,
    /// Standard output, server to client.
    Stdout,
    /// Standard error, server to client.
    Stderr,
    /// Resize events, client to server.
    Resize,
    /// Port-forward data, both ways.
    Data,
}

impl StreamType {
    /// Every stream type.
    pub const ALL: [Self; 6] = [
        Self::Error,
        Self::Stdin,
        Self::Stdout,
        Self::Stderr,
        Self::Resize,
        Self::Data,
    ];

    /// The type named by a `streamtype` header value.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The `streamtype` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Resize => "resize",
            Self::Data => "data",
        }
    }

    /// The stream type of a `SYN_STREAM` header block.
    pub fn from_headers(headers: &HeaderBlock) -> Result<Self> {
        let name = headers
            .get(STREAM_TYPE_HEADER)
            .ok_or(Error::MissingHeader(STREAM_TYPE_HEADER))?;
        Self::from_name(name).ok_or_else(|| Error::InvalidStreamType(name.to_owned()))
    }
}

/// A remote-command (exec/attach) protocol spoken over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteCommandProtocol {
    /// `v4.channel.k8s.io`: JSON Status with exit codes on the error stream.
    V4,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v2.channel.k8s.io`: plain-text errors.
    V2,
    /// `channel.k8s.io`: the first version, which cannot signal stdin EOF.
    V1,
}

impl RemoteCommandProtocol {
    /// What a 1.32 kubelet accepts over SPDY, in its order (`SupportedStreamingProtocols`
    /// minus v5, which is WebSocket-only).
    pub const KUBELET_PROTOCOLS: [&'static str; 4] = [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];

    /// The protocol of an `X-Stream-Protocol-Version` value.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::V4, Self::V3, Self::V2, Self::V1]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The `X-Stream-Protocol-Version` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4.channel.k8s.io",
            Self::V3 => "v3.channel.k8s.io",
            Self::V2 => "v2.channel.k8s.io",
            Self::V1 => "channel.k8s.io",
        }
    }

    /// Whether the error stream carries a JSON Status (also on success) rather than text.
    pub fn error_is_status_json(self) -> bool {
        self == Self::V4
    }

    /// Whether the client opens a resize stream when it asks for a TTY (v3 and later).
    pub fn supports_resize(self) -> bool {
        matches!(self, Self::V4 | Self::V3)
    }

    /// How many streams the client opens for `stdio` requested standard streams (stdin, stdout,
    /// stderr): `1 + stdio + (tty && v3+)`, counting the error and resize streams
    /// (`kubelet:pkg/cri/streaming/remotecommand/httpstream.go`).
    pub fn expected_streams(self, stdio: usize, tty: bool) -> usize {
        1 + stdio + usize::from(tty && self.supports_resize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_type_names_round_trip() {
        for t in StreamType::ALL {
            assert_eq!(StreamType::from_name(t.name()), Some(t));
        }
        assert_eq!(StreamType::from_name("Error"), None);
    }

    #[test]
    fn stream_type_from_headers() {
        let headers = HeaderBlock::from_pairs([("streamtype", "stdout")]);
        assert_eq!(
            StreamType::from_headers(&headers).unwrap(),
            StreamType::Stdout
        );
        assert!(matches!(
            StreamType::from_headers(&HeaderBlock::new()),
            Err(Error::MissingHeader("streamtype"))
        ));
        let headers = HeaderBlock::from_pairs([("streamtype", "video")]);
        assert!(matches!(
            StreamType::from_headers(&headers),
            Err(Error::InvalidStreamType(t)) if t == "video"
        ));
    }

    #[test]
    fn remote_command_protocols() {
        for name in RemoteCommandProtocol::KUBELET_PROTOCOLS {
            assert_eq!(
                RemoteCommandProtocol::from_name(name).map(RemoteCommandProtocol::name),
                Some(name)
            );
        }
        assert_eq!(RemoteCommandProtocol::from_name("v5.channel.k8s.io"), None);
        // kubectl exec -i (no tty): error, stdin, stdout, stderr.
        assert_eq!(RemoteCommandProtocol::V4.expected_streams(3, false), 4);
        // kubectl exec -it: error, stdin, stdout, resize.
        assert_eq!(RemoteCommandProtocol::V4.expected_streams(2, true), 4);
        assert_eq!(RemoteCommandProtocol::V2.expected_streams(2, true), 3);
    }
}
