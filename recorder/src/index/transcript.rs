//! Searchable text from a session's events: output with terminal escape sequences stripped, and
//! the command lines the person typed, rebuilt from keystrokes.
//!
//! At most [`MAX_SESSION_TEXT`] bytes are kept per session.
//!
//! Both are approximations of what a person saw and did, good enough to find a session:
//! - Output: CSI, OSC, DCS/SOS/PM/APC strings and two- and three-character escapes are removed;
//!   `\r\n` and a lone `\r` both end a line; a backspace removes the previous character (so the
//!   echo of an erased keystroke disappears); other control characters are dropped.
//! - Typed lines: printable input accumulates until Enter (`\r` or `\n`); Backspace/DEL remove a
//!   character, Ctrl-U clears the line, Ctrl-W removes the last word, Ctrl-C abandons the line;
//!   escape sequences (arrow keys, bracketed-paste markers) are skipped. History recall and
//!   in-line cursor edits cannot be seen from keystrokes alone: the shell's echo in the output
//!   text still holds the line as it ran.

use crate::keyframe::Utf8Decoder;
use crate::model::{Event, EventKind};

/// Where a piece of searchable text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextSource {
    /// Output (stdout and stderr), escape sequences stripped.
    Output,
    /// A line the person typed (or piped) on stdin.
    Input,
}

impl TextSource {
    /// The name stored in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Input => "input",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "output" => Some(Self::Output),
            "input" => Some(Self::Input),
            _ => None,
        }
    }
}

/// One searchable piece of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    /// Output or typed line.
    pub source: TextSource,
    /// When: the first event of the output chunk, or the Enter that ended the typed line (µs
    /// since the session start).
    pub time_us: u64,
    /// The text.
    pub body: String,
}

/// Turns events into [`TextChunk`]s, one output chunk per frame and one chunk per typed line.
#[derive(Default)]
pub(crate) struct Transcript {
    output: OutputText,
    output_since: Option<u64>,
    last_output_us: u64,
    typed: LineEditor,
    chunks: Vec<TextChunk>,
    /// Bytes of text in `chunks`.
    kept: usize,
}

impl Transcript {
    /// Takes one event into account.
    pub(crate) fn push(&mut self, event: &Event) {
        // The text index is for finding sessions, not for holding them: past the budget the
        // rest of a session (a `kubectl cp`, a log dump) is not indexed, which keeps indexing
        // memory and the database bounded whatever a session carries.
        if self.kept + self.output.held() >= MAX_SESSION_TEXT {
            return;
        }
        match &event.kind {
            // Binary streams (`kubectl cp`'s tar, compressed data) hold no text to search.
            EventKind::Output(bytes) | EventKind::Stderr(bytes) | EventKind::Input(bytes)
                if crate::format::looks_binary(bytes) => {}
            EventKind::Output(bytes) | EventKind::Stderr(bytes) => {
                self.output_since.get_or_insert(event.time_us);
                self.last_output_us = event.time_us;
                self.output.push(bytes);
            }
            EventKind::Input(bytes) => {
                for line in self.typed.push(bytes) {
                    self.kept += line.len();
                    self.chunks.push(TextChunk {
                        source: TextSource::Input,
                        time_us: event.time_us,
                        body: line,
                    });
                }
            }
            _ => {}
        }
    }

    /// Ends a frame: emits the output seen so far up to its last complete line. An unfinished
    /// line is carried into the next frame's chunk so a word is never cut in two.
    pub(crate) fn end_frame(&mut self) {
        let text = self.output.take_complete_lines();
        self.emit_output(text);
    }

    /// Ends the session: emits everything still held, including an unfinished typed line.
    pub(crate) fn finish(mut self, last_time_us: u64) -> Vec<TextChunk> {
        let text = self.output.take_all();
        self.emit_output(text);
        if let Some(line) = self.typed.take_line() {
            self.kept += line.len();
            self.chunks.push(TextChunk {
                source: TextSource::Input,
                time_us: last_time_us,
                body: line,
            });
        }
        self.chunks
    }

    fn emit_output(&mut self, text: String) {
        let carried = !self.output.line.is_empty();
        if !text.trim().is_empty() {
            self.kept += text.len();
            let time_us = self.output_since.unwrap_or(self.last_output_us);
            self.chunks.push(TextChunk {
                source: TextSource::Output,
                time_us,
                body: text,
            });
            // The carried line's start is not known more precisely than the last output.
            self.output_since = carried.then_some(self.last_output_us);
        } else if !carried {
            self.output_since = None;
        }
    }
}

/// Output text with escape sequences stripped, kept as complete lines plus the current one.
#[derive(Default)]
struct OutputText {
    utf8: Utf8Decoder,
    escapes: EscapeFilter,
    done: String,
    line: String,
    after_cr: bool,
}

