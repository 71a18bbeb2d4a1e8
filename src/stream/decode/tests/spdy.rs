//! SPDY exec/attach sessions.

use custody_protocol::Status;
use custody_protocol::spdy::{Frame, GOAWAY_OK, HeaderBlock, HeaderCompressor, RST_CANCEL};
use custody_recorder::model::{EventKind, SessionKind};

use super::support::{C2S, S2C, Script, Spdy, bytes, data, decode_every_way, feed_all};
use crate::Error;
use crate::stream::decode::{DecoderConfig, Direction, Limits, SessionDecoder, Transport};

fn decoder(protocol: &str) -> SessionDecoder {
    SessionDecoder::new(
        SessionKind::Exec,
        Transport::Spdy,
        protocol,
        &DecoderConfig::default(),
    )
    .unwrap()
}

/// kubectl 1.32 `exec -i p -- cat` over SPDY (`wire_spdy.log`), with the server's side as the
/// kubelet writes it: streams 1=error, 3=stdin, 5=stdout, 7=stderr.
fn cat_session(status: &[u8]) -> Script {
    let mut spdy = Spdy::new();
    let mut script: Script = Vec::new();
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
        script.push((C2S, spdy.syn_stream(id, &[("streamtype", kind)])));
        script.push((S2C, spdy.syn_reply(id)));
    }
    let (status_a, status_b) = status.split_at(status.len() / 2);
    script.extend([
        (C2S, data(3, b"abc\n", false)),
        (C2S, bytes(&Frame::Ping { id: 1 })),
        (S2C, bytes(&Frame::Ping { id: 1 })),
        (S2C, data(5, b"abc\n", false)),
        (S2C, data(7, b"warn\n", false)),
        (C2S, data(3, b"", true)),
        (S2C, data(5, b"", true)),
        (S2C, data(1, status_a, false)),
        (S2C, data(1, status_b, false)),
        (S2C, data(1, b"", true)),
        (
            C2S,
            bytes(&Frame::RstStream {
                stream_id: 7,
                status: RST_CANCEL,
            }),
        ),
        (
            C2S,
            bytes(&Frame::GoAway {
                last_good_stream_id: 0,
                status: GOAWAY_OK,
            }),
        ),
        // In flight when the client reset stderr: dropped by the client, recorded as nothing.
        (S2C, data(7, b"late\n", false)),
    ]);
    script
}

#[test]
fn v4_exec_session_every_chunking() {
    let status = Status::from_exit_code(3).to_json().unwrap();
    let events = decode_every_way(|| decoder("v4.channel.k8s.io"), &cat_session(&status));
    assert_eq!(
        events,
        [
            EventKind::Input(b"abc\n".to_vec()),
            EventKind::Output(b"abc\n".to_vec()),
            EventKind::Stderr(b"warn\n".to_vec()),
            EventKind::Exit {
                code: Some(3),
                message: String::new()
            },
        ]
    );
}

#[test]
fn v2_errors_are_plain_text_and_empty_means_success() {
    let events = decode_every_way(|| decoder("v2.channel.k8s.io"), &cat_session(b"boom"));
    assert_eq!(
        events.last(),
        Some(&EventKind::Exit {
            code: None,
            message: "boom".to_owned()
        })
    );
    let events = decode_every_way(|| decoder("v3.channel.k8s.io"), &cat_session(b""));
    assert_eq!(
        events.last(),
        Some(&EventKind::Exit {
            code: Some(0),
            message: String::new()
        })
    );
}

