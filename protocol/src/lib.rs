//! custody-protocol: pure codecs of the Kubernetes streaming protocols, with no I/O.
//!
//! Both kube-sim (the simulated API server in `custody-fixtures`) and the gateway speak these
//! protocols, and the recorder decodes them, so they live here where they can be unit-tested and
//! fuzzed on bytes. Nothing in this crate opens a socket or a file.

pub mod terminal;

pub use terminal::TerminalSize;

pub mod error;

pub use error::{Error, Result};
