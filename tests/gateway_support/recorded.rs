//! What a recording holds, for the stream tests: its input, output, exit codes and
//! port-forward connections.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of these helpers"
)]

use custody_recorder::model::EventKind;
use custody_recorder::reader::Recording;

fn bytes_of(recording: &Recording, pick: impl Fn(&EventKind) -> Option<&Vec<u8>>) -> Vec<u8> {
    recording
        .events
        .iter()
        .filter_map(|e| pick(&e.kind))
        .flatten()
        .copied()
        .collect()
}

/// Everything the process wrote to stdout (or the terminal).
pub fn output_of(recording: &Recording) -> Vec<u8> {
    bytes_of(recording, |k| match k {
        EventKind::Output(bytes) => Some(bytes),
        _ => None,
    })
}

/// Everything typed or piped to stdin.
pub fn input_of(recording: &Recording) -> Vec<u8> {
    bytes_of(recording, |k| match k {
        EventKind::Input(bytes) => Some(bytes),
        _ => None,
    })
}

/// The exit codes recorded (`None` for a Status without a code).
pub fn exits_of(recording: &Recording) -> Vec<Option<i32>> {
    recording
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Exit { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

/// Asserts a port-forward recording holds exactly one connection to `port` that moved
/// `bytes` each way.
pub fn assert_one_forward(recording: &Recording, port: u16, bytes: u64) {
    let opened = recording
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ConnectionOpened { port: p, .. } if p == port))
        .count();
    assert_eq!(opened, 1, "{:?}", recording.events);
    let moved = recording.events.iter().find_map(|e| match &e.kind {
        EventKind::ConnectionClosed {
            bytes_to_pod,
            bytes_from_pod,
            ..
        } => Some((*bytes_to_pod, *bytes_from_pod)),
        _ => None,
    });
    assert_eq!(moved, Some((bytes, bytes)), "{:?}", recording.events);
}
