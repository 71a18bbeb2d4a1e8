//! The event encoder: [`Event`]s to asciicast v3 lines, with time rounding carried forward and
//! UTF-8 sequences completed across events so that stock players render what the user saw.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use super::{TimePrecision, code};
use crate::error::Result;
use crate::model::{Event, EventKind, SessionStatus};

/// Turns events into event lines. Stateful: it remembers the last written time (intervals are
/// relative) and, per byte stream, the incomplete UTF-8 sequence held back from the last event.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    precision: TimePrecision,
    /// The latest true event time seen, so that times never go backwards.
    last_true_us: u64,
    /// The sum of all intervals written so far (the written absolute time).
    written_us: u64,
    /// Held-back incomplete UTF-8 tails of stdout, stderr and stdin.
    carry: [Vec<u8>; 3],
}

impl Encoder {
    /// An encoder at session time zero.
    pub fn new(precision: TimePrecision) -> Self {
        Self {
            precision,
            ..Self::default()
        }
    }

    /// An encoder that continues a stream whose written time is already `written_us` (for
    /// appending a final frame to an existing file).
    pub fn resume(precision: TimePrecision, written_us: u64) -> Self {
        Self {
            precision,
            last_true_us: written_us,
            written_us,
            ..Self::default()
        }
    }

    /// The written (rounded) session time of the last line, in microseconds.
    pub fn written_us(&self) -> u64 {
        self.written_us
    }

    /// Appends the lines for one event to `out`.
    ///
    /// An event earlier than the previous one is written at the previous one's time (producers
    /// on different tasks can race by a few microseconds; the file order is the arrival order).
    pub fn event(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<()> {
        let mut lines = Lines {
            out,
            interval: Some(self.advance(event.time_us)),
            precision: self.precision,
        };
        match &event.kind {
            EventKind::Output(bytes) => {
                let text = text_of(&mut self.carry[0], bytes);
                if text.as_bytes() != bytes.as_slice() {
                    lines.base64(bytes);
                }
                lines.text(code::OUTPUT, &text);
            }
            EventKind::Stderr(bytes) => {
                let text = text_of(&mut self.carry[1], bytes);
                lines.text(code::STDERR, "");
                if text.as_bytes() != bytes.as_slice() {
                    lines.base64(bytes);
                }
                lines.text(code::OUTPUT, &text);
            }
            EventKind::Input(bytes) => {
                let text = text_of(&mut self.carry[2], bytes);
                if text.as_bytes() != bytes.as_slice() {
                    lines.base64(bytes);
                }
                lines.text(code::INPUT, &text);
            }
            EventKind::Resize { cols, rows } => lines.text(code::RESIZE, &format!("{cols}x{rows}")),
            EventKind::Exit {
                code: Some(status),
                message,
            } if message.is_empty() => {
                lines.text(code::EXIT, &status.to_string());
            }
            EventKind::Exit {
                code: status,
                message,
            } => {
                let detail = json!({ "code": status, "message": message });
                lines.text(code::EXIT_DETAIL, &detail.to_string());
                if let Some(status) = status {
                    lines.text(code::EXIT, &status.to_string());
                }
            }
            EventKind::Marker(label) => lines.text(code::MARKER, label),
            EventKind::ConnectionOpened { connection, port } => {
                let data = json!({ "conn": connection, "port": port });
                lines.text(code::CONNECTION_OPENED, &data.to_string());
            }
            EventKind::ConnectionClosed {
                connection,
                bytes_to_pod,
                bytes_from_pod,
                sha256_to_pod,
                sha256_from_pod,
            } => {
                let data = json!({
                    "conn": connection,
                    "bytes_to_pod": bytes_to_pod,
                    "bytes_from_pod": bytes_from_pod,
                    "sha256_to_pod": sha256_to_pod,
                    "sha256_from_pod": sha256_from_pod,
                });
                lines.text(code::CONNECTION_CLOSED, &data.to_string());
            }
            EventKind::ConnectionData {
                connection,
                to_pod,
                data,
            } => {
                let data =
                    json!({ "conn": connection, "to_pod": to_pod, "data": BASE64.encode(data) });
                lines.text(code::CONNECTION_DATA, &data.to_string());
            }
        }
        Ok(())
    }

    /// Appends a time anchor line (interval 0) carrying the written session time, so a frame
    /// can be decoded without the frames before it.
    pub fn anchor(&mut self, out: &mut Vec<u8>) {
        push_line(
            out,
            0,
            self.precision,
            code::ANCHOR,
            &self.written_us.to_string(),
        );
    }

    /// Appends the end line with the session's final status at `time_us`.
    pub fn end(&mut self, time_us: u64, status: &SessionStatus, out: &mut Vec<u8>) -> Result<()> {
        let interval = self.advance(time_us);
        let data = serde_json::to_string(status)?;
        push_line(out, interval, self.precision, code::END, &data);
        Ok(())
    }

    /// Moves the clock to `time_us` (never backwards) and returns the interval to write.
    fn advance(&mut self, time_us: u64) -> u64 {
        self.last_true_us = self.last_true_us.max(time_us);
        let written = self.precision.round(self.last_true_us).max(self.written_us);
        let interval = written - self.written_us;
        self.written_us = written;
        interval
    }
}

/// The text a terminal shows for `bytes` after the held-back `carry`: complete UTF-8 sequences
/// as they are, invalid bytes as U+FFFD, and an incomplete sequence at the end held back (into
/// `carry`) for the stream's next event, as a terminal would.
fn text_of(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    if super::looks_binary(bytes) {
        // Raw binary (a tar stream, compressed data) shows as noise on a terminal; its display
        // text would be several times its size in U+FFFD and escapes. The `b` line before it
        // holds the bytes; the `o`/`i` line stays empty.
        carry.clear();
        return String::new();
    }
    let mut input = std::mem::take(carry);
    input.extend_from_slice(bytes);
    let mut text = String::with_capacity(input.len());
    let mut rest = input.as_slice();
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                break;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let Some(len) = error.error_len() else {
                    carry.extend_from_slice(after);
                    break;
                };
                text.push(char::REPLACEMENT_CHARACTER);
                rest = &after[len..];
            }
        }
    }
    text
}

