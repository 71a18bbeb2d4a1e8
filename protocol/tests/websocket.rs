//! WebSocket framing against frames from the wire captures (`wire_ws.log`, `wire_tty.log`), split at
//! every byte boundary, fragmented, with control frames between fragments, and against every
//! violation the decoder must refuse.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use bytes::Bytes;
use custody_protocol::Error;
use custody_protocol::websocket::{
    CLOSE_NORMAL, CloseFrame, Frame, FrameDecoder, MaskRule, Message, MessageDecoder, Opcode,
};

/// A client masking key (kubectl picks a random one per frame).
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// `wire_tty.log`: the first client message of `kubectl exec -it`, the initial resize.
const RESIZE: &[u8] = b"\x04{\"Width\":100,\"Height\":30}\n";

/// The client side of `wire_tty.log`: resize, stdin `ls\n`, an empty ping, close 1000.
fn tty_client_bytes() -> Vec<u8> {
    [
        Frame::binary(RESIZE).masked(KEY),
        Frame::binary(&b"\x00ls\n"[..]).masked([1, 2, 3, 4]),
        Frame::ping(Bytes::new()).masked([9, 9, 9, 9]),
        Frame::close(CLOSE_NORMAL, "").masked([0xa0, 0x0b, 0xc0, 0x0d]),
    ]
    .iter()
    .flat_map(Frame::to_bytes)
    .collect()
}

fn tty_client_messages() -> Vec<Message> {
    vec![
        Message::Binary(Bytes::from_static(RESIZE)),
        Message::Binary(Bytes::from_static(b"\x00ls\n")),
        Message::Ping(Bytes::new()),
        Message::Close(Some(CloseFrame {
            code: CLOSE_NORMAL,
            reason: String::new(),
        })),
    ]
}

/// Feeds `chunks` in order and collects every message.
fn messages<'a>(
    decoder: &mut MessageDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Message>, Error> {
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(message) = decoder.next_message()? {
            out.push(message);
        }
    }
    Ok(out)
}

fn first_error(bytes: &[u8]) -> Error {
    messages(&mut MessageDecoder::new(), [bytes]).unwrap_err()
}

#[test]
fn masked_resize_frame_from_the_capture() {
    let wire = Frame::binary(RESIZE).masked(KEY).to_bytes();
    // `82 9b` = FIN binary, masked, 27 bytes; then the key and the masked payload.
    assert_eq!(wire[..6], [0x82, 0x9b, 0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(wire.len(), 2 + 4 + 27);
    for split in 0..=wire.len() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire[..split]);
        let early = decoder.next_frame().unwrap();
        assert_eq!(early.is_some(), split == wire.len());
        decoder.push(&wire[split..]);
        let frame = early.or_else(|| decoder.next_frame().unwrap()).unwrap();
        assert_eq!(frame, Frame::binary(RESIZE).masked(KEY));
        assert_eq!(decoder.buffered(), 0);
    }
}

#[test]
fn close_1000_echo_from_the_capture() {
    // wire_ws.log: `C->S ws(after close) op=8 len=2 payload=b'\x03\xe8'`, i.e. `88 82 key ..`.
    let wire = Frame::close(CLOSE_NORMAL, "").masked(KEY).to_bytes();
    assert_eq!(wire[..2], [0x88, 0x82]);
    assert_eq!(wire[6..], [0x03 ^ 0x37, 0xe8 ^ 0xfa]);
    let got = messages(&mut MessageDecoder::new(), [&wire[..]]).unwrap();
    assert_eq!(
        got,
        [Message::Close(Some(CloseFrame {
            code: 1000,
            reason: String::new()
        }))]
    );
}

#[test]
fn tty_session_split_at_every_byte_boundary() {
    let wire = tty_client_bytes();
    for split in 0..=wire.len() {
        let got = messages(&mut MessageDecoder::new(), [&wire[..split], &wire[split..]]).unwrap();
        assert_eq!(got, tty_client_messages(), "split at {split}");
    }
    let got = messages(&mut MessageDecoder::new(), wire.chunks(1)).unwrap();
    assert_eq!(got, tty_client_messages());
}

#[test]
fn fragments_with_interleaved_control_frames() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let mut frames = Frame::fragments(Opcode::Binary, &payload, 300, Some(KEY));
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[1].opcode, Opcode::Continuation);
    frames.insert(1, Frame::ping(&b"p1"[..]).masked(KEY));
    frames.insert(3, Frame::pong(Bytes::new()));
    frames.insert(5, Frame::ping(Bytes::new()));
    frames.push(Frame::text(&b"0Zm9vCg=="[..]));
    let wire: Vec<u8> = frames.iter().flat_map(Frame::to_bytes).collect();
    let expected = vec![
        Message::Ping(Bytes::from_static(b"p1")),
        Message::Pong(Bytes::new()),
        Message::Ping(Bytes::new()),
        Message::Binary(Bytes::from(payload)),
        Message::Text(Bytes::from_static(b"0Zm9vCg==")),
    ];
    for split in 0..=wire.len() {
        let got = messages(&mut MessageDecoder::new(), [&wire[..split], &wire[split..]]).unwrap();
        assert_eq!(got, expected, "split at {split}");
    }
}

