//! Terminal keyframes: the screen state at the start of each recording frame, so a player seeks by
//! restoring the nearest keyframe and replaying only the events after it.
//!
//! The terminal emulator is `avt` (asciinema's own). Its `dump()` is an escape-sequence program
//! that rebuilds, in a fresh terminal of the same size, both screen buffers, the cursor and its
//! saved copies, the pen, scroll region, tab stops, charsets, terminal modes and even a
//! half-parsed escape sequence. `vt100`'s `state_formatted()` omits the scroll region, the saved
//! cursor and the inactive buffer, so a seek from its keyframes could drift from a full replay.
//!
//! Keyframes sit at frame starts, spaced as [`build_seekpoints`] says, and are only built for
//! tty sessions. A non-tty session's output is a byte log, not a
//! screen; a player prints it from the start, so its frames carry no keyframe (`NULL` in the
//! index).

use crate::error::{Error, Result};
use crate::model::{Event, EventKind, SessionMeta};

/// A terminal emulator fed with a session's events: the state a player shows.
pub struct TerminalState {
    term: avt::Terminal,
    utf8: Utf8Decoder,
}

impl TerminalState {
    /// A blank terminal of `cols` x `rows` (each clamped to at least 1).
    pub fn new(cols: u16, rows: u16) -> Result<Self> {
        let term = avt::Terminal::new(usize::from(cols.max(1)), usize::from(rows.max(1)))
            .map_err(|e| Error::Keyframe(e.to_string()))?;
        Ok(Self {
            term,
            utf8: Utf8Decoder::default(),
        })
    }

    /// A blank terminal of the session's initial size, or 80x24 when the header has none.
    pub fn for_session(meta: &SessionMeta) -> Result<Self> {
        let (cols, rows) = meta.term_size.unwrap_or(DEFAULT_SIZE);
        Self::new(cols, rows)
    }

    /// Rebuilds the terminal a keyframe describes.
    pub fn from_keyframe(keyframe: &Keyframe) -> Result<Self> {
        let mut state = Self::new(keyframe.cols, keyframe.rows)?;
        state.term.feed(keyframe.dump.as_str());
        state.utf8.pending.clone_from(&keyframe.pending_utf8);
        Ok(state)
    }

    /// Applies one event: output (and stderr, which a tty never has) is fed to the emulator,
    /// resizes resize it, everything else leaves the screen alone.
    pub fn apply(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Output(bytes) | EventKind::Stderr(bytes) => self.feed(bytes),
            // A size of 0 columns or rows is not a size (a 0x0 pseudo-terminal's request, in
            // files recorded before the gateway turned such requests into markers): the
            // terminal keeps its size.
            EventKind::Resize { cols, rows } if *cols > 0 && *rows > 0 => {
                self.term.resize(usize::from(*cols), usize::from(*rows));
            }
            _ => {}
        }
    }

    /// Feeds raw output bytes; a UTF-8 sequence split across calls is joined, invalid bytes
    /// show as U+FFFD, as a terminal would.
    pub fn feed(&mut self, bytes: &[u8]) {
        let term = &mut self.term;
        self.utf8.decode(bytes, |text| term.feed(text));
    }

    /// The current size as (columns, rows).
    pub fn size(&self) -> (u16, u16) {
        let (cols, rows) = self.term.size();
        (clamp_u16(cols), clamp_u16(rows))
    }

    /// The visible lines' text, trailing blanks kept, one string per row.
    pub fn lines(&self) -> Vec<String> {
        self.term
            .screen()
            .visible_lines()
            .map(avt::Line::text)
            .collect()
    }

    /// The cursor: position, visibility.
    pub fn cursor(&self) -> avt::Cursor {
        self.term.cursor()
    }

    /// The emulator itself, for a renderer that needs cells, colours and pens.
    pub fn terminal(&self) -> &avt::Terminal {
        &self.term
    }

    /// A keyframe of the current state.
    pub fn keyframe(&self) -> Keyframe {
        let (cols, rows) = self.size();
        Keyframe {
            cols,
            rows,
            dump: self.term.dump(),
            pending_utf8: self.utf8.pending.clone(),
        }
    }
}

/// A terminal that keeps the text of every line that scrolls off its primary screen: the
/// session as a person scrolling back through their terminal would read it (an export's `txt`).
pub struct TranscriptState {
    state: TerminalState,
    observer: avt::observer::Transcript,
    lines: Vec<String>,
}

impl TranscriptState {
    /// A blank terminal of the session's initial size (80x24 when the header has none).
    pub fn for_session(meta: &SessionMeta) -> Result<Self> {
        Ok(Self {
            state: TerminalState::for_session(meta)?,
            observer: avt::observer::Transcript::new(),
            lines: Vec::new(),
        })
    }

