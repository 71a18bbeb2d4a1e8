//! WebSocket exec/attach sessions.

use custody_protocol::channel::{ERROR, RESIZE, STDERR, STDIN, STDOUT};
use custody_protocol::websocket::{CLOSE_NORMAL, Frame, Opcode};
use custody_protocol::{ChannelProtocol, Status};
use custody_recorder::model::{EventKind, SessionKind};

use super::support::{C2S, S2C, Script, client_frame, decode_every_way, feed_all, server_frame};
use crate::Error;
use crate::stream::decode::{DecoderConfig, Direction, SessionDecoder, Transport};

fn decoder(protocol: ChannelProtocol) -> SessionDecoder {
    SessionDecoder::new(
        SessionKind::Exec,
        Transport::WebSocket,
        protocol.name(),
        &DecoderConfig::default(),
    )
    .unwrap()
}

fn message(protocol: ChannelProtocol, channel: u8, data: &[u8]) -> Frame {
    let payload = protocol.encode_data(channel, data);
    let opcode = if protocol.is_base64() {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    Frame::new(opcode, payload.as_bytes().to_vec())
}

/// The §1.8 v5 TTY session (`wire_tty.log`'s client side), with the stdin message fragmented
/// around a ping, the resize stream split over messages and the Status over two messages.
fn v5_tty_session() -> Script {
    let v5 = ChannelProtocol::V5;
    let status = Status::from_exit_code(3).to_json().unwrap();
    let (status_a, status_b) = status.split_at(40);
    let stdin = message(v5, STDIN, b"ls\n").payload;
    vec![
        (S2C, server_frame(&message(v5, STDOUT, b""))),
        (
            C2S,
            client_frame(Frame::binary(&b"\x04{\"Width\":100,\"Height\":30}\n"[..])),
        ),
        (
            S2C,
            server_frame(&message(v5, STDOUT, b"hello from ws v5\n")),
        ),
        (
            C2S,
            client_frame(Frame::binary(stdin.slice(..2)).with_fin(false)),
        ),
        (C2S, client_frame(Frame::ping(Vec::new()))),
        (
            C2S,
            client_frame(Frame::new(Opcode::Continuation, stdin.slice(2..))),
        ),
        (S2C, server_frame(&Frame::pong(Vec::new()))),
        (C2S, client_frame(message(v5, RESIZE, b"{\"Width\":80,"))),
        (
            C2S,
            client_frame(message(
                v5,
                RESIZE,
                b"\"Height\":24}{\"Width\":81,\"Height\":25}",
            )),
        ),
        (S2C, server_frame(&message(v5, STDOUT, b"a.txt\r\n"))),
        (S2C, server_frame(&message(v5, ERROR, status_a))),
        (S2C, server_frame(&message(v5, ERROR, status_b))),
        (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
        (C2S, client_frame(Frame::close(CLOSE_NORMAL, ""))),
    ]
}

#[test]
fn v5_tty_session_every_chunking() {
    let events = decode_every_way(|| decoder(ChannelProtocol::V5), &v5_tty_session());
    assert_eq!(
        events,
        [
            EventKind::Resize {
                cols: 100,
                rows: 30
            },
            EventKind::Output(b"hello from ws v5\n".to_vec()),
            EventKind::Input(b"ls\n".to_vec()),
            EventKind::Resize { cols: 80, rows: 24 },
            EventKind::Resize { cols: 81, rows: 25 },
            EventKind::Output(b"a.txt\r\n".to_vec()),
            EventKind::Exit {
                code: Some(3),
                message: String::new()
            },
        ]
    );
}

#[test]
fn events_carry_the_time_of_the_chunk_that_completes_them() {
    let script = v5_tty_session();
    let mut decoder = decoder(ChannelProtocol::V5);
    let resize = &script[1].1;
    assert!(decoder.feed(C2S, &resize[..5], 10).unwrap().is_empty());
    let events = decoder.feed(C2S, &resize[5..], 20).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].time_us, 20);
}

#[test]
fn v5_close_of_the_error_channel_ends_it_and_stdin_close_records_nothing() {
    let v5 = ChannelProtocol::V5;
    let close = |channel| Frame::binary(v5.encode_close(channel).unwrap().as_bytes().to_vec());
    let script: Script = vec![
        (C2S, client_frame(message(v5, STDIN, b"line1\nline2\n"))),
        (C2S, client_frame(close(STDIN))),
        (S2C, server_frame(&message(v5, STDOUT, b"line1\nline2\n"))),
        (S2C, server_frame(&message(v5, STDERR, b"warning\n"))),
        (
            S2C,
            server_frame(&message(
                v5,
                ERROR,
                br#"{"metadata":{},"status":"Success"}"#,
            )),
        ),
        (S2C, server_frame(&close(ERROR))),
        // Anything after the end of the error channel is not read by the client.
        (S2C, server_frame(&message(v5, ERROR, b"late"))),
    ];
    let events = decode_every_way(|| decoder(v5), &script);
    assert_eq!(
        events,
        [
            EventKind::Input(b"line1\nline2\n".to_vec()),
            EventKind::Output(b"line1\nline2\n".to_vec()),
            EventKind::Stderr(b"warning\n".to_vec()),
            EventKind::Exit {
                code: Some(0),
                message: String::new()
            },
        ]
    );
}

