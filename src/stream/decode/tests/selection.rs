//! Picking the decoder from the negotiated protocol, and refusing what cannot be decoded.

use custody_recorder::model::SessionKind;

use crate::Error;
use crate::stream::decode::{DecoderConfig, SessionDecoder, Transport};

fn pick(
    kind: SessionKind,
    transport: Transport,
    protocol: &str,
    ports: &[u16],
) -> Option<&'static str> {
    let config = DecoderConfig {
        ports: ports.to_vec(),
        ..DecoderConfig::default()
    };
    match SessionDecoder::new(kind, transport, protocol, &config) {
        Ok(SessionDecoder::Channel(_)) => Some("channel"),
        Ok(SessionDecoder::SpdyExec(_)) => Some("spdy-exec"),
        Ok(SessionDecoder::PortForward(_)) => Some("portforward"),
        Ok(SessionDecoder::Tunnel(_)) => Some("tunnel"),
        Ok(SessionDecoder::LegacyPortForward(_)) => Some("legacy"),
        Err(Error::StreamProtocolUnsupported { .. }) => None,
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn picks_by_kind_transport_and_protocol() {
    use SessionKind::{Api, Attach, Exec, PortForward};
    use Transport::{Spdy, WebSocket};
    type Case = (
        SessionKind,
        Transport,
        &'static str,
        &'static [u16],
        Option<&'static str>,
    );
    let cases: [Case; 19] = [
        (Exec, WebSocket, "v5.channel.k8s.io", &[], Some("channel")),
        (Attach, WebSocket, "v4.channel.k8s.io", &[], Some("channel")),
        (
            Exec,
            WebSocket,
            "v4.base64.channel.k8s.io",
            &[],
            Some("channel"),
        ),
        (
            Exec,
            WebSocket,
            "base64.channel.k8s.io",
            &[],
            Some("channel"),
        ),
        (Exec, WebSocket, "channel.k8s.io", &[], Some("channel")),
        (Exec, WebSocket, "", &[], Some("channel")),
        (Exec, WebSocket, "v6.channel.k8s.io", &[], None),
        (Exec, WebSocket, "SPDY/3.1+portforward.k8s.io", &[], None),
        (Exec, Spdy, "v4.channel.k8s.io", &[], Some("spdy-exec")),
        (Attach, Spdy, "v2.channel.k8s.io", &[], Some("spdy-exec")),
        (Exec, Spdy, "", &[], Some("spdy-exec")),
        (Exec, Spdy, "v5.channel.k8s.io", &[], None),
        (
            PortForward,
            Spdy,
            "portforward.k8s.io",
            &[],
            Some("portforward"),
        ),
        (PortForward, Spdy, "", &[], None),
        (
            PortForward,
            WebSocket,
            "SPDY/3.1+portforward.k8s.io",
            &[],
            Some("tunnel"),
        ),
        (
            PortForward,
            WebSocket,
            "SPDY/3.1+v2.portforward.k8s.io",
            &[],
            None,
        ),
        (
            PortForward,
            WebSocket,
            "v4.channel.k8s.io",
            &[80],
            Some("legacy"),
        ),
        (PortForward, WebSocket, "v5.channel.k8s.io", &[80], None),
        (Api, WebSocket, "v5.channel.k8s.io", &[], None),
    ];
    for (kind, transport, protocol, ports, expected) in cases {
        assert_eq!(
            pick(kind, transport, protocol, ports),
            expected,
            "{kind:?} {transport:?} {protocol:?}"
        );
    }
    // The legacy form needs the requested ports.
    assert_eq!(pick(PortForward, WebSocket, "v4.channel.k8s.io", &[]), None);
}
