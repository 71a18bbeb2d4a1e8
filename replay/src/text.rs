//! What a player finds in a session's bytes: the commands typed (one per Enter, rebuilt from
//! keystrokes as the index does) and the output as plain text for search, each piece tied to the
//! time of the event it came from.

use custody_recorder::index::{EscapeFilter, LineEditor};
use custody_recorder::model::{Event, EventKind};

/// A command line the person typed, at the Enter that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedCommand {
    /// The time of the input event holding the Enter (µs since the session start).
    pub time_us: u64,
    /// The line as rebuilt from keystrokes.
    pub text: String,
}

/// Rebuilds typed commands from input events, one at a time (live sessions grow).
#[derive(Default)]
pub(crate) struct CommandFinder {
    editor: LineEditor,
}

impl CommandFinder {
    pub(crate) fn push(&mut self, event: &Event, out: &mut Vec<TypedCommand>) {
        if let EventKind::Input(bytes) = &event.kind {
            for text in self.editor.push(bytes) {
                out.push(TypedCommand {
                    time_us: event.time_us,
                    text,
                });
            }
        }
    }
}

/// The session's output (stdout and stderr) as plain text, escape sequences removed, with the
/// time at which each piece appeared: what `/` searches.
#[derive(Default)]
pub(crate) struct OutputText {
    /// The text, ASCII-lowercased for case-insensitive search (byte offsets stay those of the
    /// original text).
    folded: String,
    /// (byte offset in `folded` where an event's text starts, the event's time), in order.
    starts: Vec<(usize, u64)>,
    escapes: EscapeFilter,
}

impl OutputText {
    pub(crate) fn push(&mut self, event: &Event) {
        let (EventKind::Output(bytes) | EventKind::Stderr(bytes)) = &event.kind else {
            return;
        };
        let start = self.folded.len();
        for ch in String::from_utf8_lossy(bytes).chars() {
            let Some(ch) = self.escapes.filter(ch) else {
                continue;
            };
            match ch {
                '\r' | '\n' => {
                    if !self.folded.ends_with('\n') {
                        self.folded.push('\n');
                    }
                }
                '\t' => self.folded.push(' '),
                c if c.is_control() => {}
                c => self.folded.push(c.to_ascii_lowercase()),
            }
        }
        if self.folded.len() > start {
            self.starts.push((start, event.time_us));
        }
    }

    /// The times of the matches of `query` (case-insensitive for ASCII), in order: each match
    /// at the time of the event that completed it, so the screen shows it from then on.
    pub(crate) fn hits(&self, query: &str) -> Vec<u64> {
        let needle = query.to_ascii_lowercase();
        if needle.is_empty() {
            return Vec::new();
        }
        let mut times = Vec::new();
        for (at, _) in self.folded.match_indices(&needle) {
            let last_byte = at + needle.len() - 1;
            let i = self
                .starts
                .partition_point(|(start, _)| *start <= last_byte);
            if let Some((_, time)) = i.checked_sub(1).and_then(|i| self.starts.get(i))
                && times.last() != Some(time)
            {
                times.push(*time);
            }
        }
        times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time_us: u64, kind: EventKind) -> Event {
        Event { time_us, kind }
    }

    #[test]
    fn commands_are_found_at_each_enter() {
        let mut finder = CommandFinder::default();
        let mut out = Vec::new();
        for e in [
            ev(1, EventKind::Input(b"ls -".to_vec())),
            ev(2, EventKind::Input(b"l\r".to_vec())),
            ev(3, EventKind::Input(b"\r".to_vec())),
            ev(4, EventKind::Input(b"echo x\x7fy\rexit\r".to_vec())),
        ] {
            finder.push(&e, &mut out);
        }
        let got: Vec<_> = out.iter().map(|c| (c.time_us, c.text.as_str())).collect();
        assert_eq!(got, [(2, "ls -l"), (4, "echo y"), (4, "exit")]);
    }

    #[test]
    fn search_finds_text_split_across_events_and_escapes() {
        let mut text = OutputText::default();
        for e in [
            ev(10, EventKind::Output(b"\x1b[31mHel".to_vec())),
            ev(20, EventKind::Output(b"lo\x1b[0m world\r\n".to_vec())),
            ev(30, EventKind::Stderr(b"hello again\n".to_vec())),
        ] {
            text.push(&e);
        }
        assert_eq!(text.hits("HELLO"), [20, 30]);
        assert_eq!(text.hits("world"), [20]);
        assert!(text.hits("nothing").is_empty());
        assert!(text.hits("").is_empty());
    }
}
