//! Port-forward sessions: native SPDY, the WebSocket tunnel, the legacy channel form.

use custody_protocol::ChannelProtocol;
use custody_protocol::spdy::{Frame as SpdyFrame, RST_CANCEL};
use custody_protocol::websocket::{CLOSE_NORMAL, Frame, Opcode};
use custody_recorder::model::{EventKind, SessionKind};
use sha2::{Digest, Sha256};

use super::support::{
    C2S, S2C, Script, Spdy, bytes, client_frame, data, decode_every_way, feed_all, server_frame,
};
use crate::Error;
use crate::stream::decode::{DecoderConfig, SessionDecoder, Transport};

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const RESPONSE_A: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n";
const RESPONSE_B: &[u8] = b"hello";
const REFUSED: &str = "error forwarding port 5432 to pod p, uid : connect: connection refused";

fn decoder(transport: Transport, protocol: &str, capture: bool, ports: &[u16]) -> SessionDecoder {
    let config = DecoderConfig {
        capture_port_forward: capture,
        ports: ports.to_vec(),
        ..DecoderConfig::default()
    };
    SessionDecoder::new(SessionKind::PortForward, transport, protocol, &config).unwrap()
}

fn sha(data: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(data)
        .iter()
        .fold(String::new(), |mut out, b| {
            write!(out, "{b:02x}").unwrap();
            out
        })
}

fn closed(connection: u32, to_pod: &[u8], from_pod: &[u8]) -> EventKind {
    EventKind::ConnectionClosed {
        connection,
        bytes_to_pod: to_pod.len() as u64,
        bytes_from_pod: from_pod.len() as u64,
        sha256_to_pod: sha(to_pod),
        sha256_from_pod: sha(from_pod),
    }
}

/// Two connections as kubectl and the kubelet run them (`wire_spdypf.log`): the first completes
/// (FIN both ways), the second fails to connect (error text, then the client resets it).
fn spdy_frames() -> Script {
    let mut spdy = Spdy::new();
    let headers = |kind, port, id| [("streamtype", kind), ("port", port), ("requestid", id)];
    vec![
        (C2S, spdy.syn_stream(1, &headers("error", "80", "0"))),
        (S2C, spdy.syn_reply(1)),
        (C2S, data(1, b"", true)),
        (C2S, spdy.syn_stream(3, &headers("data", "80", "0"))),
        (S2C, spdy.syn_reply(3)),
        (C2S, data(3, REQUEST, false)),
        (C2S, bytes(&SpdyFrame::Ping { id: 1 })),
        (S2C, data(3, RESPONSE_A, false)),
        (C2S, data(3, b"", true)),
        (S2C, bytes(&SpdyFrame::Ping { id: 1 })),
        (S2C, data(3, RESPONSE_B, false)),
        (S2C, data(3, b"", true)),
        (S2C, data(1, b"", true)),
        (C2S, spdy.syn_stream(5, &headers("error", "5432", "1"))),
        (S2C, spdy.syn_reply(5)),
        (C2S, data(5, b"", true)),
        (C2S, spdy.syn_stream(7, &headers("data", "5432", "1"))),
        (S2C, spdy.syn_reply(7)),
        (C2S, data(7, b"x", false)),
        (S2C, data(5, REFUSED.as_bytes(), false)),
        (S2C, data(5, b"", true)),
        (
            C2S,
            bytes(&SpdyFrame::RstStream {
                stream_id: 7,
                status: RST_CANCEL,
            }),
        ),
        // Opened, never closed: closed at the end of the session.
        (C2S, spdy.syn_stream(9, &headers("data", "80", "2"))),
        (C2S, data(9, b"tail", false)),
    ]
}

fn expected(capture: bool) -> Vec<EventKind> {
    let data = |connection, to_pod, data: &[u8]| EventKind::ConnectionData {
        connection,
        to_pod,
        data: data.to_vec(),
    };
    let mut events = vec![EventKind::ConnectionOpened {
        connection: 0,
        port: 80,
    }];
    if capture {
        events.extend([
            data(0, true, REQUEST),
            data(0, false, RESPONSE_A),
            data(0, false, RESPONSE_B),
        ]);
    }
    events.push(closed(0, REQUEST, &[RESPONSE_A, RESPONSE_B].concat()));
    events.push(EventKind::ConnectionOpened {
        connection: 1,
        port: 5432,
    });
    if capture {
        events.push(data(1, true, b"x"));
    }
    events.push(EventKind::Marker(format!(
        "port-forward connection 1 to port 5432: {REFUSED}"
    )));
    events.push(closed(1, b"x", b""));
    events.push(EventKind::ConnectionOpened {
        connection: 2,
        port: 80,
    });
    if capture {
        events.push(data(2, true, b"tail"));
    }
    events.push(closed(2, b"tail", b""));
    events
}

