//! Port-forward framing: the SPDY stream headers of `portforward.k8s.io` (native or tunnelled in
//! a WebSocket) and the legacy WebSocket channel form of the kubelet.
//!
//! SPDY (k8s-protocols §3.2): per forwarded connection the client opens an `error` and a `data`
//! stream carrying the same `port` and `requestid` headers. Legacy WebSocket (§3.4,
//! `kubelet:pkg/cri/streaming/portforward/websocket.go`): for the i-th port of the `port` query
//! parameter, channel `2i` carries data and `2i+1` errors, and the server starts both channels
//! with the port as 2 little-endian bytes.

use crate::channel::ChannelProtocol;
use crate::spdy::{HeaderBlock, PORT_HEADER, REQUEST_ID_HEADER, StreamType};
use crate::{Error, Result};

/// The SPDY subprotocol of port-forward (`X-Stream-Protocol-Version`).
///
/// Upstream: [`PortForwardV1Name`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/portforward/constants.go).
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// The prefix marking a WebSocket subprotocol as a SPDY tunnel.
///
/// Upstream: [`WebsocketsSPDYTunnelingPrefix`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/portforward/constants.go).
pub const TUNNELING_PREFIX: &str = "SPDY/3.1+";
/// The suffix every tunnelled protocol must have.
///
/// Upstream: [`KubernetesSuffix`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/portforward/constants.go).
pub const KUBERNETES_SUFFIX: &str = ".k8s.io";
/// The WebSocket subprotocol of the SPDY tunnel kubectl 1.31+ offers.
pub const TUNNELING_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The WebSocket subprotocols of the kubelet's legacy port-forward server, in the order a
/// server should list them.
pub const LEGACY_WEBSOCKET_PROTOCOLS: [ChannelProtocol; 3] = [
    ChannelProtocol::V4,
    ChannelProtocol::V4Base64,
    ChannelProtocol::Unnamed,
];

/// Whether a WebSocket subprotocol asks for a SPDY tunnel (`SPDY/3.1+…k8s.io`), as
/// `wsstream.IsWebSocketRequestWithTunnelingProtocol` decides.
pub fn is_tunneling_protocol(name: &str) -> bool {
    name.starts_with(TUNNELING_PREFIX) && name.ends_with(KUBERNETES_SUFFIX)
}

/// Parses a port as the kubelet does (`strconv.ParseUint(s, 10, 16)`, then `> 0`): decimal
/// digits only, 1 to 65535.
pub fn parse_port(value: &str) -> Result<u16> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidPort(value.to_owned()));
    }
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Error::InvalidPort(value.to_owned())),
    }
}

/// The most ports one legacy WebSocket port-forward may name. The kubelet numbers the channels of
/// the i-th port `2i` and `2i+1` with a byte (`wsstream.Conn.initialize`: `byte(i)`), so the
/// channels of a 129th port would wrap onto the first port's and could not be told apart.
pub const MAX_LEGACY_PORTS: usize = 128;

/// Go's bound on the parameters of one query ([`crate::query::MAX_PARAMS`]).
pub const MAX_QUERY_PARAMS: usize = crate::query::MAX_PARAMS;

/// The ports of a port-forward request as the API server and the kubelet read its `ports`
/// query parameter, or an error for a query they would refuse or that custody cannot read with
/// certainty. Empty when the query names no `ports` (SPDY clients name none: their ports are in
/// stream headers).
///
/// The API server parses the query with Go's `url.ParseQuery` ([`crate::query::Query`]: pairs
/// split on `&`, a pair containing `;` or a bad `%` escape dropped, `+` a space, every value of a
/// repeated key kept in order), converts every `ports` value with
/// `metav1.Convert_Slice_string_To_Slice_int32` (apimachinery `pkg/apis/meta/v1/conversion.go`:
/// each value split on `,`, each part `strconv.ParseUint(part, 10, 16)`), and passes the list to
/// the kubelet joined with `,` as `port` (kubernetes `pkg/registry/core/pod/strategy.go`
/// `streamParams`). The kubelet splits it again, refuses a port below 1, and opens one channel
/// pair per listed port, in order, duplicates included (cri-streaming
/// `pkg/streaming/portforward/websocket.go` `NewV4Options`, `handleWebSocketStreams`).
///
/// Refused here: a query with more than [`MAX_QUERY_PARAMS`] parameters (Go then reads none),
/// an invalid port, and more than [`MAX_LEGACY_PORTS`] ports.
pub fn query_ports(raw_query: &str) -> Result<Vec<u16>> {
    let query = crate::query::Query::parse(Some(raw_query))?;
    let values = query.values("ports");
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<String> = values
        .into_iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let ports = parse_ports(values.iter().map(String::as_str))?;
    if ports.len() > MAX_LEGACY_PORTS {
        return Err(Error::TooManyPorts {
            count: ports.len(),
            max: MAX_LEGACY_PORTS,
        });
    }
    Ok(ports)
}

