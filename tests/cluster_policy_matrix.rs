//! The policy's decision matrix (`tests/policy_matrix.rs`, the same tests) in cluster mode: the
//! harness sees this binary's name start with `cluster_` and builds every gateway as a replica
//! on PostgreSQL and S3 (`tests/gateway_support/env.rs`).

#[path = "policy_matrix.rs"]
mod suite;
