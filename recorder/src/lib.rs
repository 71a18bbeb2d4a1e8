//! custody-recorder: session recordings (asciicast v3 in zstd frames), their index and integrity.
//!
//! The recording format is specified in `docs/recording-format.md`; this crate knows nothing of
//! HTTP or terminal I/O, so the gateway, the web API and the player can all depend on it.

pub mod catalog;
pub mod error;
pub mod export;
pub mod file;
pub mod format;
pub mod index;
pub mod integrity;
pub mod keyframe;
pub mod model;
pub mod permissions;
pub mod reader;
pub mod recovery;
pub mod redaction;
pub mod reindex;
pub mod sample;
pub mod verdict;
pub mod writer;

pub use error::{Error, Result};
