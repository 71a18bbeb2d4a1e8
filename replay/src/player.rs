//! The player's state and what each key does, with no terminal: a [`Player`] is driven by
//! [`Player::key`], [`Player::tick`] and [`Player::push_live`], and drawn by `view`.

use std::time::Duration;

use custody_recorder::keyframe::TerminalState;
use custody_recorder::model::{Event, SessionStatus};

use crate::clock::Clock;
use crate::error::Error;
use crate::session::Session;

/// A key press, as the player understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Left arrow.
    Left,
    /// Right arrow.
    Right,
    /// Shift + left arrow.
    ShiftLeft,
    /// Shift + right arrow.
    ShiftRight,
    /// Home.
    Home,
    /// End.
    End,
}

/// What a live session sends the player while it is followed.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveUpdate {
    /// The next event.
    Event(Event),
    /// The follower fell behind and missed this many events (the recording has them).
    Lagged(u64),
    /// The session ended, with its status when known.
    End(Option<SessionStatus>),
}

/// Options for playing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayOptions {
    /// The speed factor (1, 2, 4, 8 or 16; others round down to one of them).
    pub speed: u32,
    /// Where to start, µs since the session start (`None`: the start; live: the live edge).
    pub start_at_us: Option<u64>,
    /// Cap every pause at one second.
    pub skip_idle: bool,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            speed: 1,
            start_at_us: None,
            skip_idle: false,
        }
    }
}

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Playing keys.
    Normal,
    /// Typing a search (`/`): the text so far.
    Search(String),
    /// The help overlay.
    Help,
}

/// Seeking by arrow keys.
const SHORT_SEEK_US: u64 = 5_000_000;
const LONG_SEEK_US: u64 = 60_000_000;
/// Replaying forward more events than this uses a keyframe instead, when one is nearer.
const FORWARD_REPLAY_LIMIT: usize = 2_000;

/// The player: a session, the clock, the screen at the clock's position, and the UI state.
pub struct Player {
    session: Session,
    clock: Clock,
    screen: TerminalState,
    applied: usize,
    mode: Mode,
    show_input: bool,
    last_search: Option<String>,
    message: Option<String>,
    following: bool,
    quit: bool,
}

impl Player {
    /// A player at the start (or at `options.start_at_us`; a live session starts at its live
    /// edge unless a start is given).
    pub fn new(session: Session, options: &PlayOptions) -> Result<Self, Error> {
        let screen = session.timeline.blank_terminal()?;
        let following = session.live && options.start_at_us.is_none();
        let mut player = Self {
            session,
            clock: Clock::new(options.speed, options.skip_idle),
            screen,
            applied: 0,
            mode: Mode::Normal,
            show_input: false,
            last_search: None,
            message: None,
            following,
            quit: false,
        };
        let start = if following {
            player.end_us()
        } else {
            options.start_at_us.unwrap_or(0)
        };
        player.seek_to(start)?;
        Ok(player)
    }

    /// The session being played.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The terminal at the current position (tty sessions).
    pub fn screen(&self) -> &TerminalState {
        &self.screen
    }

    /// The keyboard mode.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether the typed-input pane is shown.
    pub fn shows_input(&self) -> bool {
        self.show_input
    }

    /// The last message for the status line.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Whether the player keeps to the live edge of a followed session.
    pub fn is_following(&self) -> bool {
        self.following
    }

    /// Whether the user asked to quit.
    pub fn wants_quit(&self) -> bool {
        self.quit
    }

    /// The position, µs since the session start.
    pub fn position_us(&self) -> u64 {
        self.clock.position_us()
    }

    /// The end of what is known of the session.
    pub fn end_us(&self) -> u64 {
        self.session.timeline.end_us()
    }

    /// Moves to `target_us` (clamped to the end) and brings the screen there: forward by
    /// replaying the events in between, or from the nearest keyframe when that is shorter or
    /// when going back.
    pub fn seek_to(&mut self, target_us: u64) -> Result<(), Error> {
        self.clock.seek(target_us, self.end_us());
        self.sync_screen()
    }

    fn sync_screen(&mut self) -> Result<(), Error> {
        let timeline = &self.session.timeline;
        if !timeline.is_tty() {
            self.applied = timeline.events_until(self.clock.position_us());
            return Ok(());
        }
        let position = self.clock.position_us();
        let target = timeline.events_until(position);
        let keyframe_ahead = timeline
            .seekpoints()
            .iter()
            .rev()
            .find(|sp| sp.event_index <= target)
            .is_some_and(|sp| sp.event_index > self.applied);
        if target < self.applied || (target - self.applied > FORWARD_REPLAY_LIMIT && keyframe_ahead)
        {
            self.screen = timeline.terminal_at(position)?;
        } else {
            for event in &timeline.events()[self.applied..target] {
                self.screen.apply(event);
            }
        }
        self.applied = target;
        Ok(())
    }

    /// Lets `elapsed` wall time pass.
    pub fn tick(&mut self, elapsed: Duration) -> Result<(), Error> {
        let end = self.end_us();
        if self.following {
            self.clock.seek(end, end);
            return self.sync_screen();
        }
        let timeline = &self.session.timeline;
        self.clock.advance(elapsed, end, |p| timeline.neighbours(p));
        if self.clock.position_us() >= end && !self.session.live {
            self.clock.set_playing(false);
        }
        self.sync_screen()
    }

