//! custody: a Kubernetes access gateway that keeps the chain of custody.
//!
//! The data path (see `docs/ARCHITECTURE.md`): authenticate the caller (`authn`) into a
//! [`principal::Principal`], classify the request (`classify`), decide the effective identity
//! (`impersonation`), rewrite the headers and forward (`proxy`), and audit every request
//! (`audit`). `config` is the one typed configuration; `server` owns the listeners.

pub mod approval;
pub mod audit;
pub mod authn;
pub mod classify;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod control;
pub mod credential;
pub mod error;
pub mod gateway;
pub mod impersonation;
pub mod login;
pub mod masking;
pub mod metrics;
pub mod policy;
pub mod principal;
pub mod proxy;
pub mod server;
pub mod stream;
pub mod upstream;

pub use error::{Error, Result};