    /// Applies one event as [`TerminalState::apply`] does, keeping the lines it scrolls off.
    pub fn apply(&mut self, event: &Event) {
        let TerminalState { term, utf8 } = &mut self.state;
        let observer = &mut self.observer;
        let lines = &mut self.lines;
        match &event.kind {
            EventKind::Output(bytes) | EventKind::Stderr(bytes) => {
                utf8.decode(bytes, |text| {
                    lines.extend(term.feed_with(text, &mut *observer));
                });
            }
            // As in `TerminalState::apply`: a 0-column or 0-row resize leaves the size alone.
            EventKind::Resize { cols, rows } if *cols > 0 && *rows > 0 => lines
                .extend(term.resize_with(usize::from(*cols), usize::from(*rows), &mut *observer)),
            _ => {}
        }
    }

    /// The transcript: the lines scrolled off, then the final primary screen (soft-wrapped rows
    /// joined, trailing blanks trimmed, trailing empty lines dropped). When the session ended on
    /// the alternate screen (a full-screen program still running), its visible rows follow
    /// after an empty line.
    pub fn finish(self) -> Vec<String> {
        let Self {
            state,
            observer,
            mut lines,
        } = self;
        lines.extend(observer.finish(&state.term));
        if state.term.active_screen_kind() == avt::ScreenKind::Alternate {
            let mut screen: Vec<String> = state
                .term
                .screen()
                .visible_lines()
                .map(|l| l.text().trim_end().to_owned())
                .collect();
            while screen.last().is_some_and(String::is_empty) {
                screen.pop();
            }
            if !screen.is_empty() {
                lines.push(String::new());
                lines.extend(screen);
            }
        }
        lines
    }
}

/// The serialized state of a terminal at one point of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyframe {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// avt's dump: escape sequences that rebuild the state in a blank terminal of this size.
    pub dump: String,
    /// Output bytes of an unfinished UTF-8 character (at most 3), fed before the next event.
    pub pending_utf8: Vec<u8>,
}

impl Keyframe {
    /// The compact blob stored in the index: a version byte, the size, the pending bytes and
    /// the zstd-compressed dump.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let compressed =
            zstd::bulk::compress(self.dump.as_bytes(), ZSTD_LEVEL).map_err(Error::Compression)?;
        let mut out = Vec::with_capacity(8 + self.pending_utf8.len() + compressed.len());
        out.push(BLOB_VERSION);
        out.extend_from_slice(&self.cols.to_le_bytes());
        out.extend_from_slice(&self.rows.to_le_bytes());
        // The decoder never holds more than 3 bytes (an unfinished UTF-8 character).
        let pending = &self.pending_utf8[..self.pending_utf8.len().min(3)];
        out.push(u8::try_from(pending.len()).unwrap_or(3));
        out.extend_from_slice(pending);
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    /// Parses a blob written by [`Keyframe::encode`].
    pub fn decode(blob: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Keyframe(why.to_owned());
        let (&version, rest) = blob.split_first().ok_or_else(|| bad("empty blob"))?;
        if version != BLOB_VERSION {
            return Err(Error::Keyframe(format!(
                "unknown keyframe version {version}"
            )));
        }
        let [c0, c1, r0, r1, pending_len, rest @ ..] = rest else {
            return Err(bad("truncated keyframe header"));
        };
        let pending_len = usize::from(*pending_len);
        if pending_len > 3 || rest.len() < pending_len {
            return Err(bad("bad pending UTF-8 length"));
        }
        let (pending, compressed) = rest.split_at(pending_len);
        let dump = zstd::stream::decode_all(compressed).map_err(Error::Compression)?;
        let dump = String::from_utf8(dump).map_err(|_| bad("dump is not UTF-8"))?;
        Ok(Self {
            cols: u16::from_le_bytes([*c0, *c1]),
            rows: u16::from_le_bytes([*r0, *r1]),
            dump,
            pending_utf8: pending.to_vec(),
        })
    }
}

/// A keyframe and where it sits: the state after the first `event_index` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seekpoint {
    /// How many events precede the keyframe (the index of the first event to replay after it).
    pub event_index: usize,
    /// The terminal state at that point.
    pub keyframe: Keyframe,
}

/// Builds the seekpoints of a session by replaying it once: one at the start of the first frame,
/// then one at the start of each frame that begins at least [`KEYFRAME_EVERY_BYTES`] of output
/// or [`KEYFRAME_EVERY_US`] after the previous seekpoint. The writer closes a frame at 1 MiB of
/// events or 60 s (its defaults), so nearly every frame gets a keyframe and a seek replays at
/// most about one frame: up to ~1 MiB of output or 60 s (`benches/seek.rs` measures the worst
/// frame of an hour-long session). The spacing matters for files cut into shorter frames (a small
/// `frame_max_duration`, or files from the one-frame-per-second layout), where a keyframe per
/// frame would cost a screen dump per frame for no gain.
///
/// `frame_event_counts` are the frames' event counts in order (the header frame counts 0). The
/// result holds, per frame, the seekpoint at its start or `None`. All `None` for a non-tty
/// session.
pub fn build_seekpoints(
    meta: &SessionMeta,
    events: &[Event],
    frame_event_counts: &[usize],
) -> Result<Vec<Option<Seekpoint>>> {
    let mut builder = SeekpointBuilder::new(meta)?;
    let mut out = Vec::with_capacity(frame_event_counts.len());
    let mut next = 0usize;
    for count in frame_event_counts {
        out.push(builder.frame_start());
        let end = next.saturating_add(*count).min(events.len());
        for event in &events[next..end] {
            builder.apply(event);
        }
        next = end;
    }
    Ok(out)
}

