//! The verdict on a recording file, in one word and a detail: what `custody verify` prints and
//! what the sessions API reports as a session's integrity.
//!
//! - **intact**: every frame verifies, the signed manifest closes the file, nothing follows it.
//!   A session custody ended itself (`terminated`) is intact: its manifest says why it ended.
//! - **interrupted**: everything up to some point verifies and nothing contradicts it, but the
//!   file does not end in a manifest written by its own writer: it was sealed by recovery after
//!   a crash (status `interrupted`), or it ends in a frame without a checkpoint (a live session,
//!   or a crash not recovered yet). The verified part holds until the last verified event.
//! - **altered**: a frame, checkpoint or manifest does not verify (wrong hash, broken chain, bad
//!   signature, undecodable content, bytes after the manifest, a file cut inside its header or
//!   manifest). The first bad spot is named; what precedes it is still verified.

use std::fmt;

use crate::model::SessionStatus;
use crate::reader::{Damage, DamageKind, Recording};

/// What verification concluded about a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The whole file verifies and is sealed by its writer.
    Intact,
    /// Intact up to `verified_until_us`, then cut by a crash (sealed by recovery or not yet).
    Interrupted {
        /// Session time (µs) of the last verified event.
        verified_until_us: u64,
    },
    /// Something in the file does not verify; `damage` is the first bad spot.
    Altered {
        /// Where and what.
        damage: Damage,
    },
}

impl Verdict {
    /// The verdict on a recording as the reader returned it.
    pub fn of(recording: &Recording) -> Self {
        let verified_until_us = last_verified_us(recording);
        match &recording.damage {
            Some(damage) if damage.kind == DamageKind::UnsealedTail => {
                Verdict::Interrupted { verified_until_us }
            }
            Some(damage) => Verdict::Altered {
                damage: damage.clone(),
            },
            None if matches!(
                recording.status,
                SessionStatus::Interrupted | SessionStatus::Open
            ) =>
            {
                Verdict::Interrupted { verified_until_us }
            }
            None => Verdict::Intact,
        }
    }

    /// The verdict's name: `intact`, `interrupted` or `altered`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Intact => "intact",
            Verdict::Interrupted { .. } => "interrupted",
            Verdict::Altered { .. } => "altered",
        }
    }

    /// The first problem, for a verdict other than intact: `frame 3 at byte 81234: hash chain
    /// broken`, or for an interrupted file, where it stops verifying.
    pub fn problem(&self, recording: &Recording) -> Option<String> {
        match self {
            Verdict::Intact => None,
            Verdict::Altered { damage } => Some(damage.to_string()),
            Verdict::Interrupted { .. } => Some(match &recording.damage {
                Some(damage) => damage.to_string(),
                None => "sealed after a crash (interrupted)".to_owned(),
            }),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Intact => f.write_str("intact"),
            Verdict::Interrupted { verified_until_us } => write!(
                f,
                "intact but interrupted at {}",
                session_time(*verified_until_us)
            ),
            Verdict::Altered { damage } => write!(f, "altered: {damage}"),
        }
    }
}

/// Session time (µs) of the last verified event, 0 when none verified.
pub fn last_verified_us(recording: &Recording) -> u64 {
    recording.events.last().map_or(0, |e| e.time_us)
}

/// A session time as `H:MM:SS.mmm`, e.g. `0:01:02.500`.
pub fn session_time(us: u64) -> String {
    let ms = us / 1000;
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{h}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_times_read_as_clock_times() {
        assert_eq!(session_time(0), "0:00:00.000");
        assert_eq!(session_time(62_500_000), "0:01:02.500");
        assert_eq!(session_time(3_723_004_999), "1:02:03.004");
    }
}
