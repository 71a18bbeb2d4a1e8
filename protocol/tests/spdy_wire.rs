//! SPDY codecs against bytes from the wire captures and k8s-protocols §2.3.

#![allow(
    clippy::unwrap_used,
    reason = "fixture helpers outside #[test] functions fail loudly on bad fixtures"
)]

use bytes::Bytes;
use custody_protocol::spdy::{
    Frame, FrameDecoder, GOAWAY_OK, HeaderBlock, HeaderCompressor, HeaderDecompressor, RST_CANCEL,
    Setting, StreamType,
};
use custody_protocol::{Error, portforward::PortForwardStream};

/// §2.3: C→S `SYN_STREAM` id=1 {streamtype: error}.
const SYN_STREAM_ERROR: &[u8] = &[
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
    0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
];
/// §2.3: S→C `SYN_REPLY` id=1 {}.
const SYN_REPLY: &[u8] = &[
    0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x78, 0xf9, 0xe3, 0xc6,
    0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
];
/// §2.3: S→C DATA id=3 "hello\n".
const DATA_HELLO: &[u8] = b"\x00\x00\x00\x03\x00\x00\x00\x06hello\n";
/// §2.3: S→C DATA id=3 FIN.
const DATA_FIN: &[u8] = b"\x00\x00\x00\x03\x01\x00\x00\x00";
/// §2.3: S→C `RST_STREAM` id=1 CANCEL.
const RST_CANCEL_1: &[u8] = b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x05";
/// §2.3: C→S PING id=1.
const PING_1: &[u8] = b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01";
/// §2.3: GOAWAY last=0 OK.
const GOAWAY: &[u8] = b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00";

/// The §2.3 frames in order, as one byte stream.
fn documented_stream() -> Vec<u8> {
    [
        SYN_STREAM_ERROR,
        SYN_REPLY,
        DATA_HELLO,
        DATA_FIN,
        RST_CANCEL_1,
        PING_1,
        GOAWAY,
    ]
    .concat()
}

/// Reads a `tests/data/*.hex` fixture: one message per line, `-` for an empty one.
fn hex_messages(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            if line == "-" {
                return Vec::new();
            }
            line.split_whitespace()
                .map(|byte| u8::from_str_radix(byte, 16).unwrap())
                .collect()
        })
        .collect()
}

fn decode_all(decoder: &mut FrameDecoder) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        frames.push(frame);
    }
    frames
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        frames.extend(decode_all(&mut decoder));
    }
    assert_eq!(decoder.buffered(), 0);
    frames
}

#[test]
fn decodes_the_documented_frames() {
    let frames = decode_chunks([documented_stream().as_slice()]);
    let [syn, reply, data, fin, rst, ping, goaway] = frames.as_slice() else {
        panic!("{frames:?}");
    };
    let Frame::SynStream {
        stream_id: 1,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        header_block,
    } = syn
    else {
        panic!("{syn:?}");
    };
    let Frame::SynReply {
        stream_id: 1,
        fin: false,
        header_block: reply_block,
    } = reply
    else {
        panic!("{reply:?}");
    };
    // One decompressor per direction: the reply's block is the first of its own context.
    let client = HeaderDecompressor::new().decode(header_block).unwrap();
    assert_eq!(
        StreamType::from_headers(&client).unwrap(),
        StreamType::Error
    );
    assert!(
        HeaderDecompressor::new()
            .decode(reply_block)
            .unwrap()
            .is_empty()
    );
    assert_eq!(*data, Frame::data(3, Bytes::from_static(b"hello\n"), false));
    assert_eq!(*fin, Frame::fin(3));
    assert_eq!(
        *rst,
        Frame::RstStream {
            stream_id: 1,
            status: RST_CANCEL
        }
    );
    assert_eq!(*ping, Frame::Ping { id: 1 });
    assert_eq!(
        *goaway,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: GOAWAY_OK
        }
    );
}

#[test]
fn documented_frames_encode_to_the_same_bytes() {
    let frames = decode_chunks([documented_stream().as_slice()]);
    let encoded: Vec<u8> = frames
        .iter()
        .flat_map(|frame| frame.to_bytes().unwrap())
        .collect();
    assert_eq!(encoded, documented_stream());
}