#[test]
fn streams_are_mapped_by_type_not_id_and_tty_resizes_decode() {
    // `exec -it` with the streams created in an unusual order; the error stream ends by RST.
    let mut spdy = Spdy::new();
    let mut script: Script = Vec::new();
    for (id, kind) in [(1, "stdout"), (3, "resize"), (5, "stdin"), (7, "error")] {
        script.push((C2S, spdy.syn_stream(id, &[("streamtype", kind)])));
        script.push((S2C, spdy.syn_reply(id)));
    }
    script.extend([
        (C2S, data(3, b"{\"Width\":100,\"Height\":30}\n", false)),
        (C2S, data(5, b"ls\r", false)),
        (S2C, data(1, b"ls\r\nfile\r\n$ ", false)),
        (
            S2C,
            data(7, br#"{"metadata":{},"status":"Success"}"#, false),
        ),
        (
            S2C,
            bytes(&Frame::RstStream {
                stream_id: 7,
                status: RST_CANCEL,
            }),
        ),
    ]);
    let events = decode_every_way(|| decoder("v4.channel.k8s.io"), &script);
    assert_eq!(
        events,
        [
            EventKind::Resize {
                cols: 100,
                rows: 30
            },
            EventKind::Input(b"ls\r".to_vec()),
            EventKind::Output(b"ls\r\nfile\r\n$ ".to_vec()),
            EventKind::Exit {
                code: Some(0),
                message: String::new()
            },
        ]
    );
}

/// A 0x0 pseudo-terminal's resize over SPDY is a marker, as over WebSocket.
#[test]
fn a_spdy_resize_of_0x0_is_a_marker_not_a_size() {
    let mut spdy = Spdy::new();
    let script: Script = vec![
        (C2S, spdy.syn_stream(1, &[("streamtype", "resize")])),
        (S2C, spdy.syn_reply(1)),
        (C2S, data(1, b"{\"Width\":0,\"Height\":0}\n", false)),
    ];
    let events = decode_every_way(|| decoder("v4.channel.k8s.io"), &script);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], EventKind::Marker(text) if text.starts_with("resize ignored: 0x0 ")),
        "{events:?}"
    );
}

#[test]
fn a_status_still_buffered_at_the_end_is_recorded() {
    let mut spdy = Spdy::new();
    let status = Status::from_exit_code(1).to_json().unwrap();
    let script: Script = vec![
        (C2S, spdy.syn_stream(1, &[("streamtype", "error")])),
        (S2C, spdy.syn_reply(1)),
        (S2C, data(1, &status, false)),
    ];
    let events = decode_every_way(|| decoder("v4.channel.k8s.io"), &script);
    assert_eq!(
        events,
        [EventKind::Exit {
            code: Some(1),
            message: String::new()
        }]
    );
}

#[test]
fn a_header_bomb_in_the_second_block_is_refused_within_the_limit() {
    let mut compressor = HeaderCompressor::new().unwrap();
    let first = compressor
        .encode(&HeaderBlock::from_pairs([("streamtype", "error")]))
        .unwrap();
    // 64 MiB of headers in the same zlib context, a few tens of KiB on the wire.
    let bomb = HeaderBlock::from_pairs([("streamtype", "stdin"), ("x", &"a".repeat(64 << 20))]);
    let second = compressor.encode(&bomb).unwrap();
    assert!(second.len() < 128 * 1024, "{}", second.len());
    let syn = |stream_id, block: Vec<u8>| {
        bytes(&Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block: block.into(),
        })
    };
    let config = DecoderConfig {
        limits: Limits {
            max_header_block_len: 64 * 1024,
            ..Limits::default()
        },
        ..DecoderConfig::default()
    };
    let mut decoder = SessionDecoder::new(
        SessionKind::Exec,
        Transport::Spdy,
        "v4.channel.k8s.io",
        &config,
    )
    .unwrap();
    assert!(decoder.feed(C2S, &syn(1, first), 0).unwrap().is_empty());
    // The inflater stops at the limit (`HeaderDecompressor` checks before it appends), so the
    // decoder never holds more than 64 KiB of the 64 MiB block.
    let err = decoder.feed(C2S, &syn(3, second), 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StreamDecode {
                direction: Direction::ClientToServer,
                source: custody_protocol::Error::HeaderBlockTooLarge { limit: 65_536 }
            }
        ),
        "{err}"
    );
}

