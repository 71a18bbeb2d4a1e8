//! The asciicast v3 encoding of a session: a header line and one JSON array per event.
//!
//! Pure code, no I/O: [`Encoder`] turns [`Event`]s into bytes and [`Decoder`] turns lines back
//! into events, exactly (bytes that are not UTF-8 and UTF-8 sequences split across events
//! included). The layout, and why stock players still show what the user saw, is specified in
//! `docs/recording-format.md`; the v3 format itself is
//! <https://docs.asciinema.org/manual/asciicast/v3/>.

mod decoder;
mod encoder;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Event, SessionMeta, SessionStatus};

pub use decoder::Decoder;
pub use encoder::Encoder;

/// The event codes used in a recording, standard v3 ones and custody's extension codes.
///
/// Extension codes are single characters that the v3 spec does not define; asciinema 3,
/// asciinema-player and asciicast-rs skip (or pass through) such events, so a stock player
/// renders only the standard lines.
pub mod code {
    /// Standard: terminal output (stdout, and stderr after an [`STDERR`] line).
    pub const OUTPUT: &str = "o";
    /// Standard: input (stdin).
    pub const INPUT: &str = "i";
    /// Standard: resize, `"COLSxROWS"`.
    pub const RESIZE: &str = "r";
    /// Standard: exit status, a decimal integer.
    pub const EXIT: &str = "x";
    /// Standard: marker with a label.
    pub const MARKER: &str = "m";
    /// Extension, prefix: the next `o` line is stderr, not stdout. Data is empty.
    pub const STDERR: &str = "e";
    /// Extension, prefix: the exact bytes of the next `o`/`i` line, base64 (standard, padded).
    /// Present only when the bytes differ from the UTF-8 of that line's text.
    pub const BYTES: &str = "b";
    /// Extension: exit detail, JSON `{"code":int|null,"message":string}`; followed by an `x`
    /// line when the code is known.
    pub const EXIT_DETAIL: &str = "X";
    /// Extension: absolute time anchor, microseconds since the session start (decimal string),
    /// the first line of every frame after the header.
    pub const ANCHOR: &str = "a";
    /// Extension: how the session ended, JSON of `SessionStatus`; the last event line.
    pub const END: &str = "q";
    /// Extension: a port-forward connection opened, JSON `{"conn":n,"port":p}`.
    pub const CONNECTION_OPENED: &str = "c";
    /// Extension: a port-forward connection closed, JSON with byte counts and SHA-256s.
    pub const CONNECTION_CLOSED: &str = "C";
    /// Extension: port-forward payload, JSON `{"conn":n,"to_pod":bool,"data":base64}`.
    pub const CONNECTION_DATA: &str = "d";
}

/// The `custody` header key's format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// How many decimal digits of a second event intervals are written with (1 to 6).
///
/// With 6 (the default) times round-trip exactly. With fewer, each event's written time is the
/// true time rounded to the nearest step, and intervals are differences of rounded absolute
/// times, so the rounding error is carried forward and never accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePrecision(u8);

impl TimePrecision {
    /// Microsecond precision: exact.
    pub const MICROS: Self = Self(6);
    /// Millisecond precision.
    pub const MILLIS: Self = Self(3);

    /// A precision of `digits` decimal digits, clamped to 0..=6.
    pub fn new(digits: u8) -> Self {
        Self(digits.min(6))
    }

    /// The number of decimal digits.
    pub fn digits(self) -> u8 {
        self.0
    }

    /// The step in microseconds (1 for 6 digits, 1000 for 3 digits).
    pub fn step_us(self) -> u64 {
        10u64.pow(u32::from(6 - self.0))
    }

    /// `time_us` rounded to the nearest step (halves round up).
    pub fn round(self, time_us: u64) -> u64 {
        let step = self.step_us();
        time_us.saturating_add(step / 2) / step * step
    }
}

impl Default for TimePrecision {
    fn default() -> Self {
        Self::MICROS
    }
}

