//! The writer task: collects queued events and, once per flush interval (or at once when a
//! frame's worth of bytes is waiting), redacts and encodes them into the open frame on the
//! blocking pool and block-flushes it to the file. A frame is closed (checkpoint, `fdatasync`)
//! when it reaches `frame_max_bytes` or would outlive `frame_max_duration`. While a write runs
//! the queue is not read, which is the backpressure.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::{Command, Sealed, WriterConfig, WriterStats};
use crate::error::{Error, Result};
use crate::file::{FrameEvents, RecordingFile};
use crate::format::Encoder;
use crate::index::{FrameFacts, IndexBuilder, SessionEnd};
use crate::integrity::Manifest;
use crate::model::{Event, EventKind, SessionMeta, SessionStatus};
use crate::reader::seal_with_status;
use crate::redaction::RedactionWindow;

/// The state that moves to the blocking pool for each write.
struct Core {
    file: RecordingFile,
    encoder: Encoder,
    window: RedactionWindow,
    frame_max_bytes: usize,
    frame_max_duration: Duration,
    flush_interval: Duration,
    /// Live viewers of the session (see `SessionHandle::subscribe`).
    live: broadcast::Sender<Arc<Event>>,
    /// The session's index rows, derived as its frames are written (`None` once derivation
    /// failed: the file is then indexed by reading it, so this never fails the recording).
    index: Option<IndexBuilder>,
    /// Where the events and bytes written are added up.
    stats: WriterStats,
}

/// Runs until the session finishes, the handle is dropped, or a write fails.
pub(super) async fn run(
    file: RecordingFile,
    meta: &SessionMeta,
    config: WriterConfig,
    mut queue: mpsc::Receiver<Command>,
    fatal: watch::Sender<Option<String>>,
    live: broadcast::Sender<Arc<Event>>,
) {
    let index = IndexBuilder::new(meta).ok().and_then(|mut builder| {
        let header = file.header_frame()?;
        builder.frame_closed(&FrameFacts::from(&header)).ok()?;
        Some(builder)
    });
    let mut core = Some(Core {
        index,
        file,
        encoder: Encoder::new(config.time_precision),
        window: RedactionWindow::new(config.redactor.clone()),
        frame_max_bytes: config.frame_max_bytes,
        frame_max_duration: config.frame_max_duration,
        flush_interval: config.flush_interval,
        live,
        stats: config.stats.clone(),
    });
    let mut incoming: Vec<Event> = Vec::new();
    let mut incoming_bytes = 0usize;
    let mut tick = tokio::time::interval(config.flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let (end, reply) = tokio::select! {
            command = queue.recv() => match command {
                Some(Command::Event(event, permit)) => {
                    // Off the queue: the batch below is bounded by the frame size instead.
                    drop(permit);
                    incoming_bytes += payload_len(&event);
                    incoming.push(event);
                    let open = core.as_ref().map_or(0, |c| c.file.open_frame_len());
                    if open + incoming_bytes < config.frame_max_bytes {
                        continue;
                    }
                    (None, None)
                }
                Some(Command::Finish(status, reply)) => (Some(status), Some(reply)),
                // Every handle is gone without `finish`: seal what we have.
                None => (Some(SessionStatus::Terminated { reason: "abandoned".into() }), None),
            },
            _ = tick.tick() => {
                let idle = incoming.is_empty()
                    && core.as_ref().is_none_or(|c| c.window.is_empty() && !c.frame_due());
                if idle {
                    continue;
                }
                (None, None)
            }
        };
        incoming_bytes = 0;
        let events = std::mem::take(&mut incoming);
        let Some(taken) = core.take() else { return };
        let ending = end.is_some();
        let job = tokio::task::spawn_blocking(move || {
            let mut core = taken;
            let written = core.write(events, end.as_ref());
            (core, written)
        });
        let (back, written) = match job.await {
            Ok(done) => done,
            Err(e) => {
                let _ = fatal.send(Some(format!("recording writer panicked: {e}")));
                return;
            }
        };
        match written {
            Ok(sealed) => {
                if let Some(reply) = reply {
                    let _ = reply.send(sealed.ok_or(Error::SessionClosed));
                }
                if ending {
                    return;
                }
                core = Some(back);
            }
            Err(error) => {
                // Publish first: the session must end within a second of the failure.
                queue.close();
                let failure = format!(
                    "{error}; the session must end ({} queued events not recorded)",
                    queue.len()
                );
                let _ = fatal.send(Some(failure.clone()));
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::RecordingFailed(failure)));
                }
                let mut back = back;
                let _ = tokio::task::spawn_blocking(move || back.seal_after_failure()).await;
                return;
            }
        }
    }
}