#[test]
fn every_length_encoding_round_trips() {
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        let payload = vec![0xAB; len];
        for frame in [
            Frame::binary(payload.clone()),
            Frame::binary(payload.clone()).masked(KEY),
        ] {
            let wire = frame.to_bytes();
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            } + if frame.mask.is_some() { 4 } else { 0 };
            assert_eq!(wire.len(), header + len);
            let mut decoder = FrameDecoder::new();
            decoder.push(&wire);
            assert_eq!(decoder.next_frame().unwrap(), Some(frame));
        }
    }
}

#[test]
fn refuses_reserved_bits_and_opcodes() {
    assert!(matches!(
        first_error(&[0xC2, 0x00]),
        Error::WebSocketReservedBits(0x40)
    ));
    assert!(matches!(
        first_error(&[0x93]),
        Error::WebSocketReservedBits(0x10)
    ));
    for opcode in [3u8, 7, 0xB, 0xF] {
        assert!(matches!(
            first_error(&[0x80 | opcode]),
            Error::WebSocketReservedOpcode(op) if op == opcode
        ));
    }
}

#[test]
fn refuses_bad_control_frames() {
    // A ping without FIN.
    assert!(matches!(
        first_error(&[0x09]),
        Error::WebSocketControlFragmented(0x9)
    ));
    // A close announcing 126 bytes (the 16-bit length form).
    assert!(matches!(
        first_error(&[0x88, 126]),
        Error::WebSocketControlTooLong(126)
    ));
    assert!(matches!(
        first_error(&[0x88, 0x01, 0x03]),
        Error::WebSocketCloseFrame(_)
    ));
    assert!(matches!(
        first_error(&[0x88, 0x04, 0x03, 0xe8, 0xff, 0xfe]),
        Error::WebSocketCloseFrame(_)
    ));
    let wire = Frame::ping(vec![0; 125]).to_bytes();
    assert_eq!(
        messages(&mut MessageDecoder::new(), [&wire[..]]).unwrap(),
        [Message::Ping(Bytes::from(vec![0; 125]))]
    );
}

#[test]
fn refuses_64_bit_lengths_with_the_top_bit_and_over_the_limit() {
    let mut wire = vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
    assert!(matches!(
        first_error(&wire),
        Error::WebSocketLengthOverflow(len) if len == (1 << 63) + 1
    ));
    // 2^62 bytes: valid framing, far over any limit, refused from the header alone.
    wire[2] = 0x40;
    let mut decoder = FrameDecoder::with_max_frame_len(1 << 20);
    decoder.push(&wire);
    assert!(matches!(
        decoder.next_frame(),
        Err(Error::WebSocketFrameTooLarge { len, max: 1_048_576 }) if len == (1 << 62) + 1
    ));
    // Exactly at the limit is fine; one byte over is not, before any payload byte arrives.
    let mut decoder = FrameDecoder::with_max_frame_len(200);
    decoder.push(&Frame::binary(vec![1; 200]).to_bytes());
    assert!(decoder.next_frame().unwrap().is_some());
    decoder.push(&[0x82, 126, 0, 201]);
    assert!(matches!(
        decoder.next_frame(),
        Err(Error::WebSocketFrameTooLarge { len: 201, max: 200 })
    ));
}

#[test]
fn refuses_messages_over_the_limit_and_bad_fragment_sequences() {
    let wire: Vec<u8> = Frame::fragments(Opcode::Binary, &[7; 100], 40, None)
        .iter()
        .flat_map(Frame::to_bytes)
        .collect();
    let mut decoder = MessageDecoder::with_limits(FrameDecoder::new(), 99);
    assert!(matches!(
        messages(&mut decoder, [&wire[..]]),
        Err(Error::WebSocketMessageTooLarge { max: 99 })
    ));
    let mut decoder = MessageDecoder::with_limits(FrameDecoder::new(), 100);
    assert_eq!(messages(&mut decoder, [&wire[..]]).unwrap().len(), 1);

    let continuation = Frame::new(Opcode::Continuation, &b"x"[..]).to_bytes();
    assert!(matches!(
        first_error(&continuation),
        Error::WebSocketUnexpectedContinuation
    ));
    let mut interrupted = Frame::binary(&b"a"[..]).with_fin(false).to_bytes();
    interrupted.extend(Frame::text(&b"b"[..]).to_bytes());
    assert!(matches!(
        first_error(&interrupted),
        Error::WebSocketExpectedContinuation
    ));
}

#[test]
fn mask_rules() {
    let masked = Frame::binary(&b"x"[..]).masked(KEY).to_bytes();
    let plain = Frame::binary(&b"x"[..]).to_bytes();
    let mut server = FrameDecoder::new().with_mask_rule(MaskRule::Required);
    server.push(&plain);
    assert!(matches!(
        server.next_frame(),
        Err(Error::WebSocketMasking { masked: false })
    ));
    let mut client = FrameDecoder::new().with_mask_rule(MaskRule::Forbidden);
    client.push(&masked);
    assert!(matches!(
        client.next_frame(),
        Err(Error::WebSocketMasking { masked: true })
    ));
    let mut server = FrameDecoder::new().with_mask_rule(MaskRule::Required);
    server.push(&masked);
    assert!(server.next_frame().unwrap().is_some());
}

#[test]
fn close_frames_encode_code_and_truncated_reason() {
    let frame = Frame::close(1011, &"é".repeat(100));
    assert!(frame.payload.len() <= 125);
    let close = CloseFrame::parse(&frame.payload).unwrap().unwrap();
    assert_eq!(close.code, 1011);
    assert_eq!(close.reason, "é".repeat(61));
    assert_eq!(CloseFrame::parse(&[]).unwrap(), None);
}