/// One decoded line of the event stream that carries meaning for custody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A session event.
    Event(Event),
    /// A time anchor at a frame start: the session time in microseconds at that point.
    Anchor(u64),
    /// The session's end status (the `q` line).
    End(SessionStatus),
}

/// The header line's JSON object.
#[derive(Debug, Serialize, Deserialize)]
struct HeaderLine {
    version: u32,
    term: Term,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    custody: CustodyKey,
}

/// `term` in the header.
#[derive(Debug, Serialize, Deserialize)]
struct Term {
    cols: u16,
    rows: u16,
}

/// The namespaced `custody` header key: the format version and the whole [`SessionMeta`].
#[derive(Debug, Serialize, Deserialize)]
struct CustodyKey {
    format: u32,
    #[serde(flatten)]
    meta: SessionMeta,
}

/// The terminal size written when the session has none (port-forward, non-tty exec).
pub const DEFAULT_TERM_SIZE: (u16, u16) = (80, 24);

/// Encodes the header line (with its trailing newline) for a session.
pub fn encode_header(meta: &SessionMeta) -> Result<Vec<u8>> {
    let (cols, rows) = meta.term_size.unwrap_or(DEFAULT_TERM_SIZE);
    let command = (!meta.command.is_empty()).then(|| meta.command.join(" "));
    let target = if meta.container.is_empty() {
        format!("{}/{}", meta.namespace, meta.pod)
    } else {
        format!("{}/{}/{}", meta.namespace, meta.pod, meta.container)
    };
    let header = HeaderLine {
        version: 3,
        term: Term { cols, rows },
        timestamp: Some(meta.started_at_us.div_euclid(1_000_000)),
        command,
        title: Some(format!(
            "{} on {} {}",
            meta.initiator.username, meta.cluster, target
        )),
        custody: CustodyKey {
            format: FORMAT_VERSION,
            meta: meta.clone(),
        },
    };
    let mut line = serde_json::to_vec(&header)?;
    line.push(b'\n');
    Ok(line)
}

/// Decodes a header line (with or without its newline) back into the session's metadata.
pub fn decode_header(line: &[u8]) -> Result<SessionMeta> {
    let header: HeaderLine =
        serde_json::from_slice(trim_newline(line)).map_err(|e| Error::CastLine {
            line: 1,
            reason: format!("header: {e}"),
        })?;
    if header.version != 3 {
        return Err(Error::CastLine {
            line: 1,
            reason: format!("version {}", header.version),
        });
    }
    if header.custody.format != FORMAT_VERSION {
        return Err(Error::CastLine {
            line: 1,
            reason: format!("custody format {}", header.custody.format),
        });
    }
    Ok(header.custody.meta)
}

/// Strips one trailing `\n` (and a `\r` before it).
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;

/// Whether `bytes` are binary data rather than terminal text: at least 64 bytes of which, in
/// the first KiB, more than one in eight are NUL or not UTF-8. Such chunks get no display text
/// in a recording and no searchable text in the index. Looking at a prefix keeps this cheap on
/// the hot path (a chunk of binary is rarely text further on, and the `b` line keeps the bytes
/// either way).
#[allow(clippy::naive_bytecount, reason = "at most 1 KiB is looked at")]
pub fn looks_binary(bytes: &[u8]) -> bool {
    if bytes.len() < 64 {
        return false;
    }
    let sample = &bytes[..bytes.len().min(1024)];
    let limit = sample.len() / 8;
    let nuls = |valid: &[u8]| valid.iter().filter(|b| **b == 0).count();
    let mut odd = 0;
    let mut rest = sample;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return odd + nuls(rest) > limit,
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                odd += nuls(valid);
                // `None`: a sequence cut by the end of the sample, which says nothing.
                let Some(len) = e.error_len() else {
                    return odd > limit;
                };
                odd += len;
                if odd > limit {
                    return true;
                }
                rest = &after[len..];
            }
        }
    }
}
