//! The error channel/stream of exec and attach: bytes concatenated until the stream ends, then
//! one `Exit` event decided as client-go's `watchErrorStream` decides it.

use custody_protocol::status::{ExecOutcome, decode_error_stream};
use custody_recorder::model::EventKind;

use crate::{Error, Result};

/// The buffered error stream of one session.
#[derive(Debug)]
pub(super) struct ErrorStream {
    buf: Vec<u8>,
    limit: usize,
    status_json: bool,
    done: bool,
}

impl ErrorStream {
    /// An error stream carrying a JSON Status (`status_json`, v4/v5) or plain text.
    pub(super) fn new(status_json: bool, limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            status_json,
            done: false,
        }
    }

    /// Appends bytes; ignored once the stream has ended (the client has stopped reading).
    pub(super) fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.done {
            return Ok(());
        }
        if self.buf.len() + data.len() > self.limit {
            return Err(Error::ErrorStreamTooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Whether nothing was written on the stream and it has not ended: the only state in
    /// which custody may write a Status of its own there.
    pub(super) fn is_untouched(&self) -> bool {
        !self.done && self.buf.is_empty()
    }

    /// The stream ended (FIN, reset, v5 CLOSE, the server's close frame): the client reads
    /// what it has, and an empty stream means success, whatever the protocol.
    pub(super) fn end(&mut self) -> Option<EventKind> {
        if self.done {
            return None;
        }
        self.done = true;
        Some(exit_event(&self.buf, self.status_json))
    }

    /// The session ended without the stream ending: only a buffered Status says anything.
    pub(super) fn finish(&mut self) -> Option<EventKind> {
        if self.buf.is_empty() {
            self.done = true;
            return None;
        }
        self.end()
    }
}

/// The `Exit` event of a complete error stream.
fn exit_event(bytes: &[u8], status_json: bool) -> EventKind {
    if bytes.is_empty() {
        // client-go's `watchErrorStream` reports no error for an empty stream.
        return exit(Some(0), String::new());
    }
    match decode_error_stream(bytes, status_json) {
        Ok(ExecOutcome::Success) => exit(Some(0), String::new()),
        Ok(ExecOutcome::ExitCode(code)) => exit(Some(i32::from(code)), String::new()),
        Ok(ExecOutcome::Failure(message)) => exit(None, message),
        // What the client prints; the raw text keeps the evidence.
        Err(err) => exit(
            None,
            format!("{err}: {}", String::from_utf8_lossy(bytes).trim_end()),
        ),
    }
}

fn exit(code: Option<i32>, message: String) -> EventKind {
    EventKind::Exit { code, message }
}
