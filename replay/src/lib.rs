//! custody-replay: the terminal player for session recordings and its pure timeline and seek
//! engine.
//!
//! # Playing a session
//!
//! ```no_run
//! use custody_replay::{KeyOrigin, PlayOptions, PlaySource, Session, play};
//! # fn main() -> Result<(), custody_replay::Error> {
//! let session = Session::open_file("s.cast.zst".as_ref(), None, KeyOrigin::NamedInFile)?;
//! play(PlaySource::Session(Box::new(session)), &PlayOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! - [`play`] takes over the terminal (raw mode, the alternate screen), plays until the user
//!   presses `q`, and restores the terminal. [`play_on`] plays on a ratatui `Terminal` the
//!   caller already set up (a browser that runs its own full-screen UI) and leaves it as it is.
//! - A [`Session`] comes from a file ([`Session::open_file`]), from the index by id with the
//!   index's keyframes ([`Session::open_indexed`]), or from a [`custody_recorder::reader::Recording`]
//!   already read ([`Session::from_recording`]). [`KeyOrigin`] says which key verified it, for
//!   the header.
//! - [`PlaySource::Live`] plays a session as it happens: what its file held, then the
//!   [`LiveUpdate`]s a channel brings (the caller reads the gateway's event stream).
//!
//! # Modules
//!
//! - `timeline`: events (verified, then an unverified tail), seekpoints (from the index or built
//!   from the file), markers, typed commands, output search, the non-tty log.
//! - `clock`: position, speed (1x to 16x), skipping idle gaps.
//! - `player`: the state machine every key drives, no terminal involved.
//! - `view`: drawing a player with ratatui (tested on its `TestBackend`).
//! - `tui`: crossterm input and the play loop.
//!
//! The keys and the screen are described in `docs/replay.md`.

mod clock;
mod error;
mod player;
mod session;
mod text;
mod timeline;
mod tui;
pub mod view;

pub use clock::{Clock, IDLE_CAP_US, SPEEDS};
pub use error::Error;
pub use player::{Key, LiveUpdate, Mode, PlayOptions, Player};
pub use session::{Integrity, KeyOrigin, Session};
pub use text::TypedCommand;
pub use timeline::{DEFAULT_SIZE, LogLine, Marker, Timeline};
pub use tui::{PlaySource, map_key, play, play_on};
