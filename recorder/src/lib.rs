//! custody-recorder: session recordings (asciicast v3 in zstd frames), their index and integrity.
//!
//! The recording format is specified in `docs/recording-format.md` once it exists; this crate knows
//! nothing of HTTP or terminals, so the gateway, the web API and the player can all depend on it.
