//! The event decoder: asciicast v3 lines back to [`Record`]s, undoing the encoder's prefix
//! lines (`e`, `b`, `X`) so that events come back byte for byte.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::{Record, code, trim_newline};
use crate::error::{Error, Result};
use crate::model::{Event, EventKind, SessionStatus};

/// Turns event lines (everything after the header) into [`Record`]s.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The session time reached, `None` until an anchor when decoding from a frame start.
    time_us: Option<u64>,
    /// Lines read so far, for error messages (the header is line 1).
    line: usize,
    /// A prefix line's meaning, waiting for the line it applies to.
    pending: Pending,
}

/// What prefix lines said about the next line.
#[derive(Debug, Clone, Default)]
struct Pending {
    stderr: bool,
    bytes: Option<Vec<u8>>,
    exit: Option<(i32, String)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.stderr && self.bytes.is_none() && self.exit.is_none()
    }
}

impl Decoder {
    /// A decoder for a whole event stream, starting at session time zero right after the
    /// header line. Anchors are checked against the running time.
    pub fn new() -> Self {
        Self {
            time_us: Some(0),
            line: 1,
            pending: Pending::default(),
        }
    }

    /// A decoder for a stream that starts at a frame boundary: the frame's first line (its
    /// anchor) sets the time; `first_line` is that line's number, for error messages.
    pub fn at_anchor(first_line: usize) -> Self {
        Self {
            time_us: None,
            line: first_line.saturating_sub(1),
            pending: Pending::default(),
        }
    }

    /// The session time reached so far, in microseconds.
    pub fn time_us(&self) -> Option<u64> {
        self.time_us
    }

