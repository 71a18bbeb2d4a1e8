//! custody-protocol: pure codecs of the Kubernetes streaming protocols, with no I/O.
//!
//! Both kube-sim (the simulated API server in `custody-fixtures`) and the gateway speak these
//! protocols, and the recorder decodes them, so they live here where they can be unit-tested and
//! fuzzed on bytes. Nothing in this crate opens a socket or a file.
//!
//! - [`channel`]: the WebSocket channel protocols of exec/attach (`v5.channel.k8s.io` …) and
//!   subprotocol negotiation.
//! - [`spdy`]: SPDY/3 frames, header blocks and their zlib contexts.
//! - [`portforward`]: port-forward stream headers and the legacy WebSocket channel form.
//! - [`proxy_header`]: the PROXY protocol v2 header an L4 balancer sends first.
//! - [`query`]: a request's query as Go's `net/url` and apimachinery read it.
//! - [`status`]: `metav1.Status` on the error channel, and exit codes.
//! - [`terminal`]: terminal sizes and the resize stream.

pub mod channel;
pub mod error;
pub mod portforward;
pub mod proxy_header;
pub mod query;
pub mod spdy;
pub mod status;
pub mod terminal;
pub mod websocket;

pub use channel::{ChannelMessage, ChannelProtocol};
pub use error::{Error, Result};
pub use status::Status;
pub use terminal::{TerminalSize, TerminalSizeDecoder};
