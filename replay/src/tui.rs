//! The terminal side: crossterm input, ratatui drawing, and the loop that ties them to a
//! [`Player`] and to a live session's updates.

use std::io::Stdout;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};

use crate::error::Error;
use crate::player::{Key, LiveUpdate, PlayOptions, Player};
use crate::session::Session;
use crate::view;

/// What to play.
pub enum PlaySource {
    /// A recording, loaded.
    Session(Box<Session>),
    /// A live session: what its recording held when loaded, then the updates the gateway
    /// streams (see `custody play --follow`). The channel's sender ends when the stream does.
    Live {
        /// The session as loaded (its `live` flag is set by the player).
        session: Box<Session>,
        /// The updates, in order.
        updates: Receiver<LiveUpdate>,
    },
}

/// Takes over the terminal (raw mode, the alternate screen), plays until the user quits, and
/// restores the terminal, also when playing fails.
pub fn play(source: PlaySource, options: &PlayOptions) -> Result<(), Error> {
    enable_raw_mode().map_err(Error::Terminal)?;
    let _restore = Restore;
    execute!(std::io::stdout(), EnterAlternateScreen).map_err(Error::Terminal)?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> =
        Terminal::new(CrosstermBackend::new(std::io::stdout())).map_err(Error::Terminal)?;
    terminal.hide_cursor().map_err(Error::Terminal)?;
    terminal.clear().map_err(Error::Terminal)?;
    play_on(&mut terminal, source, options)
}

/// Plays on a terminal the caller has already set up (raw mode, a screen of its own), reading
/// keys from crossterm; returns when the user quits, leaving the terminal as it is.
pub fn play_on<B: Backend>(
    terminal: &mut Terminal<B>,
    source: PlaySource,
    options: &PlayOptions,
) -> Result<(), Error> {
    let (session, updates) = match source {
        PlaySource::Session(session) => (session, None),
        PlaySource::Live {
            mut session,
            updates,
        } => {
            session.live = true;
            (session, Some(updates))
        }
    };
    let mut player = Player::new(*session, options)?;
    let mut updates = updates;
    let mut last = Instant::now();
    loop {
        terminal
            .draw(|frame| view::draw(frame, &player))
            .map_err(Error::Terminal)?;
        let wait = if player.clock().is_playing() || updates.is_some() {
            FRAME
        } else {
            IDLE_POLL
        };
        if event::poll(wait).map_err(Error::Terminal)? {
            match event::read().map_err(Error::Terminal)? {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                    if let Some(key) = map_key(k.code, k.modifiers) {
                        player.key(key)?;
                    }
                }
                _ => {}
            }
        }
        if let Some(rx) = &updates {
            loop {
                match rx.try_recv() {
                    Ok(update) => player.push_live(update)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        updates = None;
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        player.tick(now - last)?;
        last = now;
        if player.wants_quit() {
            return Ok(());
        }
    }
}

/// A crossterm key as a player key.
pub fn map_key(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    let shift = modifiers.contains(KeyModifiers::SHIFT);
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Char('q'),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Left if shift => Key::ShiftLeft,
        KeyCode::Right if shift => Key::ShiftRight,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

/// Restores the terminal when playing ends, however it ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = disable_raw_mode();
    }
}

/// The redraw interval while playing.
const FRAME: Duration = Duration::from_millis(33);
/// How long to wait for a key while paused.
const IDLE_POLL: Duration = Duration::from_millis(250);
