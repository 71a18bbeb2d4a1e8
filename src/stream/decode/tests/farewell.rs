//! Farewells: the bytes custody writes to the client when it ends a session, read back with the
//! protocol codecs and the decoders themselves (which read the error channel as a client does),
//! and withheld wherever the client is not between frames or its error channel is in use.

use std::time::Duration;

use custody_protocol::channel::{ERROR, STDIN, STDOUT};
use custody_protocol::spdy::{Frame as SpdyFrame, FrameDecoder as SpdyFrames, RST_CANCEL};
use custody_protocol::status::ExecOutcome;
use custody_protocol::websocket::{
    CLOSE_NORMAL, CloseFrame, Frame, Message, MessageDecoder, Opcode,
};
use custody_protocol::{ChannelMessage, ChannelProtocol, Status};
use custody_recorder::model::{EventKind, SessionKind};

use super::support::{C2S, S2C, Spdy, bytes, client_frame, data, server_frame};
use crate::stream::decode::{DecoderConfig, Farewell, SessionDecoder, Transport};

const WEBSOCKET_PROTOCOLS: [ChannelProtocol; 5] = [
    ChannelProtocol::V5,
    ChannelProtocol::V4,
    ChannelProtocol::V4Base64,
    ChannelProtocol::Base64,
    ChannelProtocol::V1,
];

fn farewell() -> Farewell {
    Farewell::idle_timeout(Duration::from_secs(30))
}

/// The farewell for a client that received every server byte fed.
fn said(decoder: &SessionDecoder, farewell: &Farewell) -> Option<Vec<u8>> {
    decoder.farewell(farewell, decoder.server_fed())
}

/// What the relay may forward of the server's bytes fed.
fn server_boundary(decoder: &SessionDecoder) -> u64 {
    decoder.server_boundary().unwrap()
}

fn ws_decoder(protocol: ChannelProtocol) -> SessionDecoder {
    SessionDecoder::new(
        SessionKind::Exec,
        Transport::WebSocket,
        protocol.name(),
        &DecoderConfig::default(),
    )
    .unwrap()
}