impl Core {
    /// Adds the released events to the open frame; with `end`, releases everything, writes the
    /// end line, closes the frame and appends the manifest. Otherwise the frame is closed when
    /// it is due, else block-flushed.
    fn write(&mut self, events: Vec<Event>, end: Option<&SessionStatus>) -> Result<Option<Sealed>> {
        let bytes_before = self.file.stats().bytes;
        let written = self.write_events(events, end);
        let bytes = self.file.stats().bytes.saturating_sub(bytes_before);
        let events = written.as_ref().map_or(0, |(events, _)| *events);
        self.stats.written(events, bytes);
        written.map(|(_, sealed)| sealed)
    }

    /// [`Self::write`], also returning how many events went into the file.
    fn write_events(
        &mut self,
        events: Vec<Event>,
        end: Option<&SessionStatus>,
    ) -> Result<(u64, Option<Sealed>)> {
        let mut released = 0;
        for event in events {
            self.window.push(event);
        }
        let ready = self.window.release(end.is_some());
        if !ready.is_empty() || end.is_some() {
            let mut plain = Vec::new();
            let mut stats = FrameEvents::default();
            if !self.file.frame_is_open() {
                self.encoder.anchor(&mut plain);
            }
            for event in &ready {
                self.encoder.event(event, &mut plain)?;
                if stats.event_count == 0 {
                    stats.first_event_us = self.encoder.written_us();
                }
                stats.last_event_us = self.encoder.written_us();
                stats.event_count += 1;
                if let Some(index) = self.index.as_mut() {
                    index.event(event);
                }
            }
            if let Some(status) = end {
                self.encoder
                    .end(self.encoder.written_us(), status, &mut plain)?;
            }
            released = u64::from(stats.event_count);
            self.file.push(&plain, stats)?;
            // Viewers see what the file holds: redacted events, once they are written. A send
            // fails only when nobody watches, which is fine.
            if self.live.receiver_count() > 0 {
                for event in ready {
                    let _ = self.live.send(Arc::new(event));
                }
            }
        }
        if let Some(status) = end {
            self.close_frame()?;
            let manifest = self.file.append_manifest(status.clone(), 0)?;
            let index = self.index.take().and_then(|index| {
                let end = SessionEnd {
                    status: manifest.status.clone(),
                    ended_at_us: Some(manifest.ended_at_us),
                    chain_head: Some(manifest.chain_head),
                    damage: None,
                };
                let size = std::fs::metadata(self.file.path()).ok()?.len();
                Some(index.finish(end, self.file.path(), size))
            });
            return Ok((released, Some(Sealed { manifest, index })));
        }
        if self.frame_due() {
            self.close_frame()?;
        } else {
            self.file.flush()?;
        }
        Ok((released, None))
    }

    /// Closes the open frame and adds it to the index rows.
    fn close_frame(&mut self) -> Result<()> {
        if let Some(frame) = self.file.close_frame()?
            && let Some(index) = self.index.as_mut()
            && index.frame_closed(&FrameFacts::from(&frame)).is_err()
        {
            self.index = None;
        }
        Ok(())
    }

    /// Whether the open frame must be closed now: it holds `frame_max_bytes`, or waiting for
    /// the next flush would make it span more than `frame_max_duration`.
    fn frame_due(&self) -> bool {
        self.file.open_frame_len() >= self.frame_max_bytes
            || self
                .file
                .open_frame_age()
                .is_some_and(|age| age + self.flush_interval > self.frame_max_duration)
    }

    /// After a failed write: cut off the torn write, then seal the file as terminated by the
    /// failure, re-writing the open frame's flushed events as a complete frame. If that fails
    /// too (the disk is full, say), the file is left ending in complete frames and the flushed
    /// blocks of the open frame, which recovery seals later.
    fn seal_after_failure(&mut self) -> Result<Manifest> {
        self.file.cut_failed_write()?;
        let status = SessionStatus::Terminated {
            reason: "recording_failure".into(),
        };
        seal_with_status(self.file.path(), self.file.key(), status)
    }
}

/// Bytes an event adds to a frame, roughly (for the frame size limit).
pub(super) fn payload_len(event: &Event) -> usize {
    32 + match &event.kind {
        EventKind::Output(d) | EventKind::Stderr(d) | EventKind::Input(d) => d.len(),
        EventKind::ConnectionData { data, .. } => data.len() * 4 / 3,
        EventKind::Marker(m) => m.len(),
        EventKind::Exit { message, .. } => message.len(),
        _ => 64,
    }
}
