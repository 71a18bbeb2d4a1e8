//! The playback clock: the position in session time, moved on by wall time times the speed,
//! with an optional cap on pauses ("skip idle": a gap between two events longer than
//! [`IDLE_CAP_US`] plays as that cap).

use std::time::Duration;

/// The speeds `+` and `-` step through.
pub const SPEEDS: [u32; 5] = [1, 2, 4, 8, 16];

/// The longest pause that "skip idle" plays, in session µs.
pub const IDLE_CAP_US: u64 = 1_000_000;

/// Where playback is, how fast it goes, and whether it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    position_us: u64,
    playing: bool,
    speed: usize,
    skip_idle: bool,
}

impl Clock {
    /// A clock at 0, playing at `speed` (the nearest of [`SPEEDS`] at or below it).
    pub fn new(speed: u32, skip_idle: bool) -> Self {
        let speed = SPEEDS.iter().rposition(|s| *s <= speed).unwrap_or(0);
        Self {
            position_us: 0,
            playing: true,
            speed,
            skip_idle,
        }
    }

    /// The position, µs since the session start.
    pub fn position_us(&self) -> u64 {
        self.position_us
    }

    /// Whether playback moves.
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// The speed factor.
    pub fn speed(&self) -> u32 {
        SPEEDS[self.speed.min(SPEEDS.len() - 1)]
    }

    /// Whether pauses are capped.
    pub fn skips_idle(&self) -> bool {
        self.skip_idle
    }

    /// Starts or stops playback.
    pub fn set_playing(&mut self, playing: bool) {
        self.playing = playing;
    }

    /// Caps pauses or stops capping them.
    pub fn set_skip_idle(&mut self, skip: bool) {
        self.skip_idle = skip;
    }

    /// One speed step up (`true` if it changed).
    pub fn faster(&mut self) -> bool {
        let before = self.speed;
        self.speed = (self.speed + 1).min(SPEEDS.len() - 1);
        before != self.speed
    }

    /// One speed step down (`true` if it changed).
    pub fn slower(&mut self) -> bool {
        let before = self.speed;
        self.speed = self.speed.saturating_sub(1);
        before != self.speed
    }

    /// Moves to `position_us` (clamped to `end_us`).
    pub fn seek(&mut self, position_us: u64, end_us: u64) {
        self.position_us = position_us.min(end_us);
    }

    /// Moves on by `elapsed` wall time. `neighbours` gives, for a position, the time of the
    /// next event after it and of the last at or before it (for skipping idle gaps). Returns
    /// the new position; at `end_us` the clock stays there.
    pub fn advance(
        &mut self,
        elapsed: Duration,
        end_us: u64,
        neighbours: impl Fn(u64) -> (Option<u64>, Option<u64>),
    ) -> u64 {
        if !self.playing {
            return self.position_us;
        }
        let step = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.speed()));
        let mut position = self.position_us.saturating_add(step);
        if self.skip_idle {
            // A gap longer than the cap: once the cap is played, jump to the next event.
            let (next, last) = neighbours(self.position_us);
            if let Some(next) = next {
                let last = last.unwrap_or(0);
                if next.saturating_sub(last) > IDLE_CAP_US && position >= last + IDLE_CAP_US {
                    let over = position - (last + IDLE_CAP_US).max(self.position_us);
                    position = next + over;
                }
            }
        }
        self.position_us = position.min(end_us);
        self.position_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u64) -> (Option<u64>, Option<u64>) {
        (None, None)
    }

    #[test]
    fn plays_at_speed_and_stops_at_the_end() {
        let mut clock = Clock::new(4, false);
        assert_eq!(clock.speed(), 4);
        assert_eq!(
            clock.advance(Duration::from_millis(100), 10_000_000, none),
            400_000
        );
        clock.set_playing(false);
        assert_eq!(
            clock.advance(Duration::from_secs(1), 10_000_000, none),
            400_000
        );
        clock.set_playing(true);
        assert_eq!(
            clock.advance(Duration::from_secs(9), 10_000_000, none),
            10_000_000
        );
    }

    #[test]
    fn speed_steps_between_1x_and_16x() {
        let mut clock = Clock::new(3, false);
        assert_eq!(clock.speed(), 2);
        assert!(clock.faster() && clock.faster() && clock.faster());
        assert_eq!(clock.speed(), 16);
        assert!(!clock.faster());
        for _ in 0..10 {
            clock.slower();
        }
        assert_eq!(clock.speed(), 1);
        assert_eq!(Clock::new(100, false).speed(), 16);
    }

    #[test]
    fn skip_idle_caps_a_long_pause_at_one_second() {
        // Events at 0 s and 60 s: with skip idle, 1.5 s of wall time reaches 60.5 s.
        let neighbours = |p: u64| {
            if p < 60_000_000 {
                (Some(60_000_000), Some(0))
            } else {
                (None, Some(60_000_000))
            }
        };
        let mut clock = Clock::new(1, true);
        assert_eq!(
            clock.advance(Duration::from_millis(500), 60_000_000, neighbours),
            500_000
        );
        assert_eq!(
            clock.advance(Duration::from_millis(700), 120_000_000, neighbours),
            60_200_000
        );
        let mut plain = Clock::new(1, false);
        assert_eq!(
            plain.advance(Duration::from_millis(1200), 120_000_000, neighbours),
            1_200_000
        );
    }
}