fn ws_message(protocol: ChannelProtocol, channel: u8, payload: &[u8]) -> Frame {
    let payload = protocol.encode_data(channel, payload);
    let opcode = if protocol.is_base64() {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    Frame::new(opcode, payload.as_bytes().to_vec())
}

/// A WebSocket exec under way: the server's initial message, stdin, its echo.
fn ws_session(protocol: ChannelProtocol) -> SessionDecoder {
    let mut decoder = ws_decoder(protocol);
    let script = [
        (S2C, server_frame(&ws_message(protocol, STDOUT, b""))),
        (C2S, client_frame(ws_message(protocol, STDIN, b"abc\n"))),
        (S2C, server_frame(&ws_message(protocol, STDOUT, b"abc\n"))),
    ];
    for (direction, bytes) in script {
        decoder.feed(direction, &bytes, 0).unwrap();
    }
    decoder
}

/// The Exit event a decoder records from `bytes` sent by the server.
fn exit_of(decoder: &mut SessionDecoder, bytes: &[u8]) -> Vec<EventKind> {
    let mut events: Vec<EventKind> = decoder
        .feed(S2C, bytes, 1)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    events.extend(decoder.finish(2).into_iter().map(|e| e.kind));
    events
}

fn failure(message: &str) -> Vec<EventKind> {
    vec![EventKind::Exit {
        code: None,
        message: message.to_owned(),
    }]
}

#[test]
fn websocket_farewell_is_a_status_on_the_error_channel_then_close_1000() {
    let want = farewell();
    for protocol in WEBSOCKET_PROTOCOLS {
        let mut decoder = ws_session(protocol);
        let bytes = said(&decoder, &want).expect("at a boundary");

        let mut messages = MessageDecoder::new();
        messages.push(&bytes);
        let first = messages.next_message().unwrap().unwrap();
        let (payload, text) = match first {
            Message::Binary(p) => (p, false),
            Message::Text(p) => (p, true),
            other => panic!("{protocol:?}: {other:?}"),
        };
        assert_eq!(text, protocol.is_base64(), "{protocol:?}");
        let ChannelMessage::Data { channel, data } = protocol.decode(payload).unwrap() else {
            panic!("{protocol:?}: not data");
        };
        assert_eq!(channel, ERROR);
        if protocol.error_is_status_json() {
            let status = Status::from_json(&data).unwrap();
            assert_eq!(status, want.status(), "{protocol:?}");
            assert_eq!(status.kind.as_deref(), Some("Status"));
            assert_eq!(status.api_version.as_deref(), Some("v1"));
            assert_eq!(status.reason.as_deref(), Some("Timeout"));
            assert_eq!(status.code, Some(504));
            // What client-go's errorDecoderV4 (v4 and v5) makes of it: this error message.
            assert_eq!(
                status.outcome().unwrap(),
                ExecOutcome::Failure(want.message.clone())
            );
        } else {
            assert_eq!(&data[..], want.message.as_bytes(), "{protocol:?}");
        }
        let Message::Close(Some(CloseFrame { code, reason })) =
            messages.next_message().unwrap().unwrap()
        else {
            panic!("{protocol:?}: no close frame");
        };
        assert_eq!(
            code, CLOSE_NORMAL,
            "client-go reads only 1000 as a clean end"
        );
        assert!(want.message.starts_with(&reason), "{reason}");
        assert_eq!(messages.next_message().unwrap(), None);
        assert_eq!(
            messages.buffered(),
            0,
            "{protocol:?}: nothing after the close"
        );
        // Servers never mask.
        assert_eq!(bytes[1] & 0x80, 0);

        // Read as the client reads its error channel: the command failed with the message.
        assert_eq!(exit_of(&mut decoder, &bytes), failure(&want.message));
    }
}

#[test]
fn websocket_farewell_only_between_messages() {
    for protocol in WEBSOCKET_PROTOCOLS {
        // Half a frame from the server reached the client.
        let mut decoder = ws_session(protocol);
        let frame = server_frame(&ws_message(protocol, STDOUT, b"partial output"));
        decoder.feed(S2C, &frame[..5], 1).unwrap();
        assert_eq!(said(&decoder, &farewell()), None, "{protocol:?}");
        decoder.feed(S2C, &frame[5..], 1).unwrap();
        assert!(said(&decoder, &farewell()).is_some(), "{protocol:?}");

        // A whole first fragment: the client is inside a message.
        let mut decoder = ws_session(protocol);
        let message = ws_message(protocol, STDOUT, b"fragmented");
        let (a, b) = message.payload.split_at(4);
        let first = Frame::new(message.opcode, a.to_vec()).with_fin(false);
        decoder.feed(S2C, &server_frame(&first), 1).unwrap();
        decoder
            .feed(S2C, &server_frame(&Frame::ping(Vec::new())), 1)
            .unwrap();
        assert_eq!(said(&decoder, &farewell()), None, "{protocol:?}");
        let last = Frame::new(Opcode::Continuation, b.to_vec());
        decoder.feed(S2C, &server_frame(&last), 1).unwrap();
        assert!(said(&decoder, &farewell()).is_some(), "{protocol:?}");

        // A client frame cut in half does not matter: only the client reads the farewell.
        let mut decoder = ws_session(protocol);
        let input = client_frame(ws_message(protocol, STDIN, b"typing"));
        decoder.feed(C2S, &input[..3], 1).unwrap();
        assert!(said(&decoder, &farewell()).is_some(), "{protocol:?}");
    }
}

#[test]
fn websocket_farewell_never_follows_the_servers_own_status_or_close() {
    for protocol in WEBSOCKET_PROTOCOLS {
        let mut decoder = ws_session(protocol);
        let status = Status::from_exit_code(0).to_json().unwrap();
        decoder
            .feed(S2C, &server_frame(&ws_message(protocol, ERROR, &status)), 1)
            .unwrap();
        assert_eq!(said(&decoder, &farewell()), None, "{protocol:?}");

        let mut decoder = ws_session(protocol);
        let close = Frame::close(CLOSE_NORMAL, "");
        decoder.feed(S2C, &server_frame(&close), 1).unwrap();
        assert_eq!(said(&decoder, &farewell()), None, "{protocol:?}");
    }
}

fn spdy_decoder(protocol: &str) -> SessionDecoder {
    SessionDecoder::new(
        SessionKind::Exec,
        Transport::Spdy,
        protocol,
        &DecoderConfig::default(),
    )
    .unwrap()
}

/// kubectl `exec -i`: streams 1=error, 3=stdin, 5=stdout, 7=stderr created and answered in that
/// order (the error stream answered only if `reply_error`), then output.
fn spdy_session(protocol: &str, reply_error: bool) -> SessionDecoder {
    spdy_session_with_headers(protocol, reply_error).0
}

/// [`spdy_session`] and the connection's header compression contexts, to go on with.
fn spdy_session_with_headers(protocol: &str, reply_error: bool) -> (SessionDecoder, Spdy) {
    let mut decoder = spdy_decoder(protocol);
    let mut spdy = Spdy::new();
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
        decoder
            .feed(C2S, &spdy.syn_stream(id, &[("streamtype", kind)]), 0)
            .unwrap();
        if id != 1 || reply_error {
            decoder.feed(S2C, &spdy.syn_reply(id), 0).unwrap();
        }
    }
    decoder.feed(C2S, &data(3, b"abc\n", false), 0).unwrap();
    decoder.feed(S2C, &data(5, b"abc\n", false), 0).unwrap();
    (decoder, spdy)
}

