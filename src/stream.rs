//! Streams: exec, attach and port-forward relayed through custody and turned into recorder
//! events. `upgrade` owns the handshake with the upstream (nothing is spliced before an
//! upstream 101), `relay` the byte-exact splice, and `decode` the passive decoders that turn a
//! copy of the bytes into recording events.
//!
//! The gateway's `session` module wires them into the pipeline: each upgrade becomes a
//! recorded session (a stream the recorder cannot decode is never relayed).

pub mod decode;
pub mod relay;
pub mod upgrade;
