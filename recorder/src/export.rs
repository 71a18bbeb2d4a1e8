//! Conversions of a verified recording into files other tools read: plain asciicast v3 for
//! asciinema 3 and asciinema-player (`cast`), asciicast v2 for older players (`cast-v2`), and the
//! rendered transcript as text (`txt`). Pure: bytes in memory to bytes in memory.
//!
//! Only the **verified** events are exported ([`Recording::events`]): the unverified tail of a
//! live or crashed session is not (the `raw` file, the recording itself, holds everything).
//!
//! - **cast** (asciicast v3): a header with `term`, `timestamp` (the start, Unix seconds),
//!   `command` and `title`, without custody's `custody` key; then only standard events, with
//!   intervals. Output and stderr are both `o` lines with the text a terminal shows (invalid
//!   UTF-8 as U+FFFD, a character split across chunks joined, binary chunks left out); input is
//!   `i`, resizes `r` (a size of 0 columns or rows, which older recordings may hold, a marker),
//!   markers `m`, an exit with a code `x`. An exit without a code and
//!   port-forward connections opening and closing become markers (`m`); port-forward payload
//!   and custody's extension lines (`e`, `b`, `X`, `a`, `q`, `c`, `C`, `d`) are dropped.
//! - **cast-v2** (asciicast v2): a header with `width`, `height`, `timestamp`, `title` (and
//!   `command`), then `[time, code, data]` with absolute times in seconds since the start, for
//!   `o`, `i`, `r` and `m` as above. v2 has no exit event; an exit becomes nothing.
//! - **txt**: for a tty session, the terminal transcript ([`TranscriptState`]): every line that
//!   scrolled off the screen, then the final screen, as avt renders the output (soft-wrapped
//!   rows joined, trailing blanks trimmed). For a session without a terminal, the output text in
//!   order (lossy UTF-8), each stderr line prefixed with `[stderr] ` (a line interrupted by the
//!   other stream is ended first), a binary chunk as `[N bytes of binary output]`, and
//!   port-forward connections as `[port-forward] ...` lines. Input is not part of `txt` in
//!   either case (a tty echoes what it shows).

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::Result;
use crate::format::{DEFAULT_TERM_SIZE, looks_binary};
use crate::keyframe::TranscriptState;
use crate::model::{Event, EventKind, SessionMeta};
use crate::reader::Recording;

/// The export formats (the `format` of a download besides `raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Plain asciicast v3.
    Cast,
    /// asciicast v2.
    CastV2,
    /// The rendered transcript.
    Txt,
}

impl ExportFormat {
    /// Parses `cast`, `cast-v2` or `txt`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cast" => Some(Self::Cast),
            "cast-v2" => Some(Self::CastV2),
            "txt" => Some(Self::Txt),
            _ => None,
        }
    }

    /// The name, as [`ExportFormat::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cast => "cast",
            Self::CastV2 => "cast-v2",
            Self::Txt => "txt",
        }
    }

    /// The file name extension of an export (`cast`, `v2.cast`, `txt`).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Cast => "cast",
            Self::CastV2 => "v2.cast",
            Self::Txt => "txt",
        }
    }

    /// The media type of an export.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Cast | Self::CastV2 => "application/x-asciicast",
            Self::Txt => "text/plain; charset=utf-8",
        }
    }

    /// Converts the recording's verified events.
    pub fn export(self, recording: &Recording) -> Result<Vec<u8>> {
        match self {
            Self::Cast => cast(recording),
            Self::CastV2 => cast_v2(recording),
            Self::Txt => txt(recording),
        }
    }
}

#[derive(Serialize)]
struct V3Header<'a> {
    version: u32,
    term: V3Term,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    title: &'a str,
}

#[derive(Serialize)]
struct V3Term {
    cols: u16,
    rows: u16,
}

#[derive(Serialize)]
struct V2Header<'a> {
    version: u32,
    width: u16,
    height: u16,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    title: &'a str,
}