impl OutputText {
    fn push(&mut self, bytes: &[u8]) {
        let Self {
            utf8,
            escapes,
            done,
            line,
            after_cr,
        } = self;
        utf8.decode(bytes, |text| {
            for ch in text.chars() {
                let Some(ch) = escapes.filter(ch) else {
                    continue;
                };
                if *after_cr {
                    *after_cr = false;
                    if ch == '\n' {
                        continue; // `\r\n` ended the line at the `\r`
                    }
                }
                match ch {
                    '\r' | '\n' => {
                        *after_cr = ch == '\r';
                        done.push_str(line.trim_end());
                        done.push('\n');
                        line.clear();
                    }
                    '\u{8}' => {
                        line.pop();
                    }
                    '\t' => line.push('\t'),
                    c if c.is_control() => {}
                    c => {
                        if line.len() < MAX_LINE {
                            line.push(c);
                        }
                    }
                }
            }
        });
    }

    /// Bytes of text held, not yet taken.
    fn held(&self) -> usize {
        self.done.len() + self.line.len()
    }

    fn take_complete_lines(&mut self) -> String {
        if self.line.len() >= MAX_LINE {
            // A single endless line: emit it rather than carry it forever.
            self.done.push_str(&self.line);
            self.line.clear();
        }
        std::mem::take(&mut self.done)
    }

    fn take_all(&mut self) -> String {
        let mut text = std::mem::take(&mut self.done);
        text.push_str(self.line.trim_end());
        self.line.clear();
        text
    }
}

/// Rebuilds typed lines from keystrokes (the rules are in this module's documentation); the
/// player uses it to find where each command was entered.
#[derive(Default)]
pub struct LineEditor {
    utf8: Utf8Decoder,
    escapes: EscapeFilter,
    line: String,
}

impl LineEditor {
    /// Takes keystrokes; returns the non-empty lines an Enter in them completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let Self {
            utf8,
            escapes,
            line,
        } = self;
        utf8.decode(bytes, |text| {
            for ch in text.chars() {
                let Some(ch) = escapes.filter(ch) else {
                    continue;
                };
                match ch {
                    '\r' | '\n' => {
                        let typed = line.trim();
                        if !typed.is_empty() {
                            lines.push(typed.to_owned());
                        }
                        line.clear();
                    }
                    '\u{7f}' | '\u{8}' => {
                        line.pop();
                    }
                    '\u{15}' | '\u{3}' => line.clear(), // Ctrl-U, Ctrl-C
                    '\u{17}' => {
                        // Ctrl-W: the word before the cursor and the blanks after it.
                        let kept = line.trim_end().len();
                        line.truncate(kept);
                        // After the blank, which may be wider than one byte (U+0085, U+00A0).
                        let word_start = line
                            .char_indices()
                            .rev()
                            .find(|(_, c)| c.is_whitespace())
                            .map_or(0, |(i, c)| i + c.len_utf8());
                        line.truncate(word_start);
                    }
                    '\t' => line.push(' '),
                    c if c.is_control() => {}
                    c => {
                        if line.len() < MAX_LINE {
                            line.push(c);
                        }
                    }
                }
            }
        });
        lines
    }

    fn take_line(&mut self) -> Option<String> {
        let typed = self.line.trim().to_owned();
        self.line.clear();
        (!typed.is_empty()).then_some(typed)
    }
}

/// Removes terminal escape sequences from a character stream (ECMA-48 shapes: CSI, OSC, string
/// controls, and short escapes), passing everything else through.
#[derive(Default)]
pub struct EscapeFilter {
    state: EscState,
}

#[derive(Default, Clone, Copy)]
enum EscState {
    #[default]
    Ground,
    Escape,
    /// `ESC` followed by an intermediate (`(`, `)`, `#`, ...): one more character ends it.
    EscapeIntermediate,
    Csi,
    /// OSC (ends with BEL or ST) and DCS/SOS/PM/APC (end with ST).
    Str,
    /// `ESC` seen inside a string: `\` ends the string.
    StrEscape,
}

impl EscapeFilter {
    /// Returns the character if it is text or a plain control, `None` if it belongs to an
    /// escape sequence.
    pub fn filter(&mut self, ch: char) -> Option<char> {
        use EscState::{Csi, Escape, EscapeIntermediate, Ground, Str, StrEscape};
        self.state = match (self.state, ch) {
            (Ground | Escape | Csi, '\u{1b}') => Escape,
            (Ground, '\u{9b}') | (Escape, '[') => Csi,
            (Ground, '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}')
            | (Escape, ']' | 'P' | 'X' | '^' | '_') => Str,
            (Ground, c) => return Some(c),
            (Escape, ' '..='/') => EscapeIntermediate,
            // CAN and SUB abort a control sequence; BEL and ST end a string.
            (Escape | EscapeIntermediate, _)
            | (Csi, '\u{18}' | '\u{1a}' | '\u{40}'..='\u{7e}')
            | (Str, '\u{7}' | '\u{9c}')
            | (StrEscape, '\\') => Ground,
            (Str | StrEscape, '\u{1b}') => StrEscape,
            (StrEscape, _) => Str,
            (state @ (Csi | Str), _) => state,
        };
        None
    }
}

/// The searchable text kept per session (output and typed lines together), in bytes; events
/// after it is reached are not indexed (they stay in the recording).
pub const MAX_SESSION_TEXT: usize = 4 * 1024 * 1024;

/// Lines longer than this (in bytes) are cut: such output is binary noise, not text to search.
const MAX_LINE: usize = 64 * 1024;

#[cfg(test)]
mod tests;