/// Parses the legacy `port` query values: each may be a comma list; at least one port overall.
pub fn parse_ports<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for value in values {
        for part in value.split(',') {
            ports.push(parse_port(part)?);
        }
    }
    if ports.is_empty() {
        return Err(Error::InvalidPort(String::new()));
    }
    Ok(ports)
}

/// The headers of one SPDY port-forward stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardStream {
    /// [`StreamType::Error`] or [`StreamType::Data`].
    pub stream_type: StreamType,
    /// The container port.
    pub port: u16,
    /// The `requestid` header, absent from very old clients.
    pub request_id: Option<String>,
}

impl PortForwardStream {
    /// Reads and validates the headers of a port-forward `SYN_STREAM`, refusing what the
    /// kubelet refuses: a missing or invalid `port`, a stream type other than error/data.
    pub fn from_headers(headers: &HeaderBlock) -> Result<Self> {
        let stream_type = StreamType::from_headers(headers)?;
        if !matches!(stream_type, StreamType::Error | StreamType::Data) {
            return Err(Error::InvalidStreamType(stream_type.name().to_owned()));
        }
        let port = headers
            .get(PORT_HEADER)
            .ok_or(Error::MissingHeader(PORT_HEADER))?;
        let port = parse_port(port)?;
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        Ok(Self {
            stream_type,
            port,
            request_id,
        })
    }

    /// The key pairing this stream with its partner: the `requestid`, or for clients without
    /// it the kubelet's guess from stream ids (the error stream's id, which is the data
    /// stream's id minus 2).
    pub fn pairing_key(&self, stream_id: u32) -> String {
        match (&self.request_id, self.stream_type) {
            (Some(id), _) => id.clone(),
            (None, StreamType::Data) => (i64::from(stream_id) - 2).to_string(),
            (None, _) => stream_id.to_string(),
        }
    }

    /// The headers of this stream, as a client sends them.
    pub fn to_headers(&self) -> HeaderBlock {
        let mut headers = HeaderBlock::new();
        headers
            .insert(crate::spdy::STREAM_TYPE_HEADER, self.stream_type.name())
            .insert(PORT_HEADER, self.port.to_string());
        if let Some(id) = &self.request_id {
            headers.insert(REQUEST_ID_HEADER, id.clone());
        }
        headers
    }
}

/// The kubelet's error-stream text for a failed forward (`httpstream.go` `portForward`):
/// `error forwarding port <port> to pod <pod>, uid <uid>: <cause>`.
pub fn forwarding_error_message(port: u16, pod: &str, uid: &str, cause: &str) -> String {
    format!("error forwarding port {port} to pod {pod}, uid {uid}: {cause}")
}

/// What a legacy WebSocket port-forward channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChannel {
    /// Data of the `port_index`-th port (channel `2i`).
    Data {
        /// Index into the requested ports.
        port_index: usize,
    },
    /// Errors of the `port_index`-th port (channel `2i+1`), server to client.
    Error {
        /// Index into the requested ports.
        port_index: usize,
    },
}

impl PortChannel {
    /// The meaning of a channel id.
    pub fn from_channel(channel: u8) -> Self {
        let port_index = usize::from(channel / 2);
        if channel.is_multiple_of(2) {
            Self::Data { port_index }
        } else {
            Self::Error { port_index }
        }
    }

    /// The channel id, or `None` beyond the 128 ports a byte can address.
    pub fn channel(self) -> Option<u8> {
        let (index, offset) = match self {
            Self::Data { port_index } => (port_index, 0),
            Self::Error { port_index } => (port_index, 1),
        };
        u8::try_from(index.checked_mul(2)? + offset).ok()
    }
}

/// The 2-byte little-endian port the server first writes on both channels of a port.
pub fn port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