/// Plain asciicast v3 (see the module documentation).
pub fn cast(recording: &Recording) -> Result<Vec<u8>> {
    let meta = &recording.meta;
    let (cols, rows) = meta.term_size.unwrap_or(DEFAULT_TERM_SIZE);
    let title = title(meta);
    let mut out = serde_json::to_vec(&V3Header {
        version: 3,
        term: V3Term { cols, rows },
        timestamp: meta.started_at_us.div_euclid(1_000_000),
        command: command(meta),
        title: &title,
    })?;
    out.push(b'\n');
    let mut last_us = 0u64;
    for_each_standard(&recording.events, true, |time_us, code, data| {
        let interval = time_us.saturating_sub(last_us);
        last_us = last_us.max(time_us);
        push_line(&mut out, interval, code, data)
    })?;
    Ok(out)
}

/// asciicast v2 (see the module documentation).
pub fn cast_v2(recording: &Recording) -> Result<Vec<u8>> {
    let meta = &recording.meta;
    let (width, height) = meta.term_size.unwrap_or(DEFAULT_TERM_SIZE);
    let title = title(meta);
    let mut out = serde_json::to_vec(&V2Header {
        version: 2,
        width,
        height,
        timestamp: meta.started_at_us.div_euclid(1_000_000),
        command: command(meta),
        title: &title,
    })?;
    out.push(b'\n');
    let mut last_us = 0u64;
    for_each_standard(&recording.events, false, |time_us, code, data| {
        // Times never go backwards in a file; keep it so for players that assume it.
        last_us = last_us.max(time_us);
        push_line(&mut out, last_us, code, data)
    })?;
    Ok(out)
}

