//! The sessions API (`tests/sessions_api.rs`, the same tests) in cluster mode: the
//! harness sees this binary's name start with `cluster_` and builds every gateway as a replica
//! on PostgreSQL and S3 (`tests/gateway_support/env.rs`).

#[path = "sessions_api.rs"]
mod suite;