/// Reads the initial port prefix of a channel, as kube-rs checks it.
pub fn parse_port_prefix(data: &[u8]) -> Option<u16> {
    data.first_chunk::<2>()
        .map(|bytes| u16::from_le_bytes(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_like_strconv() {
        assert_eq!(parse_port("80").unwrap(), 80);
        assert_eq!(parse_port("65535").unwrap(), 65535);
        for bad in ["", "0", "65536", "+80", " 80", "80 ", "-1", "http", "8O"] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ports(["80,8080", "443"]).unwrap(), [80, 8080, 443]);
        assert!(parse_ports(["80,"]).is_err());
        assert!(parse_ports([]).is_err());
    }

    #[test]
    fn reads_ports_like_the_api_server_and_the_kubelet() {
        // Repeated values and comma lists, duplicates kept, in order.
        assert_eq!(
            query_ports("ports=8080&ports=8080,8080").unwrap(),
            [8080, 8080, 8080]
        );
        assert_eq!(
            query_ports("ports=80%2C443&x=1&ports=0053").unwrap(),
            [80, 443, 53]
        );
        // Keys are unescaped too; `+` is a space (not a digit).
        assert_eq!(query_ports("%70orts=9090").unwrap(), [9090]);
        assert!(query_ports("ports=+80").is_err());
        // No `ports`: SPDY and the tunnel name ports per stream.
        assert_eq!(query_ports("").unwrap(), Vec::<u16>::new());
        assert_eq!(query_ports("port=80").unwrap(), Vec::<u16>::new());
        // Pairs Go drops: a `;` anywhere in the pair, a bad escape in key or value.
        assert_eq!(
            query_ports("ports=1;x=2&ports=9090&ports=80%zz&%zzports=7").unwrap(),
            [9090]
        );
        assert_eq!(query_ports("ports=1;&a=b").unwrap(), Vec::<u16>::new());
        // Values the API server or the kubelet refuse.
        for bad in [
            "ports=",
            "ports=80,",
            "ports=,80",
            "ports=0",
            "ports=65536",
            "ports=80&ports=x",
            "ports=%FF",
        ] {
            assert!(query_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_more_ports_than_channels_and_queries_go_would_not_read() {
        let at_cap = vec!["1"; MAX_LEGACY_PORTS].join(",");
        assert_eq!(
            query_ports(&format!("ports={at_cap}")).unwrap().len(),
            MAX_LEGACY_PORTS
        );
        assert!(matches!(
            query_ports(&format!("ports={at_cap}&ports=2")),
            Err(Error::TooManyPorts { count: 129, .. })
        ));
        let many = vec!["a=1"; MAX_QUERY_PARAMS].join("&");
        assert!(query_ports(&format!("ports=80&{many}")).is_err());
        assert_eq!(
            query_ports(&format!(
                "ports=80&{}",
                vec!["a=1"; MAX_QUERY_PARAMS - 1].join("&")
            ))
            .unwrap(),
            [80]
        );
    }

    #[test]
    fn tunneling_protocol_detection() {
        assert!(is_tunneling_protocol(TUNNELING_PROTOCOL));
        assert!(is_tunneling_protocol("SPDY/3.1+v2.portforward.k8s.io"));
        assert!(!is_tunneling_protocol(PROTOCOL_V1));
        assert!(!is_tunneling_protocol("v4.channel.k8s.io"));
    }

    #[test]
    fn reads_wire_stream_headers() {
        // wire_spdypf.log: the pair of streams of the first connection, headers in Go map order.
        let error =
            HeaderBlock::from_pairs([("port", "80"), ("requestid", "0"), ("streamtype", "error")]);
        let data =
            HeaderBlock::from_pairs([("streamtype", "data"), ("port", "80"), ("requestid", "0")]);
        let error = PortForwardStream::from_headers(&error).unwrap();
        let data = PortForwardStream::from_headers(&data).unwrap();
        assert_eq!(error.stream_type, StreamType::Error);
        assert_eq!(data.stream_type, StreamType::Data);
        assert_eq!((error.port, data.port), (80, 80));
        assert_eq!(error.pairing_key(1), data.pairing_key(3));
        assert_eq!(
            PortForwardStream::from_headers(&data.to_headers()).unwrap(),
            data
        );
    }

    #[test]
    fn pairs_old_clients_by_stream_id() {
        let error = PortForwardStream {
            stream_type: StreamType::Error,
            port: 80,
            request_id: None,
        };
        let data = PortForwardStream {
            stream_type: StreamType::Data,
            ..error.clone()
        };
        assert_eq!(error.pairing_key(5), data.pairing_key(7));
    }

    #[test]
    fn refuses_bad_stream_headers() {
        let no_port = HeaderBlock::from_pairs([("streamtype", "data")]);
        assert!(matches!(
            PortForwardStream::from_headers(&no_port),
            Err(Error::MissingHeader("port"))
        ));
        let zero = HeaderBlock::from_pairs([("streamtype", "data"), ("port", "0")]);
        assert!(matches!(
            PortForwardStream::from_headers(&zero),
            Err(Error::InvalidPort(_))
        ));
        let stdin = HeaderBlock::from_pairs([("streamtype", "stdin"), ("port", "80")]);
        assert!(matches!(
            PortForwardStream::from_headers(&stdin),
            Err(Error::InvalidStreamType(_))
        ));
    }

    #[test]
    fn legacy_channels_and_port_prefix() {
        assert_eq!(
            PortChannel::from_channel(0),
            PortChannel::Data { port_index: 0 }
        );
        assert_eq!(
            PortChannel::from_channel(3),
            PortChannel::Error { port_index: 1 }
        );
        assert_eq!(PortChannel::Data { port_index: 2 }.channel(), Some(4));
        assert_eq!(PortChannel::Error { port_index: 127 }.channel(), Some(255));
        assert_eq!(PortChannel::Data { port_index: 128 }.channel(), None);
        // Port 80 starts both channels with `50 00`.
        assert_eq!(port_prefix(80), [0x50, 0x00]);
        assert_eq!(parse_port_prefix(&[0x50, 0x00, 0xaa]), Some(80));
        assert_eq!(parse_port_prefix(&[0x50]), None);
    }

    #[test]
    fn forwarding_error_text() {
        assert_eq!(
            forwarding_error_message(
                80,
                "p",
                "",
                "dial tcp 127.0.0.1:80: connect: connection refused"
            ),
            "error forwarding port 80 to pod p, uid : dial tcp 127.0.0.1:80: connect: \
             connection refused"
        );
    }
}