#[test]
fn spdy_farewell_is_data_with_fin_on_the_error_stream() {
    let want = Farewell::ended_by_admin(Some("incident 42"));
    for (protocol, json) in [
        ("v4.channel.k8s.io", true),
        ("v3.channel.k8s.io", false),
        ("v2.channel.k8s.io", false),
        ("channel.k8s.io", false),
    ] {
        let mut decoder = spdy_session(protocol, true);
        let bytes = said(&decoder, &want).expect("at a boundary");
        let mut frames = SpdyFrames::new();
        frames.push(&bytes);
        let SpdyFrame::Data {
            stream_id,
            fin,
            data,
        } = frames.next_frame().unwrap().unwrap()
        else {
            panic!("{protocol}: not DATA");
        };
        assert_eq!((stream_id, fin), (1, true), "{protocol}");
        assert_eq!(frames.buffered(), 0);
        if json {
            let status = Status::from_json(&data).unwrap();
            assert_eq!(status, want.status());
            assert_eq!(status.reason.as_deref(), Some("Forbidden"));
            assert_eq!(
                status.outcome().unwrap(),
                ExecOutcome::Failure(want.message.clone())
            );
        } else {
            assert_eq!(&data[..], want.message.as_bytes(), "{protocol}");
        }
        assert_eq!(exit_of(&mut decoder, &bytes), failure(&want.message));
    }
}

#[test]
fn spdy_farewell_only_between_frames_on_an_answered_unused_error_stream() {
    let protocol = "v4.channel.k8s.io";
    // Half a DATA frame from the server reached the client.
    let mut decoder = spdy_session(protocol, true);
    let frame = data(5, b"partial output", false);
    decoder.feed(S2C, &frame[..9], 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);
    decoder.feed(S2C, &frame[9..], 1).unwrap();
    assert!(said(&decoder, &farewell()).is_some());

    // The server has not answered the error stream yet.
    assert_eq!(said(&spdy_session(protocol, false), &farewell()), None);

    // The error stream was reset.
    let mut decoder = spdy_session(protocol, true);
    let reset = bytes(&SpdyFrame::RstStream {
        stream_id: 1,
        status: RST_CANCEL,
    });
    decoder.feed(C2S, &reset, 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);

    // The server wrote on the error stream, or ended it.
    let status = Status::from_exit_code(0).to_json().unwrap();
    let mut decoder = spdy_session(protocol, true);
    decoder.feed(S2C, &data(1, &status[..5], false), 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);
    let mut decoder = spdy_session(protocol, true);
    decoder.feed(S2C, &data(1, b"", true), 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);
}

/// The relay feeds a chunk before forwarding it: when the recording refuses it, or the session
/// ends while the recorder holds it, the client never gets it. The farewell is then built for
/// where the client stands, before that chunk (case b); after every byte fed it is built for
/// the end (case a); anywhere else (a write cut off partway, case c, is never even asked
/// about) there is none.
#[test]
fn websocket_farewell_from_where_the_client_stands() {
    for protocol in WEBSOCKET_PROTOCOLS {
        // The chunk the client did not get ends inside a frame.
        let mut decoder = ws_session(protocol);
        let client_has = decoder.server_fed();
        let frame = server_frame(&ws_message(protocol, STDOUT, b"lots of output"));
        decoder.feed(S2C, &frame[..5], 1).unwrap();
        assert_eq!(
            said(&decoder, &farewell()),
            None,
            "{protocol:?}: (a) inside a frame"
        );
        let before = decoder
            .farewell(&farewell(), client_has)
            .expect("(b) before the chunk");
        assert_eq!(before, said(&ws_session(protocol), &farewell()).unwrap());
        for elsewhere in [
            client_has - 1,
            client_has + 1,
            client_has + 4,
            client_has + 6,
        ] {
            assert_eq!(
                decoder.farewell(&farewell(), elsewhere),
                None,
                "{elsewhere}"
            );
        }

        // The relay holds a frame's start back until its end is fed: a client stands at the
        // end of a whole frame, after the last chunk or before it, never inside one.
        let mut decoder = ws_session(protocol);
        let boundary = decoder.server_fed();
        decoder.feed(S2C, &frame[..5], 1).unwrap();
        assert_eq!(
            server_boundary(&decoder),
            boundary,
            "the start is held back"
        );
        let inside = decoder.server_fed();
        decoder
            .feed(C2S, &client_frame(ws_message(protocol, STDIN, b"x")), 1)
            .unwrap();
        decoder.feed(S2C, &frame[5..], 1).unwrap();
        assert_eq!(server_boundary(&decoder), decoder.server_fed());
        assert!(said(&decoder, &farewell()).is_some(), "{protocol:?}: (a)");
        assert_eq!(
            decoder.farewell(&farewell(), inside),
            None,
            "{protocol:?}: inside"
        );
        assert!(
            decoder.farewell(&farewell(), boundary).is_some(),
            "{protocol:?}: (b) the frame held back and never forwarded"
        );

        // The chunk held the server's own Status and close: the client never read them, its
        // error channel is still free for custody's reason.
        let mut decoder = ws_session(protocol);
        let client_has = decoder.server_fed();
        let status = Status::from_exit_code(0).to_json().unwrap();
        let mut last = server_frame(&ws_message(protocol, STDOUT, b"bye\n"));
        last.extend(server_frame(&ws_message(protocol, ERROR, &status)));
        last.extend(server_frame(&Frame::close(CLOSE_NORMAL, "")));
        decoder.feed(S2C, &last, 1).unwrap();
        assert_eq!(
            said(&decoder, &farewell()),
            None,
            "{protocol:?}: the server's Status"
        );
        let bytes = decoder.farewell(&farewell(), client_has).expect("(b)");
        // Read as that client reads its error channel: custody's reason, not the exit 0.
        let mut client_view = ws_session(protocol);
        assert_eq!(
            exit_of(&mut client_view, &bytes),
            failure(&farewell().message),
            "{protocol:?}"
        );

        // A chunk that could not even be decoded never reached the client either.
        let mut decoder = ws_session(protocol);
        let client_has = decoder.server_fed();
        let reserved_opcode = [0x83, 0x00];
        assert!(decoder.feed(S2C, &reserved_opcode, 1).is_err());
        assert!(
            decoder.farewell(&farewell(), client_has).is_some(),
            "{protocol:?}"
        );
    }
}

