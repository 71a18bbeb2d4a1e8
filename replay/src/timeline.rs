//! A session as a player sees it: its events in time order (the verified ones, then an
//! unverified tail, flagged), the seekpoints that make any position quick to reach, the markers,
//! the typed commands, the output text for search and, for sessions without a terminal, the
//! output as a log of lines.
//!
//! Seeking restores the latest keyframe at or before the target and replays only the events
//! after it (`custody_recorder::keyframe::seek`). The keyframes come from the index's frames
//! when it has them for this file, or are built from the recording itself when it is loaded
//! ([`custody_recorder::keyframe::build_seekpoints`], one full replay).

use custody_recorder::keyframe::{self, Seekpoint, TerminalState};
use custody_recorder::model::{Event, EventKind, SessionMeta};
use custody_recorder::reader::Recording;

use crate::error::Error;
use crate::text::{CommandFinder, OutputText, TypedCommand};

/// A marker of the session (an approval, a policy note) at its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// µs since the session start.
    pub time_us: u64,
    /// The marker's label.
    pub label: String,
}

/// One line of a non-tty session's output log, made of the pieces that appeared over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// True for stderr.
    pub stderr: bool,
    /// (time, text) pieces in order; the line shows the pieces at or before the position.
    pub pieces: Vec<(u64, String)>,
    /// True once a newline ended it.
    pub(crate) closed: bool,
}

impl LogLine {
    /// When the line first appeared.
    pub fn first_us(&self) -> u64 {
        self.pieces.first().map_or(0, |p| p.0)
    }

    /// The line's text as shown at `position_us`.
    pub fn text_at(&self, position_us: u64) -> String {
        self.pieces
            .iter()
            .take_while(|(t, _)| *t <= position_us)
            .map(|(_, s)| s.as_str())
            .collect()
    }
}

/// Everything a player needs of a session's events.
pub struct Timeline {
    meta: SessionMeta,
    events: Vec<Event>,
    verified: usize,
    seekpoints: Vec<Seekpoint>,
    size: (u16, u16),
    markers: Vec<Marker>,
    commands: Vec<TypedCommand>,
    finder: CommandFinder,
    output: OutputText,
    log: Vec<LogLine>,
    open_line: [Option<usize>; 2],
}

impl Timeline {
    /// The timeline of a recording: its verified events, then its unverified tail. `seekpoints`
    /// are the index's keyframes for this file, when the caller has them; they are used only if
    /// they fit the file's verified events, otherwise seekpoints are built from the recording.
    pub fn from_recording(
        recording: &Recording,
        seekpoints: Option<Vec<Seekpoint>>,
    ) -> Result<Self, Error> {
        let verified = recording.events.len();
        let fits = |sps: &Vec<Seekpoint>| {
            recording.meta.tty && !sps.is_empty() && sps.iter().all(|sp| sp.event_index <= verified)
        };
        let seekpoints = if let Some(sps) = seekpoints.filter(fits) {
            sps
        } else {
            let counts: Vec<usize> = recording
                .frames
                .iter()
                .map(|f| usize::try_from(f.event_count).unwrap_or(usize::MAX))
                .collect();
            keyframe::build_seekpoints(&recording.meta, &recording.events, &counts)?
                .into_iter()
                .flatten()
                .collect()
        };
        let mut timeline = Self::new(recording.meta.clone(), seekpoints);
        for event in &recording.events {
            timeline.push_verified(event.clone());
        }
        for event in recording.tail.iter().flat_map(|t| t.events.iter()) {
            timeline.push(event.clone());
        }
        Ok(timeline)
    }

    /// An empty timeline for `meta`, with the given seekpoints.
    pub fn new(meta: SessionMeta, seekpoints: Vec<Seekpoint>) -> Self {
        let size = meta.term_size.unwrap_or(DEFAULT_SIZE);
        Self {
            meta,
            events: Vec::new(),
            verified: 0,
            seekpoints,
            size,
            markers: Vec::new(),
            commands: Vec::new(),
            finder: CommandFinder::default(),
            output: OutputText::default(),
            log: Vec::new(),
            open_line: [None, None],
        }
    }

    /// Appends a verified event (one a checkpoint covers). After an unverified one, it counts
    /// as unverified too: the verified events are a prefix.
    pub fn push_verified(&mut self, event: Event) {
        let all_verified = self.verified == self.events.len();
        self.push(event);
        if all_verified {
            self.verified = self.events.len();
        }
    }

    /// Appends an unverified event (an unsealed tail's, a live session's). Events earlier than
    /// the last one are placed at its time, as the recorder does.
    pub fn push(&mut self, mut event: Event) {
        let last = self.end_us();
        event.time_us = event.time_us.max(last);
        if self.events.is_empty()
            && self.meta.term_size.is_none()
            && let EventKind::Resize { cols, rows } = event.kind
            // 0 columns or rows is not a size (older recordings of a 0x0 pseudo-terminal).
            && cols > 0
            && rows > 0
        {
            self.size = (cols, rows);
        }
        match &event.kind {
            EventKind::Marker(label) => self.markers.push(Marker {
                time_us: event.time_us,
                label: label.clone(),
            }),
            EventKind::Output(bytes) => self.push_log(event.time_us, bytes, false),
            EventKind::Stderr(bytes) => self.push_log(event.time_us, bytes, true),
            _ => {}
        }
        self.finder.push(&event, &mut self.commands);
        self.output.push(&event);
        self.events.push(event);
    }

