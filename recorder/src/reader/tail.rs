//! The unverified tail: the frame a file ends in when its writer never closed it (still running,
//! or killed). The writer block-flushes the open frame every flush interval, so its complete
//! blocks hold every event flushed before the cut; a torn block after them is ignored.

use crate::file::{self, Blocks, MAX_FRAME_PLAIN};
use crate::format::{Decoder, Record};
use crate::model::{Event, SessionStatus};

/// The readable part of an unterminated frame at the end of a file. **Unverified**: no
/// checkpoint covers these bytes, so they prove nothing until recovery seals them into a signed
/// frame (see [`super::seal_interrupted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The index the frame would have (the number of verified frames before it).
    pub frame: u32,
    /// Its byte offset: the end of the verified prefix.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub len: u64,
    /// Bytes of the frame header and its complete blocks, the part that was decoded; the
    /// `len - complete_len` bytes after it are a torn block (or an incomplete checksum).
    pub complete_len: u64,
    /// Decompressed bytes of the complete events (from the frame's anchor line to the end of
    /// its last complete event); a line or event cut by the last complete block is left out.
    pub decoded_bytes: u64,
    /// The complete events, in order, continuing the verified events' times.
    pub events: Vec<Event>,
    /// The end line's status, when the frame got that far (a crash while the session ended).
    pub end: Option<SessionStatus>,
    /// The asciicast lines of `events` (from the anchor line on): what sealing re-writes.
    pub(crate) plain: Vec<u8>,
}

impl Tail {
    /// Decodes the unterminated frame `bytes` (from its start to the end of the file) that
    /// follows the verified prefix; `decoder` is the verified stream's state, so the frame's
    /// anchor must agree with the time the verified events reached.
    pub(crate) fn decode(bytes: &[u8], decoder: Decoder, frame: u32, offset: u64) -> Self {
        let complete_len = match file::complete_blocks(bytes) {
            Blocks::NoHeader | Blocks::Invalid(_) => 0,
            Blocks::Cut { len } => len,
            Blocks::Complete => file::frame_len(bytes).unwrap_or(0),
        };
        let plain = if complete_len == 0 {
            Vec::new()
        } else {
            file::decode_stream(&bytes[..complete_len], MAX_FRAME_PLAIN).plain
        };
        let (events, end, kept) = complete_events(&plain, decoder);
        let mut plain = plain;
        plain.truncate(kept);
        Self {
            frame,
            offset,
            len: bytes.len() as u64,
            complete_len: complete_len as u64,
            decoded_bytes: kept as u64,
            events,
            end,
            plain,
        }
    }
}

/// The events of the complete lines of `plain` up to the first line that does not decode,
/// the end status if an end line is among them, and how many bytes they take (through the
/// last line that completes an event, so a prefix line without its event is left out).
fn complete_events(
    plain: &[u8],
    mut decoder: Decoder,
) -> (Vec<Event>, Option<SessionStatus>, usize) {
    let mut events = Vec::new();
    let mut end = None;
    let (mut at, mut kept) = (0, 0);
    for (n, line) in plain.split_inclusive(|b| *b == b'\n').enumerate() {
        if !line.ends_with(b"\n") || end.is_some() {
            break;
        }
        let Ok(record) = decoder.line(line) else {
            break;
        };
        match record {
            Some(Record::Anchor(_)) if n == 0 => {}
            // A frame starts with its anchor; without it nothing here can be placed in time.
            _ if n == 0 => break,
            Some(Record::Event(event)) => events.push(event),
            Some(Record::End(status)) => end = Some(status),
            Some(Record::Anchor(_)) | None => {}
        }
        at += line.len();
        if decoder.finish().is_ok() {
            kept = at;
        }
    }
    (events, end, kept)
}
