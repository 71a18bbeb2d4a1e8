//! custody-web: the HTTP API over session recordings (list, search, download, verify), served
//! by the gateway under [`model::API_PREFIX`]; see [`api`] for the handlers and the access rule,
//! and [`assets`] for the console's static files served under hashed, immutable URLs.

pub mod api;
pub mod assets;
pub mod error;
pub mod model;

pub use error::{Error, Result};