    /// Takes a live session's update.
    pub fn push_live(&mut self, update: LiveUpdate) -> Result<(), Error> {
        match update {
            LiveUpdate::Event(event) => {
                // The recording already held what the stream repeats.
                if !self.session.timeline.events().is_empty() && event.time_us <= self.end_us() {
                    return Ok(());
                }
                self.session.timeline.push(event);
            }
            LiveUpdate::Lagged(missed) => {
                self.message = Some(format!(
                    "missed {missed} live events (the recording has them all)"
                ));
            }
            LiveUpdate::End(status) => {
                self.session.live = false;
                if let Some(status) = status {
                    self.session.status = status;
                }
                self.message = Some("the session ended".to_owned());
            }
        }
        if self.following {
            let end = self.end_us();
            self.clock.seek(end, end);
            self.sync_screen()?;
        }
        Ok(())
    }

    /// Handles one key.
    pub fn key(&mut self, key: Key) -> Result<(), Error> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            // Any key closes the help.
            Mode::Help => Ok(()),
            Mode::Search(mut text) => {
                match key {
                    Key::Char(c) => {
                        text.push(c);
                        self.mode = Mode::Search(text);
                    }
                    Key::Backspace => {
                        text.pop();
                        self.mode = Mode::Search(text);
                    }
                    Key::Enter => {
                        if !text.is_empty() {
                            self.last_search = Some(text);
                        }
                        return self.search_next();
                    }
                    _ => {}
                }
                Ok(())
            }
            Mode::Normal => self.normal_key(key),
        }
    }

    fn normal_key(&mut self, key: Key) -> Result<(), Error> {
        self.message = None;
        let position = self.position_us();
        match key {
            Key::Char(' ') => {
                let play = !self.clock.is_playing() && !self.following;
                if play && position >= self.end_us() && !self.session.live {
                    self.seek_to(0)?;
                }
                self.clock.set_playing(play);
                if !play {
                    self.following = false;
                }
            }
            Key::Left => self.jump(position.saturating_sub(SHORT_SEEK_US))?,
            Key::Right => self.jump(position.saturating_add(SHORT_SEEK_US))?,
            Key::ShiftLeft => self.jump(position.saturating_sub(LONG_SEEK_US))?,
            Key::ShiftRight => self.jump(position.saturating_add(LONG_SEEK_US))?,
            Key::Char('+' | '=') => {
                self.clock.faster();
            }
            Key::Char('-' | '_') => {
                self.clock.slower();
            }
            Key::Char('g') | Key::Home => self.jump(0)?,
            Key::Char('G') | Key::End => {
                self.jump(self.end_us())?;
                if self.session.live {
                    self.following = true;
                    self.clock.set_playing(true);
                }
            }
            Key::Char('n') => match self.session.timeline.next_command(position) {
                Some(c) => {
                    let (t, text) = (c.time_us, c.text.clone());
                    self.jump(t)?;
                    self.message = Some(format!("$ {text}"));
                }
                None => self.message = Some("no typed command after this point".into()),
            },
            Key::Char('N') => match self.session.timeline.previous_command(position) {
                Some(c) => {
                    let (t, text) = (c.time_us, c.text.clone());
                    self.jump(t)?;
                    self.message = Some(format!("$ {text}"));
                }
                None => self.message = Some("no typed command before this point".into()),
            },
            Key::Char(']') => match self.session.timeline.next_marker(position) {
                Some(m) => {
                    let (t, label) = (m.time_us, m.label.clone());
                    self.jump(t)?;
                    self.message = Some(format!("marker: {label}"));
                }
                None => self.message = Some("no marker after this point".into()),
            },
            Key::Char('[') => match self.session.timeline.previous_marker(position) {
                Some(m) => {
                    let (t, label) = (m.time_us, m.label.clone());
                    self.jump(t)?;
                    self.message = Some(format!("marker: {label}"));
                }
                None => self.message = Some("no marker before this point".into()),
            },
            Key::Char('/') => self.mode = Mode::Search(String::new()),
            Key::Enter => return self.search_next(),
            Key::Char('s') => {
                let skip = !self.clock.skips_idle();
                self.clock.set_skip_idle(skip);
                self.message = Some(if skip {
                    "skipping idle time: pauses play as 1 s at most".into()
                } else {
                    "playing pauses as recorded".into()
                });
            }
            Key::Char('i') => self.show_input = !self.show_input,
            Key::Char('?') => self.mode = Mode::Help,
            Key::Char('q') | Key::Esc => self.quit = true,
            _ => {}
        }
        Ok(())
    }

    /// A jump the user asked for: leaves the live edge.
    fn jump(&mut self, target_us: u64) -> Result<(), Error> {
        self.following = false;
        self.seek_to(target_us)
    }

    /// Jumps to the next output match of the last search after the position.
    fn search_next(&mut self) -> Result<(), Error> {
        let Some(query) = self.last_search.clone() else {
            self.message = Some("type / and a text to search the output".into());
            return Ok(());
        };
        match self.session.timeline.search(&query, self.position_us()) {
            Some((time, wrapped)) => {
                self.jump(time)?;
                self.message = Some(if wrapped {
                    format!("\"{query}\": back to the first match (Enter: next)")
                } else {
                    format!("\"{query}\" (Enter: next match)")
                });
            }
            None => self.message = Some(format!("\"{query}\" is not in the output")),
        }
        Ok(())
    }
}