/// The lines of one event: the first carries the event's interval, the others 0.
struct Lines<'a> {
    out: &'a mut Vec<u8>,
    interval: Option<u64>,
    precision: TimePrecision,
}

impl Lines<'_> {
    fn text(&mut self, code: &str, data: &str) {
        let interval = self.interval.take().unwrap_or(0);
        push_line(self.out, interval, self.precision, code, data);
    }

    fn base64(&mut self, bytes: &[u8]) {
        let interval = self.interval.take().unwrap_or(0);
        push_base64_line(self.out, interval, self.precision, bytes);
    }
}

/// Appends `[interval, "code", "data"]\n`, the interval as decimal seconds, escaping `data`
/// straight into `out` (this runs for every byte a session carries).
fn push_line(
    out: &mut Vec<u8>,
    interval_us: u64,
    precision: TimePrecision,
    code: &str,
    data: &str,
) {
    push_head(out, interval_us, precision, code);
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"]\n");
}

/// Appends `[interval, "b", "<base64 of bytes>"]\n`, encoding in place: base64 needs no JSON
/// escaping, and this line carries every byte of binary sessions.
fn push_base64_line(out: &mut Vec<u8>, interval_us: u64, precision: TimePrecision, bytes: &[u8]) {
    push_head(out, interval_us, precision, code::BYTES);
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    // The buffer was sized by `encoded_len`, so the encoding fits.
    let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(b"\"]\n");
}

/// Appends `[interval,"code",`.
fn push_head(out: &mut Vec<u8>, interval_us: u64, precision: TimePrecision, code: &str) {
    let mut head = String::with_capacity(32);
    head.push('[');
    push_seconds(&mut head, interval_us, precision);
    head.push_str(",\"");
    head.push_str(code);
    head.push_str("\",");
    out.extend_from_slice(head.as_bytes());
}

/// Writes `us` microseconds as seconds with at most `precision` fractional digits, trailing
/// zeros trimmed but at least one digit after the point (`0.0`, `1.25`, `0.000001`).
fn push_seconds(out: &mut String, us: u64, precision: TimePrecision) {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    let digits = usize::from(precision.digits());
    let mut frac_text = format!("{frac:06}");
    frac_text.truncate(digits.max(1));
    let trimmed = frac_text.trim_end_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    // Writing to a String cannot fail.
    let _ = write!(out, "{whole}.{trimmed}");
}