#[test]
fn spdy_farewell_from_where_the_client_stands() {
    let protocol = "v4.channel.k8s.io";
    // (b) The chunk the client did not get ends inside a DATA frame.
    let mut decoder = spdy_session(protocol, true);
    let client_has = decoder.server_fed();
    let frame = data(5, b"lots of output", false);
    decoder.feed(S2C, &frame[..9], 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);
    let said_before = decoder.farewell(&farewell(), client_has).expect("(b)");
    assert_eq!(
        Some(said_before),
        said(&spdy_session(protocol, true), &farewell())
    );
    assert_eq!(decoder.farewell(&farewell(), client_has + 1), None);

    // (b) The chunk held the server's exit Status on the error stream, with FIN: the client
    // never got it, so custody's reason goes there.
    let mut decoder = spdy_session(protocol, true);
    let client_has = decoder.server_fed();
    let status = Status::from_exit_code(0).to_json().unwrap();
    let mut last = data(5, b"bye\n", false);
    last.extend(data(1, &status, true));
    decoder.feed(S2C, &last, 1).unwrap();
    assert_eq!(said(&decoder, &farewell()), None);
    let said_before = decoder.farewell(&farewell(), client_has).expect("(b)");
    let mut client_view = spdy_session(protocol, true);
    assert_eq!(
        exit_of(&mut client_view, &said_before),
        failure(&farewell().message)
    );

    // (b) The chunk held the server's answer to the error stream: the client has no answered
    // error stream to read a farewell on.
    let (mut decoder, mut spdy) = spdy_session_with_headers(protocol, false);
    let client_has = decoder.server_fed();
    decoder.feed(S2C, &spdy.syn_reply(1), 1).unwrap();
    assert!(said(&decoder, &farewell()).is_some(), "(a)");
    assert_eq!(decoder.farewell(&farewell(), client_has), None, "(b)");

    // The client reset the error stream after the chunk before: no farewell on it.
    let mut decoder = spdy_session(protocol, true);
    let client_has = decoder.server_fed();
    decoder.feed(S2C, &data(5, b"more", false), 1).unwrap();
    let reset = bytes(&SpdyFrame::RstStream {
        stream_id: 1,
        status: RST_CANCEL,
    });
    decoder.feed(C2S, &reset, 1).unwrap();
    assert_eq!(decoder.farewell(&farewell(), client_has), None);
    assert_eq!(said(&decoder, &farewell()), None);
}

#[test]
fn port_forward_gets_no_farewell() {
    for (transport, protocol, ports) in [
        (Transport::Spdy, "portforward.k8s.io", vec![]),
        (Transport::WebSocket, "SPDY/3.1+portforward.k8s.io", vec![]),
        (Transport::WebSocket, "v4.channel.k8s.io", vec![8080]),
    ] {
        let config = DecoderConfig {
            ports,
            ..DecoderConfig::default()
        };
        let decoder =
            SessionDecoder::new(SessionKind::PortForward, transport, protocol, &config).unwrap();
        assert_eq!(said(&decoder, &farewell()), None, "{protocol}");
    }
}
