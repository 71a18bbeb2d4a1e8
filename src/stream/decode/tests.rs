//! Decoder tests: realistic sessions built with custody-protocol's encoders (and capture bytes
//! where the captures are complete), fed whole, with every frame or message split at every byte
//! boundary, byte by byte, and in random chunkings, all producing the same events.

mod channel;
mod farewell;
mod portforward;
mod selection;
mod spdy;
mod support;