#[test]
fn frames_the_recorder_cannot_account_for_are_errors() {
    let mut spdy = Spdy::new();
    let syn = spdy.syn_stream(1, &[("streamtype", "stdout")]);
    // DATA on a stream never opened.
    let err = feed_all(
        &mut decoder("v4.channel.k8s.io"),
        &[(S2C, &data(9, b"x", false)[..])],
    );
    assert!(matches!(err, Err(Error::SpdyStream { stream_id: 9, .. })));
    // A stream id that does not increase.
    let mut spdy2 = Spdy::new();
    let a = spdy2.syn_stream(3, &[("streamtype", "stdout")]);
    let b = spdy2.syn_stream(1, &[("streamtype", "stderr")]);
    let err = feed_all(
        &mut decoder("v4.channel.k8s.io"),
        &[(C2S, &a[..]), (C2S, &b[..])],
    );
    assert!(matches!(err, Err(Error::SpdyStream { stream_id: 1, .. })));
    // A server opening a stream (its own compression context).
    let mut server = Spdy::new();
    let from_server = server.syn_stream(2, &[("streamtype", "stdout")]);
    let err = feed_all(
        &mut decoder("v4.channel.k8s.io"),
        &[(C2S, &syn[..]), (S2C, &from_server[..])],
    );
    assert!(matches!(err, Err(Error::SpdyStream { stream_id: 2, .. })));
    // An unknown stream type, and a control frame spdystream does not implement (NOOP).
    let mut spdy3 = Spdy::new();
    let video = spdy3.syn_stream(1, &[("streamtype", "video")]);
    let err = feed_all(&mut decoder("v4.channel.k8s.io"), &[(C2S, &video[..])]);
    assert!(matches!(
        err,
        Err(Error::StreamDecode {
            source: custody_protocol::Error::InvalidStreamType(_),
            ..
        })
    ));
    let noop = [0x80, 0x03, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00];
    let err = feed_all(&mut decoder("v4.channel.k8s.io"), &[(C2S, &noop[..])]);
    assert!(matches!(err, Err(Error::SpdyUnexpectedFrame { .. })));
    // Garbage where a header block should be.
    let garbage = bytes(&Frame::SynStream {
        stream_id: 1,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        header_block: vec![1, 2, 3].into(),
    });
    let err = feed_all(&mut decoder("v4.channel.k8s.io"), &[(C2S, &garbage[..])]);
    assert!(matches!(err, Err(Error::StreamDecode { .. })));
}

/// A `SYN_STREAM` whose header block names more headers than the cap ends the session with
/// the codec's reason; one at the cap is decoded.
#[test]
fn a_header_block_over_the_cap_ends_the_session() {
    let names: Vec<String> = (0..custody_protocol::spdy::MAX_HEADERS)
        .map(|i| format!("x-{i}"))
        .collect();
    let mut headers: Vec<(&str, &str)> = vec![("streamtype", "stdout")];
    headers.extend(names.iter().skip(1).map(|n| (n.as_str(), "")));
    let mut spdy = Spdy::new();
    let at_cap = spdy.syn_stream(1, &headers);
    let mut exec = decoder("v4.channel.k8s.io");
    assert!(feed_all(&mut exec, &[(C2S, &at_cap[..])]).is_ok());

    headers.push(("x-one-more", ""));
    let mut spdy = Spdy::new();
    let over = spdy.syn_stream(1, &headers);
    let mut exec = decoder("v4.channel.k8s.io");
    let refused = feed_all(&mut exec, &[(C2S, &over[..])]);
    assert!(
        matches!(
            &refused,
            Err(Error::StreamDecode {
                direction: Direction::ClientToServer,
                source: custody_protocol::Error::TooManyHeaders { count: 101, .. },
            })
        ),
        "{refused:?}"
    );
}
