//! The one error type of the gateway library, with a variant per thing that can fail.

/// What went wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error with the path or address it concerned.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The audit trail's JSON-lines file could not be opened, written or synced.
    #[error("audit file {path}: {source}")]
    AuditFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The audit trail's index could not be opened, written or queried.
    #[error("audit index: {0}")]
    AuditIndex(#[source] custody_recorder::Error),
    /// An audit event could not be encoded, or its writer task failed.
    #[error("audit event: {0}")]
    AuditEvent(String),
    /// A cluster's upstream connection could not be set up from its kubeconfig or config.
    #[error("cluster {cluster}: {message}")]
    UpstreamConfig {
        /// The cluster name (or the kubeconfig path when it has none yet).
        cluster: String,
        /// What is wrong, for a person to fix.
        message: String,
    },
    /// A browser login to the console failed: the issuer could not be reached or answered
    /// wrongly, or the ID token did not verify.
    #[error("console login: {0}")]
    ConsoleLogin(String),
    /// The gateway's configuration is inconsistent (e.g. the impersonation allow-list).
    #[error("gateway configuration: {0}")]
    GatewayConfig(String),
    /// The authentication configuration is wrong (an issuer, a CA file, `ServiceAccounts`).
    #[error("authentication configuration: {0}")]
    AuthnConfig(String),
    /// A cluster could not review a token (unreachable, refused the gateway, timed out, or
    /// answered something that is not a `TokenReview`).
    #[error("cluster {cluster} cannot review tokens: {reason}")]
    TokenReview {
        /// The cluster name.
        cluster: String,
        /// What went wrong, for the gateway's log.
        reason: String,
    },
    /// A token could not be obtained from an identity provider.
    #[error("cannot get a token from {issuer}: {reason}")]
    TokenFetch {
        /// The issuer URL.
        issuer: String,
        /// What went wrong, for a person to act on.
        reason: String,
    },
    /// A raw (upgrade) connection to an API server could not be opened.
    #[error("cannot connect to the API server {server}: {reason}")]
    UpstreamDial {
        /// The API server's `host:port`.
        server: String,
        /// What failed: TCP, TLS, or the time limit.
        reason: String,
    },
    /// An upgrade handshake with an API server failed before a usable answer arrived: an I/O
    /// error, a malformed or oversized response head, or the time limit.
    #[error("upgrade handshake with the API server {server}: {reason}")]
    UpgradeHandshake {
        /// The API server's `host:port`.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// A copy of a stream's bytes could not be decoded for recording; the session must end
    /// (a stream is never relayed unrecorded).
    #[error("cannot decode the {direction} stream for recording: {source}")]
    StreamDecode {
        /// The direction whose bytes failed to decode.
        direction: crate::stream::decode::Direction,
        /// The codec's error.
        #[source]
        source: custody_protocol::Error,
    },
    /// The negotiated stream protocol is one the recorder cannot decode; the session is refused.
    #[error("cannot record a {kind} session over {transport} with protocol {protocol:?}")]
    StreamProtocolUnsupported {
        /// The session kind (`exec`, `attach`, `port-forward`, `api`).
        kind: &'static str,
        /// `WebSocket` or `SPDY`.
        transport: &'static str,
        /// The negotiated subprotocol or `X-Stream-Protocol-Version`.
        protocol: String,
    },
    /// A SPDY stream broke a rule the recorder relies on (ids, pairing, who opens streams).
    #[error("SPDY stream {stream_id} from the {direction}: {reason}")]
    SpdyStream {
        /// The direction of the offending frame.
        direction: crate::stream::decode::Direction,
        /// The stream id.
        stream_id: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A SPDY control frame the Kubernetes peers never send (spdystream ends the connection).
    #[error("unexpected SPDY {frame} frame from the {direction}")]
    SpdyUnexpectedFrame {
        /// The direction of the frame.
        direction: crate::stream::decode::Direction,
        /// The frame type name.
        frame: &'static str,
    },
    /// An error stream or channel carried more than the recorder buffers.
    #[error("error stream longer than {limit} bytes")]
    ErrorStreamTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A WebSocket message of a type the negotiated protocol does not use.
    #[error("unexpected WebSocket {message} message from the {direction}")]
    StreamMessageType {
        /// The direction of the message.
        direction: crate::stream::decode::Direction,
        /// The message type.
        message: &'static str,
    },
    /// A legacy WebSocket port-forward channel did not start with its port.
    #[error("port-forward channel {channel} starts with port {found}, expected {expected}")]
    PortPrefixMismatch {
        /// The channel id.
        channel: u8,
        /// The port requested for this channel.
        expected: u16,
        /// The port the server wrote.
        found: u16,
    },
}

/// The gateway's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