#[test]
fn base64_protocols_decode_text_messages_and_plain_errors() {
    let b64 = ChannelProtocol::Base64;
    let script: Script = vec![
        (S2C, server_frame(&message(b64, STDOUT, b""))),
        (C2S, client_frame(message(b64, STDIN, b"foo\n"))),
        (S2C, server_frame(&message(b64, STDOUT, b"\x00\xffbinary"))),
        (
            S2C,
            server_frame(&message(b64, ERROR, b"command terminated")),
        ),
        (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
    ];
    let events = decode_every_way(|| decoder(b64), &script);
    assert_eq!(
        events,
        [
            EventKind::Input(b"foo\n".to_vec()),
            EventKind::Output(b"\x00\xffbinary".to_vec()),
            EventKind::Exit {
                code: None,
                message: "command terminated".to_owned()
            },
        ]
    );
    // v4.base64 carries a JSON Status, here only complete at the end of the session.
    let v4b64 = ChannelProtocol::V4Base64;
    let status = Status::from_exit_code(7).to_json().unwrap();
    let script: Script = vec![(S2C, server_frame(&message(v4b64, ERROR, &status)))];
    assert_eq!(
        decode_every_way(|| decoder(v4b64), &script),
        [EventKind::Exit {
            code: Some(7),
            message: String::new()
        }]
    );
}

#[test]
fn plain_channel_protocol_success_is_an_empty_error_channel_at_close() {
    let script: Script = vec![
        (
            S2C,
            server_frame(&message(ChannelProtocol::V1, STDOUT, b"ok\n")),
        ),
        (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
    ];
    let events = decode_every_way(|| decoder(ChannelProtocol::V1), &script);
    assert_eq!(
        events,
        [
            EventKind::Output(b"ok\n".to_vec()),
            EventKind::Exit {
                code: Some(0),
                message: String::new()
            },
        ]
    );
    // Without the server's close nothing says how the command ended.
    let script: Script = vec![(
        S2C,
        server_frame(&message(ChannelProtocol::V4, STDOUT, b"x")),
    )];
    let events = decode_every_way(|| decoder(ChannelProtocol::V4), &script);
    assert_eq!(events, [EventKind::Output(b"x".to_vec())]);
}

#[test]
fn an_invalid_status_is_recorded_as_the_client_reports_it() {
    let script: Script = vec![
        (
            S2C,
            server_frame(&message(
                ChannelProtocol::V5,
                ERROR,
                b"{\"status\":\"Weird\"}",
            )),
        ),
        (S2C, server_frame(&Frame::close(CLOSE_NORMAL, ""))),
    ];
    let events = decode_every_way(|| decoder(ChannelProtocol::V5), &script);
    let [
        EventKind::Exit {
            code: None,
            message,
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert!(message.contains("error stream protocol error"), "{message}");
    assert!(message.contains("Weird"), "{message}");
}

#[test]
fn undecodable_streams_are_errors() {
    let err = |protocol, direction: Direction, bytes: &[u8]| {
        feed_all(&mut decoder(protocol), &[(direction, bytes)]).unwrap_err()
    };
    // Reserved bits (no extension negotiated).
    assert!(matches!(
        err(ChannelProtocol::V5, C2S, &[0xC2, 0x80, 0, 0, 0, 0]),
        Error::StreamDecode {
            direction: Direction::ClientToServer,
            source: custody_protocol::Error::WebSocketReservedBits(0x40)
        }
    ));
    // A 64-bit length over the limit.
    assert!(matches!(
        err(
            ChannelProtocol::V5,
            S2C,
            &[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]
        ),
        Error::StreamDecode {
            direction: Direction::ServerToClient,
            source: custody_protocol::Error::WebSocketFrameTooLarge { .. }
        }
    ));
    assert!(matches!(
        err(
            ChannelProtocol::V5,
            C2S,
            &client_frame(Frame::binary(vec![0xff]))
        ),
        Error::StreamDecode {
            source: custody_protocol::Error::CloseMessageLength { len: 1 },
            ..
        }
    ));
    let bad_base64 = client_frame(Frame::text(&b"0***"[..]));
    assert!(matches!(
        err(ChannelProtocol::Base64, C2S, &bad_base64),
        Error::StreamDecode {
            source: custody_protocol::Error::ChannelBase64(_),
            ..
        }
    ));
    let bad_resize = client_frame(Frame::binary(&b"\x04[1,2]"[..]));
    assert!(matches!(
        err(ChannelProtocol::V5, C2S, &bad_resize),
        Error::StreamDecode {
            source: custody_protocol::Error::ResizeJson(_),
            ..
        }
    ));
    let huge_error = server_frame(&message(ChannelProtocol::V5, ERROR, &vec![b' '; 70_000]));
    assert!(matches!(
        err(ChannelProtocol::V5, S2C, &huge_error),
        Error::ErrorStreamTooLarge { limit: 65_536 }
    ));
}

/// kubectl `exec -it` from a 0x0 pseudo-terminal (CI, `script`) sends `{"Width":0,"Height":0}`:
/// not a size, so no `Resize` (a player would draw an empty screen, asciinema 3 would panic);
/// a marker naming the request instead. Sizes with one zero side are not sizes either.
#[test]
fn a_resize_of_0_columns_or_rows_is_a_marker_not_a_size() {
    let v5 = ChannelProtocol::V5;
    let script: Script = vec![(
        C2S,
        client_frame(message(
            v5,
            RESIZE,
            b"{\"Width\":0,\"Height\":0}\n{\"Width\":120,\"Height\":0}\n{\"Width\":0,\"Height\":40}\n\
              {\"Width\":100,\"Height\":30}\n",
        )),
    )];
    let events = decode_every_way(|| decoder(v5), &script);
    let marker = |w, h| {
        EventKind::Marker(format!(
            "resize ignored: {w}x{h} is not a size; the terminal keeps its last size (request \
             {{\"Width\":{w},\"Height\":{h}}})"
        ))
    };
    assert_eq!(
        events,
        [
            marker(0, 0),
            marker(120, 0),
            marker(0, 40),
            EventKind::Resize {
                cols: 100,
                rows: 30
            },
        ]
    );
}