#[test]
fn every_split_of_the_stream_decodes_identically() {
    let stream = documented_stream();
    let whole = decode_chunks([stream.as_slice()]);
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let frames = decode_chunks([&stream[..i], &stream[i..j], &stream[j..]]);
            assert_eq!(frames, whole, "split at {i} and {j}");
        }
    }
    let bytewise = decode_chunks(stream.chunks(1));
    assert_eq!(bytewise, whole);
}

#[test]
fn decodes_the_tunnelled_port_forward_capture() {
    let messages = hex_messages(include_str!("data/spdypf_tunnel_c2s.hex"));
    assert_eq!(messages.len(), 17);
    let frames = decode_chunks(messages.iter().map(Vec::as_slice));
    let [fin_1, syn_3, data_3, fin_3] = frames.as_slice() else {
        panic!("{frames:?}");
    };
    assert_eq!(*fin_1, Frame::fin(1));
    let Frame::SynStream {
        stream_id: 3,
        header_block,
        ..
    } = syn_3
    else {
        panic!("{syn_3:?}");
    };
    assert_eq!(header_block.len(), 16);
    assert!(header_block.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    assert_eq!(
        *data_3,
        Frame::data(3, Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"), false)
    );
    assert_eq!(*fin_3, Frame::fin(3));
    // Re-encoding gives the bytes back, however kubectl had split them.
    let encoded: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes().unwrap()).collect();
    assert_eq!(encoded, messages.concat());
}

#[test]
fn decodes_the_exec_capture_tail() {
    let frames = hex_messages(include_str!("data/spdy_exec_c2s_tail.hex"));
    let decoded = decode_chunks(frames.iter().map(Vec::as_slice));
    assert_eq!(
        decoded,
        [
            Frame::data(3, Bytes::from_static(b"abc\n"), false),
            Frame::fin(3),
            Frame::RstStream {
                stream_id: 7,
                status: RST_CANCEL
            },
            Frame::GoAway {
                last_good_stream_id: 0,
                status: GOAWAY_OK
            },
        ]
    );
}

#[test]
fn kubectl_first_syn_stream_header_waits_for_its_body() {
    // wire_spdy.log: the first 24 bytes of kubectl's first SYN_STREAM (length 0x29).
    let head = [
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x29, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2,
    ];
    let mut decoder = FrameDecoder::new();
    decoder.push(&head);
    assert!(decoder.next_frame().unwrap().is_none());
    assert_eq!(decoder.buffered(), head.len());
}

#[test]
fn a_client_session_round_trips_through_one_context_per_direction() {
    // What kubectl sends for `exec -i` and what kube-sim answers, through real compression.
    let mut client = HeaderCompressor::new().unwrap();
    let mut server = HeaderCompressor::new().unwrap();
    let mut wire_c2s = Vec::new();
    let mut wire_s2c = Vec::new();
    for (i, stream_type) in ["error", "stdin", "stdout", "stderr"]
        .into_iter()
        .enumerate()
    {
        let stream_id = 2 * u32::try_from(i).unwrap() + 1;
        let block = HeaderBlock::from_pairs([("streamtype", stream_type)]);
        Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block: client.encode(&block).unwrap().into(),
        }
        .encode(&mut wire_c2s)
        .unwrap();
        Frame::SynReply {
            stream_id,
            fin: false,
            header_block: server.encode(&HeaderBlock::new()).unwrap().into(),
        }
        .encode(&mut wire_s2c)
        .unwrap();
    }
    let mut c2s = HeaderDecompressor::new();
    let mut s2c = HeaderDecompressor::new();
    for split in 0..=wire_c2s.len() {
        let frames = decode_chunks([&wire_c2s[..split], &wire_c2s[split..]]);
        assert_eq!(frames.len(), 4);
        if split == 0 {
            let types: Vec<_> = frames
                .iter()
                .map(|frame| match frame {
                    Frame::SynStream { header_block, .. } => {
                        StreamType::from_headers(&c2s.decode(header_block).unwrap()).unwrap()
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                types,
                [
                    StreamType::Error,
                    StreamType::Stdin,
                    StreamType::Stdout,
                    StreamType::Stderr
                ]
            );
        }
    }
    for frame in decode_chunks([wire_s2c.as_slice()]) {
        let Frame::SynReply { header_block, .. } = frame else {
            panic!("{frame:?}");
        };
        assert!(s2c.decode(&header_block).unwrap().is_empty());
    }
}

#[test]
fn port_forward_headers_through_compression() {
    let stream = PortForwardStream {
        stream_type: StreamType::Data,
        port: 8080,
        request_id: Some("7".to_owned()),
    };
    let mut compressor = HeaderCompressor::new().unwrap();
    let mut decompressor = HeaderDecompressor::new();
    let block = compressor.encode(&stream.to_headers()).unwrap();
    let headers = decompressor.decode(&block).unwrap();
    assert_eq!(PortForwardStream::from_headers(&headers).unwrap(), stream);
}

#[test]
fn other_control_frames_round_trip() {
    let frames = [
        Frame::Settings {
            clear: true,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 65536,
            }],
        },
        Frame::WindowUpdate {
            stream_id: 5,
            delta: 1 << 20,
        },
        Frame::Headers {
            stream_id: 5,
            fin: true,
            header_block: Bytes::from_static(b"\x01\x02"),
        },
        Frame::SynStream {
            stream_id: 9,
            associated_stream_id: 3,
            priority: 7,
            slot: 2,
            fin: true,
            unidirectional: true,
            header_block: Bytes::new(),
        },
        Frame::Unknown {
            frame_type: 5,
            flags: 0,
            body: Bytes::new(),
        },
        Frame::Unknown {
            frame_type: 10,
            flags: 3,
            body: Bytes::from_static(b"cred"),
        },
    ];
    let wire: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes().unwrap()).collect();
    assert_eq!(decode_chunks(wire.chunks(3)), frames);
}

