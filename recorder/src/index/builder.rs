//! Index rows derived one event at a time: what a session's row, frame rows (with keyframes)
//! and searchable text will be, built while the session is written or read, without holding
//! its events.

use std::path::Path;

use super::transcript::Transcript;
use super::{FrameFacts, FrameRow, IndexedSession, SessionEnd, SessionRow};
use crate::error::Result;
use crate::keyframe::{Seekpoint, SeekpointBuilder};
use crate::model::{Event, EventKind, SessionMeta};

/// Builds an [`IndexedSession`] from a session's frames and events in file order: for each
/// frame, its events through [`event`](Self::event), then [`frame_closed`](Self::frame_closed).
/// Memory: one terminal for a tty session's keyframes, the frame rows, and the searchable text
/// (capped per session, see [`super::transcript`]).
pub struct IndexBuilder {
    meta: SessionMeta,
    seekpoints: SeekpointBuilder,
    /// The frame being filled, once it has begun.
    current: Option<FrameStart>,
    /// How many events precede the frame being filled.
    frame_first_event: u64,
    transcript: Transcript,
    frames: Vec<FrameRow>,
    events: u64,
    last_event_us: u64,
    exit: Option<(Option<i32>, String)>,
}

impl IndexBuilder {
    /// A builder for the session `meta` describes.
    pub fn new(meta: &SessionMeta) -> Result<Self> {
        Ok(Self {
            meta: meta.clone(),
            seekpoints: SeekpointBuilder::new(meta)?,
            current: None,
            frame_first_event: 0,
            transcript: Transcript::default(),
            frames: Vec::new(),
            events: 0,
            last_event_us: 0,
            exit: None,
        })
    }

    /// The next event of the frame being filled.
    pub fn event(&mut self, event: &Event) {
        self.begin_frame();
        self.seekpoints.apply(event);
        self.transcript.push(event);
        self.events += 1;
        self.last_event_us = event.time_us;
        if let EventKind::Exit { code, message } = &event.kind {
            self.exit = Some((*code, message.clone()));
        }
    }

    /// The frame being filled is complete, as `frame` describes it.
    pub fn frame_closed(&mut self, frame: &FrameFacts) -> Result<()> {
        self.begin_frame();
        let keyframe = match self.current.take() {
            Some(FrameStart::Seekpoint(seekpoint)) => Some(seekpoint.keyframe.encode()?),
            Some(FrameStart::Plain) | None => None,
        };
        let first_event_index = self.frame_first_event;
        self.frames.push(FrameRow {
            index: frame.index,
            offset: frame.offset,
            compressed_len: frame.compressed_len,
            first_event_us: frame.first_event_us,
            last_event_us: frame.last_event_us,
            event_count: frame.event_count,
            first_event_index,
            chain_hash: frame.chain_hash,
            keyframe,
        });
        self.transcript.end_frame();
        Ok(())
    }

    /// Events seen so far.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// The session's rows, with how it ended and where its file is.
    pub fn finish(self, end: SessionEnd, file_path: &Path, file_size: u64) -> IndexedSession {
        let (exit_code, exit_message) = match self.exit {
            Some((code, message)) => (code, Some(message)),
            None => (None, None),
        };
        let row = SessionRow {
            meta: self.meta,
            ended_at_us: end.ended_at_us,
            status: end.status,
            exit_code,
            exit_message: exit_message.filter(|m| !m.is_empty()),
            event_count: self.events,
            frame_count: u32::try_from(self.frames.len()).unwrap_or(u32::MAX),
            chain_head: end.chain_head.map(hex::encode),
            file_path: file_path.to_owned(),
            file_size,
            damage: end.damage,
        };
        IndexedSession {
            row,
            frames: self.frames,
            text: self.transcript.finish(self.last_event_us),
        }
    }

    fn begin_frame(&mut self) {
        if self.current.is_none() {
            self.frame_first_event = self.events;
            self.current = Some(match self.seekpoints.frame_start() {
                Some(seekpoint) => FrameStart::Seekpoint(seekpoint),
                None => FrameStart::Plain,
            });
        }
    }
}

/// How the frame being filled began.
enum FrameStart {
    /// With a keyframe of the terminal.
    Seekpoint(Seekpoint),
    /// Without one (not due, or not a tty session).
    Plain,
}
