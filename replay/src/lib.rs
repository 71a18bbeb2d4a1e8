//! custody-replay: the terminal player for session recordings and its pure timeline and seek engine.
