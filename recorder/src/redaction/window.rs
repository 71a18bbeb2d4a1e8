//! Redaction across event boundaries: events wait in a window until the next flush, and each
//! byte stream (stdout, stderr, stdin) is redacted as one concatenated buffer.
//!
//! Bound: at a flush, events that arrived since the previous flush and hold one of a stream's
//! last `window` bytes (or the start of a match that reaches the end of the stream, so might
//! continue) are held until the next flush; events already held once are always released.
//! So a secret of at most `window` bytes is redacted when all of its pieces arrive within one
//! flush interval of each other. Held events keep their original times, so the only cost is
//! that they reach the disk one flush interval later.

use std::ops::Range;

use super::{Hit, Redactor};
use crate::model::{Event, EventKind};

/// Events waiting to be redacted and released.
#[derive(Debug, Clone)]
pub struct RedactionWindow {
    redactor: Redactor,
    pending: Vec<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    event: Event,
    /// Arrived since the last release; only fresh events may be held back.
    fresh: bool,
}

impl RedactionWindow {
    /// An empty window using `redactor`.
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            pending: Vec::new(),
        }
    }

    /// Adds an event.
    pub fn push(&mut self, event: Event) {
        self.pending.push(Held { event, fresh: true });
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Redacts and returns the events that may be written now; with `all`, every event (at the
    /// end of the session).
    pub fn release(&mut self, all: bool) -> Vec<Event> {
        if !self.redactor.is_enabled() {
            return self.pending.drain(..).map(|h| h.event).collect();
        }
        let streams: Vec<Stream> = STREAMS
            .iter()
            .map(|s| Stream::collect(&self.pending, *s))
            .collect();
        let hits: Vec<Vec<Hit>> = streams
            .iter()
            .map(|s| self.redactor.hits(&s.bytes))
            .collect();
        let mut cut = self.pending.len();
        if !all {
            for (stream, hits) in streams.iter().zip(&hits) {
                let mut from = stream.bytes.len().saturating_sub(self.redactor.window());
                for hit in hits.iter().filter(|h| h.whole.end == stream.bytes.len()) {
                    from = from.min(hit.whole.start);
                }
                let held = stream
                    .parts
                    .iter()
                    .find(|(index, range)| range.end > from && self.pending[*index].fresh);
                if let Some((index, _)) = held {
                    cut = cut.min(*index);
                }
            }
        }
        for (stream, hits) in streams.iter().zip(&hits) {
            // Hits starting in the held part are found again, whole, at the next release.
            let held_from = stream.offset_of(cut);
            let applied: Vec<&Hit> = hits.iter().filter(|h| h.span.start < held_from).collect();
            if applied.is_empty() {
                continue;
            }
            for (index, range) in &stream.parts {
                let data = redact_part(&self.redactor, &stream.bytes, range, &applied);
                if let Some(bytes) = stream_bytes_mut(&mut self.pending[*index].event.kind) {
                    *bytes = data;
                }
            }
        }
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        for held in &mut self.pending {
            held.fresh = false;
        }
        ready.into_iter().map(|h| h.event).collect()
    }
}

/// The streams redacted as one buffer each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Output,
    Stderr,
    Input,
}

const STREAMS: [StreamKind; 3] = [StreamKind::Output, StreamKind::Stderr, StreamKind::Input];

/// One stream's bytes across the pending events.
struct Stream {
    bytes: Vec<u8>,
    /// (pending index, range in `bytes`) per event of this stream.
    parts: Vec<(usize, Range<usize>)>,
}

impl Stream {
    fn collect(pending: &[Held], kind: StreamKind) -> Self {
        let mut bytes = Vec::new();
        let mut parts = Vec::new();
        for (index, held) in pending.iter().enumerate() {
            let ((EventKind::Output(data), StreamKind::Output)
            | (EventKind::Stderr(data), StreamKind::Stderr)
            | (EventKind::Input(data), StreamKind::Input)) = (&held.event.kind, kind)
            else {
                continue;
            };
            let start = bytes.len();
            bytes.extend_from_slice(data);
            parts.push((index, start..bytes.len()));
        }
        Self { bytes, parts }
    }

    /// The stream offset where pending event `cut` and those after it begin.
    fn offset_of(&self, cut: usize) -> usize {
        self.parts
            .iter()
            .find(|(index, _)| *index >= cut)
            .map_or(self.bytes.len(), |(_, r)| r.start)
    }
}

/// One event's bytes after applying `hits`: matched bytes removed, the replacement placed in
/// the event where the match starts.
fn redact_part(redactor: &Redactor, bytes: &[u8], part: &Range<usize>, hits: &[&Hit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(part.len());
    let mut at = part.start;
    for hit in hits
        .iter()
        .filter(|h| h.span.end > part.start && h.span.start < part.end)
    {
        if hit.span.start >= at {
            out.extend_from_slice(&bytes[at..hit.span.start]);
            out.extend_from_slice(redactor.replacement(hit.pattern));
        }
        at = hit.span.end.min(part.end);
    }
    out.extend_from_slice(&bytes[at.max(part.start)..part.end]);
    out
}

fn stream_bytes_mut(kind: &mut EventKind) -> Option<&mut Vec<u8>> {
    match kind {
        EventKind::Output(d) | EventKind::Stderr(d) | EventKind::Input(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(t: u64, s: &str) -> Event {
        Event {
            time_us: t,
            kind: EventKind::Output(s.as_bytes().to_vec()),
        }
    }

    fn text(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Output(d) => Some(String::from_utf8_lossy(d).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn secret_split_across_events_and_a_flush_is_redacted() {
        let redactor = Redactor::with_defaults().unwrap();
        let mut window = RedactionWindow::new(redactor);
        window.push(out(1, "$ echo $KEY\r\nAKIAIOSF"));
        window.push(Event {
            time_us: 2,
            kind: EventKind::Input(b"x".to_vec()),
        });
        // First flush: the tail may be the start of a secret, so it is held.
        let first = window.release(false);
        assert!(first.is_empty(), "released {first:?}");
        window.push(out(3, "ODNN7EXAMPLE\r\n$ "));
        let second = window.release(false);
        let mut all = second.clone();
        all.extend(window.release(true));
        assert_eq!(
            text(&all),
            "$ echo $KEY\r\n[REDACTED:aws_access_key_id]\r\n$ "
        );
        // Times and the interleaved input event are kept.
        assert_eq!(all.iter().map(|e| e.time_us).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(!text(&all).contains("ODNN7"));
    }

    #[test]
    fn events_held_once_are_released_at_the_next_flush() {
        let redactor = Redactor::new(&[("k", "secret[0-9]+")], 64).unwrap();
        let mut window = RedactionWindow::new(redactor);
        window.push(out(1, "hello"));
        assert!(window.release(false).is_empty());
        assert_eq!(text(&window.release(false)), "hello");
        assert!(window.is_empty());
    }

    #[test]
    fn match_straddling_the_hold_point_is_applied_to_both_parts() {
        let redactor = Redactor::new(&[("k", "secret[0-9]+;")], 4).unwrap();
        let mut window = RedactionWindow::new(redactor);
        window.push(out(1, "a secret12"));
        window.push(out(2, "34; and more text here"));
        let mut all = window.release(false);
        all.extend(window.release(true));
        assert_eq!(text(&all), "a [REDACTED:k] and more text here");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn disabled_window_passes_everything_through() {
        let mut window = RedactionWindow::new(Redactor::disabled());
        window.push(out(1, "AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(text(&window.release(false)), "AKIAIOSFODNN7EXAMPLE");
    }
}