    /// Decodes one line (with or without its newline). Returns `None` for comments, empty
    /// lines and prefix lines, whose meaning is folded into the next line's record.
    pub fn line(&mut self, raw: &[u8]) -> Result<Option<Record>> {
        self.line += 1;
        let raw = trim_newline(raw);
        if raw.is_empty() || raw.starts_with(b"#") {
            return Ok(None);
        }
        let (interval, code, data): (f64, String, String) =
            serde_json::from_slice(raw).map_err(|e| self.error(e.to_string()))?;
        if !interval.is_finite() || interval < 0.0 {
            return Err(self.error(format!("bad interval {interval}")));
        }
        // Intervals are written with at most 6 decimals; f64 holds them exactly enough that
        // rounding to the microsecond recovers the written value (below ~285 years).
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked >= 0"
        )]
        let interval_us = (interval * 1e6).round() as u64;
        if code == code::ANCHOR {
            return self.anchor(interval_us, &data).map(Some);
        }
        let Some(base) = self.time_us else {
            return Err(self.error("event before the frame's anchor".into()));
        };
        let time_us = base.saturating_add(interval_us);
        self.time_us = Some(time_us);
        if !self.pending.is_empty() && !allowed_after_prefix(&self.pending, &code) {
            return Err(self.error(format!("`{code}` line after a prefix line")));
        }
        let kind = match code.as_str() {
            code::STDERR => {
                self.pending.stderr = true;
                return Ok(None);
            }
            code::BYTES => {
                let bytes = BASE64
                    .decode(&data)
                    .map_err(|e| self.error(e.to_string()))?;
                self.pending.bytes = Some(bytes);
                return Ok(None);
            }
            code::OUTPUT => {
                let pending = std::mem::take(&mut self.pending);
                let bytes = pending.bytes.unwrap_or_else(|| data.into_bytes());
                if pending.stderr {
                    EventKind::Stderr(bytes)
                } else {
                    EventKind::Output(bytes)
                }
            }
            code::INPUT => {
                let pending = std::mem::take(&mut self.pending);
                EventKind::Input(pending.bytes.unwrap_or_else(|| data.into_bytes()))
            }
            code::RESIZE => {
                let size = data
                    .split_once('x')
                    .and_then(|(c, r)| Some((c.parse().ok()?, r.parse().ok()?)));
                let (cols, rows) = size.ok_or_else(|| self.error(format!("bad size {data:?}")))?;
                EventKind::Resize { cols, rows }
            }
            code::EXIT => {
                let status: i32 = data
                    .trim()
                    .parse()
                    .map_err(|_| self.error(format!("bad exit {data:?}")))?;
                let message = match self.pending.exit.take() {
                    Some((expected, message)) if expected == status => message,
                    Some(_) => return Err(self.error("exit code differs from its detail".into())),
                    None => String::new(),
                };
                EventKind::Exit {
                    code: Some(status),
                    message,
                }
            }
            code::EXIT_DETAIL => {
                let detail: ExitDetail = self.json(&data)?;
                match detail.code {
                    Some(status) => {
                        self.pending.exit = Some((status, detail.message));
                        return Ok(None);
                    }
                    None => EventKind::Exit {
                        code: None,
                        message: detail.message,
                    },
                }
            }
            code::MARKER => EventKind::Marker(data),
            code::END => return Ok(Some(Record::End(self.json::<SessionStatus>(&data)?))),
            code::CONNECTION_OPENED | code::CONNECTION_CLOSED | code::CONNECTION_DATA => {
                self.connection(&code, &data)?
            }
            other => return Err(self.error(format!("unknown event code {other:?}"))),
        };
        Ok(Some(Record::Event(Event { time_us, kind })))
    }

    /// Decodes a port-forward line.
    fn connection(&self, code: &str, data: &str) -> Result<EventKind> {
        Ok(match code {
            code::CONNECTION_OPENED => {
                let c: Opened = self.json(data)?;
                EventKind::ConnectionOpened {
                    connection: c.conn,
                    port: c.port,
                }
            }
            code::CONNECTION_CLOSED => {
                let c: Closed = self.json(data)?;
                EventKind::ConnectionClosed {
                    connection: c.conn,
                    bytes_to_pod: c.bytes_to_pod,
                    bytes_from_pod: c.bytes_from_pod,
                    sha256_to_pod: c.sha256_to_pod,
                    sha256_from_pod: c.sha256_from_pod,
                }
            }
            code::CONNECTION_DATA => {
                let d: Payload = self.json(data)?;
                let bytes = BASE64
                    .decode(&d.data)
                    .map_err(|e| self.error(e.to_string()))?;
                EventKind::ConnectionData {
                    connection: d.conn,
                    to_pod: d.to_pod,
                    data: bytes,
                }
            }
            _ => return Err(self.error(format!("unknown event code {code:?}"))),
        })
    }

    /// Checks that no prefix line is left waiting at the end of the stream.
    pub fn finish(&self) -> Result<()> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(self.error("prefix line at the end of the stream".into()))
        }
    }

    fn anchor(&mut self, interval_us: u64, data: &str) -> Result<Record> {
        let at: u64 = data
            .parse()
            .map_err(|_| self.error(format!("bad anchor {data:?}")))?;
        if interval_us != 0 || !self.pending.is_empty() {
            return Err(self.error("anchor inside an event".into()));
        }
        match self.time_us {
            Some(time) if time != at => {
                Err(self.error(format!("anchor says {at} us, the events say {time} us")))
            }
            _ => {
                self.time_us = Some(at);
                Ok(Record::Anchor(at))
            }
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, data: &str) -> Result<T> {
        serde_json::from_str(data).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> Error {
        Error::CastLine {
            line: self.line,
            reason,
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Which lines may follow the prefix lines seen so far.
fn allowed_after_prefix(pending: &Pending, code: &str) -> bool {
    if pending.exit.is_some() {
        return code == code::EXIT;
    }
    match code {
        code::BYTES => pending.bytes.is_none(),
        code::OUTPUT => true,
        code::INPUT => !pending.stderr,
        _ => false,
    }
}

#[derive(Deserialize)]
struct ExitDetail {
    code: Option<i32>,
    message: String,
}

#[derive(Deserialize)]
struct Opened {
    conn: u32,
    port: u16,
}

#[derive(Deserialize)]
struct Closed {
    conn: u32,
    bytes_to_pod: u64,
    bytes_from_pod: u64,
    sha256_to_pod: String,
    sha256_from_pod: String,
}

#[derive(Deserialize)]
struct Payload {
    conn: u32,
    to_pod: bool,
    data: String,
}
