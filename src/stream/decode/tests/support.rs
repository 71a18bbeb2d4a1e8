//! Session scripts and the chunkings they are fed in.

use custody_protocol::spdy::{Frame as SpdyFrame, HeaderBlock, HeaderCompressor};
use custody_protocol::websocket::Frame;
use custody_recorder::model::EventKind;

use crate::stream::decode::{Direction, SessionDecoder};

pub(super) use Direction::{ClientToServer as C2S, ServerToClient as S2C};

/// One unit of a session (a frame, a message) as its wire bytes, in the order it happened.
pub(super) type Script = Vec<(Direction, Vec<u8>)>;

/// Feeds `chunks` in order, then finishes; stops at the first error.
pub(super) fn feed_all(
    decoder: &mut SessionDecoder,
    chunks: &[(Direction, &[u8])],
) -> crate::Result<Vec<EventKind>> {
    let mut events = Vec::new();
    for (time, (direction, chunk)) in (0u64..).zip(chunks) {
        events.extend(decoder.feed(*direction, chunk, time)?);
    }
    events.extend(decoder.finish(u64::MAX));
    Ok(events.into_iter().map(|e| e.kind).collect())
}

/// Runs `script` whole, then with every unit split at every byte boundary, byte by byte, and in
/// pseudo-random chunkings, asserting identical events; returns them.
pub(super) fn decode_every_way(
    make: impl Fn() -> SessionDecoder,
    script: &Script,
) -> Vec<EventKind> {
    let whole: Vec<(Direction, &[u8])> = script.iter().map(|(d, b)| (*d, &b[..])).collect();
    let expected = feed_all(&mut make(), &whole).unwrap();
    for (unit, (direction, bytes)) in script.iter().enumerate() {
        for split in 1..bytes.len() {
            let mut chunks = whole.clone();
            chunks.splice(
                unit..=unit,
                [(*direction, &bytes[..split]), (*direction, &bytes[split..])],
            );
            let got = feed_all(&mut make(), &chunks).unwrap();
            assert_eq!(got, expected, "unit {unit} split at {split}");
        }
    }
    let bytewise: Vec<(Direction, &[u8])> = script
        .iter()
        .flat_map(|(d, b)| b.chunks(1).map(move |c| (*d, c)))
        .collect();
    assert_eq!(
        feed_all(&mut make(), &bytewise).unwrap(),
        expected,
        "byte by byte"
    );
    for seed in 1..=20u64 {
        let chunks = random_chunks(script, seed);
        let got = feed_all(&mut make(), &chunks).unwrap();
        assert_eq!(got, expected, "random chunking {seed}");
    }
    expected
}

/// Consecutive units of one direction joined into a run, and each run cut at random points
/// (so chunks cross frame boundaries, never the order between directions).
fn random_chunks(script: &Script, seed: u64) -> Vec<(Direction, &[u8])> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % u64::try_from(bound).unwrap()).unwrap()
    };
    let mut runs: Vec<(Direction, Vec<&[u8]>)> = Vec::new();
    for (direction, bytes) in script {
        match runs.last_mut() {
            Some((d, parts)) if d == direction => parts.push(bytes),
            _ => runs.push((*direction, vec![bytes])),
        }
    }
    let mut out = Vec::new();
    for (direction, parts) in runs {
        // Slices into one run: walk the parts, cutting chunks of random size that may span
        // several parts (emitted as consecutive pieces of one logical chunk).
        for part in parts {
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let take = 1 + next(rest.len().min(40));
                let (now, later) = rest.split_at(take);
                out.push((direction, now));
                rest = later;
            }
            if next(3) == 0 {
                out.push((direction, &[][..]));
            }
        }
    }
    out
}

/// A masked client WebSocket frame's bytes.
pub(super) fn client_frame(frame: Frame) -> Vec<u8> {
    frame.masked([0x12, 0x34, 0x56, 0x78]).to_bytes()
}

/// An unmasked server WebSocket frame's bytes.
pub(super) fn server_frame(frame: &Frame) -> Vec<u8> {
    frame.to_bytes()
}

/// Both directions' header compression contexts of one SPDY connection.
pub(super) struct Spdy {
    client: HeaderCompressor,
    server: HeaderCompressor,
}

impl Spdy {
    pub(super) fn new() -> Self {
        Self {
            client: HeaderCompressor::new().unwrap(),
            server: HeaderCompressor::new().unwrap(),
        }
    }

    /// A client `SYN_STREAM` with `headers`.
    pub(super) fn syn_stream(&mut self, stream_id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self
            .client
            .encode(&HeaderBlock::from_pairs(headers.iter().copied()))
            .unwrap();
        bytes(&SpdyFrame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block: block.into(),
        })
    }

    /// The server's empty `SYN_REPLY`.
    pub(super) fn syn_reply(&mut self, stream_id: u32) -> Vec<u8> {
        let block = self.server.encode(&HeaderBlock::new()).unwrap();
        bytes(&SpdyFrame::SynReply {
            stream_id,
            fin: false,
            header_block: block.into(),
        })
    }
}

/// A SPDY frame's bytes.
pub(super) fn bytes(frame: &SpdyFrame) -> Vec<u8> {
    frame.to_bytes().unwrap().to_vec()
}

/// A SPDY DATA frame's bytes.
pub(super) fn data(stream_id: u32, payload: &[u8], fin: bool) -> Vec<u8> {
    bytes(&SpdyFrame::data(stream_id, payload.to_vec(), fin))
}
