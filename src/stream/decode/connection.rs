//! What a port-forward recording keeps of one forwarded connection: byte counts and SHA-256 of
//! each direction, and the payload itself when capture is on.

use std::fmt::Write as _;

use custody_recorder::model::EventKind;
use sha2::{Digest, Sha256};

/// The running totals of one connection.
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    to_pod_hash: Sha256,
    from_pod_hash: Sha256,
    to_pod_len: u64,
    from_pod_len: u64,
}

impl Tally {
    /// Accounts `data` sent to the pod (`to_pod`) or from it; the `ConnectionData` event to
    /// record when `capture` is on.
    pub(super) fn add(
        &mut self,
        connection: u32,
        to_pod: bool,
        data: &[u8],
        capture: bool,
    ) -> Option<EventKind> {
        if data.is_empty() {
            return None;
        }
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if to_pod {
            self.to_pod_hash.update(data);
            self.to_pod_len = self.to_pod_len.saturating_add(len);
        } else {
            self.from_pod_hash.update(data);
            self.from_pod_len = self.from_pod_len.saturating_add(len);
        }
        capture.then(|| EventKind::ConnectionData {
            connection,
            to_pod,
            data: data.to_vec(),
        })
    }

    /// The `ConnectionClosed` event with the totals so far.
    pub(super) fn closed(&self, connection: u32) -> EventKind {
        EventKind::ConnectionClosed {
            connection,
            bytes_to_pod: self.to_pod_len,
            bytes_from_pod: self.from_pod_len,
            sha256_to_pod: hex(&self.to_pod_hash.clone().finalize()),
            sha256_from_pod: hex(&self.from_pod_hash.clone().finalize()),
        }
    }
}

/// The marker of an error the kubelet wrote for a connection.
pub(super) fn error_marker(connection: Option<u32>, port: u16, text: &[u8]) -> EventKind {
    let text = String::from_utf8_lossy(text);
    let text = text.trim_end();
    EventKind::Marker(match connection {
        Some(connection) => {
            format!("port-forward connection {connection} to port {port}: {text}")
        }
        None => format!("port-forward to port {port}: {text}"),
    })
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}