#[test]
fn refuses_frames_over_the_limit_before_buffering_them() {
    let mut decoder = FrameDecoder::with_max_frame_len(1024);
    decoder.push(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x04, 0x01]);
    assert!(matches!(
        decoder.next_frame(),
        Err(Error::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    let mut decoder = FrameDecoder::with_max_frame_len(1024);
    decoder.push(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x04, 0x00]);
    decoder.push(&[0xaa; 1024]);
    assert!(matches!(decoder.next_frame(), Ok(Some(Frame::Data { .. }))));
}

#[test]
fn refuses_malformed_control_frames() {
    let cases: &[(&[u8], &str)] = &[
        // Version 2.
        (
            b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",
            "version",
        ),
        // PING with flags, PING id 0, PING too long.
        (
            b"\x80\x03\x00\x06\x01\x00\x00\x04\x00\x00\x00\x01",
            "ping flags",
        ),
        (
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x00",
            "ping id",
        ),
        (
            b"\x80\x03\x00\x06\x00\x00\x00\x05\x00\x00\x00\x01\x00",
            "ping length",
        ),
        // RST_STREAM with status 0 or stream 0.
        (
            b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
            "rst status",
        ),
        (
            b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x05",
            "rst stream",
        ),
        // SYN_STREAM shorter than its fixed fields, SYN_STREAM id 0.
        (
            b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01",
            "syn length",
        ),
        (
            b"\x80\x03\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            "syn id",
        ),
        // SETTINGS whose count disagrees with its length.
        (
            b"\x80\x03\x00\x04\x00\x00\x00\x04\x00\x00\x00\x01",
            "settings",
        ),
        // DATA on stream 0.
        (b"\x00\x00\x00\x00\x00\x00\x00\x00", "data stream"),
    ];
    for (bytes, what) in cases {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        assert!(decoder.next_frame().is_err(), "{what}");
    }
}

#[test]
fn refuses_unencodable_frames() {
    let too_big = Frame::data(1, vec![0u8; 0x0100_0000], false);
    assert!(matches!(
        too_big.to_bytes(),
        Err(Error::FrameTooLarge { .. })
    ));
    assert!(Frame::fin(0x8000_0000).to_bytes().is_err());
}