/// The rendered transcript (see the module documentation).
pub fn txt(recording: &Recording) -> Result<Vec<u8>> {
    let lines = if recording.meta.tty {
        let mut state = TranscriptState::for_session(&recording.meta)?;
        for event in &recording.events {
            state.apply(event);
        }
        state.finish()
    } else {
        return Ok(plain_text(&recording.events).into_bytes());
    };
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// The output of a session without a terminal, stderr lines marked.
fn plain_text(events: &[Event]) -> String {
    #[derive(PartialEq, Clone, Copy)]
    enum Stream {
        Out,
        Err,
    }
    let mut out = String::new();
    let mut carry_out = Vec::new();
    let mut carry_err = Vec::new();
    let mut last = Stream::Out;
    let end_line = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    for event in events {
        let (stream, bytes) = match &event.kind {
            EventKind::Output(bytes) => (Stream::Out, bytes),
            EventKind::Stderr(bytes) => (Stream::Err, bytes),
            EventKind::ConnectionOpened { connection, port } => {
                end_line(&mut out);
                let _ = writeln!(
                    out,
                    "[port-forward] connection {connection} opened to port {port}"
                );
                continue;
            }
            EventKind::ConnectionClosed {
                connection,
                bytes_to_pod,
                bytes_from_pod,
                ..
            } => {
                end_line(&mut out);
                let _ = writeln!(
                    out,
                    "[port-forward] connection {connection} closed: {bytes_to_pod} bytes to the pod, {bytes_from_pod} bytes from it"
                );
                continue;
            }
            _ => continue,
        };
        if stream != last {
            end_line(&mut out);
            last = stream;
        }
        if looks_binary(bytes) {
            end_line(&mut out);
            let _ = writeln!(out, "[{} bytes of binary output]", bytes.len());
            continue;
        }
        let carry = match stream {
            Stream::Out => &mut carry_out,
            Stream::Err => &mut carry_err,
        };
        let text = display_text(carry, bytes);
        match stream {
            Stream::Out => out.push_str(&text),
            Stream::Err => {
                for c in text.chars() {
                    if out.is_empty() || out.ends_with('\n') {
                        out.push_str("[stderr] ");
                    }
                    out.push(c);
                }
            }
        }
    }
    end_line(&mut out);
    out
}

/// Calls `line(time_us, code, data)` for each standard asciicast event the recording's events
/// become (`x` only when `exit` is set).
fn for_each_standard(
    events: &[Event],
    exit: bool,
    mut line: impl FnMut(u64, &str, &str) -> Result<()>,
) -> Result<()> {
    let mut carry_out = Vec::new();
    let mut carry_err = Vec::new();
    let mut carry_in = Vec::new();
    for event in events {
        let t = event.time_us;
        match &event.kind {
            EventKind::Output(bytes) | EventKind::Stderr(bytes) | EventKind::Input(bytes) => {
                let (carry, code) = match &event.kind {
                    EventKind::Output(_) => (&mut carry_out, "o"),
                    EventKind::Stderr(_) => (&mut carry_err, "o"),
                    _ => (&mut carry_in, "i"),
                };
                let text = display_text(carry, bytes);
                if !text.is_empty() {
                    line(t, code, &text)?;
                }
            }
            // asciinema 3 panics on a 0-column or 0-row size; such a request (in files
            // recorded before the gateway turned it into a marker) stays a marker.
            EventKind::Resize { cols, rows } if *cols == 0 || *rows == 0 => line(
                t,
                "m",
                &format!("resize ignored: {cols}x{rows} is not a size"),
            )?,
            EventKind::Resize { cols, rows } => line(t, "r", &format!("{cols}x{rows}"))?,
            EventKind::Marker(label) => line(t, "m", label)?,
            EventKind::Exit {
                code: Some(code), ..
            } if exit => {
                line(t, "x", &code.to_string())?;
            }
            EventKind::Exit {
                code: None,
                message,
            } if exit => {
                line(t, "m", &format!("exit: {message}"))?;
            }
            EventKind::Exit { .. } | EventKind::ConnectionData { .. } => {}
            EventKind::ConnectionOpened { connection, port } => line(
                t,
                "m",
                &format!("port-forward connection {connection} opened to port {port}"),
            )?,
            EventKind::ConnectionClosed {
                connection,
                bytes_to_pod,
                bytes_from_pod,
                ..
            } => line(
                t,
                "m",
                &format!(
                    "port-forward connection {connection} closed: {bytes_to_pod} bytes to the pod, {bytes_from_pod} from it"
                ),
            )?,
        }
    }
    Ok(())
}

/// The text a terminal shows for `bytes` after the stream's held-back `carry`: complete UTF-8
/// as it is, invalid bytes as U+FFFD, an unfinished character at the end held back for the
/// stream's next chunk; nothing for a binary chunk.
fn display_text(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    if looks_binary(bytes) {
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
                return text;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let Some(len) = error.error_len() else {
                    carry.extend_from_slice(after);
                    return text;
                };
                text.push(char::REPLACEMENT_CHARACTER);
                rest = &after[len..];
            }
        }
    }
}

/// One event line: `[seconds, "code", "data"]` and a newline.
fn push_line(out: &mut Vec<u8>, us: u64, code: &str, data: &str) -> Result<()> {
    out.push(b'[');
    out.extend_from_slice(seconds(us).as_bytes());
    out.extend_from_slice(b", ");
    serde_json::to_writer(&mut *out, code)?;
    out.extend_from_slice(b", ");
    serde_json::to_writer(&mut *out, data)?;
    out.extend_from_slice(b"]\n");
    Ok(())
}

/// Microseconds as seconds with up to 6 fractional digits, trailing zeros trimmed (`1.5`,
/// `0.0`).
fn seconds(us: u64) -> String {
    let frac = format!("{:06}", us % 1_000_000);
    let frac = frac.trim_end_matches('0');
    format!(
        "{}.{}",
        us / 1_000_000,
        if frac.is_empty() { "0" } else { frac }
    )
}

fn command(meta: &SessionMeta) -> Option<String> {
    (!meta.command.is_empty()).then(|| meta.command.join(" "))
}

fn title(meta: &SessionMeta) -> String {
    let target = if meta.container.is_empty() {
        format!("{}/{}", meta.namespace, meta.pod)
    } else {
        format!("{}/{}/{}", meta.namespace, meta.pod, meta.container)
    };
    format!(
        "{} on {} {} ({})",
        meta.initiator.username, meta.cluster, target, meta.session_id
    )
}

#[cfg(test)]
mod tests;
