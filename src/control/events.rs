//! The lines of `GET /sessions/{id}/events`: one JSON object per line (NDJSON), tagged by
//! `event`.
//!
//! Event lines carry `time`, seconds since the session started. Bytes (`output`, `stderr`,
//! `input`) are in `text` when they are valid UTF-8 and in `base64` otherwise (a chunk may end
//! inside a multi-byte character). Two lines are not events: `lagged` (the viewer fell behind
//! and missed `missed` events; the recording has them all) and `end` (the session ended, with
//! its `status` as its manifest says it, when known); `end` is always the last line.

use base64::Engine;
use custody_recorder::model::{Event, EventKind, SessionStatus};
use serde::{Deserialize, Serialize};

/// One line of a followed session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FollowLine {
    /// The process wrote to stdout (or the terminal).
    Output {
        /// Seconds since the session started.
        time: f64,
        /// The bytes, when they are UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The bytes, base64, when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// The process wrote to stderr.
    Stderr {
        /// Seconds since the session started.
        time: f64,
        /// The bytes, when they are UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The bytes, base64, when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// The client sent stdin (after redaction).
    Input {
        /// Seconds since the session started.
        time: f64,
        /// The bytes, when they are UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The bytes, base64, when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// The terminal was resized.
    Resize {
        /// Seconds since the session started.
        time: f64,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The process exited.
    Exit {
        /// Seconds since the session started.
        time: f64,
        /// The exit code, when the status carried one.
        code: Option<i32>,
        /// The status message.
        message: String,
    },
    /// A marker.
    Marker {
        /// Seconds since the session started.
        time: f64,
        /// The marker's label.
        label: String,
    },
    /// A port-forward connection opened.
    ConnectionOpened {
        /// Seconds since the session started.
        time: f64,
        /// The connection number.
        connection: u32,
        /// The pod port.
        port: u16,
    },
    /// A port-forward connection closed.
    ConnectionClosed {
        /// Seconds since the session started.
        time: f64,
        /// The connection number.
        connection: u32,
        /// Bytes sent to the pod.
        bytes_to_pod: u64,
        /// Bytes sent from the pod.
        bytes_from_pod: u64,
    },
    /// Port-forward payload.
    ConnectionData {
        /// Seconds since the session started.
        time: f64,
        /// The connection number.
        connection: u32,
        /// Client to pod.
        to_pod: bool,
        /// The bytes, base64.
        base64: String,
    },
    /// The viewer fell behind and missed this many events.
    Lagged {
        /// How many events were missed.
        missed: u64,
    },
    /// The session ended; the last line.
    End {
        /// How it ended, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<SessionStatus>,
    },
}

impl FollowLine {
    /// The line of a recorded event.
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds as f64 are exact to the microsecond for centuries"
    )]
    pub fn from_event(event: &Event) -> Self {
        let time = event.time_us as f64 / 1e6;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let split = |bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(b64(bytes))),
        };
        match &event.kind {
            EventKind::Output(bytes) => {
                let (text, base64) = split(bytes);
                Self::Output { time, text, base64 }
            }
            EventKind::Stderr(bytes) => {
                let (text, base64) = split(bytes);
                Self::Stderr { time, text, base64 }
            }
            EventKind::Input(bytes) => {
                let (text, base64) = split(bytes);
                Self::Input { time, text, base64 }
            }
            EventKind::Resize { cols, rows } => Self::Resize {
                time,
                cols: *cols,
                rows: *rows,
            },
            EventKind::Exit { code, message } => Self::Exit {
                time,
                code: *code,
                message: message.clone(),
            },
            EventKind::Marker(label) => Self::Marker {
                time,
                label: label.clone(),
            },
            EventKind::ConnectionOpened { connection, port } => Self::ConnectionOpened {
                time,
                connection: *connection,
                port: *port,
            },
            EventKind::ConnectionClosed {
                connection,
                bytes_to_pod,
                bytes_from_pod,
                ..
            } => Self::ConnectionClosed {
                time,
                connection: *connection,
                bytes_to_pod: *bytes_to_pod,
                bytes_from_pod: *bytes_from_pod,
            },
            EventKind::ConnectionData {
                connection,
                to_pod,
                data,
            } => Self::ConnectionData {
                time,
                connection: *connection,
                to_pod: *to_pod,
                base64: b64(data),
            },
        }
    }

    /// The line as JSON with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }

    /// The bytes a terminal would show for this line: the output and stderr of the process
    /// (not the input, which the terminal echoes as output when it has one).
    pub fn terminal_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Output { text, base64, .. } | Self::Stderr { text, base64, .. } => {
                match (text, base64) {
                    (Some(text), _) => Some(text.as_bytes().to_vec()),
                    (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
                    (None, None) => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_go_as_text_or_base64_and_read_back() {
        let event = Event {
            time_us: 1_500_000,
            kind: EventKind::Output(b"hi\n".to_vec()),
        };
        let line = FollowLine::from_event(&event).to_line();
        assert_eq!(
            std::str::from_utf8(&line).ok(),
            Some("{\"event\":\"output\",\"time\":1.5,\"text\":\"hi\\n\"}\n")
        );
        let split = Event {
            time_us: 0,
            kind: EventKind::Stderr(vec![0xe2, 0x82]),
        };
        let line = FollowLine::from_event(&split);
        let back: FollowLine = serde_json::from_slice(&line.to_line()).unwrap();
        assert_eq!(back.terminal_bytes(), Some(vec![0xe2, 0x82]));
        let end = FollowLine::End {
            status: Some(SessionStatus::Terminated {
                reason: "admin_kill".into(),
            }),
        };
        assert_eq!(
            String::from_utf8(end.to_line()).ok().as_deref(),
            Some(
                "{\"event\":\"end\",\"status\":{\"status\":\"terminated\",\"reason\":\"admin_kill\"}}\n"
            )
        );
    }
}