    fn push_log(&mut self, time_us: u64, bytes: &[u8], stderr: bool) {
        if self.meta.tty {
            return;
        }
        let stream = usize::from(stderr);
        let text = String::from_utf8_lossy(bytes);
        let mut rest: &str = &text;
        while !rest.is_empty() {
            let (piece, newline, after) = match rest.find('\n') {
                Some(at) => (&rest[..at], true, &rest[at + 1..]),
                None => (rest, false, ""),
            };
            let piece: String = piece
                .chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let line = if let Some(i) = self.open_line[stream] {
                i
            } else {
                self.log.push(LogLine {
                    stderr,
                    pieces: Vec::new(),
                    closed: false,
                });
                self.log.len() - 1
            };
            if let Some(l) = self.log.get_mut(line) {
                if !piece.is_empty() || l.pieces.is_empty() {
                    l.pieces.push((time_us, piece));
                }
                l.closed = newline;
            }
            self.open_line[stream] = (!newline).then_some(line);
            rest = after;
        }
    }

    /// The session's header metadata.
    pub fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    /// All events, verified first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// How many of [`Timeline::events`] are verified (the rest are an unverified tail or live).
    pub fn verified_count(&self) -> usize {
        self.verified
    }

    /// The time of the last verified event, `None` when every event is verified.
    pub fn unverified_from_us(&self) -> Option<u64> {
        (self.verified < self.events.len()).then(|| {
            self.verified
                .checked_sub(1)
                .and_then(|i| self.events.get(i))
                .map_or(0, |e| e.time_us)
        })
    }

    /// Whether the events at `position_us` include unverified ones.
    pub fn is_unverified_at(&self, position_us: u64) -> bool {
        self.verified < self.events.len()
            && self
                .events
                .get(self.verified)
                .is_some_and(|e| e.time_us <= position_us)
    }

    /// The seekpoints in use.
    pub fn seekpoints(&self) -> &[Seekpoint] {
        &self.seekpoints
    }

    /// The recorded terminal size: the header's, else the first resize's, else 80x24.
    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    /// Whether the session had a terminal (a screen to render) rather than a byte log.
    pub fn is_tty(&self) -> bool {
        self.meta.tty
    }

    /// The time of the last event: the session's length as recorded.
    pub fn end_us(&self) -> u64 {
        self.events.last().map_or(0, |e| e.time_us)
    }

    /// The markers in time order.
    pub fn markers(&self) -> &[Marker] {
        &self.markers
    }

    /// The typed commands in time order.
    pub fn commands(&self) -> &[TypedCommand] {
        &self.commands
    }

    /// The non-tty output log (empty for tty sessions).
    pub fn log(&self) -> &[LogLine] {
        &self.log
    }

    /// How many events happened at or before `position_us`.
    pub fn events_until(&self, position_us: u64) -> usize {
        self.events.partition_point(|e| e.time_us <= position_us)
    }

    /// The first command after `position_us`.
    pub fn next_command(&self, position_us: u64) -> Option<&TypedCommand> {
        self.commands.iter().find(|c| c.time_us > position_us)
    }

    /// The last command before `position_us`.
    pub fn previous_command(&self, position_us: u64) -> Option<&TypedCommand> {
        self.commands.iter().rev().find(|c| c.time_us < position_us)
    }

    /// The first marker after `position_us`.
    pub fn next_marker(&self, position_us: u64) -> Option<&Marker> {
        self.markers.iter().find(|m| m.time_us > position_us)
    }

    /// The last marker before `position_us`.
    pub fn previous_marker(&self, position_us: u64) -> Option<&Marker> {
        self.markers.iter().rev().find(|m| m.time_us < position_us)
    }

    /// The time of the next output match of `query` after `position_us`, wrapping to the first
    /// match when there is none after it (`true` in the second field when it wrapped).
    pub fn search(&self, query: &str, position_us: u64) -> Option<(u64, bool)> {
        let hits = self.output.hits(query);
        match hits.iter().find(|t| **t > position_us) {
            Some(t) => Some((*t, false)),
            None => hits.first().map(|t| (*t, true)),
        }
    }

    /// The first event strictly after `position_us`, and the last at or before it.
    pub fn neighbours(&self, position_us: u64) -> (Option<u64>, Option<u64>) {
        let i = self.events_until(position_us);
        (
            self.events.get(i).map(|e| e.time_us),
            i.checked_sub(1)
                .and_then(|i| self.events.get(i))
                .map(|e| e.time_us),
        )
    }

    /// A blank terminal of the recorded size.
    pub fn blank_terminal(&self) -> Result<TerminalState, Error> {
        Ok(TerminalState::new(self.size.0, self.size.1)?)
    }

    /// The terminal as it was at `position_us`, from the nearest keyframe.
    pub fn terminal_at(&self, position_us: u64) -> Result<TerminalState, Error> {
        Ok(keyframe::seek(
            self.blank_terminal()?,
            &self.seekpoints,
            &self.events,
            position_us,
        )?)
    }

    /// The exit status the session recorded last: code and message.
    pub fn exit(&self) -> Option<(Option<i32>, &str)> {
        self.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::Exit { code, message } => Some((*code, message.as_str())),
            _ => None,
        })
    }
}

/// The size of a terminal whose header and events give none.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);
