//! custody-cluster: what several gateway replicas share.
//!
//! On one machine custody keeps its index and audit rows in `SQLite` and its recordings on the
//! local disk. In cluster mode the replicas share PostgreSQL ([`postgres`]: the pool and its
//! TLS, [`schema`]: versioned migrations, [`catalog`]: the index of sessions and audit events
//! behind `custody_recorder::catalog::Catalog`, with custody's own search tokens ([`search`])
//! and monthly partitions ([`partition`])), and S3-compatible object storage holds the
//! recordings ([`objects`]: segments uploaded while a session runs, one verified object at its
//! end, taken over from its segments when a replica dies; [`spool`]: the uploads of one live
//! session).

pub mod catalog;
pub mod commands;
pub mod error;
pub mod live;
pub mod members;
pub mod objects;
pub mod partition;
pub mod postgres;
pub mod schema;
pub mod search;
pub mod spool;

pub use error::{Error, Result};