/// [`build_seekpoints`] one event at a time, for a writer that indexes as it writes: call
/// [`frame_start`](Self::frame_start) as each frame begins and [`apply`](Self::apply) for each of
/// its events. Holds one terminal (tty sessions only), never the events.
pub struct SeekpointBuilder {
    state: Option<TerminalState>,
    events: usize,
    last_event_us: u64,
    since_bytes: usize,
    last_keyframe_us: Option<u64>,
}

impl SeekpointBuilder {
    /// A builder for `meta`'s session (one that never builds a keyframe when it has no tty).
    pub fn new(meta: &SessionMeta) -> Result<Self> {
        Ok(Self {
            state: if meta.tty {
                Some(TerminalState::for_session(meta)?)
            } else {
                None
            },
            events: 0,
            last_event_us: 0,
            since_bytes: 0,
            last_keyframe_us: None,
        })
    }

    /// A frame begins after the events applied so far: its seekpoint, when one is due.
    pub fn frame_start(&mut self) -> Option<Seekpoint> {
        let state = self.state.as_ref()?;
        let now_us = self.last_event_us;
        let due = match self.last_keyframe_us {
            None => true,
            Some(last) => {
                self.since_bytes >= KEYFRAME_EVERY_BYTES
                    || now_us.saturating_sub(last) >= KEYFRAME_EVERY_US
            }
        };
        if !due {
            return None;
        }
        self.since_bytes = 0;
        self.last_keyframe_us = Some(now_us);
        Some(Seekpoint {
            event_index: self.events,
            keyframe: state.keyframe(),
        })
    }

    /// One more event of the current frame.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.last_event_us = event.time_us;
        if let Some(state) = self.state.as_mut() {
            if let EventKind::Output(b) | EventKind::Stderr(b) = &event.kind {
                self.since_bytes += b.len();
            }
            state.apply(event);
        }
    }
}

/// The terminal as it was at `target_us` (every event at or before it applied), starting from the
/// latest seekpoint that precedes the target and replaying only the events after it.
///
/// `initial` is the state before the first event (used when no seekpoint applies); `events` must
/// be in time order, as a recording holds them.
pub fn seek(
    initial: TerminalState,
    seekpoints: &[Seekpoint],
    events: &[Event],
    target_us: u64,
) -> Result<TerminalState> {
    // A seekpoint at k is usable when every event before it is at or before the target.
    let usable = |sp: &&Seekpoint| {
        sp.event_index <= events.len()
            && (sp.event_index == 0 || events[sp.event_index - 1].time_us <= target_us)
    };
    let (mut state, start) = match seekpoints.iter().rev().find(usable) {
        Some(sp) => (TerminalState::from_keyframe(&sp.keyframe)?, sp.event_index),
        None => (initial, 0),
    };
    for event in events[start..]
        .iter()
        .take_while(|e| e.time_us <= target_us)
    {
        state.apply(event);
    }
    Ok(state)
}

/// Replays every event up to `target_us` from a blank terminal: the reference [`seek`] must match.
pub fn replay(initial: TerminalState, events: &[Event], target_us: u64) -> TerminalState {
    let mut state = initial;
    for event in events.iter().take_while(|e| e.time_us <= target_us) {
        state.apply(event);
    }
    state
}

/// Incremental UTF-8 decoding: keeps an unfinished character between calls and replaces invalid
/// bytes with U+FFFD.
#[derive(Debug, Default)]
pub(crate) struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Decodes `bytes` (after any pending ones), handing complete text to `sink` piece by piece.
    pub(crate) fn decode(&mut self, bytes: &[u8], mut sink: impl FnMut(&str)) {
        let joined;
        let mut input: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(bytes);
            joined = buf;
            &joined
        };
        loop {
            match std::str::from_utf8(input) {
                Ok(text) => {
                    if !text.is_empty() {
                        sink(text);
                    }
                    return;
                }
                Err(err) => {
                    let (valid, rest) = input.split_at(err.valid_up_to());
                    if !valid.is_empty() {
                        // `valid_up_to` marks a prefix that is valid UTF-8.
                        sink(std::str::from_utf8(valid).unwrap_or_default());
                    }
                    match err.error_len() {
                        None => {
                            // An unfinished character at the end: keep it for the next call.
                            self.pending = rest.to_vec();
                            return;
                        }
                        Some(len) => {
                            sink("\u{fffd}");
                            input = &rest[len..];
                        }
                    }
                }
            }
        }
    }
}

fn clamp_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The size assumed when a tty session's header has none (kubectl sends one when it has a tty).
const DEFAULT_SIZE: (u16, u16) = (80, 24);
/// Output after which the next frame gets a keyframe.
pub const KEYFRAME_EVERY_BYTES: usize = 256 * 1024;
/// Session time after which the next frame gets a keyframe (µs).
pub const KEYFRAME_EVERY_US: u64 = 30_000_000;
const BLOB_VERSION: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

#[cfg(test)]
mod tests;