#[test]
fn native_spdy_every_chunking() {
    for capture in [false, true] {
        let events = decode_every_way(
            || decoder(Transport::Spdy, "portforward.k8s.io", capture, &[]),
            &spdy_frames(),
        );
        assert_eq!(events, expected(capture), "capture {capture}");
    }
}

/// Cuts a SPDY frame the way spdystream writes it into the tunnel: one message per field.
fn spdystream_writes(frame: &[u8]) -> Vec<&[u8]> {
    let cuts: &[usize] = if frame[0] & 0x80 == 0 {
        &[4, 4]
    } else if frame[3] == 1 {
        &[2, 2, 4, 4, 4, 1, 1]
    } else {
        &[2, 2, 4]
    };
    let mut rest = frame;
    let mut out = Vec::new();
    for &cut in cuts {
        let (now, later) = rest.split_at(cut);
        out.push(now);
        rest = later;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn tunnel_script() -> Script {
    let mut script = Script::new();
    for (direction, frame) in spdy_frames() {
        for message in spdystream_writes(&frame) {
            let frame = Frame::binary(message.to_vec());
            script.push(match direction {
                C2S => (C2S, client_frame(frame)),
                S2C => (S2C, server_frame(&frame)),
            });
        }
        // The empty messages of the capture, a ping now and then.
        let empty = Frame::binary(Vec::new());
        script.push(match direction {
            C2S => (C2S, client_frame(empty)),
            S2C => (S2C, server_frame(&Frame::ping(Vec::new()))),
        });
    }
    script
}

#[test]
fn tunnelled_spdy_in_tiny_messages_every_chunking() {
    let script = tunnel_script();
    // The first SYN_STREAM travels as the capture's messages #1-#7: 2, 2, 4, 4, 4, 1, 1 bytes
    // (each a 6-byte masked frame header plus the payload).
    let sizes: Vec<usize> = script[..7].iter().map(|(_, b)| b.len() - 6).collect();
    assert_eq!(sizes, [2, 2, 4, 4, 4, 1, 1]);
    let events = decode_every_way(
        || {
            decoder(
                Transport::WebSocket,
                "SPDY/3.1+portforward.k8s.io",
                false,
                &[],
            )
        },
        &script,
    );
    assert_eq!(events, expected(false));
}

#[test]
fn the_tunnel_refuses_text_messages() {
    let text = client_frame(Frame::text(&b"80 03"[..]));
    let mut decoder = decoder(
        Transport::WebSocket,
        "SPDY/3.1+portforward.k8s.io",
        false,
        &[],
    );
    assert!(matches!(
        feed_all(&mut decoder, &[(C2S, &text[..])]),
        Err(Error::StreamMessageType {
            message: "text",
            ..
        })
    ));
}

#[test]
fn duplicate_streams_of_one_request_are_refused() {
    let mut spdy = Spdy::new();
    let a = spdy.syn_stream(
        1,
        &[("streamtype", "data"), ("port", "80"), ("requestid", "0")],
    );
    let b = spdy.syn_stream(
        3,
        &[("streamtype", "data"), ("port", "80"), ("requestid", "0")],
    );
    let mut decoder = decoder(Transport::Spdy, "portforward.k8s.io", false, &[]);
    assert!(matches!(
        feed_all(&mut decoder, &[(C2S, &a[..]), (C2S, &b[..])]),
        Err(Error::SpdyStream { stream_id: 3, .. })
    ));
}

fn legacy_message(protocol: ChannelProtocol, channel: u8, data: &[u8]) -> Frame {
    let payload = protocol.encode_data(channel, data);
    let opcode = if protocol.is_base64() {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    Frame::new(opcode, payload.as_bytes().to_vec())
}

#[test]
fn legacy_websocket_every_chunking() {
    for protocol in [
        ChannelProtocol::V4,
        ChannelProtocol::V4Base64,
        ChannelProtocol::Unnamed,
    ] {
        let m = |channel, data: &[u8]| legacy_message(protocol, channel, data);
        let script: Script = vec![
            (S2C, server_frame(&m(0, &[0x50, 0x00]))),
            (S2C, server_frame(&m(1, &[0x50]))),
            (S2C, server_frame(&m(1, &[0x00]))),
            (S2C, server_frame(&m(2, &[0xbb, 0x01]))),
            (S2C, server_frame(&m(3, &[0xbb, 0x01]))),
            (C2S, client_frame(m(0, REQUEST))),
            (C2S, client_frame(Frame::ping(Vec::new()))),
            (S2C, server_frame(&m(0, RESPONSE_A))),
            (C2S, client_frame(m(2, b"tls"))),
            (S2C, server_frame(&m(3, b"connection refused"))),
            (S2C, server_frame(&m(0, RESPONSE_B))),
            (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
            (S2C, server_frame(&m(0, b"after close"))),
        ];
        let events = decode_every_way(
            || decoder(Transport::WebSocket, protocol.name(), false, &[80, 443]),
            &script,
        );
        assert_eq!(
            events,
            [
                EventKind::ConnectionOpened {
                    connection: 0,
                    port: 80
                },
                EventKind::ConnectionOpened {
                    connection: 1,
                    port: 443
                },
                EventKind::Marker(
                    "port-forward connection 1 to port 443: connection refused".to_owned()
                ),
                closed(0, REQUEST, &[RESPONSE_A, RESPONSE_B].concat()),
                closed(1, b"tls", b""),
            ],
            "{protocol:?}"
        );
    }
}

/// `?ports=8080&ports=8080,8080`: three pairs for one port listed three times, each its own
/// recorded connection (the kubelet dials the port once per listed entry).
#[test]
fn legacy_duplicate_ports_are_each_a_recorded_connection() {
    let m = |channel, data: &[u8]| legacy_message(ChannelProtocol::V4, channel, data);
    let prefix = 8080u16.to_le_bytes();
    let mut script: Script = Vec::new();
    for channel in 0..6 {
        script.push((S2C, server_frame(&m(channel, &prefix))));
    }
    script.extend([
        (C2S, client_frame(m(0, b"zero"))),
        (C2S, client_frame(m(2, b"two"))),
        (C2S, client_frame(m(4, b"four"))),
        (S2C, server_frame(&m(4, b"FOUR"))),
        (S2C, server_frame(&m(2, b"TWO"))),
        (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
    ]);
    let events = decode_every_way(
        || {
            decoder(
                Transport::WebSocket,
                "v4.channel.k8s.io",
                false,
                &[8080, 8080, 8080],
            )
        },
        &script,
    );
    let opened = |connection| EventKind::ConnectionOpened {
        connection,
        port: 8080,
    };
    assert_eq!(
        events,
        [
            opened(0),
            opened(1),
            opened(2),
            closed(0, b"zero", b""),
            closed(1, b"two", b"TWO"),
            closed(2, b"four", b"FOUR"),
        ]
    );
}

/// The kubelet drops a message on a channel it has no pair for; custody cannot place it in the
/// recording, so the session ends, whichever side sends it.
#[test]
fn legacy_channel_beyond_the_ports_is_refused() {
    let v4 = ChannelProtocol::V4;
    let base64 = ChannelProtocol::V4Base64;
    for (protocol, direction, frame) in [
        (v4, C2S, client_frame(legacy_message(v4, 2, b"x"))),
        (v4, S2C, server_frame(&legacy_message(v4, 3, b"x"))),
        // A character below '0' wraps to a channel id far beyond the pairs.
        (base64, C2S, client_frame(legacy_message(base64, 255, b"x"))),
    ] {
        let protocol = protocol.name();
        let mut decoder = decoder(Transport::WebSocket, protocol, false, &[80]);
        let result = feed_all(&mut decoder, &[(direction, &frame[..])]);
        assert!(
            matches!(
                result,
                Err(Error::StreamDecode {
                    source: custody_protocol::Error::UnknownPortChannel { ports: 1, .. },
                    ..
                })
            ),
            "{result:?}"
        );
    }
}

#[test]
fn legacy_port_prefix_must_match() {
    let wrong = server_frame(&legacy_message(ChannelProtocol::V4, 0, &[0x51, 0x00]));
    let mut decoder = decoder(Transport::WebSocket, "v4.channel.k8s.io", false, &[80]);
    assert!(matches!(
        feed_all(&mut decoder, &[(S2C, &wrong[..])]),
        Err(Error::PortPrefixMismatch {
            channel: 0,
            expected: 80,
            found: 81
        })
    ));
}
