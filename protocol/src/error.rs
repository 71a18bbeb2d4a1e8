//! The one error type of the protocol codecs.

/// A protocol violation found while decoding bytes, or a value the encoders cannot represent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A base64 channel message did not carry valid standard base64 after its channel digit.
    #[error("invalid base64 in a channel message: {0}")]
    ChannelBase64(#[source] base64::DecodeError),
    /// A v5 CLOSE message was not exactly `[0xFF, channel]`.
    #[error("invalid CLOSE message: expected 2 bytes, got {len}")]
    CloseMessageLength {
        /// The length of the message payload, channel byte included.
        len: usize,
    },
    /// A CLOSE message was asked for on a protocol that has none (only v5 has CLOSE).
    #[error("protocol {protocol} has no CLOSE message")]
    CloseUnsupported {
        /// The negotiated subprotocol name.
        protocol: &'static str,
    },
    /// A SPDY frame announced a length above the configured maximum.
    #[error("SPDY frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length (payload only, without the 8-byte header).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A SPDY control frame carried a version other than 3.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A SPDY control frame's length does not fit its type.
    #[error("invalid length {len} for a SPDY {frame} frame")]
    InvalidFrameLength {
        /// The frame type name.
        frame: &'static str,
        /// The announced length.
        len: usize,
    },
    /// A SPDY frame that must name a stream (or ping) carried id 0.
    #[error("SPDY {frame} frame with stream id 0")]
    ZeroStreamId {
        /// The frame type name.
        frame: &'static str,
    },
    /// A SPDY control frame carried flags or a status its type forbids.
    #[error("invalid SPDY {frame} frame: {reason}")]
    InvalidControlFrame {
        /// The frame type name.
        frame: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value does not fit the field that must carry it on the wire.
    #[error("{field} value {value} does not fit in the wire format")]
    FieldOverflow {
        /// The field name.
        field: &'static str,
        /// The value that does not fit.
        value: u64,
    },
    /// A decompressed SPDY header block ended before its announced pairs did.
    #[error("truncated SPDY header block")]
    HeaderBlockTruncated,
    /// A decompressed SPDY header block had bytes left over after its last pair.
    #[error("{0} trailing bytes after the SPDY header block")]
    HeaderBlockTrailingBytes(usize),
    /// A SPDY header name or value was not UTF-8.
    #[error("SPDY header name or value is not UTF-8")]
    HeaderNotUtf8,
    /// A SPDY header name was not lowercase (spdystream's `UnlowercasedHeaderName`).
    #[error("SPDY header name {0:?} is not lowercase")]
    HeaderNameNotLowercase(String),
    /// A SPDY header name was empty.
    #[error("empty SPDY header name")]
    HeaderNameEmpty,
    /// A SPDY header block named more headers than allowed (a cost bomb: custody's bound, see
    /// [`crate::spdy::MAX_HEADERS`]).
    #[error("SPDY header block names {count} headers, more than the limit of {max}")]
    TooManyHeaders {
        /// The count the block announced.
        count: u32,
        /// The limit.
        max: usize,
    },
    /// A SPDY header name appeared twice in one block (spdystream's `DuplicateHeaders`).
    #[error("duplicate SPDY header {0:?}")]
    DuplicateHeader(String),
    /// A SPDY header block inflated beyond the configured limit (a compression bomb).
    #[error("SPDY header block inflates beyond {limit} bytes")]
    HeaderBlockTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The zlib stream of SPDY header blocks asked for a dictionary other than SPDY/3's.
    #[error("SPDY header block needs dictionary {found:#010x}, expected {expected:#010x}")]
    WrongDictionary {
        /// The Adler-32 of the SPDY/3 dictionary.
        expected: u32,
        /// The Adler-32 the stream asked for.
        found: u32,
    },
    /// The zlib stream of SPDY header blocks is corrupt.
    #[error("failed to inflate a SPDY header block: {0}")]
    Decompress(#[source] flate2::DecompressError),
    /// The zlib stream of SPDY header blocks ended, or left input unconsumed.
    #[error("SPDY header block compression stream ended or stalled with {0} bytes unconsumed")]
    DecompressStalled(usize),
    /// A SPDY header block could not be deflated.
    #[error("failed to deflate a SPDY header block: {0}")]
    Compress(#[source] flate2::CompressError),
    /// A port number was not an integer in 1..=65535.
    #[error("invalid port {0:?}: must be an integer in 1-65535")]
    InvalidPort(String),
    /// A port-forward named more ports than its channels can address.
    #[error("{count} ports requested; a port-forward carries at most {max}")]
    TooManyPorts {
        /// The number of ports requested.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A query had more parameters than Go's `url.ParseQuery` reads (it then reads none).
    #[error("the query has {count} parameters, more than the {max} the API server reads")]
    TooManyQueryParameters {
        /// The number of `&`-separated parameters.
        count: usize,
        /// Go's limit.
        max: usize,
    },
    /// A legacy WebSocket port-forward message used a channel beyond the pairs of its ports.
    #[error("port-forward channel {channel} is beyond the {ports} ports requested")]
    UnknownPortChannel {
        /// The channel id.
        channel: u8,
        /// The number of ports requested.
        ports: usize,
    },
    /// A required stream header was absent.
    #[error("missing stream header {0:?}")]
    MissingHeader(&'static str),
    /// A `streamtype` header named a type the protocol does not use here.
    #[error("invalid stream type {0:?}")]
    InvalidStreamType(String),
    /// A `metav1.Status` could not be parsed or written as JSON.
    #[error("invalid Status JSON: {0}")]
    StatusJson(#[source] serde_json::Error),
    /// An error-stream `Status` broke client-go's `errorDecoderV4` rules.
    #[error("error stream protocol error: {0}")]
    StatusProtocol(String),
    /// A resize message was not a JSON `TerminalSize` object.
    #[error("invalid terminal size JSON: {0}")]
    ResizeJson(#[source] serde_json::Error),
    /// A resize stream buffered more bytes than allowed without completing an object.
    #[error("resize stream buffered more than {limit} bytes without a complete object")]
    ResizeBufferFull {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A WebSocket frame set a reserved bit (RSV1-3) although no extension was negotiated.
    #[error("WebSocket frame sets reserved bits {0:#04x} without a negotiated extension")]
    WebSocketReservedBits(u8),
    /// A WebSocket frame used a reserved opcode.
    #[error("WebSocket frame uses reserved opcode {0:#x}")]
    WebSocketReservedOpcode(u8),
    /// A WebSocket control frame (close, ping, pong) was fragmented.
    #[error("fragmented WebSocket control frame (opcode {0:#x})")]
    WebSocketControlFragmented(u8),
    /// A WebSocket control frame announced more than 125 payload bytes.
    #[error("WebSocket control frame of {0} bytes exceeds 125 bytes")]
    WebSocketControlTooLong(u64),
    /// A WebSocket 64-bit payload length had its most significant bit set.
    #[error("WebSocket 64-bit payload length {0:#x} has its most significant bit set")]
    WebSocketLengthOverflow(u64),
    /// A WebSocket frame announced a payload above the configured maximum.
    #[error("WebSocket frame of {len} bytes exceeds the limit of {max} bytes")]
    WebSocketFrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A reassembled WebSocket message grew beyond the configured maximum.
    #[error("WebSocket message of more than {max} bytes")]
    WebSocketMessageTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// A WebSocket continuation frame arrived with no fragmented message in progress.
    #[error("WebSocket continuation frame without a message to continue")]
    WebSocketUnexpectedContinuation,
    /// A WebSocket text or binary frame arrived while a fragmented message was in progress.
    #[error("WebSocket data frame while a fragmented message is in progress")]
    WebSocketExpectedContinuation,
    /// A WebSocket frame's masking broke the configured rule for its direction.
    #[error("WebSocket frame is {} but must not be", if *.masked { "masked" } else { "unmasked" })]
    WebSocketMasking {
        /// Whether the offending frame was masked.
        masked: bool,
    },
    /// A WebSocket close frame's payload was one byte long or its reason was not UTF-8.
    #[error("invalid WebSocket close frame: {0}")]
    WebSocketCloseFrame(&'static str),
    /// A connection that should start with a PROXY protocol v2 header does not (a client that
    /// did not come through the balancer).
    #[error("no PROXY protocol v2 header: the connection does not start with its signature")]
    ProxyHeaderSignature,
    /// A connection starts with a text PROXY protocol v1 header.
    #[error(
        "a PROXY protocol v1 (text) header; only v2 is supported: configure the balancer with \
         send-proxy-v2"
    )]
    ProxyHeaderV1,
    /// A PROXY header with a version other than 2.
    #[error("PROXY protocol header version {0}; only 2 is supported")]
    ProxyHeaderVersion(u8),
    /// A PROXY v2 header with a command other than LOCAL (0) or PROXY (1).
    #[error("PROXY protocol v2 header with unknown command {0:#x}")]
    ProxyHeaderCommand(u8),
    /// A PROXY v2 header whose address block and TLVs are longer than the limit.
    #[error("PROXY protocol v2 header of {len} address and TLV bytes exceeds the limit of {max}")]
    ProxyHeaderTooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A PROXY v2 header with an unknown address family or transport byte.
    #[error("PROXY protocol v2 header with unknown address family and transport {0:#04x}")]
    ProxyHeaderFamily(u8),
    /// A PROXY v2 header describing a datagram connection (UDP or UNIX datagram) in front of
    /// a stream listener.
    #[error("PROXY protocol v2 header for a datagram transport ({0:#04x}) on a TCP listener")]
    ProxyHeaderDatagram(u8),
    /// A PROXY v2 header shorter than the addresses of its family.
    #[error("PROXY protocol v2 header with {len} address bytes; family {family:#04x} needs {need}")]
    ProxyHeaderAddressTruncated {
        /// The family and transport byte.
        family: u8,
        /// The bytes after the fixed part.
        len: usize,
        /// The address block's length for that family.
        need: usize,
    },
    /// A PROXY v2 header whose TLVs do not fill its length exactly.
    #[error("PROXY protocol v2 TLV of type {kind:#04x} runs past the header ({left} bytes left)")]
    ProxyHeaderTlv {
        /// The type of the TLV that does not fit.
        kind: u8,
        /// The header's bytes left at that TLV.
        left: usize,
    },
}

/// The codecs' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
